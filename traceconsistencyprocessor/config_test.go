package traceconsistencyprocessor

import (
	"path/filepath"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/pipeline"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadata"
)

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	tests := []struct {
		id       component.ID
		expected *Config
	}{
		{
			id:       component.NewID(metadata.Type),
			expected: createDefaultConfig().(*Config),
		},
		{
			id:       component.NewIDWithName(metadata.Type, "custom"),
			expected: customConfig(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			cfg := createDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			assert.Equal(t, tt.expected, cfg)
			if engine.Available {
				require.NoError(t, cfg.(*Config).Validate())
			}
		})
	}
}

// customConfig is what testdata/config.yaml's traceconsistency/custom gives: the defaults
// with every key it sets changed.
func customConfig() *Config {
	c := createDefaultConfig().(*Config)
	c.NumShards = 8
	c.ReleaseTick = 50 * time.Millisecond
	c.QuietPeriod = 2 * time.Second
	c.IdleTimeout = 20 * time.Second
	c.MaxAge = 2 * time.Minute
	c.MaxBufferedSpans = 500_000
	c.MaxBufferedBytes = 256 << 20
	c.MaxSpansPerTrace = 10_000
	c.MaxReleaseBatchSpans = 4096
	c.MaxConcurrentSends = 4
	c.ShutdownTimeout = 5 * time.Second
	c.LateSpans = LateSpansConfig{Policy: "drop", CacheSize: 50_000}
	c.Duplicates = DuplicatesConfig{ConflictPolicy: "keep_latest"}
	c.Checks.Disabled = []string{"ends_after_parent", "clock_skew"}
	c.Checks.WriteAttributes = false
	c.Checks.ChildTolerance = 5 * time.Millisecond
	c.Checks.MaxServiceNames = 50
	c.Checks.SkewCorrection = SkewCorrectionConfig{Enabled: true, MaxAdjustment: 30 * time.Second}
	c.HLC = HLCConfig{
		Enabled:         true,
		MaxOffset:       250 * time.Millisecond,
		RestartStrategy: "persist",
		StateFile:       "/var/lib/otelcol/hlc.state",
	}
	c.Handoff.OnShutdown = true
	c.Handoff.OnIdle = true
	c.Handoff.MaxHops = 2
	c.Handoff.Pipelines = []pipeline.ID{pipeline.NewIDWithName(pipeline.SignalTraces, "handoff")}
	c.Handoff.Key = "a secret of the gateway tier"
	c.WAL = WALConfig{
		Directory:    "/var/lib/otelcol/tc-wal",
		Sync:         "interval",
		SyncInterval: 50 * time.Millisecond,
		MaxBytes:     64 << 20,
	}
	return c
}

func TestUnknownKeyIsRejected(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config_unknown_key.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.NewID(metadata.Type).String())
	require.NoError(t, err)
	err = sub.Unmarshal(createDefaultConfig())
	require.ErrorContains(t, err, "quiet_periode")
}

func TestValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		// key is the YAML key the message must start with; want is a further fragment.
		key, want string
		// rust marks errors found by the Rust validation (checked only with cgo).
		rust bool
	}{
		{"negative num_shards", func(c *Config) { c.NumShards = -1 }, "num_shards", "must not be negative", false},
		{"too many shards", func(c *Config) { c.NumShards = 5000 }, "num_shards", "at most 1024", true},
		{"zero release_tick", func(c *Config) { c.ReleaseTick = 0 }, "release_tick", "positive duration", false},
		{"busy-looping release_tick", func(c *Config) { c.ReleaseTick = time.Nanosecond }, "release_tick", "between 1ms and 1m0s, got 1ns", false},
		{"hour-long release_tick", func(c *Config) { c.ReleaseTick = time.Hour }, "release_tick", "between 1ms and 1m0s, got 1h0m0s", false},
		{"negative quiet_period", func(c *Config) { c.QuietPeriod = -time.Second }, "quiet_period", "must be a positive duration, got -1s", true},
		{"idle_timeout below quiet_period", func(c *Config) { c.IdleTimeout = 500 * time.Millisecond }, "idle_timeout", "at least quiet_period", true},
		{"zero max_age", func(c *Config) { c.MaxAge = 0 }, "max_age", "positive duration", true},
		{"zero max_buffered_spans", func(c *Config) { c.MaxBufferedSpans = 0 }, "max_buffered_spans", "greater than zero", true},
		{"negative max_buffered_bytes", func(c *Config) { c.MaxBufferedBytes = -1 }, "max_buffered_bytes", "greater than zero", true},
		{"max_spans_per_trace over max_buffered_spans", func(c *Config) { c.MaxSpansPerTrace = 2_000_000 }, "max_spans_per_trace", "must not exceed max_buffered_spans", true},
		{"zero shutdown_timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "shutdown_timeout", "positive duration", false},
		{"zero max_release_batch_spans", func(c *Config) { c.MaxReleaseBatchSpans = 0 }, "max_release_batch_spans", "greater than zero", false},
		{"zero max_concurrent_sends", func(c *Config) { c.MaxConcurrentSends = 0 }, "max_concurrent_sends", "between 1 and 1024, got 0", false},
		{"too many max_concurrent_sends", func(c *Config) { c.MaxConcurrentSends = 5000 }, "max_concurrent_sends", "between 1 and 1024", false},
		{"bad late_spans.policy", func(c *Config) { c.LateSpans.Policy = "keep" }, "late_spans.policy", `one of forward, drop, got "keep"`, false},
		{"zero late_spans.cache_size", func(c *Config) { c.LateSpans.CacheSize = 0 }, "late_spans.cache_size", "greater than zero", true},
		{"bad duplicates.conflict_policy", func(c *Config) { c.Duplicates.ConflictPolicy = "newest" }, "duplicates.conflict_policy", `one of keep_both, keep_latest, got "newest"`, false},
		{"unknown checks.disabled kind", func(c *Config) { c.Checks.Disabled = []string{"ends_after_parent", "orphans"} }, "checks.disabled", `unknown finding kind "orphans"; known kinds: missing_parent,`, false},
		{"negative checks.child_tolerance", func(c *Config) { c.Checks.ChildTolerance = -time.Millisecond }, "checks.child_tolerance", "must not be negative", true},
		{"zero checks.max_service_names", func(c *Config) { c.Checks.MaxServiceNames = 0 }, "checks.max_service_names", "greater than zero", false},
		{"unbounded checks.max_service_names", func(c *Config) { c.Checks.MaxServiceNames = 1 << 30 }, "checks.max_service_names", "at most 10000", false},
		{"zero skew max_adjustment", func(c *Config) { c.Checks.SkewCorrection.MaxAdjustment = 0 }, "checks.skew_correction.max_adjustment", "positive duration", true},
		{"zero hlc.max_offset", func(c *Config) { c.HLC.MaxOffset = 0 }, "hlc.max_offset", "positive duration", true},
		{"hour-long hlc.max_offset", func(c *Config) { c.HLC.MaxOffset = time.Hour }, "hlc.max_offset", "at most 10s", true},
		{"bad hlc.restart_strategy", func(c *Config) { c.HLC.RestartStrategy = "sleep" }, "hlc.restart_strategy", `one of none, wait, persist, got "sleep"`, false},
		{"persist without hlc.state_file", func(c *Config) { c.HLC.RestartStrategy = "persist" }, "hlc.state_file", "must be set when hlc.restart_strategy is persist", true},
		{"hand-off without handoff.pipelines", func(c *Config) { c.Handoff.OnShutdown = true }, "handoff.pipelines", "must name the output pipeline", false},
		{"handoff.pipelines of another signal", func(c *Config) {
			c.Handoff.OnIdle = true
			c.Handoff.Pipelines = []pipeline.ID{pipeline.NewID(pipeline.SignalLogs)}
		}, "handoff.pipelines", `must name traces pipelines, got "logs"`, false},
		{"zero handoff.max_hops", func(c *Config) { c.Handoff.MaxHops = 0 }, "handoff.max_hops", "between 1 and 16", true},
		{"hand-off without handoff.key", func(c *Config) {
			c.Handoff.OnIdle = true
			c.Handoff.Pipelines = []pipeline.ID{pipeline.NewIDWithName(pipeline.SignalTraces, "handoff")}
		}, "handoff.key", "must be set when handoff.on_shutdown or handoff.on_idle is set", true},
		{"short handoff.key", func(c *Config) { c.Handoff.Key = "secret" }, "handoff.key", "at least 16 bytes long, got 6", true},
		{"bad wal.sync", func(c *Config) { c.WAL.Sync = "always" }, "wal.sync", `one of batch, interval, none, got "always"`, false},
		{"zero wal.sync_interval", func(c *Config) { c.WAL.Directory = "/tmp/w"; c.WAL.SyncInterval = 0 }, "wal.sync_interval", "positive duration", true},
		{"tiny wal.max_bytes", func(c *Config) { c.WAL.Directory = "/tmp/w"; c.WAL.MaxBytes = 1000 }, "wal.max_bytes", "at least", true},
		{"wal.max_bytes over max_buffered_bytes", func(c *Config) { c.WAL.Directory = "/tmp/w"; c.WAL.MaxBytes = 1 << 40 }, "wal.max_bytes", "must not exceed max_buffered_bytes", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.rust && !engine.Available {
				t.Skip("checked by the Rust engine, which needs cgo")
			}
			cfg := createDefaultConfig().(*Config)
			require.NoError(t, cfg.Validate(), "the starting point is valid")
			tt.mutate(cfg)
			err := cfg.Validate()
			require.Error(t, err)
			msg := err.Error()
			assert.Truef(t, len(msg) > len(tt.key) && msg[:len(tt.key)] == tt.key, "%q does not start with %q", msg, tt.key)
			assert.Contains(t, msg, tt.want)
			assert.True(t, unicode.IsLower(rune(msg[0])), "errors are lowercase: %q", msg)
		})
	}
}

