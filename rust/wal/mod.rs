//! The engine's write-ahead log: every accepted batch, with the stamps its spans were given,
//! is on disk before the batch is acknowledged; every release is marked delivered once
//! downstream accepted it; a restart replays what was not delivered (docs/DESIGN.md,
//! "Write-ahead log").
//!
//! Layout: a directory (0700, files 0600) holding `LOCK` (an exclusive `flock` for the
//! process that owns the log), `KEY` (the secret records are tagged with, [`LogKey`]) and
//! segment files `<base>.wal`, `base` being the log position of the segment's first
//! byte (20 decimal digits). Records ([`record`]) are appended to the newest segment; a new
//! segment starts once the current one would pass `wal.max_bytes / 16` (at least 1 MiB, at
//! most 16 MiB). A record's position (segment base + offset) is its log sequence number.
//!
//! What is tracked: each batch record's number of undelivered keys (a key is a batch and a
//! trace: the spans of one trace in one batch always leave in one unit). A segment is
//! deleted, oldest first, once no key of any batch in it is undelivered; delivered records
//! always follow the batches they name, so deleting oldest first never loses one that a
//! remaining batch needs.
//!
//! Durability (`wal.sync`): `batch` — an ingest returns after its record is fsync'd; ingests
//! that wait at the same time share one fsync (group commit). `interval` — records are
//! fsync'd by a background thread at most every `wal.sync_interval`; a crash loses at most
//! that much acknowledged data. `none` — the OS writes back when it likes. Delivered and
//! drained records never wait for an fsync: losing one re-delivers spans, never loses them.
//! After a failed fsync, the records written to that segment since its last good one are
//! never acknowledged (a later fsync's success proves nothing) and the log moves to a new
//! segment.

pub mod record;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use record::{Body, Encoded, Key, LogKey, SpanStamp, KIND_DELIVERED, KIND_DRAINED};

/// When a record counts as durable (`wal.sync`). Exported to C as `tc_wal_sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SyncMode {
    /// An ingest returns once its record is fsync'd (group commit).
    Batch = 0,
    /// A background fsync at most every `wal.sync_interval`.
    Interval = 1,
    /// No fsync; the OS writes back.
    None = 2,
}

impl SyncMode {
    pub const ALL: [SyncMode; 3] = [SyncMode::Batch, SyncMode::Interval, SyncMode::None];
}

pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;
pub const MAX_SEGMENT_BYTES: u64 = 16 << 20;
/// Fsync latency histogram: bucket `i` counts fsyncs under `2^i` µs (the last: the rest).
pub const FSYNC_BUCKETS: usize = 24;

/// How the log is configured (validated by the engine's configuration).
#[derive(Clone, Debug)]
pub struct WalConfig {
    pub directory: PathBuf,
    pub sync: SyncMode,
    pub sync_interval: Duration,
    pub max_bytes: u64,
    /// Batches holding a stamp whose wall time is past this are not replayed (counted as
    /// corrupt, with a problem line): a damaged or planted stamp must not push the clock far
    /// ahead. `u64::MAX`: no limit.
    pub stamp_limit: u64,
}

/// Why a record could not be appended.
#[derive(Debug)]
pub enum AppendError {
    /// The log is at `wal.max_bytes`: retry once delivered data frees segments.
    Full { bytes: u64, bound: u64 },
    /// A write or an fsync failed (disk full, I/O error): retry later.
    Io(io::Error),
    /// The record alone is larger than the log can ever hold (`wal.max_bytes`) or than a
    /// record may be: a permanent refusal.
    TooLarge { bytes: u64, bound: u64 },
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Full { bytes, bound } => write!(
                f,
                "write-ahead log full ({bytes} bytes on disk, wal.max_bytes {bound}); the oldest traces are being released to free it"
            ),
            AppendError::Io(e) => write!(f, "write-ahead log write failed: {e}"),
            AppendError::TooLarge { bytes, bound } => write!(
                f,
                "batch of {bytes} bytes (as logged) can never fit in the write-ahead log (wal.max_bytes {bound}, at most {} bytes per record): refused for good; send smaller batches or raise wal.max_bytes",
                record::MAX_BODY
            ),
        }
    }
}

