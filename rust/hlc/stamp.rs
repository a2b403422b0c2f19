//! Stamping a batch of indexed spans at ingest: every span gets a stamp strictly above the
//! clock's previous one, its upstream stamp (when admitted) and its end time (when admitted),
//! under one clock lock per batch. Times too far ahead are refused with a finding instead of
//! moving the clock (docs/DESIGN.md, "Hybrid logical clock").

use super::{Hlc, Stalled, Stamp};
use crate::findings::FindingKind;
use crate::index::SpanRec;

/// Stamps `spans` at physical time `now` and records clock findings on them (only those in
/// `enabled`, a mask of `1 << kind`). With the clock off (`hlc` is `None`) only end times
/// beyond `now + max_offset_ns` are flagged. Returns how many spans got `future_timestamp`,
/// or [`Stalled`] when the clock's durable bound stops the batch: then the spans' stamps and
/// findings are garbage and the batch must be refused whole.
pub fn stamp_batch(hlc: Option<&Hlc>, max_offset_ns: u64, enabled: u32, spans: &mut [SpanRec], now: u64) -> Result<u64, Stalled> {
    let future = FindingKind::FutureTimestamp.bit() & enabled;
    let offset = FindingKind::HlcOffsetExceeded.bit() & enabled;
    let mut futures = 0u64;
    match hlc {
        Some(hlc) => hlc.batch(now, |clock| {
            for s in spans.iter_mut() {
                let mut remote: Option<Stamp> = None;
                if let Some(up) = s.upstream_hlc() {
                    match clock.admit(up.wall) {
                        Ok(()) => remote = Some(up),
                        Err(_) => s.findings |= offset,
                    }
                }
                if s.end > 0 {
                    match clock.admit(s.end) {
                        Ok(()) => {
                            let end = Stamp { wall: s.end, logical: 0 };
                            remote = Some(remote.map_or(end, |r| r.max(end)));
                        }
                        Err(_) => {
                            s.findings |= future;
                            futures += 1;
                        }
                    }
                }
                let stamp = match remote {
                    Some(m) => clock.recv_admitted(m),
                    None => clock.now(),
                };
                s.set_hlc(stamp);
            }
        })?,
        None => {
            let limit = now.saturating_add(max_offset_ns);
            for s in spans.iter_mut() {
                if s.end > limit {
                    s.findings |= future;
                    futures += 1;
                }
            }
        }
    }
    Ok(futures)
}
