//! Tests of the consistency checks and skew correction on hand-built traces.
use super::*;
use crate::checks::skew::shift_fits;
use crate::index::{ResourceEntry, ScopeEntry};
use std::sync::Arc;
use std::time::{Duration, Instant};

use FindingKind::*;

// ---- builders -------------------------------------------------------------------------

/// Groups used by the tests, by index.
const HOST_A: u32 = 0; // resource 1 on host a
const HOST_A_OTHER_PROCESS: u32 = 1; // resource 2 on host a
const HOST_B: u32 = 2; // resource 3 on host b
const HOST_C: u32 = 3; // resource 4 on host c
const UNKNOWN_1: u32 = 4; // resource 5, host unknown
const UNKNOWN_2: u32 = 5; // resource 6, host unknown
/// The three services of the machine, as their SDKs describe themselves.
const NODE_A: u32 = 6; // Node.js: host.id + host.name "a"
const JAVA_A: u32 = 7; // Java agent: host.name "a" only
const PYTHON: u32 = 8; // Python: no host attribute
const NODE_B: u32 = 9; // Node.js on host b
const JAVA_B: u32 = 10; // Java on host b
const GO_A: u32 = 11; // Go on host a (no trace-flags byte promised)
const IP_ONLY_A: u32 = 12; // host.ip of host a (among loopback), nothing else
const DOTTED_A: u32 = 13; // host.name "A.example.com"
const LOCALHOST: u32 = 14; // host.name "localhost", host.ip 127.0.0.1

fn group(hash: u64, sdk: Sdk, id: &str, name: &str, ips: &[&str]) -> Group {
    let mut host = clock::HostIdentity::default();
    host.set_id(id.as_bytes());
    host.set_name(name.as_bytes());
    for ip in ips {
        host.add_ip(ip.as_bytes());
    }
    Group {
        resource: Arc::new(ResourceEntry {
            header: hash.to_be_bytes().to_vec(),
            hash,
            host,
            sdk,
            service: format!("svc-{hash}"),
            charge: Default::default(),
        }),
        scope: Arc::new(ScopeEntry { header: Vec::new(), hash: 0, charge: Default::default() }),
    }
}

fn groups() -> Vec<Group> {
    use Sdk::*;
    vec![
        group(1, Other, "", "a", &[]),
        group(2, Other, "", "a", &[]),
        group(3, Other, "", "b", &[]),
        group(4, Other, "", "c", &[]),
        group(5, Other, "", "", &[]),
        group(6, Other, "", "", &[]),
        group(7, Nodejs, "machine-a", "a", &[]),
        group(8, Java, "", "a", &[]),
        group(9, Python, "", "", &[]),
        group(10, Nodejs, "machine-b", "b", &[]),
        group(11, Java, "", "b", &[]),
        group(12, Go, "machine-a", "a", &[]),
        group(13, Other, "", "", &["127.0.0.1", "10.0.0.1"]),
        group(14, Other, "", "A.example.com", &[]),
        group(15, Other, "", "localhost", &["127.0.0.1", "::1"]),
        scoped(group(7, Nodejs, "machine-a", "a", &[]), "@opentelemetry/instrumentation-express"),
        scoped(group(7, Nodejs, "machine-a", "a", &[]), "@opentelemetry/instrumentation-http"),
        scoped(group(8, Java, "", "a", &[]), "@opentelemetry/instrumentation-express"),
        group(16, Go, "", "", &[]),
    ]
}

const NODE_A_EXPRESS: u32 = 15; // NODE_A's process, the express instrumentation's scope
const NODE_A_HTTP: u32 = 16; // NODE_A's process, the http instrumentation's scope
const JAVA_A_EXPRESS: u32 = 17; // a non-Node.js SDK naming that scope
const GO: u32 = 18; // Go without host attributes (otelhttp at the SDK's default resource)

/// `g` with an instrumentation scope named `name` (its `ScopeSpans` header: field 1, the
/// scope, with its field 1, the name, and a version).
fn scoped(mut g: Group, name: &str) -> Group {
    let mut scope = vec![0x0a, name.len() as u8];
    scope.extend_from_slice(name.as_bytes());
    scope.extend_from_slice(&[0x12, 6]);
    scope.extend_from_slice(b"0.57.0");
    let mut header = vec![0x0a, scope.len() as u8];
    header.extend_from_slice(&scope);
    header.extend_from_slice(&[0x1a, 3]);
    header.extend_from_slice(b"url");
    g.scope = Arc::new(ScopeEntry { header, hash: 1, charge: Default::default() });
    g
}

/// A span builder: `sp(id, parent, start, end)` on host a, INTERNAL, flags 0.
#[derive(Clone)]
struct Sp(SpanRec);

fn sp(id: u64, parent: u64, start: u64, end: u64) -> Sp {
    Sp(SpanRec {
        span_id: id,
        parent_id: parent,
        start,
        end,
        flags: 0,
        kind: kind::INTERNAL,
        has_links: false,
        trace_id_valid: true,
        span_id_valid: id != 0,
        hlc_wall: 0,
        hlc_logical: 0,
        findings: 0,
        group: HOST_A,
        bytes: 0..0,
        seq: 0,
        extra: None,
    })
}

impl Sp {
    fn kind(mut self, k: u8) -> Sp {
        self.0.kind = k;
        self
    }
    fn on(mut self, g: u32) -> Sp {
        self.0.group = g;
        self
    }
    fn flags(mut self, f: u32) -> Sp {
        self.0.flags = f;
        self
    }
    fn links(mut self) -> Sp {
        self.0.has_links = true;
        self
    }
    fn ingest(mut self, f: u32) -> Sp {
        self.0.findings = f;
        self
    }
}

fn recs(spans: &[Sp]) -> Vec<SpanRec> {
    spans.iter().map(|s| s.0.clone()).collect()
}

fn check_with(spans: &[Sp], cfg: &CheckConfig) -> TraceReport {
    let r = check_trace(&recs(spans), &groups(), cfg);
    assert_eq!(r.span_findings.len(), spans.len());
    r
}

fn check(spans: &[Sp]) -> TraceReport {
    check_with(spans, &CheckConfig::default())
}

fn correcting(max: u64) -> CheckConfig {
    CheckConfig { skew_correction: true, skew_max_adjustment_ns: max, ..Default::default() }
}

fn mask(kinds: &[FindingKind]) -> u32 {
    kinds.iter().fold(0, |m, k| m | k.bit())
}

/// Indices of the spans carrying `k`.
fn marked(r: &TraceReport, k: FindingKind) -> Vec<usize> {
    (0..r.span_findings.len()).filter(|&i| r.span_findings[i] & k.bit() != 0).collect()
}

fn names(m: u32) -> Vec<&'static str> {
    FindingKind::iter_mask(m).map(FindingKind::name).collect()
}

// ---- the table: each kind, a trace that triggers it and a near-identical one that not --

struct Case {
    name: &'static str,
    kind: FindingKind,
    cfg: CheckConfig,
    /// Triggers `kind` on exactly `marked` (empty for trace-level kinds); the trace's
    /// findings are exactly `trace`.
    hit: Vec<Sp>,
    marked: Vec<usize>,
    trace: u32,
    /// Does not trigger `kind`; the trace's findings are exactly `miss_trace`.
    miss: Vec<Sp>,
    miss_trace: u32,
}

fn case(
    name: &'static str,
    kind: FindingKind,
    hit: Vec<Sp>,
    marked: Vec<usize>,
    miss: Vec<Sp>,
) -> Case {
    Case {
        name,
        kind,
        cfg: CheckConfig::default(),
        hit,
        marked,
        trace: kind.bit(),
        miss,
        miss_trace: 0,
    }
}

impl Case {
    fn trace(mut self, m: u32) -> Case {
        self.trace = m;
        self
    }
    fn cfg(mut self, c: CheckConfig) -> Case {
        self.cfg = c;
        self
    }
}

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

