//go:build cgo

package traceconsistencyprocessor

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/zap/zaptest"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

// t0 is the fake wall clock's start: every test sees the same times, so HLC stamps are
// deterministic.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a wall clock that moves only when a test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeTicker fires only when a test sends on it.
type fakeTicker struct{ c chan time.Time }

func (f *fakeTicker) C() <-chan time.Time { return f.c }
func (*fakeTicker) Stop()                 {}

// harness runs one processor with a fake clock, a hand-fired ticker, a sink and test
// telemetry.
type harness struct {
	t      *testing.T
	p      *tracesProcessor
	sink   *consumertest.TracesSink
	clock  *fakeClock
	ticker *fakeTicker
	ticked chan struct{}
	tel    *componenttest.Telemetry
	slept  []time.Duration
}

// newHarness starts a processor with the default config changed by mutate. next defaults to
// the harness's sink.
func newHarness(t *testing.T, mutate func(*Config), next ...consumer.Traces) *harness {
	t.Helper()
	cfg := createDefaultConfig().(*Config)
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
	var out consumer.Traces = h.sink
	if len(next) > 0 {
		out = next[0]
	}
	set := metadatatest.NewSettings(h.tel)
	set.Logger = zaptest.NewLogger(t)
	p, err := newTracesProcessor(set, cfg, out,
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

// tick advances the clock by d and runs one release tick to completion.
func (h *harness) tick(d time.Duration) {
	h.t.Helper()
	h.clock.Advance(d)
	h.ticker.c <- h.clock.Now()
	<-h.ticked
}

// consume passes td to the processor and requires success.
func (h *harness) consume(td ptrace.Traces) {
	h.t.Helper()
	require.NoError(h.t, h.p.ConsumeTraces(context.Background(), td))
}

// span describes one test span; times are offsets before the fake clock's start.
type span struct {
	trace   byte
	id      byte
	parent  byte // 0 = root
	service string
	name    string
	start   time.Duration // before t0
	end     time.Duration // before t0 (negative = after t0)
}

func traceID(b byte) pcommon.TraceID { return pcommon.TraceID{0x5a, 15: b} }
func spanID(b byte) pcommon.SpanID   { return pcommon.SpanID{0xc3, 7: b} }

// makeTraces builds one batch: one resource per service (in order of first appearance),
// one scope.
func makeTraces(spans ...span) ptrace.Traces {
	td := ptrace.NewTraces()
	scopes := map[string]ptrace.SpanSlice{}
	for _, s := range spans {
		ss, ok := scopes[s.service]
		if !ok {
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", s.service)
			sc := rs.ScopeSpans().AppendEmpty()
			sc.Scope().SetName("test")
			ss = sc.Spans()
			scopes[s.service] = ss
		}
		sp := ss.AppendEmpty()
		sp.SetTraceID(traceID(s.trace))
		sp.SetSpanID(spanID(s.id))
		if s.parent != 0 {
			sp.SetParentSpanID(spanID(s.parent))
		}
		name := s.name
		if name == "" {
			name = s.service + "-op"
		}
		sp.SetName(name)
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(-s.start)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(-s.end)))
	}
	return td
}

// spanAttrs indexes the output's spans by span ID byte and returns each one's attributes.
func spanAttrs(t *testing.T, td ptrace.Traces) map[byte]map[string]any {
	t.Helper()
	out := map[byte]map[string]any{}
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				id := sp.SpanID()
				out[id[7]] = sp.Attributes().AsRaw()
			}
		}
	}
	return out
}

// traceIDsOf lists the distinct trace ID bytes in td.
func traceIDsOf(td ptrace.Traces) map[byte]int {
	out := map[byte]int{}
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				id := sp.TraceID()
				out[id[15]]++
			}
		}
	}
	return out
}

// releaseReasons counts the consistency.trace.release_reason values in td.
func releaseReasons(td ptrace.Traces) map[string]int {
	out := map[string]int{}
	for _, rs := range td.ResourceSpans().All() {
		for _, ss := range rs.ScopeSpans().All() {
			for _, sp := range ss.Spans().All() {
				if v, ok := sp.Attributes().Get("consistency.trace.release_reason"); ok {
					out[v.Str()]++
				}
			}
		}
	}
	return out
}

// spanCount counts the spans of every batch in tds.
func spanCount(tds []ptrace.Traces) int {
	n := 0
	for _, td := range tds {
		n += td.SpanCount()
	}
	return n
}

// flakyConsumer returns errs, in order, from its first calls, then accepts into sink.
type flakyConsumer struct {
	mu    sync.Mutex
	errs  []error
	calls int
	sink  consumertest.TracesSink
}

func (*flakyConsumer) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (f *flakyConsumer) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return err
	}
	return f.sink.ConsumeTraces(ctx, td)
}

func (f *flakyConsumer) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}
