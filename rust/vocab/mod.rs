//! The vocabulary the crate shares with the Go component, defined once here: the
//! configuration knobs (YAML key, C and Go field, type, doc text; defaults from
//! [`Config::default`]), the configuration enums with their YAML strings, and — read from
//! their own definitions — the result codes, release reasons, finding kinds and stats.
//!
//! The Go side is generated from it (`go` below, a test: `make vocab` writes
//! `go/internal/engine/vocab_generated.go` and `vocab_cgo_generated.go`; `cargo test` fails
//! when the committed files differ). Adding a knob: a field of [`Config`] with its default,
//! the `tc_config` field of the C ABI (`make header`), and one [`KNOBS`] line; the
//! conversions on both sides of the ABI follow (Rust: `ffi::config` reads [`KNOBS`] order in
//! a test; Go: generated).

use crate::config::{Config, DuplicatePolicy, LateSpanPolicy, RestartStrategy, SyncMode};

/// A configuration enum: its YAML key and strings, and its C and Go names.
pub trait ConfigEnum: Copy + PartialEq + 'static {
    /// The YAML key it is the value of.
    const KEY: &'static str;
    /// The C type (`tc_…`).
    const C_TYPE: &'static str;
    /// The Go type in package `engine`.
    const GO_TYPE: &'static str;
    fn all() -> &'static [Self];
    /// The YAML string.
    fn yaml(self) -> &'static str;
    /// The Go constant.
    fn go_name(self) -> &'static str;
    /// The value in C.
    fn value(self) -> u32;
    /// The YAML strings in order, for messages: `a, b or c`.
    fn choices() -> String {
        let names: Vec<&str> = Self::all().iter().map(|v| v.yaml()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
    /// The value named by a C integer, or `None` when out of range.
    fn from_value(v: u32) -> Option<Self> {
        Self::all().iter().copied().find(|x| x.value() == v)
    }
}

macro_rules! config_enum {
    ($t:ty, $key:literal, $c:literal, $go:literal, { $($v:ident => $yaml:literal, $goname:literal;)+ }) => {
        impl ConfigEnum for $t {
            const KEY: &'static str = $key;
            const C_TYPE: &'static str = $c;
            const GO_TYPE: &'static str = $go;
            fn all() -> &'static [Self] {
                &<$t>::ALL
            }
            fn yaml(self) -> &'static str {
                match self {
                    $(<$t>::$v => $yaml,)+
                }
            }
            fn go_name(self) -> &'static str {
                match self {
                    $(<$t>::$v => $goname,)+
                }
            }
            fn value(self) -> u32 {
                self as u32
            }
        }
    };
}

config_enum!(LateSpanPolicy, "late_spans.policy", "tc_late_span_policy", "LateSpanPolicy", {
    Forward => "forward", "LateForward";
    Drop => "drop", "LateDrop";
});
config_enum!(DuplicatePolicy, "duplicates.conflict_policy", "tc_duplicate_policy", "DuplicatePolicy", {
    KeepBoth => "keep_both", "KeepBoth";
    KeepLatest => "keep_latest", "KeepLatest";
});
config_enum!(RestartStrategy, "hlc.restart_strategy", "tc_restart_strategy", "RestartStrategy", {
    None => "none", "RestartNone";
    Wait => "wait", "RestartWait";
    Persist => "persist", "RestartPersist";
});
config_enum!(SyncMode, "wal.sync", "tc_wal_sync", "WALSync", {
    Batch => "batch", "WALSyncBatch";
    Interval => "interval", "WALSyncInterval";
    None => "none", "WALSyncNone";
});

