//! Sampling: the threshold arithmetic against the specification's examples, contrib's hash
//! and threshold against values its own Go code computes, the token bucket on an injected
//! clock, and every condition, action and first-match order through the engine.

use std::collections::BTreeSet;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use proptest::prelude::*;

use super::rate::TokenBucket;
use super::threshold::*;
use super::*;
use crate::config::{Config, RestartStrategy};
use crate::engine::Engine;
use crate::findings::{FindingKind, ReleaseReason};
use crate::testutil::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_790_000_000 * SEC;

// ---- threshold arithmetic -------------------------------------------------------------

#[test]
fn thresholds_encode_as_the_specification_shows() {
    // The specification's examples: th:0 keeps everything, th:8 half, th:c a quarter.
    assert_eq!(Threshold::from_percentage(100.0).encode().as_deref(), Some("0"));
    assert_eq!(Threshold::from_percentage(50.0).encode().as_deref(), Some("8"));
    assert_eq!(Threshold::from_percentage(25.0).encode().as_deref(), Some("c"));
    assert_eq!(Threshold::from_percentage(12.5).encode().as_deref(), Some("e"));
    assert_eq!(Threshold::from_percentage(6.25).encode().as_deref(), Some("f"));
    // 10 %: T = 2^56 - round(0.1 × 2^56), full 56-bit precision.
    assert_eq!(Threshold::from_percentage(10.0), Threshold(0xe6_6666_6666_6666));
    assert_eq!(Threshold::from_percentage(10.0).encode().as_deref(), Some("e6666666666666"));
    // 75 %: a quarter rejected.
    assert_eq!(Threshold::from_percentage(75.0).encode().as_deref(), Some("4"));
    // 0 %: nothing is kept, nothing is written.
    assert_eq!(Threshold::from_percentage(0.0), Threshold(MAX_T));
    assert_eq!(Threshold::from_percentage(0.0).encode(), None);
}

#[test]
fn thresholds_parse_with_implied_trailing_zeros() {
    assert_eq!(Threshold::parse("8"), Some(Threshold(0x80_0000_0000_0000)));
    assert_eq!(Threshold::parse("c"), Some(Threshold(0xc0_0000_0000_0000)));
    assert_eq!(Threshold::parse("0"), Some(Threshold(0)));
    assert_eq!(Threshold::parse("e6666666666666"), Some(Threshold(0xe6_6666_6666_6666)));
    for bad in ["", "g", "123456789abcdef", "-1", " 8"] {
        assert_eq!(Threshold::parse(bad), None, "{bad:?}");
    }
    assert_eq!(parse_rv("0123456789abcd"), Some(0x01_2345_6789_abcd));
    assert_eq!(parse_rv("0123456789abc"), None);
}

#[test]
fn a_trace_is_kept_when_its_randomness_reaches_the_threshold() {
    let half = Threshold::parse("8").unwrap();
    assert!(!half.keeps(0x7f_ffff_ffff_ffff));
    assert!(half.keeps(0x80_0000_0000_0000));
    assert!(Threshold(0).keeps(0));
    assert!(!Threshold(MAX_T).keeps(MAX_T - 1));
    // The trace ID's rightmost 7 bytes.
    assert_eq!(trace_id_randomness(0xffff_ffff_ffff_ffff_ff12_3456_789a_bcde), 0x12_3456_789a_bcde);
}

#[test]
fn tracestate_keeps_other_entries_and_ot_subkeys() {
    assert_eq!(write_threshold("", "8"), "ot=th:8");
    assert_eq!(write_threshold("vendor=x", "8"), "ot=th:8,vendor=x");
    assert_eq!(write_threshold("vendor=x, ot=rv:0123456789abcd;th:c;zz:1,b=2", "e"), "ot=th:e;rv:0123456789abcd;zz:1,vendor=x,b=2");
    assert_eq!(read_tracestate("a=1,ot=th:c;rv:0123456789abcd"), (Some(Threshold(0xc0_0000_0000_0000)), Some(0x01_2345_6789_abcd)));
    assert_eq!(read_tracestate("a=1"), (None, None));
    assert_eq!(read_tracestate("ot=th:zz;rv:1"), (None, None));
    // Two `ot` entries (invalid, but a client can send them): merged into one, first.
    let merged = write_threshold("ot=0,a=1,ot=rv:0123456789abcd", "8");
    assert_eq!(merged, "ot=th:8;0;rv:0123456789abcd,a=1");
    assert_eq!(read_tracestate(&merged), (Some(Threshold(0x80_0000_0000_0000)), Some(0x01_2345_6789_abcd)));
}

proptest! {
    #[test]
    fn threshold_round_trips_and_keeps_the_stated_share(p in 0.0f64..=100.0) {
        let t = Threshold::from_percentage(p);
        if let Some(s) = t.encode() {
            prop_assert_eq!(Threshold::parse(&s), Some(t));
        }
        // The share kept is (2^56 - T) / 2^56, within one part in 2^52 of p.
        let kept = (MAX_T - t.0) as f64 / MAX_T as f64;
        prop_assert!((kept - p / 100.0).abs() < 1e-15);
    }

    #[test]
    fn written_tracestate_reads_back_its_threshold_and_randomness(rv in 0u64..MAX_T, th in 0u64..MAX_T, other in "[a-z]{1,5}=[a-z0-9]{1,5}") {
        // An `other` with the key `ot` would be a second `ot` entry, which W3C trace context
        // forbids; write_threshold merges such entries (checked below).
        prop_assume!(!other.starts_with("ot="));
        let before = format!("{other},ot=rv:{rv:014x}");
        let enc = Threshold(th).encode().unwrap();
        let after = write_threshold(&before, &enc);
        prop_assert_eq!(read_tracestate(&after), (Some(Threshold(th)), Some(rv)));
        let tail = format!(",{}", other);
        prop_assert!(after.ends_with(&tail));
    }
}

