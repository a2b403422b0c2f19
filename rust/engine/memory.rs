//! What the engine's memory costs.
//!
//! Every structure the engine holds is counted in bytes against `max_buffered_bytes`
//! (docs/DESIGN.md, "Memory"): allocated capacity, not length, so slack counts too. Allocator
//! headers and the fixed size of empty shards are the overhead outside the count.

use std::collections::VecDeque;
use std::mem::size_of;

use crate::index::{BadId, Group, SpanExtra, SpanRec};

/// Index record of one span.
pub const REC_BYTES: u64 = size_of::<SpanRec>() as u64;
/// One slot of a `HashMap<K, V>`: the pair plus one control byte.
pub const fn map_slot<K, V>() -> u64 {
    (size_of::<(K, V)>() + 1) as u64
}
/// One slot of a `HashSet<K>`.
pub const fn set_slot<K>() -> u64 {
    (size_of::<K>() + 1) as u64
}

/// What one late-cache entry costs at most (set slot with load-factor slack, queue slot).
pub const LATE_ENTRY_BYTES: u64 = 64;

/// Heap bytes of a span record's rare details.
pub fn rec_heap(rec: &SpanRec) -> u64 {
    match &rec.extra {
        None => 0,
        Some(e) => {
            (size_of::<SpanExtra>()
                + e.strip.capacity() * size_of::<std::ops::Range<u32>>()
                + e.bad_ids.capacity() * size_of::<BadId>()
                + e.bad_ids.iter().map(|b| b.original.capacity()).sum::<usize>()) as u64
        }
    }
}

/// Bytes of a list of groups (the entries themselves are counted where they are interned).
pub fn groups_bytes(groups: &Vec<Group>) -> u64 {
    (groups.capacity() * size_of::<Group>()) as u64
}

pub fn deque_bytes<T>(d: &VecDeque<T>) -> u64 {
    (d.capacity() * size_of::<T>()) as u64
}
