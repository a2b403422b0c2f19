package e2e

// What a real-application scenario measured: the collector's output against the ground truth
// the proxy recorded, per trace (whole in one release, split, released early, late spans,
// latency) and per finding (false findings on healthy traces, detection of each injected
// anomaly on the spans that carry it).

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// faultClockSkew marks the traces of the clock-skew scenario (every trace crosses the
// skewed Node.js service); the proxy does not inject it.
const faultClockSkew faultKind = "clock_skew_300ms"

// anomalyReport is how one injected anomaly was found.
type anomalyReport struct {
	Fault          faultKind
	Kind           string // the finding kind that must be found ("" for exact duplicates: dropped, no finding)
	Traces         int    // affected traces
	TracesDetected int    // affected traces with the kind on every required span
	Required       int    // spans (or, for trace-level kinds, traces) that must carry the kind
	RequiredFound  int
	Wrong          int      // spans outside the allowed set that carry the kind
	WrongExamples  []string `json:",omitempty"`
	Missed         []string `json:",omitempty"` // examples of required spans without the kind
	OtherKinds     map[string]int
	// Clock skew: affected traces whose times as sent show the skew on no edge (not in
	// Traces; see skewEvident).
	NoEvidence int `json:",omitempty"`
	// With skew correction on: spans moved (consistency.span.skew_adjustment_ns), those of
	// another service than the skewed one, and the skewed service's SERVER spans under a
	// CLIENT parent of the frontend that lie inside it after the correction (see
	// judgeCorrection).
	Moved               int      `json:",omitempty"`
	MovedOutsideSkewed  int      `json:",omitempty"`
	SkewedServers       int      `json:",omitempty"`
	SkewedServersInside int      `json:",omitempty"`
	CorrectionMissed    []string `json:",omitempty"`
}

// scenarioReport is what one scenario measured (written to the summary JSON).
type scenarioReport struct {
	Scenario      string
	Delay         string
	TracesSent    int
	RequestErrors []string `json:",omitempty"`
	ErrorTraces   int      // requests answered 500 (the failing ~1 in 10)
	Whole         int      // all ground-truth spans in one release, exactly once
	WholeErrors   int      // of those, error traces
	Split         int      // released in more than one part
	ColdNotWhole  int      // of the first 20 requests after the cold start, traces not whole
	Incomplete    int      // some ground-truth span never came out (even at shutdown)
	ReleasedEarly int      // a part left before the trace's last span reached the collector
	LateSpans     int      // spans marked consistency.span.late
	// SentLate counts the spans the applications really sent late: arriving more than the
	// processor's idle_timeout (10 s by default) after the trace's previous span arrived.
	SentLate       int
	ReleaseReasons map[string]int
	LatencyP50     string // from the frontend's last span end (ground truth) to the release
	LatencyP99     string
	LatencyMax     string
	// SkewMeasured is the median start of Node.js SERVER spans after their Python CLIENT
	// parent (ground truth): the faketime offset plus the network time.
	SkewMeasured   string   `json:",omitempty"`
	SkewedHost     []string `json:",omitempty"` // host.name / host.id the skewed service announced
	SkewCorrection bool     `json:",omitempty"`
	// ExportLag is, per service, from a span's end to its arrival at the proxy: p50 / max.
	ExportLag       map[string]string
	FaultedSpans    map[faultKind]int `json:",omitempty"` // spans the proxy changed, dropped or re-sent, per fault
	HealthyTraces   int               // traces without an injected anomaly
	HealthyFindings map[string]int    // "kind/telemetry.sdk.language" -> spans (trace-level kinds: on the root's language)
	Anomalies       []*anomalyReport
	// ProcessorMetrics are the processor's metrics at the end of the scenario, summed over
	// their labels (without the prefix otelcol_processor_traceconsistency_).
	ProcessorMetrics map[string]float64

	notWhole      []string
	falseFindings []string
}

// otherFindings counts the findings of other kinds than the injected one on affected traces.
func (r *scenarioReport) otherFindings() int {
	n := 0
	for _, a := range r.Anomalies {
		for _, v := range a.OtherKinds {
			n += v
		}
	}
	return n
}

// falseFindingsByKind splits the findings on healthy traces into clock_skew and the rest.
func (r *scenarioReport) falseFindingsByKind() (skew, other int) {
	for k, v := range r.HealthyFindings {
		if strings.HasPrefix(k, "clock_skew/") {
			skew += v
		} else {
			other += v
		}
	}
	return skew, other
}

func (r *scenarioReport) unexpectedFindings() int {
	n := 0
	for _, v := range r.HealthyFindings {
		n += v
	}
	return n
}

