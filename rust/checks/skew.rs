//! Clock-skew correction: moves the spans of a clock domain that a `clock_skew` finding was
//! made for, all by one estimated offset (docs/DESIGN.md, "Skew correction").
//!
//! - Clock domains: resources sharing a host identity (directly or through others) are one
//!   domain; a resource without host attributes is one of its own. A resource whose times
//!   contradict its parent's within one domain (a `clock_skew` finding between two
//!   resources of one host, e.g. a process run under `faketime`) is taken out of it.
//! - Only a domain with a `clock_skew` finding on one of its spans moves. Its offset is
//!   estimated at its first span reached top-down, breadth-first (real roots first, then
//!   orphans and self-parented spans), from a parent in another domain, against that
//!   parent's already shifted times: when those times still show the evidence, the child
//!   is centred in its parent (a synchronous child no longer than its parent: network
//!   latency split evenly between request and response) or made to start with it (an
//!   asynchronous or longer child); otherwise the domain does not move. Every span of the
//!   domain then moves by that offset.
//! - A process ahead by less than the duration of the call into it shows no evidence on
//!   the way in (its entry span starts inside its parent and overhangs its end) but on the
//!   way out: its callee starts before its CLIENT span. When a child starts before its
//!   parent and the parent's domain entered the trace only through spans that overhang
//!   their parents' end by at least half the needed offset and would still start inside
//!   them moved back by all of it, the parent's domain is the one ahead: its entry spans get
//!   `clock_skew` too and it moves instead of the child. This runs whether or not
//!   correction is on, so findings never depend on it.
//! - An offset larger than `skew_max_adjustment_ns` (or than an `i64`) is not applied (the
//!   finding stays); a span the offset would move out of the `u64` range stays where it is;
//!   a negative duration (the child's or the parent's) gives no offset.
//! - Spans on or below a longer parent cycle are never reached and never move.

use super::clock::{Domains, HostIdentity};
use super::{edge_tolerance, is_async, skew_evidence, CheckConfig, Origin, NONE};
use crate::findings::FindingKind;
use crate::index::{Group, SpanRec};

/// What the skew pass found: the shift per span (empty when nothing moved) and the spans
/// that get a `clock_skew` finding because their process was found to be the one ahead.
#[derive(Default)]
pub(super) struct Solved {
    pub shift: Vec<i64>,
    pub blamed: Vec<usize>,
}

