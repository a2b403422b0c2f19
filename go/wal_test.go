//go:build cgo

package traceconsistencyprocessor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

func withWAL(dir string, more ...func(*Config)) func(*Config) {
	return func(c *Config) {
		c.WAL.Directory = dir
		for _, m := range more {
			m(c)
		}
	}
}

// A shutdown that cannot deliver (the next consumer hangs) leaves the spans in the log, not
// lost: the next start replays them, and the trace leaves whole, marked recovered.
func TestWALKeepsWhatShutdownCouldNotDeliverForTheNextStart(t *testing.T) {
	keepsWhatShutdownCouldNotDeliver(t, t.TempDir())
}

// The same after a run that logged nothing (a restart before traffic): that run's empty
// segment is the one the next run writes to, and it must stay on disk.
func TestWALKeepsWhatShutdownCouldNotDeliverAfterAnIdleRun(t *testing.T) {
	dir := t.TempDir()
	idle := newHarness(t, withWAL(dir))
	require.NoError(t, idle.p.Shutdown(context.Background()))
	keepsWhatShutdownCouldNotDeliver(t, dir)
}

func keepsWhatShutdownCouldNotDeliver(t *testing.T, dir string) {
	h := newHarness(t, withWAL(dir, func(c *Config) { c.ShutdownTimeout = 200 * time.Millisecond }), consumer.Traces(&blockingConsumer{}))
	h.consume(makeTraces(threeSpanTrace(1)...))
	h.consume(makeTraces(threeSpanTrace(2)[:2]...)) // trace 2 waits for its last child
	require.Error(t, h.p.Shutdown(context.Background()))
	_, err := h.tel.GetMetric("otelcol_processor_traceconsistency_spans_lost")
	require.ErrorContains(t, err, "not found", "kept in the log, not lost")

	h2 := newHarness(t, withWAL(dir))
	// Trace 2's last span arrives after the restart: the trace still leaves whole.
	h2.consume(makeTraces(threeSpanTrace(2)[2:]...))
	h2.tick(2 * time.Second)
	got := h2.sink.AllTraces()
	require.NotEmpty(t, got)
	perTrace := map[byte]int{}
	for _, td := range got {
		for id, n := range traceIDsOf(td) {
			perTrace[id] += n
		}
		for _, a := range spanAttrs(t, td) {
			if _, root := a["consistency.trace.release_reason"]; root {
				assert.Equal(t, "complete", a["consistency.trace.release_reason"])
				assert.Equal(t, true, a["consistency.trace.recovered"])
			}
		}
	}
	assert.Equal(t, map[byte]int{1: 3, 2: 3}, perTrace)
	assert.Equal(t, map[string]int{"complete": 2}, releaseReasons(got[0]), "one release with both traces")
	metadatatest.AssertEqualProcessorTraceconsistencyWalSpansReplayed(t, h2.tel, []metricdata.DataPoint[int64]{{Value: 5}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyWalTracesRecovered(t, h2.tel, []metricdata.DataPoint[int64]{{Value: 2}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySpansReceived(t, h2.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

// What was delivered is not replayed, and the log's files shrink back.
func TestWALDoesNotReplayWhatWasDelivered(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, withWAL(dir))
	h.consume(makeTraces(threeSpanTrace(1)...))
	h.tick(2 * time.Second)
	require.Equal(t, 3, spanCount(h.sink.AllTraces()))
	require.NoError(t, h.p.Shutdown(context.Background()))

	h2 := newHarness(t, withWAL(dir))
	h2.tick(time.Minute)
	assert.Empty(t, h2.sink.AllTraces())
	_, err := h2.tel.GetMetric("otelcol_processor_traceconsistency_wal_spans_replayed")
	require.ErrorContains(t, err, "not found", "nothing replayed")
	metadatatest.AssertEqualProcessorTraceconsistencyWalSegments(t, h2.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

// A release refused for now is acknowledged only once it is accepted or counted as lost (a
// permanent refusal of its retry): neither is replayed after a restart.
func TestWALAcknowledgesOnlyAcceptedOrCountedReleases(t *testing.T) {
	dir := t.TempDir()
	next := &flakyConsumer{errs: []error{errors.New("backend unavailable"), consumererror.NewPermanent(errors.New("bad data"))}}
	h := newHarness(t, withWAL(dir), next)
	h.consume(makeTraces(threeSpanTrace(1)...))
	h.tick(2 * time.Second) // refused for now: kept
	h.tick(time.Second)     // the retry is refused for good: counted as lost
	metadatatest.AssertEqualProcessorTraceconsistencySpansLost(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 3, Attributes: attribute.NewSet(attribute.String("cause", "downstream_permanent"))}}, noTimes)
	h.consume(makeTraces(threeSpanTrace(2)...))
	h.tick(2 * time.Second)
	require.Equal(t, map[byte]int{2: 3}, traceIDsOf(next.sink.AllTraces()[0]))
	require.NoError(t, h.p.Shutdown(context.Background()))
	h2 := newHarness(t, withWAL(dir))
	h2.tick(time.Minute)
	assert.Empty(t, h2.sink.AllTraces())
	_, err := h2.tel.GetMetric("otelcol_processor_traceconsistency_wal_spans_replayed")
	require.ErrorContains(t, err, "not found", "neither the delivered nor the lost release is replayed")
}

// A batch larger than wal.max_bytes can never be logged: a permanent refusal, not one the
// sender retries forever.
func TestWALRefusesABatchLargerThanTheLogForGood(t *testing.T) {
	h := newHarness(t, withWAL(t.TempDir(), func(c *Config) { c.WAL.MaxBytes = 8 << 20 }))
	td := makeTraces(threeSpanTrace(1)...)
	td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().PutStr("payload", strings.Repeat("x", 9<<20))
	err := h.p.ConsumeTraces(context.Background(), td)
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err), "%v", err)
	assert.ErrorContains(t, err, "wal.max_bytes")
	h.tick(time.Second)
	metadatatest.AssertEqualProcessorTraceconsistencyBatchesRefused(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}
