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
//!
//! Modules: [`record`] (the record format and its check), `open` (opening the log and
//! reading it back), `commit` (appending, rotation, fsync), `delivery` (undelivered keys,
//! acknowledgements, deleting segments); this module holds the log's state and its gauges.

pub mod record;
mod commit;
mod delivery;
mod open;

pub use open::{Opened, ReplayBatch, Replayer};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use record::{Key, LogKey};

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


/// The wall clock, ns since the Unix epoch.
pub fn wall_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {

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
