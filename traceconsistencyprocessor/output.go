package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// output is one destination of what the engine drains — the next consumer (released
// traces) or, in the connector form, the hand-off output — with its send state. Up to
// cap(slots) calls to next run at once (max_concurrent_sends), so that a next consumer that
// answers only once the data is delivered (an exporter with sending_queue.wait_for_result)
// still keeps up; each release is acknowledged to the write-ahead log by its own token when
// its own call returned, whatever the order in which the calls return. A batch refused with
// a retryable error is kept and retried with backoff before anything newer is drained (its
// spans were acknowledged to their senders).
type output struct {
	// what names the output in log lines and errors.
	what string
	next consumer.Traces
	// take drains the engine's queue for this output.
	take func(g *engine.Engine, maxSpans uint64) (*engine.Release, error)
	// record counts what one drain took.
	record func(ctx context.Context, rel *engine.Release)
	// slots holds one token per sender (each makes one call to next at a time); its
	// capacity bounds the calls in progress.
	slots chan struct{}
	// background counts the senders the release loop started (kick).
	background sync.WaitGroup

	// inflight is the span count of the calls in progress, for the count of what is left
	// when shutdown cannot wait for them.
	inflight atomic.Int64
	mu       sync.Mutex
	// pending are batches refused with a retryable error, oldest first; they go first.
	pending  []*engine.Release
	attempts int
	retryAt  time.Time
}

// newOutput makes an output that runs up to concurrency calls to next at once.
func newOutput(what string, next consumer.Traces, concurrency int,
	take func(*engine.Engine, uint64) (*engine.Release, error), record func(context.Context, *engine.Release),
) *output {
	return &output{what: what, next: next, take: take, record: record, slots: make(chan struct{}, max(concurrency, 1))}
}

// waiting reports whether a refused batch waits for its next attempt, and when. A nil
// output (no hand-off output) has none.
func (o *output) waiting() (bool, time.Time) {
	if o == nil {
		return false, time.Time{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending) > 0, o.retryAt
}

// retryNow clears the backoff of waiting batches (shutdown waited it out).
func (o *output) retryNow() {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.retryAt = time.Time{}
	o.mu.Unlock()
}

// left takes what the output still holds at a shutdown that cannot wait any longer: the
// spans and traces of the waiting batches, and the spans of the calls in progress.
func (o *output) left() (spans, traces int) {
	if o == nil {
		return 0, 0
	}
	spans = int(o.inflight.Load())
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rel := range o.pending {
		for _, u := range rel.Units {
			if u.Reason.IsTrace() {
				traces++
			}
		}
		spans += rel.Traces.SpanCount()
	}
	o.pending = nil
	return spans, traces
}

// errRetryLater ends a sender whose output waits out the backoff of a refused batch.
var errRetryLater = errors.New("a refused batch waits for its next attempt")

// nextBatch gives the batch a sender passes on next: the oldest refused one once its
// backoff is over, else what the engine drains (nil when nothing is ready). While a refused
// batch waits for its backoff it returns errRetryLater: nothing newer is drained meanwhile,
// so the engine's memory fills and clients are pushed back.
func (p *tracesProcessor) nextBatch(o *output, ctx context.Context) (*engine.Release, error) {
	o.mu.Lock()
	if len(o.pending) > 0 {
		defer o.mu.Unlock()
		if p.now().Before(o.retryAt) {
			return nil, errRetryLater
		}
		rel := o.pending[0]
		o.pending = o.pending[1:]
		return rel, nil
	}
	o.mu.Unlock()
	for {
		// Decoding a release is the costly part of a drain: senders drain in parallel.
		rel, err := o.take(p.eng, uint64(p.cfg.MaxReleaseBatchSpans))
		if err != nil {
			var de *engine.DecodeError
			if errors.As(err, &de) {
				p.lose(ctx, lostDecodeFailed, int(de.Spans), err)
				p.eng.Delivered(de.Token) // counted as lost: not replayed either
				continue
			}
			p.logger.Error("engine drain failed", zap.String("output", o.what), zap.Error(err))
			var ee *engine.Error
			if errors.As(err, &ee) && ee.Code == engine.CodePanic {
				// The failed drain took its units and counted them lost (the engine only
				// panics after taking some); what is behind them still drains.
				continue
			}
			return nil, err
		}
		if rel == nil {
			return nil, nil
		}
		o.record(ctx, rel)
		if rel.Traces.SpanCount() == 0 {
			p.eng.Delivered(rel.Token)
			continue
		}
		return rel, nil
	}
}

// drainTo passes what the engine drains for o on until nothing is ready, a batch refused
// with a retryable error waits for its next attempt, ctx is done, or (without wait) budget
// spans (0: no limit) were passed on; nextCtx is the context of the calls to o.next. With wait it runs as many senders as o allows calls at once, each
// waiting for a free slot, and returns when all of them are done; without, it sends from
// this goroutine if a slot is free and otherwise leaves the work to the senders that hold
// the slots (each drains until nothing is ready). A batch refused with a retryable error is
// kept and retried with backoff; one refused with a permanent error is counted and logged
// as lost. Every batch accepted or counted as lost is acknowledged to the write-ahead log,
// by its own token, once its own call returned: a release still in a call is never marked
// delivered. The returned error is the permanent refusal of a batch holding spans forwarded
// at once (late or unassembled, most likely the caller's own), so that the caller learns of
// it. The caller holds p.mu for reading.
func (p *tracesProcessor) drainTo(o *output, ctx, nextCtx context.Context, wait bool, budget uint64) error {
	if o == nil {
		return nil
	}
	if !wait {
		select {
		case o.slots <- struct{}{}:
		default:
			return nil
		}
		return p.send1(o, ctx, nextCtx, budget)
	}
	n := cap(o.slots)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			select {
			case o.slots <- struct{}{}:
				errs[i] = p.send1(o, ctx, nextCtx, 0)
			case <-ctx.Done():
				errs[i] = ctx.Err()
			}
		})
	}
	wg.Wait()
	var own error
	for _, err := range errs {
		switch {
		case err == nil:
		case consumererror.IsPermanent(err):
			own = err
		case own == nil:
			own = err
		}
	}
	return own
}

