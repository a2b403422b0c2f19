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

// Defaults (the Rust engine's tc_config_default agrees; a test checks it).
const (
	defaultNumShards            = 0
	defaultReleaseTick          = 100 * time.Millisecond
	defaultQuietPeriod          = time.Second
	defaultIdleTimeout          = 10 * time.Second
	defaultMaxAge               = 60 * time.Second
	defaultMaxBufferedSpans     = 1_000_000
	defaultMaxBufferedBytes     = 512 << 20
	defaultMaxSpansPerTrace     = 20_000
	defaultMaxReleaseBatchSpans = 8192
	defaultShutdownTimeout      = 20 * time.Second
	defaultMaxConcurrentSends   = 10
	defaultLatePolicy           = latePolicyForward
	defaultLateCacheSize        = 100_000
	defaultConflictPolicy       = conflictKeepBoth
	defaultWriteAttributes      = true
	defaultChildTolerance       = 0
	defaultMaxServiceNames      = 200
	defaultSkewCorrection       = false
	defaultSkewMaxAdjustment    = time.Minute
	defaultHLCEnabled           = true
	defaultHLCMaxOffset         = 500 * time.Millisecond
	defaultHLCRestartStrategy   = restartWait
	defaultHandoffOnShutdown    = false
	defaultHandoffOnIdle        = false
	defaultHandoffMaxHops       = 1
	defaultWALSync              = walSyncBatch
	defaultWALSyncInterval      = 100 * time.Millisecond
	// defaultWALMaxBytes is the disk bound of the log when wal.max_bytes is 0, lowered to
	// max_buffered_bytes when that is less.
	defaultWALMaxBytes = 256 << 20
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
