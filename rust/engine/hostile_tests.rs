//! Hostile input shapes cost about what the same number of ordinary spans costs: every step
//! of ingest, tick and drain is `O(n log n)` whatever one client sends. Each shape is timed
//! against an ordinary workload of the same size in the same run (a ratio, not a wall-clock
//! budget, so a slow machine does not fail it); the shapes are the ones that were quadratic
//! before (pairwise duplicate comparison, linear group search, an ID hash that crafted IDs
//! could collide for every seed).

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

use super::*;
use crate::testutil::*;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_790_000_000 * SEC;
/// Hostile / ordinary time ratio allowed, plus a floor for tiny timings.
const RATIO: f64 = 8.0;
const FLOOR: Duration = Duration::from_millis(300);

fn cfg() -> Config {
    Config { num_shards: 4, hlc_restart: RestartStrategy::None, ..Config::default() }
}

/// Ingests every request, releases everything due, drains; returns the time and the spans out.
fn run(requests: &[Vec<u8>]) -> (Duration, u64) {
    let e = Engine::new(cfg()).unwrap();
    let start = Instant::now();
    for r in requests {
        e.ingest(r, T0).unwrap();
    }
    e.tick(T0 + 61 * SEC);
    let mut out = 0;
    while let Some(rel) = e.drain(8192) {
        out += rel.spans;
    }
    (start.elapsed(), out)
}

/// `n` spans in complete traces of 10, in requests of at most 10,000 spans.
fn ordinary(n: u64) -> Vec<Vec<u8>> {
    let b = T0 - SEC;
    let spans: Vec<Span> = (0..n).map(|i| span(1_000_000 + i / 10, i % 10 + 1, if i % 10 == 0 { 0 } else { 1 }, b, b + 10)).collect();
    spans.chunks(10_000).map(|c| request(vec![("svc", c.to_vec())])).collect()
}

fn assert_bounded(shape: &str, hostile: Duration, ordinary: Duration) {
    println!("{shape}: hostile {hostile:?}, ordinary {ordinary:?}");
    let limit = ordinary.mul_f64(RATIO) + FLOOR;
    assert!(hostile <= limit, "{shape}: {hostile:?} > {limit:?} ({RATIO}x the ordinary {ordinary:?} + {FLOOR:?})");
}

#[test]
fn twenty_thousand_spans_sharing_one_span_id_cost_like_ordinary_spans() {
    const N: u64 = 20_000;
    let b = T0 - SEC;
    let (base, _) = run(&ordinary(N));
    // Exact duplicates (a retry storm), each with an upstream `consistency.*` attribute that
    // the comparison must ignore; and different spans sharing the ID (conflicts).
    for exact in [true, false] {
        let spans: Vec<Span> = (0..N)
            .map(|i| {
                let mut s = span(1, 7, 0, b, b + 10);
                s.attributes.push(kv(crate::attrs::ATTR_HLC, &format!("{:020}.{:010}", b + i, 0)));
                if !exact {
                    s.name = format!("op-{i}");
                }
                s
            })
            .collect();
        let reqs: Vec<Vec<u8>> = spans.chunks(10_000).map(|c| request(vec![("svc", c.to_vec())])).collect();
        let (t, out) = run(&reqs);
        assert_eq!(out, if exact { 1 } else { N }, "exact duplicates dropped, conflicts kept");
        assert_bounded(if exact { "same span ID, exact" } else { "same span ID, conflicting" }, t, base);
    }
}

#[test]
fn forty_thousand_scopes_in_one_trace_cost_like_ordinary_spans() {
    const N: u64 = 40_000;
    let b = T0 - SEC;
    let scopes: Vec<ScopeSpans> = (0..N)
        .map(|i| ScopeSpans {
            scope: Some(InstrumentationScope { name: format!("scope-{i}"), ..Default::default() }),
            spans: vec![span(1, i + 1, if i == 0 { 0 } else { 1 }, b, b + 10)],
            schema_url: String::new(),
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "svc")], ..Default::default() }),
            scope_spans: scopes,
            schema_url: String::new(),
        }],
    }
    .encode_to_vec();
    let (base, _) = run(&ordinary(N));
    let (t, out) = run(&[req]);
    // Over the per-trace limit: the first 20,000 leave as span_limit, the rest as late spans.
    assert_eq!(out, N);
    assert_bounded("40,000 scopes in one trace", t, base);
}

