//! The C ABI. Consumed by the Go component through cgo; usable from any C caller.
//!
//! Rules every function follows:
//! - its body runs inside a panic boundary: a Rust panic becomes `TC_RESULT_PANIC`, never an
//!   unwind across the ABI;
//! - every pointer argument is null-checked before use (`TC_RESULT_NULL_ARGUMENT`);
//! - what the caller lends (input bytes, config strings) is read during the call only and
//!   never kept;
//! - what Rust returns (`tc_engine`, `tc_release`) is owned by the caller until handed back
//!   to the matching `*_free` function;
//! - outputs are written only on success;
//! - on failure, if `err` is not NULL, a NUL-terminated message is written into it. The
//!   message of the last failure on the calling OS thread is also available through
//!   `tc_last_error` (cgo callers should prefer `err`: goroutines move between threads).

#![allow(non_camel_case_types)]
// Exported functions take raw pointers from C by design; each is null-checked before use.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::config::{enum_from_u32, Config, DuplicatePolicy, LateSpanPolicy, RestartStrategy, SyncMode};
use crate::engine::{Clocks, Engine, IngestError, Release, Stats};
use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::PersistStart;

/// Result of every fallible call. `TC_RESULT_OK` is 0; failures start at 7001.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tc_result {
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 7001,
    /// The configuration is invalid; the message names the YAML key.
    InvalidConfig = 7002,
    /// The input is not a valid `ExportTraceServiceRequest`. Nothing of it was kept.
    MalformedInput = 7003,
    /// The input is empty (zero-length buffer, or a request without spans). Nothing kept.
    EmptyInput = 7004,
    /// A bug: Rust panicked. The engine stays usable; the call had no effect or a partial one.
    Panic = 7005,
    /// Retryable: the engine's memory bound is reached by released data that has not been
    /// drained yet. Nothing of the input was kept; drain, then try again.
    Full = 7006,
    /// Retryable: the batch's HLC stamps would pass the bound last written to
    /// `hlc.state_file`, and the bound cannot be written (`restart_strategy: persist`; counted
    /// in `hlc_persist_errors` and `hlc_stalled_batches`). Nothing of the input was kept; try
    /// again later.
    ClockStalled = 7007,
    /// Retryable: the write-ahead log could not take the batch (at `wal.max_bytes` while the
    /// oldest traces are being released and delivered, disk full, an I/O error). Nothing of
    /// the input was kept; try again later.
    WalUnavailable = 7008,
    /// The batch alone is larger than a write-ahead log record may be (1 GiB). Nothing kept.
    TooLarge = 7009,
}

/// How the HLC started, from `tc_engine_hlc_start`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum tc_hlc_start {
    /// Nothing to do: no clock, a restart strategy other than `persist`, or the clock resumed
    /// above the bound in `hlc.state_file`.
    Ready = 0,
    /// `persist`: `hlc.state_file` did not exist (a first start, or the file was lost). Wait
    /// `hlc.max_offset` before ingesting, as with `restart_strategy: wait`.
    StateFileMissing = 1,
    /// `persist`: `hlc.state_file` was empty (a crash before its content reached the disk).
    /// Wait `hlc.max_offset` before ingesting, as with `restart_strategy: wait`, and warn.
    StateFileEmpty = 2,
}

/// Where the message of a failed call is written: a fixed, caller-owned buffer.
#[repr(C)]
pub struct tc_error {
    /// NUL-terminated UTF-8, truncated to fit.
    pub message: [c_char; 512],
}

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

/// What one `tc_engine_ingest` did.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct tc_ingest_result {
    pub buffered: u64,
    pub late_forwarded: u64,
    pub late_dropped: u64,
    pub unassembled: u64,
    /// Spans waiting to be drained after the call; drain when non-zero.
    pub ready_spans: u64,
}

