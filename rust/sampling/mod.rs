//! Tail sampling where traces are assembled: rules (first match wins) decide each released
//! trace before it is encoded, so that a dropped trace's bytes are freed here and never
//! reach the collector's Go side. See DESIGN.md, "Sampling".
//!
//! - [`threshold`]: consistent probability sampling (`ot=th`, `ot=rv`) and contrib
//!   `tail_sampling`'s hash;
//! - [`rate`]: the token bucket of a rate-limit rule;
//! - [`trace`]: what conditions read of a trace.

pub mod config;
pub mod rate;
pub mod threshold;
pub mod trace;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rate::TokenBucket;
use threshold::{contrib_hash, contrib_threshold, read_tracestate, trace_id_randomness, Threshold};
pub use trace::{AttrValue, TraceView};

/// How an attribute's value is matched.
#[derive(Clone, Debug, PartialEq)]
pub enum Match {
    Present,
    Equals(String),
    In(Vec<String>),
    Prefix(String),
}

impl Match {
    fn accepts(&self, v: &AttrValue<'_>) -> bool {
        match self {
            Match::Present => true,
            Match::Equals(s) => v.as_bytes() == Some(s.as_bytes()),
            Match::In(list) => v.as_bytes().is_some_and(|b| list.iter().any(|s| s.as_bytes() == b)),
            Match::Prefix(p) => v.as_bytes().is_some_and(|b| b.starts_with(p.as_bytes())),
        }
    }
}

/// Where an attribute condition looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrScope {
    Span,
    Resource,
}

/// One condition of a rule; a rule's conditions all hold (AND) for it to match.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Some span's status is ERROR.
    Error,
    /// Earliest start to latest end, at least this many ns.
    DurationAtLeast(u64),
    /// Earliest start to latest end, at most this many ns.
    DurationAtMost(u64),
    /// The span count is in `min..=max`.
    SpanCount { min: u64, max: u64 },
    /// `service.name` of some span (or of the root span, `root_only`) is in the list.
    Service { names: Vec<String>, root_only: bool },
    /// Some span (or some span's resource) has the attribute, matching.
    Attribute { scope: AttrScope, key: String, matches: Match },
    /// The trace has a root span (`true`) / has none (`false`).
    Root(bool),
    /// The trace has findings of any kind in the mask (`FindingKind::ALL_MASK`: any finding,
    /// consistency status `inconsistent`).
    Findings(u32),
    /// The release reason is in the mask (bits `1 << ReleaseReason as u32`).
    ReleaseReason(u32),
}

impl Condition {
    pub fn holds(&self, t: &TraceView<'_>) -> bool {
        match self {
            Condition::Error => t.any_error(),
            Condition::DurationAtLeast(d) => t.duration_ns() >= *d,
            Condition::DurationAtMost(d) => t.duration_ns() <= *d,
            Condition::SpanCount { min, max } => (*min..=*max).contains(&(t.spans.len() as u64)),
            Condition::Service { names, root_only } => {
                let hit = |i: usize| names.iter().any(|n| n == t.service_of(i));
                if *root_only {
                    t.root().is_some_and(hit)
                } else {
                    (0..t.spans.len()).any(hit)
                }
            }
            Condition::Attribute { scope: AttrScope::Span, key, matches } => t.any_span_attr(key, &mut |v| matches.accepts(v)),
            Condition::Attribute { scope: AttrScope::Resource, key, matches } => t.any_resource_attr(key, &mut |v| matches.accepts(v)),
            Condition::Root(present) => t.root().is_some() == *present,
            Condition::Findings(mask) => t.findings & mask != 0,
            Condition::ReleaseReason(mask) => mask & (1 << t.reason as u32) != 0,
        }
    }
}

/// What a rule (or the default) does with a trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Keep,
    Drop,
    /// Keeps this percentage (`0..=100`) of the traces, by their randomness.
    Probabilistic(f64),
    /// Keeps at most this many spans per second of what the rule matched (token bucket, per
    /// engine), drops the rest.
    RateLimit(f64),
}

/// How `probabilistic` chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// OpenTelemetry consistent probability sampling: randomness `ot=rv`, else the trace
    /// ID's rightmost 56 bits; the threshold is written into kept spans' tracestate.
    #[default]
    Consistent,
    /// contrib `tail_sampling`'s `probabilistic` policy: FNV-1a of `hash_salt` and the
    /// trace ID; tracestate is left alone.
    HashCompatible,
}

/// A rule: its conditions (all must hold; none: every trace) and its action.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub when: Vec<Condition>,
    pub action: Action,
}

/// The `sampling` section, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    /// For a trace no rule matched.
    pub default: Action,
    pub mode: Mode,
    /// Hash-compatible mode's salt (contrib's default when empty).
    pub hash_salt: String,
}

/// The salt contrib `tail_sampling` uses when `hash_salt` is empty.
pub const CONTRIB_DEFAULT_SALT: &str = "default-hash-seed";

/// The name counted and written for the default action.
pub const DEFAULT_RULE: &str = "default";

/// What the sampler decided for one trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Index of the deciding rule; `rules.len()` for the default.
    pub rule: usize,
    pub keep: bool,
    /// With a consistent `probabilistic` action: the threshold applied (written into kept
    /// spans' tracestate, never below what a span carries).
    pub threshold: Option<Threshold>,
}

