//! What the engine's memory costs, and giving freed memory back to the OS.
//!
//! Every structure the engine holds is counted in bytes against `max_buffered_bytes`
//! (docs/DESIGN.md, "Memory"): what the allocator really gives for each allocation (its size
//! class, [`alloc_size`]), not the length or even the capacity asked for, so slack and
//! size-class rounding count too. The fixed size of empty shards is the overhead outside
//! the count.

use std::collections::VecDeque;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::index::{Group, SpanExtra, SpanRec};

pub use crate::heap::{alloc_size, arc_bytes, class_len, map_bytes, set_bytes, table_bytes, vec_bytes};

/// Index record of one span.
pub const REC_BYTES: u64 = size_of::<SpanRec>() as u64;

/// What one late-cache entry costs at most (set slot with load-factor slack, queue slot).
pub const LATE_ENTRY_BYTES: u64 = 64;

/// Heap bytes of a span record's rare details.
pub fn rec_heap(rec: &SpanRec) -> u64 {
    match &rec.extra {
        None => 0,
        Some(e) => {
            alloc_size(size_of::<SpanExtra>())
                + vec_bytes(&e.strip)
                + vec_bytes(&e.bad_ids)
                + e.bad_ids.iter().map(|b| vec_bytes(&b.original)).sum::<u64>()
        }
    }
}

/// Bytes of a list of groups (the entries themselves are counted where they are interned).
pub fn groups_bytes(groups: &Vec<Group>) -> u64 {
    vec_bytes(groups)
}

pub fn deque_bytes<T>(d: &VecDeque<T>) -> u64 {
    alloc_size(d.capacity() * size_of::<T>())
}

/// Giving freed memory back to the OS (glibc only). Engine calls run on whatever OS thread
/// Go schedules the caller on, and memory allocated on one thread is freed on another;
/// glibc keeps such memory in per-thread arenas, so a collector's RSS can stay far above
/// what the engine holds. After enough released bytes, at most once per interval, `tick`
/// calls `malloc_trim(0)`, which returns free pages of every arena to the OS.
#[derive(Default)]
pub struct Trim {
    released_bytes: AtomicU64,
    last_ns: AtomicU64,
    trims: AtomicU64,
}

const TRIM_AFTER_BYTES: u64 = 64 << 20;
const TRIM_INTERVAL_NS: u64 = 1_000_000_000;

impl Trim {
    /// Records bytes that left the engine.
    pub fn released(&self, bytes: u64) {
        self.released_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Returns freed memory to the OS when enough was released since the last time.
    pub fn maybe_trim(&self, now: u64) {
        if self.released_bytes.load(Ordering::Relaxed) < TRIM_AFTER_BYTES {
            return;
        }
        let last = self.last_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TRIM_INTERVAL_NS
            || self.last_ns.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        self.released_bytes.store(0, Ordering::Relaxed);
        self.trims.fetch_add(1, Ordering::Relaxed);
        release_free_memory();
    }

    #[cfg(test)]
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }
}

fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
