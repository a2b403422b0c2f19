//! Hybrid logical clock (Kulkarni et al. 2014) with CockroachDB's max-offset guard.
//!
//! One clock per engine, shared by all shards. The physical time is passed in by the caller
//! (the Go component reads the wall clock; tests inject it), so every rule here is testable
//! without sleeping. Stamps are taken once per ingested batch under one short lock, so the
//! hot path pays one uncontended lock per batch, not per span.
//!
//! Rules:
//! - `now(pt)`: `l' = max(l, pt)`; `c = l' == l ? c + 1 : 0`.
//! - `recv(pt, m)`: `l' = max(l, m.l, pt)`; `c` per the paper, so the result is strictly
//!   greater than both the previous stamp and `m`.
//! - A remote time more than `max_offset` ahead of `pt` is refused: the clock does not move
//!   (exactly `pt + max_offset` is accepted), and the caller records a finding.
//! - The physical clock going back never moves stamps back (counted as a backward jump).
//! - The logical counter is a `u32`; when it would overflow, it carries into the physical
//!   part (`l + 1`, `c = 0`), keeping order and uniqueness.
//! - With a state file ([`Hlc::with_persisted_bound`]), no stamp's wall part reaches the
//!   bound last written durably; a batch that would reach it while the bound cannot be moved
//!   forward is refused whole ([`Stalled`]) and the clock is left as it was.
//!
//! Locks: `state` (the clock) is held only to compute stamps, never during file I/O; writes
//! of the state file are serialised by `persist`, which may take `state` briefly (never the
//! other way round).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

mod persist;
mod stamp;
pub use persist::{PersistStart, MAX_BOUND_AHEAD_NS};
pub use stamp::stamp_batch;

/// One HLC timestamp. Ordered lexicographically by `(wall, logical)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Physical part, nanoseconds since the Unix epoch.
    pub wall: u64,
    pub logical: u32,
}

/// Length of the string form: 20 digits, '.', 10 digits.
pub const STAMP_STR_LEN: usize = 31;

impl Stamp {
    /// Parses the fixed-width string form `WWWWWWWWWWWWWWWWWWWW.LLLLLLLLLL`.
    pub fn parse(b: &[u8]) -> Option<Stamp> {
        if b.len() != STAMP_STR_LEN || b[20] != b'.' {
            return None;
        }
        let num = |d: &[u8]| -> Option<u64> {
            d.iter().try_fold(0u64, |acc, &c| {
                c.is_ascii_digit()
                    .then(|| acc.checked_mul(10)?.checked_add(u64::from(c - b'0')))
                    .flatten()
            })
        };
        let wall = num(&b[..20])?;
        let logical = u32::try_from(num(&b[21..])?).ok()?;
        Some(Stamp { wall, logical })
    }

    /// Writes the fixed-width string form into `out` (exactly [`STAMP_STR_LEN`] bytes), whose
    /// lexicographic order equals HLC order.
    pub fn write_to(&self, out: &mut [u8; STAMP_STR_LEN]) {
        let mut w = self.wall;
        for i in (0..20).rev() {
            out[i] = b'0' + (w % 10) as u8;
            w /= 10;
        }
        out[20] = b'.';
        let mut l = self.logical;
        for i in (21..31).rev() {
            out[i] = b'0' + (l % 10) as u8;
            l /= 10;
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}.{:010}", self.wall, self.logical)
    }
}

/// Why a batch got no stamps: they would reach the bound last written to the state file,
/// and the bound could not be moved forward. Retryable; nothing of the batch was stamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stalled {
    /// The durable bound, ns since the Unix epoch.
    pub bound: u64,
    /// Why the last write of the state file failed.
    pub cause: String,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HLC stalled: stamps would pass the bound {} last made durable in hlc.state_file: {}",
            self.bound, self.cause
        )
    }
}

/// Why a remote time was not let into the clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// How far ahead of the physical clock the remote time was, in nanoseconds.
    pub ahead_ns: u64,
}

/// Counters the clock keeps for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HlcStats {
    /// Remote times refused for being more than the max offset ahead.
    pub refusals: u64,
    /// Times the physical clock was seen going backwards.
    pub backward_jumps: u64,
    /// Largest forward offset of a remote time over the physical clock ever seen (accepted
    /// or not), in nanoseconds.
    pub max_forward_offset_ns: u64,
    /// Times the logical counter carried into the physical part.
    pub logical_overflows: u64,
    /// Failures to persist the upper bound (`persist` restart strategy).
    pub persist_errors: u64,
    /// Batches refused because their stamps would pass the durable bound ([`Stalled`]).
    pub stalled_batches: u64,
}

#[derive(Debug)]
struct State {
    last: Stamp,
    last_pt: u64,
    stats: HlcStats,
    /// `persist` strategy: the bound last written durably; stamps' wall parts stay below it.
    /// `u64::MAX` (unused) without a state file.
    durable: u64,
    /// Why the last write of the state file failed; `None` after a successful one.
    persist_error: Option<String>,
}

/// How far ahead of what the clock may need the persisted upper bound is written; it is
/// rewritten once less than half of this is left.
pub const PERSIST_WINDOW_NS: u64 = 10_000_000_000;

