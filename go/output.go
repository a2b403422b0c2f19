package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistencyprocessor"

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

	"github.com/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// output is one destination of what the engine drains — the next consumer (released
// traces) or, in the connector form, the hand-off output — with its send state: one call at
// a time, in order, and a batch refused with a retryable error is kept and retried with
// backoff before anything newer (its spans were acknowledged to their senders).
type output struct {
	// what names the output in log lines and errors.
	what string
	next consumer.Traces
	// take drains the engine's queue for this output.
	take func(g *engine.Engine, maxSpans uint64) (*engine.Release, error)
	// record counts what one drain took.
	record func(ctx context.Context, rel *engine.Release)

	// inflight is the span count of the call in progress, for the count of what is lost
	// when shutdown cannot wait for it.
	inflight atomic.Int64
	mu       sync.Mutex
	pending  *engine.Release // refused with a retryable error; goes first
	attempts int
	retryAt  time.Time
}

// waiting reports whether a refused batch waits for its next attempt, and when. A nil
// output (no hand-off output) has none.
func (o *output) waiting() (bool, time.Time) {
	if o == nil {
		return false, time.Time{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pending != nil, o.retryAt
}

// retryNow clears the backoff of a waiting batch (shutdown waited it out).
func (o *output) retryNow() {
	if o == nil {
		return
	}
	o.mu.Lock()
	o.retryAt = time.Time{}
	o.mu.Unlock()
}

// left takes what the output still holds at a shutdown that cannot wait any longer: the
// spans and traces of a waiting batch, or the spans of the call in progress.
func (o *output) left() (spans, traces int) {
	if o == nil {
		return 0, 0
	}
	if !o.mu.TryLock() {
		// A call is in progress (and holds the send lock).
		return int(o.inflight.Load()), 0
	}
	defer o.mu.Unlock()
	if o.pending == nil {
		return 0, 0
	}
	for _, u := range o.pending.Units {
		if u.Reason.IsTrace() {
			traces++
		}
	}
	spans = o.pending.Traces.SpanCount()
	o.pending = nil
	return spans, traces
}

// drainTo passes what the engine drains for o on, in order, until nothing is ready, a batch
// refused with a retryable error waits for its next attempt, ctx is done, or budget spans
// (0: no limit) were passed on; nextCtx is the context of the calls to o.next. With wait it waits for o's send lock; without, it leaves
// the work to the goroutine that holds it (and that drains until nothing is ready). A batch
// refused with a retryable error is kept (nothing newer is drained meanwhile, so the
// engine's memory fills and clients are pushed back) and retried with backoff; one refused
// with a permanent error is counted and logged as lost. Every batch accepted or counted as
// lost is acknowledged to the write-ahead log. The returned error is the permanent refusal
// of a batch holding spans forwarded at once (late or unassembled, most likely the
// caller's own), so that the caller learns of it. The caller holds p.mu for reading.
func (p *tracesProcessor) drainTo(o *output, ctx, nextCtx context.Context, wait bool, budget uint64) error {
	if o == nil {
		return nil
	}
	if wait {
		o.mu.Lock()
	} else if !o.mu.TryLock() {
		return nil
	}
	defer o.mu.Unlock()
	var own error
	var sent uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if budget > 0 && sent >= budget {
			return own
		}
		rel := o.pending
		if rel != nil {
			if p.now().Before(o.retryAt) {
				return own
			}
		} else {
			var err error
			rel, err = o.take(p.eng, uint64(p.cfg.MaxReleaseBatchSpans))
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
				return err
			}
			if rel == nil {
				return own
			}
			o.record(ctx, rel)
			if rel.Traces.SpanCount() == 0 {
				p.eng.Delivered(rel.Token)
				continue
			}
		}
		sent += uint64(rel.Traces.SpanCount())
		o.inflight.Store(int64(rel.Traces.SpanCount()))
		err := o.next.ConsumeTraces(nextCtx, rel.Traces)
		o.inflight.Store(0)
		if err == nil {
			o.pending, o.attempts = nil, 0
			p.eng.Delivered(rel.Token)
			continue
		}
		p.tb.ProcessorTraceconsistencyConsumeErrors.Add(ctx, 1)
		if consumererror.IsPermanent(err) {
			o.pending, o.attempts = nil, 0
			p.lose(ctx, lostDownstreamPermanent, rel.Traces.SpanCount(), fmt.Errorf("%s: %w", o.what, err))
			p.eng.Delivered(rel.Token) // counted as lost: not replayed either
			if rel.ForwardedAtOnce() {
				own = consumererror.NewPermanent(fmt.Errorf("traceconsistency: the %s refused forwarded spans: %w", o.what, err))
			}
			continue
		}
		o.pending = rel
		o.attempts++
		delay := retryDelay(o.attempts)
		o.retryAt = p.now().Add(delay)
		p.tb.ProcessorTraceconsistencyDownstreamRetries.Add(ctx, 1)
		p.logger.Warn("output refused a batch for now; kept, retried after backoff", zap.String("output", o.what),
			zap.Int("spans", rel.Traces.SpanCount()), zap.Int("attempt", o.attempts),
			zap.Duration("retry_in", delay), zap.Error(err))
		return own
	}
}
