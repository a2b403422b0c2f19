//! What is still coming: the engine learns, from the traces it releases, which CLIENT and
//! PRODUCER spans normally get a child from an instrumented callee (and from which service),
//! and, from every batch it ingests, how long after a span ends each service's spans arrive
//! (its export lag). A structurally complete trace with a call whose child is expected but
//! missing waits for it, up to that callee's lag after the call ended, plus a margin
//! (docs/DESIGN.md, "What is still coming").
//!
//! - **Calls** are keyed by a keyed hash of the caller's `service.name`, the span kind, the
//!   span name and the peer attributes `peer.service`, `server.address`, `server.port`,
//!   `net.peer.name`, `net.peer.port`, `db.system`, `db.system.name` (absent ones empty), so
//!   that one HTTP client talking to two hosts, or two ports of one host, is two keys. Each
//!   key keeps a decaying share of its waited-for calls that had a child ([`KeyState`]): a
//!   child moves it to "expected" at once (a child exists only if the callee is
//!   instrumented), each call waited for in vain moves it a quarter of the way to "no
//!   child". A database call starts as "no child" (a leaf by the semantic conventions). A key
//!   learned to have no children is not waited for, except once every [`PROBE_EVERY`] calls
//!   (a probe); and a late child of a call released without waiting teaches its key at once
//!   ([`Expect::learn_late`]), so that a callee that becomes instrumented is noticed.
//! - **Export lag** per service is the largest lag seen in the current and the previous
//!   window of [`LAG_WINDOW_NS`], so a service redeployed with a shorter delay is followed
//!   within two windows. Until a service has been seen for one window its lag is taken as
//!   at least [`COLD_LAG_NS`] (the SDKs' default batch delay).
//! - **Bounds.** Both tables have a fixed number of entries with clock (second-chance)
//!   eviction; their bytes count against `max_buffered_bytes` ([`Expect::bytes`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ahash::RandomState;

use crate::index::{kind, Group, SpanRec};
use crate::wire::{Fields, Value};

use super::memory::map_slot;

/// The batch delay of the Python, Node.js, Java and Go SDKs: the lag assumed for a service
/// not yet seen for a whole window, and for callees of calls not yet learned.
pub const COLD_LAG_NS: u64 = 5_000_000_000;
/// How far past a call's end an expected callee's spans must have ended (on its own clock)
/// before its child is no longer waited for on that account.
const WATERMARK_SLACK_NS: u64 = 250_000_000;
/// Length of one lag window.
pub const LAG_WINDOW_NS: u64 = 15_000_000_000;
/// A key learned to have no children is waited for once every this many calls.
pub const PROBE_EVERY: u16 = 256;
/// Calls released without waiting, remembered (by span ID) so that a child arriving late
/// teaches their key.
pub const UNWAITED_SLOTS: usize = 4096;
/// Most call keys remembered (fewer when `max_buffered_bytes` is small).
pub const MAX_KEYS: usize = 16_384;
/// Service names are kept (for the metrics) up to this many bytes.
const MAX_NAME_BYTES: usize = 256;
/// Share of the children seen at or above which a key expects a child.
const EXPECT_FROM: f32 = 0.5;
/// How far one waited-for call without a child moves a key towards "no child".
const DECAY: f32 = 0.25;

/// What the engine knows of a call without a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Learned to have no children: not waited for.
    NoChild,
    /// Not learned yet: waited for as long as the slowest service's lag.
    Unknown,
    /// Learned to have no children, probed this time: waited for as the unknown.
    Probe,
    /// Learned to get a child from `service` (a hash, 0: not known).
    Expected { service: u64 },
}

/// A CLIENT or PRODUCER span of a trace, as the learning sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callout {
    /// Index of the span in the trace's records.
    pub idx: usize,
    /// A database call (`db.system` or `db.system.name`): taken as a leaf until a child is
    /// seen.
    pub db: bool,
    pub span_id: u64,
    pub key: u64,
    /// The span's end time (wall clock of its host, Unix ns).
    pub end_wall: u64,
    /// The service of one of its children from the callee (hash), if it has one: a SERVER
    /// or CONSUMER span, or a span of another service (an in-process child does not count).
    pub child_service: Option<u64>,
}

