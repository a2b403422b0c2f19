//! The C ABI from the caller's side: null pointers, garbage, empty input, ownership.

use super::*;
use crate::config::{Config, RestartStrategy};
use crate::engine::Stats;
use crate::findings::{FindingKind, ReleaseReason};
use std::ffi::{c_char, CStr};
use crate::testutil::*;
use std::ptr;

fn new_engine() -> *mut tc_engine {
    let mut cfg = std::mem::MaybeUninit::<tc_config>::uninit();
    assert_eq!(tc_config_default(cfg.as_mut_ptr()), tc_result::Ok);
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.hlc_restart = RestartStrategy::None as u32;
    let mut e = ptr::null_mut();
    let mut err = tc_error { message: [0; 512] };
    assert_eq!(tc_engine_new(&cfg, &mut e, &mut err), tc_result::Ok);
    assert!(!e.is_null());
    e
}

fn msg(err: &tc_error) -> String {
    unsafe { CStr::from_ptr(err.message.as_ptr()) }.to_string_lossy().into_owned()
}

#[test]
fn null_pointers_are_reported_not_dereferenced() {
    let mut err = tc_error { message: [0; 512] };
    assert_eq!(tc_config_default(ptr::null_mut()), tc_result::NullArgument);
    assert_eq!(tc_config_validate(ptr::null(), &mut err), tc_result::NullArgument);
    assert_eq!(msg(&err), "config must not be NULL");
    assert_eq!(tc_engine_ingest(ptr::null(), [1u8].as_ptr(), 1, 0, 0, ptr::null_mut(), &mut err), tc_result::NullArgument);
    let e = new_engine();
    assert_eq!(tc_engine_ingest(e, ptr::null(), 5, 0, 0, ptr::null_mut(), &mut err), tc_result::NullArgument);
    assert_eq!(tc_engine_drain(e, 10, ptr::null_mut(), ptr::null_mut(), &mut err), tc_result::NullArgument);
    assert_eq!(tc_engine_stats(e, ptr::null_mut()), tc_result::NullArgument);
    // A NULL err is fine too; the message is still readable per thread.
    assert_eq!(tc_engine_tick(ptr::null(), 0, 0, ptr::null_mut(), ptr::null_mut()), tc_result::NullArgument);
    let mut buf = [0 as c_char; 64];
    let n = tc_last_error(buf.as_mut_ptr(), buf.len());
    assert_eq!(n, "engine must not be NULL".len());
    tc_engine_free(e);
    tc_engine_free(ptr::null_mut());
    tc_release_free(ptr::null_mut());
}

