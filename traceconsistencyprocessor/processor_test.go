//go:build cgo

package traceconsistencyprocessor

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor/processortest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

var noTimes = metricdatatest.IgnoreTimestamp()

func reasonAttr(r string) attribute.Set { return attribute.NewSet(attribute.String("reason", r)) }

// threeSpanTrace is a complete trace: root 1 (frontend), children 2 and 3 (checkout).
func threeSpanTrace(trace byte) []span {
	return []span{
		{trace: trace, id: 1, service: "frontend", start: 900 * time.Millisecond, end: 100 * time.Millisecond},
		{trace: trace, id: 2, parent: 1, service: "checkout", start: 800 * time.Millisecond, end: 500 * time.Millisecond},
		{trace: trace, id: 3, parent: 1, service: "checkout", start: 400 * time.Millisecond, end: 200 * time.Millisecond},
	}
}

func TestCompleteTraceIsReleasedWholeAfterQuietPeriod(t *testing.T) {
	h := newHarness(t, nil)
	s := threeSpanTrace(1)
	h.consume(makeTraces(s[2]))
	h.consume(makeTraces(s[0], s[1]))

	h.tick(500 * time.Millisecond)
	require.Empty(t, h.sink.AllTraces(), "released before quiet_period")

	h.tick(500 * time.Millisecond)
	all := h.sink.AllTraces()
	require.Len(t, all, 1, "one ConsumeTraces call")
	assert.Equal(t, 3, all[0].SpanCount())
	attrs := spanAttrs(t, all[0])
	assert.Equal(t, "complete", attrs[1]["consistency.trace.release_reason"])
	assert.Equal(t, int64(3), attrs[1]["consistency.trace.span_count"])
	assert.Equal(t, "consistent", attrs[1]["consistency.trace.status"])
	for id, a := range attrs {
		assert.Contains(t, a, "consistency.hlc", "span %d", id)
	}
	assert.NotContains(t, attrs[2], "consistency.trace.release_reason", "trace attributes sit on the root only")

	metadatatest.AssertEqualProcessorTraceconsistencyTracesReleased(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: reasonAttr("complete")}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansReleased(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 3, Attributes: reasonAttr("complete")}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansReceived(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 3}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansBuffered(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 0}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyTracesBuffered(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 0}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyReleaseAge(t, h.tel,
		[]metricdata.HistogramDataPoint[float64]{{
			Count:        1,
			Sum:          1,
			Min:          metricdata.NewExtrema(1.0),
			Max:          metricdata.NewExtrema(1.0),
			Bounds:       []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120},
			BucketCounts: []uint64{0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		}}, noTimes)
}

func TestBufferedGaugesBeforeRelease(t *testing.T) {
	h := newHarness(t, nil)
	h.consume(makeTraces(threeSpanTrace(1)[:2]...))
	h.tick(100 * time.Millisecond)
	metadatatest.AssertEqualProcessorTraceconsistencySpansBuffered(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 2}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyTracesBuffered(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
	got, err := h.tel.GetMetric("otelcol_processor_traceconsistency_bytes_buffered")
	require.NoError(t, err)
	dps := got.Data.(metricdata.Gauge[int64]).DataPoints
	require.Len(t, dps, 1)
	assert.Positive(t, dps[0].Value)
}

func TestIncompleteTraceIsReleasedAfterIdleTimeout(t *testing.T) {
	h := newHarness(t, nil)
	// Span 2's parent (1) never arrives.
	h.consume(makeTraces(threeSpanTrace(7)[1:]...))

	h.tick(time.Second)
	h.tick(8 * time.Second)
	require.Empty(t, h.sink.AllTraces(), "an incomplete trace waits for idle_timeout")

	h.tick(time.Second)
	all := h.sink.AllTraces()
	require.Len(t, all, 1)
	assert.Equal(t, 2, all[0].SpanCount())
	var reasons []any
	for _, a := range spanAttrs(t, all[0]) {
		if r, ok := a["consistency.trace.release_reason"]; ok {
			reasons = append(reasons, r)
		}
	}
	assert.Equal(t, []any{"idle_timeout"}, reasons, "the reason is written once, on the summary span")
	metadatatest.AssertEqualProcessorTraceconsistencyTracesReleased(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: reasonAttr("idle_timeout")}}, noTimes)
}

