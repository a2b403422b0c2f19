//! Structural validation of OTLP trace messages against their schema, without decoding.
//!
//! The engine forwards each span's original bytes. A span whose nested messages are not
//! well formed (a truncated attribute, a known field with the wrong wire type, a link ID of
//! the wrong length) would make the *whole* released batch undecodable downstream, so such
//! input is refused at ingest, whole batch, with the offset and the reason. The rules follow
//! what the collector's pdata decoder rejects; like pdata, string contents are not checked
//! for UTF-8 and unknown fields are allowed (and forwarded).

use crate::wire::{Fields, Value, WireError};

/// OTLP messages that can appear inside a span, resource or scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg {
    Span,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    Event,
    Link,
    Status,
    Resource,
    EntityRef,
    Scope,
}

/// What a known field must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Varint,
    I64,
    I32,
    /// Bytes or string, any length.
    Bytes,
    /// Bytes of exactly this length, or empty.
    Id(usize),
    Message(Msg),
}

/// Nesting limit of attribute values, counted as the collector's decoder (pdata) counts it:
/// an attribute's `KeyValue` is level 0, each `AnyValue`, `ArrayValue`, `KeyValueList` and
/// nested `KeyValue` below it one more; a message at level `MAX_DEPTH` is refused.
pub const MAX_DEPTH: usize = 100;

/// The messages that nest inside one attribute (the only recursive part of the schema).
fn in_attribute(m: Msg) -> bool {
    matches!(m, Msg::KeyValue | Msg::AnyValue | Msg::ArrayValue | Msg::KeyValueList)
}

