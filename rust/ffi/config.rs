//! The engine configuration as C sees it (`tc_config`), its defaults, its validation, and
//! its conversion into the crate's [`Config`].

use std::ffi::{c_char, CStr};

use crate::config::Config;
use crate::vocab::ConfigEnum;

use super::boundary::{boundary, tc_error, tc_result};

/// Engine configuration. Fill it with `tc_config_default`, then change fields. Durations
/// are nanoseconds (signed so a negative YAML duration is reported, not wrapped). Field names
/// mirror the YAML keys named in validation errors.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct tc_config {
    /// `num_shards`: 0 = four per core.
    pub num_shards: u32,
    /// `quiet_period`.
    pub quiet_period_ns: i64,
    /// `idle_timeout`.
    pub idle_timeout_ns: i64,
    /// `max_age`.
    pub max_age_ns: i64,
    /// `max_buffered_spans`.
    pub max_buffered_spans: i64,
    /// `max_buffered_bytes`.
    pub max_buffered_bytes: i64,
    /// `max_spans_per_trace`.
    pub max_spans_per_trace: i64,
    /// `late_spans.policy`: a `tc_late_span_policy` value (a plain integer so that an
    /// out-of-range value is reported, not undefined behaviour).
    pub late_span_policy: u32,
    /// `late_spans.cache_size`.
    pub late_cache_size: i64,
    /// `checks.disabled`, as a mask of `1 << tc_finding_kind`.
    pub checks_disabled: u32,
    /// `checks.write_attributes`.
    pub write_attributes: bool,
    /// `checks.child_tolerance`.
    pub child_tolerance_ns: i64,
    /// `checks.skew_correction.enabled`.
    pub skew_correction: bool,
    /// `checks.skew_correction.max_adjustment`.
    pub skew_max_adjustment_ns: i64,
    /// `duplicates.conflict_policy`: a `tc_duplicate_policy` value.
    pub duplicate_policy: u32,
    /// `hlc.enabled`.
    pub hlc_enabled: bool,
    /// `hlc.max_offset`.
    pub hlc_max_offset_ns: i64,
    /// `hlc.restart_strategy`: a `tc_restart_strategy` value.
    pub hlc_restart: u32,
    /// `hlc.state_file`: NUL-terminated path, or NULL. Read during `tc_engine_new` only.
    pub hlc_state_file: *const c_char,
    /// `wal.directory`: NUL-terminated path, or NULL / empty for no write-ahead log. Read
    /// during `tc_engine_new` only.
    pub wal_directory: *const c_char,
    /// `wal.sync`: a `tc_wal_sync` value.
    pub wal_sync: u32,
    /// `wal.sync_interval`.
    pub wal_sync_interval_ns: i64,
    /// `wal.max_bytes`.
    pub wal_max_bytes: i64,
    /// `handoff.on_shutdown`.
    pub handoff_on_shutdown: bool,
    /// `handoff.on_idle`.
    pub handoff_on_idle: bool,
    /// `handoff.max_hops`.
    pub handoff_max_hops: i64,
    /// `handoff.key`: NUL-terminated, or NULL / empty for none. Read during `tc_engine_new`
    /// and `tc_config_validate` only.
    pub handoff_key: *const c_char,
}


/// The value of a C enum field, or an error naming its YAML key and strings.
fn config_enum<T: ConfigEnum>(v: u32) -> Result<T, (tc_result, String)> {
    T::from_value(v).ok_or_else(|| (tc_result::InvalidConfig, format!("{} must be {}, got {v}", T::KEY, T::choices())))
}

/// A NUL-terminated string from the config (a path, a key), or `None` for NULL.
fn string_from(p: *const c_char, key: &str) -> Result<Option<String>, (tc_result, String)> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, caller promises a NUL-terminated string valid for the call.
    let s = unsafe { CStr::from_ptr(p) };
    Ok(Some(s.to_str().map_err(|_| (tc_result::InvalidConfig, format!("{key} must be valid UTF-8")))?.to_string()))
}


/// A knob's value from C: enums checked, strings copied.
macro_rules! from_c {
    (Enum, $v:expr, $y:literal) => { config_enum($v)? };
    (Str, $v:expr, $y:literal) => { string_from($v, $y)? };
    ($k:ident, $v:expr, $y:literal) => { $v };
}

/// A knob's default for C (strings: NULL, as every default string is unset).
macro_rules! to_c {
    (Enum, $v:expr) => { $v as u32 };
    (Str, $v:expr) => { std::ptr::null() };
    ($k:ident, $v:expr) => { $v };
}

macro_rules! conversions {
    ($($f:ident: $t:ty = $d:expr; $k:ident; $yaml:literal; $go:literal; $doc:literal;)*) => {
        /// The crate's [`Config`] from a `tc_config`; the error names the YAML key.
        pub(super) fn config_from(c: &tc_config) -> Result<Config, (tc_result, String)> {
            Ok(Config { $($f: from_c!($k, c.$f, $yaml),)* })
        }

        /// `Config::default()` as a `tc_config`.
        fn c_default() -> tc_config {
            let d = Config::default();
            tc_config { $($f: to_c!($k, d.$f),)* }
        }
    };
}
crate::vocab::for_each_knob!(conversions);

/// Fills `out` with the defaults (the same as the component's YAML defaults).
/// Thread-safe. `out` must point to writable memory.
#[no_mangle]
pub extern "C" fn tc_config_default(out: *mut tc_config) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(out, "out");
        let c = c_default();
        // SAFETY: non-null, caller promises writable memory.
        unsafe { out.write(c) };
        Ok(())
    })
}

/// Validates `config` without building an engine. On failure the message names the YAML key.
/// Thread-safe; `config` is only read during the call.
#[no_mangle]
pub extern "C" fn tc_config_validate(config: *const tc_config, err: *mut tc_error) -> tc_result {
    boundary(err, || {
        non_null!(config, "config");
        // SAFETY: non-null, caller promises a valid tc_config.
        let cfg = config_from(unsafe { &*config })?;
        cfg.validate().map_err(|e| (tc_result::InvalidConfig, e.0))
    })
}

