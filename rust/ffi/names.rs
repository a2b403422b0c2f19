//! Names and counts of the crate's enums, for callers that label metrics with them.

use std::ffi::c_char;

use crate::findings::{FindingKind, ReleaseReason};

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