#[rustfmt::skip]
fn table() -> Vec<Case> {
    use kind::*;
    let root = || sp(1, 0, 10, 110);
    let ms_root = || sp(1, 0, 10 * MS, 110 * MS);
    vec![
        case("orphan vs parent present", MissingParent,
            vec![root(), sp(2, 99, 20, 30)], vec![1],
            vec![root(), sp(2, 1, 20, 30)]),
        case("only orphans vs a root", NoRoot,
            vec![sp(2, 99, 20, 30)], vec![],
            vec![sp(2, 0, 20, 30)])
            .trace(mask(&[NoRoot, MissingParent])),
        case("two roots vs root and child", MultipleRoots,
            vec![root(), sp(2, 0, 20, 30)], vec![],
            vec![root(), sp(2, 1, 20, 30)]),
        case("two roots without span IDs vs one", MultipleRoots,
            vec![sp(0, 0, 10, 20), sp(0, 0, 30, 40)], vec![],
            vec![sp(0, 0, 10, 20)]),
        case("shared root pair counts once (and no conflict)", MultipleRoots,
            vec![sp(1, 0, 10, 110).kind(CLIENT), sp(1, 0, 20, 100).kind(SERVER).on(HOST_B), sp(2, 0, 0, 1)], vec![],
            vec![sp(1, 0, 10, 110).kind(CLIENT), sp(1, 0, 20, 100).kind(SERVER).on(HOST_B)]),
        case("two-span cycle vs chain", ParentCycle,
            vec![root(), sp(2, 3, 20, 30), sp(3, 2, 20, 30)], vec![1, 2],
            vec![root(), sp(2, 3, 20, 30), sp(3, 1, 20, 30)]),
        case("self-parent vs parent", ParentCycle,
            vec![root(), sp(2, 2, 20, 30)], vec![1],
            vec![root(), sp(2, 1, 20, 30)]),
        case("same ID, different content vs different IDs", ConflictingSpanId,
            vec![root(), sp(2, 1, 20, 30), sp(2, 1, 20, 31)], vec![1, 2],
            vec![root(), sp(2, 1, 20, 30), sp(3, 1, 20, 31)]),
        case("CLIENT/SERVER pair in one resource vs in two (Zipkin shared span)", ConflictingSpanId,
            vec![root(), sp(2, 1, 20, 90).kind(CLIENT), sp(2, 1, 30, 80).kind(SERVER)], vec![1, 2],
            vec![root(), sp(2, 1, 20, 90).kind(CLIENT), sp(2, 1, 30, 80).kind(SERVER).on(HOST_B)]),
        case("three spans sharing an ID even with CLIENT and SERVER", ConflictingSpanId,
            vec![root(), sp(2, 1, 20, 90).kind(CLIENT), sp(2, 1, 30, 80).kind(SERVER).on(HOST_B), sp(2, 1, 30, 80).kind(SERVER).on(HOST_C)], vec![1, 2, 3],
            vec![root(), sp(2, 1, 20, 90).kind(CLIENT), sp(2, 1, 30, 80).kind(SERVER).on(HOST_B)]),
        case("end before start vs ordered", NegativeDuration,
            vec![root(), sp(2, 1, 50, 40)], vec![1],
            vec![root(), sp(2, 1, 40, 50)]),
        case("same host, child starts before parent vs at parent start", StartsBeforeParent,
            vec![root(), sp(2, 1, 5, 50)], vec![1],
            vec![root(), sp(2, 1, 10, 50)]),
        case("another process on the same host starting before its parent: the times beat the identity", ClockSkew,
            vec![root(), sp(2, 1, 5, 50).on(HOST_A_OTHER_PROCESS)], vec![1],
            vec![root(), sp(2, 1, 10, 50).on(HOST_A_OTHER_PROCESS)]),
        case("unknown host, same resource = same clock", StartsBeforeParent,
            vec![root().on(UNKNOWN_1), sp(2, 1, 5, 50).on(UNKNOWN_1)], vec![1],
            vec![root().on(UNKNOWN_1), sp(2, 1, 10, 50).on(UNKNOWN_1)]),
        case("starting 5 ns early is within a 5 ns tolerance, 6 ns is not", StartsBeforeParent,
            vec![root(), sp(2, 1, 4, 50)], vec![1],
            vec![root(), sp(2, 1, 5, 50)])
            .cfg(CheckConfig { child_tolerance_ns: 5, ..Default::default() }),
        case("INTERNAL child ends after vs inside", EndsAfterParent,
            vec![root(), sp(2, 1, 50, 120)], vec![1],
            vec![root(), sp(2, 1, 50, 110)]),
        case("INTERNAL child ends after vs under a PRODUCER", EndsAfterParent,
            vec![root(), sp(2, 1, 50, 120)], vec![1],
            vec![root().kind(PRODUCER), sp(2, 1, 50, 120)]),
        case("INTERNAL child ends after vs CONSUMER child", EndsAfterParent,
            vec![root(), sp(2, 1, 50, 120)], vec![1],
            vec![root(), sp(2, 1, 50, 120).kind(CONSUMER)]),
        case("INTERNAL child ends after vs PRODUCER child", EndsAfterParent,
            vec![root(), sp(2, 1, 50, 120)], vec![1],
            vec![root(), sp(2, 1, 50, 120).kind(PRODUCER)]),
        case("INTERNAL child ends after vs child with links", EndsAfterParent,
            vec![root(), sp(2, 1, 50, 120)], vec![1],
            vec![root(), sp(2, 1, 50, 120).links()]),
        case("async child is still flagged for starting before", StartsBeforeParent,
            vec![root().kind(PRODUCER), sp(2, 1, 5, 500).kind(CONSUMER)], vec![1],
            vec![root().kind(PRODUCER), sp(2, 1, 10, 500).kind(CONSUMER)]),
        case("other host starting 1 ns before its parent is skew, at its start is not", ClockSkew,
            vec![root(), sp(2, 1, 9, 50).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 10, 50).on(HOST_B)]),
        case("other process starting after its parent ended is skew, at its end is not", ClockSkew,
            vec![root(), sp(2, 1, 111, 120).kind(SERVER).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 110, 120).kind(SERVER).on(HOST_B)]),
        case("other process ending after its parent is response timing, not skew", ClockSkew,
            vec![root(), sp(2, 1, 9, 120).kind(SERVER).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 10, 1_000).kind(SERVER).on(HOST_B)]),
        case("a CONSUMER starting after its parent ended is queueing, not skew", ClockSkew,
            vec![root(), sp(2, 1, 200, 220).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 200, 220).on(HOST_B).kind(CONSUMER)]),
        case("no host attributes: unknown, not another clock; only evidence is skew", ClockSkew,
            vec![root().on(UNKNOWN_1), sp(2, 1, 5, 50).on(UNKNOWN_2)], vec![1],
            vec![root().on(UNKNOWN_1), sp(2, 1, 50, 120).on(UNKNOWN_2)]),
        case("the same shapes in one process are the child's own", EndsAfterParent,
            vec![root().on(UNKNOWN_1), sp(2, 1, 50, 120).on(UNKNOWN_1)], vec![1],
            vec![root().on(UNKNOWN_1), sp(2, 1, 50, 120).on(UNKNOWN_2)]),
        // Per-SDK tolerances (clock::Sdk::stamping), each at the edge and 1 ns beyond.
        case("Node.js child ends 22 ms after its parent (2 x 1 ms + 20 ms) vs 22 ms + 1 ns", EndsAfterParent,
            vec![ms_root().on(NODE_A), sp(2, 1, 50 * MS, 132 * MS + 1).on(NODE_A)], vec![1],
            vec![ms_root().on(NODE_A), sp(2, 1, 50 * MS, 132 * MS).on(NODE_A)]),
        case("Java child ends 2 ms + 1 ns after its parent vs 2 ms", EndsAfterParent,
            vec![ms_root().on(JAVA_A), sp(2, 1, 50 * MS, 112 * MS + 1).on(JAVA_A)], vec![1],
            vec![ms_root().on(JAVA_A), sp(2, 1, 50 * MS, 112 * MS).on(JAVA_A)]),
        case("Go SERVER starts 21 ms + 1 ns after its Java CLIENT ended vs 1 ms + 20 ms (Java's anchored clock)", ClockSkew,
            vec![ms_root().kind(CLIENT).on(JAVA_A), sp(2, 1, 131 * MS + 1, 133 * MS).kind(SERVER).on(GO_A)], vec![1],
            vec![ms_root().kind(CLIENT).on(JAVA_A), sp(2, 1, 131 * MS, 133 * MS).kind(SERVER).on(GO_A)]),
        case("Node.js's 22 ms overhang is a finding in an SDK with exact stamps", EndsAfterParent,
            vec![ms_root().on(PYTHON), sp(2, 1, 50 * MS, 132 * MS).on(PYTHON)], vec![1],
            vec![ms_root().on(PYTHON), sp(2, 1, 50 * MS, 110 * MS).on(PYTHON)]),
        case("Node.js child starts 2 ms + 1 ns before its parent vs 2 ms", StartsBeforeParent,
            vec![ms_root().on(NODE_A), sp(2, 1, 8 * MS - 1, 50 * MS).on(NODE_A)], vec![1],
            vec![ms_root().on(NODE_A), sp(2, 1, 8 * MS, 50 * MS).on(NODE_A)]),
        case("Node.js SERVER starts 2 ms + 1 ns before its Java CLIENT vs 2 ms", ClockSkew,
            vec![ms_root().kind(CLIENT).on(JAVA_A), sp(2, 1, 8 * MS - 1, 50 * MS).kind(SERVER).on(NODE_A)], vec![1],
            vec![ms_root().kind(CLIENT).on(JAVA_A), sp(2, 1, 8 * MS, 50 * MS).kind(SERVER).on(NODE_A)]),
        case("Python SERVER starts 1 ms + 1 ns before its Java CLIENT vs 1 ms", ClockSkew,
            vec![ms_root().kind(CLIENT).on(JAVA_A), sp(2, 1, 9 * MS - 1, 50 * MS).kind(SERVER).on(PYTHON)], vec![1],
            vec![ms_root().kind(CLIENT).on(JAVA_A), sp(2, 1, 9 * MS, 50 * MS).kind(SERVER).on(PYTHON)]),
        case("sampled parent, unsampled child vs both sampled", SampledFlagMismatch,
            vec![root().flags(0x01), sp(2, 1, 20, 30).flags(0x100)], vec![1],
            vec![root().flags(0x01), sp(2, 1, 20, 30).flags(0x101)]),
        case("Java writes the trace-flags byte, Python only the remote bits (0x300: unknown)", SampledFlagMismatch,
            vec![root().flags(0x101).on(NODE_A), sp(2, 1, 20, 30).flags(0x300).on(JAVA_B)], vec![1],
            vec![root().flags(0x101).on(NODE_A), sp(2, 1, 20, 30).flags(0x300).on(PYTHON)]),
        case("a zero byte is unsampled where its resource writes the byte on another span", SampledFlagMismatch,
            vec![root().flags(0x101).on(GO_A), sp(2, 1, 20, 30).flags(0x100).on(GO_A)], vec![1],
            vec![root().flags(0x101).on(NODE_A), sp(2, 1, 20, 30).flags(0x300).on(GO_A)]),
        case("child with flags vs old sender without flags", SampledFlagMismatch,
            vec![root().flags(0x301), sp(2, 1, 20, 30).flags(0x100)], vec![1],
            vec![root().flags(0x301), sp(2, 1, 20, 30).flags(0)]),
        case("unsampled child under sampled vs under unsampled parent", SampledFlagMismatch,
            vec![root().flags(0x101), sp(2, 1, 20, 30).flags(0x100)], vec![1],
            vec![root().flags(0x100), sp(2, 1, 20, 30).flags(0x100)]),
        case("declared remote parent in the same resource vs in another", RemoteParentMismatch,
            vec![root(), sp(2, 1, 20, 30).flags(0x300)], vec![1],
            vec![root(), sp(2, 1, 20, 30).flags(0x300).on(HOST_B)]),
        case("declared local parent in another resource vs in the same", RemoteParentMismatch,
            vec![root(), sp(2, 1, 20, 30).flags(0x100).on(HOST_A_OTHER_PROCESS)], vec![1],
            vec![root(), sp(2, 1, 20, 30).flags(0x100)]),
        case("a process calling itself over HTTP: remote SERVER under its own CLIENT is no mismatch", RemoteParentMismatch,
            vec![root().kind(CLIENT).on(PYTHON), sp(2, 1, 20, 30).flags(0x300).on(PYTHON)], vec![1],
            vec![root().kind(CLIENT).on(PYTHON), sp(2, 1, 20, 30).kind(SERVER).flags(0x300).on(PYTHON)]),
        case("remote bit without 'known' bit means nothing", RemoteParentMismatch,
            vec![root(), sp(2, 1, 20, 30).flags(0x300)], vec![1],
            vec![root(), sp(2, 1, 20, 30).flags(0x200)]),
    ]
}

