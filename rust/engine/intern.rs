//! Sharing resource and scope entries between batches and traces.
//!
//! Every scanned batch brings its own entries. Interning replaces each by the equal entry
//! already held, if any, so a service's resource is kept once however many batches and
//! traces refer to it. Each interned entry carries a [`Charge`]: its bytes count in the
//! engine's memory for exactly as long as some trace or released unit still holds it.
//!
//! The table holds weak references; entries nobody holds any more are swept out when the
//! table has doubled since the last sweep (amortised constant cost per insert).

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::index::{Charge, Group, ResourceEntry, ScopeEntry};

use super::memory::{alloc_size, arc_bytes, vec_bytes};

pub struct Interner {
    tables: Mutex<Tables>,
    /// Bytes of live interned entries (shared with their charges).
    bytes: Arc<AtomicU64>,
}

#[derive(Default)]
struct Tables {
    resources: HashMap<u64, Vec<Weak<ResourceEntry>>>,
    scopes: HashMap<u64, Vec<Weak<ScopeEntry>>>,
    weak_count: usize,
    sweep_at: usize,
}

/// What interning needs of an entry.
trait Entry {
    fn hash(&self) -> u64;
    fn header(&self) -> &[u8];
    fn charge(&self) -> &OnceLock<Charge>;
    /// Bytes of the entry's own allocations, in their size classes.
    fn heap(&self) -> u64;
}

impl Entry for ResourceEntry {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn header(&self) -> &[u8] {
        &self.header
    }
    fn charge(&self) -> &OnceLock<Charge> {
        &self.charge
    }
    fn heap(&self) -> u64 {
        vec_bytes(&self.header) + alloc_size(self.service.capacity())
    }
}

impl Entry for ScopeEntry {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn header(&self) -> &[u8] {
        &self.header
    }
    fn charge(&self) -> &OnceLock<Charge> {
        &self.charge
    }
    fn heap(&self) -> u64 {
        vec_bytes(&self.header)
    }
}

/// Per entry, in the allocator's size classes: the shared block (counts + entry), its
/// allocations, and its place in the table (a weak reference in its hash's list, the list's
/// own allocation of four, and the list's slot in the map, at the map's 7/8 load).
fn entry_bytes<T: Entry>(e: &T) -> u64 {
    arc_bytes::<T>() + e.heap() + alloc_size(4 * size_of::<Weak<T>>()) + (size_of::<(u64, Vec<Weak<T>>)>() as u64 + 1) * 8 / 7
}

/// The entry equal to `e` in `table`, or `e` itself, charged and added. Dead references met
/// on the way are dropped; `weak_count` follows the table's size.
fn intern_one<T: Entry>(table: &mut HashMap<u64, Vec<Weak<T>>>, weak_count: &mut usize, e: &Arc<T>, counter: &Arc<AtomicU64>) -> Arc<T> {
    let bucket = table.entry(e.hash()).or_default();
    let before = bucket.len();
    let mut found = None;
    bucket.retain(|w| match w.upgrade() {
        Some(a) => {
            if found.is_none() && a.header() == e.header() {
                found = Some(a);
            }
            true
        }
        None => false,
    });
    *weak_count -= before - bucket.len();
    if let Some(a) = found {
        return a;
    }
    let _ = e.charge().set(Charge::new(counter.clone(), entry_bytes(&**e)));
    bucket.push(Arc::downgrade(e));
    *weak_count += 1;
    e.clone()
}

impl Interner {
    pub fn new() -> Interner {
        Interner { tables: Mutex::new(Tables { sweep_at: 1024, ..Default::default() }), bytes: Arc::new(AtomicU64::new(0)) }
    }

    /// Bytes of the live entries.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the entries of `groups` by shared ones (one lock per batch).
    pub fn intern(&self, groups: &mut [Group]) {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        // Entries of one batch are already shared between its scopes: map each once.
        let mut seen_res: Vec<(usize, Arc<ResourceEntry>)> = Vec::new();
        let mut seen_scope: Vec<(usize, Arc<ScopeEntry>)> = Vec::new();
        for g in groups.iter_mut() {
            let rp = Arc::as_ptr(&g.resource) as usize;
            g.resource = match seen_res.iter().find(|(p, _)| *p == rp) {
                Some((_, a)) => a.clone(),
                None => {
                    let a = t.resource(&g.resource, &self.bytes);
                    seen_res.push((rp, a.clone()));
                    a
                }
            };
            let sp = Arc::as_ptr(&g.scope) as usize;
            g.scope = match seen_scope.iter().find(|(p, _)| *p == sp) {
                Some((_, a)) => a.clone(),
                None => {
                    let a = t.scope(&g.scope, &self.bytes);
                    seen_scope.push((sp, a.clone()));
                    a
                }
            };
            // A batch with very many groups: keep the per-batch lists short.
            if seen_res.len() > 64 {
                seen_res.clear();
            }
            if seen_scope.len() > 64 {
                seen_scope.clear();
            }
        }
        if t.weak_count >= t.sweep_at {
            t.sweep();
        }
    }
}

impl Tables {
    fn resource(&mut self, e: &Arc<ResourceEntry>, counter: &Arc<AtomicU64>) -> Arc<ResourceEntry> {
        intern_one(&mut self.resources, &mut self.weak_count, e, counter)
    }

    fn scope(&mut self, e: &Arc<ScopeEntry>, counter: &Arc<AtomicU64>) -> Arc<ScopeEntry> {
        intern_one(&mut self.scopes, &mut self.weak_count, e, counter)
    }

    /// Drops the references to entries nobody holds.
    fn sweep(&mut self) {
        self.resources.retain(|_, b| {
            b.retain(|w| w.strong_count() > 0);
            !b.is_empty()
        });
        self.scopes.retain(|_, b| {
            b.retain(|w| w.strong_count() > 0);
            !b.is_empty()
        });
        self.weak_count = self.resources.values().map(Vec::len).sum::<usize>() + self.scopes.values().map(Vec::len).sum::<usize>();
        self.sweep_at = (2 * self.weak_count).max(1024);
    }
}
