//! What the rules read of an assembled trace: the index records, and, only when a rule asks,
//! fields read from the span and resource bytes the engine holds (status, attributes,
//! tracestate). Nothing is decoded beyond the fields read; malformed bytes read as absent
//! (ingest validated them already).

use crate::findings::ReleaseReason;
use crate::index::{Group, SpanRec};
use crate::wire::{Fields, Value};

/// An assembled trace as the sampler sees it.
pub struct TraceView<'a> {
    pub trace_id: u128,
    pub reason: ReleaseReason,
    pub spans: &'a [SpanRec],
    /// The buffer the spans' byte ranges point into.
    pub buf: &'a [u8],
    pub groups: &'a [Group],
    /// Kinds found in the trace by the checks (and at ingest).
    pub findings: u32,
    /// The root span (else the earliest): where the deciding rule is written, whose
    /// tracestate gives the randomness.
    pub summary_span: usize,
}

/// An attribute value as the rules compare it: strings as they are, integers in decimal,
/// booleans as `true` / `false`, doubles in their shortest decimal form (`1.5`, `100`);
/// other types (arrays, maps, bytes) only count as present.
#[derive(Debug, PartialEq, Eq)]
pub enum AttrValue<'a> {
    Str(&'a [u8]),
    Text(String),
    Other,
}

impl AttrValue<'_> {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            AttrValue::Str(s) => Some(s),
            AttrValue::Text(t) => Some(t.as_bytes()),
            AttrValue::Other => None,
        }
    }
}

fn read_any(any: &[u8]) -> AttrValue<'_> {
    let mut v = AttrValue::Other;
    for f in Fields::new(any, 0) {
        let Ok(f) = f else { return AttrValue::Other };
        v = match (f.number, f.value) {
            (1, Value::Len(r)) => AttrValue::Str(&any[r]),
            (2, Value::Varint(b)) => AttrValue::Text(if b != 0 { "true" } else { "false" }.into()),
            (3, Value::Varint(i)) => AttrValue::Text((i as i64).to_string()),
            (4, Value::I64(d)) => AttrValue::Text(f64::from_bits(d).to_string()),
            _ => AttrValue::Other,
        };
    }
    v
}

/// Calls `f` with the value of each attribute named `key` among the `KeyValue` fields
/// numbered `field` of `msg`; stops when `f` returns true. Returns whether it did.
fn any_attr(msg: &[u8], field: u32, key: &[u8], f: &mut dyn FnMut(&AttrValue<'_>) -> bool) -> bool {
    for fl in Fields::new(msg, 0) {
        let Ok(fl) = fl else { return false };
        if let (n, Value::Len(r)) = (fl.number, fl.value) {
            if n != field {
                continue;
            }
            let kv = &msg[r];
            let mut k: &[u8] = &[];
            let mut val = AttrValue::Other;
            for g in Fields::new(kv, 0) {
                let Ok(g) = g else { break };
                match (g.number, g.value) {
                    (1, Value::Len(r)) => k = &kv[r],
                    (2, Value::Len(r)) => val = read_any(&kv[r]),
                    _ => {}
                }
            }
            if k == key && f(&val) {
                return true;
            }
        }
    }
    false
}

impl TraceView<'_> {
    pub fn span_bytes(&self, i: usize) -> &[u8] {
        let s = &self.spans[i];
        self.buf.get(s.bytes.start as usize..s.bytes.end as usize).unwrap_or_default()
    }

    /// Whether any span's status code is ERROR (`Status.code` = 2).
    pub fn any_error(&self) -> bool {
        (0..self.spans.len()).any(|i| {
            let b = self.span_bytes(i);
            Fields::new(b, 0).filter_map(Result::ok).any(|f| match (f.number, f.value) {
                (15, Value::Len(r)) => {
                    let st = &b[r];
                    Fields::new(st, 0).filter_map(Result::ok).any(|g| matches!((g.number, g.value), (3, Value::Varint(2))))
                }
                _ => false,
            })
        })
    }

    /// Earliest start to latest end, ns (0 when the end precedes the start).
    pub fn duration_ns(&self) -> u64 {
        let start = self.spans.iter().map(|s| s.start).min().unwrap_or(0);
        let end = self.spans.iter().map(|s| s.end).max().unwrap_or(0);
        end.saturating_sub(start)
    }

    /// The first root span (no parent), if any.
    pub fn root(&self) -> Option<usize> {
        self.spans.iter().position(|s| s.parent_id == 0)
    }

    pub fn service_of(&self, i: usize) -> &str {
        self.groups.get(self.spans[i].group as usize).map_or("", |g| g.resource.service.as_str())
    }

    /// Whether any span has an attribute `key` whose value `f` accepts.
    pub fn any_span_attr(&self, key: &str, f: &mut dyn FnMut(&AttrValue<'_>) -> bool) -> bool {
        (0..self.spans.len()).any(|i| any_attr(self.span_bytes(i), 9, key.as_bytes(), f))
    }

    /// Whether any span's resource has an attribute `key` whose value `f` accepts (each
    /// resource of the trace looked at once).
    pub fn any_resource_attr(&self, key: &str, f: &mut dyn FnMut(&AttrValue<'_>) -> bool) -> bool {
        let mut used = vec![false; self.groups.len()];
        for s in self.spans {
            if let Some(u) = used.get_mut(s.group as usize) {
                *u = true;
            }
        }
        let mut seen: Vec<*const crate::index::ResourceEntry> = Vec::new();
        for (g, _) in self.groups.iter().zip(&used).filter(|(_, u)| **u) {
            let p = std::sync::Arc::as_ptr(&g.resource);
            if seen.contains(&p) {
                continue;
            }
            seen.push(p);
            // The header holds `ResourceSpans.resource` (field 1) with its tag.
            let h = &g.resource.header;
            for fl in Fields::new(h, 0).filter_map(Result::ok) {
                if let (1, Value::Len(r)) = (fl.number, fl.value) {
                    if any_attr(&h[r], 1, key.as_bytes(), f) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// A span's tracestate and the range of its field; see [`span_tracestate`].
    pub fn tracestate(&self, i: usize) -> Option<(&str, std::ops::Range<u32>)> {
        span_tracestate(self.span_bytes(i))
    }
}

/// A span's tracestate (`Span.trace_state`, field 3) and the byte range of the whole field
/// within the span's bytes (tag included), if present.
pub fn span_tracestate(b: &[u8]) -> Option<(&str, std::ops::Range<u32>)> {
    let mut found = None;
    for f in Fields::new(b, 0) {
        let Ok(f) = f else { return None };
        if let (3, Value::Len(r)) = (f.number, &f.value) {
            found = Some((std::str::from_utf8(&b[r.clone()]).unwrap_or(""), f.span.start as u32..f.span.end as u32));
        }
    }
    found
}
