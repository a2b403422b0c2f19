//! The compact per-span index and the zero-copy scanner that builds it from the bytes of an
//! `ExportTraceServiceRequest`: the records (`record`: a span's index, its resource and scope
//! entries, their memory charge) and the scanning that fills them (`scan`).
//!
//! The engine never decodes a span fully: it records the IDs, parent, times, flags, kind
//! and the byte range of the span's original encoding, plus where our own `consistency.*`
//! attributes (written by an upstream collector) sit so they can be replaced on the way out.

mod record;
mod scan;

pub use record::*;
pub use scan::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Stamp;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        }
    }

    #[test]
    fn index_matches_prost_decode() {
        let span = Span {
            trace_id: vec![7; 16],
            span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
            name: "op".into(),
            kind: 3,
            start_time_unix_nano: 100,
            end_time_unix_nano: 250,
            flags: 0x301,
            attributes: vec![kv("a", "b"), kv("consistency.hlc", "00000000000000000200.0000000003")],
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "svc"), kv("host.name", "h1")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                schema_url: "s".into(),
            }],
        };
        let bytes = req.encode_to_vec();
        let b = scan_request(&bytes).unwrap();
        assert_eq!(b.spans.len(), 1);
        let s = &b.spans[0];
        assert_eq!(b.trace_ids[0], [7; 16]);
        assert!(s.trace_id_valid && s.span_id_valid);
        assert_eq!(s.span_id, 0x0102030405060708);
        assert_eq!(s.parent_id, 9);
        assert_eq!((s.start, s.end, s.kind, s.flags), (100, 250, 3, 0x301));
        assert_eq!(s.upstream_hlc(), Some(Stamp { wall: 200, logical: 3 }));
        assert_eq!(s.strip().len(), 1);
        assert_eq!(b.groups[s.group as usize].resource.service, "svc");
        assert!(b.groups[0].resource.host.is_known());
    }

    #[test]
    fn attributes_written_value_first_as_pdata_does_are_recognised() {
        // KeyValue{value: AnyValue{string}, key} in pdata's order: field 2 before field 1.
        let stamp = b"00000000000000000200.0000000003";
        let key = b"consistency.hlc";
        let mut any = vec![0x0a, stamp.len() as u8];
        any.extend_from_slice(stamp);
        let mut kv = vec![0x12, any.len() as u8];
        kv.extend_from_slice(&any);
        kv.push(0x0a);
        kv.push(key.len() as u8);
        kv.extend_from_slice(key);
        let mut span = Span { trace_id: vec![7; 16], span_id: vec![1; 8], ..Default::default() }.encode_to_vec();
        span.push(0x4a);
        span.push(kv.len() as u8);
        span.extend_from_slice(&kv);
        let mut tid = [0; 16];
        let rec = scan_span(&span, 0..span.len(), &mut tid).unwrap();
        assert_eq!(rec.upstream_hlc(), Some(Stamp { wall: 200, logical: 3 }));
        assert_eq!(rec.strip().len(), 1);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(scan_request(&[0x0a, 0xff, 0xff]).is_err());
        assert!(scan_request(b"\x0a\x02\x12\x05").is_err());
        assert!(scan_request(&[]).unwrap().spans.is_empty());
    }
}

