//! The write-ahead log through the engine, with an injected clock: what a restart replays
//! (and what it does not), reclaiming segments, group commit, damage, a full disk, the
//! `wal.max_bytes` bound, the directory lock, and the HLC after a restart.

use super::*;
use crate::config::LateSpanPolicy;
use crate::findings::ReleaseReason;
use crate::wal::record::SpanStamp;
use crate::testutil::*;
use crate::wal::SyncMode;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::path::{Path, PathBuf};

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_790_000_000 * SEC;

/// A fresh directory under the system's temp directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("tc-wal-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg(dir: &Path) -> Config {
    Config {
        num_shards: 2,
        quiet_period_ns: SEC as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        hlc_restart: RestartStrategy::None,
        wal_directory: Some(dir.to_str().unwrap().to_string()),
        wal_sync: SyncMode::Batch,
        ..Config::default()
    }
}

fn children(t: u64) -> Vec<Span> {
    let b = T0 - 5 * SEC;
    vec![span(t, 2, 1, b + 10 * MS, b + 500 * MS), span(t, 3, 1, b + 20 * MS, b + 600 * MS)]
}

fn root(t: u64) -> Vec<Span> {
    let b = T0 - 5 * SEC;
    vec![span(t, 1, 0, b, b + 900 * MS)]
}

fn req(spans: Vec<Span>) -> Vec<u8> {
    request(vec![("svc", spans)])
}

/// Drains everything; acknowledges each release when `ack`.
fn drain(e: &Engine, ack: bool) -> Vec<OutSpan> {
    let mut out = Vec::new();
    while let Some(r) = e.drain(1_000_000) {
        out.extend(decode(&r.otlp));
        if ack {
            assert!(e.delivered(r.token), "a release with spans has a token");
        }
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "wal")).collect();
    v.sort();
    v
}

#[test]
fn a_restart_replays_what_was_not_delivered_and_nothing_else() {
    let dir = TempDir::new("replay");
    let (stamps_before, a_stamps);
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        assert_eq!(e.recover(T0), Recovery::default());
        e.ingest(&req(children(0xA)), T0).unwrap();
        let mut b = children(0xB);
        b.extend(root(0xB));
        e.ingest(&req(b), T0).unwrap();
        e.tick(T0 + 2 * SEC); // B is complete and quiet: released and delivered
        let out = drain(&e, true);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|s| s.trace() == 0xB));
        stamps_before = e.hlc_last().unwrap();
        // A's stamps as given, to compare after the restart.
        e.shutdown(T0 + 3 * SEC);
        let a: Vec<OutSpan> = drain(&e, false); // handed out, never acknowledged: in flight
        a_stamps = a.iter().map(|s| (s.id(), s.attr_str("consistency.hlc").unwrap())).collect::<Vec<_>>();
        assert_eq!(a.len(), 2);
        // Dropped without acknowledging A: a crash as far as the log is concerned.
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0 + 4 * SEC);
    assert_eq!((rep.spans, rep.traces, rep.batches), (2, 1, 1), "{rep:?}");
    assert_eq!(rep.redelivered_spans, 2, "A was handed out and not acknowledged");
    assert_eq!((rep.corrupt_records, rep.torn_records), (0, 0));
    let s = e.stats();
    assert_eq!((s.buffered_spans, s.buffered_traces, s.wal_spans_replayed, s.wal_traces_recovered), (2, 1, 2, 1));
    assert_eq!(s.spans_received, 0, "replayed spans are not received again");
    // The clock continues above every replayed stamp, even with the host clock far behind.
    assert!(e.hlc_last().unwrap() >= stamps_before);
    // The trace cut by the restart goes on assembling and leaves whole, marked recovered.
    e.ingest(&req(root(0xA)), T0 + 4 * SEC).unwrap();
    e.tick(T0 + 6 * SEC);
    let out = drain(&e, true);
    assert_eq!(out.len(), 3);
    let summary = out.iter().find(|s| s.id() == 1).unwrap();
    assert_eq!(summary.attr_str("consistency.trace.release_reason").as_deref(), Some("complete"));
    assert!(matches!(summary.attr("consistency.trace.recovered"), Some(any_value::Value::BoolValue(true))));
    assert!(out.iter().filter(|s| s.id() != 1).all(|s| s.attr("consistency.trace.recovered").is_none()));
    for (id, hlc) in &a_stamps {
        let s = out.iter().find(|s| s.id() == *id).unwrap();
        assert_eq!(s.attr_str("consistency.hlc").as_ref(), Some(hlc), "replayed spans keep their stamps");
    }
    let new_root = out.iter().find(|s| s.id() == 1).unwrap().attr_str("consistency.hlc").unwrap();
    assert!(a_stamps.iter().all(|(_, h)| *h < new_root), "the new stamp is above the replayed ones");
    drop(e);
    // Everything was delivered: nothing replays, and the log is down to one segment.
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0 + 10 * SEC);
    assert_eq!((rep.spans, rep.batches), (0, 0), "{rep:?}");
    drop(e);
    assert!(segment_files(&dir.0).len() <= 2, "{:?}", segment_files(&dir.0));
}

