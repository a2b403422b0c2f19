//! Engine tests with an injected clock: every state transition and release reason, memory
//! bounds, late spans, duplicates, HLC stamping, and a property test over random
//! interleavings.

use super::*;
use crate::config::LateSpanPolicy;
use crate::findings::ReleaseReason;
use crate::config::DuplicatePolicy;
use crate::index::SpanRec;
use crate::wire::shift_span_times;
use std::collections::HashMap;
use crate::testutil::*;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use proptest::prelude::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// An arbitrary wall-clock origin (2026-ish) so HLC stamps look real.
const T0: u64 = 1_790_000_000 * SEC;

fn cfg() -> Config {
    Config {
        num_shards: 4,
        quiet_period_ns: (1 * SEC) as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        hlc_restart: RestartStrategy::None,
        ..Config::default()
    }
}

fn drain_all(e: &Engine) -> (Vec<OutSpan>, Vec<ReleasedUnit>, Vec<Vec<OutSpan>>) {
    let mut spans = Vec::new();
    let mut units = Vec::new();
    let mut calls = Vec::new();
    while let Some(r) = e.drain(1_000_000) {
        let d = decode(&r.otlp);
        assert_eq!(d.len() as u64, r.spans);
        spans.extend(d.clone());
        calls.push(d);
        units.extend(r.units);
    }
    (spans, units, calls)
}

fn reason_of(spans: &[OutSpan], trace: u64) -> Option<String> {
    spans.iter().filter(|s| s.trace() == trace).find_map(|s| s.attr_str("consistency.trace.release_reason"))
}

/// Root 1 → children 2, 3 → grandchild 4 (under 2), all of trace `t`, inside one second.
fn complete_trace(t: u64) -> Vec<Span> {
    let b = T0 - 5 * SEC;
    vec![
        span(t, 1, 0, b, b + 900 * MS),
        span(t, 2, 1, b + 10 * MS, b + 500 * MS),
        span(t, 3, 1, b + 20 * MS, b + 600 * MS),
        span(t, 4, 2, b + 30 * MS, b + 400 * MS),
    ]
}

#[test]
fn releases_trace_as_soon_as_root_and_all_parents_arrived_and_quiet() {
    let e = Engine::new(cfg()).unwrap();
    let tr = complete_trace(1);
    e.ingest(&request(vec![("a", tr[..2].to_vec())]), T0).unwrap();
    e.ingest(&request(vec![("b", tr[2..].to_vec())]), T0 + 100 * MS).unwrap();
    // Quiet period not over yet (counted from the last span).
    e.tick(T0 + 1_099 * MS);
    assert!(e.drain(1000).is_none());
    e.tick(T0 + 1_100 * MS);
    let (spans, units, calls) = drain_all(&e);
    assert_eq!(calls.len(), 1, "one release, one call");
    assert_eq!(spans.len(), 4);
    assert_eq!(units, vec![ReleasedUnit { reason: ReleaseReason::Complete, spans: 4, age_ns: 1_100 * MS, findings: units[0].findings }]);
    assert_eq!(reason_of(&spans, 1).as_deref(), Some("complete"));
    let root = spans.iter().find(|s| s.id() == 1).unwrap();
    assert_eq!(root.attr_int("consistency.trace.span_count"), Some(4));
    assert_eq!(e.stats().buffered_spans, 0);
    assert_eq!(e.stats().buffered_traces, 0);
}

#[test]
fn a_new_span_restarts_the_quiet_period() {
    let e = Engine::new(cfg()).unwrap();
    let tr = complete_trace(1);
    e.ingest(&request(vec![("a", tr[..3].to_vec())]), T0).unwrap();
    e.ingest(&request(vec![("a", tr[3..].to_vec())]), T0 + 900 * MS).unwrap();
    e.tick(T0 + 1_000 * MS);
    assert!(e.drain(1000).is_none());
    e.tick(T0 + 1_900 * MS);
    assert_eq!(drain_all(&e).0.len(), 4);
}

#[test]
fn incomplete_trace_waits_for_idle_timeout() {
    let e = Engine::new(cfg()).unwrap();
    let mut tr = complete_trace(1);
    tr.remove(1); // span 2 missing: span 4 is an orphan
    e.ingest(&request(vec![("a", tr)]), T0).unwrap();
    e.tick(T0 + 9_999 * MS);
    assert!(e.drain(1000).is_none());
    e.tick(T0 + 10 * SEC);
    let (spans, units, _) = drain_all(&e);
    assert_eq!(units[0].reason, ReleaseReason::IdleTimeout);
    assert_eq!(reason_of(&spans, 1).as_deref(), Some("idle_timeout"));
}

#[test]
fn trace_without_root_and_two_roots_are_incomplete() {
    let e = Engine::new(cfg()).unwrap();
    let b = T0 - SEC;
    e.ingest(&request(vec![("a", vec![span(1, 2, 1, b, b + 1), span(2, 1, 0, b, b + 5), span(2, 2, 0, b, b + 5)])]), T0).unwrap();
    e.tick(T0 + 2 * SEC);
    assert!(e.drain(1000).is_none(), "neither is complete");
    e.tick(T0 + 10 * SEC);
    let (_, units, _) = drain_all(&e);
    assert!(units.iter().all(|u| u.reason == ReleaseReason::IdleTimeout));
    assert_eq!(units.len(), 2);
}