/// One released unit in a `tc_release_view`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct tc_released_unit {
    pub reason: ReleaseReason,
    pub spans: u32,
    /// From the first span's arrival to release, ns.
    pub age_ns: u64,
    /// Mask of the finding kinds in the unit.
    pub findings: u32,
}

/// Findings of one kind for one `service.name` in a release.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct tc_finding_count {
    pub kind: FindingKind,
    pub count: u64,
    /// UTF-8, not NUL-terminated; owned by the release.
    pub service: *const u8,
    pub service_len: usize,
}

/// A borrowed view of a `tc_release`; valid until `tc_release_free`.
#[repr(C)]
pub struct tc_release_view {
    /// An encoded `ExportTraceServiceRequest` holding whole units.
    pub otlp: *const u8,
    pub otlp_len: usize,
    pub units: *const tc_released_unit,
    pub units_len: usize,
    pub findings: *const tc_finding_count,
    pub findings_len: usize,
    pub spans: u64,
    /// With a write-ahead log: pass to `tc_engine_delivered` once downstream accepted the
    /// release (or it was counted as lost). 0: nothing to acknowledge.
    pub delivery_token: u64,
}

/// What `tc_engine_recover` replayed from the write-ahead log.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct tc_recovery {
    /// Valid records read.
    pub records: u64,
    /// Batches with undelivered spans, replayed.
    pub batches: u64,
    pub spans: u64,
    /// Traces buffered again with replayed spans.
    pub traces: u64,
    /// Damaged stretches skipped (each between two valid records).
    pub corrupt_records: u64,
    /// Incomplete records at a segment's end, ignored.
    pub torn_records: u64,
    /// Replayed spans that were being sent at the crash: they may arrive twice.
    pub redelivered_spans: u64,
    /// Batch records that no longer decode, skipped.
    pub unreadable_batches: u64,
    /// 1: the replay paused because released data fills `max_buffered_bytes`; drain
    /// (`tc_engine_drain`, `tc_engine_drain_handoff`) and call `tc_engine_recover` again. The
    /// counts are those so far; the last call (0 here) reports them all.
    pub more: u64,
}

/// A tail-assembly engine. Under the hood a `Box<Engine>`. Created by `tc_engine_new`, freed
/// by `tc_engine_free`. Safe to use from many threads at once (every call but
/// `tc_engine_free`, which must be the last call and must not race with others).
pub struct tc_engine {
    _private: [u8; 0],
}

/// One drained batch. Under the hood a `Box<Release>`. Owned by the caller until
/// `tc_release_free`; not tied to the engine's lifetime. Not for concurrent use.
pub struct tc_release {
    _private: [u8; 0],
}

