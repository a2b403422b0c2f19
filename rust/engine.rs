//! The tail-assembly engine: sharded buffering by trace ID, release on completeness or
//! timeouts, bounded memory with early release, late-span recognition, duplicate removal,
//! HLC stamping at ingest, and emission of annotated OTLP on drain.
//!
//! Lifecycle of a trace (reference document §2.1):
//! ```text
//!   collecting ──(one root, every parent present, quiet_period without new spans)──▶ released: complete
//!       │  └──(no new span for idle_timeout)─────────────────────────────────────▶ released: idle_timeout
//!       ├──(max_age since first span)────────────────────────────────────────────▶ released: max_age
//!       ├──(a buffer limit would be exceeded; oldest first)──────────────────────▶ released: memory_pressure
//!       ├──(max_spans_per_trace reached)─────────────────────────────────────────▶ released: span_limit
//!       └──(shutdown)────────────────────────────────────────────────────────────▶ released: shutdown
//!   released ──(span arrives for it: recognised through the late cache)──▶ forwarded at once, late
//! ```
//! Released traces wait in a ready queue (a crossbeam channel) until the caller drains them;
//! checks and encoding run on drain, outside every shard lock.
//!
//! Thread-safety: every method takes `&self`; `Engine` is `Send + Sync`. Time is always passed
//! in (`now` in Unix nanoseconds), so tests inject it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};

use crate::checks::{check_trace, CheckConfig, TraceReport};
use crate::config::{Config, ConfigError, DuplicatePolicy, LateSpanPolicy, RestartStrategy};
use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::{Hlc, HlcStats, Stamp, STAMP_STR_LEN};
use crate::index::{scan_request, Group, ScannedBatch, SpanRec, ATTR_HLC};
use crate::wire::{self, AnyValueRef, WireError};

/// Accounted memory per buffered span beyond its bytes: the index record.
pub const SPAN_OVERHEAD: u64 = std::mem::size_of::<SpanRec>() as u64;

/// Below these sizes a trace's storage grows exactly (per batch); above, by doubling.
const EXACT_GROWTH_BYTES: usize = 256 << 10;
const EXACT_GROWTH_SPANS: usize = 1024;

/// Why a batch was refused as a whole (nothing of it was kept).
#[derive(Debug, PartialEq, Eq)]
pub enum IngestError {
    /// A zero-length buffer.
    Empty,
    /// A request with no spans.
    NoSpans,
    /// Not a valid `ExportTraceServiceRequest`.
    Malformed(WireError),
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::Empty => f.write_str("empty input: a zero-length buffer holds no spans"),
            IngestError::NoSpans => f.write_str("empty batch: the request holds no spans"),
            IngestError::Malformed(e) => write!(f, "not an OTLP ExportTraceServiceRequest: {e}"),
        }
    }
}

/// What one ingest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Spans buffered for assembly.
    pub buffered: u64,
    /// Spans of already released traces forwarded at once (late policy `forward`).
    pub late_forwarded: u64,
    /// Spans of already released traces dropped (late policy `drop`).
    pub late_dropped: u64,
    /// Spans with an invalid trace or span ID, forwarded at once with a finding.
    pub unassembled: u64,
    /// Spans waiting in the ready queue after this call.
    pub ready_spans: u64,
}

/// Counters and gauges, read by the component for its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub buffered_spans: u64,
    pub buffered_bytes: u64,
    pub buffered_traces: u64,
    pub ready_spans: u64,
    pub ready_bytes: u64,
    pub spans_received: u64,
    pub batches_refused: u64,
    pub duplicates_dropped: u64,
    pub conflicts_dropped: u64,
    pub late_forwarded: u64,
    pub late_dropped: u64,
    pub unassembled: u64,
    pub future_timestamps: u64,
    pub hlc: HlcStats,
}

/// Per released unit, what the component records in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleasedInfo {
    pub reason: ReleaseReason,
    pub spans: u32,
    /// Time from the first span's arrival to the release, ns.
    pub age_ns: u64,
    /// Kinds found in the unit (0 for late / unassembled units unless ingest findings).
    pub findings: u32,
}

/// Findings counted by kind and `service.name` in one drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FindingCount {
    pub kind: FindingKind,
    pub service: String,
    pub count: u64,
}

/// One drained batch: OTLP bytes holding whole units, and what was in them.
#[derive(Debug, Default)]
pub struct Release {
    /// An encoded `ExportTraceServiceRequest`.
    pub otlp: Vec<u8>,
    pub units: Vec<ReleasedInfo>,
    pub findings: Vec<FindingCount>,
    pub spans: u64,
}