// ---- contrib tail_sampling's probabilistic policy --------------------------------------

#[test]
fn contrib_threshold_matches_its_big_float_arithmetic() {
    // Computed by contrib's calculateThreshold (Go, math/big).
    for (ratio, want) in [
        (0.5, 9223372036854775807u64),
        (0.1, 1844674407370955263),
        (0.25, 4611686018427387903),
        (1.0 / 3.0, 6148914691236516863),
        (0.01, 184467440737095519),
        (0.999, 18428297329635842047),
        (0.0001, 1844674407370955),
    ] {
        assert_eq!(contrib_threshold(ratio), want, "ratio {ratio}");
    }
    assert_eq!(contrib_threshold(0.0), 0);
    assert_eq!(contrib_threshold(1.0), u64::MAX);
}

#[test]
fn contrib_hash_is_fnv1a_of_salt_then_trace_id() {
    // Go: fnv.New64a(), Write("default-hash-seed"), Write(trace ID abab…ab 00…07).
    let tid = u128::from_be_bytes(tid(7).try_into().unwrap());
    assert_eq!(contrib_hash(CONTRIB_DEFAULT_SALT, tid), 10407532027094607696);
}

// ---- the token bucket ------------------------------------------------------------------

#[test]
fn rate_limit_refills_at_its_rate_from_an_injected_clock() {
    let mut b = TokenBucket::new(10.0);
    assert!(b.take(4, 0));
    assert!(b.take(4, 0));
    assert!(!b.take(4, 0), "2 tokens left");
    assert!(!b.take(4, 100 * MS), "3 tokens");
    assert!(b.take(4, 200 * MS), "4 tokens");
    // Idle for long: the bucket holds one second's worth, no more.
    assert!(b.take(10, 100 * SEC));
    assert!(!b.take(1, 100 * SEC));
    // A trace larger than a second's worth passes a full bucket and leaves it in debt.
    assert!(b.take(25, 200 * SEC));
    assert!(!b.take(1, 201 * SEC), "-5 tokens");
    assert!(b.take(1, 202 * SEC + 600 * MS));
    // A clock that goes back refills nothing.
    assert!(!b.take(10, 150 * SEC));
}

proptest! {
    #[test]
    fn rate_limit_never_keeps_more_than_its_rate(rate in 1u32..200, arrivals in proptest::collection::vec((0u64..200 * MS, 1u64..50), 1..300)) {
        let rate = f64::from(rate);
        let mut b = TokenBucket::new(rate);
        let (mut now, mut kept, mut largest) = (0u64, 0u64, 0u64);
        for (dt, spans) in arrivals {
            now += dt;
            if b.take(spans, now) {
                kept += spans;
                largest = largest.max(spans);
            }
        }
        // One second's burst, the refill, and at most one trace's debt.
        let bound = rate + rate * now as f64 / 1e9 + largest as f64;
        prop_assert!(kept as f64 <= bound + 1e-6, "kept {} bound {}", kept, bound);
    }
}

// ---- conditions and actions through the engine -----------------------------------------

fn cfg() -> Config {
    Config {
        num_shards: 2,
        quiet_period_ns: SEC as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        hlc_restart: RestartStrategy::None,
        ..Config::default()
    }
}

fn rule(name: &str, when: Vec<Condition>, action: Action) -> Rule {
    Rule { name: name.into(), when, action }
}

fn policy(rules: Vec<Rule>, default: Action) -> Policy {
    Policy { rules, default, mode: Mode::Consistent, hash_salt: String::new() }
}

/// Root 1 (service `svc`) → child 2 → child 3, of trace `t`, lasting `ms` milliseconds.
fn trace(t: u64, ms: u64) -> Vec<Span> {
    let b = T0 - 30 * SEC;
    vec![span(t, 1, 0, b, b + ms * MS), span(t, 2, 1, b + MS, b + 2 * MS), span(t, 3, 2, b + MS, b + 2 * MS)]
}

fn attr_int(k: &str, v: i64) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }), ..Default::default() }
}

/// Ingests each batch, releases everything (complete traces after the quiet period, others
/// by idle timeout) and returns the output spans.
fn run(e: &Engine, batches: Vec<Vec<u8>>) -> Vec<OutSpan> {
    for b in &batches {
        e.ingest(b, T0).unwrap();
    }
    e.tick(T0 + 2 * SEC);
    e.tick(T0 + 20 * SEC);
    let mut out = Vec::new();
    while let Some(r) = e.drain(1_000_000) {
        let d = decode(&r.otlp);
        assert_eq!(d.len() as u64, r.spans);
        assert!(!r.units.is_empty() && r.spans > 0, "a release holds kept traces");
        out.extend(d);
    }
    out
}

