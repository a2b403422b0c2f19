package e2e

// The evaluation of the real-application harness on made-up ground truth and output, so that
// what it counts is itself tested (runs without the applications).

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

type fakeSpan struct {
	trace    byte
	id, par  byte
	service  string
	kind     ptrace.SpanKind
	findings []string
	late     bool
}

func fakeIDs(tr, id, par byte) (pcommon.TraceID, pcommon.SpanID, pcommon.SpanID) {
	var t pcommon.TraceID
	t[0], t[15] = 1, tr
	s := pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, id}
	p := pcommon.NewSpanIDEmpty()
	if par != 0 {
		p = pcommon.SpanID{0, 0, 0, 0, 0, 0, 0, par}
	}
	return t, s, p
}

// fakeLine is one output line holding spans.
func fakeLine(idx int, at time.Time, spans ...fakeSpan) Line {
	td := ptrace.NewTraces()
	for _, f := range spans {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", f.service)
		rs.Resource().Attributes().PutStr("telemetry.sdk.language", map[string]string{svcPython: "python", svcNode: "nodejs", svcJava: "java", svcGo: "go"}[f.service])
		sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		t, s, p := fakeIDs(f.trace, f.id, f.par)
		sp.SetTraceID(t)
		sp.SetSpanID(s)
		sp.SetParentSpanID(p)
		sp.SetKind(f.kind)
		if len(f.findings) > 0 {
			sl := sp.Attributes().PutEmptySlice(names.AttrSpanFindings)
			for _, k := range f.findings {
				sl.AppendEmpty().SetStr(k)
			}
		}
		if f.late {
			sp.Attributes().PutStr(names.AttrLate, "true")
		}
	}
	return Line{Index: idx, Traces: td, SeenAt: at}
}

func fakeGT(t0 time.Time, arrived time.Duration, spans ...fakeSpan) map[tracegen.SpanKey]gtSpan {
	m := map[tracegen.SpanKey]gtSpan{}
	for _, f := range spans {
		t, s, p := fakeIDs(f.trace, f.id, f.par)
		k := tracegen.SpanKey{TraceID: t, SpanID: s}
		m[k] = gtSpan{Key: k, Parent: p, Service: f.service, Kind: f.kind, Start: t0, End: t0.Add(10 * time.Millisecond), Arrived: t0.Add(arrived), Flags: 0x301}
	}
	return m
}

func TestRealAppsEvaluationCountsWholeSplitAndFalseFindings(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	// Trace 2: whole, no finding. Trace 4: its node span came out in a second, late release
	// after a first part that left before the node span arrived, with a false finding.
	a := []fakeSpan{{trace: 2, id: 1, service: svcPython, kind: ptrace.SpanKindServer}, {trace: 2, id: 2, par: 1, service: svcNode, kind: ptrace.SpanKindServer}}
	b := []fakeSpan{{trace: 4, id: 1, service: svcPython, kind: ptrace.SpanKindServer}, {trace: 4, id: 2, par: 1, service: svcNode, kind: ptrace.SpanKindServer, findings: []string{"clock_skew"}, late: true}}
	gt := fakeGT(t0, time.Second, a...)
	for k, v := range fakeGT(t0, time.Second, b[0]) {
		gt[k] = v
	}
	for k, v := range fakeGT(t0, 5*time.Second, b[1]) {
		gt[k] = v
	}
	lines := []Line{
		fakeLine(0, t0.Add(2*time.Second), a[0], a[1], b[0]),
		fakeLine(1, t0.Add(6*time.Second), b[1]),
	}
	tid := func(b byte) pcommon.TraceID { t, _, _ := fakeIDs(b, 1, 0); return t }
	reqs := []request{{ID: 0, Status: 200, TraceID: tid(2)}, {ID: 1, Status: 500, TraceID: tid(4)}}
	r := evaluate(realappsScenario{Name: "self"}, reqs, gt, nil, lines)
	if r.Whole != 1 || r.Split != 1 || r.ReleasedEarly != 1 || r.LateSpans != 1 || r.Incomplete != 0 || r.ErrorTraces != 1 || r.WholeErrors != 0 {
		t.Fatalf("whole %d split %d early %d late %d incomplete %d errors %d/%d; want 1 1 1 1 0 1/0", r.Whole, r.Split, r.ReleasedEarly, r.LateSpans, r.Incomplete, r.WholeErrors, r.ErrorTraces)
	}
	if got := r.HealthyFindings["clock_skew/nodejs"]; got != 1 || r.unexpectedFindings() != 1 {
		t.Fatalf("healthy findings %v, want clock_skew/nodejs: 1", r.HealthyFindings)
	}
	// Latency: from the frontend's span end (t0+10ms) to the last release seen.
	if r.LatencyMax != (6*time.Second - 10*time.Millisecond).String() {
		t.Fatalf("latency max %s, want 5.99s", r.LatencyMax)
	}
}

