package tracegen

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// stepClock is an injected clock: every read returns a later time (1ms
// steps from start) and remembers it.
type stepClock struct {
	now  time.Time
	last time.Time
}

func (c *stepClock) read() time.Time {
	c.now = c.now.Add(time.Millisecond)
	c.last = c.now
	return c.now
}

// futureSpan reports whether sp is the span that future_timestamp puts in
// the future on purpose (the only span allowed to end after generation).
func futureSpan(tr *Trace, key SpanKey) bool {
	return tr.Broken == FutureTimestamp && tr.Truth.Affected == key
}

// TestPDataSpansEndBeforeGeneration: in pdata mode (LiveClock, as the
// tracegen command runs) every span of every rendered batch ends at or
// before the clock reading taken when its trace was generated, for healthy
// traces and every broken kind (skewed_child included) except the one
// future_timestamp span.
func TestPDataSpansEndBeforeGeneration(t *testing.T) {
	for _, live := range []bool{true, false} {
		clk := &stepClock{now: fixedBase}
		g := MustNew(Config{
			Seed: 21, Traces: 3 * 2 * len(AllBrokenKinds()), Broken: AllBrokenKinds(), BrokenEvery: 2,
			SpansPerBatch: 30, Interleave: 4, LiveClock: live, Now: clk.read,
		})
		if !live && !g.BaseTime().Equal(fixedBase.Add(time.Millisecond)) {
			t.Fatalf("BaseTime %v did not come from the injected clock", g.BaseTime())
		}
		plans := map[SpanKey]*Trace{}
		for i := 0; i < g.Config().Traces; i++ {
			tr := g.Plan(i)
			for _, s := range tr.Emit {
				plans[s.Key()] = tr
			}
		}
		b := g.Batches(0, 1)
		spans := 0
		for {
			td, ok := b.Next()
			if !ok {
				break
			}
			generated := clk.last // the latest clock reading: no trace of this batch was planned later
			rss := td.ResourceSpans()
			for i := 0; i < rss.Len(); i++ {
				sss := rss.At(i).ScopeSpans()
				for j := 0; j < sss.Len(); j++ {
					sps := sss.At(j).Spans()
					for k := 0; k < sps.Len(); k++ {
						sp := sps.At(k)
						spans++
						key := SpanKey{TraceID: sp.TraceID(), SpanID: sp.SpanID()}
						if tr := plans[key]; tr != nil && futureSpan(tr, key) {
							continue
						}
						if end := sp.EndTimestamp().AsTime(); end.After(generated) {
							t.Fatalf("live=%v: span %v (%s) ends at %v, after its generation at %v",
								live, key, sp.Name(), end, generated)
						}
						if sp.EndTimestamp() < sp.StartTimestamp() {
							t.Fatalf("live=%v: span %v has a negative duration", live, key)
						}
					}
				}
			}
		}
		if spans == 0 {
			t.Fatal("no spans generated")
		}
	}
}

// TestPlanEndsBeforeGeneration: what SDK mode ends its spans with is the
// plan; every planned span (withheld and duplicate ones too) ends at or
// before the clock reading of its Plan call, and skewed_child keeps its
// skew relative to its parent while the whole trace moves back.
func TestPlanEndsBeforeGeneration(t *testing.T) {
	clk := &stepClock{now: fixedBase}
	g := MustNew(Config{Seed: 4, Traces: 10 * len(AllBrokenKinds()), Broken: AllBrokenKinds(), BrokenEvery: 1,
		LiveClock: true, Now: clk.read})
	skewed := 0
	for i := 0; i < g.Config().Traces; i++ {
		tr := g.Plan(i)
		generated := clk.last
		for _, s := range tr.Spans {
			if futureSpan(tr, s.Key()) && !s.Copy {
				continue
			}
			if s.End.After(generated) {
				t.Fatalf("trace %d (%s): span %s ends %v after its generation", i, tr.Broken, s.Name, s.End.Sub(generated))
			}
		}
		if tr.Broken == SkewedChild {
			skewed++
			var s *Span
			for _, x := range tr.Spans {
				if x.Key() == tr.Truth.Affected {
					s = x
				}
			}
			if s == nil || s.Parent == nil || s.Kind != ptrace.SpanKindServer {
				t.Fatalf("trace %d: skewed span not found", i)
			}
			if d := s.Start.Sub(s.Parent.Start); d < g.Config().Skew {
				t.Fatalf("trace %d: skew %v, want at least %v", i, d, g.Config().Skew)
			}
		}
	}
	if skewed == 0 {
		t.Fatal("no skewed_child trace planned")
	}
}