#[test]
fn unassembled_and_late_spans_are_logged_and_acknowledged_too() {
    let dir = TempDir::new("late");
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        let mut b = children(0xB);
        b.extend(root(0xB));
        e.ingest(&req(b), T0).unwrap();
        e.tick(T0 + 2 * SEC);
        drain(&e, true);
        // A late span of B and a span with a zero trace ID, in one batch.
        let mut late = vec![span(0xB, 9, 1, T0 - SEC, T0 - SEC / 2)];
        let mut bad = span(0xC, 1, 0, T0 - SEC, T0);
        bad.trace_id = vec![0; 16];
        late.push(bad);
        let o = e.ingest(&req(late), T0 + 3 * SEC).unwrap();
        assert_eq!((o.late_forwarded, o.unassembled), (1, 1));
        // Drained, only the unassembled one is acknowledged (one release each when drained
        // one unit at a time).
        let first = e.drain(1).unwrap();
        let _second = e.drain(1).unwrap();
        assert!(e.delivered(first.token));
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0 + 10 * SEC);
    assert_eq!(rep.spans, 1, "only the unacknowledged one of the two replays: {rep:?}");
}

#[test]
fn segments_are_reclaimed_once_delivered() {
    let dir = TempDir::new("reclaim");
    let mut c = cfg(&dir.0);
    c.wal_max_bytes = crate::config::MIN_WAL_MAX_BYTES; // 1 MiB segments
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    let big = "x".repeat(100_000);
    for t in 0..40u64 {
        let mut spans = children(t + 1);
        spans.extend(root(t + 1));
        spans[0].name = big.clone();
        e.ingest(&req(spans), T0).unwrap();
    }
    let s = e.stats();
    assert!(s.wal_segments >= 4, "{} segments", s.wal_segments);
    assert!(s.wal_bytes > 4_000_000);
    e.tick(T0 + 2 * SEC);
    drain(&e, true);
    let s = e.stats();
    assert_eq!(s.wal_segments, 1, "everything delivered: only the current segment is left");
    assert!(s.wal_bytes < 1_200_000, "{}", s.wal_bytes);
    assert_eq!(segment_files(&dir.0).len(), 1);
}

#[test]
fn one_fsync_covers_every_record_written_before_it() {
    let dir = TempDir::new("group");
    let mut c = cfg(&dir.0);
    c.wal_sync = SyncMode::None;
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    for t in 0..5u64 {
        e.ingest(&req(children(t + 1)), T0).unwrap();
    }
    let w = e.wal.as_ref().unwrap();
    assert_eq!(w.c.fsyncs.load(Ordering::Relaxed), 0, "sync none: no fsync while ingesting");
    w.sync_now().unwrap();
    w.sync_now().unwrap();
    assert_eq!(w.c.fsyncs.load(Ordering::Relaxed), 1, "one fsync for five records; a second call finds nothing to do");
}

#[test]
fn concurrent_ingests_all_reach_the_log_and_share_fsyncs() {
    let dir = TempDir::new("concurrent");
    const THREADS: u64 = 8;
    const EACH: u64 = 40;
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        std::thread::scope(|sc| {
            for th in 0..THREADS {
                let e = &e;
                sc.spawn(move || {
                    for i in 0..EACH {
                        e.ingest(&req(children(th * 1000 + i + 1)), T0).unwrap();
                    }
                });
            }
        });
        let s = e.stats();
        let ingests = THREADS * EACH;
        println!("group commit: {} fsyncs for {ingests} ingests", s.wal_fsyncs);
        assert!(s.wal_fsyncs <= ingests);
        assert!(s.wal_fsync_buckets.iter().sum::<u64>() == s.wal_fsyncs);
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!(rep.spans, THREADS * EACH * 2);
    assert_eq!(rep.traces, THREADS * EACH);
}

#[test]
fn replaying_twice_gives_the_same_engine_state() {
    let dir = TempDir::new("idempotent");
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        for t in 0..20u64 {
            e.ingest(&req(children(t + 1)), T0 + t * MS).unwrap();
        }
        let mut b = children(0xB0B);
        b.extend(root(0xB0B));
        e.ingest(&req(b), T0).unwrap();
        e.tick(T0 + 2 * SEC);
        drain(&e, true);
    }
    let run = || {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        let rep = e.recover(T0 + 5 * SEC);
        let s = e.stats();
        // (Table capacities depend on the per-process hash keys; the spans held do not.)
        let state = (s.buffered_spans, s.buffered_traces, s.memory_span_bytes, rep.spans, rep.traces, rep.batches);
        // Crash again, with nothing delivered.
        e.shutdown(T0 + 6 * SEC);
        let mut out: Vec<(u64, u64, Option<String>)> =
            drain(&e, false).iter().map(|s| (s.trace(), s.id(), s.attr_str("consistency.hlc"))).collect();
        out.sort();
        (state, out)
    };
    let first = run();
    let second = run();
    assert_eq!(first.0 .0, 40);
    assert_eq!(first, second);
}

/// Three batches of one span each, ingested and never delivered; returns the segment file.
fn three_batches(dir: &Path) -> PathBuf {
    let e = Engine::new(cfg(dir)).unwrap();
    e.recover(T0);
    for t in 1..=3u64 {
        e.ingest(&req(vec![span(t, 2, 1, T0 - SEC, T0)]), T0).unwrap();
    }
    drop(e);
    let files: Vec<PathBuf> = segment_files(dir).into_iter().filter(|p| std::fs::metadata(p).unwrap().len() > 0).collect();
    assert_eq!(files.len(), 1);
    files[0].clone()
}

