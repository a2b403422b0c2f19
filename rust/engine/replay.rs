//! Replay of one logged batch: the spans get back the stamps and ingest findings they were
//! given before the restart, what was delivered then is left out, and the rest is buffered
//! as ingest buffers it ([`Engine::buffer`]), marked recovered. No backpressure (the
//! recovery loop pauses instead), no new log record (the batch keeps its position).

use std::collections::HashSet;

use crate::wal::record::SpanStamp;
use crate::wire::WireError;

use super::stats::stat;
use super::types::{Clocks, IngestError, IngestOutcome};
use super::Engine;

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
    /// Buffers a batch read back from the log at position `r.pos`.
    pub(super) fn replay_batch(&self, data: &[u8], clocks: Clocks, r: Replay<'_>) -> Result<IngestOutcome, IngestError> {
        self.check_size(data)?;
        let (mut batch, _untrusted) = self.scan(data)?; // counted when the batch first came in
        // The stamps and ingest findings the spans were given before the restart.
        if r.stamps.len() != batch.spans.len() {
            return Err(IngestError::Malformed(WireError { offset: 0, what: "write-ahead log record: stamp count differs from span count" }));
        }
        for (s, st) in batch.spans.iter_mut().zip(r.stamps) {
            s.hlc_wall = st.wall;
            s.hlc_logical = st.logical;
            s.findings = st.findings;
        }
        // What was delivered before the restart stays out.
        let sorted = self.sort(&mut batch, |id| !r.delivered.contains(&id));
        let keys = sorted.keys();
        if keys == 0 {
            return Ok(IngestOutcome::default()); // everything of this batch was delivered
        }
        if let Some(w) = &self.wal {
            w.register(r.pos, keys);
        }
        r.traces.extend(sorted.keyed.iter().map(|k| k.0));
        let in_flight = |id: u128| r.in_flight.contains(&id);
        let redelivered =
            sorted.keyed.iter().filter(|k| in_flight(k.0)).count() + if in_flight(0) { sorted.unassembled.len() } else { 0 };
        self.c.add(stat!(wal_redelivered_spans), redelivered as u64);
        self.c.add(stat!(wal_spans_replayed), (sorted.keyed.len() + sorted.unassembled.len()) as u64);
        let wal_pos = self.wal.as_ref().map(|_| r.pos);
        Ok(self.buffer(data, &mut batch, &sorted, wal_pos, true, clocks.mono))
    }
}
