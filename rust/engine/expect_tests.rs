//! Completeness that knows what is still coming, with an injected clock: services that
//! export on their own batch timers (as the SDKs' batch span processors do), the engine
//! ticking every 100 ms, and what leaves it, trace by trace.

use super::*;
use crate::testutil::*;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::HashMap;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_790_000_000 * SEC;
const TICK: u64 = 100 * MS;

fn cfg() -> Config {
    Config {
        num_shards: 4,
        quiet_period_ns: SEC as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        hlc_restart: RestartStrategy::None,
        ..Config::default()
    }
}

/// A call span: `kind` 3 (CLIENT) with a name and peer attributes.
fn call(mut s: Span, name: &str, peers: &[(&str, &str)]) -> Span {
    s.kind = 3;
    s.name = name.into();
    s.attributes.extend(peers.iter().map(|(k, v)| kv(k, v)));
    s
}

fn server(mut s: Span) -> Span {
    s.kind = 2;
    s.name = "GET /".into();
    s
}

struct Service {
    name: &'static str,
    delay: u64,
    next_flush: u64,
    buf: Vec<Span>,
}

/// What left the engine for one trace.
#[derive(Default, Debug)]
struct Seen {
    spans: Vec<OutSpan>,
    /// Release time (monotonic) of each unit that held spans of it.
    units: Vec<u64>,
    late: usize,
}

struct Sim {
    e: Engine,
    services: Vec<Service>,
    /// (end time, service index, span) not yet ended.
    pending: Vec<(u64, usize, Span)>,
    now: u64,
    seen: HashMap<u64, Seen>,
    /// Per trace: the end of its frontend's last span (monotonic).
    frontend_end: HashMap<u64, u64>,
}