/// What the late-span cache remembers of a released trace's decision (two words in front of
/// the entry's hashes, counted against the cache's byte bound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// No sampling, or not decided (handed off, or released before the decision).
    #[default]
    Undecided,
    /// Kept by rule `rule`; `threshold` is the consistent threshold applied (`u64::MAX`:
    /// none, tracestate left alone).
    Kept { rule: u32, threshold: u64 },
    /// Dropped by rule `rule`.
    Dropped { rule: u32 },
}

impl Decision {
    pub fn verdict(&self) -> Verdict {
        if self.keep {
            Verdict::Kept { rule: self.rule as u32, threshold: self.threshold.map_or(u64::MAX, |t| t.0) }
        } else {
            Verdict::Dropped { rule: self.rule as u32 }
        }
    }
}

/// Traces and spans kept and dropped by one rule (or the default), since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounts {
    pub kept_traces: u64,
    pub kept_spans: u64,
    pub dropped_traces: u64,
    pub dropped_spans: u64,
}

#[derive(Default)]
struct Counters {
    kept_traces: AtomicU64,
    kept_spans: AtomicU64,
    dropped_traces: AtomicU64,
    dropped_spans: AtomicU64,
}

/// A policy with its run-time state: the rate limiters' buckets and the counts.
pub struct Sampler {
    policy: Policy,
    /// Per rule, then the default: the bucket of a rate-limit action.
    buckets: Vec<Option<Mutex<TokenBucket>>>,
    counts: Vec<Counters>,
    /// contrib's threshold for each probabilistic action (hash-compatible mode).
    contrib: Vec<u64>,
}

impl Sampler {
    pub fn new(policy: Policy) -> Sampler {
        let actions: Vec<&Action> = policy.rules.iter().map(|r| &r.action).chain(std::iter::once(&policy.default)).collect();
        let buckets = actions
            .iter()
            .map(|a| match a {
                Action::RateLimit(rate) => Some(Mutex::new(TokenBucket::new(*rate))),
                _ => None,
            })
            .collect();
        let contrib = actions
            .iter()
            .map(|a| match a {
                Action::Probabilistic(p) => contrib_threshold(p / 100.0),
                _ => 0,
            })
            .collect();
        let counts = (0..actions.len()).map(|_| Counters::default()).collect();
        Sampler { policy, buckets, counts, contrib }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The name of rule `i` (`default` for `rules.len()`).
    pub fn rule_name(&self, i: usize) -> &str {
        self.policy.rules.get(i).map_or(DEFAULT_RULE, |r| r.name.as_str())
    }

    /// Decides a trace at `now_ns` (the monotonic clock of the rate limiters) and counts the
    /// decision.
    pub fn decide(&self, t: &TraceView<'_>, now_ns: u64) -> Decision {
        let rule = self.policy.rules.iter().position(|r| r.when.iter().all(|c| c.holds(t))).unwrap_or(self.policy.rules.len());
        let action = self.policy.rules.get(rule).map_or(&self.policy.default, |r| &r.action);
        let (keep, threshold) = match action {
            Action::Keep => (true, None),
            Action::Drop => (false, None),
            Action::Probabilistic(p) => match self.policy.mode {
                Mode::Consistent => {
                    let ours = Threshold::from_percentage(*p);
                    let (incoming, rv) = t
                        .tracestate(t.summary_span.min(t.spans.len().saturating_sub(1)))
                        .map_or((None, None), |(ts, _)| read_tracestate(ts));
                    let r = rv.unwrap_or_else(|| trace_id_randomness(t.trace_id));
                    // Equalizing: never below the threshold the trace arrived with.
                    let th = incoming.map_or(ours, |i| i.max(ours));
                    (th.keeps(r), Some(ours))
                }
                Mode::HashCompatible => {
                    let salt = if self.policy.hash_salt.is_empty() { CONTRIB_DEFAULT_SALT } else { &self.policy.hash_salt };
                    (contrib_hash(salt, t.trace_id) <= self.contrib[rule], None)
                }
            },
            Action::RateLimit(_) => {
                let bucket = self.buckets[rule].as_ref().expect("a rate-limit action has a bucket");
                let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
                (b.take(t.spans.len() as u64, now_ns), None)
            }
        };
        let c = &self.counts[rule];
        let spans = t.spans.len() as u64;
        if keep {
            c.kept_traces.fetch_add(1, Ordering::Relaxed);
            c.kept_spans.fetch_add(spans, Ordering::Relaxed);
        } else {
            c.dropped_traces.fetch_add(1, Ordering::Relaxed);
            c.dropped_spans.fetch_add(spans, Ordering::Relaxed);
        }
        Decision { rule, keep, threshold: if keep { threshold } else { None } }
    }

    /// Counts late spans of traces rule `rule` decided (they follow the decision).
    pub fn count_late(&self, rule: u32, spans: u64, kept: bool) {
        if let Some(c) = self.counts.get(rule as usize) {
            if kept {
                c.kept_spans.fetch_add(spans, Ordering::Relaxed);
            } else {
                c.dropped_spans.fetch_add(spans, Ordering::Relaxed);
            }
        }
    }

    /// Counts per rule, then the default.
    pub fn counts(&self) -> Vec<RuleCounts> {
        self.counts
            .iter()
            .map(|c| RuleCounts {
                kept_traces: c.kept_traces.load(Ordering::Relaxed),
                kept_spans: c.kept_spans.load(Ordering::Relaxed),
                dropped_traces: c.dropped_traces.load(Ordering::Relaxed),
                dropped_spans: c.dropped_spans.load(Ordering::Relaxed),
            })
            .collect()
    }
}
