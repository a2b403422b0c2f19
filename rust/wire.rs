//! Minimal protobuf wire-format reading and writing: just what the engine needs to index
//! OTLP spans without decoding them and to splice bytes on the way out.
//!
//! Nothing here allocates on the read path; every error is a [`WireError`] naming the
//! offset, never a panic.

use std::fmt;
use std::ops::Range;

pub const WT_VARINT: u8 = 0;
pub const WT_I64: u8 = 1;
pub const WT_LEN: u8 = 2;
pub const WT_SGROUP: u8 = 3;
pub const WT_EGROUP: u8 = 4;
pub const WT_I32: u8 = 5;

/// Why a byte string is not a valid protobuf message of the expected shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed protobuf at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for WireError {}

/// A field's value as found on the wire. `Len` is a range into the message being scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(Range<usize>),
}

/// One field of a message: its number, value and the byte range the whole field (tag
/// included) occupies in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub number: u32,
    pub value: Value,
    pub span: Range<usize>,
}

#[inline]
pub fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    // Fast path: tags, lengths and small values are one byte.
    if let Some(&b) = buf.get(*pos) {
        if b < 0x80 {
            *pos += 1;
            return Ok(u64::from(b));
        }
    }
    let mut result: u64 = 0;
    let start = *pos;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(WireError { offset: start, what: "truncated varint" });
        };
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(WireError { offset: start, what: "varint longer than 64 bits" });
        }
        result |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(result);
        }
    }
    Err(WireError { offset: start, what: "varint longer than 10 bytes" })
}

/// Iterates the fields of one message. Groups (deprecated wire types 3/4) are refused.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    /// `base` is added to reported offsets so errors point into the outermost buffer.
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Fields { buf, pos: 0, base, failed: false }
    }

    #[inline(always)]
    fn next_field(&mut self) -> Result<Field, WireError> {
        let start = self.pos;
        let err = |what| WireError { offset: self.base + start, what };
        let key = read_varint(self.buf, &mut self.pos).map_err(|e| WireError {
            offset: self.base + e.offset,
            what: e.what,
        })?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(err("invalid field number"));
        }
        let value = match (key & 7) as u8 {
            WT_VARINT => Value::Varint(read_varint(self.buf, &mut self.pos).map_err(|e| {
                WireError { offset: self.base + e.offset, what: e.what }
            })?),
            WT_I64 => {
                let end = self.pos + 8;
                let bytes = self.buf.get(self.pos..end).ok_or_else(|| err("truncated fixed64"))?;
                self.pos = end;
                Value::I64(u64::from_le_bytes(bytes.try_into().unwrap()))
            }
            WT_I32 => {
                let end = self.pos + 4;
                let bytes = self.buf.get(self.pos..end).ok_or_else(|| err("truncated fixed32"))?;
                self.pos = end;
                Value::I32(u32::from_le_bytes(bytes.try_into().unwrap()))
            }
            WT_LEN => {
                let len = read_varint(self.buf, &mut self.pos).map_err(|e| WireError {
                    offset: self.base + e.offset,
                    what: e.what,
                })?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.buf.len())
                    .ok_or_else(|| err("length-delimited field runs past the end"))?;
                let r = self.pos..end;
                self.pos = end;
                Value::Len(r)
            }
            WT_SGROUP | WT_EGROUP => return Err(err("groups are not supported")),
            _ => return Err(err("unknown wire type")),
        };
        Ok(Field { number: number as u32, value, span: start..self.pos })
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_field();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

#[inline]
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u8) {
    put_varint(out, (u64::from(number) << 3) | u64::from(wire_type));
}

/// Size of a length-delimited field with a payload of `len` bytes.
#[inline]
pub fn len_field_size(number: u32, len: usize) -> usize {
    varint_len(u64::from(number) << 3) + varint_len(len as u64) + len
}

#[inline]
pub fn put_len_header(out: &mut Vec<u8>, number: u32, len: usize) {
    put_tag(out, number, WT_LEN);
    put_varint(out, len as u64);
}

#[inline]
pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_len_header(out, number, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a `KeyValue` (as a field `number` of the enclosing message) whose value is an
/// `AnyValue`.
pub fn put_kv(out: &mut Vec<u8>, number: u32, key: &str, value: &AnyValueRef<'_>) {
    let value_len = value.encoded_len();
    let kv_len = len_field_size(1, key.len()) + len_field_size(2, value_len);
    put_len_header(out, number, kv_len);
    put_bytes_field(out, 1, key.as_bytes());
    put_len_header(out, 2, value_len);
    value.encode(out);
}

/// The few `AnyValue` shapes the engine writes.
pub enum AnyValueRef<'a> {
    Str(&'a str),
    /// A string given as its bytes, for text the engine formats itself in ASCII (a stamp):
    /// encoded as `Str`, without checking it is UTF-8 again.
    Ascii(&'a [u8]),
    Bool(bool),
    Int(i64),
    StrArray(&'a [&'a str]),
}

impl AnyValueRef<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            AnyValueRef::Str(s) => len_field_size(1, s.len()),
            AnyValueRef::Ascii(s) => len_field_size(1, s.len()),
            AnyValueRef::Bool(_) => 2,
            AnyValueRef::Int(i) => 1 + varint_len(*i as u64),
            AnyValueRef::StrArray(items) => len_field_size(5, Self::array_len(items)),
        }
    }

    fn array_len(items: &[&str]) -> usize {
        items
            .iter()
            .map(|s| len_field_size(1, len_field_size(1, s.len())))
            .sum()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AnyValueRef::Str(s) => put_bytes_field(out, 1, s.as_bytes()),
            AnyValueRef::Ascii(s) => put_bytes_field(out, 1, s),
            AnyValueRef::Bool(b) => {
                put_tag(out, 2, WT_VARINT);
                out.push(u8::from(*b));
            }
            AnyValueRef::Int(i) => {
                put_tag(out, 3, WT_VARINT);
                put_varint(out, *i as u64);
            }
            AnyValueRef::StrArray(items) => {
                put_len_header(out, 5, Self::array_len(items));
                for s in items.iter() {
                    put_len_header(out, 1, len_field_size(1, s.len()));
                    put_bytes_field(out, 1, s.as_bytes());
                }
            }
        }
    }
}

