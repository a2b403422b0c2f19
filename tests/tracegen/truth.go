package tracegen

import (
	"fmt"
	"slices"
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// SpanKey identifies a span record.
type SpanKey struct {
	TraceID pcommon.TraceID
	SpanID  pcommon.SpanID
}

func (k SpanKey) String() string { return fmt.Sprintf("%s/%s", k.TraceID, k.SpanID) }

// IsZero reports whether both ids are empty.
func (k SpanKey) IsZero() bool { return k.TraceID.IsEmpty() && k.SpanID.IsEmpty() }

// TraceTruth is what was sent for one trace.
type TraceTruth struct {
	Index   int
	TraceID pcommon.TraceID
	// Broken is the defect of the trace ("" for a healthy one).
	Broken BrokenKind
	// RootSpanID is the planned root (for two_roots, the original one).
	RootSpanID pcommon.SpanID
	// Spans lists the distinct (trace id, span id) keys sent. For
	// zero_trace_id one key has the empty trace id; for zero_span_id one key
	// has the empty span id.
	Spans []SpanKey
	// Records is the number of span records sent (a duplicate counts twice).
	Records int
	// Services names the services that sent spans of this trace.
	Services []string
	// Affected is the span carrying the defect: the orphan child
	// (missing_parent), the second root, the duplicated span, the skewed
	// SERVER span, the unsampled span, the future span, the zero-id span.
	Affected SpanKey
	// MissingParentID is the span id that was never sent (missing_parent).
	MissingParentID pcommon.SpanID
	// PDataOnly: sent with pdata even in SDK mode (the SDK cannot produce it).
	PDataOnly bool
}

// Truth is the ground truth of a workload, safe for concurrent Add.
type Truth struct {
	mu     sync.Mutex
	Traces []TraceTruth
}

// Add records one trace.
func (t *Truth) Add(tt TraceTruth) {
	t.mu.Lock()
	t.Traces = append(t.Traces, tt)
	t.mu.Unlock()
}

// Merge adds every trace of o.
func (t *Truth) Merge(o *Truth) {
	if o == nil {
		return
	}
	o.mu.Lock()
	tr := slices.Clone(o.Traces)
	o.mu.Unlock()
	t.mu.Lock()
	t.Traces = append(t.Traces, tr...)
	t.mu.Unlock()
}

// Sort orders the traces by index.
func (t *Truth) Sort() {
	t.mu.Lock()
	slices.SortFunc(t.Traces, func(a, b TraceTruth) int { return a.Index - b.Index })
	t.mu.Unlock()
}

// Records returns the number of span records sent.
func (t *Truth) Records() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, tt := range t.Traces {
		n += tt.Records
	}
	return n
}

// SpanCount returns the number of distinct span keys sent.
func (t *Truth) SpanCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, tt := range t.Traces {
		n += len(tt.Spans)
	}
	return n
}

// Keys maps every distinct span key sent to the index (into Traces) of its
// trace.
func (t *Truth) Keys() map[SpanKey]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := make(map[SpanKey]int)
	for i, tt := range t.Traces {
		for _, k := range tt.Spans {
			m[k] = i
		}
	}
	return m
}

// Find returns the trace with the given id, or nil.
func (t *Truth) Find(id pcommon.TraceID) *TraceTruth {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.Traces {
		if t.Traces[i].TraceID == id {
			return &t.Traces[i]
		}
	}
	return nil
}

// Healthy returns the traces that are not broken.
func (t *Truth) Healthy() []TraceTruth {
	return t.filter(func(tt TraceTruth) bool { return tt.Broken == "" })
}

// OfKind returns the traces broken in the given way.
func (t *Truth) OfKind(k BrokenKind) []TraceTruth {
	return t.filter(func(tt TraceTruth) bool { return tt.Broken == k })
}

func (t *Truth) filter(f func(TraceTruth) bool) []TraceTruth {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []TraceTruth
	for _, tt := range t.Traces {
		if f(tt) {
			out = append(out, tt)
		}
	}
	return out
}
