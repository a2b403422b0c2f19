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
//! - An offset larger than `skew_max_adjustment_ns` (or than an `i64`) is not applied (the
//!   finding stays); a span the offset would move out of the `u64` range stays where it is;
//!   a negative duration (the child's or the parent's) gives no offset.
//! - Spans on or below a longer parent cycle are never reached and never move.

use super::clock::{Domains, HostIdentity};
use super::{edge_tolerance, is_async, skew_evidence, CheckConfig, Origin, NONE};
use crate::findings::FindingKind;
use crate::index::{Group, SpanRec};

/// The applied shift per span, or an empty vector when nothing moved.
pub(super) fn correct(
    spans: &[SpanRec],
    groups: &[Group],
    parent: &[usize],
    origins: &[Origin],
    cfg: &CheckConfig,
    findings: &[u32],
) -> Vec<i64> {
    let skew = FindingKind::ClockSkew.bit();
    let n = spans.len();
    if !findings.iter().any(|f| f & skew != 0) {
        return Vec::new();
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
    for i in 0..n {
        if findings[i] & skew != 0 {
            skewed[dom[i]] = true;
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
    let mut shift = vec![0i64; n];
    let mut any = false;
    let mut apply = |s: usize, d: i64, shift: &mut [i64]| {
        if d != 0 && shift_fits(&spans[s], i128::from(d)) {
            shift[s] = d;
            any = true;
        }
    };
    let starts: Vec<usize> = (0..n)
        .filter(|&i| parent[i] == NONE && spans[i].is_root())
        .chain((0..n).filter(|&i| parent[i] == NONE && !spans[i].is_root()))
        .collect();
    let mut queue: Vec<usize> = Vec::with_capacity(n);
    for s in starts {
        let d = *offset[dom[s]].get_or_insert(0);
        apply(s, d, &mut shift);
        queue.push(s);
        let mut head = queue.len() - 1;
        while head < queue.len() {
            let p = queue[head];
            head += 1;
            for &c in &child[first[p]..first[p + 1]] {
                let d = match offset[dom[c]] {
                    Some(d) => d,
                    None => {
                        let d = if skewed[dom[c]] {
                            estimate(
                                &spans[c],
                                &spans[p],
                                shift[p],
                                edge_tolerance(cfg, origins[c], origins[p]),
                                max,
                            )
                        } else {
                            0
                        };
                        offset[dom[c]] = Some(d);
                        d
                    }
                };
                apply(c, d, &mut shift);
                queue.push(c);
            }
        }
    }
    if any {
        shift
    } else {
        Vec::new()
    }
}

/// The offset of the child's domain from one edge: 0 unless the child's times, against its
/// parent's shifted ones, are still evidence of skew.
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
