package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
)

// throughputWaits are the waits (groupbytrace wait_duration = our quiet_period) of the
// throughput runs. 100ms: the run is dominated by work, the drain at the end of each
// measured loop costs ~0.1s of idle time. 1s: both processors' defaults; the last second
// of each measured loop is spent waiting for the last traces to come due, which lowers
// spans/s of both assembling processors (not of passthrough) by about 1s/(loop length).
var throughputWaits = []time.Duration{100 * time.Millisecond, time.Second}

// throughputSpecs are the processors compared at each wait.
func throughputSpecs(wait time.Duration) []procSpec {
	return []procSpec{
		{kind: kindPassthrough, wait: wait},
		{kind: kindGroupByTrace, wait: wait, workers: 1}, // its default num_workers
		{kind: kindGroupByTrace, wait: wait, workers: 2}, // one per core on this machine
		{kind: kindOurs, wait: wait},                     // num_shards 0 = four per core
	}
}

type tpResult struct {
	spec    procSpec
	batches int
	d       delta
}

var (
	resultsMu  sync.Mutex
	tpResults  = map[string]tpResult{} // key: wait/name; the last (largest b.N) run wins
	tpOrder    []string
	drainTimes = time.Minute
)

func recordThroughput(key string, r tpResult) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if _, ok := tpResults[key]; !ok {
		tpOrder = append(tpOrder, key)
	}
	tpResults[key] = r
}

// BenchmarkThroughput pushes b.N batches (~100 spans each) of the generated workload
// through each processor and into a counting sink. The timed region runs from the first
// ConsumeTraces until the sink has received every span (so the release path, running on
// the processors' own goroutines, is inside it); allocations and CPU are those of the whole
// process over the same region.
func BenchmarkThroughput(b *testing.B) {
	pl, err := getPool()
	if err != nil {
		b.Fatal(err)
	}
	for _, wait := range throughputWaits {
		for _, spec := range throughputSpecs(wait) {
			key := fmt.Sprintf("wait=%s/%s", wait, spec.name())
			b.Run(key, func(b *testing.B) {
				runThroughput(b, key, spec, pl)
			})
		}
	}
}

func runThroughput(b *testing.B, key string, spec procSpec, pl *pool) {
	sink := &countingSink{}
	proc, err := newProcessor(spec, sink)
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
	runtime.GC()
	b.ResetTimer()
	before := takeSnapshot()
	var spans int64
	// b.N batches, then on to the end of the current run of traces (at most ~9 batches
	// more), so that every trace is sent whole; the metrics are per span actually sent.
	for i := 0; i < b.N || !pl.endsRun(i-1); i++ {
		td, n := pl.batch(i)
		spans += int64(n)
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			b.Fatalf("ConsumeTraces: %v", err)
		}
	}
	if err := sink.waitFor(spans, drainTimes); err != nil {
		b.Fatal(err)
	}
	after := takeSnapshot()
	b.StopTimer()
	if got := sink.spans.Load(); got != spans {
		b.Fatalf("sink received %d spans, sent %d", got, spans)
	}
	d := diff(before, after, spans)
	b.ReportMetric(d.spansPerSec(), "spans/s")
	b.ReportMetric(d.netSpansPerSec(spec), "net-spans/s")
	b.ReportMetric(d.cpuUsPerSpan(), "cpu-µs/span")
	b.ReportMetric(d.bytesPerSpan(), "B/span")
	b.ReportMetric(d.allocsPerSpan(), "allocs/span")
	b.ReportMetric(100*d.gcShare(), "gc-cpu-%")
	b.ReportMetric(d.cgoCallsPerSpan(), "cgo-calls/span")
	recordThroughput(key, tpResult{spec: spec, batches: b.N, d: d})
}
