//! The write-ahead log's record format and the reader that survives damage.
//!
//! A record is a 16-byte header and a body, little-endian:
//! ```text
//!   magic u32 = "TCW2" | body length u32 | tag u64 | body
//!   tag  = SipHash-2-4, keyed with the log's secret, of (length bytes ++ body)
//!   body = kind u8 ++ payload
//! ```
//! The secret ([`LogKey`], 128 bits, in the file `KEY` of the log's directory, mode 0600) is
//! made once, when the log is created. Batch records carry request bytes as received, so a
//! client can plant anything inside them, a whole record included; without the secret it
//! cannot make one whose tag checks, so the reader never takes client bytes for a record.
//!
//! The previous format (`"TCW1"`, a 12-byte header whose third field is the CRC-32 of length
//! and body, [`Check::Legacy`]) is read in segments written before the log had a key: the key
//! file records the position where keyed records start.
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
//! Reading: a record whose header or tag does not check is either a torn tail (nothing valid
//! follows it in the file: a crash during the write) or damage in the middle (a valid record
//! follows: the reader resynchronises on the next magic whose record checks, and skips only
//! the bytes in between).

use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const MAGIC: [u8; 4] = *b"TCW2";
pub const HEADER_LEN: usize = 16;
/// The previous format's magic and header length (CRC-32, no key).
pub const LEGACY_MAGIC: [u8; 4] = *b"TCW1";
pub const LEGACY_HEADER_LEN: usize = 12;
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

/// The log's secret: the key of every record's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogKey {
    key: [u8; 16],
    /// Segments whose base is below this position were written before the log had a key
    /// (the previous format); the rest are keyed.
    pub keyed_from: u64,
}

/// The key file: magic "TCK1", the key, `keyed_from` u64.
const KEY_MAGIC: [u8; 4] = *b"TCK1";
const KEY_FILE_LEN: usize = 4 + 16 + 8;
pub const KEY_FILE: &str = "KEY";

impl LogKey {
    /// A key from these bytes (tests and tools; a log makes its own with [`LogKey::create`]).
    pub fn from_bytes(key: [u8; 16], keyed_from: u64) -> LogKey {
        LogKey { key, keyed_from }
    }

    fn tag(&self, len: &[u8; 4], parts: &[&[u8]]) -> u64 {
        let mut h = siphasher::sip::SipHasher24::new_with_key(&self.key);
        h.write(len);
        for p in parts {
            h.write(p);
        }
        h.finish()
    }

    /// The key of the log in `dir`, if it has one. A key file that is not one is an error.
    pub fn load(dir: &Path) -> io::Result<Option<LogKey>> {
        let b = match fs::read(dir.join(KEY_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if b.len() != KEY_FILE_LEN || b[..4] != KEY_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{KEY_FILE} is not a write-ahead log key ({} bytes); without it no record can be checked", b.len()),
            ));
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&b[4..20]);
        Ok(Some(LogKey { key, keyed_from: u64_at(&b, 20) }))
    }

    /// Makes a new random key for the log in `dir`, keyed from position `keyed_from`, and
    /// writes it durably (temp file 0600, fsync, rename, fsync of the directory) before any
    /// record is written with it.
    pub fn create(dir: &Path, keyed_from: u64) -> io::Result<LogKey> {
        let mut key = [0u8; 16];
        // SAFETY: `key` is a valid buffer of its length.
        let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
        if n != key.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let k = LogKey { key, keyed_from };
        let mut b = Vec::with_capacity(KEY_FILE_LEN);
        b.extend_from_slice(&KEY_MAGIC);
        b.extend_from_slice(&k.key);
        b.extend_from_slice(&keyed_from.to_le_bytes());
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        let _ = fs::remove_file(&tmp); // left by a crash during a write
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(&b)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(KEY_FILE))?;
        File::open(dir)?.sync_all()?;
        Ok(k)
    }

    /// How a segment starting at `base` is checked.
    pub fn check_for(&self, base: u64) -> Check<'_> {
        if base < self.keyed_from {
            Check::Legacy
        } else {
            Check::Keyed(self)
        }
    }
}

