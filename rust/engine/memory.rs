//! What the engine's memory costs.
//!
//! Every structure the engine holds is counted in bytes against `max_buffered_bytes`
//! (docs/DESIGN.md, "Memory"): what the allocator really gives for each allocation (its size
//! class, [`alloc_size`]), not the length or even the capacity asked for, so slack and
//! size-class rounding count too. The fixed size of empty shards is the overhead outside
//! the count.

use std::collections::VecDeque;
use std::mem::size_of;

use crate::index::{Group, SpanExtra, SpanRec};

pub use crate::heap::{alloc_size, arc_bytes, class_len, map_bytes, reserve_to_class, set_bytes, table_bytes, vec_bytes};

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
