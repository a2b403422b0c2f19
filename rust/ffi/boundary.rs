//! The boundary every exported function runs inside: result codes, the panic boundary,
//! null checks, and error messages (written into the caller's `tc_error` and kept for
//! `tc_last_error`).

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::engine::Engine;

use super::engine::tc_engine;

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

impl tc_result {
    /// Every result, in order (the Go vocabulary lists them).
    pub const ALL: [tc_result; 10] = [
        tc_result::Ok,
        tc_result::NullArgument,
        tc_result::InvalidConfig,
        tc_result::MalformedInput,
        tc_result::EmptyInput,
        tc_result::Panic,
        tc_result::Full,
        tc_result::ClockStalled,
        tc_result::WalUnavailable,
        tc_result::TooLarge,
    ];
}

/// A new result fails to compile here until it is listed in [`tc_result::ALL`] too.
const _: fn(tc_result) = |r| match r {
    tc_result::Ok
    | tc_result::NullArgument
    | tc_result::InvalidConfig
    | tc_result::MalformedInput
    | tc_result::EmptyInput
    | tc_result::Panic
    | tc_result::Full
    | tc_result::ClockStalled
    | tc_result::WalUnavailable
    | tc_result::TooLarge => {}
};

/// Where the message of a failed call is written: a fixed, caller-owned buffer.
#[repr(C)]
pub struct tc_error {
    /// NUL-terminated UTF-8, truncated to fit.
    pub message: [c_char; 512],
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Copies `text` into the caller's buffer of `len` bytes at `buf`: NUL-terminated, truncated
/// to `len - 1` bytes at a UTF-8 character boundary. Returns the bytes copied (without the
/// NUL). Nothing is written when `buf` is NULL or `len` is 0.
///
/// # Safety
/// A non-null `buf` must point to `len` writable bytes.
pub(super) unsafe fn write_truncated(text: &str, buf: *mut c_char, len: usize) -> usize {
    if buf.is_null() || len == 0 {
        return 0;
    }
    let mut n = text.len().min(len - 1);
    while n > 0 && !text.is_char_boundary(n) {
        n -= 1;
    }
    std::ptr::copy_nonoverlapping(text.as_ptr() as *const c_char, buf, n);
    *buf.add(n) = 0;
    n
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
    // SAFETY: the message array is writable for its length.
    unsafe { write_truncated(msg, out.as_mut_ptr(), out.len()) };
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
pub(super) fn boundary(err: *mut tc_error, f: impl FnOnce() -> Result<(), (tc_result, String)>) -> tc_result {
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
pub(super) unsafe fn engine_ref<'a>(engine: *const tc_engine) -> &'a Engine {
    &*(engine as *const Engine)
}


/// Copies the message of the last failed call on this OS thread into `buf` (NUL-terminated,
/// truncated to `len` at a UTF-8 character boundary) and returns the message's full length
/// in bytes. Thread-local.
#[no_mangle]
pub extern "C" fn tc_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            // SAFETY: caller promises `len` writable bytes at a non-null `buf`.
            unsafe { write_truncated(&e, buf, len) };
            e.len()
        })
    })
    .unwrap_or(0)
}
