//! Opening the log: its directory and lock, a first pass over every segment (counts, damage,
//! the keys of delivered and drained records, the highest stamp), and the [`Replayer`] that
//! reads the batches back one segment at a time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex};

use super::record::{self, Body, LogKey, SpanStamp, KIND_DELIVERED};
use super::*;

/// One batch record to replay: borrowed from the segment being replayed (never copied).
pub struct ReplayBatch<'a> {
    pub pos: u64,
    pub stamps: Vec<SpanStamp>,
    pub data: &'a [u8],
    /// Trace IDs (0: spans not assembled) whose spans of this batch were delivered.
    pub delivered: HashSet<u128>,
    /// Trace IDs whose spans of this batch were handed out for sending and not acknowledged:
    /// they may have reached downstream before the crash.
    pub in_flight: HashSet<u128>,
}

/// What opening the log found: the counts of a first pass over every segment (which reads
/// only the keys of delivered and drained records and the highest stamp), and the batches
/// to replay, read one segment at a time.
#[derive(Default)]
pub struct Opened {
    pub records: u64,
    pub corrupt_records: u64,
    pub torn_records: u64,
    /// One line per problem: the file, the byte range, what was skipped.
    pub problems: Vec<String>,
    /// The highest stamp logged (the clock starts above it).
    pub top_stamp: Option<(u64, u32)>,
    pub replay: Replayer,
}

/// The batches of the log, read back one segment at a time: only the segment being
/// replayed is in memory, with the keys of delivered and drained records that the batches
/// not replayed yet still need.
#[derive(Default)]
pub struct Replayer {
    dir: PathBuf,
    /// Segments not replayed yet: (position of the first byte, base in the file name).
    todo: VecDeque<(u64, u64)>,
    delivered: HashMap<u64, HashSet<u128>>,
    drained: HashMap<u64, HashSet<u128>>,
    /// Keys in `delivered` and `drained`.
    keys: u64,
    current: Option<Loaded>,
    /// Segments that could be read at open and not at replay.
    pub problems: Vec<String>,
    /// The log's key (`None`: a log of the previous format only).
    key: Option<LogKey>,
    /// Positions of batches not to replay (a stamp past [`WalConfig::stamp_limit`]).
    skip: HashSet<u64>,
}

/// The segment being replayed: its bytes and where its records are.
struct Loaded {
    base: u64,
    buf: Vec<u8>,
    /// (offset, body start, body length) of each valid record.
    recs: Vec<(u64, usize, usize)>,
    next: usize,
}

/// Reads a segment file: its bytes, where its valid records are (checked with `key`, or the
/// previous format's check below the position it keys from), and its damage.
fn read_records(path: &Path, key: Option<&LogKey>, base: u64) -> io::Result<(Vec<u8>, Vec<(u64, usize, usize)>, record::Damage)> {
    let buf = fs::read(path)?;
    let check = key.map_or(record::Check::Legacy, |k| k.check_for(base));
    let (recs, damage) = record::read_segment(&buf, check);
    let at = buf.as_ptr() as usize;
    let recs = recs.into_iter().map(|(off, body)| (off, body.as_ptr() as usize - at, body.len())).collect();
    Ok((buf, recs, damage))
}

