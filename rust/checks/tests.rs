//! Tests of the consistency checks and skew correction on hand-built traces.
use super::*;
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

fn group(hash: u64, clock_key: u64, host_known: bool) -> Group {
    Group {
        resource: Arc::new(ResourceEntry {
            header: hash.to_be_bytes().to_vec(),
            hash,
            clock_key,
            host_known,
            service: format!("svc-{hash}"),
            charge: Default::default(),
        }),
        scope: Arc::new(ScopeEntry { header: Vec::new(), hash: 0, charge: Default::default() }),
    }
}

fn groups() -> Vec<Group> {
    vec![
        group(1, 100, true),
        group(2, 100, true),
        group(3, 200, true),
        group(4, 300, true),
        group(5, 5, false),
        group(6, 6, false),
    ]
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
    fn miss_trace(mut self, m: u32) -> Case {
        self.miss_trace = m;
        self
    }
    fn cfg(mut self, c: CheckConfig) -> Case {
        self.cfg = c;
        self
    }
}

#[rustfmt::skip]
fn table() -> Vec<Case> {
    use kind::*;
    let root = || sp(1, 0, 10, 110);
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
        case("other process on the same host is still the same clock", StartsBeforeParent,
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
        case("other host starting before is skew, same host is not", ClockSkew,
            vec![root(), sp(2, 1, 5, 50).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 5, 50).on(HOST_A_OTHER_PROCESS)])
            .miss_trace(StartsBeforeParent.bit()),
        case("other host ending after is skew, inside is not", ClockSkew,
            vec![root(), sp(2, 1, 50, 120).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 50, 110).on(HOST_B)]),
        case("other host, CONSUMER ending after is not skew", ClockSkew,
            vec![root(), sp(2, 1, 50, 120).on(HOST_B)], vec![1],
            vec![root(), sp(2, 1, 50, 120).on(HOST_B).kind(CONSUMER)]),
        case("unknown hosts, different resources = different clocks", ClockSkew,
            vec![root().on(UNKNOWN_1), sp(2, 1, 5, 50).on(UNKNOWN_2)], vec![1],
            vec![root().on(UNKNOWN_1), sp(2, 1, 5, 50).on(UNKNOWN_1)])
            .miss_trace(StartsBeforeParent.bit()),
        case("sampled parent, unsampled child vs both sampled", SampledFlagMismatch,
            vec![root().flags(0x01), sp(2, 1, 20, 30).flags(0x100)], vec![1],
            vec![root().flags(0x01), sp(2, 1, 20, 30).flags(0x101)]),
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

// ---- Jaeger's clock-skew adjuster cases -------------------------------------------------

#[test]
fn jaeger_centres_child_starting_before_parent_on_another_host() {
    // latency = (100 - 50) / 2 = 25; delta = (10 - 0) + 25 = 35.
    let r = check_with(&[sp(1, 0, 10, 110), sp(2, 1, 0, 50).on(HOST_B)], &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, 35]);
    assert_eq!(marked(&r, ClockSkew), vec![1]);
}

#[test]
fn jaeger_aligns_child_starting_before_parent_even_if_longer() {
    let r = check_with(&[sp(1, 0, 10, 110), sp(2, 1, 0, 150).on(HOST_B)], &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, 10]);
}

#[test]
fn jaeger_same_host_grandchild_inherits_delta() {
    // latency = (100 - 70) / 2 = 15; new child start 25, delta -25; grandchild on the
    // child's host moves with it: 60 -> 35.
    let spans = [sp(1, 0, 10, 110), sp(2, 1, 50, 120).on(HOST_B), sp(3, 2, 60, 80).on(HOST_B)];
    let r = check_with(&spans, &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, -25, -25]);
    assert_eq!(marked(&r, ClockSkew), vec![1]);
}

