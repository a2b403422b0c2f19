package bench

import (
	"encoding/binary"
	"fmt"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// workloadConfig is the generated workload of every benchmark: tracegen's realistic defaults
// (6 services = 6 resources, 5–50 spans per trace, 10 attributes per span, events on a
// quarter of the spans, 100 spans per batch, the spans of 8 traces interleaved so each trace
// arrives in several batches), healthy traces only, fixed seed and base time.
func workloadConfig(traces int) tracegen.Config {
	return tracegen.Config{
		Seed:     6,
		Traces:   traces,
		BaseTime: time.Now().Add(-time.Second).Truncate(time.Second),
	}
}

// poolTraces is the size of the throughput pool. Loops longer than the pool replay it with
// fresh trace IDs (see pool.batch), so the pool only has to be much larger than what one
// wait holds.
const poolTraces = 4000

// poolShards splits the pool into runs of poolTraces/poolShards traces whose batches hold
// no span of another run, so that a loop can stop at the end of a run without leaving
// traces half sent (a half-sent trace is incomplete for us and waits for idle_timeout).
const poolShards = 125

// pool is a pre-generated workload of ptrace batches for the throughput loops.
type pool struct {
	batches []ptrace.Traces
	spans   []int // spans per batch
	// cut[i]: batch i ends a run (no trace continues after it)
	cut []bool
	// tag[i] is the generation whose trace IDs batch i currently carries.
	tag []uint64
	// total spans in one pass over the pool
	total int
	// retagged counts spans whose trace ID was rewritten (for the report)
	retagged int64
	// next is where the next throughput loop starts in the stream (loops run one at a time)
	next int
}

var (
	poolOnce sync.Once
	thePool  *pool
	poolErr  error

	samplingPoolOnce sync.Once
	theSamplingPool  *pool
	samplingPoolErr  error
)

// getPool generates the throughput pool once per process (outside every timer).
func getPool() (*pool, error) {
	poolOnce.Do(func() { thePool, poolErr = newPool(workloadConfig(poolTraces)) })
	return thePool, poolErr
}

// getSamplingPool generates the pool of the sampling rows once per process: the throughput
// workload without error spans (the same generator settings and seed with
// ErrorProbability < 0: the same shapes and sizes, no error status and no exception events;
// the random draws differ from there on), so that the benchmark policy keeps exactly the 10 %
// its probabilistic default keeps (sampling.go). In the throughput workload about 4 in 5
// traces have an error span (5 % of spans, 5–50 spans per trace): "keep errors" would keep
// most of it.
func getSamplingPool() (*pool, error) {
	samplingPoolOnce.Do(func() {
		cfg := workloadConfig(poolTraces)
		cfg.ErrorProbability = -1
		theSamplingPool, samplingPoolErr = newPool(cfg)
	})
	return theSamplingPool, samplingPoolErr
}

// poolFor is the pool a throughput row of kind runs on.
func poolFor(kind string) (*pool, error) {
	if kind == kindOursSampling || kind == kindDrop90 {
		return getSamplingPool()
	}
	return getPool()
}

func newPool(cfg tracegen.Config) (*pool, error) {
	g, err := tracegen.New(cfg)
	if err != nil {
		return nil, err
	}
	p := &pool{}
	for s := 0; s < poolShards; s++ {
		for td := range g.Batches(s, poolShards).All() {
			p.batches = append(p.batches, td)
			p.spans = append(p.spans, td.SpanCount())
			p.cut = append(p.cut, false)
			p.total += td.SpanCount()
		}
		p.cut[len(p.cut)-1] = true
	}
	p.tag = make([]uint64, len(p.batches))
	return p, nil
}

// endsRun reports whether batch i of the stream ends a run of whole traces.
// (i = -1, before the stream starts, counts as the end of a run.)
func (p *pool) endsRun(i int) bool { return i < 0 || p.cut[i%len(p.batches)] }

// genKey is what generation g XORs into the first 8 bytes of every trace ID (0 for g = 0).
func genKey(g uint64) uint64 { return g * 0x9e3779b97f4a7c15 }

// batch returns the i-th batch of an endless stream: pass i/len(batches) over the pool.
// From the second pass on, the batch's trace IDs are rewritten in place (XOR of the pass
// number into the first 8 bytes) so that no trace ID repeats within one processor's run:
// a repeated ID would become a late span or a duplicate for us and a second group for
// groupbytrace. The rewrite costs ~15 ns per span and is paid inside the timed loop, equally
// by all three processors. It is safe because every processor under test has finished
// reading a batch when ConsumeTraces returns (ours marshals it, groupbytrace copies it,
// passthrough hands it to the counting sink synchronously).
func (p *pool) batch(i int) (ptrace.Traces, int) {
	k := i % len(p.batches)
	gen := uint64(i / len(p.batches))
	td := p.batches[k]
	if p.tag[k] != gen {
		x := genKey(p.tag[k]) ^ genKey(gen)
		rss := td.ResourceSpans()
		for r := 0; r < rss.Len(); r++ {
			sss := rss.At(r).ScopeSpans()
			for s := 0; s < sss.Len(); s++ {
				spans := sss.At(s).Spans()
				for j := 0; j < spans.Len(); j++ {
					sp := spans.At(j)
					id := sp.TraceID()
					binary.LittleEndian.PutUint64(id[:8], binary.LittleEndian.Uint64(id[:8])^x)
					sp.SetTraceID(id)
				}
			}
		}
		p.tag[k] = gen
		p.retagged += int64(p.spans[k])
	}
	return td, p.spans[k]
}

// wirePool is a workload kept serialized (OTLP protobuf) in an anonymous mmap, outside the
// Go heap, so that it neither adds to the live heap the GC marks nor moves the GC pacer.
// The buffer-memory study unmarshals each batch right before ConsumeTraces, as a receiver
// does.
type wirePool struct {
	mem     []byte
	offsets []int // batch i is mem[offsets[i]:offsets[i+1]]
	spans   []int
	total   int
}

func newWirePool(traces int) (*wirePool, error) {
	g, err := tracegen.New(workloadConfig(traces))
	if err != nil {
		return nil, err
	}
	var encoded [][]byte
	size := 0
	w := &wirePool{}
	m := &ptrace.ProtoMarshaler{}
	for td := range g.Batches(0, 1).All() {
		b, err := m.MarshalTraces(td)
		if err != nil {
			return nil, err
		}
		encoded = append(encoded, b)
		w.spans = append(w.spans, td.SpanCount())
		w.total += td.SpanCount()
		size += len(b)
	}
	mem, err := syscall.Mmap(-1, 0, max(size, 1), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	off := 0
	for _, b := range encoded {
		w.offsets = append(w.offsets, off)
		off += copy(mem[off:], b)
	}
	w.offsets = append(w.offsets, off)
	w.mem = mem
	return w, nil
}

func (w *wirePool) len() int { return len(w.spans) }

// batch unmarshals batch i (pdata copies every string and byte field, so nothing points into
// the mmap afterwards).
func (w *wirePool) batch(i int) (ptrace.Traces, error) {
	return (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(w.mem[w.offsets[i]:w.offsets[i+1]])
}

func (w *wirePool) bytes() int { return w.offsets[len(w.offsets)-1] }