func TestInterleavedTracesEachArriveWhole(t *testing.T) {
	// One trace per downstream call, so that each call can be checked on its own.
	h := newHarness(t, func(c *Config) { c.MaxReleaseBatchSpans = 1 })
	a, b := threeSpanTrace(1), threeSpanTrace(2)
	h.consume(makeTraces(a[1], b[0]))
	h.consume(makeTraces(b[2], a[0]))
	h.consume(makeTraces(a[2], b[1]))

	h.tick(time.Second)
	all := h.sink.AllTraces()
	require.Len(t, all, 2)
	seen := map[byte]int{}
	for _, td := range all {
		ids := traceIDsOf(td)
		require.Len(t, ids, 1, "one call holds one whole trace")
		for id, n := range ids {
			assert.Equal(t, 3, n, "trace %d arrives whole", id)
			seen[id] += n
		}
	}
	assert.Equal(t, map[byte]int{1: 3, 2: 3}, seen)
}

func TestTracesOfOneDrainShareOneCall(t *testing.T) {
	h := newHarness(t, nil)
	h.consume(makeTraces(append(threeSpanTrace(1), threeSpanTrace(2)...)...))
	h.tick(time.Second)
	all := h.sink.AllTraces()
	require.Len(t, all, 1, "max_release_batch_spans allows both traces in one call")
	assert.Equal(t, map[byte]int{1: 3, 2: 3}, traceIDsOf(all[0]))
}

func TestLateSpanIsForwardedAtOnceMarked(t *testing.T) {
	h := newHarness(t, nil)
	s := threeSpanTrace(3)
	h.consume(makeTraces(s[0], s[1]))
	h.tick(time.Second)
	require.Len(t, h.sink.AllTraces(), 1)

	// No tick: a late span leaves from the ConsumeTraces call that brought it.
	h.consume(makeTraces(s[2]))
	all := h.sink.AllTraces()
	require.Len(t, all, 2)
	late := all[1]
	require.Equal(t, 1, late.SpanCount())
	attrs := spanAttrs(t, late)
	assert.Equal(t, true, attrs[3]["consistency.span.late"])
	assert.NotContains(t, attrs[3], "consistency.trace.release_reason")

	h.tick(100 * time.Millisecond)
	metadatatest.AssertEqualProcessorTraceconsistencyLateSpans(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: attribute.NewSet(attribute.String("policy", "forward"))}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansReleased(t, h.tel, []metricdata.DataPoint[int64]{
		{Value: 2, Attributes: reasonAttr("complete")},
		{Value: 1, Attributes: reasonAttr("late")},
	}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyTracesReleased(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: reasonAttr("complete")}}, noTimes)
}

func TestLateSpanIsDroppedAndCountedWithPolicyDrop(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.LateSpans.Policy = "drop" })
	s := threeSpanTrace(4)
	h.consume(makeTraces(s[0], s[1]))
	h.tick(time.Second)
	require.Len(t, h.sink.AllTraces(), 1)

	h.consume(makeTraces(s[2]))
	h.tick(100 * time.Millisecond)
	assert.Len(t, h.sink.AllTraces(), 1, "nothing forwarded")
	metadatatest.AssertEqualProcessorTraceconsistencyLateSpans(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: attribute.NewSet(attribute.String("policy", "drop"))}}, noTimes)
}

func TestShutdownReleasesEverything(t *testing.T) {
	h := newHarness(t, nil)
	h.consume(makeTraces(threeSpanTrace(5)[1:]...)) // incomplete
	h.consume(makeTraces(threeSpanTrace(6)...))     // complete, but not yet quiet
	require.NoError(t, h.p.Shutdown(context.Background()))

	all := h.sink.AllTraces()
	require.NotEmpty(t, all)
	total := 0
	reasons := map[string]int{}
	for _, td := range all {
		total += td.SpanCount()
		for r, n := range releaseReasons(td) {
			reasons[r] += n
		}
	}
	assert.Equal(t, 5, total)
	assert.Equal(t, map[string]int{"shutdown": 2}, reasons)
	metadatatest.AssertEqualProcessorTraceconsistencyTracesReleased(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 2, Attributes: reasonAttr("shutdown")}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansReceived(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 5}}, noTimes)

	err := h.p.ConsumeTraces(context.Background(), makeTraces(threeSpanTrace(9)...))
	require.ErrorContains(t, err, "not running")
}