struct OwnedRelease {
    release: Release,
    units: Vec<tc_released_unit>,
    findings: Vec<tc_finding_count>,
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_error(err: *mut tc_error, msg: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push_str(msg);
    });
    if err.is_null() {
        return;
    }
    // SAFETY: non-null, caller promises a valid tc_error.
    let out = unsafe { &mut (*err).message };
    let bytes = msg.as_bytes();
    let mut n = bytes.len().min(out.len() - 1);
    while n > 0 && !msg.is_char_boundary(n) {
        n -= 1;
    }
    for (o, &b) in out.iter_mut().zip(&bytes[..n]) {
        *o = b as c_char;
    }
    out[n] = 0;
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f` inside the panic boundary, turning panics and errors into a result code.
fn boundary(err: *mut tc_error, f: impl FnOnce() -> Result<(), (tc_result, String)>) -> tc_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => tc_result::Ok,
        Ok(Err((code, msg))) => {
            set_error(err, &msg);
            code
        }
        Err(p) => {
            set_error(err, &format!("internal error (panic): {}", panic_message(&*p)));
            tc_result::Panic
        }
    }
}

macro_rules! non_null {
    ($p:expr, $name:literal) => {
        if $p.is_null() {
            return Err((tc_result::NullArgument, concat!($name, " must not be NULL").to_string()));
        }
    };
}

/// # Safety
/// `engine` must come from `tc_engine_new` and not be freed.
unsafe fn engine_ref<'a>(engine: *const tc_engine) -> &'a Engine {
    &*(engine as *const Engine)
}

fn bad_enum(key: &str, values: &str, v: u32) -> (tc_result, String) {
    (tc_result::InvalidConfig, format!("{key} must be {values}, got {v}"))
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

fn config_from(c: &tc_config) -> Result<Config, (tc_result, String)> {
    let state_file = string_from(c.hlc_state_file, "hlc.state_file")?;
    let wal_directory = string_from(c.wal_directory, "wal.directory")?;
    let handoff_key = string_from(c.handoff_key, "handoff.key")?;
    Ok(Config {
        num_shards: c.num_shards,
        quiet_period_ns: c.quiet_period_ns,
        idle_timeout_ns: c.idle_timeout_ns,
        max_age_ns: c.max_age_ns,
        max_buffered_spans: c.max_buffered_spans,
        max_buffered_bytes: c.max_buffered_bytes,
        max_spans_per_trace: c.max_spans_per_trace,
        late_span_policy: enum_from_u32(&LateSpanPolicy::ALL, c.late_span_policy, |v| v as u32)
            .ok_or_else(|| bad_enum("late_spans.policy", "forward or drop", c.late_span_policy))?,
        late_cache_size: c.late_cache_size,
        checks_disabled: c.checks_disabled,
        write_attributes: c.write_attributes,
        child_tolerance_ns: c.child_tolerance_ns,
        skew_correction: c.skew_correction,
        skew_max_adjustment_ns: c.skew_max_adjustment_ns,
        duplicate_policy: enum_from_u32(&DuplicatePolicy::ALL, c.duplicate_policy, |v| v as u32)
            .ok_or_else(|| bad_enum("duplicates.conflict_policy", "keep_both or keep_latest", c.duplicate_policy))?,
        hlc_enabled: c.hlc_enabled,
        hlc_max_offset_ns: c.hlc_max_offset_ns,
        hlc_restart: enum_from_u32(&RestartStrategy::ALL, c.hlc_restart, |v| v as u32)
            .ok_or_else(|| bad_enum("hlc.restart_strategy", "none, wait or persist", c.hlc_restart))?,
        hlc_state_file: state_file,
        wal_directory,
        wal_sync: enum_from_u32(&SyncMode::ALL, c.wal_sync, |v| v as u32)
            .ok_or_else(|| bad_enum("wal.sync", "batch, interval or none", c.wal_sync))?,
        wal_sync_interval_ns: c.wal_sync_interval_ns,
        wal_max_bytes: c.wal_max_bytes,
        handoff_on_shutdown: c.handoff_on_shutdown,
        handoff_on_idle: c.handoff_on_idle,
        handoff_max_hops: c.handoff_max_hops,
        handoff_key,
    })
}

/// Fills `out` with the defaults (the same as the component's YAML defaults).
/// Thread-safe. `out` must point to writable memory.
#[no_mangle]
pub extern "C" fn tc_config_default(out: *mut tc_config) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(out, "out");
        let d = Config::default();
        let c = tc_config {
            num_shards: d.num_shards,
            quiet_period_ns: d.quiet_period_ns,
            idle_timeout_ns: d.idle_timeout_ns,
            max_age_ns: d.max_age_ns,
            max_buffered_spans: d.max_buffered_spans,
            max_buffered_bytes: d.max_buffered_bytes,
            max_spans_per_trace: d.max_spans_per_trace,
            late_span_policy: d.late_span_policy as u32,
            late_cache_size: d.late_cache_size,
            checks_disabled: d.checks_disabled,
            write_attributes: d.write_attributes,
            child_tolerance_ns: d.child_tolerance_ns,
            skew_correction: d.skew_correction,
            skew_max_adjustment_ns: d.skew_max_adjustment_ns,
            duplicate_policy: d.duplicate_policy as u32,
            hlc_enabled: d.hlc_enabled,
            hlc_max_offset_ns: d.hlc_max_offset_ns,
            hlc_restart: d.hlc_restart as u32,
            hlc_state_file: std::ptr::null(),
            wal_directory: std::ptr::null(),
            wal_sync: d.wal_sync as u32,
            wal_sync_interval_ns: d.wal_sync_interval_ns,
            wal_max_bytes: d.wal_max_bytes,
            handoff_on_shutdown: d.handoff_on_shutdown,
            handoff_on_idle: d.handoff_on_idle,
            handoff_max_hops: d.handoff_max_hops,
            handoff_key: std::ptr::null(),
        };
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

/// Creates an engine from `config` and writes it to `*engine_out` (owned by the caller; free
/// with `tc_engine_free`). `config` and its strings are only read during the call.
#[no_mangle]
pub extern "C" fn tc_engine_new(
    config: *const tc_config,
    engine_out: *mut *mut tc_engine,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(config, "config");
        non_null!(engine_out, "engine_out");
        // SAFETY: non-null, caller promises a valid tc_config.
        let cfg = config_from(unsafe { &*config })?;
        let engine = Engine::new(cfg).map_err(|e| (tc_result::InvalidConfig, e.0))?;
        // SAFETY: non-null, caller promises writable memory.
        unsafe { *engine_out = Box::into_raw(Box::new(engine)) as *mut tc_engine };
        Ok(())
    })
}

/// Frees an engine and everything still buffered in it (drain after `tc_engine_shutdown`
/// first to keep it). NULL is a no-op. Must not race with any other call on the engine.
#[no_mangle]
pub extern "C" fn tc_engine_free(engine: *mut tc_engine) {
    if engine.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: came from Box::into_raw in tc_engine_new, freed once.
        drop(unsafe { Box::from_raw(engine as *mut Engine) });
    }));
}

/// Ingests `len` bytes at `data`: one serialized OTLP `ExportTraceServiceRequest`. The bytes
/// are copied as needed during the call and not kept. `now_unix_nano` is the caller's wall
/// clock (HLC stamps); `now_mono_nano` its monotonic clock, nanoseconds from any origin
/// fixed for the engine's life (every timer: quiet period, idle timeout, max age). On
/// success writes `*out` (may be NULL). Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_ingest(
    engine: *const tc_engine,
    data: *const u8,
    len: usize,
    now_unix_nano: u64,
    now_mono_nano: u64,
    out: *mut tc_ingest_result,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        let bytes: &[u8] = if len == 0 {
            &[] // NULL is fine with a zero length; the engine refuses and counts it.
        } else {
            non_null!(data, "data");
            // SAFETY: checked above; caller promises `len` readable bytes for the call.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let e = unsafe { engine_ref(engine) };
        let r = e.ingest_at(bytes, Clocks { wall: now_unix_nano, mono: now_mono_nano }).map_err(|e| {
            let code = match e {
                IngestError::Malformed(_) => tc_result::MalformedInput,
                IngestError::Empty | IngestError::NoSpans => tc_result::EmptyInput,
                IngestError::Full { .. } => tc_result::Full,
                IngestError::ClockStalled(_) => tc_result::ClockStalled,
                IngestError::Wal(_) => tc_result::WalUnavailable,
                IngestError::TooLarge(_) => tc_result::TooLarge,
            };
            (code, e.to_string())
        })?;
        if !out.is_null() {
            // SAFETY: non-null, caller promises writable memory.
            unsafe {
                out.write(tc_ingest_result {
                    buffered: r.buffered,
                    late_forwarded: r.late_forwarded,
                    late_dropped: r.late_dropped,
                    unassembled: r.unassembled,
                    ready_spans: r.ready_spans,
                })
            };
        }
        Ok(())
    })
}

/// Writes how the HLC started to `*out`: whether the caller must wait `hlc.max_offset`
/// before the first `tc_engine_ingest` (see `tc_hlc_start`). Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_hlc_start(engine: *const tc_engine, out: *mut tc_hlc_start) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(engine, "engine");
        non_null!(out, "out");
        let start = match unsafe { engine_ref(engine) }.hlc_persist_start() {
            None | Some(PersistStart::Resumed { .. }) => tc_hlc_start::Ready,
            Some(PersistStart::Missing) => tc_hlc_start::StateFileMissing,
            Some(PersistStart::Empty) => tc_hlc_start::StateFileEmpty,
        };
        // SAFETY: non-null, caller promises writable memory.
        unsafe { out.write(start) };
        Ok(())
    })
}

/// Releases what is due at `now_mono_nano` (the monotonic clock of `tc_engine_ingest`;
/// `now_unix_nano` is the wall clock) into the ready queue and writes the number of spans
/// ready to `*ready_spans_out` (may be NULL). Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_tick(
    engine: *const tc_engine,
    now_unix_nano: u64,
    now_mono_nano: u64,
    ready_spans_out: *mut u64,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        let n = unsafe { engine_ref(engine) }.tick_at(Clocks { wall: now_unix_nano, mono: now_mono_nano });
        if !ready_spans_out.is_null() {
            // SAFETY: non-null, caller promises writable memory.
            unsafe { *ready_spans_out = n };
        }
        Ok(())
    })
}

/// Releases everything buffered (reason shutdown); spans ingested afterwards are released at
/// once. Drain until `tc_engine_drain` gives NULL to collect them. Clocks as in
/// `tc_engine_tick`. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_shutdown(
    engine: *const tc_engine,
    now_unix_nano: u64,
    now_mono_nano: u64,
    ready_spans_out: *mut u64,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        let n = unsafe { engine_ref(engine) }.shutdown_at(Clocks { wall: now_unix_nano, mono: now_mono_nano });
        if !ready_spans_out.is_null() {
            // SAFETY: non-null, caller promises writable memory.
            unsafe { *ready_spans_out = n };
        }
        Ok(())
    })
}

/// Takes whole released units, about `max_spans` spans (at least one unit), checked and
/// encoded. On success `*release_out` is a new release owned by the caller (free it with
/// `tc_release_free`) and `*view_out` describes it, or `*release_out` is NULL when nothing
/// was ready. Thread-safe: concurrent drains take disjoint units.
#[no_mangle]
pub extern "C" fn tc_engine_drain(
    engine: *const tc_engine,
    max_spans: u64,
    release_out: *mut *mut tc_release,
    view_out: *mut tc_release_view,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        non_null!(release_out, "release_out");
        non_null!(view_out, "view_out");
        let release = unsafe { engine_ref(engine) }.drain(max_spans);
        // SAFETY: both non-null, caller promises writable memory.
        unsafe { hand_out(release, release_out, view_out) };
        Ok(())
    })
}

/// Takes whole handed-off traces (`handoff.on_shutdown`, `handoff.on_idle`), about
/// `max_spans` spans (at least one trace), encoded with their HLC stamps and hop counts
/// (`consistency.span.handoff`), for the caller to send back through the balancing tier.
/// Outputs, ownership and acknowledgement (`delivery_token`, `tc_engine_delivered`) as
/// `tc_engine_drain`; each unit's reason says why the trace was handed off
/// (`TC_RELEASE_REASON_SHUTDOWN` or `TC_RELEASE_REASON_IDLE_TIMEOUT`). Thread-safe:
/// concurrent drains take disjoint traces.
#[no_mangle]
pub extern "C" fn tc_engine_drain_handoff(
    engine: *const tc_engine,
    max_spans: u64,
    release_out: *mut *mut tc_release,
    view_out: *mut tc_release_view,
    err: *mut tc_error,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        non_null!(release_out, "release_out");
        non_null!(view_out, "view_out");
        let release = unsafe { engine_ref(engine) }.drain_handoff(max_spans);
        // SAFETY: both non-null, caller promises writable memory.
        unsafe { hand_out(release, release_out, view_out) };
        Ok(())
    })
}

/// Writes a drained release (or NULL for none) to the caller's outputs.
///
/// # Safety
/// Both pointers must be non-null and writable.
unsafe fn hand_out(release: Option<Release>, release_out: *mut *mut tc_release, view_out: *mut tc_release_view) {
    let Some(release) = release else {
        *release_out = std::ptr::null_mut();
        return;
    };
    let units = release
        .units
        .iter()
        .map(|u| tc_released_unit {
            reason: u.reason,
            spans: u.spans,
            age_ns: u.age_ns,
            findings: u.findings,
        })
        .collect();
    let mut owned = Box::new(OwnedRelease { release, units, findings: Vec::new() });
    owned.findings = owned
        .release
        .findings
        .iter()
        .map(|f| tc_finding_count {
            kind: f.kind,
            count: f.count,
            service: f.service.as_ptr(),
            service_len: f.service.len(),
        })
        .collect();
    let view = tc_release_view {
        otlp: owned.release.otlp.as_ptr(),
        otlp_len: owned.release.otlp.len(),
        units: owned.units.as_ptr(),
        units_len: owned.units.len(),
        findings: owned.findings.as_ptr(),
        findings_len: owned.findings.len(),
        spans: owned.release.spans,
        delivery_token: owned.release.token,
    };
    view_out.write(view);
    *release_out = Box::into_raw(owned) as *mut tc_release;
}

/// Acknowledges a drained release by its `delivery_token`: downstream accepted it, or it was
/// counted as lost. Without a write-ahead log, or for token 0, a no-op. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_delivered(engine: *const tc_engine, delivery_token: u64) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(engine, "engine");
        unsafe { engine_ref(engine) }.delivered(delivery_token);
        Ok(())
    })
}

/// Replays the write-ahead log (once; later calls report nothing): call after `tc_engine_new`
/// and before the first `tc_engine_ingest`. The replay keeps to `max_buffered_bytes`: while
/// `out->more` is 1 it paused for drains; drain both queues and call again. Writes the counts to `*out` and a description of
/// any damage found (one line per problem, naming the file; NUL-terminated, truncated to
/// `detail_len`) to `detail` (may be NULL). Without a log: zeros. Clocks as in
/// `tc_engine_tick`. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_recover(
    engine: *const tc_engine,
    now_unix_nano: u64,
    now_mono_nano: u64,
    out: *mut tc_recovery,
    detail: *mut c_char,
    detail_len: usize,
) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(engine, "engine");
        non_null!(out, "out");
        let r = unsafe { engine_ref(engine) }.recover_at(Clocks { wall: now_unix_nano, mono: now_mono_nano });
        let c = tc_recovery {
            records: r.records,
            batches: r.batches,
            spans: r.spans,
            traces: r.traces,
            corrupt_records: r.corrupt_records,
            torn_records: r.torn_records,
            redelivered_spans: r.redelivered_spans,
            unreadable_batches: r.unreadable_batches,
            more: u64::from(r.more),
        };
        // SAFETY: non-null, caller promises writable memory.
        unsafe { out.write(c) };
        if !detail.is_null() && detail_len > 0 {
            let text = r.problems.join("\n");
            let mut n = text.len().min(detail_len - 1);
            while n > 0 && !text.is_char_boundary(n) {
                n -= 1;
            }
            // SAFETY: non-null, caller promises `detail_len` writable bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(text.as_ptr() as *const c_char, detail, n);
                *detail.add(n) = 0;
            }
        }
        Ok(())
    })
}

/// Frees a release from `tc_engine_drain`. NULL is a no-op.
#[no_mangle]
pub extern "C" fn tc_release_free(release: *mut tc_release) {
    if release.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: came from Box::into_raw in tc_engine_drain, freed once.
        drop(unsafe { Box::from_raw(release as *mut OwnedRelease) });
    }));
}

/// Writes the engine's counters and gauges to `*out`. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_engine_stats(engine: *const tc_engine, out: *mut Stats) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(engine, "engine");
        non_null!(out, "out");
        let c = unsafe { engine_ref(engine) }.stats();
        // SAFETY: non-null, caller promises writable memory.
        unsafe { out.write(c) };
        Ok(())
    })
}

/// One service's export lag (see `tc_engine_export_lags`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct tc_export_lag {
    /// How long after a span ends the service's spans arrive, as learned, ns.
    pub lag_ns: u64,
    /// Where the service's `service.name` (UTF-8, not NUL-terminated) is in `names`.
    pub name_offset: u32,
    pub name_len: u32,
}

/// Writes the export lag the engine learned for each service at `now_mono_nano` (the
/// monotonic clock of `tc_engine_tick`), the slowest first, into `out` (room for `out_cap`)
/// and their names into `names` (room for `names_cap` bytes); `*len_out` is how many were
/// written: the rest (no room in either) are left out. Thread-safe; the caller owns both
/// buffers.
#[no_mangle]
pub extern "C" fn tc_engine_export_lags(
    engine: *const tc_engine,
    now_mono_nano: u64,
    out: *mut tc_export_lag,
    out_cap: usize,
    names: *mut u8,
    names_cap: usize,
    len_out: *mut usize,
) -> tc_result {
    boundary(std::ptr::null_mut(), || {
        non_null!(engine, "engine");
        non_null!(len_out, "len_out");
        if out_cap > 0 {
            non_null!(out, "out");
        }
        if names_cap > 0 {
            non_null!(names, "names");
        }
        let lags = unsafe { engine_ref(engine) }.export_lags(now_mono_nano);
        let (mut n, mut used) = (0usize, 0usize);
        for (name, lag_ns) in &lags {
            if n == out_cap || used + name.len() > names_cap {
                break;
            }
            // SAFETY: non-null (checked when there is room), caller promises `out_cap`
            // entries and `names_cap` bytes of writable memory; both bounds are checked above.
            unsafe {
                if !name.is_empty() {
                    std::ptr::copy_nonoverlapping(name.as_ptr(), names.add(used), name.len());
                }
                out.add(n).write(tc_export_lag { lag_ns: *lag_ns, name_offset: used as u32, name_len: name.len() as u32 });
            }
            used += name.len();
            n += 1;
        }
        // SAFETY: non-null, caller promises writable memory.
        unsafe { *len_out = n };
        Ok(())
    })
}

/// The snake_case name of a finding kind (a static NUL-terminated string), or NULL for an
/// unknown value. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_finding_kind_name(kind: u32) -> *const c_char {
    FindingKind::from_u32(kind).map_or(std::ptr::null(), |k| k.c_name().as_ptr())
}

/// The number of finding kinds: valid kinds are `0 .. tc_finding_kind_count()`. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_finding_kind_count() -> u32 {
    FindingKind::COUNT as u32
}

/// The snake_case name of a release reason (a static NUL-terminated string), or NULL for an
/// unknown value. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_release_reason_name(reason: u32) -> *const c_char {
    ReleaseReason::from_u32(reason).map_or(std::ptr::null(), |r| r.c_name().as_ptr())
}

/// The number of release reasons: valid reasons are `0 .. tc_release_reason_count()`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn tc_release_reason_count() -> u32 {
    ReleaseReason::COUNT as u32
}

/// Copies the message of the last failed call on this OS thread into `buf` (NUL-terminated,
/// truncated to `len`) and returns the message's full length in bytes. Thread-local.
#[no_mangle]
pub extern "C" fn tc_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            if !buf.is_null() && len > 0 {
                let n = e.len().min(len - 1);
                // SAFETY: non-null, caller promises `len` writable bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(e.as_ptr() as *const c_char, buf, n);
                    *buf.add(n) = 0;
                }
            }
            e.len()
        })
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests;
