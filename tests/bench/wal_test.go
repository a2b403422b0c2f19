package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumererror"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
	tc "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"
)

// The write-ahead log's cost: the same workload through our processor with wal.directory
// unset, and set with each wal.sync mode, from walClients goroutines at once (a receiver
// calls ConsumeTraces concurrently; with sync batch, concurrent batches share fsyncs). The
// log lives in a directory under TMPDIR (set it to a directory on the disk to be measured).

const walClients = 4

// walModes are the rows, "off" first (the reference of the ratios).
var walModes = []string{"off", "batch", "interval", "none"}

type walResult struct {
	mode           string
	d              delta
	fsyncs         int64
	bytesWritten   int64 // write(2) bytes of the process in the timed region
	fsyncsPerSec   float64
	diskBytesPerSp float64
	refusals       int64
}

var (
	walMu      sync.Mutex
	walResults = map[string]walResult{}
)

// walPools are one pool per client goroutine (each retags its own batches), built once.
var (
	walPoolsOnce sync.Once
	walPools     []*pool
	walPoolsErr  error
)

func getWALPools() ([]*pool, error) {
	walPoolsOnce.Do(func() {
		for c := range walClients {
			cfg := workloadConfig(poolTraces / walClients)
			cfg.Seed = int64(100 + c)
			g, err := tracegen.New(cfg)
			if err != nil {
				walPoolsErr = err
				return
			}
			p := &pool{}
			for td := range g.Batches(0, 1).All() {
				p.batches = append(p.batches, td)
				p.spans = append(p.spans, td.SpanCount())
				p.cut = append(p.cut, false)
				p.total += td.SpanCount()
			}
			p.cut[len(p.cut)-1] = true
			p.tag = make([]uint64, len(p.batches))
			// Distinct trace IDs per client: start each pool at its own generation.
			for i := range p.batches {
				p.batch(i + c*len(p.batches)*1000)
			}
			walPools = append(walPools, p)
		}
	})
	return walPools, walPoolsErr
}

// BenchmarkWAL runs b.N batches (split between the clients) through the processor with each
// wal mode; timed until the sink has every span, like BenchmarkThroughput.
func BenchmarkWAL(b *testing.B) {
	pools, err := getWALPools()
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range walModes {
		b.Run("wal="+mode, func(b *testing.B) { runWAL(b, mode, pools) })
	}
	printWAL(os.Stdout)
}

func runWAL(b *testing.B, mode string, pools []*pool) {
	sink := &countingSink{}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	f := tc.NewFactory()
	cfg := f.CreateDefaultConfig().(*tc.Config)
	cfg.HLC.RestartStrategy = "none"
	cfg.QuietPeriod = 100 * time.Millisecond
	cfg.ReleaseTick = 10 * time.Millisecond
	if mode != "off" {
		dir, err := os.MkdirTemp("", "tc-bench-wal-")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		cfg.WAL.Directory = dir
		cfg.WAL.Sync = mode
		cfg.WAL.SyncInterval = 100 * time.Millisecond
		// As much as the memory bound allows: at ~100 MB/s of log a trace held for a second
		// or two (the clients outnumber the cores) pins a few hundred MB.
		cfg.WAL.MaxBytes = cfg.MaxBufferedBytes
	}
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	proc, err := f.CreateTraces(ctx, settings(f.Type(), mp), cfg, sink)
	if err != nil {
		b.Fatal(err)
	}
	if err := proc.Start(ctx, componenttest.NewNopHost()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := proc.Shutdown(sctx); err != nil {
			b.Errorf("shutdown: %v", err)
		}
	}()
	per := max(1, b.N/walClients)
	b.ResetTimer()
	wBefore := writtenBytes()
	before := takeSnapshot()
	var wg sync.WaitGroup
	var refusals atomic.Int64
	sent := make([]int64, walClients)
	errs := make(chan error, walClients)
	for c := range walClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pl := pools[c]
			// Each run starts a fresh generation of trace IDs for this client.
			base := int(pl.tag[0]+1) * len(pl.batches)
			for i := 0; i < per || !pl.endsRun(base+i-1); i++ {
				td, n := pl.batch(base + i)
				sent[c] += int64(n)
				// A retryable refusal (the log at wal.max_bytes) is retried, as a client does.
				for {
					err := proc.ConsumeTraces(ctx, td)
					if err == nil {
						break
					}
					if consumererror.IsPermanent(err) {
						errs <- err
						return
					}
					refusals.Add(1)
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("ConsumeTraces: %v", err)
	}
	var spans int64
	for _, n := range sent {
		spans += n
	}
	if err := sink.waitFor(spans, drainTimes); err != nil {
		b.Fatal(err)
	}
	after := takeSnapshot()
	wAfter := writtenBytes()
	b.StopTimer()
	d := diff(before, after, spans)
	r := walResult{mode: mode, d: d, fsyncs: sumValue(reader, "otelcol_processor_traceconsistency_wal_fsyncs"), bytesWritten: wAfter - wBefore}
	r.fsyncsPerSec = float64(r.fsyncs) / d.elapsed.Seconds()
	r.diskBytesPerSp = float64(r.bytesWritten) / float64(spans)
	b.ReportMetric(d.spansPerSec(), "spans/s")
	b.ReportMetric(d.cpuUsPerSpan(), "cpu-µs/span")
	b.ReportMetric(r.fsyncsPerSec, "fsyncs/s")
	b.ReportMetric(r.diskBytesPerSp, "disk-B/span")
	b.ReportMetric(float64(refusals.Load()), "refusals")
	r.refusals = refusals.Load()
	walMu.Lock()
	walResults[mode] = r
	walMu.Unlock()
}

// sumValue reads an int64 counter of the processor's own metrics (0 when absent; the
// processor records its counters on every release tick).
func sumValue(reader *sdkmetric.ManualReader, name string) int64 {
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		return -1
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name && len(s.DataPoints) > 0 {
				return s.DataPoints[0].Value
			}
		}
	}
	return 0
}

// writtenBytes is the process's wchar from /proc/self/io: bytes passed to write(2) and
// friends (here: the log's records), whether or not they reached the disk yet.
func writtenBytes() int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func printWAL(w io.Writer) {
	walMu.Lock()
	defer walMu.Unlock()
	off, ok := walResults["off"]
	if !ok {
		return
	}
	fmt.Fprintf(w, "\n-- write-ahead log: %d clients, quiet_period 100ms, sync_interval 100ms; ratios against wal off in the same run\n", walClients)
	fmt.Fprintf(w, "%-14s %12s %8s %12s %8s %10s %12s %9s\n", "wal", "spans/s", "ratio", "cpu-µs/span", "ratio", "fsyncs/s", "disk-B/span", "refusals")
	for _, m := range walModes {
		r, ok := walResults[m]
		if !ok {
			continue
		}
		fmt.Fprintf(w, "%-14s %12.0f %8s %12.2f %8s %10.1f %12.1f %9d\n", m, r.d.spansPerSec(), ratioStr(r.d.spansPerSec(), off.d.spansPerSec()),
			r.d.cpuUsPerSpan(), ratioStr(r.d.cpuUsPerSpan(), off.d.cpuUsPerSpan()), r.fsyncsPerSec, r.diskBytesPerSp, r.refusals)
	}
}
