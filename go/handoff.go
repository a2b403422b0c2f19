package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistencyprocessor"

// Hand-off: traces that leave through a second output instead of being released, so that
// the balancing tier routes them to the collector that owns their trace ID now (see
// "Hand-off through the balancing tier" in the README). Only the connector form has that
// output (connector.go); this file is the sending side, kept apart from the release path
// it mirrors (drain in processor.go).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// Causes of a hand-off (the handoff metrics' cause attribute).
const (
	handoffCauseShutdown = "shutdown"
	handoffCauseIdle     = "idle"
)

// handoffOutput is the hand-off output and its send state: like the release path, one call
// at a time, in order, and a hand-off refused with a retryable error is kept and retried
// with backoff before anything newer (its spans were acknowledged to their senders).
type handoffOutput struct {
	next     consumer.Traces
	inflight atomic.Int64
	mu       sync.Mutex
	pending  *engine.Release
	attempts int
	retryAt  time.Time

	causeAttrs map[engine.Reason]metric.MeasurementOption
}

func newHandoffOutput(next consumer.Traces) *handoffOutput {
	attr := func(c string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("cause", c)))
	}
	return &handoffOutput{
		next: next,
		causeAttrs: map[engine.Reason]metric.MeasurementOption{
			engine.ReasonShutdown:    attr(handoffCauseShutdown),
			engine.ReasonIdleTimeout: attr(handoffCauseIdle),
		},
	}
}

// handoffPending reports whether a hand-off waits for its next attempt, and when.
func (p *tracesProcessor) handoffPending() (bool, time.Time) {
	if p.handoff == nil {
		return false, time.Time{}
	}
	h := p.handoff
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pending != nil, h.retryAt
}

// handoffRetryNow clears the backoff of a pending hand-off (shutdown waited it out).
func (p *tracesProcessor) handoffRetryNow() {
	if p.handoff == nil {
		return
	}
	p.handoff.mu.Lock()
	p.handoff.retryAt = time.Time{}
	p.handoff.mu.Unlock()
}

// drainHandoff passes handed-off traces to the hand-off output, in order, until none waits,
// a refused one waits for its next attempt, or ctx is done; nextCtx is the context of the
// calls to the output. With wait it waits for the hand-off send lock, else it leaves the
// work to its holder. A permanent refusal is counted and logged as lost (the output is an
// exporter with a sending queue: it refuses permanently only what it can never send). The
// caller holds p.mu for reading.
func (p *tracesProcessor) drainHandoff(ctx, nextCtx context.Context, wait bool) error {
	h := p.handoff
	if h == nil {
		return nil
	}
	if wait {
		h.mu.Lock()
	} else if !h.mu.TryLock() {
		return nil
	}
	defer h.mu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := h.pending
		if rel != nil {
			if p.now().Before(h.retryAt) {
				return nil
			}
		} else {
			var err error
			rel, err = p.eng.DrainHandoff(uint64(p.cfg.MaxReleaseBatchSpans))
			if err != nil {
				var de *engine.DecodeError
				if errors.As(err, &de) {
					p.lose(ctx, lostDecodeFailed, int(de.Spans), err)
					p.eng.Delivered(de.Token) // counted as lost: not replayed either
					continue
				}
				p.logger.Error("engine hand-off drain failed", zap.Error(err))
				return err
			}
			if rel == nil {
				return nil
			}
			p.recordHandoff(ctx, rel)
			if rel.Traces.SpanCount() == 0 {
				p.eng.Delivered(rel.Token)
				continue
			}
		}
		h.inflight.Store(int64(rel.Traces.SpanCount()))
		err := h.next.ConsumeTraces(nextCtx, rel.Traces)
		h.inflight.Store(0)
		if err == nil {
			h.pending, h.attempts = nil, 0
			// With a write-ahead log, the hand-off output has the spans now: not replayed
			// here after a restart.
			p.eng.Delivered(rel.Token)
			continue
		}
		p.tb.ProcessorTraceconsistencyConsumeErrors.Add(ctx, 1)
		if consumererror.IsPermanent(err) {
			h.pending, h.attempts = nil, 0
			p.lose(ctx, lostDownstreamPermanent, rel.Traces.SpanCount(), fmt.Errorf("hand-off output: %w", err))
			p.eng.Delivered(rel.Token) // counted as lost: not replayed either
			continue
		}
		h.pending = rel
		h.attempts++
		delay := retryDelay(h.attempts)
		h.retryAt = p.now().Add(delay)
		p.tb.ProcessorTraceconsistencyDownstreamRetries.Add(ctx, 1)
		p.logger.Warn("hand-off output refused handed-off traces for now; kept, retried after backoff",
			zap.Int("spans", rel.Traces.SpanCount()), zap.Int("attempt", h.attempts),
			zap.Duration("retry_in", delay), zap.Error(err))
		return nil
	}
}

// recordHandoff counts the traces and spans of one hand-off drain by cause.
func (p *tracesProcessor) recordHandoff(ctx context.Context, rel *engine.Release) {
	for _, u := range rel.Units {
		attr, ok := p.handoff.causeAttrs[u.Reason]
		if !ok {
			continue
		}
		p.tb.ProcessorTraceconsistencyHandoffTraces.Add(ctx, 1, attr)
		p.tb.ProcessorTraceconsistencyHandoffSpans.Add(ctx, int64(u.Spans), attr)
	}
}

// handoffLeft is what the hand-off output still holds or sends at a shutdown that cannot
// wait any longer: the spans of a pending or in-flight hand-off.
func (p *tracesProcessor) handoffLeft() int {
	if p.handoff == nil {
		return 0
	}
	h := p.handoff
	if !h.mu.TryLock() {
		return int(h.inflight.Load())
	}
	defer h.mu.Unlock()
	if h.pending == nil {
		return 0
	}
	n := h.pending.Traces.SpanCount()
	h.pending = nil
	return n
}

// recordHandoffStats turns the engine's cumulative hand-off counters into increments.
func (p *tracesProcessor) recordHandoffStats(ctx context.Context, s, prev engine.Stats) {
	tb := p.tb
	if s.HandoffReceivedSpans > prev.HandoffReceivedSpans {
		tb.ProcessorTraceconsistencyHandoffSpansReceived.Add(ctx, int64(s.HandoffReceivedSpans-prev.HandoffReceivedSpans))
	}
	if s.HandoffMergedSpans > prev.HandoffMergedSpans {
		tb.ProcessorTraceconsistencyHandoffSpansMerged.Add(ctx, int64(s.HandoffMergedSpans-prev.HandoffMergedSpans))
	}
	if s.HandoffIncompleteTraces > prev.HandoffIncompleteTraces {
		tb.ProcessorTraceconsistencyHandoffTracesIncomplete.Add(ctx, int64(s.HandoffIncompleteTraces-prev.HandoffIncompleteTraces))
	}
}
