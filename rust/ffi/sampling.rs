//! Sampling through the C ABI: the `sampling` section (JSON, as the component decoded the
//! YAML) validated, an engine built with it, and the per-rule counts read back.

use crate::engine::Engine;
use crate::sampling::config::parse_policy;

use super::boundary::{boundary, engine_ref, tc_error, tc_result};
use super::config::{config_from, tc_config};
use super::engine::tc_engine;

/// Traces and spans one sampling rule (or the default) kept and dropped since the engine
/// started.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tc_sampling_count {
    pub kept_traces: u64,
    pub kept_spans: u64,
    pub dropped_traces: u64,
    pub dropped_spans: u64,
}

/// The JSON text lent by the caller (`len` bytes, NULL with 0: no section).
fn json_from(json: *const u8, len: usize) -> Result<String, (tc_result, String)> {
    if len == 0 {
        return Ok(String::new());
    }
    non_null!(json, "sampling_json");
    // SAFETY: checked above; caller promises `len` readable bytes for the call.
    let b = unsafe { std::slice::from_raw_parts(json, len) };
    std::str::from_utf8(b).map(str::to_string).map_err(|_| (tc_result::InvalidConfig, "sampling must be valid UTF-8".to_string()))
}

/// Validates a `sampling` section given as JSON (`len` bytes at `sampling_json`; 0: none).
/// On failure the message names the YAML key (`sampling.rules[2].probabilistic.percentage
/// …`). Thread-safe; the text is only read during the call.
#[no_mangle]
pub extern "C" fn tc_sampling_validate(sampling_json: *const u8, len: usize, err: *mut tc_error) -> tc_result {
    boundary(err, || {
        let text = json_from(sampling_json, len)?;
        parse_policy(&text).map(|_| ()).map_err(|e| (tc_result::InvalidConfig, e.0))
    })
}

/// `tc_engine_new` with a `sampling` section (JSON, `len` bytes at `sampling_json`; 0: none,
/// the same as `tc_engine_new`): each released trace is decided by its rules before it is
/// encoded, and dropped traces never leave the engine. `config`, its strings and the text
/// are only read during the call.
#[no_mangle]
pub extern "C" fn tc_engine_new_sampling(
    config: *const tc_config,
    sampling_json: *const u8,
    len: usize,
    engine_out: *mut *mut tc_engine,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(config, "config");
        non_null!(engine_out, "engine_out");
        // SAFETY: non-null, caller promises a valid tc_config.
        let cfg = config_from(unsafe { &*config })?;
        let policy = parse_policy(&json_from(sampling_json, len)?).map_err(|e| (tc_result::InvalidConfig, e.0))?;
        let engine = Engine::with_sampling(cfg, policy).map_err(|e| (tc_result::InvalidConfig, e.0))?;
        // SAFETY: non-null, caller promises writable memory.
        unsafe { *engine_out = Box::into_raw(Box::new(engine)) as *mut tc_engine };
        Ok(())
    })
}

/// Writes the counts of the engine's sampling rules, in their order, then the default's:
/// up to `cap` entries at `out`, and their number (rules + 1; 0 without sampling) to
/// `*len_out`. `out` may be NULL with `cap` 0 (to ask the number). Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_sampling_counts(
    engine: *const tc_engine,
    out: *mut tc_sampling_count,
    cap: usize,
    len_out: *mut usize,
) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(engine, "engine");
        non_null!(len_out, "len_out");
        let counts = unsafe { engine_ref(engine) }.sampling_counts();
        let n = counts.len().min(cap);
        if n > 0 {
            non_null!(out, "out");
        }
        for (i, c) in counts.iter().take(n).enumerate() {
            let v = tc_sampling_count { kept_traces: c.kept_traces, kept_spans: c.kept_spans, dropped_traces: c.dropped_traces, dropped_spans: c.dropped_spans };
            // SAFETY: non-null, caller promises `cap` writable entries.
            unsafe { out.add(i).write(v) };
        }
        // SAFETY: non-null, caller promises writable memory.
        unsafe { len_out.write(counts.len()) };
        Ok(())
    })
}
