//! (2) The structural validator and index scan (`traceconsistency::index::scan_request`)
//! against prost's decode of `ExportTraceServiceRequest` (lax types: prost without its UTF-8
//! check, which pdata does not make either).
//!
//! - prost decodes, the scan refuses: allowed only for what pdata checks and prost does not,
//!   a link whose trace_id/span_id is non-empty and not 16/8 bytes (from the decoded tree),
//!   or an attribute value nested at level 100 or deeper as pdata counts levels, over every
//!   occurrence of every value (from the wire bytes; prost is built with
//!   `no-recursion-limit` and keeps only the last of repeated `oneof` values; see
//!   `tcfuzz::max_attribute_level`). The scan's reason must name the same cause.
//! - prost decodes: the wire walk's level is never below the decoded tree's.
//! - the scan accepts, prost refuses: never.
//! - both accept: same spans in the same order, and each span's indexed trace ID, span ID,
//!   parent ID, start, end and flags equal the decoded ones (a wrong-length ID indexes as
//!   zero / invalid).
//! - strict prost (opentelemetry-proto types) decodes => lax decodes (the lax types only
//!   drop the UTF-8 check).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcfuzz::{decode_lax, has_bad_link_id, max_attribute_level, max_attribute_level_decoded, pdata_only_refusal, spans};
use traceconsistency::index::scan_request;

fn id8(b: &[u8]) -> u64 {
    if b.len() == 8 {
        u64::from_be_bytes(b.try_into().unwrap())
    } else {
        0
    }
}

fuzz_target!(|data: &[u8]| {
    let scan = scan_request(data);
    let lax = decode_lax(data);
    // (opentelemetry-proto's own types skip `deprecated_scope_spans` as an unknown field,
    // where pdata and the lax types decode it, so they may accept what pdata refuses: the lax
    // types are the oracle.)
    if let Ok(req) = &lax {
        let (wire, tree) = (max_attribute_level(data), max_attribute_level_decoded(req));
        assert!(wire >= tree, "the wire walk's attribute level {wire} is below the decoded tree's {tree}");
    }
    match (&scan, &lax) {
        (Err(e), Ok(_)) if tcfuzz::known_refusal(e.what) => {}
        (Err(e), Ok(req)) => {
            let why = pdata_only_refusal(data, req);
            assert!(why.is_some(), "scan refuses what prost decodes and pdata would accept: {e}");
            // When both causes are present the scan reports whichever it meets first.
            let both = has_bad_link_id(req) && max_attribute_level(data) >= tcfuzz::PDATA_MAX_DEPTH;
            assert!(both || e.what.contains(why.unwrap()), "scan's reason ({e}) is not the pdata-only cause {why:?}");
        }
        (Ok(b), Err(e)) => panic!("scan accepts ({} spans) what prost refuses: {e}", b.spans.len()),
        (Err(_), Err(_)) => {}
        (Ok(b), Ok(req)) => {
            assert!(pdata_only_refusal(data, req).is_none(), "scan accepts what pdata refuses: {:?}", pdata_only_refusal(data, req));
            let decoded: Vec<_> = spans(req).collect();
            assert_eq!(b.spans.len(), decoded.len(), "span count");
            assert_eq!(b.trace_ids.len(), decoded.len());
            for (i, (rec, s)) in b.spans.iter().zip(decoded.iter()).enumerate() {
                let tid: [u8; 16] = if s.trace_id.len() == 16 { s.trace_id[..].try_into().unwrap() } else { [0; 16] };
                assert_eq!(b.trace_ids[i], tid, "span {i}: trace id");
                assert_eq!(rec.trace_id_valid, tid != [0; 16], "span {i}: trace id validity");
                assert_eq!(rec.span_id, id8(&s.span_id), "span {i}: span id");
                assert_eq!(rec.span_id_valid, id8(&s.span_id) != 0, "span {i}: span id validity");
                assert_eq!(rec.parent_id, id8(&s.parent_span_id), "span {i}: parent id");
                assert_eq!(rec.start, s.start_time_unix_nano, "span {i}: start");
                assert_eq!(rec.end, s.end_time_unix_nano, "span {i}: end");
                assert_eq!(rec.flags, s.flags, "span {i}: flags");
                assert_eq!(rec.has_links, !s.links.is_empty(), "span {i}: has_links");
                if (0..=254).contains(&s.kind) && rec.kind < 255 {
                    assert_eq!(i32::from(rec.kind), s.kind, "span {i}: kind");
                }
                assert!(rec.bytes.end as usize <= data.len() && rec.bytes.start <= rec.bytes.end);
                let bad = [(1u32, &s.trace_id, 16usize), (2, &s.span_id, 8), (4, &s.parent_span_id, 8)]
                    .iter()
                    .filter(|(_, v, n)| !v.is_empty() && v.len() != *n)
                    .count();
                // Repeated ID fields: every wrong-length occurrence is reported, so at least
                // the last one's.
                assert!(rec.bad_ids().len() >= bad, "span {i}: wrong-length IDs not all reported");
            }
        }
    }
});