// A retryable refusal downstream keeps the release and retries it after backoff, before
// anything newer: every span arrives, each trace whole, in release order.
func TestRetryableDownstreamRefusalIsKeptAndRetriedInOrder(t *testing.T) {
	unavailable := errors.New("backend unavailable")
	next := &flakyConsumer{errs: []error{unavailable, unavailable, unavailable}}
	h := newHarness(t, nil, next)
	h.consume(makeTraces(threeSpanTrace(1)...))
	h.tick(time.Second) // released; refused (attempt 1)
	h.consume(makeTraces(threeSpanTrace(2)...))
	h.tick(time.Second) // trace 1 retried and refused (attempt 2); trace 2 released, waits behind it
	h.tick(time.Second) // attempt 3, refused
	require.Empty(t, next.sink.AllTraces())
	h.tick(time.Second) // attempt 4 succeeds, then trace 2 leaves
	got := next.sink.AllTraces()
	require.Len(t, got, 2, "trace 1, then trace 2, each in its own call")
	assert.Equal(t, map[byte]int{1: 3}, traceIDsOf(got[0]))
	assert.Equal(t, map[byte]int{2: 3}, traceIDsOf(got[1]))
	metadatatest.AssertEqualProcessorTraceconsistencyDownstreamRetries(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 3}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyConsumeErrors(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 3}}, noTimes)
	_, err := h.tel.GetMetric("otelcol_processor_traceconsistency_spans_lost")
	require.ErrorContains(t, err, "not found", "nothing was lost")
}

// Backoff doubles from its start up to its cap, with jitter of at most half a step.
func TestRetryDelayBacksOffExponentiallyWithJitter(t *testing.T) {
	for attempt, want := range map[int]time.Duration{1: retryInitial, 2: 2 * retryInitial, 3: 4 * retryInitial, 30: retryMax} {
		for range 20 {
			d := retryDelay(attempt)
			assert.GreaterOrEqual(t, d, want/2, "attempt %d", attempt)
			assert.LessOrEqual(t, d, want, "attempt %d", attempt)
		}
	}
}

// A permanent refusal is not retried: its spans are counted and logged as lost, and a
// caller whose own forwarded spans were refused gets the error.
func TestPermanentDownstreamRefusalIsCountedAsLostAndReachesTheCaller(t *testing.T) {
	bad := consumererror.NewPermanent(errors.New("bad data"))
	next := &flakyConsumer{errs: []error{bad, bad}}
	h := newHarness(t, nil, next)
	h.consume(makeTraces(threeSpanTrace(1)...))
	h.tick(time.Second)
	h.tick(time.Second)
	assert.Equal(t, 1, next.callCount(), "not retried")
	metadatatest.AssertEqualProcessorTraceconsistencySpansLost(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 3, Attributes: attribute.NewSet(attribute.String("cause", "downstream_permanent"))}}, noTimes)

	// A late span is forwarded at once from the caller's goroutine: the caller learns.
	err := h.p.ConsumeTraces(context.Background(), makeTraces(span{trace: 1, id: 4, parent: 1, service: "late"}))
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err), "%v", err)
}

// Shutdown passes everything on within its deadline even when the downstream never
// answers: then it returns in time, counts and logs what is lost, and frees the engine.
func TestShutdownWithABlockedDownstreamEndsInTimeAndCountsTheLoss(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.ShutdownTimeout = 200 * time.Millisecond }, consumer.Traces(&blockingConsumer{}))
	h.consume(makeTraces(threeSpanTrace(1)...))
	h.consume(makeTraces(threeSpanTrace(2)...))
	start := time.Now()
	err := h.p.Shutdown(context.Background())
	require.Error(t, err)
	assert.Less(t, time.Since(start), 5*time.Second, "shutdown_timeout bounds Shutdown")
	metadatatest.AssertEqualProcessorTraceconsistencySpansLost(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 6, Attributes: attribute.NewSet(attribute.String("cause", "shutdown_timeout"))}}, noTimes)
	h.p.mu.RLock()
	defer h.p.mu.RUnlock()
	assert.Nil(t, h.p.eng, "the engine is freed")
}

// No batch acknowledged while Shutdown runs is left behind: whatever ConsumeTraces accepted
// (returned nil) arrives downstream, over many rounds of concurrent batches and shutdown.
func TestShutdownIsAtomicWithConcurrentBatches(t *testing.T) {
	for round := range 40 {
		h := newHarness(t, func(c *Config) { c.MaxReleaseBatchSpans = 5 })
		var acked [2]int
		started := make(chan struct{}, 2)
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 100 {
					id := byte(w*100 + i + 1)
					if i == 5 {
						started <- struct{}{}
					}
					if h.p.ConsumeTraces(context.Background(), makeTraces(threeSpanTrace(id)...)) == nil {
						acked[w] += 3
					}
				}
			}()
		}
		<-started
		<-started
		require.NoError(t, h.p.Shutdown(context.Background()))
		wg.Wait()
		assert.Equal(t, acked[0]+acked[1], spanCount(h.sink.AllTraces()), "round %d: acknowledged = delivered", round)
	}
}