/// What is known of one call key.
#[derive(Clone, Copy, Debug)]
struct KeyState {
    key: u64,
    /// Decaying share of waited-for calls that had a child.
    p: f32,
    /// Observations (saturating).
    obs: u16,
    /// Calls released without a child and without being waited for, since the last waited
    /// observation.
    unwaited: u16,
    /// The service the children came from (hash), 0 unknown.
    child_service: u64,
    referenced: bool,
}

impl KeyState {
    fn decision(&self) -> Decision {
        if self.obs == 0 || (self.obs < 2 && self.p < EXPECT_FROM) {
            Decision::Unknown
        } else if self.p >= EXPECT_FROM {
            Decision::Expected { service: self.child_service }
        } else if self.unwaited >= PROBE_EVERY {
            Decision::Probe
        } else {
            Decision::NoChild
        }
    }
}

/// Export lag of one service.
#[derive(Clone, Debug)]
struct ServiceLag {
    hash: u64,
    name: Box<str>,
    first_seen: u64,
    window_start: u64,
    cur: u64,
    prev: u64,
    /// The latest span end (its host's wall clock) among the spans of the service that
    /// arrived: an SDK exports its spans in the order they ended, so a child that ended
    /// before this has come, if it is coming.
    watermark: u64,
    referenced: bool,
}

impl ServiceLag {
    fn observe(&mut self, lag: u64, now: u64) {
        let age = now.saturating_sub(self.window_start);
        if age >= LAG_WINDOW_NS {
            self.prev = if age >= 2 * LAG_WINDOW_NS { 0 } else { self.cur };
            self.cur = 0;
            self.window_start = now;
        }
        self.cur = self.cur.max(lag);
        self.referenced = true;
    }

    /// The lag to wait for: the largest of the last two windows; at least the cold lag
    /// until the service has been seen for a whole window.
    fn lag(&self, now: u64) -> u64 {
        let seen = self.cur.max(self.prev);
        if now.saturating_sub(self.first_seen) < LAG_WINDOW_NS {
            seen.max(COLD_LAG_NS)
        } else {
            seen
        }
    }
}

/// A fixed-size table with clock eviction.
struct Clock<T> {
    slots: Vec<T>,
    map: HashMap<u64, u32, RandomState>,
    hand: usize,
    cap: usize,
}

trait Slot {
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
    fn new(cap: usize) -> Clock<T> {
        Clock { slots: Vec::new(), map: HashMap::default(), hand: 0, cap: cap.max(1) }
    }

    fn get(&self, id: u64) -> Option<&T> {
        self.map.get(&id).map(|&i| &self.slots[i as usize])
    }

    /// The entry of `id`, made with `make` (evicting one not referenced since the hand last
    /// passed it) when absent.
    fn entry(&mut self, id: u64, make: impl FnOnce() -> T) -> &mut T {
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

    fn bytes(&self, extra: u64) -> u64 {
        self.slots.capacity() as u64 * size_of::<T>() as u64 + self.map.capacity() as u64 * map_slot::<u64, u32>() + extra
    }
}

struct Learned {
    keys: Clock<KeyState>,
    services: Clock<ServiceLag>,
    name_bytes: u64,
    /// Calls released without a child and without waiting: `(hash of trace and span ID,
    /// key)`, at a slot chosen by that hash (a newer call takes the slot).
    unwaited: Vec<(u64, u64)>,
}

/// The learned state of an engine. Safe to share between threads (one lock, taken once per
/// batch for the lags and once per evaluated or released trace).
pub struct Expect {
    state: Mutex<Learned>,
    hasher: RandomState,
    /// Bytes of the tables (see [`Expect::bytes`]).
    bytes: AtomicU64,
    idle_timeout_ns: u64,
}

/// What was learned, for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learnt {
    /// Call keys known.
    pub keys: u64,
    /// Call keys expecting a child.
    pub edges: u64,
    /// Export lag per service, ns, by name.
    pub lags: Vec<(String, u64)>,
}