#[test]
fn hlc_start_and_a_stalled_clock_through_the_c_abi() {
    let dir = std::env::temp_dir().join(format!("tc-ffi-hlc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::ffi::CString::new(dir.join("hlc.state").to_str().unwrap()).unwrap();
    let mut cfg = std::mem::MaybeUninit::<tc_config>::uninit();
    assert_eq!(tc_config_default(cfg.as_mut_ptr()), tc_result::Ok);
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.hlc_restart = RestartStrategy::Persist as u32;
    cfg.hlc_state_file = path.as_ptr();
    let mut err = tc_error { message: [0; 512] };
    let mut e = ptr::null_mut();
    assert_eq!(tc_engine_new(&cfg, &mut e, &mut err), tc_result::Ok);
    let mut start = tc_hlc_start::Ready;
    assert_eq!(tc_engine_hlc_start(e, &mut start), tc_result::Ok);
    assert_eq!(start, tc_hlc_start::StateFileMissing);
    assert_eq!(tc_engine_hlc_start(e, ptr::null_mut()), tc_result::NullArgument);
    std::fs::remove_dir_all(&dir).unwrap();
    // Far ahead of the bound written at start (from the wall clock), with the file unwritable.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let later = now + 3_600_000_000_000;
    let req = request(vec![("a", vec![span(1, 1, 0, later - 10, later - 5)])]);
    assert_eq!(tc_engine_ingest(e, req.as_ptr(), req.len(), later, later, ptr::null_mut(), &mut err), tc_result::ClockStalled);
    assert!(msg(&err).contains("hlc.state_file"), "{}", msg(&err));
    assert_eq!(tc_result::ClockStalled as u32, 7007);
    let mut stats = Stats::default();
    assert_eq!(tc_engine_stats(e, &mut stats), tc_result::Ok);
    assert_eq!((stats.hlc_stalled_batches, stats.spans_received, stats.buffered_spans), (1, 0, 0));
    tc_engine_free(e);
    // Without persist there is nothing to wait for.
    let e = new_engine();
    assert_eq!(tc_engine_hlc_start(e, &mut start), tc_result::Ok);
    assert_eq!(start, tc_hlc_start::Ready);
    tc_engine_free(e);
}

#[test]
fn garbage_empty_and_zero_length_input_return_codes_with_messages() {
    let e = new_engine();
    let mut err = tc_error { message: [0; 512] };
    let garbage = b"\xff\xff\xff\xff this is not protobuf";
    assert_eq!(tc_engine_ingest(e, garbage.as_ptr(), garbage.len(), 1, 1, ptr::null_mut(), &mut err), tc_result::MalformedInput);
    assert!(msg(&err).starts_with("not an OTLP ExportTraceServiceRequest"), "{}", msg(&err));
    let empty_request = request(vec![("a", vec![])]);
    assert_eq!(tc_engine_ingest(e, empty_request.as_ptr(), empty_request.len(), 1, 1, ptr::null_mut(), &mut err), tc_result::EmptyInput);
    assert!(msg(&err).contains("empty batch"));
    assert_eq!(tc_engine_ingest(e, ptr::null(), 0, 1, 1, ptr::null_mut(), &mut err), tc_result::EmptyInput);
    assert!(msg(&err).contains("zero-length"));
    let mut stats = Stats::default();
    assert_eq!(tc_engine_stats(e, &mut stats), tc_result::Ok);
    assert_eq!((stats.batches_refused, stats.buffered_spans), (3, 0));
    tc_engine_free(e);
}

#[test]
fn invalid_config_names_the_yaml_key() {
    let mut cfg = std::mem::MaybeUninit::<tc_config>::uninit();
    tc_config_default(cfg.as_mut_ptr());
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.quiet_period_ns = -1;
    let mut err = tc_error { message: [0; 512] };
    let mut e = ptr::null_mut();
    assert_eq!(tc_engine_new(&cfg, &mut e, &mut err), tc_result::InvalidConfig);
    assert!(e.is_null(), "outputs are written only on success");
    assert_eq!(msg(&err), "quiet_period must be a positive duration, got -1ns");
    cfg.quiet_period_ns = 1;
    cfg.late_span_policy = 9;
    assert_eq!(tc_config_validate(&cfg, &mut err), tc_result::InvalidConfig);
    assert!(msg(&err).starts_with("late_spans.policy"));
}

#[test]
fn ingest_tick_drain_round_trip_through_the_abi() {
    let e = new_engine();
    let t0 = 1_790_000_000_000_000_000u64;
    let req = request(vec![("a", vec![span(1, 1, 0, t0 - 10, t0 - 5), span(1, 2, 1, t0 - 9, t0 - 6)])]);
    let mut res = tc_ingest_result::default();
    let mut err = tc_error { message: [0; 512] };
    assert_eq!(tc_engine_ingest(e, req.as_ptr(), req.len(), t0, t0, &mut res, &mut err), tc_result::Ok);
    assert_eq!(res.buffered, 2);
    let mut ready = 0;
    assert_eq!(tc_engine_tick(e, t0 + 2_000_000_000, t0 + 2_000_000_000, &mut ready, &mut err), tc_result::Ok);
    assert_eq!(ready, 2);
    let mut rel = ptr::null_mut();
    let mut view = std::mem::MaybeUninit::<tc_release_view>::uninit();
    assert_eq!(tc_engine_drain(e, 100, &mut rel, view.as_mut_ptr(), &mut err), tc_result::Ok);
    assert!(!rel.is_null());
    let view = unsafe { view.assume_init() };
    let otlp = unsafe { std::slice::from_raw_parts(view.otlp, view.otlp_len) };
    assert_eq!(decode(otlp).len(), 2);
    let units = unsafe { std::slice::from_raw_parts(view.units, view.units_len) };
    assert_eq!(units[0].reason, ReleaseReason::Complete);
    // The release outlives the engine: ownership is the caller's.
    tc_engine_free(e);
    assert_eq!(decode(otlp).len(), 2);
    tc_release_free(rel);
}

#[test]
fn names_and_counts_come_from_the_rust_enums() {
    for k in FindingKind::ALL {
        let name = unsafe { CStr::from_ptr(tc_finding_kind_name(k as u32)) };
        assert_eq!(name.to_str().unwrap(), k.name());
    }
    assert_eq!(tc_finding_kind_count() as usize, FindingKind::COUNT);
    assert!(tc_finding_kind_name(tc_finding_kind_count()).is_null());
    for r in ReleaseReason::ALL {
        let name = unsafe { CStr::from_ptr(tc_release_reason_name(r as u32)) };
        assert_eq!(name.to_str().unwrap(), r.name());
    }
    assert_eq!(tc_release_reason_count() as usize, ReleaseReason::COUNT);
    assert!(tc_release_reason_name(tc_release_reason_count()).is_null());
}

#[test]
fn default_config_is_the_rust_default() {
    let mut c: tc_config = unsafe { std::mem::zeroed() };
    assert_eq!(tc_config_default(&mut c), tc_result::Ok);
    assert_eq!(config_from(&c).ok(), Some(Config::default()));
}

#[test]
fn header_is_up_to_date() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/traceconsistency.h"));
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/traceconsistency.h"))
        .expect("include/traceconsistency.h must exist");
    assert!(generated == committed, "include/traceconsistency.h is stale: run `make header` and commit it");
}

#[test]
fn the_last_error_is_truncated_at_a_character_boundary() {
    let dir = std::ffi::CString::new("/dev/null/répertoire").unwrap();
    let mut cfg = std::mem::MaybeUninit::<tc_config>::uninit();
    assert_eq!(tc_config_default(cfg.as_mut_ptr()), tc_result::Ok);
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.hlc_restart = RestartStrategy::None as u32;
    cfg.wal_directory = dir.as_ptr();
    let mut e = ptr::null_mut();
    assert_eq!(tc_engine_new(&cfg, &mut e, ptr::null_mut()), tc_result::InvalidConfig);
    let mut full = [0 as c_char; 512];
    let len = tc_last_error(full.as_mut_ptr(), full.len());
    let text = unsafe { CStr::from_ptr(full.as_ptr()) }.to_str().unwrap().to_string();
    assert_eq!(len, text.len());
    let cut = text.find('é').expect("the message names the directory");
    // Room for the first byte of 'é' only: the copy stops before the character.
    let mut buf = [0x7f as c_char; 512];
    assert_eq!(tc_last_error(buf.as_mut_ptr(), cut + 2), len);
    let got = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().expect("valid UTF-8");
    assert_eq!(got, &text[..cut]);
}

#[test]
fn export_lags_through_the_c_abi_the_slowest_first_within_the_buffers() {
    let e = new_engine();
    let t0 = 1_790_000_000_000_000_000u64;
    let sec = 1_000_000_000u64;
    for (svc, lag) in [("fast", sec / 5), ("slow", 4 * sec), ("mid", sec)] {
        let req = request(vec![(svc, vec![span(1, 1, 0, t0 - lag - 10, t0 - lag)])]);
        let r = tc_engine_ingest(e, req.as_ptr(), req.len(), t0, 0, ptr::null_mut(), ptr::null_mut());
        assert_eq!(r, tc_result::Ok);
    }
    let mut out = [tc_export_lag::default(); 8];
    let mut names = [0u8; 64];
    let mut n = 0usize;
    // Seen for a whole window by then: their own lags.
    let later = 20 * sec;
    assert_eq!(tc_engine_export_lags(e, later, out.as_mut_ptr(), out.len(), names.as_mut_ptr(), names.len(), &mut n), tc_result::Ok);
    assert_eq!(n, 3);
    let name = |l: &tc_export_lag| std::str::from_utf8(&names[l.name_offset as usize..(l.name_offset + l.name_len) as usize]).unwrap().to_string();
    assert_eq!(out[..n].iter().map(|l| (name(l), l.lag_ns)).collect::<Vec<_>>(), vec![("slow".into(), 4 * sec), ("mid".into(), sec), ("fast".into(), sec / 5)]);
    // Room for two names only.
    assert_eq!(tc_engine_export_lags(e, later, out.as_mut_ptr(), out.len(), names.as_mut_ptr(), 7, &mut n), tc_result::Ok);
    assert_eq!(n, 2);
    assert_eq!(tc_engine_export_lags(e, later, ptr::null_mut(), 0, ptr::null_mut(), 0, &mut n), tc_result::Ok);
    assert_eq!(n, 0);
    assert_eq!(tc_engine_export_lags(e, later, ptr::null_mut(), 0, ptr::null_mut(), 0, ptr::null_mut()), tc_result::NullArgument);
    assert_eq!(tc_engine_export_lags(e, later, ptr::null_mut(), 4, names.as_mut_ptr(), 4, &mut n), tc_result::NullArgument);
    tc_engine_free(e);
}

#[test]
fn sampling_section_crosses_the_abi_validated_and_counted() {
    use crate::fixture::{valid_request, SEC, T0};
    let mut err = tc_error { message: [0; 512] };
    let bad = br#"{"rules":[{"name":"a","action":"probabilistic","probabilistic":{"percentage":120}}]}"#;
    assert_eq!(tc_sampling_validate(bad.as_ptr(), bad.len(), &mut err), tc_result::InvalidConfig);
    assert_eq!(msg(&err), "sampling.rules[0].probabilistic.percentage must be between 0 and 100, got 120");
    assert_eq!(tc_sampling_validate(ptr::null(), 0, &mut err), tc_result::Ok);
    assert_eq!(tc_sampling_validate(ptr::null(), 3, &mut err), tc_result::NullArgument);
    let mut cfg = std::mem::MaybeUninit::<tc_config>::uninit();
    assert_eq!(tc_config_default(cfg.as_mut_ptr()), tc_result::Ok);
    let mut cfg = unsafe { cfg.assume_init() };
    cfg.hlc_restart = RestartStrategy::None as u32;
    let mut e = ptr::null_mut();
    assert_eq!(tc_engine_new_sampling(&cfg, bad.as_ptr(), bad.len(), &mut e, &mut err), tc_result::InvalidConfig);
    assert!(e.is_null());
    let good = br#"{"rules":[{"name":"svc","when":{"service":{"in":["svc"]}},"action":"drop"}]}"#;
    assert_eq!(tc_engine_new_sampling(&cfg, good.as_ptr(), good.len(), &mut e, &mut err), tc_result::Ok, "{}", msg(&err));
    let data = valid_request();
    assert_eq!(tc_engine_ingest(e, data.as_ptr(), data.len(), T0, T0, ptr::null_mut(), &mut err), tc_result::Ok);
    assert_eq!(tc_engine_tick(e, T0 + 120 * SEC, T0 + 120 * SEC, ptr::null_mut(), &mut err), tc_result::Ok);
    let mut n = 0usize;
    assert_eq!(tc_engine_sampling_counts(e, ptr::null_mut(), 0, &mut n), tc_result::Ok);
    assert_eq!(n, 2);
    let mut rel = ptr::null_mut();
    let mut view = std::mem::MaybeUninit::<tc_release_view>::uninit();
    assert_eq!(tc_engine_drain(e, 1000, &mut rel, view.as_mut_ptr(), &mut err), tc_result::Ok);
    assert!(rel.is_null(), "the only trace was dropped: nothing to hand out");
    let mut out = [tc_sampling_count::default(); 2];
    assert_eq!(tc_engine_sampling_counts(e, out.as_mut_ptr(), 2, &mut n), tc_result::Ok);
    assert_eq!(out[0], tc_sampling_count { kept_traces: 0, kept_spans: 0, dropped_traces: 1, dropped_spans: 2 });
    assert_eq!(out[1], tc_sampling_count::default());
    tc_engine_free(e);
}
