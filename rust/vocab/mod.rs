//! The vocabulary the crate shares with the Go component, defined once here: the
//! configuration knobs (YAML key, C and Go field, type, doc text; defaults from
//! [`Config::default`]), the configuration enums with their YAML strings, and — read from
//! their own definitions — the result codes, release reasons, finding kinds and stats.
//!
//! The Go side is generated from it (`go` below, a test: `make vocab` writes
//! `traceconsistencyprocessor/internal/engine/vocab_generated.go` and `vocab_cgo_generated.go`; `cargo test` fails
//! when the committed files differ).
//!
//! Adding a knob: one line in `for_each_knob` (field, type, default, kind, YAML key, Go
//! field, doc), then `make vocab` and `make header`. `Config` and its `Default`, the C ABI's
//! `tc_config` (written by build.rs from these lines) and its conversions, the Go engine
//! `Config`, and the component's YAML field, default and YAML → engine mapping
//! (`go_yaml`) follow from it. Bounds go in [`Config::validate`]; a YAML field whose Go type
//! differs from the engine's is listed in `go_yaml::SPECIAL`.

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
    /// A [`ConfigEnum`] (`uint32_t` in C): the Go type, the default's Go constant and the
    /// YAML strings in order.
    Enum { go_type: &'static str, default: fn(&Config) -> &'static str, yaml: fn() -> Vec<&'static str> },
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

/// The knobs, in `tc_config` order, one line each: the field of [`Config`] (and of
/// `tc_config`), its type and default; its kind ([`Kind`]); its YAML key; the Go field; what
/// it does. `Config`, its `Default`, [`KNOBS`], the C ABI's conversions (`ffi::config`) and
/// the Go side are generated from this list.
macro_rules! for_each_knob {
    ($m:ident) => {
        $m! {
            num_shards: u32 = 0; Unsigned; "num_shards"; "NumShards"; "0 = four per core";
            quiet_period_ns: i64 = DEFAULT_QUIET_PERIOD.as_nanos() as i64; Duration; "quiet_period"; "QuietPeriod"; "how long a complete trace waits for more spans";
            idle_timeout_ns: i64 = DEFAULT_IDLE_TIMEOUT.as_nanos() as i64; Duration; "idle_timeout"; "IdleTimeout"; "an incomplete trace without new spans this long is released";
            max_age_ns: i64 = DEFAULT_MAX_AGE.as_nanos() as i64; Duration; "max_age"; "MaxAge"; "a trace is released this long after its first span";
            max_buffered_spans: i64 = DEFAULT_MAX_BUFFERED_SPANS; Count; "max_buffered_spans"; "MaxBufferedSpans"; "bound on buffered spans";
            max_buffered_bytes: i64 = DEFAULT_MAX_BUFFERED_BYTES; Count; "max_buffered_bytes"; "MaxBufferedBytes"; "bound on the engine's memory";
            max_spans_per_trace: i64 = DEFAULT_MAX_SPANS_PER_TRACE; Count; "max_spans_per_trace"; "MaxSpansPerTrace"; "a trace reaching it is released (span_limit)";
            late_span_policy: LateSpanPolicy = LateSpanPolicy::Forward; Enum; "late_spans.policy"; "LateSpanPolicy"; "spans of released traces: forward or drop";
            late_cache_size: i64 = DEFAULT_LATE_CACHE_SIZE; Count; "late_spans.cache_size"; "LateCacheSize"; "released trace IDs remembered";
            checks_disabled: u32 = 0; Unsigned; "checks.disabled"; "ChecksDisabled"; "finding kinds whose checks are off (the engine takes a mask of 1 << tc_finding_kind)";
            write_attributes: bool = true; Bool; "checks.write_attributes"; "WriteAttributes"; "write consistency.* attributes";
            child_tolerance_ns: i64 = 0; Duration; "checks.child_tolerance"; "ChildTolerance"; "how far a child may pass its parent's times";
            skew_correction: bool = false; Bool; "checks.skew_correction.enabled"; "SkewCorrection"; "correct clock skew between services";
            skew_max_adjustment_ns: i64 = DEFAULT_SKEW_MAX_ADJUSTMENT.as_nanos() as i64; Duration; "checks.skew_correction.max_adjustment"; "SkewMaxAdjustment"; "the largest correction";
            duplicate_policy: DuplicatePolicy = DuplicatePolicy::KeepBoth; Enum; "duplicates.conflict_policy"; "DuplicatePolicy"; "spans sharing a span ID: keep_both or keep_latest";
            hlc_enabled: bool = true; Bool; "hlc.enabled"; "HLCEnabled"; "stamp spans with the hybrid logical clock";
            hlc_max_offset_ns: i64 = DEFAULT_HLC_MAX_OFFSET.as_nanos() as i64; Duration; "hlc.max_offset"; "HLCMaxOffset"; "the largest clock offset trusted";
            hlc_restart: RestartStrategy = RestartStrategy::Wait; Enum; "hlc.restart_strategy"; "HLCRestart"; "none, wait or persist";
            hlc_state_file: Option<String> = None; Str; "hlc.state_file"; "HLCStateFile"; "\"\" = none";
            wal_directory: Option<String> = None; Str; "wal.directory"; "WALDirectory"; "\"\" = no write-ahead log";
            wal_sync: SyncMode = SyncMode::Batch; Enum; "wal.sync"; "WALSync"; "batch, interval or none";
            wal_sync_interval_ns: i64 = DEFAULT_WAL_SYNC_INTERVAL.as_nanos() as i64; Duration; "wal.sync_interval"; "WALSyncInterval"; "the fsync period of sync interval";
            wal_max_bytes: i64 = DEFAULT_WAL_MAX_BYTES; Count; "wal.max_bytes"; "WALMaxBytes"; "the log's disk bound";
            handoff_on_shutdown: bool = false; Bool; "handoff.on_shutdown"; "HandoffOnShutdown"; "hand buffered traces off at shutdown instead of releasing them";
            handoff_on_idle: bool = false; Bool; "handoff.on_idle"; "HandoffOnIdle"; "hand an incomplete trace off once at idle_timeout";
            handoff_max_hops: i64 = DEFAULT_HANDOFF_MAX_HOPS; Count; "handoff.max_hops"; "HandoffMaxHops"; "no span is handed off more often";
            handoff_key: Option<String> = None; Str; "handoff.key"; "HandoffKey"; "the secret shared by the collectors of the tier; \"\" = none: no marker is honoured";
        }
    };
}
pub(crate) use for_each_knob;

/// The [`Kind`] of a knob, its default read from `Config` by field.
macro_rules! knob_kind {
    (Duration, $f:ident, $t:ty) => { Kind::Duration(|c| c.$f) };
    (Count, $f:ident, $t:ty) => { Kind::Count(|c| c.$f) };
    (Unsigned, $f:ident, $t:ty) => { Kind::Unsigned(|c| c.$f) };
    (Bool, $f:ident, $t:ty) => { Kind::Bool(|c| c.$f) };
    (Enum, $f:ident, $t:ty) => { Kind::Enum { go_type: <$t as ConfigEnum>::GO_TYPE, default: |c| c.$f.go_name(), yaml: || <$t>::all().iter().map(|v| v.yaml()).collect() } };
    (Str, $f:ident, $t:ty) => { Kind::Str };
}

macro_rules! knob_table {
    ($($f:ident: $t:ty = $d:expr; $k:ident; $yaml:literal; $go:literal; $doc:literal;)*) => {
        /// Every knob of [`Config`], in `tc_config` order.
        pub const KNOBS: &[Knob] = &[$(Knob { yaml: $yaml, field: stringify!($f), go: $go, kind: knob_kind!($k, $f, $t), doc: $doc },)*];
    };
}
for_each_knob!(knob_table);

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
#[cfg(test)]
mod go_yaml;