impl Expect {
    /// `max_keys` call keys, `max_services` services; lags above `idle_timeout_ns` are taken
    /// as that (nothing waits longer).
    pub fn new(max_keys: usize, max_services: usize, idle_timeout_ns: u64) -> Expect {
        Expect {
            state: Mutex::new(Learned {
                keys: Clock::new(max_keys),
                services: Clock::new(max_services),
                name_bytes: 0,
                unwaited: Vec::new(),
            }),
            hasher: RandomState::new(),
            bytes: AtomicU64::new(0),
            idle_timeout_ns,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of the learned state, counted against `max_buffered_bytes`.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn recount(&self, l: &Learned) {
        let services = l.services.bytes(l.name_bytes);
        let unwaited = (l.unwaited.capacity() * size_of::<(u64, u64)>()) as u64;
        self.bytes.store(l.keys.bytes(0) + services + unwaited, Ordering::Relaxed);
    }

    pub fn service_hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name.as_bytes())
    }

    /// Records the largest export lag (arrival on the wall clock minus span end) of each
    /// service in an ingested batch, as `(service.name, lag_ns)` pairs, at `now` on the
    /// monotonic clock.
    pub fn observe_lags(&self, lags: &[(&str, u64)], now: u64) {
        if lags.is_empty() {
            return;
        }
        let mut l = self.lock();
        let mut fresh = false;
        for &(name, lag) in lags {
            let hash = self.service_hash(name);
            fresh |= l.services.get(hash).is_none();
            let s = l.services.entry(hash, || ServiceLag {
                hash,
                name: truncate(name, MAX_NAME_BYTES).into(),
                first_seen: now,
                window_start: now,
                cur: 0,
                prev: 0,
                watermark: 0,
                referenced: true,
            });
            s.observe(lag.min(self.idle_timeout_ns), now);
        }
        if fresh {
            l.name_bytes = l.services.slots.iter().map(|s| s.name.len() as u64).sum();
            self.recount(&l);
        }
    }

    /// Records the latest span end (wall clock, Unix ns) of each service in an ingested
    /// batch, as `(service.name, end)` pairs (services not known yet are left out).
    pub fn observe_ends(&self, ends: &[(&str, u64)]) {
        if ends.is_empty() {
            return;
        }
        let mut l = self.lock();
        for &(name, end) in ends {
            let hash = self.service_hash(name);
            if let Some(&i) = l.services.map.get(&hash) {
                let s = &mut l.services.slots[i as usize];
                s.watermark = s.watermark.max(end);
            }
        }
    }

    /// The key of a call made by a span of `service` with `kind`, `name` and the peer
    /// attributes.
    fn call_key(&self, service: &str, kind: u8, name: &[u8], peers: &[&[u8]; PEER_COUNT]) -> u64 {
        let mut h = self.hasher.build_hasher();
        service.as_bytes().hash(&mut h);
        kind.hash(&mut h);
        name.hash(&mut h);
        peers.hash(&mut h);
        h.finish()
    }

