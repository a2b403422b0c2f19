//! Engine benchmarks: the whole engine path (ingest + stamp + assemble + release + check +
//! emit) on batches of realistic fake OTLP, next to the floors measured on the same bytes:
//! a full prost decode (what a decode-based design would pay) and a memcpy (memory
//! bandwidth). `cargo bench --bench engine` (or `make bench-engine`); the closing lines print
//! ratios against the floors measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use traceconsistency::config::{Config, RestartStrategy};
use traceconsistency::engine::Engine;
use traceconsistency::hlc::{Hlc, Stamp};

#[path = "../fixture.rs"]
mod fixture;
use fixture::{typical_request, T0};

fn engine() -> Engine {
    Engine::new(Config { hlc_restart: RestartStrategy::None, ..Config::default() }).unwrap()
}

/// Ingest one batch, release it (shutdown = release everything now), drain it to bytes.
fn full_path(e: &Engine, bytes: &[u8]) -> usize {
    e.ingest(bytes, T0).unwrap();
    e.tick(T0 + 2_000_000_000);
    let mut n = 0;
    while let Some(r) = e.drain(1 << 20) {
        n += r.otlp.len();
    }
    n
}

fn bench(c: &mut Criterion) {
    for &(label, n) in &[("small", 100usize), ("medium", 1_000), ("large", 10_000)] {
        let bytes = typical_request(n, 0);
        let mut g = c.benchmark_group(format!("engine/{label}"));
        g.throughput(Throughput::Elements(n as u64));
        g.measurement_time(Duration::from_secs(3));
        g.warm_up_time(Duration::from_secs(1));
        g.sample_size(20);
        g.bench_function("ingest_assemble_check_stamp_emit", |b| {
            b.iter_batched(engine, |e| black_box(full_path(&e, &bytes)), BatchSize::LargeInput)
        });
        g.bench_function("prost_full_decode", |b| {
            b.iter(|| black_box(ExportTraceServiceRequest::decode(&bytes[..]).unwrap()))
        });
        g.bench_function("memcpy", |b| b.iter(|| black_box(bytes.clone())));
        g.finish();
    }
}

/// A plain timed run printing ns/span and ratios, so one run prints the comparison.
fn ratios() {
    let n = 1_000;
    let bytes = typical_request(n, 0);
    let time = |f: &mut dyn FnMut()| {
        let iters = 300;
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        t.elapsed().as_nanos() as f64 / (iters * n) as f64
    };
    let engine_ns = time(&mut || {
        let e = engine();
        black_box(full_path(&e, &bytes));
    });
    let decode_ns = time(&mut || {
        black_box(ExportTraceServiceRequest::decode(&bytes[..]).unwrap());
    });
    let copy_ns = time(&mut || {
        black_box(bytes.clone());
    });
    println!("\n== engine ratios (1,000-span batches, {} B/span)", bytes.len() / n);
    println!("engine full path    {engine_ns:8.1} ns/span  ({:.0} spans/s on one core)", 1e9 / engine_ns);
    println!("prost full decode   {decode_ns:8.1} ns/span");
    println!("memcpy              {copy_ns:8.1} ns/span");
    println!("engine / prost decode = {:.2}x   engine / memcpy = {:.1}x", engine_ns / decode_ns, engine_ns / copy_ns);
}

/// The HLC under contention: stamps per batch lock (as the engine takes them: one lock per
/// ingested batch of 1,000 spans) versus one lock per stamp, on 1 and 2 threads.
fn hlc_contention() {
    const STAMPS: u64 = 2_000_000;
    let run = |threads: u64, per_lock: u64| -> f64 {
        let clock = Hlc::new(500_000_000);
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..threads {
                let clock = &clock;
                s.spawn(move || {
                    let mut pt = T0 + th;
                    for _ in 0..STAMPS / threads / per_lock {
                        pt += 1_000;
                        clock.batch(pt, |b| {
                            for i in 0..per_lock {
                                black_box(b.recv_admitted(Stamp { wall: pt - i, logical: 0 }));
                            }
                        })
                        .unwrap(); // no state file: never stalls
                    }
                });
            }
        });
        t.elapsed().as_nanos() as f64 / STAMPS as f64
    };
    println!("\n== HLC stamping, ns per stamp ({STAMPS} stamps)");
    for threads in [1, 2] {
        println!(
            "{threads} thread(s): one lock per 1,000-span batch {:6.1} ns   one lock per stamp {:6.1} ns",
            run(threads, 1_000),
            run(threads, 1)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    ratios();
    hlc_contention();
}
