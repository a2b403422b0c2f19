//! Consistency checks on one assembled trace and Jaeger-style clock-skew correction
//! (docs/DESIGN.md, "Checks" and "Skew correction"). Works on the compact index only.
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
//! # Flags (`Span.flags`: W3C trace flags in the low byte, then the remote-parent bits)
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
mod tests;