/// Counters and gauges of the log.
#[derive(Default)]
pub struct WalCounters {
    pub fsyncs: AtomicU64,
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS],
    pub write_errors: AtomicU64,
    pub full_refusals: AtomicU64,
}

/// What a segment is, in memory.
#[derive(Debug)]
struct Segment {
    base: u64,
    len: u64,
}

impl Segment {
    fn path(dir: &Path, base: u64) -> PathBuf {
        dir.join(format!("{base:020}.wal"))
    }
}

/// The segment being written.
struct SegmentFile {
    file: File,
    /// An fsync of it failed. Linux reports a writeback error to one fsync and marks the
    /// pages clean, so a later fsync's success proves nothing: the file is never fsync'd
    /// again, nor written to.
    failed: AtomicBool,
}

impl SegmentFile {
    fn new(file: File) -> Arc<SegmentFile> {
        Arc::new(SegmentFile { file, failed: AtomicBool::new(false) })
    }
}

struct Writer {
    file: Arc<SegmentFile>,
    /// Base of the current segment.
    base: u64,
    /// Global position of the next byte (current base + its length).
    pos: u64,
}

#[derive(Default)]
struct Commit {
    /// Every byte before this position is on disk, except in `lost`.
    synced: u64,
    syncing: bool,
    /// Positions written to a segment after its last good fsync when a later one failed:
    /// never durable. (Pruned once the segment is deleted: no waiter is left in it then.)
    lost: Vec<std::ops::Range<u64>>,
}

impl Commit {
    fn lost(&self, upto: u64) -> bool {
        self.lost.iter().any(|r| r.start < upto && upto <= r.end)
    }
}

/// Undelivered keys and the segments on disk.
#[derive(Default)]
struct Track {
    /// Batch position → its undelivered keys.
    outstanding: BTreeMap<u64, u32>,
    segments: VecDeque<Segment>,
    /// Releases handed out and not yet acknowledged: token → keys.
    pending: HashMap<u64, Vec<Key>>,
    next_token: u64,
    pending_keys: u64,
    /// Segments past this position are not replayed yet: they are never deleted.
    replayed_to: u64,
}

impl Track {
    /// Bytes the bookkeeping holds (estimated per entry: map node share, key, value).
    fn bytes(&self) -> u64 {
        self.outstanding.len() as u64 * 48 + self.pending_keys * 40 + self.pending.len() as u64 * 64 + self.segments.len() as u64 * 16
    }
}

/// The track lock; on release, the bookkeeping's size is published for the engine's memory
/// bound (read on every ingest without taking the lock).
struct TrackGuard<'a> {
    g: MutexGuard<'a, Track>,
    mem: &'a AtomicU64,
}

impl std::ops::Deref for TrackGuard<'_> {
    type Target = Track;
    fn deref(&self) -> &Track {
        &self.g
    }
}

impl std::ops::DerefMut for TrackGuard<'_> {
    fn deref_mut(&mut self) -> &mut Track {
        &mut self.g
    }
}

impl Drop for TrackGuard<'_> {
    fn drop(&mut self) {
        self.mem.store(self.g.bytes(), Ordering::Relaxed);
    }
}

/// The log. Thread-safe.
pub struct Wal {
    cfg: WalConfig,
    segment_bytes: u64,
    _lock: File,
    /// The secret every record's tag is keyed with.
    key: LogKey,
    w: Mutex<Writer>,
    commit: Mutex<Commit>,
    commit_cv: Condvar,
    /// Held during every fsync: two at once on one file could split a writeback error
    /// between them, one reporting success for pages that never reached the disk.
    sync_lock: Mutex<()>,
    track: Mutex<Track>,
    /// [`Track::bytes`] as of the last change.
    track_mem: AtomicU64,
    /// Bytes of every segment on disk.
    disk_bytes: AtomicU64,
    pub c: WalCounters,
    syncer: Mutex<Option<(Arc<(Mutex<bool>, Condvar)>, JoinHandle<()>)>>,
    #[cfg(test)]
    pub fail_writes: std::sync::atomic::AtomicBool,
    /// Cutting a failed write away fails too (tests).
    #[cfg(test)]
    pub fail_truncate: std::sync::atomic::AtomicBool,
    /// Called before every fsync; an error is that fsync's result (tests).
    #[cfg(test)]
    pub sync_hook: SyncHook,
}