#[test]
fn a_torn_last_record_is_ignored_and_counted() {
    let dir = TempDir::new("torn");
    let seg = three_batches(&dir.0);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 7).unwrap();
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.torn_records, rep.corrupt_records), (2, 1, 0), "{rep:?}");
    assert!(rep.problems[0].contains(&seg.display().to_string()), "{:?}", rep.problems);
    assert_eq!(e.stats().wal_torn_records, 1);
    // New records go to a new segment, never after the torn tail.
    e.ingest(&req(children(9)), T0).unwrap();
    drop(e);
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.torn_records), (4, 1), "{rep:?}");
}

#[test]
fn a_flipped_byte_skips_only_the_record_it_is_in() {
    let dir = TempDir::new("flip");
    let seg = three_batches(&dir.0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2; // inside the second record
    bytes[mid] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.corrupt_records, rep.torn_records), (2, 1, 0), "{rep:?}");
    assert!(rep.problems[0].contains(&seg.display().to_string()) && rep.problems[0].contains("damaged"), "{:?}", rep.problems);
    let (out, traces): (Vec<OutSpan>, Vec<u64>) = {
        e.shutdown(T0);
        let o = drain(&e, false);
        let t = o.iter().map(|s| s.trace()).collect();
        (o, t)
    };
    assert_eq!(out.len(), 2);
    assert!(traces.contains(&1) && traces.contains(&3) && !traces.contains(&2));
}

#[test]
fn a_failed_write_refuses_the_batch_retryably_and_keeps_the_log_readable() {
    let dir = TempDir::new("diskfull");
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        e.ingest(&req(children(1)), T0).unwrap();
        e.wal.as_ref().unwrap().fail_writes.store(true, Ordering::Relaxed);
        let err = e.ingest(&req(children(2)), T0).unwrap_err();
        assert!(matches!(err, IngestError::Wal(_)), "{err:?}");
        assert!(err.to_string().contains("retry later"));
        let s = e.stats();
        assert_eq!((s.buffered_spans, s.spans_received, s.wal_write_errors), (2, 2, 1), "nothing of the refused batch kept");
        e.wal.as_ref().unwrap().fail_writes.store(false, Ordering::Relaxed);
        e.ingest(&req(children(3)), T0).unwrap();
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.traces, rep.corrupt_records, rep.torn_records), (4, 2, 0, 0), "{rep:?}");
}

