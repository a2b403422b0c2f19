//! Consistent probability sampling as the OpenTelemetry specification defines it for
//! tracestate (`ot=th`, `ot=rv`), and the hash of contrib `tail_sampling`'s `probabilistic`
//! policy (hash-compatible mode).
//!
//! A threshold `T` is a 56-bit rejection threshold: a trace with randomness `R` is kept when
//! `R >= T`. `T = 0` keeps everything (`th:0`); `T = 2^56` keeps nothing and is never written.

/// `2^56`: one more than the largest randomness value.
pub const MAX_T: u64 = 1 << 56;
const RANDOM_MASK: u64 = MAX_T - 1;

/// A rejection threshold in `[0, 2^56]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Threshold(pub u64);

impl Threshold {
    /// The threshold of a sampling probability given as a percentage in `[0, 100]`:
    /// `T = 2^56 - round(p * 2^56)` (computing the kept share first keeps small
    /// probabilities exact to the last bit).
    pub fn from_percentage(percentage: f64) -> Threshold {
        let p = (percentage / 100.0).clamp(0.0, 1.0);
        let kept = (p * MAX_T as f64).round() as u64;
        Threshold(MAX_T - kept.min(MAX_T))
    }

    /// Whether a trace with randomness `r` is kept.
    pub fn keeps(self, r: u64) -> bool {
        r >= self.0
    }

    /// The `th` value: 14 hex digits without their trailing zeros (`0` for `T = 0`).
    /// `None` for `T = 2^56` (nothing is kept, nothing is written).
    pub fn encode(self) -> Option<String> {
        if self.0 >= MAX_T {
            return None;
        }
        if self.0 == 0 {
            return Some("0".into());
        }
        let s = format!("{:014x}", self.0);
        Some(s.trim_end_matches('0').to_string())
    }

    /// Parses a `th` value: 1 to 14 hex digits, padded with trailing zeros.
    pub fn parse(s: &str) -> Option<Threshold> {
        if s.is_empty() || s.len() > 14 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u64::from_str_radix(s, 16).ok()?;
        Some(Threshold(v << (4 * (14 - s.len()))))
    }
}

/// Parses an `rv` value: exactly 14 hex digits.
pub fn parse_rv(s: &str) -> Option<u64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The trace ID's randomness: its rightmost 56 bits (`trace_id` is the big-endian value).
pub fn trace_id_randomness(trace_id: u128) -> u64 {
    (trace_id as u64) & RANDOM_MASK
}

/// The OpenTelemetry entry (`ot=…`) of a W3C tracestate: its value, if present.
fn ot_value(tracestate: &str) -> Option<&str> {
    tracestate.split(',').map(str::trim).find_map(|m| m.strip_prefix("ot="))
}

/// A sub-key of the `ot` entry (`th`, `rv`).
fn ot_sub<'a>(ot: &'a str, key: &str) -> Option<&'a str> {
    ot.split(';').find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
}

/// The threshold and randomness a tracestate carries (`ot=th:…`, `ot=rv:…`); malformed
/// values count as absent.
pub fn read_tracestate(tracestate: &str) -> (Option<Threshold>, Option<u64>) {
    match ot_value(tracestate) {
        Some(ot) => (ot_sub(ot, "th").and_then(Threshold::parse), ot_sub(ot, "rv").and_then(parse_rv)),
        None => (None, None),
    }
}

/// `tracestate` with `th` set to `th`: the `ot` entry (its other sub-keys kept in order) moves
/// first, as W3C trace context wants of a modified entry; every other entry is untouched.
pub fn write_threshold(tracestate: &str, th: &str) -> String {
    let mut out = String::with_capacity(tracestate.len() + th.len() + 8);
    out.push_str("ot=th:");
    out.push_str(th);
    let mut rest: Vec<&str> = Vec::new();
    for m in tracestate.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        match m.strip_prefix("ot=") {
            Some(ot) => {
                for kv in ot.split(';').filter(|kv| !kv.is_empty() && !kv.starts_with("th:")) {
                    out.push(';');
                    out.push_str(kv);
                }
            }
            None => rest.push(m),
        }
    }
    for m in rest {
        out.push(',');
        out.push_str(m);
    }
    out
}

/// contrib `tail_sampling`'s `probabilistic` policy: FNV-1a (64 bits) of the salt's bytes
/// then the trace ID's 16 bytes.
pub fn contrib_hash(salt: &str, trace_id: u128) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in salt.as_bytes().iter().chain(trace_id.to_be_bytes().iter()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// contrib's threshold for a ratio: `MaxUint64 × ratio` as Go's `big.Float` computes it (the
/// product rounded to 64 significant bits, to nearest even, then truncated to an integer). A
/// trace is kept when its hash is at most this.
pub fn contrib_threshold(ratio: f64) -> u64 {
    if ratio.is_nan() || ratio <= 0.0 {
        return 0;
    }
    if ratio >= 1.0 {
        // MaxUint64 × 1 = MaxUint64; above 1 big.Float's Uint64 saturates.
        return u64::MAX;
    }
    // ratio = m × 2^e exactly, m < 2^53.
    let bits = ratio.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (m, e) = if exp_bits == 0 { (frac, -1074) } else { (frac | (1u64 << 52), exp_bits - 1075) };
    // Exact product P = m × (2^64 - 1), fits in 117 bits.
    let p = u128::from(m) * u128::from(u64::MAX);
    // Round P to 64 significant bits, nearest even.
    let bitlen = 128 - p.leading_zeros() as i32;
    let (p, e) = if bitlen > 64 {
        let drop = (bitlen - 64) as u32;
        let q = p >> drop;
        let rem = p & ((1u128 << drop) - 1);
        let half = 1u128 << (drop - 1);
        let q = if rem > half || (rem == half && q & 1 == 1) { q + 1 } else { q };
        (q, e + drop as i32)
    } else {
        (p, e)
    };
    // Truncate P × 2^e to an integer (e < 0 for ratio < 1 unless P is tiny).
    if e >= 0 {
        u64::try_from(p << e as u32).unwrap_or(u64::MAX)
    } else if -e >= 128 {
        0
    } else {
        u64::try_from(p >> (-e) as u32).unwrap_or(u64::MAX)
    }
}