#[test]
fn max_age_bounds_a_trace_that_never_goes_quiet() {
    let e = Engine::new(Config { max_age_ns: (5 * SEC) as i64, quiet_period_ns: SEC as i64, ..cfg() }).unwrap();
    let b = T0 - SEC;
    for i in 0..10u64 {
        // An orphan keeps arriving every 600 ms: never quiet for 1 s, never complete.
        e.ingest(&request(vec![("a", vec![span(1, 100 + i, 99, b, b + 1)])]), T0 + i * 600 * MS).unwrap();
        e.tick(T0 + i * 600 * MS + 1);
    }
    let (_, units, _) = drain_all(&e);
    assert_eq!(units[0].reason, ReleaseReason::MaxAge);
    assert_eq!(units[0].spans, 10, "released at the first tick past 5 s, with the 10 spans seen by then");
}

#[test]
fn span_limit_releases_a_giant_trace_and_later_spans_are_late() {
    let e = Engine::new(Config { max_spans_per_trace: 10, ..cfg() }).unwrap();
    let b = T0 - SEC;
    let spans: Vec<Span> = (1..=12).map(|i| span(1, i, if i == 1 { 0 } else { 1 }, b, b + 10)).collect();
    e.ingest(&request(vec![("a", spans[..8].to_vec())]), T0).unwrap();
    assert!(e.drain(1000).is_none());
    let r = e.ingest(&request(vec![("a", spans[8..10].to_vec())]), T0).unwrap();
    assert_eq!(r.ready_spans, 10);
    let r = e.ingest(&request(vec![("a", spans[10..].to_vec())]), T0).unwrap();
    assert_eq!(r.late_forwarded, 2);
    let (out, units, _) = drain_all(&e);
    assert_eq!(units[0].reason, ReleaseReason::SpanLimit);
    assert_eq!(units[1].reason, ReleaseReason::Late);
    assert_eq!(out.iter().filter(|s| s.attr("consistency.span.late").is_some()).count(), 2);
}

#[test]
fn memory_pressure_releases_oldest_first_and_never_deletes() {
    // One shard so the limit applies exactly.
    let e = Engine::new(Config { num_shards: 1, max_buffered_spans: 10, max_spans_per_trace: 10, ..cfg() }).unwrap();
    let b = T0 - SEC;
    for t in 1..=5u64 {
        let spans: Vec<Span> = (1..=3).map(|i| span(t, i, 0, b, b + 10)).collect();
        e.ingest(&request(vec![("a", spans)]), T0 + t).unwrap();
        assert!(e.stats().buffered_spans <= 10, "bound holds after every ingest");
    }
    let (out, units, _) = drain_all(&e);
    let evicted: Vec<u64> = units.iter().map(|u| u.spans as u64).collect();
    assert_eq!(evicted, vec![3, 3], "traces 1 and 2 released early");
    assert!(units.iter().all(|u| u.reason == ReleaseReason::MemoryPressure));
    let mut traces: Vec<u64> = out.iter().map(OutSpan::trace).collect();
    traces.dedup();
    assert_eq!(traces, vec![1, 2]);
    e.shutdown(T0 + SEC);
    assert_eq!(drain_all(&e).0.len(), 9, "the rest leaves at shutdown");
}

#[test]
fn byte_limit_bounds_all_held_memory_and_pushes_back_while_released_data_cannot_leave() {
    const BOUND: u64 = 4_000;
    let e = Engine::new(Config { num_shards: 1, max_buffered_bytes: BOUND as i64, ..cfg() }).unwrap();
    let b = T0 - SEC;
    let mut throttled = 0;
    for t in 1..=40u64 {
        match e.ingest(&request(vec![("a", vec![span(t, 1, 0, b, b + 10)])]), T0) {
            Ok(_) => {
                let s = e.stats();
                assert!(s.buffered_bytes + s.memory_group_bytes + s.memory_late_cache_bytes <= BOUND, "{s:?}");
            }
            Err(IngestError::Full { .. }) => throttled += 1,
            Err(other) => panic!("{other}"),
        }
        let s = e.stats();
        assert!(s.memory_total_bytes <= 2 * BOUND + 1_000, "everything held stays within twice the bound: {s:?}");
    }
    assert!(throttled > 0, "with nothing drained, ingest pushes back");
    assert_eq!(e.stats().batches_throttled, throttled);
    let released = drain_all(&e).0.len() as u64;
    assert_eq!(released + throttled, 40 - e.stats().buffered_spans, "what was accepted and released left");
    e.ingest(&request(vec![("a", vec![span(99, 1, 0, b, b + 10)])]), T0).expect("accepted again once drained");
    e.shutdown(T0);
    drain_all(&e);
    let s = e.stats();
    assert_eq!((s.memory_span_bytes, s.memory_index_bytes, s.ready_bytes, s.memory_group_bytes), (0, 0, 0, 0), "every counted byte is given back: {s:?}");
    assert!(s.memory_trace_bytes < 4096, "only the shard's (shrunk) tables remain: {s:?}");
    assert_eq!(s.memory_total_bytes, s.memory_trace_bytes + s.memory_late_cache_bytes + s.memory_learned_bytes);
}

#[test]
fn late_spans_are_forwarded_marked_or_dropped_and_counted() {
    for policy in [LateSpanPolicy::Forward, LateSpanPolicy::Drop] {
        let e = Engine::new(Config { late_span_policy: policy, ..cfg() }).unwrap();
        e.ingest(&request(vec![("a", complete_trace(1))]), T0).unwrap();
        e.tick(T0 + 2 * SEC);
        drain_all(&e);
        let b = T0 - SEC;
        let r = e.ingest(&request(vec![("a", vec![span(1, 9, 1, b, b + 1)])]), T0 + 3 * SEC).unwrap();
        let (out, units, _) = drain_all(&e);
        match policy {
            LateSpanPolicy::Forward => {
                assert_eq!(r.late_forwarded, 1);
                assert_eq!(units[0].reason, ReleaseReason::Late);
                assert_eq!(out[0].attr("consistency.span.late"), Some(&opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(true)));
                assert_eq!(e.stats().late_forwarded, 1);
            }
            LateSpanPolicy::Drop => {
                assert_eq!(r.late_dropped, 1);
                assert!(out.is_empty());
                assert_eq!(e.stats().late_dropped, 1);
            }
        }
    }
}

