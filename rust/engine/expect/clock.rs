//! A fixed-size table with clock (second-chance) eviction, and its entries as slots.

use std::collections::HashMap;

use ahash::RandomState;

use crate::engine::memory::{map_bytes, vec_bytes};

use super::entries::{KeyState, ServiceLag};

/// A fixed-size table with clock eviction.
pub(super) struct Clock<T> {
    pub(super) slots: Vec<T>,
    pub(super) map: HashMap<u64, u32, RandomState>,
    hand: usize,
    cap: usize,
}

pub(super) trait Slot {
    fn id(&self) -> u64;
    fn referenced(&mut self) -> &mut bool;
}

impl Slot for KeyState {
    fn id(&self) -> u64 {
        self.key
    }
    fn referenced(&mut self) -> &mut bool {
        &mut self.referenced
    }
}

impl Slot for ServiceLag {
    fn id(&self) -> u64 {
        self.hash
    }
    fn referenced(&mut self) -> &mut bool {
        &mut self.referenced
    }
}

impl<T: Slot> Clock<T> {
    pub(super) fn new(cap: usize) -> Clock<T> {
        Clock { slots: Vec::new(), map: HashMap::default(), hand: 0, cap: cap.max(1) }
    }

    pub(super) fn get(&self, id: u64) -> Option<&T> {
        self.map.get(&id).map(|&i| &self.slots[i as usize])
    }

    /// The entry of `id`, made with `make` (evicting one not referenced since the hand last
    /// passed it) when absent.
    pub(super) fn entry(&mut self, id: u64, make: impl FnOnce() -> T) -> &mut T {
        if let Some(&i) = self.map.get(&id) {
            return &mut self.slots[i as usize];
        }
        let i = if self.slots.len() < self.cap {
            self.slots.push(make());
            self.slots.len() - 1
        } else {
            loop {
                let h = self.hand;
                self.hand = (self.hand + 1) % self.slots.len();
                let r = self.slots[h].referenced();
                if *r {
                    *r = false;
                    continue;
                }
                let old = self.slots[h].id();
                self.map.remove(&old);
                self.slots[h] = make();
                break h;
            }
        };
        self.map.insert(id, i as u32);
        &mut self.slots[i]
    }

    pub(super) fn bytes(&self, extra: u64) -> u64 {
        vec_bytes(&self.slots) + map_bytes::<u64, u32>(self.map.capacity()) + extra
    }
}
