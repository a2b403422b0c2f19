package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistencyprocessor"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistencyprocessor/internal/engine"
	"github.com/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

// otherService is the service_name of findings once checks.max_service_names is reached.
const otherService = "_other"

// ticker is what the release loop waits on; tests inject one they fire by hand.
type ticker interface {
	C() <-chan time.Time
	Stop()
}

type timeTicker struct{ t *time.Ticker }

func (t timeTicker) C() <-chan time.Time { return t.t.C }
func (t timeTicker) Stop()               { t.t.Stop() }

func newTimeTicker(d time.Duration) ticker { return timeTicker{time.NewTicker(d)} }

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// option changes how the processor reads time; only tests use options.
type option func(*tracesProcessor)

// withClock sets the wall clock passed to the engine (ingest, tick, shutdown).
func withClock(now func() time.Time) option { return func(p *tracesProcessor) { p.now = now } }

// withSleep sets how Start waits out hlc.max_offset (restart_strategy wait).
func withSleep(sleep func(context.Context, time.Duration) error) option {
	return func(p *tracesProcessor) { p.sleep = sleep }
}

// withTicker sets the release loop's ticker.
func withTicker(newTicker func(time.Duration) ticker) option {
	return func(p *tracesProcessor) { p.newTicker = newTicker }
}

// withAfterTick sets a function the release loop calls after handling each tick.
func withAfterTick(f func()) option { return func(p *tracesProcessor) { p.afterTick = f } }

// tracesProcessor implements processor.Traces itself: traces leave it later, from the
// release loop, so processorhelper (whose function must be synchronous) does not fit.
type tracesProcessor struct {
	cfg    *Config
	engCfg engine.Config
	next   consumer.Traces
	logger *zap.Logger
	tb     *metadata.TelemetryBuilder

	now       func() time.Time
	sleep     func(context.Context, time.Duration) error
	newTicker func(time.Duration) ticker
	afterTick func()

	// mu guards eng against Close: calls into the engine hold it for reading, Shutdown
	// takes it for writing to free the engine. eng is nil before Start and after Shutdown.
	mu  sync.RWMutex
	eng *engine.Engine

	stop         chan struct{}
	done         chan struct{}
	shutdownOnce sync.Once

	// statsMu serialises metric updates from the engine's cumulative counters.
	statsMu sync.Mutex
	last    engine.Stats

	servicesMu sync.Mutex
	services   map[string]struct{}

	reasonAttrs   []metric.MeasurementOption
	lateForwarded metric.MeasurementOption
	lateDropped   metric.MeasurementOption
}

var _ processor.Traces = (*tracesProcessor)(nil)

func newTracesProcessor(set processor.Settings, cfg *Config, next consumer.Traces, opts ...option) (*tracesProcessor, error) {
	engCfg, err := cfg.engineConfig()
	if err != nil {
		return nil, err
	}
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	p := &tracesProcessor{
		cfg:           cfg,
		engCfg:        engCfg,
		next:          next,
		logger:        set.Logger,
		tb:            tb,
		now:           time.Now,
		sleep:         sleepCtx,
		newTicker:     newTimeTicker,
		services:      make(map[string]struct{}),
		lateForwarded: metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", "forwarded"))),
		lateDropped:   metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", "dropped"))),
	}
	for _, r := range engine.Reasons() {
		p.reasonAttrs = append(p.reasonAttrs, metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r.String()))))
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Capabilities: the input is only read (marshaled once); released traces are new pdata.
func (p *tracesProcessor) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

// Start builds the engine and starts the release loop. With hlc.restart_strategy wait it
// first waits hlc.max_offset, so that no stamp can repeat one issued before a restart.
func (p *tracesProcessor) Start(ctx context.Context, _ component.Host) error {
	eng, err := engine.New(p.engCfg)
	if err != nil {
		return err
	}
	if p.cfg.HLC.Enabled && p.cfg.HLC.RestartStrategy == restartWait {
		p.logger.Info("waiting hlc.max_offset before accepting spans", zap.Duration("hlc.max_offset", p.cfg.HLC.MaxOffset))
		if err := p.sleep(ctx, p.cfg.HLC.MaxOffset); err != nil {
			eng.Close()
			return fmt.Errorf("waiting hlc.max_offset at start: %w", err)
		}
	}
	p.mu.Lock()
	p.eng = eng
	p.mu.Unlock()

	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	go p.run(p.newTicker(p.cfg.ReleaseTick))
	return nil
}

// run is the release loop: every release_tick it releases what is due and records metrics.
func (p *tracesProcessor) run(t ticker) {
	defer close(p.done)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C():
			p.releaseTick()
			if p.afterTick != nil {
				p.afterTick()
			}
		}
	}
}

// releaseTick asks the engine for due traces at the current time, passes them on, and
// records the engine's counters and gauges.
func (p *tracesProcessor) releaseTick() {
	ctx := context.Background()
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.eng == nil {
		return
	}
	ready, err := p.eng.Tick(p.now())
	if err != nil {
		p.logger.Error("engine tick failed", zap.Error(err))
	}
	if ready > 0 {
		_ = p.drain(ctx, ctx)
	}
	p.recordStats(ctx)
}

