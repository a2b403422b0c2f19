package bench

import (
	"context"
	"sort"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// recordingSink keeps what it receives.
type recordingSink struct {
	countingSink
	got []ptrace.Traces
}

func (s *recordingSink) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	s.got = append(s.got, td)
	return s.countingSink.ConsumeTraces(ctx, td)
}

// spanKey is a span as the test compares it: its trace and span ID, its resource's service
// and scope name, and its whole encoding (attributes, events, status).
type spanKey struct {
	trace, span, service, scope string
	proto                       string
}

func spanKeys(tds []ptrace.Traces) []spanKey {
	var keys []spanKey
	for _, td := range tds {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			svc, _ := rss.At(i).Resource().Attributes().Get("service.name")
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				spans := sss.At(j).Spans()
				for k := 0; k < spans.Len(); k++ {
					sp := spans.At(k)
					one := ptrace.NewTraces()
					sp.CopyTo(one.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans().AppendEmpty())
					b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(one)
					if err != nil {
						panic(err)
					}
					keys = append(keys, spanKey{trace: sp.TraceID().String(), span: sp.SpanID().String(),
						service: svc.AsString(), scope: sss.At(j).Scope().Name(), proto: string(b)})
				}
			}
		}
	}
	sort.Slice(keys, func(a, b int) bool {
		if keys[a].trace != keys[b].trace {
			return keys[a].trace < keys[b].trace
		}
		return keys[a].span < keys[b].span
	})
	return keys
}

// TestDrop90KeepsExactlyTheSampledTraces: drop90 splits interleaved batches by trace at the
// wire level; what it passes on is, span for span (with its resource and scope), the input's
// spans of the traces keptByTraceID keeps, and it counts every other span as dropped.
func TestDrop90KeepsExactlyTheSampledTraces(t *testing.T) {
	cfg := workloadConfig(300)
	cfg.ErrorProbability = -1
	g, err := tracegen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sink := &recordingSink{}
	d := newDrop90(time.Hour, sink)
	var want []ptrace.Traces
	total, keptTraces := 0, map[[16]byte]bool{}
	for td := range g.Batches(0, 1).All() {
		total += td.SpanCount()
		kept := ptrace.NewTraces()
		td.CopyTo(kept)
		kept.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool {
			rs.ScopeSpans().RemoveIf(func(ss ptrace.ScopeSpans) bool {
				ss.Spans().RemoveIf(func(sp ptrace.Span) bool {
					k := keptByTraceID(sp.TraceID())
					if k {
						keptTraces[sp.TraceID()] = true
					}
					return !k
				})
				return ss.Spans().Len() == 0
			})
			return rs.ScopeSpans().Len() == 0
		})
		want = append(want, kept)
		if err := d.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	if len(keptTraces) == 0 || len(keptTraces) > 100 {
		t.Fatalf("%d of 300 traces pass the 10 %% threshold: the test needs some kept and most dropped", len(keptTraces))
	}
	// Nothing is due within the hour; a release at a cutoff after every batch decides all.
	d.release(time.Now().Add(-time.Minute))
	if sink.spans.Load() != 0 || d.dropped.Load() != 0 {
		t.Fatalf("released before the wait: %d spans out, %d dropped", sink.spans.Load(), d.dropped.Load())
	}
	d.release(time.Now().Add(time.Second))
	wantKeys, gotKeys := spanKeys(want), spanKeys(sink.got)
	if len(gotKeys) != len(wantKeys) {
		t.Fatalf("passed on %d spans, want the %d of the %d kept traces", len(gotKeys), len(wantKeys), len(keptTraces))
	}
	for i := range wantKeys {
		if gotKeys[i] != wantKeys[i] {
			t.Fatalf("span %d differs:\n got %+v\nwant %+v", i, gotKeys[i], wantKeys[i])
		}
	}
	if got := sink.spans.Load() + d.dropped.Load(); got != int64(total) {
		t.Fatalf("kept %d + dropped %d = %d, sent %d", sink.spans.Load(), d.dropped.Load(), got, total)
	}
	if len(d.traces) != 0 {
		t.Fatalf("%d traces still held", len(d.traces))
	}
}

// TestDroppedSpansMeterCountsOursDrops: our processor with the sampling rows' policy on the
// sampling workload; the spans at the sink plus those counted through its sampling_spans
// counter (decision=dropped) are the spans sent, and the dropped ones are those of the traces
// the trace-ID threshold refuses.
func TestDroppedSpansMeterCountsOursDrops(t *testing.T) {
	cfg := workloadConfig(300)
	cfg.ErrorProbability = -1
	g, err := tracegen.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sink := &countingSink{}
	proc, err := newCountedProcessor(procSpec{kind: kindOursSampling, wait: 50 * time.Millisecond}, sink)
	if err != nil {
		t.Fatal(err)
	}
	var total, wantDropped int64
	for td := range g.Batches(0, 1).All() {
		total += int64(td.SpanCount())
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				spans := sss.At(j).Spans()
				for k := 0; k < spans.Len(); k++ {
					if !keptByTraceID(spans.At(k).TraceID()) {
						wantDropped++
					}
				}
			}
		}
		if err := proc.ConsumeTraces(context.Background(), td); err != nil {
			t.Fatal(err)
		}
	}
	if err := proc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := sink.droppedSpans(); got != wantDropped {
		t.Errorf("dropped %d spans, want %d (the traces below the threshold)", got, wantDropped)
	}
	if got := sink.accounted(); got != total {
		t.Errorf("sink %d + dropped %d = %d, sent %d", sink.spans.Load(), sink.droppedSpans(), got, total)
	}
}
