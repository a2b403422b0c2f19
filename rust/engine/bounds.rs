//! The engine's bounds: time limits and buffer bounds, what counts against them outside the
//! buffered traces, and the gauges that follow each shard's holdings.

use std::sync::atomic::Ordering;

use super::shard::Shard;
use super::stats::stat;
use super::Engine;

/// Time limits, in nanoseconds, and the global bounds.
#[derive(Clone, Debug)]
pub(super) struct Limits {
    pub(super) quiet_period_ns: u64,
    pub(super) idle_timeout_ns: u64,
    pub(super) max_age_ns: u64,
    pub(super) max_buffered_spans: u64,
    pub(super) max_buffered_bytes: u64,
    pub(super) max_spans_per_trace: u64,
    /// The most span bytes one trace may hold: its records address them with `u32`
    /// offsets. [`MAX_TRACE_SPAN_BYTES`]; smaller in tests.
    pub(super) max_trace_span_bytes: u64,
}

/// Span records address their bytes with `u32` offsets: a trace about to hold more is
/// released (reason `span_limit`) first, and a batch may not be larger.
pub(super) const MAX_TRACE_SPAN_BYTES: u64 = u32::MAX as u64;

impl Engine {
    /// Bytes held outside buffered traces that only leave when drained or freed: ready
    /// units, shared entries, the late caches, the learned calls and export lags.
    pub(super) fn held_outside_traces(&self) -> u64 {
        self.c.get(stat!(ready_bytes))
            + self.interner.bytes()
            + self.c.get(stat!(memory_late_cache_bytes))
            + self.wal_memory()
            + self.expect.bytes()
    }

    /// The log's bookkeeping, and while replaying, what the replay holds.
    pub(super) fn wal_memory(&self) -> u64 {
        self.wal.as_ref().map_or(0, |w| w.memory_bytes()) + self.replay_bytes.load(Ordering::Relaxed)
    }

    /// Brings the engine's gauges in step with the shard's holdings.
    pub(super) fn sync(&self, shard: &mut Shard) {
        let now = shard.report();
        let was = shard.reported;
        if now == was {
            return;
        }
        self.c.adjust(stat!(buffered_spans), was.spans, now.spans);
        self.c.adjust(stat!(buffered_traces), was.traces, now.traces);
        self.c.adjust(stat!(buffered_bytes), was.mem.total(), now.mem.total());
        self.c.adjust(stat!(memory_span_bytes), was.mem.span, now.mem.span);
        self.c.adjust(stat!(memory_index_bytes), was.mem.index, now.mem.index);
        self.c.adjust(stat!(memory_trace_bytes), was.mem.trace, now.mem.trace);
        self.c.adjust(stat!(memory_late_cache_bytes), was.late, now.late);
        shard.reported = now;
    }
}
