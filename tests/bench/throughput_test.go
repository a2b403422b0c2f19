package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// throughputWaits are the waits (groupbytrace wait_duration = our quiet_period = the
// roundtrip floor's hold) of the throughput runs: 100ms, and 1s, both processors' default.
var throughputWaits = []time.Duration{100 * time.Millisecond, time.Second}

// throughputSpecs are the processors compared at each wait.
func throughputSpecs(wait time.Duration) []procSpec {
	var specs []procSpec
	if wait == throughputWaits[0] {
		// passthrough holds nothing: its row does not depend on the wait
		specs = append(specs, procSpec{kind: kindPassthrough, wait: wait})
	}
	return append(specs, []procSpec{
		{kind: kindRoundtrip, wait: wait},
		{kind: kindGroupByTrace, wait: wait, workers: 1}, // its default num_workers
		{kind: kindOurs, wait: wait},                     // num_shards 0 = four per core
		{kind: kindDrop90, wait: wait},
		{kind: kindOursSampling, wait: wait},
	}...)
}

// The method: each measured loop ingests for ingestFor(wait), at least 20 waits, so that the
// final wait (the drain, in which an assembling processor only waits for its last traces to
// come due) is under 5 % of the measured time; spans/s over the ingest phase and the drain's
// length are reported apart as well. Every row is run benchRuns times, the rows interleaved
// (run 1 of every row, then run 2, ...), and the report gives the median and the spread.
//
// Environment: TC_BENCH_RUNS (default 3), TC_BENCH_MIN_INGEST (default 5s; the loop lasts
// max(this, 20 × wait)), TC_BENCH_KINDS (comma list of kinds to run; default all),
// TC_BENCH_LAG (the lag bound in waits, default 3), TC_BENCH_RELEASE_BATCH (our
// max_release_batch_spans; default the processor's).
func benchRuns() int {
	if n, err := strconv.Atoi(os.Getenv("TC_BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 3
}

func ingestFor(wait time.Duration) time.Duration {
	min := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TC_BENCH_MIN_INGEST")); err == nil && d > 0 {
		min = d
	}
	return max(min, 20*wait)
}

// warmupFor is the untimed warm-up of a row: TC_BENCH_WARMUP (default 0, none) for the
// engine's rows. The engine learns which calls get a child and each service's export lag,
// and until it has seen a service for 15 s it waits for a missing child as long as the SDKs'
// default 5 s export delay; a row that starts cold measures that start (docs/DESIGN.md, "What
// is still coming"). With a warm-up of 16s or more the timed region is past it.
func warmupFor(spec procSpec) time.Duration {
	if spec.kind != kindOurs && spec.kind != kindOursSampling {
		return 0
	}
	d, err := time.ParseDuration(os.Getenv("TC_BENCH_WARMUP"))
	if err != nil || d < 0 {
		return 0
	}
	return d
}

func kindSelected(kind string) bool {
	sel := os.Getenv("TC_BENCH_KINDS")
	if sel == "" {
		return true
	}
	for _, k := range strings.Split(sel, ",") {
		if k == kind {
			return true
		}
	}
	return false
}

type tpResult struct {
	spec   procSpec
	d      delta
	ingest time.Duration // from the first ConsumeTraces until the last one returned
	// blocked is the part of ingest the loop was held back by lagBound
	blocked time.Duration
	// dropped: spans the processor dropped by sampling (its own count); the rest reached the sink
	dropped int64
}

// keptSpans is the spans that reached the sink.
func (r tpResult) keptSpans() int64 { return r.d.spans - r.dropped }

// ingestSpansPerSec is spans / ingest phase.
func (r tpResult) ingestSpansPerSec() float64 { return float64(r.d.spans) / r.ingest.Seconds() }

// drain is the time from the last ConsumeTraces until the sink had every span.
func (r tpResult) drain() time.Duration { return r.d.elapsed - r.ingest }

var (
	resultsMu  sync.Mutex
	tpResults  = map[string][]tpResult{} // key: wait/name; one entry per run
	tpOrder    []string
	drainTimes = time.Minute
)

func recordThroughput(key string, r tpResult) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if _, ok := tpResults[key]; !ok {
		tpOrder = append(tpOrder, key)
	}
	tpResults[key] = append(tpResults[key], r)
}

// BenchmarkThroughput pushes the generated workload (~100-span batches) through each
// processor into a counting sink for ingestFor(wait). The timed region runs from the first
// ConsumeTraces until the sink has received every span (so the release path, running on
// the processors' own goroutines, is inside it); allocations and CPU are those of the whole
// process over the same region. b.N is not used: run it with -benchtime 1x.
func BenchmarkThroughput(b *testing.B) {
	for run := 1; run <= benchRuns(); run++ {
		for _, wait := range throughputWaits {
			for _, spec := range throughputSpecs(wait) {
				if !kindSelected(spec.kind) {
					continue
				}
				key := fmt.Sprintf("wait=%s/%s", wait, spec.name())
				pl, err := poolFor(spec.kind)
				if err != nil {
					b.Fatal(err)
				}
				b.Run(fmt.Sprintf("%s/run=%d", key, run), func(b *testing.B) {
					runThroughput(b, key, spec, pl)
				})
			}
		}
	}
}