// kick starts up to n senders on o's free slots, in the background: each drains until
// nothing is ready, so the release loop goes on ticking (and recording metrics) while calls
// to a next consumer that answers only after delivery wait for the backend. Only the
// release loop calls it; the caller holds p.mu for reading.
func (p *tracesProcessor) kick(o *output, n int) {
	if o == nil {
		return
	}
	for range max(n, 1) {
		select {
		case o.slots <- struct{}{}:
		default:
			return // every slot has a sender, and each drains until nothing is ready
		}
		o.background.Add(1)
		go func() {
			defer o.background.Done()
			p.mu.RLock()
			defer p.mu.RUnlock()
			if p.eng == nil {
				<-o.slots // shut down meanwhile
				return
			}
			_ = p.send1(o, p.sendCtx, p.sendCtx, 0)
		}()
	}
}

// send1 is one sender of drainTo and kick: it holds one of o's slots (released when it returns) and
// passes batches on, one call at a time, until nothing is ready, a refused batch waits for
// its backoff, ctx is done, or budget spans (0: no limit) were passed on.
func (p *tracesProcessor) send1(o *output, ctx, nextCtx context.Context, budget uint64) error {
	defer func() { <-o.slots }()
	var own error
	var sent uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if budget > 0 && sent >= budget {
			return own
		}
		rel, err := p.nextBatch(o, ctx)
		if errors.Is(err, errRetryLater) {
			return own
		}
		if err != nil {
			return err
		}
		if rel == nil {
			return own
		}
		spans := rel.Traces.SpanCount()
		sent += uint64(spans)
		o.inflight.Add(int64(spans))
		err = o.next.ConsumeTraces(nextCtx, rel.Traces)
		o.inflight.Add(-int64(spans))
		if err == nil {
			o.mu.Lock()
			o.attempts = 0
			o.mu.Unlock()
			p.eng.Delivered(rel.Token)
			continue
		}
		p.tb.ProcessorTraceconsistencyConsumeErrors.Add(ctx, 1)
		if consumererror.IsPermanent(err) {
			p.lose(ctx, lostDownstreamPermanent, spans, fmt.Errorf("%s: %w", o.what, err))
			p.eng.Delivered(rel.Token) // counted as lost: not replayed either
			if rel.ForwardedAtOnce() {
				own = consumererror.NewPermanent(fmt.Errorf("traceconsistency: the %s refused forwarded spans: %w", o.what, err))
			}
			continue
		}
		o.mu.Lock()
		o.pending = append(o.pending, rel)
		now := p.now()
		if !now.Before(o.retryAt) {
			// Calls that fail together (the backend is down) count as one attempt.
			o.attempts++
			o.retryAt = now.Add(retryDelay(o.attempts))
		}
		attempt, delay := o.attempts, o.retryAt.Sub(now)
		o.mu.Unlock()
		p.tb.ProcessorTraceconsistencyDownstreamRetries.Add(ctx, 1)
		p.logger.Warn("output refused a batch for now; kept, retried after backoff", zap.String("output", o.what),
			zap.Int("spans", spans), zap.Int("attempt", attempt),
			zap.Duration("retry_in", delay), zap.Error(err))
		return own
	}
}
