//! Writes the seed corpora under fuzz/corpus/<target>/ (run by fuzz/make-corpus.sh).
//! Requests are built like rust/testutil.rs (prost types; here the lax ones so names may be
//! any bytes) and cover the shapes the trace generator (tests/tracegen) produces, healthy and
//! broken (missing parent, two roots, cycles, duplicate IDs, bad IDs), plus the edges the
//! targets care about (nesting at pdata's limit, odd ID lengths, extreme times, upstream
//! consistency.* attributes, pdata's value-before-key KeyValue order, unknown fields).
//! Deterministic: the same files every run.

use prost::Message;
use std::path::Path;
use tcfuzz::lax::{self, any_value::Value as V};
use tcfuzz::{SEC, T0};

fn kv(k: &str, v: &str) -> lax::KeyValue {
    lax::KeyValue { key: k.into(), value: Some(lax::AnyValue { value: Some(V::StringValue(v.into())) }), key_strindex: 0 }
}

fn tid(n: u64) -> Vec<u8> {
    let mut v = vec![0xab; 8];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

fn sid(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn span(t: u64, s: u64, p: u64, start: u64, end: u64) -> lax::Span {
    lax::Span {
        trace_id: tid(t),
        span_id: sid(s),
        parent_span_id: if p == 0 { vec![] } else { sid(p) },
        name: format!("op-{s}").into_bytes(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![kv("k", "v")],
        ..Default::default()
    }
}

fn request(groups: Vec<(&str, Vec<lax::Span>)>) -> lax::ExportTraceServiceRequest {
    lax::ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(svc, spans)| lax::ResourceSpans {
                resource: Some(lax::Resource { attributes: vec![kv("service.name", svc), kv("host.name", svc)], ..Default::default() }),
                scope_spans: vec![lax::ScopeSpans {
                    scope: Some(lax::InstrumentationScope { name: b"lib".to_vec(), ..Default::default() }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn trace(t: u64) -> Vec<lax::Span> {
    let b = T0 - 5 * SEC;
    vec![span(t, 1, 0, b, b + 900), span(t, 2, 1, b + 10, b + 500), span(t, 3, 1, b + 20, b + 600), span(t, 4, 2, b + 30, b + 400)]
}

fn nested(arrays: usize, kvlists: usize) -> lax::AnyValue {
    let mut v = lax::AnyValue { value: Some(V::IntValue(1)) };
    for _ in 0..kvlists {
        v = lax::AnyValue { value: Some(V::KvlistValue(lax::KeyValueList { values: vec![lax::KeyValue { key: b"k".to_vec(), value: Some(v), key_strindex: 0 }] })) };
    }
    for _ in 0..arrays {
        v = lax::AnyValue { value: Some(V::ArrayValue(lax::ArrayValue { values: vec![v] })) };
    }
    v
}

fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name, r: lax::ExportTraceServiceRequest| out.push((name, r.encode_to_vec()));
    add("healthy-one-trace", request(vec![("a", trace(1))]));
    add("healthy-two-services", request(vec![("a", trace(1)[..2].to_vec()), ("b", trace(1)[2..].to_vec())]));
    add("many-traces", request(vec![("a", (1..20).flat_map(trace).collect())]));
    let mut t = trace(2);
    t.remove(1);
    add("missing-parent", request(vec![("a", t)]));
    let mut t = trace(3);
    t[2].parent_span_id.clear();
    add("two-roots", request(vec![("a", t)]));
    let mut t = trace(4);
    t[0].parent_span_id = sid(4);
    add("cycle-no-root", request(vec![("a", t)]));
    let mut t = trace(5);
    t.push(t[3].clone());
    add("exact-duplicate", request(vec![("a", t)]));
    let mut t = trace(6);
    let mut c = t[3].clone();
    c.name = b"conflict".to_vec();
    t.push(c);
    add("conflicting-span-id", request(vec![("a", t)]));
    let mut t = trace(7);
    t[0].trace_id = vec![0; 16];
    t[1].span_id = vec![0; 8];
    t[2].trace_id = vec![1; 15];
    t[3].span_id = vec![2; 9];
    add("bad-and-zero-ids", request(vec![("a", t)]));
    let mut t = trace(8);
    t[1].parent_span_id = vec![3; 7];
    t[2].trace_id = vec![1; 17];
    t[3].span_id.clear();
    add("odd-id-lengths", request(vec![("a", t)]));
    let mut t = trace(9);
    t[0].start_time_unix_nano = 0;
    t[0].end_time_unix_nano = u64::MAX;
    t[1].start_time_unix_nano = u64::MAX;
    t[1].end_time_unix_nano = 0;
    add("extreme-times", request(vec![("a", t)]));
    let mut t = trace(10);
    t[0].attributes.push(kv("consistency.hlc", &format!("{:020}.{:010}", T0 - SEC, 3)));
    t[1].attributes.push(kv("consistency.hlc", "garbage"));
    t[2].attributes.push(kv("consistency.findings", "x"));
    add("upstream-consistency-attrs", request(vec![("a", t)]));
    let mut t = trace(11);
    t[0].attributes.push(lax::KeyValue { key: b"deep".to_vec(), value: Some(nested(49, 0)), key_strindex: 0 });
    add("nested-level-99", request(vec![("a", t)]));
    let mut t = trace(12);
    t[0].attributes.push(lax::KeyValue { key: b"deep".to_vec(), value: Some(nested(50, 0)), key_strindex: 0 });
    add("nested-level-101", request(vec![("a", t)]));
    let mut t = trace(13);
    t[0].attributes.push(lax::KeyValue { key: b"deep".to_vec(), value: Some(nested(10, 44)), key_strindex: 0 });
    add("nested-kvlist-mix", request(vec![("a", t)]));
    let mut t = trace(14);
    t[0].events.push(lax::Event { time_unix_nano: T0, name: b"e".to_vec(), attributes: vec![kv("a", "b")], dropped_attributes_count: 1 });
    t[0].links.push(lax::Link { trace_id: tid(9), span_id: sid(3), flags: 0x301, ..Default::default() });
    t[0].status = Some(lax::Status { message: b"m".to_vec(), code: 2 });
    t[0].flags = 0x301;
    add("events-links-status", request(vec![("a", t)]));
    let mut t = trace(15);
    t[0].links.push(lax::Link { trace_id: vec![1, 2, 3], ..Default::default() });
    add("bad-link-id", request(vec![("a", t)]));
    let mut t = trace(16);
    t[0].name = vec![0xff, 0xfe, b'x'];
    t[1].attributes.push(lax::KeyValue { key: vec![0xc3], value: Some(lax::AnyValue { value: Some(V::StringValue(vec![0x80])) }), key_strindex: 0 });
    add("non-utf8-strings", request(vec![("a", t)]));
    add("empty-request", lax::ExportTraceServiceRequest::default());
    add("resource-without-spans", request(vec![("a", vec![])]));
    let mut r = request(vec![("a", trace(22))]);
    r.resource_spans[0].deprecated_scope_spans = r.resource_spans[0].scope_spans.clone();
    add("deprecated-scope-spans", r);
    // Many scopes of one span each.
    let mut r = request(vec![]);
    r.resource_spans.push(lax::ResourceSpans {
        resource: None,
        scope_spans: (0..30).map(|i| lax::ScopeSpans { spans: vec![span(20, i + 1, i, T0 - SEC, T0)], ..Default::default() }).collect(),
        schema_url: b"https://opentelemetry.io/schemas/1.26.0".to_vec(),
        deprecated_scope_spans: vec![],
    });
    add("many-scopes", r);
    let mut out = out;
    // pdata's encoding order: a KeyValue with its value before its key, and an unknown field.
    let mut b = request(vec![("a", vec![span(21, 1, 0, T0 - SEC, T0)])]).encode_to_vec();
    let v = b"00000000000000000200.0000000003";
    let mut any = vec![0x0a, v.len() as u8];
    any.extend_from_slice(v);
    let mut kvb = vec![0x12, any.len() as u8];
    kvb.extend_from_slice(&any);
    kvb.extend_from_slice(&[0x0a, 15]);
    kvb.extend_from_slice(b"consistency.hlc");
    let mut sp = span(21, 2, 1, T0 - SEC, T0).encode_to_vec();
    sp.push(0x4a);
    sp.push(kvb.len() as u8);
    sp.extend_from_slice(&kvb);
    sp.extend_from_slice(&[0xf8, 0x06, 0x03]); // field 111, varint 3: unknown
    let mut ss = vec![0x12, sp.len() as u8];
    ss.extend_from_slice(&sp);
    let mut rs = vec![0x12, ss.len() as u8];
    rs.extend_from_slice(&ss);
    b.push(0x0a);
    b.push(rs.len() as u8);
    b.extend_from_slice(&rs);
    out.push(("pdata-order-and-unknown-field", b));
    let healthy = out[0].1.clone();
    out.push(("truncated", healthy[..healthy.len() / 2].to_vec()));
    out
}

/// Deterministic pseudo-random bytes (xorshift) for the `arbitrary`-driven targets.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for t in ["ingest_abi", "validate_vs_prost", "structured", "config_abi", "hlc_state"] {
        let _ = std::fs::remove_dir_all(root.join(t));
    }
    for (name, bytes) in requests() {
        write(&root.join("ingest_abi"), name, &bytes);
        write(&root.join("validate_vs_prost"), name, &bytes);
    }
    for (i, n) in [16usize, 64, 256, 1024, 4096].iter().enumerate() {
        for k in 0..3 {
            write(&root.join("structured"), &format!("noise-{n}-{k}"), &noise((i * 10 + k) as u64 + 1, *n));
        }
    }
    // All-0xff: `arbitrary` reads it as long collections and large values.
    write(&root.join("structured"), "ones-2048", &[0xff; 2048]);
    for (i, n) in [8usize, 32, 96, 160].iter().enumerate() {
        for k in 0..3 {
            write(&root.join("config_abi"), &format!("noise-{n}-{k}"), &noise((i * 10 + k) as u64 + 100, *n));
        }
    }
    write(&root.join("config_abi"), "zeros-128", &[0; 128]);
    let hlc: &[(&str, &[u8])] = &[
        ("bound", b"1790000000000000000\n"),
        ("empty", b""),
        ("blank", b" \n\t"),
        ("zero", b"0"),
        ("u64-max", b"18446744073709551615\n"),
        ("overflow", b"18446744073709551616"),
        ("plus-sign", b"+123\n"),
        ("negative", b"-1"),
        ("garbage", b"abc\n"),
        ("two-numbers", b"1 2\n"),
        ("non-utf8", b"\xff\xfe1"),
        ("now-plus-0", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\n"),
        ("now-plus-1h", b"\x03\x00\x68\xc4\x61\x74\x03\x00\x00"),
        ("now-minus", b"\x05\x00\x00\x00\x00\x00\x00\x00\xf0"),
    ];
    for (n, b) in hlc {
        write(&root.join("hlc_state"), n, b);
    }
    eprintln!("wrote seed corpora under {}", root.display());
}
