package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// brokenExpect is what the processor must write for one broken kind.
type brokenExpect struct {
	// trace lists finding kinds that must be in consistency.trace.findings
	// on the trace head (status then "inconsistent").
	trace []string
	// span lists finding kinds that must be in consistency.span.findings on
	// every record of the affected span.
	span []string
	// reason is the expected consistency.trace.release_reason.
	reason string
	// unassembled: the affected span has an unusable id and is forwarded
	// at once, on its own, before the rest of its trace.
	unassembled bool
}

var brokenExpectations = map[tracegen.BrokenKind]brokenExpect{
	tracegen.MissingParent:        {trace: []string{"missing_parent"}, span: []string{"missing_parent"}, reason: "idle_timeout"},
	tracegen.TwoRoots:             {trace: []string{"multiple_roots"}, reason: "idle_timeout"},
	tracegen.DuplicateSpan:        {reason: "complete"},
	tracegen.ConflictingDuplicate: {trace: []string{"conflicting_span_id"}, span: []string{"conflicting_span_id"}, reason: "complete"},
	tracegen.SkewedChild:          {trace: []string{"clock_skew"}, span: []string{"clock_skew"}, reason: "complete"},
	tracegen.SampledMismatch:      {trace: []string{"sampled_flag_mismatch"}, span: []string{"sampled_flag_mismatch"}, reason: "complete"},
	tracegen.FutureTimestamp:      {trace: []string{"future_timestamp"}, span: []string{"future_timestamp"}, reason: "complete"},
	tracegen.ZeroTraceID:          {span: []string{"invalid_trace_id"}, reason: "complete", unassembled: true},
	tracegen.ZeroSpanID:           {span: []string{"invalid_span_id"}, reason: "complete", unassembled: true},
}

// TestBrokenTracesCarryFindings sends a trace broken in each way tracegen
// offers (through the SDK; kinds the SDK cannot produce go as pdata) among
// healthy ones, and checks the findings written on the trace head and the
// affected span, the release reasons, and that nothing is lost.
//
// It runs twice, each time on a fresh collector: "sdk" sends through the
// OpenTelemetry SDK (one TracerProvider per service), "pdata" sends
// interleaved batches of 40 spans, so every trace arrives in several
// requests mixed with others, the duplicate copies last.
func TestBrokenTracesCarryFindings(t *testing.T) {
	requireProcessor(t)
	RequireBinary(t)
	for _, k := range tracegen.AllBrokenKinds() {
		if _, ok := brokenExpectations[k]; !ok {
			t.Fatalf("no expectation for broken kind %q; add one", k)
		}
	}
	for _, mode := range []string{"sdk", "pdata"} {
		t.Run(mode, func(t *testing.T) { testBrokenTraces(t, mode) })
	}
}

