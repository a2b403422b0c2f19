//! Consistency checks on one assembled trace and clock-skew correction
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
//! # Time checks, processes and SDKs
//! Within one resource (one SDK instance, one process, one clock) an interval violation is
//! the child's own: `starts_before_parent` / `ends_after_parent` ("ends after" is never
//! reported for asynchronous work: a `PRODUCER` or `CONSUMER` child, a child of a
//! `PRODUCER`, or a child with links). Across resources only what response timing cannot
//! explain counts, and it is `clock_skew`: the child starts before its parent starts, or —
//! synchronous work only — after its parent ended. A child ending after its parent in
//! another process is the normal shape of an RPC (a server ends its span after writing the
//! response the client may already have read) and is no finding. Host attributes do not
//! change this: two processes on one host may still disagree (`faketime`, a time
//! namespace), and the times are the evidence.
//!
//! Tolerances: `child_tolerance_ns` plus the stamping granularity of both spans' SDKs, and,
//! for "ends after" in one process, the SDK's end overhang ([`clock::Sdk::stamping`], from
//! `telemetry.sdk.language`). Findings describe the data *as received*: they are computed
//! on the original times whether or not correction is on.
//!
//! # Clock-skew correction
//! See [`skew`]: only the spans of a clock domain (resources sharing a host identity) with a
//! `clock_skew` finding move, all by one estimated offset.
//!
//! # Flags (`Span.flags`: W3C trace flags in the low byte, then the remote-parent bits)
//! - `sampled_flag_mismatch`: the parent is sampled (bit 0x01) and the child's trace-flags
//!   byte, where it was written, says not sampled. A zero byte is "written" only when the
//!   same resource has a span with a non-zero byte in the trace, or its SDK's exporter is
//!   known to write the byte and the span says so by its remote-known bit (0x100); a
//!   `flags` of 0 (a sender older than the field) never is. The Python exporter writes only
//!   the remote bits: its zero byte is unknown.
//! - `remote_parent_mismatch`: only when the child says the remote bit is known (0x100): a
//!   parent declared remote (0x200) but found in the child's own resource (unless it is a
//!   `CLIENT` / `PRODUCER` and the child its `SERVER` / `CONSUMER`: a process calling itself
//!   over the network), or declared local but found in another resource.

pub mod clock;
mod skew;

use crate::findings::FindingKind;
use crate::index::{kind, Group, SpanRec, FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE, FLAG_SAMPLED};
use clock::{Sdk, Stamping};

/// The W3C trace-flags byte of `Span.flags`.
const FLAG_TRACE_FLAGS: u32 = 0xff;

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

/// Where a span was timed: its resource (one SDK instance, one process) and how that SDK
/// stamps times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Origin {
    resource: u64,
    stamping: Stamping,
    /// A layer span of a Node.js web framework ([`NODE_LAYER_SCOPES`]).
    layer: bool,
}

/// Instrumentation scopes of Node.js web frameworks whose layer spans end on the
/// response's own event, in a listener after the http `SERVER` span's: such a span cannot
/// outlive the request, and its end after its parent's is the time between two listeners.
const NODE_LAYER_SCOPES: [&[u8]; 2] = [b"@opentelemetry/instrumentation-express", b"@opentelemetry/instrumentation-router"];

/// How far a Node.js layer span may end after its `SERVER` (or layer) parent in its
/// process: a pause of the process between the two listeners (a scheduler or GC pause on a
/// loaded machine; 20 ms and more seen on two cores shared by many builds).
const LAYER_OVERHANG_NS: u64 = 250 * 1_000_000;

/// The name of the instrumentation scope in a scope header (`ScopeSpans` field 1, then
/// `schema_url`), empty when absent or malformed.
fn scope_name(header: &[u8]) -> &[u8] {
    use crate::wire::{Fields, Value};
    for f in Fields::new(header, 0) {
        let Ok(f) = f else { break };
        if let (1, Value::Len(r)) = (f.number, f.value) {
            let scope = &header[r];
            for g in Fields::new(scope, 0) {
                let Ok(g) = g else { break };
                if let (1, Value::Len(n)) = (g.number, g.value) {
                    return &scope[n];
                }
            }
        }
    }
    &[]
}