#[test]
fn table_each_kind_triggers_and_its_near_miss_does_not() {
    let mut seen = 0u32;
    for c in table() {
        let r = check_with(&c.hit, &c.cfg);
        assert_eq!(
            names(r.trace_findings),
            names(c.trace),
            "{}: trace findings of the triggering trace",
            c.name
        );
        assert_eq!(marked(&r, c.kind), c.marked, "{}: marked spans", c.name);
        let r = check_with(&c.miss, &c.cfg);
        assert_eq!(
            names(r.trace_findings),
            names(c.miss_trace),
            "{}: trace findings of the near miss",
            c.name
        );
        assert!(marked(&r, c.kind).is_empty(), "{}", c.name);
        seen |= c.kind.bit();
    }
    // Every kind computed here has a row (the rest are set at ingest and carried).
    let ingest = mask(&[InvalidTraceId, InvalidSpanId, FutureTimestamp, HlcOffsetExceeded, ExpectedChildMissing]);
    assert_eq!(names(seen | ingest), names(FindingKind::ALL_MASK));
}

#[test]
fn table_rows_pass_nothing_when_their_check_is_disabled() {
    for c in table() {
        let cfg =
            CheckConfig { enabled: FindingKind::ALL_MASK & !c.kind.bit(), ..c.cfg.clone() };
        let r = check_with(&c.hit, &cfg);
        assert_eq!(r.trace_findings & c.kind.bit(), 0, "{}", c.name);
    }
}

// ---- the definitions of docs/DESIGN.md ("What consistency means") ---------------------

/// Trace completeness: every span eventually reaches the trace. A
/// span whose parent has not reached the trace is an orphan; the missing IDs are listed.
#[test]
fn definition_1_2_every_span_reaches_the_trace() {
    let partial = [
        sp(1, 0, 0, 100),
        sp(2, 7, 10, 20),
        sp(3, 5, 10, 20),
        sp(4, 7, 10, 20),
        sp(5, 7, 5, 50),
    ];
    let r = check(&partial);
    assert_eq!(r.missing_parents, vec![7]);
    assert_eq!(marked(&r, MissingParent), vec![1, 3, 4]);
    assert_eq!(marked(&r, MultipleRoots), Vec::<usize>::new()); // trace-level only

    let without_5 = [sp(1, 0, 0, 100), sp(3, 5, 10, 20), sp(2, 7, 10, 20)];
    assert_eq!(check(&without_5).missing_parents, vec![5, 7]);

    let mut complete = partial.to_vec();
    complete.push(sp(7, 1, 1, 60));
    let r = check(&complete);
    assert!(r.missing_parents.is_empty());
    assert_eq!(r.trace_findings, 0);
}

/// Span order: parent → child implies the parent's timestamp comes
/// first. On one clock a violation is the child's; across clocks it is clock skew.
#[test]
fn definition_1_3_parent_before_child_causality() {
    let same_host = check(&[sp(1, 0, 100, 200), sp(2, 1, 90, 150)]);
    assert_eq!(marked(&same_host, StartsBeforeParent), vec![1]);
    assert_eq!(names(same_host.trace_findings), vec!["starts_before_parent"]);

    let other_host = check(&[sp(1, 0, 100, 200), sp(2, 1, 90, 150).on(HOST_B)]);
    assert_eq!(names(other_host.trace_findings), vec!["clock_skew"]);
    assert_eq!(marked(&other_host, ClockSkew), vec![1]);

    let causal =
        check(&[sp(1, 0, 100, 200), sp(2, 1, 100, 200), sp(3, 2, 150, 160).on(HOST_B)]);
    assert_eq!(causal.trace_findings, 0);
}

/// Context consistency: the child keeps the trace, its
/// parent_span_id names the parent, the sampled flag is inherited, and the remote-parent
/// bits agree with where the parent actually is.
#[test]
fn definition_1_4_context_propagation_keeps_trace_and_parent() {
    // Client on host a calls a server on host b: remote parent, sampled all the way.
    let good = [
        sp(1, 0, 0, 100).kind(kind::SERVER).flags(0x101),
        sp(2, 1, 10, 90).kind(kind::CLIENT).flags(0x101),
        sp(3, 2, 20, 80).kind(kind::SERVER).flags(0x301).on(HOST_B),
        sp(4, 3, 30, 70).flags(0x101).on(HOST_B),
    ];
    assert_eq!(check(&good).trace_findings, 0);

    // The server dropped the sampled flag.
    let mut unsampled = good.clone();
    unsampled[2] = unsampled[2].clone().flags(0x300);
    let r = check(&unsampled);
    assert_eq!(names(r.trace_findings), vec!["sampled_flag_mismatch"]);
    assert_eq!(marked(&r, SampledFlagMismatch), vec![2]);

    // The server claims a local parent, but its parent is in another service.
    let mut local = good.clone();
    local[2] = local[2].clone().flags(0x101);
    let r = check(&local);
    assert_eq!(names(r.trace_findings), vec!["remote_parent_mismatch"]);
    assert_eq!(marked(&r, RemoteParentMismatch), vec![2]);

    // The parent_span_id names a span that is not the parent (not in the trace).
    let mut broken = good.clone();
    broken[2] = sp(3, 0x2_0000_0000, 20, 80).kind(kind::SERVER).flags(0x301).on(HOST_B);
    let r = check(&broken);
    assert_eq!(r.missing_parents, vec![0x2_0000_0000]);
    assert_eq!(marked(&r, MissingParent), vec![2]);
}