func runThroughput(b *testing.B, key string, spec procSpec, pl *pool) {
	sink := &countingSink{}
	proc, err := newCountedProcessor(spec, sink)
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := proc.Shutdown(ctx); err != nil {
			b.Errorf("shutdown: %v", err)
		}
	}()
	ctx := context.Background()
	var spans int64
	i := pl.next
	// The warm-up (untimed, engine rows only): the same loop for warmupFor(spec), until the
	// sink has it all, so that the timed region sees the engine past its cold start.
	if warm := warmupFor(spec); warm > 0 {
		wl := newLagBound(spec.wait)
		for start := time.Now(); time.Since(start) < warm || !pl.endsRun(i-1); i++ {
			if pl.endsRun(i - 1) {
				wl.wait(sink, spans)
			}
			td, n := pl.batch(i)
			spans += int64(n)
			if err := proc.ConsumeTraces(ctx, td); err != nil {
				b.Fatalf("ConsumeTraces (warm-up): %v", err)
			}
		}
		if err := sink.waitFor(spans, drainTimes); err != nil {
			b.Fatal(err)
		}
	}
	warmSpans, warmDropped := spans, sink.droppedSpans()
	runtime.GC()
	dur := ingestFor(spec.wait)
	b.ResetTimer()
	before := takeSnapshot()
	// Until dur has passed, then on to the end of the current run of traces (at most ~9
	// batches more), so that every trace is sent whole; the metrics are per span sent. The
	// stream continues where the previous loop of this process stopped (fresh trace IDs).
	lag := newLagBound(spec.wait)
	for ; time.Since(before.wall) < dur || !pl.endsRun(i-1); i++ {
		if pl.endsRun(i - 1) {
			// only between runs of whole traces: a pause inside a trace would split it for
			// groupbytrace, whose wait starts at a trace's first span
			lag.wait(sink, spans)
		}
		td, n := pl.batch(i)
		spans += int64(n)
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			b.Fatalf("ConsumeTraces: %v", err)
		}
	}
	pl.next = i
	ingest := time.Since(before.wall)
	if err := sink.waitFor(spans, drainTimes); err != nil {
		b.Fatal(err)
	}
	after := takeSnapshot()
	b.StopTimer()
	dropped := sink.droppedSpans()
	if got := sink.spans.Load(); got+dropped != spans {
		b.Fatalf("sink received %d spans and the processor dropped %d, sent %d", got, dropped, spans)
	}
	r := tpResult{spec: spec, d: diff(before, after, spans-warmSpans), ingest: ingest, blocked: lag.blocked, dropped: dropped - warmDropped}
	b.ReportMetric(r.d.spansPerSec(), "spans/s")
	b.ReportMetric(r.ingestSpansPerSec(), "ingest-spans/s")
	b.ReportMetric(r.d.cpuUsPerSpan(), "cpu-µs/span")
	b.ReportMetric(r.d.bytesPerSpan(), "B/span")
	b.ReportMetric(r.d.allocsPerSpan(), "allocs/span")
	b.ReportMetric(100*r.d.gcShare(), "gc-cpu-%")
	b.ReportMetric(r.d.cgoCallsPerSpan(), "cgo-calls/span")
	b.ReportMetric(100*r.drain().Seconds()/r.d.elapsed.Seconds(), "drain-%")
	b.ReportMetric(100*r.blocked.Seconds()/r.ingest.Seconds(), "held-back-%")
	if dropped > 0 {
		b.ReportMetric(100*float64(dropped)/float64(spans), "dropped-%")
	}
	recordThroughput(key, r)
}

// lagBound is the back-pressure of the loop, the same for every processor: before each
// run of whole traces (~10 batches), the sink must have every span sent more than 3 waits
// ago (with a sampling processor: the sink plus the spans the processor reports dropped,
// countingSink.accounted). A processor whose
// release falls behind its wait (here: roundtrip, whose ingest is a marshal and whose
// release a serial unmarshal) then holds the producer back instead of building a queue
// that grows for the whole loop: spans/s is the steady-state rate of every stage, and no
// processor holds more than about 1.5 waits of data (an unbounded queue on the Go heap
// would also cut the GC's work per span by raising its heap goal).
type lagBound struct {
	limit   time.Duration
	blocked time.Duration // time the loop spent waiting here
	marks   []lagMark     // sent counts at times, oldest first
}

type lagMark struct {
	at   time.Time
	sent int64
}

func newLagBound(wait time.Duration) *lagBound {
	f := 3.0
	if v, err := strconv.ParseFloat(os.Getenv("TC_BENCH_LAG"), 64); err == nil {
		f = v
	}
	return &lagBound{limit: time.Duration(f * float64(wait))}
}

func (l *lagBound) wait(sink *countingSink, sent int64) {
	now := time.Now()
	if n := len(l.marks); n == 0 || now.Sub(l.marks[n-1].at) >= time.Millisecond {
		l.marks = append(l.marks, lagMark{at: now, sent: sent})
	}
	// The newest mark older than the limit: the sink must have what was sent by then.
	k := -1
	for j, m := range l.marks {
		if now.Sub(m.at) < l.limit {
			break
		}
		k = j
	}
	if k < 0 {
		return
	}
	want := l.marks[k].sent
	l.marks = l.marks[k:]
	if sink.accounted() >= want {
		return
	}
	for sink.accounted() < want {
		time.Sleep(100 * time.Microsecond)
	}
	l.blocked += time.Since(now)
}
