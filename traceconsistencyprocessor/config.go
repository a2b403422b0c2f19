package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pipeline"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// Config is the configuration of the traceconsistency processor. Knobs that the Rust engine
// owns are validated there (through the C ABI); knobs that only the Go side uses are
// validated here. Every error names the YAML key.
type Config struct {
	// EngineKnobs are the keys the engine owns at the top level, with their sections that
	// hold only engine keys (config_knobs_generated.go, from rust/vocab).
	EngineKnobs `mapstructure:",squash"`

	// ReleaseTick is how often the release loop asks the engine for due traces (complete and
	// quiet, idle, too old) and passes them on. It bounds how late a release can be. Between
	// 1ms (each tick locks every shard) and 1m.
	ReleaseTick time.Duration `mapstructure:"release_tick"`

	// MaxReleaseBatchSpans is about the most spans passed to the next consumer in one
	// ConsumeTraces call. Whole traces are never split, so one large trace may exceed it.
	MaxReleaseBatchSpans int `mapstructure:"max_release_batch_spans"`

	// MaxConcurrentSends bounds the ConsumeTraces calls to the next consumer in progress at
	// once (and, in the connector form, to the hand-off output). A next consumer that answers
	// only once the data is delivered (an exporter with sending_queue.wait_for_result) needs
	// several in flight to keep up; keep it at least the exporter's num_consumers.
	MaxConcurrentSends int `mapstructure:"max_concurrent_sends"`

	// ShutdownTimeout bounds how long Shutdown keeps trying to pass buffered and released
	// traces on (a shorter deadline from the collector wins). What is left then is counted
	// and logged as lost.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`

	// Checks configures the consistency checks run on every released trace.
	Checks ChecksConfig `mapstructure:"checks"`

	// Handoff sends buffered traces back through the balancing tier instead of releasing
	// them, on shutdown and at idle_timeout (connector form only; see handoff.go).
	Handoff HandoffConfig `mapstructure:"handoff"`

	// Sampling decides each released trace by rules (first match wins) before it leaves the
	// engine; absent, every trace is released as assembled. The engine owns and validates the
	// section (see sampling.go and README "Sampling in the engine").
	Sampling map[string]any `mapstructure:"sampling"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// ChecksConfig configures the consistency checks.
type ChecksConfig struct {
	// ChecksKnobs are the engine's keys of checks: disabled, write_attributes,
	// child_tolerance, skew_correction.*.
	ChecksKnobs `mapstructure:",squash"`

	// MaxServiceNames caps the distinct service_name values of the findings metric; later
	// names are counted as "_other". At most 10000 (each name is a series of the metric).
	MaxServiceNames int `mapstructure:"max_service_names"`
}

// HandoffConfig configures the hand-off of traces to the collector that owns their trace ID
// now, through the balancing tier. Handing off needs the connector form of traceconsistency,
// whose output pipelines named in Pipelines receive the hand-offs.
type HandoffConfig struct {
	// HandoffKnobs are the engine's keys of handoff: on_shutdown, on_idle, max_hops, key
	// (at least 16 bytes; required with on_shutdown or on_idle: hand-offs carry a proof made
	// with it beside their marker, and a received marker is honoured only when its proof
	// checks; a marker that anyone else writes is stripped and counted).
	HandoffKnobs `mapstructure:",squash"`

	// Pipelines are the connector's output pipelines that receive hand-offs (their exporter
	// points at the balancing tier); the other output pipelines receive released traces.
	Pipelines []pipeline.ID `mapstructure:"pipelines"`
}

// enabled reports whether anything is handed off.
func (h HandoffConfig) enabled() bool { return h.OnShutdown || h.OnIdle }

var _ component.Config = (*Config)(nil)

// Bounds of the knobs only the Go side uses.
const (
	// minReleaseTick: a shorter tick spends a core locking shards that have nothing due.
	minReleaseTick = time.Millisecond
	// maxReleaseTick: a longer tick holds due traces that long past their release.
	maxReleaseTick = time.Minute
	// maxServiceNames: each name is a series of the findings metric.
	maxServiceNames = 10_000
)

// Enum values of the string knobs.
const (
	latePolicyForward = engine.LateForwardYAML
	latePolicyDrop    = engine.LateDropYAML

	conflictKeepBoth   = engine.KeepBothYAML
	conflictKeepLatest = engine.KeepLatestYAML

	restartNone    = engine.RestartNoneYAML
	restartWait    = engine.RestartWaitYAML
	restartPersist = engine.RestartPersistYAML

	walSyncBatch    = engine.WALSyncBatchYAML
	walSyncInterval = engine.WALSyncIntervalYAML
	walSyncNone     = engine.WALSyncNoneYAML
)

// Validate checks the configuration: first the knobs only the Go side uses, then the whole
// configuration in the Rust engine. Errors name the YAML key.
func (cfg *Config) Validate() error {
	ec, err := cfg.engineConfig()
	if err != nil {
		return err
	}
	if cfg.ReleaseTick <= 0 {
		return fmt.Errorf("release_tick must be a positive duration, got %s", cfg.ReleaseTick)
	}
	if cfg.ReleaseTick < minReleaseTick || cfg.ReleaseTick > maxReleaseTick {
		return fmt.Errorf("release_tick must be between %s and %s, got %s", minReleaseTick, maxReleaseTick, cfg.ReleaseTick)
	}
	if cfg.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout must be a positive duration, got %s", cfg.ShutdownTimeout)
	}
	if cfg.MaxReleaseBatchSpans <= 0 {
		return fmt.Errorf("max_release_batch_spans must be greater than zero, got %d", cfg.MaxReleaseBatchSpans)
	}
	if cfg.MaxConcurrentSends <= 0 || cfg.MaxConcurrentSends > maxConcurrentSends {
		return fmt.Errorf("max_concurrent_sends must be between 1 and %d, got %d", maxConcurrentSends, cfg.MaxConcurrentSends)
	}
	if cfg.Checks.MaxServiceNames <= 0 {
		return fmt.Errorf("checks.max_service_names must be greater than zero, got %d", cfg.Checks.MaxServiceNames)
	}
	if cfg.Checks.MaxServiceNames > maxServiceNames {
		return fmt.Errorf("checks.max_service_names must be at most %d (each name is a series of the findings metric), got %d",
			maxServiceNames, cfg.Checks.MaxServiceNames)
	}
	if cfg.Handoff.enabled() && len(cfg.Handoff.Pipelines) == 0 {
		return errors.New("handoff.pipelines must name the output pipeline whose exporter sends hand-offs " +
			"to the balancing tier when handoff.on_shutdown or handoff.on_idle is set")
	}
	for _, id := range cfg.Handoff.Pipelines {
		if id.Signal() != pipeline.SignalTraces {
			return fmt.Errorf("handoff.pipelines must name traces pipelines, got %q", id.String())
		}
	}
	if err := engine.Validate(ec); err != nil {
		return err
	}
	return cfg.validateSampling()
}

// engineConfig translates the YAML configuration into the engine's. It fails on what cannot
// be translated (negative num_shards, unknown enum strings, unknown finding kinds).
func (cfg *Config) engineConfig() (engine.Config, error) {
	var ec engine.Config
	if err := cfg.engineKnobs(&ec); err != nil {
		return engine.Config{}, err
	}
	return ec, nil
}

// numShards is num_shards for the engine: never negative; values beyond uint32 reach Rust's
// bound check as MaxUint32.
func numShards(n int) (uint32, error) {
	if n < 0 {
		return 0, fmt.Errorf("num_shards must not be negative (0 picks four per core), got %d", n)
	}
	if int64(n) >= math.MaxUint32 {
		return math.MaxUint32, nil
	}
	return uint32(n), nil
}

// checksDisabled is checks.disabled as the engine's mask of finding kinds.
func checksDisabled(kinds []string) (uint32, error) {
	mask, err := engine.KindMask(kinds)
	if err != nil {
		return 0, fmt.Errorf("checks.disabled: %w; known kinds: %s", err, strings.Join(engine.FindingKinds(), ", "))
	}
	return mask, nil
}

// maxBytes is the log's disk bound: wal.max_bytes, or when it is 0 the default bound
// lowered to max_buffered_bytes so that it fits what a restart replays into memory.
func (w *WALConfig) maxBytes(maxBufferedBytes int64) int64 {
	if w.MaxBytes != 0 {
		return w.MaxBytes
	}
	return min(int64(engine.DefaultWALMaxBytes), maxBufferedBytes)
}
