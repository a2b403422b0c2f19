//! The engine handle and its calls: create, free, ingest, tick, shutdown, recover, HLC
//! start, stats, delivery acknowledgements.

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::engine::{Clocks, Engine, IngestError, Stats};
use crate::hlc::PersistStart;

use super::boundary::{boundary, engine_ref, tc_error, tc_result, write_truncated};
use super::config::{config_from, tc_config};

/// A tail-assembly engine. Under the hood a `Box<Engine>`. Created by `tc_engine_new`, freed
/// by `tc_engine_free`. Safe to use from many threads at once (every call but
/// `tc_engine_free`, which must be the last call and must not race with others).
pub struct tc_engine {
    _private: [u8; 0],
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

/// Runs a clocked call that writes the number of spans ready (tick, shutdown).
fn clocked(
    engine: *const tc_engine,
    now_unix_nano: u64,
    now_mono_nano: u64,
    ready_spans_out: *mut u64,
    err: *mut tc_error,
    call: impl FnOnce(&Engine, Clocks) -> u64,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        let n = call(unsafe { engine_ref(engine) }, Clocks { wall: now_unix_nano, mono: now_mono_nano });
        if !ready_spans_out.is_null() {
            // SAFETY: non-null, caller promises writable memory.
            unsafe { *ready_spans_out = n };
        }
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
    clocked(engine, now_unix_nano, now_mono_nano, ready_spans_out, err, Engine::tick_at)
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
    clocked(engine, now_unix_nano, now_mono_nano, ready_spans_out, err, Engine::shutdown_at)
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
        // SAFETY: caller promises `detail_len` writable bytes at a non-null `detail`.
        unsafe { write_truncated(&r.problems.join("\n"), detail, detail_len) };
        Ok(())
    })
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

