//! Tick: what a tick looks at (the traces whose deadline passed, not every buffered one),
//! and that the deadline queue releases exactly what a scan of every trace would, at the
//! same ticks and in the same order ([`Shard::due`] checks each tick against such a scan in
//! tests).

use super::*;
use crate::findings::ReleaseReason;
use crate::testutil::*;
use proptest::prelude::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_790_000_000 * SEC;

fn cfg() -> Config {
    Config {
        num_shards: 4,
        quiet_period_ns: SEC as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        hlc_restart: crate::config::RestartStrategy::None,
        max_buffered_spans: 1_000_000,
        max_buffered_bytes: 1 << 30,
        ..Config::default()
    }
}

impl Engine {
    /// Traces the ticks so far looked at, over all shards.
    fn tick_visits(&self) -> u64 {
        self.shards.iter().map(|m| lock(m).visited).sum()
    }
}

#[test]
fn a_tick_with_many_buffered_traces_and_none_due_looks_at_none() {
    let e = Engine::new(cfg()).unwrap();
    let b = T0 - SEC;
    // 100,000 traces of one root span each (complete once quiet), in batches of 1,000.
    for batch in 0..100u64 {
        let spans: Vec<_> = (0..1_000u64).map(|i| span(batch * 1_000 + i + 1, 1, 0, b, b + 1)).collect();
        e.ingest(&request(vec![("a", spans)]), T0).unwrap();
    }
    assert_eq!(e.stats().buffered_traces, 100_000);
    for step in 1..=9 {
        e.tick(T0 + step * 100 * MS);
    }
    assert_eq!(e.tick_visits(), 0, "nothing is due before the quiet period");
    assert_eq!(e.stats().buffered_traces, 100_000);
    // A new span moves its trace's deadline: only it is looked at when the others are.
    e.ingest(&request(vec![("a", vec![span(7, 2, 1, b, b + 1)])]), T0 + 500 * MS).unwrap();
    e.tick(T0 + SEC);
    assert_eq!(e.tick_visits(), 100_000, "each trace looked at once when due (trace 7 too: its old deadline)");
    assert_eq!(e.stats().buffered_traces, 1);
    e.tick(T0 + 1_400 * MS);
    assert_eq!(e.tick_visits(), 100_000);
    e.tick(T0 + 1_500 * MS);
    assert_eq!(e.tick_visits(), 100_001);
    assert_eq!(e.stats().buffered_traces, 0);
}

#[test]
fn an_incomplete_quiet_trace_is_looked_at_again_only_at_its_idle_timeout() {
    let e = Engine::new(cfg()).unwrap();
    let b = T0 - SEC;
    // A child without its parent: incomplete, released by the idle timeout.
    e.ingest(&request(vec![("a", vec![span(1, 2, 1, b, b + 1)])]), T0).unwrap();
    let mut ticks = 0;
    let mut now = T0;
    while e.stats().buffered_traces > 0 {
        now += 100 * MS;
        e.tick(now);
        ticks += 1;
    }
    assert_eq!(now, T0 + 10 * SEC);
    assert_eq!(ticks, 100);
    // At the quiet period (found incomplete) and at the idle timeout.
    assert_eq!(e.tick_visits(), 2);
    let released = e.drain(100).unwrap();
    assert_eq!(released.units[0].reason, ReleaseReason::IdleTimeout);
}

#[derive(Debug, Clone)]
enum Op {
    /// A span of trace `trace` (`span`, child of `parent`; a root when they are equal).
    Ingest { trace: u64, span: u64, parent: u64 },
    /// Time moves on by this many units.
    Tick(u64),
    /// A tick this many units in the past (an engine call that read the clock earlier).
    Late(u64),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..10, 1u64..5, 1u64..5).prop_map(|(trace, span, parent)| Op::Ingest { trace, span, parent }),
        4 => (0u64..40).prop_map(Op::Tick),
        1 => (1u64..10).prop_map(Op::Late),
        1 => Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random timers, arrivals and ticks (some from the past): every tick releases what a
    /// scan of every buffered trace finds due, in the same order (asserted by
    /// [`Shard::due`] itself in tests), and everything is released by shutdown.
    #[test]
    fn the_deadline_queue_releases_what_a_scan_would(
        ops in proptest::collection::vec(op(), 1..200),
        quiet in 1u64..5,
        idle in 0u64..20,
        age in 0u64..40,
        shards in 1u32..3,
    ) {
        let unit = 50 * MS;
        let e = Engine::new(Config {
            num_shards: shards,
            quiet_period_ns: (quiet * unit) as i64,
            idle_timeout_ns: ((quiet + idle) * unit) as i64,
            max_age_ns: ((quiet + age) * unit) as i64,
            ..cfg()
        }).unwrap();
        let b = T0 - SEC;
        let mut now = T0;
        let mut sent = 0u64;
        let mut released = 0u64;
        for op in ops {
            match op {
                Op::Ingest { trace, span: s, parent } => {
                    let p = if parent == s { 0 } else { parent };
                    e.ingest(&request(vec![("a", vec![span(trace + 1, s, p, b, b + 1)])]), now).unwrap();
                    sent += 1;
                }
                Op::Tick(n) => { now += n * unit / 2; e.tick(now); }
                Op::Late(n) => { e.tick(now.saturating_sub(n * unit / 2)); }
                Op::Drain => { while let Some(r) = e.drain(100) { released += r.spans; } }
            }
        }
        e.shutdown(now);
        while let Some(r) = e.drain(100) { released += r.spans; }
        prop_assert_eq!(e.stats().buffered_spans, 0);
        prop_assert_eq!(released + e.stats().duplicates_dropped, sent);
    }
}
