package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

// The processor's own telemetry: its instruments (declared in metadata.yaml, generated into
// internal/metadata), the attribute sets it records them with, and the recording of what
// the engine counts (recordStats, each tick) and of what each drained batch holds
// (recordBatch). The hand-off metrics are counted in handoff.go.

import (
	"context"
	"errors"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

// otherService is the service_name of findings once checks.max_service_names is reached.
const otherService = "_other"

// Causes of lost spans (the spans_lost metric's cause attribute).
const (
	lostDownstreamPermanent = "downstream_permanent"
	lostDecodeFailed        = "decode_failed"
	lostShutdownTimeout     = "shutdown_timeout"
	lostEnginePanic         = "engine_panic"
)

// initTelemetry registers the processor's instruments (metadata.yaml, generated into
// internal/metadata) and builds the attribute sets it records them with.
func (p *tracesProcessor) initTelemetry(set component.TelemetrySettings) error {
	tb, err := metadata.NewTelemetryBuilder(set)
	if err != nil {
		return err
	}
	p.tb = tb
	p.services = make(map[string]struct{})
	p.lateForwarded = metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", string(latePolicyForward))))
	p.lateDropped = metric.WithAttributeSet(attribute.NewSet(attribute.String("policy", string(latePolicyDrop))))
	p.lostAttrs = map[string]metric.MeasurementOption{}
	for _, c := range []string{lostDownstreamPermanent, lostDecodeFailed, lostShutdownTimeout, lostEnginePanic} {
		p.lostAttrs[c] = metric.WithAttributeSet(attribute.NewSet(attribute.String("cause", c)))
	}
	for _, r := range engine.Reasons() {
		p.reasonAttrs = append(p.reasonAttrs, metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", r.String()))))
	}
	return nil
}

// lose counts and logs spans that cannot be delivered.
func (p *tracesProcessor) lose(ctx context.Context, cause string, spans int, err error) {
	if spans > 0 {
		p.tb.ProcessorTraceconsistencySpansLost.Add(ctx, int64(spans), p.lostAttrs[cause])
	}
	p.logger.Error("acknowledged spans are lost", zap.String("cause", cause), zap.Int("spans", spans), zap.Error(err))
}

// recordBatch counts what one drained batch holds: traces and spans by reason, release
// ages, and findings by kind and service.
func (p *tracesProcessor) recordBatch(ctx context.Context, rel *engine.Release) {
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
	if rel.BuilderFallbacks > 0 {
		p.tb.ProcessorTraceconsistencyReleaseBuilderFallbacks.Add(ctx, int64(rel.BuilderFallbacks))
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
	add(tb.ProcessorTraceconsistencyHlcStalledBatches, s.HLCStalledBatches, prev.HLCStalledBatches)
	if s.DrainLostSpans > prev.DrainLostSpans {
		// The drain's error (an internal error) was logged where it failed.
		p.lose(ctx, lostEnginePanic, int(s.DrainLostSpans-prev.DrainLostSpans), errors.New("an engine drain failed with an internal error after taking them"))
	}
	tb.ProcessorTraceconsistencySpansBuffered.Record(ctx, int64(s.BufferedSpans))
	tb.ProcessorTraceconsistencyBytesBuffered.Record(ctx, int64(s.BufferedBytes))
	tb.ProcessorTraceconsistencyTracesBuffered.Record(ctx, int64(s.BufferedTraces))
	for _, part := range s.MemoryParts() {
		tb.ProcessorTraceconsistencyMemory.Record(ctx, int64(part.Bytes), metric.WithAttributeSet(attribute.NewSet(attribute.String("part", part.Name))))
	}
	tb.ProcessorTraceconsistencyHlcMaxForwardOffset.Record(ctx, int64(s.HLCMaxForwardOffsetNs))
	p.recordHandoffStats(ctx, s, prev)
	p.recordExpectStats(ctx, s, prev)
	p.recordSamplingStats(ctx)
	if p.cfg.WAL.Directory == "" {
		return
	}
	add(tb.ProcessorTraceconsistencyWalFsyncs, s.WALFsyncs, prev.WALFsyncs)
	add(tb.ProcessorTraceconsistencyWalFullRefusals, s.WALFullRefusals, prev.WALFullRefusals)
	add(tb.ProcessorTraceconsistencyWalWriteErrors, s.WALWriteErrors, prev.WALWriteErrors)
	add(tb.ProcessorTraceconsistencyWalRecordsReplayed, s.WALRecordsReplayed, prev.WALRecordsReplayed)
	add(tb.ProcessorTraceconsistencyWalSpansReplayed, s.WALSpansReplayed, prev.WALSpansReplayed)
	add(tb.ProcessorTraceconsistencyWalTracesRecovered, s.WALTracesRecovered, prev.WALTracesRecovered)
	add(tb.ProcessorTraceconsistencyWalCorruptRecords, s.WALCorruptRecords, prev.WALCorruptRecords)
	add(tb.ProcessorTraceconsistencyWalTornRecords, s.WALTornRecords, prev.WALTornRecords)
	add(tb.ProcessorTraceconsistencyWalRedeliveredSpans, s.WALRedeliveredSpans, prev.WALRedeliveredSpans)
	tb.ProcessorTraceconsistencyWalBytes.Record(ctx, int64(s.WALBytes))
	tb.ProcessorTraceconsistencyWalSegments.Record(ctx, int64(s.WALSegments))
	// The engine counts fsyncs in power-of-two microsecond buckets (bucket i: under 2^i µs);
	// each new one is recorded at its bucket's midpoint.
	for i, n := range s.WALFsyncBuckets {
		mid := 0.75 * float64(uint64(1)<<i) / 1e6
		for range n - prev.WALFsyncBuckets[i] {
			tb.ProcessorTraceconsistencyWalFsyncDuration.Record(ctx, mid)
		}
	}
}
