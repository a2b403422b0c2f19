//! Hand-off tests with an injected clock: what is handed off and when, the marker (written,
//! read, stripped, bounded), stamps kept across the hand-off, and the counters.

use super::*;
use crate::findings::ReleaseReason;
use crate::testutil::*;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_790_000_000 * SEC;
const HANDOFF: &str = "consistency.span.handoff";
const PROOF: &str = "consistency.span.handoff_proof";
const KEY: &str = "the tier's shared secret";

fn cfg(on_shutdown: bool, on_idle: bool, max_hops: i64) -> Config {
    Config {
        num_shards: 4,
        quiet_period_ns: SEC as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        hlc_restart: RestartStrategy::None,
        handoff_on_shutdown: on_shutdown,
        handoff_on_idle: on_idle,
        handoff_max_hops: max_hops,
        handoff_key: Some(KEY.into()),
        ..Config::default()
    }
}

/// Root 1 → children 2, 3 → grandchild 4 (under 2), of trace `t`.
fn trace(t: u64) -> Vec<Span> {
    let b = T0 - 5 * SEC;
    vec![
        span(t, 1, 0, b, b + 900 * MS),
        span(t, 2, 1, b + 10 * MS, b + 500 * MS),
        span(t, 3, 1, b + 20 * MS, b + 600 * MS),
        span(t, 4, 2, b + 30 * MS, b + 400 * MS),
    ]
}

fn int_kv(key: &str, v: i64) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }), ..Default::default() }
}

/// The proof a collector holding `key` writes beside a marker of `hops` on span `s`.
fn proof(key: &str, s: &Span, hops: u32) -> i64 {
    let trace = u128::from_be_bytes(s.trace_id.as_slice().try_into().unwrap());
    let span = u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap());
    handoff::ProofKey::derive(key).proof(trace, span, hops) as i64
}

/// `s` as a collector of the tier hands it off: marker and proof.
fn with_hops(mut s: Span, hops: i64) -> Span {
    let p = proof(KEY, &s, hops as u32);
    s.attributes.push(int_kv(HANDOFF, hops));
    s.attributes.push(int_kv(PROOF, p));
    s
}

fn drain_released(e: &Engine) -> (Vec<OutSpan>, Vec<ReleasedUnit>, usize) {
    let (mut spans, mut units, mut calls) = (Vec::new(), Vec::new(), 0);
    while let Some(r) = e.drain(1_000_000) {
        spans.extend(decode(&r.otlp));
        units.extend(r.units);
        calls += 1;
    }
    (spans, units, calls)
}

/// Every hand-off release, as the raw requests (to ingest elsewhere) and their units.
fn drain_handed_off(e: &Engine) -> (Vec<Vec<u8>>, Vec<ReleasedUnit>) {
    let (mut reqs, mut units) = (Vec::new(), Vec::new());
    while let Some(r) = e.drain_handoff(1_000_000) {
        reqs.push(r.otlp);
        units.extend(r.units);
    }
    (reqs, units)
}

#[test]
fn shutdown_hands_off_buffered_traces_with_their_stamps_and_one_hop() {
    let e = Engine::new(cfg(true, false, 1)).unwrap();
    let tr = trace(1);
    e.ingest(&request(vec![("a", tr[1..].to_vec())]), T0).unwrap();
    let stamped = e.hlc_last().unwrap();
    e.shutdown(T0 + 100 * MS);
    let (released, _, _) = drain_released(&e);
    assert!(released.is_empty(), "nothing released as final: {released:?}");
    let (reqs, units) = drain_handed_off(&e);
    assert_eq!(units, vec![ReleasedUnit { reason: ReleaseReason::Shutdown, spans: 3, age_ns: 100 * MS, findings: 0 }]);
    let out: Vec<OutSpan> = reqs.iter().flat_map(|r| decode(r)).collect();
    assert_eq!(out.len(), 3);
    for s in &out {
        assert_eq!(s.attr_int(HANDOFF), Some(1), "{s:?}");
        let hlc = s.attr_str("consistency.hlc").expect("stamp kept");
        assert!(hlc <= stamped.to_string(), "{hlc} was issued at ingest");
        // Not final: no findings, no trace attributes.
        assert!(s.attr("consistency.trace.release_reason").is_none());
        assert!(s.attr("consistency.span.findings").is_none());
    }
    assert_eq!(e.stats().ready_spans, 0);
    assert_eq!(e.stats().ready_bytes, 0);
}

