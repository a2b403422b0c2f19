package e2e

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

const attrSamplingRule = "consistency.trace.sampling.rule"

// handTrace is a three-span trace of service svc ending at end, lasting d, with id n
// (in a range tracegen never produces: the first byte 0xee).
func handTrace(n uint64, svc string, end time.Time, d time.Duration, edit func(root, child ptrace.Span)) (ptrace.Traces, pcommon.TraceID) {
	var id pcommon.TraceID
	id[0] = 0xee
	binary.BigEndian.PutUint64(id[8:], n*0x9e3779b97f4a7c15)
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", svc)
	ss := rs.ScopeSpans().AppendEmpty().Spans()
	mk := func(sid byte, parent byte, start, stop time.Time) ptrace.Span {
		sp := ss.AppendEmpty()
		sp.SetTraceID(id)
		sp.SetSpanID(pcommon.SpanID{0xee, 7: sid})
		if parent != 0 {
			sp.SetParentSpanID(pcommon.SpanID{0xee, 7: parent})
		}
		sp.SetName(svc + "-op")
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(stop))
		return sp
	}
	root := mk(1, 0, end.Add(-d), end)
	child := mk(2, 1, end.Add(-d/2), end.Add(-time.Millisecond))
	mk(3, 2, end.Add(-d/3), end.Add(-2*time.Millisecond))
	if edit != nil {
		edit(root, child)
	}
	return td, id
}

