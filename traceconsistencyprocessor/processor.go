package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

// Backoff of a release the next consumer refused with a retryable error: doubling from
// retryInitial up to retryMax, each delay with up to 50 % random jitter.
const (
	retryInitial = 50 * time.Millisecond
	retryMax     = 5 * time.Second
)

func retryDelay(attempt int) time.Duration {
	d := retryInitial
	for i := 1; i < attempt && d < retryMax; i++ {
		d *= 2
	}
	d = min(d, retryMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

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

	// sendCtx is the context of every call to the next consumer outside Shutdown: not a
	// caller's (released traces were assembled from many requests), and cancelled when
	// Shutdown's deadline ends so that no downstream call can outlive it.
	sendCtx    context.Context
	cancelSend context.CancelFunc

	// send is the next consumer, where released traces go.
	send *output

	// handoff is the hand-off output (connector form with handoff.pipelines); nil otherwise.
	handoff *output
	// handoffCause are the cause attributes of the hand-off metrics, by unit reason.
	handoffCause map[engine.Reason]metric.MeasurementOption

	// Telemetry (metrics.go): the instruments, their attribute sets, and what the engine's
	// cumulative counters were at the last recordStats.
	//
	// statsMu serialises metric updates from the engine's cumulative counters.
	statsMu sync.Mutex
	last    engine.Stats
	// lagsRecorded: when the export lags were last recorded (see recordExpectStats).
	lagsRecorded time.Time
	// lastSampling: the sampling counts at the last recordStats (guarded by statsMu).
	lastSampling []engine.SamplingCount

	servicesMu sync.Mutex
	services   map[string]struct{}

	reasonAttrs   []metric.MeasurementOption
	lostAttrs     map[string]metric.MeasurementOption
	lateForwarded metric.MeasurementOption
	lateDropped   metric.MeasurementOption
}

var _ processor.Traces = (*tracesProcessor)(nil)

func newTracesProcessor(set processor.Settings, cfg *Config, next consumer.Traces, opts ...option) (*tracesProcessor, error) {
	engCfg, err := cfg.engineConfig()
	if err != nil {
		return nil, err
	}
	p := &tracesProcessor{
		cfg:       cfg,
		engCfg:    engCfg,
		logger:    set.Logger,
		now:       time.Now,
		sleep:     sleepCtx,
		newTicker: newTimeTicker,
	}
	if err := p.initTelemetry(set.TelemetrySettings); err != nil {
		return nil, err
	}
	p.sendCtx, p.cancelSend = context.WithCancel(context.Background())
	p.send = newOutput("next consumer", next, cfg.MaxConcurrentSends, (*engine.Engine).Drain, p.recordBatch)
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
// first waits hlc.max_offset, so that no stamp can repeat one issued before a restart; so
// does persist when hlc.state_file was missing or empty (a first start, or a crash).
func (p *tracesProcessor) Start(ctx context.Context, _ component.Host) error {
	sampling, err := p.cfg.samplingJSON()
	if err != nil {
		return err
	}
	eng, err := engine.NewWithSampling(p.engCfg, sampling)
	if err != nil {
		return err
	}
	lib := engine.Library()
	p.logger.Info("traceconsistency engine started", zap.String("library_version", lib.Version),
		zap.Uint32("abi_version", lib.ABIVersion), zap.String("source_hash", lib.SourceHash))
	if err := p.recover(ctx, eng); err != nil {
		eng.Close()
		return err
	}
	wait := p.cfg.HLC.Enabled && p.cfg.HLC.RestartStrategy == restartWait
	if p.cfg.HLC.Enabled && p.cfg.HLC.RestartStrategy == restartPersist {
		start, err := eng.HLCStart()
		if err != nil {
			eng.Close()
			return err
		}
		if start.NeedsWait() {
			what := "missing (a first start, or the file was lost)"
			if start == engine.HLCStartStateFileEmpty {
				what = "empty (a crash before it reached the disk)"
			}
			p.logger.Warn("hlc.state_file is "+what+": waiting hlc.max_offset as restart_strategy wait does",
				zap.String("hlc.state_file", p.cfg.HLC.StateFile))
			wait = true
		}
	}
	if wait {
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

// recover replays the write-ahead log, before any receiver can send: spans acknowledged
// before a crash or a shutdown that could not deliver them are buffered again. The replay
// keeps to max_buffered_bytes: when released data fills it, the replay pauses and what was
// released is passed on (the next consumer is started before us) before it goes on.
func (p *tracesProcessor) recover(ctx context.Context, eng *engine.Engine) error {
	if p.cfg.WAL.Directory == "" {
		return nil
	}
	var rec engine.Recovery
	for {
		var err error
		rec, err = eng.Recover(p.now())
		if err != nil {
			return fmt.Errorf("replaying wal.directory %s: %w", p.cfg.WAL.Directory, err)
		}
		if !rec.More {
			break
		}
		p.mu.Lock()
		p.eng = eng
		err = p.drainAll(ctx, "replaying wal.directory "+p.cfg.WAL.Directory, false)
		p.eng = nil
		p.mu.Unlock()
		if err != nil {
			return err
		}
	}
	fields := []zap.Field{
		zap.String("wal.directory", p.cfg.WAL.Directory), zap.Uint64("records", rec.Records),
		zap.Uint64("batches_replayed", rec.Batches), zap.Uint64("spans_replayed", rec.Spans),
		zap.Uint64("traces_recovered", rec.Traces), zap.Uint64("spans_possibly_redelivered", rec.RedeliveredSpans),
	}
	p.logger.Info("write-ahead log replayed", fields...)
	if rec.CorruptRecords+rec.TornRecords+rec.UnreadableBatches > 0 {
		p.logger.Warn("write-ahead log damage skipped at start",
			zap.String("wal.directory", p.cfg.WAL.Directory), zap.Uint64("corrupt_records", rec.CorruptRecords),
			zap.Uint64("torn_records", rec.TornRecords), zap.Uint64("unreadable_batches", rec.UnreadableBatches),
			zap.String("problems", rec.Problems))
	}
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
				// Tests see a tick once what it released has been passed on and counted
				// (the release loop itself records what the senders did at its next tick).
				p.send.background.Wait()
				if p.handoff != nil {
					p.handoff.background.Wait()
				}
				p.mu.RLock()
				if p.eng != nil {
					p.recordStats(context.Background())
				}
				p.mu.RUnlock()
				p.afterTick()
			}
		}
	}
}

// releaseTick asks the engine for due traces at the current time, starts senders to pass
// them on (without waiting for them), and records the engine's counters and gauges.
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
	for _, o := range []*output{p.send, p.handoff} {
		if o == nil {
			continue
		}
		if waiting, _ := o.waiting(); ready > 0 || waiting {
			// One sender per release that is ready (about max_release_batch_spans each).
			p.kick(o, int(min(ready/uint64(p.cfg.MaxReleaseBatchSpans)+1, uint64(cap(o.slots)))))
		}
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
	// Only spans of this batch forwarded at once (late, unassembled) leave from this
	// goroutine, so that a permanent refusal of them reaches the caller; assembled traces
	// leave from the release loop, so that ingest and release run in parallel. (Released
	// data that cannot leave fast enough fills max_buffered_bytes, and ingest is then
	// refused with a retryable error: the back-pressure does not need the caller to drain.)
	if res.ReadySpans > 0 && res.LateForwarded+res.Unassembled > 0 {
		// Released traces were assembled from many requests: this caller's context (its
		// client metadata) does not belong to their calls to the next consumer. If another
		// goroutine is sending, it takes these too. The caller passes on no more than was
		// ready after its batch went in (the queue is in order, so its own spans are among
		// them), and stops when its context ends; the rest leaves from the release loop. Only
		// a permanent refusal of forwarded spans is this caller's business; anything else
		// stays with the processor.
		if err := p.drainTo(p.send, ctx, p.sendCtx, false, res.ReadySpans); consumererror.IsPermanent(err) {
			return err
		}
	}
	return nil
}

// drain passes released traces on to the next consumer (see drainTo). The caller holds
// p.mu for reading.
func (p *tracesProcessor) drain(ctx, nextCtx context.Context, wait bool) error {
	return p.drainTo(p.send, ctx, nextCtx, wait, 0)
}
