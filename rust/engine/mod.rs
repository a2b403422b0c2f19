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
//! checks and encoding run on drain (`emit`), outside every shard lock.
//!
//! Modules, bottom up (each uses only those before it; the `impl Engine` blocks of the later
//! ones call the earlier ones, never the other way):
//! - `types`: the API types ([`Clocks`], [`IngestOutcome`], [`IngestError`], [`Release`],
//!   [`Recovery`]);
//! - [`memory`] (what memory costs), [`stats`] (counters and gauges), `intern`
//!   (shared resource and scope entries), `unit` (what waits in the ready queue),
//!   `shard` (buffering and the trace lifecycle), `dedupe` (duplicate policies),
//!   `handoff` (hand-off settings and proofs), `emit` (checks and encoding);
//! - `bounds`: the limits, what counts against them, the gauges of each shard;
//! - `release`: the release decision (`take_due`), the ready queue, tick and shutdown;
//! - `ingest`: live ingest, and the buffering that replay shares;
//! - `replay`: one logged batch buffered again with its stamps;
//! - `recovery`: the write-ahead log replayed after a restart;
//! - `drain`: units taken from a queue and emitted, delivery acknowledged;
//! - this module: the [`Engine`], its construction and its stats.
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

mod awaited;
mod bounds;
mod dedupe;
mod drain;
mod emit;
mod expect;
mod handoff;
mod ingest;
mod intern;
pub mod memory;
mod recovery;
mod release;
mod replay;
mod shard;
pub mod stats;
mod types;
mod unit;

use ahash::RandomState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender};
use std::collections::HashSet;
use std::sync::Arc;

use crate::wal::{Wal, WalConfig};

use crate::checks::CheckConfig;
use crate::config::{Config, ConfigError, RestartStrategy};
use crate::findings::FindingKind;
use crate::hlc::{Hlc, PersistStart, Stamp};

use bounds::{Limits, MAX_TRACE_SPAN_BYTES};
use emit::Emitter;
use handoff::Handoff;
use intern::Interner;
use recovery::Replaying;
use shard::Shard;
use stats::Counters;
use unit::Unit;

pub use stats::Stats;
pub use types::{Clocks, FindingCount, IngestError, IngestOutcome, Recovery, Release, ReleasedUnit};

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
    wal: Option<Arc<Wal>>,
    /// What opening the log found, until [`Engine::recover`] replayed all of it.
    to_replay: Mutex<Option<Replaying>>,
    /// Bytes the replay in progress holds ([`Replaying::memory_bytes`]).
    replay_bytes: std::sync::atomic::AtomicU64,
    handoff: Handoff,
    /// What the engine learned of calls and export lags.
    expect: expect::Expect,
    /// The monotonic clock of the last tick: the time sampling's rate limits run on.
    last_mono: std::sync::atomic::AtomicU64,
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Shard invariants are restored before any code that could panic returns; a poisoned
    // lock still holds usable data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Builds an engine that decides each released trace by `policy` (the `sampling`
    /// section) before encoding it; see DESIGN.md, "Sampling".
    pub fn with_sampling(cfg: Config, policy: Option<crate::sampling::Policy>) -> Result<Engine, ConfigError> {
        let mut e = Engine::new(cfg)?;
        e.emitter.sampler = policy.map(crate::sampling::Sampler::new);
        if e.emitter.sampler.is_some() {
            // The late caches remember each trace's decision for its late spans.
            for m in e.shards.iter() {
                lock(m).late.verdicts = true;
            }
        }
        Ok(e)
    }

    /// Traces and spans kept and dropped by each sampling rule, then the default (empty
    /// without sampling).
    pub fn sampling_counts(&self) -> Vec<crate::sampling::RuleCounts> {
        self.emitter.sampler.as_ref().map_or_else(Vec::new, |s| s.counts())
    }

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
        let timers = shard::Timers { quiet_period: limits.quiet_period_ns, idle_timeout: limits.idle_timeout_ns, max_age: limits.max_age_ns };
        let shards = (0..n).map(|_| Mutex::new(Shard::new(late_cap, late_byte_cap, timers))).collect();
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
            sampler: None,
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
        // The learned calls take at most a sixty-fourth of the memory bound.
        let max_keys = expect::MAX_KEYS.min((cfg.max_buffered_bytes as u64 / 64 / awaited::KEY_BYTES) as usize).max(16);
        let expect = expect::Expect::new(max_keys, awaited::MAX_LAG_SERVICES, cfg.idle_timeout_ns as u64);
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
            wal,
            to_replay: Mutex::new(opened),
            replay_bytes: Default::default(),
            handoff,
            expect,
            last_mono: Default::default(),
        };
        for m in engine.shards.iter() {
            engine.sync(&mut lock(m));
        }
        Ok(engine)
    }

    fn shard_of(&self, id: u128) -> usize {
        ((self.shard_key.hash_one(id) >> 32) % self.shards.len() as u64) as usize
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
        s.memory_learned_bytes = self.expect.bytes();
        (s.learned_call_keys, s.learned_edges) = self.expect.counts();
        s.memory_total_bytes = s.buffered_bytes
            + s.ready_bytes
            + s.memory_group_bytes
            + s.memory_late_cache_bytes
            + s.memory_wal_bytes
            + s.memory_learned_bytes;
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

    /// Each service's learned export lag (ns) at `now` (monotonic), the slowest first: how
    /// long after a span ends its spans arrive, as a trace waiting for that service's spans
    /// takes it.
    pub fn export_lags(&self, now: u64) -> Vec<(String, u64)> {
        let mut lags = self.expect.learnt(now).lags;
        lags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        lags
    }

    /// What `hlc.state_file` held at start (`restart_strategy: persist` only). When
    /// [`PersistStart::needs_wait`], the caller waits `hlc.max_offset` before ingesting, as
    /// with `restart_strategy: wait`.
    pub fn hlc_persist_start(&self) -> Option<PersistStart> {
        self.hlc.as_ref().and_then(Hlc::persist_start)
    }

    /// The HLC's last stamp (tests and the fuzz targets check stamps against it).
    pub fn hlc_last(&self) -> Option<Stamp> {
        self.hlc.as_ref().map(Hlc::last)
    }
}

#[cfg(test)]
mod handoff_tests;
#[cfg(test)]
mod expect_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tick_tests;
#[cfg(test)]
mod wal_tests;