#[test]
fn late_cache_is_bounded() {
    let e = Engine::new(Config { num_shards: 1, late_cache_size: 2, ..cfg() }).unwrap();
    let b = T0 - SEC;
    for t in 1..=3u64 {
        e.ingest(&request(vec![("a", vec![span(t, 1, 0, b, b + 1)])]), T0).unwrap();
    }
    e.tick(T0 + 2 * SEC);
    drain_all(&e);
    // Trace 1 fell out of the 2-entry cache: a new span starts a new trace.
    let r = e.ingest(&request(vec![("a", vec![span(1, 2, 1, b, b + 1)])]), T0 + 3 * SEC).unwrap();
    assert_eq!((r.buffered, r.late_forwarded), (1, 0));
    let r = e.ingest(&request(vec![("a", vec![span(3, 2, 1, b, b + 1)])]), T0 + 3 * SEC).unwrap();
    assert_eq!((r.buffered, r.late_forwarded), (0, 1));
}

#[test]
fn an_exact_resend_after_release_is_a_duplicate_and_a_new_span_is_late() {
    let e = Engine::new(cfg()).unwrap();
    let b = T0 - SEC;
    let trace = complete_trace(1);
    e.ingest(&request(vec![("a", trace.clone())]), T0).unwrap();
    e.tick(T0 + 2 * SEC);
    assert_eq!(drain_all(&e).0.len(), trace.len());
    // The client retries the whole batch after the release (its ack was lost), with a new
    // span of the trace beside it; an upstream tier's stamp on a re-send does not matter.
    let mut resent = trace.clone();
    resent[0].attributes.push(kv(crate::attrs::ATTR_HLC, "01790000000000000000.0000000001"));
    resent.push(span(1, 9, 1, b, b + 1));
    let r = e.ingest(&request(vec![("a", resent)]), T0 + 3 * SEC).unwrap();
    assert_eq!(r.resent, trace.len() as u64, "the released spans are recognised");
    assert_eq!(r.late_forwarded, 1, "the new span is late");
    let (out, units, _) = drain_all(&e);
    assert_eq!(out.len(), 1);
    assert_eq!(units[0].reason, ReleaseReason::Late);
    assert_eq!(e.stats().duplicates_dropped, trace.len() as u64);
    // A changed span with a released span ID is not a re-send: it is forwarded late.
    let mut changed = trace[1].clone();
    changed.name = "renamed".into();
    let r = e.ingest(&request(vec![("a", vec![changed])]), T0 + 4 * SEC).unwrap();
    assert_eq!((r.resent, r.late_forwarded), (0, 1));
}

#[test]
fn the_late_cache_is_bounded_by_bytes_too_and_counted() {
    // A bound of 64 KiB gives the late cache 8 KiB: 100-span traces (800 bytes of hashes
    // each) push the oldest out long before the count of 100,000 IDs is reached.
    let e = Engine::new(Config { num_shards: 1, max_buffered_bytes: 64 << 10, ..cfg() }).unwrap();
    let b = T0 - SEC;
    for t in 1..=40u64 {
        let spans: Vec<Span> = (1..=100).map(|i| span(t, i, if i == 1 { 0 } else { 1 }, b, b + 1)).collect();
        e.ingest(&request(vec![("a", spans)]), T0).unwrap();
        e.tick(T0 + 2 * SEC);
        drain_all(&e);
        let s = e.stats();
        assert!(s.memory_late_cache_bytes <= 16 << 10, "{s:?}");
    }
    // Trace 1 was forgotten: its span starts a new trace; trace 40 is remembered.
    let r = e.ingest(&request(vec![("a", vec![span(1, 500, 1, b, b + 1)])]), T0 + 3 * SEC).unwrap();
    assert_eq!((r.buffered, r.late_forwarded), (1, 0));
    let r = e.ingest(&request(vec![("a", vec![span(40, 500, 1, b, b + 1)])]), T0 + 3 * SEC).unwrap();
    assert_eq!((r.buffered, r.late_forwarded), (0, 1));
}

#[test]
fn exact_duplicates_are_dropped_and_conflicts_kept() {
    let e = Engine::new(cfg()).unwrap();
    let tr = complete_trace(1);
    e.ingest(&request(vec![("a", tr.clone())]), T0).unwrap();
    // A client retry of span 3, and a different span 4 with the same id.
    let mut other = tr[3].clone();
    other.name = "different".into();
    e.ingest(&request(vec![("a", vec![tr[2].clone(), other])]), T0 + 10 * MS).unwrap();
    e.tick(T0 + 11 * SEC);
    let (out, _, _) = drain_all(&e);
    assert_eq!(out.len(), 5, "4 spans + the conflicting one; the retry is gone");
    assert_eq!(e.stats().duplicates_dropped, 1);
    assert_eq!(out.iter().filter(|s| s.id() == 4).count(), 2);
}

