package e2e

// Hand-off through the balancing tier, end to end: one balancer
// (examples/collector-loadbalancing.yaml) and two gateways
// (examples/collector-gateway.yaml, traceconsistency as a connector with a
// hand-off pipeline pointed at the balancer), all the built binary on
// loopback. The balancer's backends change by restarting it with other
// TC_LB_BACKEND_* values; naming gateway A twice is a ring of A alone.

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
)

const handoffMetric = "otelcol_processor_traceconsistency_handoff_"

// balancer is the load-balancing tier: a fixed address, restarted with other backends.
type balancer struct {
	t    *testing.T
	addr string
	c    *Collector
}

// newBalancer reserves the balancer's address; start it once its backends run.
func newBalancer(t *testing.T) *balancer {
	return &balancer{t: t, addr: FreeAddr(t)}
}

// start (re)starts the balancer on its address with one or two backends.
func (b *balancer) start(backends ...string) {
	b.t.Helper()
	if len(backends) == 1 {
		backends = append(backends, backends[0])
	}
	addrs := ConfigOptions{
		OTLPEndpoint:   b.addr,
		HealthEndpoint: FreeAddr(b.t),
		MetricsPort:    FreePort(b.t),
		OutputPath:     filepath.Join(b.t.TempDir(), "none.jsonl"),
	}
	env := []string{
		"TC_LB_OTLP_ENDPOINT=" + addrs.OTLPEndpoint,
		"TC_LB_HEALTH_ENDPOINT=" + addrs.HealthEndpoint,
		"TC_LB_METRICS_PORT=" + strconv.Itoa(addrs.MetricsPort),
		"TC_LB_BACKEND_1=" + backends[0],
		"TC_LB_BACKEND_2=" + backends[1],
	}
	b.c = StartCollectorFromFile(b.t, filepath.Join(RepoRoot(), "examples", "collector-loadbalancing.yaml"), env, addrs)
}

func (b *balancer) restart(backends ...string) {
	b.t.Helper()
	if err := b.c.Stop(); err != nil {
		b.t.Fatalf("stopping the balancer: %v", err)
	}
	b.start(backends...)
}

// handoffKey is the gateways' shared hand-off key (handoff.key).
const handoffKey = "the e2e gateway tier's secret"

// startGateway starts examples/collector-gateway.yaml handing off to lb.
func startHandoffGateway(t *testing.T, lb *balancer, onIdle bool, idleTimeout time.Duration) *Collector {
	t.Helper()
	dir := t.TempDir()
	addrs := ConfigOptions{
		OTLPEndpoint:   FreeAddr(t),
		HealthEndpoint: FreeAddr(t),
		MetricsPort:    FreePort(t),
		OutputPath:     filepath.Join(dir, "traces.jsonl"),
	}
	env := []string{
		"TC_GATEWAY_OTLP_ENDPOINT=" + addrs.OTLPEndpoint,
		"TC_GATEWAY_HEALTH_ENDPOINT=" + addrs.HealthEndpoint,
		"TC_GATEWAY_METRICS_PORT=" + strconv.Itoa(addrs.MetricsPort),
		"TC_GATEWAY_TRACES_FILE=" + addrs.OutputPath,
		"TC_GATEWAY_WAL_DIR=" + filepath.Join(dir, "wal"),
		"TC_GATEWAY_IDLE_TIMEOUT=" + idleTimeout.String(),
		"TC_GATEWAY_HANDOFF_ON_IDLE=" + strconv.FormatBool(onIdle),
		"TC_HANDOFF_KEY=" + handoffKey,
		"TC_HANDOFF_ENDPOINT=" + lb.addr,
	}
	return StartCollectorFromFile(t, filepath.Join(RepoRoot(), "examples", "collector-gateway.yaml"), env, addrs)
}

// handoffTrace is one test trace: root r → middle m → leaf l (span IDs 1, 2, 3
// under trace ID i), timed in the past.
func handoffTraceID(i int) pcommon.TraceID {
	return pcommon.TraceID{0x70, 0xff, 14: byte(i >> 8), 15: byte(i)}
}

// batchOf builds one request holding, for every trace in ids, the spans
// named by which (1 root, 2 middle under the root, 3 leaf under the middle).
func batchOf(ids []int, which ...int) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "shop")
	rs.Resource().Attributes().PutStr("host.name", "host-shop")
	ss := rs.ScopeSpans().AppendEmpty().Spans()
	base := time.Now().Add(-10 * time.Second)
	for _, i := range ids {
		for _, w := range which {
			sp := ss.AppendEmpty()
			sp.SetTraceID(handoffTraceID(i))
			sp.SetSpanID(pcommon.SpanID{0x33, 7: byte(w)})
			if w > 1 {
				sp.SetParentSpanID(pcommon.SpanID{0x33, 7: byte(w - 1)})
			}
			sp.SetName(fmt.Sprintf("op-%d", w))
			sp.SetKind(ptrace.SpanKindInternal)
			start := base.Add(time.Duration(w) * 10 * time.Millisecond)
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(time.Duration(400-100*w) * time.Millisecond)))
		}
	}
	return td
}

