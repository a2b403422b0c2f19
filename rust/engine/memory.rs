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

/// The size jemalloc actually allocates for a request of `n` bytes, as configured here
/// (`rust/lib.rs`): its size classes with a 16-byte quantum (8, 16, then multiples of 16 up
/// to 128, then four classes per doubling) up to 14 KiB (its small classes), whole pages
/// above (the large ones: measured, `the_allocator_really_allocates_the_class`).
/// Growing a buffer to its class costs no memory the allocator would not take anyway, and
/// leaves the class's headroom for the next spans without a `realloc`; its capacity, which
/// is what is counted, then says what is really held.
pub const fn size_class(n: usize) -> usize {
    if n <= 8 {
        8
    } else if n <= 128 {
        (n + 15) & !15
    } else if n > 14 << 10 {
        (n + 4095) & !4095
    } else {
        let step = 1usize << ((usize::BITS - 1 - (n - 1).leading_zeros()) - 2);
        (n + step - 1) & !(step - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_are_jemallocs() {
        let classes: Vec<usize> = [1, 8, 9, 17, 100, 128, 129, 160, 161, 256, 257, 300, 1000, 4097, 100_000].map(size_class).to_vec();
        assert_eq!(classes, [8, 8, 16, 32, 112, 128, 160, 160, 192, 256, 320, 320, 1024, 5120, 102_400]);
        for n in 1..70_000 {
            let c = size_class(n);
            assert!(c >= n && c - n <= (n / 4).max(4095) + 15, "{n} -> {c}");
            assert_eq!(size_class(c), c, "{n} -> {c} is a class");
        }
    }

    #[test]
    fn the_allocator_really_allocates_the_class() {
        // Where it can be asked (not in fuzz builds): jemalloc's own answer.
        #[cfg(not(fuzzing))]
        for n in [1usize, 9, 100, 129, 300, 1000, 4097, 10_000, 12_289, 14_336, 14_337, 15_000, 16_384, 16_385, 20_000, 40_000, 50_000, 60_000, 65_536, 65_537, 70_000, 100_000, 300_000] {
            let v: Vec<u8> = Vec::with_capacity(n);
            // SAFETY: `v`'s buffer is a live allocation of the global allocator, jemalloc
            // (tests wrap it without changing the pointer or the size).
            let real = unsafe { tikv_jemallocator::usable_size(v.as_ptr()) };
            assert_eq!(size_class(n), real, "{n}");
        }
    }
}
