//go:generate bash tools/mdatagen.sh

// Package traceconsistencyprocessor is an OpenTelemetry Collector processor that assembles
// traces and releases each one whole as soon as it is complete, stamps every span with a
// hybrid logical clock, and checks every trace for consistency. Its core is a Rust static
// library reached through cgo (internal/engine).
package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistencyprocessor"

import (
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pipeline"
	"go.opentelemetry.io/collector/processor"

	"github.com/traceconsistency/traceconsistencyprocessor/internal/engine"
	"github.com/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

// Defaults: the engine's knobs take the engine's defaults (generated from the Rust
// definitions; a test checks them against tc_config_default).
const (
	defaultNumShards            = engine.DefaultNumShards
	defaultReleaseTick          = 100 * time.Millisecond
	defaultQuietPeriod          = engine.DefaultQuietPeriod
	defaultIdleTimeout          = engine.DefaultIdleTimeout
	defaultMaxAge               = engine.DefaultMaxAge
	defaultMaxBufferedSpans     = engine.DefaultMaxBufferedSpans
	defaultMaxBufferedBytes     = engine.DefaultMaxBufferedBytes
	defaultMaxSpansPerTrace     = engine.DefaultMaxSpansPerTrace
	defaultMaxReleaseBatchSpans = 8192
	defaultShutdownTimeout      = 20 * time.Second
	defaultMaxConcurrentSends   = 10
	defaultLatePolicy           = latePolicyForward
	defaultLateCacheSize        = engine.DefaultLateCacheSize
	defaultConflictPolicy       = conflictKeepBoth
	defaultWriteAttributes      = engine.DefaultWriteAttributes
	defaultChildTolerance       = engine.DefaultChildTolerance
	defaultMaxServiceNames      = 200
	defaultSkewCorrection       = engine.DefaultSkewCorrection
	defaultSkewMaxAdjustment    = engine.DefaultSkewMaxAdjustment
	defaultHLCEnabled           = engine.DefaultHLCEnabled
	defaultHLCMaxOffset         = engine.DefaultHLCMaxOffset
	defaultHLCRestartStrategy   = restartWait
	defaultHandoffOnShutdown    = engine.DefaultHandoffOnShutdown
	defaultHandoffOnIdle        = engine.DefaultHandoffOnIdle
	defaultHandoffMaxHops       = engine.DefaultHandoffMaxHops
	defaultWALSync              = walSyncBatch
	defaultWALSyncInterval      = engine.DefaultWALSyncInterval
	// defaultWALMaxBytes is the disk bound of the log when wal.max_bytes is 0, lowered to
	// max_buffered_bytes when that is less.
	defaultWALMaxBytes = engine.DefaultWALMaxBytes
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
	return &Config{
		NumShards:            defaultNumShards,
		ReleaseTick:          defaultReleaseTick,
		QuietPeriod:          defaultQuietPeriod,
		IdleTimeout:          defaultIdleTimeout,
		MaxAge:               defaultMaxAge,
		MaxBufferedSpans:     defaultMaxBufferedSpans,
		MaxBufferedBytes:     defaultMaxBufferedBytes,
		MaxSpansPerTrace:     defaultMaxSpansPerTrace,
		MaxReleaseBatchSpans: defaultMaxReleaseBatchSpans,
		ShutdownTimeout:      defaultShutdownTimeout,
		MaxConcurrentSends:   defaultMaxConcurrentSends,
		LateSpans: LateSpansConfig{
			Policy:    defaultLatePolicy,
			CacheSize: defaultLateCacheSize,
		},
		Duplicates: DuplicatesConfig{
			ConflictPolicy: defaultConflictPolicy,
		},
		Checks: ChecksConfig{
			Disabled:        []string{},
			WriteAttributes: defaultWriteAttributes,
			ChildTolerance:  defaultChildTolerance,
			MaxServiceNames: defaultMaxServiceNames,
			SkewCorrection: SkewCorrectionConfig{
				Enabled:       defaultSkewCorrection,
				MaxAdjustment: defaultSkewMaxAdjustment,
			},
		},
		HLC: HLCConfig{
			Enabled:         defaultHLCEnabled,
			MaxOffset:       defaultHLCMaxOffset,
			RestartStrategy: defaultHLCRestartStrategy,
		},
		Handoff: HandoffConfig{
			OnShutdown: defaultHandoffOnShutdown,
			OnIdle:     defaultHandoffOnIdle,
			MaxHops:    defaultHandoffMaxHops,
			Pipelines:  []pipeline.ID{},
		},
		WAL: WALConfig{
			Sync:         defaultWALSync,
			SyncInterval: defaultWALSyncInterval,
		},
	}
}
