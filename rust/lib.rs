//! traceconsistency: tail assembly, hybrid logical clock stamping and consistency checks for
//! OTLP traces, behind a C ABI (see `ffi`) for the OpenTelemetry Collector component in `traceconsistencyprocessor/`.
//!
//! Layers, bottom up:
//! - [`heap`]: what the allocator gives for an allocation (its size class), what the memory
//!   count charges;
//! - [`wire`]: just enough protobuf to scan and splice OTLP bytes without decoding, and
//!   in-place time patching;
//! - [`attrs`]: the `consistency.*` attribute keys;
//! - [`index`]: the compact per-span index built by a zero-copy scan;
//! - [`schema`]: structural validation of nested OTLP messages (what downstream decoders need);
//! - [`findings`], [`config`]: the names and knobs shared with the C ABI;
//! - [`hlc`]: the hybrid logical clock and stamping at ingest;
//! - [`checks`]: consistency checks and clock-skew correction on an assembled trace;
//! - [`sampling`]: tail sampling of released traces, decided before they are encoded;
//! - [`engine`]: sharded tail assembly, memory accounting, release, and emission of
//!   annotated OTLP;
//! - [`wal`]: the write-ahead log the engine keeps accepted batches in until delivered;
//! - [`ffi`]: the C ABI;
//! - [`version`]: the library's ABI version and build identity (C ABI too).

pub mod attrs;
pub mod checks;
pub mod config;
pub mod engine;
pub mod ffi;
pub mod findings;
pub mod heap;
pub mod hlc;
pub mod index;
pub mod sampling;
pub mod schema;
pub mod version;
pub mod vocab;
pub mod wal;
pub mod wire;

#[cfg(test)]
pub mod fixture;
#[cfg(test)]
pub mod testutil;

// The allocator of every Rust allocation in the library (the collector's Go side keeps its
// own): jemalloc, its symbols prefixed so that it does not replace the process's malloc.
// Engine calls run on whatever OS thread Go picks, so memory is freed on other threads than
// it was allocated on; glibc's malloc kept two to three times the engine's count in its
// per-thread arenas (BENCHMARKS.md, "The allocator"). Freed pages go back to the OS at once
// (no decay delay): the engine frees in large runs (released traces), rarely page by page.
// Per-thread caches keep only objects up to 4 KiB: a thread Go no longer schedules engine
// calls on would otherwise keep the larger ones (span buffers, resource entries) cached.
// Tests wrap it to count (`testutil::counting`); fuzz builds use the system allocator, which
// the address sanitizer replaces, so that it sees Rust's allocations too.
#[cfg(not(fuzzing))]
pub(crate) use tikv_jemallocator::Jemalloc as ALLOCATOR;
#[cfg(fuzzing)]
pub(crate) use std::alloc::System as ALLOCATOR;

#[cfg(not(test))]
#[global_allocator]
static GLOBAL: ALLOCATOR = ALLOCATOR;

/// jemalloc's options, read once at its start: the prefixed build's `const char *malloc_conf`
/// (a thin pointer to a NUL-terminated string).
#[used]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 50] = b"dirty_decay_ms:0,muzzy_decay_ms:0,tcache_max:4096\0";
