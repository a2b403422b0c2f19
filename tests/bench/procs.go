package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gbt "github.com/open-telemetry/opentelemetry-collector-contrib/processor/groupbytraceprocessor"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processortest"
	"go.opentelemetry.io/otel/metric"

	tc "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"
)

// Kinds of processor under test.
const (
	kindPassthrough  = "passthrough"
	kindGroupByTrace = "groupbytrace"
	kindOurs         = "traceconsistency"
	kindRoundtrip    = "roundtrip"
	// kindOursSampling is ours with the sampling section of samplingConfig (sampling.go).
	kindOursSampling = "traceconsistency/sampling"
	// kindDrop90 is the floor of the sampling rows (drop90 in sampling.go).
	kindDrop90 = "roundtrip/drop90"
)

// procSpec says which processor to build and how long it waits before releasing a trace.
type procSpec struct {
	kind string
	// wait is groupbytrace's wait_duration and our quiet_period (the same value, so that
	// both hold a trace about as long). With hold set, every other timer of ours
	// (idle_timeout, max_age) is set to it too and nothing is released before Shutdown.
	wait time.Duration
	// workers is groupbytrace's num_workers (0 = its default, 1).
	workers int
	// hold: a buffer-memory run; waits are long and the buffer limits are raised so that
	// every ingested span stays buffered.
	hold bool
}

func (s procSpec) name() string {
	switch s.kind {
	case kindGroupByTrace:
		return fmt.Sprintf("%s/workers=%d", s.kind, max(1, s.workers))
	default:
		return s.kind
	}
}

// countingSink is the next consumer: it counts spans and calls and keeps nothing, so what
// is measured is the processor, not the sink. Safe for concurrent use (groupbytrace calls
// it from one goroutine per released trace).
type countingSink struct {
	spans atomic.Int64
	calls atomic.Int64
	// dropped, when set, reads the processor's own count of the spans it dropped by sampling
	// (they never arrive here): every span sent is accounted for once spans + dropped has it.
	dropped func() int64
}

// droppedSpans is what the processor in front reports as dropped (0 without a count).
func (s *countingSink) droppedSpans() int64 {
	if s.dropped == nil {
		return 0
	}
	return s.dropped()
}

// accounted is the spans the sink received plus those the processor dropped.
func (s *countingSink) accounted() int64 { return s.spans.Load() + s.droppedSpans() }

func (s *countingSink) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

func (s *countingSink) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	s.spans.Add(int64(td.SpanCount()))
	s.calls.Add(1)
	return nil
}

// waitFor polls until the sink has seen (or the processor dropped) want spans or the
// timeout passes.
func (s *countingSink) waitFor(want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for s.accounted() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("sink has %d (+ %d dropped) of %d spans after %s", s.spans.Load(), s.droppedSpans(), want, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return nil
}

// passthrough is the no-op processor: it hands every batch to the next consumer at once
// (what a pipeline without an assembly processor does).
type passthrough struct{ next consumer.Traces }

func (p *passthrough) Start(context.Context, component.Host) error { return nil }
func (p *passthrough) Shutdown(context.Context) error              { return nil }
func (p *passthrough) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

func (p *passthrough) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	return p.next.ConsumeTraces(ctx, td)
}

func settings(t component.Type, mp metric.MeterProvider) processor.Settings {
	set := processortest.NewNopSettings(t)
	if mp != nil {
		set.TelemetrySettings.MeterProvider = mp
	}
	return set
}

// roundtrip is the floor of any processor that holds spans serialized: it marshals each
// incoming batch to OTLP protobuf, keeps the bytes on the Go heap, and when the batch comes
// due unmarshals it and passes the result on. Its release timing is ours: a batch comes due
// wait after it arrived, polled every tick (our quiet_period and release_tick). It does no
// assembly, no checks and no indexing, so what ours costs above it is the price of those
// (and of crossing into Rust), and what both cost above passthrough is the pdata round trip.
type roundtrip struct {
	next       consumer.Traces
	wait, tick time.Duration

	mu   sync.Mutex
	held []heldBatch // in arrival order

	stop chan struct{}
	done chan struct{}
}

type heldBatch struct {
	at   time.Time
	data []byte
}

func newRoundtrip(wait time.Duration, next consumer.Traces) *roundtrip {
	return &roundtrip{next: next, wait: wait, tick: max(wait/10, time.Millisecond)}
}

func (r *roundtrip) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

func (r *roundtrip) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	data, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.held = append(r.held, heldBatch{at: time.Now(), data: data})
	r.mu.Unlock()
	return nil
}

func (r *roundtrip) Start(context.Context, component.Host) error {
	r.stop, r.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.tick)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case now := <-t.C:
				r.release(now.Add(-r.wait))
			}
		}
	}()
	return nil
}

