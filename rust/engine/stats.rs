//! The engine's counters and gauges: one `#[repr(C)]` struct, exported to C as `tc_stats`
//! (see `cbindgen.toml`), and the atomics behind it, addressed by field.

use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters (monotonic) and gauges (current values) of an engine. Every field is a `u64`
/// (`uint64_t`), so the struct has no padding; read with `tc_engine_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spans buffered for assembly (gauge).
    pub buffered_spans: u64,
    /// Bytes held for buffered traces: their span bytes, index records and per-trace
    /// structures (gauge; `memory_span_bytes + memory_index_bytes + memory_trace_bytes`).
    pub buffered_bytes: u64,
    /// Traces buffered for assembly (gauge).
    pub buffered_traces: u64,
    /// Spans released and waiting to be drained (gauge).
    pub ready_spans: u64,
    /// Bytes released and waiting to be drained (gauge).
    pub ready_bytes: u64,
    /// Spans accepted by ingest.
    pub spans_received: u64,
    /// Batches refused as a whole because they were malformed or empty.
    pub batches_refused: u64,
    /// Batches refused with a retryable error because the memory bound was reached by data
    /// that could not leave yet (released but not drained).
    pub batches_throttled: u64,
    /// Exact duplicates (retries) dropped.
    pub duplicates_dropped: u64,
    /// Conflicting spans dropped by the `keep_latest` policy.
    pub conflicts_dropped: u64,
    /// Spans of already released traces forwarded at once.
    pub late_forwarded: u64,
    /// Spans of already released traces dropped (late policy `drop`).
    pub late_dropped: u64,
    /// Spans with an invalid trace or span ID, forwarded at once.
    pub unassembled: u64,
    /// Spans whose end time was too far ahead of the clock.
    pub future_timestamps: u64,
    /// Remote times refused by the HLC's max-offset rule.
    pub hlc_refusals: u64,
    /// Times the physical clock went back.
    pub hlc_backward_jumps: u64,
    /// Largest offset of a remote time ahead of the local clock seen, ns (gauge).
    pub hlc_max_forward_offset_ns: u64,
    /// Logical counter overflows carried into the physical part.
    pub hlc_logical_overflows: u64,
    /// Failed writes of the persisted HLC bound.
    pub hlc_persist_errors: u64,
    /// Memory of buffered traces' span bytes (gauge, bytes allocated).
    pub memory_span_bytes: u64,
    /// Memory of buffered traces' index records (gauge).
    pub memory_index_bytes: u64,
    /// Memory of per-trace and per-shard structures (gauge).
    pub memory_trace_bytes: u64,
    /// Memory of resource and scope entries, shared between traces (gauge).
    pub memory_group_bytes: u64,
    /// Memory of the late-span cache (gauge).
    pub memory_late_cache_bytes: u64,
    /// Everything counted against `max_buffered_bytes`: buffered traces, ready data,
    /// resource and scope entries, the late-span cache (gauge).
    pub memory_total_bytes: u64,
    /// Batches refused with a retryable error because their HLC stamps would pass the bound
    /// last written to `hlc.state_file`, which could not be written (`restart_strategy:
    /// persist`; each failed write is counted in `hlc_persist_errors`).
    pub hlc_stalled_batches: u64,
    /// Spans received that had been handed off by another collector (or by this one).
    pub handoff_received_spans: u64,
    /// Handed-off spans received that joined a trace already buffered here.
    pub handoff_merged_spans: u64,
    /// Traces released (not handed off again) after a hand-off and still incomplete.
    pub handoff_incomplete_traces: u64,
    /// Bytes of the write-ahead log's segments on disk (gauge).
    pub wal_bytes: u64,
    /// Segment files of the write-ahead log (gauge).
    pub wal_segments: u64,
    /// Fsyncs of the write-ahead log.
    pub wal_fsyncs: u64,
    /// Fsync latency histogram: entry `i` counts fsyncs that took under `2^i` µs (`i` ≥ 1;
    /// the last entry counts the rest).
    pub wal_fsync_buckets: [u64; 24],
    /// Batches refused with a retryable error because the write-ahead log was at
    /// `wal.max_bytes`.
    pub wal_full_refusals: u64,
    /// Failed writes or fsyncs of the write-ahead log (a refused batch each, when ingesting).
    pub wal_write_errors: u64,
    /// Records read from the write-ahead log at start.
    pub wal_records_replayed: u64,
    /// Spans replayed into the engine at start (not delivered before the restart).
    pub wal_spans_replayed: u64,
    /// Traces that received replayed spans.
    pub wal_traces_recovered: u64,
    /// Damaged records skipped at start (the bytes between two valid records each).
    pub wal_corrupt_records: u64,
    /// Incomplete records at the end of a segment ignored at start.
    pub wal_torn_records: u64,
    /// Replayed spans that had been handed out for sending before the restart without an
    /// acknowledgement: they may be delivered twice.
    pub wal_redelivered_spans: u64,
    /// Memory of the write-ahead log's bookkeeping (gauge).
    pub memory_wal_bytes: u64,
    /// Spans received with a hand-off marker whose proof did not check against
    /// `handoff.key` (or with no key set): the marker was stripped and not honoured.
    pub handoff_untrusted_spans: u64,
    /// Spans taken by a drain that failed with an internal error (a panic) before handing
    /// them out: lost, their write-ahead log keys resolved.
    pub drain_lost_spans: u64,
    /// Structurally complete traces that waited for children of their calls still on their
    /// way (expected, or of calls not learned yet).
    pub traces_awaited_children: u64,
    /// Calls released without the child they were learned to get (each marked
    /// `expected_child_missing`).
    pub expected_children_missing: u64,
    /// Calls released without waiting for a child (learned to have none) whose child then
    /// arrived late: their keys now expect one.
    pub learned_from_late_spans: u64,
    /// Call keys the engine has learned about (gauge).
    pub learned_call_keys: u64,
    /// Call keys learned to get a child from an instrumented callee: the edges (gauge).
    pub learned_edges: u64,
    /// Memory of the learned calls and export lags (gauge).
    pub memory_learned_bytes: u64,
}

