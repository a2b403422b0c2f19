//! Writing and durability: appending records, rotating segments, fsync with group commit
//! and the `wal.sync: interval` background thread, and what a failed write or fsync leaves.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::record::{self, Encoded, SpanStamp};
use super::*;

impl Wal {
    /// Starts the background fsync of `wal.sync: interval`. Call once, after replay.
    pub fn start_syncer(self: &Arc<Self>) {
        if self.cfg.sync != SyncMode::Interval {
            return;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let me = Arc::downgrade(self);
        let every = self.cfg.sync_interval;
        let s2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("tc-wal-sync".into())
            .spawn(move || loop {
                let (m, cv) = &*s2;
                let g = lock(m);
                let (g, _) = cv.wait_timeout_while(g, every, |stopped| !*stopped).unwrap_or_else(|p| p.into_inner());
                if *g {
                    return;
                }
                drop(g);
                let Some(wal) = me.upgrade() else { return };
                let _ = wal.sync_now();
            });
        if let Ok(h) = handle {
            *lock(&self.syncer) = Some((stop, h));
        }
    }

    /// Appends a batch record with `keys` undelivered keys; returns its position. With
    /// `wal.sync: batch`, returns once it is on disk.
    pub fn append_batch(&self, stamps: &[SpanStamp], data: &[u8], keys: u32) -> Result<u64, AppendError> {
        let rec = record::encode_batch(&self.key, stamps, data);
        let size = rec.len();
        if size > record::MAX_BODY as u64 || size > self.cfg.max_bytes {
            return Err(AppendError::TooLarge { bytes: size, bound: self.cfg.max_bytes });
        }
        let mut bytes = self.disk_bytes();
        if bytes + size > self.cfg.max_bytes && self.leave_delivered_segment() {
            bytes = self.disk_bytes();
        }
        if bytes + size > self.cfg.max_bytes {
            self.c.full_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(AppendError::Full { bytes, bound: self.cfg.max_bytes });
        }
        let (pos, end) = self.append(&rec, Some(keys))?;
        if self.cfg.sync == SyncMode::Batch {
            if let Err(e) = self.wait_durable(end) {
                // Not acknowledged: the spans are not kept. The record may still reach the
                // disk and be replayed (the sender's retry then makes a duplicate).
                self.track().outstanding.remove(&pos);
                return Err(AppendError::Io(e));
            }
        }
        Ok(pos)
    }

    /// When the current segment holds nothing undelivered, starts a new one so that the old
    /// one can be deleted: a record that fits in an empty log is never refused for lack of
    /// room that only the current segment takes. Returns whether it did.
    pub(super) fn leave_delivered_segment(&self) -> bool {
        let mut w = lock(&self.w);
        if w.pos == w.base || self.track().outstanding.range(w.base..).next().is_some() {
            return false;
        }
        let at = w.pos;
        let left = self.rotate(&mut w, at).is_ok();
        drop(w);
        self.reclaim();
        left
    }

    /// Writes one record; registers `keys` for a batch. Returns (position, end).
    pub(super) fn append(&self, rec: &Encoded<'_>, keys: Option<u32>) -> Result<(u64, u64), AppendError> {
        let mut w = lock(&self.w);
        let seg_len = w.pos - w.base;
        // A segment whose fsync failed is never written to again (if no new one could be
        // created then, it is tried again here).
        if w.file.failed.load(Ordering::Relaxed) || (seg_len > 0 && seg_len + rec.len() > self.segment_bytes) {
            let at = w.pos;
            self.rotate(&mut w, at).map_err(|e| {
                self.c.write_errors.fetch_add(1, Ordering::Relaxed);
                AppendError::Io(e)
            })?;
        }
        let pos = w.pos;
        if let Err(e) = self.write(&w.file.file, rec) {
            self.c.write_errors.fetch_add(1, Ordering::Relaxed);
            // Cut what part of the record was written, so the segment stays readable; if even
            // that fails, later records go to a new segment (the reader skips the damage),
            // which starts past whatever the failed write may have left.
            if self.cut(&w.file.file, pos - w.base).is_err() || seek_end(&w.file.file).is_err() {
                let _ = self.rotate(&mut w, pos + rec.len());
            }
            return Err(AppendError::Io(e));
        }
        w.pos += rec.len();
        let end = w.pos;
        {
            let mut t = self.track();
            if let Some(k) = keys {
                if k > 0 {
                    t.outstanding.insert(pos, k);
                }
            }
            if let Some(s) = t.segments.back_mut() {
                s.len = end - s.base;
            }
        }
        drop(w);
        self.disk_bytes.fetch_add(rec.len(), Ordering::Relaxed);
        Ok((pos, end))
    }

    pub(super) fn write(&self, mut f: &File, rec: &Encoded<'_>) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_writes.load(Ordering::Relaxed) {
            f.write_all(&rec.head[..rec.head.len() / 2])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        f.write_all(&rec.head)?;
        f.write_all(rec.tail)
    }

    pub(super) fn sync_file(&self, f: &File) -> io::Result<()> {
        #[cfg(test)]
        if let Some(h) = lock(&self.sync_hook).as_mut() {
            h()?;
        }
        f.sync_data()
    }

    pub(super) fn cut(&self, f: &File, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_truncate.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        f.set_len(len)
    }

    /// Starts a new segment at `base` (at least the current position, past the current
    /// segment's first byte: never the same file); the old one is fsync'd first. If that
    /// fsync fails, what the old segment holds past its last good fsync is lost (its waiters
    /// fail) and the new segment is started all the same.
    pub(super) fn rotate(&self, w: &mut Writer, base: u64) -> io::Result<()> {
        let base = base.max(w.pos).max(w.base + 1);
        if self.fsync(&w.file, w.pos).is_err() {
            let mut c = lock(&self.commit);
            let from = c.synced.max(w.base);
            if from < w.pos && !c.lost(w.pos) {
                c.lost.push(from..w.pos);
            }
            self.commit_cv.notify_all();
        }
        let file = create_segment(&self.cfg.directory, base)?;
        // Bytes a failed write left between the last record and the new base count as the
        // old segment's (an upper bound: what it holds on disk).
        let gap = base - w.pos;
        w.file = SegmentFile::new(file);
        w.base = base;
        w.pos = base;
        {
            let mut c = lock(&self.commit);
            c.synced = c.synced.max(base);
        }
        {
            let mut t = self.track();
            if let Some(s) = t.segments.back_mut() {
                s.len += gap;
            }
            t.segments.push_back(Segment { base, len: 0 });
        }
        self.disk_bytes.fetch_add(gap, Ordering::Relaxed);
        Ok(())
    }

    /// Fsyncs `seg` (one fsync at a time); on success every byte before `upto` is on disk.
    /// Once an fsync of a segment failed, it is not tried again: the result stays a failure.
    pub(super) fn fsync(&self, seg: &SegmentFile, upto: u64) -> io::Result<()> {
        let _one = lock(&self.sync_lock);
        if seg.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other("an earlier fsync of this write-ahead log segment failed"));
        }
        let t0 = Instant::now();
        let r = self.sync_file(&seg.file);
        self.record_fsync(t0.elapsed());
        match r {
            Ok(()) => {
                let mut c = lock(&self.commit);
                c.synced = c.synced.max(upto);
                Ok(())
            }
            Err(e) => {
                seg.failed.store(true, Ordering::Relaxed);
                self.c.write_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    pub(super) fn record_fsync(&self, d: Duration) {
        self.c.fsyncs.fetch_add(1, Ordering::Relaxed);
        let us = d.as_micros().max(1) as u64;
        let b = (64 - us.leading_zeros() as usize).min(FSYNC_BUCKETS - 1);
        self.c.fsync_buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Returns once every byte before `upto` is on disk. Concurrent callers share fsyncs: one
    /// runs it for everything written so far while the others wait for its result. After a
    /// failed fsync, every record written to that segment since its last good fsync fails
    /// here, whoever waits for it and whenever; the segment is left for a new one.
    pub fn wait_durable(&self, upto: u64) -> io::Result<()> {
        let mut c = lock(&self.commit);
        loop {
            if c.lost(upto) {
                return Err(io::Error::other("an fsync of the write-ahead log failed before this record was known to be on disk"));
            }
            if c.synced >= upto {
                return Ok(());
            }
            if c.syncing {
                c = self.commit_cv.wait(c).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            c.syncing = true;
            drop(c);
            let (file, target) = {
                let w = lock(&self.w);
                (w.file.clone(), w.pos)
            };
            let r = self.fsync(&file, target);
            if r.is_err() {
                // Leave the segment (unless that was done meanwhile): what it holds past its
                // last good fsync is marked lost before the waiters are woken.
                let mut w = lock(&self.w);
                if Arc::ptr_eq(&w.file, &file) {
                    let at = w.pos;
                    let _ = self.rotate(&mut w, at);
                }
            }
            c = lock(&self.commit);
            c.syncing = false;
            self.commit_cv.notify_all();
            r?;
        }
    }

    /// Fsyncs whatever was written and is not on disk yet.
    pub fn sync_now(&self) -> io::Result<()> {
        let pos = lock(&self.w).pos;
        if lock(&self.commit).synced >= pos {
            return Ok(());
        }
        self.wait_durable(pos)
    }

}
