//! Shared oracles of the fuzz targets (see FUZZING.md at the repository root).
//!
//! - [`lax`]: the OTLP trace messages as prost types, with every `string` field as `bytes`.
//!   The collector's decoder (pdata) does not check strings for UTF-8 and neither does the
//!   engine; opentelemetry-proto's prost types do. Decoding with these types is "prost minus
//!   the UTF-8 check", the closest prost gets to pdata. Field numbers and wire types follow
//!   opentelemetry-proto v1.x (`trace.proto`, `common.proto`, `resource.proto`).
//! - [`decode_lax`], [`decode_strict`]: full decodes used as oracles.
//! - [`valid_request`]: a small valid request built like `rust/testutil.rs`.

pub mod lax {
    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
        #[prost(bytes = "vec", tag = "3")]
        pub schema_url: Vec<u8>,
        /// `deprecated_scope_spans` (InstrumentationLibrarySpans), still decoded by pdata;
        /// pdata uses it when `scope_spans` is empty (otlp.MigrateTraces).
        #[prost(message, repeated, tag = "1000")]
        pub deprecated_scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
        #[prost(bytes = "vec", tag = "3")]
        pub schema_url: Vec<u8>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "2")]
        pub dropped_attributes_count: u32,
        #[prost(message, repeated, tag = "3")]
        pub entity_refs: Vec<EntityRef>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct EntityRef {
        #[prost(bytes = "vec", tag = "1")]
        pub schema_url: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub r#type: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub id_keys: Vec<Vec<u8>>,
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub description_keys: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct InstrumentationScope {
        #[prost(bytes = "vec", tag = "1")]
        pub name: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub version: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub trace_state: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub name: Vec<u8>,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "10")]
        pub dropped_attributes_count: u32,
        #[prost(message, repeated, tag = "11")]
        pub events: Vec<Event>,
        #[prost(uint32, tag = "12")]
        pub dropped_events_count: u32,
        #[prost(message, repeated, tag = "13")]
        pub links: Vec<Link>,
        #[prost(uint32, tag = "14")]
        pub dropped_links_count: u32,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Event {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(bytes = "vec", tag = "2")]
        pub name: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct Link {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub trace_state: Vec<u8>,
        #[prost(message, repeated, tag = "4")]
        pub attributes: Vec<KeyValue>,
        #[prost(uint32, tag = "5")]
        pub dropped_attributes_count: u32,
        #[prost(fixed32, tag = "6")]
        pub flags: u32,
    }

    /// `Status`: field 1 is reserved in trace.proto (a deprecated code) and unknown to pdata,
    /// which skips it whatever its wire type.
    #[derive(Clone, PartialEq, Message)]
    pub struct Status {
        #[prost(bytes = "vec", tag = "2")]
        pub message: Vec<u8>,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct KeyValue {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
        /// `key_strindex` (profiles only; pdata decodes it as a varint).
        #[prost(int32, tag = "3")]
        pub key_strindex: i32,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
        pub value: Option<any_value::Value>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(bytes, tag = "1")]
            StringValue(Vec<u8>),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            #[prost(bytes, tag = "7")]
            BytesValue(Vec<u8>),
            /// `string_value_strindex` (profiles only; pdata decodes it as a varint).
            #[prost(int32, tag = "8")]
            StringValueStrindex(i32),
        }
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    #[derive(Clone, PartialEq, Message)]
    pub struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

use prost::Message;

/// Whether the scan's refusal of input prost decodes is explained: unknown fields in group
/// encoding (wire types 3/4). prost skips them; the engine refuses them, and so does pdata
/// (its ConsumeUnknown fails with "unexpected EOF" on a group ending its message), so this is
/// not a divergence from the collector.
pub fn known_refusal(what: &str) -> bool {
    what == "groups are not supported"
}

/// Decodes with the lax types (no UTF-8 check). `Err` carries prost's message.
/// Like the collector's decoder, `deprecated_scope_spans` are used when a `ResourceSpans`
/// has no `scope_spans` (moved there); otherwise they stay where they are, decoded (so
/// [`pdata_only_refusal`] sees them) but not delivered ([`spans`] skips them).
pub fn decode_lax(b: &[u8]) -> Result<lax::ExportTraceServiceRequest, String> {
    let mut req = lax::ExportTraceServiceRequest::decode(b).map_err(|e| e.to_string())?;
    for rs in &mut req.resource_spans {
        if rs.scope_spans.is_empty() {
            rs.scope_spans = std::mem::take(&mut rs.deprecated_scope_spans);
        }
    }
    Ok(req)
}

/// Every decoded span, delivered or not (see [`decode_lax`]).
fn decoded_spans(req: &lax::ExportTraceServiceRequest) -> impl Iterator<Item = &lax::Span> {
    req.resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().chain(rs.deprecated_scope_spans.iter()))
        .flat_map(|ss| ss.spans.iter())
}

