//! Ingest: one `ExportTraceServiceRequest` checked, stamped, logged and buffered by trace;
//! spans of released traces forwarded or dropped, the rest bounded. The buffering after the
//! stamps ([`Engine::buffer`]) is shared with replay (`replay`), which gives a logged batch
//! its stamps from the log instead.

use std::sync::atomic::Ordering;

use crate::config::LateSpanPolicy;
use crate::sampling::threshold::Threshold;
use crate::sampling::Verdict;
use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::stamp_batch;
use crate::index::{scan_request, ScannedBatch, SpanRec};
use crate::wal::record::{Key, SpanStamp};
use crate::wal::AppendError;

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
    traces: Vec<u128>,
    /// Traces whose spans were all exact re-sends (dropped), or whose late spans sampling
    /// dropped with their trace.
    resolved: Vec<u128>,
    /// Late spans of traces sampling kept with a consistent threshold, by threshold: they
    /// leave with it (spans, traces).
    thresholded: Vec<(u64, Vec<u32>, Vec<u128>)>,
}

/// A batch's spans sorted for buffering.
pub(super) struct Sorted {
    /// (trace ID, index into the batch) of the spans to assemble, by trace ID (arrival order
    /// kept per trace).
    pub(super) keyed: Vec<(u128, u32)>,
    /// The same indexes, in the same order.
    valid: Vec<u32>,
    /// (shard, start, end) into `valid`: one run per trace, by shard.
    runs: Vec<(u32, u32, u32)>,
    /// Spans with an invalid trace or span ID (indexes into the batch).
    pub(super) unassembled: Vec<u32>,
}

impl Sorted {
    /// The write-ahead log keys the batch needs: one per trace run, one for the unassembled
    /// spans. 0: nothing to buffer.
    pub(super) fn keys(&self) -> u32 {
        self.runs.len() as u32 + u32::from(!self.unassembled.is_empty())
    }
}

impl Engine {
    /// Ingests the bytes of one `ExportTraceServiceRequest`. On error nothing was kept. With a
    /// write-ahead log, the batch is in it (on disk with `wal.sync: batch`) before this
    /// returns `Ok`.
    ///
    /// `now` is both clocks' reading ([`Clocks::same`]); see [`Engine::ingest_at`].
    pub fn ingest(&self, data: &[u8], now: u64) -> Result<IngestOutcome, IngestError> {
        self.ingest_at(data, Clocks::same(now))
    }

    /// [`Engine::ingest`] at `now` on each clock: stamps from the wall clock, timers from the
    /// monotonic one.
    pub fn ingest_at(&self, data: &[u8], clocks: Clocks) -> Result<IngestOutcome, IngestError> {
        self.check_size(data)?;
        // Backpressure: when the data that cannot be released early (it is released already)
        // fills the bound, the caller must wait for drains rather than grow memory. (Replay
        // pauses before that point instead: `recover`.)
        let held = self.held_outside_traces();
        if held >= self.limits.max_buffered_bytes {
            self.c.add(stat!(batches_throttled), 1);
            return Err(IngestError::Full { held, bound: self.limits.max_buffered_bytes });
        }
        let (mut batch, untrusted) = self.scan(data)?;
        self.c.add(stat!(handoff_untrusted_spans), untrusted);
        // Stamped before anything is kept: a stalled clock refuses the batch whole.
        let futures = stamp_batch(self.hlc.as_ref(), self.cfg.hlc_max_offset_ns as u64, self.enabled_checks, &mut batch.spans, clocks.wall)
            .map_err(IngestError::ClockStalled)?;
        self.c.add(stat!(future_timestamps), futures);

        let sorted = self.sort(&mut batch, |_| true);
        let wal_pos = match &self.wal {
            Some(w) => {
                let stamps: Vec<SpanStamp> =
                    batch.spans.iter().map(|s| SpanStamp { wall: s.hlc_wall, logical: s.hlc_logical, findings: s.findings }).collect();
                Some(w.append_batch(&stamps, data, sorted.keys()).map_err(|e| {
                    if matches!(e, AppendError::TooLarge { .. }) {
                        self.c.add(stat!(batches_refused), 1);
                    }
                    IngestError::from(e)
                })?)
            }
            None => None,
        };
        self.c.add(stat!(spans_received), batch.spans.len() as u64);
        self.note_handoff_received(&batch.spans);
        self.note_lags(&batch, clocks);
        // Timers run on the monotonic clock; only the HLC reads the wall clock.
        Ok(self.buffer(data, &mut batch, &sorted, wal_pos, false, clocks.mono))
    }

    /// Refuses an empty batch, or one larger than the index can address.
    pub(super) fn check_size(&self, data: &[u8]) -> Result<(), IngestError> {
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
        Ok(())
    }

    /// Scans a batch and checks its hand-off markers. Returns the batch and how many markers
    /// were not honoured.
    pub(super) fn scan(&self, data: &[u8]) -> Result<(ScannedBatch, u64), IngestError> {
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
        Ok((batch, untrusted))
    }