impl Replayer {
    /// The next batch record in log order, `None` once every segment was replayed. Delivered
    /// batches are returned too (the caller scans them and finds nothing to keep): whether
    /// every key of a batch was delivered is known only from its spans.
    pub fn next_batch(&mut self) -> Option<ReplayBatch<'_>> {
        // Find the next batch record first, then borrow it.
        let (pos, start, len, delivered, in_flight) = loop {
            if self.current.as_ref().is_some_and(|c| c.next >= c.recs.len()) {
                self.current = None;
            }
            if self.current.is_none() {
                let (base, name) = self.todo.pop_front()?;
                let path = Segment::path(&self.dir, name);
                match read_records(&path, self.key.as_ref(), base) {
                    // Checked for records at the top (a segment may hold none).
                    Ok((buf, recs, _)) => self.current = Some(Loaded { base, buf, recs, next: 0 }),
                    Err(e) => self.problems.push(format!("write-ahead log segment {} cannot be read again to replay it: {e}", path.display())),
                }
                continue;
            }
            let c = self.current.as_mut()?;
            let (off, start, len) = c.recs[c.next];
            c.next += 1;
            if c.buf.get(start) != Some(&record::KIND_BATCH) {
                continue;
            }
            let pos = c.base + off;
            if self.skip.contains(&pos) {
                continue;
            }
            let delivered = self.delivered.remove(&pos).unwrap_or_default();
            let in_flight: HashSet<u128> = match self.drained.remove(&pos) {
                Some(d) => {
                    self.keys = self.keys.saturating_sub(d.len() as u64);
                    d.difference(&delivered).copied().collect()
                }
                None => HashSet::new(),
            };
            self.keys = self.keys.saturating_sub(delivered.len() as u64);
            break (pos, start, len, delivered, in_flight);
        };
        let c = self.current.as_ref()?;
        match record::decode_body(&c.buf[start..start + len]) {
            Some(Body::Batch { stamps, data }) => Some(ReplayBatch { pos, stamps, data, delivered, in_flight }),
            // Checked when the segment was read: cannot happen.
            _ => None,
        }
    }

    /// Every segment that ends at or before this position was replayed.
    pub fn replayed_to(&self) -> u64 {
        match (&self.current, self.todo.front()) {
            (Some(c), _) => c.base,
            (None, Some(&(base, _))) => base,
            (None, None) => u64::MAX,
        }
    }

    /// Bytes held: the segment being replayed and the keys batches still to replay need
    /// (estimated per entry: set slot with slack, map entry).
    pub fn memory_bytes(&self) -> u64 {
        let seg = self.current.as_ref().map_or(0, |c| crate::heap::vec_bytes(&c.buf) + crate::heap::vec_bytes(&c.recs));
        seg + self.keys * 40 + (self.delivered.len() + self.drained.len()) as u64 * 96
    }
}

/// Creates the log's directory (0700, and any missing parent) or checks the one there:
/// spans can carry personal data and tokens, and whoever can write the directory can replace
/// the log. A directory that its group or others may write to is refused unless it is ours.
fn private_dir(dir: &Path) -> Result<(), String> {
    let d = dir.display();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("wal.directory {d} cannot be created: {e}"))?;
    let m = fs::metadata(dir).map_err(|e| format!("wal.directory {d} cannot be used: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.mode() & 0o022 != 0 && m.uid() != me {
        return Err(format!(
            "wal.directory {d} is writable by its group or by others (mode {:o}) and owned by another user (uid {}): \
             anyone who can write it could replace the log; use a directory of the collector's own user (it is created 0700)",
            m.mode() & 0o7777,
            m.uid()
        ));
    }
    Ok(())
}

