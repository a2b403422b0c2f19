//! Live ingest: one `ExportTraceServiceRequest` checked, stamped, logged and buffered by
//! trace, spans of released traces forwarded or dropped, the rest bounded.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::config::LateSpanPolicy;
use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::stamp_batch;
use crate::index::{scan_request, SpanRec};
use crate::wal::record::{Key, SpanStamp};
use crate::wal::AppendError;
use crate::wire::WireError;

use super::dedupe;
use super::shard::RunInsert;
use super::stats::stat;
use super::types::{Clocks, IngestError, IngestOutcome};
use super::unit::Unit;
use super::{lock, Engine};

/// What one shard's part of an ingest did with spans of released traces.
#[derive(Default)]
struct LateRuns {
    /// Late spans (indexes into the batch).
    spans: Vec<u32>,
    /// Traces with late spans.
    pub(super) traces: Vec<u128>,
    /// Traces whose spans were all exact re-sends (dropped).
    resolved: Vec<u128>,
}

/// A batch being replayed from the write-ahead log.
pub(super) struct Replay<'a> {
    pub(super) pos: u64,
    pub(super) stamps: &'a [SpanStamp],
    pub(super) delivered: &'a HashSet<u128>,
    pub(super) in_flight: &'a HashSet<u128>,
    /// Collects the trace IDs replayed.
    pub(super) traces: &'a mut HashSet<u128>,
}

impl Engine {
    /// Ingests the bytes of one `ExportTraceServiceRequest`. On error nothing was kept. With a
    /// write-ahead log, the batch is in it (on disk with `wal.sync: batch`) before this
    /// returns `Ok`.
    ///
    /// `now` is both clocks' reading ([`Clocks::same`]); see [`Engine::ingest_at`].
    pub fn ingest(&self, data: &[u8], now: u64) -> Result<IngestOutcome, IngestError> {
        self.ingest_with(data, Clocks::same(now), None)
    }

    /// [`Engine::ingest`] at `now` on each clock: stamps from the wall clock, timers from the
    /// monotonic one.
    pub fn ingest_at(&self, data: &[u8], now: Clocks) -> Result<IngestOutcome, IngestError> {
        self.ingest_with(data, now, None)
    }

