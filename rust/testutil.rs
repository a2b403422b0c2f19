//! Test helpers: build OTLP requests with the prost types (the oracle) and read the engine's
//! output back with a full prost decode.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

pub use crate::fixture::{kv, request, sid, span, tid};

/// A decoded output span with its service.
#[derive(Clone, Debug)]
pub struct OutSpan {
    pub service: String,
    pub span: Span,
}

impl OutSpan {
    pub fn attr(&self, key: &str) -> Option<&any_value::Value> {
        self.span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    pub fn attr_str(&self, key: &str) -> Option<String> {
        match self.attr(key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    pub fn attr_int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    pub fn attr_strs(&self, key: &str) -> Vec<String> {
        match self.attr(key) {
            Some(any_value::Value::ArrayValue(a)) => a
                .values
                .iter()
                .filter_map(|v| match v.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn trace(&self) -> u64 {
        u64::from_be_bytes(self.span.trace_id[8..16].try_into().unwrap())
    }

    pub fn id(&self) -> u64 {
        u64::from_be_bytes(self.span.span_id[..8].try_into().unwrap())
    }
}

pub fn decode(otlp: &[u8]) -> Vec<OutSpan> {
    let req = ExportTraceServiceRequest::decode(otlp).expect("engine output must decode with prost");
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(OutSpan { service: service.clone(), span: s });
            }
        }
    }
    out
}

/// What pdata's decoder needs of a request, checked without prost (which also insists on
/// UTF-8 strings, which pdata does not): the structure of every message and the lengths of
/// span IDs. Returns the number of spans.
pub fn structural_span_count(otlp: &[u8]) -> Result<u64, String> {
    use crate::schema::{validate, Msg};
    use crate::wire::{Fields, Value};
    let mut spans = 0;
    let msg = |b: &[u8]| -> Result<Vec<(u32, Value)>, String> {
        Fields::new(b, 0).map(|f| f.map(|f| (f.number, f.value)).map_err(|e| e.to_string())).collect()
    };
    for (n, v) in msg(otlp)? {
        let (1, Value::Len(rs)) = (n, v) else { return Err("request field".into()) };
        for (n, v) in msg(&otlp[rs.clone()])? {
            match (n, v) {
                (1, Value::Len(r)) => validate(&otlp[rs.start + r.start..rs.start + r.end], Msg::Resource, 0).map_err(|e| e.to_string())?,
                (2, Value::Len(ss)) => {
                    let ss = rs.start + ss.start..rs.start + ss.end;
                    for (n, v) in msg(&otlp[ss.clone()])? {
                        match (n, v) {
                            (1, Value::Len(r)) => validate(&otlp[ss.start + r.start..ss.start + r.end], Msg::Scope, 0).map_err(|e| e.to_string())?,
                            (2, Value::Len(r)) => {
                                let sp = &otlp[ss.start + r.start..ss.start + r.end];
                                validate(sp, Msg::Span, 0).map_err(|e| e.to_string())?;
                                for (n, v) in msg(sp)? {
                                    if let (1 | 2 | 4, Value::Len(id)) = (n, v) {
                                        let want = if n == 1 { 16 } else { 8 };
                                        if !id.is_empty() && id.len() != want {
                                            return Err(format!("span field {n} has {} bytes", id.len()));
                                        }
                                    }
                                }
                                spans += 1;
                            }
                            (3, Value::Len(_)) => {}
                            _ => return Err("scope spans field".into()),
                        }
                    }
                }
                (3, Value::Len(_)) => {}
                _ => return Err("resource spans field".into()),
            }
        }
    }
    Ok(spans)
}

/// The test binary's allocator: the engine's, counting per thread the bytes it allocates
/// minus those it frees — what the allocator really gives, each request's size class — and
/// the peak of that since [`alloc_peak_reset`]. A test that runs engine calls on one thread
/// measures what they hold at most.
pub mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<i64> = const { Cell::new(0) };
        static PEAK: Cell<i64> = const { Cell::new(0) };
    }

    /// The size class of a request (what the allocator gives).
    fn real(n: usize) -> i64 {
        crate::heap::alloc_size(n) as i64
    }

    fn note(delta: i64) {
        let _ = LIVE.try_with(|l| {
            let v = l.get() + delta;
            l.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    // SAFETY: forwards to the engine's allocator unchanged; the counters use no allocation.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            note(real(l.size()));
            crate::ALLOCATOR.alloc(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            note(-real(l.size()));
            crate::ALLOCATOR.dealloc(p, l)
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            note(real(l.size()));
            crate::ALLOCATOR.alloc_zeroed(l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            note(real(new) - real(l.size()));
            crate::ALLOCATOR.realloc(p, l, new)
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Bytes this thread allocated and has not freed (relative to its start).
    pub fn alloc_live() -> i64 {
        LIVE.with(Cell::get)
    }

    /// Starts a new peak at the current level.
    pub fn alloc_peak_reset() {
        PEAK.with(|p| p.set(alloc_live()));
    }

    /// The highest [`alloc_live`] since the last reset.
    pub fn alloc_peak() -> i64 {
        PEAK.with(Cell::get)
    }
}
