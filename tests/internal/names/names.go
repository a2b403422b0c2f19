// Package names holds the span attribute keys, release reasons and metric
// names the traceconsistency processor writes, as the Go tests and
// benchmarks of this module look for them (README.md, "What it writes" and
// "Metrics"). It is the one place in tests/ that spells them.
package names

// Span attribute keys written by the processor.
const (
	AttrHLC              = "consistency.hlc"
	AttrHLCUpstream      = "consistency.hlc.upstream"
	AttrReleaseReason    = "consistency.trace.release_reason"
	AttrSpanCount        = "consistency.trace.span_count"
	AttrTraceStatus      = "consistency.trace.status"
	AttrTraceFindings    = "consistency.trace.findings"
	AttrMissingParentIDs = "consistency.trace.missing_parent_ids"
	AttrSpanFindings     = "consistency.span.findings"
	AttrLate             = "consistency.span.late"
	AttrSkewAdjustment   = "consistency.span.skew_adjustment_ns"
	// AttrPrefix starts every attribute key the processor writes.
	AttrPrefix = "consistency."
)

// Release reasons (values of AttrReleaseReason and of the `reason` label).
const (
	ReasonComplete       = "complete"
	ReasonIdleTimeout    = "idle_timeout"
	ReasonMaxAge         = "max_age"
	ReasonMemoryPressure = "memory_pressure"
	ReasonSpanLimit      = "span_limit"
	ReasonShutdown       = "shutdown"
)

// ReleaseReasons lists every release reason.
var ReleaseReasons = []string{
	ReasonComplete, ReasonIdleTimeout, ReasonMaxAge, ReasonMemoryPressure, ReasonSpanLimit, ReasonShutdown,
}

// Trace status values (AttrTraceStatus).
const (
	StatusConsistent   = "consistent"
	StatusInconsistent = "inconsistent"
)

// Metric names as the collector's Prometheus endpoint exposes them.
const (
	MetricPrefix          = "otelcol_processor_traceconsistency_"
	MetricSpansBuffered   = MetricPrefix + "spans_buffered"
	MetricBytesBuffered   = MetricPrefix + "bytes_buffered"
	MetricTracesBuffered  = MetricPrefix + "traces_buffered"
	MetricTracesReleased  = MetricPrefix + "traces_released"
	MetricSpansReleased   = MetricPrefix + "spans_released"
	MetricSpansReceived   = MetricPrefix + "spans_received"
	MetricLateSpans       = MetricPrefix + "late_spans"
	MetricFindings        = MetricPrefix + "findings"
	MetricDuplicates      = MetricPrefix + "duplicates_dropped"
	MetricUnassembled     = MetricPrefix + "spans_unassembled"
	MetricReleaseAgeCount = MetricPrefix + "release_age_count"
	MetricFutureTS        = MetricPrefix + "hlc_future_timestamps"
	// MetricAcceptedSpans is the otlp receiver's own counter.
	MetricAcceptedSpans = "otelcol_receiver_accepted_spans"
)