    /// The CLIENT and PRODUCER spans of a trace, each with its key and whether (and from
    /// which service) it has a child.
    pub fn callouts(&self, spans: &[SpanRec], buf: &[u8], groups: &[Group]) -> Vec<Callout> {
        let mut children: Vec<(u64, usize)> =
            spans.iter().enumerate().filter(|(_, s)| !s.is_root()).map(|(i, s)| (s.parent_id, i)).collect();
        children.sort_unstable();
        let mut out = Vec::new();
        for (idx, s) in spans.iter().enumerate() {
            if s.kind != kind::CLIENT && s.kind != kind::PRODUCER {
                continue;
            }
            let service = groups.get(s.group as usize).map_or("", |g| g.resource.service.as_str());
            let bytes = buf.get(s.bytes.start as usize..s.bytes.end as usize).unwrap_or(&[]);
            let (name, peers) = name_and_peers(bytes);
            // Only the callee's child counts: a SERVER or CONSUMER span, or a span of another
            // service. An in-process child (Node.js's `tcp.connect` and `dns.lookup` under
            // the call that opened a connection) says nothing of the callee's spans.
            let first = match children.binary_search(&(s.span_id, 0)) {
                Ok(i) | Err(i) => i,
            };
            let service_of = |rec: &SpanRec| groups.get(rec.group as usize).map_or("", |g| g.resource.service.as_str());
            let child_service = children[first..]
                .iter()
                .take_while(|c| c.0 == s.span_id)
                .map(|c| &spans[c.1])
                .find(|child| child.kind == kind::SERVER || child.kind == kind::CONSUMER || service_of(child) != service)
                .map(|child| self.service_hash(service_of(child)));
            let db = DB_PEERS.iter().any(|&i| !peers[i].is_empty());
            out.push(Callout { idx, db, span_id: s.span_id, key: self.call_key(service, s.kind, name, &peers), end_wall: s.end, child_service });
        }
        out
    }

    /// What is known of the call `key` when it has no child.
    #[cfg(test)]
    pub fn decision(&self, key: u64) -> Decision {
        self.lock().keys.get(key).map_or(Decision::Unknown, KeyState::decision)
    }

    /// How long after its end to wait for the child of a call with decision `d`: the lag of
    /// the expected callee, or of the slowest service known (at least the cold lag while
    /// none is known), plus a margin for jitter of the exporters' timers and for clocks.
    /// `None`: not waited for.
    fn wait_for(&self, l: &Learned, d: Decision, now: u64, slowest: &mut Option<u64>) -> Option<u64> {
        let mut slowest = || *slowest.get_or_insert_with(|| l.services.slots.iter().map(|s| s.lag(now)).max().unwrap_or(COLD_LAG_NS));
        let lag = match d {
            Decision::NoChild => return None,
            Decision::Unknown | Decision::Probe => slowest(),
            Decision::Expected { service } => l.services.get(service).map_or_else(slowest, |s| s.lag(now)),
        };
        let lag = lag.min(self.idle_timeout_ns);
        Some(lag + margin(lag))
    }

    /// Until when (monotonic clock) a structurally complete trace waits for the children
    /// its calls are missing, at `now` (`now_wall` on the wall clock); never later than
    /// `latest`. 0: nothing to wait for.
    pub fn hold_until(&self, calls: &[Callout], now: u64, now_wall: u64, latest: u64) -> u64 {
        let l = self.lock();
        let mut until = 0u64;
        let mut slowest = None;
        for c in calls.iter().filter(|c| c.child_service.is_none()) {
            let d = decide(&l, c);
            let Some(wait) = self.wait_for(&l, d, now, &mut slowest) else { continue };
            // The wall time the child should have arrived by, on the monotonic clock.
            let due_wall = c.end_wall.saturating_add(wait);
            let due = now.saturating_add(due_wall.saturating_sub(now_wall));
            until = until.max(due);
            // An expected callee that has not yet sent a span ending after the call did
            // (its clock may differ: a quarter second of slack) may still be holding the
            // child: its learned lag is short under load, when a full batch leaves before
            // its timer, and its last spans wait the whole timer. Until it has, the child
            // is waited for as long as the SDKs' default delay would hold it.
            if let Decision::Expected { service } = d {
                if l.services.get(service).is_some_and(|s| s.watermark < c.end_wall.saturating_add(WATERMARK_SLACK_NS)) {
                    let cold = COLD_LAG_NS.min(self.idle_timeout_ns);
                    let due_wall = c.end_wall.saturating_add(cold + margin(cold));
                    until = until.max(now.saturating_add(due_wall.saturating_sub(now_wall)));
                }
            }
        }
        until.min(latest)
    }