func TestRefusedBatchIsAPermanentErrorAndCounted(t *testing.T) {
	h := newHarness(t, nil)
	err := h.p.consumeBytes(context.Background(), []byte{0xff, 0xff, 0xff}, 1)
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err), "%v", err)
	assert.Contains(t, err.Error(), "ExportTraceServiceRequest")

	h.tick(100 * time.Millisecond)
	metadatatest.AssertEqualProcessorTraceconsistencyBatchesRefused(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

func TestEmptyBatchIsAccepted(t *testing.T) {
	h := newHarness(t, nil)
	td := ptrace.NewTraces()
	td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	h.consume(td)
	h.consume(ptrace.NewTraces())
	h.tick(100 * time.Millisecond)
	_, err := h.tel.GetMetric("otelcol_processor_traceconsistency_batches_refused")
	require.ErrorContains(t, err, "not found", "no batch was refused")
}

func TestFindingsAreCountedByKindAndCappedService(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Checks.MaxServiceNames = 1 })
	// Ends an hour after the collector's clock: future_timestamp, found at ingest.
	future := -time.Hour
	h.consume(makeTraces(span{trace: 1, id: 1, service: "alpha", start: time.Second, end: future}))
	h.tick(time.Second)
	h.consume(makeTraces(span{trace: 2, id: 1, service: "beta", start: time.Second, end: future}))
	h.tick(time.Second)

	all := h.sink.AllTraces()
	require.NotEmpty(t, all)
	found := 0
	for _, td := range all {
		for _, a := range spanAttrs(t, td) {
			if f, ok := a["consistency.span.findings"]; ok {
				assert.Contains(t, f, "future_timestamp")
				found++
			}
		}
	}
	assert.Equal(t, 2, found)
	kind := attribute.String("kind", "future_timestamp")
	metadatatest.AssertEqualProcessorTraceconsistencyFindings(t, h.tel, []metricdata.DataPoint[int64]{
		{Value: 1, Attributes: attribute.NewSet(kind, attribute.String("service_name", "alpha"))},
		{Value: 1, Attributes: attribute.NewSet(kind, attribute.String("service_name", otherService))},
	}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyHlcFutureTimestamps(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 2}}, noTimes)
}

func TestStartWaitsMaxOffsetWithRestartStrategyWait(t *testing.T) {
	h := newHarness(t, nil)
	assert.Equal(t, []time.Duration{500 * time.Millisecond}, h.slept)

	h2 := newHarness(t, func(c *Config) { c.HLC.RestartStrategy = "none" })
	assert.Empty(t, h2.slept)
}

