use super::*;

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn call(key: u64, end: u64, child: Option<u64>) -> Callout {
    Callout { idx: 0, db: false, span_id: key ^ 0xabc, key, end_wall: end, child_service: child }
}

#[test]
fn an_unknown_call_waits_for_the_cold_lag() {
    let e = Expect::new(64, 8, 10 * SEC);
    let until = e.hold_until(&[call(1, 100 * SEC, None)], 100 * SEC, 100 * SEC, u64::MAX);
    assert_eq!(until, 100 * SEC + COLD_LAG_NS + margin(COLD_LAG_NS));
    assert_eq!(e.decision(1), Decision::Unknown);
}

#[test]
fn a_call_with_a_child_is_expected_at_once_and_from_that_service() {
    let e = Expect::new(64, 8, 10 * SEC);
    let svc = e.service_hash("backend");
    e.learn(1, &[call(7, 0, Some(svc))], false, 0, 0);
    assert_eq!(e.decision(7), Decision::Expected { service: svc });
}

#[test]
fn a_leaf_stops_holding_after_two_waited_calls_and_is_probed_every_so_often() {
    let e = Expect::new(64, 8, 10 * SEC);
    assert!(e.learn(1, &[call(3, 0, None)], true, 0, 0).is_empty());
    assert_eq!(e.decision(3), Decision::Unknown);
    e.learn(1, &[call(3, 0, None)], true, 0, 0);
    assert_eq!(e.decision(3), Decision::NoChild);
    assert_eq!(e.hold_until(&[call(3, 0, None)], 0, 0, u64::MAX), 0);
    // Released without waiting: no evidence either way, counted towards a probe.
    for _ in 0..PROBE_EVERY {
        e.learn(1, &[call(3, 0, None)], false, 0, 0);
    }
    assert_eq!(e.decision(3), Decision::Probe);
    e.learn(1, &[call(3, 0, None)], true, 0, 0);
    assert_eq!(e.decision(3), Decision::NoChild);
}

#[test]
fn an_expected_child_that_stops_coming_is_unlearned_in_three_calls() {
    let e = Expect::new(64, 8, 10 * SEC);
    e.learn(1, &[call(5, 0, Some(9))], false, 0, 0);
    for i in 0..3 {
        assert!(matches!(e.decision(5), Decision::Expected { .. }), "call {i}");
        assert_eq!(e.learn(1, &[call(5, 0, None)], true, 0, 0), vec![0], "reported missing");
    }
    assert_eq!(e.decision(5), Decision::NoChild);
}

#[test]
fn a_late_child_of_a_call_released_without_waiting_teaches_its_key() {
    let e = Expect::new(64, 8, 10 * SEC);
    e.learn(1, &[call(4, 0, None)], true, 0, 0);
    e.learn(1, &[call(4, 0, None)], true, 0, 0);
    assert_eq!(e.decision(4), Decision::NoChild);
    let released = call(4, 0, None);
    e.learn(1, std::slice::from_ref(&released), false, 0, 0);
    assert_eq!(e.learn_late(&[(1, 12345, 7)]), 0, "a late span of another parent");
    assert_eq!(e.learn_late(&[(2, released.span_id, 7)]), 0, "of another trace");
    assert_eq!(e.learn_late(&[(1, released.span_id, 7)]), 1);
    assert_eq!(e.decision(4), Decision::Expected { service: 7 });
}

#[test]
fn a_probe_that_finds_a_child_expects_it_again() {
    let e = Expect::new(64, 8, 10 * SEC);
    e.learn(1, &[call(4, 0, None)], true, 0, 0);
    e.learn(1, &[call(4, 0, None)], true, 0, 0);
    e.learn(1, &[call(4, 0, Some(2))], false, 0, 0);
    assert_eq!(e.decision(4), Decision::Expected { service: 2 });
}

#[test]
fn the_lag_of_a_service_follows_a_shorter_delay_within_two_windows() {
    let e = Expect::new(64, 8, 10 * SEC);
    let svc = e.service_hash("b");
    let mut now = 0;
    while now < 40 * SEC {
        e.observe_lags(&[("b", 5 * SEC)], now);
        now += 5 * SEC;
    }
    let lag_of = |e: &Expect, now| e.learnt(now).lags.into_iter().find(|l| l.0 == "b").unwrap().1;
    assert_eq!(lag_of(&e, now), 5 * SEC);
    let changed = now;
    while now < changed + 2 * LAG_WINDOW_NS + SEC {
        e.observe_lags(&[("b", SEC)], now);
        now += SEC;
    }
    assert_eq!(lag_of(&e, now), SEC);
    let hold = e.hold_until(&[call(1, now, None)], now, now, u64::MAX);
    assert_eq!(hold, now + SEC + margin(SEC), "unknown: the slowest service known");
    e.learn(1, &[call(1, 0, Some(svc))], false, now, now);
    let hold = e.hold_until(&[call(1, now, None)], now, now, u64::MAX);
    let cold = COLD_LAG_NS + margin(COLD_LAG_NS);
    assert_eq!(hold, now + cold, "expected, its callee not yet past the call: the default delay");
    e.observe_ends(&[("b", now + WATERMARK_SLACK_NS)]);
    let hold = e.hold_until(&[call(1, now, None)], now, now, u64::MAX);
    assert_eq!(hold, now + SEC + margin(SEC), "expected: that callee's lag");
}