#[test]
fn at_the_bound_the_oldest_traces_are_released_and_ingest_waits_for_delivery() {
    let dir = TempDir::new("full");
    let mut c = cfg(&dir.0);
    c.wal_max_bytes = crate::config::MIN_WAL_MAX_BYTES;
    let e = Engine::new(c.clone()).unwrap();
    e.recover(T0);
    let big = "y".repeat(200_000);
    let mut accepted = 0u64;
    let mut refused = None;
    for t in 1..=100u64 {
        let mut spans = children(t);
        spans[0].name = big.clone();
        match e.ingest(&req(spans), T0) {
            Ok(_) => accepted += 1,
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let err = refused.expect("the log fills");
    assert!(matches!(err, IngestError::Wal(_)) && err.to_string().contains("wal.max_bytes"), "{err}");
    assert!(e.stats().wal_bytes <= c.wal_max_bytes as u64);
    assert_eq!(e.stats().wal_full_refusals, 1);
    // The next tick releases the traces holding the oldest segment, never deleting them.
    e.tick(T0 + MS);
    let mut released = 0u64;
    let mut reasons = Vec::new();
    while let Some(r) = e.drain(1_000_000) {
        released += r.spans;
        reasons.extend(r.units.iter().map(|u| u.reason));
        assert!(e.delivered(r.token));
    }
    assert!(released > 0);
    assert!(reasons.iter().all(|&r| r == ReleaseReason::WalFull));
    assert!(e.stats().wal_bytes < c.wal_max_bytes as u64 * 3 / 4 + (1 << 20));
    // Room again.
    let mut spans = children(1000);
    spans[0].name = big.clone();
    e.ingest(&req(spans), T0).unwrap();
    assert_eq!(e.stats().buffered_spans + released, (accepted + 1) * 2);
}

#[test]
fn a_second_engine_cannot_open_a_log_in_use() {
    let dir = TempDir::new("lock");
    let _first = Engine::new(cfg(&dir.0)).unwrap();
    let err = Engine::new(cfg(&dir.0)).err().expect("the second must fail");
    assert!(err.0.starts_with("wal.directory") && err.0.contains("in use by another process"), "{err}");
}

#[test]
fn a_second_engine_cannot_share_the_hlc_state_file() {
    let dir = TempDir::new("hlclock");
    let mut c = cfg(&dir.0);
    c.wal_directory = None;
    c.hlc_restart = RestartStrategy::Persist;
    c.hlc_state_file = Some(dir.0.join("hlc.state").to_str().unwrap().to_string());
    let _first = Engine::new(c.clone()).unwrap();
    let err = Engine::new(c).err().expect("the second must fail");
    assert!(err.0.starts_with("hlc.state_file") && err.0.contains("in use by another process"), "{err}");
}

#[test]
fn a_directory_that_cannot_be_created_names_the_key() {
    let dir = TempDir::new("nodir");
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut c = cfg(&dir.0);
    c.wal_directory = Some(file.join("sub").to_str().unwrap().to_string());
    let err = Engine::new(c).err().expect("must fail");
    assert!(err.0.starts_with("wal.directory") && err.0.contains("cannot be created"), "{err}");
}

#[test]
fn sync_interval_acknowledges_at_once_and_a_background_thread_syncs() {
    let dir = TempDir::new("interval");
    let mut c = cfg(&dir.0);
    c.wal_sync = SyncMode::Interval;
    c.wal_sync_interval_ns = (10 * MS) as i64;
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    e.ingest(&req(children(1)), T0).unwrap();
    // The ingest did not wait for an fsync. Wait (bounded) for the background one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while e.stats().wal_fsyncs == 0 {
        assert!(std::time::Instant::now() < deadline, "no background fsync within 10 s");
        std::thread::yield_now();
    }
}

#[test]
fn traces_spread_over_many_batches_free_every_segment_once_delivered() {
    let dir = TempDir::new("spread");
    let mut c = cfg(&dir.0);
    c.wal_max_bytes = crate::config::MIN_WAL_MAX_BYTES;
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    let pad = "z".repeat(2_000);
    let mut now = T0;
    // 400 traces of 6 spans, eight at a time interleaved over three batches each.
    for group in 0..50u64 {
        let ids: Vec<u64> = (0..8).map(|k| group * 8 + k + 1).collect();
        for part in 0..3u64 {
            let mut spans = Vec::new();
            for &t in &ids {
                for s in [part * 2 + 1, part * 2 + 2] {
                    let parent = if s == 1 { 0 } else { 1 };
                    let mut sp = span(t, s, parent, T0 - SEC, T0 - SEC / 2);
                    sp.name = pad.clone();
                    spans.push(sp);
                }
            }
            e.ingest(&req(spans), now).unwrap();
            now += MS;
        }
        e.tick(now + 2 * SEC);
        drain(&e, true);
        now += 3 * SEC;
    }
    let w = e.wal.as_ref().unwrap();
    assert_eq!(w.outstanding(), vec![], "every batch delivered");
    assert_eq!(e.stats().wal_segments, 1);
}

#[test]
fn spans_resolved_at_ingest_are_logged_and_not_replayed_as_a_new_trace() {
    for policy in [LateSpanPolicy::Forward, LateSpanPolicy::Drop] {
        let dir = TempDir::new("resolved");
        let c = Config { late_span_policy: policy, ..cfg(&dir.0) };
        {
            let e = Engine::new(c.clone()).unwrap();
            e.recover(T0);
            let mut b = children(0xB);
            b.extend(root(0xB));
            e.ingest(&req(b.clone()), T0).unwrap();
            // X is released with B and handed out, never acknowledged: in flight at the crash.
            let mut x = children(0x5);
            x.extend(root(0x5));
            e.ingest(&req(x), T0).unwrap();
            e.tick(T0 + 2 * SEC);
            let mut out = Vec::new();
            while let Some(r) = e.drain(1) {
                let spans = decode(&r.otlp);
                if spans[0].trace() == 0xB {
                    assert!(e.delivered(r.token));
                }
                out.extend(spans);
            }
            assert_eq!(out.len(), 6);
            // The client retries B's batch after the release (its ack was lost): every span
            // an exact re-send, dropped at ingest.
            let o = e.ingest(&req(b.clone()), T0 + 3 * SEC).unwrap();
            assert_eq!(o.resent, 3);
            if policy == LateSpanPolicy::Drop {
                // A late span of B, dropped by policy.
                let o = e.ingest(&req(vec![span(0xB, 9, 1, T0 - SEC, T0 - SEC / 2)]), T0 + 3 * SEC).unwrap();
                assert_eq!(o.late_dropped, 1);
            }
            assert!(drain(&e, true).is_empty(), "nothing of B leaves again");
            // Dropped here: a crash as far as the log is concerned (X unacknowledged).
        }
        let e = Engine::new(c).unwrap();
        let rep = e.recover(T0 + 10 * SEC);
        assert_eq!((rep.spans, rep.traces), (3, 1), "{policy:?}: only X replays, not B's re-sent or late spans: {rep:?}");
        assert_eq!(rep.redelivered_spans, 3, "{policy:?}: X was in flight: {rep:?}");
        assert_eq!(e.stats().wal_redelivered_spans, 3);
        e.shutdown(T0 + 11 * SEC);
        let out = drain(&e, true);
        assert!(out.iter().all(|s| s.trace() == 0x5), "{policy:?}: {} spans of B came back", out.iter().filter(|s| s.trace() == 0xB).count());
    }
}

#[test]
fn a_drain_that_panics_counts_what_it_took_as_lost_and_releases_counters_and_log_keys() {
    let dir = TempDir::new("drain-panic");
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        for t in [0xA, 0xB] {
            let mut spans = children(t);
            spans.extend(root(t));
            e.ingest(&req(spans), T0).unwrap();
        }
        e.tick(T0 + 2 * SEC);
        assert_eq!(e.stats().ready_spans, 6);
        e.emitter.panic_next.store(true, Ordering::Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.drain(1_000_000)));
        assert!(r.is_err(), "the injected panic unwinds out of the drain");
        let s = e.stats();
        assert_eq!((s.ready_spans, s.ready_bytes), (0, 0), "the ready counters are released: {s:?}");
        assert_eq!(s.drain_lost_spans, 6, "what the drain took is counted lost");
        assert!(e.wal.as_ref().unwrap().outstanding().is_empty(), "no log key is left to pin the log");
        // Nothing waits any more: drains end at once, and shutdown's drain loop (until
        // nothing is ready) ends.
        assert!(e.drain(1_000_000).is_none());
        e.shutdown(T0 + 3 * SEC);
        assert_eq!(e.stats().ready_spans, 0);
        // The engine goes on working.
        let mut c = children(0xC);
        c.extend(root(0xC));
        e.ingest(&req(c), T0 + 3 * SEC).unwrap();
        assert_eq!(drain(&e, true).len(), 3);
    }
    // The lost units are not replayed (they would fail again at every start).
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0 + 10 * SEC);
    assert_eq!(rep.spans, 0, "{rep:?}");
}

