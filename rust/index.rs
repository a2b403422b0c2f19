//! The compact per-span index and the zero-copy scanner that builds it from the bytes of an
//! `ExportTraceServiceRequest`.
//!
//! The engine never decodes a span fully: it records the IDs, parent, times, flags, kind
//! and the byte range of the span's original encoding, plus where our own `consistency.*`
//! attributes (written by an upstream collector) sit so they can be replaced on the way out.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::hlc::Stamp;
use crate::schema::{validate, validate_with, Msg, Pending};
use crate::wire::{read_kv, Fields, Value, WireError};

use crate::checks::clock::{kv_value, read_ips, HostIdentity, Sdk};
use crate::attrs::{ATTR_HLC, ATTR_PREFIX, ATTR_SPAN_HANDOFF, ATTR_SPAN_HANDOFF_PROOF};

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

    fn extra_mut(&mut self) -> &mut SpanExtra {
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

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

fn off(base: usize, r: &Range<usize>) -> Range<u32> {
    (r.start - base) as u32..(r.end - base) as u32
}

fn wrong_type(offset: usize) -> WireError {
    WireError { offset, what: "known field with the wrong wire type" }
}

/// Scans the bytes of an `ExportTraceServiceRequest`.
pub fn scan_request(buf: &[u8]) -> Result<ScannedBatch, WireError> {
    let mut out = ScannedBatch::default();
    for f in Fields::new(buf, 0) {
        let f = f?;
        match (f.number, &f.value) {
            (1, Value::Len(r)) => scan_resource_spans(buf, r.clone(), &mut out)?,
            (1, _) => return Err(wrong_type(f.span.start)),
            _ => {}
        }
        // Unknown top-level fields are ignored (the request has only field 1).
    }
    Ok(out)
}

fn scan_resource_spans(
    buf: &[u8],
    range: Range<usize>,
    out: &mut ScannedBatch,
) -> Result<(), WireError> {
    let msg = &buf[range.clone()];
    let mut header = Vec::new();
    let mut scopes = Vec::new();
    let mut deprecated = Vec::new();
    let mut resource_msg: Option<Range<usize>> = None;
    for f in Fields::new(msg, range.start) {
        let f = f?;
        match (f.number, &f.value) {
            (2, Value::Len(r)) => scopes.push(r.start + range.start..r.end + range.start),
            // `deprecated_scope_spans`: the collector's decoder reads them and uses them only
            // when there is no field 2 (they then leave as field 2); otherwise it drops them.
            (1000, Value::Len(r)) => deprecated.push(r.start + range.start..r.end + range.start),
            (1, Value::Len(r)) => {
                validate(&msg[r.clone()], Msg::Resource, range.start + r.start)?;
                resource_msg = Some(r.start + range.start..r.end + range.start);
                header.extend_from_slice(&msg[f.span.clone()]);
            }
            // 3: `schema_url`, a string.
            (1 | 2 | 3 | 1000, Value::Varint(_) | Value::I64(_) | Value::I32(_)) => {
                return Err(wrong_type(range.start + f.span.start))
            }
            _ => header.extend_from_slice(&msg[f.span.clone()]),
        }
    }
    let resource = Arc::new(resource_entry(buf, resource_msg, header)?);
    if scopes.is_empty() {
        scopes = deprecated;
    } else {
        // Validated as the decoder does, then dropped as it does.
        let mut scratch = ScannedBatch::default();
        for s in deprecated {
            scan_scope_spans(buf, s, &resource, &mut scratch)?;
        }
    }
    for s in scopes {
        scan_scope_spans(buf, s, &resource, out)?;
    }
    Ok(())
}

fn resource_entry(
    buf: &[u8],
    resource_msg: Option<Range<usize>>,
    header: Vec<u8>,
) -> Result<ResourceEntry, WireError> {
    let mut service = String::new();
    let mut host = HostIdentity::default();
    let mut sdk = Sdk::Other;
    if let Some(r) = resource_msg {
        let res = &buf[r.clone()];
        for f in Fields::new(res, r.start) {
            let f = f?;
            if let (1, Value::Len(kv)) = (f.number, &f.value) {
                let (key, sval) = read_kv(&res[kv.clone()], r.start + kv.start)?;
                match (key, sval) {
                    (b"service.name", Some(v)) => service = String::from_utf8_lossy(v).into_owned(),
                    (b"host.id", Some(v)) => host.set_id(v),
                    (b"host.name", Some(v)) => host.set_name(v),
                    (b"telemetry.sdk.language", Some(v)) => sdk = Sdk::from_language(v),
                    (b"host.ip", _) => {
                        let kvb = &res[kv.clone()];
                        if let Some(a) = kv_value(kvb, r.start + kv.start)? {
                            read_ips(&kvb[a.clone()], r.start + kv.start + a.start, &mut host)?;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let hash = hash_bytes(&header);
    Ok(ResourceEntry { header, hash, host, sdk, service, charge: OnceLock::new() })
}

fn scan_scope_spans(
    buf: &[u8],
    range: Range<usize>,
    resource: &Arc<ResourceEntry>,
    out: &mut ScannedBatch,
) -> Result<(), WireError> {
    let msg = &buf[range.clone()];
    let mut header = Vec::new();
    let group_idx = out.groups.len() as u32;
    let first_span = out.spans.len();
    for f in Fields::new(msg, range.start) {
        let f = f?;
        match (f.number, &f.value) {
            (2, Value::Len(r)) => {
                let abs = r.start + range.start..r.end + range.start;
                let mut tid = [0u8; 16];
                let mut rec = scan_span(buf, abs, &mut tid)?;
                rec.group = group_idx;
                out.spans.push(rec);
                out.trace_ids.push(tid);
            }
            (1, Value::Len(r)) => {
                validate(&msg[r.clone()], Msg::Scope, range.start + r.start)?;
                header.extend_from_slice(&msg[f.span.clone()]);
            }
            // 3: `schema_url`, a string.
            (1 | 2 | 3, Value::Varint(_) | Value::I64(_) | Value::I32(_)) => {
                return Err(wrong_type(range.start + f.span.start))
            }
            _ => header.extend_from_slice(&msg[f.span.clone()]),
        }
    }
    if out.spans.len() > first_span || !header.is_empty() {
        let hash = hash_bytes(&header);
        out.groups.push(Group {
            resource: Arc::clone(resource),
            scope: Arc::new(ScopeEntry { header, hash, charge: OnceLock::new() }),
        });
    }
    Ok(())
}

thread_local! {
    /// The validation work list, reused across spans.
    static SCRATCH: std::cell::RefCell<Vec<Pending>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn check(buf: &[u8], msg: Msg, base: usize) -> Result<(), WireError> {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut s) => validate_with(buf, msg, base, &mut s),
        Err(_) => validate(buf, msg, base),
    })
}

/// Indexes one `Span` message found at `range` of `buf`; its trace ID (zero when absent or
/// of the wrong length) goes to `trace_id`, kept beside the record rather than in it.
pub fn scan_span(buf: &[u8], range: Range<usize>, trace_id: &mut [u8; 16]) -> Result<SpanRec, WireError> {
    *trace_id = [0; 16];
    let msg = &buf[range.clone()];
    let base = range.start;
    let mut rec = SpanRec {
        span_id: 0,
        parent_id: 0,
        start: 0,
        end: 0,
        flags: 0,
        kind: 0,
        has_links: false,
        trace_id_valid: false,
        span_id_valid: false,
        hlc_wall: 0,
        hlc_logical: 0,
        findings: 0,
        group: 0,
        bytes: range.start as u32..range.end as u32,
        seq: 0,
        extra: None,
    };
    let mut trace_len = 0usize;
    let mut span_len = 0usize;
    for f in Fields::new(msg, base) {
        let f = f?;
        match (f.number, f.value) {
            (1, Value::Len(r)) => {
                let b = &msg[r];
                trace_len = b.len();
                if b.len() == 16 {
                    trace_id.copy_from_slice(b);
                    rec.trace_id_valid = b.iter().any(|&x| x != 0);
                } else if b.is_empty() {
                    // Absent (how pdata encodes a zero ID): invalid, nothing to report as
                    // an original value.
                    *trace_id = [0; 16];
                    rec.trace_id_valid = false;
                } else {
                    *trace_id = [0; 16];
                    rec.trace_id_valid = false;
                    rec.extra_mut().strip.push(off(0, &f.span));
                    rec.extra_mut().bad_ids.push(BadId { field: 1, original: b.to_vec() });
                }
            }
            (2, Value::Len(r)) => {
                let b = &msg[r];
                span_len = b.len();
                if b.len() == 8 {
                    rec.span_id = be_u64(b);
                    rec.span_id_valid = rec.span_id != 0;
                } else if b.is_empty() {
                    rec.span_id = 0;
                    rec.span_id_valid = false;
                } else {
                    rec.span_id = 0;
                    rec.span_id_valid = false;
                    rec.extra_mut().strip.push(off(0, &f.span));
                    rec.extra_mut().bad_ids.push(BadId { field: 2, original: b.to_vec() });
                }
            }
            (4, Value::Len(r)) => {
                let b = &msg[r];
                match b.len() {
                    0 => rec.parent_id = 0,
                    8 => rec.parent_id = be_u64(b),
                    _ => {
                        // Unusable parent: treated as absent (a root) and reported.
                        rec.parent_id = 0;
                        rec.extra_mut().strip.push(off(0, &f.span));
                        rec.extra_mut().bad_ids.push(BadId { field: 4, original: b.to_vec() });
                    }
                }
            }
            (6, Value::Varint(v)) => rec.kind = v.min(255) as u8,
            (7, Value::I64(v)) => rec.start = v,
            (8, Value::I64(v)) => rec.end = v,
            (9, Value::Len(r)) => {
                let kv = &msg[r.clone()];
                // Cheap path: key and scalar value, no further parsing; only keys with our
                // prefix are read in full.
                let key = match crate::schema::split_key_value(kv) {
                    Some((key, v)) if crate::schema::is_scalar_any_value(v) => key,
                    _ => {
                        check(kv, Msg::KeyValue, base + r.start)?;
                        read_kv(kv, base + r.start)?.0
                    }
                };
                if key.starts_with(ATTR_PREFIX) {
                    let (key, sval) = read_kv(kv, base + r.start)?;
                    rec.extra_mut().strip.push(off(0, &f.span));
                    if key == ATTR_HLC.as_bytes() {
                        rec.extra_mut().upstream_hlc = sval.and_then(Stamp::parse);
                    } else if key == ATTR_SPAN_HANDOFF.as_bytes() {
                        let e = rec.extra_mut();
                        e.handoff_marked = true;
                        e.handoff_hops = kv_int(kv, base + r.start).map_or(1, |v| v.clamp(0, u32::MAX as i64) as u32);
                    } else if key == ATTR_SPAN_HANDOFF_PROOF.as_bytes() {
                        rec.extra_mut().handoff_proof = kv_int(kv, base + r.start).map(|v| v as u64);
                    }
                }
            }
            (11, Value::Len(r)) => check(&msg[r.clone()], Msg::Event, base + r.start)?,
            (13, Value::Len(r)) => {
                check(&msg[r.clone()], Msg::Link, base + r.start)?;
                rec.has_links = true;
            }
            (15, Value::Len(r)) => check(&msg[r.clone()], Msg::Status, base + r.start)?,
            (16, Value::I32(v)) => rec.flags = v,
            (1 | 2 | 3 | 4 | 5 | 9 | 11 | 13 | 15, Value::Varint(_) | Value::I64(_) | Value::I32(_))
            | (6 | 10 | 12 | 14, Value::I64(_) | Value::I32(_) | Value::Len(_))
            | (7 | 8, Value::Varint(_) | Value::I32(_) | Value::Len(_))
            | (16, Value::Varint(_) | Value::I64(_) | Value::Len(_)) => {
                return Err(wrong_type(base + f.span.start));
            }
            _ => {}
        }
    }
    // An absent ID is as unusable as a zero one; a wrong-length one was recorded above.
    if trace_len == 0 {
        rec.trace_id_valid = false;
    }
    if span_len == 0 {
        rec.span_id_valid = false;
    }
    if let Some(e) = rec.extra.as_mut() {
        e.strip.sort_by_key(|r| r.start);
    }
    Ok(rec)
}

/// The integer value of a key-value, `None` for a value of another type. A
/// `consistency.span.handoff` marker without one counts as one hop (the span was handed off,
/// by a writer that did not say how often); hop counts are clamped to `0..=u32::MAX`.
fn kv_int(kv: &[u8], base: usize) -> Option<i64> {
    let mut int = None;
    for f in Fields::new(kv, base).flatten() {
        if let (2, Value::Len(r)) = (f.number, f.value) {
            let any = &kv[r.clone()];
            for g in Fields::new(any, base + r.start).flatten() {
                if let (3, Value::Varint(v)) = (g.number, g.value) {
                    int = Some(v as i64);
                }
            }
        }
    }
    int
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    #[test]
    fn index_matches_prost_decode() {
        let span = Span {
            trace_id: vec![7; 16],
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
            name: "op".into(),
            kind: 3,
            start_time_unix_nano: 100,
            end_time_unix_nano: 250,
            flags: 0x301,
            attributes: vec![kv("a", "b"), kv("consistency.hlc", "00000000000000000200.0000000003")],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "svc"), kv("host.name", "h1")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                schema_url: "s".into(),
            }],
        };
        let bytes = req.encode_to_vec();
        let b = scan_request(&bytes).unwrap();
        assert_eq!(b.spans.len(), 1);
        let s = &b.spans[0];
        assert_eq!(b.trace_ids[0], [7; 16]);
        assert!(s.trace_id_valid && s.span_id_valid);
        assert_eq!(s.span_id, 0x0102030405060708);
        assert_eq!(s.parent_id, 9);
        assert_eq!((s.start, s.end, s.kind, s.flags), (100, 250, 3, 0x301));
        assert_eq!(s.upstream_hlc(), Some(Stamp { wall: 200, logical: 3 }));
        assert_eq!(s.strip().len(), 1);
        assert_eq!(b.groups[s.group as usize].resource.service, "svc");
        assert!(b.groups[0].resource.host.is_known());
    }

    #[test]
    fn attributes_written_value_first_as_pdata_does_are_recognised() {
        // KeyValue{value: AnyValue{string}, key} in pdata's order: field 2 before field 1.
        let stamp = b"00000000000000000200.0000000003";
        let key = b"consistency.hlc";
        let mut any = vec![0x0a, stamp.len() as u8];
        any.extend_from_slice(stamp);
        let mut kv = vec![0x12, any.len() as u8];
        kv.extend_from_slice(&any);
        kv.push(0x0a);
        kv.push(key.len() as u8);
        kv.extend_from_slice(key);
        let mut span = Span { trace_id: vec![7; 16], span_id: vec![1; 8], ..Default::default() }.encode_to_vec();
        span.push(0x4a);
        span.push(kv.len() as u8);
        span.extend_from_slice(&kv);
        let mut tid = [0; 16];
        let rec = scan_span(&span, 0..span.len(), &mut tid).unwrap();
        assert_eq!(rec.upstream_hlc(), Some(Stamp { wall: 200, logical: 3 }));
        assert_eq!(rec.strip().len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(scan_request(&[0x0a, 0xff, 0xff]).is_err());
        assert!(scan_request(b"\x0a\x02\x12\x05").is_err());
        assert!(scan_request(&[]).unwrap().spans.is_empty());
    }
}
