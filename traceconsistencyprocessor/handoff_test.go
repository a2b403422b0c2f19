//go:build cgo

package traceconsistencyprocessor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/ptracetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/connector/connectortest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor/processortest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap/zaptest"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadata"
	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

var (
	releasedPipeline = pipeline.NewID(pipeline.SignalTraces)
	handoffPipeline  = pipeline.NewIDWithName(pipeline.SignalTraces, "handoff")
)

// newConnectorHarness is newHarness for the connector form: released traces go to h.sink
// (pipeline traces), hand-offs to handoff (pipeline traces/handoff).
func newConnectorHarness(t *testing.T, mutate func(*Config), handoff consumer.Traces) *harness {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
	cfg.Handoff.Pipelines = []pipeline.ID{handoffPipeline}
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(t, cfg.Validate())
	h := &harness{
		t:      t,
		sink:   new(consumertest.TracesSink),
		clock:  &fakeClock{now: t0},
		ticker: &fakeTicker{c: make(chan time.Time)},
		ticked: make(chan struct{}),
		tel:    componenttest.NewTelemetry(),
	}
	router := connector.NewTracesRouter(map[pipeline.ID]consumer.Traces{releasedPipeline: h.sink, handoffPipeline: handoff})
	pset := metadatatest.NewSettings(h.tel)
	set := connector.Settings{ID: pset.ID, TelemetrySettings: pset.TelemetrySettings, BuildInfo: pset.BuildInfo}
	set.Logger = zaptest.NewLogger(t)
	p, err := newTracesConnector(set, cfg, router,
		withClock(h.clock.Now),
		withSleep(func(_ context.Context, d time.Duration) error { h.slept = append(h.slept, d); return nil }),
		withTicker(func(time.Duration) ticker { return h.ticker }),
		withAfterTick(func() { h.ticked <- struct{}{} }),
	)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background(), componenttest.NewNopHost()))
	h.p = p
	t.Cleanup(func() {
		require.NoError(t, p.Shutdown(context.Background()))
		require.NoError(t, h.tel.Shutdown(context.Background()))
	})
	return h
}

// testKey is the hand-off key of the test tier (handoff.key).
const testKey = "the test tier's shared secret"

func onShutdown(c *Config) { c.Handoff.OnShutdown = true; c.Handoff.Key = testKey }
func onIdle(c *Config)     { c.Handoff.OnIdle = true; c.Handoff.Key = testKey }

func causeAttr(c string) attribute.Set { return attribute.NewSet(attribute.String("cause", c)) }

// TestGoldenHandoff feeds testdata/golden_handoff/<case>/input.yaml through the connector
// as TestGolden does (each resourceSpans entry one batch, one tick past idle_timeout, then
// shutdown) and compares what went to the released-traces pipeline with expected.yaml and
// what went to the hand-off pipeline with expected_handoff.yaml (an empty file: nothing).
// Regenerate with: go test -run TestGoldenHandoff -update .
func TestGoldenHandoff(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "golden_handoff", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			input, err := golden.ReadTraces(filepath.Join(dir, "input.yaml"))
			require.NoError(t, err)
			handoff := new(consumertest.TracesSink)
			h := newConnectorHarness(t, func(cfg *Config) {
				cm, err := confmaptest.LoadConf(filepath.Join(dir, "config.yaml"))
				require.NoError(t, err)
				require.NoError(t, cm.Unmarshal(cfg))
			}, handoff)
			for _, rs := range input.ResourceSpans().All() {
				batch := ptrace.NewTraces()
				rs.CopyTo(batch.ResourceSpans().AppendEmpty())
				h.consume(batch)
			}
			h.tick(10 * time.Second)
			require.NoError(t, h.p.Shutdown(t.Context()))
			for file, got := range map[string][]ptrace.Traces{"expected.yaml": h.sink.AllTraces(), "expected_handoff.yaml": handoff.AllTraces()} {
				actual := mergeTraces(got)
				path := filepath.Join(dir, file)
				if *update {
					require.NoError(t, golden.WriteTracesToFile(path, actual))
					continue
				}
				expected, err := golden.ReadTraces(path)
				require.NoError(t, err)
				require.NoError(t, ptracetest.CompareTraces(expected, actual,
					ptracetest.IgnoreResourceSpansOrder(), ptracetest.IgnoreScopeSpansOrder(), ptracetest.IgnoreSpansOrder()), file)
			}
		})
	}
}