fn kept_traces(out: &[OutSpan]) -> BTreeSet<u64> {
    out.iter().map(OutSpan::trace).collect()
}

/// Which of `traces` (trace id, service, spans) a single rule `when → keep` (default drop)
/// keeps.
fn kept_by(when: Vec<Condition>, traces: Vec<(u64, &str, Vec<Span>)>) -> BTreeSet<u64> {
    let e = Engine::with_sampling(cfg(), Some(policy(vec![rule("r", when, Action::Keep)], Action::Drop))).unwrap();
    let out = run(&e, traces.into_iter().map(|(_, svc, spans)| request(vec![(svc, spans)])).collect());
    kept_traces(&out)
}

#[test]
fn condition_error_keeps_traces_with_an_error_span() {
    let mut err = trace(1, 10);
    err[2].status = Some(Status { code: status::StatusCode::Error as i32, message: "boom".into() });
    let mut ok = trace(2, 10);
    ok[0].status = Some(Status { code: status::StatusCode::Ok as i32, message: String::new() });
    assert_eq!(kept_by(vec![Condition::Error], vec![(1, "a", err), (2, "a", ok), (3, "a", trace(3, 10))]), BTreeSet::from([1]));
}

#[test]
fn condition_duration_bounds_are_inclusive() {
    let traces = || vec![(1, "a", trace(1, 100)), (2, "a", trace(2, 500)), (3, "a", trace(3, 501))];
    assert_eq!(kept_by(vec![Condition::DurationAtLeast(500 * MS)], traces()), BTreeSet::from([2, 3]));
    assert_eq!(kept_by(vec![Condition::DurationAtMost(500 * MS)], traces()), BTreeSet::from([1, 2]));
    // AND of both: a range.
    assert_eq!(kept_by(vec![Condition::DurationAtLeast(200 * MS), Condition::DurationAtMost(500 * MS)], traces()), BTreeSet::from([2]));
}

#[test]
fn condition_span_count_range() {
    let mut big = trace(2, 10);
    big.push(span(2, 4, 1, T0 - 30 * SEC, T0 - 29 * SEC));
    let small = vec![span(3, 1, 0, T0 - 30 * SEC, T0 - 29 * SEC)];
    assert_eq!(kept_by(vec![Condition::SpanCount { min: 2, max: 3 }], vec![(1, "a", trace(1, 10)), (2, "a", big), (3, "a", small)]), BTreeSet::from([1]));
}

#[test]
fn condition_service_any_span_or_root() {
    // Trace 1: root in "front", children in "back"; trace 2 all in "back".
    let t1 = trace(1, 10);
    let req1 = request(vec![("front", t1[..1].to_vec()), ("back", t1[1..].to_vec())]);
    let req2 = request(vec![("back", trace(2, 10))]);
    for (root_only, want) in [(false, BTreeSet::from([1, 2])), (true, BTreeSet::from([2]))] {
        let when = vec![Condition::Service { names: vec!["x".into(), "back".into()], root_only }];
        let e = Engine::with_sampling(cfg(), Some(policy(vec![rule("r", when, Action::Keep)], Action::Drop))).unwrap();
        assert_eq!(kept_traces(&run(&e, vec![req1.clone(), req2.clone()])), want, "root_only {root_only}");
    }
}

#[test]
fn condition_span_attribute_equal_in_prefix_present() {
    let with = |t: u64, kvs: Vec<KeyValue>| {
        let mut s = trace(t, 10);
        s[1].attributes.extend(kvs);
        (t, "a", s)
    };
    let traces = || {
        vec![
            with(1, vec![kv("http.route", "/health")]),
            with(2, vec![kv("http.route", "/healthz/live")]),
            with(3, vec![kv("http.route", "/api")]),
            with(4, vec![attr_int("http.status_code", 500)]),
            (5, "a", trace(5, 10)),
        ]
    };
    let span_attr = |key: &str, m: Match| vec![Condition::Attribute { scope: AttrScope::Span, key: key.into(), matches: m }];
    assert_eq!(kept_by(span_attr("http.route", Match::Equals("/health".into())), traces()), BTreeSet::from([1]));
    assert_eq!(kept_by(span_attr("http.route", Match::In(vec!["/api".into(), "/health".into()])), traces()), BTreeSet::from([1, 3]));
    assert_eq!(kept_by(span_attr("http.route", Match::Prefix("/health".into())), traces()), BTreeSet::from([1, 2]));
    assert_eq!(kept_by(span_attr("http.route", Match::Present), traces()), BTreeSet::from([1, 2, 3]));
    // Integers compare in decimal.
    assert_eq!(kept_by(span_attr("http.status_code", Match::Equals("500".into())), traces()), BTreeSet::from([4]));
    // Every fixture span has k=v; the resource's keys are not span attributes.
    assert_eq!(kept_by(span_attr("host.name", Match::Present), traces()), BTreeSet::new());
}