impl Origin {
    /// A span whose group index is out of range (a caller bug) gets this one: all such spans
    /// look like one resource of an unknown SDK. Checks must not panic on it.
    const UNKNOWN: Origin = Origin { resource: 0, stamping: Sdk::Other.stamping(), layer: false };

    fn of(span: &SpanRec, groups: &[Group]) -> Origin {
        groups.get(span.group as usize).map_or(Origin::UNKNOWN, |g| Origin {
            resource: g.resource.hash,
            stamping: g.resource.sdk.stamping(),
            layer: g.resource.sdk == Sdk::Nodejs && NODE_LAYER_SCOPES.contains(&scope_name(&g.scope.header)),
        })
    }
}

/// How far (ns) the child may start before its parent, or across processes start after its
/// parent's end, before that is a finding: the configured tolerance plus the stamping
/// granularity of both SDKs.
fn edge_tolerance(cfg: &CheckConfig, c: Origin, p: Origin) -> u64 {
    cfg.child_tolerance_ns
        .saturating_add(c.stamping.granularity_ns)
        .saturating_add(p.stamping.granularity_ns)
}

/// The tolerances of an edge between two processes: how far the child may start before its
/// parent starts, and how far after its parent ended, before that is evidence of skew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SkewTolerance {
    before_start: u64,
    after_end: u64,
}

/// [`edge_tolerance`] on both sides, and on the "after its parent ended" side the parent SDK's
/// early end stamps ([`Stamping::end_early_ns`]).
fn skew_tolerance(cfg: &CheckConfig, c: Origin, p: Origin) -> SkewTolerance {
    let tol = edge_tolerance(cfg, c, p);
    SkewTolerance { before_start: tol, after_end: tol.saturating_add(p.stamping.end_early_ns) }
}

