//! (4) Arbitrary `tc_config` field values through `tc_config_validate` and `tc_engine_new`:
//! out-of-range enum integers, negative and huge durations and counts, any check mask, and
//! `hlc_state_file` NULL, empty, non-UTF-8 or an arbitrary file name inside a temp directory
//! (never outside it). Invariants: no call returns TC_RESULT_PANIC; an error is
//! TC_RESULT_INVALID_CONFIG with a non-empty NUL-terminated message; validate and new agree
//! (new may additionally fail on the state file, naming `hlc.state_file`); a working engine
//! ingests one small valid request (OK, or retryable CLOCK_STALLED), ticks, shuts down,
//! drains, and is freed. ASan (cargo fuzz's default) checks the memory side.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use tcfuzz::{decode_lax, valid_request, SEC, T0};
use traceconsistency::ffi::*;

#[derive(Arbitrary, Debug)]
enum Num {
    Raw(i64),
    Small(i8),
    Default,
}

#[derive(Arbitrary, Debug)]
enum Path {
    Null,
    Empty,
    /// A file name (bytes; '/' and NUL replaced) inside the temp directory.
    Name(Vec<u8>),
    /// Non-UTF-8 bytes inside the temp directory.
    NonUtf8,
    /// Inside a directory that does not exist.
    MissingDir,
    /// The temp directory itself (a directory, not a file).
    Dir,
}

#[derive(Arbitrary, Debug)]
struct In {
    num_shards: u32,
    durations: [Num; 6],
    counts: [Num; 4],
    late_span_policy: u32,
    duplicate_policy: u32,
    hlc_restart: u32,
    checks_disabled: u32,
    flags: [bool; 3],
    path: Path,
    /// Keep the enum fields in range (so more inputs reach tc_engine_new).
    in_range: bool,
}

fn num(n: &Num, default: i64) -> i64 {
    match *n {
        Num::Raw(v) => v,
        Num::Small(v) => i64::from(v) * 1_000_000,
        Num::Default => default,
    }
}

fn dir() -> &'static std::path::Path {
    static D: OnceLock<std::path::PathBuf> = OnceLock::new();
    D.get_or_init(|| tcfuzz::scratch_dir("config"))
}

fn message(e: &tc_error) -> String {
    unsafe { CStr::from_ptr(e.message.as_ptr()) }.to_string_lossy().into_owned()
}