    pub(super) fn ingest_with(&self, data: &[u8], clocks: Clocks, replay: Option<Replay<'_>>) -> Result<IngestOutcome, IngestError> {
        // Timers run on the monotonic clock; only the HLC reads the wall clock.
        let now = clocks.mono;
        if data.is_empty() {
            self.c.add(stat!(batches_refused), 1);
            return Err(IngestError::Empty);
        }
        if data.len() as u64 > self.limits.max_trace_span_bytes {
            // The index addresses a batch's span bytes with `u32` offsets too.
            self.c.add(stat!(batches_refused), 1);
            return Err(IngestError::TooLarge(format!(
                "batch of {} bytes is larger than a batch may be ({} bytes)",
                data.len(),
                self.limits.max_trace_span_bytes
            )));
        }
        // Backpressure: when the data that cannot be released early (it is released already)
        // fills the bound, the caller must wait for drains rather than grow memory. (Replay
        // pauses before that point instead: `recover`.)
        let held = self.held_outside_traces();
        if replay.is_none() && held >= self.limits.max_buffered_bytes {
            self.c.add(stat!(batches_throttled), 1);
            return Err(IngestError::Full { held, bound: self.limits.max_buffered_bytes });
        }
        let mut batch = match scan_request(data) {
            Ok(b) => b,
            Err(e) => {
                self.c.add(stat!(batches_refused), 1);
                return Err(IngestError::Malformed(e));
            }
        };
        if batch.spans.is_empty() {
            self.c.add(stat!(batches_refused), 1);
            return Err(IngestError::NoSpans);
        }
        let untrusted = self.handoff.verify(&mut batch.spans, &batch.trace_ids);
        if replay.is_none() {
            self.c.add(stat!(handoff_untrusted_spans), untrusted);
        }
        match &replay {
            None => {
                // Stamped before anything is kept: a stalled clock refuses the batch whole.
                let futures =
                    stamp_batch(self.hlc.as_ref(), self.cfg.hlc_max_offset_ns as u64, self.enabled_checks, &mut batch.spans, clocks.wall)
                        .map_err(IngestError::ClockStalled)?;
                self.c.add(stat!(future_timestamps), futures);
            }
            Some(r) => {
                // The stamps and ingest findings the spans were given before the restart.
                if r.stamps.len() != batch.spans.len() {
                    return Err(IngestError::Malformed(WireError { offset: 0, what: "write-ahead log record: stamp count differs from span count" }));
                }
                for (s, st) in batch.spans.iter_mut().zip(r.stamps) {
                    s.hlc_wall = st.wall;
                    s.hlc_logical = st.logical;
                    s.findings = st.findings;
                }
            }
        }

        let mut replay = replay;
        let mut out = IngestOutcome::default();
        // Spans that cannot be assembled go out at once, with their finding. Replay leaves
        // out what was delivered before the restart.
        let skip = |id: u128| replay.as_ref().is_some_and(|r| r.delivered.contains(&id));
        let mut valid: Vec<u32> = Vec::with_capacity(batch.spans.len());
        let mut unassembled: Vec<u32> = Vec::new();
        for (i, s) in batch.spans.iter_mut().enumerate() {
            if !s.trace_id_valid {
                s.findings |= FindingKind::InvalidTraceId.bit() & self.enabled_checks;
            }
            if !s.span_id_valid {
                s.findings |= FindingKind::InvalidSpanId.bit() & self.enabled_checks;
            }
            if s.trace_id_valid && s.span_id_valid {
                if !skip(u128::from_be_bytes(batch.trace_ids[i])) {
                    valid.push(i as u32);
                }
            } else if !skip(0) {
                unassembled.push(i as u32);
            }
        }
        // Spans of one trace together (stable: arrival order kept), so each trace is hashed
        // and its storage grown once per batch; runs bucketed by shard.
        // (trace ID, index): unique keys, so an unstable sort keeps arrival order per trace.
        let mut keyed: Vec<(u128, u32)> = valid.iter().map(|&i| (u128::from_be_bytes(batch.trace_ids[i as usize]), i)).collect();
        keyed.sort_unstable();
        let valid: Vec<u32> = keyed.iter().map(|k| k.1).collect();
        let mut runs: Vec<(u32, u32, u32)> = Vec::new(); // (shard, start, end) into `valid`
        let mut k = 0;
        while k < keyed.len() {
            let id = keyed[k].0;
            let mut j = k + 1;
            while j < keyed.len() && keyed[j].0 == id {
                j += 1;
            }
            runs.push((self.shard_of(id) as u32, k as u32, j as u32));
            k = j;
        }
        runs.sort_unstable();

        // The log: one key per trace run, one for the unassembled spans.
        let keys = runs.len() as u32 + u32::from(!unassembled.is_empty());
        if keys == 0 {
            return Ok(out); // replay: everything of this batch was delivered
        }
        let wal_pos = match (&self.wal, &replay) {
            (Some(w), Some(r)) => {
                w.register(r.pos, keys);
                Some(r.pos)
            }
            (Some(w), None) => {
                let stamps: Vec<SpanStamp> =
                    batch.spans.iter().map(|s| SpanStamp { wall: s.hlc_wall, logical: s.hlc_logical, findings: s.findings }).collect();
                Some(w.append_batch(&stamps, data, keys).map_err(|e| {
                    if matches!(e, AppendError::TooLarge { .. }) {
                        self.c.add(stat!(batches_refused), 1);
                    }
                    IngestError::from(e)
                })?)
            }
            _ => None,
        };
        let recovered = replay.is_some();
        if let Some(r) = &mut replay {
            r.traces.extend(keyed.iter().map(|k| k.0));
            let in_flight = |id: u128| r.in_flight.contains(&id);
            let redelivered = keyed.iter().filter(|k| in_flight(k.0)).count() + if in_flight(0) { unassembled.len() } else { 0 };
            self.c.add(stat!(wal_redelivered_spans), redelivered as u64);
            self.c.add(stat!(wal_spans_replayed), (valid.len() + unassembled.len()) as u64);
        } else {
            self.c.add(stat!(spans_received), batch.spans.len() as u64);
            self.note_handoff_received(&batch.spans);
            self.note_lags(&batch, clocks);
        }
        self.interner.intern(&mut batch.groups);

        if !unassembled.is_empty() {
            out.unassembled = unassembled.len() as u64;
            self.c.add(stat!(unassembled), out.unassembled);
            let wal = wal_pos.map(|p| vec![(p, 0u128)]).unwrap_or_default();
            self.send(Unit::from_batch(data, &batch.groups, &batch.spans, &unassembled, ReleaseReason::Unassembled).with_wal(wal));
        }
        let mut r = 0;
        let mut resolved: Vec<Key> = Vec::new();
        while r < runs.len() {
            let si = runs[r].0;
            let mut q = r + 1;
            while q < runs.len() && runs[q].0 == si {
                q += 1;
            }
            let late = self.ingest_shard(si as usize, &runs[r..q], &valid, &batch, data, now, wal_pos, recovered, &mut out);
            r = q;
            if let Some(p) = wal_pos {
                resolved.extend(late.resolved.iter().map(|&id| (p, id)));
            }
            if !late.spans.is_empty() {
                self.note_late_children(&batch, &late.spans);
                let keys: Vec<Key> = wal_pos.map(|p| late.traces.iter().map(|&id| (p, id)).collect()).unwrap_or_default();
                match self.cfg.late_span_policy {
                    LateSpanPolicy::Forward => {
                        out.late_forwarded += late.spans.len() as u64;
                        self.send(Unit::from_batch(data, &batch.groups, &batch.spans, &late.spans, ReleaseReason::Late).with_wal(keys));
                    }
                    LateSpanPolicy::Drop => {
                        out.late_dropped += late.spans.len() as u64;
                        resolved.extend(keys);
                    }
                }
            }
        }
        if let (Some(w), false) = (&self.wal, resolved.is_empty()) {
            w.resolve(&resolved);
        }
        self.c.add(stat!(late_forwarded), out.late_forwarded);
        self.c.add(stat!(late_dropped), out.late_dropped);
        self.c.add(stat!(duplicates_dropped), out.resent);
        out.ready_spans = self.c.get(stat!(ready_spans));
        Ok(out)
    }

