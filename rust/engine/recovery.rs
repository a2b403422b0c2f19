//! Recovery: the write-ahead log replayed after a restart, one segment at a time within the
//! memory bound, and the report of what it found.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::replay::Replay;
use super::memory;
use super::stats::stat;
use super::types::{Clocks, Recovery};
use super::Engine;

/// A replay in progress: the log read one segment at a time, and the report so far.
pub(super) struct Replaying {
    pub(super) log: crate::wal::Replayer,
    pub(super) rep: Recovery,
    /// Trace IDs with replayed spans.
    pub(super) traces: HashSet<u128>,
    pub(super) spans_before: u64,
    pub(super) redelivered_before: u64,
}

impl Replaying {
    pub(super) fn memory_bytes(&self) -> u64 {
        self.log.memory_bytes() + memory::set_bytes::<u128>(self.traces.capacity())
    }
}

impl Engine {
    /// Replays what the write-ahead log holds undelivered (once; later calls return an empty
    /// report): the spans are buffered again with their original stamps, their traces go on
    /// assembling with spans that arrive later, and are released marked
    /// `consistency.trace.recovered`. Call before ingesting. Without a log: an empty report.
    ///
    /// The log is read one segment at a time and replay keeps to `max_buffered_bytes` as
    /// ingest does: buffered traces are released early (`memory_pressure`) to make room, and
    /// when released data waiting to be drained fills the bound, the replay pauses and
    /// returns with [`Recovery::more`] set: drain both queues, then call again.
    pub fn recover(&self, now: u64) -> Recovery {
        self.recover_at(Clocks::same(now))
    }

    /// [`Engine::recover`] at `now` on each clock: replayed traces start their timers on the
    /// monotonic clock.
    pub fn recover_at(&self, now: Clocks) -> Recovery {
        let mut guard = self.to_replay.lock().unwrap_or_else(|p| p.into_inner());
        let Some(st) = guard.as_mut() else {
            return Recovery::default();
        };
        let bound = self.limits.max_buffered_bytes;
        loop {
            // Paused only while a drain can free what fills the bound.
            if self.held_outside_traces() >= bound && self.c.get(stat!(ready_spans)) > 0 {
                self.note_replay(st);
                let mut rep = st.rep.clone();
                rep.more = true;
                return rep;
            }
            let Some(b) = st.log.next_batch() else { break };
            let r = Replay { pos: b.pos, stamps: &b.stamps, delivered: &b.delivered, in_flight: &b.in_flight, traces: &mut st.traces };
            match self.replay_batch(b.data, now, r) {
                Ok(o) => {
                    if o.buffered + o.unassembled + o.late_forwarded > 0 {
                        st.rep.batches += 1;
                    }
                }
                Err(e) => {
                    st.rep.unreadable_batches += 1;
                    st.rep.problems.push(format!("write-ahead log record at position {} cannot be replayed: {e}", b.pos));
                }
            }
            self.replay_bytes.store(st.memory_bytes(), Ordering::Relaxed);
            if let Some(w) = &self.wal {
                w.replayed_to(st.log.replayed_to());
            }
        }
        self.note_replay(st);
        let Some(mut st) = guard.take() else { return Recovery::default() };
        drop(guard);
        st.rep.problems.append(&mut st.log.problems);
        let rep = st.rep;
        drop(st.log);
        drop(st.traces);
        self.replay_bytes.store(0, Ordering::Relaxed);
        self.c.add(stat!(wal_records_replayed), rep.records);
        self.c.add(stat!(wal_traces_recovered), rep.traces);
        self.c.add(stat!(wal_corrupt_records), rep.corrupt_records);
        self.c.add(stat!(wal_torn_records), rep.torn_records);
        if let Some(w) = &self.wal {
            w.replayed_to(u64::MAX);
            w.reclaim(); // segments whose every batch was delivered before the restart
            w.start_syncer();
        }
        rep
    }

    /// Brings a replay's report up to date.
    fn note_replay(&self, st: &mut Replaying) {
        st.rep.spans = self.c.get(stat!(wal_spans_replayed)) - st.spans_before;
        st.rep.redelivered_spans = self.c.get(stat!(wal_redelivered_spans)) - st.redelivered_before;
        st.rep.traces = st.traces.len() as u64;
        self.replay_bytes.store(st.memory_bytes(), Ordering::Relaxed);
    }
}