#[test]
fn a_retry_forwarded_by_an_upstream_tier_is_still_an_exact_duplicate() {
    let e = Engine::new(cfg()).unwrap();
    let tr = complete_trace(1);
    let mut first = tr[3].clone();
    first.attributes.push(kv("consistency.hlc", &Stamp { wall: T0 - SEC, logical: 1 }.to_string()));
    let mut retry = tr[3].clone();
    retry.attributes.push(kv("consistency.hlc", &Stamp { wall: T0 - SEC / 2, logical: 0 }.to_string()));
    retry.attributes.push(kv("consistency.span.late", "true"));
    e.ingest(&request(vec![("a", vec![tr[0].clone(), tr[1].clone(), tr[2].clone(), first])]), T0).unwrap();
    e.ingest(&request(vec![("a", vec![retry])]), T0).unwrap();
    e.shutdown(T0);
    let (out, _, _) = drain_all(&e);
    assert_eq!(out.len(), 4);
    assert_eq!(e.stats().duplicates_dropped, 1);
    let root = out.iter().find(|s| s.id() == 1).unwrap();
    assert_eq!(root.attr_str("consistency.trace.status").as_deref(), Some("consistent"));
}

#[test]
fn keep_latest_policy_keeps_one_of_conflicting_spans() {
    let e = Engine::new(Config { duplicate_policy: DuplicatePolicy::KeepLatest, ..cfg() }).unwrap();
    let tr = complete_trace(1);
    e.ingest(&request(vec![("a", tr.clone())]), T0).unwrap();
    let mut other = tr[3].clone();
    other.name = "newer".into();
    e.ingest(&request(vec![("a", vec![other])]), T0 + 10 * MS).unwrap();
    e.shutdown(T0 + 20 * MS);
    let (out, _, _) = drain_all(&e);
    let fours: Vec<_> = out.iter().filter(|s| s.id() == 4).collect();
    assert_eq!(e.stats().conflicts_dropped, 1);
    assert_eq!(fours.len(), 1);
    assert_eq!(fours[0].span.name, "newer");
    assert!(fours[0].attr_strs("consistency.span.findings").contains(&"conflicting_span_id".to_string()));
}

#[test]
fn findings_are_written_on_spans_and_summarised_on_the_root() {
    let e = Engine::new(cfg()).unwrap();
    let mut tr = complete_trace(1);
    tr.remove(1); // span 2 missing: span 4 is an orphan
    e.ingest(&request(vec![("a", tr)]), T0).unwrap();
    e.ingest(&request(vec![("a", complete_trace(2))]), T0).unwrap();
    e.shutdown(T0);
    let mut findings = Vec::new();
    let mut out = Vec::new();
    while let Some(r) = e.drain(1000) {
        findings.extend(r.findings);
        out.extend(decode(&r.otlp));
    }
    let root1 = out.iter().find(|s| s.trace() == 1 && s.id() == 1).unwrap();
    assert_eq!(root1.attr_str("consistency.trace.status").as_deref(), Some("inconsistent"));
    assert_eq!(root1.attr_strs("consistency.trace.findings"), vec!["missing_parent"]);
    assert_eq!(root1.attr_strs("consistency.trace.missing_parent_ids"), vec!["0000000000000002"]);
    let orphan = out.iter().find(|s| s.trace() == 1 && s.id() == 4).unwrap();
    assert_eq!(orphan.attr_strs("consistency.span.findings"), vec!["missing_parent"]);
    let root2 = out.iter().find(|s| s.trace() == 2 && s.id() == 1).unwrap();
    assert_eq!(root2.attr_str("consistency.trace.status").as_deref(), Some("consistent"));
    assert!(root2.attr("consistency.trace.findings").is_none());
    assert_eq!(findings, vec![FindingCount { kind: FindingKind::MissingParent, service: "a".into(), count: 1 }]);
}

#[test]
fn metrics_only_mode_writes_no_finding_attributes() {
    let e = Engine::new(Config { write_attributes: false, ..cfg() }).unwrap();
    let mut tr = complete_trace(1);
    tr.remove(1);
    e.ingest(&request(vec![("a", tr)]), T0).unwrap();
    e.shutdown(T0);
    let r = e.drain(1000).unwrap();
    assert_eq!(r.findings.len(), 1, "still counted");
    for s in decode(&r.otlp) {
        assert!(s.span.attributes.iter().all(|a| a.key == "k" || a.key == "consistency.hlc"), "{:?}", s.span.attributes);
    }
}

#[test]
fn a_10_000_span_chain_is_assembled_and_checked_in_linear_time() {
    let e = Engine::new(Config { max_spans_per_trace: 20_000, ..cfg() }).unwrap();
    let b = T0 - SEC;
    let chain: Vec<Span> = (1..=10_000u64).map(|i| span(7, i, i - 1, b + i, b + 30_000 - i)).collect();
    let t = std::time::Instant::now();
    for part in chain.chunks(1_000) {
        e.ingest(&request(vec![("a", part.to_vec())]), T0).unwrap();
    }
    e.tick(T0 + 2 * SEC);
    let (out, units, _) = drain_all(&e);
    assert_eq!(units[0].reason, ReleaseReason::Complete);
    assert_eq!(out.len(), 10_000);
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "took {:?}", t.elapsed());
}

#[test]
fn shutdown_releases_everything_and_later_ingests_pass_straight_through() {
    let e = Engine::new(cfg()).unwrap();
    for t in 1..=5 {
        e.ingest(&request(vec![("a", complete_trace(t)[..2].to_vec())]), T0).unwrap();
    }
    e.shutdown(T0 + MS);
    let (out, units, _) = drain_all(&e);
    assert_eq!(out.len(), 10);
    assert!(units.iter().all(|u| u.reason == ReleaseReason::Shutdown));
    e.ingest(&request(vec![("a", complete_trace(9))]), T0 + 2 * MS).unwrap();
    let (out, units, _) = drain_all(&e);
    assert_eq!((out.len(), units[0].reason), (4, ReleaseReason::Shutdown));
    assert_eq!(e.stats().buffered_spans, 0);
}

