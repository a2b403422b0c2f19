package bench

import (
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// snapshot is what is read before and after a measured region.
type snapshot struct {
	wall      time.Time
	procCPU   time.Duration // user+system CPU of the whole process (Go, cgo/Rust, runtime)
	mallocs   uint64        // Go heap objects allocated (Rust's malloc is not visible here)
	allocated uint64        // Go heap bytes allocated
	gcCPU     float64       // runtime/metrics /cpu/classes/gc/total:cpu-seconds
	totalCPU  float64       // /cpu/classes/total:cpu-seconds
	idleCPU   float64       // /cpu/classes/idle:cpu-seconds
	gcCycles  uint64        // /gc/cycles/total:gc-cycles
	cgoCalls  int64         // runtime.NumCgoCall
}

var sampleNames = []string{
	"/cpu/classes/gc/total:cpu-seconds",
	"/cpu/classes/total:cpu-seconds",
	"/cpu/classes/idle:cpu-seconds",
	"/gc/cycles/total:gc-cycles",
}

func takeSnapshot() snapshot {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	samples := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		samples[i].Name = n
	}
	metrics.Read(samples)
	f := func(i int) float64 {
		if samples[i].Value.Kind() == metrics.KindFloat64 {
			return samples[i].Value.Float64()
		}
		return 0
	}
	var cycles uint64
	if samples[3].Value.Kind() == metrics.KindUint64 {
		cycles = samples[3].Value.Uint64()
	}
	return snapshot{
		wall:      time.Now(),
		procCPU:   processCPU(),
		mallocs:   ms.Mallocs,
		allocated: ms.TotalAlloc,
		gcCPU:     f(0),
		totalCPU:  f(1),
		idleCPU:   f(2),
		gcCycles:  cycles,
		cgoCalls:  runtime.NumCgoCall(),
	}
}

// delta is the difference of two snapshots over a region that handled spans spans.
type delta struct {
	spans     int64
	elapsed   time.Duration
	procCPU   time.Duration
	mallocs   uint64
	allocated uint64
	gcCPU     float64
	busyCPU   float64 // Go runtime's total minus idle
	gcCycles  uint64
	cgoCalls  int64
}

func diff(a, b snapshot, spans int64) delta {
	return delta{
		spans:     spans,
		elapsed:   b.wall.Sub(a.wall),
		procCPU:   b.procCPU - a.procCPU,
		mallocs:   b.mallocs - a.mallocs,
		allocated: b.allocated - a.allocated,
		gcCPU:     b.gcCPU - a.gcCPU,
		busyCPU:   (b.totalCPU - b.idleCPU) - (a.totalCPU - a.idleCPU),
		gcCycles:  b.gcCycles - a.gcCycles,
		cgoCalls:  b.cgoCalls - a.cgoCalls,
	}
}

func (d delta) spansPerSec() float64 { return float64(d.spans) / d.elapsed.Seconds() }

func (d delta) cpuUsPerSpan() float64 {
	return float64(d.procCPU.Microseconds()) / float64(d.spans)
}
func (d delta) cgoCallsPerSpan() float64 { return float64(d.cgoCalls) / float64(d.spans) }
func (d delta) bytesPerSpan() float64    { return float64(d.allocated) / float64(d.spans) }
func (d delta) allocsPerSpan() float64   { return float64(d.mallocs) / float64(d.spans) }

// gcShare is the GC's share of the CPU the Go runtime accounted as busy (user goroutines,
// cgo calls included, plus GC and scavenger), from runtime/metrics' /cpu/classes.
func (d delta) gcShare() float64 {
	if d.busyCPU <= 0 {
		return 0
	}
	return d.gcCPU / d.busyCPU
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssBytes is the resident set size from /proc/self/statm (resident pages × page size).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// peakRSSBytes is VmHWM from /proc/self/status.
func peakRSSBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
