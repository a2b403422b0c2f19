//! Identity of the built library, queryable through the C ABI.
//!
//! The Go module ships a prebuilt copy of this library (`go/lib/<os>_<arch>/`); these
//! functions let the Go side refuse a library whose ABI it does not expect, log which build
//! it runs, and let `scripts/check-prebuilt.sh` tell whether a committed prebuilt library was
//! built from the current sources.

use std::ffi::{c_char, CStr};

/// The version of the C ABI. Bump it on every incompatible change to `include/traceconsistency.h`
/// (a function's signature or meaning, a struct's layout, an enum's values) and bump the Go
/// side's expected value (`ABIVersion` in the Go package `internal/engine`) with it.
pub const ABI_VERSION: u32 = 1;

/// SHA-256 over the crate's sources, computed by `build.rs` (see there for the exact files).
const SOURCE_HASH: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("TC_SOURCE_HASH"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("TC_SOURCE_HASH must not contain NUL"),
    };

/// The crate version (Cargo.toml).
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("CARGO_PKG_VERSION must not contain NUL"),
    };

/// The version of the C ABI this library implements. A caller compiled against a header of
/// another ABI version must not use the library. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_abi_version() -> u32 {
    ABI_VERSION
}

/// The library's version (the crate version, e.g. "0.1.0"), a static NUL-terminated string.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn tc_library_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The SHA-256 (64 lowercase hex digits) of the sources the library was built from: every
/// `.rs` file under `rust/`, `Cargo.toml`, `Cargo.lock`, `build.rs` and `cbindgen.toml` (the
/// recipe is in `build.rs`). A static NUL-terminated string. Thread-safe.
#[no_mangle]
pub extern "C" fn tc_source_hash() -> *const c_char {
    SOURCE_HASH.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_strings() {
        // SAFETY: static NUL-terminated strings.
        let hash = unsafe { CStr::from_ptr(tc_source_hash()) }
            .to_str()
            .unwrap();
        assert_eq!(hash.len(), 64);
        assert!(hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let version = unsafe { CStr::from_ptr(tc_library_version()) }
            .to_str()
            .unwrap();
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
        assert_eq!(tc_abi_version(), ABI_VERSION);
    }
}
