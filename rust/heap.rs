//! What the allocator really gives: the size class of a request, and the allocations of
//! the collections the engine holds, in bytes (what the memory count charges; docs/DESIGN.md,
//! "Memory"), and the pages it keeps dirty. Every function allocates nothing; all but
//! [`decay_unused`] are constant time.

use std::mem::size_of;

/// What the allocator gives for a request of `n` bytes (with the default alignment): the
/// size of jemalloc's size class (`nallocx`; an 8.2 KiB request takes 10 KiB), 0 for none.
/// Constant time (a table lookup), no allocation. Fuzz builds use the system allocator: the
/// request itself.
pub fn alloc_size(n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    #[cfg(not(fuzzing))]
    {
        // SAFETY: nallocx has no preconditions for n > 0; it only computes a size class.
        let real = unsafe { tikv_jemalloc_sys::nallocx(n, 0) };
        // 0: the request is larger than any size class (it could not be allocated either).
        if real == 0 {
            return n as u64;
        }
        real as u64
    }
    #[cfg(fuzzing)]
    {
        n as u64
    }
}

/// Lets the allocator return the pages it keeps dirty past their decay time
/// (`dirty_decay_ms` of its options), in every arena. jemalloc purges on its own only while
/// it allocates: without this, what a burst left dirty stays resident while the engine is
/// idle. A no-op without decay (nothing stays dirty); allocates nothing of ours. False when
/// the allocator has no such control (fuzz builds: the system allocator).
pub fn decay_unused() -> bool {
    #[cfg(not(fuzzing))]
    {
        // SAFETY: a NUL-terminated control name that takes no value and returns none (4096 is
        // MALLCTL_ARENAS_ALL).
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(c"arena.4096.decay".as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0)
        };
        rc == 0
    }
    #[cfg(fuzzing)]
    {
        false
    }
}

/// A request of `n` bytes rounded up to its size class: growing a buffer to it uses what
/// the allocator gives anyway.
pub fn class_len(n: usize) -> usize {
    alloc_size(n) as usize
}

/// Makes room in `v` for `more` elements: exactly, to the allocator's size class, while it
/// holds fewer than `exact_below` (no doubling slack for the common small case; the class's
/// rounding becomes room for what comes next), amortised by doubling above (no quadratic
/// copying for giant ones).
pub fn reserve_to_class<T>(v: &mut Vec<T>, more: usize, exact_below: usize) {
    let len = v.len();
    if len >= exact_below {
        v.reserve(more);
    } else if v.capacity() - len < more {
        let size = size_of::<T>().max(1);
        v.reserve_exact(class_len((len + more) * size) / size - len);
    }
}

/// The allocation of a `Vec` (its capacity, in its size class).
pub fn vec_bytes<T>(v: &Vec<T>) -> u64 {
    alloc_size(v.capacity() * size_of::<T>())
}

/// The block of an `Arc<T>` (two counts and the value), in its size class.
pub fn arc_bytes<T>() -> u64 {
    alloc_size(2 * size_of::<usize>() + size_of::<T>())
}

/// The one allocation of a hash table (hashbrown's layout) that can hold `capacity` entries
/// of `T` without growing: `buckets` slots of `T`, a control byte per bucket and one group
/// of 16 more, in its size class. `capacity` is the table's `capacity()`, 7/8 of its buckets
/// (one less than the buckets below 8).
pub fn table_bytes<T>(capacity: usize) -> u64 {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 { (capacity + 1).next_power_of_two() } else { (capacity / 7 * 8).next_power_of_two() };
    let slots = (buckets * size_of::<T>()).next_multiple_of(16);
    alloc_size(slots + buckets + 16)
}

/// A `HashMap<K, V>` of that capacity.
pub fn map_bytes<K, V>(capacity: usize) -> u64 {
    table_bytes::<(K, V)>(capacity)
}

/// A `HashSet<K>` of that capacity.
pub fn set_bytes<K>(capacity: usize) -> u64 {
    table_bytes::<K>(capacity)
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::counting::alloc_live;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn small_vectors_grow_to_their_class_and_large_ones_double() {
        let mut v: Vec<u64> = Vec::new();
        reserve_to_class(&mut v, 3, 1024);
        // 24 bytes take the 32-byte class: room for four.
        assert_eq!(v.capacity(), 4);
        v.extend([1, 2, 3, 4]);
        reserve_to_class(&mut v, 1, 1024);
        // 40 bytes take the 48-byte class: room for six.
        assert_eq!(v.capacity(), 6);
        let mut big: Vec<u8> = vec![0; 4096];
        reserve_to_class(&mut big, 1, 4096);
        assert!(big.capacity() >= 8192, "doubling above the threshold: {}", big.capacity());
    }

    #[test]
    fn the_allocator_takes_the_decay_control() {
        // A misspelt control would fail silently in the tick: the allocator answers ENOENT.
        let v = vec![1u8; 4 << 20];
        drop(v);
        assert!(decay_unused());
    }

    #[test]
    fn a_request_costs_its_size_class() {
        assert_eq!(alloc_size(0), 0);
        // jemalloc's classes: four per doubling above 64 bytes.
        assert_eq!(alloc_size(1), 8);
        assert_eq!(alloc_size(8 * 1024 + 30), 10 * 1024);
        assert_eq!(alloc_size(10 * 1024), 10 * 1024);
        assert_eq!(alloc_size(16 * 1024 + 1), 20 * 1024);
        for n in (1..70_000).step_by(37).chain([1 << 20, (1 << 20) + 1, 5 << 20]) {
            let v: Vec<u8> = Vec::with_capacity(n);
            // SAFETY: the vector's buffer was allocated by the global allocator (jemalloc).
            let real = unsafe { tikv_jemallocator::usable_size(v.as_ptr()) } as u64;
            assert_eq!(alloc_size(n), real, "{n} bytes");
            assert_eq!(vec_bytes(&v), real);
            assert_eq!(class_len(n) as u64, real);
        }
    }

    /// The table's own allocation, as the allocator was asked for it (on this thread).
    fn allocated_by<T>(make: impl FnOnce() -> T) -> (T, u64) {
        let before = alloc_live();
        let t = make();
        (t, (alloc_live() - before) as u64)
    }

    #[test]
    fn a_table_costs_its_one_allocation() {
        for n in [1usize, 3, 4, 7, 8, 13, 14, 15, 100, 1000, 5000, 100_000] {
            let (m, asked) = allocated_by(|| {
                let mut m: HashMap<u128, [u8; 40]> = HashMap::new();
                for i in 0..n as u128 {
                    m.insert(i, [0; 40]);
                }
                m
            });
            assert_eq!(map_bytes::<u128, [u8; 40]>(m.capacity()), alloc_size(asked as usize), "{n} entries, capacity {}", m.capacity());
            let (s, asked) = allocated_by(|| HashSet::<u64>::with_capacity(n));
            assert_eq!(set_bytes::<u64>(s.capacity()), alloc_size(asked as usize), "set of capacity {n}");
        }
        assert_eq!(map_bytes::<u64, u64>(0), 0);
    }

    #[test]
    fn an_arc_costs_its_block() {
        let (a, asked) = allocated_by(|| std::sync::Arc::new([7u8; 200]));
        assert_eq!(arc_bytes::<[u8; 200]>(), alloc_size(asked as usize));
        assert_eq!(a[0], 7);
    }
}