#[cfg(test)]
pub type SyncHook = Mutex<Option<Box<dyn FnMut() -> io::Result<()> + Send>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves plain values consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
        let seg = self.current.as_ref().map_or(0, |c| c.buf.capacity() + c.recs.capacity() * 24) as u64;
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

/// The wall clock, ns since the Unix epoch.
pub fn wall_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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

    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    pub fn segments(&self) -> u64 {
        self.track().segments.len() as u64
    }

    /// Whether the log has passed three quarters of `wal.max_bytes`: the oldest traces should
    /// be released so that delivery frees segments.
    pub fn under_pressure(&self) -> bool {
        self.disk_bytes() > self.cfg.max_bytes / 4 * 3
    }

    /// The position below which batches pin the oldest segment (its end), when there is more
    /// than the current segment.
    pub fn oldest_segment_end(&self) -> Option<u64> {
        let t = self.track();
        if t.segments.len() < 2 {
            return None;
        }
        t.segments.front().map(|s| s.base + s.len)
    }

    /// Bytes the log's bookkeeping holds in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.track_mem.load(Ordering::Relaxed)
    }

    fn track(&self) -> TrackGuard<'_> {
        TrackGuard { g: lock(&self.track), mem: &self.track_mem }
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
    fn leave_delivered_segment(&self) -> bool {
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
    fn append(&self, rec: &Encoded<'_>, keys: Option<u32>) -> Result<(u64, u64), AppendError> {
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

    fn write(&self, mut f: &File, rec: &Encoded<'_>) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_writes.load(Ordering::Relaxed) {
            f.write_all(&rec.head[..rec.head.len() / 2])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        f.write_all(&rec.head)?;
        f.write_all(rec.tail)
    }

    fn sync_file(&self, f: &File) -> io::Result<()> {
        #[cfg(test)]
        if let Some(h) = lock(&self.sync_hook).as_mut() {
            h()?;
        }
        f.sync_data()
    }

    fn cut(&self, f: &File, len: u64) -> io::Result<()> {
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
    fn rotate(&self, w: &mut Writer, base: u64) -> io::Result<()> {
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
    fn fsync(&self, seg: &SegmentFile, upto: u64) -> io::Result<()> {
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

    fn record_fsync(&self, d: Duration) {
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

fn dec(m: &mut BTreeMap<u64, u32>, pos: u64) {
    if let Some(k) = m.get_mut(&pos) {
        *k -= 1;
        if *k == 0 {
            m.remove(&pos);
        }
    }
}

fn seek_end(mut f: &File) -> io::Result<u64> {
    use std::io::Seek;
    f.seek(io::SeekFrom::End(0))
}

fn create_segment(dir: &Path, base: u64) -> io::Result<File> {
    let path = Segment::path(dir, base);
    let f = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
    // A crash may leave an empty file of this name from an earlier run: start it over.
    if f.metadata()?.len() > 0 {
        f.set_len(0)?;
    }
    fsync_dir(dir)?;
    Ok(f)
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Some((stop, h)) = lock(&self.syncer).take() {
            *lock(&stop.0) = true;
            stop.1.notify_all();
            // The syncer itself may hold the last reference (it upgrades its own for each
            // sync): then it is running this, and ends when this returns.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        let _ = self.sync_now();
        // A log with nothing undelivered left is removed down to one empty segment (not when
        // the replay did not finish: what it did not reach is not registered).
        let t = self.track();
        if t.outstanding.is_empty() && t.pending.is_empty() && t.replayed_to == u64::MAX {
            let current = lock(&self.w).base;
            for s in t.segments.iter().filter(|s| s.base != current) {
                let _ = fs::remove_file(Segment::path(&self.cfg.directory, s.base));
            }
        }
    }
}
