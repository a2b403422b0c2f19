//go:generate bash tools/mdatagen.sh

// Package traceconsistencyprocessor is an OpenTelemetry Collector processor that assembles
// traces and releases each one whole as soon as it is complete, stamps every span with a
// hybrid logical clock, and checks every trace for consistency. Its core is a Rust static
// library reached through cgo (internal/engine).
package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

import (
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

// Defaults of the knobs only the Go side uses; the engine's knobs take the engine's defaults
// (defaultEngineKnobs, generated from the Rust definitions; a test checks them against
// tc_config_default).
const (
	defaultReleaseTick          = 100 * time.Millisecond
	defaultMaxReleaseBatchSpans = 8192
	defaultShutdownTimeout      = 20 * time.Second
	defaultMaxConcurrentSends   = 10
	defaultMaxServiceNames      = 200
	// maxConcurrentSends is the largest max_concurrent_sends.
	maxConcurrentSends = 1024
)

// NewFactory returns the factory of the traceconsistency processor.
func NewFactory() processor.Factory {
	return processor.NewFactory(
		metadata.Type,
		createDefaultConfig,
		processor.WithTraces(createTraces, metadata.TracesStability),
	)
}

func createDefaultConfig() component.Config {
	cfg := &Config{
		ReleaseTick:          defaultReleaseTick,
		MaxReleaseBatchSpans: defaultMaxReleaseBatchSpans,
		ShutdownTimeout:      defaultShutdownTimeout,
		MaxConcurrentSends:   defaultMaxConcurrentSends,
		Checks: ChecksConfig{
			MaxServiceNames: defaultMaxServiceNames,
		},
		Handoff: HandoffConfig{
			Pipelines: []pipeline.ID{},
		},
	}
	defaultEngineKnobs(cfg)
	return cfg
}