#[test]
fn a_hand_off_drain_that_panics_is_counted_too() {
    let dir = TempDir::new("handoff-panic");
    let e = Engine::new(Config { handoff_on_shutdown: true, handoff_key: Some("the test tier's shared key".into()), ..cfg(&dir.0) }).unwrap();
    e.recover(T0);
    e.ingest(&req(children(0xA)), T0).unwrap();
    e.shutdown(T0 + SEC);
    assert_eq!(e.stats().ready_spans, 2);
    e.emitter.panic_next.store(true, Ordering::Relaxed);
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.drain_handoff(1_000_000))).is_err());
    let s = e.stats();
    assert_eq!((s.ready_spans, s.ready_bytes, s.drain_lost_spans), (0, 0, 2), "{s:?}");
    assert!(e.wal.as_ref().unwrap().outstanding().is_empty());
    assert!(e.drain_handoff(1_000_000).is_none());
}

#[test]
fn a_restart_after_an_idle_run_keeps_the_live_segment() {
    let dir = TempDir::new("idle");
    // A run that logs nothing leaves one empty segment behind.
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
    }
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        e.ingest(&req(children(1)), T0).unwrap();
        let files = segment_files(&dir.0);
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(std::fs::metadata(&files[0]).unwrap().len() > 0, "the acknowledged batch is in the file on disk");
        assert_eq!(e.stats().wal_segments, 1, "one segment tracked, not the same file twice");
        // Dropped without delivering: a crash.
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.traces), (2, 1), "{rep:?}");
}

#[test]
fn a_rotation_after_a_failed_cut_keeps_every_segment_and_its_positions() {
    // The write fails and so does cutting it away: later records go to a new segment.
    // First in an empty segment (the new one must not be the same file), then after a
    // record (the new segment must start past the bytes the failed write left).
    for first_ok in [false, true] {
        let dir = TempDir::new("cutfail");
        {
            let e = Engine::new(cfg(&dir.0)).unwrap();
            e.recover(T0);
            if first_ok {
                e.ingest(&req(children(1)), T0).unwrap();
            }
            let w = e.wal.as_ref().unwrap();
            w.fail_writes.store(true, Ordering::Relaxed);
            w.fail_truncate.store(true, Ordering::Relaxed);
            assert!(matches!(e.ingest(&req(children(2)), T0), Err(IngestError::Wal(_))));
            w.fail_writes.store(false, Ordering::Relaxed);
            w.fail_truncate.store(false, Ordering::Relaxed);
            e.ingest(&req(children(3)), T0).unwrap();
            // A whole trace, delivered: its segment position must match after a restart.
            let mut b = children(4);
            b.extend(root(4));
            e.ingest(&req(b), T0).unwrap();
            e.tick(T0 + 2 * SEC);
            let out = drain(&e, true);
            assert_eq!(out.len(), 3);
            assert!(out.iter().all(|s| s.trace() == 4));
            // Dropped with 1 (if logged) and 3 undelivered: a crash.
        }
        let e = Engine::new(cfg(&dir.0)).unwrap();
        let rep = e.recover(T0);
        let want = if first_ok { 4 } else { 2 };
        assert_eq!(rep.spans, want, "first_ok {first_ok}: traces 1 and 3 replay, 4 (delivered) does not: {rep:?}");
        e.shutdown(T0);
        let mut traces: Vec<u64> = drain(&e, false).iter().map(|s| s.trace()).collect();
        traces.sort();
        traces.dedup();
        assert_eq!(traces, if first_ok { vec![1, 3] } else { vec![3] }, "first_ok {first_ok}");
    }
}

