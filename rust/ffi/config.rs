//! The engine configuration as C sees it (`tc_config`), its defaults, its validation, and
//! its conversion into the crate's [`Config`].

use std::ffi::{c_char, CStr};

use crate::config::Config;
use crate::vocab::ConfigEnum;

use super::boundary::{boundary, tc_error, tc_result};

// `tc_config`: one field per knob of `vocab::for_each_knob`, written by build.rs (which cbindgen
// reads too).
include!(concat!(env!("OUT_DIR"), "/tc_config.rs"));


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