// ---- clock identity ----------------------------------------------------------------------

fn host(g: u32) -> clock::HostIdentity {
    groups()[g as usize].resource.host
}

#[test]
fn same_host_from_any_shared_host_identity() {
    // Node.js (host.id + host.name), the Java agent (host.name) and a Go process (host.id +
    // host.name) on one machine; an IP-only resource; a dotted name.
    for (a, b) in [(NODE_A, JAVA_A), (NODE_A, GO_A), (JAVA_A, HOST_A), (JAVA_A, DOTTED_A)] {
        assert!(host(a).shares_host(&host(b)), "{a} {b}");
        assert!(host(b).shares_host(&host(a)), "{b} {a}");
    }
    // Near misses: another host's name, another host.id with no common name.
    assert!(!host(NODE_A).shares_host(&host(NODE_B)));
    assert!(!host(JAVA_A).shares_host(&host(JAVA_B)));
    let mut other_id = clock::HostIdentity::default();
    other_id.set_id(b"machine-b");
    assert!(!host(NODE_A).shares_host(&other_id));
    // IPs: one common address is enough; loopback is on every host and says nothing.
    let mut ip = clock::HostIdentity::default();
    ip.add_ip(b"10.0.0.1");
    assert!(host(IP_ONLY_A).shares_host(&ip));
    let mut other_ip = clock::HostIdentity::default();
    other_ip.add_ip(b"10.0.0.2");
    other_ip.add_ip(b"127.0.0.1");
    assert!(!host(IP_ONLY_A).shares_host(&other_ip));
    // `localhost` and loopback addresses name no host: unknown, like no attribute at all.
    assert!(!host(LOCALHOST).is_known());
    assert!(!host(LOCALHOST).shares_host(&host(LOCALHOST)));
    assert!(!host(PYTHON).is_known());
    assert!(!host(PYTHON).shares_host(&host(UNKNOWN_1)));
    // A dotted name matches a short one by its first label, not another dotted one.
    let mut x = clock::HostIdentity::default();
    x.set_name(b"a.other.org");
    assert!(host(JAVA_A).shares_host(&x));
    assert!(!host(DOTTED_A).shares_host(&x));
}

#[test]
fn domains_join_resources_through_any_shared_identity() {
    let hosts = [host(JAVA_A), host(NODE_A), host(PYTHON), host(UNKNOWN_1), host(NODE_B), host(DOTTED_A)];
    let mut d = clock::Domains::new(&hosts);
    let dom: Vec<usize> = (0..hosts.len()).map(|i| d.domain(i)).collect();
    assert_eq!(dom[0], dom[1]);
    assert_eq!(dom[0], dom[5]);
    // Unknown hosts are each their own domain, never another host's.
    assert_ne!(dom[2], dom[3]);
    assert!(![dom[0], dom[4]].contains(&dom[2]));
    assert_ne!(dom[0], dom[4]);
    d.split(1);
    assert_ne!(d.domain(1), d.domain(0));
    assert_eq!(d.domain(0), d.domain(5));
}

// ---- real RPC shapes ----------------------------------------------------------------------

/// A synchronous call from `caller` to `callee`, as the official SDKs record it on one
/// machine with one clock: the root SERVER span of `caller` (0..20 ms), its CLIENT span
/// (2..18 ms), the callee's SERVER span starting `latency` after the client and ending
/// `server_end_after` after the client's end, and an INTERNAL child inside it.
/// Every time is 1 s late, so that a callee offset of -300 ms stays positive.
fn rpc(caller: u32, callee: u32, latency: u64, server_end_after: u64, callee_offset: i64) -> Vec<Sp> {
    const BASE: u64 = 1_000 * MS;
    let t = |ns: u64| (BASE as i64 + ns as i64 + callee_offset) as u64;
    vec![
        sp(1, 0, BASE, BASE + 20 * MS).kind(kind::SERVER).on(caller),
        sp(2, 1, BASE + 2 * MS, BASE + 18 * MS).kind(kind::CLIENT).on(caller),
        sp(3, 2, t(2 * MS + latency), t(18 * MS + server_end_after)).kind(kind::SERVER).on(callee),
        sp(4, 3, t(5 * MS), t(15 * MS)).on(callee),
    ]
}

#[test]
fn normal_rpc_shapes_of_the_official_sdks_are_no_finding_and_move_nothing() {
    let pairs = [
        (NODE_A, PYTHON),
        (PYTHON, NODE_A),
        (JAVA_A, NODE_A),
        (NODE_A, JAVA_A),
        (JAVA_A, PYTHON),
        (PYTHON, JAVA_A),
    ];
    for (caller, callee) in pairs {
        // The server ends 0.1 to 6 ms after its client read the response.
        for end_after in [100 * US, MS, 6 * MS] {
            let mut spans = rpc(caller, callee, 300 * US, end_after, 0);
            if groups()[callee as usize].resource.sdk == Sdk::Nodejs {
                // Node.js stamps the start in whole milliseconds: the server reads up to
                // 1 ms earlier than it started, here 0.7 ms before its client.
                spans[2].0.start = spans[1].0.start - 700 * US;
            }
            let r = check_with(&spans, &correcting(u64::MAX));
            assert_eq!(names(r.trace_findings), Vec::<&str>::new(), "{caller}->{callee} {end_after}");
            assert!(r.skew_adjustments.is_empty(), "{caller}->{callee}: {:?}", r.skew_adjustments);
        }
    }
    // Node.js's own overhang: express / router children ending on the same `close` event,
    // 1 ms and 6 ms after the http SERVER span.
    for overhang in [MS, 6 * MS] {
        let spans = [
            sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(NODE_A),
            sp(2, 1, 1 * MS, 20 * MS + overhang).on(NODE_A),
            sp(3, 2, 1 * MS, 20 * MS + overhang + 10 * US).on(NODE_A),
        ];
        assert_eq!(check_with(&spans, &correcting(u64::MAX)).trace_findings, 0);
    }
    // A real overhang, well beyond the SDK's: still found.
    let spans = [sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(NODE_A), sp(2, 1, MS, 70 * MS).on(NODE_A)];
    assert_eq!(marked(&check(&spans), EndsAfterParent), vec![1]);
}

#[test]
fn a_node_express_layer_ending_after_its_server_span_by_a_pause_is_no_finding() {
    // Express's request handler span ends on the response's event, in a listener after the
    // http SERVER span's: a pause of the process between the two (a loaded machine) shows as
    // an overhang of tens of ms; up to 250 ms (+ 2 ms of stamps) it is no finding, beyond it
    // is, and so is the same overhang of any other span of the process.
    let server = |g| sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(g);
    let edge = 20 * MS + LAYER_OVERHANG_NS + 2 * MS;
    for (what, child, parent_layer, found) in [
        ("a 33 ms overhang of the request handler", sp(2, 1, MS, 53 * MS).on(NODE_A_EXPRESS), false, false),
        ("the request handler at the edge", sp(2, 1, MS, edge).on(NODE_A_EXPRESS), false, false),
        ("the request handler 1 ns beyond", sp(2, 1, MS, edge + 1).on(NODE_A_EXPRESS), false, true),
        ("a 33 ms overhang of a span of another scope", sp(2, 1, MS, 53 * MS).on(NODE_A_HTTP), false, true),
        ("a 33 ms overhang of an express span in the process of a non-Node.js SDK", sp(2, 1, MS, 53 * MS).on(JAVA_A_EXPRESS), false, true),
        ("a 33 ms overhang under an express layer span", sp(3, 2, MS, 53 * MS).on(NODE_A_EXPRESS), true, false),
        ("a 33 ms overhang under an INTERNAL span of another scope", sp(3, 2, MS, 53 * MS).on(NODE_A_EXPRESS), false, true),
    ] {
        let mut spans = vec![server(if child.0.group == JAVA_A_EXPRESS { JAVA_A } else { NODE_A_HTTP })];
        if child.0.parent_id == 2 {
            let mid = sp(2, 1, MS, 20 * MS);
            spans.push(if parent_layer { mid.on(NODE_A_EXPRESS) } else { mid.on(NODE_A_HTTP) });
        }
        let idx = spans.len();
        spans.push(child);
        let want: Vec<usize> = if found { vec![idx] } else { vec![] };
        assert_eq!(marked(&check(&spans), EndsAfterParent), want, "{what}");
    }
    // The express span under a SERVER span of another process is across processes: skew
    // rules, no "ends after".
    let spans = [sp(1, 0, 0, 20 * MS).kind(kind::CLIENT).on(JAVA_A), sp(2, 1, MS, 400 * MS).on(NODE_A_EXPRESS)];
    assert_eq!(marked(&check(&spans), EndsAfterParent), Vec::<usize>::new());
}