func seq(n int) []int {
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i + 1
	}
	return ids
}

func export(t *testing.T, c *Collector, td ptrace.Traces) {
	t.Helper()
	cl := c.Dial()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.Export(ctx, td); err != nil {
		t.Fatalf("export to %s: %v", c.OTLPEndpoint, err)
	}
}

// releasesOf lists, per test trace, the output lines it is on at c and the
// span count and release reason of each.
type traceRelease struct {
	lines  []int
	spans  int
	reason string
	hops   int // spans still carrying the hand-off marker (must be 0)
}

func releasesOf(c *Collector, lines []Line, n int) map[int]*traceRelease {
	out := map[int]*traceRelease{}
	byID := map[pcommon.TraceID]int{}
	for i := 1; i <= n; i++ {
		byID[handoffTraceID(i)] = i
	}
	for tid, recs := range ByTrace(Spans(lines)) {
		i, ok := byID[tid]
		if !ok {
			continue
		}
		r := &traceRelease{lines: lineSet(recs), spans: len(recs)}
		r.reason, _ = FindTraceAttr(recs, names.AttrReleaseReason)
		for _, rec := range recs {
			if _, ok := rec.Span.Attributes().Get("consistency.span.handoff"); ok {
				r.hops++
			}
		}
		out[i] = r
	}
	return out
}

// TestHandoffRollingUpdate: the first spans (children) of 60 traces reach
// both gateways through the balancer; the balancer is restarted knowing only
// gateway A; gateway B gets SIGTERM and hands its traces off through the
// balancer to A; the roots follow. Every trace leaves whole, in one release,
// at A, and B releases none of them.
func TestHandoffRollingUpdate(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/load_balancing", "connectors/traceconsistency")
	const n = 60

	lb := newBalancer(t)
	gwA := startHandoffGateway(t, lb, true, 30*time.Second)
	gwB := startHandoffGateway(t, lb, true, 30*time.Second)
	lb.start(gwA.OTLPEndpoint, gwB.OTLPEndpoint)

	export(t, lb.c, batchOf(seq(n), 2, 3))
	mA := gwA.WaitForMetrics(20*time.Second, "children buffered at A", func(m Metrics) bool { return m.Sum("otelcol_processor_traceconsistency_spans_received") > 0 })
	mB := gwB.WaitForMetrics(20*time.Second, "children buffered at B", func(m Metrics) bool { return m.Sum("otelcol_processor_traceconsistency_spans_received") > 0 })
	atA := mA.Sum("otelcol_processor_traceconsistency_spans_received")
	atB := mB.Sum("otelcol_processor_traceconsistency_spans_received")
	if atA+atB != 2*n {
		t.Fatalf("gateways received %v + %v spans, want %d", atA, atB, 2*n)
	}

	lb.restart(gwA.OTLPEndpoint)
	if err := gwB.Stop(); err != nil {
		t.Fatalf("SIGTERM to gateway B: %v", err)
	}
	gwA.WaitForMetrics(20*time.Second, "B's hand-off received at A", func(m Metrics) bool {
		return m.Sum(handoffMetric+"spans_received") >= atB
	})
	export(t, lb.c, batchOf(seq(n), 1))

	linesA := gwA.WaitFor(30*time.Second, "all traces at A", func(l []Line) bool { return SpanCount(l) >= 3*n })
	if err := gwB.Output().Poll(); err != nil {
		t.Fatal(err)
	}
	if rel := releasesOf(gwB, gwB.Output().Lines(), n); len(rel) != 0 {
		t.Errorf("gateway B released %d of the traces; want none", len(rel))
	}
	rel := releasesOf(gwA, linesA, n)
	for i := 1; i <= n; i++ {
		r := rel[i]
		switch {
		case r == nil:
			t.Errorf("trace %d not released at A", i)
		case len(r.lines) != 1 || r.spans != 3 || r.reason != "complete" || r.hops != 0:
			t.Errorf("trace %d at A: lines %v, %d spans, reason %q, %d spans still marked; want one line, 3 spans, complete, 0",
				i, r.lines, r.spans, r.reason, r.hops)
		}
	}
	m := gwA.WaitForMetrics(10*time.Second, "merged", func(m Metrics) bool { return true })
	t.Logf("A received %v children, B %v; B handed off %v spans on shutdown; A merged %v",
		atA, atB, atB, m.Sum(handoffMetric+"spans_merged"))
	if got := m.Sum(handoffMetric + "spans_received"); got != atB {
		t.Errorf("A counted %v handed-off spans received, want %v", got, atB)
	}
}