func TestStartGivesUpWhenContextEnds(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	p, err := newTracesProcessor(processortest.NewNopSettings(processortest.NopType), cfg, consumertest.NewNop())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = p.Start(ctx, componenttest.NewNopHost())
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestStartFailsOnUnusableStateFile(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.HLC.RestartStrategy = "persist"
	cfg.HLC.StateFile = t.TempDir() + "/no/such/dir/hlc.state"
	require.NoError(t, cfg.Validate())
	p, err := newTracesProcessor(processortest.NewNopSettings(processortest.NopType), cfg, consumertest.NewNop())
	require.NoError(t, err)
	err = p.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorContains(t, err, "hlc.state_file")
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestShutdownWithoutStartAndTwice(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	p, err := newTracesProcessor(processortest.NewNopSettings(processortest.NopType), cfg, consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, p.Shutdown(context.Background()))
	require.NoError(t, p.Shutdown(context.Background()))
	assert.False(t, p.Capabilities().MutatesData)
}

// blockingConsumer blocks every call until its context ends.
type blockingConsumer struct{ consumertest.TracesSink }

func (*blockingConsumer) ConsumeTraces(ctx context.Context, _ ptrace.Traces) error {
	<-ctx.Done()
	return ctx.Err()
}

func TestShutdownRespectsContext(t *testing.T) {
	h := newHarness(t, nil, consumer.Traces(&blockingConsumer{}))
	h.consume(makeTraces(threeSpanTrace(1)...))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := h.p.Shutdown(ctx)
	require.Error(t, err)
	assert.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
}

func TestReleaseLoopRunsOnARealTicker(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.ReleaseTick = time.Millisecond
	cfg.QuietPeriod = time.Millisecond
	cfg.IdleTimeout = time.Millisecond
	cfg.HLC.RestartStrategy = "none"
	sink := new(consumertest.TracesSink)
	p, err := newTracesProcessor(processortest.NewNopSettings(processortest.NopType), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, p.ConsumeTraces(context.Background(), makeTraces(threeSpanTrace(1)...)))
	require.Eventually(t, func() bool { return sink.SpanCount() == 3 }, 10*time.Second, time.Millisecond)
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestExactRetryIsDroppedAndCounted(t *testing.T) {
	h := newHarness(t, nil)
	s := threeSpanTrace(1)
	h.consume(makeTraces(s...))
	h.consume(makeTraces(s[1])) // the exporter retried span 2
	h.tick(time.Second)
	all := h.sink.AllTraces()
	require.Len(t, all, 1)
	assert.Equal(t, 3, all[0].SpanCount())
	metadatatest.AssertEqualProcessorTraceconsistencyDuplicatesDropped(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

func TestKeepLatestDropsTheEarlierConflictingSpan(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Duplicates.ConflictPolicy = "keep_latest" })
	s := threeSpanTrace(1)
	h.consume(makeTraces(s...))
	again := s[1]
	again.name = "second version"
	h.consume(makeTraces(again))
	h.tick(time.Second)
	all := h.sink.AllTraces()
	require.Len(t, all, 1)
	require.Equal(t, 3, all[0].SpanCount())
	names := map[string]bool{}
	for _, rs := range all[0].ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				names[sp.Name()] = true
			}
		}
	}
	assert.True(t, names["second version"], "the latest version is kept: %v", names)
	metadatatest.AssertEqualProcessorTraceconsistencyConflictsDropped(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

func TestSpansWithInvalidIDsAreForwardedUnassembled(t *testing.T) {
	h := newHarness(t, nil)
	td := makeTraces(threeSpanTrace(1)[0])
	sp := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	sp.SetTraceID([16]byte{}) // invalid: all zero
	h.consume(td)
	all := h.sink.AllTraces()
	require.Len(t, all, 1, "forwarded at once, without a tick")
	attrs := spanAttrs(t, all[0])[1]
	assert.Contains(t, attrs["consistency.span.findings"], "invalid_trace_id")

	h.tick(100 * time.Millisecond)
	metadatatest.AssertEqualProcessorTraceconsistencySpansUnassembled(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansReleased(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1, Attributes: reasonAttr("unassembled")}}, noTimes)
}

func TestConcurrentBatchesTicksAndShutdownLoseNothing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxReleaseBatchSpans = 7 })
	const workers, traces = 4, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range traces {
				id := byte(w*traces + i + 1)
				s := threeSpanTrace(id)
				// Two batches per trace, from different goroutines' points of view.
				assert.NoError(t, h.p.ConsumeTraces(context.Background(), makeTraces(s[0])))
				assert.NoError(t, h.p.ConsumeTraces(context.Background(), makeTraces(s[1], s[2])))
			}
		}()
	}
	for range 20 {
		h.tick(100 * time.Millisecond)
	}
	wg.Wait()
	require.NoError(t, h.p.Shutdown(context.Background()))

	seen := map[byte]int{}
	for _, td := range h.sink.AllTraces() {
		for id, n := range traceIDsOf(td) {
			seen[id] += n
		}
	}
	require.Len(t, seen, workers*traces)
	for id, n := range seen {
		assert.Equal(t, 3, n, "trace %d", id)
	}
}

// While released data cannot leave (here: nothing drained it yet) and fills the memory
// bound, ConsumeTraces refuses with a retryable error, so the receiver answers UNAVAILABLE /
// HTTP 503; once it left, batches are accepted again, and every accepted span arrives.
func TestFullEngineRefusesWithARetryableErrorUntilReleasedDataLeaves(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxBufferedBytes = 16 << 10 })
	accepted := 0
	var refusal error
	for i := 1; i < 250 && refusal == nil; i++ {
		// Straight into the engine: nothing drains between these batches.
		b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(makeTraces(threeSpanTrace(byte(i))...))
		require.NoError(t, err)
		if _, err := h.p.eng.Ingest(b, h.clock.Now()); err != nil {
			refusal = err
			break
		}
		accepted += 3
	}
	require.Error(t, refusal, "the engine fills up when nothing drains")
	err := h.p.ConsumeTraces(context.Background(), makeTraces(threeSpanTrace(250)...))
	require.Error(t, err)
	assert.False(t, consumererror.IsPermanent(err), "a full engine is a retryable condition: %v", err)
	assert.Contains(t, err.Error(), "max_buffered_bytes")

	h.tick(100 * time.Millisecond) // the release loop drains what was released
	h.consume(makeTraces(threeSpanTrace(251)...))
	accepted += 3
	require.NoError(t, h.p.Shutdown(context.Background()))
	assert.Equal(t, accepted, spanCount(h.sink.AllTraces()), "every accepted span arrives")
	metadatatest.AssertEqualProcessorTraceconsistencyBatchesThrottled(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 2}}, noTimes)
}