#[test]
fn condition_resource_attribute() {
    // The fixture's resources carry service.name and host.name = the service.
    let traces = || vec![(1, "edge", trace(1, 10)), (2, "core", trace(2, 10))];
    let res = |m: Match| vec![Condition::Attribute { scope: AttrScope::Resource, key: "host.name".into(), matches: m }];
    assert_eq!(kept_by(res(Match::Equals("edge".into())), traces()), BTreeSet::from([1]));
    assert_eq!(kept_by(res(Match::Prefix("co".into())), traces()), BTreeSet::from([2]));
    assert_eq!(kept_by(res(Match::Present), traces()), BTreeSet::from([1, 2]));
    assert_eq!(kept_by(vec![Condition::Attribute { scope: AttrScope::Resource, key: "k".into(), matches: Match::Present }], traces()), BTreeSet::new());
}

#[test]
fn conditions_root_findings_and_release_reason() {
    // Trace 2 has no root: released by idle timeout with findings (missing parent, no root).
    let traces = || vec![(1, "a", trace(1, 10)), (2, "a", trace(2, 10)[1..].to_vec())];
    assert_eq!(kept_by(vec![Condition::Root(true)], traces()), BTreeSet::from([1]));
    assert_eq!(kept_by(vec![Condition::Root(false)], traces()), BTreeSet::from([2]));
    assert_eq!(kept_by(vec![Condition::Findings(FindingKind::ALL_MASK)], traces()), BTreeSet::from([2]));
    assert_eq!(kept_by(vec![Condition::Findings(FindingKind::MissingParent.bit())], traces()), BTreeSet::from([2]));
    assert_eq!(kept_by(vec![Condition::Findings(FindingKind::ClockSkew.bit())], traces()), BTreeSet::new());
    let reason = |r: &[ReleaseReason]| Condition::ReleaseReason(r.iter().fold(0, |m, r| m | 1 << *r as u32));
    assert_eq!(kept_by(vec![reason(&[ReleaseReason::Complete])], traces()), BTreeSet::from([1]));
    assert_eq!(kept_by(vec![reason(&[ReleaseReason::IdleTimeout, ReleaseReason::MaxAge])], traces()), BTreeSet::from([2]));
}

#[test]
fn first_matching_rule_decides_and_is_written_on_the_root() {
    let mut err = trace(1, 10);
    err[1].status = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
    let p = policy(
        vec![
            rule("drop-a", vec![Condition::Service { names: vec!["a".into()], root_only: false }], Action::Drop),
            rule("errors", vec![Condition::Error], Action::Keep),
        ],
        Action::Keep,
    );
    let e = Engine::with_sampling(cfg(), Some(p)).unwrap();
    let out = run(&e, vec![request(vec![("a", err.clone())]), request(vec![("b", { let mut t = err.clone(); t.iter_mut().for_each(|s| s.trace_id = tid(2)); t })]), request(vec![("b", trace(3, 10))])]);
    // Trace 1 matches both rules: the first (drop) wins.
    assert_eq!(kept_traces(&out), BTreeSet::from([2, 3]));
    let rule_of = |t: u64| -> Vec<(u64, Option<String>)> {
        out.iter().filter(|s| s.trace() == t).map(|s| (s.id(), s.attr_str(crate::attrs::ATTR_TRACE_SAMPLING_RULE))).collect()
    };
    let r2 = rule_of(2);
    assert_eq!(r2.len(), 3);
    assert!(r2.iter().all(|(id, r)| (*id == 1) == r.is_some()), "written on the root only: {r2:?}");
    assert_eq!(r2.iter().find(|(id, _)| *id == 1).unwrap().1.as_deref(), Some("errors"));
    assert_eq!(rule_of(3).iter().find(|(id, _)| *id == 1).unwrap().1.as_deref(), Some(DEFAULT_RULE));
    // Counted by rule and decision: rules in order, then the default.
    let c = e.sampling_counts();
    assert_eq!(c.len(), 3);
    assert_eq!((c[0].dropped_traces, c[0].dropped_spans, c[0].kept_traces), (1, 3, 0));
    assert_eq!((c[1].kept_traces, c[1].kept_spans, c[1].dropped_traces), (1, 3, 0));
    assert_eq!((c[2].kept_traces, c[2].kept_spans), (1, 3));
}

#[test]
fn without_a_policy_the_output_is_what_it_was() {
    let batches = || vec![request(vec![("a", trace(1, 10))]), request(vec![("a", trace(2, 10)[1..].to_vec())])];
    let plain = run(&Engine::new(cfg()).unwrap(), batches());
    let none = Engine::with_sampling(cfg(), None).unwrap();
    let same = run(&none, batches());
    let key = |v: &[OutSpan]| {
        let mut k: Vec<(u64, u64, usize, String)> = v.iter().map(|s| (s.trace(), s.id(), s.span.attributes.len(), s.span.trace_state.clone())).collect();
        k.sort();
        k
    };
    assert_eq!(key(&plain), key(&same));
    assert!(none.sampling_counts().is_empty());
    assert!(plain.iter().all(|s| s.attr(crate::attrs::ATTR_TRACE_SAMPLING_RULE).is_none()));
}

