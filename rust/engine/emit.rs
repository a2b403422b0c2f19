//! Emission: a drained batch of units is checked, its duplicates resolved, and encoded as
//! one `ExportTraceServiceRequest` with this engine's attributes written on the spans. Runs
//! outside every shard lock; each span's original bytes are copied once, minus stripped
//! fields, plus the new attributes.

use std::collections::HashMap;
use ahash::RandomState;

use crate::attrs::*;
use crate::checks::{check_trace, CheckConfig, TraceReport};
use crate::config::DuplicatePolicy;
use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::STAMP_STR_LEN;
use crate::index::Group;
use crate::sampling::threshold::{read_tracestate, write_threshold, Threshold};
use crate::sampling::trace::span_tracestate;
use crate::sampling::{Sampler, TraceView, Verdict};
use crate::wire::{self, AnyValueRef};

use super::dedupe::{content_hash, drop_exact_duplicates, keep_latest};
use super::handoff::ProofKey;
use super::unit::Unit;
use super::{FindingCount, Release, ReleasedUnit};

/// What emission needs from the configuration.
pub struct Emitter {
    pub check_cfg: CheckConfig,
    pub write_attributes: bool,
    pub duplicate_policy: DuplicatePolicy,
    /// Key of the content hash that recognises exact duplicates.
    pub dedupe_key: RandomState,
    /// Key of the hand-off markers' proofs (`handoff.key`).
    pub handoff_key: Option<ProofKey>,
    /// The `sampling` section: decides each released trace before it is encoded.
    pub sampler: Option<Sampler>,
    /// Tests: the next emission panics halfway (after it consumed the units).
    #[cfg(test)]
    pub panic_next: std::sync::atomic::AtomicBool,
}

/// One emitted release and what was dropped on the way.
pub struct Emitted {
    pub release: Release,
    pub duplicates: u64,
    pub conflicts: u64,
    /// Per released trace, the sorted content hashes of its spans and what sampling decided
    /// (for the late cache).
    pub released: Vec<(u128, Box<[u64]>, Verdict)>,
}

impl Emitter {
    /// Checks `units`, applies the duplicate policies, decides each released trace with the
    /// sampler (if any; `now` is the monotonic clock its rate limits run on) and encodes what
    /// is kept as one request.
    pub fn emit(&self, mut units: Vec<Unit>, now: u64) -> Emitted {
        let mut release = Release::default();
        let mut duplicates = 0u64;
        let mut conflicts = 0u64;
        let mut released = Vec::new();
        let mut finding_counts: HashMap<(FindingKind, String), u64> = HashMap::new();
        let mut plans: Vec<UnitPlan> = Vec::with_capacity(units.len());
        #[cfg(test)]
        if self.panic_next.swap(false, std::sync::atomic::Ordering::Relaxed) {
            drop(std::mem::take(&mut units));
            panic!("injected emission panic");
        }
        for unit in units.iter_mut() {
            if unit.handoff {
                // Not final: no checks and no duplicate resolution (the receiver does both
                // on the whole trace), only the stamps and the hop count.
                release.units.push(ReleasedUnit { reason: unit.reason, spans: unit.spans.len() as u32, age_ns: unit.age_ns, findings: 0 });
                let report = TraceReport { span_findings: vec![0; unit.spans.len()], summary_span: usize::MAX, ..Default::default() };
                plans.push(UnitPlan { report, keep: vec![true; unit.spans.len()], rule: None, tracestate: Vec::new() });
                continue;
            }
            if unit.reason.is_trace_release() {
                duplicates += drop_exact_duplicates(unit, &self.dedupe_key);
                // As received (before any skew shift below).
                let mut hashes: Vec<u64> = unit.spans.iter().map(|s| content_hash(&self.dedupe_key, &unit.buf, s)).collect();
                hashes.sort_unstable();
                hashes.dedup();
                released.push((unit.trace_id, hashes.into_boxed_slice(), Verdict::Undecided));
            }
            let report = if unit.reason.is_trace_release() {
                check_trace(&unit.spans, &unit.groups, &self.check_cfg)
            } else {
                TraceReport {
                    span_findings: unit.spans.iter().map(|s| s.findings).collect(),
                    trace_findings: unit.spans.iter().fold(0, |a, s| a | s.findings),
                    summary_span: usize::MAX,
                    ..Default::default()
                }
            };
            if !report.skew_adjustments.is_empty() {
                for (s, &d) in unit.spans.iter().zip(&report.skew_adjustments) {
                    if d != 0 {
                        let r = s.bytes.start as usize..s.bytes.end as usize;
                        wire::shift_span_times(&mut unit.buf[r], d);
                    }
                }
            }
            let keep = if self.duplicate_policy == DuplicatePolicy::KeepLatest {
                keep_latest(&unit.spans, &report.span_findings)
            } else {
                vec![true; unit.spans.len()]
            };
            conflicts += keep.iter().filter(|k| !**k).count() as u64;
            // Metrics: per span kinds by service; trace-only kinds once per trace.
            let mut span_kinds = 0u32;
            for (i, &f) in report.span_findings.iter().enumerate() {
                span_kinds |= f;
                if f != 0 {
                    let svc = &unit.groups[unit.spans[i].group as usize].resource.service;
                    for k in FindingKind::iter_mask(f) {
                        *finding_counts.entry((k, svc.clone())).or_default() += 1;
                    }
                }
            }
            let trace_only = report.trace_findings & !span_kinds;
            if trace_only != 0 {
                let i = report.summary_span.min(unit.spans.len() - 1);
                let svc = &unit.groups[unit.spans[i].group as usize].resource.service;
                for k in FindingKind::iter_mask(trace_only) {
                    *finding_counts.entry((k, svc.clone())).or_default() += 1;
                }
            }
            let mut plan = UnitPlan { report, keep, rule: None, tracestate: Vec::new() };
            if let (Some(sampler), true) = (&self.sampler, unit.reason.is_trace_release()) {
                let verdict = self.sample(sampler, unit, &mut plan, now);
                if let Some(r) = released.last_mut() {
                    r.2 = verdict;
                }
                if let Verdict::Dropped { .. } = verdict {
                    plan.keep.iter_mut().for_each(|k| *k = false);
                    plans.push(plan);
                    continue;
                }
            } else if let Some(th) = unit.threshold {
                // Late spans of a trace kept with a threshold: the same threshold.
                let all: Vec<usize> = (0..unit.spans.len()).collect();
                rewrite_tracestate(unit, &mut plan, &all, th);
            }
            release.units.push(ReleasedUnit {
                reason: unit.reason,
                spans: plan.keep.iter().filter(|&&k| k).count() as u32,
                age_ns: unit.age_ns,
                findings: plan.report.trace_findings,
            });
            plans.push(plan);
        }
        let mut findings: Vec<FindingCount> = finding_counts
            .into_iter()
            .map(|((kind, service), count)| FindingCount { kind, service, count })
            .collect();
        findings.sort_by(|a, b| (a.kind, &a.service).cmp(&(b.kind, &b.service)));
        release.findings = findings;
        let (otlp, spans) = self.encode(&units, &plans);
        release.otlp = otlp;
        release.spans = spans;
        Emitted { release, duplicates, conflicts, released }
    }

