//go:build cgo

package traceconsistencyprocessor

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
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
	require.NoError(t, h.p.Shutdown(context.Background()), "a shutdown that keeps what it could not deliver in the log is not a failure")
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

// gatedConsumer holds every call whose batch carries a trace in held until its context
// ends (answering with the context's error, as an exporter with wait_for_result does when
// the backend is down), and accepts the others into sink.
type gatedConsumer struct {
	held    map[byte]bool
	sink    consumertest.TracesSink
	mu      sync.Mutex
	waiting int
}

func (*gatedConsumer) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (g *gatedConsumer) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	for id := range traceIDsOf(td) {
		if g.held[id] {
			g.mu.Lock()
			g.waiting++
			g.mu.Unlock()
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return g.sink.ConsumeTraces(ctx, td)
}

func (g *gatedConsumer) held1() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

// Several releases are in flight at once, and each is acknowledged to the log by its own
// call: while the call holding trace 1 waits (undelivered), traces 2 and 3 are passed on
// and acknowledged; at the shutdown that cannot deliver trace 1, it alone stays in the log,
// and the next start replays it, and nothing delivered.
func TestWALAcknowledgesEachInFlightReleaseByItsOwnCall(t *testing.T) {
	dir := t.TempDir()
	next := &gatedConsumer{held: map[byte]bool{1: true}}
	h := newHarness(t, withWAL(dir, func(c *Config) {
		c.MaxReleaseBatchSpans = 3 // one trace per release
		c.MaxConcurrentSends = 4
		c.ShutdownTimeout = 300 * time.Millisecond
	}), next)
	for id := byte(1); id <= 3; id++ {
		h.consume(makeTraces(threeSpanTrace(id)...))
	}
	h.clock.Advance(2 * time.Second)
	h.ticker.c <- h.clock.Now() // the tick's senders: one waits in the call holding trace 1
	require.Eventually(t, func() bool { return next.held1() == 1 && spanCount(next.sink.AllTraces()) == 6 },
		5*time.Second, time.Millisecond, "traces 2 and 3 pass while trace 1's call waits")
	got := map[byte]int{}
	for _, td := range next.sink.AllTraces() {
		for id, n := range traceIDsOf(td) {
			got[id] += n
		}
	}
	require.Equal(t, map[byte]int{2: 3, 3: 3}, got)

	done := make(chan error, 1)
	go func() { done <- h.p.Shutdown(context.Background()) }()
	<-h.ticked // the tick ends once shutdown cancelled the waiting call
	require.NoError(t, <-done)
	_, err := h.tel.GetMetric("otelcol_processor_traceconsistency_spans_lost")
	require.ErrorContains(t, err, "not found", "trace 1 is kept in the log, not lost")

	h2 := newHarness(t, withWAL(dir))
	h2.tick(2 * time.Second)
	replayed := map[byte]int{}
	for _, td := range h2.sink.AllTraces() {
		for id, n := range traceIDsOf(td) {
			replayed[id] += n
		}
	}
	assert.Equal(t, map[byte]int{1: 3}, replayed, "only the release whose call never returned is replayed")
	metadatatest.AssertEqualProcessorTraceconsistencyWalSpansReplayed(t, h2.tel, []metricdata.DataPoint[int64]{{Value: 3}}, noTimes)
}

// The release loop never waits for the next consumer: while a call waits for the backend,
// ticks go on releasing what is due (other senders pass it on) and recording metrics.
func TestReleaseLoopGoesOnWhileACallWaits(t *testing.T) {
	next := &gatedConsumer{held: map[byte]bool{1: true}}
	h := newHarness(t, withWAL(t.TempDir(), func(c *Config) {
		c.MaxReleaseBatchSpans = 3
		c.ShutdownTimeout = 300 * time.Millisecond
	}), next)
	tick := func() {
		t.Helper()
		h.clock.Advance(2 * time.Second)
		done := make(chan struct{})
		go func() { h.p.releaseTick(); close(done) }() // what the loop does on each tick
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("a tick waited for the next consumer")
		}
	}
	h.consume(makeTraces(threeSpanTrace(1)...))
	tick()
	require.Eventually(t, func() bool { return next.held1() == 1 }, 5*time.Second, time.Millisecond)
	h.consume(makeTraces(threeSpanTrace(2)...))
	tick()
	require.Eventually(t, func() bool { return spanCount(next.sink.AllTraces()) == 3 }, 5*time.Second, time.Millisecond,
		"trace 2 is released and passed on while trace 1's call waits")
	metadatatest.AssertEqualProcessorTraceconsistencySpansReceived(t, h.tel, []metricdata.DataPoint[int64]{{Value: 6}}, noTimes)
}

// paddedTraces: one-span traces first..first+n, each span with a 4 KiB attribute.
func paddedTraces(first, n int) ptrace.Traces {
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	pad := strings.Repeat("p", 4096)
	now := time.Now()
	for i := first; i < first+n; i++ {
		s := ss.Spans().AppendEmpty()
		var tid [16]byte
		binary.BigEndian.PutUint64(tid[8:], uint64(i+1))
		s.SetTraceID(pcommon.TraceID(tid))
		var sid [8]byte
		binary.BigEndian.PutUint64(sid[:], uint64(i+1))
		s.SetSpanID(pcommon.SpanID(sid))
		s.SetName("op")
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Second)))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(now))
		s.Attributes().PutStr("pad", pad)
	}
	return td
}

// A log holding more than the restarted engine may buffer (the bound was lowered) is
// replayed within it: Start passes releases on while it replays, and every span leaves once.
func TestWALReplayLargerThanTheBoundPassesReleasesOnDuringStart(t *testing.T) {
	dir := t.TempDir()
	long := func(c *Config) {
		c.QuietPeriod, c.IdleTimeout, c.MaxAge = time.Hour, time.Hour, 2*time.Hour
		c.MaxBufferedSpans = 10_000_000
	}
	const traces = 5000 // ~21 MiB of spans
	h := newHarness(t, withWAL(dir, long, func(c *Config) {
		c.MaxBufferedBytes, c.WAL.MaxBytes = 64<<20, 32<<20
		c.ShutdownTimeout = 200 * time.Millisecond
	}), consumer.Traces(&blockingConsumer{}))
	for first := 0; first < traces; first += 100 {
		h.consume(paddedTraces(first, 100))
	}
	require.NoError(t, h.p.Shutdown(context.Background()), "what shutdown could not deliver stays in the log")

	h2 := newHarness(t, withWAL(dir, long, func(c *Config) { c.MaxBufferedBytes, c.WAL.MaxBytes = 8<<20, 8<<20 }))
	during := spanCount(h2.sink.AllTraces())
	assert.Greater(t, during, 0, "released during the replay and passed on before Start returned")
	require.NoError(t, h2.p.Shutdown(context.Background()))
	seen := map[pcommon.SpanID]int{}
	for _, td := range h2.sink.AllTraces() {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				spans := sss.At(j).Spans()
				for k := 0; k < spans.Len(); k++ {
					seen[spans.At(k).SpanID()]++
				}
			}
		}
	}
	assert.Len(t, seen, traces, "every span out (%d of them during the replay)", during)
	for id, n := range seen {
		if n != 1 {
			t.Errorf("span %v out %d times", id, n)
		}
	}
	metadatatest.AssertEqualProcessorTraceconsistencyWalSpansReplayed(t, h2.tel, []metricdata.DataPoint[int64]{{Value: traces}}, noTimes)
}
