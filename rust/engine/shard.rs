//! One shard of the engine: the traces whose IDs hash to it, in order of first arrival, the
//! late-span cache of its released trace IDs, the queue of when each trace is next due, and
//! the memory it holds. Every method runs under the shard's lock and costs at most
//! `O(k log k)` in the `k` spans, groups or traces it touches (a tick: the traces whose
//! deadline passed, not every buffered one).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use ahash::RandomState;
use std::mem::size_of;

use crate::findings::ReleaseReason;
use crate::index::{kind, Group, ScannedBatch, SpanRec};
use crate::sampling::Verdict;

use super::expect::{CallKey, Expect};
use super::memory::{alloc_size, deque_bytes, groups_bytes, map_bytes, rec_heap, reserve_to_class, vec_bytes};
use super::unit::Unit;

/// The top bit of [`Trace::hold`]: the trace waited for children at least once.
pub const AWAITED: u64 = 1 << 63;

/// Below these sizes a trace's storage grows exactly (per batch); above, by doubling.
const EXACT_GROWTH_BYTES: usize = 256 << 10;
const EXACT_GROWTH_SPANS: usize = 1024;
/// Above this many groups a trace finds its groups through a hash map.
const GROUP_INDEX_FROM: usize = 8;

/// Memory by part, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mem {
    /// Span encodings.
    pub span: u64,
    /// Index records and their rare details.
    pub index: u64,
    /// Per-trace and per-shard structures.
    pub trace: u64,
}

impl Mem {
    pub fn total(&self) -> u64 {
        self.span + self.index + self.trace
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completeness {
    Unknown,
    Complete,
    Incomplete,
}

pub struct Trace {
    pub first_seen: u64,
    pub last_seen: u64,
    pub spans: Vec<SpanRec>,
    pub buf: Vec<u8>,
    pub groups: Vec<Group>,
    /// The call keys of its CLIENT and PRODUCER spans, in span order (see `awaited`).
    pub calls: Vec<CallKey>,
    /// Group identity -> index in `groups`, once a trace has many groups.
    group_index: Option<HashMap<(usize, usize), u32>>,
    /// Heap bytes of the records' rare details.
    extra_heap: u64,
    pub state: Completeness,
    pub gen: u64,
    /// With a write-ahead log: where its spans are logged (boxed: one pointer per trace
    /// without a log).
    pub wal: Option<Box<TraceWal>>,
    /// The most hand-offs any of its spans went through (see `handoff`).
    pub hops: u32,
    /// Waiting for children of its calls still on their way (see `awaited`): the low 63
    /// bits say until when (monotonic) before it is looked at again, 0 if not looked at
    /// since its last span arrived; the top bit that it waited at least once.
    pub hold: u64,
    /// The deadline of its live entry in [`Shard::deadlines`] ([`UNQUEUED`]: none).
    queued: u64,
}

/// Why a trace first seen at `first_seen`, last at `last_seen`, is due at `now`, if it is:
/// past `max_age`, or quiet and complete (and not waiting for children until after `now`,
/// see `awaited`), or quiet for `idle_timeout`. `complete` is asked only once it is quiet.
fn due_at(first_seen: u64, last_seen: u64, hold: u64, now: u64, l: &Timers, complete: impl FnOnce() -> bool) -> Option<ReleaseReason> {
    if now.saturating_sub(first_seen) >= l.max_age {
        return Some(ReleaseReason::MaxAge);
    }
    let quiet_for = now.saturating_sub(last_seen);
    if quiet_for < l.quiet_period {
        return None;
    }
    if complete() {
        return (hold & !AWAITED <= now).then_some(ReleaseReason::Complete);
    }
    (quiet_for >= l.idle_timeout).then_some(ReleaseReason::IdleTimeout)
}

/// [`Trace::queued`] of a trace without a live entry in the deadline queue.
const UNQUEUED: u64 = u64::MAX;

/// The time limits a shard releases by, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    pub quiet_period: u64,
    pub idle_timeout: u64,
    pub max_age: u64,
}

/// The first `now` with `now.saturating_sub(since) >= after` (the way the limits are
/// compared): any time when `after` is 0, even one before `since`.
fn deadline(since: u64, after: u64) -> u64 {
    if after == 0 {
        0
    } else {
        since.saturating_add(after)
    }
}

/// A trace's part of the write-ahead log.
#[derive(Default)]
pub struct TraceWal {
    /// Positions of the batch records holding the trace's spans (in order of arrival, each
    /// once).
    pub positions: Vec<u64>,
    /// Spans of it were replayed after a restart.
    pub recovered: bool,
}

impl Trace {
    /// Why the trace is due at `now`, if it is ([`due_at`]). Caches its completeness.
    fn due(&mut self, now: u64, l: &Timers) -> Option<ReleaseReason> {
        let (spans, state) = (&self.spans, &mut self.state);
        due_at(self.first_seen, self.last_seen, self.hold, now, l, || {
            if *state == Completeness::Unknown {
                *state = if is_complete(spans) { Completeness::Complete } else { Completeness::Incomplete };
            }
            *state == Completeness::Complete
        })
    }