/// Fails the first fsync (after calling `first`), lets every later one run.
fn fail_first_fsync(w: &Wal, mut first: impl FnMut() + Send + 'static) {
    let mut calls = 0u32;
    *w.sync_hook.lock().unwrap() = Some(Box::new(move || {
        calls += 1;
        if calls == 1 {
            first();
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }));
}

#[test]
fn after_a_failed_fsync_a_later_one_does_not_make_earlier_records_durable() {
    let dir = TempDir::new("fsyncgate");
    let mut c = cfg(&dir.0);
    c.wal_sync = SyncMode::None;
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    let w = e.wal.as_ref().unwrap();
    e.ingest(&req(children(1)), T0).unwrap();
    let good = w.written();
    w.sync_now().unwrap();
    e.ingest(&req(children(2)), T0).unwrap();
    let upto = w.written();
    let before = segment_files(&dir.0);
    assert_eq!(before.len(), 1);
    let bad_len = std::fs::metadata(&before[0]).unwrap().len();
    fail_first_fsync(w, || {});
    assert!(w.sync_now().is_err());
    // Linux reports a writeback error to one fsync; the next one succeeds although the pages
    // never reached the disk. It must not count.
    assert!(w.wait_durable(upto).is_err(), "the record written before the failed fsync is not durable");
    assert!(w.wait_durable(good).is_ok(), "what the last good fsync covered stays durable");
    assert!(e.stats().wal_write_errors >= 1);
    // The segment is not written to again: the next record goes to a new file.
    e.ingest(&req(children(3)), T0).unwrap();
    let after = segment_files(&dir.0);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(std::fs::metadata(&before[0]).unwrap().len(), bad_len, "nothing more written to the failed segment");
    assert!(std::fs::metadata(&after[1]).unwrap().len() > 0);
    w.sync_now().unwrap();
}

#[test]
fn a_failed_group_commit_fsync_fails_every_batch_that_waited_for_it() {
    let dir = TempDir::new("fsyncgate-group");
    let e = Engine::new(cfg(&dir.0)).unwrap();
    e.recover(T0);
    let w = e.wal.as_ref().unwrap().clone();
    let weak = Arc::downgrade(&w);
    let (in_sync, in_sync_rx) = std::sync::mpsc::channel();
    // The first fsync (batch A's) fails once batch B is written and waiting for it.
    fail_first_fsync(&w, move || {
        let w = weak.upgrade().unwrap();
        let at = w.written();
        in_sync.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while w.written() == at {
            assert!(std::time::Instant::now() < deadline, "batch B was never written");
            std::thread::yield_now();
        }
    });
    std::thread::scope(|sc| {
        let a = sc.spawn(|| e.ingest(&req(children(1)), T0));
        in_sync_rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let b = sc.spawn(|| e.ingest(&req(children(2)), T0));
        let (ra, rb) = (a.join().unwrap(), b.join().unwrap());
        assert!(matches!(ra, Err(IngestError::Wal(_))), "{ra:?}");
        assert!(matches!(rb, Err(IngestError::Wal(_))), "B was written before the fsync that failed: {rb:?}");
    });
    let s = e.stats();
    assert_eq!((s.buffered_spans, s.spans_received), (0, 0), "nothing of either batch kept");
    assert_eq!(w.outstanding(), vec![]);
    // The log goes on in a new segment.
    e.ingest(&req(children(3)), T0).unwrap();
    assert_eq!(e.stats().buffered_spans, 2);
}

#[test]
fn a_log_freed_by_its_own_syncer_thread_still_makes_its_final_sync() {
    let dir = TempDir::new("selfjoin");
    let (wal, _) = Wal::open(WalConfig {
        directory: dir.0.clone(),
        sync: SyncMode::Interval,
        sync_interval: std::time::Duration::from_millis(1),
        max_bytes: crate::config::MIN_WAL_MAX_BYTES as u64,
        stamp_limit: u64::MAX,
    })
    .unwrap();
    let wal = Arc::new(wal);
    let weak = Arc::downgrade(&wal);
    let (fsynced, fsyncs) = std::sync::mpsc::channel();
    let mut calls = 0u32;
    *wal.sync_hook.lock().unwrap() = Some(Box::new(move || {
        calls += 1;
        let _ = fsynced.send(calls);
        if calls == 1 {
            // The syncer holds the log while the engine lets go of it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while weak.strong_count() > 1 {
                assert!(std::time::Instant::now() < deadline, "the log was never let go of");
                std::thread::yield_now();
            }
        }
        Ok(())
    }));
    wal.append_batch(&[SpanStamp::default()], b"one", 1).unwrap();
    wal.start_syncer();
    let wait = std::time::Duration::from_secs(10);
    assert_eq!(fsyncs.recv_timeout(wait), Ok(1), "the syncer's fsync");
    // Written after that fsync started: only the final sync at free covers it.
    wal.append_batch(&[SpanStamp::default()], b"two", 1).unwrap();
    drop(wal);
    assert_eq!(fsyncs.recv_timeout(wait), Ok(2), "the final sync ran on the syncer thread");
}

#[test]
fn a_batch_larger_than_the_log_can_hold_is_refused_for_good() {
    let dir = TempDir::new("toolarge");
    let mut c = cfg(&dir.0);
    c.wal_max_bytes = crate::config::MIN_WAL_MAX_BYTES; // 8 MiB
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    let mut spans = children(1);
    spans[0].name = "x".repeat(9 << 20);
    let err = e.ingest(&req(spans), T0).unwrap_err();
    assert!(matches!(err, IngestError::TooLarge(_)), "a permanent refusal, not a retryable one: {err:?}");
    assert!(err.to_string().contains("wal.max_bytes") && !err.to_string().contains("retry"), "{err}");
    let s = e.stats();
    assert_eq!((s.batches_refused, s.wal_full_refusals, s.buffered_spans, s.wal_bytes), (1, 0, 0, 0));
}

#[test]
fn a_batch_that_fits_an_empty_log_is_taken_once_the_current_segment_is_delivered() {
    let dir = TempDir::new("fitsempty");
    let mut c = cfg(&dir.0);
    c.wal_max_bytes = crate::config::MIN_WAL_MAX_BYTES; // 8 MiB, 1 MiB segments
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    // 880 kB of whole traces in the current segment, all delivered.
    let mut spans = Vec::new();
    for t in 1..=8u64 {
        let mut tr = children(t);
        tr.extend(root(t));
        tr[0].name = "x".repeat(110_000);
        spans.extend(tr);
    }
    e.ingest(&req(spans), T0).unwrap();
    e.tick(T0 + 2 * SEC);
    assert_eq!(drain(&e, true).len(), 24);
    assert_eq!(e.stats().wal_segments, 1);
    // 7.6 MB: more than the bound minus the current segment, less than the bound. Nothing is
    // undelivered, so the log must take it rather than refuse it for now forever.
    let mut big = children(100);
    big[0].name = "x".repeat(7_600_000);
    e.ingest(&req(big), T0 + 2 * SEC).expect("the log holds nothing undelivered: the batch must fit");
    let s = e.stats();
    assert_eq!(s.wal_full_refusals, 0);
    assert!(s.wal_bytes <= crate::config::MIN_WAL_MAX_BYTES as u64, "{}", s.wal_bytes);
}