/// Knobs applied per shard (global limits split evenly).
#[derive(Clone, Debug)]
struct Limits {
    quiet: u64,
    idle: u64,
    max_age: u64,
    max_spans: u64,
    max_bytes: u64,
    max_spans_per_trace: u64,
    late_cap: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Completeness {
    Unknown,
    Complete,
    Incomplete,
}

struct Trace {
    first_seen: u64,
    last_seen: u64,
    spans: Vec<SpanRec>,
    buf: Vec<u8>,
    groups: Vec<Group>,
    bytes: u64,
    state: Completeness,
    gen: u64,
}

impl Trace {
    fn accounted(&self) -> (u64, u64) {
        (self.spans.len() as u64, self.bytes)
    }
}

/// A unit waiting to be drained: a released trace, or spans forwarded without assembly.
struct Unit {
    reason: ReleaseReason,
    spans: Vec<SpanRec>,
    buf: Vec<u8>,
    groups: Vec<Group>,
    age_ns: u64,
    /// Duplicates already removed (for released traces).
    bytes: u64,
}

/// Seeded hashing of 128-bit trace IDs (random IDs; the seed keeps crafted ones from
/// clustering).
#[derive(Clone, Copy)]
struct IdHashBuilder(u64);

struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = mix(self.0 ^ (v as u64) ^ mix((v >> 64) as u64));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct LateCache {
    set: HashSet<u128, IdHashBuilder>,
    order: VecDeque<u128>,
    cap: usize,
}

impl LateCache {
    fn insert(&mut self, id: u128) {
        if self.set.insert(id) {
            self.order.push_back(id);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

struct Shard {
    traces: HashMap<u128, Trace, IdHashBuilder>,
    /// Trace IDs in order of first arrival (with the trace's generation); stale entries are
    /// skipped and compacted.
    fifo: VecDeque<(u128, u64)>,
    late: LateCache,
    spans: u64,
    bytes: u64,
    next_gen: u64,
}

/// The engine. See the module documentation.
pub struct Engine {
    cfg: Config,
    check_cfg: CheckConfig,
    limits: Limits,
    shards: Box<[Mutex<Shard>]>,
    hasher: IdHashBuilder,
    hlc: Option<Hlc>,
    ready_tx: Sender<Unit>,
    ready_rx: Receiver<Unit>,
    shut_down: AtomicBool,
    c: Counters,
    trim: TrimState,
}

/// Giving freed memory back to the OS (glibc only). Engine calls run on whatever OS thread
/// Go schedules the caller on, and memory allocated on one thread is freed on another;
/// glibc keeps such memory in per-thread arenas, so a collector's RSS stayed near 0.9 GB
/// while the engine held < 100 MB (BENCHMARKS.md). After enough released bytes, at most
/// once per interval, `tick` calls `malloc_trim(0)`, which returns free pages of every
/// arena to the OS.
#[derive(Default)]
struct TrimState {
    released_bytes: AtomicU64,
    last_ns: AtomicU64,
    trims: AtomicU64,
}

const TRIM_AFTER_BYTES: u64 = 64 << 20;
const TRIM_INTERVAL_NS: u64 = 1_000_000_000;

fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[derive(Default)]
struct Counters {
    buffered_spans: AtomicU64,
    buffered_bytes: AtomicU64,
    buffered_traces: AtomicU64,
    ready_spans: AtomicU64,
    ready_bytes: AtomicU64,
    spans_received: AtomicU64,
    batches_refused: AtomicU64,
    duplicates_dropped: AtomicU64,
    conflicts_dropped: AtomicU64,
    late_forwarded: AtomicU64,
    late_dropped: AtomicU64,
    unassembled: AtomicU64,
    future_timestamps: AtomicU64,
}

fn add(a: &AtomicU64, v: u64) {
    if v != 0 {
        a.fetch_add(v, Ordering::Relaxed);
    }
}

fn sub(a: &AtomicU64, v: u64) {
    if v != 0 {
        a.fetch_sub(v, Ordering::Relaxed);
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Shard invariants are restored before any code that could panic returns; a poisoned
    // lock still holds usable data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Builds an engine after validating `cfg`.
    pub fn new(cfg: Config) -> Result<Engine, ConfigError> {
        cfg.validate()?;
        let n = cfg.effective_shards();
        let seed = {
            let s = std::collections::hash_map::RandomState::new();
            let mut h = s.build_hasher();
            h.write_u64(0x7c);
            h.finish()
        };
        let hasher = IdHashBuilder(seed);
        let per = |v: i64| (v as u64).div_ceil(n as u64).max(1);
        let limits = Limits {
            quiet: cfg.quiet_period_ns as u64,
            idle: cfg.idle_timeout_ns as u64,
            max_age: cfg.max_age_ns as u64,
            max_spans: per(cfg.max_buffered_spans),
            max_bytes: per(cfg.max_buffered_bytes),
            max_spans_per_trace: cfg.max_spans_per_trace as u64,
            late_cap: per(cfg.late_cache_size) as usize,
        };
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    traces: HashMap::with_hasher(hasher),
                    fifo: VecDeque::new(),
                    late: LateCache {
                        set: HashSet::with_hasher(hasher),
                        order: VecDeque::new(),
                        cap: limits.late_cap,
                    },
                    spans: 0,
                    bytes: 0,
                    next_gen: 0,
                })
            })
            .collect();
        let hlc = if cfg.hlc_enabled {
            let max_offset = cfg.hlc_max_offset_ns as u64;
            Some(match (cfg.hlc_restart, cfg.hlc_state_file.as_deref()) {
                (RestartStrategy::Persist, Some(path)) => {
                    Hlc::with_persisted_bound(max_offset, std::path::Path::new(path)).map_err(
                        |e| ConfigError(format!("hlc.state_file {path} cannot be used: {e}")),
                    )?
                }
                _ => Hlc::new(max_offset),
            })
        } else {
            None
        };
        let check_cfg = CheckConfig {
            enabled: FindingKind::ALL_MASK & !cfg.checks_disabled,
            child_tolerance_ns: cfg.child_tolerance_ns as u64,
            skew_correction: cfg.skew_correction,
            skew_max_adjustment_ns: cfg.skew_max_adjustment_ns as u64,
        };
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        Ok(Engine {
            cfg,
            check_cfg,
            limits,
            shards,
            hasher,
            hlc,
            ready_tx,
            ready_rx,
            shut_down: AtomicBool::new(false),
            c: Counters::default(),
            trim: TrimState::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn shard_of(&self, id: u128) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write_u128(id);
        ((h.finish() >> 32) % self.shards.len() as u64) as usize
    }

    /// Ingests the bytes of one `ExportTraceServiceRequest`. On error nothing was kept.
    pub fn ingest(&self, data: &[u8], now: u64) -> Result<IngestOutcome, IngestError> {
        if data.is_empty() {
            add(&self.c.batches_refused, 1);
            return Err(IngestError::Empty);
        }
        let mut batch = match scan_request(data) {
            Ok(b) => b,
            Err(e) => {
                add(&self.c.batches_refused, 1);
                return Err(IngestError::Malformed(e));
            }
        };
        if batch.spans.is_empty() {
            add(&self.c.batches_refused, 1);
            return Err(IngestError::NoSpans);
        }
        add(&self.c.spans_received, batch.spans.len() as u64);
        self.stamp(&mut batch.spans, now);

        let mut out = IngestOutcome::default();
        // Spans that cannot be assembled go out at once, with their finding.
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        let mut unassembled = Vec::new();
        for (i, s) in batch.spans.iter_mut().enumerate() {
            if !s.trace_id_valid {
                s.findings |= FindingKind::InvalidTraceId.bit() & self.check_cfg.enabled;
            }
            if !s.span_id_valid {
                s.findings |= FindingKind::InvalidSpanId.bit() & self.check_cfg.enabled;
            }
            if s.trace_id_valid && s.span_id_valid {
                by_shard[self.shard_of(u128::from_be_bytes(batch.trace_ids[i]))].push(i);
            } else {
                unassembled.push(i);
            }
        }
        if !unassembled.is_empty() {
            out.unassembled = unassembled.len() as u64;
            add(&self.c.unassembled, out.unassembled);
            let unit = self.unit_from(data, &batch.groups, &batch.spans, &unassembled, ReleaseReason::Unassembled);
            self.send(unit);
        }
        let shut_down = self.shut_down.load(Ordering::Acquire);
        for (si, idx) in by_shard.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let mut shard = lock(&self.shards[si]);
            let mut late = Vec::new();
            let mut touched: Vec<u128> = Vec::new();
            // Spans of one trace together (stable: arrival order kept), so each trace's
            // storage grows once per batch.
            let mut idx = idx.clone();
            let tid = |i: usize| u128::from_be_bytes(batch.trace_ids[i]);
            idx.sort_by_key(|&i| tid(i));
            let mut k = 0;
            while k < idx.len() {
                let id = tid(idx[k]);
                let mut j = k + 1;
                while j < idx.len() && tid(idx[j]) == id {
                    j += 1;
                }
                let run = &idx[k..j];
                k = j;
                if shard.late.set.contains(&id) {
                    late.extend_from_slice(run);
                    continue;
                }
                self.insert_run(&mut shard, id, run, &batch, data, now);
                touched.push(id);
                out.buffered += run.len() as u64;
            }
            if !late.is_empty() {
                match self.cfg.late_span_policy {
                    LateSpanPolicy::Forward => {
                        out.late_forwarded += late.len() as u64;
                        let unit = self.unit_from(data, &batch.groups, &batch.spans, &late, ReleaseReason::Late);
                        self.send(unit);
                    }
                    LateSpanPolicy::Drop => out.late_dropped += late.len() as u64,
                }
            }
            touched.sort_unstable();
            touched.dedup();
            for id in touched {
                let reason = if shut_down {
                    Some(ReleaseReason::Shutdown)
                } else {
                    shard
                        .traces
                        .get(&id)
                        .filter(|t| t.spans.len() as u64 >= self.limits.max_spans_per_trace)
                        .map(|_| ReleaseReason::SpanLimit)
                };
                if let Some(reason) = reason {
                    self.release(&mut shard, id, reason, now);
                }
            }
            self.enforce_limits(&mut shard, now);
        }
        add(&self.c.late_forwarded, out.late_forwarded);
        add(&self.c.late_dropped, out.late_dropped);
        out.ready_spans = self.c.ready_spans.load(Ordering::Relaxed);
        Ok(out)
    }

    /// Gives every span its HLC stamp and records clock findings, under one clock lock.
    fn stamp(&self, spans: &mut [SpanRec], now: u64) {
        let future = FindingKind::FutureTimestamp.bit() & self.check_cfg.enabled;
        let offset = FindingKind::HlcOffsetExceeded.bit() & self.check_cfg.enabled;
        let mut futures = 0u64;
        match &self.hlc {
            Some(hlc) => hlc.batch(now, |clock| {
                for s in spans.iter_mut() {
                    let mut remote: Option<Stamp> = None;
                    if let Some(up) = s.upstream_hlc() {
                        match clock.admit(up.wall) {
                            Ok(()) => remote = Some(up),
                            Err(_) => s.findings |= offset,
                        }
                    }
                    if s.end > 0 {
                        match clock.admit(s.end) {
                            Ok(()) => {
                                let end = Stamp { wall: s.end, logical: 0 };
                                remote = Some(remote.map_or(end, |r| r.max(end)));
                            }
                            Err(_) => {
                                s.findings |= future;
                                futures += 1;
                            }
                        }
                    }
                    let stamp = match remote {
                        Some(m) => clock.recv_admitted(m),
                        None => clock.now(),
                    };
                    s.set_hlc(stamp);
                }
            }),
            None => {
                let limit = now.saturating_add(self.cfg.hlc_max_offset_ns as u64);
                for s in spans.iter_mut() {
                    if s.end > limit {
                        s.findings |= future;
                        futures += 1;
                    }
                }
            }
        }
        add(&self.c.future_timestamps, futures);
    }

    /// Buffers the spans `run` (indexes into `batch`) of trace `id`.
    fn insert_run(&self, shard: &mut Shard, id: u128, run: &[usize], batch: &ScannedBatch, data: &[u8], now: u64) {
        let shard_ref = &mut *shard;
        let trace = shard_ref.traces.entry(id).or_insert_with(|| {
            let gen = shard_ref.next_gen;
            shard_ref.next_gen += 1;
            shard_ref.fifo.push_back((id, gen));
            add(&self.c.buffered_traces, 1);
            Trace {
                first_seen: now,
                last_seen: now,
                spans: Vec::new(),
                buf: Vec::new(),
                groups: Vec::new(),
                bytes: 0,
                state: Completeness::Unknown,
                gen,
            }
        });
        // Grow storage once for the whole run: exactly while the trace is small (no
        // doubling slack for the common trace), amortised once it is big (no quadratic
        // copying for giant traces).
        let need: usize = run.iter().map(|&i| batch.spans[i].len()).sum();
        if trace.buf.len() < EXACT_GROWTH_BYTES {
            trace.buf.reserve_exact(need);
        } else {
            trace.buf.reserve(need);
        }
        if trace.spans.len() < EXACT_GROWTH_SPANS {
            trace.spans.reserve_exact(run.len());
        } else {
            trace.spans.reserve(run.len());
        }
        let mut cost = 0u64;
        for &i in run {
            let s = &batch.spans[i];
            let group = &batch.groups[s.group as usize];
            let gi = match trace.groups.iter().position(|g| g.same_as(group)) {
                Some(i) => i,
                None => {
                    trace.groups.push(group.clone());
                    trace.groups.len() - 1
                }
            };
            let src = &data[s.bytes.start as usize..s.bytes.end as usize];
            let start = trace.buf.len() as u32;
            trace.buf.extend_from_slice(src);
            let mut rec = s.clone();
            rec.bytes = start..trace.buf.len() as u32;
            rec.group = gi as u32;
            rec.seq = trace.spans.len() as u32;
            trace.spans.push(rec);
            cost += src.len() as u64 + SPAN_OVERHEAD;
        }
        trace.bytes += cost;
        trace.last_seen = trace.last_seen.max(now);
        trace.state = Completeness::Unknown;
        shard.spans += run.len() as u64;
        shard.bytes += cost;
        add(&self.c.buffered_spans, run.len() as u64);
        add(&self.c.buffered_bytes, cost);
    }

    /// Releases oldest traces until the shard is within its limits.
    fn enforce_limits(&self, shard: &mut Shard, now: u64) {
        while shard.spans > self.limits.max_spans || shard.bytes > self.limits.max_bytes {
            let Some((id, gen)) = shard.fifo.pop_front() else { break };
            if shard.traces.get(&id).is_some_and(|t| t.gen == gen) {
                self.release(shard, id, ReleaseReason::MemoryPressure, now);
            }
        }
    }

    /// Moves a buffered trace to the ready queue.
    fn release(&self, shard: &mut Shard, id: u128, reason: ReleaseReason, now: u64) {
        let Some(trace) = shard.traces.remove(&id) else { return };
        let (spans, bytes) = trace.accounted();
        shard.spans -= spans;
        shard.bytes -= bytes;
        sub(&self.c.buffered_spans, spans);
        sub(&self.c.buffered_bytes, bytes);
        sub(&self.c.buffered_traces, 1);
        shard.late.insert(id);
        if shard.fifo.len() > 2 * shard.traces.len() + 64 {
            let traces = &shard.traces;
            shard.fifo.retain(|(id, gen)| traces.get(id).is_some_and(|t| t.gen == *gen));
        }
        let mut unit = Unit {
            reason,
            spans: trace.spans,
            buf: trace.buf,
            groups: trace.groups,
            age_ns: now.saturating_sub(trace.first_seen),
            bytes,
        };
        let dropped = dedupe_exact(&mut unit);
        add(&self.c.duplicates_dropped, dropped);
        self.send(unit);
    }

    fn send(&self, unit: Unit) {
        add(&self.c.ready_spans, unit.spans.len() as u64);
        add(&self.c.ready_bytes, unit.bytes);
        // The receiver lives as long as the engine: sending cannot fail.
        let _ = self.ready_tx.send(unit);
    }

    fn unit_from(&self, data: &[u8], groups: &[Group], spans: &[SpanRec], idx: &[usize], reason: ReleaseReason) -> Unit {
        let mut unit = Unit { reason, spans: Vec::with_capacity(idx.len()), buf: Vec::new(), groups: Vec::new(), age_ns: 0, bytes: 0 };
        let mut map: Vec<Option<u32>> = vec![None; groups.len()];
        for (seq, &i) in idx.iter().enumerate() {
            let s = &spans[i];
            let src = &data[s.bytes.start as usize..s.bytes.end as usize];
            let g = s.group as usize;
            let gi = *map[g].get_or_insert_with(|| {
                unit.groups.push(groups[g].clone());
                (unit.groups.len() - 1) as u32
            });
            let start = unit.buf.len() as u32;
            unit.buf.extend_from_slice(src);
            let mut rec = s.clone();
            rec.bytes = start..unit.buf.len() as u32;
            rec.group = gi;
            rec.seq = seq as u32;
            unit.bytes += src.len() as u64 + SPAN_OVERHEAD;
            unit.spans.push(rec);
        }
        unit
    }

    /// Releases what is due at `now`: complete and quiet traces, idle ones, old ones.
    /// Returns the number of spans waiting in the ready queue.
    pub fn tick(&self, now: u64) -> u64 {
        for m in self.shards.iter() {
            let mut shard = lock(m);
            // (generation, id, reason): released in order of first arrival.
            let mut due: Vec<(u64, u128, ReleaseReason)> = Vec::new();
            for (&id, t) in shard.traces.iter_mut() {
                if now.saturating_sub(t.first_seen) >= self.limits.max_age {
                    due.push((t.gen, id, ReleaseReason::MaxAge));
                    continue;
                }
                let quiet = now.saturating_sub(t.last_seen);
                if quiet < self.limits.quiet {
                    continue;
                }
                if t.state == Completeness::Unknown {
                    t.state = if is_complete(&t.spans) { Completeness::Complete } else { Completeness::Incomplete };
                }
                if t.state == Completeness::Complete {
                    due.push((t.gen, id, ReleaseReason::Complete));
                } else if quiet >= self.limits.idle {
                    due.push((t.gen, id, ReleaseReason::IdleTimeout));
                }
            }
            due.sort_unstable_by_key(|d| d.0);
            for (_, id, reason) in due {
                self.release(&mut shard, id, reason, now);
            }
        }
        self.maybe_trim(now);
        self.c.ready_spans.load(Ordering::Relaxed)
    }

    /// Returns freed memory to the OS when enough was released since the last time.
    fn maybe_trim(&self, now: u64) {
        if self.trim.released_bytes.load(Ordering::Relaxed) < TRIM_AFTER_BYTES {
            return;
        }
        let last = self.trim.last_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) < TRIM_INTERVAL_NS
            || self.trim.last_ns.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        self.trim.released_bytes.store(0, Ordering::Relaxed);
        self.trim.trims.fetch_add(1, Ordering::Relaxed);
        release_free_memory();
    }

