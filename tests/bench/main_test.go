package bench

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain runs the tests and benchmarks, then (only when benchmarks ran) prints the tables
// with the ratios ours/groupbytrace and ours/passthrough of this very run.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" && os.Getenv(memChildEnv) == "" {
		printReport(os.Stdout)
	}
	os.Exit(code)
}

func printReport(w io.Writer) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	memMu.Lock()
	defer memMu.Unlock()
	if len(tpOrder) == 0 && len(memOrder) == 0 {
		return
	}
	fmt.Fprintf(w, "\n==== processor benchmarks (%s, GOMAXPROCS %d, %s)\n", runtime.Version(), runtime.GOMAXPROCS(0), time.Now().Format(time.RFC3339))
	if pl := thePool; pl != nil {
		fmt.Fprintf(w, "workload: %d traces, %d batches, %d spans per pass (tracegen defaults, seed 6); spans with rewritten trace IDs: %d\n",
			poolTraces, len(pl.batches), pl.total, pl.retagged)
	}
	printThroughput(w)
	printMemory(w)
}

func printThroughput(w io.Writer) {
	if len(tpOrder) == 0 {
		return
	}
	fmt.Fprintln(w, "\n-- throughput: ConsumeTraces → (assembly, wait) → counting sink; timed until the sink has every span")
	fmt.Fprintf(w, "%-40s %9s %7s %10s %12s %12s %10s %14s %8s %14s\n", "processor", "spans", "seconds", "spans/s", "net spans/s", "cpu-µs/span", "Go B/span", "Go allocs/span", "gc-cpu%", "cgo calls/span")
	for _, k := range tpOrder {
		r := tpResults[k]
		fmt.Fprintf(w, "%-40s %9d %7.2f %10.0f %12.0f %12.2f %10.0f %14.2f %8.1f %14.4f\n", k, r.d.spans, r.d.elapsed.Seconds(), r.d.spansPerSec(), r.d.netSpansPerSec(r.spec),
			r.d.cpuUsPerSpan(), r.d.bytesPerSpan(), r.d.allocsPerSpan(), 100*r.d.gcShare(), r.d.cgoCallsPerSpan())
	}
	for _, wait := range throughputWaits {
		p := fmt.Sprintf("wait=%s/", wait)
		ours, ok := tpResults[p+kindOurs]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "ratios at wait=%s (ours / other; spans/s higher is better, cpu, bytes and allocs lower are better):\n", wait)
		for _, other := range []string{kindGroupByTrace + "/workers=1", kindGroupByTrace + "/workers=2", kindPassthrough} {
			o, ok := tpResults[p+other]
			if !ok {
				continue
			}
			fmt.Fprintf(w, "  ours / %-24s spans/s %7.3gx   net spans/s %7.3gx   cpu/span %7.3gx   B/span %s   allocs/span %s\n",
				other, ours.d.spansPerSec()/o.d.spansPerSec(), ours.d.netSpansPerSec(ours.spec)/o.d.netSpansPerSec(o.spec),
				ratio(ours.d.cpuUsPerSpan(), o.d.cpuUsPerSpan()),
				ratioStr(ours.d.bytesPerSpan(), o.d.bytesPerSpan()), ratioStr(ours.d.allocsPerSpan(), o.d.allocsPerSpan()))
		}
	}
	fmt.Fprintln(w, "(passthrough hands the caller's batch to the sink and allocates nothing: its ratios only show how much a processor costs at all)")
}

// ratioStr is a/b, or "n/a" when b is about zero (passthrough allocates nothing).
func ratioStr(a, b float64) string {
	if b < 0.01 {
		return "    n/a"
	}
	return fmt.Sprintf("%6.3gx", a/b)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func printMemory(w io.Writer) {
	if len(memOrder) == 0 {
		return
	}
	fmt.Fprintln(w, "\n-- buffer memory: N traces held (waits 10m), one child process per row; per span = per ingested span")
	fmt.Fprintf(w, "%-36s %8s %9s %11s %10s %11s %9s %8s %9s %10s %9s\n", "processor", "spans", "released",
		"heap B/span", "rss B/span", "scan MB", "peak MB", "gc-cpu%", "gc cycles", "full GC ms", "ingest s")
	fmt.Fprintln(w, "(heap = live Go heap after GC, growth over the baseline; rss = process RSS after GC + FreeOSMemory, growth; scan = GC-scannable heap; gc-cpu% = GC share of busy CPU while ingesting (unmarshal + ConsumeTraces); full GC = one forced runtime.GC() with everything held)")
	for _, k := range memOrder {
		r := memResults[k]
		fmt.Fprintf(w, "%-36s %8d %9d %11.0f %10.0f %11.1f %9.0f %8.1f %9d %10.2f %9.2f\n", k, r.Spans, r.Released,
			r.heapPerSpan(), r.rssPerSpan(), float64(r.ScanHeld)/1e6, float64(r.PeakRSS)/1e6, 100*r.GCShare,
			r.GCCycles, r.FullGCms, r.IngestSeconds)
	}
	for _, k := range memOrder {
		if r := memResults[k]; r.EngineSpans > 0 {
			fmt.Fprintf(w, "%s: engine accounting %d spans, %d bytes = %.0f B/span (span bytes + index record); RSS growth / accounted = %.2f\n",
				k, r.EngineSpans, r.EngineBytes, float64(r.EngineBytes)/float64(r.EngineSpans), float64(r.RSSHeld-r.RSSBaseline)/float64(r.EngineBytes))
		}
	}
	for _, n := range memTraces {
		p := fmt.Sprintf("traces=%d/", n)
		ours, ok1 := memResults[p+kindOurs]
		g, ok2 := memResults[p+kindGroupByTrace+"/workers=1"]
		if !ok1 || !ok2 {
			continue
		}
		fmt.Fprintf(w, "ratios at %d traces (%d spans held): ours / groupbytrace  heap/span %.3fx   rss/span %.3fx   full-GC time %.2fx   gc-cpu share %.2fx\n",
			n, ours.Spans, ratio(ours.heapPerSpan(), g.heapPerSpan()), ratio(ours.rssPerSpan(), g.rssPerSpan()),
			ratio(ours.FullGCms, g.FullGCms), ratio(ours.GCShare, g.GCShare))
		if pt, ok := memResults[p+kindPassthrough]; ok {
			fmt.Fprintf(w, "  ours / passthrough (holds nothing)  full-GC time %.2fx   gc-cpu share %.2fx\n",
				ratio(ours.FullGCms, pt.FullGCms), ratio(ours.GCShare, pt.GCShare))
		}
	}
	if len(memTraces) >= 2 {
		lo, hi := memTraces[0], memTraces[len(memTraces)-1]
		var parts []string
		for _, kind := range []string{kindOurs, kindGroupByTrace + "/workers=1", kindPassthrough} {
			a, ok1 := memResults[fmt.Sprintf("traces=%d/%s", lo, kind)]
			b, ok2 := memResults[fmt.Sprintf("traces=%d/%s", hi, kind)]
			if ok1 && ok2 {
				parts = append(parts, fmt.Sprintf("%s full GC %.2f→%.2f ms, gc-cpu %.1f→%.1f%%", kind, a.FullGCms, b.FullGCms, 100*a.GCShare, 100*b.GCShare))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "GC work from %d to %d traces held: %s\n", lo, hi, strings.Join(parts, "; "))
		}
	}
}