#[test]
fn handed_off_spans_merge_at_the_owner_marker_stripped_and_stamped_above() {
    let leaving = Engine::new(cfg(true, false, 1)).unwrap();
    let owner = Engine::new(cfg(true, false, 1)).unwrap();
    let tr = trace(7);
    leaving.ingest(&request(vec![("a", tr[1..].to_vec())]), T0).unwrap();
    leaving.shutdown(T0 + 10 * MS);
    let (reqs, _) = drain_handed_off(&leaving);
    let handed: Vec<OutSpan> = reqs.iter().flat_map(|r| decode(r)).collect();
    // The owner has the root already; the hand-off joins it.
    owner.ingest(&request(vec![("b", tr[..1].to_vec())]), T0 + 20 * MS).unwrap();
    for r in &reqs {
        owner.ingest(r, T0 + 30 * MS).unwrap();
    }
    let s = owner.stats();
    assert_eq!((s.handoff_received_spans, s.handoff_merged_spans), (3, 3));
    owner.tick(T0 + 30 * MS + SEC);
    let (out, units, calls) = drain_released(&owner);
    assert_eq!(calls, 1, "one release");
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].reason, ReleaseReason::Complete);
    assert_eq!(out.len(), 4);
    for s in &out {
        assert!(s.attr(HANDOFF).is_none(), "marker stripped: {s:?}");
        let n = s.span.attributes.iter().filter(|a| a.key.starts_with("consistency.hlc")).count();
        assert!(n <= 2, "stamps replaced, not repeated: {s:?}");
        if let Some(h) = handed.iter().find(|h| h.id() == s.id()) {
            let theirs = h.attr_str("consistency.hlc").unwrap();
            assert_eq!(s.attr_str("consistency.hlc.upstream").as_deref(), Some(theirs.as_str()));
            assert!(s.attr_str("consistency.hlc").unwrap() > theirs, "the owner stamps above the hand-off");
        }
    }
    assert_eq!(owner.stats().handoff_incomplete_traces, 0);
}

#[test]
fn idle_hands_off_once_and_a_returning_trace_is_held_again_then_released_with_findings() {
    let e = Engine::new(cfg(false, true, 1)).unwrap();
    let tr = trace(3);
    // Missing span 1 for good: 2 and 3 are orphans.
    e.ingest(&request(vec![("a", tr[1..].to_vec())]), T0).unwrap();
    e.tick(T0 + 10 * SEC);
    assert!(drain_released(&e).0.is_empty());
    let (reqs, units) = drain_handed_off(&e);
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].reason, ReleaseReason::IdleTimeout);
    // The balancer routes it back here: buffered again, not late.
    for r in &reqs {
        let o = e.ingest(r, T0 + 11 * SEC).unwrap();
        assert_eq!((o.buffered, o.late_forwarded), (3, 0));
    }
    e.tick(T0 + 21 * SEC);
    assert!(drain_handed_off(&e).1.is_empty(), "not handed off twice");
    let (out, units, _) = drain_released(&e);
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].reason, ReleaseReason::IdleTimeout);
    assert_ne!(units[0].findings & FindingKind::MissingParent.bit(), 0);
    assert!(out.iter().all(|s| s.attr(HANDOFF).is_none()));
    assert_eq!(reason_of(&out), Some("idle_timeout".into()));
    let s = e.stats();
    assert_eq!((s.handoff_received_spans, s.handoff_merged_spans, s.handoff_incomplete_traces), (3, 0, 1));
}

fn reason_of(spans: &[OutSpan]) -> Option<String> {
    spans.iter().find_map(|s| s.attr_str("consistency.trace.release_reason"))
}

#[test]
fn max_hops_bounds_how_often_a_span_goes_round() {
    let e = Engine::new(cfg(false, true, 2)).unwrap();
    let tr = trace(4);
    e.ingest(&request(vec![("a", tr[1..2].to_vec())]), T0).unwrap();
    let mut now = T0;
    let mut hops = Vec::new();
    loop {
        now += 10 * SEC;
        e.tick(now);
        let (reqs, _) = drain_handed_off(&e);
        if reqs.is_empty() {
            break;
        }
        for r in &reqs {
            hops.extend(decode(r).iter().map(|s| s.attr_int(HANDOFF).unwrap()));
            e.ingest(r, now).unwrap();
        }
        assert!(hops.len() <= 2, "handed off more than max_hops times: {hops:?}");
    }
    assert_eq!(hops, vec![1, 2]);
    let (out, units, _) = drain_released(&e);
    assert_eq!((out.len(), units[0].reason), (1, ReleaseReason::IdleTimeout));
}