/// A healthy trace of the real applications (one machine, one clock; ns after the Python
/// root's start): the Java agent's CLIENT span ends 3.858 ms before its Go callee starts.
/// The CLIENT's times come from the anchor read at the Java SERVER's start, and a pause of
/// that thread between the anchor's wall-clock and `nanoTime` reads makes them early.
fn java_anchor_paused() -> Vec<Sp> {
    let t = |ns: u64| 1_796_218_069_881_123_883 + ns;
    vec![
        sp(1, 0, t(0), t(458_513_940)).kind(kind::SERVER).on(PYTHON),
        sp(2, 1, t(9_436_588), t(458_309_902)).kind(kind::CLIENT).on(PYTHON),
        sp(3, 2, t(92_876_117), t(410_042_830)).kind(kind::SERVER).on(NODE_A),
        sp(4, 3, t(108_876_117), t(410_988_904)).on(NODE_A_EXPRESS),
        sp(5, 4, t(108_876_117), t(380_522_084)).kind(kind::CLIENT).on(NODE_A),
        sp(6, 5, t(253_442_929), t(284_391_356)).kind(kind::SERVER).on(JAVA_A),
        sp(7, 6, t(253_656_622), t(283_733_211)).kind(kind::CLIENT).on(JAVA_A),
        sp(8, 7, t(287_591_175), t(287_636_711)).kind(kind::SERVER).on(GO),
    ]
}

#[test]
fn a_callee_starting_after_its_java_client_ended_by_an_anchor_pause_is_no_finding() {
    let spans = java_anchor_paused();
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(names(r.trace_findings), Vec::<&str>::new());
    assert!(r.skew_adjustments.is_empty());
    // The edge: 20 ms of pause + 1 ms of Java's granularity after the CLIENT's end; 1 ns
    // beyond is skew.
    let client_end = spans[6].0.end;
    for (after, found) in [(21 * MS, false), (21 * MS + 1, true)] {
        let mut s = spans.clone();
        s[7].0.start = client_end + after;
        s[7].0.end = s[7].0.start + 45_536;
        assert_eq!(marked(&check(&s), ClockSkew), if found { vec![7] } else { vec![] }, "{after}");
    }
    // Only the end side: a Go SERVER starting 1 ms + 1 ns before its Java CLIENT started is
    // skew, as before.
    let mut s = spans.clone();
    s[7].0.start = spans[6].0.start - MS - 1;
    assert_eq!(marked(&check(&s), ClockSkew), vec![7]);
    // Only under a Java parent: the same 3.858 ms after a Python CLIENT's end is skew.
    let s = [
        sp(1, 0, 0, 40 * MS).kind(kind::SERVER).on(PYTHON),
        sp(2, 1, MS, 30 * MS).kind(kind::CLIENT).on(PYTHON),
        sp(3, 2, 30 * MS + 3_858 * US, 30 * MS + 3_904 * US).kind(kind::SERVER).on(GO),
    ];
    assert_eq!(marked(&check(&s), ClockSkew), vec![2]);
}

/// A callee whose clock runs `offset` ahead (faketime), for each way its host may look:
/// another host, no host attribute (Python), or the caller's own host attributes.
fn skewed_callees() -> [(u32, u32); 3] {
    [(NODE_A, JAVA_B), (NODE_A, PYTHON), (NODE_A, JAVA_A)]
}

#[test]
fn callee_300_ms_ahead_is_skew_and_is_moved_back_inside_its_parent_alone() {
    for (caller, callee) in skewed_callees() {
        // +300 ms: the server span starts (and ends) after its client ended.
        let spans = rpc(caller, callee, 300 * US, 200 * US, 300 * MS as i64);
        let r = check(&spans);
        assert_eq!(marked(&r, ClockSkew), vec![2], "{callee}");
        assert_eq!(names(r.trace_findings), vec!["clock_skew"]);
        let r = check_with(&spans, &correcting(u64::MAX));
        assert_eq!(marked(&r, ClockSkew), vec![2]);
        // Centred in the client: (16 ms - 15.9 ms) / 2 = 50 us after its start.
        let d = -(300 * MS as i64 + 250 * US as i64);
        assert_eq!(r.skew_adjustments, vec![0, 0, d, d], "{callee}");
        let (cs, ce) = (spans[2].0.start as i64 + d, spans[2].0.end as i64 + d);
        assert!(cs >= spans[1].0.start as i64 && ce <= spans[1].0.end as i64);
    }
}

#[test]
fn callee_300_ms_behind_is_skew_and_is_moved_forward_inside_its_parent_alone() {
    for (caller, callee) in skewed_callees() {
        // -300 ms: the server span starts before its client started.
        let spans = rpc(caller, callee, 300 * US, 200 * US, -(300 * MS as i64));
        let r = check(&spans);
        assert_eq!(marked(&r, ClockSkew), vec![2], "{callee}");
        let r = check_with(&spans, &correcting(u64::MAX));
        let d = 300 * MS as i64 - 250 * US as i64;
        assert_eq!(r.skew_adjustments, vec![0, 0, d, d], "{callee}");
    }
}

#[test]
fn skew_smaller_than_the_tolerance_is_no_finding_and_one_beyond_it_is() {
    // A Node.js callee 2 ms behind its Java caller (its start read early by the
    // granularity of both) is within; 1 ns more is skew.
    let tol = 2 * MS;
    let at = |back: u64| {
        vec![
            sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(JAVA_A),
            sp(2, 1, 5 * MS, 18 * MS).kind(kind::CLIENT).on(JAVA_A),
            sp(3, 2, 5 * MS - back, 17 * MS).kind(kind::SERVER).on(NODE_A),
        ]
    };
    let r = check_with(&at(tol), &correcting(u64::MAX));
    assert_eq!(r.trace_findings, 0);
    assert!(r.skew_adjustments.is_empty());
    let r = check_with(&at(tol + 1), &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![2]);
    assert_eq!(r.skew_adjustments.len(), 3);
}

#[test]
fn a_skewed_host_moves_as_one_domain_and_nothing_else_moves() {
    // Host b runs 300 ms ahead: its Java server (one finding) calls a Node.js service on
    // the same host (no finding: one clock), which calls back into a Python service on
    // host a's clock (skew on original times: it starts 300 ms "before" its parent).
    let skew = 300 * MS;
    let spans = [
        sp(1, 0, 0, 40 * MS).kind(kind::SERVER).on(NODE_A),
        sp(2, 1, 2 * MS, 38 * MS).kind(kind::CLIENT).on(NODE_A),
        sp(3, 2, skew + 3 * MS, skew + 37 * MS).kind(kind::SERVER).on(JAVA_B),
        sp(4, 3, skew + 4 * MS, skew + 36 * MS).kind(kind::CLIENT).on(JAVA_B),
        sp(5, 4, skew + 5 * MS, skew + 35 * MS).kind(kind::SERVER).on(NODE_B),
        sp(6, 5, skew + 6 * MS, skew + 34 * MS).kind(kind::CLIENT).on(NODE_B),
        sp(7, 6, 7 * MS, 33 * MS).kind(kind::SERVER).on(PYTHON),
    ];
    let r = check(&spans);
    assert_eq!(marked(&r, ClockSkew), vec![2, 6]);
    let r = check_with(&spans, &correcting(u64::MAX));
    let d = -(skew as i64);
    assert_eq!(r.skew_adjustments, vec![0, 0, d, d, d, d, 0]);
}