    /// Decides one released trace (its checks done, its duplicates resolved). Kept: the
    /// deciding rule goes into the plan and, with a consistent threshold, each kept span's
    /// new tracestate (its old field stripped). Returns the decision, for the late cache.
    fn sample(&self, sampler: &Sampler, unit: &mut Unit, plan: &mut UnitPlan, now: u64) -> Verdict {
        // The spans the duplicate policy kept are the trace.
        let kept: Vec<usize> = (0..unit.spans.len()).filter(|&i| plan.keep[i]).collect();
        let sub;
        let spans: &[crate::index::SpanRec] = if kept.len() == unit.spans.len() {
            &unit.spans
        } else {
            sub = kept.iter().map(|&i| unit.spans[i].clone()).collect::<Vec<_>>();
            &sub
        };
        let summary = kept.iter().position(|&i| i == plan.report.summary_span).unwrap_or(0);
        let view = TraceView {
            trace_id: unit.trace_id,
            reason: unit.reason,
            spans,
            buf: &unit.buf,
            groups: &unit.groups,
            findings: plan.report.trace_findings,
            summary_span: summary,
        };
        let d = sampler.decide(&view, now);
        if !d.keep {
            return d.verdict();
        }
        plan.rule = Some(d.rule);
        if let Some(ours) = d.threshold {
            rewrite_tracestate(unit, plan, &kept, ours);
        }
        d.verdict()
    }