/// How the records of a segment are checked.
#[derive(Clone, Copy, Debug)]
pub enum Check<'a> {
    /// The tag keyed with the log's secret.
    Keyed(&'a LogKey),
    /// The previous format's CRC-32 (a segment written before the log had a key).
    Legacy,
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

fn finish<'a>(key: &LogKey, mut head: Vec<u8>, tail: &'a [u8]) -> Encoded<'a> {
    let body_len = (head.len() - HEADER_LEN + tail.len()) as u32;
    let len = body_len.to_le_bytes();
    let t = key.tag(&len, &[&head[HEADER_LEN..], tail]);
    head[4..8].copy_from_slice(&len);
    head[8..16].copy_from_slice(&t.to_le_bytes());
    Encoded { head, tail }
}

fn start(kind: u8, cap: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_LEN + 1 + cap);
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&[0; HEADER_LEN - 4]);
    head.push(kind);
    head
}

/// A batch record: the stamps of its spans and the request's bytes.
pub fn encode_batch<'a>(key: &LogKey, stamps: &[SpanStamp], data: &'a [u8]) -> Encoded<'a> {
    let mut head = start(KIND_BATCH, 4 + stamps.len() * STAMP_LEN);
    head.extend_from_slice(&(stamps.len() as u32).to_le_bytes());
    for s in stamps {
        head.extend_from_slice(&s.wall.to_le_bytes());
        head.extend_from_slice(&s.logical.to_le_bytes());
        head.extend_from_slice(&s.findings.to_le_bytes());
    }
    finish(key, head, data)
}

/// A delivered or drained record.
pub fn encode_keys(key: &LogKey, kind: u8, keys: &[Key]) -> Encoded<'static> {
    let mut head = start(kind, 4 + keys.len() * KEY_LEN);
    head.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for &(pos, id) in keys {
        head.extend_from_slice(&pos.to_le_bytes());
        head.extend_from_slice(&id.to_le_bytes());
    }
    finish(key, head, &[])
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

/// Decodes a body whose tag (or CRC) checked. `None`: a body that cannot be what its kind says
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
fn record_at<'b>(buf: &'b [u8], at: usize, check: Check<'_>) -> Option<(&'b [u8], usize)> {
    let (magic, header_len) = match check {
        Check::Keyed(_) => (MAGIC, HEADER_LEN),
        Check::Legacy => (LEGACY_MAGIC, LEGACY_HEADER_LEN),
    };
    let h = buf.get(at..at.checked_add(header_len)?)?;
    if h[..4] != magic {
        return None;
    }
    let len = u32_at(h, 4) as usize;
    if len == 0 || len > MAX_BODY {
        return None;
    }
    let end = at + header_len + len;
    let body = buf.get(at + header_len..end)?;
    let len_bytes: [u8; 4] = h[4..8].try_into().ok()?;
    let ok = match check {
        Check::Keyed(k) => k.tag(&len_bytes, &[body]) == u64_at(h, 8),
        Check::Legacy => crc(&len_bytes, &[body]) == u32_at(h, 8),
    };
    if !ok {
        return None;
    }
    decode_body(body)?;
    Some((body, end))
}