#[test]
fn jaeger_cross_host_grandchild_is_compared_with_the_corrected_parent() {
    // Child on b shifted by -25 to 25..95; a grandchild on c at 100..110 fitted the child
    // as received (60..120) but no longer fits the corrected child: centred to
    // 25 + (70 - 10) / 2 = 55, delta -45, and marked.
    let spans =
        [sp(1, 0, 10, 110), sp(2, 1, 50, 120).on(HOST_B), sp(3, 2, 100, 110).on(HOST_C)];
    let r = check_with(&spans, &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, -25, -45]);
    assert_eq!(marked(&r, ClockSkew), vec![1, 2]);
    // Without correction, only the child is skewed.
    assert_eq!(marked(&check(&spans), ClockSkew), vec![1]);
}

#[test]
fn jaeger_max_delta_exceeded_not_applied_finding_kept() {
    let spans = [sp(1, 0, 10, 110), sp(2, 1, 0, 50).on(HOST_B), sp(3, 2, 10, 20).on(HOST_B)];
    let r = check_with(&spans, &correcting(34));
    assert!(r.skew_adjustments.is_empty(), "{:?}", r.skew_adjustments);
    assert_eq!(marked(&r, ClockSkew), vec![1]);
    // A negative delta too: child 80..130 would move by -45.
    let r = check_with(&[sp(1, 0, 10, 110), sp(2, 1, 80, 130).on(HOST_B)], &correcting(10));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(marked(&r, ClockSkew), vec![1]);
    // At exactly the maximum it is applied.
    let r = check_with(&spans, &correcting(35));
    assert_eq!(r.skew_adjustments, vec![0, 35, 35]);
}

#[test]
fn jaeger_same_host_never_adjusted() {
    let spans = [sp(1, 0, 10, 110), sp(2, 1, 0, 50), sp(3, 1, 0, 50).on(HOST_A_OTHER_PROCESS)];
    let r = check_with(&spans, &correcting(1_000));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(marked(&r, StartsBeforeParent), vec![1, 2]);
    assert_eq!(marked(&r, ClockSkew), Vec::<usize>::new());
}

#[test]
fn jaeger_missing_parent_treated_as_root_no_adjustment() {
    let spans = [sp(1, 0, 10, 110), sp(2, 99, 0, 50).on(HOST_B), sp(3, 2, 10, 20).on(HOST_B)];
    let r = check_with(&spans, &correcting(1_000));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(r.missing_parents, vec![99]);
    assert_eq!(marked(&r, ClockSkew), Vec::<usize>::new());
}

#[test]
fn jaeger_does_not_adjust_child_that_fits_or_is_longer_and_starts_inside() {
    for child in [sp(2, 1, 20, 70).on(HOST_B), sp(2, 1, 20, 170).on(HOST_B)] {
        let r = check_with(&[sp(1, 0, 10, 110), child], &correcting(1_000));
        assert!(r.skew_adjustments.is_empty());
    }
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
fn async_child_on_another_host_is_moved_to_start_with_its_parent() {
    // A consumer on b starts 40 before its producer on a: moved by 40, not centred.
    let spans = [
        sp(1, 0, 100, 110).kind(kind::PRODUCER),
        sp(2, 1, 60, 70).on(HOST_B).kind(kind::CONSUMER),
    ];
    let r = check_with(&spans, &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, 40]);
    // Ending long after the producer needs no correction.
    let spans = [
        sp(1, 0, 100, 110).kind(kind::PRODUCER),
        sp(2, 1, 105, 900).on(HOST_B).kind(kind::CONSUMER),
    ];
    let r = check_with(&spans, &correcting(1_000));
    assert!(r.skew_adjustments.is_empty());
    assert_eq!(r.trace_findings, 0);
}

#[test]
fn shift_that_would_leave_the_time_range_is_not_applied() {
    // The grandchild on b would inherit -25 but starts at 0: it stays where it is.
    let spans = [sp(1, 0, 10, 110), sp(2, 1, 50, 120).on(HOST_B), sp(3, 2, 0, 100).on(HOST_B)];
    let r = check_with(&spans, &correcting(1_000));
    assert_eq!(r.skew_adjustments, vec![0, -25, 0]);
    assert_eq!(marked(&r, StartsBeforeParent), vec![2]);
    // A delta beyond what `i64` holds is never applied, whatever the maximum.
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
            0u32..7, // 6 = out of range
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