#[test]
fn spans_keep_their_resource_and_scope_and_content() {
    let e = Engine::new(Config { hlc_enabled: false, write_attributes: false, ..cfg() }).unwrap();
    let tr = complete_trace(1);
    let input = request(vec![("a", tr[..2].to_vec()), ("b", tr[2..].to_vec())]);
    e.ingest(&input, T0).unwrap();
    e.shutdown(T0);
    let (out, _, _) = drain_all(&e);
    let mut got: Vec<(String, Span)> = out.into_iter().map(|o| (o.service, o.span)).collect();
    got.sort_by_key(|(_, s)| s.span_id.clone());
    let want: Vec<(String, Span)> = tr.iter().enumerate().map(|(i, s)| (if i < 2 { "a" } else { "b" }.to_string(), s.clone())).collect();
    assert_eq!(got, want, "byte-for-byte the same spans when nothing is written");
}

#[test]
fn every_span_gets_an_hlc_stamp_above_upstream_and_end_time() {
    let e = Engine::new(cfg()).unwrap();
    let mut s = span(1, 1, 0, T0 - SEC, T0 + 100 * MS); // ends 100 ms in the future: allowed
    let upstream = Stamp { wall: T0 + 200 * MS, logical: 7 };
    s.attributes.push(kv("consistency.hlc", &upstream.to_string()));
    let far = span(1, 2, 1, T0 - SEC, T0 + 10 * SEC); // 10 s ahead: refused
    e.ingest(&request(vec![("a", vec![s, far])]), T0).unwrap();
    e.shutdown(T0);
    let (out, _, _) = drain_all(&e);
    let get = |id: u64| out.iter().find(|o| o.id() == id).unwrap();
    let s1 = get(1);
    let stamp1 = Stamp::parse(s1.attr_str("consistency.hlc").unwrap().as_bytes()).unwrap();
    assert!(stamp1 > upstream);
    assert_eq!(s1.attr_str("consistency.hlc.upstream"), Some(upstream.to_string()));
    assert_eq!(s1.span.attributes.iter().filter(|a| a.key == "consistency.hlc").count(), 1, "old stamp replaced");
    let s2 = get(2);
    let stamp2 = Stamp::parse(s2.attr_str("consistency.hlc").unwrap().as_bytes()).unwrap();
    assert!(stamp2 > stamp1);
    assert!(stamp2.wall < T0 + 10 * SEC, "the clock did not jump");
    assert!(s2.attr_strs("consistency.span.findings").contains(&"future_timestamp".to_string()));
    assert_eq!(e.stats().future_timestamps, 1);
    assert_eq!(e.stats().hlc_refusals, 1);
}

#[test]
fn upstream_stamp_too_far_ahead_is_refused_with_finding() {
    let e = Engine::new(cfg()).unwrap();
    let mut s = span(1, 1, 0, T0 - SEC, T0 - SEC + 10);
    s.attributes.push(kv("consistency.hlc", &Stamp { wall: T0 + 5 * SEC, logical: 0 }.to_string()));
    e.ingest(&request(vec![("a", vec![s])]), T0).unwrap();
    e.shutdown(T0);
    let (out, _, _) = drain_all(&e);
    assert!(out[0].attr_strs("consistency.span.findings").contains(&"hlc_offset_exceeded".to_string()));
    assert!(e.hlc_last().unwrap().wall <= T0);
}

#[test]
fn invalid_ids_are_forwarded_at_once_with_a_finding() {
    let e = Engine::new(cfg()).unwrap();
    let mut zero_trace = span(1, 1, 0, T0, T0 + 1);
    zero_trace.trace_id = vec![0; 16];
    let mut zero_span = span(2, 1, 0, T0, T0 + 1);
    zero_span.span_id = vec![0; 8];
    let mut short = span(3, 1, 0, T0, T0 + 1);
    short.trace_id = vec![1, 2, 3];
    // An absent trace ID: how pdata encodes a zero one.
    let mut absent = span(5, 1, 0, T0, T0 + 1);
    absent.trace_id = vec![];
    let r = e.ingest(&request(vec![("a", vec![zero_trace, zero_span, short, absent, span(4, 1, 0, T0, T0 + 1)])]), T0).unwrap();
    assert_eq!((r.unassembled, r.buffered), (4, 1));
    let (out, units, _) = drain_all(&e);
    assert_eq!(units[0].reason, ReleaseReason::Unassembled);
    assert_eq!(out.len(), 4);
    let originals: Vec<_> = out.iter().filter_map(|o| o.attr_str("consistency.span.original_trace_id")).collect();
    assert_eq!(originals, vec!["010203".to_string()], "only a wrong-length ID has an original to report; zero and absent ones have none");
    let short_out = out.iter().find(|o| o.attr_str("consistency.span.original_trace_id").is_some()).unwrap();
    assert_eq!(short_out.attr_str("consistency.span.original_trace_id").as_deref(), Some("010203"));
    assert!(short_out.span.trace_id.is_empty(), "the wrong-length ID is removed so pdata accepts the span");
    for o in &out {
        let f = o.attr_strs("consistency.span.findings");
        assert!(f.contains(&"invalid_trace_id".to_string()) || f.contains(&"invalid_span_id".to_string()), "{f:?}");
    }
}

