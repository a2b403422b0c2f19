//go:build cgo

package traceconsistencyprocessor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

// asClient makes span id of td a CLIENT span calling peer (server.address).
func asClient(td ptrace.Traces, id byte, peer string) ptrace.Traces {
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				if sid := sp.SpanID(); sid[7] == id {
					sp.SetKind(ptrace.SpanKindClient)
					sp.Attributes().PutStr("server.address", peer)
				}
			}
		}
	}
	return td
}

// A frontend's trace is structurally complete on its own (its root and its call to the
// backend); the backend's span arrives seconds later, on its exporter's schedule. The trace
// waits for it and leaves whole, and the metrics say what was learned.
func TestCallWaitsForItsChildStillOnItsWay(t *testing.T) {
	h := newHarness(t, nil)
	h.consume(asClient(makeTraces(
		span{trace: 1, id: 1, service: "frontend", start: 100 * time.Millisecond, end: 0},
		span{trace: 1, id: 2, parent: 1, service: "frontend", start: 90 * time.Millisecond, end: 10 * time.Millisecond},
	), 2, "backend"))
	// Past the quiet period: a structurally complete trace, but its call's child is not
	// learned yet, so it waits (for as long as the SDKs' default batch delay).
	h.tick(1100 * time.Millisecond)
	h.tick(1100 * time.Millisecond)
	require.Zero(t, h.sink.SpanCount(), "released before the backend's span arrived")
	h.clock.Advance(2 * time.Second)
	h.consume(makeTraces(span{trace: 1, id: 3, parent: 2, service: "backend", start: 80 * time.Millisecond, end: 20 * time.Millisecond}))
	h.tick(100 * time.Millisecond)
	h.tick(1100 * time.Millisecond)
	require.Equal(t, 3, h.sink.SpanCount())
	require.Len(t, h.sink.AllTraces(), 1, "one release")
	require.Equal(t, map[string]int{"complete": 1}, releaseReasons(h.sink.AllTraces()[0]))

	metadatatest.AssertEqualProcessorTraceconsistencyTracesAwaitedChildren(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyLearnedCalls(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyLearnedEdges(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
	// Both services seen for less than a lag window: taken as the SDKs' default delay.
	svc := func(s string) attribute.Set { return attribute.NewSet(attribute.String("service_name", s)) }
	metadatatest.AssertEqualProcessorTraceconsistencyExportLag(t, h.tel, []metricdata.DataPoint[float64]{
		{Value: 5, Attributes: svc("backend")},
		{Value: 5, Attributes: svc("frontend")},
	}, noTimes)
}

// A call whose expected child never comes leaves after the wait with the finding on it,
// counted.
func TestExpectedChildThatNeverCameIsMarked(t *testing.T) {
	h := newHarness(t, nil)
	for tr := byte(1); tr <= 2; tr++ {
		spans := []span{
			{trace: tr, id: 1, service: "frontend", start: 100 * time.Millisecond, end: 0},
			{trace: tr, id: 2, parent: 1, service: "frontend", start: 90 * time.Millisecond, end: 10 * time.Millisecond},
		}
		if tr == 1 {
			spans = append(spans, span{trace: tr, id: 3, parent: 2, service: "backend", start: 80 * time.Millisecond, end: 20 * time.Millisecond})
		}
		h.consume(asClient(makeTraces(spans...), 2, "backend"))
		for range 8 {
			h.tick(time.Second)
		}
	}
	require.Equal(t, 5, h.sink.SpanCount())
	second := h.sink.AllTraces()[1]
	attrs := spanAttrs(t, second)
	require.Contains(t, attrs[2]["consistency.span.findings"], "expected_child_missing", "%v", attrs[2])
	metadatatest.AssertEqualProcessorTraceconsistencyExpectedChildrenMissing(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}
