package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// errorLimiter reports at most max errors of one kind, then a count.
type errorLimiter struct {
	t     *testing.T
	max   int
	count map[string]int
}

func newErrorLimiter(t *testing.T) *errorLimiter {
	return &errorLimiter{t: t, max: 10, count: map[string]int{}}
}

func (e *errorLimiter) Errorf(kind, format string, args ...any) {
	e.t.Helper()
	e.count[kind]++
	if e.count[kind] <= e.max {
		e.t.Errorf(kind+": "+format, args...)
	}
}

func (e *errorLimiter) Summary() {
	e.t.Helper()
	for k, n := range e.count {
		if n > e.max {
			e.t.Errorf("%s: %d errors in all (first %d shown)", k, n, e.max)
		}
	}
}

func TestEveryspanArrivesExactlyOnceAndTracesStayTogether(t *testing.T) {
	c := StartCollector(t, TraceConsistencyYAML("quiet_period: 1s", "release_tick: 100ms", "idle_timeout: 10s"))

	g := tracegen.MustNew(tracegen.Config{Seed: 20261126, Traces: 200, Services: 5})
	sendStart := time.Now()
	res := c.SendSDK(g, 60*time.Second)
	truth := res.Truth
	want := truth.Records()
	t.Logf("sent %d traces, %d spans from %d services in %v (%d export requests)",
		res.Traces, res.Spans, len(g.Services()), res.Elapsed, res.Requests)
	if res.Traces != 200 {
		t.Fatalf("sent %d traces, want 200", res.Traces)
	}
	if res.Spans != want {
		t.Fatalf("the SDK exporters acknowledged %d spans, the ground truth has %d", res.Spans, want)
	}

	c.WaitForSpans(want, 45*time.Second)
	t.Logf("all %d spans arrived %v after the send started", want, time.Since(sendStart))
	// Stopping releases anything still buffered, so the output is final and
	// any duplicate emission would show up.
	lines := c.StopAndRead()
	recs := Spans(lines)
	el := newErrorLimiter(t)
	defer el.Summary()

	// Exactly once, by (trace id, span id), against the ground truth.
	keys := truth.Keys()
	seen := map[tracegen.SpanKey]int{}
	for _, r := range recs {
		seen[r.Key]++
		if _, ok := keys[r.Key]; !ok {
			el.Errorf("unexpected span", "%v (line %d) was never sent", r.Key, r.Line)
		}
	}
	for k := range keys {
		if n := seen[k]; n != 1 {
			el.Errorf("not exactly once", "span %v arrived %d times", k, n)
		}
	}
	if len(recs) != want {
		t.Errorf("output has %d span records, sent %d", len(recs), want)
	}

	if !c.Processor {
		t.Logf("%s=1: pipeline without the processor; skipping the trace-togetherness and attribute checks", EnvWithoutProcessor)
		return
	}

	// Each trace leaves in one ConsumeTraces call = one exported line.
	byTrace := ByTrace(recs)
	reasons := map[string]int{}
	for _, tt := range truth.Traces {
		trecs := byTrace[tt.TraceID]
		var lineSet []int
		for _, r := range trecs {
			if !slices.Contains(lineSet, r.Line) {
				lineSet = append(lineSet, r.Line)
			}
		}
		if len(lineSet) != 1 {
			el.Errorf("trace split", "trace %s (%d spans) arrived in %d lines %v, want 1", tt.TraceID, len(trecs), len(lineSet), lineSet)
		}
		reason, ok := FindTraceAttr(trecs, names.AttrReleaseReason)
		reasons[reason]++
		switch {
		case !ok:
			el.Errorf("no release reason", "trace %s has no %s", tt.TraceID, names.AttrReleaseReason)
		case !slices.Contains(names.ReleaseReasons, reason):
			el.Errorf("bad release reason", "trace %s: %s=%q, want one of %v", tt.TraceID, names.AttrReleaseReason, reason, names.ReleaseReasons)
		case reason != "complete":
			el.Errorf("not complete", "healthy trace %s released as %q, want complete", tt.TraceID, reason)
		}
		if n, ok := FindTraceAttr(trecs, names.AttrSpanCount); !ok {
			el.Errorf("no span count", "trace %s has no %s", tt.TraceID, names.AttrSpanCount)
		} else if n != fmt.Sprint(len(tt.Spans)) {
			el.Errorf("wrong span count", "trace %s: %s=%s, want %d", tt.TraceID, names.AttrSpanCount, n, len(tt.Spans))
		}
		for _, r := range trecs {
			if v, ok := AttrString(r.Span, names.AttrHLC); !ok || v == "" {
				el.Errorf("no hlc", "span %v has no %s", r.Key, names.AttrHLC)
			}
			if v, ok := AttrString(r.Span, names.AttrLate); ok && v == "true" {
				el.Errorf("late", "span %v marked late in a trace sent at once", r.Key)
			}
		}
	}
	t.Logf("release reasons: %v", reasons)
}