func testBrokenTraces(t *testing.T, mode string) {
	c := StartCollector(t, TraceConsistencyYAML("quiet_period: 1s", "release_tick: 50ms", "idle_timeout: 2s", NoRestartWait))
	kinds := tracegen.AllBrokenKinds()
	// Every other trace broken, each kind twice. The traces end 10s in the
	// past so that skewed_child's +2s shift stays behind the collector's
	// clock (otherwise it would also be a future timestamp); the
	// future_timestamp span is still 1h ahead.
	g := tracegen.MustNew(tracegen.Config{
		Seed: 31337, Traces: 4 * len(kinds), Services: 5, Broken: kinds, BrokenEvery: 2,
		SpansPerBatch: 40, BaseTime: time.Now().Add(-10 * time.Second),
	})
	sendStart := time.Now()
	var res tracegen.SendResult
	if mode == "sdk" {
		res = sendSDK(t, c, g)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		res, err = tracegen.SendPData(ctx, g, tracegen.SendOptions{Endpoint: c.OTLPEndpoint, Concurrency: 2})
		if err != nil || res.Stopped {
			t.Fatalf("SendPData: %v (stopped %v)", err, res.Stopped)
		}
		if res.Spans != res.Truth.Records() {
			t.Fatalf("acknowledged %d span records, the ground truth has %d", res.Spans, res.Truth.Records())
		}
		t.Logf("sent %d traces, %d span records in %d requests", res.Traces, res.Spans, res.Requests)
	}
	truth := res.Truth
	wantCounts, wantTotal := expectedCounts(g, truth)

	c.WaitForSpans(wantTotal, 30*time.Second)
	t.Logf("all %d span records (of %d sent) arrived %v after the send started", wantTotal, res.Spans, time.Since(sendStart).Round(time.Millisecond))
	recs := Spans(c.StopAndRead())
	el := newErrorLimiter(t)
	defer el.Summary()

	// Nothing lost: every record sent arrives, minus the exact duplicates.
	checkCounts(el, recs, wantCounts)
	for _, r := range recs {
		if v, ok := AttrString(r.Span, names.AttrHLC); !ok || !stampRe.MatchString(v) {
			el.Errorf("bad hlc", "span %v: %s=%q (present %v)", r.Key, names.AttrHLC, v, ok)
		}
	}

	byKey := map[tracegen.SpanKey][]SpanRecord{}
	for _, r := range recs {
		byKey[r.Key] = append(byKey[r.Key], r)
	}
	byTrace := ByTrace(recs)
	seenKinds := map[string]int{}
	for _, tt := range truth.Traces {
		trecs := byTrace[tt.TraceID]
		exp, broken := brokenExpectations[tt.Broken]
		name := string(tt.Broken)
		if !broken {
			name = "healthy"
			exp = brokenExpect{reason: "complete"}
		}
		seenKinds[name]++

		// The records of the trace proper (unassembled ones leave alone).
		var assembled []SpanRecord
		for _, r := range trecs {
			if !(exp.unassembled && r.Key == tt.Affected) {
				assembled = append(assembled, r)
			}
		}
		if ls := lineSet(assembled); len(ls) != 1 {
			el.Errorf("trace split", "%s trace %s (%d spans) is on lines %v, want one", name, tt.TraceID, len(assembled), ls)
		}
		reason, _ := FindTraceAttr(assembled, names.AttrReleaseReason)
		if reason != exp.reason {
			el.Errorf("release reason", "%s trace %s: %s=%q, want %q", name, tt.TraceID, names.AttrReleaseReason, reason, exp.reason)
		}
		status, _ := FindTraceAttr(assembled, names.AttrTraceStatus)
		traceFindings, _ := traceAttrStrings(assembled, names.AttrTraceFindings)

		if !broken {
			if status != "consistent" || len(traceFindings) > 0 {
				el.Errorf("healthy inconsistent", "healthy trace %s: status %q, findings %v", tt.TraceID, status, traceFindings)
			}
			for _, r := range trecs {
				if f, ok := attrStrings(r.Span, names.AttrSpanFindings); ok {
					el.Errorf("healthy span finding", "span %v of healthy trace %s has findings %v", r.Key, tt.TraceID, f)
				}
			}
			continue
		}

		for _, k := range exp.trace {
			if !slices.Contains(traceFindings, k) {
				el.Errorf("missing trace finding", "%s trace %s: %s=%v lacks %q", name, tt.TraceID, names.AttrTraceFindings, traceFindings, k)
			}
		}
		if len(exp.trace) > 0 && status != "inconsistent" {
			el.Errorf("status", "%s trace %s: %s=%q, want inconsistent", name, tt.TraceID, names.AttrTraceStatus, status)
		}
		affected := byKey[tt.Affected]
		var affFindings [][]string
		for _, r := range affected {
			f, _ := attrStrings(r.Span, names.AttrSpanFindings)
			affFindings = append(affFindings, f)
		}
		t.Logf("%-21s trace %s: reason %s, status %s, trace findings %v; affected span %v x%d, span findings %v",
			name, tt.TraceID, reason, status, traceFindings, tt.Affected.SpanID, len(affected), affFindings)
		if len(affected) == 0 {
			el.Errorf("affected missing", "%s trace %s: affected span %v did not arrive", name, tt.TraceID, tt.Affected)
		}
		for _, r := range affected {
			f, _ := attrStrings(r.Span, names.AttrSpanFindings)
			for _, k := range exp.span {
				if !slices.Contains(f, k) {
					el.Errorf("missing span finding", "%s trace %s: affected span %v has %s=%v, lacks %q", name, tt.TraceID, r.Key, names.AttrSpanFindings, f, k)
				}
			}
		}

		switch tt.Broken {
		case tracegen.MissingParent:
			ids, _ := traceAttrStrings(assembled, names.AttrMissingParentIDs)
			if !slices.Contains(ids, tt.MissingParentID.String()) {
				el.Errorf("missing parent id", "trace %s: %s=%v lacks the never-sent parent %s", tt.TraceID, names.AttrMissingParentIDs, ids, tt.MissingParentID)
			}
		case tracegen.DuplicateSpan:
			if len(affected) != 1 {
				el.Errorf("retry kept", "trace %s: the exactly duplicated span %v arrived %d times, want once", tt.TraceID, tt.Affected, len(affected))
			}
			for _, r := range affected {
				if f, ok := attrStrings(r.Span, names.AttrSpanFindings); ok {
					el.Errorf("retry flagged", "trace %s: an exact retry is not a conflict, but span %v has findings %v", tt.TraceID, r.Key, f)
				}
			}
		case tracegen.ConflictingDuplicate:
			// keep_both (the default): both versions arrive, each flagged.
			if len(affected) != 2 {
				el.Errorf("conflict", "trace %s: conflicting span %v arrived %d times, want 2 (keep_both)", tt.TraceID, tt.Affected, len(affected))
			}
		case tracegen.SkewedChild:
			// The skewed SERVER span is on another host than its CLIENT parent.
			for _, r := range affected {
				parent := findSpan(trecs, r.Span.ParentSpanID())
				if parent == nil {
					el.Errorf("skew parent", "trace %s: parent of %v not found", tt.TraceID, r.Key)
					continue
				}
				h1, _ := r.Resource.Attributes().Get("host.id")
				h2, _ := parent.Resource.Attributes().Get("host.id")
				if h1.AsString() == h2.AsString() {
					el.Errorf("skew host", "trace %s: skewed span %v is on the same host as its parent", tt.TraceID, r.Key)
				}
			}
		case tracegen.ZeroTraceID, tracegen.ZeroSpanID:
			// Forwarded at once: on a line of its own, before the rest of
			// its trace (held for quiet_period).
			for _, r := range affected {
				ls := lineSet(assembled)
				if len(ls) > 0 && r.Line >= ls[0] {
					el.Errorf("not at once", "trace %s: span %v with an unusable id is on line %d, not before its trace (lines %v)", tt.TraceID, r.Key, r.Line, ls)
				}
				for _, o := range recs {
					if o.Line == r.Line && o.Key.TraceID == tt.TraceID && o.Key != r.Key {
						el.Errorf("not alone", "trace %s: unassembled span %v shares line %d with span %v of its trace", tt.TraceID, r.Key, r.Line, o.Key)
						break
					}
				}
			}
		}
	}
	t.Logf("traces checked: %s", fmtCounts(seenKinds))
	for _, k := range kinds {
		if seenKinds[string(k)] == 0 {
			t.Errorf("no %s trace was sent", k)
		}
	}
}

func findSpan(recs []SpanRecord, id pcommon.SpanID) *SpanRecord {
	for i := range recs {
		if recs[i].Key.SpanID == id {
			return &recs[i]
		}
	}
	return nil
}
