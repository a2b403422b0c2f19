//! Consistency checks on one assembled trace (reference document §1.3, §2.1, §2.2, §2.4)
//! and Jaeger-style clock-skew correction. Works on the compact index only.
//!
//! # The span graph
//! Every span ID is looked up in a table sorted by ID (built once, `O(n log n)`). A parent
//! ID that several spans share resolves to one of them, deterministically:
//! - a Zipkin-style *shared span* — exactly two spans with one ID, one `CLIENT` and one
//!   `SERVER`, in different resources — resolves to the `SERVER` (the side that did the
//!   work the children belong to); the pair is not a conflict and counts as one root;
//! - any other set of spans sharing an ID is a conflict (`conflicting_span_id` on each) and
//!   resolves to the first of them in input order.
//!
//! `no_root` and `multiple_roots` are trace-level only (never on a span). Roots are the spans
//! with no parent ID (orphans are `missing_parent`, not roots); roots sharing one span ID
//! count once (a Zipkin shared root pair, or a conflict already reported as such), while
//! roots without a span ID (invalid, reported at ingest) count one each.
//!
//! A span whose parent ID is its own span ID is a one-span cycle (`parent_cycle`) and is
//! given no parent for the other checks (comparing a span with another copy of itself says
//! nothing). Longer cycles are found by one colouring walk over the parent links (each span
//! has at most one parent, so the graph is a functional graph): linear time, no recursion.
//!
//! # Time checks and clocks
//! Two spans are *on the same clock* when their resources have the same `clock_key` (host
//! identity) and, if either resource's host is unknown, they are the same resource. Between
//! a child and its parent on the same clock an interval violation is the child's own fault:
//! `starts_before_parent` / `ends_after_parent`. Across clocks it is `clock_skew` instead.
//! "Ends after" is never reported for asynchronous work: a `PRODUCER` or `CONSUMER` child, a
//! child of a `PRODUCER`, or a child with links. Findings describe the data *as received*:
//! they are computed on the original times whether or not correction is on.
//!
//! # Clock-skew correction
//! With `skew_correction` (and the `clock_skew` check enabled) spans are shifted the way
//! Jaeger's adjuster does it, walking the span forest top-down in breadth-first order from
//! every span without a usable parent (roots, orphans — treated as roots, as Jaeger does —
//! and self-parented spans; spans on or below a longer cycle are never shifted):
//! - a child on the same clock as its parent inherits the parent's applied shift, so a
//!   process's spans move together and a same-host child is never shifted on its own;
//! - a child on another clock that lies outside its (already shifted) parent by more than the
//!   tolerance gets Jaeger's delta: a child longer than its parent, or an asynchronous child
//!   (see above), is moved so that it starts with the parent; a shorter one is centred in
//!   the parent. Such a child is marked `clock_skew` (even if it only fell outside because
//!   its parent moved), so every span shifted at a clock boundary carries the finding;
//! - a delta larger than `skew_max_adjustment_ns` (or than an `i64`), or one that would move
//!   the span's times out of the `u64` range, is not applied (the span keeps the finding)
//!   and its same-clock descendants inherit no shift;
//! - spans with a negative duration (or under a parent with one) get no delta of their own.
//!
//! Same-clock descendants that moved with their ancestor get no finding of their own (one
//! skewed boundary is one finding, not one per span below it); every shift, theirs included,
//! is in [`TraceReport::skew_adjustments`].
//!
//! # Flags (`Span.flags`, see PEERS.md "OTLP and W3C facts")
//! - `sampled_flag_mismatch`: the parent is sampled (bit 0x01) and the child is not. Older
//!   senders leave the whole field at 0, which says nothing about sampling, so the check runs
//!   only when *both* spans have a non-zero `flags` value.
//! - `remote_parent_mismatch`: only when the child says the remote bit is known (0x100): a
//!   parent declared remote (0x200) but found in the child's own resource, or declared local
//!   but found in another resource.

use crate::findings::FindingKind;
use crate::index::{kind, Group, SpanRec, FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE, FLAG_SAMPLED};

/// What the checks need from the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckConfig {
    /// Bit `1 << kind` set = that check runs.
    pub enabled: u32,
    /// How far (ns) a child may start before / end after its parent without a finding.
    pub child_tolerance_ns: u64,
    /// Shift skewed children (and their same-host descendants) Jaeger-style.
    pub skew_correction: bool,
    /// Largest shift applied; a larger needed delta is only reported.
    pub skew_max_adjustment_ns: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            enabled: FindingKind::ALL_MASK,
            child_tolerance_ns: 0,
            skew_correction: false,
            skew_max_adjustment_ns: 60_000_000_000,
        }
    }
}