// ConsumeTraces hands the batch to the engine in one call. Spans that are ready afterwards
// (late spans, traces released early) are passed on from this goroutine; the rest leave
// from the release loop.
func (p *tracesProcessor) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	spans := td.SpanCount()
	if spans == 0 {
		return nil
	}
	data, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return consumererror.NewPermanent(fmt.Errorf("traceconsistency: marshaling the batch: %w", err))
	}
	return p.consumeBytes(ctx, data, spans)
}

// consumeBytes ingests one serialized ExportTraceServiceRequest holding spans spans.
func (p *tracesProcessor) consumeBytes(ctx context.Context, data []byte, spans int) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.eng == nil {
		return errors.New("traceconsistency processor is not running (not started or already shut down)")
	}
	res, err := p.eng.Ingest(data, p.now())
	if err != nil {
		// Counted by the engine (batches_refused, batches_throttled) and reported on the next
		// tick.
		var ee *engine.Error
		switch {
		case errors.As(err, &ee) && ee.Refused():
			p.logger.Warn("batch refused", zap.Int("spans", spans), zap.Error(err))
			return consumererror.NewPermanent(err)
		case errors.As(err, &ee) && ee.Retryable():
			// Not permanent: the receiver answers UNAVAILABLE / HTTP 503 and the sender
			// retries. Released data that could not leave yet fills the memory bound; the
			// release loop keeps passing it on.
			p.logger.Warn("batch refused for now, the sender should retry", zap.Int("spans", spans), zap.Error(err))
			return err
		}
		p.logger.Warn("batch refused", zap.Int("spans", spans), zap.Error(err))
		return err
	}
	if res.ReadySpans > 0 {
		// Released traces were assembled from many requests: this caller's context (its
		// client metadata, its cancellation) does not belong to them.
		_ = p.drain(ctx, context.Background())
	}
	return nil
}

// drain passes released units on until the engine has none ready or ctx is done; nextCtx is
// the context of the next.ConsumeTraces calls. Each engine drain becomes one call holding
// whole traces. A failing next consumer is logged and counted; its spans are not retried
// here (the exporter's sending queue and retry are the place for that). The caller holds
// p.mu for reading.
func (p *tracesProcessor) drain(ctx, nextCtx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := p.eng.Drain(uint64(p.cfg.MaxReleaseBatchSpans))
		if err != nil {
			p.logger.Error("engine drain failed", zap.Error(err))
			return err
		}
		if rel == nil {
			return nil
		}
		p.recordRelease(ctx, rel)
		if rel.Traces.SpanCount() == 0 {
			continue
		}
		if err := p.next.ConsumeTraces(nextCtx, rel.Traces); err != nil {
			p.tb.ProcessorTraceconsistencyConsumeErrors.Add(ctx, 1)
			p.logger.Error("next consumer refused released traces; their spans are lost",
				zap.Int("spans", rel.Traces.SpanCount()), zap.Int("units", len(rel.Units)), zap.Error(err))
		}
	}
}

// recordRelease counts what one drain released: traces and spans by reason, release ages,
// and findings by kind and service.
func (p *tracesProcessor) recordRelease(ctx context.Context, rel *engine.Release) {
	var traces, spans [16]int64
	for _, u := range rel.Units {
		r := int(u.Reason)
		if r >= len(p.reasonAttrs) {
			continue
		}
		spans[r] += int64(u.Spans)
		if u.Reason.IsTrace() {
			traces[r]++
			p.tb.ProcessorTraceconsistencyReleaseAge.Record(ctx, u.Age.Seconds())
		}
	}
	for r := range p.reasonAttrs {
		if traces[r] > 0 {
			p.tb.ProcessorTraceconsistencyTracesReleased.Add(ctx, traces[r], p.reasonAttrs[r])
		}
		if spans[r] > 0 {
			p.tb.ProcessorTraceconsistencySpansReleased.Add(ctx, spans[r], p.reasonAttrs[r])
		}
	}
	for _, f := range rel.Findings {
		if f.Count == 0 {
			continue
		}
		p.tb.ProcessorTraceconsistencyFindings.Add(ctx, int64(f.Count), metric.WithAttributes(
			attribute.String("kind", f.Kind),
			attribute.String("service_name", p.serviceName(f.Service)),
		))
	}
}

// serviceName caps the distinct service names in the findings metric.
func (p *tracesProcessor) serviceName(s string) string {
	p.servicesMu.Lock()
	defer p.servicesMu.Unlock()
	if _, ok := p.services[s]; ok {
		return s
	}
	if len(p.services) >= p.cfg.Checks.MaxServiceNames {
		return otherService
	}
	p.services[s] = struct{}{}
	return s
}

