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

use std::hash::{BuildHasher, Hash, Hasher};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ahash::RandomState;

use crate::index::{kind, Group, SpanRec};

mod clock;
mod entries;
mod peers;
#[cfg(test)]
mod tests;

use clock::Clock;
use entries::{KeyState, ServiceLag};
use peers::{name_and_peers, truncate, DB_PEERS, PEER_COUNT};

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

/// A CLIENT or PRODUCER span's call key, computed once when its span is buffered: reading
/// the span's name and peer attributes again at each look at its trace cost more than the
/// rest of the learning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallKey {
    pub key: u64,
    /// Index of the span in the trace's records.
    pub idx: u32,
    /// A database call (see [`Callout::db`]).
    pub db: bool,
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
        let unwaited = crate::engine::memory::alloc_size(l.unwaited.capacity() * size_of::<(u64, u64)>());
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
            l.name_bytes = l.services.slots.iter().map(|s| crate::engine::memory::alloc_size(s.name.len())).sum();
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

    /// The call key of span `s` (the `idx`th of its trace, encoded as `bytes`, of `service`)
    /// if it is a CLIENT or PRODUCER span.
    pub fn call_key_of(&self, s: &SpanRec, idx: u32, bytes: &[u8], service: &str) -> Option<CallKey> {
        if s.kind != kind::CLIENT && s.kind != kind::PRODUCER {
            return None;
        }
        let (name, peers) = name_and_peers(bytes);
        let db = DB_PEERS.iter().any(|&i| !peers[i].is_empty());
        Some(CallKey { key: self.call_key(service, s.kind, name, &peers), idx, db })
    }

    /// The call keys of the CLIENT and PRODUCER spans of a trace, read from their encodings.
    #[cfg(test)]
    pub fn call_keys(&self, spans: &[SpanRec], buf: &[u8], groups: &[Group]) -> Vec<CallKey> {
        spans
            .iter()
            .enumerate()
            .filter_map(|(idx, s)| {
                let service = groups.get(s.group as usize).map_or("", |g| g.resource.service.as_str());
                let bytes = buf.get(s.bytes.start as usize..s.bytes.end as usize).unwrap_or(&[]);
                self.call_key_of(s, idx as u32, bytes, service)
            })
            .collect()
    }

    /// The CLIENT and PRODUCER spans of a trace, each with its key and whether (and from
    /// which service) it has a child, read from the spans' encodings: the reference the
    /// keys kept with a buffered trace are checked against in tests.
    #[cfg(test)]
    pub fn callouts(&self, spans: &[SpanRec], buf: &[u8], groups: &[Group]) -> Vec<Callout> {
        self.callouts_keyed(spans, groups, &self.call_keys(spans, buf, groups))
    }

    /// [`Expect::callouts`] from the trace's call keys computed when its spans were buffered
    /// ([`Expect::call_key_of`], in span order).
    pub fn callouts_keyed(&self, spans: &[SpanRec], groups: &[Group], keys: &[CallKey]) -> Vec<Callout> {
        if keys.is_empty() {
            return Vec::new();
        }
        let mut children: Vec<(u64, usize)> =
            spans.iter().enumerate().filter(|(_, s)| !s.is_root()).map(|(i, s)| (s.parent_id, i)).collect();
        children.sort_unstable();
        let service_of = |rec: &SpanRec| groups.get(rec.group as usize).map_or("", |g| g.resource.service.as_str());
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let idx = k.idx as usize;
            let s = &spans[idx];
            let service = service_of(s);
            // Only the callee's child counts: a SERVER or CONSUMER span, or a span of another
            // service. An in-process child (Node.js's `tcp.connect` and `dns.lookup` under
            // the call that opened a connection) says nothing of the callee's spans.
            let first = match children.binary_search(&(s.span_id, 0)) {
                Ok(i) | Err(i) => i,
            };
            let child_service = children[first..]
                .iter()
                .take_while(|c| c.0 == s.span_id)
                .map(|c| &spans[c.1])
                .find(|child| child.kind == kind::SERVER || child.kind == kind::CONSUMER || service_of(child) != service)
                .map(|child| self.service_hash(service_of(child)));
            out.push(Callout { idx, db: k.db, span_id: s.span_id, key: k.key, end_wall: s.end, child_service });
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