    /// The earliest time [`Trace::due`] may say it is due while nothing but time passes (a
    /// span's arrival moves it: [`Shard::insert_run`]; waiting for children: the caller
    /// queues it again). Its completeness is known once it was looked at while quiet.
    fn next_due(&self, l: &Timers) -> u64 {
        let age = deadline(self.first_seen, l.max_age);
        let quiet = deadline(self.last_seen, l.quiet_period);
        let after_quiet = match self.state {
            // Known once looked at while quiet; before that, only quiet matters.
            Completeness::Unknown => quiet,
            Completeness::Complete => quiet.max(self.hold & !AWAITED),
            Completeness::Incomplete => quiet.max(deadline(self.last_seen, l.idle_timeout)),
        };
        age.min(after_quiet)
    }

    fn mem(&self) -> Mem {
        let index_map = self.group_index.as_ref().map_or(0, |m| map_bytes::<(usize, usize), u32>(m.capacity()));
        Mem {
            span: vec_bytes(&self.buf),
            index: vec_bytes(&self.spans)
                + vec_bytes(&self.calls)
                + self.extra_heap
                + self.wal.as_ref().map_or(0, |w| alloc_size(size_of::<TraceWal>()) + vec_bytes(&w.positions)),
            trace: groups_bytes(&self.groups) + index_map,
        }
    }

    fn group_of(&mut self, g: &Group) -> u32 {
        let key = g.key();
        if let Some(ix) = &self.group_index {
            if let Some(&i) = ix.get(&key) {
                return i;
            }
        } else if let Some(i) = self.groups.iter().position(|x| x.key() == key) {
            return i as u32;
        }
        self.groups.push(g.clone());
        let i = (self.groups.len() - 1) as u32;
        if let Some(ix) = &mut self.group_index {
            ix.insert(key, i);
        } else if self.groups.len() > GROUP_INDEX_FROM {
            self.group_index = Some(self.groups.iter().enumerate().map(|(i, g)| (g.key(), i as u32)).collect());
        }
        i
    }
}

/// Trace IDs of released traces, to recognise their late spans, each with the sorted content
/// hashes of the spans it was released with, to recognise an exact re-send of one of them (a
/// retry after release). Bounded by count and by bytes; the oldest is forgotten first. The
/// hashes arrive after the release (they are computed on drain, outside the lock): a re-send
/// in between is forwarded as a late span.
pub struct LateCache {
    map: HashMap<u128, Box<[u64]>, RandomState>,
    order: VecDeque<u128>,
    cap: usize,
    byte_cap: u64,
    hash_bytes: u64,
    /// With sampling: each entry's slice starts with the trace's verdict (two words, see
    /// [`encode_verdict`]), then its hashes; the verdict shares the byte bound with them.
    pub verdicts: bool,
}

/// A verdict as the two words a late-cache entry starts with: state (1 kept, 2 dropped) and
/// rule, then the threshold.
fn encode_verdict(v: Verdict) -> [u64; 2] {
    match v {
        Verdict::Undecided => [0, 0],
        Verdict::Kept { rule, threshold } => [1 | u64::from(rule) << 32, threshold],
        Verdict::Dropped { rule } => [2 | u64::from(rule) << 32, 0],
    }
}

fn decode_verdict(w: &[u64]) -> Verdict {
    match w {
        [a, b, ..] => match a & 3 {
            1 => Verdict::Kept { rule: (a >> 32) as u32, threshold: *b },
            2 => Verdict::Dropped { rule: (a >> 32) as u32 },
            _ => Verdict::Undecided,
        },
        _ => Verdict::Undecided,
    }
}

/// The allocation of a late-cache entry's hashes.
fn slice_bytes(hs: &[u64]) -> u64 {
    alloc_size(std::mem::size_of_val(hs))
}

impl LateCache {
    pub fn contains(&self, id: u128) -> bool {
        self.map.contains_key(&id)
    }