/// Estimates the offset of every clock domain of the trace that a `clock_skew` finding was
/// made for (see the module doc). Runs only when the trace has such a finding.
pub(super) fn solve(
    spans: &[SpanRec],
    groups: &[Group],
    parent: &[usize],
    origins: &[Origin],
    cfg: &CheckConfig,
    findings: &[u32],
) -> Solved {
    let skew = FindingKind::ClockSkew.bit();
    let n = spans.len();
    if !findings.iter().any(|f| f & skew != 0) {
        return Solved::default();
    }

    // Resources of the trace, by their hash, each with its host identity.
    let mut by_hash: Vec<(u64, usize)> = (0..n).map(|i| (origins[i].resource, i)).collect();
    by_hash.sort_unstable();
    let mut res_of = vec![0usize; n];
    let mut hosts: Vec<HostIdentity> = Vec::new();
    let mut last = None;
    for &(h, i) in &by_hash {
        if last != Some(h) {
            last = Some(h);
            hosts.push(
                groups
                    .get(spans[i].group as usize)
                    .map_or(HostIdentity::default(), |g| g.resource.host),
            );
        }
        res_of[i] = hosts.len() - 1;
    }
    let mut domains = Domains::new(&hosts);
    // Evidence between two resources of one host identity disproves that they share a clock.
    for i in 0..n {
        let p = parent[i];
        if findings[i] & skew != 0
            && p != NONE
            && res_of[i] != res_of[p]
            && domains.domain(res_of[i]) == domains.domain(res_of[p])
        {
            domains.split(res_of[i]);
        }
    }
    let dom: Vec<usize> = (0..n).map(|i| domains.domain(res_of[i])).collect();
    let n_domains = 2 * hosts.len();
    let mut skewed = vec![false; n_domains];
    // Per domain, its entry spans: those whose parent is in another domain, in input order.
    let mut entries: Vec<Vec<usize>> = vec![Vec::new(); n_domains];
    for i in 0..n {
        if findings[i] & skew != 0 {
            skewed[dom[i]] = true;
        }
        if parent[i] != NONE && dom[parent[i]] != dom[i] {
            entries[dom[i]].push(i);
        }
    }

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
    let mut offset: Vec<Option<i64>> = vec![None; n_domains];
    let mut reached = vec![false; n];
    let mut blamed_domain = vec![false; n_domains];
    let mut out = Solved::default();
    let starts: Vec<usize> = (0..n)
        .filter(|&i| parent[i] == NONE && spans[i].is_root())
        .chain((0..n).filter(|&i| parent[i] == NONE && !spans[i].is_root()))
        .collect();
    let mut queue: Vec<usize> = Vec::with_capacity(n);
    for s in starts {
        offset[dom[s]].get_or_insert(0);
        reached[s] = true;
        queue.push(s);
        let mut head = queue.len() - 1;
        while head < queue.len() {
            let p = queue[head];
            head += 1;
            for &c in &child[first[p]..first[p + 1]] {
                reached[c] = true;
                queue.push(c);
                let (dc, dp) = (dom[c], dom[p]);
                if offset[dc].is_some() {
                    continue;
                }
                let dp_off = offset[dp].unwrap_or(0);
                let tol = edge_tolerance(cfg, origins[c], origins[p]);
                let e = if skewed[dc] {
                    estimate(&spans[c], &spans[p], dp_off, tol, max)
                } else {
                    0
                };
                if e > 0 && !blamed_domain[dp] {
                    // The child starts before its parent. When the parent's process entered
                    // the trace through spans that overhang their own parents by as much and
                    // still fit them moved back by `e`, that process is the one ahead.
                    let ahead = |k: usize| {
                        let q = parent[k];
                        let q_off = offset[dom[q]];
                        q_off.is_some_and(|q_off| {
                            let (qs, qe) = (
                                i128::from(spans[q].start) + i128::from(q_off),
                                i128::from(spans[q].end) + i128::from(q_off),
                            );
                            let ks =
                                i128::from(spans[k].start) + i128::from(dp_off) - i128::from(e);
                            let ke = i128::from(spans[k].end) + i128::from(dp_off);
                            let ktol = i128::from(edge_tolerance(cfg, origins[k], origins[q]));
                            ks + ktol >= qs && ke - qe >= i128::from(e) / 2
                        })
                    };
                    let es = &entries[dp];
                    if !es.is_empty() && es.iter().all(|&k| ahead(k)) {
                        blamed_domain[dp] = true;
                        out.blamed.extend_from_slice(es);
                        offset[dp] = Some(dp_off - e);
                        offset[dc] = Some(0);
                        continue;
                    }
                }
                offset[dc] = Some(e);
            }
        }
    }
    let mut shift = vec![0i64; n];
    let mut any = false;
    for i in 0..n {
        let d = offset[dom[i]].unwrap_or(0);
        if reached[i] && d != 0 && shift_fits(&spans[i], i128::from(d)) {
            shift[i] = d;
            any = true;
        }
    }
    if any {
        out.shift = shift;
    }
    out
}

/// How far the child's domain must move relative to its parent's (already shifted by
/// `parent_shift`) to fit: 0 unless the child's times are still evidence of skew.
fn estimate(c: &SpanRec, p: &SpanRec, parent_shift: i64, tol: u64, max: i128) -> i64 {
    let asyncw = is_async(c, p);
    if !skew_evidence(c, p, parent_shift, tol, asyncw) {
        return 0;
    }
    let (ps, pe) = (
        i128::from(p.start) + i128::from(parent_shift),
        i128::from(p.end) + i128::from(parent_shift),
    );
    let (cs, ce) = (i128::from(c.start), i128::from(c.end));
    if ce < cs || pe < ps {
        return 0;
    }
    let (cd, pd) = (ce - cs, pe - ps);
    let d = if asyncw || cd > pd {
        // Asynchronous (may outlive its parent) or longer than the parent (which timed out):
        // the only sound fix is to start with the parent.
        ps - cs
    } else {
        // Network latency split evenly between request and response.
        ps + (pd - cd) / 2 - cs
    };
    if d.abs() > max {
        return 0;
    }
    i64::try_from(d).unwrap_or(0)
}

/// Whether `span` shifted by `d` keeps both times in the `u64` range.
pub(super) fn shift_fits(span: &SpanRec, d: i128) -> bool {
    let ok = |t: u64| (0..=i128::from(u64::MAX)).contains(&(i128::from(t) + d));
    ok(span.start) && ok(span.end)
}