func TestRealAppsEvaluationJudgesAnAnomalyOnItsSpansOnly(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	// Java SERVER span 2 dropped by the proxy; its child 3 must carry missing_parent. Span 4
	// (Go, parent 3 present) carrying it too is a wrong finding.
	spans := []fakeSpan{
		{trace: 6, id: 1, service: svcPython, kind: ptrace.SpanKindServer},
		{trace: 6, id: 2, par: 1, service: svcJava, kind: ptrace.SpanKindServer},
		{trace: 6, id: 3, par: 2, service: svcJava, kind: ptrace.SpanKindClient},
		{trace: 6, id: 4, par: 3, service: svcGo, kind: ptrace.SpanKindServer},
	}
	gt := fakeGT(t0, time.Second, spans...)
	drop := faultRecord{Fault: faultDropParent, Key: tracegen.SpanKey{TraceID: spans2key(spans[1]).TraceID, SpanID: spans2key(spans[1]).SpanID}}
	out := []fakeSpan{spans[0], spans[2], spans[3]}
	out[1].findings = []string{"missing_parent"}
	out[2].findings = []string{"missing_parent"}
	lines := []Line{fakeLine(0, t0.Add(2*time.Second), out...)}
	reqs := []request{{ID: 0, Status: 200, TraceID: drop.Key.TraceID}}
	r := evaluate(realappsScenario{Name: "self", Faults: []faultKind{faultDropParent}}, reqs, gt, []faultRecord{drop}, lines)
	if r.Whole != 1 {
		t.Fatalf("whole %d, want 1 (the dropped span is not expected)", r.Whole)
	}
	if len(r.Anomalies) != 1 {
		t.Fatalf("anomalies %+v, want one", r.Anomalies)
	}
	a := r.Anomalies[0]
	if a.Traces != 1 || a.TracesDetected != 1 || a.Required != 1 || a.RequiredFound != 1 || a.Wrong != 1 {
		t.Fatalf("anomaly %+v; want 1 trace detected, required 1/1, 1 wrong", a)
	}
	// Without the finding on span 3 the trace is missed.
	out[1].findings = nil
	lines = []Line{fakeLine(0, t0.Add(2*time.Second), out...)}
	r = evaluate(realappsScenario{Name: "self", Faults: []faultKind{faultDropParent}}, reqs, gt, []faultRecord{drop}, lines)
	if a := r.Anomalies[0]; a.TracesDetected != 0 || a.RequiredFound != 0 || len(a.Missed) != 1 {
		t.Fatalf("anomaly %+v; want 0 detected, 1 missed", a)
	}
}

func spans2key(f fakeSpan) tracegen.SpanKey {
	t, s, _ := fakeIDs(f.trace, f.id, f.par)
	return tracegen.SpanKey{TraceID: t, SpanID: s}
}

func TestRealAppsCorrectionJudgesOnlyTheSkewedServiceAndItsPlace(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	spans := []fakeSpan{
		{trace: 8, id: 1, service: svcPython, kind: ptrace.SpanKindClient},
		{trace: 8, id: 2, par: 1, service: svcNode, kind: ptrace.SpanKindServer},
		{trace: 8, id: 3, par: 2, service: svcJava, kind: ptrace.SpanKindServer},
	}
	gt := fakeGT(t0, time.Second, spans...)
	place := func(l Line, id byte, start, end time.Duration, moved bool) {
		sps := l.Traces.ResourceSpans()
		for i := 0; i < sps.Len(); i++ {
			sp := sps.At(i).ScopeSpans().At(0).Spans().At(0)
			if sp.SpanID()[7] != id {
				continue
			}
			sp.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(start)))
			sp.SetEndTimestamp(pcommon.NewTimestampFromTime(t0.Add(end)))
			if moved {
				sp.Attributes().PutInt(names.AttrSkewAdjustment, 300_000_000)
			}
		}
	}
	judge := func(nodeStart, nodeEnd time.Duration, javaMoved bool) *anomalyReport {
		l := fakeLine(0, t0, spans...)
		place(l, 1, 0, 100*time.Millisecond, false)
		place(l, 2, nodeStart, nodeEnd, true)
		place(l, 3, nodeStart+time.Millisecond, nodeEnd-time.Millisecond, javaMoved)
		a := &anomalyReport{}
		tid, _, _ := fakeIDs(8, 1, 0)
		judgeCorrection(a, tid, gt, Spans([]Line{l}))
		return a
	}
	if a := judge(2*time.Millisecond, 110*time.Millisecond, false); a.SkewedServers != 1 || a.SkewedServersInside != 1 || a.Moved != 1 || a.MovedOutsideSkewed != 0 {
		t.Fatalf("inside with a 10 ms overhang: %+v", a)
	}
	if a := judge(2*time.Millisecond, 133*time.Millisecond, false); a.SkewedServersInside != 1 {
		t.Fatalf("a 33 ms overhang (the server's process paused before it ended its span) not counted inside: %+v", a)
	}
	if a := judge(2*time.Millisecond, 199*time.Millisecond, false); a.SkewedServersInside != 1 {
		t.Fatalf("a 99 ms overhang not counted inside: %+v", a)
	}
	if a := judge(2*time.Millisecond, 202*time.Millisecond, false); a.SkewedServersInside != 0 {
		t.Fatalf("102 ms past the parent's end counted inside: %+v", a)
	}
	if a := judge(2*time.Millisecond, 400*time.Millisecond, false); a.SkewedServersInside != 0 {
		t.Fatalf("the 300 ms offset left on the end counted inside: %+v", a)
	}
	if a := judge(150*time.Millisecond, 180*time.Millisecond, false); a.SkewedServersInside != 0 {
		t.Fatalf("starting after the parent's end counted inside: %+v", a)
	}
	if a := judge(-5*time.Millisecond, 90*time.Millisecond, false); a.SkewedServersInside != 0 {
		t.Fatalf("starting 5 ms before the parent counted inside: %+v", a)
	}
	if a := judge(2*time.Millisecond, 90*time.Millisecond, true); a.MovedOutsideSkewed != 1 {
		t.Fatalf("a moved span of another service not counted: %+v", a)
	}
}

