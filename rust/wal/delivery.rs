//! Delivery tracking: which keys of which batches are still undelivered, releases handed out
//! and acknowledged, and deleting the segments that hold nothing undelivered.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::Ordering;

use super::record::{self, Key, KIND_DELIVERED, KIND_DRAINED};
use super::*;

impl Wal {
    /// Records how far replay got ([`Replayer::replayed_to`]): segments before it may be
    /// deleted once delivered; those after it not yet.
    pub fn replayed_to(&self, pos: u64) {
        self.track().replayed_to = pos;
    }

    /// Registers a replayed batch: `keys` of it are still undelivered.
    pub fn register(&self, pos: u64, keys: u32) {
        if keys > 0 {
            self.track().outstanding.insert(pos, keys);
        }
    }

    /// Marks keys resolved without a release (spans dropped at ingest: exact re-sends, late
    /// spans under the drop policy). They are logged as delivered: a restart, whose late
    /// cache is empty, would replay them as a new trace. Like every delivered record it does
    /// not wait for an fsync (the next batch's carries it).
    pub fn resolve(&self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        let _ = self.append(&record::encode_keys(&self.key, KIND_DELIVERED, keys), None);
        let mut t = self.track();
        for &(pos, _) in keys {
            dec(&mut t.outstanding, pos);
        }
        drop(t);
        self.reclaim();
    }

    /// Records that `keys` were handed out for sending; returns the token to acknowledge them
    /// with ([`Wal::delivered`]). 0 when there are none.
    pub fn drained(&self, keys: Vec<Key>) -> u64 {
        if keys.is_empty() {
            return 0;
        }
        let _ = self.append(&record::encode_keys(&self.key, KIND_DRAINED, &keys), None);
        let mut t = self.track();
        t.next_token += 1;
        let token = t.next_token;
        t.pending_keys += keys.len() as u64;
        t.pending.insert(token, keys);
        token
    }

    /// Marks the release `token` delivered (or counted as lost: it is not replayed either) and
    /// frees what no undelivered key needs. Unknown tokens are ignored. Returns whether the
    /// token was known.
    pub fn delivered(&self, token: u64) -> bool {
        let keys = {
            let mut t = self.track();
            let Some(keys) = t.pending.remove(&token) else { return false };
            t.pending_keys -= keys.len() as u64;
            keys
        };
        let _ = self.append(&record::encode_keys(&self.key, KIND_DELIVERED, &keys), None);
        {
            let mut t = self.track();
            for &(pos, _) in &keys {
                dec(&mut t.outstanding, pos);
            }
        }
        self.reclaim();
        true
    }

    /// Deletes the oldest segments while no undelivered batch is in them (never the current
    /// one). The files are unlinked outside the lock.
    pub fn reclaim(&self) {
        let mut gone = Vec::new();
        {
            let mut t = self.track();
            while t.segments.len() > 1 {
                let s = &t.segments[0];
                let (base, len) = (s.base, s.len);
                if base + len > t.replayed_to || t.outstanding.range(base..base + len).next().is_some() {
                    break;
                }
                t.segments.pop_front();
                gone.push((base, len));
            }
        }
        if let Some(&(base, len)) = gone.last() {
            lock(&self.commit).lost.retain(|r| r.start >= base + len);
        }
        for (base, len) in gone {
            // A file that cannot be removed is left behind: its records are all delivered, so
            // a restart reads it and replays nothing from it.
            let _ = fs::remove_file(Segment::path(&self.cfg.directory, base));
            self.disk_bytes.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// The position the next record is written at (for tests).
    #[cfg(test)]
    pub fn written(&self) -> u64 {
        lock(&self.w).pos
    }

    /// Undelivered batch positions (for tests).
    #[cfg(test)]
    pub fn outstanding(&self) -> Vec<(u64, u32)> {
        self.track().outstanding.iter().map(|(&p, &k)| (p, k)).collect()
    }
}


pub(super) fn dec(m: &mut BTreeMap<u64, u32>, pos: u64) {
    if let Some(k) = m.get_mut(&pos) {
        *k -= 1;
        if *k == 0 {
            m.remove(&pos);
        }
    }
}