// realappsIdleTimeout is the processor's default idle_timeout.
const realappsIdleTimeout = 10 * time.Second

// expectedOutput is, per trace, how often each span must come out: once, twice for the two
// copies of a conflicting retry, not at all when the proxy dropped it.
func expectedOutput(gt map[tracegen.SpanKey]gtSpan, faults []faultRecord) map[pcommon.TraceID]map[tracegen.SpanKey]int {
	byFault := faultSets(faults)
	out := map[pcommon.TraceID]map[tracegen.SpanKey]int{}
	for k := range gt {
		if byFault[faultDropParent][k] {
			continue
		}
		m := out[k.TraceID]
		if m == nil {
			m = map[tracegen.SpanKey]int{}
			out[k.TraceID] = m
		}
		m[k] = 1
		if byFault[faultConflict][k] {
			m[k] = 2
		}
	}
	return out
}

func faultSets(faults []faultRecord) map[faultKind]map[tracegen.SpanKey]bool {
	m := map[faultKind]map[tracegen.SpanKey]bool{}
	for _, f := range faults {
		if m[f.Fault] == nil {
			m[f.Fault] = map[tracegen.SpanKey]bool{}
		}
		m[f.Fault][f.Key] = true
	}
	return m
}

// outputHolds says whether lines hold every expected span as often as expected.
func outputHolds(lines []Line, expected map[pcommon.TraceID]map[tracegen.SpanKey]int) bool {
	have := map[tracegen.SpanKey]int{}
	for _, r := range Spans(lines) {
		have[r.Key]++
	}
	for _, m := range expected {
		for k, n := range m {
			if have[k] < n {
				return false
			}
		}
	}
	return true
}