fn expect(msg: Msg, field: u32) -> Option<Expect> {
    use Expect::*;
    Some(match (msg, field) {
        (Msg::Span, 1 | 2 | 4) => return None, // IDs: checked (and repaired) by the span scan
        (Msg::Span, 3 | 5) => Bytes,
        (Msg::Span, 6 | 10 | 12 | 14) => Varint,
        (Msg::Span, 7 | 8) => I64,
        (Msg::Span, 9) => Message(Msg::KeyValue),
        (Msg::Span, 11) => Message(Msg::Event),
        (Msg::Span, 13) => Message(Msg::Link),
        (Msg::Span, 15) => Message(Msg::Status),
        (Msg::Span, 16) => I32,
        (Msg::KeyValue, 1) => Bytes,
        (Msg::KeyValue, 2) => Message(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1 | 7) => Bytes,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => I64,
        (Msg::AnyValue, 5) => Message(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Message(Msg::KeyValueList),
        (Msg::ArrayValue, 1) => Message(Msg::AnyValue),
        (Msg::KeyValueList, 1) => Message(Msg::KeyValue),
        (Msg::Event, 1) => I64,
        (Msg::Event, 2) => Bytes,
        (Msg::Event, 3) => Message(Msg::KeyValue),
        (Msg::Event, 4) => Varint,
        (Msg::Link, 1) => Id(16),
        (Msg::Link, 2) => Id(8),
        (Msg::Link, 3) => Bytes,
        (Msg::Link, 4) => Message(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => I32,
        // Field 1 is reserved (a deprecated code): skipped, as the collector's decoder does.
        (Msg::Status, 3) => Varint,
        (Msg::Status, 2) => Bytes,
        (Msg::Resource, 1) => Message(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => Message(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Bytes,
        (Msg::Scope, 1 | 2) => Bytes,
        (Msg::Scope, 3) => Message(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        _ => return None,
    })
}

/// Validates the message `msg` held in `buf[range]`; `base` is added to reported offsets.
/// Iterative (an explicit stack), so hostile nesting cannot overflow the call stack.
pub fn validate(buf: &[u8], msg: Msg, base: usize) -> Result<(), WireError> {
    validate_with(buf, msg, base, &mut Vec::new())
}

/// The key of a `KeyValue` and its value's bytes, when the message is just those two
/// length-delimited fields in either order (prost writes the key first, the collector's pdata
/// writes the value first). `None` means "not this simple shape", not "invalid".
#[inline]
pub fn split_key_value(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut pos = 0;
    let mut key = None;
    let mut value: Option<&[u8]> = None;
    while pos < kv.len() {
        let tag = kv[pos];
        pos += 1;
        let n = crate::wire::read_varint(kv, &mut pos).ok()? as usize;
        let end = pos.checked_add(n).filter(|&e| e <= kv.len())?;
        let body = &kv[pos..end];
        pos = end;
        match tag {
            0x0a if key.is_none() => key = Some(body),
            0x12 if value.is_none() => value = Some(body),
            _ => return None,
        }
    }
    Some((key.unwrap_or(&[]), value.unwrap_or(&[])))
}

/// The common `KeyValue` — a key and a scalar `AnyValue` (string, bool, int, double,
/// bytes) — recognised without the general machinery. `false` means "not this simple
/// shape", not "invalid": the caller then runs [`validate`].
#[inline]
pub fn is_simple_key_value(kv: &[u8]) -> bool {
    split_key_value(kv).is_some_and(|(_, v)| is_scalar_any_value(v))
}

/// Whether `v` is an `AnyValue` holding one scalar (or nothing), well formed.
#[inline]
pub fn is_scalar_any_value(v: &[u8]) -> bool {
    let mut p = 1;
    match v.first() {
        None => true,                                   // empty AnyValue
        Some(0x0a) | Some(0x3a) => {                    // string_value, bytes_value
            matches!(crate::wire::read_varint(v, &mut p), Ok(n) if p.checked_add(n as usize) == Some(v.len()))
        }
        Some(0x10) | Some(0x18) => crate::wire::read_varint(v, &mut p).is_ok() && p == v.len(), // bool, int
        Some(0x21) => v.len() == 9,                     // double
        _ => false,
    }
}

/// A work item of [`validate_with`]: message type, byte range, depth.
pub type Pending = (Msg, usize, usize, usize);

/// [`validate`] with a caller-owned work list, so that scanning a batch allocates it once.
pub fn validate_with(buf: &[u8], msg: Msg, base: usize, stack: &mut Vec<Pending>) -> Result<(), WireError> {
    stack.clear();
    stack.push((msg, 0, buf.len(), 0));
    while let Some((m, start, end, depth)) = stack.pop() {
        if depth >= MAX_DEPTH {
            return Err(WireError { offset: base + start, what: "attribute values nested 100 levels deep or more (the collector's decoder limit)" });
        }
        let body = &buf[start..end];
        for f in Fields::new(body, base + start) {
            let f = f?;
            let Some(want) = expect(m, f.number) else { continue };
            let at = base + start + f.span.start;
            let ok = match (want, &f.value) {
                (Expect::Varint, Value::Varint(_)) | (Expect::I64, Value::I64(_)) | (Expect::I32, Value::I32(_)) => true,
                (Expect::Bytes, Value::Len(_)) => true,
                (Expect::Id(n), Value::Len(r)) => {
                    if r.len() != n && !r.is_empty() {
                        return Err(WireError { offset: at, what: "link trace_id/span_id of the wrong length" });
                    }
                    true
                }
                (Expect::Message(sub), Value::Len(r)) => {
                    // Levels count within an attribute only, as pdata counts them.
                    let level = if in_attribute(m) && in_attribute(sub) { depth + 1 } else { 0 };
                    stack.push((sub, start + r.start, start + r.end, level));
                    true
                }
                _ => false,
            };
            if !ok {
                return Err(WireError { offset: at, what: "known field with the wrong wire type" });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::Status;
    use prost::Message;

    #[test]
    fn a_full_span_is_valid() {
        let mut s = span(1, 2, 1, 10, 20);
        s.events.push(Event { time_unix_nano: 15, name: "e".into(), attributes: vec![kv("a", "b")], ..Default::default() });
        s.links.push(Link { trace_id: tid(9), span_id: sid(3), ..Default::default() });
        s.status = Some(Status { message: "m".into(), code: 2 });
        s.attributes.push(KeyValue {
            key: "arr".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(any_value::Value::IntValue(1)) }],
                })),
            }),
            ..Default::default()
        });
        validate(&s.encode_to_vec(), Msg::Span, 0).unwrap();
    }

    #[test]
    fn wrong_wire_type_truncation_bad_link_ids_and_deep_nesting_are_refused() {
        // Field 9 (attributes) as a varint.
        let mut b = span(1, 2, 1, 10, 20).encode_to_vec();
        b.extend_from_slice(&[9 << 3, 1]);
        assert_eq!(validate(&b, Msg::Span, 0).unwrap_err().what, "known field with the wrong wire type");
        // An attribute whose AnyValue is truncated.
        let mut b = span(1, 2, 1, 10, 20).encode_to_vec();
        b.extend_from_slice(&[0x4a, 4, 0x12, 5, 0x0a, 1]);
        assert!(validate(&b, Msg::Span, 0).is_err());
        // A link with a 3-byte trace id.
        let mut s = span(1, 2, 1, 10, 20);
        s.links.push(Link { trace_id: vec![1, 2, 3], ..Default::default() });
        assert!(validate(&s.encode_to_vec(), Msg::Span, 0).is_err());
    }

    /// A span with one attribute holding `arrays` nested arrays: its deepest message sits at
    /// level `2 * arrays + 1` as the collector's decoder counts (the KeyValue is level 0).
    fn nested_span(arrays: usize) -> Vec<u8> {
        let mut v = AnyValue { value: Some(any_value::Value::IntValue(1)) };
        for _ in 0..arrays {
            v = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })) };
        }
        let mut s = span(1, 2, 1, 10, 20);
        s.attributes.push(KeyValue { key: "deep".into(), value: Some(v), ..Default::default() });
        s.encode_to_vec()
    }

    #[test]
    fn attribute_nesting_is_limited_where_the_collector_limits_it() {
        // Level 99 is the deepest pdata decodes; level 100 is refused by both.
        assert!(validate(&nested_span(49), Msg::Span, 0).is_ok(), "level 99 accepted");
        assert!(validate(&nested_span(44), Msg::Span, 0).is_ok(), "level 89 accepted");
        let err = validate(&nested_span(50), Msg::Span, 0).unwrap_err();
        assert!(err.what.contains("nested"), "{err}");
        assert!(validate(&nested_span(55), Msg::Span, 0).is_err(), "level 111 refused");
    }

    #[test]
    fn the_simple_key_value_fast_path_agrees_with_the_general_validator() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..24), |bytes| {
                if is_simple_key_value(&bytes) {
                    prop_assert!(validate(&bytes, Msg::KeyValue, 0).is_ok(), "{:?}", bytes);
                }
                Ok(())
            })
            .unwrap();
        for v in [
            any_value::Value::StringValue("s".into()),
            any_value::Value::BoolValue(true),
            any_value::Value::IntValue(-5),
            any_value::Value::DoubleValue(1.5),
            any_value::Value::BytesValue(vec![1, 2]),
        ] {
            let kv = KeyValue { key: "k".into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() };
            assert!(is_simple_key_value(&kv.encode_to_vec()));
        }
        assert!(!is_simple_key_value(&[0x0a, 0x01]));
        // The collector's pdata writes the value before the key.
        assert!(is_simple_key_value(&[0x12, 0x03, 0x0a, 0x01, b'v', 0x0a, 0x01, b'k']));
        assert_eq!(split_key_value(&[0x12, 0x03, 0x0a, 0x01, b'v', 0x0a, 0x01, b'k']), Some((&b"k"[..], &[0x0a, 0x01, b'v'][..])));
    }

    #[test]
    fn unknown_fields_are_allowed() {
        let mut b2 = span(1, 2, 1, 10, 20).encode_to_vec();
        crate::wire::put_tag(&mut b2, 99, crate::wire::WT_VARINT);
        b2.push(3);
        validate(&b2, Msg::Span, 0).unwrap();
    }
}
