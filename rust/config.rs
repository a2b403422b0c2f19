//! Engine configuration and its validation.
//!
//! Every knob mirrors one YAML key of the collector component; validation errors name that
//! key (dotted path) so that a bad collector config fails at start with a message the user
//! can act on. The Go component's `Validate()` calls into [`Config::validate`] through the
//! C ABI, so validation lives here, once.

use std::fmt;
use std::time::Duration;

use crate::findings::FindingKind;
pub use crate::wal::SyncMode;

/// What to do with a span whose trace was already released (`late_spans.policy`).
/// Exported to C as `tc_late_span_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum LateSpanPolicy {
    /// Forward it at once, marked `consistency.span.late = true`, and count it.
    Forward = 0,
    /// Drop it and count it (`late_spans` metric, policy `drop`).
    Drop = 1,
}

impl LateSpanPolicy {
    pub const ALL: [LateSpanPolicy; 2] = [LateSpanPolicy::Forward, LateSpanPolicy::Drop];
}

/// How two different spans sharing one span ID in a trace are resolved
/// (`duplicates.conflict_policy`). Exported to C as `tc_duplicate_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DuplicatePolicy {
    /// Keep both, each marked with the `conflicting_span_id` finding.
    KeepBoth = 0,
    /// Keep the one with the latest HLC stamp (the last one received); the others are dropped
    /// and counted.
    KeepLatest = 1,
}

impl DuplicatePolicy {
    pub const ALL: [DuplicatePolicy; 2] = [DuplicatePolicy::KeepBoth, DuplicatePolicy::KeepLatest];
}

/// How the hybrid logical clock stays monotonic across restarts (`hlc.restart_strategy`).
/// Exported to C as `tc_restart_strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RestartStrategy {
    /// Nothing: a restart on a host whose clock went back may repeat stamps.
    None = 0,
    /// The caller waits out `hlc.max_offset` before accepting data (CockroachDB's rule); the
    /// engine itself does not sleep.
    Wait = 1,
    /// An upper bound of issued stamps is persisted to `hlc.state_file`; on start the clock
    /// begins above it. A missing or empty file: the caller waits as with `Wait`
    /// (`tc_engine_hlc_start`).
    Persist = 2,
}

impl RestartStrategy {
    pub const ALL: [RestartStrategy; 3] = [RestartStrategy::None, RestartStrategy::Wait, RestartStrategy::Persist];
}

pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(1);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_BUFFERED_SPANS: i64 = 1_000_000;
pub const DEFAULT_MAX_BUFFERED_BYTES: i64 = 512 << 20;
pub const DEFAULT_MAX_SPANS_PER_TRACE: i64 = 20_000;
pub const DEFAULT_LATE_CACHE_SIZE: i64 = 100_000;
pub const DEFAULT_SKEW_MAX_ADJUSTMENT: Duration = Duration::from_secs(60);
pub const DEFAULT_HLC_MAX_OFFSET: Duration = Duration::from_millis(500);
/// Upper bound on `hlc.max_offset`: a start with `restart_strategy: wait` sleeps this long,
/// and no NTP-disciplined host is this far off.
pub const MAX_HLC_MAX_OFFSET: Duration = Duration::from_secs(10);
pub const DEFAULT_WAL_SYNC_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_WAL_MAX_BYTES: i64 = 256 << 20;
/// The smallest `wal.max_bytes`: eight segments of the smallest size.
pub const MIN_WAL_MAX_BYTES: i64 = 8 << 20;
pub const DEFAULT_HANDOFF_MAX_HOPS: i64 = 1;
/// Upper bound on `handoff.max_hops`: a span that went round more often is in a loop.
pub const MAX_HANDOFF_HOPS: i64 = 16;
/// The shortest `handoff.key`, in bytes.
pub const MIN_HANDOFF_KEY_BYTES: usize = 16;
/// Upper bound on shards: more than this only costs memory.
pub const MAX_SHARDS: u32 = 1024;

macro_rules! config_struct {
    ($($f:ident: $t:ty = $d:expr; $k:ident; $yaml:literal; $go:literal; $doc:literal;)*) => {
        /// The engine's configuration, one field per knob (`crate::vocab::for_each_knob`
        /// lists them). Durations are nanoseconds held as `i64` so that a negative YAML
        /// duration reaches validation instead of wrapping.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Config {
            $(#[doc = concat!("`", $yaml, "`: ", $doc, ".")] pub $f: $t,)*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $($f: $d,)* }
            }
        }
    };
}
crate::vocab::for_each_knob!(config_struct);

/// A configuration error; the message names the YAML key and the remedy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn positive_duration(key: &str, ns: i64) -> Result<(), ConfigError> {
    if ns <= 0 {
        return Err(ConfigError(format!(
            "{key} must be a positive duration, got {}",
            fmt_ns(ns)
        )));
    }
    Ok(())
}

