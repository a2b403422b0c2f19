//! The zero-copy scan of an `ExportTraceServiceRequest` into index records.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use crate::hlc::Stamp;
use crate::schema::{validate, validate_with, Msg, Pending};
use crate::wire::{read_kv, Fields, Value, WireError};

use crate::checks::clock::{kv_value, read_ips, HostIdentity, Sdk};
use crate::attrs::{ATTR_HLC, ATTR_PREFIX, ATTR_SPAN_HANDOFF, ATTR_SPAN_HANDOFF_PROOF};

use super::record::*;

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
