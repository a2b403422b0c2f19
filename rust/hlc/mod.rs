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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    #[test]
    fn local_events_advance_with_physical_time_and_count_when_it_stalls() {
        let c = Hlc::new(500 * MS);
        assert_eq!(c.now(10), Stamp { wall: 10, logical: 0 });
        assert_eq!(c.now(10), Stamp { wall: 10, logical: 1 });
        assert_eq!(c.now(11), Stamp { wall: 11, logical: 0 });
    }

    #[test]
    fn paper_receive_cases() {
        // m ahead of both: take m's wall, m.c + 1.
        let c = Hlc::new(500 * MS);
        c.now(100);
        assert_eq!(c.recv(100, Stamp { wall: 150, logical: 4 }).unwrap(), Stamp { wall: 150, logical: 5 });
        // local ahead of m and pt: local c + 1.
        assert_eq!(c.recv(120, Stamp { wall: 130, logical: 9 }).unwrap(), Stamp { wall: 150, logical: 6 });
        // all equal: max(c, m.c) + 1.
        assert_eq!(c.recv(120, Stamp { wall: 150, logical: 9 }).unwrap(), Stamp { wall: 150, logical: 10 });
        // physical time ahead of both: pt, 0.
        assert_eq!(c.recv(200, Stamp { wall: 150, logical: 99 }).unwrap(), Stamp { wall: 200, logical: 0 });
    }

    #[test]
    fn cockroach_max_offset_accepts_exactly_the_offset_and_refuses_beyond() {
        let c = Hlc::new(500 * MS);
        let pt = 1_000 * MS;
        c.now(pt);
        let before = c.last();
        // One nanosecond beyond: refused, clock unchanged.
        let r = c.recv(pt, Stamp { wall: pt + 500 * MS + 1, logical: 0 });
        assert_eq!(r, Err(Refused { ahead_ns: 500 * MS + 1 }));
        assert_eq!(c.last(), before);
        assert_eq!(c.stats().refusals, 1);
        // Exactly the max offset: accepted.
        let s = c.recv(pt, Stamp { wall: pt + 500 * MS, logical: 0 }).unwrap();
        assert_eq!(s, Stamp { wall: pt + 500 * MS, logical: 1 });
        assert_eq!(c.stats().max_forward_offset_ns, 500 * MS + 1);
    }

    #[test]
    fn backward_physical_jump_never_moves_stamps_back() {
        let c = Hlc::new(500 * MS);
        let a = c.now(1_000);
        let b = c.now(500);
        assert!(b > a);
        assert_eq!(c.stats().backward_jumps, 1);
    }

    #[test]
    fn logical_overflow_carries_into_the_physical_part() {
        let c = Hlc::new(500 * MS);
        let m = Stamp { wall: 10, logical: u32::MAX };
        let s = c.recv(10, m).unwrap();
        assert_eq!(s, Stamp { wall: 11, logical: 0 });
        assert!(s > m);
        assert_eq!(c.stats().logical_overflows, 1);
    }

    #[test]
    fn string_form_orders_like_stamps_and_round_trips() {
        let stamps = [
            Stamp { wall: 0, logical: 0 },
            Stamp { wall: 5, logical: u32::MAX },
            Stamp { wall: 6, logical: 0 },
            Stamp { wall: u64::MAX, logical: 7 },
        ];
        for w in stamps.windows(2) {
            assert!(w[0].to_string() < w[1].to_string());
        }
        for s in stamps {
            let mut buf = [0u8; STAMP_STR_LEN];
            s.write_to(&mut buf);
            assert_eq!(std::str::from_utf8(&buf).unwrap(), s.to_string());
            assert_eq!(Stamp::parse(&buf), Some(s));
        }
        assert_eq!(Stamp::parse(b"123"), None);
        assert_eq!(Stamp::parse(b"0000000000000000000x.0000000000"), None);
        assert_eq!(Stamp::parse(b"00000000000000000000.9999999999"), None); // > u32
    }

    #[test]
    fn persisted_bound_keeps_stamps_monotonic_across_restart_with_clock_going_back() {
        let dir = std::env::temp_dir().join(format!("tc-hlc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hlc.state");
        let _ = std::fs::remove_file(&path);
        let first = Hlc::with_persisted_bound(500 * MS, &path, 0).unwrap();
        let mut last = Stamp::default();
        for pt in (1..50).map(|i| i * 1_000 * MS) {
            last = first.now(pt);
        }
        drop(first);
        // Restart with the host clock far behind.
        let second = Hlc::with_persisted_bound(500 * MS, &path, 1).unwrap();
        let s = second.now(1);
        assert!(s > last, "{s} <= {last}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_in_use_by_another_clock_is_a_clear_error() {
        let dir = state_dir("locked");
        let path = dir.join("hlc.state");
        let first = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        let err = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap_err();
        assert!(err.to_string().contains("in use by another process"), "{err}");
        drop(first);
        Hlc::with_persisted_bound(500 * MS, &path, T0).expect("free again once the first is gone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_temp_file_never_follows_a_symlink_and_a_stale_one_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = state_dir("symlink");
        let path = dir.join("hlc.state");
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, persist::tmp_path(&path)).unwrap();
        persist::write_bound(&path, 42).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the link's target is untouched");
        assert_eq!(read_bound(&path), 42);
        assert!(std::fs::symlink_metadata(persist::tmp_path(&path)).is_err(), "no temp file left");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A stale temp file (a crash during a write) is replaced.
        std::fs::write(persist::tmp_path(&path), "stale").unwrap();
        persist::write_bound(&path, 43).unwrap();
        assert_eq!(read_bound(&path), 43);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unparsable_state_file_is_a_clear_error() {
        let path = std::env::temp_dir().join(format!("tc-hlc-bad-{}", std::process::id()));
        std::fs::write(&path, "not a number").unwrap();
        let err = Hlc::with_persisted_bound(500 * MS, &path, 0).unwrap_err();
        assert!(err.to_string().contains("hlc.state_file"), "{err}");
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(path.with_extension("lock"));
    }

    /// A fresh directory for one test's state file.
    fn state_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tc-hlc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_bound(path: &Path) -> u64 {
        let s = std::fs::read_to_string(path).unwrap();
        assert!(s.ends_with('\n'), "{s:?}");
        s.trim().parse().unwrap()
    }

    const SEC: u64 = 1_000 * MS;
    /// A wall clock to start from (2026-09).
    const T0: u64 = 1_790_000_000 * SEC;

    #[test]
    fn the_bound_is_written_to_a_temp_file_fsyncd_renamed_and_the_directory_fsyncd() {
        let dir = state_dir("write");
        let path = dir.join("hlc.state");
        persist::STEPS.with(|s| s.borrow_mut().clear());
        persist::write_bound(&path, 42).unwrap();
        let steps = persist::STEPS.with(|s| s.borrow().clone());
        assert_eq!(steps, ["write", "fsync file", "rename", "fsync dir"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "42\n");
        assert!(!persist::tmp_path(&path).exists(), "no temp file left");
        assert_eq!(persist::tmp_path(&path).file_name().unwrap(), "hlc.state.tmp");

        // The clock keeps the bound ahead of what it may stamp: its first write covers a batch
        // at the start time with remote times up to max_offset ahead.
        persist::STEPS.with(|s| s.borrow_mut().clear());
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert_eq!(persist::STEPS.with(|s| s.borrow().len()), 4);
        assert_eq!(c.persist_start(), Some(PersistStart::Resumed { bound: 42 }));
        let b0 = read_bound(&path);
        assert_eq!(b0, T0 + 500 * MS + 1 + PERSIST_WINDOW_NS);
        // Within half a window: no write.
        persist::STEPS.with(|s| s.borrow_mut().clear());
        c.now(T0 + 4 * SEC);
        assert!(persist::STEPS.with(|s| s.borrow().is_empty()));
        assert_eq!(read_bound(&path), b0);
        // Less than half left after the batch: written after it.
        c.now(T0 + 5 * SEC); // exactly half left
        assert_eq!(read_bound(&path), b0);
        let s = c.now(T0 + 6 * SEC);
        let b1 = read_bound(&path);
        assert_eq!(b1, T0 + 6 * SEC + 500 * MS + 1 + PERSIST_WINDOW_NS);
        assert!(s.wall < b0);
        // A tick moves it too, so an ingest after a quiet spell does not write.
        c.persist_ahead(T0 + 12 * SEC);
        assert_eq!(read_bound(&path), T0 + 12 * SEC + 500 * MS + 1 + PERSIST_WINDOW_NS);
        assert!(!persist::tmp_path(&path).exists());
        assert_eq!(c.stats().persist_errors, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_quiet_spell_longer_than_the_window_writes_before_stamping() {
        let dir = state_dir("quiet");
        let path = dir.join("hlc.state");
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        let s = c.now(T0 + 60 * SEC); // no tick meanwhile: this batch moves the bound itself
        assert_eq!(s, Stamp { wall: T0 + 60 * SEC, logical: 0 });
        assert!(read_bound(&path) > s.wall);
        assert_eq!(c.stats().stalled_batches, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_or_empty_state_file_starts_with_the_wait_strategy() {
        let dir = state_dir("empty");
        let path = dir.join("hlc.state");
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert_eq!(c.persist_start(), Some(PersistStart::Missing));
        assert!(PersistStart::Missing.needs_wait());
        assert!(read_bound(&path) > T0);
        drop(c);
        // What a crash before the content reached the disk leaves.
        std::fs::write(&path, "").unwrap();
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert_eq!(c.persist_start(), Some(PersistStart::Empty));
        assert!(PersistStart::Empty.needs_wait());
        assert_eq!(c.now(T0), Stamp { wall: T0, logical: 0 }, "starts from the wall clock, as wait does");
        assert!(read_bound(&path) > T0, "a bound is written at once");
        drop(c); // one clock at a time on a state file
        std::fs::write(&path, " \n").unwrap();
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert_eq!(c.persist_start(), Some(PersistStart::Empty));
        drop(c);
        // A bound resumes, no wait.
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert!(matches!(c.persist_start(), Some(PersistStart::Resumed { .. })));
        assert!(!c.persist_start().unwrap().needs_wait());
        assert_eq!(Hlc::new(500 * MS).persist_start(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bound_absurdly_far_ahead_is_refused_naming_the_key() {
        let dir = state_dir("absurd");
        let path = dir.join("hlc.state");
        let far = T0 + 500 * MS + MAX_BOUND_AHEAD_NS + 1;
        std::fs::write(&path, format!("{far}\n")).unwrap();
        let err = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap_err();
        assert!(err.to_string().contains("hlc.state_file"), "{err}");
        assert!(err.to_string().contains("24 h"), "{err}");
        assert_eq!(read_bound(&path), far, "the file is left for the operator");
        // Exactly the limit is accepted (a host clock that went back less than a day).
        std::fs::write(&path, format!("{}\n", far - 1)).unwrap();
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert!(c.now(T0) > Stamp { wall: far - 1, logical: 0 });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_stalls_batches_at_the_durable_bound_instead_of_passing_it() {
        let dir = state_dir("fail");
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let path = sub.join("hlc.state");
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        let bound = read_bound(&path);
        let before = c.now(T0);
        // The directory goes away (tests run as root: permissions would not stop a write).
        std::fs::remove_dir_all(&sub).unwrap();
        // Stamps below the durable bound are still issued; the write attempted once less than
        // half the window is left fails and is counted.
        let s = c.now(T0 + 6 * SEC);
        assert!(s > before && s.wall < bound);
        assert!(c.stats().persist_errors >= 1);
        let last = c.last();
        // A batch that would reach the bound is refused and leaves the clock as it was.
        let errors = c.stats().persist_errors;
        let err = c
            .batch(T0 + 20 * SEC, |b| {
                b.now();
                b.now()
            })
            .unwrap_err();
        assert_eq!(err.bound, bound);
        assert!(err.cause.contains("hlc.state_file"), "{err}");
        assert!(err.to_string().contains("stalled"), "{err}");
        assert_eq!(c.last(), last, "no stamp at or past the bound was kept");
        assert_eq!(c.stats().stalled_batches, 1);
        assert!(c.stats().persist_errors > errors, "the stalled batch tried to write first");
        // A remote time admitted but beyond the bound stalls too.
        let m = Stamp { wall: bound, logical: 0 };
        assert!(c.batch(bound - 100 * MS, |b| b.recv(m)).is_err());
        assert_eq!(c.stats().stalled_batches, 2);
        assert_eq!(c.last(), last);
        // Once the file can be written again, the bound moves and stamps pass it.
        std::fs::create_dir_all(&sub).unwrap();
        let s = c.try_now(T0 + 20 * SEC).unwrap();
        assert_eq!(s, Stamp { wall: T0 + 20 * SEC, logical: 0 });
        assert!(read_bound(&path) > s.wall);
        // And a restart starts above every stamp issued.
        drop(c);
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        assert!(c.now(T0) > s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_that_cannot_be_written_at_start_is_an_error() {
        let dir = state_dir("nodir");
        let err = Hlc::with_persisted_bound(500 * MS, &dir.join("no/such/hlc.state"), T0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}"); // the engine names the key
        // A directory where the file should be.
        let path = dir.join("hlc.state");
        std::fs::create_dir_all(&path).unwrap();
        assert!(Hlc::with_persisted_bound(500 * MS, &path, T0).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_happen_outside_the_clock_lock() {
        let dir = state_dir("lock");
        let path = dir.join("hlc.state");
        let c = Hlc::with_persisted_bound(500 * MS, &path, T0).unwrap();
        // While a write holds the persist lock, the clock still stamps below the bound.
        let guard = c.persist.as_ref().unwrap().lock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(c.try_now(T0 + 6 * SEC).is_ok(), "no wait for the writer");
            })
            .join()
            .unwrap();
        });
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_engine_whose_clock_stalls_refuses_the_batch_whole_with_a_retryable_error() {
        use crate::config::{Config, RestartStrategy};
        use crate::engine::{Engine, IngestError};
        use crate::testutil::{request, span};
        let dir = state_dir("engine");
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let path = sub.join("hlc.state");
        let cfg = Config {
            hlc_restart: RestartStrategy::Persist,
            hlc_state_file: Some(path.to_str().unwrap().to_string()),
            ..Config::default()
        };
        let e = Engine::new(cfg.clone()).unwrap();
        assert_eq!(e.hlc_persist_start(), Some(PersistStart::Missing));
        // Engine::new reads the wall clock (for the absurd-bound check); the rest is injected.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let batch = |t: u64, at: u64| request(vec![("a", vec![span(t, 1, 0, at - SEC, at - SEC / 2), span(t, 2, 1, at - SEC, at - SEC / 2)])]);
        e.ingest(&batch(1, now), now).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        let later = now + 60 * SEC;
        let err = e.ingest(&batch(2, later), later).unwrap_err();
        assert!(matches!(err, IngestError::ClockStalled(_)), "{err:?}");
        assert!(err.to_string().contains("hlc.state_file") && err.to_string().contains("retry later"), "{err}");
        let st = e.stats();
        assert_eq!((st.spans_received, st.buffered_spans, st.buffered_traces), (2, 2, 1), "nothing of it kept");
        assert_eq!(st.hlc_stalled_batches, 1);
        assert!(st.hlc_persist_errors >= 1);
        assert!(e.hlc_last().unwrap().wall < later);
        // The retry succeeds once the file can be written.
        std::fs::create_dir_all(&sub).unwrap();
        e.ingest(&batch(2, later), later).unwrap();
        assert_eq!(e.stats().buffered_traces, 2);
        let last = e.hlc_last().unwrap();
        drop(e);
        // A restart resumes above every stamp without waiting.
        let e = Engine::new(cfg.clone()).unwrap();
        assert!(matches!(e.hlc_persist_start(), Some(PersistStart::Resumed { bound }) if bound > last.wall));
        drop(e);
        // A bound more than a day ahead is refused at start, naming the key.
        std::fs::write(&path, format!("{}\n", now + 25 * 3600 * SEC)).unwrap();
        let err = Engine::new(cfg).err().unwrap();
        assert!(err.0.starts_with("hlc.state_file"), "{}", err.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    proptest! {
        #[test]
        fn stamps_strictly_increase_across_threads_without_duplicates(
            pts in proptest::collection::vec(0u64..1_000, 1..40),
            remotes in proptest::collection::vec((0u64..2_000, 0u32..5), 0..20),
        ) {
            let c = Arc::new(Hlc::new(500));
            let mut handles = Vec::new();
            for t in 0..4 {
                let c = Arc::clone(&c);
                let pts = pts.clone();
                let remotes = remotes.clone();
                handles.push(std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for (i, pt) in pts.iter().enumerate() {
                        let s = if let Some(&(w, l)) = remotes.get((i + t) % remotes.len().max(1)) {
                            c.recv(*pt, Stamp { wall: w, logical: l }).unwrap_or_else(|_| c.now(*pt))
                        } else {
                            c.now(*pt)
                        };
                        mine.push(s);
                    }
                    mine
                }));
            }
            let mut all = Vec::new();
            for h in handles {
                let mine = h.join().unwrap();
                // Each thread sees strictly increasing stamps.
                for w in mine.windows(2) {
                    prop_assert!(w[0] < w[1]);
                }
                all.extend(mine);
            }
            let n = all.len();
            all.sort();
            all.dedup();
            prop_assert_eq!(all.len(), n);
        }
    }
}
