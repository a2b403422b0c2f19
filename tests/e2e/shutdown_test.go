package e2e

import (
	"context"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// TestShutdownReleasesEverything holds every trace (quiet_period and
// idle_timeout of a minute), checks through the collector's own metrics that
// the spans are buffered and that nothing has left yet, then sends SIGTERM:
// every span must be in the output, each trace whole in one line, released
// with reason shutdown.
func TestShutdownReleasesEverything(t *testing.T) {
	requireProcessor(t)
	c := StartCollector(t, TraceConsistencyYAML("quiet_period: 1m", "idle_timeout: 1m", "max_age: 2m", "release_tick: 50ms", NoRestartWait))

	// Healthy traces plus some incomplete ones (they would wait for
	// idle_timeout), all of which shutdown must release.
	g := tracegen.MustNew(tracegen.Config{
		Seed: 5150, Traces: 60, Services: 4,
		Broken: []tracegen.BrokenKind{tracegen.MissingParent, tracegen.TwoRoots}, BrokenEvery: 5,
		BaseTime: time.Now(),
	})
	res := sendSDK(t, c, g)
	truth := res.Truth
	wantCounts, wantTotal := expectedCounts(g, truth)
	if wantTotal != res.Spans {
		t.Fatalf("expected %d output records, sent %d (this workload has no duplicates)", wantTotal, res.Spans)
	}

	m := c.WaitForMetrics(20*time.Second, strconv.Itoa(res.Spans)+" spans buffered", func(m Metrics) bool {
		return m.Sum(names.MetricSpansBuffered) == float64(res.Spans)
	})
	t.Logf("metrics: %s=%v %s=%v %s=%v", names.MetricSpansBuffered, m.Sum(names.MetricSpansBuffered),
		names.MetricTracesBuffered, m.Sum(names.MetricTracesBuffered), names.MetricAcceptedSpans, m.Sum(names.MetricAcceptedSpans))
	if got := m.Sum(names.MetricTracesBuffered); got != float64(len(truth.Traces)) {
		t.Errorf("%s = %v, want %d", names.MetricTracesBuffered, got, len(truth.Traces))
	}
	if got := m.Sum(names.MetricAcceptedSpans); got != float64(res.Spans) {
		t.Errorf("%s = %v, want %d", names.MetricAcceptedSpans, got, res.Spans)
	}
	if err := c.Output().Poll(); err != nil {
		t.Fatal(err)
	}
	if n := SpanCount(c.Output().Lines()); n != 0 {
		t.Errorf("%d spans left before shutdown, with quiet_period and idle_timeout of 1m", n)
	}

	stopStart := time.Now()
	recs := Spans(c.StopAndRead())
	t.Logf("SIGTERM to exit: %v; %d span records in the output", time.Since(stopStart).Round(time.Millisecond), len(recs))
	el := newErrorLimiter(t)
	defer el.Summary()
	checkCounts(el, recs, wantCounts)

	byTrace := ByTrace(recs)
	for _, tt := range truth.Traces {
		trecs := byTrace[tt.TraceID]
		if ls := lineSet(trecs); len(ls) != 1 {
			el.Errorf("trace split", "trace %s (%d spans) is on lines %v, want one", tt.TraceID, len(trecs), ls)
		}
		if reason, _ := FindTraceAttr(trecs, names.AttrReleaseReason); reason != "shutdown" {
			el.Errorf("reason", "trace %s (%q): %s=%q, want shutdown", tt.TraceID, tt.Broken, names.AttrReleaseReason, reason)
		}
		if n, _ := FindTraceAttr(trecs, names.AttrSpanCount); n != strconv.Itoa(len(tt.Spans)) {
			el.Errorf("span count", "trace %s: %s=%s, want %d", tt.TraceID, names.AttrSpanCount, n, len(tt.Spans))
		}
	}
}

// TestMetricsAreExposed sends a mixed workload (every broken kind, as pdata
// batches that interleave traces) and checks the processor's own metrics on
// the Prometheus endpoint against the ground truth.
func TestMetricsAreExposed(t *testing.T) {
	requireProcessor(t)
	c := StartCollector(t, TraceConsistencyYAML("quiet_period: 300ms", "idle_timeout: 1s", "release_tick: 50ms", NoRestartWait))

	kinds := tracegen.AllBrokenKinds()
	g := tracegen.MustNew(tracegen.Config{
		Seed: 8080, Traces: 3 * len(kinds), Services: 5, Broken: kinds, BrokenEvery: 3,
		SpansPerBatch: 40, BaseTime: time.Now().Add(-10 * time.Second),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := tracegen.SendPData(ctx, g, tracegen.SendOptions{Endpoint: c.OTLPEndpoint, Concurrency: 2})
	if err != nil || res.Stopped {
		t.Fatalf("SendPData: %v (stopped %v)", err, res.Stopped)
	}
	truth := res.Truth
	if res.Spans != truth.Records() {
		t.Fatalf("acknowledged %d span records, the ground truth has %d", res.Spans, truth.Records())
	}
	t.Logf("sent %d traces, %d span records in %d requests", res.Traces, res.Spans, res.Requests)
	_, wantTotal := expectedCounts(g, truth)
	c.WaitForSpans(wantTotal, 20*time.Second)

	ofKind := func(k tracegen.BrokenKind) int { return len(truth.OfKind(k)) }
	incomplete := ofKind(tracegen.MissingParent) + ofKind(tracegen.TwoRoots)
	unassembled := ofKind(tracegen.ZeroTraceID) + ofKind(tracegen.ZeroSpanID)
	sumReasons := func(m Metrics, name string) float64 {
		var s float64
		for _, r := range names.ReleaseReasons {
			s += m.Sum(name, "reason", r)
		}
		return s
	}
	// Counters move when the exporter has the data; wait (bounded) until
	// they account for everything.
	m := c.WaitForMetrics(10*time.Second, "every span and trace counted as released", func(m Metrics) bool {
		return m.Sum(names.MetricSpansReleased) == float64(wantTotal) && sumReasons(m, names.MetricTracesReleased) == float64(len(truth.Traces))
	})
	t.Logf("traceconsistency metrics:\n%s", m.Grep(names.MetricPrefix))

	eq := func(what string, got float64, want int) {
		t.Helper()
		if got != float64(want) {
			t.Errorf("%s = %v, want %d", what, got, want)
		}
	}
	atLeast := func(what string, got float64, want int) {
		t.Helper()
		if got < float64(want) {
			t.Errorf("%s = %v, want at least %d", what, got, want)
		}
	}
	eq(names.MetricAcceptedSpans, m.Sum(names.MetricAcceptedSpans), res.Spans)
	eq(names.MetricSpansReceived, m.Sum(names.MetricSpansReceived), res.Spans)
	eq(names.MetricTracesReleased+`{reason="idle_timeout"}`, m.Sum(names.MetricTracesReleased, "reason", "idle_timeout"), incomplete)
	eq(names.MetricTracesReleased+`{reason="complete"}`, m.Sum(names.MetricTracesReleased, "reason", "complete"), len(truth.Traces)-incomplete)
	eq(names.MetricSpansReleased+`{reason="unassembled"}`, m.Sum(names.MetricSpansReleased, "reason", "unassembled"), unassembled)
	eq(names.MetricUnassembled, m.Sum(names.MetricUnassembled), unassembled)
	eq(names.MetricDuplicates, m.Sum(names.MetricDuplicates), ofKind(tracegen.DuplicateSpan))
	eq(names.MetricReleaseAgeCount, m.Sum(names.MetricReleaseAgeCount), len(truth.Traces))
	atLeast(names.MetricFutureTS, m.Sum(names.MetricFutureTS), ofKind(tracegen.FutureTimestamp))
	for _, name := range []string{names.MetricSpansBuffered, names.MetricTracesBuffered} {
		if !m.Has(name) {
			t.Errorf("metric %s is not exposed", name)
		} else {
			eq(name+" (after every release)", m.Sum(name), 0)
		}
	}
	for _, r := range m.LabelValues(names.MetricTracesReleased, "reason") {
		if !slices.Contains(names.ReleaseReasons, r) {
			t.Errorf("%s has reason %q, not a trace release reason", names.MetricTracesReleased, r)
		}
	}
	// Findings by kind: each broken kind's finding, counted on a service.
	wantFindings := map[string]int{
		"missing_parent":        ofKind(tracegen.MissingParent),
		"multiple_roots":        ofKind(tracegen.TwoRoots),
		"conflicting_span_id":   2 * ofKind(tracegen.ConflictingDuplicate),
		"clock_skew":            ofKind(tracegen.SkewedChild),
		"sampled_flag_mismatch": ofKind(tracegen.SampledMismatch),
		"future_timestamp":      ofKind(tracegen.FutureTimestamp),
		"invalid_trace_id":      ofKind(tracegen.ZeroTraceID),
		"invalid_span_id":       ofKind(tracegen.ZeroSpanID),
	}
	for kind, n := range wantFindings {
		atLeast(names.MetricFindings+`{kind="`+kind+`"}`, m.Sum(names.MetricFindings, "kind", kind), n)
		for _, s := range m.Find(names.MetricFindings, "kind", kind) {
			if s.Labels["service_name"] == "" {
				t.Errorf("%s{kind=%q} sample without service_name: %v", names.MetricFindings, kind, s.Labels)
			}
		}
	}
	t.Logf("finding kinds exposed: %v", m.LabelValues(names.MetricFindings, "kind"))
}

// TestShutdownUnderLoadKeepsAcknowledgedSpans sends without pause, SIGTERMs
// the collector mid-stream, and checks that every span record the receiver
// acknowledged is in the output: shutdown releases what is buffered and
// nothing acknowledged is dropped. Records whose request failed around the
// shutdown may or may not be there.
func TestShutdownUnderLoadKeepsAcknowledgedSpans(t *testing.T) {
	requireProcessor(t)
	c := StartCollector(t, TraceConsistencyYAML("quiet_period: 300ms", "release_tick: 50ms", "idle_timeout: 5s", NoRestartWait))
	g := tracegen.MustNew(tracegen.Config{Seed: 99, Traces: 100000, Services: 4, SpansPerBatch: 50, BaseTime: time.Now()})
	client := c.Dial()

	var ackedBatches atomic.Int64
	acked := map[tracegen.SpanKey]int{} // written by the sender until done
	failed := 0
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		b := g.Batches(0, 1)
		for {
			select {
			case <-stop:
				return
			default:
			}
			td, ok := b.Next()
			if !ok {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := client.Export(ctx, td)
			cancel()
			if err != nil {
				failed++
				continue
			}
			for _, r := range Spans([]Line{{Traces: td}}) {
				acked[r.Key]++
			}
			ackedBatches.Add(1)
		}
	}()
	// Stop once traces are being released and a good amount is in flight.
	c.WaitFor(20*time.Second, "the first released traces and 200 acknowledged batches", func(lines []Line) bool {
		return len(lines) > 0 && ackedBatches.Load() >= 200
	})
	recs := Spans(c.StopAndRead())
	close(stop)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the sender did not stop within 15s")
	}

	got := map[tracegen.SpanKey]int{}
	for _, r := range recs {
		got[r.Key]++
	}
	lost := 0
	for k, n := range acked {
		if got[k] < n {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged span %v: %d records in the output, %d acknowledged", k, got[k], n)
			}
		}
	}
	reasons := map[string]int{}
	for _, trecs := range ByTrace(recs) {
		r, _ := FindTraceAttr(trecs, names.AttrReleaseReason)
		reasons[r]++
	}
	t.Logf("%d batches acknowledged (%d span keys), %d failed around shutdown; %d records out; traces by release reason: %s",
		ackedBatches.Load(), len(acked), failed, len(recs), fmtCounts(reasons))
	if lost > 0 {
		t.Errorf("%d acknowledged spans are missing from the output", lost)
	}
	if reasons["shutdown"] == 0 {
		t.Errorf("no trace was released with reason shutdown; the test did not stop the collector mid-stream")
	}
}
