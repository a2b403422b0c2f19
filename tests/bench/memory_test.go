package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
)

// The buffer-memory study: hold N traces in a processor (waits of 10 minutes: nothing is
// released) and measure, per buffered span, the growth of the live Go heap and of the
// process RSS, the GC's CPU share while ingesting, and the duration of one full GC with
// everything buffered (the mark work every GC cycle repeats). Each measurement runs in a
// child process (this test binary re-executed with memChildEnv set), so that RSS and the
// heap start clean and allocator caches of a previous run cannot hide growth.

const memChildEnv = "TC_BENCH_MEMORY_CHILD"

// memTraces are the buffer sizes (traces; ~27.5 spans each). Two sizes show how the Go GC
// work grows (or not) with the number of buffered spans.
var memTraces = []int{5000, 20000}

// memHold is the wait of the study: far longer than any run, so nothing is released.
const memHold = 10 * time.Minute

func memSpecs() []procSpec {
	return []procSpec{
		{kind: kindPassthrough, wait: memHold, hold: true},
		{kind: kindGroupByTrace, wait: memHold, workers: 1, hold: true},
		{kind: kindOurs, wait: memHold, hold: true},
	}
}

// memResult is what a child reports.
type memResult struct {
	Kind    string  `json:"kind"`
	Name    string  `json:"name"`
	Traces  int     `json:"traces"`
	Spans   int     `json:"spans"`
	WireMB  float64 `json:"wire_mb"`
	Batches int     `json:"batches"`
	// Released is what reached the sink before the measurement (0 for the two buffers).
	Released int64 `json:"released"`

	IngestSeconds float64 `json:"ingest_seconds"` // unmarshal + ConsumeTraces of every batch
	SettleSeconds float64 `json:"settle_seconds"` // until the process went idle after it
	IngestCPUus   float64 `json:"ingest_cpu_us_per_span"`
	GCShare       float64 `json:"gc_share"` // GC CPU / busy CPU during ingest + settle
	GCCycles      uint64  `json:"gc_cycles"`
	GCCPUSeconds  float64 `json:"gc_cpu_seconds"`
	AllocBytes    uint64  `json:"alloc_bytes"`

	HeapBaseline int64   `json:"heap_baseline"` // HeapAlloc after GC, before ingest
	HeapHeld     int64   `json:"heap_held"`     // HeapAlloc after GC, everything buffered
	ScanHeld     int64   `json:"scan_held"`     // /gc/scan/heap:bytes after GC
	RSSBaseline  int64   `json:"rss_baseline"`  // after GC + FreeOSMemory
	RSSHeld      int64   `json:"rss_held"`
	PeakRSS      int64   `json:"peak_rss"`   // VmHWM at the end
	FullGCms     float64 `json:"full_gc_ms"` // one forced runtime.GC() with everything buffered
	FullGCCPUms  float64 `json:"full_gc_cpu_ms"`
	// The engine's own accounting (ours only): span bytes plus the per-span index record.
	EngineSpans int64 `json:"engine_spans"`
	EngineBytes int64 `json:"engine_bytes"`
}

func (r memResult) heapPerSpan() float64 {
	return float64(r.HeapHeld-r.HeapBaseline) / float64(r.Spans)
}
func (r memResult) rssPerSpan() float64 { return float64(r.RSSHeld-r.RSSBaseline) / float64(r.Spans) }

var (
	memMu      sync.Mutex
	memResults = map[string]memResult{}
	memOrder   []string
)

// BenchmarkBufferMemory runs the study (one child per processor and size). b.N is ignored:
// each sub-benchmark measures once and reports the same numbers on every call.
func BenchmarkBufferMemory(b *testing.B) {
	for _, n := range memTraces {
		for _, spec := range memSpecs() {
			key := fmt.Sprintf("traces=%d/%s", n, spec.name())
			b.Run(key, func(b *testing.B) {
				r, err := memoryOnce(key, spec, n)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(0, "ns/op") // not a per-op measurement
				b.ReportMetric(float64(r.Spans), "spans-held")
				b.ReportMetric(r.heapPerSpan(), "heap-B/span")
				b.ReportMetric(r.rssPerSpan(), "rss-B/span")
				b.ReportMetric(100*r.GCShare, "gc-cpu-%")
				b.ReportMetric(r.FullGCms, "full-gc-ms")
			})
		}
	}
}

func memoryOnce(key string, spec procSpec, traces int) (memResult, error) {
	memMu.Lock()
	defer memMu.Unlock()
	if r, ok := memResults[key]; ok {
		return r, nil
	}
	r, err := runMemoryChild(spec, traces)
	if err != nil {
		return r, err
	}
	memResults[key] = r
	memOrder = append(memOrder, key)
	return r, nil
}