// recordStats turns the engine's cumulative counters into counter increments (deltas since
// the last call) and records its gauges. The caller holds p.mu for reading.
func (p *tracesProcessor) recordStats(ctx context.Context) {
	s, err := p.eng.Stats()
	if err != nil {
		p.logger.Error("engine stats failed", zap.Error(err))
		return
	}
	p.statsMu.Lock()
	defer p.statsMu.Unlock()
	prev := p.last
	p.last = s
	add := func(c metric.Int64Counter, cur, old uint64, opts ...metric.AddOption) {
		if cur > old {
			c.Add(ctx, int64(cur-old), opts...)
		}
	}
	tb := p.tb
	add(tb.ProcessorTraceconsistencySpansReceived, s.SpansReceived, prev.SpansReceived)
	add(tb.ProcessorTraceconsistencyBatchesRefused, s.BatchesRefused, prev.BatchesRefused)
	add(tb.ProcessorTraceconsistencyBatchesThrottled, s.BatchesThrottled, prev.BatchesThrottled)
	add(tb.ProcessorTraceconsistencyDuplicatesDropped, s.DuplicatesDropped, prev.DuplicatesDropped)
	add(tb.ProcessorTraceconsistencyConflictsDropped, s.ConflictsDropped, prev.ConflictsDropped)
	add(tb.ProcessorTraceconsistencySpansUnassembled, s.Unassembled, prev.Unassembled)
	add(tb.ProcessorTraceconsistencyLateSpans, s.LateForwarded, prev.LateForwarded, p.lateForwarded)
	add(tb.ProcessorTraceconsistencyLateSpans, s.LateDropped, prev.LateDropped, p.lateDropped)
	add(tb.ProcessorTraceconsistencyHlcFutureTimestamps, s.FutureTimestamps, prev.FutureTimestamps)
	add(tb.ProcessorTraceconsistencyHlcRefusals, s.HLCRefusals, prev.HLCRefusals)
	add(tb.ProcessorTraceconsistencyHlcBackwardJumps, s.HLCBackwardJumps, prev.HLCBackwardJumps)
	add(tb.ProcessorTraceconsistencyHlcLogicalOverflows, s.HLCLogicalOverflows, prev.HLCLogicalOverflows)
	add(tb.ProcessorTraceconsistencyHlcPersistErrors, s.HLCPersistErrors, prev.HLCPersistErrors)
	tb.ProcessorTraceconsistencySpansBuffered.Record(ctx, int64(s.BufferedSpans))
	tb.ProcessorTraceconsistencyBytesBuffered.Record(ctx, int64(s.BufferedBytes))
	tb.ProcessorTraceconsistencyTracesBuffered.Record(ctx, int64(s.BufferedTraces))
	for _, part := range s.MemoryParts() {
		tb.ProcessorTraceconsistencyMemory.Record(ctx, int64(part.Bytes), metric.WithAttributeSet(attribute.NewSet(attribute.String("part", part.Name))))
	}
	tb.ProcessorTraceconsistencyHlcMaxForwardOffset.Record(ctx, int64(s.HLCMaxForwardOffsetNs))
}

// Shutdown stops the release loop, releases everything still buffered (reason shutdown) to
// the next consumer within ctx, and frees the engine. Safe without Start and when repeated.
func (p *tracesProcessor) Shutdown(ctx context.Context) error {
	var err error
	p.shutdownOnce.Do(func() { err = p.shutdown(ctx) })
	return err
}

func (p *tracesProcessor) shutdown(ctx context.Context) error {
	defer p.tb.Shutdown()
	if p.stop == nil {
		return nil // never started: no engine, no loop
	}
	close(p.stop)
	select {
	case <-p.done:
	case <-ctx.Done():
		// The loop is stuck in the next consumer; freeing the engine under it is not safe.
		p.logger.Error("release loop did not stop in time; buffered spans are not released")
		return fmt.Errorf("traceconsistency shutdown: %w", ctx.Err())
	}

	var errs error
	p.mu.RLock()
	if _, err := p.eng.Shutdown(p.now()); err != nil {
		errs = errors.Join(errs, err)
	}
	if err := p.drain(ctx, ctx); err != nil {
		errs = errors.Join(errs, fmt.Errorf("traceconsistency shutdown: releasing buffered traces: %w", err))
	}
	p.recordStats(ctx)
	if s, err := p.eng.Stats(); err == nil && s.ReadySpans+s.BufferedSpans > 0 {
		p.logger.Error("spans still buffered at shutdown are lost",
			zap.Uint64("spans", s.ReadySpans+s.BufferedSpans))
	}
	p.mu.RUnlock()

	// Free the engine once no ConsumeTraces call uses it any more. A call stuck in the next
	// consumer must not make Shutdown outlive ctx: then the engine is freed when it returns.
	freed := make(chan struct{})
	go func() {
		defer close(freed)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.eng.Close()
		p.eng = nil
	}()
	select {
	case <-freed:
	case <-ctx.Done():
		errs = errors.Join(errs, fmt.Errorf("traceconsistency shutdown: waiting for in-flight batches: %w", ctx.Err()))
	}
	return errs
}
