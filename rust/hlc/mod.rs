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

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod stamp;
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
}

#[derive(Debug)]
struct State {
    last: Stamp,
    last_pt: u64,
    stats: HlcStats,
    /// `persist` strategy: stamps must stay below this bound until it is moved forward.
    persisted_bound: u64,
}

/// How far ahead of issued stamps the persisted upper bound is written.
pub const PERSIST_WINDOW_NS: u64 = 10_000_000_000;

/// A hybrid logical clock. Thread-safe (`Sync`); share it by reference.
#[derive(Debug)]
pub struct Hlc {
    max_offset_ns: u64,
    state: Mutex<State>,
    persist_path: Option<PathBuf>,
}

impl Hlc {
    pub fn new(max_offset_ns: u64) -> Hlc {
        Hlc {
            max_offset_ns,
            state: Mutex::new(State {
                last: Stamp::default(),
                last_pt: 0,
                stats: HlcStats::default(),
                persisted_bound: u64::MAX,
            }),
            persist_path: None,
        }
    }

    /// A clock that starts above the bound stored in `path` (if the file exists) and keeps a
    /// bound at least [`PERSIST_WINDOW_NS`] ahead of every stamp it issues in that file, so
    /// stamps stay monotonic across restarts even when the host clock went back.
    pub fn with_persisted_bound(max_offset_ns: u64, path: &Path) -> io::Result<Hlc> {
        let start = match fs::read_to_string(path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("hlc.state_file {} does not hold a bound: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let hlc = Hlc {
            max_offset_ns,
            state: Mutex::new(State {
                last: Stamp { wall: start, logical: 0 },
                last_pt: 0,
                stats: HlcStats::default(),
                persisted_bound: 0,
            }),
            persist_path: Some(path.to_path_buf()),
        };
        // Write the first bound now so an unwritable path fails at start.
        let bound = start.saturating_add(PERSIST_WINDOW_NS);
        write_bound(path, bound)?;
        hlc.state.lock().unwrap_or_else(|p| p.into_inner()).persisted_bound = bound;
        Ok(hlc)
    }

    pub fn max_offset_ns(&self) -> u64 {
        self.max_offset_ns
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent (plain values).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with a [`Batch`] view of the clock under one lock acquisition.
    pub fn batch<R>(&self, pt: u64, f: impl FnOnce(&mut Batch<'_>) -> R) -> R {
        let mut st = self.lock();
        if pt < st.last_pt {
            st.stats.backward_jumps += 1;
        }
        st.last_pt = st.last_pt.max(pt);
        let last_before = st.last.wall;
        let mut b = Batch { st: &mut st, pt, max_offset: self.max_offset_ns };
        let r = f(&mut b);
        if st.last.wall >= st.persisted_bound.saturating_sub(PERSIST_WINDOW_NS / 2)
            && st.last.wall > last_before
        {
            if let Some(path) = &self.persist_path {
                let bound = st.last.wall.saturating_add(PERSIST_WINDOW_NS);
                match write_bound(path, bound) {
                    Ok(()) => st.persisted_bound = bound,
                    Err(_) => st.stats.persist_errors += 1,
                }
            }
        }
        r
    }

    /// A local event: one new stamp.
    pub fn now(&self, pt: u64) -> Stamp {
        self.batch(pt, |b| b.now())
    }

    /// A receive event: a stamp strictly greater than `m` and all previous stamps, or a
    /// refusal (clock unchanged) when `m` is more than the max offset ahead of `pt`.
    pub fn recv(&self, pt: u64, m: Stamp) -> Result<Stamp, Refused> {
        self.batch(pt, |b| b.recv(m))
    }

    /// The last stamp issued.
    pub fn last(&self) -> Stamp {
        self.lock().last
    }

    pub fn stats(&self) -> HlcStats {
        self.lock().stats
    }
}

fn write_bound(path: &Path, bound: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{bound}\n"))?;
    fs::rename(&tmp, path)
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
        let first = Hlc::with_persisted_bound(500 * MS, &path).unwrap();
        let mut last = Stamp::default();
        for pt in (1..50).map(|i| i * 1_000 * MS) {
            last = first.now(pt);
        }
        drop(first);
        // Restart with the host clock far behind.
        let second = Hlc::with_persisted_bound(500 * MS, &path).unwrap();
        let s = second.now(1);
        assert!(s > last, "{s} <= {last}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unparsable_state_file_is_a_clear_error() {
        let path = std::env::temp_dir().join(format!("tc-hlc-bad-{}", std::process::id()));
        std::fs::write(&path, "not a number").unwrap();
        let err = Hlc::with_persisted_bound(500 * MS, &path).unwrap_err();
        assert!(err.to_string().contains("hlc.state_file"), "{err}");
        let _ = std::fs::remove_file(&path);
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