/// The result of checking one trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceReport {
    /// Per span (same order as the input), a mask of `FindingKind` bits.
    pub span_findings: Vec<u32>,
    /// Every kind present in the trace, including trace-level ones (`no_root`,
    /// `multiple_roots`).
    pub trace_findings: u32,
    /// Distinct parent span IDs referenced but not present, ascending.
    pub missing_parents: Vec<u64>,
    /// Per span, the shift applied to its times in nanoseconds (0 = none). Empty when
    /// correction is off or nothing was shifted.
    pub skew_adjustments: Vec<i64>,
    /// Index of the span that carries the trace-level attributes: the root (the earliest
    /// one when there are several), else the earliest span.
    pub summary_span: usize,
}

/// "No span" in index vectors.
const NONE: usize = usize::MAX;

/// The clock-relevant identity of a span's resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClockId {
    resource: u64,
    clock: u64,
    host_known: bool,
}

impl ClockId {
    /// A span whose group index is out of range (a caller bug) gets this one: all such spans
    /// look like one resource on an unknown host. Checks must not panic on it.
    const UNKNOWN: ClockId = ClockId { resource: 0, clock: 0, host_known: false };

    fn of(span: &SpanRec, groups: &[Group]) -> ClockId {
        groups.get(span.group as usize).map_or(ClockId::UNKNOWN, |g| ClockId {
            resource: g.resource.hash,
            clock: g.resource.clock_key,
            host_known: g.resource.host_known,
        })
    }

    /// Whether times of `self` and `other` come from different clocks.
    fn other_clock(self, other: ClockId) -> bool {
        self.clock != other.clock
            || ((!self.host_known || !other.host_known) && self.resource != other.resource)
    }
}

/// Whether the child's work may legitimately outlive its parent.
fn is_async(child: &SpanRec, parent: &SpanRec) -> bool {
    matches!(child.kind, kind::PRODUCER | kind::CONSUMER)
        || parent.kind == kind::PRODUCER
        || child.has_links
}

/// Sorted table of the trace's span IDs (0 excluded), each with the span it resolves to.
struct IdTable {
    ids: Vec<u64>,
    target: Vec<usize>,
}

impl IdTable {
    /// Builds the table and marks conflicting span IDs in `findings` when `mark` is set.
    fn build(spans: &[SpanRec], clocks: &[ClockId], findings: &mut [u32], mark: bool) -> Self {
        let mut order: Vec<(u64, usize)> = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| s.span_id != 0)
            .map(|(i, s)| (s.span_id, i))
            .collect();
        order.sort_unstable();
        let mut ids = Vec::with_capacity(order.len());
        let mut target = Vec::with_capacity(order.len());
        let mut start = 0;
        while start < order.len() {
            let id = order[start].0;
            let mut end = start + 1;
            while end < order.len() && order[end].0 == id {
                end += 1;
            }
            let run = &order[start..end];
            let first = run[0].1;
            let resolved = match run {
                [_] => first,
                [(_, a), (_, b)] => match shared_pair(spans, clocks, *a, *b) {
                    Some(server) => server,
                    None => {
                        conflict(findings, run, mark);
                        first
                    }
                },
                _ => {
                    conflict(findings, run, mark);
                    first
                }
            };
            ids.push(id);
            target.push(resolved);
            start = end;
        }
        IdTable { ids, target }
    }

    fn resolve(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok().map(|k| self.target[k])
    }
}

/// For two spans with one ID: the `SERVER` one if they form a Zipkin shared span.
fn shared_pair(spans: &[SpanRec], clocks: &[ClockId], a: usize, b: usize) -> Option<usize> {
    if clocks[a].resource == clocks[b].resource {
        return None;
    }
    match (spans[a].kind, spans[b].kind) {
        (kind::CLIENT, kind::SERVER) => Some(b),
        (kind::SERVER, kind::CLIENT) => Some(a),
        _ => None,
    }
}

fn conflict(findings: &mut [u32], run: &[(u64, usize)], mark: bool) {
    if mark {
        for &(_, i) in run {
            findings[i] |= FindingKind::ConflictingSpanId.bit();
        }
    }
}

/// Marks every span on a cycle of `parent` links. One colouring walk: each span is pushed
/// on the walk's path once, so the whole pass is linear.
fn mark_cycles(parent: &[usize], findings: &mut [u32]) {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; parent.len()];
    let mut path: Vec<usize> = Vec::new();
    for s in 0..parent.len() {
        let mut u = s;
        while u != NONE && state[u] == NEW {
            state[u] = ON_PATH;
            path.push(u);
            u = parent[u];
        }
        if u != NONE && state[u] == ON_PATH {
            // `u` is on the current path: the path from `u` on is a cycle.
            for &v in path.iter().rev() {
                findings[v] |= FindingKind::ParentCycle.bit();
                if v == u {
                    break;
                }
            }
        }
        for v in path.drain(..) {
            state[v] = DONE;
        }
    }
}