/// The state file, behind the lock that serialises its writes (held during a write; the
/// clock lock is taken inside it only briefly).
#[derive(Debug)]
struct Persist {
    path: PathBuf,
    /// The state file's lock (`<file>.lock`), held as long as the clock lives.
    _lock: std::fs::File,
}

/// A hybrid logical clock. Thread-safe (`Sync`); share it by reference.
#[derive(Debug)]
pub struct Hlc {
    max_offset_ns: u64,
    state: Mutex<State>,
    persist: Option<Mutex<Persist>>,
    start: Option<PersistStart>,
}

fn lock_ignoring_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding either lock cannot leave it inconsistent (plain values).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hlc {
    pub fn new(max_offset_ns: u64) -> Hlc {
        Hlc {
            max_offset_ns,
            state: Mutex::new(State {
                last: Stamp::default(),
                last_pt: 0,
                stats: HlcStats::default(),
                durable: u64::MAX,
                persist_error: None,
            }),
            persist: None,
            start: None,
        }
    }

    /// A clock that starts above the bound stored in `path` and keeps a durable bound ahead
    /// of every stamp it issues in that file, so stamps stay monotonic across restarts even
    /// when the host clock went back. `now` is the wall clock at start.
    ///
    /// A missing or empty file starts the clock from zero: the caller must then wait
    /// `hlc.max_offset` before ingesting, as with the `wait` strategy ([`Hlc::persist_start`]).
    /// A bound more than [`MAX_BOUND_AHEAD_NS`] (plus the max offset) ahead of `now`, an
    /// unparsable file and an unwritable path are errors naming `hlc.state_file`.
    pub fn with_persisted_bound(max_offset_ns: u64, path: &Path, now: u64) -> io::Result<Hlc> {
        let lock = persist::lock(path)?;
        let start = persist::read_start(path, now, max_offset_ns)?;
        let wall = match start {
            PersistStart::Resumed { bound } => bound,
            PersistStart::Missing | PersistStart::Empty => 0,
        };
        let hlc = Hlc {
            max_offset_ns,
            state: Mutex::new(State {
                last: Stamp { wall, logical: 0 },
                last_pt: 0,
                stats: HlcStats::default(),
                durable: wall,
                persist_error: None,
            }),
            persist: Some(Mutex::new(Persist { path: path.to_path_buf(), _lock: lock })),
            start: Some(start),
        };
        // Write the first bound now so an unwritable path fails at start.
        let mut st = hlc.lock();
        let bound = hlc.need(&st, now).saturating_add(PERSIST_WINDOW_NS);
        persist::write_bound(path, bound)?; // no other thread can use the clock yet
        st.durable = bound;
        drop(st);
        Ok(hlc)
    }

    /// What the state file held at start (`None` without one).
    pub fn persist_start(&self) -> Option<PersistStart> {
        self.start
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock_ignoring_poison(&self.state)
    }

    /// The highest wall part a batch at `pt` may stamp: remote times are admitted up to
    /// `pt + max_offset` (plus one for a logical carry).
    fn need(&self, st: &State, pt: u64) -> u64 {
        st.last.wall.max(st.last_pt.max(pt).saturating_add(self.max_offset_ns)).saturating_add(1)
    }

    /// Runs `f` with a [`Batch`] view of the clock under one lock acquisition.
    ///
    /// With a state file: if the batch might reach the durable bound, the bound is moved
    /// forward first (this call waits for the write); if the stamps would still reach it, the
    /// clock is restored to what it was before `f` and the batch is refused ([`Stalled`]),
    /// so whatever `f` stamped must be discarded. Once less than half of
    /// [`PERSIST_WINDOW_NS`] is left, the bound is moved forward after the batch, outside
    /// the clock lock, unless another thread is already writing it.
    pub fn batch<R>(&self, pt: u64, f: impl FnOnce(&mut Batch<'_>) -> R) -> Result<R, Stalled> {
        if self.persist.is_none() {
            return Ok(self.run(&mut self.lock(), pt, f));
        }
        {
            let st = self.lock();
            let reach = self.need(&st, pt) >= st.durable;
            drop(st);
            if reach {
                self.extend(pt, true);
            }
        }
        let mut st = self.lock();
        let before = (st.last, st.last_pt, st.stats);
        let r = self.run(&mut st, pt, f);
        if st.last.wall >= st.durable {
            (st.last, st.last_pt, st.stats) = before;
            st.stats.stalled_batches += 1;
            let cause = st.persist_error.clone().unwrap_or_else(|| "other batches used the new bound meanwhile".to_string());
            return Err(Stalled { bound: st.durable, cause });
        }
        let low = st.durable.saturating_sub(self.need(&st, pt)) < PERSIST_WINDOW_NS / 2;
        drop(st);
        if low {
            self.extend(pt, false);
        }
        Ok(r)
    }

    fn run<R>(&self, st: &mut State, pt: u64, f: impl FnOnce(&mut Batch<'_>) -> R) -> R {
        if pt < st.last_pt {
            st.stats.backward_jumps += 1;
        }
        st.last_pt = st.last_pt.max(pt);
        f(&mut Batch { st, pt, max_offset: self.max_offset_ns })
    }

    /// Moves the durable bound forward ahead of need when less than half of
    /// [`PERSIST_WINDOW_NS`] is left at physical time `pt`; for callers off the ingest path
    /// (a periodic tick), so that ingests rarely write. Does nothing without a state file or
    /// while another thread writes it.
    pub fn persist_ahead(&self, pt: u64) {
        self.extend(pt, false);
    }

    /// Writes a new bound `PERSIST_WINDOW_NS` beyond need if less than half of the window is
    /// left. With `wait`, waits for a write under way; without, leaves the work to it. The
    /// clock lock is not held during the write.
    fn extend(&self, pt: u64, wait: bool) {
        let Some(persist) = &self.persist else { return };
        let p = if wait {
            lock_ignoring_poison(persist)
        } else {
            match persist.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        };
        let bound = {
            let st = self.lock();
            let need = self.need(&st, pt);
            if st.durable.saturating_sub(need) >= PERSIST_WINDOW_NS / 2 {
                return; // moved forward meanwhile
            }
            need.saturating_add(PERSIST_WINDOW_NS)
        };
        let written = persist::write_bound(&p.path, bound);
        let mut st = self.lock();
        match written {
            Ok(()) => {
                st.durable = st.durable.max(bound);
                st.persist_error = None;
            }
            Err(e) => {
                st.stats.persist_errors += 1;
                st.persist_error = Some(format!("hlc.state_file {}: {e}", p.path.display()));
            }
        }
    }

    /// A local event: one new stamp.
    ///
    /// # Panics
    /// When a clock with a state file is stalled; the engine uses [`Hlc::batch`].
    pub fn now(&self, pt: u64) -> Stamp {
        self.try_now(pt).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A local event: one new stamp, or [`Stalled`].
    pub fn try_now(&self, pt: u64) -> Result<Stamp, Stalled> {
        self.batch(pt, |b| b.now())
    }

    /// A receive event: a stamp strictly greater than `m` and all previous stamps, or a
    /// refusal (clock unchanged) when `m` is more than the max offset ahead of `pt`.
    ///
    /// # Panics
    /// When a clock with a state file is stalled; the engine uses [`Hlc::batch`].
    pub fn recv(&self, pt: u64, m: Stamp) -> Result<Stamp, Refused> {
        self.batch(pt, |b| b.recv(m)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Moves the clock to at least `m` without issuing a stamp: after a restart, the clock
    /// continues above every stamp replayed from the write-ahead log.
    pub fn advance_to(&self, m: Stamp) {
        let mut st = self.lock();
        if m > st.last {
            st.last = m;
        }
    }

    /// The last stamp issued.
    pub fn last(&self) -> Stamp {
        self.lock().last
    }

    pub fn stats(&self) -> HlcStats {
        self.lock().stats
    }
}

/// The clock, locked, for a batch of events at one physical time.
pub struct Batch<'a> {
    st: &'a mut State,
    pt: u64,
    max_offset: u64,
}

impl Batch<'_> {
    fn next_logical(st: &mut State, wall: u64, logical: u64) -> Stamp {
        if logical > u64::from(u32::MAX) {
            st.stats.logical_overflows += 1;
            Stamp { wall: wall + 1, logical: 0 }
        } else {
            Stamp { wall, logical: logical as u32 }
        }
    }

    pub fn now(&mut self) -> Stamp {
        let st = &mut *self.st;
        let l = st.last;
        let stamp = if self.pt > l.wall {
            Stamp { wall: self.pt, logical: 0 }
        } else {
            Self::next_logical(st, l.wall, u64::from(l.logical) + 1)
        };
        st.last = stamp;
        stamp
    }

    /// Checks the max-offset rule for a remote physical time and records the offset.
    pub fn admit(&mut self, remote_wall: u64) -> Result<(), Refused> {
        let ahead = remote_wall.saturating_sub(self.pt);
        let st = &mut *self.st;
        st.stats.max_forward_offset_ns = st.stats.max_forward_offset_ns.max(ahead);
        if ahead > self.max_offset {
            st.stats.refusals += 1;
            return Err(Refused { ahead_ns: ahead });
        }
        Ok(())
    }

    pub fn recv(&mut self, m: Stamp) -> Result<Stamp, Refused> {
        self.admit(m.wall)?;
        Ok(self.recv_admitted(m))
    }

    /// The receive rule for a remote stamp already checked with [`Batch::admit`].
    pub fn recv_admitted(&mut self, m: Stamp) -> Stamp {
        let st = &mut *self.st;
        let l = st.last;
        let wall = l.wall.max(m.wall).max(self.pt);
        let logical = if wall == l.wall && wall == m.wall {
            u64::from(l.logical.max(m.logical)) + 1
        } else if wall == l.wall {
            u64::from(l.logical) + 1
        } else if wall == m.wall {
            u64::from(m.logical) + 1
        } else {
            0
        };
        let stamp = Self::next_logical(st, wall, logical);
        st.last = stamp;
        stamp
    }
}

#[cfg(test)]
mod tests;