func runMemoryChild(spec procSpec, traces int) (memResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMemoryChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", memChildEnv, spec.kind, spec.workers, traces))
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "MEMRESULT "); i >= 0 {
			var r memResult
			if jerr := json.Unmarshal([]byte(line[i+len("MEMRESULT "):]), &r); jerr != nil {
				return r, jerr
			}
			return r, nil
		}
	}
	return memResult{}, fmt.Errorf("memory child %s/%d: no result (err %v):\n%s", spec.name(), traces, err, out.String())
}

// TestMemoryChild is one measurement of the study; it runs only as a child of
// BenchmarkBufferMemory (memChildEnv = "kind,workers,traces").
func TestMemoryChild(t *testing.T) {
	arg := os.Getenv(memChildEnv)
	if arg == "" {
		t.Skip("runs only as a child of BenchmarkBufferMemory")
	}
	f := strings.Split(arg, ",")
	if len(f) != 3 {
		t.Fatalf("bad %s=%q", memChildEnv, arg)
	}
	workers, _ := strconv.Atoi(f[1])
	traces, _ := strconv.Atoi(f[2])
	spec := procSpec{kind: f[0], wait: memHold, workers: workers, hold: true}
	r, err := measureMemory(spec, traces)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(r)
	fmt.Printf("MEMRESULT %s\n", js)
}

func heapAfterGC() (heap, scan int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() == metrics.KindUint64 {
		scan = int64(s[0].Value.Uint64())
	}
	return int64(ms.HeapAlloc), scan
}

// waitIdle returns once the process used less than 2% of one core over 250ms (the
// processor's goroutines have finished what ingest queued), or after limit.
func waitIdle(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c0 := processCPU()
		time.Sleep(250 * time.Millisecond)
		if processCPU()-c0 < 5*time.Millisecond {
			return
		}
	}
}

// gaugeValue reads the last value of an int64 gauge from the processor's own metrics.
func gaugeValue(reader *sdkmetric.ManualReader, name string) int64 {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		return -1
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && len(g.DataPoints) > 0 {
				return g.DataPoints[0].Value
			}
		}
	}
	return -1
}

func measureMemory(spec procSpec, traces int) (memResult, error) {
	wp, err := newWirePool(traces)
	if err != nil {
		return memResult{}, err
	}
	sink := &countingSink{}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	proc, err := newProcessorWithMeter(spec, sink, mp)
	if err != nil {
		return memResult{}, err
	}
	r := memResult{Kind: spec.kind, Name: spec.name(), Traces: traces, Spans: wp.total, Batches: wp.len(),
		WireMB: float64(wp.bytes()) / 1e6}

	r.HeapBaseline, _ = heapAfterGC()
	debug.FreeOSMemory()
	r.RSSBaseline = rssBytes()

	ctx := context.Background()
	before := takeSnapshot()
	for i := 0; i < wp.len(); i++ {
		td, err := wp.batch(i)
		if err != nil {
			return r, err
		}
		if err := proc.ConsumeTraces(ctx, td); err != nil {
			return r, err
		}
	}
	ingested := time.Now()
	waitIdle(time.Minute)
	after := takeSnapshot()
	d := diff(before, after, int64(wp.total))
	r.IngestSeconds = ingested.Sub(before.wall).Seconds()
	r.SettleSeconds = after.wall.Sub(ingested).Seconds()
	r.IngestCPUus = d.cpuUsPerSpan()
	r.GCShare = d.gcShare()
	r.GCCycles = d.gcCycles
	r.GCCPUSeconds = d.gcCPU
	r.AllocBytes = d.allocated
	r.Released = sink.spans.Load()
	time.Sleep(250 * time.Millisecond) // a release tick records the buffer gauges
	r.EngineSpans = gaugeValue(reader, names.MetricSpansBuffered)
	r.EngineBytes = gaugeValue(reader, names.MetricBytesBuffered)

	r.HeapHeld, r.ScanHeld = heapAfterGC()
	// One more full GC, timed: its mark phase walks the whole live heap, as every GC cycle
	// does while these spans are buffered.
	g0 := takeSnapshot()
	t0 := time.Now()
	runtime.GC()
	r.FullGCms = float64(time.Since(t0).Microseconds()) / 1000
	g1 := takeSnapshot()
	r.FullGCCPUms = (g1.gcCPU - g0.gcCPU) * 1000
	debug.FreeOSMemory()
	r.RSSHeld = rssBytes()
	r.PeakRSS = peakRSSBytes()
	runtime.KeepAlive(proc)
	runtime.KeepAlive(wp)
	// No Shutdown: the process ends here (ours would release everything, groupbytrace
	// would drop it; neither is measured).
	return r, nil
}
