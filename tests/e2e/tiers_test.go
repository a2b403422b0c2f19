package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// TestTwoTierHLCChain chains two collectors, agent → gateway, both the
// built binary with traceconsistency, on loopback. Every span leaving the
// gateway carries the agent's stamp as consistency.hlc.upstream and a
// strictly greater consistency.hlc of its own; stamps are unique; every span
// arrives exactly once and every trace whole, in one line.
func TestTwoTierHLCChain(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/otlp_grpc")

	gateway := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: TraceConsistencyYAML("quiet_period: 1s", "release_tick: 50ms", "idle_timeout: 5s", NoRestartWait),
	})
	agent := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: TraceConsistencyYAML("quiet_period: 1s", "release_tick: 50ms", "idle_timeout: 5s", NoRestartWait),
		ExtraExportersYAML: fmt.Sprintf(`otlp_grpc/gateway:
  endpoint: %s
  tls:
    insecure: true
  sending_queue:
    enabled: true
    block_on_overflow: true
  retry_on_failure:
    enabled: true
    initial_interval: 100ms
    max_interval: 1s
`, gateway.OTLPEndpoint),
		Exporters: []string{"otlp_grpc/gateway"},
	})

	g := tracegen.MustNew(tracegen.Config{Seed: 4242, Traces: 120, Services: 4, BaseTime: time.Now()})
	res := sendSDK(t, agent, g)
	truth := res.Truth
	want := truth.Records()

	gateway.WaitForSpans(want, 45*time.Second)
	// Stop the agent first (it would release anything still buffered to the
	// gateway), then the gateway, so the gateway's output is final.
	if err := agent.Stop(); err != nil {
		t.Errorf("stopping the agent: %v", err)
	}
	recs := Spans(gateway.StopAndRead())
	el := newErrorLimiter(t)
	defer el.Summary()

	wantCounts, _ := expectedCounts(g, truth)
	checkCounts(el, recs, wantCounts)

	stamps := map[string]tracegen.SpanKey{}
	upstreams := map[string]tracegen.SpanKey{}
	for _, r := range recs {
		hlc, ok := AttrString(r.Span, names.AttrHLC)
		if !ok || !stampRe.MatchString(hlc) {
			el.Errorf("bad hlc", "span %v: %s=%q (present %v), want a fixed-width stamp", r.Key, names.AttrHLC, hlc, ok)
			continue
		}
		up, ok := AttrString(r.Span, names.AttrHLCUpstream)
		if !ok || !stampRe.MatchString(up) {
			el.Errorf("bad upstream", "span %v: %s=%q (present %v), want the agent's stamp", r.Key, names.AttrHLCUpstream, up, ok)
			continue
		}
		if hlc <= up {
			el.Errorf("not greater", "span %v: %s=%s is not greater than %s=%s", r.Key, names.AttrHLC, hlc, names.AttrHLCUpstream, up)
		}
		// Both tiers stamp at or above the span's end time (the end is a
		// remote time in the HLC receive rule; these ends are in the past).
		for name, st := range map[string]string{names.AttrHLC: hlc, names.AttrHLCUpstream: up} {
			wall, err := strconv.ParseUint(strings.SplitN(st, ".", 2)[0], 10, 64)
			if err != nil || wall < uint64(r.Span.EndTimestamp()) {
				el.Errorf("below end", "span %v: %s=%s is below the span's end %d", r.Key, name, st, r.Span.EndTimestamp())
			}
		}
		if prev, dup := stamps[hlc]; dup {
			el.Errorf("duplicate stamp", "gateway stamp %s on both %v and %v", hlc, prev, r.Key)
		}
		stamps[hlc] = r.Key
		if prev, dup := upstreams[up]; dup {
			el.Errorf("duplicate upstream stamp", "agent stamp %s on both %v and %v", up, prev, r.Key)
		}
		upstreams[up] = r.Key
		// The agent's consistency.* attributes were replaced, not duplicated.
		keys := map[string]int{}
		r.Span.Attributes().Range(func(k string, _ pcommon.Value) bool {
			if strings.HasPrefix(k, names.AttrPrefix) {
				keys[k]++
			}
			return true
		})
		for k, n := range keys {
			if n != 1 {
				el.Errorf("duplicated attribute", "span %v carries %s %d times", r.Key, k, n)
			}
		}
	}

	byTrace := ByTrace(recs)
	reasons := map[string]int{}
	for _, tt := range truth.Traces {
		trecs := byTrace[tt.TraceID]
		if ls := lineSet(trecs); len(ls) != 1 {
			el.Errorf("trace split", "trace %s (%d spans) is on gateway lines %v, want one line", tt.TraceID, len(trecs), ls)
		}
		reason, _ := FindTraceAttr(trecs, names.AttrReleaseReason)
		reasons[reason]++
		if reason != "complete" {
			el.Errorf("not complete", "healthy trace %s released by the gateway as %q, want complete", tt.TraceID, reason)
		}
		heads := 0
		for _, r := range trecs {
			if _, ok := r.Span.Attributes().Get(names.AttrReleaseReason); ok {
				heads++
			}
		}
		if heads != 1 {
			el.Errorf("trace attrs", "trace %s: %s on %d spans at the gateway, want 1", tt.TraceID, names.AttrReleaseReason, heads)
		}
		if n, _ := FindTraceAttr(trecs, names.AttrSpanCount); n != strconv.Itoa(len(tt.Spans)) {
			el.Errorf("span count", "trace %s: %s=%s, want %d", tt.TraceID, names.AttrSpanCount, n, len(tt.Spans))
		}
		if st, _ := FindTraceAttr(trecs, names.AttrTraceStatus); st != "consistent" {
			f, _ := traceAttrStrings(trecs, names.AttrTraceFindings)
			el.Errorf("inconsistent", "healthy trace %s: %s=%q, findings %v", tt.TraceID, names.AttrTraceStatus, st, f)
		}
	}
	t.Logf("gateway: %d spans, %d distinct stamps, release reasons %s", len(recs), len(stamps), fmtCounts(reasons))
}