    /// How many times freed memory was handed back to the OS.
    pub fn memory_trims(&self) -> u64 {
        self.trim.trims.load(Ordering::Relaxed)
    }

    /// Releases everything buffered with reason `shutdown`; later ingests are released at
    /// once with the same reason. Drain afterwards until empty.
    pub fn shutdown(&self, now: u64) -> u64 {
        self.shut_down.store(true, Ordering::Release);
        for m in self.shards.iter() {
            let mut shard = lock(m);
            let ids: Vec<u128> = shard.fifo.iter().map(|(id, _)| *id).collect();
            for id in ids {
                self.release(&mut shard, id, ReleaseReason::Shutdown, now);
            }
            let rest: Vec<u128> = shard.traces.keys().copied().collect();
            for id in rest {
                self.release(&mut shard, id, ReleaseReason::Shutdown, now);
            }
        }
        self.c.ready_spans.load(Ordering::Relaxed)
    }

    /// Takes released units (whole; at least one if any is ready) up to about `max_spans`
    /// spans, runs the checks, and encodes them as one `ExportTraceServiceRequest`.
    /// `None` when nothing is ready.
    pub fn drain(&self, max_spans: u64) -> Option<Release> {
        let mut units = Vec::new();
        let mut spans = 0u64;
        while spans < max_spans.max(1) {
            match self.ready_rx.try_recv() {
                Ok(u) => {
                    spans += u.spans.len() as u64;
                    sub(&self.c.ready_spans, u.spans.len() as u64);
                    sub(&self.c.ready_bytes, u.bytes);
                    add(&self.trim.released_bytes, u.bytes);
                    units.push(u);
                }
                Err(_) => break,
            }
        }
        if units.is_empty() {
            return None;
        }
        Some(self.emit(units))
    }