#[test]
fn a_span_that_arrives_at_max_hops_is_released_on_shutdown_not_handed_off() {
    let e = Engine::new(cfg(true, true, 1)).unwrap();
    let tr = trace(5);
    let a = e.ingest(&request(vec![("a", vec![with_hops(tr[1].clone(), 1), tr[2].clone()])]), T0).unwrap();
    assert_eq!(a.buffered, 2);
    // A trace whose spans were handed off before waits in its own right.
    e.ingest(&request(vec![("a", tr[3..].iter().map(|s| with_hops(s.clone(), 1)).collect())]), T0).unwrap();
    e.ingest(&request(vec![("a", trace(6)[1..].to_vec())]), T0).unwrap();
    e.shutdown(T0 + SEC);
    let (reqs, units) = drain_handed_off(&e);
    assert_eq!(units.len(), 1, "only the trace without hops: {units:?}");
    assert!(reqs.iter().flat_map(|r| decode(r)).all(|s| s.trace() == 6));
    let (out, units, _) = drain_released(&e);
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].reason, ReleaseReason::Shutdown);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|s| s.trace() == 5 && s.attr(HANDOFF).is_none()));
    assert_eq!(e.stats().handoff_incomplete_traces, 1);
}

#[test]
fn complete_old_and_pressed_traces_are_released_never_handed_off() {
    let e = Engine::new(cfg(true, true, 1)).unwrap();
    e.ingest(&request(vec![("a", trace(8))]), T0).unwrap();
    e.tick(T0 + SEC);
    // An incomplete trace that keeps receiving spans reaches max_age.
    let tr = trace(9);
    for i in 0..7 {
        e.ingest(&request(vec![("a", vec![span(9, 100 + i, 2, T0 - SEC, T0)])]), T0 + i * 9 * SEC).unwrap();
    }
    let _ = tr;
    e.tick(T0 + 61 * SEC);
    assert!(drain_handed_off(&e).1.is_empty());
    let (_, units, _) = drain_released(&e);
    let reasons: Vec<ReleaseReason> = units.iter().map(|u| u.reason).collect();
    assert_eq!(reasons, vec![ReleaseReason::Complete, ReleaseReason::MaxAge]);
}

#[test]
fn without_handoff_settings_nothing_is_handed_off() {
    let e = Engine::new(cfg(false, false, 1)).unwrap();
    e.ingest(&request(vec![("a", trace(10)[1..].to_vec())]), T0).unwrap();
    e.tick(T0 + 10 * SEC);
    e.ingest(&request(vec![("a", trace(11)[1..].to_vec())]), T0 + 10 * SEC).unwrap();
    e.shutdown(T0 + 11 * SEC);
    assert!(e.drain_handoff(1000).is_none());
    let (_, units, _) = drain_released(&e);
    let reasons: Vec<ReleaseReason> = units.iter().map(|u| u.reason).collect();
    assert_eq!(reasons, vec![ReleaseReason::IdleTimeout, ReleaseReason::Shutdown]);
}

#[test]
fn marker_of_another_type_counts_as_one_hop_and_is_stripped() {
    let e = Engine::new(cfg(true, false, 1)).unwrap();
    let mut s = trace(12)[1].clone();
    s.attributes.push(kv(HANDOFF, "yes"));
    s.attributes.push(int_kv(PROOF, proof(KEY, &s, 1)));
    e.ingest(&request(vec![("a", vec![s])]), T0).unwrap();
    assert_eq!(e.stats().handoff_received_spans, 1);
    e.shutdown(T0);
    assert!(e.drain_handoff(1000).is_none(), "one hop already: released");
    let (out, _, _) = drain_released(&e);
    assert_eq!(out.len(), 1);
    assert!(out[0].attr(HANDOFF).is_none());
}

#[test]
fn a_marker_without_its_proof_is_stripped_taken_as_no_hop_and_counted_untrusted() {
    let e = Engine::new(cfg(true, false, 1)).unwrap();
    let tr = trace(13);
    let forged = |mut s: Span, p: Option<i64>| {
        s.attributes.push(int_kv(HANDOFF, 1));
        if let Some(p) = p {
            s.attributes.push(int_kv(PROOF, p));
        }
        s
    };
    let copied = proof(KEY, &tr[0], 1); // a real proof, of another span
    let spans = vec![
        forged(tr[1].clone(), None),
        forged(tr[2].clone(), Some(proof("another tier's secret", &tr[2], 1))),
        forged(tr[3].clone(), Some(copied)),
    ];
    e.ingest(&request(vec![("a", spans)]), T0).unwrap();
    let s = e.stats();
    assert_eq!((s.handoff_untrusted_spans, s.handoff_received_spans), (3, 0));
    // At max_hops 1 a real marker would keep the trace here; these are no hop at all.
    e.shutdown(T0 + SEC);
    let (reqs, units) = drain_handed_off(&e);
    assert_eq!(units.len(), 1, "handed off, as a trace never handed off is");
    let out: Vec<OutSpan> = reqs.iter().flat_map(|r| decode(r)).collect();
    assert_eq!(out.len(), 3);
    for o in &out {
        assert_eq!(o.attr_int(HANDOFF), Some(1), "one hop, counted from 0: {o:?}");
        assert_eq!(o.attr_int(PROOF), Some(proof(KEY, &o.span, 1)), "a proof of its own: {o:?}");
    }
}