#[test]
fn garbage_and_empty_input_are_refused_with_nothing_kept() {
    let e = Engine::new(cfg()).unwrap();
    assert_eq!(e.ingest(&[], T0), Err(IngestError::Empty));
    assert_eq!(e.ingest(&request(vec![]), T0), Err(IngestError::Empty));
    assert_eq!(e.ingest(&request(vec![("a", vec![])]), T0), Err(IngestError::NoSpans));
    assert!(matches!(e.ingest(b"\x0a\xff\xff\xff\x0f garbage", T0), Err(IngestError::Malformed(_))));
    // A valid first span followed by garbage: nothing of the batch is kept.
    let mut bad = request(vec![("a", complete_trace(1))]);
    bad.extend_from_slice(&[0x0a, 0x7f]);
    assert!(e.ingest(&bad, T0).is_err());
    assert_eq!(e.stats().buffered_spans, 0);
    assert_eq!(e.stats().batches_refused, 5);
}

#[test]
fn skew_correction_shifts_times_in_place() {
    let mut span_bytes = {
        use prost::Message;
        let mut s = span(1, 2, 1, 1_000, 2_000);
        s.events.push(opentelemetry_proto::tonic::trace::v1::span::Event { time_unix_nano: 1_500, name: "e".into(), ..Default::default() });
        s.encode_to_vec()
    };
    shift_span_times(&mut span_bytes, -300);
    let s = Span::decode(&span_bytes[..]).unwrap();
    assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano, s.events[0].time_unix_nano), (700, 1_700, 1_200));
}

