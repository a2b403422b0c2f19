//! The write-ahead log's record format and the reader that survives damage.
//!
//! A record is a 12-byte header and a body, little-endian:
//! ```text
//!   magic u32 = "TCW1" | body length u32 | CRC-32 of (length bytes ++ body) u32 | body
//!   body = kind u8 ++ payload
//! ```
//! Kinds:
//! - `BATCH`: spans accepted from one request. Payload: span count `n` u32, then per span
//!   (in the order the index scan finds them) the HLC stamp's wall u64, logical u32 and the
//!   findings set at ingest u32, then the request's bytes as received.
//! - `DELIVERED` / `DRAINED`: keys of spans that downstream accepted (or that were counted as
//!   lost), resp. that were handed to the caller for sending. Payload: count u32, then per key
//!   the batch record's position u64 and the trace ID u128 (0 for spans that could not be
//!   assembled).
//!
//! A record's position in the log (its segment's base plus its offset) is its log sequence
//! number; nothing else numbers records.
//!
//! Reading: a record whose header or CRC does not check is either a torn tail (nothing valid
//! follows it in the file: a crash during the write) or damage in the middle (a valid record
//! follows: the reader resynchronises on the next magic whose record checks, and skips only
//! the bytes in between).

use std::ops::Range;

pub const MAGIC: [u8; 4] = *b"TCW1";
pub const HEADER_LEN: usize = 12;
/// The largest body a record may have (a batch larger than this is refused).
pub const MAX_BODY: usize = 1 << 30;

pub const KIND_BATCH: u8 = 1;
pub const KIND_DELIVERED: u8 = 2;
pub const KIND_DRAINED: u8 = 3;

/// Per span in a batch record: wall u64, logical u32, findings u32.
pub const STAMP_LEN: usize = 16;
/// Per key in a delivered or drained record: position u64, trace ID u128.
pub const KEY_LEN: usize = 24;

/// The HLC stamp and ingest findings a span was given, as logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanStamp {
    pub wall: u64,
    pub logical: u32,
    pub findings: u32,
}

/// A span key: the batch record's position and the trace ID (0: not assembled).
pub type Key = (u64, u128);

fn crc(len: &[u8; 4], parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// A record ready to be written: a header-and-prefix part and an optional borrowed tail (the
/// batch bytes, not copied).
pub struct Encoded<'a> {
    pub head: Vec<u8>,
    pub tail: &'a [u8],
}

impl Encoded<'_> {
    pub fn len(&self) -> u64 {
        (self.head.len() + self.tail.len()) as u64
    }
}

fn finish<'a>(mut head: Vec<u8>, tail: &'a [u8]) -> Encoded<'a> {
    let body_len = (head.len() - HEADER_LEN + tail.len()) as u32;
    let len = body_len.to_le_bytes();
    let c = crc(&len, &[&head[HEADER_LEN..], tail]);
    head[4..8].copy_from_slice(&len);
    head[8..12].copy_from_slice(&c.to_le_bytes());
    Encoded { head, tail }
}

fn start(kind: u8, cap: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_LEN + 1 + cap);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&[0; 8]);
    head.push(kind);
    head
}

/// A batch record: the stamps of its spans and the request's bytes.
pub fn encode_batch<'a>(stamps: &[SpanStamp], data: &'a [u8]) -> Encoded<'a> {
    let mut head = start(KIND_BATCH, 4 + stamps.len() * STAMP_LEN);
    head.extend_from_slice(&(stamps.len() as u32).to_le_bytes());
    for s in stamps {
        head.extend_from_slice(&s.wall.to_le_bytes());
        head.extend_from_slice(&s.logical.to_le_bytes());
        head.extend_from_slice(&s.findings.to_le_bytes());
    }
    finish(head, data)
}

/// A delivered or drained record.
pub fn encode_keys(kind: u8, keys: &[Key]) -> Encoded<'static> {
    let mut head = start(kind, 4 + keys.len() * KEY_LEN);
    head.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for &(pos, id) in keys {
        head.extend_from_slice(&pos.to_le_bytes());
        head.extend_from_slice(&id.to_le_bytes());
    }
    finish(head, &[])
}

/// A decoded record body.
#[derive(Debug, PartialEq, Eq)]
pub enum Body<'a> {
    Batch { stamps: Vec<SpanStamp>, data: &'a [u8] },
    Keys { kind: u8, keys: Vec<Key> },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// Decodes a body whose CRC checked. `None`: a body that cannot be what its kind says
/// (counted as damage like a CRC failure).
pub fn decode_body(body: &[u8]) -> Option<Body<'_>> {
    let (&kind, p) = body.split_first()?;
    let n = u32_at(p.get(..4)?, 0) as usize;
    let p = &p[4..];
    match kind {
        KIND_BATCH => {
            let stamps_len = n.checked_mul(STAMP_LEN)?;
            if stamps_len > p.len() {
                return None;
            }
            let stamps = p[..stamps_len]
                .chunks_exact(STAMP_LEN)
                .map(|c| SpanStamp { wall: u64_at(c, 0), logical: u32_at(c, 8), findings: u32_at(c, 12) })
                .collect();
            Some(Body::Batch { stamps, data: &p[stamps_len..] })
        }
        KIND_DELIVERED | KIND_DRAINED => {
            if n.checked_mul(KEY_LEN)? != p.len() {
                return None;
            }
            let keys = p
                .chunks_exact(KEY_LEN)
                .map(|c| (u64_at(c, 0), u128::from_le_bytes(c[8..24].try_into().unwrap_or_default())))
                .collect();
            Some(Body::Keys { kind, keys })
        }
        _ => None,
    }
}