// scaleUp runs the scale-up scenario: the balancer knows only A while the
// middle spans of n traces arrive, then A and B, and roots and leaves follow.
// The traces that moved to B are split unless A hands its fragment off at
// idle_timeout. Returns per trace where it was released (and how often).
func scaleUp(t *testing.T, onIdle bool, n int) (whole, split int, atB int) {
	lb := newBalancer(t)
	gwA := startHandoffGateway(t, lb, onIdle, 3*time.Second)
	gwB := startHandoffGateway(t, lb, onIdle, 3*time.Second)
	lb.start(gwA.OTLPEndpoint)
	export(t, lb.c, batchOf(seq(n), 2))
	gwA.WaitForMetrics(20*time.Second, "middles at A", func(m Metrics) bool {
		return m.Sum("otelcol_processor_traceconsistency_spans_received") >= float64(n)
	})
	lb.restart(gwA.OTLPEndpoint, gwB.OTLPEndpoint)
	// Roots and leaves: a moved trace's fragment at B has a root and an
	// orphan leaf, so it waits at B while A's fragment reaches idle_timeout.
	export(t, lb.c, batchOf(seq(n), 1, 3))
	waitSpansAcross(t, 60*time.Second, 3*n, gwA, gwB)
	// Stop A (its hand-offs, if any, still go to the balancer), then B.
	for _, c := range []*Collector{gwA, gwB} {
		if err := c.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if err := c.Output().Poll(); err != nil {
			t.Fatal(err)
		}
	}
	relA := releasesOf(gwA, gwA.Output().Lines(), n)
	relB := releasesOf(gwB, gwB.Output().Lines(), n)
	for i := 1; i <= n; i++ {
		a, b := relA[i], relB[i]
		if b != nil {
			atB++
		}
		switch {
		case a != nil && b != nil:
			split++
		case a != nil && len(a.lines) == 1 && a.spans == 3 && a.hops == 0:
			whole++
		case b != nil && len(b.lines) == 1 && b.spans == 3 && b.hops == 0:
			whole++
		default:
			t.Logf("trace %d: at A %+v, at B %+v", i, a, b)
		}
	}
	return whole, split, atB
}

// TestHandoffScaleUp: the balancer moves from {A} to {A, B} mid-trace. With
// handoff.on_idle every trace leaves whole at one gateway (the ones that
// moved, at B); without it the traces that moved are split, which is
// measured and reported.
func TestHandoffScaleUp(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/load_balancing", "connectors/traceconsistency")
	const n = 40
	t.Run("on_idle", func(t *testing.T) {
		whole, split, atB := scaleUp(t, true, n)
		t.Logf("with handoff.on_idle: %d of %d traces whole at one gateway, %d split, %d moved to B", whole, n, split, atB)
		if whole != n {
			t.Errorf("%d of %d traces whole, %d split; want all whole", whole, n, split)
		}
		if atB == 0 {
			t.Errorf("no trace moved to B: the scenario did not test anything")
		}
	})
	t.Run("without_on_idle", func(t *testing.T) {
		whole, split, atB := scaleUp(t, false, n)
		t.Logf("without handoff.on_idle: %d of %d traces whole, %d split between A and B (%d moved to B)", whole, n, split, atB)
		if split == 0 {
			t.Errorf("no trace split without on_idle: the scenario did not move any trace")
		}
	})
}

// TestHandoffIncompleteForGood: a trace whose root never comes is handed off
// at idle_timeout at most handoff.max_hops (1) times — back to the same
// gateway, the balancer's only backend — and then released with its findings.
func TestHandoffIncompleteForGood(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/load_balancing", "connectors/traceconsistency")
	const n = 5
	lb := newBalancer(t)
	gw := startHandoffGateway(t, lb, true, 2*time.Second)
	lb.start(gw.OTLPEndpoint)
	export(t, lb.c, batchOf(seq(n), 2, 3))
	lines := gw.WaitFor(30*time.Second, "the orphans released", func(l []Line) bool { return SpanCount(l) >= 2*n })
	m := gw.WaitForMetrics(10*time.Second, "hand-off counters", func(m Metrics) bool {
		return m.Sum(handoffMetric+"traces_incomplete") >= n
	})
	rel := releasesOf(gw, lines, n)
	for i := 1; i <= n; i++ {
		r := rel[i]
		if r == nil || len(r.lines) != 1 || r.spans != 2 || r.reason != "idle_timeout" || r.hops != 0 {
			t.Errorf("trace %d: %+v; want one release of 2 spans, idle_timeout, unmarked", i, r)
			continue
		}
	}
	for _, recs := range ByTrace(Spans(lines)) {
		f, _ := traceAttrStrings(recs, names.AttrTraceFindings)
		if len(f) == 0 || f[0] != "missing_parent" {
			t.Errorf("trace %s: findings %v, want missing_parent first", recs[0].Key.TraceID, f)
		}
	}
	if got := m.Sum(handoffMetric+"traces", "cause", "idle_timeout"); got != n {
		t.Errorf("traces handed off at idle: %v, want %d (once each)", got, n)
	}
	if got := m.Sum(handoffMetric + "spans_received"); got != 2*n {
		t.Errorf("handed-off spans received: %v, want %d", got, 2*n)
	}
	if got := m.Sum(handoffMetric + "traces_incomplete"); got != n {
		t.Errorf("traces released incomplete after a hand-off: %v, want %d", got, n)
	}
	if err := gw.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}