/// Reads every valid record of a segment's bytes: `(offset, body)` in order, and the damage.
/// Cost: linear in the file, plus, after damage, one tag per candidate magic found while
/// resynchronising.
pub fn read_segment<'b>(buf: &'b [u8], check: Check<'_>) -> (Vec<(u64, &'b [u8])>, Damage) {
    let mut out = Vec::new();
    let mut damage = Damage::default();
    let mut at = 0usize;
    while at < buf.len() {
        if let Some((body, end)) = record_at(buf, at, check) {
            out.push((at as u64, body));
            at = end;
            continue;
        }
        // Resynchronise: the next offset where a valid record starts.
        let mut next = None;
        let mut from = at + 1;
        let magic = match check {
            Check::Keyed(_) => MAGIC,
            Check::Legacy => LEGACY_MAGIC,
        };
        while let Some(i) = find_magic(&buf[from.min(buf.len())..], magic) {
            let cand = from + i;
            if record_at(buf, cand, check).is_some() {
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

fn find_magic(b: &[u8], magic: [u8; 4]) -> Option<usize> {
    b.windows(4).position(|w| w == magic)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: LogKey = LogKey { key: *b"0123456789abcdef", keyed_from: 0 };
    const KEYED: Check<'static> = Check::Keyed(&K);

    fn join(e: &Encoded<'_>) -> Vec<u8> {
        let mut v = e.head.clone();
        v.extend_from_slice(e.tail);
        v
    }

    #[test]
    fn records_round_trip() {
        let stamps = [SpanStamp { wall: 5, logical: 2, findings: 9 }, SpanStamp::default()];
        let b = join(&encode_batch(&K, &stamps, b"request bytes"));
        let k = join(&encode_keys(&K, KIND_DELIVERED, &[(0, 7), (12, u128::MAX)]));
        let mut file = b.clone();
        file.extend_from_slice(&k);
        let (recs, damage) = read_segment(&file, KEYED);
        assert_eq!(damage, Damage::default());
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].0, b.len() as u64);
        assert_eq!(decode_body(recs[0].1), Some(Body::Batch { stamps: stamps.to_vec(), data: b"request bytes" }));
        assert_eq!(decode_body(recs[1].1), Some(Body::Keys { kind: KIND_DELIVERED, keys: vec![(0, 7), (12, u128::MAX)] }));
    }

    #[test]
    fn a_torn_tail_is_reported_and_everything_before_it_read() {
        let a = join(&encode_batch(&K, &[SpanStamp::default()], b"first"));
        let b = join(&encode_batch(&K, &[SpanStamp::default()], b"second"));
        for cut in 1..b.len() {
            let mut file = a.clone();
            file.extend_from_slice(&b[..cut]);
            let (recs, damage) = read_segment(&file, KEYED);
            assert_eq!(recs.len(), 1, "cut {cut}");
            assert_eq!(damage.torn, Some(a.len() as u64..file.len() as u64));
            assert!(damage.corrupt.is_empty());
        }
    }

    #[test]
    fn a_flipped_byte_skips_only_its_record() {
        let recs: Vec<Vec<u8>> = (0..3u8).map(|i| join(&encode_batch(&K, &[SpanStamp::default()], &[i; 40]))).collect();
        let file: Vec<u8> = recs.concat();
        for at in 0..recs[1].len() {
            let mut bad = file.clone();
            bad[recs[0].len() + at] ^= 0x40;
            let (got, damage) = read_segment(&bad, KEYED);
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
                    if x % 7 == 0 { MAGIC[(x % 4) as usize] } else { x as u8 }
                })
                .collect();
            // A valid record in the middle of the garbage is always found.
            let mut buf = buf;
            let good = join(&encode_batch(&K, &[SpanStamp::default()], b"kept"));
            buf.splice(150..150, good.iter().copied());
            // Records, skipped ranges and the torn tail cover the file exactly, in order.
            let (recs, damage) = read_segment(&buf, KEYED);
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

    /// A record of the previous format: CRC-32, no key.
    fn legacy(body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u32).to_le_bytes();
        let mut v = LEGACY_MAGIC.to_vec();
        v.extend_from_slice(&len);
        v.extend_from_slice(&crc(&len, &[body]).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_record_planted_in_client_bytes_never_checks() {
        // A delivered record as a client would plant it: with a key of its own guess, and in
        // the previous format (whose CRC anyone can compute).
        let forged_body = &join(&encode_keys(&LogKey::from_bytes([7; 16], 0), KIND_DELIVERED, &[(0, 1)]))[HEADER_LEN..];
        let mut planted = join(&encode_keys(&LogKey::from_bytes([7; 16], 0), KIND_DELIVERED, &[(0, 1)]));
        planted.extend(legacy(forged_body));
        let victim = join(&encode_batch(&K, &[SpanStamp::default()], b"victim"));
        let mut carrier = join(&encode_batch(&K, &[SpanStamp::default()], &planted));
        carrier[9] ^= 1; // damage in the carrier's header: the reader resynchronises
        let file = [victim.clone(), carrier.clone()].concat();
        let (recs, damage) = read_segment(&file, KEYED);
        assert_eq!(recs.len(), 1, "only the victim: nothing inside the carrier is a record");
        assert_eq!(damage.torn, Some(victim.len() as u64..file.len() as u64));
        // A segment of the previous format is read with its own check.
        let old = [legacy(forged_body), legacy(forged_body)].concat();
        let (recs, damage) = read_segment(&old, Check::Legacy);
        assert_eq!((recs.len(), damage), (2, Damage::default()));
        assert_eq!(read_segment(&old, KEYED).0.len(), 0, "never as keyed records");
    }

    #[test]
    fn the_key_file_round_trips_and_a_damaged_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tc-wal-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(LogKey::load(&dir).unwrap(), None);
        let k = LogKey::create(&dir, 77).unwrap();
        assert_eq!(LogKey::load(&dir).unwrap(), Some(k));
        assert_ne!(LogKey::create(&dir, 77).unwrap(), k, "a new key is random");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(dir.join(KEY_FILE), b"short").unwrap();
        assert!(LogKey::load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
