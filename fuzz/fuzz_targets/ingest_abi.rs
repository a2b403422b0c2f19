//! (1) Arbitrary bytes through the C ABI: tc_config_default -> tc_engine_new (HLC restart
//! none) -> tc_engine_ingest -> tc_engine_tick far in the future -> tc_engine_drain until NULL
//! -> tc_engine_shutdown -> drain -> tc_engine_free.
//!
//! Invariants: no call returns TC_RESULT_PANIC; every drained buffer decodes with prost (the
//! lax types: no UTF-8 check, as pdata; the strict opentelemetry-proto types as well when the
//! input decodes with them) and holds the number of spans its view says; when the input was
//! accepted the spans out equal the spans accepted (buffered + late_forwarded + unassembled)
//! minus counted duplicates and conflicts, and each span out is one of the input's spans;
//! when it was refused, nothing comes out and nothing is counted as received.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::mem::MaybeUninit;
use tcfuzz::{assert_sub_multiset, decode_lax, decode_strict, span_keys, SEC, T0};
use traceconsistency::engine::Stats;
use traceconsistency::ffi::*;

fn drain_all(e: *const tc_engine, strict: bool, keys: &mut Vec<(Vec<u8>, u64, u64)>) -> u64 {
    let mut total = 0;
    loop {
        let mut rel: *mut tc_release = std::ptr::null_mut();
        let mut view = MaybeUninit::<tc_release_view>::zeroed();
        let mut err = MaybeUninit::<tc_error>::zeroed();
        let r = tc_engine_drain(e, 3, &mut rel, view.as_mut_ptr(), err.as_mut_ptr());
        assert_eq!(r, tc_result::Ok, "drain failed");
        if rel.is_null() {
            return total;
        }
        let view = unsafe { view.assume_init() };
        let otlp = unsafe { std::slice::from_raw_parts(view.otlp, view.otlp_len) };
        let req = decode_lax(otlp).unwrap_or_else(|e| panic!("a drained buffer does not decode: {e}"));
        if strict {
            decode_strict(otlp).unwrap_or_else(|e| panic!("output of a UTF-8-clean input does not decode strictly: {e}"));
        }
        let k = span_keys(&req);
        assert_eq!(k.len() as u64, view.spans, "view.spans differs from the spans in the buffer");
        let unit_spans: u64 = (0..view.units_len).map(|i| u64::from(unsafe { (*view.units.add(i)).spans })).sum();
        assert_eq!(unit_spans, view.spans, "units' span counts differ from view.spans");
        keys.extend(k);
        total += view.spans;
        tc_release_free(rel);
    }
}

fn stats(e: *const tc_engine) -> Stats {
    let mut s = MaybeUninit::<Stats>::zeroed();
    assert_eq!(tc_engine_stats(e, s.as_mut_ptr()), tc_result::Ok);
    unsafe { s.assume_init() }
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = MaybeUninit::<tc_config>::zeroed();
    assert_eq!(tc_config_default(cfg.as_mut_ptr()), tc_result::Ok);
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.hlc_restart = 0; // none
    cfg.num_shards = 2;
    let mut engine: *mut tc_engine = std::ptr::null_mut();
    let mut err = MaybeUninit::<tc_error>::zeroed();
    assert_eq!(tc_engine_new(&cfg, &mut engine, err.as_mut_ptr()), tc_result::Ok);

    let mut res = MaybeUninit::<tc_ingest_result>::zeroed();
    let r = tc_engine_ingest(engine, data.as_ptr(), data.len(), T0, T0, res.as_mut_ptr(), err.as_mut_ptr());
    assert_ne!(r, tc_result::Panic, "ingest panicked");
    let accepted = r == tc_result::Ok;
    assert!(
        matches!(r, tc_result::Ok | tc_result::MalformedInput | tc_result::EmptyInput),
        "unexpected ingest result {r:?}"
    );
    let strict = decode_strict(data).is_ok();
    let input = decode_lax(data);

    let mut keys = Vec::new();
    let mut ready = 0u64;
    assert_eq!(tc_engine_tick(engine, T0 + 100_000 * SEC, T0 + 100_000 * SEC, &mut ready, err.as_mut_ptr()), tc_result::Ok);
    let mut out = drain_all(engine, strict, &mut keys);
    assert_eq!(tc_engine_shutdown(engine, T0 + 100_001 * SEC, T0 + 100_001 * SEC, &mut ready, err.as_mut_ptr()), tc_result::Ok);
    out += drain_all(engine, strict, &mut keys);

    let st = stats(engine);
    assert_eq!(st.buffered_spans, 0, "spans left buffered after shutdown and drain");
    assert_eq!(st.ready_spans, 0, "spans left ready after drain");
    if accepted {
        let res = unsafe { res.assume_init() };
        let in_spans = res.buffered + res.late_forwarded + res.unassembled;
        assert_eq!(res.late_dropped, 0);
        assert_eq!(in_spans, st.spans_received, "ingest result and spans_received disagree");
        assert_eq!(
            out,
            in_spans - st.duplicates_dropped - st.conflicts_dropped,
            "spans out != spans accepted - duplicates - conflicts ({st:?})"
        );
        // Accepted input decodes with prost (lax), and what leaves is what came in.
        let req = input.unwrap_or_else(|e| panic!("accepted input prost refuses: {e}"));
        let in_keys = span_keys(&req);
        assert_eq!(in_keys.len() as u64, in_spans, "prost sees another number of spans");
        assert_sub_multiset(&keys, &in_keys);
    } else {
        assert_eq!(out, 0, "a refused batch produced output");
        assert_eq!(st.spans_received, 0);
        assert_eq!(st.batches_refused, 1);
    }
    tc_engine_free(engine);
});