#[test]
fn the_log_is_private_to_its_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TempDir::new("modes");
    let log = dir.0.join("a").join("wal");
    let mut c = cfg(&dir.0);
    c.wal_directory = Some(log.to_str().unwrap().to_string());
    {
        let e = Engine::new(c.clone()).unwrap();
        e.recover(T0);
        e.ingest(&req(children(1)), T0).unwrap();
    }
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&log), 0o700, "the directory is created 0700");
    let files: Vec<PathBuf> = std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.len() >= 2, "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // A directory others may write to, owned by someone else, is refused.
    let shared = dir.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let other = if unsafe { libc::geteuid() } == 0 { 65534 } else { 0 };
    // SAFETY: a valid C string; only root can give a file away (else the owner stays ours).
    let p = std::ffi::CString::new(shared.to_str().unwrap()).unwrap();
    if unsafe { libc::chown(p.as_ptr(), other, other) } != 0 {
        eprintln!("cannot chown as this user: the refusal of a directory owned by someone else is not tested");
        return;
    }
    assert_eq!(std::fs::metadata(&shared).unwrap().uid(), other);
    c.wal_directory = Some(shared.to_str().unwrap().to_string());
    let err = Engine::new(c).err().expect("refused");
    assert!(err.0.starts_with("wal.directory") && err.0.contains("writable"), "{err}");
}