    fn emit(&self, mut units: Vec<Unit>) -> Release {
        let mut release = Release::default();
        let mut finding_counts: HashMap<(FindingKind, String), u64> = HashMap::new();
        let mut plans: Vec<UnitPlan> = Vec::with_capacity(units.len());
        for unit in units.iter_mut() {
            let report = if unit.reason.is_trace_release() {
                check_trace(&unit.spans, &unit.groups, &self.check_cfg)
            } else {
                TraceReport {
                    span_findings: unit.spans.iter().map(|s| s.findings).collect(),
                    trace_findings: unit.spans.iter().fold(0, |a, s| a | s.findings),
                    summary_span: usize::MAX,
                    ..Default::default()
                }
            };
            if !report.skew_adjustments.is_empty() {
                for (s, &d) in unit.spans.iter().zip(&report.skew_adjustments) {
                    if d != 0 {
                        let r = s.bytes.start as usize..s.bytes.end as usize;
                        shift_span_times(&mut unit.buf[r], d);
                    }
                }
            }
            let keep = self.resolve_conflicts(unit, &report);
            // Metrics: per span kinds by service; trace-only kinds once per trace.
            let mut span_kinds = 0u32;
            for (i, &f) in report.span_findings.iter().enumerate() {
                span_kinds |= f;
                if f != 0 {
                    let svc = &unit.groups[unit.spans[i].group as usize].resource.service;
                    for k in FindingKind::iter_mask(f) {
                        *finding_counts.entry((k, svc.clone())).or_default() += 1;
                    }
                }
            }
            let trace_only = report.trace_findings & !span_kinds;
            if trace_only != 0 {
                let i = report.summary_span.min(unit.spans.len() - 1);
                let svc = &unit.groups[unit.spans[i].group as usize].resource.service;
                for k in FindingKind::iter_mask(trace_only) {
                    *finding_counts.entry((k, svc.clone())).or_default() += 1;
                }
            }
            release.units.push(ReleasedInfo {
                reason: unit.reason,
                spans: keep.iter().filter(|&&k| k).count() as u32,
                age_ns: unit.age_ns,
                findings: report.trace_findings,
            });
            plans.push(UnitPlan { report, keep });
        }
        let mut findings: Vec<FindingCount> = finding_counts
            .into_iter()
            .map(|((kind, service), count)| FindingCount { kind, service, count })
            .collect();
        findings.sort_by(|a, b| (a.kind, &a.service).cmp(&(b.kind, &b.service)));
        release.findings = findings;
        let (otlp, spans) = self.encode(&units, &plans);
        release.otlp = otlp;
        release.spans = spans;
        release
    }