    /// Learns from a released trace's calls. `waited`: the trace was held for its missing
    /// children until [`Expect::hold_until`]'s time (or `now` is past each call's own due
    /// time, for traces released otherwise). Returns the indexes of the calls whose child was
    /// expected and never came.
    pub fn learn(&self, trace_id: u128, calls: &[Callout], waited: bool, now: u64, now_wall: u64) -> Vec<usize> {
        let mut l = self.lock();
        let mut missing = Vec::new();
        let mut remember = Vec::new();
        let mut slowest = None;
        for c in calls {
            let waited_for = waited || {
                let d = decide(&l, c);
                self.wait_for(&l, d, now, &mut slowest).is_some_and(|w| now_wall >= c.end_wall.saturating_add(w))
            };
            // A database call starts as learned to have no child (semantic conventions make
            // it a leaf; a database that joins traces is learned from its children).
            let k = l.keys.entry(c.key, || KeyState {
                key: c.key,
                p: 0.0,
                obs: if c.db { 2 } else { 0 },
                unwaited: 0,
                child_service: 0,
                referenced: true,
            });
            k.referenced = true;
            match c.child_service {
                Some(svc) => {
                    k.p = if k.obs == 0 { 1.0 } else { (k.p + (1.0 - k.p) * DECAY).max(EXPECT_FROM) };
                    k.obs = k.obs.saturating_add(1);
                    k.unwaited = 0;
                    k.child_service = svc;
                }
                None => match k.decision() {
                    Decision::NoChild => {
                        k.unwaited = k.unwaited.saturating_add(1);
                        remember.push((c.span_id, c.key));
                    }
                    d => {
                        if waited_for {
                            if let Decision::Expected { .. } = d {
                                missing.push(c.idx);
                            }
                            k.p = if k.obs == 0 { 0.0 } else { k.p * (1.0 - DECAY) };
                            k.obs = k.obs.saturating_add(1);
                            k.unwaited = 0;
                        }
                    }
                },
            }
        }
        for (span_id, key) in remember {
            self.remember_unwaited(&mut l, trace_id, span_id, key);
        }
        self.recount(&l);
        missing
    }

    /// The identity of span `span_id` of trace `trace_id` in the unwaited calls (never 0),
    /// and its slot.
    fn unwaited_slot(&self, trace_id: u128, span_id: u64) -> (u64, usize) {
        let h = self.hasher.hash_one((trace_id, span_id)) | 1;
        (h, (h % UNWAITED_SLOTS as u64) as usize)
    }

    fn remember_unwaited(&self, l: &mut Learned, trace_id: u128, span_id: u64, key: u64) {
        if l.unwaited.is_empty() {
            l.unwaited = vec![(0, 0); UNWAITED_SLOTS];
        }
        let (h, i) = self.unwaited_slot(trace_id, span_id);
        l.unwaited[i] = (h, key);
    }

    /// Learns from late spans `(trace ID, parent span ID, service hash)`: a child of a call
    /// released without waiting for it shows that its key gets children after all. Returns
    /// how many keys were taught.
    pub fn learn_late(&self, children: &[(u128, u64, u64)]) -> u64 {
        let mut l = self.lock();
        if l.unwaited.is_empty() {
            return 0;
        }
        let mut taught = 0;
        for &(trace_id, parent, service) in children {
            if parent == 0 {
                continue;
            }
            let (h, i) = self.unwaited_slot(trace_id, parent);
            let (held, key) = l.unwaited[i];
            if held != h {
                continue;
            }
            l.unwaited[i] = (0, 0);
            if let Some(&ki) = l.keys.map.get(&key) {
                let k = &mut l.keys.slots[ki as usize];
                k.p = k.p.max(EXPECT_FROM);
                k.obs = k.obs.saturating_add(1);
                k.unwaited = 0;
                k.child_service = service;
                k.referenced = true;
                taught += 1;
            }
        }
        taught
    }

    /// Call keys known, and those expecting a child.
    pub fn counts(&self) -> (u64, u64) {
        let l = self.lock();
        let edges = l.keys.slots.iter().filter(|k| matches!(k.decision(), Decision::Expected { .. })).count();
        (l.keys.slots.len() as u64, edges as u64)
    }

