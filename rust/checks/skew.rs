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
//!   asynchronous or longer child), narrowed to the window all edges of the domain with
//!   settled domains (and its children in domains not settled yet) allow, when they agree;
//!   otherwise the domain does not move. Every span of the domain then moves by that offset.
//! - A process ahead by less than the duration of the call into it shows no evidence on
//!   the way in (its entry span starts inside its parent and overhangs its end) but on the
//!   way out: its callee starts before its CLIENT span. When a child starts before its
//!   parent and the parent's domain entered the trace only through spans that would still
//!   start inside their parents moved back by all of the needed offset, and that overhang
//!   their parents' end by at least half of it or the child's domain agrees with its own
//!   callees (moving it would put evidence on an edge to one of them and take it off none),
//!   the parent's domain is the one ahead: its entry spans get `clock_skew` too and it
//!   moves instead of the child. This runs whether or not correction is on, so findings
//!   never depend on it.
//! - An offset larger than `skew_max_adjustment_ns` (or than an `i64`) is not applied (the
//!   finding stays); a span the offset would move out of the `u64` range stays where it is;
//!   a negative duration (the child's or the parent's) gives no offset.
//! - Spans on or below a longer parent cycle are never reached and never move.

use super::clock::{Domains, HostIdentity};
use super::{is_async, skew_evidence, skew_tolerance, CheckConfig, Origin, SkewTolerance, NONE};
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
    // Per domain, the spans of other domains whose parent is in it.
    let mut exits: Vec<Vec<usize>> = vec![Vec::new(); n_domains];
    for i in 0..n {
        if findings[i] & skew != 0 {
            skewed[dom[i]] = true;
        }
        if parent[i] != NONE && dom[parent[i]] != dom[i] {
            entries[dom[i]].push(i);
            exits[dom[parent[i]]].push(i);
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
    // Whether the domain was already judged as a possible "process ahead" (once each).
    let mut judged = vec![false; n_domains];
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
                let tol = skew_tolerance(cfg, origins[c], origins[p]);
                let e = if skewed[dc] {
                    estimate(&spans[c], &spans[p], dp_off, tol, max)
                } else {
                    0
                };
                if e > 0 && !judged[dp] {
                    judged[dp] = true;
                    // The child starts before its parent. When the parent's process entered
                    // the trace through a span that overhangs its own parent's end by at
                    // least half of that (or moving the child's process instead would put
                    // evidence on the edges to its own callees and clear none), and centring
                    // it in its parent would put the child inside too, that process is the
                    // one ahead: it moves instead.
                    let need = i128::from(spans[p].start) + i128::from(dp_off)
                        - i128::from(spans[c].start);
                    let es = &entries[dp];
                    let child_breaks_below =
                        breaks_below(dc, e, &offset, &exits, spans, parent, &dom, cfg, origins);
                    let saved = offset[dp].take();
                    let candidate = es
                        .iter()
                        .find(|&&k| offset[dom[parent[k]]].is_some())
                        .and_then(|&k| {
                            let q = parent[k];
                            let q_off = offset[dom[q]].unwrap_or(0);
                            let overhang = i128::from(spans[k].end) + i128::from(dp_off)
                                - (i128::from(spans[q].end) + i128::from(q_off));
                            let ktol = skew_tolerance(cfg, origins[k], origins[q]);
                            let f0 = place(&spans[k], &spans[q], q_off, max)?;
                            let f = fit(dp, f0, &offset, &entries, &exits, spans, parent, &dom);
                            let moved = i128::from(f) - i128::from(dp_off);
                            let fixes = -moved + i128::from(tol.before_start) >= need;
                            let fits = !skew_evidence(
                                &spans[k],
                                &spans[q],
                                q_off.checked_sub(f)?,
                                ktol,
                                is_async(&spans[k], &spans[q]),
                            );
                            let ahead = overhang >= need / 2 || child_breaks_below;
                            (ahead && moved < 0 && fixes && fits).then_some(f)
                        });
                    if let Some(f) = candidate {
                        out.blamed.extend_from_slice(es);
                        offset[dp] = Some(f);
                        offset[dc] = Some(0);
                        continue;
                    }
                    offset[dp] = saved;
                }
                let e = if e != 0 {
                    fit(dc, e, &offset, &entries, &exits, spans, parent, &dom)
                } else {
                    0
                };
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

/// Whether moving domain `d` by `e` would contradict the edges to its callees: some child of
/// `d` in another domain, consistent with its parent now, would show evidence after the move,
/// and no child showing evidence now would lose it. A process whose callees agree with it
/// is not the one off; the process it is compared with is.
#[allow(clippy::too_many_arguments)]
fn breaks_below(
    d: usize,
    e: i64,
    offset: &[Option<i64>],
    exits: &[Vec<usize>],
    spans: &[SpanRec],
    parent: &[usize],
    dom: &[usize],
    cfg: &CheckConfig,
    origins: &[Origin],
) -> bool {
    let mut breaks = false;
    for &k in &exits[d] {
        if dom[k] == d {
            continue;
        }
        let q = parent[k];
        let k_off = offset[dom[k]].unwrap_or(0);
        let (Some(before), Some(after)) = (0i64.checked_sub(k_off), e.checked_sub(k_off)) else {
            return false;
        };
        let tol = skew_tolerance(cfg, origins[k], origins[q]);
        let asyncw = is_async(&spans[k], &spans[q]);
        let was = skew_evidence(&spans[k], &spans[q], before, tol, asyncw);
        let is = skew_evidence(&spans[k], &spans[q], after, tol, asyncw);
        if was && !is {
            return false;
        }
        breaks |= is && !was;
    }
    breaks
}

/// How far the child's domain must move relative to its parent's (already shifted by
/// `parent_shift`) to fit: 0 unless the child's times are still evidence of skew.
fn estimate(c: &SpanRec, p: &SpanRec, parent_shift: i64, tol: SkewTolerance, max: i128) -> i64 {
    if !skew_evidence(c, p, parent_shift, tol, is_async(c, p)) {
        return 0;
    }
    // Asynchronous (may outlive its parent) or longer than the parent (which timed out):
    // the only sound fix is to start with the parent. Otherwise network latency is taken
    // as split evenly between request and response.
    place(c, p, parent_shift, max).unwrap_or(0)
}

/// Narrows an estimated offset `e` of domain `d` to what every edge of `d` with a settled
/// domain allows (each entry span inside its parent, each child of another, not yet
/// settled domain inside its parent in `d`; the strict interval of an edge when there is
/// one, else only "starts inside"), when those edges agree; else to what its entry edges
/// allow; else `e` as it is.
#[allow(clippy::too_many_arguments)]
fn fit(
    d: usize,
    e: i64,
    offset: &[Option<i64>],
    entries: &[Vec<usize>],
    exits: &[Vec<usize>],
    spans: &[SpanRec],
    parent: &[usize],
    dom: &[usize],
) -> i64 {
    // Bounds on the offset `o` of the child's side, given the parent's side shifted by
    // `p_off` and the child's by `c_off` + `o`.
    let bounds = |c: usize, p: usize| -> (i128, i128) {
        let (cs, ce) = (i128::from(spans[c].start), i128::from(spans[c].end));
        let (ps, pe) = (i128::from(spans[p].start), i128::from(spans[p].end));
        let (lo, hi) = (ps - cs, pe - ce);
        if lo <= hi && !is_async(&spans[c], &spans[p]) {
            (lo, hi)
        } else {
            (lo, i128::MAX / 4)
        }
    };
    let (mut lo, mut hi) = (i128::MIN / 4, i128::MAX / 4);
    for &k in &entries[d] {
        let q = parent[k];
        if let Some(q_off) = offset[dom[q]] {
            let (a, b) = bounds(k, q);
            lo = lo.max(a + i128::from(q_off));
            hi = hi.min(b + i128::from(q_off));
        }
    }
    let clamp = |lo: i128, hi: i128| i64::try_from(i128::from(e).clamp(lo, hi)).unwrap_or(e);
    if lo > hi {
        return e;
    }
    let (mut lo2, mut hi2) = (lo, hi);
    for &c in &exits[d] {
        if offset[dom[c]].is_some() || dom[c] == d {
            continue;
        }
        // The child's side stays: the parent's side `o` must satisfy -o in its bounds.
        let (a, b) = bounds(c, parent[c]);
        lo2 = lo2.max(-b);
        hi2 = hi2.min(-a);
    }
    if lo2 <= hi2 {
        clamp(lo2, hi2)
    } else {
        clamp(lo, hi)
    }
}

/// The shift that places a child in its parent (shifted by `parent_shift`): centred when it
/// is synchronous and no longer, else starting with it; `None` for a negative duration or
/// beyond `max`.
fn place(c: &SpanRec, p: &SpanRec, parent_shift: i64, max: i128) -> Option<i64> {
    let (ps, pe) = (
        i128::from(p.start) + i128::from(parent_shift),
        i128::from(p.end) + i128::from(parent_shift),
    );
    let (cs, ce) = (i128::from(c.start), i128::from(c.end));
    let (cd, pd) = (ce - cs, pe - ps);
    if ce < cs || pe < ps {
        return None;
    }
    let d = if cd > pd || is_async(c, p) {
        ps - cs
    } else {
        ps + (pd - cd) / 2 - cs
    };
    if d.abs() > max {
        return None;
    }
    i64::try_from(d).ok()
}

/// Whether `span` shifted by `d` keeps both times in the `u64` range.
pub(super) fn shift_fits(span: &SpanRec, d: i128) -> bool {
    let ok = |t: u64| (0..=i128::from(u64::MAX)).contains(&(i128::from(t) + d));
    ok(span.start) && ok(span.end)
}