func spanFindings(sp ptrace.Span) []string {
	v, ok := attrStrings(sp, names.AttrSpanFindings)
	if !ok {
		return nil
	}
	return v
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func evaluate(sc realappsScenario, reqs []request, gt map[tracegen.SpanKey]gtSpan, faults []faultRecord, lines []Line) *scenarioReport {
	delay := "default (unset)"
	if sc.Delay > 0 {
		delay = fmt.Sprintf("%dms", sc.Delay)
	}
	if sc.Restart != "" {
		then := "the default delay"
		if sc.RestartDelay > 0 {
			then = fmt.Sprintf("%d ms", sc.RestartDelay)
		}
		delay += fmt.Sprintf(", then %s restarted with %s", sc.Restart, then)
	}
	r := &scenarioReport{Scenario: sc.Name, Delay: delay, TracesSent: len(reqs), ReleaseReasons: map[string]int{}, HealthyFindings: map[string]int{}}
	for _, k := range sc.Knobs {
		if k == skewCorrectionKnob {
			r.SkewCorrection = true
		}
	}
	hosts := map[string]bool{}
	expected := expectedOutput(gt, faults)
	sets := faultSets(faults)
	faultOfTrace := map[pcommon.TraceID]faultKind{}
	r.FaultedSpans = map[faultKind]int{}
	for _, f := range faults {
		faultOfTrace[f.Key.TraceID] = f.Fault
		r.FaultedSpans[f.Fault]++
	}
	gtByTrace := map[pcommon.TraceID][]gtSpan{}
	for _, g := range gt {
		gtByTrace[g.Key.TraceID] = append(gtByTrace[g.Key.TraceID], g)
	}
	outByTrace := ByTrace(Spans(lines))

	anomalies := map[faultKind]*anomalyReport{}
	anomaly := func(f faultKind) *anomalyReport {
		a := anomalies[f]
		if a == nil {
			a = &anomalyReport{Fault: f, Kind: findingKindOf(f), OtherKinds: map[string]int{}}
			anomalies[f] = a
		}
		return a
	}
	var latencies []time.Duration
	skews := []time.Duration{}
	lags := map[string][]time.Duration{}
	for _, q := range reqs {
		if q.Err != "" {
			r.RequestErrors = append(r.RequestErrors, fmt.Sprintf("request %d (%s): %s", q.ID, q.Query, q.Err))
			continue
		}
		if q.Status == 500 {
			r.ErrorTraces++
		}
		tid := q.TraceID
		exp := expected[tid]
		recs := outByTrace[tid]
		gts := gtByTrace[tid]
		fault := faultOfTrace[tid]
		if sc.Skew != "" {
			fault = faultClockSkew
		}

		// Completeness.
		releases := map[int]time.Time{}
		have := map[tracegen.SpanKey]int{}
		for _, rec := range recs {
			releases[rec.Line] = rec.SeenAt
			have[rec.Key]++
			if v, ok := AttrString(rec.Span, names.AttrLate); ok && v == "true" {
				r.LateSpans++
			}
			if v, ok := AttrString(rec.Span, names.AttrReleaseReason); ok {
				r.ReleaseReasons[v]++
			}
		}
		arrivals := make([]time.Time, 0, len(gts))
		for _, g := range gts {
			arrivals = append(arrivals, g.Arrived)
		}
		sort.Slice(arrivals, func(i, j int) bool { return arrivals[i].Before(arrivals[j]) })
		for i := 1; i < len(arrivals); i++ {
			if arrivals[i].Sub(arrivals[i-1]) > realappsIdleTimeout {
				r.SentLate++
			}
		}
		var lastArrival, frontEnd time.Time
		perService := map[string]int{}
		for _, g := range gts {
			lags[g.Service] = append(lags[g.Service], g.Arrived.Sub(g.End))
			if g.Arrived.After(lastArrival) {
				lastArrival = g.Arrived
			}
			if g.Service == svcPython && g.End.After(frontEnd) {
				frontEnd = g.End
			}
		}
		missing := 0
		exact := len(have) == len(exp)
		for k, n := range exp {
			if have[k] < n {
				missing++
				perService[gt[k].Service]++
			}
			if have[k] != n {
				exact = false
			}
		}
		var firstRel, lastRel time.Time
		for _, at := range releases {
			if firstRel.IsZero() || at.Before(firstRel) {
				firstRel = at
			}
			if at.After(lastRel) {
				lastRel = at
			}
		}
		early := len(releases) > 0 && firstRel.Before(lastArrival)
		if early {
			r.ReleasedEarly++
		}
		switch {
		case len(exp) > 0 && len(releases) == 1 && exact:
			r.Whole++
			if q.Status == 500 {
				r.WholeErrors++
			}
		default:
			if q.ID < 20 {
				r.ColdNotWhole++
			}
			if len(releases) > 1 {
				r.Split++
			}
			if missing > 0 {
				r.Incomplete++
			}
			if len(r.notWhole) < 10 {
				r.notWhole = append(r.notWhole, fmt.Sprintf("trace %s (request %d %s, status %d): %d ground-truth spans (%s), released in %d part(s), %d spans never came out %v, first part before the last span arrived: %v",
					tid, q.ID, q.Query, q.Status, len(exp), servicesOf(gts), len(releases), missing, perService, early)+"\n"+timelineOf(gts, recs))
			}
		}
		if !lastRel.IsZero() && !frontEnd.IsZero() {
			latencies = append(latencies, lastRel.Sub(frontEnd))
		}
		if sc.Skew != "" {
			for _, g := range gts {
				if g.Service == svcNode && g.Kind == ptrace.SpanKindServer {
					if p, ok := gt[tracegen.SpanKey{TraceID: tid, SpanID: g.Parent}]; ok && p.Service == svcPython {
						skews = append(skews, g.Start.Sub(p.Start))
					}
				}
			}
		}

		// Findings.
		traceKinds, _ := traceAttrStrings(recs, names.AttrTraceFindings)
		rootLang := "unknown"
		for _, g := range gts {
			if g.Parent.IsEmpty() && g.Service == svcPython {
				rootLang = g.Language
			}
		}
		if fault == faultNone {
			r.HealthyTraces++
			shown := false
			for _, rec := range recs {
				lang := langOf(rec.Resource)
				for _, k := range spanFindings(rec.Span) {
					r.HealthyFindings[k+"/"+lang]++
					if len(r.falseFindings) < 10 {
						r.falseFindings = append(r.falseFindings, fmt.Sprintf("%s on span %s %q of %s (%s) in healthy trace %s (request %s)",
							k, rec.Key.SpanID, rec.Span.Name(), serviceOf(rec.Resource), lang, tid, q.Query))
						if !shown {
							// The times as sent, to the nanosecond: what a calibration needs.
							shown = true
							r.falseFindings = append(r.falseFindings, "trace as sent:\n"+skewTimeline(gt, recs))
						}
					}
				}
			}
			for _, k := range traceKinds {
				if isSpanKind(k, recs) {
					continue
				}
				r.HealthyFindings[k+"/trace("+rootLang+")"]++
				if len(r.falseFindings) < 10 {
					r.falseFindings = append(r.falseFindings, fmt.Sprintf("trace-level %s in healthy trace %s (request %s)", k, tid, q.Query))
				}
			}
			continue
		}
		a := anomaly(fault)
		a.Traces++
		judgeAnomaly(a, fault, tid, "request "+q.Query, gt, gts, sets, recs, traceKinds)
		if fault == faultClockSkew {
			for _, rec := range recs {
				if serviceOf(rec.Resource) == svcNode {
					hosts["host.name="+resourceAttr(rec.Resource, "host.name")+" host.id="+resourceAttr(rec.Resource, "host.id")] = true
				}
			}
			if r.SkewCorrection && skewEvident(tid, gt, gts) {
				judgeCorrection(a, tid, gt, recs)
			}
		}
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	r.LatencyP50 = percentile(latencies, 0.50).Round(time.Millisecond).String()
	r.LatencyP99 = percentile(latencies, 0.99).Round(time.Millisecond).String()
	r.LatencyMax = percentile(latencies, 1).Round(time.Millisecond).String()
	r.ExportLag = map[string]string{}
	for svc, d := range lags {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		r.ExportLag[strings.TrimPrefix(svc, "realapps-")] = fmt.Sprintf("%s / %s", percentile(d, 0.5).Round(time.Millisecond), percentile(d, 1).Round(time.Millisecond))
	}
	for h := range hosts {
		r.SkewedHost = append(r.SkewedHost, h)
	}
	sort.Strings(r.SkewedHost)
	if len(skews) > 0 {
		sort.Slice(skews, func(i, j int) bool { return skews[i] < skews[j] })
		r.SkewMeasured = percentile(skews, 0.5).Round(100 * time.Microsecond).String()
	}
	for _, f := range []faultKind{faultDropParent, faultDuplicate, faultConflict, faultFlagFlip, faultTwoRoots, faultClockSkew} {
		if a := anomalies[f]; a != nil {
			r.Anomalies = append(r.Anomalies, a)
		}
	}
	return r
}

// findingKindOf is the finding kind an injected anomaly must produce.
func findingKindOf(f faultKind) string {
	switch f {
	case faultDropParent:
		return "missing_parent"
	case faultConflict:
		return "conflicting_span_id"
	case faultFlagFlip:
		return "sampled_flag_mismatch"
	case faultTwoRoots:
		return "multiple_roots"
	case faultClockSkew:
		return "clock_skew"
	}
	return ""
}

// judgeAnomaly checks one affected trace: the kind on every span that must carry it, and on
// no span outside the allowed set.
//   - drop_parent: required = allowed = the spans whose parent was dropped.
//   - conflicting_retry: both copies of each re-sent span.
//   - duplicate_retry: no finding; each re-sent span comes out exactly once.
//   - sampled_flag_flip: required = flipped spans under an unflipped sampled parent; allowed
//     also the unflipped children of flipped spans (the flag flips back there).
//   - two_roots: the trace-level kind multiple_roots.
//   - clock_skew_300ms: at least one span of the skewed (Node.js) service; allowed are its
//     spans and their children in other processes (the other side of the skewed edges).
func judgeAnomaly(a *anomalyReport, fault faultKind, tid pcommon.TraceID, what string, gt map[tracegen.SpanKey]gtSpan, gts []gtSpan, sets map[faultKind]map[tracegen.SpanKey]bool, recs []SpanRecord, traceKinds []string) {
	kind := a.Kind
	required := map[tracegen.SpanKey]bool{}
	allowed := map[tracegen.SpanKey]bool{}
	switch fault {
	case faultDropParent:
		for _, g := range gts {
			if sets[faultDropParent][tracegen.SpanKey{TraceID: tid, SpanID: g.Parent}] && !sets[faultDropParent][g.Key] {
				required[g.Key], allowed[g.Key] = true, true
			}
		}
	case faultConflict, faultDuplicate:
		for _, g := range gts {
			if sets[fault][g.Key] {
				required[g.Key], allowed[g.Key] = true, true
			}
		}
	case faultFlagFlip:
		for _, g := range gts {
			pk := tracegen.SpanKey{TraceID: tid, SpanID: g.Parent}
			p, ok := gt[pk]
			if !ok {
				continue
			}
			if sets[faultFlagFlip][g.Key] && !sets[faultFlagFlip][pk] && p.Flags&1 == 1 {
				required[g.Key], allowed[g.Key] = true, true
			}
			if !sets[faultFlagFlip][g.Key] && sets[faultFlagFlip][pk] {
				allowed[g.Key] = true
			}
		}
	case faultClockSkew:
		for _, g := range gts {
			if g.Service == svcNode {
				allowed[g.Key] = true
				continue
			}
			if p, ok := gt[tracegen.SpanKey{TraceID: tid, SpanID: g.Parent}]; ok && p.Service == svcNode {
				allowed[g.Key] = true
			}
		}
	}
	detected := true
	switch fault {
	case faultTwoRoots:
		a.Required++
		if contains(traceKinds, kind) {
			a.RequiredFound++
		} else {
			detected = false
			if len(a.Missed) < 5 {
				a.Missed = append(a.Missed, fmt.Sprintf("trace %s (%s): trace-level findings %v", tid, what, traceKinds))
			}
		}
	case faultDuplicate:
		count := map[tracegen.SpanKey]int{}
		for _, rec := range recs {
			count[rec.Key]++
		}
		for k := range required {
			a.Required++
			if count[k] == 1 {
				a.RequiredFound++
			} else {
				detected = false
				if count[k] > 1 {
					a.Wrong++
				}
				if len(a.Missed) < 5 {
					a.Missed = append(a.Missed, fmt.Sprintf("span %s (%s) came out %d times", keyString(k), gt[k].Name, count[k]))
				}
			}
		}
	case faultClockSkew:
		// The finding is on the child of an edge whose times disagree: a Node.js span under
		// its Python client, or, when that client's call outlasts the offset (a slow request)
		// so that the skewed server still starts inside it, the Java span under a Node.js
		// client, which starts before it. A trace whose times as sent disagree on no edge
		// (the first calls into a cold JVM: it accepts them as late as the offset) carries
		// no evidence; it is counted apart, and nothing may be found on it wrongly.
		if !skewEvident(tid, gt, gts) {
			a.NoEvidence++
			a.Traces--
			detected = false
			break
		}
		a.Required++
		found := false
		var carriers []string
		for _, rec := range recs {
			if contains(spanFindings(rec.Span), kind) {
				carriers = append(carriers, fmt.Sprintf("%s %q", serviceOf(rec.Resource), rec.Span.Name()))
				if allowed[rec.Key] {
					found = true
				}
			}
		}
		if found {
			a.RequiredFound++
		} else {
			detected = false
			if len(a.Missed) < 5 {
				a.Missed = append(a.Missed, fmt.Sprintf("trace %s (%s): no span of %s or under one carries %s (carried by %v)", tid, what, svcNode, kind, carriers))
			}
		}
	default:
		carried := map[tracegen.SpanKey]int{}
		for _, rec := range recs {
			if contains(spanFindings(rec.Span), kind) {
				carried[rec.Key]++
			}
		}
		for k := range required {
			want := 1
			if fault == faultConflict {
				want = 2
			}
			a.Required += want
			got := min(carried[k], want)
			a.RequiredFound += got
			if got < want {
				detected = false
				if len(a.Missed) < 5 {
					a.Missed = append(a.Missed, fmt.Sprintf("span %s %q of %s (%s): %d of %d copies carry %s", keyString(k), gt[k].Name, gt[k].Service, what, got, want, kind))
				}
			}
		}
		if len(required) == 0 {
			detected = false
			if len(a.Missed) < 5 {
				a.Missed = append(a.Missed, fmt.Sprintf("trace %s (%s): no span carries the anomaly (nothing to find)", tid, what))
			}
		}
	}
	if detected {
		a.TracesDetected++
	}
	for _, rec := range recs {
		for _, k := range spanFindings(rec.Span) {
			if k == kind && kind != "" {
				if !allowed[rec.Key] {
					a.Wrong++
					if len(a.WrongExamples) < 5 {
						a.WrongExamples = append(a.WrongExamples, fmt.Sprintf("span %s %q of %s", keyString(rec.Key), rec.Span.Name(), serviceOf(rec.Resource)))
					}
				}
				continue
			}
			a.OtherKinds[k]++
		}
	}
	for _, k := range traceKinds {
		if k != kind && !isSpanKind(k, recs) {
			a.OtherKinds["trace:"+k]++
		}
	}
}

// skewTimeline shows a trace's spans as their services sent them (ms from its first start),
// with parent, findings and the adjustment the correction applied.
func skewTimeline(gt map[tracegen.SpanKey]gtSpan, recs []SpanRecord) string {
	var t0 time.Time
	for _, rec := range recs {
		if g, ok := gt[rec.Key]; ok && (t0.IsZero() || g.Start.Before(t0)) {
			t0 = g.Start
		}
	}
	ms := func(at time.Time) float64 { return float64(at.Sub(t0)) / 1e6 }
	var sb strings.Builder
	fmt.Fprintf(&sb, "      times in ms after %d ns (Unix)\n", t0.UnixNano())
	for _, rec := range recs {
		g := gt[rec.Key]
		adj, _ := AttrString(rec.Span, names.AttrSkewAdjustment)
		fmt.Fprintf(&sb, "      %s <- %s %-14s %-7s %-24.24q [%13.6f, %13.6f] findings %v adjust %v\n", rec.Key.SpanID, g.Parent,
			strings.TrimPrefix(g.Service, "realapps-"), strings.TrimPrefix(g.Kind.String(), "SPAN_KIND_"), g.Name, ms(g.Start), ms(g.End), spanFindings(rec.Span), adj)
	}
	return strings.TrimRight(sb.String(), "\n")
}

// skewEvident says whether a trace's times, as its services sent them, show a clock
// disagreement on an edge between the skewed Node.js service and another: a child starting
// before its parent, or after its (synchronous) parent ended, by more than 2 ms (the
// stamping granularity of the two SDKs).
func skewEvident(tid pcommon.TraceID, gt map[tracegen.SpanKey]gtSpan, gts []gtSpan) bool {
	const tol = 2 * time.Millisecond
	for _, c := range gts {
		p, ok := gt[tracegen.SpanKey{TraceID: tid, SpanID: c.Parent}]
		if !ok || p.Service == c.Service || (p.Service != svcNode && c.Service != svcNode) {
			continue
		}
		if c.Start.Before(p.Start.Add(-tol)) || c.Start.After(p.End.Add(tol)) {
			return true
		}
	}
	return false
}

// judgeCorrection checks skew correction on one trace of the clock-skew scenario: only the
// skewed service's spans move, and its SERVER spans end up inside their frontend CLIENT
// parent: starting in it (1 ms slack for the Node.js SDK's millisecond start times), ending
// at most 100 ms after it (a third of the 300 ms offset: what correction must remove).
func judgeCorrection(a *anomalyReport, tid pcommon.TraceID, gt map[tracegen.SpanKey]gtSpan, recs []SpanRecord) {
	byKey := map[tracegen.SpanKey]SpanRecord{}
	shown := false
	for _, rec := range recs {
		byKey[rec.Key] = rec
		if _, ok := rec.Span.Attributes().Get(names.AttrSkewAdjustment); ok {
			a.Moved++
			if serviceOf(rec.Resource) != svcNode {
				a.MovedOutsideSkewed++
				if len(a.CorrectionMissed) < 5 {
					a.CorrectionMissed = append(a.CorrectionMissed, fmt.Sprintf("span %s %q of %s moved", keyString(rec.Key), rec.Span.Name(), serviceOf(rec.Resource)))
				}
				if !shown {
					shown = true
					a.CorrectionMissed = append(a.CorrectionMissed, "trace as sent:\n"+skewTimeline(gt, recs))
				}
			}
		}
	}
	// A server ends its span after it wrote the response, the client when it read it: on one
	// clock the SERVER span may end a little after its CLIENT parent (overhang), by as much
	// as a pause of the server's process between writing the answer and ending its span
	// (33 ms seen on a loaded machine). Small against the offset: an uncorrected or half
	// corrected span overhangs by about the 300 ms.
	const slack, overhang = time.Millisecond, 100 * time.Millisecond
	for _, rec := range recs {
		g := gt[rec.Key]
		if g.Service != svcNode || g.Kind != ptrace.SpanKindServer {
			continue
		}
		pk := tracegen.SpanKey{TraceID: tid, SpanID: g.Parent}
		p, ok := byKey[pk]
		if !ok || gt[pk].Service != svcPython {
			continue
		}
		a.SkewedServers++
		cs, ce := rec.Span.StartTimestamp().AsTime(), rec.Span.EndTimestamp().AsTime()
		ps, pe := p.Span.StartTimestamp().AsTime(), p.Span.EndTimestamp().AsTime()
		if !cs.Before(ps.Add(-slack)) && !cs.After(pe) && !ce.After(pe.Add(overhang)) {
			a.SkewedServersInside++
		} else if len(a.CorrectionMissed) < 5 {
			a.CorrectionMissed = append(a.CorrectionMissed, fmt.Sprintf("span %s %q of %s: [%s, %s] after correction, parent [%s, %s]",
				keyString(rec.Key), rec.Span.Name(), svcNode, cs.Sub(ps), ce.Sub(ps), time.Duration(0), pe.Sub(ps)))
			if !shown {
				shown = true
				a.CorrectionMissed = append(a.CorrectionMissed, "trace as sent:\n"+skewTimeline(gt, recs))
			}
		}
	}
}

// isSpanKind says whether a trace-level kind is also on one of the spans (the trace-level
// list repeats the span kinds; only the others are trace-level findings of their own).
func isSpanKind(kind string, recs []SpanRecord) bool {
	for _, rec := range recs {
		if contains(spanFindings(rec.Span), kind) {
			return true
		}
	}
	return false
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// resourceAttr is the resource's attribute key as a string, "" when absent.
func resourceAttr(res pcommon.Resource, key string) string {
	if v, ok := res.Attributes().Get(key); ok {
		return v.AsString()
	}
	return ""
}

func serviceOf(res pcommon.Resource) string {
	v, _ := res.Attributes().Get("service.name")
	return v.AsString()
}

func langOf(res pcommon.Resource) string {
	v, ok := res.Attributes().Get("telemetry.sdk.language")
	if !ok {
		return "unknown"
	}
	return v.AsString()
}

// timelineOf shows, for a trace not released whole, each ground-truth span (service, kind,
// name, end, arrival at the proxy) and the release part it came out in (its time), in the
// order the spans arrived; times relative to the trace's first span start.
func timelineOf(gts []gtSpan, recs []SpanRecord) string {
	if len(gts) == 0 {
		return ""
	}
	t0 := gts[0].Start
	for _, g := range gts {
		if g.Start.Before(t0) {
			t0 = g.Start
		}
	}
	lines := []int{}
	seen := map[int]time.Time{}
	part := map[tracegen.SpanKey]int{}
	for _, rec := range recs {
		if _, ok := seen[rec.Line]; !ok {
			seen[rec.Line] = rec.SeenAt
			lines = append(lines, rec.Line)
		}
	}
	sort.Slice(lines, func(i, j int) bool { return seen[lines[i]].Before(seen[lines[j]]) })
	idx := map[int]int{}
	for i, l := range lines {
		idx[l] = i + 1
	}
	for _, rec := range recs {
		if _, ok := part[rec.Key]; !ok {
			part[rec.Key] = idx[rec.Line]
		}
	}
	sorted := append([]gtSpan(nil), gts...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Arrived.Before(sorted[j].Arrived) })
	ms := func(at time.Time) string { return fmt.Sprintf("%+.0fms", float64(at.Sub(t0))/1e6) }
	var sb strings.Builder
	for i, l := range lines {
		fmt.Fprintf(&sb, "            part %d released at %s\n", i+1, ms(seen[l]))
	}
	for _, g := range sorted {
		fmt.Fprintf(&sb, "            %-16s %-8s %-28.28s end %8s arrived %8s part %d\n", strings.TrimPrefix(g.Service, "realapps-"),
			strings.TrimPrefix(g.Kind.String(), "SPAN_KIND_"), g.Name, ms(g.End), ms(g.Arrived), part[g.Key])
	}
	return strings.TrimRight(sb.String(), "\n")
}

func servicesOf(gts []gtSpan) string {
	m := map[string]int{}
	for _, g := range gts {
		m[strings.TrimPrefix(g.Service, "realapps-")]++
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// assert fails t on each target the scenario missed, unless REALAPPS_REPORT_ONLY=1; it
// always logs the report.
func (r *scenarioReport) assert(t *testing.T) {
	t.Helper()
	t.Logf("realapps %s (delay %s): %d traces sent (%d errors), %d whole in one release (%d of %d error traces), %d split (%d of the first 20 after the cold start not whole), %d incomplete, %d released before their last span arrived, %d late spans (%d sent late); latency from the frontend's last span end p50 %s p99 %s max %s; release reasons %v",
		r.Scenario, r.Delay, r.TracesSent, r.ErrorTraces, r.Whole, r.WholeErrors, r.ErrorTraces, r.Split, r.ColdNotWhole, r.Incomplete, r.ReleasedEarly, r.LateSpans, r.SentLate, r.LatencyP50, r.LatencyP99, r.LatencyMax, r.ReleaseReasons)
	if len(r.FaultedSpans) > 0 {
		t.Logf("realapps %s: spans faulted by the proxy: %v", r.Scenario, r.FaultedSpans)
	}
	t.Logf("realapps %s: export lag per service (span end to arrival, p50 / max): %v", r.Scenario, r.ExportLag)
	if r.SkewMeasured != "" {
		t.Logf("realapps %s: the skewed service announced %v", r.Scenario, r.SkewedHost)
		t.Logf("realapps %s: Node.js SERVER spans start %s after their Python CLIENT parent (median, ground truth)", r.Scenario, r.SkewMeasured)
	}
	t.Logf("realapps %s: processor metrics at the end: %v", r.Scenario, r.ProcessorMetrics)
	t.Logf("realapps %s: findings on %d healthy traces: %v", r.Scenario, r.HealthyTraces, r.HealthyFindings)
	for _, a := range r.Anomalies {
		t.Logf("realapps %s: anomaly %s (kind %q): %d traces, %d detected, required %d/%d, wrong spans %d, other kinds on these traces %v; %d more affected traces whose times show no skew",
			r.Scenario, a.Fault, a.Kind, a.Traces, a.TracesDetected, a.RequiredFound, a.Required, a.Wrong, a.OtherKinds, a.NoEvidence)
	}
	fail := t.Errorf
	if realappsReportOnly() {
		fail = t.Logf
	}
	if len(r.RequestErrors) > 0 {
		// The harness itself failed: not a target, always an error.
		t.Errorf("%s: %d requests failed, e.g. %v", r.Scenario, len(r.RequestErrors), r.RequestErrors[:min(5, len(r.RequestErrors))])
	}
	if n := r.TracesSent - len(r.RequestErrors); r.Whole != n || r.ReleasedEarly != 0 {
		fail("%s: %d of %d traces whole in one release (%d split (%d of the first 20 after the cold start not whole), %d incomplete, %d released before their last span arrived), e.g.\n  %s",
			r.Scenario, r.Whole, n, r.Split, r.ColdNotWhole, r.Incomplete, r.ReleasedEarly, strings.Join(r.notWhole, "\n  "))
	}
	if r.LateSpans > r.SentLate {
		fail("%s: %d late spans, but the applications sent only %d spans late (more than idle_timeout after their trace's previous span)", r.Scenario, r.LateSpans, r.SentLate)
	}
	// Known gaps of the skew rules (docs/ACCURACY.md): a rare false clock_skew under a Java
	// CLIENT span, and a correction that can move the wrong process when the skewed one's
	// evidence is weak. Outside REALAPPS_STRICT=1 they are held to a bound that catches a
	// regression (before the calibration, clock_skew was on two thirds of healthy traces)
	// instead of to zero, and reported.
	strict := os.Getenv("REALAPPS_STRICT") == "1"
	skewFalse, otherFalse := r.falseFindingsByKind()
	if skewBound := max(1, r.HealthyTraces/100); otherFalse > 0 || (strict && skewFalse > 0) || skewFalse > skewBound {
		fail("%s: %d findings on %d healthy traces %v, e.g.\n  %s", r.Scenario, skewFalse+otherFalse, r.HealthyTraces, r.HealthyFindings, strings.Join(r.falseFindings, "\n  "))
	} else if skewFalse > 0 {
		t.Logf("realapps %s: KNOWN GAP: %d false clock_skew on %d healthy traces (bound %d outside REALAPPS_STRICT=1), e.g.\n  %s", r.Scenario, skewFalse, r.HealthyTraces, skewBound, strings.Join(r.falseFindings, "\n  "))
	}
	for _, a := range r.Anomalies {
		if r.SkewCorrection && a.Fault == faultClockSkew {
			t.Logf("realapps %s: skew correction moved %d spans (%d of other services than %s); %d of %d %s SERVER spans inside their %s CLIENT parent after it",
				r.Scenario, a.Moved, a.MovedOutsideSkewed, svcNode, a.SkewedServersInside, a.SkewedServers, svcNode, svcPython)
			if a.SkewedServers == 0 {
				fail("%s: skew correction: no %s SERVER span to judge", r.Scenario, svcNode)
			} else if a.MovedOutsideSkewed != 0 || a.SkewedServersInside != a.SkewedServers {
				known := t.Logf
				if strict {
					known = fail
				}
				known("KNOWN GAP: %s: skew correction: %d of %d %s SERVER spans inside their parent after it, %d spans of other services moved; e.g. %v",
					r.Scenario, a.SkewedServersInside, a.SkewedServers, svcNode, a.MovedOutsideSkewed, a.CorrectionMissed)
			}

		}
		wrongBound := 0
		if a.Fault == faultClockSkew && !strict {
			// The same known gap: the pass may blame the caller's process for a trace or two.
			wrongBound = max(2, a.Traces/10)
		}
		if a.Wrong > 0 && a.Wrong <= wrongBound {
			t.Logf("realapps %s: KNOWN GAP: anomaly %s: %q on %d spans that do not carry it (bound %d outside REALAPPS_STRICT=1) %v", r.Scenario, a.Fault, a.Kind, a.Wrong, wrongBound, a.WrongExamples)
		}
		if a.TracesDetected != a.Traces || a.Wrong > wrongBound {
			fail("%s: anomaly %s: %q found in %d of %d affected traces (required spans %d/%d), on %d spans that do not carry it %v; missed e.g. %v",
				r.Scenario, a.Fault, a.Kind, a.TracesDetected, a.Traces, a.RequiredFound, a.Required, a.Wrong, a.WrongExamples, a.Missed)
		}
	}
}
