//! The tail-assembly engine: sharded buffering by trace ID, release on completeness or
//! timeouts, memory bounded in bytes with early release and backpressure, late-span
//! recognition, HLC stamping at ingest, and emission of annotated OTLP on drain.
//!
//! Lifecycle of a trace (docs/DESIGN.md, "Lifecycle"):
//! ```text
//!   collecting ──(one root, every parent present, quiet_period without new spans)──▶ released: complete
//!       │  └──(no new span for idle_timeout)─────────────────────────────────────▶ released: idle_timeout
//!       ├──(max_age since first span)────────────────────────────────────────────▶ released: max_age
//!       ├──(the memory bound would be exceeded; oldest first)────────────────────▶ released: memory_pressure
//!       ├──(max_spans_per_trace reached)─────────────────────────────────────────▶ released: span_limit
//!       └──(shutdown)────────────────────────────────────────────────────────────▶ released: shutdown
//!   released ──(span arrives for it: recognised through the late cache)──▶ forwarded at once, late
//! ```
//! Released traces wait in a ready queue until the caller drains them; duplicate policies,
//! checks and encoding run on drain ([`emit`]), outside every shard lock.
//!
//! Modules: [`shard`] (buffering and the trace lifecycle), [`unit`] (what waits in the ready
//! queue), [`dedupe`] (duplicate policies), [`emit`] (checks and encoding), [`intern`]
//! (shared resource and scope entries), [`memory`] (what memory costs), [`stats`].
//!
//! Cost: every step is at most `O(k log k)` in the `k` spans, groups or IDs it touches;
//! trace IDs and span contents are hashed with aHash under per-process random keys (a hash
//! built to resist hash flooding, several times faster than SipHash on these sizes), so
//! crafted IDs cannot pile into one bucket or one shard.
//!
//! Thread-safety: every method takes `&self`; `Engine` is `Send + Sync`. Time is always passed
//! in, so tests inject it: two clocks ([`Clocks`]), the wall clock for HLC stamps and a
//! monotonic one for every timer, so that a step of the host clock neither holds traces
//! past `max_age` nor releases them early.

mod dedupe;
mod emit;
mod expect;
mod handoff;
mod intern;
pub mod memory;
mod shard;
pub mod stats;
mod unit;

use ahash::RandomState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};
use std::collections::HashSet;
use std::sync::Arc;

use crate::wal::record::{Key, SpanStamp};
use crate::wal::{AppendError, Wal, WalConfig};

use crate::checks::CheckConfig;
use crate::config::{Config, ConfigError, LateSpanPolicy, RestartStrategy};
use crate::findings::{FindingKind, ReleaseReason};
use crate::hlc::{stamp_batch, Hlc, PersistStart, Stalled, Stamp};
use crate::index::scan_request;
use crate::wire::WireError;

use emit::Emitter;
use handoff::Handoff;
use intern::Interner;
use memory::Trim;
use shard::Shard;
use stats::{stat, Counters};
use unit::Unit;

pub use stats::Stats;

/// The time of an engine call, on two clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clocks {
    /// The wall clock, Unix nanoseconds: HLC stamps and `hlc.state_file`'s bound.
    pub wall: u64,
    /// A monotonic clock, nanoseconds from any fixed origin (the same for the engine's
    /// life): the quiet period, idle timeout, max age, release ages, the trim interval.
    pub mono: u64,
}

impl Clocks {
    /// One reading for both clocks (tests, and callers without a monotonic clock).
    pub fn same(now: u64) -> Clocks {
        Clocks { wall: now, mono: now }
    }
}

/// Why a batch was refused as a whole (nothing of it was kept).
#[derive(Debug, PartialEq, Eq)]
pub enum IngestError {
    /// A zero-length buffer.
    Empty,
    /// A request with no spans.
    NoSpans,
    /// Not a valid `ExportTraceServiceRequest`.
    Malformed(WireError),
    /// The memory bound is reached by data that has not left yet (released, not drained):
    /// retry later.
    Full { held: u64, bound: u64 },
    /// The batch's HLC stamps would pass the bound last written to `hlc.state_file`, and the
    /// bound cannot be written (`restart_strategy: persist`): retry later.
    ClockStalled(Stalled),
    /// The write-ahead log could not take the batch (at `wal.max_bytes`, disk full, an I/O
    /// error): retry later. Nothing was kept or acknowledged.
    Wal(String),
    /// The batch alone is larger than the write-ahead log can ever hold (`wal.max_bytes`) or
    /// than a record may be: it can never be logged (a permanent refusal).
    TooLarge(String),
}