// hookConsumer calls hook (with its call number, from 1) before accepting into sink.
type hookConsumer struct {
	mu    sync.Mutex
	calls int
	hook  func(call int)
	sink  consumertest.TracesSink
}

func (*hookConsumer) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (c *hookConsumer) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	c.mu.Lock()
	c.calls++
	n := c.calls
	c.mu.Unlock()
	c.hook(n)
	return c.sink.ConsumeTraces(ctx, td)
}

func (c *hookConsumer) callCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls
}

// backlog releases n complete traces (IDs from first) into the engine's ready queue without
// passing them on: the release loop is not ticked.
func backlog(t *testing.T, h *harness, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(makeTraces(threeSpanTrace(byte(i))...))
		require.NoError(t, err)
		_, err = h.p.eng.Ingest(b, h.clock.Now())
		require.NoError(t, err)
	}
	h.clock.Advance(2 * time.Second)
	_, err := h.p.eng.Tick(h.clock.Now())
	require.NoError(t, err)
}

func TestALateSpanCallerStopsPassingTheSharedBacklogOnWhenItsContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := &hookConsumer{hook: func(int) { cancel() }} // the caller gives up during the first call
	h := newHarness(t, func(c *Config) { c.MaxReleaseBatchSpans = 3 }, next)
	backlog(t, h, 1, 20)
	require.NoError(t, h.p.ConsumeTraces(ctx, makeTraces(span{trace: 1, id: 9, parent: 1, service: "late"})))
	assert.Equal(t, 1, next.callCount(), "the caller stops once its context ended")
	h.tick(100 * time.Millisecond)
	assert.Equal(t, 20*3+1, spanCount(next.sink.AllTraces()), "the release loop passes the rest on")
}

func TestALateSpanCallerPassesOnNoMoreThanWasReadyWithItsBatch(t *testing.T) {
	var h *harness
	// While the caller passes the backlog on, other batches keep releasing traces.
	next := &hookConsumer{}
	next.hook = func(call int) {
		if call <= 30 {
			backlog(t, h, 100+call, 1)
		}
	}
	h = newHarness(t, func(c *Config) { c.MaxReleaseBatchSpans = 3 }, next)
	backlog(t, h, 1, 5)
	require.NoError(t, h.p.ConsumeTraces(context.Background(), makeTraces(span{trace: 1, id: 9, parent: 1, service: "late"})))
	calls := next.callCount()
	assert.LessOrEqual(t, calls, 6, "the five traces and the late span ready with the batch, not what was released after")
	own := false
	for _, td := range next.sink.AllTraces() {
		if attrs, ok := spanAttrs(t, td)[9]; ok {
			own = attrs["consistency.span.late"] == true
		}
	}
	assert.True(t, own, "the caller's own late span is among what it passed on")
	h.tick(100 * time.Millisecond)
	assert.Equal(t, (5+30)*3+1, spanCount(next.sink.AllTraces()))
}

func TestAnEngineDrainFailingWithAPanicDoesNotHoldBackWhatIsBehindIt(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxReleaseBatchSpans = 3 })
	var failed atomic.Bool // senders drain in parallel
	h.p.send.take = func(g *engine.Engine, maxSpans uint64) (*engine.Release, error) {
		if failed.CompareAndSwap(false, true) {
			return nil, &engine.Error{Code: engine.CodePanic, Message: "internal error (panic): injected"}
		}
		return g.Drain(maxSpans)
	}
	h.consume(makeTraces(append(threeSpanTrace(1), threeSpanTrace(2)...)...))
	h.tick(time.Second)
	assert.True(t, failed.Load())
	assert.Equal(t, 6, spanCount(h.sink.AllTraces()), "the drain goes on after the failed one")
}
