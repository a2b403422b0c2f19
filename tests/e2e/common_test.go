package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// stampRe is the fixed-width HLC stamp: 20-digit wall ns, '.', 10-digit logical.
var stampRe = regexp.MustCompile(`^[0-9]{20}\.[0-9]{10}$`)

// requireProcessor skips tests that only make sense with our processor.
func requireProcessor(t *testing.T) {
	t.Helper()
	if WithoutProcessor() {
		t.Skipf("%s=1: this test needs the traceconsistency processor", EnvWithoutProcessor)
	}
}

// lineSet returns the distinct output lines the records are on, sorted.
func lineSet(recs []SpanRecord) []int {
	var out []int
	for _, r := range recs {
		if !slices.Contains(out, r.Line) {
			out = append(out, r.Line)
		}
	}
	sort.Ints(out)
	return out
}

// expectedCounts returns how many times each span key must appear in the
// output for the traces of truth: once per record sent, except that an
// exact duplicate (duplicate_span) is dropped, so its key appears once.
// Plans are re-derived from g (deterministic for a fixed BaseTime).
func expectedCounts(g *tracegen.Generator, truth *tracegen.Truth) (map[tracegen.SpanKey]int, int) {
	want := map[tracegen.SpanKey]int{}
	total := 0
	for _, tt := range truth.Traces {
		tr := g.Plan(tt.Index)
		for _, s := range tr.Emit {
			if s.Copy && tr.Broken == tracegen.DuplicateSpan {
				continue
			}
			want[s.Key()]++
			total++
		}
	}
	return want, total
}

// checkCounts compares the span keys of recs with want (key -> count).
func checkCounts(el *errorLimiter, recs []SpanRecord, want map[tracegen.SpanKey]int) {
	got := map[tracegen.SpanKey]int{}
	for _, r := range recs {
		got[r.Key]++
	}
	for k, n := range got {
		if want[k] == 0 {
			el.Errorf("unexpected span", "%v arrived %d times but was never sent", k, n)
		}
	}
	for k, n := range want {
		if got[k] != n {
			el.Errorf("wrong count", "span %v arrived %d times, want %d", k, got[k], n)
		}
	}
}

// waitSpansAcross polls the outputs of several collectors until together
// they hold at least n span records (bounded; fails the test at the
// deadline or when a collector exits).
func waitSpansAcross(t *testing.T, timeout time.Duration, n int, cs ...*Collector) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		total := 0
		for _, c := range cs {
			if err := c.Output().Poll(); err != nil {
				t.Fatalf("reading output of %s: %v", c.Dir, err)
			}
			total += SpanCount(c.Output().Lines())
			if c.Exited() {
				t.Fatalf("collector %s exited while waiting for %d spans", c.Dir, n)
			}
		}
		if total >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %d spans across %d collectors; have %d", timeout, n, len(cs), total)
		}
		<-tick.C
	}
}

// sendSDK is Collector.SendSDK with a check that the SDK exporters had every
// record acknowledged.
func sendSDK(t *testing.T, c *Collector, g *tracegen.Generator) tracegen.SendResult {
	t.Helper()
	res := c.SendSDK(g, 60*time.Second)
	if res.Traces != g.Config().Traces {
		t.Fatalf("sent %d traces, want %d", res.Traces, g.Config().Traces)
	}
	if want := res.Truth.Records(); res.Spans != want {
		t.Fatalf("the receiver acknowledged %d span records, the ground truth has %d", res.Spans, want)
	}
	t.Logf("sent %d traces, %d span records in %d export requests in %v",
		res.Traces, res.Spans, res.Requests, res.Elapsed.Round(time.Millisecond))
	return res
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf("%s=%d ", k, m[k])
	}
	return s
}