impl From<AppendError> for IngestError {
    fn from(e: AppendError) -> IngestError {
        match e {
            AppendError::TooLarge { .. } => IngestError::TooLarge(e.to_string()),
            _ => IngestError::Wal(e.to_string()),
        }
    }
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngestError::Empty => f.write_str("empty input: a zero-length buffer holds no spans"),
            IngestError::NoSpans => f.write_str("empty batch: the request holds no spans"),
            IngestError::Malformed(e) => write!(f, "not an OTLP ExportTraceServiceRequest: {e}"),
            IngestError::Full { held, bound } => write!(
                f,
                "engine memory full ({held} bytes held by data waiting to leave, max_buffered_bytes {bound}): retry later"
            ),
            IngestError::ClockStalled(e) => write!(f, "{e}: retry later"),
            IngestError::Wal(e) => write!(f, "{e}: retry later"),
            IngestError::TooLarge(e) => f.write_str(e),
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
    /// Exact re-sends of spans already released with their trace, dropped.
    pub resent: u64,
    /// Spans waiting in the ready queue after this call.
    pub ready_spans: u64,
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
    /// With a write-ahead log: acknowledge the release with [`Engine::delivered`] once
    /// downstream accepted it (or it was counted as lost). 0: nothing to acknowledge.
    pub token: u64,
}

/// What [`Engine::recover`] replayed from the write-ahead log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    pub batches: u64,
    pub spans: u64,
    pub traces: u64,
    pub corrupt_records: u64,
    pub torn_records: u64,
    /// Replayed spans handed out before the restart and not acknowledged.
    pub redelivered_spans: u64,
    /// Batch records that no longer scan (counted, skipped).
    pub unreadable_batches: u64,
    /// One line per problem found, naming the file.
    pub problems: Vec<String>,
    /// The replay paused because released data fills `max_buffered_bytes`: drain the queues,
    /// then call [`Engine::recover`] again. The counts so far are in this report; the last
    /// call's report has them all.
    pub more: bool,
}

/// A replay in progress: the log read one segment at a time, and the report so far.
struct Replaying {
    log: crate::wal::Replayer,
    rep: Recovery,
    /// Trace IDs with replayed spans.
    traces: HashSet<u128>,
    spans_before: u64,
    redelivered_before: u64,
}

impl Replaying {
    fn memory_bytes(&self) -> u64 {
        self.log.memory_bytes() + self.traces.capacity() as u64 * memory::set_slot::<u128>()
    }
}

/// What one shard's part of an ingest did with spans of released traces.
#[derive(Default)]
struct LateRuns {
    /// Late spans (indexes into the batch).
    spans: Vec<u32>,
    /// Traces with late spans.
    traces: Vec<u128>,
    /// Traces whose spans were all exact re-sends (dropped).
    resolved: Vec<u128>,
}

/// A batch being replayed from the write-ahead log.
struct Replay<'a> {
    pos: u64,
    stamps: &'a [SpanStamp],
    delivered: &'a HashSet<u128>,
    in_flight: &'a HashSet<u128>,
    /// Collects the trace IDs replayed.
    traces: &'a mut HashSet<u128>,
}

/// Time limits, in nanoseconds, and the global bounds.
#[derive(Clone, Debug)]
struct Limits {
    quiet_period_ns: u64,
    idle_timeout_ns: u64,
    max_age_ns: u64,
    max_buffered_spans: u64,
    max_buffered_bytes: u64,
    max_spans_per_trace: u64,
    /// The most span bytes one trace may hold: its records address them with `u32`
    /// offsets. [`MAX_TRACE_SPAN_BYTES`]; smaller in tests.
    max_trace_span_bytes: u64,
}

/// Span records address their bytes with `u32` offsets: a trace about to hold more is
/// released (reason `span_limit`) first, and a batch may not be larger.
const MAX_TRACE_SPAN_BYTES: u64 = u32::MAX as u64;

/// Units taken from a queue by a drain, until the release holding them is handed out. On
/// every way out their spans and bytes leave the ready counters (which throttle ingest). If
/// the drain unwinds first (a bug in the checks or the encoder), the units are gone: their
/// spans are counted in `drain_lost_spans` and their write-ahead log keys resolved, so that
/// the log does not keep them forever and a restart does not replay what would fail again.
struct Taken<'a> {
    engine: &'a Engine,
    spans: u64,
    bytes: u64,
    keys: Vec<Key>,
    handed_out: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let e = self.engine;
        e.c.sub(stat!(ready_spans), self.spans);
        e.c.sub(stat!(ready_bytes), self.bytes);
        e.trim.released(self.bytes);
        if self.handed_out {
            return;
        }
        e.c.add(stat!(drain_lost_spans), self.spans);
        if let Some(w) = &e.wal {
            w.resolve(&self.keys);
        }
    }
}

