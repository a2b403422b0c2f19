//! (3) Structure-aware: `arbitrary` builds a few `ExportTraceServiceRequest`s (IDs of odd
//! lengths 0/7/9/15/17 and all-zero, small ID pools so duplicate span IDs and cyclic parents
//! are common, exact re-sends, deep AnyValue nesting up to 110 levels, many spans/scopes,
//! timestamps 0 and u64::MAX, upstream `consistency.*` attributes, non-UTF-8 names), encodes
//! them with prost and feeds them through `traceconsistency::engine::Engine` with an
//! arbitrary (valid) configuration, ticking and draining in between, then shuts down.
//!
//! Invariants: ingest never panics; a batch is refused only when pdata would refuse it
//! (attribute nesting >= 100) and then counted; every release decodes with prost (strictly
//! too when every input was UTF-8 clean) and holds `Release::spans` spans; spans out ==
//! spans accepted (buffered + late_forwarded + unassembled) - (duplicates_dropped - resent)
//! - conflicts_dropped, with late_dropped only under the drop policy; every span out is one
//! of the spans in (by name and, with skew correction off, times); nothing stays buffered.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tcfuzz::lax::{self, any_value::Value as V};
use tcfuzz::{assert_sub_multiset, decode_lax, decode_strict, span_keys, SEC, T0};
use traceconsistency::config::{Config, DuplicatePolicy, LateSpanPolicy, RestartStrategy};
use traceconsistency::engine::Engine;

const MS: u64 = 1_000_000;

#[derive(Arbitrary, Debug)]
struct Cfg {
    shards: u8,
    keep_latest: bool,
    late_drop: bool,
    max_spans_per_trace: u8,
    max_buffered_spans: u8,
    late_cache: u8,
    skew: bool,
    write_attributes: bool,
    hlc: bool,
    checks_disabled: u16,
    child_tolerance_ms: u8,
}