    /// Applies the `keep_latest` duplicate policy: among spans flagged as conflicting with one
    /// span ID, keep the one with the greatest HLC stamp (then arrival order).
    fn resolve_conflicts(&self, unit: &Unit, report: &TraceReport) -> Vec<bool> {
        let mut keep = vec![true; unit.spans.len()];
        if self.cfg.duplicate_policy != DuplicatePolicy::KeepLatest {
            return keep;
        }
        let bit = FindingKind::ConflictingSpanId.bit();
        let mut best: HashMap<u64, usize> = HashMap::new();
        for (i, s) in unit.spans.iter().enumerate() {
            if report.span_findings[i] & bit == 0 {
                continue;
            }
            match best.get(&s.span_id) {
                Some(&j) if (unit.spans[j].hlc(), unit.spans[j].seq) >= (s.hlc(), s.seq) => keep[i] = false,
                Some(&j) => {
                    keep[j] = false;
                    best.insert(s.span_id, i);
                }
                None => {
                    best.insert(s.span_id, i);
                }
            }
        }
        let dropped = keep.iter().filter(|k| !**k).count() as u64;
        add(&self.c.conflicts_dropped, dropped);
        keep
    }

    /// Encodes units as one request, grouping spans by resource and scope.
    fn encode(&self, units: &[Unit], plans: &[UnitPlan]) -> (Vec<u8>, u64) {
        // Extra attribute bytes per span, in one scratch buffer.
        let mut extra: Vec<u8> = Vec::new();
        // (unit, span, extra range, out len)
        struct Item {
            unit: u32,
            span: u32,
            extra: std::ops::Range<usize>,
            len: usize,
        }
        // Resource index -> scopes; scope -> items.
        let mut resources: Vec<(Group, Vec<usize>)> = Vec::new();
        let mut scopes: Vec<(Group, Vec<Item>)> = Vec::new();
        let mut res_lookup: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut scope_lookup: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
        let mut total_spans = 0u64;
        for (ui, (unit, plan)) in units.iter().zip(plans).enumerate() {
            // Map each of the unit's groups to an output scope once.
            let mut scope_of: Vec<Option<usize>> = vec![None; unit.groups.len()];
            for (si, s) in unit.spans.iter().enumerate() {
                if !plan.keep[si] {
                    continue;
                }
                let g = s.group as usize;
                let sc = match scope_of[g] {
                    Some(sc) => sc,
                    None => {
                        let group = &unit.groups[g];
                        let ri = {
                            let cands = res_lookup.entry(group.resource.hash).or_default();
                            match cands.iter().copied().find(|&r| resources[r].0.resource.header == group.resource.header) {
                                Some(r) => r,
                                None => {
                                    resources.push((group.clone(), Vec::new()));
                                    cands.push(resources.len() - 1);
                                    resources.len() - 1
                                }
                            }
                        };
                        let cands = scope_lookup.entry((ri, group.scope.hash)).or_default();
                        let sc = match cands.iter().copied().find(|&c| scopes[c].0.scope.header == group.scope.header) {
                            Some(c) => c,
                            None => {
                                scopes.push((group.clone(), Vec::new()));
                                resources[ri].1.push(scopes.len() - 1);
                                cands.push(scopes.len() - 1);
                                scopes.len() - 1
                            }
                        };
                        scope_of[g] = Some(sc);
                        sc
                    }
                };
                let start = extra.len();
                self.span_attributes(&mut extra, unit, plan, si);
                let stripped: usize = s.strip().iter().map(|r| (r.end - r.start) as usize).sum();
                let len = s.len() - stripped + (extra.len() - start);
                scopes[sc].1.push(Item { unit: ui as u32, span: si as u32, extra: start..extra.len(), len });
                total_spans += 1;
            }
        }
        // Sizes.
        let scope_len: Vec<usize> = scopes
            .iter()
            .map(|(g, items)| g.scope.header.len() + items.iter().map(|it| wire::len_field_size(2, it.len)).sum::<usize>())
            .collect();
        let res_len: Vec<usize> = resources
            .iter()
            .map(|(g, sc)| g.resource.header.len() + sc.iter().map(|&c| wire::len_field_size(2, scope_len[c])).sum::<usize>())
            .collect();
        let total: usize = res_len.iter().map(|&l| wire::len_field_size(1, l)).sum();
        let mut out = Vec::with_capacity(total);
        for (ri, (g, sc)) in resources.iter().enumerate() {
            wire::put_len_header(&mut out, 1, res_len[ri]);
            out.extend_from_slice(&g.resource.header);
            for &c in sc {
                wire::put_len_header(&mut out, 2, scope_len[c]);
                out.extend_from_slice(&scopes[c].0.scope.header);
                for it in &scopes[c].1 {
                    let unit = &units[it.unit as usize];
                    let s = &unit.spans[it.span as usize];
                    wire::put_len_header(&mut out, 2, it.len);
                    let bytes = &unit.buf[s.bytes.start as usize..s.bytes.end as usize];
                    let mut pos = 0usize;
                    for r in s.strip() {
                        out.extend_from_slice(&bytes[pos..r.start as usize]);
                        pos = r.end as usize;
                    }
                    out.extend_from_slice(&bytes[pos..]);
                    out.extend_from_slice(&extra[it.extra.clone()]);
                }
            }
        }
        debug_assert_eq!(out.len(), total);
        (out, total_spans)
    }

