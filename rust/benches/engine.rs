//! Engine benchmarks: the whole engine path (ingest + stamp + assemble + release + check +
//! emit) on batches of realistic fake OTLP, next to the floors measured on the same bytes:
//! a full prost decode (what a decode-based design would pay) and a memcpy (memory
//! bandwidth). `cargo bench --bench engine` (or `make bench-engine`); the closing lines print
//! ratios against the floors measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use traceconsistency::config::{Config, RestartStrategy};
use traceconsistency::engine::Engine;
use traceconsistency::hlc::{Hlc, Stamp};

const T0: u64 = 1_790_000_000_000_000_000;

fn sv(k: &str, v: String) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }), ..Default::default() }
}

fn iv(k: &str, v: i64) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }), ..Default::default() }
}

/// `n` spans in traces of 10 (a root and children), spread over 5 resources, 10 attributes
/// per span (~430 B per span encoded, a typical instrumented span). `base` keeps trace IDs
/// distinct between batches.
fn fake_otlp(n: usize, base: u64) -> Vec<u8> {
    let mut per_res: Vec<Vec<Span>> = vec![Vec::new(); 5];
    for i in 0..n as u64 {
        let trace = base + i / 10;
        let pos = i % 10;
        let mut tid = [0u8; 16];
        tid[..8].copy_from_slice(&0x5eed_u64.to_be_bytes());
        tid[8..].copy_from_slice(&trace.to_be_bytes());
        let start = T0 - 1_000_000_000 + pos * 1_000;
        let span = Span {
            trace_id: tid.to_vec(),
            span_id: (pos + 1).to_be_bytes().to_vec(),
            parent_span_id: if pos == 0 { vec![] } else { 1u64.to_be_bytes().to_vec() },
            name: format!("GET /api/v1/resource/{pos}"),
            kind: if pos == 0 { 2 } else { 3 },
            start_time_unix_nano: start,
            end_time_unix_nano: start + if pos == 0 { 500_000 } else { 100_000 },
            attributes: vec![
                sv("http.request.method", "GET".into()),
                sv("url.path", format!("/api/v1/resource/{pos}")),
                iv("http.response.status_code", 200),
                sv("server.address", "backend.internal.example".into()),
                iv("server.port", 8080),
                sv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)".into()),
                sv("network.protocol.version", "1.1".into()),
                iv("http.request.body.size", 1024 + pos as i64),
                sv("db.system", "postgresql".into()),
                sv("thread.name", format!("worker-{}", i % 16)),
            ],
            ..Default::default()
        };
        per_res[(pos % 5) as usize].push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: per_res
            .into_iter()
            .enumerate()
            .map(|(r, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        sv("service.name", format!("service-{r}")),
                        sv("host.name", format!("host-{r}")),
                        sv("service.instance.id", format!("instance-{r}")),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "io.opentelemetry.http".into(), version: "1.0.0".into(), ..Default::default() }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
    .encode_to_vec()
}

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
        let bytes = fake_otlp(n, 0);
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
    let bytes = fake_otlp(n, 0);
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