/// Jaeger's delta for a child on another clock than its parent, computed against the
/// parent's shifted times; 0 when the child fits (within `tol`) or intervals are invalid.
fn skew_delta(
    child: &SpanRec,
    parent: &SpanRec,
    parent_shift: i64,
    tol: u64,
    asyncw: bool,
) -> i128 {
    let (ps, pe) = (
        i128::from(parent.start) + i128::from(parent_shift),
        i128::from(parent.end) + i128::from(parent_shift),
    );
    let (cs, ce) = (i128::from(child.start), i128::from(child.end));
    let tol = i128::from(tol);
    if ce < cs || pe < ps {
        return 0;
    }
    let before = cs + tol < ps;
    let after = !asyncw && ce > pe + tol;
    if !before && !after {
        return 0;
    }
    let (cd, pd) = (ce - cs, pe - ps);
    if cd > pd || asyncw {
        // Longer than the parent (async, or the parent timed out) or async by kind: the only
        // sound fix is to not start before the parent.
        if cs < ps {
            ps - cs
        } else {
            0
        }
    } else {
        // Assume the network latency is split evenly between request and response.
        ps + (pd - cd) / 2 - cs
    }
}

/// Whether `span` shifted by `d` keeps both times in the `u64` range.
fn shift_fits(span: &SpanRec, d: i128) -> bool {
    let ok = |t: u64| (0..=i128::from(u64::MAX)).contains(&(i128::from(t) + d));
    ok(span.start) && ok(span.end)
}