    /// Appends the attributes this engine writes on one span (as `Span` field 9 entries).
    fn span_attributes(&self, out: &mut Vec<u8>, unit: &Unit, plan: &UnitPlan, i: usize) {
        let s = &unit.spans[i];
        if s.hlc_wall != 0 {
            let h = s.hlc();
            let mut buf = [0u8; STAMP_STR_LEN];
            h.write_to(&mut buf);
            wire::put_kv(out, 9, ATTR_HLC, &AnyValueRef::Str(std::str::from_utf8(&buf).unwrap_or_default()));
            if let Some(up) = s.upstream_hlc() {
                up.write_to(&mut buf);
                wire::put_kv(out, 9, "consistency.hlc.upstream", &AnyValueRef::Str(std::str::from_utf8(&buf).unwrap_or_default()));
            }
        }
        if !self.cfg.write_attributes {
            return;
        }
        let report = &plan.report;
        let f = report.span_findings.get(i).copied().unwrap_or(s.findings);
        if f != 0 {
            let names: Vec<&str> = FindingKind::iter_mask(f).map(FindingKind::name).collect();
            wire::put_kv(out, 9, "consistency.span.findings", &AnyValueRef::StrArray(&names));
        }
        if let Some(&d) = report.skew_adjustments.get(i) {
            if d != 0 {
                wire::put_kv(out, 9, "consistency.span.skew_adjustment_ns", &AnyValueRef::Int(d));
            }
        }
        for bad in s.bad_ids() {
            let key = match bad.field {
                1 => "consistency.span.original_trace_id",
                2 => "consistency.span.original_span_id",
                _ => "consistency.span.original_parent_span_id",
            };
            wire::put_kv(out, 9, key, &AnyValueRef::Str(&hex(&bad.original)));
        }
        match unit.reason {
            ReleaseReason::Late => wire::put_kv(out, 9, "consistency.span.late", &AnyValueRef::Bool(true)),
            reason if reason.is_trace_release() && i == report.summary_span => {
                wire::put_kv(out, 9, "consistency.trace.release_reason", &AnyValueRef::Str(reason.name()));
                let kept = plan.keep.iter().filter(|k| **k).count();
                wire::put_kv(out, 9, "consistency.trace.span_count", &AnyValueRef::Int(kept as i64));
                let status = if report.trace_findings == 0 { "consistent" } else { "inconsistent" };
                wire::put_kv(out, 9, "consistency.trace.status", &AnyValueRef::Str(status));
                if report.trace_findings != 0 {
                    let names: Vec<&str> = FindingKind::iter_mask(report.trace_findings).map(FindingKind::name).collect();
                    wire::put_kv(out, 9, "consistency.trace.findings", &AnyValueRef::StrArray(&names));
                }
                if !report.missing_parents.is_empty() {
                    let ids: Vec<String> = report.missing_parents.iter().map(|p| hex(&p.to_be_bytes())).collect();
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    wire::put_kv(out, 9, "consistency.trace.missing_parent_ids", &AnyValueRef::StrArray(&refs));
                }
            }
            _ => {}
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            buffered_spans: l(&self.c.buffered_spans),
            buffered_bytes: l(&self.c.buffered_bytes),
            buffered_traces: l(&self.c.buffered_traces),
            ready_spans: l(&self.c.ready_spans),
            ready_bytes: l(&self.c.ready_bytes),
            spans_received: l(&self.c.spans_received),
            batches_refused: l(&self.c.batches_refused),
            duplicates_dropped: l(&self.c.duplicates_dropped),
            conflicts_dropped: l(&self.c.conflicts_dropped),
            late_forwarded: l(&self.c.late_forwarded),
            late_dropped: l(&self.c.late_dropped),
            unassembled: l(&self.c.unassembled),
            future_timestamps: l(&self.c.future_timestamps),
            hlc: self.hlc.as_ref().map(Hlc::stats).unwrap_or_default(),
        }
    }