    /// Whether a span with content hash `h` was released with trace `id`.
    pub fn is_resend(&self, id: u128, h: u64) -> bool {
        self.map.get(&id).is_some_and(|hs| self.hashes(hs).binary_search(&h).is_ok())
    }

    fn hashes<'a>(&self, entry: &'a [u64]) -> &'a [u64] {
        if self.verdicts {
            entry.get(2..).unwrap_or_default()
        } else {
            entry
        }
    }

    /// What sampling decided for released trace `id` (undecided when unknown).
    pub fn verdict(&self, id: u128) -> Verdict {
        match self.map.get(&id) {
            Some(hs) if self.verdicts => decode_verdict(hs),
            _ => Verdict::Undecided,
        }
    }

    fn insert(&mut self, id: u128) {
        if !self.map.contains_key(&id) {
            self.map.insert(id, Box::default());
            self.order.push_back(id);
            self.evict();
        }
    }

    /// Records the content hashes (sorted) trace `id` was released with. Hashes that alone
    /// pass the byte bound are not kept: the ID still marks the trace's later spans late,
    /// and a re-send of one of its spans is forwarded as late instead of dropped.
    /// With them, what sampling decided, which the trace's late spans follow.
    pub fn set_released(&mut self, id: u128, hashes: Box<[u64]>, verdict: Verdict) {
        let hashes = if slice_bytes(&hashes) > self.byte_cap { Box::default() } else { hashes };
        let hashes = if self.verdicts { encode_verdict(verdict).iter().chain(hashes.iter()).copied().collect() } else { hashes };
        if let Some(slot) = self.map.get_mut(&id) {
            self.hash_bytes += slice_bytes(&hashes);
            self.hash_bytes -= slice_bytes(slot);
            *slot = hashes;
            self.evict();
        }
    }

    /// Forgets the oldest entries while over a bound, down to none: no entry is kept whose
    /// bytes the bound has no room for.
    fn evict(&mut self) {
        while self.order.len() > self.cap || self.hash_bytes > self.byte_cap {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(hs) = self.map.remove(&old) {
                self.hash_bytes -= slice_bytes(&hs);
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        map_bytes::<u128, Box<[u64]>>(self.map.capacity()) + deque_bytes(&self.order) + self.hash_bytes
    }
}

/// One entry of [`Shard::deadlines`]: (deadline, generation, trace ID), earliest first.
type Deadline = Reverse<(u64, u64, u128)>;

pub struct Shard {
    traces: HashMap<u128, Trace, RandomState>,
    /// Trace IDs in order of first arrival (with the trace's generation); stale entries are
    /// skipped and compacted.
    fifo: VecDeque<(u128, u64)>,
    /// When each trace is next due at the earliest ([`Trace::next_due`]), earliest first: a
    /// tick looks only at the traces whose deadline passed. An entry is live while its
    /// trace (same generation) is buffered with [`Trace::queued`] equal to its deadline;
    /// stale entries are skipped when they come up, and compacted.
    deadlines: BinaryHeap<Deadline>,
    timers: Timers,
    /// Traces looked at by [`Shard::due`] (tests).
    #[cfg(test)]
    pub visited: u64,
    pub late: LateCache,
    spans: u64,
    /// Memory of the traces (not counting the shard's own tables).
    held: Mem,
    next_gen: u64,
    /// What the engine's counters last saw of this shard (see [`Shard::report`]).
    pub reported: Report,
}

/// A shard's share of the engine's gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub spans: u64,
    pub traces: u64,
    pub mem: Mem,
    pub late: u64,
}

