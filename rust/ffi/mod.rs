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
//!
//! Modules: `boundary` (the panic boundary, result codes, error messages, the one helper
//! that copies text into a caller's buffer), `config` (`tc_config` and its conversion),
//! `engine` (the engine handle and its calls), `release` (drained releases and their
//! views), `names` (names and counts of the crate's enums), `sampling` (the `sampling` section
//! and its counts).

#![allow(non_camel_case_types)]
// Exported functions take raw pointers from C by design; each is null-checked before use.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod boundary;
mod config;
mod engine;
mod names;
mod release;
mod sampling;

pub use boundary::*;
pub use config::*;
pub use engine::*;
pub use names::*;
pub use release::*;
pub use sampling::*;

#[cfg(test)]
mod tests;
