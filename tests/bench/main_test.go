package bench

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
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
	if pl := theSamplingPool; pl != nil {
		fmt.Fprintf(w, "sampling rows' workload: the same without error spans: %d batches, %d spans per pass; spans with rewritten trace IDs: %d\n",
			len(pl.batches), pl.total, pl.retagged)
	}
	printThroughput(w)
	printMemory(w)
}

func printThroughput(w io.Writer) {
	if len(tpOrder) == 0 {
		return
	}
	fmt.Fprintln(w, "\n-- throughput: ConsumeTraces → (hold, wait) → counting sink; timed until the sink has every span")
	fmt.Fprintln(w, "(median of the runs [min–max]; spans/s over ingest + drain; ingest spans/s over the ingest phase alone; drain % = share of the measured time after the last ConsumeTraces; held % = share of the ingest phase the loop was held back because the processor's release lagged more than 3 waits)")
	fmt.Fprintf(w, "%-38s %4s %9s %-26s %10s %7s %6s %-20s %9s %12s %8s %10s\n", "processor", "runs", "spans", "spans/s", "ingest/s", "drain%", "held%", "cpu-µs/span", "Go B/span", "Go allocs/span", "gc-cpu%", "cgo/span")
	for _, k := range tpOrder {
		rs := tpResults[k]
		sps := stats(rs, func(r tpResult) float64 { return r.d.spansPerSec() })
		cpu := stats(rs, func(r tpResult) float64 { return r.d.cpuUsPerSpan() })
		fmt.Fprintf(w, "%-38s %4d %9d %-26s %10.0f %7.1f %6.1f %-20s %9.0f %12.2f %8.1f %10.4f\n", k, len(rs),
			int64(stats(rs, func(r tpResult) float64 { return float64(r.d.spans) }).med),
			fmt.Sprintf("%.0f [%.0f–%.0f]", sps.med, sps.min, sps.max),
			stats(rs, func(r tpResult) float64 { return r.ingestSpansPerSec() }).med,
			stats(rs, func(r tpResult) float64 { return 100 * r.drain().Seconds() / r.d.elapsed.Seconds() }).med,
			stats(rs, func(r tpResult) float64 { return 100 * r.blocked.Seconds() / r.ingest.Seconds() }).med,
			fmt.Sprintf("%.2f [%.2f–%.2f]", cpu.med, cpu.min, cpu.max),
			stats(rs, func(r tpResult) float64 { return r.d.bytesPerSpan() }).med,
			stats(rs, func(r tpResult) float64 { return r.d.allocsPerSpan() }).med,
			stats(rs, func(r tpResult) float64 { return 100 * r.d.gcShare() }).med,
			stats(rs, func(r tpResult) float64 { return r.d.cgoCallsPerSpan() }).med)
	}
	for _, wait := range throughputWaits {
		p := fmt.Sprintf("wait=%s/", wait)
		ours, ok := tpResults[p+kindOurs]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "ratios at wait=%s, ours / other, of the medians [min–max of the run-by-run ratios]:\n", wait)
		for _, other := range []string{kindRoundtrip, kindGroupByTrace + "/workers=1", kindGroupByTrace + "/workers=2", kindPassthrough} {
			o, ok := tpResults[p+other]
			if !ok {
				continue
			}
			sps := ratioStats(ours, o, func(r tpResult) float64 { return r.d.spansPerSec() })
			cpu := ratioStats(ours, o, func(r tpResult) float64 { return r.d.cpuUsPerSpan() })
			fmt.Fprintf(w, "  ours / %-22s spans/s %s   ingest spans/s %5.3fx   cpu/span %s   B/span %s   allocs/span %s   gc-cpu share %s\n",
				other, sps, ratioOfMedians(ours, o, func(r tpResult) float64 { return r.ingestSpansPerSec() }), cpu,
				ratioStr(med(ours, func(r tpResult) float64 { return r.d.bytesPerSpan() }), med(o, func(r tpResult) float64 { return r.d.bytesPerSpan() })),
				ratioStr(med(ours, func(r tpResult) float64 { return r.d.allocsPerSpan() }), med(o, func(r tpResult) float64 { return r.d.allocsPerSpan() })),
				ratioStr(med(ours, func(r tpResult) float64 { return r.d.gcShare() }), med(o, func(r tpResult) float64 { return r.d.gcShare() })))
			switch other {
			case kindRoundtrip:
				s, c := sps.ratio, cpu.ratio
				fmt.Fprintf(w, "    target ours/roundtrip spans/s >= 0.9: %s; cpu/span <= 1.1: %s\n", verdict(s >= 0.9), verdict(c <= 1.1))
			case kindGroupByTrace + "/workers=1":
				fmt.Fprintf(w, "    target ours/groupbytrace spans/s >= 2: %s\n", verdict(sps.ratio >= 2))
			}
		}
	}
	fmt.Fprintln(w, "(passthrough hands the caller's batch to the sink and allocates nothing: its ratios only show how much a processor costs at all)")
	printSampling(w)
}

