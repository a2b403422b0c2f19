//! The OTLP test fixture shared by the crate's tests, the criterion benches
//! (`rust/benches/`) and the fuzz crate (`fuzz/`): requests built with the prost types of
//! `opentelemetry-proto`. It uses nothing of the crate, so the benches and the fuzz crate
//! include this file as a module of their own (`#[path]`).

#![allow(dead_code)] // each includer uses a part

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

pub const SEC: u64 = 1_000_000_000;
/// The wall clock origin of the tests, benches and fuzz targets (2026-ish), ns.
pub const T0: u64 = 1_790_000_000 * SEC;

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }), ..Default::default() }
}

pub fn tid(n: u64) -> Vec<u8> {
    let mut v = vec![0xab; 8];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

pub fn sid(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// A span of trace `t` with id `s` and parent `p` (0 = root), times in ns.
pub fn span(t: u64, s: u64, p: u64, start: u64, end: u64) -> Span {
    Span {
        trace_id: tid(t),
        span_id: sid(s),
        parent_span_id: if p == 0 { vec![] } else { sid(p) },
        name: format!("op-{s}"),
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![kv("k", "v")],
        ..Default::default()
    }
}

/// A request with one resource per service (with `host.name` = service) holding `spans`.
pub fn request(groups: Vec<(&str, Vec<Span>)>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", svc), kv("host.name", svc)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "lib".into(), ..Default::default() }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// A small valid request: trace 1 with a root and a child, service "svc", ended a second
/// before [`T0`].
pub fn valid_request() -> Vec<u8> {
    request(vec![("svc", vec![span(1, 1, 0, T0 - 2 * SEC + 1, T0 - SEC), span(1, 2, 1, T0 - 2 * SEC + 2, T0 - SEC)])])
}

fn sv(k: &str, v: String) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(v)) }), ..Default::default() }
}

fn iv(k: &str, v: i64) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }), ..Default::default() }
}

/// A typical batch: `n` spans in traces of 10 (a root and children), spread over 5 resources, 10 attributes
/// per span (~430 B per span encoded, a typical instrumented span). `base` keeps trace IDs
/// distinct between batches.
pub fn typical_request(n: usize, base: u64) -> Vec<u8> {
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