// release unmarshals and passes on every batch that arrived at or before cutoff.
func (r *roundtrip) release(cutoff time.Time) {
	r.mu.Lock()
	n := 0
	for n < len(r.held) && !r.held[n].at.After(cutoff) {
		n++
	}
	due := r.held[:n:n]
	r.held = append([]heldBatch(nil), r.held[n:]...)
	r.mu.Unlock()
	for _, b := range due {
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b.data)
		if err != nil {
			panic(err) // our own marshal output
		}
		_ = r.next.ConsumeTraces(context.Background(), td)
	}
}

func (r *roundtrip) Shutdown(context.Context) error {
	if r.stop == nil {
		return nil
	}
	close(r.stop)
	<-r.done
	r.release(time.Now().Add(time.Hour))
	return nil
}

// newProcessor builds and starts the processor of spec in front of next, through the
// component's exported factory (as the collector does), with no-op telemetry.
func newProcessor(spec procSpec, next consumer.Traces) (processor.Traces, error) {
	return newProcessorWithMeter(spec, next, nil)
}

// newCountedProcessor is newProcessor for the throughput loops: for the sampling kinds it
// points sink.dropped at the processor's own count of dropped spans (ours: its sampling_spans
// counter with decision=dropped; drop90: its counter).
func newCountedProcessor(spec procSpec, sink *countingSink) (processor.Traces, error) {
	switch spec.kind {
	case kindOursSampling:
		mp := newDroppedSpansMeter()
		p, err := newProcessorWithMeter(spec, sink, mp)
		if err == nil {
			sink.dropped = mp.dropped.Load
		}
		return p, err
	case kindDrop90:
		p, err := newProcessor(spec, sink)
		if err == nil {
			sink.dropped = p.(*drop90).dropped.Load
		}
		return p, err
	default:
		return newProcessor(spec, sink)
	}
}

// newProcessorWithMeter is newProcessor with the processor's own metrics going to mp
// (nil: no-op telemetry).
func newProcessorWithMeter(spec procSpec, next consumer.Traces, mp metric.MeterProvider) (processor.Traces, error) {
	ctx := context.Background()
	var (
		p   processor.Traces
		err error
	)
	switch spec.kind {
	case kindPassthrough:
		p = &passthrough{next: next}
	case kindRoundtrip:
		p = newRoundtrip(spec.wait, next)
	case kindDrop90:
		p = newDrop90(spec.wait, next)
	case kindGroupByTrace:
		f := gbt.NewFactory()
		cfg := f.CreateDefaultConfig().(*gbt.Config)
		cfg.WaitDuration = spec.wait
		if spec.workers > 0 {
			cfg.NumWorkers = spec.workers
		}
		// num_traces stays at its default (1,000,000): far above what any run holds, so
		// nothing is evicted (evicted traces would be deleted, not released).
		p, err = f.CreateTraces(ctx, settings(f.Type(), mp), cfg, next)
	case kindOurs, kindOursSampling:
		f := tc.NewFactory()
		cfg := f.CreateDefaultConfig().(*tc.Config)
		// No start wait (restart_strategy wait would sleep hlc.max_offset in Start).
		cfg.HLC.RestartStrategy = "none"
		cfg.QuietPeriod = spec.wait
		// The release loop ticks at a tenth of the wait, so that a complete trace leaves
		// within wait + wait/10 (groupbytrace: wait after its first span). At the default
		// 1s quiet period this is the default tick (100ms).
		cfg.ReleaseTick = max(spec.wait/10, time.Millisecond)
		// TC_BENCH_RELEASE_BATCH: max_release_batch_spans (default: the processor's, 8192),
		// for measuring the shape of release batches.
		if n, err := strconv.Atoi(os.Getenv("TC_BENCH_RELEASE_BATCH")); err == nil && n > 0 {
			cfg.MaxReleaseBatchSpans = n
		}
		if spec.kind == kindOursSampling {
			cfg.Sampling = samplingConfig()
		}
		if spec.hold {
			// Ticks only record the buffer gauges here (nothing comes due).
			cfg.ReleaseTick = 100 * time.Millisecond
			cfg.IdleTimeout = spec.wait
			cfg.MaxAge = spec.wait
			cfg.MaxBufferedSpans = 100_000_000
			cfg.MaxBufferedBytes = 64 << 30
		}
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		p, err = f.CreateTraces(ctx, settings(f.Type(), mp), cfg, next)
	default:
		return nil, fmt.Errorf("unknown processor kind %q", spec.kind)
	}
	if err != nil {
		return nil, err
	}
	if err := p.Start(ctx, componenttest.NewNopHost()); err != nil {
		return nil, err
	}
	return p, nil
}
