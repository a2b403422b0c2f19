//! Release: the decision that takes a trace out of its shard (released, or handed off), the
//! ready queue it goes to, and the calls that release what is due — tick (timers, bounds,
//! the write-ahead log's bound) and shutdown (everything).

use std::sync::atomic::Ordering;

use crate::findings::ReleaseReason;

use super::shard::{is_complete, Shard};
use super::stats::stat;
use super::types::Clocks;
use super::unit::Unit;
use super::{lock, Engine};

impl Engine {
    /// Takes trace `id` out of the shard for `reason`: handed off when the hand-off
    /// settings say so, else released (and counted when it had been handed off and is still
    /// incomplete).
    pub(super) fn take_due(&self, shard: &mut Shard, id: u128, reason: ReleaseReason, now: u64) -> Option<Unit> {
        let hops = shard.hops(id)?;
        if self.handoff.hands_off(reason, hops) {
            return shard.hand_off(id, reason, now);
        }
        let unit = shard.release(id, reason, now)?;
        if hops > 0 && reason != ReleaseReason::Complete && !is_complete(&unit.spans) {
            self.c.add(stat!(handoff_incomplete_traces), 1);
        }
        Some(unit)
    }


    /// Releases the shard's oldest traces while the engine is over a bound. Buffered traces
    /// plus what only drains can free must fit `max_buffered_bytes`; buffered spans must fit
    /// `max_buffered_spans`. Both bounds are global; the shard that is over pays.
    pub(super) fn enforce_limits(&self, shard: &mut Shard, now: u64) {
        loop {
            self.sync(shard);
            let spans = self.c.get(stat!(buffered_spans));
            let bytes = self.c.get(stat!(buffered_bytes))
                + self.interner.bytes()
                + self.c.get(stat!(memory_late_cache_bytes))
                + self.expect.bytes();
            if spans <= self.limits.max_buffered_spans && bytes <= self.limits.max_buffered_bytes {
                return;
            }
            let Some(id) = shard.oldest() else { return };
            self.release(shard, id, ReleaseReason::MemoryPressure, now);
        }
    }

    /// Moves a buffered trace to the ready queue, or to the hand-off queue ([`super::handoff`]).
    pub(super) fn release(&self, shard: &mut Shard, id: u128, reason: ReleaseReason, now: u64) {
        if let Some(unit) = self.take_due(shard, id, reason, now) {
            self.send(unit);
        }
    }

    pub(super) fn send(&self, unit: Unit) {
        self.c.add(stat!(ready_spans), unit.spans.len() as u64);
        self.c.add(stat!(ready_bytes), unit.bytes);
        if unit.handoff {
            self.handoff.queue(unit);
            return;
        }
        // The receiver lives as long as the engine: sending cannot fail.
        let _ = self.ready_tx.send(unit);
    }

    /// Releases what is due at `now`: complete and quiet traces, idle ones, old ones, and
    /// the oldest while over a bound. Returns the number of spans waiting in the ready queue.
    ///
    /// `now` is both clocks' reading; see [`Engine::tick_at`].
    pub fn tick(&self, now: u64) -> u64 {
        self.tick_at(Clocks::same(now))
    }

    /// [`Engine::tick`]: what is due by the monotonic clock; the wall clock moves
    /// `hlc.state_file`'s bound ahead.
    pub fn tick_at(&self, clocks: Clocks) -> u64 {
        let now = clocks.mono;
        self.last_mono.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        for m in self.shards.iter() {
            let mut shard = lock(m);
            for (id, reason) in shard.due(now) {
                if self.awaits_children(&mut shard, id, reason, clocks) {
                    shard.requeue(id);
                    continue;
                }
                self.release(&mut shard, id, reason, now);
            }
            self.enforce_limits(&mut shard, now);
        }
        self.relieve_wal(now);
        crate::heap::decay_unused();
        if let Some(h) = &self.hlc {
            h.persist_ahead(clocks.wall); // so that ingests rarely write hlc.state_file themselves
        }
        self.c.get(stat!(ready_spans))
    }

    /// Near `wal.max_bytes`, releases (reason `wal_full`) the traces that hold the log's
    /// oldest segment, so that delivering them frees it. Ingests are refused (retryable) only
    /// while the log is at the bound.
    fn relieve_wal(&self, now: u64) {
        let Some(w) = &self.wal else { return };
        if !w.under_pressure() {
            return;
        }
        let Some(end) = w.oldest_segment_end() else { return };
        for m in self.shards.iter() {
            let mut shard = lock(m);
            for id in shard.holding_wal_before(end) {
                self.release(&mut shard, id, ReleaseReason::WalFull, now);
            }
            self.sync(&mut shard);
        }
    }

    /// Releases everything buffered with reason `shutdown` (or hands it off, with
    /// `handoff.on_shutdown`); later ingests are released at once with the same reason.
    /// Drain both queues afterwards until empty.
    pub fn shutdown(&self, now: u64) -> u64 {
        self.shutdown_at(Clocks::same(now))
    }

    /// [`Engine::shutdown`]; release ages by the monotonic clock.
    pub fn shutdown_at(&self, clocks: Clocks) -> u64 {
        let now = clocks.mono;
        self.shut_down.store(true, Ordering::Release);
        for m in self.shards.iter() {
            let mut shard = lock(m);
            for id in shard.all_ids() {
                self.release(&mut shard, id, ReleaseReason::Shutdown, now);
            }
            self.sync(&mut shard);
        }
        self.c.get(stat!(ready_spans))
    }
}