    /// What was learned, for the metrics.
    pub fn learnt(&self, now: u64) -> Learnt {
        let l = self.lock();
        Learnt {
            keys: l.keys.slots.len() as u64,
            edges: l.keys.slots.iter().filter(|k| matches!(k.decision(), Decision::Expected { .. })).count() as u64,
            lags: l.services.slots.iter().map(|s| (s.name.to_string(), s.lag(now))).collect(),
        }
    }
}

/// What is known of call `c` when it has no child: a database call not learned yet is taken
/// as a leaf.
fn decide(l: &Learned, c: &Callout) -> Decision {
    match l.keys.get(c.key) {
        Some(k) => k.decision(),
        None if c.db => Decision::NoChild,
        None => Decision::Unknown,
    }
}

/// Margin added to a lag: a quarter second for clocks and timers, and an eighth of the lag
/// (a batch processor's timer restarts after its export, so its period is a little longer
/// than its delay).
pub fn margin(lag: u64) -> u64 {
    250_000_000 + lag / 8
}

fn truncate(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// The peer attributes of a call key, in the order of [`name_and_peers`]'s result.
const PEERS: [&[u8]; PEER_COUNT] = [
    b"peer.service",
    b"server.address",
    b"server.port",
    b"net.peer.name",
    b"net.peer.port",
    b"db.system",
    b"db.system.name",
];
const PEER_COUNT: usize = 7;
/// Where the database system attributes are in [`PEERS`]: a call with one is a database call.
const DB_PEERS: [usize; 2] = [5, 6];

/// A span's name and the encoded values of its peer attributes ([`PEERS`]; empty when
/// absent) from its encoding. A malformed span gives what was read.
fn name_and_peers(span: &[u8]) -> (&[u8], [&[u8]; PEER_COUNT]) {
    let mut name: &[u8] = &[];
    let mut peers: [&[u8]; PEER_COUNT] = [&[]; PEER_COUNT];
    for f in Fields::new(span, 0) {
        let Ok(f) = f else { break };
        match (f.number, f.value) {
            (5, Value::Len(r)) => name = &span[r],
            (9, Value::Len(r)) => {
                let Some((k, v)) = key_and_value(&span[r]) else { continue };
                if let Some(slot) = PEERS.iter().position(|p| *p == k) {
                    peers[slot] = v;
                }
            }
            _ => {}
        }
    }
    (name, peers)
}

/// A `KeyValue`'s key and its `AnyValue`'s encoding (a string and an int alike).
fn key_and_value(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    for f in Fields::new(kv, 0) {
        match f.ok()? {
            crate::wire::Field { number: 1, value: Value::Len(r), .. } => key = &kv[r],
            crate::wire::Field { number: 2, value: Value::Len(r), .. } => value = &kv[r],
            _ => {}
        }
    }
    Some((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn call(key: u64, end: u64, child: Option<u64>) -> Callout {
        Callout { idx: 0, db: false, span_id: key ^ 0xabc, key, end_wall: end, child_service: child }
    }

    #[test]
    fn an_unknown_call_waits_for_the_cold_lag() {
        let e = Expect::new(64, 8, 10 * SEC);
        let until = e.hold_until(&[call(1, 100 * SEC, None)], 100 * SEC, 100 * SEC, u64::MAX);
        assert_eq!(until, 100 * SEC + COLD_LAG_NS + margin(COLD_LAG_NS));
        assert_eq!(e.decision(1), Decision::Unknown);
    }

    #[test]
    fn a_call_with_a_child_is_expected_at_once_and_from_that_service() {
        let e = Expect::new(64, 8, 10 * SEC);
        let svc = e.service_hash("backend");
        e.learn(1, &[call(7, 0, Some(svc))], false, 0, 0);
        assert_eq!(e.decision(7), Decision::Expected { service: svc });
    }

    #[test]
    fn a_leaf_stops_holding_after_two_waited_calls_and_is_probed_every_so_often() {
        let e = Expect::new(64, 8, 10 * SEC);
        assert!(e.learn(1, &[call(3, 0, None)], true, 0, 0).is_empty());
        assert_eq!(e.decision(3), Decision::Unknown);
        e.learn(1, &[call(3, 0, None)], true, 0, 0);
        assert_eq!(e.decision(3), Decision::NoChild);
        assert_eq!(e.hold_until(&[call(3, 0, None)], 0, 0, u64::MAX), 0);
        // Released without waiting: no evidence either way, counted towards a probe.
        for _ in 0..PROBE_EVERY {
            e.learn(1, &[call(3, 0, None)], false, 0, 0);
        }
        assert_eq!(e.decision(3), Decision::Probe);
        e.learn(1, &[call(3, 0, None)], true, 0, 0);
        assert_eq!(e.decision(3), Decision::NoChild);
    }

    #[test]
    fn an_expected_child_that_stops_coming_is_unlearned_in_three_calls() {
        let e = Expect::new(64, 8, 10 * SEC);
        e.learn(1, &[call(5, 0, Some(9))], false, 0, 0);
        for i in 0..3 {
            assert!(matches!(e.decision(5), Decision::Expected { .. }), "call {i}");
            assert_eq!(e.learn(1, &[call(5, 0, None)], true, 0, 0), vec![0], "reported missing");
        }
        assert_eq!(e.decision(5), Decision::NoChild);
    }

    #[test]
    fn a_late_child_of_a_call_released_without_waiting_teaches_its_key() {
        let e = Expect::new(64, 8, 10 * SEC);
        e.learn(1, &[call(4, 0, None)], true, 0, 0);
        e.learn(1, &[call(4, 0, None)], true, 0, 0);
        assert_eq!(e.decision(4), Decision::NoChild);
        let released = call(4, 0, None);
        e.learn(1, std::slice::from_ref(&released), false, 0, 0);
        assert_eq!(e.learn_late(&[(1, 12345, 7)]), 0, "a late span of another parent");
        assert_eq!(e.learn_late(&[(2, released.span_id, 7)]), 0, "of another trace");
        assert_eq!(e.learn_late(&[(1, released.span_id, 7)]), 1);
        assert_eq!(e.decision(4), Decision::Expected { service: 7 });
    }

    #[test]
    fn a_probe_that_finds_a_child_expects_it_again() {
        let e = Expect::new(64, 8, 10 * SEC);
        e.learn(1, &[call(4, 0, None)], true, 0, 0);
        e.learn(1, &[call(4, 0, None)], true, 0, 0);
        e.learn(1, &[call(4, 0, Some(2))], false, 0, 0);
        assert_eq!(e.decision(4), Decision::Expected { service: 2 });
    }

    #[test]
    fn the_lag_of_a_service_follows_a_shorter_delay_within_two_windows() {
        let e = Expect::new(64, 8, 10 * SEC);
        let svc = e.service_hash("b");
        let mut now = 0;
        while now < 40 * SEC {
            e.observe_lags(&[("b", 5 * SEC)], now);
            now += 5 * SEC;
        }
        let lag_of = |e: &Expect, now| e.learnt(now).lags.into_iter().find(|l| l.0 == "b").unwrap().1;
        assert_eq!(lag_of(&e, now), 5 * SEC);
        let changed = now;
        while now < changed + 2 * LAG_WINDOW_NS + SEC {
            e.observe_lags(&[("b", SEC)], now);
            now += SEC;
        }
        assert_eq!(lag_of(&e, now), SEC);
        let hold = e.hold_until(&[call(1, now, None)], now, now, u64::MAX);
        assert_eq!(hold, now + SEC + margin(SEC), "unknown: the slowest service known");
        e.learn(1, &[call(1, 0, Some(svc))], false, now, now);
        let hold = e.hold_until(&[call(1, now, None)], now, now, u64::MAX);
        let cold = COLD_LAG_NS + margin(COLD_LAG_NS);
        assert_eq!(hold, now + cold, "expected, its callee not yet past the call: the default delay");
        e.observe_ends(&[("b", now + WATERMARK_SLACK_NS)]);
        let hold = e.hold_until(&[call(1, now, None)], now, now, u64::MAX);
        assert_eq!(hold, now + SEC + margin(SEC), "expected: that callee's lag");
    }

    #[test]
    fn a_new_service_is_taken_as_slow_for_one_window() {
        let e = Expect::new(64, 8, 10 * SEC);
        e.observe_lags(&[("fast", 200 * MS)], 0);
        let lag = e.learnt(SEC).lags[0].1;
        assert_eq!(lag, COLD_LAG_NS);
        e.observe_lags(&[("fast", 200 * MS)], LAG_WINDOW_NS);
        assert_eq!(e.learnt(LAG_WINDOW_NS).lags[0].1, 200 * MS);
    }

    #[test]
    fn a_hold_never_passes_the_latest_time_given() {
        let e = Expect::new(64, 8, 10 * SEC);
        assert_eq!(e.hold_until(&[call(1, u64::MAX / 2, None)], 0, 0, 3 * SEC), 3 * SEC);
        // A call ended long ago is not waited for.
        assert_eq!(e.hold_until(&[call(1, 0, None)], 100 * SEC, 100 * SEC, u64::MAX), 100 * SEC);
    }

    #[test]
    fn lags_are_capped_at_idle_timeout() {
        let e = Expect::new(64, 8, 2 * SEC);
        e.observe_lags(&[("s", 3600 * SEC)], 0);
        assert_eq!(e.learnt(0).lags[0].1, COLD_LAG_NS.max(2 * SEC));
        assert_eq!(e.hold_until(&[call(1, 0, None)], 0, 0, u64::MAX), 2 * SEC + margin(2 * SEC));
    }

    #[test]
    fn calls_to_two_ports_of_one_host_are_two_keys() {
        use crate::testutil::{kv, request};
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        let port = |p: i64| KeyValue { key: "server.port".into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(p)) }), ..Default::default() };
        let mut spans = Vec::new();
        for (i, p) in [(1u64, 8080), (2, 9090), (3, 8080)] {
            let mut s = crate::testutil::span(1, i, 0, 1, 2);
            s.kind = 3;
            s.name = "GET".into();
            s.attributes = vec![kv("server.address", "127.0.0.1"), port(p)];
            spans.push(s);
        }
        let data = request(vec![("svc", spans)]);
        let batch = crate::index::scan_request(&data).unwrap();
        let e = Expect::new(64, 8, 10 * SEC);
        let calls = e.callouts(&batch.spans, &data, &batch.groups);
        assert_eq!(calls.len(), 3);
        assert_ne!(calls[0].key, calls[1].key);
        assert_eq!(calls[0].key, calls[2].key);
    }

    #[test]
    fn tables_stay_within_their_bounds_under_random_keys() {
        let e = Expect::new(256, 16, 10 * SEC);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut max_bytes = 0;
        for i in 0..100_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            e.learn(1, &[call(x, 0, if i % 2 == 0 { Some(1) } else { None })], true, 0, 0);
            let name = format!("svc-{x:x}");
            e.observe_lags(&[(&name, SEC)], i);
            max_bytes = max_bytes.max(e.bytes());
        }
        let l = e.learnt(0);
        assert!(l.keys <= 256 && l.lags.len() <= 16, "{} keys, {} services", l.keys, l.lags.len());
        // 256 keys and 16 services, their tables and names.
        assert!(max_bytes < 64 << 10, "{max_bytes} bytes");
        assert!(e.bytes() > 256 * size_of::<KeyState>() as u64);
    }

    #[test]
    fn a_frequently_used_key_survives_a_flood_of_new_ones() {
        let e = Expect::new(64, 8, 10 * SEC);
        e.learn(1, &[call(42, 0, Some(1))], false, 0, 0);
        for i in 0..10_000u64 {
            e.learn(1, &[call(1_000_000 + i, 0, None)], true, 0, 0);
            if i % 16 == 0 {
                e.learn(1, &[call(42, 0, Some(1))], false, 0, 0);
            }
        }
        assert_eq!(e.decision(42), Decision::Expected { service: 1 });
    }
}
