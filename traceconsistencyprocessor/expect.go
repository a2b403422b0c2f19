package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

// What is still coming: the metrics of what the engine learned about calls and export lags
// to know which children of a trace are still on their way (see "What is still coming" in
// the README).

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// exportLagsEvery is how often the export lag per service is read and recorded (it moves
// over seconds, not ticks).
const exportLagsEvery = time.Second

// recordExpectStats records the learned calls' counters and gauges, and at most every
// exportLagsEvery the export lag per service (service names capped as in the findings
// metric: past checks.max_service_names the rest are one "_other" series, their largest lag).
// The caller holds p.statsMu.
func (p *tracesProcessor) recordExpectStats(ctx context.Context, s, prev engine.Stats) {
	tb := p.tb
	if s.TracesAwaitedChildren > prev.TracesAwaitedChildren {
		tb.ProcessorTraceconsistencyTracesAwaitedChildren.Add(ctx, int64(s.TracesAwaitedChildren-prev.TracesAwaitedChildren))
	}
	if s.ExpectedChildrenMissing > prev.ExpectedChildrenMissing {
		tb.ProcessorTraceconsistencyExpectedChildrenMissing.Add(ctx, int64(s.ExpectedChildrenMissing-prev.ExpectedChildrenMissing))
	}
	if s.LearnedFromLateSpans > prev.LearnedFromLateSpans {
		tb.ProcessorTraceconsistencyLearnedFromLateSpans.Add(ctx, int64(s.LearnedFromLateSpans-prev.LearnedFromLateSpans))
	}
	tb.ProcessorTraceconsistencyLearnedCalls.Record(ctx, int64(s.LearnedCallKeys))
	tb.ProcessorTraceconsistencyLearnedEdges.Record(ctx, int64(s.LearnedEdges))

	now := p.now()
	if !p.lagsRecorded.IsZero() && now.Sub(p.lagsRecorded) < exportLagsEvery {
		return
	}
	p.lagsRecorded = now
	lags, err := p.eng.ExportLags(now)
	if err != nil {
		p.logger.Error("engine export lags failed", zap.Error(err))
		return
	}
	// The slowest first: a capped name keeps the largest lag of those it stands for.
	seen := make(map[string]bool, len(lags))
	for _, l := range lags {
		name := p.serviceName(l.Service)
		if seen[name] {
			continue
		}
		seen[name] = true
		tb.ProcessorTraceconsistencyExportLag.Record(ctx, l.Lag.Seconds(),
			metric.WithAttributeSet(attribute.NewSet(attribute.String("service_name", name))))
	}
}
