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
