package traceconsistencyprocessor

import (
	"context"
	"encoding/json"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// samplingJSON is the sampling section as the engine reads it (JSON of the YAML as decoded);
// nil without one.
func (cfg *Config) samplingJSON() ([]byte, error) {
	if cfg.Sampling == nil {
		return nil, nil
	}
	b, err := json.Marshal(cfg.Sampling)
	if err != nil {
		return nil, fmt.Errorf("sampling cannot be read: %w", err)
	}
	return b, nil
}

// validateSampling runs the engine's validation of the sampling section (errors name the
// key, e.g. sampling.rules[2].probabilistic.percentage).
func (cfg *Config) validateSampling() error {
	b, err := cfg.samplingJSON()
	if err != nil {
		return err
	}
	return engine.ValidateSampling(b)
}

// samplingRuleNames lists the rule names of a validated sampling section in order, then
// "default": the rule attribute of the sampling metrics.
func (cfg *Config) samplingRuleNames() []string {
	if cfg.Sampling == nil {
		return nil
	}
	var names []string
	if rules, ok := cfg.Sampling["rules"].([]any); ok {
		for _, r := range rules {
			m, _ := r.(map[string]any)
			name, _ := m["name"].(string)
			names = append(names, name)
		}
	}
	return append(names, "default")
}

// recordSamplingStats turns the engine's cumulative per-rule sampling counts into counter
// increments. The caller holds statsMu.
func (p *tracesProcessor) recordSamplingStats(ctx context.Context) {
	if p.cfg.Sampling == nil {
		return
	}
	counts, err := p.eng.SamplingCounts()
	if err != nil {
		p.logger.Error("engine sampling counts failed", zap.Error(err))
		return
	}
	names := p.cfg.samplingRuleNames()
	prev := p.lastSampling
	p.lastSampling = counts
	for i, c := range counts {
		if i >= len(names) {
			break
		}
		var old engine.SamplingCount
		if i < len(prev) {
			old = prev[i]
		}
		kept := metric.WithAttributeSet(attribute.NewSet(attribute.String("rule", names[i]), attribute.String("decision", "kept")))
		dropped := metric.WithAttributeSet(attribute.NewSet(attribute.String("rule", names[i]), attribute.String("decision", "dropped")))
		add := func(c metric.Int64Counter, cur, old uint64, opt metric.AddOption) {
			if cur > old {
				c.Add(ctx, int64(cur-old), opt)
			}
		}
		add(p.tb.ProcessorTraceconsistencySamplingTraces, c.KeptTraces, old.KeptTraces, kept)
		add(p.tb.ProcessorTraceconsistencySamplingSpans, c.KeptSpans, old.KeptSpans, kept)
		add(p.tb.ProcessorTraceconsistencySamplingTraces, c.DroppedTraces, old.DroppedTraces, dropped)
		add(p.tb.ProcessorTraceconsistencySamplingSpans, c.DroppedSpans, old.DroppedSpans, dropped)
	}
}