/// Decodes with opentelemetry-proto's own prost types (strings must be UTF-8).
pub fn decode_strict(
    b: &[u8],
) -> Result<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest, String> {
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(b).map_err(|e| e.to_string())
}

/// The spans of a lax-decoded request, in order.
pub fn spans(req: &lax::ExportTraceServiceRequest) -> impl Iterator<Item = &lax::Span> {
    req.resource_spans.iter().flat_map(|rs| rs.scope_spans.iter()).flat_map(|ss| ss.spans.iter())
}

/// The deepest attribute level in the request, counted as the collector's decoder (pdata)
/// counts it: an attribute's `KeyValue` is level 0 and each `AnyValue`, `ArrayValue`,
/// `KeyValueList` and nested `KeyValue` below it one more. pdata refuses a message at level
/// 100 or deeper. prost's decode is built with `no-recursion-limit`, so it reports no limit of
/// its own, and its tree cannot be used: prost keeps only the last occurrence of a `oneof`
/// value (`AnyValue.value`) that occurs several times in one message, where pdata decodes,
/// and counts the nesting of, every occurrence in turn. So this walks the wire bytes, every
/// occurrence of every message field on the way to an attribute, independently of the
/// engine's validator (`rust/schema.rs`). Meant for input prost (lax) decodes; anything it
/// cannot parse it stops at (prost would have refused it).
pub fn max_attribute_level(data: &[u8]) -> usize {
    #[derive(Clone, Copy)]
    enum M {
        Request,
        ResourceSpans,
        Resource,
        ScopeSpans,
        Scope,
        Span,
        Event,
        Link,
        KeyValue,
        AnyValue,
        ArrayValue,
        KeyValueList,
    }
    /// The message type of field `f` of `m` (length-delimited), if it leads to attributes.
    fn child(m: M, f: u64) -> Option<M> {
        Some(match (m, f) {
            (M::Request, 1) => M::ResourceSpans,
            (M::ResourceSpans, 1) => M::Resource,
            (M::ResourceSpans, 2 | 1000) => M::ScopeSpans,
            (M::Resource, 1) => M::KeyValue,
            (M::ScopeSpans, 1) => M::Scope,
            (M::ScopeSpans, 2) => M::Span,
            (M::Scope, 3) => M::KeyValue,
            (M::Span, 9) => M::KeyValue,
            (M::Span, 11) => M::Event,
            (M::Span, 13) => M::Link,
            (M::Event, 3) => M::KeyValue,
            (M::Link, 4) => M::KeyValue,
            (M::KeyValue, 2) => M::AnyValue,
            (M::AnyValue, 5) => M::ArrayValue,
            (M::AnyValue, 6) => M::KeyValueList,
            (M::ArrayValue, 1) => M::AnyValue,
            (M::KeyValueList, 1) => M::KeyValue,
            _ => return None,
        })
    }
    fn attribute(m: M) -> bool {
        matches!(m, M::KeyValue | M::AnyValue | M::ArrayValue | M::KeyValueList)
    }
    let mut deepest = 0;
    // (message type, bytes, attribute level: meaningful only inside an attribute)
    let mut stack: Vec<(M, &[u8], usize)> = vec![(M::Request, data, 0)];
    while let Some((m, b, level)) = stack.pop() {
        if attribute(m) {
            deepest = deepest.max(level);
        }
        let mut i = 0;
        while i < b.len() {
            let Some(key) = varint(b, &mut i) else { break };
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    if varint(b, &mut i).is_none() {
                        break;
                    }
                }
                1 => i += 8,
                5 => i += 4,
                2 => {
                    let Some(n) = varint(b, &mut i) else { break };
                    let Some(end) = usize::try_from(n).ok().and_then(|n| i.checked_add(n)).filter(|&e| e <= b.len()) else {
                        break;
                    };
                    if let Some(c) = child(m, field) {
                        let l = if attribute(m) { level + 1 } else { 0 };
                        stack.push((c, &b[i..end], l));
                    }
                    i = end;
                }
                // A group: prost skips it whole (none is a known field, so nothing in it
                // counts) and goes on with the next field; the scan refuses it
                // (`known_refusal`).
                3 => {
                    if skip_group(b, &mut i, field, 0).is_none() {
                        break;
                    }
                }
                // An end of group without its start, or an invalid wire type: prost fails.
                _ => break,
            }
        }
    }
    deepest
}

/// Reads a protobuf varint at `*i` and advances past it; `None` when the bytes end first or
/// it runs over ten bytes.
fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let x = *b.get(*i)?;
        *i += 1;
        if shift < 64 {
            v |= u64::from(x & 0x7f) << shift;
        }
        if x & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Skips the rest of group `field` whose start tag was just read, like prost's skip of an
