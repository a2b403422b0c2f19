//! traceconsistency: tail assembly, hybrid logical clock stamping and consistency checks for
//! OTLP traces, behind a C ABI (see `ffi`) for the OpenTelemetry Collector component in `go/`.
//!
//! Layers, bottom up:
//! - [`wire`]: just enough protobuf to scan and splice OTLP bytes without decoding, and
//!   in-place time patching;
//! - [`attrs`]: the `consistency.*` attribute keys;
//! - [`index`]: the compact per-span index built by a zero-copy scan;
//! - [`schema`]: structural validation of nested OTLP messages (what downstream decoders need);
//! - [`findings`], [`config`]: the names and knobs shared with the C ABI;
//! - [`hlc`]: the hybrid logical clock and stamping at ingest;
//! - [`checks`]: consistency checks and clock-skew correction on an assembled trace;
//! - [`engine`]: sharded tail assembly, memory accounting, release, and emission of
//!   annotated OTLP;
//! - [`ffi`]: the C ABI;
//! - [`version`]: the library's ABI version and build identity (C ABI too).

pub mod attrs;
pub mod checks;
pub mod config;
pub mod engine;
pub mod ffi;
pub mod findings;
pub mod hlc;
pub mod index;
pub mod schema;
pub mod version;
pub mod wal;
pub mod wire;

#[cfg(test)]
pub mod testutil;

// The allocator of every Rust allocation in the library (the collector's Go side and C code
// keep theirs). Tests wrap it to count (`testutil::counting`).
#[cfg(feature = "alloc-mimalloc")]
pub(crate) use mimalloc::MiMalloc as ALLOCATOR;
#[cfg(feature = "alloc-jemalloc")]
pub(crate) use tikv_jemallocator::Jemalloc as ALLOCATOR;
#[cfg(not(any(feature = "alloc-mimalloc", feature = "alloc-jemalloc")))]
pub(crate) use std::alloc::System as ALLOCATOR;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL: ALLOCATOR = ALLOCATOR;