#[test]
fn a_new_service_is_taken_as_slow_for_one_window() {
    let e = Expect::new(64, 8, 10 * SEC);
    e.observe_lags(&[("fast", 200 * MS)], 0);
    let lag = e.learnt(SEC).lags[0].1;
    assert_eq!(lag, COLD_LAG_NS);
    e.observe_lags(&[("fast", 200 * MS)], LAG_WINDOW_NS);
    assert_eq!(e.learnt(LAG_WINDOW_NS).lags[0].1, 200 * MS);
}

#[test]
fn a_hold_never_passes_the_latest_time_given() {
    let e = Expect::new(64, 8, 10 * SEC);
    assert_eq!(e.hold_until(&[call(1, u64::MAX / 2, None)], 0, 0, 3 * SEC), 3 * SEC);
    // A call ended long ago is not waited for.
    assert_eq!(e.hold_until(&[call(1, 0, None)], 100 * SEC, 100 * SEC, u64::MAX), 100 * SEC);
}

#[test]
fn lags_are_capped_at_idle_timeout() {
    let e = Expect::new(64, 8, 2 * SEC);
    e.observe_lags(&[("s", 3600 * SEC)], 0);
    assert_eq!(e.learnt(0).lags[0].1, COLD_LAG_NS.max(2 * SEC));
    assert_eq!(e.hold_until(&[call(1, 0, None)], 0, 0, u64::MAX), 2 * SEC + margin(2 * SEC));
}

#[test]
fn calls_to_two_ports_of_one_host_are_two_keys() {
    use crate::testutil::{kv, request};
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    let port = |p: i64| KeyValue { key: "server.port".into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(p)) }), ..Default::default() };
    let mut spans = Vec::new();
    for (i, p) in [(1u64, 8080), (2, 9090), (3, 8080)] {
        let mut s = crate::testutil::span(1, i, 0, 1, 2);
        s.kind = 3;
        s.name = "GET".into();
        s.attributes = vec![kv("server.address", "127.0.0.1"), port(p)];
        spans.push(s);
    }
    let data = request(vec![("svc", spans)]);
    let batch = crate::index::scan_request(&data).unwrap();
    let e = Expect::new(64, 8, 10 * SEC);
    let calls = e.callouts(&batch.spans, &data, &batch.groups);
    assert_eq!(calls.len(), 3);
    assert_ne!(calls[0].key, calls[1].key);
    assert_eq!(calls[0].key, calls[2].key);
}

#[test]
fn tables_stay_within_their_bounds_under_random_keys() {
    let e = Expect::new(256, 16, 10 * SEC);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut max_bytes = 0;
    for i in 0..100_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        e.learn(1, &[call(x, 0, if i % 2 == 0 { Some(1) } else { None })], true, 0, 0);
        let name = format!("svc-{x:x}");
        e.observe_lags(&[(&name, SEC)], i);
        max_bytes = max_bytes.max(e.bytes());
    }
    let l = e.learnt(0);
    assert!(l.keys <= 256 && l.lags.len() <= 16, "{} keys, {} services", l.keys, l.lags.len());
    // 256 keys and 16 services, their tables and names.
    assert!(max_bytes < 64 << 10, "{max_bytes} bytes");
    assert!(e.bytes() > 256 * size_of::<KeyState>() as u64);
}

#[test]
fn a_frequently_used_key_survives_a_flood_of_new_ones() {
    let e = Expect::new(64, 8, 10 * SEC);
    e.learn(1, &[call(42, 0, Some(1))], false, 0, 0);
    for i in 0..10_000u64 {
        e.learn(1, &[call(1_000_000 + i, 0, None)], true, 0, 0);
        if i % 16 == 0 {
            e.learn(1, &[call(42, 0, Some(1))], false, 0, 0);
        }
    }
    assert_eq!(e.decision(42), Decision::Expected { service: 1 });
}