// printSampling prints the ratios of the sampling rows: ours with sampling against the drop90
// floor and against ours without sampling, and what the dropped spans cost in Go allocations.
func printSampling(w io.Writer) {
	for _, wait := range throughputWaits {
		p := fmt.Sprintf("wait=%s/", wait)
		s, ok := tpResults[p+kindOursSampling]
		if !ok {
			continue
		}
		dropShare := stats(s, func(r tpResult) float64 { return float64(r.dropped) / float64(r.d.spans) }).med
		fmt.Fprintf(w, "sampling at wait=%s (errors, findings, 10 %% of the rest, consistent mode; workload without error spans): ours dropped %.1f %% of the spans\n", wait, 100*dropShare)
		for _, other := range []string{kindDrop90, kindOurs} {
			o, ok := tpResults[p+other]
			if !ok {
				continue
			}
			sps := ratioStats(s, o, func(r tpResult) float64 { return r.d.spansPerSec() })
			cpu := ratioStats(s, o, func(r tpResult) float64 { return r.d.cpuUsPerSpan() })
			fmt.Fprintf(w, "  ours_sampling / %-18s spans/s %s   ingest spans/s %5.3fx   cpu/span %s   B/span %s   allocs/span %s\n",
				other, sps, ratioOfMedians(s, o, func(r tpResult) float64 { return r.ingestSpansPerSec() }), cpu,
				ratioStr(med(s, func(r tpResult) float64 { return r.d.bytesPerSpan() }), med(o, func(r tpResult) float64 { return r.d.bytesPerSpan() })),
				ratioStr(med(s, func(r tpResult) float64 { return r.d.allocsPerSpan() }), med(o, func(r tpResult) float64 { return r.d.allocsPerSpan() })))
			if other == kindDrop90 {
				fmt.Fprintf(w, "    target ours_sampling/drop90 spans/s >= 0.9: %s\n", verdict(sps.ratio >= 0.9))
			}
		}
		// Go allocations of the dropped spans. allocs/dropped is every Go allocation of the run
		// over the dropped spans (an upper bound of their cost). The bound below charges the
		// kept spans what a span costs ours without sampling (ingest + release) and gives the
		// dropped spans the rest: their ingest share (the same as a kept span's) plus whatever
		// dropping costs; ~ ours' ingest allocs/span means dropping allocates nothing in Go.
		perDropped := func(r tpResult) float64 { return float64(r.d.mallocs) / float64(max(r.dropped, 1)) }
		perKept := func(r tpResult) float64 { return float64(r.d.mallocs) / float64(max(r.keptSpans(), 1)) }
		fmt.Fprintf(w, "  ours_sampling Go allocs: %.3f per span sent, %.2f per kept span, %.3f per dropped span (all allocations of the run / dropped spans)\n",
			med(s, func(r tpResult) float64 { return r.d.allocsPerSpan() }), med(s, perKept), med(s, perDropped))
		if o, ok := tpResults[p+kindOurs]; ok {
			tcPerSpan := med(o, func(r tpResult) float64 { return r.d.allocsPerSpan() })
			rest := med(s, func(r tpResult) float64 {
				return (float64(r.d.mallocs) - tcPerSpan*float64(r.keptSpans())) / float64(max(r.dropped, 1))
			})
			fmt.Fprintf(w, "    charging each kept span traceconsistency's %.3f allocs/span, a dropped span costs at most %.3f Go allocs (its ingest share included)\n", tcPerSpan, rest)
		}
		if d, ok := tpResults[p+kindDrop90]; ok {
			fmt.Fprintf(w, "  drop90 Go allocs: %.3f per span sent, %.2f per kept span, %.3f per dropped span; dropped %.1f %% of the spans\n",
				med(d, func(r tpResult) float64 { return r.d.allocsPerSpan() }), med(d, perKept), med(d, perDropped),
				100*stats(d, func(r tpResult) float64 { return float64(r.dropped) / float64(r.d.spans) }).med)
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

type spread struct{ med, min, max float64 }

func stats(rs []tpResult, f func(tpResult) float64) spread {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return spreadOf(v)
}

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{med: m, min: s[0], max: s[len(s)-1]}
}

func med(rs []tpResult, f func(tpResult) float64) float64 { return stats(rs, f).med }

func ratioOfMedians(a, b []tpResult, f func(tpResult) float64) float64 {
	return ratio(med(a, f), med(b, f))
}

// pairedRatio is the ratio of the medians and the spread of the run-by-run ratios (run i
// of a against run i of b: the rows are interleaved, so run i of both saw the same load).
type pairedRatio struct {
	ratio    float64
	min, max float64
}

func (p pairedRatio) String() string {
	return fmt.Sprintf("%5.3fx [%.3f–%.3f]", p.ratio, p.min, p.max)
}

func ratioStats(a, b []tpResult, f func(tpResult) float64) pairedRatio {
	var rs []float64
	for i := 0; i < len(a) && i < len(b); i++ {
		rs = append(rs, ratio(f(a[i]), f(b[i])))
	}
	s := spreadOf(rs)
	return pairedRatio{ratio: ratioOfMedians(a, b, f), min: s.min, max: s.max}
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