impl Shard {
    pub fn new(late_cap: usize, late_byte_cap: u64, timers: Timers) -> Shard {
        Shard {
            traces: HashMap::default(),
            fifo: VecDeque::new(),
            deadlines: BinaryHeap::new(),
            timers,
            #[cfg(test)]
            visited: 0,
            late: LateCache { map: HashMap::default(), order: VecDeque::new(), cap: late_cap, byte_cap: late_byte_cap, hash_bytes: 0, verdicts: false },
            spans: 0,
            held: Mem::default(),
            next_gen: 0,
            reported: Report::default(),
        }
    }

    /// The shard's current share of the gauges.
    pub fn report(&self) -> Report {
        let tables = map_bytes::<u128, Trace>(self.traces.capacity())
            + deque_bytes(&self.fifo)
            + alloc_size(self.deadlines.capacity() * size_of::<Deadline>());
        Report {
            spans: self.spans,
            traces: self.traces.len() as u64,
            mem: Mem { trace: self.held.trace + tables, ..self.held },
            late: self.late.bytes(),
        }
    }

    pub fn span_count(&self, id: u128) -> Option<usize> {
        self.traces.get(&id).map(|t| t.spans.len())
    }

    /// Bytes of span encodings trace `id` holds (what its records' offsets address).
    pub fn span_bytes(&self, id: u128) -> Option<u64> {
        self.traces.get(&id).map(|t| t.buf.len() as u64)
    }