/// unknown group: nested fields and groups up to the matching end tag. `None` when the group
/// is cut short or malformed.
fn skip_group(b: &[u8], i: &mut usize, field: u64, depth: usize) -> Option<()> {
    if depth >= 100 {
        return None;
    }
    loop {
        let key = varint(b, i)?;
        let (f, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(b, i)?;
            }
            1 => *i = i.checked_add(8).filter(|&e| e <= b.len())?,
            5 => *i = i.checked_add(4).filter(|&e| e <= b.len())?,
            2 => {
                let n = usize::try_from(varint(b, i)?).ok()?;
                *i = i.checked_add(n).filter(|&e| e <= b.len())?;
            }
            3 => skip_group(b, i, f, depth + 1)?,
            4 if f == field => return Some(()),
            _ => return None,
        }
    }
}

/// The same level computed from prost's decoded tree, which sees only the last occurrence of
/// a repeated `oneof` value: never deeper than [`max_attribute_level`] (a cross-check of the
/// wire walk).
pub fn max_attribute_level_decoded(req: &lax::ExportTraceServiceRequest) -> usize {
    fn kv(k: &lax::KeyValue, level: usize) -> usize {
        k.value.as_ref().map_or(level, |v| any(v, level + 1))
    }
    fn any(v: &lax::AnyValue, level: usize) -> usize {
        match &v.value {
            Some(lax::any_value::Value::ArrayValue(a)) => {
                a.values.iter().map(|x| any(x, level + 2)).max().unwrap_or(level + 1)
            }
            Some(lax::any_value::Value::KvlistValue(l)) => {
                l.values.iter().map(|x| kv(x, level + 2)).max().unwrap_or(level + 1)
            }
            _ => level,
        }
    }
    fn all(a: &[lax::KeyValue]) -> usize {
        a.iter().map(|k| kv(k, 0)).max().unwrap_or(0)
    }
    let mut m = 0;
    for rs in &req.resource_spans {
        if let Some(r) = &rs.resource {
            m = m.max(all(&r.attributes));
        }
        for ss in rs.scope_spans.iter().chain(rs.deprecated_scope_spans.iter()) {
            if let Some(sc) = &ss.scope {
                m = m.max(all(&sc.attributes));
            }
            for s in &ss.spans {
                m = m.max(all(&s.attributes));
                for e in &s.events {
                    m = m.max(all(&e.attributes));
                }
                for l in &s.links {
                    m = m.max(all(&l.attributes));
                }
            }
        }
    }
    m
}

/// pdata's nesting limit: a message at this attribute level is refused.
pub const PDATA_MAX_DEPTH: usize = 100;

/// Why pdata refuses a request that prost (lax) decodes, if it does: `Some("link")` for a
/// link ID of the wrong length, `Some("nested")` for attribute nesting at level 100 or more.
/// `data` is the request's encoding, `req` its lax decode.
pub fn pdata_only_refusal(data: &[u8], req: &lax::ExportTraceServiceRequest) -> Option<&'static str> {
    if has_bad_link_id(req) {
        Some("link")
    } else if max_attribute_level(data) >= PDATA_MAX_DEPTH {
        Some("nested")
    } else {
        None
    }
}

/// Whether some link in the request has a non-empty trace ID other than 16 bytes or span
/// ID other than 8 bytes: pdata (and the engine's schema) refuse it, prost does not check.
pub fn has_bad_link_id(req: &lax::ExportTraceServiceRequest) -> bool {
    decoded_spans(req).flat_map(|s| s.links.iter()).any(|l| {
        (!l.trace_id.is_empty() && l.trace_id.len() != 16) || (!l.span_id.is_empty() && l.span_id.len() != 8)
    })
}

/// `(name, start, end)` of every span: what the engine forwards unchanged (IDs of the wrong
/// length are stripped and attributes added on the way out; with skew correction off, the
/// times and the name are the span's own).
pub fn span_keys(req: &lax::ExportTraceServiceRequest) -> Vec<(Vec<u8>, u64, u64)> {
    spans(req).map(|s| (s.name.clone(), s.start_time_unix_nano, s.end_time_unix_nano)).collect()
}

/// Asserts that `out` is a sub-multiset of `input`.
pub fn assert_sub_multiset(out: &[(Vec<u8>, u64, u64)], input: &[(Vec<u8>, u64, u64)]) {
    use std::collections::HashMap;
    let mut avail: HashMap<&(Vec<u8>, u64, u64), i64> = HashMap::new();
    for k in input {
        *avail.entry(k).or_default() += 1;
    }
    for k in out {
        let n = avail.entry(k).or_default();
        *n -= 1;
        assert!(*n >= 0, "span {k:?} left the engine more often than it came in");
    }
}

// The OTLP fixture of the crate's tests and benches: the wall clock origin the targets use
// (`T0`), and a small valid request.
#[path = "../../rust/fixture.rs"]
mod fixture;
pub use fixture::{valid_request, SEC, T0};

/// A fresh directory for this process's temporary files (state files), emptied on each call.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tcfuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