/// A record as the previous format wrote it (CRC-32 of length and body, no key).
fn legacy_record(body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(body);
    let mut v = b"TCW1".to_vec();
    v.extend_from_slice(&len);
    v.extend_from_slice(&h.finalize().to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// A batch record's body: kind, span count, per span wall u64, logical u32, findings u32,
/// then the request.
fn batch_body(walls: &[u64], data: &[u8]) -> Vec<u8> {
    let mut b = vec![1u8];
    b.extend_from_slice(&(walls.len() as u32).to_le_bytes());
    for w in walls {
        b.extend_from_slice(&w.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn a_record_planted_in_a_clients_bytes_does_not_erase_another_clients_spans() {
    let dir = TempDir::new("forged");
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        e.ingest(&req(children(0xA)), T0).unwrap(); // the victim, at position 0
        let carrier_at = std::fs::metadata(&segment_files(&dir.0)[0]).unwrap().len() as usize;
        // A "delivered" record naming the victim's key, in the bytes of an attribute: in the
        // previous format (anyone can compute a CRC) and in the current one with a guessed key.
        let mut body = vec![2u8];
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        body.extend_from_slice(&u128::from_be_bytes(tid(0xA).try_into().unwrap()).to_le_bytes());
        let mut planted = legacy_record(&body);
        let mut guessed = b"TCW2".to_vec();
        guessed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        guessed.extend_from_slice(&0x5eed_u64.to_le_bytes());
        guessed.extend_from_slice(&body);
        planted.extend(guessed);
        let mut s = span(0xB, 1, 0, T0 - SEC, T0);
        s.attributes.push(KeyValue {
            key: "blob".into(),
            value: Some(AnyValue { value: Some(any_value::Value::BytesValue(planted)) }),
            ..Default::default()
        });
        e.ingest(&req(vec![s]), T0).unwrap();
        drop(e); // a crash
        // The carrier's header is damaged (a flipped bit): the reader resynchronises.
        let seg = &segment_files(&dir.0)[0];
        let mut bytes = std::fs::read(seg).unwrap();
        bytes[carrier_at + 9] ^= 1;
        std::fs::write(seg, &bytes).unwrap();
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.traces), (2, 1), "the victim's spans replay: {rep:?}");
    e.shutdown(T0);
    assert!(drain(&e, false).iter().all(|s| s.trace() == 0xA));
}

#[test]
fn a_log_of_the_previous_format_is_read_and_stamps_far_ahead_are_not_replayed() {
    let dir = TempDir::new("legacy");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let far = now + 10 * 365 * 24 * 3600 * SEC;
    let b = now - 60 * SEC;
    let ok = req(vec![span(0xD, 2, 1, b, b + SEC), span(0xD, 3, 1, b, b + SEC)]);
    let ahead = req(vec![span(0xC, 2, 1, b, b + SEC), span(0xC, 3, 1, b, b + SEC)]);
    let seg = [legacy_record(&batch_body(&[far, far], &ahead)), legacy_record(&batch_body(&[now, now], &ok))].concat();
    std::fs::write(dir.0.join(format!("{:020}.wal", 0)), &seg).unwrap();
    let mut c = cfg(&dir.0);
    c.hlc_enabled = true;
    for round in 0..2 {
        let e = Engine::new(c.clone()).unwrap();
        let rep = e.recover(now);
        assert!(e.hlc_last().unwrap().wall < now + 24 * 3600 * SEC, "round {round}: the clock did not jump ahead");
        assert_eq!(rep.corrupt_records, 1, "round {round}: {rep:?}");
        assert!(rep.problems.iter().any(|p| p.contains("ahead of the wall clock")), "{:?}", rep.problems);
        let want = if round == 0 { 2 } else { 4 };
        assert_eq!(rep.spans, want, "round {round}: the old format's in-bound batch replays (and, after, the new one): {rep:?}");
        if round == 0 {
            // New records are keyed, in a new segment; the old one is still read as before.
            e.ingest(&req(children(0xE)), now).unwrap();
            assert!(dir.0.join("KEY").exists());
        }
    }
}

#[test]
fn a_failed_fsync_at_rotation_loses_what_the_old_segment_held_since_its_last_good_one() {
    let dir = TempDir::new("fsyncgate-rotate");
    let mut c = cfg(&dir.0);
    c.wal_sync = SyncMode::None;
    c.wal_max_bytes = crate::config::MIN_WAL_MAX_BYTES; // 1 MiB segments
    let e = Engine::new(c).unwrap();
    e.recover(T0);
    let w = e.wal.as_ref().unwrap();
    e.ingest(&req(children(1)), T0).unwrap();
    let a_end = w.written();
    fail_first_fsync(w, || {});
    // Too large for the current segment: the old one is fsync'd first, and that fails.
    let mut big = children(2);
    big[0].name = "x".repeat(1_100_000);
    e.ingest(&req(big), T0).expect("the new segment takes the batch");
    assert!(w.wait_durable(a_end).is_err(), "the old segment's unsynced record is not durable");
    w.sync_now().expect("the new segment syncs");
    assert_eq!(segment_files(&dir.0).len(), 2);
    assert!(e.stats().wal_write_errors >= 1);
}

/// One-span traces with a 1 KiB attribute each, `n` per request, trace IDs from `first`.
fn padded_req(first: u64, n: u64) -> Vec<u8> {
    let b = T0 - 5 * SEC;
    let pad = "p".repeat(1024);
    let spans = (first..first + n)
        .map(|t| {
            let mut s = span(t, t, 0, b, b + MS);
            s.attributes.push(kv("pad", &pad));
            s
        })
        .collect();
    req(spans)
}

#[test]
fn replaying_a_log_four_times_the_bound_keeps_to_the_bound() {
    use crate::testutil::counting::{alloc_live, alloc_peak, alloc_peak_reset};
    let dir = TempDir::new("replay-bound");
    let held = |bound: i64| Config {
        quiet_period_ns: 3600 * SEC as i64,
        idle_timeout_ns: 3600 * SEC as i64,
        max_age_ns: 7200 * SEC as i64,
        max_buffered_bytes: bound,
        max_buffered_spans: 10_000_000,
        wal_sync: SyncMode::None,
        ..cfg(&dir.0)
    };
    // A run that buffered ~28 MiB of spans and crashed with none of it delivered.
    let (batches, per) = (400u64, 64u64);
    {
        let mut c = held(64 << 20);
        c.wal_max_bytes = 32 << 20;
        let e = Engine::new(c).unwrap();
        e.recover(T0);
        for i in 0..batches {
            e.ingest(&padded_req(1 + i * per, per), T0).unwrap();
        }
        assert_eq!(e.stats().buffered_spans, batches * per);
        assert!(e.stats().wal_bytes > 27 << 20, "{}", e.stats().wal_bytes);
    }
    // The restart, with an 8 MiB bound: the log holds four times what the engine may.
    let bound = 8i64 << 20;
    let mut c = held(bound);
    c.wal_max_bytes = bound;
    let e = Engine::new(c).unwrap();
    let base = alloc_live();
    alloc_peak_reset();
    let (mut steps, mut out_spans, mut peak_accounted) = (0, 0u64, 0u64);
    let rep = loop {
        let rep = e.recover(T0 + SEC);
        steps += 1;
        peak_accounted = peak_accounted.max(e.stats().memory_total_bytes);
        if !rep.more {
            break rep;
        }
        while let Some(r) = e.drain(256) {
            out_spans += r.spans;
            assert!(e.delivered(r.token));
        }
    };
    let peak = alloc_peak() - base;
    eprintln!("replay in {steps} steps: peak allocated {} KiB, peak accounted {} KiB (bound {} KiB)", peak >> 10, peak_accounted >> 10, bound >> 10);
    assert_eq!(rep.spans, batches * per, "{rep:?}");
    assert_eq!(rep.traces, batches * per, "{rep:?}");
    assert!(steps > 2, "the replay paused for drains: {steps} steps");
    // What the engine holds: a full buffer and a full backlog at most (plus a batch).
    assert!(peak_accounted <= 2 * bound as u64 + (1 << 20), "accounted {peak_accounted} bytes, bound {bound}");
    // Everything Rust allocated during the replay (the engine, the segment read, the keys).
    assert!(peak <= 2 * bound + (4 << 20), "replay allocated {peak} bytes at its peak, bound {bound}");
    // Every replayed span leaves once: early (memory_pressure) during the replay, or now.
    e.shutdown(T0 + 2 * SEC);
    while let Some(r) = e.drain(256) {
        out_spans += r.spans;
        assert!(e.delivered(r.token));
    }
    assert_eq!(out_spans, batches * per);
}

#[test]
fn a_log_with_empty_segments_replays_what_the_others_hold() {
    let dir = TempDir::new("empty-segments");
    {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        e.recover(T0);
        e.ingest(&req(children(0xA)), T0).unwrap();
    }
    // Two starts that log nothing: each leaves an empty segment behind the first.
    for _ in 0..2 {
        let e = Engine::new(cfg(&dir.0)).unwrap();
        let _ = e.recover(T0);
    }
    let e = Engine::new(cfg(&dir.0)).unwrap();
    let rep = e.recover(T0);
    assert_eq!((rep.spans, rep.traces, rep.more), (2, 1, false), "{rep:?}");
}