    /// Buffers the spans `run` (indexes into `batch`, whose span bytes are in `data`) of
    /// trace `id`, with the call keys of its calls (`expect`'s). Returns how many of them
    /// were handed off to this engine, and whether they joined a trace already buffered.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_run(&mut self, id: u128, run: &[u32], batch: &ScannedBatch, data: &[u8], expect: &Expect, now: u64, wal: Option<u64>, recovered: bool) -> RunInsert {
        let merged = self.traces.contains_key(&id);
        let mut handed_off = 0u64;
        let gen = self.next_gen;
        let trace = self.traces.entry(id).or_insert_with(|| Trace {
            first_seen: now,
            last_seen: now,
            spans: Vec::new(),
            buf: Vec::new(),
            groups: Vec::new(),
            calls: Vec::new(),
            group_index: None,
            extra_heap: 0,
            state: Completeness::Unknown,
            gen,
            wal: None,
            hops: 0,
            hold: 0,
            queued: UNQUEUED,
        });
        if trace.gen == gen {
            self.next_gen += 1;
            self.fifo.push_back((id, gen));
        }
        let before = trace.mem();
        // Grow storage once for the whole run: exactly (to the size class) while the trace
        // is small, amortised once it is big.
        let need: usize = run.iter().map(|&i| batch.spans[i as usize].len()).sum();
        reserve_to_class(&mut trace.buf, need, EXACT_GROWTH_BYTES);
        reserve_to_class(&mut trace.spans, run.len(), EXACT_GROWTH_SPANS);
        let calls = run.iter().filter(|&&i| matches!(batch.spans[i as usize].kind, kind::CLIENT | kind::PRODUCER)).count();
        reserve_to_class(&mut trace.calls, calls, EXACT_GROWTH_SPANS);
        for &i in run {
            let s = &batch.spans[i as usize];
            let gi = trace.group_of(&batch.groups[s.group as usize]);
            let src = &data[s.bytes.start as usize..s.bytes.end as usize];
            let start = trace.buf.len() as u32;
            trace.buf.extend_from_slice(src);
            let mut rec = s.clone();
            rec.bytes = start..trace.buf.len() as u32;
            rec.group = gi;
            rec.seq = trace.spans.len() as u32;
            if let Some(k) = expect.call_key_of(&rec, rec.seq, src, &batch.groups[s.group as usize].resource.service) {
                trace.calls.push(k);
            }
            let hops = rec.handoff_hops();
            if hops > 0 {
                handed_off += 1;
                trace.hops = trace.hops.max(hops);
            }
            trace.extra_heap += rec_heap(&rec);
            trace.spans.push(rec);
        }
        trace.last_seen = trace.last_seen.max(now);
        trace.state = Completeness::Unknown;
        trace.hold &= AWAITED;
        // Due again by the quiet period from now on: earlier than its queued deadline when
        // it had been waiting for the idle timeout or for children.
        let next = trace.next_due(&self.timers);
        if next < trace.queued {
            trace.queued = next;
            self.deadlines.push(Reverse((next, trace.gen, id)));
        }
        if let Some(pos) = wal {
            let w = trace.wal.get_or_insert_with(Box::default);
            if w.positions.last() != Some(&pos) {
                w.positions.push(pos);
            }
            w.recovered |= recovered;
        }
        let after = trace.mem();
        self.held.span += after.span - before.span;
        self.held.index += after.index - before.index;
        self.held.trace += after.trace - before.trace;
        self.spans += run.len() as u64;
        RunInsert { handed_off, merged }
    }

    pub fn trace_mut(&mut self, id: u128) -> Option<&mut Trace> {
        self.traces.get_mut(&id)
    }

    /// The hand-offs trace `id` went through (see [`Trace::hops`]).
    pub fn hops(&self, id: u128) -> Option<u32> {
        self.traces.get(&id).map(|t| t.hops)
    }

    /// Takes trace `id` out as a released unit, remembering its ID as released.
    pub fn release(&mut self, id: u128, reason: ReleaseReason, now: u64) -> Option<Unit> {
        self.take(id, reason, now, true)
    }

    /// Takes trace `id` out to be handed off: its ID is not remembered as released, so that
    /// its spans are buffered again if the hand-off comes back here.
    pub fn hand_off(&mut self, id: u128, reason: ReleaseReason, now: u64) -> Option<Unit> {
        let mut unit = self.take(id, reason, now, false)?;
        unit.handoff = true;
        Some(unit)
    }

    fn take(&mut self, id: u128, reason: ReleaseReason, now: u64, remember: bool) -> Option<Unit> {
        let trace = self.traces.remove(&id)?;
        let mem = trace.mem();
        self.held.span -= mem.span;
        self.held.index -= mem.index;
        self.held.trace -= mem.trace;
        self.spans -= trace.spans.len() as u64;
        if remember {
            self.late.insert(id);
        }
        if self.fifo.len() > 2 * self.traces.len() + 64 {
            let traces = &self.traces;
            self.fifo.retain(|(id, gen)| traces.get(id).is_some_and(|t| t.gen == *gen));
        }
        if self.deadlines.len() > 2 * self.traces.len() + 64 {
            let traces = &self.traces;
            self.deadlines.retain(|&Reverse((when, gen, id))| traces.get(&id).is_some_and(|t| t.gen == gen && t.queued == when));
        }
        // Give back table space after a burst (amortised: only when three quarters are empty).
        if self.traces.capacity() > 64 && self.traces.len() < self.traces.capacity() / 4 {
            self.traces.shrink_to(self.traces.len() * 2);
        }
        if self.fifo.capacity() > 64 && self.fifo.len() < self.fifo.capacity() / 4 {
            self.fifo.shrink_to(self.fifo.len() * 2);
        }
        if self.deadlines.capacity() > 64 && self.deadlines.len() < self.deadlines.capacity() / 4 {
            self.deadlines.shrink_to(self.deadlines.len() * 2);
        }
        let (wal, recovered) = match trace.wal {
            Some(w) => (w.positions.iter().map(|&p| (p, id)).collect(), w.recovered),
            None => (Vec::new(), false),
        };
        // The call keys are freed here: the unit is counted without them.
        let held = mem.total() - vec_bytes(&trace.calls);
        Some(Unit::from_trace(id, reason, trace.spans, trace.buf, trace.groups, now.saturating_sub(trace.first_seen), held, wal, recovered))
    }

    /// The oldest buffered trace.
    pub fn oldest(&mut self) -> Option<u128> {
        while let Some(&(id, gen)) = self.fifo.front() {
            if self.traces.get(&id).is_some_and(|t| t.gen == gen) {
                return Some(id);
            }
            self.fifo.pop_front();
        }
        None
    }

    /// Every buffered trace ID, oldest first.
    pub fn all_ids(&self) -> Vec<u128> {
        let mut ids: Vec<(u64, u128)> = self.traces.iter().map(|(&id, t)| (t.gen, id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Traces holding spans of write-ahead log batches before `pos` (oldest first): they keep
    /// the log's oldest segment. Touches every buffered trace; runs only while the log is
    /// near its bound.
    pub fn holding_wal_before(&self, pos: u64) -> Vec<u128> {
        let mut ids: Vec<(u64, u128)> =
            self.traces.iter().filter(|(_, t)| t.wal.as_ref().is_some_and(|w| w.positions.iter().any(|&p| p < pos))).map(|(&id, t)| (t.gen, id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Traces due at `now` (in order of first arrival) and why ([`Trace::due`]). Looks only
    /// at the traces whose deadline passed: `O(d log n)` for `d` of them among `n`. Those
    /// not due are queued again; the caller queues again those it keeps ([`Shard::requeue`]).
    pub fn due(&mut self, now: u64) -> Vec<(u128, ReleaseReason)> {
        #[cfg(test)]
        let expected = self.due_by_scan(now);
        let mut looked: Vec<(u64, u128)> = Vec::new();
        while let Some(&Reverse((when, gen, id))) = self.deadlines.peek() {
            if when > now {
                break;
            }
            self.deadlines.pop();
            if let Some(t) = self.traces.get_mut(&id) {
                if t.gen == gen && t.queued == when {
                    t.queued = UNQUEUED;
                    looked.push((gen, id));
                }
            }
        }
        looked.sort_unstable();
        #[cfg(test)]
        {
            self.visited += looked.len() as u64;
        }
        let mut due = Vec::new();
        for (_, id) in looked {
            let Some(t) = self.traces.get_mut(&id) else { continue };
            match t.due(now, &self.timers) {
                Some(reason) => due.push((id, reason)),
                None => self.requeue(id),
            }
        }
        #[cfg(test)]
        assert_eq!(due, expected, "the deadline queue disagrees with a scan of every trace at {now}");
        due
    }

    /// Queues trace `id` again (if it is buffered and not queued): [`Shard::due`] returned
    /// it and it stayed (waiting for children).
    pub fn requeue(&mut self, id: u128) {
        let Some(t) = self.traces.get_mut(&id) else { return };
        if t.queued != UNQUEUED {
            return;
        }
        let next = t.next_due(&self.timers);
        t.queued = next;
        self.deadlines.push(Reverse((next, t.gen, id)));
    }

    /// What [`Shard::due`] returns, by looking at every trace (without caching
    /// completeness): the reference the deadline queue is checked against in tests.
    #[cfg(test)]
    fn due_by_scan(&self, now: u64) -> Vec<(u128, ReleaseReason)> {
        let mut due: Vec<(u64, u128, ReleaseReason)> = Vec::new();
        for (&id, t) in self.traces.iter() {
            if let Some(reason) = due_at(t.first_seen, t.last_seen, t.hold, now, &self.timers, || is_complete(&t.spans)) {
                due.push((t.gen, id, reason));
            }
        }
        due.sort_unstable_by_key(|d| d.0);
        due.into_iter().map(|(_, id, r)| (id, r)).collect()
    }
}

/// What [`Shard::insert_run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunInsert {
    /// Spans of the run that carried a hand-off marker.
    pub handed_off: u64,
    /// Whether the trace was buffered already.
    pub merged: bool,
}

/// One root (counting a span ID once) and every referenced parent present.
pub fn is_complete(spans: &[SpanRec]) -> bool {
    let mut ids: Vec<u64> = spans.iter().map(|s| s.span_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut roots: Vec<u64> = spans.iter().filter(|s| s.is_root()).map(|s| s.span_id).collect();
    roots.sort_unstable();
    roots.dedup();
    roots.len() == 1 && spans.iter().all(|s| s.is_root() || ids.binary_search(&s.parent_id).is_ok())
}
