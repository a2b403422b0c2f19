//! The engine's API types: the time of a call, what an ingest did or why it refused, what a
//! drain hands out, what a replay found.

use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::Stalled;
use crate::wal::AppendError;
use crate::wire::WireError;

#[allow(unused_imports)] // doc links
use super::Engine;

/// The time of an engine call, on two clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// The wall clock, Unix nanoseconds: HLC stamps and `hlc.state_file`'s bound.
    pub wall: u64,
    /// A monotonic clock, nanoseconds from any fixed origin (the same for the engine's
    /// life): the quiet period, idle timeout, max age, release ages.
    pub mono: u64,
}

impl Clocks {
    /// One reading for both clocks (tests, and callers without a monotonic clock).
    pub fn same(now: u64) -> Clocks {
        Clocks { wall: now, mono: now }
    }
}

/// Why a batch was refused as a whole (nothing of it was kept).
#[derive(Debug, PartialEq, Eq)]
pub enum IngestError {
    /// A zero-length buffer.
    Empty,
    /// A request with no spans.
    NoSpans,
    /// Not a valid `ExportTraceServiceRequest`.
    Malformed(WireError),
    /// The memory bound is reached by data that has not left yet (released, not drained):
    /// retry later.
    Full { held: u64, bound: u64 },
    /// The batch's HLC stamps would pass the bound last written to `hlc.state_file`, and the
    /// bound cannot be written (`restart_strategy: persist`): retry later.
    ClockStalled(Stalled),
    /// The write-ahead log could not take the batch (at `wal.max_bytes`, disk full, an I/O
    /// error): retry later. Nothing was kept or acknowledged.
    Wal(String),
    /// The batch alone is larger than the write-ahead log can ever hold (`wal.max_bytes`) or
    /// than a record may be: it can never be logged (a permanent refusal).
    TooLarge(String),
}

impl From<AppendError> for IngestError {
    fn from(e: AppendError) -> IngestError {
        match e {
            AppendError::TooLarge { .. } => IngestError::TooLarge(e.to_string()),
            _ => IngestError::Wal(e.to_string()),
        }
    }
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::Empty => f.write_str("empty input: a zero-length buffer holds no spans"),
            IngestError::NoSpans => f.write_str("empty batch: the request holds no spans"),
            IngestError::Malformed(e) => write!(f, "not an OTLP ExportTraceServiceRequest: {e}"),
            IngestError::Full { held, bound } => write!(
                f,
                "engine memory full ({held} bytes held by data waiting to leave, max_buffered_bytes {bound}): retry later"
            ),
            IngestError::ClockStalled(e) => write!(f, "{e}: retry later"),
            IngestError::Wal(e) => write!(f, "{e}: retry later"),
            IngestError::TooLarge(e) => f.write_str(e),
        }
    }
}

/// What one ingest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Spans buffered for assembly.
    pub buffered: u64,
    /// Spans of already released traces forwarded at once (late policy `forward`).
    pub late_forwarded: u64,
    /// Spans of already released traces dropped (late policy `drop`).
    pub late_dropped: u64,
    /// Spans with an invalid trace or span ID, forwarded at once with a finding.
    pub unassembled: u64,
    /// Exact re-sends of spans already released with their trace, dropped.
    pub resent: u64,
    /// Spans waiting in the ready queue after this call.
    pub ready_spans: u64,
}

/// What a drain reports of one released unit (a trace, or late / unassembled spans), for the
/// component's metrics. C: `tc_released_unit`; Go: `engine.ReleasedUnit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleasedUnit {
    pub reason: ReleaseReason,
    pub spans: u32,
    /// Time from the first span's arrival to the release, ns.
    pub age_ns: u64,
    /// Kinds found in the unit (0 for late / unassembled units unless ingest findings).
    pub findings: u32,
}

/// Findings counted by kind and `service.name` in one drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingCount {
    pub kind: FindingKind,
    pub service: String,
    pub count: u64,
}

/// One drained batch: OTLP bytes holding whole units, and what was in them.
#[derive(Debug, Default)]
pub struct Release {
    /// An encoded `ExportTraceServiceRequest`.
    pub otlp: Vec<u8>,
    pub units: Vec<ReleasedUnit>,
    pub findings: Vec<FindingCount>,
    pub spans: u64,
    /// With a write-ahead log: acknowledge the release with [`Engine::delivered`] once
    /// downstream accepted it (or it was counted as lost). 0: nothing to acknowledge.
    pub token: u64,
}

/// What [`Engine::recover`] replayed from the write-ahead log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    pub batches: u64,
    pub spans: u64,
    pub traces: u64,
    pub corrupt_records: u64,
    pub torn_records: u64,
    /// Replayed spans handed out before the restart and not acknowledged.
    pub redelivered_spans: u64,
    /// Batch records that no longer scan (counted, skipped).
    pub unreadable_batches: u64,
    /// One line per problem found, naming the file.
    pub problems: Vec<String>,
    /// The replay paused because released data fills `max_buffered_bytes`: drain the queues,
    /// then call [`Engine::recover`] again. The counts so far are in this report; the last
    /// call's report has them all.
    pub more: bool,
}
