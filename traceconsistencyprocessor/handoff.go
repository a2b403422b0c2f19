package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

// Hand-off: traces that leave through a second output instead of being released, so that
// the balancing tier routes them to the collector that owns their trace ID now (see
// "Hand-off through the balancing tier" in the README). Only the connector form has that
// output (connector.go); this file makes it and counts what it sends. Sending is shared
// with the release path (output.go).

import (
	"context"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// Causes of a hand-off (the handoff metrics' cause attribute).
const (
	handoffCauseShutdown = "shutdown"
	handoffCauseIdle     = "idle_timeout"
)

// newHandoffOutput makes the hand-off output of p: handed-off traces go to next, sent like
// releases (see drainTo), counted by cause.
func (p *tracesProcessor) newHandoffOutput(next consumer.Traces) *output {
	attr := func(c string) metric.MeasurementOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("cause", c)))
	}
	p.handoffCause = map[engine.Reason]metric.MeasurementOption{
		engine.ReasonShutdown:    attr(handoffCauseShutdown),
		engine.ReasonIdleTimeout: attr(handoffCauseIdle),
	}
	return newOutput("hand-off output", next, p.cfg.MaxConcurrentSends, (*engine.Engine).DrainHandoff, p.recordHandoff)
}

// recordHandoff counts the traces and spans of one hand-off drain by cause.
func (p *tracesProcessor) recordHandoff(ctx context.Context, rel *engine.Release) {
	for _, u := range rel.Units {
		attr, ok := p.handoffCause[u.Reason]
		if !ok {
			continue
		}
		p.tb.ProcessorTraceconsistencyHandoffTraces.Add(ctx, 1, attr)
		p.tb.ProcessorTraceconsistencyHandoffSpans.Add(ctx, int64(u.Spans), attr)
	}
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
	if s.HandoffUntrustedSpans > prev.HandoffUntrustedSpans {
		tb.ProcessorTraceconsistencyHandoffSpansUntrusted.Add(ctx, int64(s.HandoffUntrustedSpans-prev.HandoffUntrustedSpans))
	}
}
