//! Drained releases: the owned release behind `tc_release`, the borrowed view of it the
//! caller reads, and the two drains (released traces, handed-off traces).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::engine::{Engine, Release};
use crate::findings::{FindingKind, ReleaseReason};

use super::boundary::{boundary, engine_ref, tc_error, tc_result};
use super::engine::tc_engine;

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
    drain_with(engine, max_spans, release_out, view_out, err, Engine::drain)
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
    drain_with(engine, max_spans, release_out, view_out, err, Engine::drain_handoff)
}

/// Runs a drain and hands its release (or NULL for none) out.
fn drain_with(
    engine: *const tc_engine,
    max_spans: u64,
    release_out: *mut *mut tc_release,
    view_out: *mut tc_release_view,
    err: *mut tc_error,
    drain: impl FnOnce(&Engine, u64) -> Option<Release>,
) -> tc_result {
    boundary(err, || {
        non_null!(engine, "engine");
        non_null!(release_out, "release_out");
        non_null!(view_out, "view_out");
        let release = drain(unsafe { engine_ref(engine) }, max_spans);
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

