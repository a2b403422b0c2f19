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
//! A handed-off trace waits in a queue of its own, drained by [`super::Engine::drain_handoff`],
//! so that the caller can send it to another output than released traces. It leaves with
//! its spans' HLC stamps (`consistency.hlc`, which the receiver treats as an upstream
//! stamp) and a hop count (`consistency.span.handoff`, one more than it arrived with); the
//! receiver strips the marker like every `consistency.*` attribute and counts the spans.
//! A trace holding a span that was handed off `handoff.max_hops` times is released, never
//! handed off again, so no span goes round more often.
//!
//! The marker is honoured only with its proof (`consistency.span.handoff_proof`): a keyed
//! hash (SipHash-2-4, the key derived from `handoff.key`, shared by the collectors of the
//! tier) of the span's trace ID, span ID and hop count. Anyone can write a marker into the
//! spans they send; without the key a marker is stripped like every `consistency.*`
//! attribute, taken as no hop, left out of the hand-off counters, and counted as untrusted.
//!
//! Handed-off data counts against the memory bound like released data (`ready_spans`,
//! `ready_bytes`) until it is drained.

use std::hash::Hasher;

use crossbeam_channel::{Receiver, Sender};
use siphasher::sip::SipHasher24;
use siphasher::sip128::{Hasher128, SipHasher24 as SipHasher128};

use crate::config::Config;
use crate::findings::ReleaseReason;
use crate::index::SpanRec;

use super::unit::Unit;

/// The hand-off settings and queue of an engine.
pub(super) struct Handoff {
    on_shutdown: bool,
    on_idle: bool,
    max_hops: u32,
    key: Option<ProofKey>,
    tx: Sender<Unit>,
    pub(super) rx: Receiver<Unit>,
}

impl Handoff {
    pub(super) fn new(cfg: &Config) -> Handoff {
        let (tx, rx) = crossbeam_channel::unbounded();
        Handoff {
            on_shutdown: cfg.handoff_on_shutdown,
            on_idle: cfg.handoff_on_idle,
            max_hops: cfg.handoff_max_hops.clamp(0, u32::MAX as i64) as u32,
            key: cfg.handoff_key().map(ProofKey::derive),
            tx,
            rx,
        }
    }

    /// Whether a trace that went through `hops` hand-offs and is due for `reason` is handed
    /// off rather than released.
    pub(super) fn hands_off(&self, reason: ReleaseReason, hops: u32) -> bool {
        hops < self.max_hops
            && match reason {
                ReleaseReason::Shutdown => self.on_shutdown,
                ReleaseReason::IdleTimeout => self.on_idle,
                _ => false,
            }
    }

    /// The proof written beside a marker of `hops` on span `span_id` of trace `trace_id`;
    /// `None` without `handoff.key` (nothing is handed off then).
    pub(super) fn proof(&self, trace_id: u128, span_id: u64, hops: u32) -> Option<u64> {
        self.key.as_ref().map(|k| k.proof(trace_id, span_id, hops))
    }

    /// Takes the markers of an ingested batch at their word only where their proof checks:
    /// the hop count of every other marked span is set to 0. Returns how many markers were
    /// not honoured.
    pub(super) fn verify(&self, spans: &mut [SpanRec], trace_ids: &[[u8; 16]]) -> u64 {
        let mut untrusted = 0;
        for (s, id) in spans.iter_mut().zip(trace_ids) {
            let Some((hops, proof)) = s.handoff_marker() else { continue };
            let trusted = s.trace_id_valid
                && s.span_id_valid
                && proof.is_some()
                && proof == self.proof(u128::from_be_bytes(*id), s.span_id, hops);
            if !trusted {
                s.distrust_handoff();
                untrusted += 1;
            }
        }
        untrusted
    }

    pub(super) fn queue(&self, unit: Unit) {
        // The receiver lives as long as the engine: sending cannot fail.
        let _ = self.tx.send(unit);
    }
}

/// The key of the marker proofs, derived from `handoff.key`.
#[derive(Clone)]
pub(super) struct ProofKey(u64, u64);

impl ProofKey {
    pub(super) fn derive(secret: &str) -> ProofKey {
        let mut h = SipHasher128::new_with_keys(0, 0);
        h.write(b"traceconsistency handoff.key v1");
        h.write(secret.as_bytes());
        let k = h.finish128();
        ProofKey(k.h1, k.h2)
    }

    pub(super) fn proof(&self, trace_id: u128, span_id: u64, hops: u32) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.0, self.1);
        h.write(&trace_id.to_be_bytes());
        h.write(&span_id.to_be_bytes());
        h.write(&hops.to_le_bytes());
        h.finish()
    }
}