fn non_negative_duration(key: &str, ns: i64) -> Result<(), ConfigError> {
    if ns < 0 {
        return Err(ConfigError(format!(
            "{key} must not be negative, got {}",
            fmt_ns(ns)
        )));
    }
    Ok(())
}

fn positive_count(key: &str, n: i64) -> Result<(), ConfigError> {
    if n <= 0 {
        return Err(ConfigError(format!(
            "{key} must be greater than zero, got {n}"
        )));
    }
    Ok(())
}

/// Formats nanoseconds the way Go prints a `time.Duration` for the common cases.
pub fn fmt_ns(ns: i64) -> String {
    let d = Duration::from_nanos(ns.unsigned_abs());
    let sign = if ns < 0 { "-" } else { "" };
    if ns == 0 {
        "0s".to_string()
    } else if d.as_nanos() % 1_000_000_000 == 0 {
        format!("{sign}{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 {
        format!("{sign}{}ms", d.as_millis())
    } else {
        format!("{sign}{}ns", d.as_nanos())
    }
}

impl Config {
    /// Checks every knob; the first problem found is returned, naming its YAML key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.num_shards > MAX_SHARDS {
            return Err(ConfigError(format!(
                "num_shards must be at most {MAX_SHARDS} (0 picks four per core), got {}",
                self.num_shards
            )));
        }
        positive_duration("quiet_period", self.quiet_period_ns)?;
        positive_duration("idle_timeout", self.idle_timeout_ns)?;
        positive_duration("max_age", self.max_age_ns)?;
        if self.idle_timeout_ns < self.quiet_period_ns {
            return Err(ConfigError(format!(
                "idle_timeout ({}) must be at least quiet_period ({})",
                fmt_ns(self.idle_timeout_ns),
                fmt_ns(self.quiet_period_ns)
            )));
        }
        if self.max_age_ns < self.quiet_period_ns {
            return Err(ConfigError(format!(
                "max_age ({}) must be at least quiet_period ({})",
                fmt_ns(self.max_age_ns),
                fmt_ns(self.quiet_period_ns)
            )));
        }
        positive_count("max_buffered_spans", self.max_buffered_spans)?;
        positive_count("max_buffered_bytes", self.max_buffered_bytes)?;
        positive_count("max_spans_per_trace", self.max_spans_per_trace)?;
        if self.max_spans_per_trace > self.max_buffered_spans {
            return Err(ConfigError(format!(
                "max_spans_per_trace ({}) must not exceed max_buffered_spans ({})",
                self.max_spans_per_trace, self.max_buffered_spans
            )));
        }
        if self.max_spans_per_trace > u32::MAX as i64 {
            return Err(ConfigError(format!(
                "max_spans_per_trace must be at most {}, got {}",
                u32::MAX,
                self.max_spans_per_trace
            )));
        }
        positive_count("late_spans.cache_size", self.late_cache_size)?;
        let all = FindingKind::ALL_MASK;
        if self.checks_disabled & !all != 0 {
            return Err(ConfigError(format!(
                "checks.disabled names an unknown check (bit mask {:#x})",
                self.checks_disabled & !all
            )));
        }
        non_negative_duration("checks.child_tolerance", self.child_tolerance_ns)?;
        positive_duration(
            "checks.skew_correction.max_adjustment",
            self.skew_max_adjustment_ns,
        )?;
        positive_duration("hlc.max_offset", self.hlc_max_offset_ns)?;
        if self.hlc_max_offset_ns > MAX_HLC_MAX_OFFSET.as_nanos() as i64 {
            return Err(ConfigError(format!(
                "hlc.max_offset must be at most {} (a start with restart_strategy wait sleeps that long), got {}",
                fmt_ns(MAX_HLC_MAX_OFFSET.as_nanos() as i64),
                fmt_ns(self.hlc_max_offset_ns)
            )));
        }
        if self.hlc_restart == RestartStrategy::Persist
            && self.hlc_state_file.as_deref().map_or(true, str::is_empty)
        {
            return Err(ConfigError(
                "hlc.state_file must be set when hlc.restart_strategy is persist".to_string(),
            ));
        }
        if !(1..=MAX_HANDOFF_HOPS).contains(&self.handoff_max_hops) {
            return Err(ConfigError(format!(
                "handoff.max_hops must be between 1 and {MAX_HANDOFF_HOPS}, got {}",
                self.handoff_max_hops
            )));
        }
        match self.handoff_key() {
            Some(k) if k.len() < MIN_HANDOFF_KEY_BYTES => {
                return Err(ConfigError(format!(
                    "handoff.key must be at least {MIN_HANDOFF_KEY_BYTES} bytes long, got {}",
                    k.len()
                )));
            }
            None if self.handoff_on_shutdown || self.handoff_on_idle => {
                return Err(ConfigError(
                    "handoff.key must be set when handoff.on_shutdown or handoff.on_idle is set: the same secret on every collector of the tier, so that a receiver honours only the hand-off markers they wrote".to_string(),
                ));
            }
            _ => {}
        }
        if self.wal_enabled() {
            positive_duration("wal.sync_interval", self.wal_sync_interval_ns)?;
            if self.wal_max_bytes < MIN_WAL_MAX_BYTES {
                return Err(ConfigError(format!(
                    "wal.max_bytes must be at least {MIN_WAL_MAX_BYTES} (8 MiB), got {}",
                    self.wal_max_bytes
                )));
            }
            if self.wal_max_bytes > self.max_buffered_bytes {
                return Err(ConfigError(format!(
                    "wal.max_bytes ({}) must not exceed max_buffered_bytes ({}): a restart replays up to wal.max_bytes of spans into memory",
                    self.wal_max_bytes, self.max_buffered_bytes
                )));
            }
        }
        Ok(())
    }

    /// Whether the write-ahead log is on.
    pub fn wal_enabled(&self) -> bool {
        self.wal_directory.as_deref().is_some_and(|d| !d.is_empty())
    }

    /// `handoff.key`, when set and not empty.
    pub fn handoff_key(&self) -> Option<&str> {
        self.handoff_key.as_deref().filter(|k| !k.is_empty())
    }

    /// Number of shards actually used.
    pub fn effective_shards(&self) -> usize {
        if self.num_shards > 0 {
            self.num_shards as usize
        } else {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            (cores * 4).clamp(4, 256)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn each_bad_knob_names_its_yaml_key() {
        type Mutate = fn(&mut Config);
        let cases: &[(&str, Mutate)] = &[
            ("num_shards", |c| c.num_shards = 5000),
            ("quiet_period", |c| c.quiet_period_ns = -1),
            ("idle_timeout", |c| c.idle_timeout_ns = 0),
            ("idle_timeout", |c| c.idle_timeout_ns = 1),
            ("max_age", |c| c.max_age_ns = -5),
            ("max_buffered_spans", |c| c.max_buffered_spans = 0),
            ("max_buffered_bytes", |c| c.max_buffered_bytes = -1),
            ("max_spans_per_trace", |c| c.max_spans_per_trace = 0),
            ("max_spans_per_trace", |c| c.max_spans_per_trace = 2_000_000),
            ("late_spans.cache_size", |c| c.late_cache_size = 0),
            ("checks.disabled", |c| c.checks_disabled = 1 << 31),
            ("checks.child_tolerance", |c| c.child_tolerance_ns = -1),
            ("checks.skew_correction.max_adjustment", |c| {
                c.skew_max_adjustment_ns = 0
            }),
            ("hlc.max_offset", |c| c.hlc_max_offset_ns = 0),
            ("hlc.max_offset", |c| c.hlc_max_offset_ns = 3_600_000_000_000),
            ("hlc.state_file", |c| c.hlc_restart = RestartStrategy::Persist),
            ("handoff.max_hops", |c| c.handoff_max_hops = 0),
            ("handoff.max_hops", |c| c.handoff_max_hops = 17),
            ("handoff.key", |c| c.handoff_key = Some("short".into())),
            ("handoff.key", |c| c.handoff_on_shutdown = true),
            ("handoff.key", |c| {
                c.handoff_on_idle = true;
                c.handoff_key = Some(String::new())
            }),
            ("wal.sync_interval", |c| {
                c.wal_directory = Some("/tmp/x".into());
                c.wal_sync_interval_ns = 0
            }),
            ("wal.max_bytes", |c| {
                c.wal_directory = Some("/tmp/x".into());
                c.wal_max_bytes = 1000
            }),
            ("wal.max_bytes", |c| {
                c.wal_directory = Some("/tmp/x".into());
                c.max_buffered_bytes = MIN_WAL_MAX_BYTES;
                c.wal_max_bytes = MIN_WAL_MAX_BYTES + 1
            }),
        ];
        for (key, mutate) in cases {
            let mut c = Config::default();
            mutate(&mut c);
            let err = c.validate().expect_err(key).0;
            assert!(err.starts_with(key), "{key}: {err}");
        }
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(fmt_ns(-1_000_000_000), "-1s");
        assert_eq!(fmt_ns(1_500_000), "1500000ns");
        assert_eq!(fmt_ns(250_000_000), "250ms");
        assert_eq!(fmt_ns(0), "0s");
    }
}