func TestShutdownHandsOffAndCountsByCause(t *testing.T) {
	handoff := new(consumertest.TracesSink)
	h := newConnectorHarness(t, onShutdown, handoff)
	h.consume(makeTraces(threeSpanTrace(1)[1:]...))
	h.consume(makeTraces(threeSpanTrace(2)[1:]...))
	require.NoError(t, h.p.Shutdown(context.Background()))
	assert.Zero(t, spanCount(h.sink.AllTraces()), "nothing released as final")
	require.Equal(t, 4, spanCount(handoff.AllTraces()))
	for _, td := range handoff.AllTraces() {
		for id, attrs := range spanAttrs(t, td) {
			assert.Equal(t, int64(1), attrs["consistency.span.handoff"], "span %d", id)
			assert.Contains(t, attrs, "consistency.hlc", "span %d keeps its stamp", id)
			assert.NotContains(t, attrs, "consistency.trace.release_reason")
		}
	}
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffTraces(t, h.tel, []metricdata.DataPoint[int64]{{Value: 2, Attributes: causeAttr("shutdown")}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffSpans(t, h.tel, []metricdata.DataPoint[int64]{{Value: 4, Attributes: causeAttr("shutdown")}}, noTimes)
}

func TestIdleHandsOffOnceAndTheReturnIsReleasedWithFindings(t *testing.T) {
	handoff := new(consumertest.TracesSink)
	h := newConnectorHarness(t, onIdle, handoff)
	h.consume(makeTraces(threeSpanTrace(3)[1:]...))
	h.tick(10 * time.Second)
	require.Len(t, handoff.AllTraces(), 1)
	assert.Zero(t, spanCount(h.sink.AllTraces()))
	// The balancing tier routes it back here: held once more, then released.
	back := handoff.AllTraces()[0]
	h.consume(back)
	h.tick(10 * time.Second)
	require.Len(t, handoff.AllTraces(), 1, "handed off once only")
	require.Equal(t, 2, spanCount(h.sink.AllTraces()))
	released := h.sink.AllTraces()[0]
	assert.Equal(t, map[string]int{"idle_timeout": 1}, releaseReasons(released))
	for id, attrs := range spanAttrs(t, released) {
		assert.NotContains(t, attrs, "consistency.span.handoff", "span %d: marker stripped", id)
	}
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffTraces(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1, Attributes: causeAttr("idle_timeout")}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffSpansReceived(t, h.tel, []metricdata.DataPoint[int64]{{Value: 2}}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffTracesIncomplete(t, h.tel, []metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

func TestHandoffMergesIntoTheBufferedTraceAndIsCounted(t *testing.T) {
	handoff := new(consumertest.TracesSink)
	leaving := newConnectorHarness(t, onShutdown, handoff)
	leaving.consume(makeTraces(threeSpanTrace(4)[1:]...))
	require.NoError(t, leaving.p.Shutdown(context.Background()))

	owner := newConnectorHarness(t, onShutdown, new(consumertest.TracesSink))
	owner.consume(makeTraces(threeSpanTrace(4)[0]))
	for _, td := range handoff.AllTraces() {
		owner.consume(td)
	}
	owner.tick(time.Second)
	require.Len(t, owner.sink.AllTraces(), 1, "one release")
	out := owner.sink.AllTraces()[0]
	assert.Equal(t, map[string]int{"complete": 1}, releaseReasons(out))
	handed := spanAttrs(t, handoff.AllTraces()[0])
	for id, attrs := range spanAttrs(t, out) {
		assert.NotContains(t, attrs, "consistency.span.handoff")
		if theirs, ok := handed[id]; ok {
			assert.Equal(t, theirs["consistency.hlc"], attrs["consistency.hlc.upstream"], "span %d", id)
			assert.Greater(t, attrs["consistency.hlc"], attrs["consistency.hlc.upstream"], "span %d", id)
		}
	}
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffSpansMerged(t, owner.tel, []metricdata.DataPoint[int64]{{Value: 2}}, noTimes)
}

func TestRetryableHandoffRefusalIsKeptAndRetriedAtShutdown(t *testing.T) {
	handoff := &flakyConsumer{errs: []error{errors.New("balancer unavailable"), errors.New("still unavailable")}}
	h := newConnectorHarness(t, onShutdown, handoff)
	h.consume(makeTraces(threeSpanTrace(5)[1:]...))
	require.NoError(t, h.p.Shutdown(context.Background()))
	assert.Equal(t, 3, handoff.callCount())
	assert.Equal(t, 2, spanCount(handoff.sink.AllTraces()), "delivered after the retries")
	assert.Len(t, h.slept[1:], 2, "shutdown waited out each backoff (after the start's hlc.max_offset wait)")
}

func TestRetryableHandoffRefusalIsRetriedFromTheReleaseLoop(t *testing.T) {
	handoff := &flakyConsumer{errs: []error{errors.New("balancer unavailable")}}
	h := newConnectorHarness(t, onIdle, handoff)
	h.consume(makeTraces(threeSpanTrace(6)[1:]...))
	h.tick(10 * time.Second)
	assert.Equal(t, 1, handoff.callCount())
	h.tick(retryMax)
	assert.Equal(t, 2, handoff.callCount())
	assert.Equal(t, 2, spanCount(handoff.sink.AllTraces()))
	assert.Zero(t, spanCount(h.sink.AllTraces()))
}

func TestProcessorFormRefusesHandoff(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	onShutdown(cfg)
	cfg.Handoff.Pipelines = []pipeline.ID{handoffPipeline}
	_, err := NewFactory().CreateTraces(context.Background(), processortest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.ErrorContains(t, err, "handoff.on_shutdown and handoff.on_idle need the connector form")
}

func TestConnectorOutputsMustMatchHandoffPipelines(t *testing.T) {
	set := connectortest.NewNopSettings(metadata.Type)
	nop := consumertest.NewNop()
	for name, tt := range map[string]struct {
		outputs map[pipeline.ID]consumer.Traces
		want    string
	}{
		"unknown pipeline": {map[pipeline.ID]consumer.Traces{releasedPipeline: nop}, `handoff.pipelines names "traces/handoff", which does not receive from this connector`},
		"no released":      {map[pipeline.ID]consumer.Traces{handoffPipeline: nop}, "needs an output pipeline for released traces"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			onIdle(cfg)
			cfg.Handoff.Pipelines = []pipeline.ID{handoffPipeline}
			_, err := NewConnectorFactory().CreateTracesToTraces(context.Background(), set, cfg, connector.NewTracesRouter(tt.outputs))
			require.ErrorContains(t, err, tt.want)
		})
	}
}

func TestConnectorWithoutHandoffReleasesToAllOutputs(t *testing.T) {
	set := connectortest.NewNopSettings(metadata.Type)
	a, b := new(consumertest.TracesSink), new(consumertest.TracesSink)
	cfg := createDefaultConfig().(*Config)
	cfg.HLC.RestartStrategy = restartNone
	c, err := NewConnectorFactory().CreateTracesToTraces(context.Background(), set, cfg,
		connector.NewTracesRouter(map[pipeline.ID]consumer.Traces{releasedPipeline: a, handoffPipeline: b}))
	require.NoError(t, err)
	require.NoError(t, c.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, c.ConsumeTraces(context.Background(), makeTraces(threeSpanTrace(7)...)))
	require.NoError(t, c.Shutdown(context.Background()))
	assert.Equal(t, 3, spanCount(a.AllTraces()))
	assert.Equal(t, 3, spanCount(b.AllTraces()))
}

func TestGoldenHandoffFilesExist(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "golden_handoff", "*"))
	require.NoError(t, err)
	for _, dir := range dirs {
		for _, f := range []string{"input.yaml", "config.yaml", "expected.yaml", "expected_handoff.yaml"} {
			_, err := os.Stat(filepath.Join(dir, f))
			require.NoError(t, err, "every hand-off golden case has %s", f)
		}
	}
}

func TestAClientsHandoffMarkerIsStrippedNotHonouredAndCounted(t *testing.T) {
	h := newHarness(t, nil)
	td := makeTraces(threeSpanTrace(8)...)
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, s := range ss.Spans().All() {
				// What a client could send to keep its traces from ever being handed off.
				s.Attributes().PutInt("consistency.span.handoff", 16)
				s.Attributes().PutInt("consistency.span.handoff_proof", 12345)
			}
		}
	}
	h.consume(td)
	h.tick(time.Second)
	for id, attrs := range spanAttrs(t, h.sink.AllTraces()[0]) {
		assert.NotContains(t, attrs, "consistency.span.handoff", "span %d", id)
		assert.NotContains(t, attrs, "consistency.span.handoff_proof", "span %d", id)
	}
	metadatatest.AssertEqualProcessorTraceconsistencyHandoffSpansUntrusted(t, h.tel, []metricdata.DataPoint[int64]{{Value: 3}}, noTimes)
	_, err := h.tel.GetMetric("otelcol_processor_traceconsistency_handoff_spans_received")
	assert.Error(t, err, "no hand-off received")
}