// TestLoadBalancingTierKeepsTracesWhole puts a load_balancing exporter tier
// (routing_key traceID, static resolver) in front of two backend collectors
// with traceconsistency. The spans of each trace come from several services
// in many export requests; each trace must end up whole at ONE backend, in
// one line there, released as complete, and every span exactly once overall.
func TestLoadBalancingTierKeepsTracesWhole(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/load_balancing")

	backendProcs := TraceConsistencyYAML("quiet_period: 1s", "release_tick: 50ms", "idle_timeout: 5s", NoRestartWait)
	backends := []*Collector{
		StartCollectorWith(t, ConfigOptions{ProcessorsYAML: backendProcs}),
		StartCollectorWith(t, ConfigOptions{ProcessorsYAML: backendProcs}),
	}
	// Keys as in examples/collector-loadbalancing.yaml (loadbalancingexporter
	// v0.161.0: routing_key, protocol.otlp = otlp exporter settings,
	// resolver.static.hostnames).
	lb := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: "",
		Pipeline:       []string{},
		ExtraExportersYAML: fmt.Sprintf(`load_balancing:
  routing_key: traceID
  protocol:
    otlp:
      timeout: 5s
      tls:
        insecure: true
  resolver:
    static:
      hostnames:
        - %s
        - %s
`, backends[0].OTLPEndpoint, backends[1].OTLPEndpoint),
		Exporters: []string{"load_balancing"},
	})

	g := tracegen.MustNew(tracegen.Config{Seed: 777, Traces: 200, Services: 6, MinSpans: 5, MaxSpans: 30, BaseTime: time.Now()})
	// Rate-limited so the workload spreads over about a second of SDK
	// batches: each trace reaches the balancer in one request per service
	// it touches, mixed with spans of other traces.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := tracegen.SendSDK(ctx, g, tracegen.SendOptions{Endpoint: lb.OTLPEndpoint, Concurrency: 2, SpansPerSecond: 4000})
	if err != nil || res.Stopped {
		t.Fatalf("SendSDK: %v (stopped %v)", err, res.Stopped)
	}
	truth := res.Truth
	want := truth.Records()
	if res.Spans != want || res.Traces != 200 {
		t.Fatalf("acknowledged %d span records of %d traces, the ground truth has %d of 200", res.Spans, res.Traces, want)
	}
	multi := 0
	for _, tt := range truth.Traces {
		if len(tt.Services) > 1 {
			multi++
		}
	}
	t.Logf("sent %d traces (%d from several services), %d span records in %d export requests in %v",
		res.Traces, multi, res.Spans, res.Requests, res.Elapsed.Round(time.Millisecond))

	waitSpansAcross(t, 45*time.Second, want, backends...)
	if err := lb.Stop(); err != nil {
		t.Errorf("stopping the load balancer: %v", err)
	}
	var all []SpanRecord
	perBackend := make([][]SpanRecord, len(backends))
	for i, b := range backends {
		perBackend[i] = Spans(b.StopAndRead())
		all = append(all, perBackend[i]...)
	}
	el := newErrorLimiter(t)
	defer el.Summary()

	wantCounts, _ := expectedCounts(g, truth)
	checkCounts(el, all, wantCounts)

	tracesAt := make([]int, len(backends))
	reasons := map[string]int{}
	for _, tt := range truth.Traces {
		var at []int
		var trecs []SpanRecord
		for i := range backends {
			if recs := ByTrace(perBackend[i])[tt.TraceID]; len(recs) > 0 {
				at = append(at, i)
				trecs = recs
			}
		}
		if len(at) != 1 {
			el.Errorf("trace on several backends", "trace %s reached backends %v, want exactly one", tt.TraceID, at)
			continue
		}
		tracesAt[at[0]]++
		if len(trecs) != len(tt.Spans) {
			el.Errorf("trace incomplete at its backend", "trace %s: %d of %d spans at backend %d", tt.TraceID, len(trecs), len(tt.Spans), at[0])
		}
		if ls := lineSet(trecs); len(ls) != 1 {
			el.Errorf("trace split", "trace %s (%d spans) is on lines %v of backend %d, want one line", tt.TraceID, len(trecs), ls, at[0])
		}
		reason, _ := FindTraceAttr(trecs, names.AttrReleaseReason)
		reasons[reason]++
		if reason != "complete" {
			el.Errorf("not complete", "healthy trace %s released as %q at backend %d, want complete", tt.TraceID, reason, at[0])
		}
		if n, _ := FindTraceAttr(trecs, names.AttrSpanCount); n != strconv.Itoa(len(tt.Spans)) {
			el.Errorf("span count", "trace %s: %s=%s, want %d", tt.TraceID, names.AttrSpanCount, n, len(tt.Spans))
		}
	}
	t.Logf("traces per backend: %v; release reasons: %s", tracesAt, fmtCounts(reasons))
	for i, n := range tracesAt {
		if n == 0 {
			t.Errorf("backend %d received no trace (per backend: %v); the load balancer did not spread traces", i, tracesAt)
		}
	}
}