const WORDS: usize = size_of::<Stats>() / size_of::<u64>();
const _: () = assert!(crate::wal::FSYNC_BUCKETS == 24);
const _: () = assert!(size_of::<Stats>() == WORDS * size_of::<u64>());

/// The index of a [`Stats`] field among the counters.
macro_rules! stat {
    ($field:ident) => {
        std::mem::offset_of!($crate::engine::stats::Stats, $field) / std::mem::size_of::<u64>()
    };
}
pub(crate) use stat;

/// One atomic per [`Stats`] field.
pub(crate) struct Counters([AtomicU64; WORDS]);

impl Default for Counters {
    fn default() -> Self {
        Counters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Counters {
    pub fn add(&self, field: usize, v: u64) {
        if v != 0 {
            self.0[field].fetch_add(v, Ordering::Relaxed);
        }
    }

    pub fn sub(&self, field: usize, v: u64) {
        if v != 0 {
            self.0[field].fetch_sub(v, Ordering::Relaxed);
        }
    }

    /// Adds a signed change to a gauge.
    pub fn adjust(&self, field: usize, from: u64, to: u64) {
        if to > from {
            self.add(field, to - from);
        } else {
            self.sub(field, from - to);
        }
    }

    pub fn get(&self, field: usize) -> u64 {
        self.0[field].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Stats {
        let words: [u64; WORDS] = std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed));
        // SAFETY: `Stats` is `repr(C)` with exactly `WORDS` `u64` fields (asserted above), so
        // it has the layout of `[u64; WORDS]`, and every bit pattern is a valid `u64`.
        unsafe { std::mem::transmute::<[u64; WORDS], Stats>(words) }
    }
}
