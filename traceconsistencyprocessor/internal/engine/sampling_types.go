package engine

// SamplingCount is what one sampling rule (or the default) kept and dropped since the engine
// started. C: tc_sampling_count.
type SamplingCount struct {
	KeptTraces    uint64
	KeptSpans     uint64
	DroppedTraces uint64
	DroppedSpans  uint64
}