/// Python calls Node.js, which calls Java, in a call longer than Node.js's skew: Node.js's
/// SERVER starts inside its Python client and overhangs its end; its Java callee starts
/// before Node.js's CLIENT. `node_ahead` / `java_behind` shift the processes' clocks, and
/// `enter` is how long the Python client waits before Node.js receives the call.
fn slow_chain(node_ahead: u64, java_behind: u64, enter: u64) -> Vec<Sp> {
    let base = 1_000 * MS;
    let n = |t: u64| base + t + node_ahead;
    let j = |t: u64| base + t - java_behind;
    vec![
        sp(1, 0, base, base + 520 * MS).kind(kind::SERVER).on(PYTHON),
        sp(2, 1, base + 5 * MS, base + 515 * MS).kind(kind::CLIENT).on(PYTHON),
        sp(3, 2, n(5 * MS + enter), n(514 * MS + 300 * US)).kind(kind::SERVER).on(NODE_B),
        sp(4, 3, n(8 * MS + enter), n(512 * MS)).kind(kind::CLIENT).on(NODE_B),
        sp(5, 4, j(8 * MS + enter + 400 * US), j(511 * MS)).kind(kind::SERVER).on(JAVA_A),
    ]
}

#[test]
fn a_caller_ahead_by_less_than_its_call_is_found_by_its_callee_and_blamed() {
    // Node.js 300 ms ahead: Java starts 300 ms before Node.js's CLIENT (evidence on the Java
    // span), and Node.js's SERVER overhangs its Python client by 300 ms (no evidence alone):
    // Node.js is the process ahead. It gets the finding on its entry span, and only its
    // spans move.
    let spans = slow_chain(300 * MS, 0, 300 * US);
    let r = check(&spans);
    assert_eq!(marked(&r, ClockSkew), vec![2, 4]);
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![2, 4]);
    // Node.js's SERVER (509 ms) is centred in its Python CLIENT (510 ms): it moves back by
    // 305.3 ms - 5.5 ms.
    let d = -(299 * MS as i64 + 800 * US as i64);
    assert_eq!(r.skew_adjustments, vec![0, 0, d, d, 0]);
    let (cs, ce) = (spans[2].0.start as i64 + d, spans[2].0.end as i64 + d);
    assert!(cs >= spans[1].0.start as i64 && ce <= spans[1].0.end as i64);

    // Near miss: Java 300 ms behind and Node.js right. Moving Node.js back would make it
    // start before its Python client: Java is the one, and only Java moves.
    let spans = slow_chain(0, 300 * MS, 300 * US);
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![4]);
    assert_eq!(r.skew_adjustments, vec![0, 0, 0, 0, 300 * MS as i64 + 300 * US as i64]);

    // Near miss: Java behind, and Node.js entered late enough (320 ms into the call) that it
    // could move back; but it ends inside its client, no overhang: Java is the one.
    let spans = slow_chain(0, 300 * MS, 320 * MS);
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![4]);
    assert_eq!(r.skew_adjustments[..4], [0, 0, 0, 0]);
    assert!(r.skew_adjustments[4] > 0);
}

/// A fan-out trace of the real applications (Node.js under faketime +0.3 s, a cold JVM), as
/// the harness printed it, to 0.1 ms (the Java SERVERs' ends, the Node.js CLIENTs' ends and
/// the Java CLIENTs are filled in to match; µs after the Python root's start): Python's CLIENT waits 317 ms before Node.js
/// receives the call, so Node.js's SERVER starts inside it and overhangs its end by only
/// 90.8 ms, while the three Java SERVERs start ~296 ms before their Node.js CLIENTs. Java's
/// own callees (Go, and Python's /lookup) agree with Java. `java_behind` instead puts Java
/// 300 ms behind the others (Node.js right): then its callees disagree with it.
fn cold_fan_out(java_behind: bool) -> Vec<Sp> {
    let t = |us: u64| 1_000 * MS + us * US;
    // A callee of Java, on the others' clock: 300 ms after Java's times when Java is behind.
    let o = |us: u64| if java_behind { t(us + 300_000) } else { t(us) };
    vec![
        sp(1, 0, t(0), t(395_000)).kind(kind::SERVER).on(PYTHON),
        sp(2, 1, t(2_800), t(393_600)).kind(kind::CLIENT).on(PYTHON),
        sp(3, 2, t(320_000), t(484_400)).kind(kind::SERVER).on(NODE_A),
        sp(4, 3, t(334_000), t(471_000)).kind(kind::CLIENT).on(NODE_A),
        sp(5, 3, t(334_500), t(478_000)).kind(kind::CLIENT).on(NODE_A),
        sp(6, 3, t(335_000), t(484_000)).kind(kind::CLIENT).on(NODE_A),
        sp(7, 4, t(38_000), t(170_500)).kind(kind::SERVER).on(JAVA_A),
        sp(8, 5, t(39_000), t(177_500)).kind(kind::SERVER).on(JAVA_A),
        sp(9, 6, t(40_000), t(183_500)).kind(kind::SERVER).on(JAVA_A),
        sp(10, 7, t(40_600), t(41_700)).kind(kind::CLIENT).on(JAVA_A),
        sp(11, 10, o(41_100), o(41_150)).kind(kind::SERVER).on(UNKNOWN_1),
        sp(12, 7, t(82_000), t(85_000)).kind(kind::CLIENT).on(JAVA_A),
        sp(13, 12, o(82_600), o(84_300)).kind(kind::SERVER).on(PYTHON),
    ]
}

#[test]
fn a_caller_ahead_whose_callee_agrees_with_its_own_callees_is_blamed_though_it_overhangs_little() {
    // Node.js overhangs its client by 90.8 ms, less than half the 296 ms its Java callees
    // need; but moving Java forward instead would make Go and Python start ~298 ms before
    // the Java CLIENTs they answered. Node.js is the one ahead: its entry span gets the
    // finding, and only its spans move, back by 296 ms (the edge of the window its three
    // Java callees allow nearest the centring estimate).
    let spans = cold_fan_out(false);
    let r = check(&spans);
    assert_eq!(marked(&r, ClockSkew), vec![2, 6, 7, 8]);
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![2, 6, 7, 8]);
    let d = -(296 * MS as i64);
    assert_eq!(r.skew_adjustments, vec![0, 0, d, d, d, d, 0, 0, 0, 0, 0, 0, 0]);
    let (cs, ce) = (spans[2].0.start as i64 + d, spans[2].0.end as i64 + d);
    assert!(cs >= spans[1].0.start as i64 && ce <= spans[1].0.end as i64);

    // Near miss: Java 300 ms behind, Node.js right (its client waited as long). Java's
    // callees start after the Java CLIENTs ended: moving Java forward fixes them, so Java is
    // the one, and Node.js stays.
    let spans = cold_fan_out(true);
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![6, 7, 8, 10, 12]);
    assert_eq!(r.skew_adjustments[..6], [0; 6]);
    assert!((6..10).chain([11]).all(|i| r.skew_adjustments[i] > 0), "{:?}", r.skew_adjustments);
}

#[test]
fn the_offset_is_narrowed_to_what_the_other_edges_of_the_domain_allow() {
    // Times of a real trace (Node.js under faketime +0.3 s, ms): centring Node.js's SERVER
    // (54.7) in its Python CLIENT (74.0) moves it back by 291.2 ms, which would leave its
    // Java callee starting 6.6 ms before Node.js's CLIENT. Every edge of Node.js's domain
    // allows -300.9 .. -297.8 ms: the offset is narrowed into it and Java does not move.
    let t = |ms_x1000: u64| 1_000 * MS + ms_x1000 * US;
    let spans = [
        sp(1, 0, t(0), t(76_000)).kind(kind::SERVER).on(PYTHON),
        sp(2, 1, t(1_714), t(75_720)).kind(kind::CLIENT).on(PYTHON),
        sp(3, 2, t(302_563), t(357_319)).kind(kind::SERVER).on(NODE_B),
        sp(4, 3, t(313_563), t(356_164)).kind(kind::CLIENT).on(NODE_B),
        sp(5, 4, t(15_764), t(41_531)).kind(kind::SERVER).on(JAVA_A),
    ];
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![2, 4]);
    let d = r.skew_adjustments[2];
    assert_eq!(r.skew_adjustments, vec![0, 0, d, d, 0]);
    assert_eq!(d, -(297_799 * US as i64), "the end of the window nearest the centring estimate");
    // Without the callee, the centring estimate stands.
    let r = check_with(&spans[..3], &correcting(u64::MAX));
    assert_eq!(r.skew_adjustments[2], -(291_224 * US as i64));
}

