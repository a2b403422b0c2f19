//! Hand-off: traces that leave this engine without being released, to be sent back through
//! the balancing tier to the collector that owns their trace ID now, where they merge with
//! the spans that arrived there (docs/DESIGN.md, "Hand-off").
//!
//! - On shutdown (`handoff.on_shutdown`) every buffered trace is handed off instead of
//!   being released with reason `shutdown`.
//! - At `idle_timeout` (`handoff.on_idle`) an incomplete trace is handed off instead of
//!   being released with reason `idle_timeout`; if it comes back here it is buffered again
//!   (its ID is not remembered as released) and held once more.
//!
//! A handed-off trace waits in a queue of its own, drained by [`Engine::drain_handoff`],
//! so that the caller can send it to another output than released traces. It leaves with
//! its spans' HLC stamps (`consistency.hlc`, which the receiver treats as an upstream
//! stamp) and a hop count (`consistency.span.handoff`, one more than it arrived with); the
//! receiver strips the marker like every `consistency.*` attribute and counts the spans.
//! A trace holding a span that was handed off `handoff.max_hops` times is released, never
//! handed off again, so no span goes round more often.
//!
//! Handed-off data counts against the memory bound like released data (`ready_spans`,
//! `ready_bytes`) until it is drained.

use crossbeam_channel::{Receiver, Sender};

use crate::config::Config;
use crate::findings::ReleaseReason;
use crate::index::SpanRec;

use super::shard::{is_complete, RunInsert, Shard};
use super::stats::stat;
use super::unit::Unit;
use super::{Engine, Release};

/// The hand-off settings and queue of an engine.
pub(super) struct Handoff {
    on_shutdown: bool,
    on_idle: bool,
    max_hops: u32,
    tx: Sender<Unit>,
    rx: Receiver<Unit>,
}

impl Handoff {
    pub(super) fn new(cfg: &Config) -> Handoff {
        let (tx, rx) = crossbeam_channel::unbounded();
        Handoff {
            on_shutdown: cfg.handoff_on_shutdown,
            on_idle: cfg.handoff_on_idle,
            max_hops: cfg.handoff_max_hops.clamp(0, u32::MAX as i64) as u32,
            tx,
            rx,
        }
    }

    /// Whether a trace that went through `hops` hand-offs and is due for `reason` is handed
    /// off rather than released.
    fn hands_off(&self, reason: ReleaseReason, hops: u32) -> bool {
        hops < self.max_hops
            && match reason {
                ReleaseReason::Shutdown => self.on_shutdown,
                ReleaseReason::IdleTimeout => self.on_idle,
                _ => false,
            }
    }

    pub(super) fn queue(&self, unit: Unit) {
        // The receiver lives as long as the engine: sending cannot fail.
        let _ = self.tx.send(unit);
    }
}

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

    /// Counts the spans of an ingested batch that were handed off to this engine.
    pub(super) fn note_handoff_received(&self, spans: &[SpanRec]) {
        let n = spans.iter().filter(|s| s.handoff_hops() > 0).count() as u64;
        self.c.add(stat!(handoff_received_spans), n);
    }

    /// Counts handed-off spans that joined a trace buffered here.
    pub(super) fn note_run(&self, run: RunInsert) {
        if run.merged {
            self.c.add(stat!(handoff_merged_spans), run.handed_off);
        }
    }

    /// Takes handed-off traces (whole; at least one if any is waiting) up to about
    /// `max_spans` spans and encodes them as one `ExportTraceServiceRequest`, each span
    /// with its HLC stamp and its hop count. `None` when nothing is waiting. The units of
    /// the release say why each trace was handed off (`shutdown` or `idle_timeout`).
    pub fn drain_handoff(&self, max_spans: u64) -> Option<Release> {
        // With a write-ahead log, acknowledged once the hand-off output took it: until then
        // a restart replays these spans here.
        self.drain_from(&self.handoff.rx, max_spans)
    }
}