// TestTwoTierClientRetryAfterAgentReleaseIsDropped: an application retries
// an export whose first attempt did reach the agent; the retry arrives after
// the agent released (and passed on) the trace. The agent remembers what it
// released, recognises the byte-for-byte re-send and drops it, counted as a
// duplicate: the gateway, which still holds the trace, never sees a second
// copy, and the trace stays consistent. (When the agent cannot recognise it
// any more and forwards it late, the gateway drops it as an exact duplicate
// instead: the engine's unit tests cover that path.)
func TestTwoTierClientRetryAfterAgentReleaseIsDropped(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/otlp_grpc")

	gateway := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: TraceConsistencyYAML("quiet_period: 2s", "release_tick: 50ms", "idle_timeout: 5s", NoRestartWait),
	})
	agent := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML:     TraceConsistencyYAML("quiet_period: 200ms", "release_tick: 50ms", "idle_timeout: 1s", NoRestartWait),
		ExtraExportersYAML: fmt.Sprintf("otlp_grpc/gateway:\n  endpoint: %s\n  tls:\n    insecure: true\n", gateway.OTLPEndpoint),
		Exporters:          []string{"otlp_grpc/gateway"},
	})
	g := tracegen.MustNew(tracegen.Config{Seed: 1, Traces: 1, Services: 3, MinSpans: 8, MaxSpans: 8, BaseTime: time.Now()})
	tr := g.Plan(0)
	client := agent.Dial()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.SendTrace(ctx, g, tr); err != nil {
		t.Fatalf("send: %v", err)
	}
	// The agent released the trace and the gateway has all of it.
	agent.WaitForMetrics(5*time.Second, "the agent released the trace", func(m Metrics) bool {
		return m.Sum(names.MetricTracesReleased) >= 1
	})
	gateway.WaitForMetrics(5*time.Second, "the gateway received the trace", func(m Metrics) bool {
		return m.Sum(names.MetricSpansReceived) >= float64(len(tr.Emit))
	})
	// The retry: byte for byte the same span, as the application resends it.
	retry := tr.Emit[0]
	if err := client.Export(ctx, g.Render([]*tracegen.Span{retry})); err != nil {
		t.Fatalf("send retry: %v", err)
	}
	agent.WaitForMetrics(5*time.Second, "the agent dropped the re-send as a duplicate", func(m Metrics) bool {
		return m.Sum(names.MetricDuplicates) >= 1
	})
	if err := gateway.Output().Poll(); err != nil {
		t.Fatalf("reading the gateway output: %v", err)
	}
	if SpanCount(gateway.Output().Lines()) != 0 {
		t.Fatalf("the gateway released the trace before the retry arrived; the test needs a longer gateway quiet_period")
	}
	gateway.WaitForSpans(len(tr.Emit), 10*time.Second)
	if err := agent.Stop(); err != nil {
		t.Errorf("stopping the agent: %v", err)
	}
	m, err := gateway.ScrapeMetrics()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	recs := Spans(gateway.StopAndRead())

	copies := 0
	for _, r := range recs {
		if r.Key == retry.Key() {
			copies++
		}
		if f, ok := attrStrings(r.Span, names.AttrSpanFindings); ok {
			t.Errorf("span %v has findings %v at the gateway, want none (the trace is healthy; the retry is a duplicate)", r.Key.SpanID, f)
		}
	}
	if copies != 1 {
		t.Errorf("the retried span %v arrived %d times at the gateway output, want once", retry.SpanID, copies)
	}
	if st, _ := FindTraceAttr(recs, names.AttrTraceStatus); st != "consistent" {
		f, _ := traceAttrStrings(recs, names.AttrTraceFindings)
		t.Errorf("%s=%q (findings %v), want consistent", names.AttrTraceStatus, st, f)
	}
	if got := m.Sum(names.MetricSpansReceived); got != float64(len(tr.Emit)) {
		t.Errorf("gateway %s = %v, want %d: the re-send must not reach it", names.MetricSpansReceived, got, len(tr.Emit))
	}
}