/// The mixer the engine used to hash trace IDs with: the seed was mixed with the low half only.
fn old_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn forty_thousand_crafted_trace_ids_do_not_pile_into_one_bucket() {
    const N: u64 = 40_000;
    const K: u64 = 0x5eed;
    let b = T0 - SEC;
    // Low half = K ^ mix(high half): every such ID hashed to one value under any seed.
    let spans: Vec<Span> = (0..N)
        .map(|i| {
            let high = 0x1000 + i;
            let low = K ^ old_mix(high);
            let mut s = span(0, 1, 0, b, b + 10);
            s.trace_id = [high.to_be_bytes(), low.to_be_bytes()].concat();
            s
        })
        .collect();
    let reqs: Vec<Vec<u8>> = spans.chunks(10_000).map(|c| request(vec![("svc", c.to_vec())])).collect();
    let singles: Vec<Vec<u8>> = {
        let s: Vec<Span> = (0..N).map(|i| span(5_000_000 + i, 1, 0, b, b + 10)).collect();
        s.chunks(10_000).map(|c| request(vec![("svc", c.to_vec())])).collect()
    };
    let (base, _) = run(&singles);
    let (t, out) = run(&reqs);
    assert_eq!(out, N);
    assert_bounded("40,000 crafted trace IDs", t, base);
}

#[test]
fn accounted_memory_covers_what_the_engine_allocates() {
    use crate::testutil::counting::alloc_live;
    let bound: u64 = 32 << 20;
    let e = Engine::new(Config {
        quiet_period_ns: 300 * SEC as i64,
        idle_timeout_ns: 300 * SEC as i64,
        max_age_ns: 600 * SEC as i64,
        max_buffered_bytes: bound as i64,
        max_buffered_spans: 10_000_000,
        ..cfg()
    })
    .unwrap();
    let base = alloc_live();
    let pad = "x".repeat(4096);
    let (mut worst, mut at_accounted, mut out) = (0i64, 0u64, 0u64);
    // Beyond the count while it is near the bound: what the allocator gives for what the
    // engine holds, against the count of it.
    let (mut worst_full, mut at_full) = (i64::MIN, 0u64);
    for b in 0..300u64 {
        let groups: Vec<(String, Vec<Span>)> =
            (0..100u64).map(|i| (format!("{}{pad}", b * 100 + i), vec![span(b * 100 + i + 1, 1, 0, T0 - SEC, T0 - SEC / 2)])).collect();
        let r = request(groups.iter().map(|(s, v)| (s.as_str(), v.clone())).collect());
        loop {
            let live = alloc_live() - base - r.capacity() as i64;
            let acc = e.stats().memory_total_bytes;
            if live - acc as i64 > worst {
                (worst, at_accounted) = (live - acc as i64, acc);
            }
            if acc >= bound / 2 && live - acc as i64 > worst_full {
                (worst_full, at_full) = (live - acc as i64, acc);
            }
            match e.ingest(&r, T0) {
                Ok(_) => break,
                Err(IngestError::Full { .. }) => {
                    while let Some(rel) = e.drain(256) {
                        out += rel.spans;
                    }
                }
                Err(err) => panic!("{err}"),
            }
        }
    }
    eprintln!(
        "allocated beyond the count at worst: {} KiB with {} KiB accounted; with half the bound or more counted: {} KiB with {} KiB; {out} spans out",
        worst >> 10,
        at_accounted >> 10,
        worst_full >> 10,
        at_full >> 10
    );
    // Near the bound the count covers what the allocator gives (size classes included)
    // but for the batch being scanned (100 entries of 4 KiB) and one table's growth.
    assert!(worst_full > i64::MIN, "the count never reached half the bound");
    assert!(worst_full <= 2 << 20, "{} KiB allocated beyond {} KiB accounted near the bound", worst_full >> 10, at_full >> 10);
    // The slack covers transients the count does not follow: while a shard's table grows,
    // the old one and its doubled successor are both live (which shard grows when depends
    // on the random hash keys).
    assert!(worst <= (at_accounted / 4) as i64 + (4 << 20), "{} KiB allocated beyond {} KiB accounted", worst >> 10, at_accounted >> 10);
}