#[test]
fn a_domain_without_a_finding_never_moves() {
    // The callee moved; a grandchild on a third host fitted the callee as received and has
    // no finding: it stays where it is (no evidence against its clock).
    let spans = [
        sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(HOST_A),
        sp(2, 1, 2 * MS, 18 * MS).kind(kind::CLIENT).on(HOST_A),
        sp(3, 2, 303 * MS, 317 * MS).kind(kind::SERVER).on(HOST_B),
        sp(4, 3, 304 * MS, 316 * MS).kind(kind::CLIENT).on(HOST_B),
        sp(5, 4, 305 * MS, 315 * MS).kind(kind::SERVER).on(HOST_C),
    ];
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![2]);
    assert_eq!(r.skew_adjustments, vec![0, 0, -300 * MS as i64, -300 * MS as i64, 0]);
}

#[test]
fn a_domain_with_a_finding_that_fits_its_corrected_parent_does_not_move() {
    // Host b is 300 ms ahead; host c is right. c's server has a finding on the original
    // times (it starts before b's client), but fits once b moved.
    let spans = [
        sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(HOST_A),
        sp(2, 1, 2 * MS, 18 * MS).kind(kind::CLIENT).on(HOST_A),
        sp(3, 2, 303 * MS, 317 * MS).kind(kind::SERVER).on(HOST_B),
        sp(4, 3, 304 * MS, 316 * MS).kind(kind::CLIENT).on(HOST_B),
        sp(5, 4, 5 * MS, 15 * MS).kind(kind::SERVER).on(HOST_C),
    ];
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(marked(&r, ClockSkew), vec![2, 4]);
    let d = -(300 * MS as i64);
    assert_eq!(r.skew_adjustments, vec![0, 0, d, d, 0]);
}

#[test]
fn offset_beyond_the_maximum_is_not_applied_finding_kept() {
    let spans = rpc(NODE_A, JAVA_B, 300 * US, 200 * US, 300 * MS as i64);
    let need = 300 * MS + 250 * US;
    let r = check_with(&spans, &correcting(need - 1));
    assert!(r.skew_adjustments.is_empty(), "{:?}", r.skew_adjustments);
    assert_eq!(marked(&r, ClockSkew), vec![2]);
    // At exactly the maximum it is applied.
    let r = check_with(&spans, &correcting(need));
    assert_eq!(r.skew_adjustments[2], -(need as i64));
}

#[test]
fn longer_or_async_child_is_moved_to_start_with_its_parent() {
    // A SERVER longer than its CLIENT (the client timed out) that starts 40 ns before it.
    let r = check_with(&[sp(1, 0, 10, 110).kind(kind::CLIENT), sp(2, 1, 0, 150).kind(kind::SERVER).on(HOST_B)], &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, 10]);
    // A consumer on b starts 40 before its producer on a: moved by 40, not centred.
    let spans = [
        sp(1, 0, 100, 110).kind(kind::PRODUCER),
        sp(2, 1, 60, 70).on(HOST_B).kind(kind::CONSUMER),
    ];
    let r = check_with(&spans, &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, 40]);
    // Ending, or starting, long after the producer is queueing: no finding, no move.
    let spans = [
        sp(1, 0, 100, 110).kind(kind::PRODUCER),
        sp(2, 1, 905, 990).on(HOST_B).kind(kind::CONSUMER),
    ];
    let r = check_with(&spans, &correcting(1_000));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(r.trace_findings, 0);
}

#[test]
fn same_process_violations_are_never_corrected() {
    let spans = [sp(1, 0, 10, 110), sp(2, 1, 0, 50), sp(3, 1, 20, 150)];
    let r = check_with(&spans, &correcting(1_000));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(marked(&r, StartsBeforeParent), vec![1]);
    assert_eq!(marked(&r, EndsAfterParent), vec![2]);
}

#[test]
fn orphans_are_roots_of_their_own_and_move_with_their_domain() {
    // The orphan on b (its parent was lost) moves with b's domain once b's offset is known
    // from the real root's subtree.
    let spans = [
        sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(HOST_A),
        sp(2, 1, 2 * MS, 18 * MS).kind(kind::CLIENT).on(HOST_A),
        sp(9, 99, 310 * MS, 311 * MS).on(HOST_B),
        sp(3, 2, 303 * MS, 317 * MS).kind(kind::SERVER).on(HOST_B),
    ];
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(r.missing_parents, vec![99]);
    let d = -(300 * MS as i64);
    assert_eq!(r.skew_adjustments, vec![0, 0, d, d]);
    // Without a finding anywhere, an orphan never moves.
    let r = check_with(&spans[..3], &correcting(u64::MAX));
    assert!(r.skew_adjustments.is_empty());
}

#[test]
fn skew_correction_off_reports_but_never_shifts() {
    let r = check(&[sp(1, 0, 10, 110), sp(2, 1, 0, 50).on(HOST_B)]);
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(marked(&r, ClockSkew), vec![1]);
    // And with the clock_skew check disabled, correction does not run either.
    let cfg =
        CheckConfig { enabled: FindingKind::ALL_MASK & !ClockSkew.bit(), ..correcting(1_000) };
    let r = check_with(&[sp(1, 0, 10, 110), sp(2, 1, 0, 50).on(HOST_B)], &cfg);
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(r.trace_findings, 0);
}

#[test]
fn shift_that_would_leave_the_time_range_is_not_applied() {
    // Host b's offset is -300; its child starting at 0 cannot move and stays.
    let spans = [
        sp(1, 0, 0, 20 * MS).kind(kind::SERVER).on(HOST_A),
        sp(2, 1, 2 * MS, 18 * MS).kind(kind::CLIENT).on(HOST_A),
        sp(3, 2, 303 * MS, 317 * MS).kind(kind::SERVER).on(HOST_B),
        sp(4, 3, 0, 316 * MS).on(HOST_B),
    ];
    let r = check_with(&spans, &correcting(u64::MAX));
    assert_eq!(r.skew_adjustments, vec![0, 0, -300 * MS as i64, 0]);
    // An offset beyond what `i64` holds is never applied, whatever the maximum.
    let spans = [sp(1, 0, u64::MAX - 10, u64::MAX), sp(2, 1, 0, 5).on(HOST_B)];
    let r = check_with(&spans, &correcting(u64::MAX));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(marked(&r, ClockSkew), vec![1]);
}

// ---- graph details -------------------------------------------------------------------------

#[test]
fn children_of_a_shared_span_hang_under_the_server() {
    // CLIENT on a (10..100), SERVER on b (20..90); a child on b at 15..30 is compared with
    // the SERVER on its own clock: starts before it.
    let spans = [
        sp(1, 0, 0, 200),
        sp(2, 1, 10, 100).kind(kind::CLIENT),
        sp(2, 1, 20, 90).kind(kind::SERVER).on(HOST_B),
        sp(3, 2, 15, 30).on(HOST_B),
    ];
    let r = check(&spans);
    assert_eq!(marked(&r, StartsBeforeParent), vec![3]);
    assert_eq!(marked(&r, ConflictingSpanId), Vec::<usize>::new());
    assert_eq!(marked(&r, ClockSkew), Vec::<usize>::new());
}

#[test]
fn conflicting_duplicates_resolve_to_the_first_copy() {
    // Child on host a, compared with the first copy of span 2 (20..30), not the second.
    let spans = [sp(1, 0, 0, 200), sp(2, 1, 20, 30), sp(2, 1, 10, 100), sp(3, 2, 15, 25)];
    let r = check(&spans);
    assert_eq!(marked(&r, ConflictingSpanId), vec![1, 2]);
    assert_eq!(marked(&r, StartsBeforeParent), vec![3]);
}

#[test]
fn cycle_marks_only_the_spans_on_it() {
    // 2 -> 3 -> 4 -> 2 is a cycle; 5 hangs below it and 6 is a normal child of the root.
    let spans = [
        sp(1, 0, 0, 100),
        sp(2, 4, 10, 20),
        sp(3, 2, 10, 20),
        sp(4, 3, 10, 20),
        sp(5, 3, 10, 20),
        sp(6, 1, 10, 20),
    ];
    let r = check(&spans);
    assert_eq!(marked(&r, ParentCycle), vec![1, 2, 3]);
    assert_eq!(names(r.trace_findings), vec!["parent_cycle"]);
}