    /// Buffers the runs of one shard under its lock. Returns the spans of already released
    /// traces (late spans), for the caller to forward or drop outside the lock.
    #[allow(clippy::too_many_arguments)]
    fn ingest_shard(
        &self,
        si: usize,
        runs: &[(u32, u32, u32)],
        valid: &[u32],
        batch: &crate::index::ScannedBatch,
        data: &[u8],
        now: u64,
        wal_pos: Option<u64>,
        recovered: bool,
        out: &mut IngestOutcome,
    ) -> LateRuns {
        let mut shard = lock(&self.shards[si]);
        // Read under the lock: a shutdown sweeps this shard under the same lock, so either it
        // sweeps what this ingest buffers, or this ingest sees the flag and releases at once.
        let shut_down = self.shut_down.load(Ordering::Acquire);
        let mut late = LateRuns::default();
        for &(_, start, end) in runs {
            let run = &valid[start as usize..end as usize];
            let id = u128::from_be_bytes(batch.trace_ids[run[0] as usize]);
            // A trace whose span bytes would pass what its offsets address is released
            // first; the run's spans are then late, as after max_spans_per_trace.
            if let Some(held) = shard.span_bytes(id) {
                let need: u64 = run.iter().map(|&i| batch.spans[i as usize].len() as u64).sum();
                if held + need > self.limits.max_trace_span_bytes {
                    self.release(&mut shard, id, ReleaseReason::SpanLimit, now);
                }
            }
            if shard.late.contains(id) {
                // A span of a released trace: an exact re-send of a released span (a retry
                // after release) is a duplicate; anything else is late.
                let before = late.spans.len();
                for &i in run {
                    let h = dedupe::content_hash(&self.emitter.dedupe_key, data, &batch.spans[i as usize]);
                    if shard.late.is_resend(id, h) {
                        out.resent += 1;
                    } else {
                        late.spans.push(i);
                    }
                }
                if late.spans.len() > before {
                    late.traces.push(id);
                } else {
                    late.resolved.push(id);
                }
                continue;
            }
            let ins = shard.insert_run(id, run, batch, data, now, wal_pos, recovered);
            self.note_run(ins);
            out.buffered += run.len() as u64;
            let reason = if shut_down {
                Some(ReleaseReason::Shutdown)
            } else if shard.span_count(id).unwrap_or(0) as u64 >= self.limits.max_spans_per_trace {
                Some(ReleaseReason::SpanLimit)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.release(&mut shard, id, reason, now);
            }
        }
        self.enforce_limits(&mut shard, now);
        self.sync(&mut shard);
        late
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
}
