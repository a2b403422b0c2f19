//! The `consistency.*` attribute keys this component reads and writes. Every other module
//! names them through these constants.

/// Prefix of every attribute this component writes. Spans arriving with such attributes
/// (written by an upstream collector) have them replaced on the way out.
pub const ATTR_PREFIX: &[u8] = b"consistency.";

/// The span's HLC stamp (read from upstream, written by us).
pub const ATTR_HLC: &str = "consistency.hlc";
/// The upstream collector's stamp, when the span arrived with one.
pub const ATTR_HLC_UPSTREAM: &str = "consistency.hlc.upstream";

/// Finding kinds of one span.
pub const ATTR_SPAN_FINDINGS: &str = "consistency.span.findings";
/// The shift applied by skew correction, in nanoseconds.
pub const ATTR_SPAN_SKEW_ADJUSTMENT_NS: &str = "consistency.span.skew_adjustment_ns";
/// Wrong-length IDs, as received (hex).
pub const ATTR_SPAN_ORIGINAL_TRACE_ID: &str = "consistency.span.original_trace_id";
pub const ATTR_SPAN_ORIGINAL_SPAN_ID: &str = "consistency.span.original_span_id";
pub const ATTR_SPAN_ORIGINAL_PARENT_SPAN_ID: &str = "consistency.span.original_parent_span_id";
/// A span of an already released trace.
pub const ATTR_SPAN_LATE: &str = "consistency.span.late";
/// How many times the span was handed off to another gateway (an integer, 1 or more). Set
/// on hand-off output; read and stripped on receipt.
pub const ATTR_SPAN_HANDOFF: &str = "consistency.span.handoff";
/// The proof beside a hand-off marker (an integer): a hash of the span's IDs and hop count
/// keyed with `handoff.key`. A marker without a valid proof is not honoured.
pub const ATTR_SPAN_HANDOFF_PROOF: &str = "consistency.span.handoff_proof";

/// Written on the trace's summary span (its root, else its earliest span).
pub const ATTR_TRACE_RELEASE_REASON: &str = "consistency.trace.release_reason";
pub const ATTR_TRACE_SPAN_COUNT: &str = "consistency.trace.span_count";
pub const ATTR_TRACE_STATUS: &str = "consistency.trace.status";
pub const ATTR_TRACE_FINDINGS: &str = "consistency.trace.findings";
pub const ATTR_TRACE_MISSING_PARENT_IDS: &str = "consistency.trace.missing_parent_ids";
/// The trace holds spans replayed from the write-ahead log after a restart.
pub const ATTR_TRACE_RECOVERED: &str = "consistency.trace.recovered";
/// The name of the sampling rule that kept the trace (`default` when none matched).
pub const ATTR_TRACE_SAMPLING_RULE: &str = "consistency.trace.sampling.rule";
