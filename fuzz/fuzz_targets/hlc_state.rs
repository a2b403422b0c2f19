//! (5) Arbitrary bytes as the HLC state file: written to a temp file, then an engine is
//! started with `hlc.restart_strategy: persist` on it (through `Engine::new`, what
//! `tc_engine_new` calls). Oracle, parsed independently of the engine: the file's content
//! must be UTF-8; blank (after trimming whitespace) means "empty" (the engine starts and asks
//! the caller to wait); otherwise it must be a decimal u64 bound at most
//! now + hlc.max_offset + 24 h. Invariants: a file the oracle rejects gives an error naming
//! hlc.state_file; a file it accepts gives an engine whose persisted start matches, whose
//! first stamp (at any physical time, even 0) is above the bound, and which leaves a new
//! bound above that stamp in the file.
//!
//! With the first input byte odd, the file is built as `<ws><now + delta><suffix>` from the
//! rest (delta from the next 8 bytes), so bounds near the wall clock are explored too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tcfuzz::{valid_request, SEC};
use traceconsistency::config::{Config, RestartStrategy};
use traceconsistency::engine::Engine;
use traceconsistency::hlc::{PersistStart, Stamp, MAX_BOUND_AHEAD_NS};

fn dir() -> &'static std::path::Path {
    static D: OnceLock<std::path::PathBuf> = OnceLock::new();
    D.get_or_init(|| tcfuzz::scratch_dir("hlc"))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fuzz_target!(|data: &[u8]| {
    let max_offset = 500_000_000u64;
    let content: Vec<u8> = match data.split_first() {
        Some((&m, rest)) if m & 1 == 1 && rest.len() >= 8 => {
            let delta = i64::from_le_bytes(rest[..8].try_into().unwrap()) % (4 * 24 * 3600 * SEC as i64);
            let ws = [b"".as_slice(), b" ", b"\n", b"\t "][(m >> 1) as usize % 4];
            let mut c = ws.to_vec();
            c.extend_from_slice((i128::from(now_ns()) + i128::from(delta)).to_string().as_bytes());
            c.extend_from_slice(&rest[8..]);
            c
        }
        _ => data.to_vec(),
    };
    let path = dir().join("state");
    std::fs::write(&path, &content).unwrap();
    let before = now_ns();
    let cfg = Config {
        hlc_enabled: true,
        hlc_max_offset_ns: max_offset as i64,
        hlc_restart: RestartStrategy::Persist,
        hlc_state_file: Some(path.to_str().unwrap().to_string()),
        num_shards: 1,
        ..Config::default()
    };
    let engine = Engine::new(cfg);
    let after = now_ns();
    // The oracle.
    let expect: Result<Option<u64>, ()> = match std::str::from_utf8(&content) {
        Err(_) => Err(()),
        Ok(s) if s.trim().is_empty() => Ok(None),
        Ok(s) => match s.trim().parse::<u64>() {
            Err(_) => Err(()),
            Ok(b) => {
                // The engine reads the clock between `before` and `after`.
                let lo = before.saturating_add(max_offset).saturating_add(MAX_BOUND_AHEAD_NS);
                let hi = after.saturating_add(max_offset).saturating_add(MAX_BOUND_AHEAD_NS);
                if b <= lo {
                    Ok(Some(b))
                } else if b > hi {
                    Err(())
                } else {
                    return; // at the limit within the clock's uncertainty: either is right
                }
            }
        },
    };
    match (expect, engine) {
        (Err(()), Ok(_)) => panic!("engine started on a state file it should refuse: {:?}", String::from_utf8_lossy(&content)),
        (Err(()), Err(e)) => assert!(e.0.contains("hlc.state_file"), "error does not name hlc.state_file: {e}"),
        (Ok(b), Err(e)) => panic!("engine refused a good state file {b:?}: {e}"),
        (Ok(bound), Ok(engine)) => {
            match (bound, engine.hlc_persist_start()) {
                (None, Some(PersistStart::Empty)) => {}
                (Some(b), Some(PersistStart::Resumed { bound })) => assert_eq!(b, bound),
                (b, got) => panic!("persist start {got:?} for bound {b:?}"),
            }
            let floor = Stamp { wall: bound.unwrap_or(0), logical: 0 };
            // Physical time 0: the clock must still stamp above the bound.
            let pt = if data.len() % 2 == 0 { 0 } else { now_ns() };
            let req = valid_request();
            engine.ingest(&req, pt).expect("ingest");
            let first = engine.hlc_last().expect("a clock");
            assert!(first > floor, "first stamp {first:?} not above the bound {floor:?}");
            let written = std::fs::read_to_string(&path).expect("state file after start");
            let w: u64 = written.trim().parse().expect("the engine writes a decimal bound");
            assert!(w > first.wall, "persisted bound {w} not above the stamp {first:?}");
        }
    }
});