fuzz_target!(|x: In| {
    let mut cfg = MaybeUninit::<tc_config>::zeroed();
    assert_eq!(tc_config_default(cfg.as_mut_ptr()), tc_result::Ok);
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.num_shards = if x.num_shards > 4096 { x.num_shards } else { x.num_shards % 8 };
    cfg.quiet_period_ns = num(&x.durations[0], cfg.quiet_period_ns);
    cfg.idle_timeout_ns = num(&x.durations[1], cfg.idle_timeout_ns);
    cfg.max_age_ns = num(&x.durations[2], cfg.max_age_ns);
    cfg.child_tolerance_ns = num(&x.durations[3], cfg.child_tolerance_ns);
    cfg.skew_max_adjustment_ns = num(&x.durations[4], cfg.skew_max_adjustment_ns);
    cfg.hlc_max_offset_ns = num(&x.durations[5], cfg.hlc_max_offset_ns);
    cfg.max_buffered_spans = num(&x.counts[0], cfg.max_buffered_spans);
    cfg.max_buffered_bytes = num(&x.counts[1], cfg.max_buffered_bytes);
    cfg.max_spans_per_trace = num(&x.counts[2], cfg.max_spans_per_trace);
    cfg.late_cache_size = num(&x.counts[3], cfg.late_cache_size);
    let (l, d, r) = if x.in_range {
        (x.late_span_policy % 2, x.duplicate_policy % 2, x.hlc_restart % 3)
    } else {
        (x.late_span_policy, x.duplicate_policy, x.hlc_restart)
    };
    cfg.late_span_policy = l;
    cfg.duplicate_policy = d;
    cfg.hlc_restart = r;
    cfg.checks_disabled = x.checks_disabled;
    cfg.write_attributes = x.flags[0];
    cfg.skew_correction = x.flags[1];
    cfg.hlc_enabled = x.flags[2];

    let d = dir();
    // Each input starts from an empty directory (a state file written by an earlier input
    // would make results depend on history).
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let path: Option<CString> = match &x.path {
        Path::Null => None,
        Path::Empty => Some(CString::new("").unwrap()),
        Path::Name(b) => {
            let name: Vec<u8> = b.iter().take(64).map(|&c| if c == b'/' || c == 0 { b'_' } else { c }).collect();
            let mut p = d.as_os_str().as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(&name);
            Some(CString::new(p).unwrap())
        }
        Path::NonUtf8 => {
            let mut p = d.as_os_str().as_bytes().to_vec();
            p.extend_from_slice(b"/state-\xff\xfe");
            Some(CString::new(p).unwrap())
        }
        Path::MissingDir => Some(CString::new(format!("{}/missing/dir/state", d.display())).unwrap()),
        Path::Dir => Some(CString::new(d.as_os_str().as_bytes()).unwrap()),
    };
    cfg.hlc_state_file = path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());

    let mut err = MaybeUninit::<tc_error>::zeroed();
    let v = tc_config_validate(&cfg, err.as_mut_ptr());
    assert!(matches!(v, tc_result::Ok | tc_result::InvalidConfig), "validate returned {v:?}");
    if v != tc_result::Ok {
        let m = message(unsafe { err.assume_init_ref() });
        assert!(!m.is_empty(), "an invalid config without a message");
    }
    let mut engine: *mut tc_engine = std::ptr::null_mut();
    let mut err = MaybeUninit::<tc_error>::zeroed();
    let n = tc_engine_new(&cfg, &mut engine, err.as_mut_ptr());
    assert!(matches!(n, tc_result::Ok | tc_result::InvalidConfig), "tc_engine_new returned {n:?}");
    if n != tc_result::Ok {
        let m = message(unsafe { err.assume_init_ref() });
        assert!(!m.is_empty());
        assert!(engine.is_null(), "engine_out written on failure");
        if v == tc_result::Ok {
            // Only the state file can fail after validation.
            assert!(m.contains("hlc.state_file"), "new failed where validate passed, not naming hlc.state_file: {m}");
        }
        return;
    }
    assert_eq!(v, tc_result::Ok, "tc_engine_new accepted what tc_config_validate refused");
    assert!(!engine.is_null());
    let req = valid_request();
    let mut res = MaybeUninit::<tc_ingest_result>::zeroed();
    let r = tc_engine_ingest(engine, req.as_ptr(), req.len(), T0, T0, res.as_mut_ptr(), err.as_mut_ptr());
    assert!(matches!(r, tc_result::Ok | tc_result::ClockStalled), "ingest of a valid request: {r:?} {}", message(unsafe { err.assume_init_ref() }));
    let mut ready = 0u64;
    assert_eq!(tc_engine_tick(engine, T0 + 5 * SEC, T0 + 5 * SEC, &mut ready, err.as_mut_ptr()), tc_result::Ok);
    assert_eq!(tc_engine_shutdown(engine, T0 + 6 * SEC, T0 + 6 * SEC, &mut ready, err.as_mut_ptr()), tc_result::Ok);
    let mut spans = 0;
    loop {
        let mut rel: *mut tc_release = std::ptr::null_mut();
        let mut view = MaybeUninit::<tc_release_view>::zeroed();
        assert_eq!(tc_engine_drain(engine, 1000, &mut rel, view.as_mut_ptr(), err.as_mut_ptr()), tc_result::Ok);
        if rel.is_null() {
            break;
        }
        let view = unsafe { view.assume_init() };
        let otlp = unsafe { std::slice::from_raw_parts(view.otlp, view.otlp_len) };
        decode_lax(otlp).expect("release decodes");
        spans += view.spans;
        tc_release_free(rel);
    }
    if r == tc_result::Ok {
        assert_eq!(spans, 2, "the two spans of the valid request");
    }
    tc_engine_free(engine);
});