impl Sim {
    fn new(cfg: Config, services: &[(&'static str, u64, u64)]) -> Sim {
        Sim {
            e: Engine::new(cfg).unwrap(),
            services: services.iter().map(|&(name, delay, phase)| Service { name, delay, next_flush: phase, buf: Vec::new() }).collect(),
            pending: Vec::new(),
            now: 0,
            seen: HashMap::new(),
            frontend_end: HashMap::new(),
        }
    }

    fn clocks(&self) -> Clocks {
        Clocks { wall: T0 + self.now, mono: self.now }
    }

    fn service(&self, name: &str) -> usize {
        self.services.iter().position(|s| s.name == name).unwrap()
    }

    /// Adds a span of `service` (its times are monotonic offsets; made wall times here).
    fn add(&mut self, service: &str, mut s: Span) {
        let end = s.end_time_unix_nano;
        if service == self.services[0].name {
            let t = u64::from_be_bytes(s.trace_id[8..16].try_into().unwrap());
            let e = self.frontend_end.entry(t).or_default();
            *e = (*e).max(end);
        }
        s.start_time_unix_nano += T0;
        s.end_time_unix_nano += T0;
        let i = self.service(service);
        self.pending.push((end, i, s));
    }

    fn set_delay(&mut self, service: &str, delay: u64) {
        let i = self.service(service);
        self.services[i].delay = delay;
        self.services[i].next_flush = self.services[i].next_flush.min(self.now + delay);
    }

    /// Runs the clock to `until` in steps of 10 ms: spans end into their service's buffer,
    /// services flush on their timers, the engine ticks every 100 ms.
    fn run_to(&mut self, until: u64) {
        while self.now < until {
            self.now += 10 * MS;
            let now = self.now;
            let mut i = 0;
            while i < self.pending.len() {
                if self.pending[i].0 <= now {
                    let (_, svc, s) = self.pending.swap_remove(i);
                    self.services[svc].buf.push(s);
                } else {
                    i += 1;
                }
            }
            for k in 0..self.services.len() {
                if self.services[k].next_flush <= now {
                    self.services[k].next_flush = now + self.services[k].delay;
                    let spans = std::mem::take(&mut self.services[k].buf);
                    if !spans.is_empty() {
                        let req = request(vec![(self.services[k].name, spans)]);
                        let clocks = self.clocks();
                        self.e.ingest_at(&req, clocks).unwrap();
                    }
                }
            }
            if now % TICK == 0 {
                let clocks = self.clocks();
                self.e.tick_at(clocks);
                self.drain();
            }
        }
    }

    fn drain(&mut self) {
        while let Some(r) = self.e.drain(1_000_000) {
            let mut by_trace: HashMap<u64, Vec<OutSpan>> = HashMap::new();
            for s in decode(&r.otlp) {
                by_trace.entry(s.trace()).or_default().push(s);
            }
            for (t, spans) in by_trace {
                let seen = self.seen.entry(t).or_default();
                let late = spans.iter().filter(|s| s.attr("consistency.span.late").is_some()).count();
                seen.late += late;
                // Each released unit of a trace writes its release reason once.
                let units = spans.iter().filter(|s| s.attr("consistency.trace.release_reason").is_some()).count();
                seen.units.extend(std::iter::repeat_n(self.now, units));
                seen.spans.extend(spans);
            }
        }
    }

    /// Release latency of trace `t` from its frontend's last span end, when it left whole
    /// in one release.
    fn latency(&self, t: u64) -> u64 {
        self.seen[&t].units[0] - self.frontend_end[&t]
    }
}

/// Request `k` at time `at`: frontend (root, a call to node, a call to an uninstrumented
/// endpoint) → node (a call to java) → java (a database call). Seven spans.
fn three_services(sim: &mut Sim, k: u64, at: u64) {
    let t = k + 1;
    let id = |j: u64| t * 16 + j;
    sim.add("frontend", server(span(t, id(1), 0, at, at + 40 * MS)));
    sim.add("frontend", call(span(t, id(2), id(1), at + 5 * MS, at + 35 * MS), "GET", &[("server.address", "node")]));
    sim.add("frontend", call(span(t, id(7), id(1), at + 36 * MS, at + 38 * MS), "GET", &[("server.address", "example.com")]));
    sim.add("node", server(span(t, id(3), id(2), at + 8 * MS, at + 33 * MS)));
    sim.add("node", call(span(t, id(4), id(3), at + 10 * MS, at + 30 * MS), "GET", &[("server.address", "java")]));
    sim.add("java", server(span(t, id(5), id(4), at + 12 * MS, at + 28 * MS)));
    sim.add("java", call(span(t, id(6), id(5), at + 14 * MS, at + 20 * MS), "SELECT", &[("db.system", "sqlite")]));
}

fn percentile(mut v: Vec<u64>, q: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Every trace left whole, once, in one release, with `spans` spans and no late span.
fn assert_whole(sim: &Sim, traces: std::ops::Range<u64>, spans: usize) {
    for t in traces {
        let seen = sim.seen.get(&t).unwrap_or_else(|| panic!("trace {t} never left"));
        assert_eq!(seen.late, 0, "trace {t}: late spans");
        assert_eq!(seen.units.len(), 1, "trace {t}: left in {} parts", seen.units.len());
        assert_eq!(seen.spans.len(), spans, "trace {t}: spans");
    }
}

#[test]
fn three_services_at_the_sdks_default_delay_leave_whole_from_a_cold_start() {
    // Each service exports every 5 s, on its own phase; the frontend exports first.
    let mut sim = Sim::new(cfg(), &[("frontend", 5 * SEC, SEC), ("node", 5 * SEC, 2700 * MS), ("java", 5 * SEC, 4300 * MS)]);
    let n = 240;
    for k in 0..n {
        three_services(&mut sim, k, 10 * MS + k * 250 * MS);
    }
    sim.run_to(90 * SEC);
    assert_whole(&sim, 1..n + 1, 7);
    let lat: Vec<u64> = (1..n + 1).map(|t| sim.latency(t)).collect();
    let (p50, p99) = (percentile(lat.clone(), 0.5), percentile(lat.clone(), 0.99));
    eprintln!("latency from the frontend's last span end: p50 {} ms, p99 {} ms", p50 / MS, p99 / MS);
    // The floor: the slowest exporter's delay plus the quiet period.
    assert!(p50 <= 7 * SEC && p99 <= 8 * SEC, "p50 {p50} p99 {p99}");
    let st = sim.e.stats();
    assert!(st.traces_awaited_children > 0, "{st:?}");
    assert_eq!(st.expected_children_missing, 0);
    // Learned: the two instrumented calls expect children; the uninstrumented endpoint and
    // the database do not.
    assert_eq!((st.learned_call_keys, st.learned_edges), (4, 2));
    assert!(st.memory_learned_bytes > 0 && st.memory_total_bytes >= st.memory_learned_bytes);
}

#[test]
fn structure_alone_splits_the_same_shape() {
    // The shape above without the calls' kinds: what the engine did before it learned calls.
    let mut sim = Sim::new(cfg(), &[("frontend", 5 * SEC, SEC), ("node", 5 * SEC, 2700 * MS), ("java", 5 * SEC, 4300 * MS)]);
    for k in 0..40 {
        three_services(&mut sim, k, 10 * MS + k * 250 * MS);
    }
    for p in sim.pending.iter_mut() {
        p.2.kind = 1;
    }
    sim.run_to(60 * SEC);
    let split = (1..41).filter(|t| sim.seen[t].units.len() > 1 || sim.seen[t].late > 0).count();
    assert!(split >= 10, "{split} of 40 split");
}

/// Request `k`: a frontend root with one call to `peer` that never gets an instrumented child.
fn leaf_call(sim: &mut Sim, k: u64, at: u64, name: &str, peer: (&str, &str)) {
    let t = k + 1;
    sim.add("frontend", server(span(t, t * 16 + 1, 0, at, at + 40 * MS)));
    sim.add("frontend", call(span(t, t * 16 + 2, t * 16 + 1, at + 5 * MS, at + 35 * MS), name, &[peer]));
}

#[test]
fn a_call_to_an_uninstrumented_endpoint_stops_holding_once_learned() {
    let mut sim = Sim::new(cfg(), &[("frontend", 200 * MS, 100 * MS)]);
    let n = 200;
    for k in 0..n {
        leaf_call(&mut sim, k, 10 * MS + k * 200 * MS, "GET", ("server.address", "example.com"));
    }
    sim.run_to(60 * SEC);
    assert_whole(&sim, 1..n + 1, 2);
    // The first calls wait (nothing learned yet: the cold lag); once two have been waited
    // for in vain, no trace waits any more.
    assert!(sim.latency(1) >= 5 * SEC, "{}", sim.latency(1));
    let after: Vec<u64> = (60..n + 1).map(|t| sim.latency(t)).collect();
    assert!(after.iter().all(|&l| l <= 1500 * MS), "{:?}", after.iter().max());
    let st = sim.e.stats();
    assert_eq!((st.learned_call_keys, st.learned_edges), (1, 0));
    assert_eq!(st.expected_children_missing, 0);
}

#[test]
fn a_database_call_is_a_leaf_from_the_start() {
    let mut sim = Sim::new(cfg(), &[("frontend", 200 * MS, 100 * MS)]);
    let n = 200;
    for k in 0..n {
        leaf_call(&mut sim, k, 10 * MS + k * 200 * MS, "SELECT items", ("db.system", "sqlite"));
    }
    sim.run_to(60 * SEC);
    assert_whole(&sim, 1..n + 1, 2);
    // Semantic conventions make a database call a leaf: no trace waits, not even the first.
    let all: Vec<u64> = (1..n + 1).map(|t| sim.latency(t)).collect();
    assert!(all.iter().all(|&l| l <= 1500 * MS), "{:?}", all.iter().max());
    let st = sim.e.stats();
    assert_eq!(st.traces_awaited_children, 0);
    assert_eq!((st.learned_call_keys, st.learned_edges), (1, 0));
}

#[test]
fn a_database_that_joins_traces_is_learned_from_its_children() {
    // A database call with a child (a database instrumented to continue the trace): its key
    // expects one from then on, and a trace whose database child is still on its way waits.
    let mut sim = Sim::new(cfg(), &[("frontend", 200 * MS, 100 * MS), ("db", 3 * SEC, 1500 * MS)]);
    let at = |k: u64| 10 * MS + k * 300 * MS;
    for k in 0..60 {
        let t = k + 1;
        sim.add("frontend", server(span(t, t * 16 + 1, 0, at(k), at(k) + 40 * MS)));
        sim.add("frontend", call(span(t, t * 16 + 2, t * 16 + 1, at(k) + 5 * MS, at(k) + 35 * MS), "SELECT", &[("db.system.name", "postgresql")]));
        sim.add("db", server(span(t, t * 16 + 3, t * 16 + 2, at(k) + 8 * MS, at(k) + 30 * MS)));
    }
    sim.run_to(60 * SEC);
    assert!(sim.e.stats().learned_from_late_spans >= 1, "{:?}", sim.e.stats());
    assert!(sim.seen[&1].late > 0, "the first trace did not wait: its database child came late");
    assert_eq!(sim.e.stats().learned_edges, 1);
    assert_whole(&sim, 20..61, 3);
}

#[test]
fn a_service_whose_delay_drops_from_5s_to_1s_is_followed() {
    let mut sim = Sim::new(cfg(), &[("frontend", 5 * SEC, SEC), ("node", 5 * SEC, 2700 * MS), ("java", 5 * SEC, 4300 * MS)]);
    let n = 600;
    for k in 0..n {
        three_services(&mut sim, k, 10 * MS + k * 200 * MS);
    }
    sim.run_to(40 * SEC);
    for s in ["frontend", "node", "java"] {
        sim.set_delay(s, SEC);
    }
    sim.run_to(150 * SEC);
    assert_whole(&sim, 1..n + 1, 7);
    // Two lag windows after the change, the wait follows the 1 s delay: the latency is about
    // that delay plus the quiet period.
    let late_traces: Vec<u64> = (1..n + 1).filter(|t| sim.frontend_end[t] > 40 * SEC + 2 * expect::LAG_WINDOW_NS + 2 * SEC).collect();
    assert!(late_traces.len() > 100);
    let lat: Vec<u64> = late_traces.iter().map(|&t| sim.latency(t)).collect();
    let p99 = percentile(lat, 0.99);
    assert!(p99 <= 3 * SEC, "p99 {p99}");
}

#[test]
fn a_callee_that_stops_exporting_is_unlearned_and_its_missing_children_are_marked() {
    let mut sim = Sim::new(cfg(), &[("frontend", 200 * MS, 100 * MS), ("node", 200 * MS, 150 * MS)]);
    let at = |k: u64| 10 * MS + k * 300 * MS;
    for k in 0..60 {
        let t = k + 1;
        sim.add("frontend", server(span(t, t * 16 + 1, 0, at(k), at(k) + 40 * MS)));
        sim.add("frontend", call(span(t, t * 16 + 2, t * 16 + 1, at(k) + 5 * MS, at(k) + 35 * MS), "GET", &[("server.address", "node")]));
        if k < 40 {
            sim.add("node", server(span(t, t * 16 + 3, t * 16 + 2, at(k) + 8 * MS, at(k) + 30 * MS)));
        }
    }
    sim.run_to(60 * SEC);
    assert_whole(&sim, 1..41, 3);
    assert_whole(&sim, 41..61, 2);
    let marked: Vec<u64> = (41..61)
        .filter(|t| sim.seen[t].spans.iter().any(|s| s.attr_strs("consistency.span.findings").contains(&"expected_child_missing".to_string())))
        .collect();
    // Each waited for in vain moves the key a quarter of the way: three marked (of those
    // waiting when the callee's spans stopped), then no more holding.
    assert_eq!(marked.len(), 3, "{marked:?}");
    assert!(marked.iter().all(|&t| t <= 50), "{marked:?}");
    let st = sim.e.stats();
    assert_eq!(st.expected_children_missing, 3);
    assert_eq!(st.learned_edges, 0);
    let root = sim.seen[&marked[0]].spans.iter().find(|s| s.span.parent_span_id.is_empty()).unwrap();
    assert!(root.attr_strs("consistency.trace.findings").contains(&"expected_child_missing".to_string()));
    // The traces in flight meanwhile waited at most as long as the SDKs' default delay
    // would hold their child (the callee had sent nothing past their calls); once the key
    // is unlearned, none waits.
    let lat: Vec<u64> = (41..61).map(|t| sim.latency(t)).collect();
    assert!(lat.iter().all(|&l| l <= expect::COLD_LAG_NS + expect::margin(expect::COLD_LAG_NS) + 1500 * MS), "{lat:?}");
    assert!(sim.latency(60) <= 1500 * MS, "{lat:?}");
}

#[test]
fn a_trace_held_to_idle_timeout_still_leaves_with_the_missing_child_recorded() {
    // The callee's lag (5 s) is longer than idle_timeout (3 s): the wait stops at
    // idle_timeout after the last span, and the trace leaves with the fact.
    let cfg = Config { idle_timeout_ns: (3 * SEC) as i64, ..cfg() };
    let mut sim = Sim::new(cfg, &[("frontend", 200 * MS, 100 * MS), ("node", 200 * MS, 150 * MS)]);
    for k in 0..3 {
        let (t, at) = (k + 1, 10 * MS + k * 300 * MS);
        sim.add("frontend", server(span(t, t * 16 + 1, 0, at, at + 40 * MS)));
        sim.add("frontend", call(span(t, t * 16 + 2, t * 16 + 1, at + 5 * MS, at + 35 * MS), "GET", &[("server.address", "node")]));
        sim.add("node", server(span(t, t * 16 + 3, t * 16 + 2, at + 8 * MS, at + 30 * MS)));
    }
    sim.run_to(5 * SEC);
    let (t, at) = (4, sim.now);
    sim.add("frontend", server(span(t, t * 16 + 1, 0, at, at + 40 * MS)));
    sim.add("frontend", call(span(t, t * 16 + 2, t * 16 + 1, at + 5 * MS, at + 35 * MS), "GET", &[("server.address", "node")]));
    // And a trace missing a parent, too: it leaves at idle_timeout, the fact recorded.
    sim.add("frontend", call(span(5, 5 * 16 + 2, 5 * 16 + 1, at + 5 * MS, at + 35 * MS), "GET", &[("server.address", "node")]));
    sim.run_to(20 * SEC);
    for t in [4, 5] {
        let seen = &sim.seen[&t];
        assert_eq!(seen.units.len(), 1);
        let call = seen.spans.iter().find(|s| s.id() == t * 16 + 2).unwrap();
        assert!(call.attr_strs("consistency.span.findings").contains(&"expected_child_missing".to_string()), "trace {t}: {call:?}");
        let waited = seen.units[0] - at;
        assert!(waited <= 3 * SEC + 500 * MS, "trace {t} waited {waited}");
    }
    assert_eq!(sim.seen[&4].spans.iter().find_map(|s| s.attr_str("consistency.trace.release_reason")).as_deref(), Some("complete"));
    assert_eq!(sim.seen[&5].spans.iter().find_map(|s| s.attr_str("consistency.trace.release_reason")).as_deref(), Some("idle_timeout"));
    assert_eq!(sim.e.stats().expected_children_missing, 2);
}

#[test]
fn a_child_arriving_late_teaches_a_key_learned_to_have_none() {
    // The callee is not instrumented at first, then is (with a slow exporter): its first
    // late child teaches the key, and later traces wait for their children again.
    let mut sim = Sim::new(cfg(), &[("frontend", 200 * MS, 100 * MS), ("node", 3 * SEC, 2 * SEC)]);
    let at = |k: u64| 10 * MS + k * 300 * MS;
    for k in 0..100 {
        let t = k + 1;
        sim.add("frontend", server(span(t, t * 16 + 1, 0, at(k), at(k) + 40 * MS)));
        sim.add("frontend", call(span(t, t * 16 + 2, t * 16 + 1, at(k) + 5 * MS, at(k) + 35 * MS), "GET", &[("server.address", "node")]));
        if k >= 50 {
            sim.add("node", server(span(t, t * 16 + 3, t * 16 + 2, at(k) + 8 * MS, at(k) + 30 * MS)));
        }
    }
    sim.run_to(60 * SEC);
    assert!(sim.e.stats().learned_from_late_spans >= 1);
    // A few traces split while the key was learned to have no child; the rest are whole.
    let split: Vec<u64> = (51..101).filter(|t| sim.seen[t].units.len() != 1 || sim.seen[t].late > 0).collect();
    assert!(split.len() <= 12, "{split:?}");
    assert_whole(&sim, 70..101, 3);
}

#[test]
fn random_call_names_stay_within_the_learned_table_bound() {
    // Hostile senders: every call a new name. The table keeps a bounded number of keys,
    // counted in the memory total, within its share of max_buffered_bytes.
    let cfg = Config { max_buffered_bytes: 4 << 20, ..cfg() };
    let e = Engine::new(cfg).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut now = 0;
    for b in 0..400u64 {
        let mut spans = Vec::new();
        for i in 0..50u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = b * 100 + i + 1;
            spans.push(server(span(t, t * 4 + 1, 0, T0 + now, T0 + now + MS)));
            spans.push(call(span(t, t * 4 + 2, t * 4 + 1, T0 + now, T0 + now + MS), &format!("n{x:x}"), &[]));
        }
        e.ingest_at(&request(vec![("svc", spans)]), Clocks { wall: T0 + now, mono: now }).unwrap();
        now += 20 * SEC; // each trace waits, then leaves: learning every key
        e.tick_at(Clocks { wall: T0 + now, mono: now });
        while e.drain(1 << 20).is_some() {}
        let st = e.stats();
        assert!(st.memory_learned_bytes <= (4 << 20) / 64 + (128 << 10), "{}", st.memory_learned_bytes);
        assert!(st.memory_total_bytes <= 4 << 20);
    }
    let st = e.stats();
    assert_eq!(st.learned_call_keys, (4u64 << 20) / 64 / awaited::KEY_BYTES);
    assert!(st.memory_learned_bytes > 0);
}

/// Request `k` at `at`, the shape of the real applications' first requests: frontend (root,
/// a call to node) → node (a call to java, with an in-process child of its own: the Node.js
/// net instrumentation's `tcp.connect`, made while a new connection opens) → java (a call to
/// go) → go. Eight spans.
fn call_with_in_process_child(sim: &mut Sim, k: u64, at: u64) {
    let t = k + 1;
    let id = |j: u64| t * 16 + j;
    sim.add("frontend", server(span(t, id(1), 0, at, at + 40 * MS)));
    sim.add("frontend", call(span(t, id(2), id(1), at + 5 * MS, at + 35 * MS), "GET", &[("server.address", "node")]));
    sim.add("node", server(span(t, id(3), id(2), at + 8 * MS, at + 33 * MS)));
    sim.add("node", call(span(t, id(4), id(3), at + 10 * MS, at + 30 * MS), "GET", &[("server.address", "java")]));
    let mut connect = span(t, id(8), id(4), at + 10 * MS, at + 11 * MS);
    connect.name = "tcp.connect".into();
    sim.add("node", connect);
    sim.add("java", server(span(t, id(5), id(4), at + 12 * MS, at + 28 * MS)));
    sim.add("java", call(span(t, id(6), id(5), at + 14 * MS, at + 26 * MS), "GET", &[("server.address", "go")]));
    sim.add("go", server(span(t, id(7), id(6), at + 16 * MS, at + 24 * MS)));
}

#[test]
fn a_cold_start_waits_for_the_remote_child_of_a_call_with_an_in_process_child() {
    // The frontend and node export early in their 5 s period, java and go (the JVM's first
    // export) late: the call to java has a child at once (node's own tcp.connect) but not
    // the callee's. That child does not show java's spans have come: the trace waits for
    // them as for a call without a child, from the cold start on.
    let mut sim = Sim::new(cfg(), &[("frontend", 5 * SEC, SEC), ("node", 5 * SEC, 1500 * MS), ("java", 5 * SEC, 4800 * MS), ("go", 5 * SEC, 4900 * MS)]);
    let n = 40;
    for k in 0..n {
        call_with_in_process_child(&mut sim, k, 10 * MS + k * 100 * MS);
    }
    sim.run_to(40 * SEC);
    assert_whole(&sim, 1..n + 1, 8);
    // The key learned expects java's child (a remote one), not node's own.
    let st = sim.e.stats();
    assert_eq!(st.expected_children_missing, 0);
    assert_eq!((st.learned_call_keys, st.learned_edges), (3, 3));
}

#[test]
fn a_callee_whose_last_export_waits_its_whole_timer_is_waited_for() {
    // Under load the callee exports often (a full batch goes before its timer), so its
    // learned lag is short; when the load stops, its last spans wait the whole 5 s timer.
    // The traces of the end of the load wait until the callee has sent spans that ended
    // after their call did, not only for the lag learned under load.
    let mut sim = Sim::new(cfg(), &[("frontend", 5 * SEC, SEC), ("node", 200 * MS, 100 * MS), ("java", 2 * SEC, 1500 * MS), ("go", 2 * SEC, 1600 * MS)]);
    let n = 300;
    for k in 0..n {
        call_with_in_process_child(&mut sim, k, 10 * MS + k * 100 * MS);
    }
    sim.run_to(30 * SEC + 100 * MS);
    for name in ["java", "go"] {
        let i = sim.service(name);
        sim.services[i].next_flush = sim.now + 5 * SEC;
        sim.services[i].delay = 5 * SEC;
    }
    sim.run_to(60 * SEC);
    assert_whole(&sim, 1..n + 1, 8);
    assert_eq!(sim.e.stats().expected_children_missing, 0);
}

#[test]
fn call_keys_kept_with_a_trace_are_those_read_again_from_its_spans() {
    // A trace buffered over two batches whose groups come in different orders (a span's
    // group index in its batch is not the one in its trace), with CLIENT, PRODUCER, SERVER
    // and INTERNAL spans: the keys kept at ingest are those read from the trace's bytes.
    let e = Engine::new(cfg()).unwrap();
    let root = server(span(1, 1, 0, T0, T0 + 50 * MS));
    let db = call(span(1, 2, 1, T0 + MS, T0 + 2 * MS), "SELECT", &[("db.system", "postgresql")]);
    e.ingest_at(&request(vec![("front", vec![root, db])]), Clocks { wall: T0 + 100 * MS, mono: 0 }).unwrap();
    let http = call(span(1, 3, 1, T0 + 3 * MS, T0 + 9 * MS), "GET", &[("server.address", "back"), ("server.port", "8080")]);
    let mut publish = call(span(1, 5, 4, T0 + 5 * MS, T0 + 6 * MS), "publish", &[("peer.service", "queue")]);
    publish.kind = 4;
    let callee = server(span(1, 4, 3, T0 + 4 * MS, T0 + 8 * MS));
    let internal = span(1, 6, 1, T0 + 10 * MS, T0 + 11 * MS);
    e.ingest_at(&request(vec![("back", vec![callee, publish]), ("front", vec![http, internal])]), Clocks { wall: T0 + 200 * MS, mono: 100 * MS })
        .unwrap();
    let id = u128::from_be_bytes(tid(1).try_into().unwrap());
    {
        let mut shard = lock(&e.shards[e.shard_of(id)]);
        let t = shard.trace_mut(id).unwrap();
        assert_eq!(t.calls, e.expect.call_keys(&t.spans, &t.buf, &t.groups));
        let called: Vec<(u64, bool)> = t.calls.iter().map(|k| (t.spans[k.idx as usize].span_id, k.db)).collect();
        assert_eq!(called, [(2, true), (5, false), (3, false)]);
        assert_ne!(t.calls[1].key, t.calls[2].key);
    }
    // Looked at when quiet (where the kept keys are checked against the spans again), and
    // released once nothing is expected of its calls.
    let mut out = Vec::new();
    let mut now = 100 * MS;
    while now < 20 * SEC && out.is_empty() {
        now += TICK;
        e.tick_at(Clocks { wall: T0 + 100 * MS + now, mono: now });
        while let Some(r) = e.drain(1 << 20) {
            out.extend(decode(&r.otlp));
        }
    }
    assert_eq!(out.len(), 6);
}