func TestRealAppsSkewIsFoundOnTheNodeSpansOrTheSpansUnderThem(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	// python CLIENT -> node SERVER -> node CLIENT -> java SERVER; node's clock is 310 ms
	// ahead. Times (ms, as sent) of the four spans: a short call, where the node SERVER
	// starts after its client ended; a long one (500 ms), where only the java SERVER
	// starts before its node client; the same with java accepting the call late (a cold
	// JVM), where nothing disagrees.
	short := [][2]int{{0, 100}, {310, 390}, {320, 380}, {15, 60}}
	long := [][2]int{{0, 500}, {310, 790}, {320, 780}, {15, 460}}
	cold := [][2]int{{0, 500}, {310, 790}, {320, 780}, {330, 470}}
	for _, c := range []struct {
		what                        string
		times                       [][2]int
		on                          map[byte]bool
		traces, detected, wrong, no int
	}{
		{"short call, on the node SERVER", short, map[byte]bool{2: true}, 1, 1, 0, 0},
		{"long call, on the java SERVER under a node client", long, map[byte]bool{4: true}, 1, 1, 0, 0},
		{"short call, only on the python span", short, map[byte]bool{1: true}, 1, 0, 1, 0},
		{"long call, nowhere", long, map[byte]bool{}, 1, 0, 0, 0},
		{"cold JVM: no evidence, not required", cold, map[byte]bool{}, 0, 0, 0, 1},
		{"cold JVM: still wrong on the python span", cold, map[byte]bool{1: true}, 0, 0, 1, 1},
	} {
		f := func(id byte) []string {
			if c.on[id] {
				return []string{"clock_skew"}
			}
			return nil
		}
		spans := []fakeSpan{
			{trace: 6, id: 1, service: svcPython, kind: ptrace.SpanKindClient, findings: f(1)},
			{trace: 6, id: 2, par: 1, service: svcNode, kind: ptrace.SpanKindServer, findings: f(2)},
			{trace: 6, id: 3, par: 2, service: svcNode, kind: ptrace.SpanKindClient, findings: f(3)},
			{trace: 6, id: 4, par: 3, service: svcJava, kind: ptrace.SpanKindServer, findings: f(4)},
		}
		gt := fakeGT(t0, time.Second, spans...)
		for i, sp := range spans {
			k := spans2key(sp)
			g := gt[k]
			g.Start, g.End = ms(c.times[i][0]), ms(c.times[i][1])
			gt[k] = g
		}
		tid, _, _ := fakeIDs(6, 1, 0)
		r := evaluate(realappsScenario{Name: "self", Skew: "+0.3"}, []request{{ID: 0, Status: 200, TraceID: tid}}, gt, nil, []Line{fakeLine(0, t0.Add(2*time.Second), spans...)})
		if len(r.Anomalies) != 1 {
			t.Fatalf("%s: anomalies %+v", c.what, r.Anomalies)
		}
		a := r.Anomalies[0]
		if a.Traces != c.traces || a.TracesDetected != c.detected || a.Wrong != c.wrong || a.NoEvidence != c.no {
			t.Fatalf("%s: traces %d detected %d wrong %d without evidence %d, want %d %d %d %d: %+v", c.what, a.Traces, a.TracesDetected, a.Wrong, a.NoEvidence, c.traces, c.detected, c.wrong, c.no, a)
		}
	}
}
