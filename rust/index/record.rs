//! The index records: a span's `SpanRec` (and its rarely used `SpanExtra`), the resource and
//! scope entries spans share (`Group`), and what they are charged against the memory bound.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::checks::clock::{HostIdentity, Sdk};
use crate::hlc::Stamp;

/// OTLP `Span.flags` bits: W3C trace flags in the low byte (0x01 sampled), then whether the
/// parent is known to be remote (0x100) and is remote (0x200).
pub const FLAG_SAMPLED: u32 = 0x01;
pub const FLAG_HAS_IS_REMOTE: u32 = 0x100;
pub const FLAG_IS_REMOTE: u32 = 0x200;

/// OTLP `SpanKind` values.
pub mod kind {
    pub const UNSPECIFIED: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const SERVER: u8 = 2;
    pub const CLIENT: u8 = 3;
    pub const PRODUCER: u8 = 4;
    pub const CONSUMER: u8 = 5;
}

/// A resource as received (the `ResourceSpans` fields other than `scope_spans`, raw), with
/// the keys the checks need, computed once per batch.
#[derive(Debug)]
pub struct ResourceEntry {
    /// Raw bytes of every `ResourceSpans` field except `scope_spans` (field 2).
    pub header: Vec<u8>,
    /// Hash of `header`: identity of the resource.
    pub hash: u64,
    /// The host the resource says it runs on (`host.id`, `host.name`, `host.ip`): which
    /// resources share a clock.
    pub host: HostIdentity,
    /// The SDK that stamped its spans (`telemetry.sdk.language`).
    pub sdk: Sdk,
    /// `service.name`, empty when absent.
    pub service: String,
    /// The entry's share of the engine's memory count, given back when the entry is freed
    /// (set once the engine interns it).
    pub charge: OnceLock<Charge>,
}

/// A scope as received (the `ScopeSpans` fields other than `spans`, raw).
#[derive(Debug)]
pub struct ScopeEntry {
    pub header: Vec<u8>,
    pub hash: u64,
    /// See [`ResourceEntry::charge`].
    pub charge: OnceLock<Charge>,
}

/// Bytes counted in a shared counter for as long as the value holding it lives.
#[derive(Debug)]
pub struct Charge {
    counter: Arc<AtomicU64>,
    bytes: u64,
}

impl Charge {
    pub fn new(counter: Arc<AtomicU64>, bytes: u64) -> Charge {
        counter.fetch_add(bytes, Ordering::Relaxed);
        Charge { counter, bytes }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Where a span sits: its resource and scope.
#[derive(Clone, Debug)]
pub struct Group {
    pub resource: Arc<ResourceEntry>,
    pub scope: Arc<ScopeEntry>,
}

impl Group {
    /// Identity of an interned group (the engine shares equal entries, so pointers compare).
    pub fn key(&self) -> (usize, usize) {
        (Arc::as_ptr(&self.resource) as usize, Arc::as_ptr(&self.scope) as usize)
    }
}

/// An ID field whose length was wrong, kept so the original can be reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadId {
    pub field: u32,
    pub original: Vec<u8>,
}

/// The compact index of one span. `bytes` is the range of the span's encoding in the buffer
/// it lives in (the request while scanning, the trace's arena once buffered).
#[derive(Clone, Debug)]
pub struct SpanRec {
    /// Big-endian value of the 8-byte span ID; 0 = absent or invalid.
    pub span_id: u64,
    /// Big-endian value of the parent span ID; 0 = root (empty or all-zero).
    pub parent_id: u64,
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    pub kind: u8,
    pub has_links: bool,
    pub trace_id_valid: bool,
    pub span_id_valid: bool,
    /// The stamp this engine gave the span at ingest.
    /// (`hlc_wall == 0`: not stamped, the clock is off.) Kept as two fields rather than a
    /// `Stamp` so the record has no padding; see [`SpanRec::hlc`].
    pub hlc_wall: u64,
    pub hlc_logical: u32,
    /// Findings set at ingest (invalid IDs, future timestamps, HLC refusals).
    pub findings: u32,
    /// Index into the owning trace's groups.
    pub group: u32,
    pub bytes: Range<u32>,
    /// The arrival order within the trace (stable tie-break).
    pub seq: u32,
    /// Rarely needed details, boxed so the common span pays one pointer.
    pub extra: Option<Box<SpanExtra>>,
}

/// The rare parts of a span's index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanExtra {
    /// The HLC stamp an upstream collector wrote (`consistency.hlc`), if any.
    pub upstream_hlc: Option<Stamp>,
    /// Ranges, relative to the span's first byte, to leave out when emitting: our own
    /// attributes from an upstream collector and ID fields of the wrong length. Sorted.
    pub strip: Vec<Range<u32>>,
    /// Wrong-length IDs, reported as attributes on the way out.
    pub bad_ids: Vec<BadId>,
    /// How many times the span was handed off already (`consistency.span.handoff`), as
    /// the marker says; 0 once the engine found the marker's proof wrong.
    pub handoff_hops: u32,
    /// Whether the span carried a hand-off marker at all.
    pub handoff_marked: bool,
    /// The marker's proof (`consistency.span.handoff_proof`), if it came with one.
    pub handoff_proof: Option<u64>,
}

impl SpanRec {
    /// The stamp this engine gave the span (wall 0 when the clock is off).
    pub fn hlc(&self) -> Stamp {
        Stamp { wall: self.hlc_wall, logical: self.hlc_logical }
    }

    pub fn set_hlc(&mut self, s: Stamp) {
        self.hlc_wall = s.wall;
        self.hlc_logical = s.logical;
    }

    pub fn upstream_hlc(&self) -> Option<Stamp> {
        self.extra.as_ref().and_then(|e| e.upstream_hlc)
    }

    pub fn strip(&self) -> &[Range<u32>] {
        self.extra.as_ref().map_or(&[], |e| &e.strip)
    }

    /// How many times the span was handed off before it arrived (0: never).
    pub fn handoff_hops(&self) -> u32 {
        self.extra.as_ref().map_or(0, |e| e.handoff_hops)
    }

    pub fn bad_ids(&self) -> &[BadId] {
        self.extra.as_ref().map_or(&[], |e| &e.bad_ids)
    }

    /// The hand-off marker as received: its hop count and its proof, if any.
    pub fn handoff_marker(&self) -> Option<(u32, Option<u64>)> {
        self.extra.as_ref().filter(|e| e.handoff_marked).map(|e| (e.handoff_hops, e.handoff_proof))
    }

    /// Takes the span as never handed off (its marker's proof did not check).
    pub fn distrust_handoff(&mut self) {
        if let Some(e) = self.extra.as_mut() {
            e.handoff_hops = 0;
            e.handoff_marked = false;
        }
    }

    pub(super) fn extra_mut(&mut self) -> &mut SpanExtra {
        self.extra.get_or_insert_with(Default::default)
    }

    pub fn len(&self) -> usize {
        (self.bytes.end - self.bytes.start) as usize
    }

    pub fn is_root(&self) -> bool {
        self.parent_id == 0
    }

    pub fn duration(&self) -> i128 {
        i128::from(self.end) - i128::from(self.start)
    }
}

/// A request indexed without decoding: the groups and, per span, its index. Span byte ranges
/// point into the scanned request; `SpanRec::group` indexes `groups`.
#[derive(Debug, Default)]
pub struct ScannedBatch {
    pub groups: Vec<Group>,
    pub spans: Vec<SpanRec>,
    /// The trace ID of each span (same order as `spans`).
    pub trace_ids: Vec<[u8; 16]>,
}