// TestSamplingExample runs examples/collector-sampling.yaml as a user starts it: error
// traces, inconsistent (broken) traces and slow traces are all kept, health checks all
// dropped, and the 10 % default keeps a share of the healthy traces within binomial bounds
// over more than 5,000 traces, each with ot=th in its tracestate and the deciding rule on its
// root.
func TestSamplingExample(t *testing.T) {
	requireProcessor(t)
	config := filepath.Join(RepoRoot(), "examples", "collector-sampling.yaml")
	env, addrs := exampleEnv(t, config)
	c := StartCollectorFromFile(t, config, env, addrs)

	g, err := tracegen.New(tracegen.Config{
		Seed:             26,
		Traces:           6000,
		MinSpans:         3,
		MaxSpans:         6,
		Attributes:       2,
		EventProbability: -1,
		ErrorProbability: -1,
		Broken:           []tracegen.BrokenKind{tracegen.SkewedChild, tracegen.MissingParent},
		BrokenEvery:      20,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	res, err := tracegen.SendPData(ctx, g, tracegen.SendOptions{Endpoint: c.OTLPEndpoint, Concurrency: 2})
	cancel()
	if err != nil || res.Stopped {
		t.Fatalf("sent %d traces, stopped early %v: %v", res.Traces, res.Stopped, err)
	}
	// Hand-made traces: errors, health checks, slow ones.
	cl := c.Dial()
	end := time.Now().Add(-time.Second)
	want := map[pcommon.TraceID]string{} // trace -> rule that must keep it
	health := map[pcommon.TraceID]bool{}
	for i := uint64(1); i <= 300; i++ {
		var td ptrace.Traces
		var id pcommon.TraceID
		switch i % 3 {
		case 0:
			td, id = handTrace(i, "checkout", end, 50*time.Millisecond, func(_, child ptrace.Span) {
				child.Status().SetCode(ptrace.StatusCodeError)
			})
			want[id] = "errors"
		case 1:
			td, id = handTrace(i, "frontend", end, 2*time.Millisecond, func(root, _ ptrace.Span) {
				root.Attributes().PutStr("url.path", "/healthz")
				root.Status().SetCode(ptrace.StatusCodeError) // dropped first: rules go in order
			})
			health[id] = true
		default:
			td, id = handTrace(i, "reports", end, 3*time.Second, nil)
			want[id] = "slow"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.Export(ctx, td); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	broken := map[pcommon.TraceID]bool{}
	records := map[pcommon.TraceID]int{}
	for _, tt := range res.Truth.Traces {
		records[tt.TraceID] = tt.Records
		if tt.Broken != "" {
			broken[tt.TraceID] = true
		}
	}
	// A missing_parent trace leaves after idle_timeout (10s).
	c.WaitFor(60*time.Second, "every broken, error and slow trace kept", func(lines []Line) bool {
		byTrace := ByTrace(Spans(lines))
		for id := range broken {
			if len(byTrace[id]) == 0 {
				return false
			}
		}
		for id := range want {
			if len(byTrace[id]) == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(1500 * time.Millisecond)
	byTrace := ByTrace(Spans(c.StopAndRead()))

	el := newErrorLimiter(t)
	healthyKept := 0
	for id, recs := range byTrace {
		head, _ := TraceHead(recs)
		rule, _ := AttrString(head.Span, attrSamplingRule)
		if health[id] {
			el.Errorf("health check kept", "health-check trace %s was kept (rule %q)", id, rule)
			continue
		}
		if r, ok := want[id]; ok {
			if rule != r || len(recs) != 3 {
				el.Errorf("hand trace", "trace %s: rule %q, %d spans; want %q, 3", id, rule, len(recs), r)
			}
			continue
		}
		n, sent := records[id]
		if !sent {
			el.Errorf("unexpected trace", "trace %s in the output was never sent", id)
			continue
		}
		if len(recs) != n {
			el.Errorf("span count", "trace %s: %d spans out, %d sent", id, len(recs), n)
		}
		if broken[id] {
			status, _ := FindTraceAttr(recs, names.AttrTraceStatus)
			if status != names.StatusInconsistent || rule != "findings" {
				el.Errorf("broken", "trace %s: status %q rule %q", id, status, rule)
			}
			continue
		}
		healthyKept++
		if rule != "default" {
			el.Errorf("default rule", "healthy trace %s: rule %q", id, rule)
		}
		for _, r := range recs {
			if ts := r.Span.TraceState().AsRaw(); !strings.HasPrefix(ts, "ot=th:e6666666666666") {
				el.Errorf("tracestate", "trace %s span %s: tracestate %q", id, r.Span.SpanID(), ts)
			}
		}
	}
	el.Summary()
	healthy := len(records) - len(broken)
	mean := 0.1 * float64(healthy)
	sd := math.Sqrt(float64(healthy) * 0.1 * 0.9)
	if math.Abs(float64(healthyKept)-mean) > 5*sd {
		t.Errorf("kept %d of %d healthy traces, want 10 %% ± 5σ (%.0f ± %.0f)", healthyKept, healthy, mean, 5*sd)
	}
	t.Logf("kept all %d broken and %d hand-made traces, no health check, %d of %d healthy (%.1f %%)",
		len(broken), len(want), healthyKept, healthy, 100*float64(healthyKept)/float64(healthy))
}

// TestSamplingHashCompatibleKeepsWhatTailSamplingKeeps: one collector, one receiver, two
// pipelines: traceconsistency with sampling in hash_compatible mode, and contrib
// tail_sampling's probabilistic policy with the same salt and percentage. Both keep exactly
// the same trace IDs.
func TestSamplingHashCompatibleKeepsWhatTailSamplingKeeps(t *testing.T) {
	requireProcessor(t)
	dir := t.TempDir()
	ours, theirs := filepath.Join(dir, "ours.jsonl"), filepath.Join(dir, "theirs.jsonl")
	addrs := ConfigOptions{OTLPEndpoint: FreeAddr(t), HealthEndpoint: FreeAddr(t), MetricsPort: FreePort(t), OutputPath: ours}
	cfg := `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${env:TC_OTLP_GRPC_ENDPOINT}
processors:
  traceconsistency:
    quiet_period: 200ms
    sampling:
      mode: hash_compatible
      hash_salt: e2e-salt
      default:
        action: probabilistic
        probabilistic: {percentage: 30}
  tail_sampling:
    decision_wait: 2s
    policies:
      - name: thirty
        type: probabilistic
        probabilistic: {sampling_percentage: 30, hash_salt: e2e-salt}
exporters:
  file/ours:
    path: ${env:TC_TRACES_FILE}
    format: json
  file/theirs:
    path: ${env:TC_THEIRS_FILE}
    format: json
extensions:
  health_check:
    endpoint: ${env:TC_HEALTH_ENDPOINT}
service:
  extensions: [health_check]
  pipelines:
    traces/ours:
      receivers: [otlp]
      processors: [traceconsistency]
      exporters: [file/ours]
    traces/theirs:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [file/theirs]
  telemetry:
    metrics:
      level: none
`
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"TC_OTLP_GRPC_ENDPOINT=" + addrs.OTLPEndpoint, "TC_HEALTH_ENDPOINT=" + addrs.HealthEndpoint,
		"TC_TRACES_FILE=" + ours, "TC_THEIRS_FILE=" + theirs}
	c := StartCollectorFromFile(t, path, env, addrs)
	g, err := tracegen.New(tracegen.Config{Seed: 27, Traces: 2000, MinSpans: 3, MaxSpans: 5, Attributes: 1, EventProbability: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	res, err := tracegen.SendPData(ctx, g, tracegen.SendOptions{Endpoint: c.OTLPEndpoint, Concurrency: 2})
	cancel()
	if err != nil || res.Stopped {
		t.Fatalf("sent %d traces, stopped early %v: %v", res.Traces, res.Stopped, err)
	}
	// Every trace is complete: ours leave after quiet_period, theirs after decision_wait.
	time.Sleep(6 * time.Second)
	oursIDs := ByTrace(Spans(c.StopAndRead()))
	r := NewOutputReader(theirs)
	if err := r.Poll(); err != nil {
		t.Fatal(err)
	}
	theirsIDs := ByTrace(Spans(r.Lines()))
	if len(oursIDs) < 400 || len(oursIDs) > 800 {
		t.Errorf("kept %d of 2000 traces, want about 30 %%", len(oursIDs))
	}
	for id := range oursIDs {
		if _, ok := theirsIDs[id]; !ok {
			t.Errorf("trace %s kept by traceconsistency, not by tail_sampling", id)
		}
	}
	for id := range theirsIDs {
		if _, ok := oursIDs[id]; !ok {
			t.Errorf("trace %s kept by tail_sampling, not by traceconsistency", id)
		}
	}
	t.Logf("both kept the same %d of %d traces", len(oursIDs), len(res.Truth.Traces))
}

// TestSamplingKill9AndRestart: with sampling and a write-ahead log, a gateway killed with
// SIGKILL while it holds incomplete traces replays them at restart and decides them again
// when they complete: the kept one arrives whole, the dropped one never appears; traces
// decided before the kill (one kept and delivered, one dropped) are not replayed.
func TestSamplingKill9AndRestart(t *testing.T) {
	requireProcessor(t)
	walDir := filepath.Join(t.TempDir(), "wal")
	addrs := ConfigOptions{OTLPEndpoint: FreeAddr(t), HealthEndpoint: FreeAddr(t), MetricsPort: FreePort(t)}
	start := func(out string) *Collector {
		opts := addrs
		opts.OutputPath = out
		opts.ProcessorsYAML = TraceConsistencyYAML("quiet_period: 300ms", "release_tick: 50ms", "idle_timeout: 60s", "max_age: 120s", NoRestartWait,
			fmt.Sprintf("wal: {directory: %s, sync: batch}", walDir),
			"sampling: {rules: [{name: noise, when: {service: {in: [noise]}}, action: drop}]}")
		return StartCollectorWith(t, opts)
	}
	end := time.Now().Add(-time.Second)
	split := func(td ptrace.Traces) (children, root ptrace.Traces) {
		children, root = ptrace.NewTraces(), ptrace.NewTraces()
		td.CopyTo(children)
		td.CopyTo(root)
		children.ResourceSpans().At(0).ScopeSpans().At(0).Spans().RemoveIf(func(s ptrace.Span) bool { return s.ParentSpanID().IsEmpty() })
		root.ResourceSpans().At(0).ScopeSpans().At(0).Spans().RemoveIf(func(s ptrace.Span) bool { return !s.ParentSpanID().IsEmpty() })
		return children, root
	}
	keptWhole, keptWholeID := handTrace(1, "shop", end, 10*time.Millisecond, nil)
	droppedWhole, droppedWholeID := handTrace(2, "noise", end, 10*time.Millisecond, nil)
	keptCut, keptCutID := handTrace(3, "shop", end, 10*time.Millisecond, nil)
	droppedCut, droppedCutID := handTrace(4, "noise", end, 10*time.Millisecond, nil)
	keptChildren, keptRoot := split(keptCut)
	droppedChildren, droppedRoot := split(droppedCut)

	dir := t.TempDir()
	gw := start(filepath.Join(dir, "before.jsonl"))
	cl, err := tracegen.Dial(gw.OTLPEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	export := func(cl *tracegen.Client, td ptrace.Traces) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cl.Export(ctx, td); err != nil {
			t.Fatal(err)
		}
	}
	for _, td := range []ptrace.Traces{keptWhole, droppedWhole, keptChildren, droppedChildren} {
		export(cl, td)
	}
	// The whole traces are decided and the kept one delivered; then the kill.
	gw.WaitFor(20*time.Second, "the kept whole trace delivered", func(lines []Line) bool {
		return len(ByTrace(Spans(lines))[keptWholeID]) == 3
	})
	gw.WaitForMetrics(20*time.Second, "the dropped whole trace decided", func(m Metrics) bool {
		return m.Sum(names.MetricPrefix+"sampling_traces", "rule", "noise", "decision", "dropped") == 1
	})
	kill9(gw)
	cl.Close()

	gw = start(filepath.Join(dir, "after.jsonl"))
	m := gw.WaitForMetrics(20*time.Second, "the replay counted", func(m Metrics) bool { return m.Has(metricWALSpansReplayed) })
	if got := m.Sum(metricWALSpansReplayed); got != 4 {
		t.Errorf("replayed %v spans, want the 4 children of the cut traces only", got)
	}
	cl = gw.Dial()
	export(cl, keptRoot)
	export(cl, droppedRoot)
	gw.WaitFor(20*time.Second, "the cut kept trace delivered", func(lines []Line) bool {
		return len(ByTrace(Spans(lines))[keptCutID]) == 3
	})
	gw.WaitForMetrics(20*time.Second, "the cut dropped trace decided", func(m Metrics) bool {
		return m.Sum(names.MetricPrefix+"sampling_traces", "rule", "noise", "decision", "dropped") == 1
	})
	byTrace := ByTrace(Spans(gw.StopAndRead()))
	for _, id := range []pcommon.TraceID{droppedWholeID, droppedCutID, keptWholeID} {
		if n := len(byTrace[id]); n != 0 {
			t.Errorf("trace %s: %d spans after the restart, want none", id, n)
		}
	}
	if n := len(byTrace[keptCutID]); n != 3 {
		t.Errorf("kept trace cut by the crash: %d spans, want 3", n)
	}
}