#[test]
fn without_a_key_no_marker_is_honoured() {
    let e = Engine::new(Config { handoff_key: None, ..cfg(false, false, 1) }).unwrap();
    let tr = trace(14);
    e.ingest(&request(vec![("a", vec![with_hops(tr[0].clone(), 3)])]), T0).unwrap();
    let s = e.stats();
    assert_eq!((s.handoff_untrusted_spans, s.handoff_received_spans), (1, 0));
    e.shutdown(T0);
    let (out, _, _) = drain_released(&e);
    assert!(out[0].attr(HANDOFF).is_none() && out[0].attr(PROOF).is_none(), "stripped: {:?}", out[0]);
}

#[test]
fn a_hand_off_between_collectors_with_other_keys_is_not_honoured() {
    let leaving = Engine::new(Config { handoff_key: Some("one tier's secret".into()), ..cfg(true, false, 1) }).unwrap();
    let other = Engine::new(cfg(true, false, 1)).unwrap();
    leaving.ingest(&request(vec![("a", trace(15)[1..].to_vec())]), T0).unwrap();
    leaving.shutdown(T0 + MS);
    for r in &drain_handed_off(&leaving).0 {
        other.ingest(r, T0 + 2 * MS).unwrap();
    }
    let s = other.stats();
    assert_eq!((s.handoff_untrusted_spans, s.handoff_received_spans), (3, 0));
}

/// A fresh directory for a write-ahead log, removed on drop.
struct WalDir(std::path::PathBuf);

impl WalDir {
    fn new(name: &str) -> WalDir {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("tc-handoff-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        WalDir(p)
    }

    fn cfg(&self) -> Config {
        Config { wal_directory: Some(self.0.to_str().unwrap().to_string()), ..cfg(true, false, 1) }
    }
}

impl Drop for WalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn with_a_write_ahead_log_a_hand_off_is_replayed_until_acknowledged() {
    let dir = WalDir::new("ack");
    {
        let e = Engine::new(dir.cfg()).unwrap();
        e.recover(T0);
        e.ingest(&request(vec![("a", trace(13)[1..].to_vec())]), T0).unwrap();
        e.shutdown(T0 + SEC);
        let r = e.drain_handoff(1000).expect("handed off");
        assert_ne!(r.token, 0, "a hand-off is acknowledged like a release");
        // Not acknowledged: the hand-off output never took it.
    }
    {
        let e = Engine::new(dir.cfg()).unwrap();
        let rep = e.recover(T0 + 2 * SEC);
        assert_eq!(rep.spans, 3, "{rep:?}");
        e.shutdown(T0 + 3 * SEC);
        let r = e.drain_handoff(1000).expect("handed off again after the restart");
        assert_eq!(decode(&r.otlp).len(), 3);
        assert!(e.delivered(r.token));
    }
    let e = Engine::new(dir.cfg()).unwrap();
    assert_eq!(e.recover(T0 + 4 * SEC).spans, 0, "acknowledged: nothing to replay");
}

#[test]
fn an_exact_duplicate_travels_with_the_hand_off_and_is_dropped_and_counted_at_the_receiver() {
    let e = Engine::new(cfg(true, false, 1)).unwrap();
    let tr = trace(1);
    // A child sent twice (a client retry) in a trace that waits for its root.
    e.ingest(&request(vec![("a", tr[1..].to_vec())]), T0).unwrap();
    e.ingest(&request(vec![("a", vec![tr[1].clone()])]), T0 + MS).unwrap();
    e.shutdown(T0 + 100 * MS);
    let (reqs, units) = drain_handed_off(&e);
    assert_eq!(units[0].spans, 4, "not final here: duplicates are resolved where the trace leaves");
    assert_eq!(e.stats().duplicates_dropped, 0);
    let receiver = Engine::new(cfg(false, false, 1)).unwrap();
    for r in &reqs {
        receiver.ingest(r, T0 + 200 * MS).unwrap();
    }
    receiver.ingest(&request(vec![("a", vec![tr[0].clone()])]), T0 + 200 * MS).unwrap();
    receiver.tick(T0 + 2 * SEC);
    let (out, _, _) = drain_released(&receiver);
    assert_eq!(out.len(), 4, "root and three distinct children");
    assert_eq!(receiver.stats().duplicates_dropped, 1);
}

