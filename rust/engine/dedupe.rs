//! The two duplicate policies, applied to a released unit outside every shard lock.
//!
//! - Exact duplicates (a retry: same span ID, same content apart from the `consistency.*`
//!   attributes an upstream collector wrote) are always dropped, keeping the first arrival.
//!   Spans sharing an ID are compared by a keyed hash of their content, then byte by byte
//!   within equal hashes: `O(n log n)` for any shape, never pairwise.
//! - Different spans sharing an ID are conflicts: with `keep_latest`, only the one with the
//!   greatest HLC stamp (then the latest arrival) is kept.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use ahash::RandomState;

use crate::findings::FindingKind;
use crate::index::SpanRec;

use super::unit::Unit;

/// The span's bytes as they will be emitted, without the upstream `consistency.*`
/// attributes and wrong-length IDs.
fn content<'a>(buf: &'a [u8], s: &SpanRec) -> Cow<'a, [u8]> {
    let raw = &buf[s.bytes.start as usize..s.bytes.end as usize];
    if s.strip().is_empty() {
        return Cow::Borrowed(raw);
    }
    let mut kept = Vec::with_capacity(raw.len());
    let mut pos = 0;
    for r in s.strip() {
        kept.extend_from_slice(&raw[pos..r.start as usize]);
        pos = r.end as usize;
    }
    kept.extend_from_slice(&raw[pos..]);
    Cow::Owned(kept)
}

/// A keyed hash of the span's content as [`content`] gives it (`buf` holds its bytes).
pub fn content_hash(key: &RandomState, buf: &[u8], s: &SpanRec) -> u64 {
    // One write of the whole content: the hash of pieces depends on where they are cut.
    let mut h = key.build_hasher();
    h.write(&content(buf, s));
    h.finish()
}

/// Removes exact duplicates from `unit`, keeping the first arrival. Returns how many.
pub fn drop_exact_duplicates(unit: &mut Unit, key: &RandomState) -> u64 {
    let n = unit.spans.len();
    if n < 2 {
        return 0;
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by_key(|&i| (unit.spans[i as usize].span_id, i));
    let mut drop = vec![false; n];
    let mut dropped = 0u64;
    let mut i = 0;
    while i < n {
        let id = unit.spans[order[i] as usize].span_id;
        let mut j = i + 1;
        while j < n && unit.spans[order[j] as usize].span_id == id {
            j += 1;
        }
        if j - i > 1 {
            // (hash, arrival) for the spans sharing this ID; equal hashes sit together, the
            // first arrival first.
            let mut run: Vec<(u64, u32)> =
                order[i..j].iter().map(|&k| (content_hash(key, &unit.buf, &unit.spans[k as usize]), k)).collect();
            run.sort_unstable();
            let mut a = 0;
            while a < run.len() {
                let mut b = a + 1;
                let first = content(&unit.buf, &unit.spans[run[a].1 as usize]);
                while b < run.len() && run[b].0 == run[a].0 {
                    // Equal hashes are compared in full: a collision never drops a span.
                    if content(&unit.buf, &unit.spans[run[b].1 as usize]) == first {
                        drop[run[b].1 as usize] = true;
                        dropped += 1;
                    }
                    b += 1;
                }
                a = b;
            }
        }
        i = j;
    }
    if dropped == 0 {
        return 0;
    }
    let mut k = 0;
    unit.spans.retain(|_| {
        let keep = !drop[k];
        k += 1;
        keep
    });
    for (seq, s) in unit.spans.iter_mut().enumerate() {
        s.seq = seq as u32;
    }
    dropped
}

/// Applies `keep_latest` to the spans flagged `conflicting_span_id` in `span_findings`:
/// among those sharing one span ID keep the one with the greatest HLC stamp (then arrival).
/// Returns which spans to keep.
pub fn keep_latest(spans: &[SpanRec], span_findings: &[u32]) -> Vec<bool> {
    let mut keep = vec![true; spans.len()];
    let bit = FindingKind::ConflictingSpanId.bit();
    let mut best: HashMap<u64, usize> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if span_findings[i] & bit == 0 {
            continue;
        }
        match best.get(&s.span_id) {
            Some(&j) if (spans[j].hlc(), spans[j].seq) >= (s.hlc(), s.seq) => keep[i] = false,
            Some(&j) => {
                keep[j] = false;
                best.insert(s.span_id, i);
            }
            None => {
                best.insert(s.span_id, i);
            }
        }
    }
    keep
}