func TestBadConfigFailsNamingKey(t *testing.T) {
	bin := RequireBinary(t)
	type tc struct {
		name, knob, key string
	}
	cases := []tc{
		{"negative quiet_period", "quiet_period: -1s", "quiet_period"},
		{"zero max_buffered_spans", "max_buffered_spans: 0", "max_buffered_spans"},
		{"unknown key", "bogus: 1", "bogus"},
		{"sampling percentage over 100", "sampling: {rules: [{name: a, action: keep}, {name: b, action: drop}, {name: c, action: probabilistic, probabilistic: {percentage: 120}}]}",
			"sampling.rules[2].probabilistic.percentage must be between 0 and 100, got 120"},
	}
	if WithoutProcessor() {
		// Exercise the harness on a component every harness binary has.
		cases = []tc{{"file exporter unknown key", "", "bogus"}}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := ConfigOptions{
				ProcessorsYAML: TraceConsistencyYAML(c.knob),
				OTLPEndpoint:   FreeAddr(t),
				HealthEndpoint: FreeAddr(t),
				MetricsPort:    FreePort(t),
				OutputPath:     t.TempDir() + "/traces.jsonl",
			}
			if WithoutProcessor() {
				opts.ProcessorsYAML, opts.Pipeline = "", []string{}
			}
			cfg := RenderConfig(opts)
			if WithoutProcessor() {
				cfg = strings.Replace(cfg, "    format: json\n", "    format: json\n    bogus: 1\n", 1)
			}
			res := RunCollector(t, bin, cfg, 20*time.Second)
			if res.TimedOut {
				t.Fatalf("collector did not exit within 20s with an invalid config (%s); stderr:\n%s", c.knob, tail(res.Stderr))
			}
			if res.ExitCode == 0 {
				t.Fatalf("collector exited 0 with an invalid config (%s); stderr:\n%s", c.knob, tail(res.Stderr))
			}
			if !strings.Contains(res.Stderr, c.key) {
				t.Fatalf("exit code %d, but stderr does not name %q:\n%s", res.ExitCode, c.key, tail(res.Stderr))
			}
			t.Logf("exit %d; stderr names %q", res.ExitCode, c.key)
		})
	}
}

func tail(s string) string {
	const max = 4000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}

func TestCompleteTraceLeavesQuicklyIncompleteWaitsForIdle(t *testing.T) {
	if WithoutProcessor() {
		t.Skipf("%s=1: this test needs the traceconsistency processor", EnvWithoutProcessor)
	}
	const (
		idle       = 3 * time.Second
		maxLatency = 1500 * time.Millisecond
	)
	c := StartCollector(t, TraceConsistencyYAML("quiet_period: 200ms", "release_tick: 50ms", "idle_timeout: 3s"))

	// Trace 0 is healthy, trace 1 misses a parent span.
	g := tracegen.MustNew(tracegen.Config{Seed: 99, Traces: 2, Broken: []tracegen.BrokenKind{tracegen.MissingParent}, BrokenEvery: 2})
	complete, incomplete := g.Plan(0), g.Plan(1)
	if complete.Broken != "" || incomplete.Broken != tracegen.MissingParent {
		t.Fatalf("unexpected plan: %q, %q", complete.Broken, incomplete.Broken)
	}
	client := c.Dial()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Measure from before the send: the processor cannot have seen a span
	// earlier, so a measured latency >= idle timeout is a real lower bound.
	t0 := time.Now()
	if err := client.SendTrace(ctx, g, incomplete); err != nil {
		t.Fatalf("send incomplete trace: %v", err)
	}
	t1 := time.Now()
	if err := client.SendTrace(ctx, g, complete); err != nil {
		t.Fatalf("send complete trace: %v", err)
	}

	arrived := func(tr *tracegen.Trace) func([]Line) bool {
		return func(lines []Line) bool {
			n := 0
			for _, r := range Spans(lines) {
				if r.Key.TraceID == tr.TraceID {
					n++
				}
			}
			return n >= len(tr.Emit)
		}
	}
	check := func(tr *tracegen.Trace, lines []Line, wantReason string) time.Duration {
		t.Helper()
		var recs []SpanRecord
		for _, r := range Spans(lines) {
			if r.Key.TraceID == tr.TraceID {
				recs = append(recs, r)
			}
		}
		seenAt := recs[0].SeenAt
		for _, r := range recs {
			if r.SeenAt.After(seenAt) {
				seenAt = r.SeenAt
			}
		}
		reason, ok := FindTraceAttr(recs, names.AttrReleaseReason)
		if !ok || reason != wantReason {
			t.Errorf("trace %s: %s=%q (present %v), want %q", tr.TraceID, names.AttrReleaseReason, reason, ok, wantReason)
		}
		return seenAt.Sub(t0)
	}

	lines := c.WaitFor(idle+maxLatency, "the complete trace", arrived(complete))
	lat := check(complete, lines, "complete")
	t.Logf("complete trace (%d spans) arrived %v after it was sent", len(complete.Emit), lat-t1.Sub(t0))
	if lat >= maxLatency {
		t.Errorf("complete trace took %v, want < %v (quiet 200ms + tick 50ms + slack)", lat, maxLatency)
	}
	if arrived(incomplete)(lines) {
		t.Errorf("the incomplete trace was already released %v after sending, before idle_timeout %v", time.Since(t0), idle)
	}

	lines = c.WaitFor(3*idle, "the incomplete trace", arrived(incomplete))
	lat = check(incomplete, lines, "idle_timeout")
	t.Logf("incomplete trace (%d spans, missing %s) arrived %v after it was sent", len(incomplete.Emit), incomplete.Truth.MissingParentID, lat)
	if lat < idle {
		t.Errorf("incomplete trace arrived after %v, before idle_timeout %v", lat, idle)
	}
	if lat > idle+2*time.Second {
		t.Errorf("incomplete trace arrived after %v, want about idle_timeout %v", lat, idle)
	}
}