#[test]
fn probabilistic_keeps_by_randomness_and_writes_the_threshold() {
    // 50 %: trace IDs end in the randomness; 0x80… and above are kept.
    let mut lo = trace(0, 10);
    let mut hi = trace(0, 10);
    lo.iter_mut().for_each(|s| s.trace_id = [vec![0xab; 9], vec![0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]].concat());
    hi.iter_mut().for_each(|s| s.trace_id = [vec![0xab; 9], vec![0x80, 0, 0, 0, 0, 0, 1]].concat());
    // rv overrides the trace ID: this one's ID says drop, its rv says keep.
    let mut rv = trace(3, 10);
    rv.iter_mut().for_each(|s| s.trace_id = [vec![0xab; 9], vec![0x10, 0, 0, 0, 0, 0, 3]].concat());
    rv[0].trace_state = "vendor=1,ot=rv:f0000000000000".into();
    rv[1].trace_state = "ot=rv:f0000000000000".into();
    let e = Engine::with_sampling(cfg(), Some(policy(vec![], Action::Probabilistic(50.0)))).unwrap();
    let out = run(&e, vec![request(vec![("a", lo), ("b", hi), ("c", rv)])]);
    let ids: BTreeSet<Vec<u8>> = out.iter().map(|s| s.span.trace_id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|id| id[9] == 0x80 || id[9] == 0x10));
    let ts: BTreeSet<(u8, u64, String)> = out.iter().map(|s| (s.span.trace_id[9], s.id(), s.span.trace_state.clone())).collect();
    assert_eq!(
        ts,
        BTreeSet::from([
            (0x10, 1, "ot=th:8;rv:f0000000000000,vendor=1".to_string()),
            (0x10, 2, "ot=th:8;rv:f0000000000000".to_string()),
            (0x10, 3, "ot=th:8".to_string()),
            (0x80, 1, "ot=th:8".to_string()),
            (0x80, 2, "ot=th:8".to_string()),
            (0x80, 3, "ot=th:8".to_string()),
        ])
    );
}

#[test]
fn probabilistic_never_lowers_an_incoming_threshold() {
    // Sampled upstream at 25 % (th:c); our 50 % must not claim the trace stands for 2.
    let mut t = trace(0, 10);
    t.iter_mut().for_each(|s| {
        s.trace_id = [vec![0xab; 9], vec![0xd0, 0, 0, 0, 0, 0, 0]].concat();
        s.trace_state = "ot=th:c".into();
    });
    // Below the upstream threshold (inconsistent upstream): our equalized decision drops it.
    let mut below = trace(0, 10);
    below.iter_mut().for_each(|s| {
        s.trace_id = [vec![0xab; 9], vec![0x90, 0, 0, 0, 0, 0, 0]].concat();
        s.trace_state = "ot=th:c".into();
    });
    let e = Engine::with_sampling(cfg(), Some(policy(vec![], Action::Probabilistic(50.0)))).unwrap();
    let out = run(&e, vec![request(vec![("a", t), ("b", below)])]);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|s| s.span.trace_id[9] == 0xd0 && s.span.trace_state == "ot=th:c"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn probabilistic_keeps_exactly_the_ids_at_or_above_the_threshold(p in 0.0f64..=100.0, seeds in proptest::collection::vec(any::<u64>(), 1..40)) {
        let e = Engine::with_sampling(cfg(), Some(policy(vec![], Action::Probabilistic(p)))).unwrap();
        let th = Threshold::from_percentage(p);
        let mut want = BTreeSet::new();
        let mut batches = Vec::new();
        for (n, s) in seeds.iter().enumerate() {
            let id = (*s & !0xff) | n as u64; // distinct
            if th.keeps(id & (MAX_T - 1)) {
                want.insert(id);
            }
            batches.push(request(vec![("a", trace(id, 10))]));
        }
        let out = run(&e, batches);
        prop_assert_eq!(kept_traces(&out), want);
        let c = e.sampling_counts();
        prop_assert_eq!(c[0].kept_traces + c[0].dropped_traces, seeds.len() as u64);
    }
}