/// The engine. See the module documentation.
pub struct Engine {
    cfg: Config,
    limits: Limits,
    shards: Box<[Mutex<Shard>]>,
    /// Keyed hash of trace IDs to shards.
    shard_key: RandomState,
    interner: Interner,
    hlc: Option<Hlc>,
    enabled_checks: u32,
    emitter: Emitter,
    ready_tx: Sender<Unit>,
    ready_rx: Receiver<Unit>,
    shut_down: AtomicBool,
    c: Counters,
    trim: Trim,
    wal: Option<Arc<Wal>>,
    /// What opening the log found, until [`Engine::recover`] replayed all of it.
    to_replay: Mutex<Option<Replaying>>,
    /// Bytes the replay in progress holds ([`Replaying::memory_bytes`]).
    replay_bytes: std::sync::atomic::AtomicU64,
    handoff: Handoff,
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
        let limits = Limits {
            quiet_period_ns: cfg.quiet_period_ns as u64,
            idle_timeout_ns: cfg.idle_timeout_ns as u64,
            max_age_ns: cfg.max_age_ns as u64,
            max_buffered_spans: cfg.max_buffered_spans as u64,
            max_buffered_bytes: cfg.max_buffered_bytes as u64,
            max_spans_per_trace: cfg.max_spans_per_trace as u64,
            max_trace_span_bytes: MAX_TRACE_SPAN_BYTES,
        };
        // The late cache is a cache: its count is split between the shards, and it may take
        // at most an eighth of the memory bound.
        let late_cap = (cfg.late_cache_size as u64).min(cfg.max_buffered_bytes as u64 / 8 / memory::LATE_ENTRY_BYTES);
        let late_cap = (late_cap as usize).div_ceil(n).max(1);
        let late_byte_cap = (cfg.max_buffered_bytes as u64 / 8).div_ceil(n as u64);
        let shards = (0..n).map(|_| Mutex::new(Shard::new(late_cap, late_byte_cap))).collect();
        let hlc = if cfg.hlc_enabled {
            let max_offset = cfg.hlc_max_offset_ns as u64;
            Some(match (cfg.hlc_restart, cfg.hlc_state_file.as_deref()) {
                (RestartStrategy::Persist, Some(path)) => {
                    // The wall clock, read here only: to refuse a bound absurdly far ahead.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    Hlc::with_persisted_bound(max_offset, std::path::Path::new(path), now).map_err(
                        |e| ConfigError(format!("hlc.state_file {path} cannot be used: {e}")),
                    )?
                }
                _ => Hlc::new(max_offset),
            })
        } else {
            None
        };
        let enabled_checks = FindingKind::ALL_MASK & !cfg.checks_disabled;
        let emitter = Emitter {
            check_cfg: CheckConfig {
                enabled: enabled_checks,
                child_tolerance_ns: cfg.child_tolerance_ns as u64,
                skew_correction: cfg.skew_correction,
                skew_max_adjustment_ns: cfg.skew_max_adjustment_ns as u64,
            },
            write_attributes: cfg.write_attributes,
            handoff_key: cfg.handoff_key().map(handoff::ProofKey::derive),
            duplicate_policy: cfg.duplicate_policy,
            dedupe_key: RandomState::new(),
            #[cfg(test)]
            panic_next: Default::default(),
        };
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let (wal, opened) = match cfg.wal_directory.as_deref().filter(|d| !d.is_empty()) {
            Some(dir) => {
                let (wal, opened) = Wal::open(WalConfig {
                    directory: dir.into(),
                    sync: cfg.wal_sync,
                    sync_interval: std::time::Duration::from_nanos(cfg.wal_sync_interval_ns as u64),
                    max_bytes: cfg.wal_max_bytes as u64,
                    // Bounded as the state file's bound is: a stamp further ahead is damage.
                    stamp_limit: if hlc.is_some() {
                        crate::wal::wall_now().saturating_add(cfg.hlc_max_offset_ns as u64).saturating_add(crate::hlc::MAX_BOUND_AHEAD_NS)
                    } else {
                        u64::MAX
                    },
                })
                .map_err(ConfigError)?;
                // The clock starts above every stamp it gave before the restart.
                if let (Some(h), Some((wall, logical))) = (&hlc, opened.top_stamp) {
                    h.advance_to(Stamp { wall, logical });
                }
                let replaying = Replaying {
                    log: opened.replay,
                    rep: Recovery {
                        records: opened.records,
                        corrupt_records: opened.corrupt_records,
                        torn_records: opened.torn_records,
                        problems: opened.problems,
                        ..Recovery::default()
                    },
                    traces: HashSet::new(),
                    spans_before: 0,
                    redelivered_before: 0,
                };
                (Some(Arc::new(wal)), Some(replaying))
            }
            None => (None, None),
        };
        let handoff = Handoff::new(&cfg);
        let engine = Engine {
            cfg,
            limits,
            shards,
            shard_key: RandomState::new(),
            interner: Interner::new(),
            hlc,
            enabled_checks,
            emitter,
            ready_tx,
            ready_rx,
            shut_down: AtomicBool::new(false),
            c: Counters::default(),
            trim: Trim::default(),
            wal,
            to_replay: Mutex::new(opened),
            replay_bytes: Default::default(),
            handoff,
        };
        for m in engine.shards.iter() {
            engine.sync(&mut lock(m));
        }
        Ok(engine)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn shard_of(&self, id: u128) -> usize {
        ((self.shard_key.hash_one(id) >> 32) % self.shards.len() as u64) as usize
    }

    /// Bytes held outside buffered traces that only leave when drained or freed: ready
    /// units, shared entries, the late caches.
    fn held_outside_traces(&self) -> u64 {
        self.c.get(stat!(ready_bytes)) + self.interner.bytes() + self.c.get(stat!(memory_late_cache_bytes)) + self.wal_memory()
    }

    /// The log's bookkeeping, and while replaying, what the replay holds.
    fn wal_memory(&self) -> u64 {
        self.wal.as_ref().map_or(0, |w| w.memory_bytes()) + self.replay_bytes.load(Ordering::Relaxed)
    }

    /// Ingests the bytes of one `ExportTraceServiceRequest`. On error nothing was kept. With a
    /// write-ahead log, the batch is in it (on disk with `wal.sync: batch`) before this
    /// returns `Ok`.
    ///
    /// `now` is both clocks' reading ([`Clocks::same`]); see [`Engine::ingest_at`].
    pub fn ingest(&self, data: &[u8], now: u64) -> Result<IngestOutcome, IngestError> {
        self.ingest_with(data, Clocks::same(now), None)
    }

    /// [`Engine::ingest`] at `now` on each clock: stamps from the wall clock, timers from the
    /// monotonic one.
    pub fn ingest_at(&self, data: &[u8], now: Clocks) -> Result<IngestOutcome, IngestError> {
        self.ingest_with(data, now, None)
    }

    fn ingest_with(&self, data: &[u8], clocks: Clocks, replay: Option<Replay<'_>>) -> Result<IngestOutcome, IngestError> {
        // Timers run on the monotonic clock; only the HLC reads the wall clock.
        let now = clocks.mono;
        if data.is_empty() {
            self.c.add(stat!(batches_refused), 1);
            return Err(IngestError::Empty);
        }
        if data.len() as u64 > self.limits.max_trace_span_bytes {
            // The index addresses a batch's span bytes with `u32` offsets too.
            self.c.add(stat!(batches_refused), 1);
            return Err(IngestError::TooLarge(format!(
                "batch of {} bytes is larger than a batch may be ({} bytes)",
                data.len(),
                self.limits.max_trace_span_bytes
            )));
        }
        // Backpressure: when the data that cannot be released early (it is released already)
        // fills the bound, the caller must wait for drains rather than grow memory. (Replay
        // pauses before that point instead: `recover`.)
        let held = self.held_outside_traces();
        if replay.is_none() && held >= self.limits.max_buffered_bytes {
            self.c.add(stat!(batches_throttled), 1);
            return Err(IngestError::Full { held, bound: self.limits.max_buffered_bytes });
        }
        let mut batch = match scan_request(data) {
            Ok(b) => b,
            Err(e) => {
                self.c.add(stat!(batches_refused), 1);
                return Err(IngestError::Malformed(e));
            }
        };
        if batch.spans.is_empty() {
            self.c.add(stat!(batches_refused), 1);
            return Err(IngestError::NoSpans);
        }
        let untrusted = self.handoff.verify(&mut batch.spans, &batch.trace_ids);
        if replay.is_none() {
            self.c.add(stat!(handoff_untrusted_spans), untrusted);
        }
        match &replay {
            None => {
                // Stamped before anything is kept: a stalled clock refuses the batch whole.
                let futures =
                    stamp_batch(self.hlc.as_ref(), self.cfg.hlc_max_offset_ns as u64, self.enabled_checks, &mut batch.spans, clocks.wall)
                        .map_err(IngestError::ClockStalled)?;
                self.c.add(stat!(future_timestamps), futures);
            }
            Some(r) => {
                // The stamps and ingest findings the spans were given before the restart.
                if r.stamps.len() != batch.spans.len() {
                    return Err(IngestError::Malformed(WireError { offset: 0, what: "write-ahead log record: stamp count differs from span count" }));
                }
                for (s, st) in batch.spans.iter_mut().zip(r.stamps) {
                    s.hlc_wall = st.wall;
                    s.hlc_logical = st.logical;
                    s.findings = st.findings;
                }
            }
        }

        let mut replay = replay;
        let mut out = IngestOutcome::default();
        // Spans that cannot be assembled go out at once, with their finding. Replay leaves
        // out what was delivered before the restart.
        let skip = |id: u128| replay.as_ref().is_some_and(|r| r.delivered.contains(&id));
        let mut valid: Vec<u32> = Vec::with_capacity(batch.spans.len());
        let mut unassembled: Vec<u32> = Vec::new();
        for (i, s) in batch.spans.iter_mut().enumerate() {
            if !s.trace_id_valid {
                s.findings |= FindingKind::InvalidTraceId.bit() & self.enabled_checks;
            }
            if !s.span_id_valid {
                s.findings |= FindingKind::InvalidSpanId.bit() & self.enabled_checks;
            }
            if s.trace_id_valid && s.span_id_valid {
                if !skip(u128::from_be_bytes(batch.trace_ids[i])) {
                    valid.push(i as u32);
                }
            } else if !skip(0) {
                unassembled.push(i as u32);
            }
        }
        // Spans of one trace together (stable: arrival order kept), so each trace is hashed
        // and its storage grown once per batch; runs bucketed by shard.
        // (trace ID, index): unique keys, so an unstable sort keeps arrival order per trace.
        let mut keyed: Vec<(u128, u32)> = valid.iter().map(|&i| (u128::from_be_bytes(batch.trace_ids[i as usize]), i)).collect();
        keyed.sort_unstable();
        let valid: Vec<u32> = keyed.iter().map(|k| k.1).collect();
        let mut runs: Vec<(u32, u32, u32)> = Vec::new(); // (shard, start, end) into `valid`
        let mut k = 0;
        while k < keyed.len() {
            let id = keyed[k].0;
            let mut j = k + 1;
            while j < keyed.len() && keyed[j].0 == id {
                j += 1;
            }
            runs.push((self.shard_of(id) as u32, k as u32, j as u32));
            k = j;
        }
        runs.sort_unstable();

        // The log: one key per trace run, one for the unassembled spans.
        let keys = runs.len() as u32 + u32::from(!unassembled.is_empty());
        if keys == 0 {
            return Ok(out); // replay: everything of this batch was delivered
        }
        let wal_pos = match (&self.wal, &replay) {
            (Some(w), Some(r)) => {
                w.register(r.pos, keys);
                Some(r.pos)
            }
            (Some(w), None) => {
                let stamps: Vec<SpanStamp> =
                    batch.spans.iter().map(|s| SpanStamp { wall: s.hlc_wall, logical: s.hlc_logical, findings: s.findings }).collect();
                Some(w.append_batch(&stamps, data, keys).map_err(|e| {
                    if matches!(e, AppendError::TooLarge { .. }) {
                        self.c.add(stat!(batches_refused), 1);
                    }
                    IngestError::from(e)
                })?)
            }
            _ => None,
        };
        let recovered = replay.is_some();
        if let Some(r) = &mut replay {
            r.traces.extend(keyed.iter().map(|k| k.0));
            let in_flight = |id: u128| r.in_flight.contains(&id);
            let redelivered = keyed.iter().filter(|k| in_flight(k.0)).count() + if in_flight(0) { unassembled.len() } else { 0 };
            self.c.add(stat!(wal_redelivered_spans), redelivered as u64);
            self.c.add(stat!(wal_spans_replayed), (valid.len() + unassembled.len()) as u64);
        } else {
            self.c.add(stat!(spans_received), batch.spans.len() as u64);
            self.note_handoff_received(&batch.spans);
        }
        self.interner.intern(&mut batch.groups);

        if !unassembled.is_empty() {
            out.unassembled = unassembled.len() as u64;
            self.c.add(stat!(unassembled), out.unassembled);
            let wal = wal_pos.map(|p| vec![(p, 0u128)]).unwrap_or_default();
            self.send(Unit::from_batch(data, &batch.groups, &batch.spans, &unassembled, ReleaseReason::Unassembled).with_wal(wal));
        }
        let mut r = 0;
        let mut resolved: Vec<Key> = Vec::new();
        while r < runs.len() {
            let si = runs[r].0;
            let mut q = r + 1;
            while q < runs.len() && runs[q].0 == si {
                q += 1;
            }
            let late = self.ingest_shard(si as usize, &runs[r..q], &valid, &batch, data, now, wal_pos, recovered, &mut out);
            r = q;
            if let Some(p) = wal_pos {
                resolved.extend(late.resolved.iter().map(|&id| (p, id)));
            }
            if !late.spans.is_empty() {
                let keys: Vec<Key> = wal_pos.map(|p| late.traces.iter().map(|&id| (p, id)).collect()).unwrap_or_default();
                match self.cfg.late_span_policy {
                    LateSpanPolicy::Forward => {
                        out.late_forwarded += late.spans.len() as u64;
                        self.send(Unit::from_batch(data, &batch.groups, &batch.spans, &late.spans, ReleaseReason::Late).with_wal(keys));
                    }
                    LateSpanPolicy::Drop => {
                        out.late_dropped += late.spans.len() as u64;
                        resolved.extend(keys);
                    }
                }
            }
        }
        if let (Some(w), false) = (&self.wal, resolved.is_empty()) {
            w.resolve(&resolved);
        }
        self.c.add(stat!(late_forwarded), out.late_forwarded);
        self.c.add(stat!(late_dropped), out.late_dropped);
        self.c.add(stat!(duplicates_dropped), out.resent);
        out.ready_spans = self.c.get(stat!(ready_spans));
        Ok(out)
    }

    /// Buffers the runs of one shard under its lock. Returns the spans of already released
    /// traces (late spans), for the caller to forward or drop outside the lock.
    #[allow(clippy::too_many_arguments)]
    fn ingest_shard(
        &self,
        si: usize,
        runs: &[(u32, u32, u32)],
        valid: &[u32],
        batch: &crate::index::ScannedBatch,
        data: &[u8],
        now: u64,
        wal_pos: Option<u64>,
        recovered: bool,
        out: &mut IngestOutcome,
    ) -> LateRuns {
        let mut shard = lock(&self.shards[si]);
        // Read under the lock: a shutdown sweeps this shard under the same lock, so either it
        // sweeps what this ingest buffers, or this ingest sees the flag and releases at once.
        let shut_down = self.shut_down.load(Ordering::Acquire);
        let mut late = LateRuns::default();
        for &(_, start, end) in runs {
            let run = &valid[start as usize..end as usize];
            let id = u128::from_be_bytes(batch.trace_ids[run[0] as usize]);
            // A trace whose span bytes would pass what its offsets address is released
            // first; the run's spans are then late, as after max_spans_per_trace.
            if let Some(held) = shard.span_bytes(id) {
                let need: u64 = run.iter().map(|&i| batch.spans[i as usize].len() as u64).sum();
                if held + need > self.limits.max_trace_span_bytes {
                    self.release(&mut shard, id, ReleaseReason::SpanLimit, now);
                }
            }
            if shard.late.contains(id) {
                // A span of a released trace: an exact re-send of a released span (a retry
                // after release) is a duplicate; anything else is late.
                let before = late.spans.len();
                for &i in run {
                    let h = dedupe::content_hash(&self.emitter.dedupe_key, data, &batch.spans[i as usize]);
                    if shard.late.is_resend(id, h) {
                        out.resent += 1;
                    } else {
                        late.spans.push(i);
                    }
                }
                if late.spans.len() > before {
                    late.traces.push(id);
                } else {
                    late.resolved.push(id);
                }
                continue;
            }
            let ins = shard.insert_run(id, run, batch, data, now, wal_pos, recovered);
            self.note_run(ins);
            out.buffered += run.len() as u64;
            let reason = if shut_down {
                Some(ReleaseReason::Shutdown)
            } else if shard.span_count(id).unwrap_or(0) as u64 >= self.limits.max_spans_per_trace {
                Some(ReleaseReason::SpanLimit)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.release(&mut shard, id, reason, now);
            }
        }
        self.enforce_limits(&mut shard, now);
        self.sync(&mut shard);
        late
    }

    /// Brings the engine's gauges in step with the shard's holdings.
    fn sync(&self, shard: &mut Shard) {
        let now = shard.report();
        let was = shard.reported;
        if now == was {
            return;
        }
        self.c.adjust(stat!(buffered_spans), was.spans, now.spans);
        self.c.adjust(stat!(buffered_traces), was.traces, now.traces);
        self.c.adjust(stat!(buffered_bytes), was.mem.total(), now.mem.total());
        self.c.adjust(stat!(memory_span_bytes), was.mem.span, now.mem.span);
        self.c.adjust(stat!(memory_index_bytes), was.mem.index, now.mem.index);
        self.c.adjust(stat!(memory_trace_bytes), was.mem.trace, now.mem.trace);
        self.c.adjust(stat!(memory_late_cache_bytes), was.late, now.late);
        shard.reported = now;
    }

    /// Releases the shard's oldest traces while the engine is over a bound. Buffered traces
    /// plus what only drains can free must fit `max_buffered_bytes`; buffered spans must fit
    /// `max_buffered_spans`. Both bounds are global; the shard that is over pays.
    fn enforce_limits(&self, shard: &mut Shard, now: u64) {
        loop {
            self.sync(shard);
            let spans = self.c.get(stat!(buffered_spans));
            let bytes = self.c.get(stat!(buffered_bytes)) + self.interner.bytes() + self.c.get(stat!(memory_late_cache_bytes));
            if spans <= self.limits.max_buffered_spans && bytes <= self.limits.max_buffered_bytes {
                return;
            }
            let Some(id) = shard.oldest() else { return };
            self.release(shard, id, ReleaseReason::MemoryPressure, now);
        }
    }

    /// Moves a buffered trace to the ready queue, or to the hand-off queue ([`handoff`]).
    fn release(&self, shard: &mut Shard, id: u128, reason: ReleaseReason, now: u64) {
        if let Some(unit) = self.take_due(shard, id, reason, now) {
            self.send(unit);
        }
    }

    fn send(&self, unit: Unit) {
        self.c.add(stat!(ready_spans), unit.spans.len() as u64);
        self.c.add(stat!(ready_bytes), unit.bytes);
        if unit.handoff {
            self.handoff.queue(unit);
            return;
        }
        // The receiver lives as long as the engine: sending cannot fail.
        let _ = self.ready_tx.send(unit);
    }

    /// Releases what is due at `now`: complete and quiet traces, idle ones, old ones, and
    /// the oldest while over a bound. Returns the number of spans waiting in the ready queue.
    ///
    /// `now` is both clocks' reading; see [`Engine::tick_at`].
    pub fn tick(&self, now: u64) -> u64 {
        self.tick_at(Clocks::same(now))
    }

    /// [`Engine::tick`]: what is due by the monotonic clock; the wall clock moves
    /// `hlc.state_file`'s bound ahead.
    pub fn tick_at(&self, clocks: Clocks) -> u64 {
        let now = clocks.mono;
        let l = &self.limits;
        for m in self.shards.iter() {
            let mut shard = lock(m);
            for (id, reason) in shard.due(now, l.quiet_period_ns, l.idle_timeout_ns, l.max_age_ns) {
                self.release(&mut shard, id, reason, now);
            }
            self.enforce_limits(&mut shard, now);
        }
        self.relieve_wal(now);
        self.trim.maybe_trim(now);
        if let Some(h) = &self.hlc {
            h.persist_ahead(clocks.wall); // so that ingests rarely write hlc.state_file themselves
        }
        self.c.get(stat!(ready_spans))
    }

    /// Near `wal.max_bytes`, releases (reason `wal_full`) the traces that hold the log's
    /// oldest segment, so that delivering them frees it. Ingests are refused (retryable) only
    /// while the log is at the bound.
    fn relieve_wal(&self, now: u64) {
        let Some(w) = &self.wal else { return };
        if !w.under_pressure() {
            return;
        }
        let Some(end) = w.oldest_segment_end() else { return };
        for m in self.shards.iter() {
            let mut shard = lock(m);
            for id in shard.holding_wal_before(end) {
                self.release(&mut shard, id, ReleaseReason::WalFull, now);
            }
            self.sync(&mut shard);
        }
    }

    /// Acknowledges a release ([`Release::token`]): downstream accepted it, or it was counted
    /// as lost. Its spans are not replayed after a restart, and log segments that hold only
    /// acknowledged data are deleted. Returns whether the token was known.
    pub fn delivered(&self, token: u64) -> bool {
        match &self.wal {
            Some(w) if token != 0 => w.delivered(token),
            _ => false,
        }
    }

    /// Replays what the write-ahead log holds undelivered (once; later calls return an empty
    /// report): the spans are buffered again with their original stamps, their traces go on
    /// assembling with spans that arrive later, and are released marked
    /// `consistency.trace.recovered`. Call before ingesting. Without a log: an empty report.
    ///
    /// The log is read one segment at a time and replay keeps to `max_buffered_bytes` as
    /// ingest does: buffered traces are released early (`memory_pressure`) to make room, and
    /// when released data waiting to be drained fills the bound, the replay pauses and
    /// returns with [`Recovery::more`] set: drain both queues, then call again.
    pub fn recover(&self, now: u64) -> Recovery {
        self.recover_at(Clocks::same(now))
    }

    /// [`Engine::recover`] at `now` on each clock: replayed traces start their timers on the
    /// monotonic clock.
    pub fn recover_at(&self, now: Clocks) -> Recovery {
        let mut guard = self.to_replay.lock().unwrap_or_else(|p| p.into_inner());
        let Some(st) = guard.as_mut() else {
            return Recovery::default();
        };
        let bound = self.limits.max_buffered_bytes;
        loop {
            // Paused only while a drain can free what fills the bound.
            if self.held_outside_traces() >= bound && self.c.get(stat!(ready_spans)) > 0 {
                self.note_replay(st);
                let mut rep = st.rep.clone();
                rep.more = true;
                return rep;
            }
            let Some(b) = st.log.next_batch() else { break };
            let r = Replay { pos: b.pos, stamps: &b.stamps, delivered: &b.delivered, in_flight: &b.in_flight, traces: &mut st.traces };
            match self.ingest_with(b.data, now, Some(r)) {
                Ok(o) => {
                    if o.buffered + o.unassembled + o.late_forwarded > 0 {
                        st.rep.batches += 1;
                    }
                }
                Err(e) => {
                    st.rep.unreadable_batches += 1;
                    st.rep.problems.push(format!("write-ahead log record at position {} cannot be replayed: {e}", b.pos));
                }
            }
            self.replay_bytes.store(st.memory_bytes(), Ordering::Relaxed);
            if let Some(w) = &self.wal {
                w.replayed_to(st.log.replayed_to());
            }
        }
        self.note_replay(st);
        let Some(mut st) = guard.take() else { return Recovery::default() };
        drop(guard);
        st.rep.problems.append(&mut st.log.problems);
        let rep = st.rep;
        drop(st.log);
        drop(st.traces);
        self.replay_bytes.store(0, Ordering::Relaxed);
        self.c.add(stat!(wal_records_replayed), rep.records);
        self.c.add(stat!(wal_traces_recovered), rep.traces);
        self.c.add(stat!(wal_corrupt_records), rep.corrupt_records);
        self.c.add(stat!(wal_torn_records), rep.torn_records);
        if let Some(w) = &self.wal {
            w.replayed_to(u64::MAX);
            w.reclaim(); // segments whose every batch was delivered before the restart
            w.start_syncer();
        }
        rep
    }

    /// Brings a replay's report up to date.
    fn note_replay(&self, st: &mut Replaying) {
        st.rep.spans = self.c.get(stat!(wal_spans_replayed)) - st.spans_before;
        st.rep.redelivered_spans = self.c.get(stat!(wal_redelivered_spans)) - st.redelivered_before;
        st.rep.traces = st.traces.len() as u64;
        self.replay_bytes.store(st.memory_bytes(), Ordering::Relaxed);
    }

    /// How many times freed memory was handed back to the OS.
    pub fn memory_trims(&self) -> u64 {
        self.trim.trims()
    }

    /// Releases everything buffered with reason `shutdown` (or hands it off, with
    /// `handoff.on_shutdown`); later ingests are released at once with the same reason.
    /// Drain both queues afterwards until empty.
    pub fn shutdown(&self, now: u64) -> u64 {
        self.shutdown_at(Clocks::same(now))
    }

    /// [`Engine::shutdown`]; release ages by the monotonic clock.
    pub fn shutdown_at(&self, clocks: Clocks) -> u64 {
        let now = clocks.mono;
        self.shut_down.store(true, Ordering::Release);
        for m in self.shards.iter() {
            let mut shard = lock(m);
            for id in shard.all_ids() {
                self.release(&mut shard, id, ReleaseReason::Shutdown, now);
            }
            self.sync(&mut shard);
        }
        self.c.get(stat!(ready_spans))
    }

    /// Takes released units (whole; at least one if any is ready) up to about `max_spans`
    /// spans, runs the checks, and encodes them as one `ExportTraceServiceRequest`.
    /// `None` when nothing is ready.
    pub fn drain(&self, max_spans: u64) -> Option<Release> {
        self.drain_from(&self.ready_rx, max_spans)
    }

    /// Takes whole units from `queue` up to about `max_spans` spans (at least one if any is
    /// waiting) and emits them, counting what emission dropped; the late caches learn the
    /// content hashes of the released traces; with a write-ahead log the release gets its
    /// delivery token. The units are freed by the time it returns: their bytes leave the
    /// count. Panic-safe: if anything on the way unwinds, what was taken is counted lost
    /// (see [`Taken`]).
    fn drain_from(&self, queue: &Receiver<Unit>, max_spans: u64) -> Option<Release> {
        let mut units = Vec::new();
        let mut taken = Taken { engine: self, spans: 0, bytes: 0, keys: Vec::new(), handed_out: false };
        while taken.spans < max_spans.max(1) {
            match queue.try_recv() {
                Ok(mut u) => {
                    taken.spans += u.spans.len() as u64;
                    taken.bytes += u.bytes;
                    taken.keys.extend(std::mem::take(&mut u.wal));
                    units.push(u);
                }
                Err(_) => break,
            }
        }
        if units.is_empty() {
            return None;
        }
        let emitted = self.emitter.emit(units);
        // What the late caches need to recognise re-sends of these traces' spans.
        for (id, hashes) in emitted.released {
            let mut shard = lock(&self.shards[self.shard_of(id)]);
            shard.late.set_hashes(id, hashes);
            self.sync(&mut shard);
        }
        self.c.add(stat!(duplicates_dropped), emitted.duplicates);
        self.c.add(stat!(conflicts_dropped), emitted.conflicts);
        let mut release = emitted.release;
        if let Some(w) = &self.wal {
            release.token = w.drained(std::mem::take(&mut taken.keys));
        }
        taken.handed_out = true;
        Some(release)
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let mut s = self.c.snapshot();
        s.memory_group_bytes = self.interner.bytes();
        if let Some(w) = &self.wal {
            s.memory_wal_bytes = w.memory_bytes();
            s.wal_bytes = w.disk_bytes();
            s.wal_segments = w.segments();
            s.wal_fsyncs = w.c.fsyncs.load(Ordering::Relaxed);
            for (b, c) in s.wal_fsync_buckets.iter_mut().zip(&w.c.fsync_buckets) {
                *b = c.load(Ordering::Relaxed);
            }
            s.wal_full_refusals = w.c.full_refusals.load(Ordering::Relaxed);
            s.wal_write_errors = w.c.write_errors.load(Ordering::Relaxed);
        }
        s.memory_total_bytes =
            s.buffered_bytes + s.ready_bytes + s.memory_group_bytes + s.memory_late_cache_bytes + s.memory_wal_bytes;
        if let Some(h) = self.hlc.as_ref().map(Hlc::stats) {
            s.hlc_refusals = h.refusals;
            s.hlc_backward_jumps = h.backward_jumps;
            s.hlc_max_forward_offset_ns = h.max_forward_offset_ns;
            s.hlc_logical_overflows = h.logical_overflows;
            s.hlc_persist_errors = h.persist_errors;
            s.hlc_stalled_batches = h.stalled_batches;
        }
        s
    }

    /// What `hlc.state_file` held at start (`restart_strategy: persist` only). When
    /// [`PersistStart::needs_wait`], the caller waits `hlc.max_offset` before ingesting, as
    /// with `restart_strategy: wait`.
    pub fn hlc_persist_start(&self) -> Option<PersistStart> {
        self.hlc.as_ref().and_then(Hlc::persist_start)
    }

    /// The HLC's last stamp (for tests and restarts).
    pub fn hlc_last(&self) -> Option<Stamp> {
        self.hlc.as_ref().map(Hlc::last)
    }
}

#[cfg(test)]
mod handoff_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wal_tests;