func TestValidConfigs(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"defaults":            func(*Config) {},
		"every check off":     func(c *Config) { c.Checks.Disabled = engine.FindingKinds() },
		"hlc off, no waiting": func(c *Config) { c.HLC.Enabled = false; c.HLC.RestartStrategy = "none" },
		"persist with a file": func(c *Config) { c.HLC.RestartStrategy = "persist"; c.HLC.StateFile = "hlc.state" },
		"a write-ahead log":   func(c *Config) { c.WAL.Directory = "/var/lib/otelcol/wal"; c.WAL.Sync = "interval" },
		"the bounds themselves": func(c *Config) {
			c.ReleaseTick = time.Minute
			c.Checks.MaxServiceNames = 10_000
			c.HLC.MaxOffset = 10 * time.Second
		},
		"drop and keep latest": func(c *Config) {
			c.LateSpans.Policy = "drop"
			c.Duplicates.ConflictPolicy = "keep_latest"
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			mutate(cfg)
			require.NoError(t, cfg.Validate())
		})
	}
}

// The log's default disk bound fits a smaller max_buffered_bytes instead of refusing it; an
// explicit wal.max_bytes is kept (and checked against max_buffered_bytes).
func TestWALMaxBytesDefaultFitsMaxBufferedBytes(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.WAL.Directory = "/var/lib/otelcol/wal"
	cfg.MaxBufferedBytes = 64 << 20
	require.NoError(t, cfg.Validate(), "max_buffered_bytes: 64MiB with the log on and wal.max_bytes unset")
	ec, err := cfg.engineConfig()
	require.NoError(t, err)
	assert.EqualValues(t, 64<<20, ec.WALMaxBytes)

	cfg.MaxBufferedBytes = 1 << 30
	ec, err = cfg.engineConfig()
	require.NoError(t, err)
	assert.EqualValues(t, 256<<20, ec.WALMaxBytes, "the default bound is 256 MiB when max_buffered_bytes is larger")

	cfg.WAL.MaxBytes = 32 << 20
	ec, err = cfg.engineConfig()
	require.NoError(t, err)
	assert.EqualValues(t, 32<<20, ec.WALMaxBytes, "an explicit wal.max_bytes is kept")
}

func TestGoDefaultsMatchRustDefaults(t *testing.T) {
	if !engine.Available {
		t.Skip("needs cgo")
	}
	cfg := createDefaultConfig().(*Config)
	ec, err := cfg.engineConfig()
	require.NoError(t, err)
	assert.Equal(t, engine.RustDefaults(), ec)
}