/// Checks one trace. `spans` share one trace ID; `groups[span.group]` is each span's
/// resource and scope. Runs in time linear in the number of spans (plus sorting) and
/// without recursion, whatever the input (chains, cycles, duplicates).
pub fn check_trace(spans: &[SpanRec], groups: &[Group], cfg: &CheckConfig) -> TraceReport {
    let n = spans.len();
    let on = |k: FindingKind| cfg.enabled & k.bit() != 0;
    let mut findings: Vec<u32> = spans.iter().map(|s| s.findings).collect();
    let mut trace_level = 0u32;
    let mut missing: Vec<u64> = Vec::new();
    let clocks: Vec<ClockId> = spans.iter().map(|s| ClockId::of(s, groups)).collect();

    // Span graph: resolve each parent ID to a span index.
    let table = IdTable::build(spans, &clocks, &mut findings, on(FindingKind::ConflictingSpanId));
    let mut parent = vec![NONE; n];
    for (i, s) in spans.iter().enumerate() {
        if s.parent_id == 0 {
            continue;
        }
        if s.parent_id == s.span_id {
            if on(FindingKind::ParentCycle) {
                findings[i] |= FindingKind::ParentCycle.bit();
            }
            continue;
        }
        match table.resolve(s.parent_id) {
            Some(p) => parent[i] = p,
            None => {
                if on(FindingKind::MissingParent) {
                    findings[i] |= FindingKind::MissingParent.bit();
                    missing.push(s.parent_id);
                }
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();

    if on(FindingKind::ParentCycle) {
        mark_cycles(&parent, &mut findings);
    }

    // Roots: spans without a parent ID. Spans sharing a (non-zero) ID count once; spans with
    // no usable ID are distinct spans and count one each.
    if n > 0 {
        let mut root_ids: Vec<u64> =
            spans.iter().filter(|s| s.is_root()).map(|s| s.span_id).collect();
        if root_ids.is_empty() {
            if on(FindingKind::NoRoot) {
                trace_level |= FindingKind::NoRoot.bit();
            }
        } else if on(FindingKind::MultipleRoots) {
            let zero_ids = root_ids.iter().filter(|&&id| id == 0).count();
            root_ids.retain(|&id| id != 0);
            root_ids.sort_unstable();
            root_ids.dedup();
            if root_ids.len() + zero_ids > 1 {
                trace_level |= FindingKind::MultipleRoots.bit();
            }
        }
    }

    // Per-span and per-edge checks, on the times as received.
    let tol = cfg.child_tolerance_ns;
    for (i, c) in spans.iter().enumerate() {
        if on(FindingKind::NegativeDuration) && c.end < c.start {
            findings[i] |= FindingKind::NegativeDuration.bit();
        }
        let p_idx = parent[i];
        if p_idx == NONE {
            continue;
        }
        let p = &spans[p_idx];
        let before = c.start.saturating_add(tol) < p.start;
        let after = !is_async(c, p) && c.end > p.end.saturating_add(tol);
        if clocks[i].other_clock(clocks[p_idx]) {
            if (before || after) && on(FindingKind::ClockSkew) {
                findings[i] |= FindingKind::ClockSkew.bit();
            }
        } else {
            if before && on(FindingKind::StartsBeforeParent) {
                findings[i] |= FindingKind::StartsBeforeParent.bit();
            }
            if after && on(FindingKind::EndsAfterParent) {
                findings[i] |= FindingKind::EndsAfterParent.bit();
            }
        }
        if on(FindingKind::SampledFlagMismatch)
            && c.flags != 0
            && p.flags != 0
            && p.flags & FLAG_SAMPLED != 0
            && c.flags & FLAG_SAMPLED == 0
        {
            findings[i] |= FindingKind::SampledFlagMismatch.bit();
        }
        if on(FindingKind::RemoteParentMismatch) && c.flags & FLAG_HAS_IS_REMOTE != 0 {
            let declared_remote = c.flags & FLAG_IS_REMOTE != 0;
            let same_resource = clocks[i].resource == clocks[p_idx].resource;
            if declared_remote == same_resource {
                findings[i] |= FindingKind::RemoteParentMismatch.bit();
            }
        }
    }

    let skew_adjustments = if cfg.skew_correction && on(FindingKind::ClockSkew) {
        correct_skew(spans, &parent, &clocks, cfg, &mut findings)
    } else {
        Vec::new()
    };

    let summary_span = spans
        .iter()
        .enumerate()
        .min_by_key(|(i, s)| (!s.is_root(), s.start, *i))
        .map_or(0, |(i, _)| i);
    let trace_findings = findings.iter().fold(trace_level, |a, f| a | f);
    TraceReport {
        span_findings: findings,
        trace_findings,
        missing_parents: missing,
        skew_adjustments,
        summary_span,
    }
}

/// Jaeger-style correction (see the module doc): breadth-first from every span without a
/// usable parent. Returns the applied shift per span, or an empty vector when none moved.
fn correct_skew(
    spans: &[SpanRec],
    parent: &[usize],
    clocks: &[ClockId],
    cfg: &CheckConfig,
    findings: &mut [u32],
) -> Vec<i64> {
    let n = spans.len();
    // Children lists in compressed form: children of `p` are child[first[p]..first[p + 1]],
    // in input order.
    let mut first = vec![0usize; n + 1];
    for &p in parent {
        if p != NONE {
            first[p + 1] += 1;
        }
    }
    for k in 0..n {
        first[k + 1] += first[k];
    }
    let mut fill = first.clone();
    let mut child = vec![0usize; first[n]];
    for (i, &p) in parent.iter().enumerate() {
        if p != NONE {
            child[fill[p]] = i;
            fill[p] += 1;
        }
    }

    let max = i128::from(cfg.skew_max_adjustment_ns);
    let mut shift = vec![0i64; n];
    let mut queue: Vec<usize> = (0..n).filter(|&i| parent[i] == NONE).collect();
    let mut any = false;
    let mut head = 0;
    while head < queue.len() {
        let p = queue[head];
        head += 1;
        for &c in &child[first[p]..first[p + 1]] {
            let mut d = if clocks[c].other_clock(clocks[p]) {
                let asyncw = is_async(&spans[c], &spans[p]);
                let d = skew_delta(&spans[c], &spans[p], shift[p], cfg.child_tolerance_ns, asyncw);
                if d != 0 {
                    findings[c] |= FindingKind::ClockSkew.bit();
                }
                if d.abs() > max || i64::try_from(d).is_err() {
                    0
                } else {
                    d
                }
            } else {
                i128::from(shift[p])
            };
            if d != 0 && !shift_fits(&spans[c], d) {
                d = 0;
            }
            // `d` fits an i64 (checked above, or inherited from one).
            shift[c] = i64::try_from(d).unwrap_or(0);
            any |= shift[c] != 0;
            queue.push(c);
        }
    }
    if any {
        shift
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
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
            }),
            scope: Arc::new(ScopeEntry { header: Vec::new(), hash: 0 }),
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
        let ingest = mask(&[InvalidTraceId, InvalidSpanId, FutureTimestamp, HlcOffsetExceeded]);
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

    // ---- the reference document's definitions -----------------------------------------------

    /// §1.3 Definition 1.2 (trace completeness): every span eventually reaches the trace. A
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

    /// §1.3 Definition 1.3 (span order): parent → child implies the parent's timestamp comes
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

    /// §1.3 Definition 1.4 (context consistency) and §2.4: the child keeps the trace, its
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
}