    /// The HLC's last stamp (for tests and restarts).
    pub fn hlc_last(&self) -> Option<Stamp> {
        self.hlc.as_ref().map(Hlc::last)
    }
}

struct UnitPlan {
    report: TraceReport,
    keep: Vec<bool>,
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// One root (counting a span ID once) and every referenced parent present.
fn is_complete(spans: &[SpanRec]) -> bool {
    let mut ids: Vec<u64> = spans.iter().map(|s| s.span_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut roots: Vec<u64> = spans.iter().filter(|s| s.is_root()).map(|s| s.span_id).collect();
    roots.sort_unstable();
    roots.dedup();
    roots.len() == 1 && spans.iter().all(|s| s.is_root() || ids.binary_search(&s.parent_id).is_ok())
}

/// Removes exact duplicates (same span ID and identical bytes) from a released unit, keeping
/// the first arrival. Returns how many were removed.
fn dedupe_exact(unit: &mut Unit) -> u64 {
    let n = unit.spans.len();
    if n < 2 {
        return 0;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (unit.spans[i].span_id, unit.spans[i].seq));
    let mut drop = vec![false; n];
    // Content as it will be emitted: without our own attributes from an upstream collector
    // (a retry forwarded late by an upstream tier differs only in those).
    let bytes = |s: &SpanRec| -> std::borrow::Cow<'_, [u8]> {
        let raw = &unit.buf[s.bytes.start as usize..s.bytes.end as usize];
        if s.strip().is_empty() {
            return std::borrow::Cow::Borrowed(raw);
        }
        let mut kept = Vec::with_capacity(raw.len());
        let mut pos = 0;
        for r in s.strip() {
            kept.extend_from_slice(&raw[pos..r.start as usize]);
            pos = r.end as usize;
        }
        kept.extend_from_slice(&raw[pos..]);
        std::borrow::Cow::Owned(kept)
    };
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && unit.spans[order[j]].span_id == unit.spans[order[i]].span_id {
            j += 1;
        }
        for a in i..j {
            if drop[order[a]] {
                continue;
            }
            for b in a + 1..j {
                if !drop[order[b]] && bytes(&unit.spans[order[a]]) == bytes(&unit.spans[order[b]]) {
                    drop[order[b]] = true;
                }
            }
        }
        i = j;
    }
    let dropped = drop.iter().filter(|d| **d).count();
    if dropped == 0 {
        return 0;
    }
    let mut k = 0;
    unit.spans.retain(|_| {
        let keep = !drop[k];
        k += 1;
        keep
    });
    for (seq, s) in unit.spans.iter_mut().enumerate() {
        s.seq = seq as u32;
    }
    unit.bytes -= dropped as u64 * SPAN_OVERHEAD;
    dropped as u64
}

/// Shifts a span's start, end and event times by `delta` ns, in place (fixed64 fields keep
/// their width, so no length changes). Malformed input is left as is.
pub fn shift_span_times(span: &mut [u8], delta: i64) {
    let mut patches: Vec<usize> = Vec::new();
    for f in wire::Fields::new(span, 0) {
        let Ok(f) = f else { return };
        match (f.number, &f.value) {
            (7 | 8, wire::Value::I64(_)) => patches.push(f.span.end - 8),
            (11, wire::Value::Len(r)) => {
                for g in wire::Fields::new(&span[r.clone()], 0) {
                    let Ok(g) = g else { return };
                    if let (1, wire::Value::I64(_)) = (g.number, &g.value) {
                        patches.push(r.start + g.span.end - 8);
                    }
                }
            }
            _ => {}
        }
    }
    for p in patches {
        let v = u64::from_le_bytes(span[p..p + 8].try_into().unwrap());
        let shifted = (i128::from(v) + i128::from(delta)).clamp(0, i128::from(u64::MAX)) as u64;
        span[p..p + 8].copy_from_slice(&shifted.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