#[test]
fn concurrent_ingest_from_many_threads_loses_nothing() {
    let e = std::sync::Arc::new(Engine::new(cfg()).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|th| {
            let e = std::sync::Arc::clone(&e);
            std::thread::spawn(move || {
                for t in 0..50u64 {
                    e.ingest(&request(vec![("a", complete_trace(th * 1000 + t))]), T0).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    e.tick(T0 + 2 * SEC);
    let (out, units, _) = drain_all(&e);
    assert_eq!(out.len(), 4 * 50 * 4);
    assert_eq!(units.len(), 200);
    let mut stamps: Vec<String> = out.iter().map(|o| o.attr_str("consistency.hlc").unwrap()).collect();
    stamps.sort();
    stamps.dedup();
    assert_eq!(stamps.len(), 800, "stamps are unique");
}

#[derive(Debug, Clone)]
enum Op {
    Ingest { trace: u64, span: u64, parent: u64, dup: bool },
    Tick(u64),
    Drain(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..12, 1u64..8, 0u64..8, any::<bool>()).prop_map(|(trace, span, parent, dup)| Op::Ingest { trace, span, parent, dup }),
        2 => (1u64..3_000).prop_map(Op::Tick),
        1 => (1u64..20).prop_map(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Under random interleavings of ingest, ticks, drains and a final shutdown, every span
    /// ingested leaves exactly once (exact duplicates aside), each trace's spans leave in one
    /// unit unless late, and the buffer bounds hold after every step.
    #[test]
    fn every_span_is_released_exactly_once_and_bounds_hold(ops in proptest::collection::vec(op(), 1..120), shards in 1u32..4) {
        let max_spans = 20u64;
        let e = Engine::new(Config {
            num_shards: shards,
            max_buffered_spans: max_spans as i64,
            max_spans_per_trace: 6,
            quiet_period_ns: (200 * MS) as i64,
            idle_timeout_ns: (1_000 * MS) as i64,
            max_age_ns: (3_000 * MS) as i64,
            late_cache_size: 4,
            ..cfg()
        }).unwrap();
        let per_shard = max_spans.div_ceil(u64::from(shards));
        let mut now = T0;
        let mut sent: HashMap<(u64, u64, String), u64> = HashMap::new();
        let mut out: Vec<OutSpan> = Vec::new();
        let mut seq = 0u64;
        let mut last: Option<Span> = None;
        for op in ops {
            match op {
                Op::Ingest { trace, span: s, parent, dup } => {
                    let sp = match (&last, dup) {
                        (Some(prev), true) => prev.clone(),
                        _ => {
                            seq += 1;
                            let mut sp = span(trace, s, if parent == s { 0 } else { parent }, T0 - SEC, T0 - SEC + seq);
                            sp.name = format!("n{seq}");
                            sp
                        }
                    };
                    last = Some(sp.clone());
                    let key = (u64::from_be_bytes(sp.trace_id[8..].try_into().unwrap()), u64::from_be_bytes(sp.span_id[..].try_into().unwrap()), sp.name.clone());
                    *sent.entry(key).or_default() += 1;
                    e.ingest(&request(vec![("a", vec![sp])]), now).unwrap();
                }
                Op::Tick(ms) => { now += ms * MS; e.tick(now); }
                Op::Drain(n) => { while let Some(r) = e.drain(n) { out.extend(decode(&r.otlp)); } }
            }
            let st = e.stats();
            prop_assert!(st.buffered_spans <= per_shard * u64::from(shards));
        }
        e.shutdown(now);
        while let Some(r) = e.drain(7) { out.extend(decode(&r.otlp)); }
        prop_assert_eq!(e.stats().buffered_spans, 0);
        let mut got: HashMap<(u64, u64, String), u64> = HashMap::new();
        for o in &out {
            *got.entry((o.trace(), o.id(), o.span.name.clone())).or_default() += 1;
        }
        // Each distinct span arrives at least once and at most as often as it was sent; the
        // difference is exact duplicates dropped (or duplicates split across a release).
        let mut dropped = 0;
        for (k, n) in &sent {
            let g = got.get(k).copied().unwrap_or(0);
            prop_assert!(g >= 1 && g <= *n, "{:?}: sent {} got {}", k, n, g);
            dropped += n - g;
        }
        prop_assert_eq!(got.len(), sent.len());
        prop_assert_eq!(dropped, e.stats().duplicates_dropped);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Hostile bytes never panic: random input, and valid requests with bytes flipped,
    /// truncated or appended, are either refused whole or accepted; whatever is accepted
    /// leaves as output that prost decodes.
    #[test]
    fn hostile_bytes_never_panic_and_accepted_output_always_decodes(
        random in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let e = Engine::new(cfg()).unwrap();
        let _ = e.ingest(&random, T0);
        let mut valid = request(vec![("a", complete_trace(1)), ("b", complete_trace(2))]);
        for (pos, b) in flips {
            let n = valid.len();
            valid[pos % n] ^= b;
        }
        let cut = cut % (valid.len() + 1);
        let input = &valid[..cut];
        // prost is the oracle when it accepts the input; otherwise (e.g. a flipped byte made
        // a string invalid UTF-8, which pdata accepts) the output must still be what pdata
        // decodes, checked structurally.
        let prost_ok = {
            use prost::Message as _;
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(input).is_ok()
        };
        let accepted = e.ingest(input, T0).is_ok();
        e.shutdown(T0 + SEC);
        let mut spans = 0;
        while let Some(r) = e.drain(3) {
            let n = structural_span_count(&r.otlp).map_err(|err| TestCaseError::fail(err))?;
            if prost_ok {
                prop_assert_eq!(decode(&r.otlp).len() as u64, n);
            }
            prop_assert_eq!(r.spans, n);
            spans += n;
        }
        let st = e.stats();
        prop_assert_eq!(spans + st.duplicates_dropped + st.late_dropped, st.spans_received);
        if !accepted {
            prop_assert!(st.batches_refused >= 1);
        }
    }
}

#[test]
fn span_index_record_stays_compact() {
    // Per buffered span the engine pays this plus the span's own bytes.
    let size = std::mem::size_of::<SpanRec>();
    println!("SpanRec = {size} bytes");
    assert!(size <= 80, "SpanRec grew to {size} bytes");
}

// Regression tests for divergences from the collector's decoder (pdata) found by fuzzing
// (fuzz/, FUZZING.md "Bugs found"): each asserts the pdata-parity behaviour.

/// `bytes` as length-delimited field `n`.
fn fuzz_found_field(n: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    crate::wire::put_bytes_field(&mut v, u32::from(n), bytes);
    v
}

/// A request of one ResourceSpans: one scope with one span carrying `span_tail` appended,
/// `scope_tail` appended to the ScopeSpans and `resource_tail` to the ResourceSpans.
fn fuzz_found_request(span_tail: &[u8], scope_tail: &[u8], resource_tail: &[u8]) -> Vec<u8> {
    let mut sp = span(1, 1, 0, T0 - SEC, T0).encode_to_vec();
    sp.extend_from_slice(span_tail);
    let mut ss = fuzz_found_field(2, &sp);
    ss.extend_from_slice(scope_tail);
    let mut rs = fuzz_found_field(2, &ss);
    rs.extend_from_slice(resource_tail);
    fuzz_found_field(1, &rs)
}

/// B1: `ResourceSpans.schema_url` / `ScopeSpans.schema_url` (field 3) with a varint wire type,
/// and a malformed `ResourceSpans.deprecated_scope_spans` (field 1000): pdata refuses the
/// batch; the engine accepts it and copies the field into every release, which pdata then
/// cannot decode.
#[test]
fn fuzz_found_malformed_schema_url_and_deprecated_scope_spans_are_refused() {
    let cases = [
        ("ResourceSpans.schema_url as varint", fuzz_found_request(&[], &[], &[0x18, 0x01])),
        ("ScopeSpans.schema_url as varint", fuzz_found_request(&[], &[0x18, 0x01], &[])),
        ("ResourceSpans field 1000 truncated", fuzz_found_request(&[], &[], &[0xc2, 0x3e, 0x02, 0x0a, 0x05])),
    ];
    for (what, b) in cases {
        let e = Engine::new(cfg()).unwrap();
        assert!(matches!(e.ingest(&b, T0), Err(IngestError::Malformed(_))), "{what}: accepted");
    }
}

/// B2: `Status` field 1 (reserved, unknown to pdata) with a non-varint wire type: pdata skips
/// it and accepts the batch; the engine refuses it whole.
#[test]
fn fuzz_found_fields_pdata_skips_are_accepted() {
    let cases = [
        ("Status field 1 as bytes", fuzz_found_request(&[0x7a, 0x02, 0x0a, 0x00], &[], &[])),
    ];
    for (what, b) in cases {
        let e = Engine::new(cfg()).unwrap();
        assert!(e.ingest(&b, T0).is_ok(), "{what}: refused");
    }
    // Spans in `deprecated_scope_spans` (ResourceSpans field 1000), which pdata reads as
    // scope spans: accepted, and released as ordinary scope spans.
    let sp = span(1, 1, 0, T0 - SEC, T0).encode_to_vec();
    let ss = fuzz_found_field(2, &sp);
    let mut rs = Vec::new();
    crate::wire::put_bytes_field(&mut rs, 1000, &ss);
    let b = fuzz_found_field(1, &rs);
    let e = Engine::new(cfg()).unwrap();
    assert_eq!(e.ingest(&b, T0).map(|r| r.buffered), Ok(1), "spans in field 1000 are buffered");
    e.shutdown(T0);
    assert_eq!(drain_all(&e).0.len(), 1, "and released, decodable");
}

#[test]
fn the_late_cache_gives_way_down_to_zero_entries_so_a_small_batch_is_accepted() {
    // 64 shards share a 1 MiB bound: a per-shard floor of one 3,000-span trace's hashes
    // (24 KB each) would hold 1.5 MiB that no release can free, refusing every batch.
    const BOUND: i64 = 1 << 20;
    let e = Engine::new(Config { num_shards: 64, max_buffered_bytes: BOUND, max_buffered_spans: 100_000, ..cfg() }).unwrap();
    let b = T0 - SEC;
    let mut now = T0;
    for t in 1..=200u64 {
        let spans: Vec<Span> = (1..=3000).map(|i| span(t, i, if i == 1 { 0 } else { 1 }, b, b + 1)).collect();
        // Refusals while released data waits are fine; what is refused is retried.
        let _ = e.ingest(&request(vec![("a", spans)]), now);
        now += 2 * SEC;
        e.tick(now);
        drain_all(&e);
    }
    now += 3600 * SEC;
    e.tick(now);
    let r = e.ingest(&request(vec![("a", vec![span(1_000, 1, 0, b, b + 1)])]), now);
    assert!(r.is_ok(), "a one-span batch an hour later is accepted: {r:?} {:?}", e.stats());
    let s = e.stats();
    assert!(s.memory_late_cache_bytes <= BOUND as u64 / 8, "the late cache keeps to its eighth of the bound: {s:?}");
    assert_eq!(s.spans_received, 200 * 3000 + 1, "no 3,000-span batch was refused for good");
}

#[test]
fn a_trace_is_released_before_its_span_bytes_pass_what_offsets_address() {
    // The real limit is 4 GiB (u32 offsets); a small one here shows the behaviour.
    let mut e = Engine::new(cfg()).unwrap();
    e.limits.max_trace_span_bytes = 4_000;
    let b = T0 - SEC;
    let mut sent = 0u64;
    for batch in 0..10u64 {
        let spans: Vec<Span> = (0..20).map(|i| span(7, 1 + batch * 20 + i, if batch + i == 0 { 0 } else { 1 }, b, b + 1)).collect();
        sent += spans.len() as u64;
        e.ingest(&request(vec![("a", spans)]), T0).unwrap();
    }
    e.shutdown(T0 + SEC);
    let (out, units, _) = drain_all(&e);
    assert_eq!(out.len() as u64, sent, "every span leaves once");
    assert_eq!(units[0].reason, ReleaseReason::SpanLimit);
    assert!(units[0].spans < sent as u32);
    assert!(units[1..].iter().all(|u| u.reason == ReleaseReason::Late), "{units:?}");
    let mut ids: Vec<u64> = out.iter().map(|s| s.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, sent);
    // A batch larger than that is refused whole (a permanent refusal), and counted.
    let big: Vec<Span> = (0..200).map(|i| span(8, 1 + i, 0, b, b + 1)).collect();
    let r = e.ingest(&request(vec![("a", big)]), T0 + 2 * SEC);
    assert!(matches!(r, Err(IngestError::TooLarge(_))), "{r:?}");
    assert_eq!(e.stats().batches_refused, 1);
}

#[test]
fn a_step_of_the_wall_clock_moves_no_timer() {
    // max_age 60 s; an incomplete trace that keeps getting spans is released at max_age by
    // the monotonic clock, whatever the wall clock does meanwhile.
    let e = Engine::new(Config { idle_timeout_ns: (30 * SEC) as i64, ..cfg() }).unwrap();
    let m0 = 5 * SEC; // the monotonic clock's origin is arbitrary
    let b = T0 - SEC;
    let at = |wall: u64, mono: u64| Clocks { wall, mono };
    e.ingest_at(&request(vec![("a", vec![span(1, 2, 1, b, b + 1)])]), at(T0, m0)).unwrap();
    // The host clock steps back one hour, then forward two (one hour ahead): nothing is due
    // yet by the monotonic clock, which moved 50 s.
    for (i, wall) in [T0 - 3600 * SEC, T0 + 3600 * SEC].into_iter().enumerate() {
        let mono = m0 + (i as u64 + 1) * 25 * SEC;
        e.ingest_at(&request(vec![("a", vec![span(1, 3 + i as u64, 1, b, b + 1)])]), at(wall, mono)).unwrap();
        e.tick_at(at(wall, mono));
        assert!(e.drain(1000).is_none(), "released at wall {wall} with the monotonic clock at {} s", (mono - m0) / SEC);
    }
    // Still an hour ahead by the wall clock; 60 s by the monotonic clock: max_age.
    e.tick_at(at(T0 + 3600 * SEC + SEC, m0 + 60 * SEC - 1));
    assert!(e.drain(1000).is_none(), "a nanosecond before max_age");
    e.tick_at(at(T0 + 3600 * SEC + SEC, m0 + 60 * SEC));
    let (spans, units, _) = drain_all(&e);
    assert_eq!(spans.len(), 3);
    assert_eq!(units, vec![ReleasedUnit { reason: ReleaseReason::MaxAge, spans: 3, age_ns: 60 * SEC, findings: units[0].findings }]);
    // The stamps follow the wall clock (never backwards: the HLC keeps them monotonic).
    let last = spans.iter().filter_map(|s| s.attr_str("consistency.hlc")).max().unwrap();
    assert!(last.starts_with(&format!("{:020}", T0 + 3600 * SEC)[..12]), "{last}");

    // Idle timeout and quiet period too: a complete trace goes quiet after 1 s of the
    // monotonic clock, even when the wall clock went back meanwhile.
    e.ingest_at(&request(vec![("a", complete_trace(2))]), at(T0, m0 + 100 * SEC)).unwrap();
    e.tick_at(at(T0 - 3600 * SEC, m0 + 101 * SEC));
    let (_, units, _) = drain_all(&e);
    assert_eq!(units.iter().map(|u| u.reason).collect::<Vec<_>>(), vec![ReleaseReason::Complete]);
    assert_eq!(units[0].age_ns, SEC);
}