    /// Encodes units as one request, grouping spans by resource and scope.
    fn encode(&self, units: &[Unit], plans: &[UnitPlan]) -> (Vec<u8>, u64) {
        // Extra attribute bytes per span, in one scratch buffer.
        let mut extra: Vec<u8> = Vec::new();
        // (unit, span, extra range, out len)
        struct Item {
            unit: u32,
            span: u32,
            extra: std::ops::Range<usize>,
            len: usize,
        }
        // Resource index -> scopes; scope -> items.
        let mut resources: Vec<(Group, Vec<usize>)> = Vec::new();
        let mut scopes: Vec<(Group, Vec<Item>)> = Vec::new();
        let mut res_lookup: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut scope_lookup: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
        let mut total_spans = 0u64;
        for (ui, (unit, plan)) in units.iter().zip(plans).enumerate() {
            // Map each of the unit's groups to an output scope once.
            let mut scope_of: Vec<Option<usize>> = vec![None; unit.groups.len()];
            for (si, s) in unit.spans.iter().enumerate() {
                if !plan.keep[si] {
                    continue;
                }
                let g = s.group as usize;
                let sc = match scope_of[g] {
                    Some(sc) => sc,
                    None => {
                        let group = &unit.groups[g];
                        let ri = {
                            let cands = res_lookup.entry(group.resource.hash).or_default();
                            match cands.iter().copied().find(|&r| resources[r].0.resource.header == group.resource.header) {
                                Some(r) => r,
                                None => {
                                    resources.push((group.clone(), Vec::new()));
                                    cands.push(resources.len() - 1);
                                    resources.len() - 1
                                }
                            }
                        };
                        let cands = scope_lookup.entry((ri, group.scope.hash)).or_default();
                        let sc = match cands.iter().copied().find(|&c| scopes[c].0.scope.header == group.scope.header) {
                            Some(c) => c,
                            None => {
                                scopes.push((group.clone(), Vec::new()));
                                resources[ri].1.push(scopes.len() - 1);
                                cands.push(scopes.len() - 1);
                                scopes.len() - 1
                            }
                        };
                        scope_of[g] = Some(sc);
                        sc
                    }
                };
                let start = extra.len();
                self.span_attributes(&mut extra, unit, plan, si);
                let stripped: usize = s.strip().iter().map(|r| (r.end - r.start) as usize).sum();
                let len = s.len() - stripped + (extra.len() - start);
                scopes[sc].1.push(Item { unit: ui as u32, span: si as u32, extra: start..extra.len(), len });
                total_spans += 1;
            }
        }
        // Sizes.
        let scope_len: Vec<usize> = scopes
            .iter()
            .map(|(g, items)| g.scope.header.len() + items.iter().map(|it| wire::len_field_size(2, it.len)).sum::<usize>())
            .collect();
        let res_len: Vec<usize> = resources
            .iter()
            .map(|(g, sc)| g.resource.header.len() + sc.iter().map(|&c| wire::len_field_size(2, scope_len[c])).sum::<usize>())
            .collect();
        let total: usize = res_len.iter().map(|&l| wire::len_field_size(1, l)).sum();
        let mut out = Vec::with_capacity(total);
        for (ri, (g, sc)) in resources.iter().enumerate() {
            wire::put_len_header(&mut out, 1, res_len[ri]);
            out.extend_from_slice(&g.resource.header);
            for &c in sc {
                wire::put_len_header(&mut out, 2, scope_len[c]);
                out.extend_from_slice(&scopes[c].0.scope.header);
                for it in &scopes[c].1 {
                    let unit = &units[it.unit as usize];
                    let s = &unit.spans[it.span as usize];
                    wire::put_len_header(&mut out, 2, it.len);
                    let bytes = &unit.buf[s.bytes.start as usize..s.bytes.end as usize];
                    let mut pos = 0usize;
                    for r in s.strip() {
                        out.extend_from_slice(&bytes[pos..r.start as usize]);
                        pos = r.end as usize;
                    }
                    out.extend_from_slice(&bytes[pos..]);
                    out.extend_from_slice(&extra[it.extra.clone()]);
                }
            }
        }
        debug_assert_eq!(out.len(), total);
        (out, total_spans)
    }

