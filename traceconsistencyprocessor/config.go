package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/pipeline"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

// Config is the configuration of the traceconsistency processor. Knobs that the Rust engine
// owns are validated there (through the C ABI); knobs that only the Go side uses are
// validated here. Every error names the YAML key.
type Config struct {
	// NumShards is the number of independently locked buffer shards; 0 picks four per core.
	NumShards int `mapstructure:"num_shards"`

	// ReleaseTick is how often the release loop asks the engine for due traces (complete and
	// quiet, idle, too old) and passes them on. It bounds how late a release can be. Between
	// 1ms (each tick locks every shard) and 1m.
	ReleaseTick time.Duration `mapstructure:"release_tick"`

	// QuietPeriod is how long a complete trace (one root, every parent present) must go
	// without new spans before it is released with reason "complete".
	QuietPeriod time.Duration `mapstructure:"quiet_period"`

	// IdleTimeout releases an incomplete trace that received no span for this long
	// (reason "idle_timeout").
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`

	// MaxAge releases any trace this long after its first span (reason "max_age").
	MaxAge time.Duration `mapstructure:"max_age"`

	// MaxBufferedSpans bounds the spans held; beyond it the oldest traces are released early
	// (reason "memory_pressure"), never dropped.
	MaxBufferedSpans int64 `mapstructure:"max_buffered_spans"`

	// MaxBufferedBytes bounds the bytes held, like MaxBufferedSpans.
	MaxBufferedBytes int64 `mapstructure:"max_buffered_bytes"`

	// MaxSpansPerTrace releases a trace as soon as it holds this many spans
	// (reason "span_limit"); later spans of it are late spans.
	MaxSpansPerTrace int64 `mapstructure:"max_spans_per_trace"`

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

	// LateSpans says what to do with spans of traces already released.
	LateSpans LateSpansConfig `mapstructure:"late_spans"`

	// Duplicates says how spans that share one span ID are resolved.
	Duplicates DuplicatesConfig `mapstructure:"duplicates"`

	// Checks configures the consistency checks run on every released trace.
	Checks ChecksConfig `mapstructure:"checks"`

	// HLC configures the hybrid logical clock stamp written on every span.
	HLC HLCConfig `mapstructure:"hlc"`

	// Handoff sends buffered traces back through the balancing tier instead of releasing
	// them, on shutdown and at idle_timeout (connector form only; see handoff.go).
	Handoff HandoffConfig `mapstructure:"handoff"`
	// WAL configures the write-ahead log that keeps buffered spans across a crash.
	WAL WALConfig `mapstructure:"wal"`

	// Sampling decides each released trace by rules (first match wins) before it leaves the
	// engine; absent, every trace is released as assembled. The engine owns and validates the
	// section (see sampling.go and README "Sampling in the engine").
	Sampling map[string]any `mapstructure:"sampling"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// LateSpansConfig configures the handling of spans that arrive after their trace was released.
type LateSpansConfig struct {
	// Policy is "forward" (pass them on at once, marked consistency.span.late=true) or
	// "drop" (drop and count them).
	Policy string `mapstructure:"policy"`

	// CacheSize is how many released trace IDs are remembered to recognise late spans.
	CacheSize int64 `mapstructure:"cache_size"`
}

// DuplicatesConfig configures the resolution of spans sharing one span ID within a trace.
// Exact duplicates (retries) are always removed and counted.
type DuplicatesConfig struct {
	// ConflictPolicy for spans with one span ID but different content: "keep_both" (each
	// marked with the conflicting_span_id finding) or "keep_latest" (the latest by HLC stamp
	// is kept, the others are dropped and counted).
	ConflictPolicy string `mapstructure:"conflict_policy"`
}

// ChecksConfig configures the consistency checks.
type ChecksConfig struct {
	// Disabled lists finding kinds whose checks are switched off, e.g. [ends_after_parent].
	Disabled []string `mapstructure:"disabled"`

	// WriteAttributes writes findings as consistency.* span attributes; when false, findings
	// are only counted in metrics.
	WriteAttributes bool `mapstructure:"write_attributes"`

	// ChildTolerance is how far a child may start before or end after its parent without a
	// finding.
	ChildTolerance time.Duration `mapstructure:"child_tolerance"`

	// MaxServiceNames caps the distinct service_name values of the findings metric; later
	// names are counted as "_other". At most 10000 (each name is a series of the metric).
	MaxServiceNames int `mapstructure:"max_service_names"`

	// SkewCorrection shifts children that are skewed across a process boundary.
	SkewCorrection SkewCorrectionConfig `mapstructure:"skew_correction"`
}

// SkewCorrectionConfig configures Jaeger-style clock-skew correction.
type SkewCorrectionConfig struct {
	// Enabled turns the correction on; shifted spans carry consistency.span.skew_adjustment_ns.
	Enabled bool `mapstructure:"enabled"`

	// MaxAdjustment is the largest shift applied; a larger skew is only reported.
	MaxAdjustment time.Duration `mapstructure:"max_adjustment"`
}

// HLCConfig configures the hybrid logical clock.
type HLCConfig struct {
	// Enabled stamps every span with consistency.hlc at ingest.
	Enabled bool `mapstructure:"enabled"`

	// MaxOffset is the largest clock offset trusted between hosts: remote times further ahead
	// are refused and flagged rather than followed.
	MaxOffset time.Duration `mapstructure:"max_offset"`

	// RestartStrategy keeps stamps monotonic across restarts: "none", "wait" (wait
	// max_offset at start before accepting data) or "persist" (keep an upper bound in
	// state_file).
	RestartStrategy string `mapstructure:"restart_strategy"`

	// StateFile is the file the persist strategy writes; required with "persist". One
	// collector per file (it holds a lock on <file>.lock): a second one fails at start.
	StateFile string `mapstructure:"state_file"`
}

// HandoffConfig configures the hand-off of traces to the collector that owns their trace ID
// now, through the balancing tier. Handing off needs the connector form of traceconsistency,
// whose output pipelines named in Pipelines receive the hand-offs.
type HandoffConfig struct {
	// OnShutdown hands every buffered trace off on shutdown instead of releasing it with
	// reason "shutdown".
	OnShutdown bool `mapstructure:"on_shutdown"`

	// OnIdle hands an incomplete trace off at idle_timeout instead of releasing it with
	// reason "idle_timeout", once: a trace handed off max_hops times is released.
	OnIdle bool `mapstructure:"on_idle"`

	// MaxHops is how often a span may be handed off; a trace holding a span handed off this
	// often is released, never handed off again.
	MaxHops int `mapstructure:"max_hops"`

	// Pipelines are the connector's output pipelines that receive hand-offs (their exporter
	// points at the balancing tier); the other output pipelines receive released traces.
	Pipelines []pipeline.ID `mapstructure:"pipelines"`

	// Key is a secret shared by every collector of the tier (at least 16 bytes; required
	// with on_shutdown or on_idle). Hand-offs carry a proof made with it beside their
	// marker, and a received marker is honoured only when its proof checks: a marker that
	// anyone else writes is stripped and counted (handoff_spans_untrusted).
	Key configopaque.String `mapstructure:"key"`
}

// enabled reports whether anything is handed off.
func (h HandoffConfig) enabled() bool { return h.OnShutdown || h.OnIdle }

// WALConfig configures the write-ahead log: every accepted batch is written (with the HLC
// stamps its spans were given) before it is acknowledged, every release is marked delivered
// once the next consumer accepted it, and a restart replays what was not delivered.
type WALConfig struct {
	// Directory holds the log's segment files; empty (the default) turns the log off. One
	// collector per directory (it is locked). Created 0700, its files 0600; a directory its
	// group or others may write to and owned by another user is refused at start.
	Directory string `mapstructure:"directory"`

	// Sync is when a batch counts as written: "batch" (ConsumeTraces returns once it is
	// fsync'd; concurrent batches share one fsync), "interval" (acknowledge at once, fsync at
	// most every sync_interval: a crash may lose that much) or "none" (no fsync: a crash of
	// the process loses nothing, a crash of the host may lose what the OS had not written).
	Sync string `mapstructure:"sync"`

	// SyncInterval is the fsync period of sync "interval".
	SyncInterval time.Duration `mapstructure:"sync_interval"`

	// MaxBytes bounds the log on disk. Near it, the traces holding its oldest segment are
	// released early (reason wal_full); at it, batches are refused with a retryable error
	// until delivered data frees space; a batch larger than the log can ever hold is refused
	// with a permanent error. At most max_buffered_bytes (a restart replays the log into
	// memory); 0 (the default) picks 256 MiB or max_buffered_bytes, whichever is less.
	MaxBytes int64 `mapstructure:"max_bytes"`
}

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
	if cfg.NumShards < 0 {
		return engine.Config{}, fmt.Errorf("num_shards must not be negative (0 picks four per core), got %d", cfg.NumShards)
	}
	late, err := parseEnum("late_spans.policy", cfg.LateSpans.Policy, map[string]engine.LateSpanPolicy{
		latePolicyForward: engine.LateForward,
		latePolicyDrop:    engine.LateDrop,
	}, latePolicyForward, latePolicyDrop)
	if err != nil {
		return engine.Config{}, err
	}
	dup, err := parseEnum("duplicates.conflict_policy", cfg.Duplicates.ConflictPolicy, map[string]engine.DuplicatePolicy{
		conflictKeepBoth:   engine.KeepBoth,
		conflictKeepLatest: engine.KeepLatest,
	}, conflictKeepBoth, conflictKeepLatest)
	if err != nil {
		return engine.Config{}, err
	}
	restart, err := parseEnum("hlc.restart_strategy", cfg.HLC.RestartStrategy, map[string]engine.RestartStrategy{
		restartNone:    engine.RestartNone,
		restartWait:    engine.RestartWait,
		restartPersist: engine.RestartPersist,
	}, restartNone, restartWait, restartPersist)
	if err != nil {
		return engine.Config{}, err
	}
	walSync, err := parseEnum("wal.sync", cfg.WAL.Sync, map[string]engine.WALSync{
		walSyncBatch:    engine.WALSyncBatch,
		walSyncInterval: engine.WALSyncInterval,
		walSyncNone:     engine.WALSyncNone,
	}, walSyncBatch, walSyncInterval, walSyncNone)
	if err != nil {
		return engine.Config{}, err
	}
	disabled, err := engine.KindMask(cfg.Checks.Disabled)
	if err != nil {
		return engine.Config{}, fmt.Errorf("checks.disabled: %w; known kinds: %s", err, strings.Join(engine.FindingKinds(), ", "))
	}
	shards := uint32(math.MaxUint32)
	if int64(cfg.NumShards) < math.MaxUint32 {
		shards = uint32(cfg.NumShards) // larger values reach Rust's bound check as MaxUint32
	}
	return engine.Config{
		NumShards:         shards,
		QuietPeriod:       cfg.QuietPeriod,
		IdleTimeout:       cfg.IdleTimeout,
		MaxAge:            cfg.MaxAge,
		MaxBufferedSpans:  cfg.MaxBufferedSpans,
		MaxBufferedBytes:  cfg.MaxBufferedBytes,
		MaxSpansPerTrace:  cfg.MaxSpansPerTrace,
		LateSpanPolicy:    late,
		LateCacheSize:     cfg.LateSpans.CacheSize,
		ChecksDisabled:    disabled,
		WriteAttributes:   cfg.Checks.WriteAttributes,
		ChildTolerance:    cfg.Checks.ChildTolerance,
		SkewCorrection:    cfg.Checks.SkewCorrection.Enabled,
		SkewMaxAdjustment: cfg.Checks.SkewCorrection.MaxAdjustment,
		DuplicatePolicy:   dup,
		HLCEnabled:        cfg.HLC.Enabled,
		HLCMaxOffset:      cfg.HLC.MaxOffset,
		HLCRestart:        restart,
		HLCStateFile:      cfg.HLC.StateFile,
		HandoffOnShutdown: cfg.Handoff.OnShutdown,
		HandoffOnIdle:     cfg.Handoff.OnIdle,
		HandoffMaxHops:    int64(cfg.Handoff.MaxHops),
		HandoffKey:        string(cfg.Handoff.Key),
		WALDirectory:      cfg.WAL.Directory,
		WALSync:           walSync,
		WALSyncInterval:   cfg.WAL.SyncInterval,
		WALMaxBytes:       cfg.WAL.maxBytes(cfg.MaxBufferedBytes),
	}, nil
}

// maxBytes is the log's disk bound: wal.max_bytes, or when it is 0 the default bound
// lowered to max_buffered_bytes so that it fits what a restart replays into memory.
func (w *WALConfig) maxBytes(maxBufferedBytes int64) int64 {
	if w.MaxBytes != 0 {
		return w.MaxBytes
	}
	return min(int64(defaultWALMaxBytes), maxBufferedBytes)
}

// parseEnum maps one enum string to its value; the error names the key and the choices.
func parseEnum[T any](key, value string, values map[string]T, order ...string) (T, error) {
	if v, ok := values[value]; ok {
		return v, nil
	}
	var zero T
	return zero, fmt.Errorf("%s must be one of %s, got %q", key, strings.Join(order, ", "), value)
}
