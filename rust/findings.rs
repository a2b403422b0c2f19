//! Names shared by the engine, the checks, the C ABI and the metrics: finding kinds and
//! release reasons. The string forms are the attribute values and metric attribute values.
//!
//! These enums are the C ABI's enums too: cbindgen exports them as `tc_finding_kind` and
//! `tc_release_reason` (see `cbindgen.toml`), and `tc_finding_kind_name` /
//! `tc_release_reason_name` hand out the names below. Nothing else lists them.

use std::ffi::CStr;

fn utf8(s: &'static CStr) -> &'static str {
    // Every name is an ASCII literal.
    s.to_str().unwrap_or("")
}

/// One kind of consistency finding. The discriminant is a bit position in masks
/// (`1 << kind`). Exported to C as `tc_finding_kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum FindingKind {
    MissingParent = 0,
    NoRoot = 1,
    MultipleRoots = 2,
    ParentCycle = 3,
    ConflictingSpanId = 4,
    InvalidTraceId = 5,
    InvalidSpanId = 6,
    NegativeDuration = 7,
    StartsBeforeParent = 8,
    EndsAfterParent = 9,
    ClockSkew = 10,
    SampledFlagMismatch = 11,
    RemoteParentMismatch = 12,
    FutureTimestamp = 13,
    HlcOffsetExceeded = 14,
    ExpectedChildMissing = 15,
}

impl FindingKind {
    pub const ALL: [FindingKind; 16] = [
        FindingKind::MissingParent,
        FindingKind::NoRoot,
        FindingKind::MultipleRoots,
        FindingKind::ParentCycle,
        FindingKind::ConflictingSpanId,
        FindingKind::InvalidTraceId,
        FindingKind::InvalidSpanId,
        FindingKind::NegativeDuration,
        FindingKind::StartsBeforeParent,
        FindingKind::EndsAfterParent,
        FindingKind::ClockSkew,
        FindingKind::SampledFlagMismatch,
        FindingKind::RemoteParentMismatch,
        FindingKind::FutureTimestamp,
        FindingKind::HlcOffsetExceeded,
        FindingKind::ExpectedChildMissing,
    ];
    pub const COUNT: usize = Self::ALL.len();
    pub const ALL_MASK: u32 = (1 << Self::COUNT) - 1;

    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The snake_case name (attribute and metric value), NUL-terminated for the C ABI.
    pub const fn c_name(self) -> &'static CStr {
        match self {
            FindingKind::MissingParent => c"missing_parent",
            FindingKind::NoRoot => c"no_root",
            FindingKind::MultipleRoots => c"multiple_roots",
            FindingKind::ParentCycle => c"parent_cycle",
            FindingKind::ConflictingSpanId => c"conflicting_span_id",
            FindingKind::InvalidTraceId => c"invalid_trace_id",
            FindingKind::InvalidSpanId => c"invalid_span_id",
            FindingKind::NegativeDuration => c"negative_duration",
            FindingKind::StartsBeforeParent => c"starts_before_parent",
            FindingKind::EndsAfterParent => c"ends_after_parent",
            FindingKind::ClockSkew => c"clock_skew",
            FindingKind::SampledFlagMismatch => c"sampled_flag_mismatch",
            FindingKind::RemoteParentMismatch => c"remote_parent_mismatch",
            FindingKind::FutureTimestamp => c"future_timestamp",
            FindingKind::HlcOffsetExceeded => c"hlc_offset_exceeded",
            FindingKind::ExpectedChildMissing => c"expected_child_missing",
        }
    }

    /// The snake_case name (attribute and metric value).
    pub fn name(self) -> &'static str {
        utf8(self.c_name())
    }

    pub fn from_u32(v: u32) -> Option<FindingKind> {
        Self::ALL.get(v as usize).copied()
    }

    pub fn from_name(name: &str) -> Option<FindingKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Iterates the kinds whose bits are set in `mask`, in discriminant order.
    pub fn iter_mask(mask: u32) -> impl Iterator<Item = FindingKind> {
        Self::ALL.iter().copied().filter(move |k| mask & k.bit() != 0)
    }
}

/// Why a unit of spans left the engine. Exported to C as `tc_release_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ReleaseReason {
    /// Structurally complete (one root, every parent present) and quiet for `quiet_period`.
    Complete = 0,
    /// Incomplete and no new span for `idle_timeout`.
    IdleTimeout = 1,
    /// `max_age` since the first span.
    MaxAge = 2,
    /// Released early because a buffer limit would have been exceeded.
    MemoryPressure = 3,
    /// The trace reached `max_spans_per_trace`.
    SpanLimit = 4,
    /// The engine was shut down.
    Shutdown = 5,
    /// Spans of an already released trace, forwarded at once.
    Late = 6,
    /// Spans that cannot be assembled (invalid trace or span ID), forwarded at once.
    Unassembled = 7,
    /// Released early because the write-ahead log reached `wal.max_bytes` and the trace held
    /// its oldest segment.
    WalFull = 8,
}

impl ReleaseReason {
    pub const ALL: [ReleaseReason; 9] = [
        ReleaseReason::Complete,
        ReleaseReason::IdleTimeout,
        ReleaseReason::MaxAge,
        ReleaseReason::MemoryPressure,
        ReleaseReason::SpanLimit,
        ReleaseReason::Shutdown,
        ReleaseReason::Late,
        ReleaseReason::Unassembled,
        ReleaseReason::WalFull,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The snake_case name (attribute and metric value), NUL-terminated for the C ABI.
    pub const fn c_name(self) -> &'static CStr {
        match self {
            ReleaseReason::Complete => c"complete",
            ReleaseReason::IdleTimeout => c"idle_timeout",
            ReleaseReason::MaxAge => c"max_age",
            ReleaseReason::MemoryPressure => c"memory_pressure",
            ReleaseReason::SpanLimit => c"span_limit",
            ReleaseReason::Shutdown => c"shutdown",
            ReleaseReason::Late => c"late",
            ReleaseReason::Unassembled => c"unassembled",
            ReleaseReason::WalFull => c"wal_full",
        }
    }

    /// The snake_case name (attribute and metric value).
    pub fn name(self) -> &'static str {
        utf8(self.c_name())
    }

    pub fn from_u32(v: u32) -> Option<ReleaseReason> {
        Self::ALL.get(v as usize).copied()
    }

    /// Whether this reason releases an assembled trace (and is written as
    /// `consistency.trace.release_reason`).
    pub const fn is_trace_release(self) -> bool {
        !matches!(self, ReleaseReason::Late | ReleaseReason::Unassembled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_snake_case() {
        for k in FindingKind::ALL {
            assert_eq!(FindingKind::from_name(k.name()), Some(k));
            assert_eq!(FindingKind::from_u32(k as u32), Some(k));
            assert!(k.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        for r in ReleaseReason::ALL {
            assert_eq!(ReleaseReason::from_u32(r as u32), Some(r));
        }
    }
}