#[test]
fn hash_compatible_mode_keeps_what_contrib_keeps_and_leaves_tracestate() {
    let p = Policy { rules: vec![], default: Action::Probabilistic(30.0), mode: Mode::HashCompatible, hash_salt: "s".into() };
    let e = Engine::with_sampling(cfg(), Some(p)).unwrap();
    let ids: Vec<u64> = (1..=200u64).map(|n| n.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
    let want: BTreeSet<u64> = ids
        .iter()
        .copied()
        .filter(|&n| contrib_hash("s", u128::from_be_bytes(tid(n).try_into().unwrap())) <= contrib_threshold(0.3))
        .collect();
    let out = run(&e, ids.iter().map(|&n| request(vec![("a", trace(n, 10))])).collect());
    assert_eq!(kept_traces(&out), want);
    assert!(want.len() > 30 && want.len() < 90, "{}", want.len());
    assert!(out.iter().all(|s| s.span.trace_state.is_empty()));
}

#[test]
fn rate_limit_rule_keeps_at_most_its_rate_and_drops_the_rest() {
    // 6 spans/s: two 3-span traces pass the full bucket, the rest of the burst is dropped.
    let e = Engine::with_sampling(cfg(), Some(policy(vec![rule("rl", vec![], Action::RateLimit(6.0))], Action::Keep))).unwrap();
    let out = run(&e, (1..=5).map(|t| request(vec![("a", trace(t, 10))])).collect());
    assert_eq!(out.len(), 6);
    let c = e.sampling_counts();
    assert_eq!((c[0].kept_traces, c[0].dropped_traces, c[0].dropped_spans), (2, 3, 9));
}

#[test]
fn a_batch_of_only_dropped_traces_is_never_handed_out() {
    let e = Engine::with_sampling(cfg(), Some(policy(vec![], Action::Drop))).unwrap();
    for t in 1..=3 {
        e.ingest(&request(vec![("a", trace(t, 10))]), T0).unwrap();
    }
    e.tick(T0 + 2 * SEC);
    assert!(e.drain(1_000_000).is_none());
    let s = e.stats();
    assert_eq!((s.ready_spans, s.ready_bytes, s.buffered_spans), (0, 0, 0));
    assert_eq!(e.sampling_counts()[0].dropped_spans, 9);
}

#[test]
fn dropped_traces_are_acknowledged_to_the_log_and_redecided_after_a_crash() {
    let dir = std::env::temp_dir().join(format!("tc-sampling-wal-{}-{}", std::process::id(), T0));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wal_cfg = || Config { wal_directory: Some(dir.to_str().unwrap().to_string()), ..cfg() };
    let keep_b = || Some(policy(vec![rule("b", vec![Condition::Service { names: vec!["b".into()], root_only: false }], Action::Keep)], Action::Drop));
    {
        let e = Engine::with_sampling(wal_cfg(), keep_b()).unwrap();
        e.recover(T0);
        // A batch holding only a dropped trace: acknowledged at once.
        e.ingest(&request(vec![("a", trace(1, 10))]), T0).unwrap();
        e.tick(T0 + 2 * SEC);
        assert!(e.drain(1_000_000).is_none());
        // A kept trace and a dropped one, handed out and never acknowledged: a crash.
        e.ingest(&request(vec![("b", trace(2, 10)), ("a", trace(3, 10))]), T0 + 3 * SEC).unwrap();
        e.tick(T0 + 5 * SEC);
        let r = e.drain(1_000_000).unwrap();
        assert_eq!(kept_traces(&decode(&r.otlp)), BTreeSet::from([2]));
        assert_ne!(r.token, 0);
    }
    let e = Engine::with_sampling(wal_cfg(), keep_b()).unwrap();
    let rep = e.recover(T0 + 6 * SEC);
    // Trace 1 never comes back; 2 and 3 (in flight) are replayed and decided again.
    assert_eq!((rep.spans, rep.traces), (6, 2), "{rep:?}");
    e.tick(T0 + 8 * SEC);
    e.tick(T0 + 30 * SEC);
    let mut out = Vec::new();
    while let Some(r) = e.drain(1_000_000) {
        out.extend(decode(&r.otlp));
        e.delivered(r.token);
    }
    assert_eq!(kept_traces(&out), BTreeSet::from([2]));
    drop(e);
    let e = Engine::with_sampling(wal_cfg(), keep_b()).unwrap();
    assert_eq!(e.recover(T0 + 40 * SEC).spans, 0, "everything decided was acknowledged");
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the sampling section --------------------------------------------------------------

fn parse_err(json: &str) -> String {
    match super::config::parse_policy(json) {
        Err(e) => e.0,
        Ok(p) => panic!("accepted {json}: {p:?}"),
    }
}

#[test]
fn sampling_section_parses_every_condition_and_action() {
    let p = super::config::parse_policy(
        r#"{"mode":"hash_compatible","hash_salt":"s","rules":[
            {"name":"errors","when":{"error":true},"action":"keep"},
            {"name":"slow","when":{"duration":{"at_least":"1m30s","at_most":"2h"},"span_count":{"min":2}},"action":"keep"},
            {"name":"svc","when":{"service":{"in":["a","b"],"root_only":true},"root":"absent"},"action":"drop"},
            {"name":"attrs","when":{"span_attribute":{"key":"url.path","prefix":"/health"},"resource_attribute":{"key":"env","in":["dev"]}},"action":"rate_limit","rate_limit":{"spans_per_second":50}},
            {"name":"bad","when":{"consistency":{"findings":["missing_parent","clock_skew"]},"release_reason":["idle_timeout"]},"action":"keep"},
            {"name":"any","when":{"consistency":{"status":"inconsistent"}},"action":"probabilistic","probabilistic":{"percentage":12.5}}
        ],"default":{"action":"probabilistic","probabilistic":{"percentage":10}}}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(p.mode, Mode::HashCompatible);
    assert_eq!(p.hash_salt, "s");
    assert_eq!(p.rules.len(), 6);
    assert_eq!(p.rules[0].when, vec![Condition::Error]);
    assert_eq!(p.rules[1].when, vec![Condition::DurationAtLeast(90 * SEC), Condition::DurationAtMost(7200 * SEC), Condition::SpanCount { min: 2, max: u64::MAX }]);
    assert_eq!(p.rules[2].when, vec![Condition::Service { names: vec!["a".into(), "b".into()], root_only: true }, Condition::Root(false)]);
    assert_eq!(p.rules[2].action, Action::Drop);
    assert_eq!(
        p.rules[3].when,
        vec![
            Condition::Attribute { scope: AttrScope::Span, key: "url.path".into(), matches: Match::Prefix("/health".into()) },
            Condition::Attribute { scope: AttrScope::Resource, key: "env".into(), matches: Match::In(vec!["dev".into()]) },
        ]
    );
    assert_eq!(p.rules[3].action, Action::RateLimit(50.0));
    assert_eq!(
        p.rules[4].when,
        vec![Condition::Findings(FindingKind::MissingParent.bit() | FindingKind::ClockSkew.bit()), Condition::ReleaseReason(1 << ReleaseReason::IdleTimeout as u32)]
    );
    assert_eq!(p.rules[5].when, vec![Condition::Findings(FindingKind::ALL_MASK)]);
    assert_eq!(p.rules[5].action, Action::Probabilistic(12.5));
    assert_eq!(p.default, Action::Probabilistic(10.0));
    // Absent: no sampling; no default: keep.
    assert_eq!(super::config::parse_policy("").unwrap(), None);
    assert_eq!(super::config::parse_policy("null").unwrap(), None);
    assert_eq!(super::config::parse_policy("{}").unwrap().unwrap().default, Action::Keep);
}

#[test]
fn sampling_section_errors_name_the_key() {
    let rules = |r: &str| format!(r#"{{"rules":[{{"name":"a","action":"keep"}},{{"name":"b","action":"keep"}},{r}]}}"#);
    assert_eq!(
        parse_err(&rules(r#"{"name":"c","action":"probabilistic","probabilistic":{"percentage":120}}"#)),
        "sampling.rules[2].probabilistic.percentage must be between 0 and 100, got 120"
    );
    assert_eq!(parse_err(&rules(r#"{"name":"a","action":"keep"}"#)), "sampling.rules[2].name must be unique, \"a\" is also the name of sampling.rules[0]");
    assert_eq!(
        parse_err(&rules(r#"{"name":"c","action":"rate_limit","rate_limit":{"spans_per_second":0}}"#)),
        "sampling.rules[2].rate_limit.spans_per_second must be greater than 0, got 0"
    );
    assert!(parse_err(&rules(r#"{"name":"c","action":"rate_limit","rate_limit":{"spans_per_second":-3}}"#)).starts_with("sampling.rules[2].rate_limit.spans_per_second must be greater than 0"));
    let e = parse_err(&rules(r#"{"name":"c","when":{"consistency":{"findings":["missing_parent","nope"]}},"action":"keep"}"#));
    assert!(e.starts_with("sampling.rules[2].when.consistency.findings[1] must be one of missing_parent, "), "{e}");
    assert!(e.ends_with(", got \"nope\""), "{e}");
    let e = parse_err(&rules(r#"{"name":"c","when":{"release_reason":["late"]},"action":"keep"}"#));
    assert!(e.starts_with("sampling.rules[2].when.release_reason[0] must be one of complete, idle_timeout"), "{e}");
    assert!(parse_err(&rules(r#"{"name":"c","when":{"eror":true},"action":"keep"}"#)).starts_with("sampling.rules[2].when has unknown key \"eror\""));
    assert_eq!(parse_err(&rules(r#"{"name":"c"}"#)), "sampling.rules[2].action is required (keep, drop, probabilistic, rate_limit)");
    assert_eq!(parse_err(&rules(r#"{"name":"c","action":"probabilistic"}"#)), "sampling.rules[2].probabilistic.percentage is required with action probabilistic");
    assert_eq!(parse_err(&rules(r#"{"name":"c","action":"keep","rate_limit":{"spans_per_second":1}}"#)), "sampling.rules[2].rate_limit is set but sampling.rules[2].action is \"keep\"");
    assert_eq!(parse_err(&rules(r#"{"name":"c","when":{"duration":{"at_least":"5 s"}},"action":"keep"}"#)), "sampling.rules[2].when.duration.at_least must be a duration like 500ms or 2s, got \"5 s\"");
    assert_eq!(parse_err(&rules(r#"{"name":"c","when":{"span_attribute":{"key":"k","equals":"x","prefix":"y"}},"action":"keep"}"#)), "sampling.rules[2].when.span_attribute must have exactly one of equals, in, prefix, present");
    assert_eq!(parse_err(&rules(r#"{"name":"c","when":{"span_count":{"min":3,"max":2}},"action":"keep"}"#)), "sampling.rules[2].when.span_count.min must not be above sampling.rules[2].when.span_count.max, got 3 > 2");
    assert_eq!(parse_err(&rules(r#"{"name":"default","action":"keep"}"#)), "sampling.rules[2].name must not be \"default\" (the name of sampling.default)");
    assert_eq!(parse_err(r#"{"mode":"fast"}"#), "sampling.mode must be consistent or hash_compatible, got \"fast\"");
    assert_eq!(parse_err(r#"{"hash_salt":"x"}"#), "sampling.hash_salt is only used with sampling.mode hash_compatible");
    assert_eq!(parse_err(r#"{"default":{"action":"probabilistic","probabilistic":{"percentage":-1}}}"#), "sampling.default.probabilistic.percentage must be between 0 and 100, got -1");
    assert!(parse_err("{").starts_with("sampling is not valid"));
}

#[test]
fn late_spans_follow_their_traces_decision() {
    // Trace 1 is kept by 100 % (th:0), trace 2 by a keep rule, trace 3 dropped.
    let p = policy(
        vec![
            rule("keep-b", vec![Condition::Service { names: vec!["b".into()], root_only: false }], Action::Keep),
            rule("drop-c", vec![Condition::Service { names: vec!["c".into()], root_only: false }], Action::Drop),
        ],
        Action::Probabilistic(100.0),
    );
    let e = Engine::with_sampling(cfg(), Some(p)).unwrap();
    let out = run(&e, vec![request(vec![("a", trace(1, 10)), ("b", trace(2, 10)), ("c", trace(3, 10))])]);
    assert_eq!(kept_traces(&out), BTreeSet::from([1, 2]));
    // A late span for each.
    let b = T0 - 30 * SEC;
    let mut late1 = span(1, 9, 1, b, b + MS);
    late1.trace_state = "v=1".into();
    let late = request(vec![("a", vec![late1]), ("b", vec![span(2, 9, 1, b, b + MS)]), ("c", vec![span(3, 9, 1, b, b + MS), span(3, 10, 1, b, b + MS)])]);
    let o = e.ingest(&late, T0 + 21 * SEC).unwrap();
    assert_eq!(o.late_forwarded, 2, "{o:?}");
    let mut got = Vec::new();
    while let Some(r) = e.drain(1_000_000) {
        got.extend(decode(&r.otlp));
    }
    let by_trace: BTreeSet<(u64, String, bool)> =
        got.iter().map(|s| (s.trace(), s.span.trace_state.clone(), matches!(s.attr("consistency.span.late"), Some(any_value::Value::BoolValue(true))))).collect();
    assert_eq!(by_trace, BTreeSet::from([(1, "ot=th:0,v=1".to_string(), true), (2, String::new(), true)]));
    let c = e.sampling_counts();
    assert_eq!(c[1].dropped_spans, 3 + 2, "the dropped trace's late spans are counted with it");
    assert_eq!(c[1].dropped_traces, 1);
}

#[test]
fn dropped_traces_are_never_encoded() {
    use crate::testutil::counting::{alloc_live, alloc_peak, alloc_peak_reset};
    // What a drain allocates above what it started with: the encoded request of what it
    // keeps, and small per-trace bookkeeping for what it drops.
    let drain_peak = |action: Action| -> (i64, u64) {
        let e = Engine::with_sampling(cfg(), Some(policy(vec![], action))).unwrap();
        for t in 1..=200u64 {
            let mut spans = trace(t, 10);
            for s in spans.iter_mut() {
                s.attributes.push(kv("payload", &"x".repeat(400)));
            }
            e.ingest(&request(vec![("a", spans)]), T0).unwrap();
        }
        e.tick(T0 + 2 * SEC);
        let base = alloc_live();
        alloc_peak_reset();
        let mut out = 0;
        while let Some(r) = e.drain(1_000_000) {
            out += r.otlp.len() as u64;
        }
        (alloc_peak() - base, out)
    };
    let (kept_peak, kept_out) = drain_peak(Action::Keep);
    let (dropped_peak, dropped_out) = drain_peak(Action::Drop);
    assert!(kept_out > 200 * 3 * 400, "{kept_out}");
    assert_eq!(dropped_out, 0);
    assert!(kept_peak >= kept_out as i64, "kept: the request is allocated ({kept_peak} ≥ {kept_out})");
    // Measured: kept 538 KB for 362 KB out; dropped 59 KB (the checks, the late cache).
    assert!(dropped_peak * 8 < kept_peak, "dropped: nothing encoded ({dropped_peak} vs {kept_peak})");
    eprintln!("drain peak allocation: kept {kept_peak} B for {kept_out} B out, dropped {dropped_peak} B (600 spans)");
}

#[test]
fn a_trace_handed_off_is_decided_only_where_it_is_released() {
    let hcfg = || Config { handoff_on_shutdown: true, handoff_key: Some("the tier's shared secret".into()), ..cfg() };
    let drop_all = || Some(policy(vec![], Action::Drop));
    // The first gateway hands the incomplete trace off at shutdown: undecided, whole.
    let a = Engine::with_sampling(hcfg(), drop_all()).unwrap();
    a.ingest(&request(vec![("a", trace(1, 10)[1..].to_vec())]), T0).unwrap();
    a.shutdown(T0 + SEC);
    let mut handed = Vec::new();
    while let Some(r) = a.drain_handoff(1_000_000) {
        handed.push(r.otlp);
    }
    assert_eq!(handed.iter().map(|b| decode(b).len()).sum::<usize>(), 2);
    assert!(a.drain(1_000_000).is_none());
    assert!(a.sampling_counts().iter().all(|c| *c == RuleCounts::default()), "nothing decided where it was handed off");
    // The receiving gateway releases it (with its root) and decides it there.
    let b = Engine::with_sampling(hcfg(), drop_all()).unwrap();
    for h in &handed {
        b.ingest(h, T0 + 2 * SEC).unwrap();
    }
    b.ingest(&request(vec![("a", trace(1, 10)[..1].to_vec())]), T0 + 2 * SEC).unwrap();
    b.tick(T0 + 4 * SEC);
    assert!(b.drain(1_000_000).is_none());
    assert_eq!(b.sampling_counts()[0], RuleCounts { kept_traces: 0, kept_spans: 0, dropped_traces: 1, dropped_spans: 3 });
}