/// Reads a `KeyValue` message: its key and, when the value is a string, the string.
/// Returns `(key, string_value)`; non-string values give `None`.
pub fn read_kv(buf: &[u8], base: usize) -> Result<(&[u8], Option<&[u8]>), WireError> {
    let mut key: &[u8] = &[];
    let mut sval = None;
    for f in Fields::new(buf, base) {
        let f = f?;
        match (f.number, f.value) {
            (1, Value::Len(r)) => key = &buf[r],
            (2, Value::Len(r)) => {
                let any = &buf[r.clone()];
                sval = None;
                for g in Fields::new(any, base + r.start) {
                    let g = g?;
                    if let (1, Value::Len(s)) = (g.number, g.value) {
                        sval = Some(&any[s]);
                    }
                }
            }
            _ => {}
        }
    }
    Ok((key, sval))
}

/// Shifts a span's start, end and event times by `delta` ns, in place (fixed64 fields keep
/// their width, so no length changes). Malformed input is left as is.
pub fn shift_span_times(span: &mut [u8], delta: i64) {
    let mut patches: Vec<usize> = Vec::new();
    for f in Fields::new(span, 0) {
        let Ok(f) = f else { return };
        match (f.number, &f.value) {
            (7 | 8, Value::I64(_)) => patches.push(f.span.end - 8),
            (11, Value::Len(r)) => {
                for g in Fields::new(&span[r.clone()], 0) {
                    let Ok(g) = g else { return };
                    if let (1, Value::I64(_)) = (g.number, &g.value) {
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
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos).unwrap(), v);
            assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn truncated_and_overlong_input_is_an_error_not_a_panic() {
        let mut pos = 0;
        assert!(read_varint(&[0x80, 0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varint(&[0xff; 11], &mut pos).is_err());
        // Field 1, length 5, but only 2 bytes follow.
        let bad = [0x0a, 0x05, 1, 2];
        let r: Result<Vec<_>, _> = Fields::new(&bad, 0).collect();
        assert!(r.is_err());
        // Group wire type.
        let r: Result<Vec<_>, _> = Fields::new(&[0x0b], 0).collect();
        assert!(r.is_err());
        // Field number zero.
        let r: Result<Vec<_>, _> = Fields::new(&[0x02, 0x00], 0).collect();
        assert!(r.is_err());
    }

    #[test]
    fn written_key_values_decode_with_prost() {
        use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
        use prost::Message;
        let cases: Vec<(AnyValueRef, any_value::Value)> = vec![
            (AnyValueRef::Str("x"), any_value::Value::StringValue("x".into())),
            (AnyValueRef::Ascii(b"00000000000000000200.0000000003"), any_value::Value::StringValue("00000000000000000200.0000000003".into())),
            (AnyValueRef::Bool(true), any_value::Value::BoolValue(true)),
            (AnyValueRef::Int(-3), any_value::Value::IntValue(-3)),
            (AnyValueRef::Int(1 << 40), any_value::Value::IntValue(1 << 40)),
        ];
        for (v, want) in cases {
            let mut out = Vec::new();
            put_kv(&mut out, 9, "k", &v);
            // Strip the outer tag + length.
            let mut pos = 1;
            let len = read_varint(&out, &mut pos).unwrap() as usize;
            assert_eq!(pos + len, out.len());
            let kv = KeyValue::decode(&out[pos..]).unwrap();
            assert_eq!(kv.key, "k");
            assert_eq!(kv.value.unwrap().value.unwrap(), want);
        }
        let mut out = Vec::new();
        put_kv(&mut out, 9, "arr", &AnyValueRef::StrArray(&["a", "bc"]));
        let mut pos = 1;
        read_varint(&out, &mut pos).unwrap();
        let kv = KeyValue::decode(&out[pos..]).unwrap();
        match kv.value.unwrap().value.unwrap() {
            any_value::Value::ArrayValue(a) => {
                let got: Vec<_> = a
                    .values
                    .into_iter()
                    .map(|v| match v.value.unwrap() {
                        any_value::Value::StringValue(s) => s,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                assert_eq!(got, vec!["a", "bc"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