impl Wal {
    /// Opens (creating if needed) the log in `cfg.directory`, takes its lock, and reads every
    /// segment. The batches to replay are returned; the caller replays them and then calls
    /// [`Wal::register`] for each, with the keys still undelivered. New records go to a new
    /// segment.
    pub fn open(cfg: WalConfig) -> Result<(Wal, Opened), String> {
        let dir = cfg.directory.clone();
        let d = dir.display();
        private_dir(&dir)?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("LOCK"))
            .map_err(|e| format!("wal.directory {d} cannot be used: {e}"))?;
        // SAFETY: a valid open descriptor.
        if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                format!("wal.directory {d} is in use by another process (it holds {d}/LOCK); two collectors cannot share one write-ahead log")
            } else {
                format!("wal.directory {d} cannot be locked: {e}")
            });
        }
        let mut bases: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| format!("wal.directory {d} cannot be read: {e}"))? {
            let entry = entry.map_err(|e| format!("wal.directory {d} cannot be read: {e}"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(base) = name.strip_suffix(".wal").filter(|b| b.len() == 20).and_then(|b| b.parse::<u64>().ok()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        // The records' key; a log without one was written by the previous format (read with
        // its check: the key made below starts after its end).
        let found = LogKey::load(&dir).map_err(|e| format!("wal.directory {d}: {e}; remove the directory's files to start a new log"))?;
        let mut opened = Opened::default();
        let mut segments = VecDeque::new();
        let mut replay = Replayer { dir: dir.clone(), key: found, ..Replayer::default() };
        let mut end = 0u64;
        // First pass: the keys of delivered and drained records, the highest stamp and the
        // damage, one segment in memory at a time. The batches are read again, one segment
        // at a time, when they are replayed.
        for (i, &name) in bases.iter().enumerate() {
            let path = Segment::path(&dir, name);
            // Segments never overlap; a base below the previous end means a damaged name.
            let base = name.max(end);
            let (buf, recs, damage) = read_records(&path, found.as_ref(), base)
                .map_err(|e| format!("wal.directory: segment {} cannot be read: {e}", path.display()))?;
            for r in &damage.corrupt {
                opened.corrupt_records += 1;
                opened.problems.push(format!(
                    "write-ahead log segment {}: bytes {}..{} are damaged and were skipped",
                    path.display(),
                    r.start,
                    r.end
                ));
            }
            if let Some(r) = &damage.torn {
                opened.torn_records += 1;
                let last = i + 1 == bases.len();
                opened.problems.push(format!(
                    "write-ahead log segment {}: bytes {}..{} at the end are an incomplete record ({}) and were ignored",
                    path.display(),
                    r.start,
                    r.end,
                    if last { "a write cut short by a crash" } else { "damage" }
                ));
            }
            for &(off, start, len) in &recs {
                opened.records += 1;
                match record::decode_body(&buf[start..start + len]) {
                    Some(Body::Batch { stamps, .. }) => {
                        let Some(top) = stamps.iter().map(|s| (s.wall, s.logical)).max() else { continue };
                        if top.0 > cfg.stamp_limit {
                            replay.skip.insert(base + off);
                            opened.corrupt_records += 1;
                            opened.problems.push(format!(
                                "write-ahead log record at position {}: a stamp {} s ahead of the wall clock (more than hlc.max_offset + 24 h); \
                                 not replayed, so that the clock does not stamp far in the future (check the host clock)",
                                base + off,
                                top.0.saturating_sub(wall_now()) / 1_000_000_000
                            ));
                            continue;
                        }
                        opened.top_stamp = opened.top_stamp.max(Some(top));
                    }
                    Some(Body::Keys { kind, keys }) => {
                        let into = if kind == KIND_DELIVERED { &mut replay.delivered } else { &mut replay.drained };
                        for (pos, id) in keys {
                            if into.entry(pos).or_default().insert(id) {
                                replay.keys += 1;
                            }
                        }
                    }
                    None => {}
                }
            }
            replay.todo.push_back((base, name));
            segments.push_back(Segment { base, len: buf.len() as u64 });
            end = base + buf.len() as u64;
        }
        let replay_floor = replay.replayed_to();
        opened.replay = replay;
        let disk: u64 = segments.iter().map(|s| s.len).sum();
        let segment_bytes = (cfg.max_bytes / 16).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        // New records go to a new segment: a torn tail is never appended to. An empty last
        // segment (a run that logged nothing) is that new segment: it is not tracked twice.
        if segments.back().is_some_and(|s: &Segment| s.len == 0 && s.base == end) {
            segments.pop_back();
        }
        let key = match found {
            Some(k) => k,
            None => LogKey::create(&dir, end).map_err(|e| format!("wal.directory {d}: the log's key cannot be written: {e}"))?,
        };
        let file = create_segment(&dir, end).map_err(|e| format!("wal.directory {d}: a new segment cannot be created: {e}"))?;
        segments.push_back(Segment { base: end, len: 0 });
        let wal = Wal {
            segment_bytes,
            _lock: lock_file,
            key,
            w: Mutex::new(Writer { file: SegmentFile::new(file), base: end, pos: end }),
            commit: Mutex::new(Commit { synced: end, ..Commit::default() }),
            commit_cv: Condvar::new(),
            sync_lock: Mutex::new(()),
            track: Mutex::new(Track { segments, replayed_to: replay_floor, ..Track::default() }),
            track_mem: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(disk),
            c: WalCounters::default(),
            syncer: Mutex::new(None),
            cfg,
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            fail_truncate: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            sync_hook: Mutex::new(None),
        };
        Ok((wal, opened))
    }

}