    /// Gives spans with an invalid ID their finding and sorts the rest by trace and shard, so
    /// that each trace is hashed and its storage grown once per batch. Spans whose trace ID
    /// (0 for the unassembled) `keep` refuses are left out.
    pub(super) fn sort(&self, batch: &mut ScannedBatch, keep: impl Fn(u128) -> bool) -> Sorted {
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
                if keep(u128::from_be_bytes(batch.trace_ids[i])) {
                    valid.push(i as u32);
                }
            } else if keep(0) {
                unassembled.push(i as u32);
            }
        }
        // (trace ID, index): unique keys, so an unstable sort keeps arrival order per trace.
        let mut keyed: Vec<(u128, u32)> = valid.iter().map(|&i| (u128::from_be_bytes(batch.trace_ids[i as usize]), i)).collect();
        keyed.sort_unstable();
        let valid: Vec<u32> = keyed.iter().map(|k| k.1).collect();
        let mut runs: Vec<(u32, u32, u32)> = Vec::new();
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
        Sorted { keyed, valid, runs, unassembled }
    }

    /// Buffers a stamped, sorted batch: the unassembled spans go out at once with their
    /// finding, each shard buffers its runs under its lock, and spans of released traces are
    /// forwarded or dropped by the late-span policy. `wal_pos` is the batch's position in the
    /// log; `recovered` marks replayed spans.
    pub(super) fn buffer(&self, data: &[u8], batch: &mut ScannedBatch, sorted: &Sorted, wal_pos: Option<u64>, recovered: bool, now: u64) -> IngestOutcome {
        let mut out = IngestOutcome::default();
        self.interner.intern(&mut batch.groups);
        let unassembled = &sorted.unassembled;
        if !unassembled.is_empty() {
            out.unassembled = unassembled.len() as u64;
            self.c.add(stat!(unassembled), out.unassembled);
            let wal = wal_pos.map(|p| vec![(p, 0u128)]).unwrap_or_default();
            self.send(Unit::from_batch(data, &batch.groups, &batch.spans, unassembled, ReleaseReason::Unassembled).with_wal(wal));
        }
        let runs = &sorted.runs;
        let mut r = 0;
        let mut resolved: Vec<Key> = Vec::new();
        while r < runs.len() {
            let si = runs[r].0;
            let mut q = r + 1;
            while q < runs.len() && runs[q].0 == si {
                q += 1;
            }
            let late = self.ingest_shard(si as usize, &runs[r..q], &sorted.valid, batch, data, now, wal_pos, recovered, &mut out);
            r = q;
            if let Some(p) = wal_pos {
                resolved.extend(late.resolved.iter().map(|&id| (p, id)));
            }
            let groups = std::iter::once((None, late.spans, late.traces))
                .chain(late.thresholded.into_iter().map(|(th, s, t)| (Some(Threshold(th)), s, t)));
            for (threshold, spans, traces) in groups {
                if spans.is_empty() {
                    continue;
                }
                self.note_late_children(batch, &spans);
                let keys: Vec<Key> = wal_pos.map(|p| traces.iter().map(|&id| (p, id)).collect()).unwrap_or_default();
                match self.cfg.late_span_policy {
                    LateSpanPolicy::Forward => {
                        out.late_forwarded += spans.len() as u64;
                        let mut unit = Unit::from_batch(data, &batch.groups, &batch.spans, &spans, ReleaseReason::Late).with_wal(keys);
                        unit.threshold = threshold;
                        self.send(unit);
                    }
                    LateSpanPolicy::Drop => {
                        out.late_dropped += spans.len() as u64;
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
        out
    }

    /// Buffers the runs of one shard under its lock. Returns the spans of already released
    /// traces (late spans), for the caller to forward or drop outside the lock.
    #[allow(clippy::too_many_arguments)]
    fn ingest_shard(
        &self,
        si: usize,
        runs: &[(u32, u32, u32)],
        valid: &[u32],
        batch: &ScannedBatch,
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
                // after release) is a duplicate; anything else is late, and follows what
                // sampling decided for its trace.
                let mut spans = Vec::new();
                for &i in run {
                    let h = dedupe::content_hash(&self.emitter.dedupe_key, data, &batch.spans[i as usize]);
                    if shard.late.is_resend(id, h) {
                        out.resent += 1;
                    } else {
                        spans.push(i);
                    }
                }
                if spans.is_empty() {
                    late.resolved.push(id);
                    continue;
                }
                match shard.late.verdict(id) {
                    Verdict::Dropped { rule } => {
                        if let Some(s) = &self.emitter.sampler {
                            s.count_late(rule, spans.len() as u64, false);
                        }
                        late.resolved.push(id);
                    }
                    Verdict::Kept { threshold, .. } if threshold != u64::MAX => {
                        match late.thresholded.iter_mut().find(|(t, _, _)| *t == threshold) {
                            Some((_, s, t)) => {
                                s.extend(spans);
                                t.push(id);
                            }
                            None => late.thresholded.push((threshold, spans, vec![id])),
                        }
                    }
                    _ => {
                        late.spans.extend(spans);
                        late.traces.push(id);
                    }
                }
                continue;
            }
            let ins = shard.insert_run(id, run, batch, data, &self.expect, now, wal_pos, recovered);
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