    /// Appends the attributes this engine writes on one span (as `Span` field 9 entries).
    fn span_attributes(&self, out: &mut Vec<u8>, unit: &Unit, plan: &UnitPlan, i: usize) {
        let s = &unit.spans[i];
        if s.hlc_wall != 0 {
            let h = s.hlc();
            let mut buf = [0u8; STAMP_STR_LEN];
            h.write_to(&mut buf);
            wire::put_kv(out, 9, ATTR_HLC, &AnyValueRef::Ascii(&buf));
            if let Some(up) = s.upstream_hlc() {
                up.write_to(&mut buf);
                wire::put_kv(out, 9, ATTR_HLC_UPSTREAM, &AnyValueRef::Ascii(&buf));
            }
        }
        if let Some(Some(ts)) = plan.tracestate.get(i) {
            wire::put_bytes_field(out, 3, ts.as_bytes());
        }
        if unit.handoff {
            // Written whatever checks.write_attributes says: the receiver bounds the hops
            // by it.
            let hops = s.handoff_hops().saturating_add(1);
            wire::put_kv(out, 9, ATTR_SPAN_HANDOFF, &AnyValueRef::Int(i64::from(hops)));
            if let Some(k) = &self.handoff_key {
                let proof = k.proof(unit.trace_id, s.span_id, hops);
                wire::put_kv(out, 9, ATTR_SPAN_HANDOFF_PROOF, &AnyValueRef::Int(proof as i64));
            }
            return;
        }
        if !self.write_attributes {
            return;
        }
        let report = &plan.report;
        let f = report.span_findings.get(i).copied().unwrap_or(s.findings);
        if f != 0 {
            let names: Vec<&str> = FindingKind::iter_mask(f).map(FindingKind::name).collect();
            wire::put_kv(out, 9, ATTR_SPAN_FINDINGS, &AnyValueRef::StrArray(&names));
        }
        if let Some(&d) = report.skew_adjustments.get(i) {
            if d != 0 {
                wire::put_kv(out, 9, ATTR_SPAN_SKEW_ADJUSTMENT_NS, &AnyValueRef::Int(d));
            }
        }
        for bad in s.bad_ids() {
            let key = match bad.field {
                1 => ATTR_SPAN_ORIGINAL_TRACE_ID,
                2 => ATTR_SPAN_ORIGINAL_SPAN_ID,
                _ => ATTR_SPAN_ORIGINAL_PARENT_SPAN_ID,
            };
            wire::put_kv(out, 9, key, &AnyValueRef::Str(&hex(&bad.original)));
        }
        match unit.reason {
            ReleaseReason::Late => wire::put_kv(out, 9, ATTR_SPAN_LATE, &AnyValueRef::Bool(true)),
            reason if reason.is_trace_release() && i == report.summary_span => {
                wire::put_kv(out, 9, ATTR_TRACE_RELEASE_REASON, &AnyValueRef::Str(reason.name()));
                let kept = plan.keep.iter().filter(|k| **k).count();
                wire::put_kv(out, 9, ATTR_TRACE_SPAN_COUNT, &AnyValueRef::Int(kept as i64));
                let status = if report.trace_findings == 0 { "consistent" } else { "inconsistent" };
                wire::put_kv(out, 9, ATTR_TRACE_STATUS, &AnyValueRef::Str(status));
                if report.trace_findings != 0 {
                    let names: Vec<&str> = FindingKind::iter_mask(report.trace_findings).map(FindingKind::name).collect();
                    wire::put_kv(out, 9, ATTR_TRACE_FINDINGS, &AnyValueRef::StrArray(&names));
                }
                if unit.recovered {
                    wire::put_kv(out, 9, ATTR_TRACE_RECOVERED, &AnyValueRef::Bool(true));
                }
                if let (Some(rule), Some(sampler)) = (plan.rule, &self.sampler) {
                    wire::put_kv(out, 9, ATTR_TRACE_SAMPLING_RULE, &AnyValueRef::Str(sampler.rule_name(rule)));
                }
                if !report.missing_parents.is_empty() {
                    let ids: Vec<String> = report.missing_parents.iter().map(|p| hex(&p.to_be_bytes())).collect();
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    wire::put_kv(out, 9, ATTR_TRACE_MISSING_PARENT_IDS, &AnyValueRef::StrArray(&refs));
                }
            }
            _ => {}
        }
    }
}

/// Gives spans `idx` of `unit` the threshold `ours` in their tracestate (equalizing: a span
/// keeps a higher threshold it arrived with): the new tracestate goes into the plan, the old
/// field is stripped.
fn rewrite_tracestate(unit: &mut Unit, plan: &mut UnitPlan, idx: &[usize], ours: Threshold) {
    let mut strips = Vec::new();
    plan.tracestate = vec![None; unit.spans.len()];
    for &i in idx {
        let s = &unit.spans[i];
        let bytes = unit.buf.get(s.bytes.start as usize..s.bytes.end as usize).unwrap_or_default();
        let (old, range) = span_tracestate(bytes).map_or(("", None), |(ts, r)| (ts, Some(r)));
        let th = read_tracestate(old).0.map_or(ours, |t| t.max(ours));
        let Some(enc) = th.encode() else { continue };
        plan.tracestate[i] = Some(write_threshold(old, &enc));
        if let Some(r) = range {
            strips.push((i, r));
        }
    }
    for (i, r) in strips {
        let strip = &mut unit.spans[i].extra.get_or_insert_with(Default::default).strip;
        let at = strip.partition_point(|s| s.start < r.start);
        strip.insert(at, r);
    }
}

struct UnitPlan {
    report: TraceReport,
    keep: Vec<bool>,
    /// The sampling rule that kept the trace.
    rule: Option<usize>,
    /// Per span (empty: none): the tracestate written in place of the span's own.
    tracestate: Vec<Option<String>>,
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}
