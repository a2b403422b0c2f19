//! (6) Write-ahead log replay of damaged and arbitrary segment files, through
//! `traceconsistency::engine::Engine` (what `tc_engine_new` and `tc_engine_recover` call).
//!
//! The first input byte picks the mode. Even: the rest is written as the log's only segment
//! file, as is — with bit 1 clear into a log that has its key (an engine made it first), with
//! bit 1 set into a directory without one (a log of the previous, unkeyed format). Odd: a real log is written first — an engine with the log on ingests 1–4
//! copies of a valid two-span request (each its own trace) and is dropped without
//! delivering anything (a crash) — and then damaged as the rest of the input says: a cut of
//! the file's end (two bytes: how many bytes to keep, modulo the length + 1) and byte flips
//! (three bytes each: offset, XOR mask).
//!
//! Invariants: the engine always starts on the directory (damage never prevents a start);
//! replay never panics; every release drained after shutdown decodes with prost, and the
//! spans out are the spans replayed minus counted duplicates. Odd mode: at most every span
//! ingested is replayed, and without damage exactly every one, with no damage reported.
//! Replaying the same directory again (after the first replay's shutdown, nothing
//! delivered) replays the same spans.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::OnceLock;
use tcfuzz::{decode_lax, spans, valid_request, T0};
use traceconsistency::config::{Config, RestartStrategy, SyncMode};
use traceconsistency::engine::{Engine, Recovery};

fn dir() -> &'static std::path::Path {
    static D: OnceLock<std::path::PathBuf> = OnceLock::new();
    D.get_or_init(|| tcfuzz::scratch_dir("wal"))
}

fn cfg() -> Config {
    Config {
        num_shards: 2,
        hlc_restart: RestartStrategy::None,
        wal_directory: Some(dir().to_str().unwrap().to_string()),
        wal_sync: SyncMode::None,
        ..Config::default()
    }
}

fn clear() {
    for e in std::fs::read_dir(dir()).unwrap() {
        let _ = std::fs::remove_file(e.unwrap().path());
    }
}

fn segments() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal") && std::fs::metadata(p).map_or(false, |m| m.len() > 0))
        .collect();
    v.sort();
    v
}

/// A copy of the valid request with its own trace ID.
fn request(copy: u8) -> Vec<u8> {
    let mut req = ExportTraceServiceRequest::decode(valid_request().as_slice()).unwrap();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for s in &mut ss.spans {
                s.trace_id = vec![0xab; 16];
                s.trace_id[15] = copy + 1;
            }
        }
    }
    req.encode_to_vec()
}

/// Replays the directory, shuts down and drains; returns the report and the spans out.
fn replay() -> (Recovery, u64) {
    let e = Engine::new(cfg()).expect("an engine always starts on a damaged log");
    let mut out = 0u64;
    let drain = |out: &mut u64| {
        while let Some(r) = e.drain(1000) {
            let req = decode_lax(&r.otlp).expect("a release decodes");
            let n = spans(&req).count() as u64;
            assert_eq!(n, r.spans);
            *out += n;
        }
    };
    // The replay pauses for drains when released data fills the bound.
    let rep = loop {
        let rep = e.recover(T0);
        if !rep.more {
            break rep;
        }
        drain(&mut out);
    };
    let s = e.stats();
    assert_eq!(s.wal_spans_replayed, rep.spans);
    assert_eq!(s.spans_received, 0);
    e.shutdown(T0);
    drain(&mut out);
    let s = e.stats();
    assert_eq!(out, rep.spans - s.duplicates_dropped - s.conflicts_dropped, "{rep:?}");
    (rep, out)
}

fuzz_target!(|data: &[u8]| {
    clear();
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut ingested = 0u64;
    let mut damaged = false;
    if mode & 1 == 0 {
        if mode & 2 == 0 {
            drop(Engine::new(cfg()).unwrap()); // the key, and an empty segment 0
        }
        std::fs::write(dir().join(format!("{:020}.wal", 0)), rest).unwrap();
        damaged = true;
    } else {
        let copies = 1 + (mode >> 1) % 4;
        {
            let e = Engine::new(cfg()).unwrap();
            e.recover(T0);
            for c in 0..copies {
                ingested += e.ingest(&request(c), T0).unwrap().buffered;
            }
        }
        let segs = segments();
        assert_eq!(segs.len(), 1);
        let mut bytes = std::fs::read(&segs[0]).unwrap();
        let mut ops = rest;
        if ops.len() >= 2 {
            let keep = u16::from_le_bytes([ops[0], ops[1]]) as usize % (bytes.len() + 1);
            if keep < bytes.len() {
                bytes.truncate(keep);
                damaged = true;
            }
            ops = &ops[2..];
        }
        for op in ops.chunks_exact(3) {
            if bytes.is_empty() {
                break;
            }
            let at = u16::from_le_bytes([op[0], op[1]]) as usize % bytes.len();
            if op[2] != 0 {
                bytes[at] ^= op[2];
                damaged = true;
            }
        }
        std::fs::write(&segs[0], &bytes).unwrap();
    }
    let (first, out1) = replay();
    if mode & 1 == 1 {
        assert!(first.spans <= ingested, "{first:?}");
        if !damaged {
            assert_eq!(first.spans, ingested, "{first:?}");
            assert_eq!((first.corrupt_records, first.torn_records, first.unreadable_batches), (0, 0, 0));
        }
    }
    let (second, out2) = replay();
    assert_eq!((second.spans, out2), (first.spans, out1), "replaying again: {first:?} then {second:?}");
});