/// The type of a knob, with its default read from [`Config::default`].
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Nanoseconds (`int64_t`), `time.Duration` in Go.
    Duration(fn(&Config) -> i64),
    /// A signed count (`int64_t`).
    Count(fn(&Config) -> i64),
    /// An unsigned count or mask (`uint32_t`).
    Unsigned(fn(&Config) -> u32),
    Bool(fn(&Config) -> bool),
    /// A [`ConfigEnum`] (`uint32_t` in C): the Go type and the default's Go constant.
    Enum { go_type: &'static str, default: fn(&Config) -> &'static str },
    /// A NUL-terminated string in C (NULL / empty: unset); no default.
    Str,
}

/// One configuration knob.
#[derive(Clone, Copy, Debug)]
pub struct Knob {
    /// The YAML key (dotted path), as validation errors name it.
    pub yaml: &'static str,
    /// The field of [`Config`] and of `tc_config`.
    pub field: &'static str,
    /// The field of the Go `engine.Config`.
    pub go: &'static str,
    pub kind: Kind,
    /// What it does, one line (the Go field's comment).
    pub doc: &'static str,
}

fn e<T: ConfigEnum>(v: T) -> &'static str {
    v.go_name()
}

/// Every knob of [`Config`], in `tc_config` order.
pub const KNOBS: &[Knob] = &[
    Knob { yaml: "num_shards", field: "num_shards", go: "NumShards", kind: Kind::Unsigned(|c| c.num_shards), doc: "0 = four per core" },
    Knob { yaml: "quiet_period", field: "quiet_period_ns", go: "QuietPeriod", kind: Kind::Duration(|c| c.quiet_period_ns), doc: "how long a complete trace waits for more spans" },
    Knob { yaml: "idle_timeout", field: "idle_timeout_ns", go: "IdleTimeout", kind: Kind::Duration(|c| c.idle_timeout_ns), doc: "an incomplete trace without new spans this long is released" },
    Knob { yaml: "max_age", field: "max_age_ns", go: "MaxAge", kind: Kind::Duration(|c| c.max_age_ns), doc: "a trace is released this long after its first span" },
    Knob { yaml: "max_buffered_spans", field: "max_buffered_spans", go: "MaxBufferedSpans", kind: Kind::Count(|c| c.max_buffered_spans), doc: "bound on buffered spans" },
    Knob { yaml: "max_buffered_bytes", field: "max_buffered_bytes", go: "MaxBufferedBytes", kind: Kind::Count(|c| c.max_buffered_bytes), doc: "bound on the engine's memory" },
    Knob { yaml: "max_spans_per_trace", field: "max_spans_per_trace", go: "MaxSpansPerTrace", kind: Kind::Count(|c| c.max_spans_per_trace), doc: "a trace reaching it is released (span_limit)" },
    Knob { yaml: "late_spans.policy", field: "late_span_policy", go: "LateSpanPolicy", kind: Kind::Enum { go_type: LateSpanPolicy::GO_TYPE, default: |c| e(c.late_span_policy) }, doc: "spans of released traces: forward or drop" },
    Knob { yaml: "late_spans.cache_size", field: "late_cache_size", go: "LateCacheSize", kind: Kind::Count(|c| c.late_cache_size), doc: "released trace IDs remembered" },
    Knob { yaml: "checks.disabled", field: "checks_disabled", go: "ChecksDisabled", kind: Kind::Unsigned(|c| c.checks_disabled), doc: "as a mask of 1 << kind (see KindMask)" },
    Knob { yaml: "checks.write_attributes", field: "write_attributes", go: "WriteAttributes", kind: Kind::Bool(|c| c.write_attributes), doc: "write consistency.* attributes" },
    Knob { yaml: "checks.child_tolerance", field: "child_tolerance_ns", go: "ChildTolerance", kind: Kind::Duration(|c| c.child_tolerance_ns), doc: "how far a child may pass its parent's times" },
    Knob { yaml: "checks.skew_correction.enabled", field: "skew_correction", go: "SkewCorrection", kind: Kind::Bool(|c| c.skew_correction), doc: "correct clock skew between services" },
    Knob { yaml: "checks.skew_correction.max_adjustment", field: "skew_max_adjustment_ns", go: "SkewMaxAdjustment", kind: Kind::Duration(|c| c.skew_max_adjustment_ns), doc: "the largest correction" },
    Knob { yaml: "duplicates.conflict_policy", field: "duplicate_policy", go: "DuplicatePolicy", kind: Kind::Enum { go_type: DuplicatePolicy::GO_TYPE, default: |c| e(c.duplicate_policy) }, doc: "spans sharing a span ID: keep_both or keep_latest" },
    Knob { yaml: "hlc.enabled", field: "hlc_enabled", go: "HLCEnabled", kind: Kind::Bool(|c| c.hlc_enabled), doc: "stamp spans with the hybrid logical clock" },
    Knob { yaml: "hlc.max_offset", field: "hlc_max_offset_ns", go: "HLCMaxOffset", kind: Kind::Duration(|c| c.hlc_max_offset_ns), doc: "the largest clock offset trusted" },
    Knob { yaml: "hlc.restart_strategy", field: "hlc_restart", go: "HLCRestart", kind: Kind::Enum { go_type: RestartStrategy::GO_TYPE, default: |c| e(c.hlc_restart) }, doc: "none, wait or persist" },
    Knob { yaml: "hlc.state_file", field: "hlc_state_file", go: "HLCStateFile", kind: Kind::Str, doc: "\"\" = none" },
    Knob { yaml: "wal.directory", field: "wal_directory", go: "WALDirectory", kind: Kind::Str, doc: "\"\" = no write-ahead log" },
    Knob { yaml: "wal.sync", field: "wal_sync", go: "WALSync", kind: Kind::Enum { go_type: SyncMode::GO_TYPE, default: |c| e(c.wal_sync) }, doc: "batch, interval or none" },
    Knob { yaml: "wal.sync_interval", field: "wal_sync_interval_ns", go: "WALSyncInterval", kind: Kind::Duration(|c| c.wal_sync_interval_ns), doc: "the fsync period of sync interval" },
    Knob { yaml: "wal.max_bytes", field: "wal_max_bytes", go: "WALMaxBytes", kind: Kind::Count(|c| c.wal_max_bytes), doc: "the log's disk bound" },
    Knob { yaml: "handoff.on_shutdown", field: "handoff_on_shutdown", go: "HandoffOnShutdown", kind: Kind::Bool(|c| c.handoff_on_shutdown), doc: "hand buffered traces off at shutdown" },
    Knob { yaml: "handoff.on_idle", field: "handoff_on_idle", go: "HandoffOnIdle", kind: Kind::Bool(|c| c.handoff_on_idle), doc: "hand an incomplete trace off at idle_timeout" },
    Knob { yaml: "handoff.max_hops", field: "handoff_max_hops", go: "HandoffMaxHops", kind: Kind::Count(|c| c.handoff_max_hops), doc: "no span is handed off more often" },
    Knob { yaml: "handoff.key", field: "handoff_key", go: "HandoffKey", kind: Kind::Str, doc: "\"\" = none: no marker is honoured" },
];

/// Bounds that validation enforces and the Go side reports or uses: (Go constant, value,
/// what it bounds).
pub fn bounds() -> Vec<(&'static str, i64, &'static str)> {
    use crate::config::*;
    vec![
        ("MaxShards", MAX_SHARDS as i64, "the most num_shards"),
        ("MaxHLCMaxOffset", MAX_HLC_MAX_OFFSET.as_nanos() as i64, "the largest hlc.max_offset, ns"),
        ("MinWALMaxBytes", MIN_WAL_MAX_BYTES, "the smallest wal.max_bytes"),
        ("MaxHandoffHops", MAX_HANDOFF_HOPS, "the most handoff.max_hops"),
        ("MinHandoffKeyBytes", MIN_HANDOFF_KEY_BYTES as i64, "the shortest handoff.key, bytes"),
    ]
}

#[cfg(test)]
mod go;