/// Whether the child's times, against its parent's shifted by `parent_shift`, are evidence
/// that the two processes' clocks disagree: what response timing cannot explain. The child
/// starts before its parent starts, or (synchronous work only) after its parent ended. A
/// child ending after its parent is not evidence: a server ends its span after writing the
/// response its client may already have read.
fn skew_evidence(c: &SpanRec, p: &SpanRec, parent_shift: i64, tol: SkewTolerance, asyncw: bool) -> bool {
    let (ps, pe) = (
        i128::from(p.start) + i128::from(parent_shift),
        i128::from(p.end) + i128::from(parent_shift),
    );
    let cs = i128::from(c.start);
    cs + i128::from(tol.before_start) < ps || (!asyncw && cs > pe + i128::from(tol.after_end))
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
    fn build(spans: &[SpanRec], origins: &[Origin], findings: &mut [u32], mark: bool) -> Self {
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
                [(_, a), (_, b)] => match shared_pair(spans, origins, *a, *b) {
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
fn shared_pair(spans: &[SpanRec], origins: &[Origin], a: usize, b: usize) -> Option<usize> {
    if origins[a].resource == origins[b].resource {
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

/// Which resources of a trace wrote the W3C trace-flags byte (bits 0–7 of `Span.flags`).
/// An exporter writes it for all of its spans or for none (the Python exporter, and Go's
/// before its fix, write only the remote bits), so a zero byte is an unsampled span only
/// where the same resource shows a non-zero byte on another span, or where the SDK is known
/// to write the byte; otherwise it is unknown and never a mismatch.
#[derive(Default)]
struct FlagWriters {
    /// Resources with a span whose trace-flags byte is non-zero, sorted.
    resources: Vec<u64>,
}

impl FlagWriters {
    fn of(spans: &[SpanRec], origins: &[Origin]) -> FlagWriters {
        let mut resources: Vec<u64> = spans
            .iter()
            .zip(origins)
            .filter(|(s, _)| s.flags & FLAG_TRACE_FLAGS != 0)
            .map(|(_, o)| o.resource)
            .collect();
        resources.sort_unstable();
        resources.dedup();
        FlagWriters { resources }
    }

    fn wrote_trace_flags(&self, s: &SpanRec, o: Origin) -> bool {
        if s.flags == 0 {
            // No `flags` at all: a sender older than the field.
            return false;
        }
        s.flags & FLAG_TRACE_FLAGS != 0
            || (o.stamping.writes_trace_flags && s.flags & FLAG_HAS_IS_REMOTE != 0)
            || self.resources.binary_search(&o.resource).is_ok()
    }
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
    let origins: Vec<Origin> = spans.iter().map(|s| Origin::of(s, groups)).collect();

    // Span graph: resolve each parent ID to a span index.
    let table = IdTable::build(spans, &origins, &mut findings, on(FindingKind::ConflictingSpanId));
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
    let writers = if on(FindingKind::SampledFlagMismatch) {
        FlagWriters::of(spans, &origins)
    } else {
        FlagWriters::default()
    };
    for (i, c) in spans.iter().enumerate() {
        if on(FindingKind::NegativeDuration) && c.end < c.start {
            findings[i] |= FindingKind::NegativeDuration.bit();
        }
        let p_idx = parent[i];
        if p_idx == NONE {
            continue;
        }
        let p = &spans[p_idx];
        let (oc, op) = (origins[i], origins[p_idx]);
        let tol = edge_tolerance(cfg, oc, op);
        let asyncw = is_async(c, p);
        if oc.resource == op.resource {
            // One process, one SDK: the child's own fault.
            if on(FindingKind::StartsBeforeParent) && c.start.saturating_add(tol) < p.start {
                findings[i] |= FindingKind::StartsBeforeParent.bit();
            }
            let mut end_tol = tol.saturating_add(oc.stamping.end_overhang_ns);
            if oc.layer && (p.kind == kind::SERVER || op.layer) {
                end_tol = end_tol.max(tol.saturating_add(LAYER_OVERHANG_NS));
            }
            if on(FindingKind::EndsAfterParent) && !asyncw && c.end > p.end.saturating_add(end_tol)
            {
                findings[i] |= FindingKind::EndsAfterParent.bit();
            }
        } else if on(FindingKind::ClockSkew) && skew_evidence(c, p, 0, skew_tolerance(cfg, oc, op), asyncw) {
            findings[i] |= FindingKind::ClockSkew.bit();
        }
        if on(FindingKind::SampledFlagMismatch)
            && p.flags & FLAG_SAMPLED != 0
            && c.flags & FLAG_SAMPLED == 0
            && writers.wrote_trace_flags(c, oc)
        {
            findings[i] |= FindingKind::SampledFlagMismatch.bit();
        }
        if on(FindingKind::RemoteParentMismatch) && c.flags & FLAG_HAS_IS_REMOTE != 0 {
            let declared_remote = c.flags & FLAG_IS_REMOTE != 0;
            let same_resource = oc.resource == op.resource;
            // A process may call itself over the network: a SERVER (CONSUMER) whose remote
            // parent is a CLIENT (PRODUCER) of its own resource is no mismatch.
            let self_call = matches!(
                (p.kind, c.kind),
                (kind::CLIENT, kind::SERVER) | (kind::PRODUCER, kind::CONSUMER)
            );
            if declared_remote == same_resource && !(declared_remote && self_call) {
                findings[i] |= FindingKind::RemoteParentMismatch.bit();
            }
        }
    }

    let skew_adjustments = if on(FindingKind::ClockSkew) {
        let solved = skew::solve(spans, groups, &parent, &origins, cfg, &findings);
        for &i in &solved.blamed {
            findings[i] |= FindingKind::ClockSkew.bit();
        }
        if cfg.skew_correction {
            solved.shift
        } else {
            Vec::new()
        }
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

#[cfg(test)]
mod tests;