#[derive(Arbitrary, Debug)]
enum Id {
    Pool(u8),
    Zero,
    /// Odd length: 0, 7, 9, 15, 17 (or the right one) bytes of `fill`.
    Len(u8, u8),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Time {
    Zero,
    Max,
    Rel(i32),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Attr {
    Str(Vec<u8>, Vec<u8>),
    Int(i64),
    Double(f64),
    /// Nested arrays / kvlists: depth (mod 111) levels, the bits choosing array or kvlist.
    Deep(u8, u64),
    /// `consistency.hlc` as written by an upstream collector.
    UpstreamHlc(i32, u32),
    /// Any `consistency.<suffix>` key with an arbitrary value.
    Ours(Vec<u8>, Vec<u8>),
    Empty,
}

#[derive(Arbitrary, Debug)]
struct SpanIn {
    trace: Id,
    span: Id,
    parent: Option<Id>,
    name: Vec<u8>,
    start: Time,
    end: Time,
    flags: u32,
    kind: i32,
    attrs: Vec<Attr>,
    events: Vec<(Time, Vec<Attr>)>,
    links: Vec<(Id, Id)>,
    status: Option<(i32, Vec<u8>)>,
    /// Send the previous span again, unchanged (a retry).
    resend_previous: bool,
}

#[derive(Arbitrary, Debug)]
struct Scope {
    name: Vec<u8>,
    spans: Vec<SpanIn>,
}

#[derive(Arbitrary, Debug)]
struct Res {
    service: Vec<u8>,
    host: Option<u8>,
    scopes: Vec<Scope>,
}

#[derive(Arbitrary, Debug)]
struct Batch {
    advance_ms: u16,
    tick: bool,
    drain: Option<u8>,
    resources: Vec<Res>,
}

#[derive(Debug)]
struct Input {
    cfg: Cfg,
    batches: Vec<Batch>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let cfg = Cfg::arbitrary(u)?;
        let mut batches = Vec::new();
        // At most 6 batches; each bounded in `build`.
        while batches.len() < 6 && u.arbitrary::<bool>()? {
            batches.push(Batch::arbitrary(u)?);
        }
        Ok(Input { cfg, batches })
    }
}

fn id(i: &Id, n: usize, pool_salt: u8) -> Vec<u8> {
    match *i {
        Id::Pool(p) => {
            let mut v = vec![0u8; n];
            v[0] = pool_salt;
            v[n - 1] = 1 + p % 6;
            v
        }
        Id::Zero => vec![0; n],
        Id::Len(l, fill) => vec![fill; [0, 7, 9, 15, 17, n][l as usize % 6]],
        Id::Raw(r) => {
            let mut v = r.to_be_bytes().repeat(2);
            v.truncate(n);
            v
        }
    }
}

fn time(t: &Time) -> u64 {
    match *t {
        Time::Zero => 0,
        Time::Max => u64::MAX,
        Time::Rel(ms) => T0.wrapping_add_signed(i64::from(ms) * MS as i64),
        Time::Raw(r) => r,
    }
}

fn kv(k: impl Into<Vec<u8>>, v: V) -> lax::KeyValue {
    lax::KeyValue { key: k.into(), value: Some(lax::AnyValue { value: Some(v) }), key_strindex: 0 }
}

fn attr(a: &Attr, clean: &mut bool) -> lax::KeyValue {
    match a {
        Attr::Str(k, v) => {
            *clean &= std::str::from_utf8(k).is_ok() && std::str::from_utf8(v).is_ok();
            kv(k.clone(), V::StringValue(v.clone()))
        }
        Attr::Int(i) => kv("i", V::IntValue(*i)),
        Attr::Double(d) => kv("d", V::DoubleValue(*d)),
        Attr::Deep(depth, bits) => {
            // Levels as pdata counts them: KeyValue 0, AnyValue 1, then +2 per array or
            // kvlist (array: ArrayValue, AnyValue; kvlist: KeyValueList, KeyValue, AnyValue).
            let mut v = lax::AnyValue { value: Some(V::IntValue(1)) };
            let mut level = 1usize;
            let want = usize::from(*depth) % 111;
            let mut i = 0;
            while level + 2 <= want {
                v = if bits >> (i % 64) & 1 == 0 {
                    lax::AnyValue { value: Some(V::ArrayValue(lax::ArrayValue { values: vec![v] })) }
                } else {
                    lax::AnyValue { value: Some(V::KvlistValue(lax::KeyValueList { values: vec![lax::KeyValue { key: b"k".to_vec(), value: Some(v), key_strindex: 0 }] })) }
                };
                level += 2;
                i += 1;
            }
            lax::KeyValue { key: b"deep".to_vec(), value: Some(v), key_strindex: 0 }
        }
        Attr::UpstreamHlc(rel_ms, logical) => {
            let wall = T0.wrapping_add_signed(i64::from(*rel_ms) * MS as i64);
            kv("consistency.hlc", V::StringValue(format!("{wall:020}.{logical:010}").into_bytes()))
        }
        Attr::Ours(suffix, v) => {
            *clean &= std::str::from_utf8(suffix).is_ok() && std::str::from_utf8(v).is_ok();
            let mut k = b"consistency.".to_vec();
            k.extend_from_slice(suffix);
            kv(k, V::StringValue(v.clone()))
        }
        Attr::Empty => lax::KeyValue { key: b"e".to_vec(), value: None, key_strindex: 0 },
    }
}

const MAX_SPANS_PER_BATCH: usize = 300;

fn build(b: &Batch, clean: &mut bool) -> lax::ExportTraceServiceRequest {
    let mut req = lax::ExportTraceServiceRequest::default();
    let mut n = 0;
    let mut prev: Option<lax::Span> = None;
    for r in b.resources.iter().take(8) {
        *clean &= std::str::from_utf8(&r.service).is_ok();
        let mut attributes = vec![kv("service.name", V::StringValue(r.service.clone()))];
        if let Some(h) = r.host {
            attributes.push(kv("host.name", V::StringValue(format!("h{}", h % 4).into_bytes())));
        }
        let mut rs = lax::ResourceSpans {
            resource: Some(lax::Resource { attributes, ..Default::default() }),
            ..Default::default()
        };
        for sc in r.scopes.iter().take(8) {
            *clean &= std::str::from_utf8(&sc.name).is_ok();
            let mut ss = lax::ScopeSpans {
                scope: Some(lax::InstrumentationScope { name: sc.name.clone(), ..Default::default() }),
                ..Default::default()
            };
            for s in &sc.spans {
                if n >= MAX_SPANS_PER_BATCH {
                    break;
                }
                n += 1;
                if s.resend_previous {
                    if let Some(p) = &prev {
                        ss.spans.push(p.clone());
                        continue;
                    }
                }
                *clean &= std::str::from_utf8(&s.name).is_ok();
                let span = lax::Span {
                    trace_id: id(&s.trace, 16, 0xab),
                    span_id: id(&s.span, 8, 0),
                    parent_span_id: s.parent.as_ref().map_or(Vec::new(), |p| id(p, 8, 0)),
                    name: s.name.clone(),
                    kind: s.kind,
                    start_time_unix_nano: time(&s.start),
                    end_time_unix_nano: time(&s.end),
                    flags: s.flags,
                    attributes: s.attrs.iter().take(8).map(|a| attr(a, clean)).collect(),
                    events: s
                        .events
                        .iter()
                        .take(4)
                        .map(|(t, a)| lax::Event {
                            time_unix_nano: time(t),
                            name: b"ev".to_vec(),
                            attributes: a.iter().take(4).map(|a| attr(a, clean)).collect(),
                            dropped_attributes_count: 0,
                        })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .take(4)
                        .map(|(t, sp)| {
                            // Keep link IDs well formed (pdata refuses others; that is the
                            // validate_vs_prost target's business): right length or empty.
                            let mut t = id(t, 16, 0xab);
                            let mut sp = id(sp, 8, 0);
                            if t.len() != 16 {
                                t.clear();
                            }
                            if sp.len() != 8 {
                                sp.clear();
                            }
                            lax::Link { trace_id: t, span_id: sp, ..Default::default() }
                        })
                        .collect(),
                    status: s.status.as_ref().map(|(c, m)| {
                        *clean &= std::str::from_utf8(m).is_ok();
                        lax::Status { code: *c, message: m.clone() }
                    }),
                    ..Default::default()
                };
                prev = Some(span.clone());
                ss.spans.push(span);
            }
            rs.scope_spans.push(ss);
        }
        req.resource_spans.push(rs);
    }
    req
}

fn config(c: &Cfg) -> Config {
    let max_buffered_spans = i64::from(c.max_buffered_spans) + 1;
    Config {
        num_shards: u32::from(c.shards % 4) + 1,
        quiet_period_ns: SEC as i64,
        idle_timeout_ns: (10 * SEC) as i64,
        max_age_ns: (60 * SEC) as i64,
        max_buffered_spans,
        max_spans_per_trace: (i64::from(c.max_spans_per_trace) + 1).min(max_buffered_spans),
        late_span_policy: if c.late_drop { LateSpanPolicy::Drop } else { LateSpanPolicy::Forward },
        late_cache_size: i64::from(c.late_cache) + 1,
        duplicate_policy: if c.keep_latest { DuplicatePolicy::KeepLatest } else { DuplicatePolicy::KeepBoth },
        skew_correction: c.skew,
        write_attributes: c.write_attributes,
        hlc_enabled: c.hlc,
        hlc_restart: RestartStrategy::None,
        checks_disabled: u32::from(c.checks_disabled) & traceconsistency::findings::FindingKind::ALL_MASK,
        child_tolerance_ns: i64::from(c.child_tolerance_ms) * MS as i64,
        ..Config::default()
    }
}

fuzz_target!(|input: Input| {
    let cfg = config(&input.cfg);
    let engine = Engine::new(cfg.clone()).expect("a valid config");
    let mut clean = true;
    let mut now = T0;
    let mut in_keys = Vec::new();
    let mut out_keys = Vec::new();
    let (mut accepted, mut resent, mut late_dropped, mut out) = (0u64, 0u64, 0u64, 0u64);
    let drain = |max: u64, out_keys: &mut Vec<_>, out: &mut u64, clean: bool| {
        while let Some(r) = engine.drain(max) {
            let req = decode_lax(&r.otlp).unwrap_or_else(|e| panic!("a release does not decode: {e}"));
            if clean {
                decode_strict(&r.otlp).unwrap_or_else(|e| panic!("a release of UTF-8-clean input does not decode strictly: {e}"));
            }
            let k = span_keys(&req);
            assert_eq!(k.len() as u64, r.spans, "Release::spans differs from the spans in it");
            assert_eq!(r.units.iter().map(|u| u64::from(u.spans)).sum::<u64>(), r.spans);
            *out += r.spans;
            out_keys.extend(k);
        }
    };
    for b in &input.batches {
        let req = build(b, &mut clean);
        let bytes = req.encode_to_vec();
        now += u64::from(b.advance_ms) * MS;
        let deep = tcfuzz::max_attribute_level(&bytes) >= tcfuzz::PDATA_MAX_DEPTH;
        let n = tcfuzz::spans(&req).count();
        match engine.ingest(&bytes, now) {
            Ok(o) => {
                assert!(!deep, "a batch nested 100 levels deep was accepted");
                assert_eq!(o.buffered + o.late_forwarded + o.late_dropped + o.unassembled + o.resent, n as u64, "ingest outcome does not add up to the batch");
                accepted += o.buffered + o.late_forwarded + o.unassembled;
                resent += o.resent;
                late_dropped += o.late_dropped;
                if !cfg.skew_correction {
                    in_keys.extend(span_keys(&req));
                } else {
                    in_keys.extend(span_keys(&req).into_iter().map(|(n, _, _)| (n, 0, 0)));
                }
            }
            Err(e) => assert!(deep || n == 0, "a batch pdata accepts was refused: {e}"),
        }
        if b.tick {
            engine.tick(now);
        }
        if let Some(m) = b.drain {
            drain(u64::from(m), &mut out_keys, &mut out, clean);
        }
    }
    engine.shutdown(now + SEC);
    drain(1000, &mut out_keys, &mut out, clean);
    let st = engine.stats();
    assert_eq!(st.buffered_spans, 0);
    assert_eq!(st.ready_spans, 0);
    assert_eq!(st.late_dropped, late_dropped);
    if !cfg.late_span_policy.eq(&LateSpanPolicy::Drop) {
        assert_eq!(late_dropped, 0);
    }
    assert_eq!(
        out,
        accepted - (st.duplicates_dropped - resent) - st.conflicts_dropped,
        "spans out != accepted - duplicates - conflicts ({st:?}, resent {resent})"
    );
    if cfg.skew_correction {
        out_keys = out_keys.into_iter().map(|(n, _, _)| (n, 0, 0)).collect();
    }
    assert_sub_multiset(&out_keys, &in_keys);
});
