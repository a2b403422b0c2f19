//! Children still on their way: how the engine uses what [`super::expect`] learned. At
//! ingest it records each service's export lag; on a tick, a structurally complete, quiet
//! trace with a call whose child is expected (or not learned yet) and missing is held until
//! that child should have arrived; on release the trace's calls teach the table, and calls
//! whose expected child never came get the finding `expected_child_missing`.

use crate::findings::{FindingKind, ReleaseReason};
use crate::index::ScannedBatch;

use super::shard::{Shard, AWAITED};
use super::stats::stat;
use super::types::Clocks;
use super::Engine;

/// Most services whose export lag is tracked.
pub(super) const MAX_LAG_SERVICES: usize = 1024;
/// How often a trace's wait is computed again while it waits.
const RECHECK_NS: u64 = 1_000_000_000;
/// Bytes of one call key in the learned table (its slot and its share of the index).
pub(super) const KEY_BYTES: u64 = 64;

impl Engine {
    /// Records the export lag of each service of a batch: the wall clock at arrival minus the
    /// end of its oldest-ending span (spans handed off by another collector, and spans
    /// without an end, are left out).
    pub(super) fn note_lags(&self, batch: &ScannedBatch, clocks: Clocks) {
        let mut lags: Vec<(&str, u64)> = Vec::new();
        let mut ends: Vec<(&str, u64)> = Vec::new();
        for s in &batch.spans {
            if s.end == 0 || s.handoff_hops() > 0 || !s.trace_id_valid || !s.span_id_valid {
                continue;
            }
            let Some(g) = batch.groups.get(s.group as usize) else { continue };
            let lag = clocks.wall.saturating_sub(s.end);
            let service = g.resource.service.as_str();
            match lags.iter_mut().find(|l| l.0 == service) {
                Some(l) => l.1 = l.1.max(lag),
                None => lags.push((service, lag)),
            }
            // The latest end, but not one from the future of the collector's clock (a
            // process far ahead would otherwise stop every wait for its children).
            let end = s.end.min(clocks.wall);
            match ends.iter_mut().find(|l| l.0 == service) {
                Some(l) => l.1 = l.1.max(end),
                None => ends.push((service, end)),
            }
        }
        self.expect.observe_lags(&lags, clocks.mono);
        self.expect.observe_ends(&ends);
    }

    /// Teaches the learned table from late spans (indexes into `batch`): the parent of one
    /// may be a call released without waiting for its child.
    pub(super) fn note_late_children(&self, batch: &ScannedBatch, late: &[u32]) {
        let children: Vec<(u128, u64, u64)> = late
            .iter()
            .filter_map(|&i| Some((batch.trace_ids.get(i as usize)?, batch.spans.get(i as usize)?)))
            .filter(|(_, s)| !s.is_root())
            .map(|(id, s)| {
                let service = batch.groups.get(s.group as usize).map_or("", |g| g.resource.service.as_str());
                (u128::from_be_bytes(*id), s.parent_id, self.expect.service_hash(service))
            })
            .collect();
        self.c.add(stat!(learned_from_late_spans), self.expect.learn_late(&children));
    }

    /// Whether trace `id`, due for `reason`, is held for children still on their way. When
    /// it is not and it leaves (released, not handed off), its calls teach the learned table
    /// and each call whose expected child never came is marked.
    pub(super) fn awaits_children(&self, shard: &mut Shard, id: u128, reason: ReleaseReason, clocks: Clocks) -> bool {
        if !matches!(reason, ReleaseReason::Complete | ReleaseReason::IdleTimeout | ReleaseReason::MaxAge) {
            return false;
        }
        let now = clocks.mono;
        let Some(hops) = shard.hops(id) else { return false };
        let Some(t) = shard.trace_mut(id) else { return false };
        let next_look = t.hold & !AWAITED;
        if reason == ReleaseReason::Complete && next_look > now {
            return true;
        }
        let calls = self.expect.callouts_keyed(&t.spans, &t.groups, &t.calls);
        #[cfg(test)]
        assert_eq!(calls, self.expect.callouts(&t.spans, &t.buf, &t.groups), "the call keys kept for trace {id:x} disagree with its spans");
        if calls.is_empty() {
            return false;
        }
        if reason == ReleaseReason::Complete {
            // Until when its calls' children may come. Looked at again every second while it
            // waits: what was learned meanwhile (a callee's lag, once known) may shorten it.
            let latest = t.last_seen.saturating_add(self.limits.idle_timeout_ns).min(t.first_seen.saturating_add(self.limits.max_age_ns));
            let until = self.expect.hold_until(&calls, now, clocks.wall, latest);
            if until > now {
                if t.hold & AWAITED == 0 {
                    self.c.add(stat!(traces_awaited_children), 1);
                }
                t.hold = AWAITED | until.min(now.saturating_add(RECHECK_NS)).min(!AWAITED);
                return true;
            }
        }
        if self.handoff.hands_off(reason, hops) {
            return false;
        }
        let missing = self.expect.learn(id, &calls, reason != ReleaseReason::MaxAge, now, clocks.wall);
        self.c.add(stat!(expected_children_missing), missing.len() as u64);
        let bit = FindingKind::ExpectedChildMissing.bit() & self.enabled_checks;
        for i in missing {
            t.spans[i].findings |= bit;
        }
        false
    }
}
