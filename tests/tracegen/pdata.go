package tracegen

import (
	"iter"
	"math/rand/v2"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// ScopeName is the instrumentation scope of every generated span.
const ScopeName = "github.com/traceconsistency/traceconsistency/tests/tracegen"

// ScopeVersion is the instrumentation scope version.
const ScopeVersion = "0.1.0"

// Generate plans the whole workload and returns it as ptrace.Traces batches
// of Config.SpansPerBatch spans (the last may be smaller), with the spans of
// Config.Interleave traces mixed so a trace arrives in several batches, plus
// the ground truth.
func Generate(cfg Config) ([]ptrace.Traces, *Truth, error) {
	g, err := New(cfg)
	if err != nil {
		return nil, nil, err
	}
	b := g.Batches(0, 1)
	var out []ptrace.Traces
	for td := range b.All() {
		out = append(out, td)
	}
	return out, b.Truth(), nil
}

// Batches iterates over the batches of one shard of the workload.
type Batches struct {
	g      *Generator
	next   int
	step   int
	rng    *rand.Rand
	active []*cursor
	truth  *Truth
}

type cursor struct {
	tr  *Trace
	pos int
}

// Batches returns an iterator over the traces i with i%shards == shard
// (use 0, 1 for the whole workload). Shards are independent and
// deterministic, so concurrent senders can each take one.
func (g *Generator) Batches(shard, shards int) *Batches {
	if shards < 1 {
		shards = 1
	}
	return &Batches{
		g:     g,
		next:  shard,
		step:  shards,
		rng:   rand.New(rand.NewPCG(uint64(g.cfg.Seed)^0xba7c4e5, uint64(shard))),
		truth: &Truth{},
	}
}

// Next returns the next batch, or false when the shard is exhausted.
func (b *Batches) Next() (ptrace.Traces, bool) {
	spans := b.nextSpans()
	if len(spans) == 0 {
		return ptrace.Traces{}, false
	}
	return b.g.Render(spans), true
}

// All returns the remaining batches as an iterator.
func (b *Batches) All() iter.Seq[ptrace.Traces] {
	return func(yield func(ptrace.Traces) bool) {
		for {
			td, ok := b.Next()
			if !ok || !yield(td) {
				return
			}
		}
	}
}

// Truth returns the ground truth of every trace that has started to be
// emitted so far (all traces of the shard once Next returned false).
func (b *Batches) Truth() *Truth { return b.truth }

func (b *Batches) nextSpans() []*Span {
	cfg := b.g.cfg
	var picked []*Span
	for len(picked) < cfg.SpansPerBatch {
		for len(b.active) < cfg.Interleave && b.next < cfg.Traces {
			tr := b.g.Plan(b.next)
			b.next += b.step
			b.truth.Add(tr.Truth)
			b.active = append(b.active, &cursor{tr: tr})
		}
		if len(b.active) == 0 {
			break
		}
		k := b.rng.IntN(len(b.active))
		c := b.active[k]
		n := len(c.tr.Emit)
		chunk := 1 + b.rng.IntN(max(1, (n+2)/3))
		chunk = min(chunk, n-c.pos, cfg.SpansPerBatch-len(picked))
		picked = append(picked, c.tr.Emit[c.pos:c.pos+chunk]...)
		c.pos += chunk
		if c.pos >= n {
			last := len(b.active) - 1
			b.active[k] = b.active[last]
			b.active = b.active[:last]
		}
	}
	return picked
}

// Traces renders the whole trace (every record of Emit) as one batch.
func (g *Generator) TraceBatch(tr *Trace) ptrace.Traces { return g.Render(tr.Emit) }

// Render renders span records into one ptrace.Traces: one ResourceSpans per
// service (in order of first appearance), one ScopeSpans each.
func (g *Generator) Render(spans []*Span) ptrace.Traces {
	td := ptrace.NewTraces()
	slots := make([]ptrace.SpanSlice, len(g.services))
	have := make([]bool, len(g.services))
	for _, s := range spans {
		if !have[s.Service] {
			rs := td.ResourceSpans().AppendEmpty()
			putAttrs(rs.Resource().Attributes(), g.services[s.Service].Resource)
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(ScopeName)
			ss.Scope().SetVersion(ScopeVersion)
			slots[s.Service] = ss.Spans()
			have[s.Service] = true
		}
		fillSpan(slots[s.Service].AppendEmpty(), s)
	}
	return td
}

func putAttrs(m pcommon.Map, attrs []Attr) {
	m.EnsureCapacity(len(attrs))
	for _, a := range attrs {
		if a.IsInt {
			m.PutInt(a.Key, a.Int)
		} else {
			m.PutStr(a.Key, a.Str)
		}
	}
}

func fillSpan(sp ptrace.Span, s *Span) {
	sp.SetTraceID(s.TraceID)
	sp.SetSpanID(s.SpanID)
	sp.SetParentSpanID(s.ParentSpanID)
	sp.SetFlags(s.Flags)
	sp.SetName(s.Name)
	sp.SetKind(s.Kind)
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(s.Start))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(s.End))
	putAttrs(sp.Attributes(), s.Attrs)
	if len(s.Events) > 0 {
		evs := sp.Events()
		evs.EnsureCapacity(len(s.Events))
		for _, e := range s.Events {
			ev := evs.AppendEmpty()
			ev.SetName(e.Name)
			ev.SetTimestamp(pcommon.NewTimestampFromTime(e.Time))
			putAttrs(ev.Attributes(), e.Attrs)
		}
	}
	if s.Error {
		sp.Status().SetCode(ptrace.StatusCodeError)
		sp.Status().SetMessage(s.StatusMsg)
	}
}
