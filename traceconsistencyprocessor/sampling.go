package traceconsistencyprocessor

import (
	"encoding/json"
	"fmt"

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