/// What reading a segment found besides its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Damage {
    /// Byte ranges skipped in the middle of the file (a valid record follows each).
    pub corrupt: Vec<Range<u64>>,
    /// Bytes at the end that do not form a valid record (a write cut short), if any.
    pub torn: Option<Range<u64>>,
}

/// The valid record at `at`, if one starts there: its body and its end.
fn record_at(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let h = buf.get(at..at.checked_add(HEADER_LEN)?)?;
    if h[..4] != MAGIC {
        return None;
    }
    let len = u32_at(h, 4) as usize;
    if len == 0 || len > MAX_BODY {
        return None;
    }
    let end = at + HEADER_LEN + len;
    let body = buf.get(at + HEADER_LEN..end)?;
    let len_bytes: [u8; 4] = h[4..8].try_into().ok()?;
    if crc(&len_bytes, &[body]) != u32_at(h, 8) {
        return None;
    }
    decode_body(body)?;
    Some((body, end))
}

/// Reads every valid record of a segment's bytes: `(offset, body)` in order, and the damage.
/// Cost: linear in the file, plus, after damage, one CRC per candidate magic found while
/// resynchronising.
pub fn read_segment(buf: &[u8]) -> (Vec<(u64, &[u8])>, Damage) {
    let mut out = Vec::new();
    let mut damage = Damage::default();
    let mut at = 0usize;
    while at < buf.len() {
        if let Some((body, end)) = record_at(buf, at) {
            out.push((at as u64, body));
            at = end;
            continue;
        }
        // Resynchronise: the next offset where a valid record starts.
        let mut next = None;
        let mut from = at + 1;
        while let Some(i) = find_magic(&buf[from.min(buf.len())..]) {
            let cand = from + i;
            if record_at(buf, cand).is_some() {
                next = Some(cand);
                break;
            }
            from = cand + 1;
        }
        match next {
            Some(n) => {
                damage.corrupt.push(at as u64..n as u64);
                at = n;
            }
            None => {
                damage.torn = Some(at as u64..buf.len() as u64);
                break;
            }
        }
    }
    (out, damage)
}

fn find_magic(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(e: &Encoded<'_>) -> Vec<u8> {
        let mut v = e.head.clone();
        v.extend_from_slice(e.tail);
        v
    }

    #[test]
    fn records_round_trip() {
        let stamps = [SpanStamp { wall: 5, logical: 2, findings: 9 }, SpanStamp::default()];
        let b = join(&encode_batch(&stamps, b"request bytes"));
        let k = join(&encode_keys(KIND_DELIVERED, &[(0, 7), (12, u128::MAX)]));
        let mut file = b.clone();
        file.extend_from_slice(&k);
        let (recs, damage) = read_segment(&file);
        assert_eq!(damage, Damage::default());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].0, b.len() as u64);
        assert_eq!(decode_body(recs[0].1), Some(Body::Batch { stamps: stamps.to_vec(), data: b"request bytes" }));
        assert_eq!(decode_body(recs[1].1), Some(Body::Keys { kind: KIND_DELIVERED, keys: vec![(0, 7), (12, u128::MAX)] }));
    }

    #[test]
    fn a_torn_tail_is_reported_and_everything_before_it_read() {
        let a = join(&encode_batch(&[SpanStamp::default()], b"first"));
        let b = join(&encode_batch(&[SpanStamp::default()], b"second"));
        for cut in 1..b.len() {
            let mut file = a.clone();
            file.extend_from_slice(&b[..cut]);
            let (recs, damage) = read_segment(&file);
            assert_eq!(recs.len(), 1, "cut {cut}");
            assert_eq!(damage.torn, Some(a.len() as u64..file.len() as u64));
            assert!(damage.corrupt.is_empty());
        }
    }

    #[test]
    fn a_flipped_byte_skips_only_its_record() {
        let recs: Vec<Vec<u8>> = (0..3u8).map(|i| join(&encode_batch(&[SpanStamp::default()], &[i; 40]))).collect();
        let file: Vec<u8> = recs.concat();
        for at in 0..recs[1].len() {
            let mut bad = file.clone();
            bad[recs[0].len() + at] ^= 0x40;
            let (got, damage) = read_segment(&bad);
            assert_eq!(got.len(), 2, "flip at {at}");
            assert_eq!(got[0].0, 0);
            assert_eq!(got[1].0, (recs[0].len() + recs[1].len()) as u64);
            assert_eq!(damage.corrupt, vec![recs[0].len() as u64..(recs[0].len() + recs[1].len()) as u64]);
            assert_eq!(damage.torn, None);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for seed in 0..200u32 {
            let mut x = seed.wrapping_mul(2654435761) | 1;
            let buf: Vec<u8> = (0..300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x % 7 == 0 { b"TCW1"[(x % 4) as usize] } else { x as u8 }
                })
                .collect();
            // A valid record in the middle of the garbage is always found.
            let mut buf = buf;
            let good = join(&encode_batch(&[SpanStamp::default()], b"kept"));
            buf.splice(150..150, good.iter().copied());
            // Records, skipped ranges and the torn tail cover the file exactly, in order.
            let (recs, damage) = read_segment(&buf);
            let mut parts: Vec<Range<u64>> = recs.iter().map(|(at, body)| *at..at + (HEADER_LEN + body.len()) as u64).collect();
            parts.extend(damage.corrupt.iter().cloned());
            parts.extend(damage.torn.iter().cloned());
            parts.sort_by_key(|r| r.start);
            let mut end = 0;
            for r in parts {
                assert_eq!(r.start, end, "seed {seed}");
                assert!(r.end > r.start);
                end = r.end;
            }
            assert_eq!(end, buf.len() as u64, "seed {seed}");
            assert!(recs.iter().any(|(at, _)| *at == 150), "seed {seed}");
        }
    }
}