#[test]
fn ingest_findings_are_carried_even_with_every_check_off() {
    let spans = [
        sp(1, 0, 0, 100).ingest(FutureTimestamp.bit()),
        sp(2, 99, 200, 100).ingest(InvalidTraceId.bit()),
    ];
    let r = check_with(&spans, &CheckConfig { enabled: 0, ..Default::default() });
    assert_eq!(r.span_findings, vec![FutureTimestamp.bit(), InvalidTraceId.bit()]);
    assert_eq!(r.trace_findings, mask(&[FutureTimestamp, InvalidTraceId]));
    assert!(r.missing_parents.is_empty());
}

#[test]
fn summary_span_is_the_earliest_root_else_the_earliest_span() {
    let r = check(&[sp(3, 1, 0, 5), sp(1, 0, 20, 30), sp(2, 0, 10, 30), sp(4, 0, 10, 11)]);
    assert_eq!(r.summary_span, 2);
    let r = check(&[sp(3, 9, 30, 40), sp(1, 9, 20, 30), sp(2, 9, 20, 30)]);
    assert_eq!(r.summary_span, 1);
}

#[test]
fn empty_trace_has_no_findings() {
    let r = check(&[]);
    assert_eq!(r, TraceReport::default());
}

#[test]
fn span_with_a_group_out_of_range_does_not_panic() {
    let spans = [sp(1, 0, 10, 110), sp(2, 1, 0, 50).on(77)];
    let r = check_with(&spans, &correcting(1_000));
    assert_eq!(marked(&r, ClockSkew), vec![1]);
}

// ---- scale: linear, no recursion ---------------------------------------------------------

/// A chain `1 <- 2 <- ... <- n`, hosts alternating a/b, each child starting before its
/// parent so that every span is skewed and corrected.
fn chain(n: u64) -> Vec<SpanRec> {
    (1..=n)
        .map(|id| {
            let s = sp(id, id - 1, 1_000_000_000 - id, 1_000_000_000 + id);
            s.on(if id % 2 == 0 { HOST_B } else { HOST_A }).0
        })
        .collect()
}

#[test]
fn chain_of_10_000_spans_does_not_overflow_the_stack() {
    let spans = chain(10_000);
    let r = check_trace(&spans, &groups(), &correcting(u64::MAX));
    assert_eq!(r.span_findings.len(), 10_000);
    assert_eq!(r.summary_span, 0);
    assert_eq!(r.skew_adjustments.len(), 10_000);
}

#[test]
fn chain_of_100_000_spans_is_checked_and_corrected_quickly() {
    let mut spans = chain(100_000);
    spans.reverse(); // parents after children in the input
    let t = Instant::now();
    let r = check_trace(&spans, &groups(), &correcting(u64::MAX));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(r.span_findings.len(), 100_000);
    assert_eq!(r.summary_span, 99_999);
    assert!(r.missing_parents.is_empty());
    assert_eq!(marked(&r, ClockSkew).len(), 99_999);
    assert_eq!(r.trace_findings & (MissingParent.bit() | ParentCycle.bit()), 0);
}

#[test]
fn twenty_thousand_skewed_callees_of_one_process_are_solved_quickly() {
    // One client process calling 20,000 processes without host attributes, each starting
    // before its CLIENT span: 20,000 domains with evidence out of one.
    let n = 20_000u64;
    let mut gs = groups();
    let base = gs.len() as u32;
    gs.extend((0..n).map(|k| group(1_000 + k, Sdk::Other, "", "", &[])));
    let mut spans = vec![sp(1, 0, 0, 10 * MS).kind(kind::SERVER).0];
    for k in 0..n {
        spans.push(sp(2 + 2 * k, 1, MS, 9 * MS).kind(kind::CLIENT).0);
        let mut srv = sp(3 + 2 * k, 2 + 2 * k, MS / 2, 8 * MS).kind(kind::SERVER).0;
        srv.group = base + k as u32;
        spans.push(srv);
    }
    let t = Instant::now();
    let r = check_trace(&spans, &gs, &correcting(u64::MAX));
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(marked(&r, ClockSkew).len(), n as usize);
    assert_eq!(r.skew_adjustments.iter().filter(|&&d| d != 0).count(), n as usize);
}

#[test]
fn cycle_of_100_000_spans_is_found_without_recursion() {
    let n = 100_000u64;
    // 1 <- 2 <- ... <- n, and 1's parent is n; plus a tail of 1,000 hanging off span 500.
    let mut spans: Vec<SpanRec> =
        (1..=n).map(|id| sp(id, if id == 1 { n } else { id - 1 }, 0, 10).0).collect();
    spans.extend(
        (0..1_000u64).map(|k| sp(n + 1 + k, if k == 0 { 500 } else { n + k }, 0, 10).0),
    );
    let t = Instant::now();
    let r = check_trace(&spans, &groups(), &correcting(1_000));
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(marked(&r, ParentCycle).len(), n as usize);
    assert_eq!(r.span_findings[n as usize] & ParentCycle.bit(), 0);
    assert_eq!(names(r.trace_findings), vec!["no_root", "parent_cycle"]);
}

// ---- never panic -----------------------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    fn time() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..200, Just(0), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()]
    }

    fn span(ids: u64) -> impl Strategy<Value = SpanRec> {
        (
            0..ids,
            prop_oneof![Just(0u64), 0..ids + 2],
            time(),
            time(),
            prop_oneof![
                Just(0u32),
                Just(0x01),
                Just(0x100),
                Just(0x101),
                Just(0x301),
                Just(0x300),
                any::<u32>()
            ],
            0u8..7,
            any::<bool>(),
            0u32..17, // 16 = out of range
        )
            .prop_map(|(id, parent, start, end, flags, kind, links, group)| {
                let mut s = sp(id, parent, start, end).flags(flags).kind(kind).on(group);
                if links {
                    s = s.links();
                }
                s.0
            })
    }

    fn config() -> impl Strategy<Value = CheckConfig> {
        (
            any::<u32>(),
            prop_oneof![Just(0u64), 0u64..50, Just(u64::MAX)],
            any::<bool>(),
            prop_oneof![Just(0u64), 1u64..100, Just(u64::MAX)],
        )
            .prop_map(|(enabled, tol, skew, max)| CheckConfig {
                enabled: enabled | if skew { ClockSkew.bit() } else { 0 },
                child_tolerance_ns: tol,
                skew_correction: skew,
                skew_max_adjustment_ns: max,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_and_reports_every_span(
            spans in prop::collection::vec(span(12), 0..40),
            cfg in config(),
        ) {
            let r = check_trace(&spans, &groups(), &cfg);
            prop_assert_eq!(r.span_findings.len(), spans.len());
            prop_assert!(r.skew_adjustments.is_empty() || r.skew_adjustments.len() == spans.len());
            prop_assert!(spans.is_empty() || r.summary_span < spans.len());
            prop_assert!(r.missing_parents.windows(2).all(|w| w[0] < w[1]));
            let all = r.span_findings.iter().fold(0, |a, f| a | f);
            prop_assert_eq!(all & !r.trace_findings, 0);
            // Only enabled checks (or ingest findings) appear.
            let ingest = spans.iter().fold(0, |a, s| a | s.findings);
            prop_assert_eq!(r.trace_findings & !(cfg.enabled | ingest), 0);
            // Shifted spans stay in range and within the maximum.
            for (s, &d) in spans.iter().zip(&r.skew_adjustments) {
                prop_assert!(u128::from(d.unsigned_abs()) <= u128::from(cfg.skew_max_adjustment_ns));
                prop_assert!(shift_fits(s, i128::from(d)));
            }
        }

        #[test]
        fn cycle_marks_match_a_naive_walk(
            n in 1usize..60,
            parents in prop::collection::vec(any::<prop::sample::Index>(), 60),
        ) {
            // Random functional graph over IDs 1..=n (every parent present): no missing
            // parents, and a cycle exists iff some span is marked.
            let spans: Vec<SpanRec> = (0..n)
                .map(|i| sp(i as u64 + 1, parents[i].index(n + 1) as u64, 0, 10).0)
                .collect();
            let r = check_trace(&spans, &groups(), &CheckConfig::default());
            prop_assert!(r.missing_parents.is_empty());
            // Reference: a span is on a cycle iff following parents from it returns to it.
            for i in 0..n {
                let mut u = i;
                let mut on_cycle = false;
                for _ in 0..=n {
                    let p = spans[u].parent_id;
                    if p == 0 { break; }
                    u = p as usize - 1;
                    if u == i { on_cycle = true; break; }
                }
                prop_assert_eq!(r.span_findings[i] & ParentCycle.bit() != 0, on_cycle, "span {}", i);
            }
        }
    }
}
