//! Who timed a span: the host identity of its resource (which processes share a clock) and
//! how its SDK stamps times (how fine its timestamps are, and how its instrumentations end
//! nested spans). Both are read once per resource, at ingest, from the resource attributes
//! (docs/DESIGN.md, "Clocks and SDKs").

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::ops::Range;

use crate::wire::{Fields, Value, WireError};

/// How many `host.ip` addresses of a resource take part in identity (the rest are ignored).
pub const MAX_HOST_IPS: usize = 4;

/// The host a resource says it runs on. Every field is a hash of the attribute's value,
/// 0 when the attribute is absent or names no particular host (`localhost`, loopback and
/// link-local addresses, empty strings).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostIdentity {
    /// `host.id`.
    pub id: u64,
    /// `host.name`, lowercased.
    pub name: u64,
    /// The first DNS label of a dotted `host.name` (`web-1` of `web-1.example.com`); 0 when
    /// the name has no dot.
    pub name_label: u64,
    /// `host.ip` (a string or an array of strings), each address in canonical form.
    pub ips: [u64; MAX_HOST_IPS],
}

fn hash_of(namespace: u8, v: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    namespace.hash(&mut h);
    v.hash(&mut h);
    // 0 means "absent".
    h.finish().max(1)
}

const NS_ID: u8 = 0;
const NS_NAME: u8 = 1;
const NS_IP: u8 = 2;

impl HostIdentity {
    /// Whether any host attribute is present.
    pub fn is_known(&self) -> bool {
        self.id != 0 || self.name != 0 || self.ips[0] != 0
    }

    pub fn set_id(&mut self, v: &[u8]) {
        self.id = if v.is_empty() { 0 } else { hash_of(NS_ID, v) };
    }

    pub fn set_name(&mut self, v: &[u8]) {
        let lower = v.to_ascii_lowercase();
        let generic = matches!(&lower[..], b"" | b"localhost" | b"localhost.localdomain");
        if generic {
            self.name = 0;
            self.name_label = 0;
            return;
        }
        self.name = hash_of(NS_NAME, &lower);
        self.name_label = match lower.iter().position(|&b| b == b'.') {
            Some(0) | None => 0,
            Some(dot) => hash_of(NS_NAME, &lower[..dot]),
        };
    }

    /// Adds one `host.ip` address (ignored when it names no particular host, or when
    /// [`MAX_HOST_IPS`] are already kept).
    pub fn add_ip(&mut self, v: &[u8]) {
        let key = match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
        {
            Some(ip) if shared_by_every_host(ip) => return,
            Some(IpAddr::V4(a)) => hash_of(NS_IP, &a.to_ipv6_mapped().octets()),
            Some(IpAddr::V6(a)) => hash_of(NS_IP, &a.octets()),
            None if v.is_empty() => return,
            None => hash_of(NS_IP, v),
        };
        if self.ips.contains(&key) {
            return;
        }
        if let Some(slot) = self.ips.iter_mut().find(|s| **s == 0) {
            *slot = key;
        }
    }

    /// Whether the two resources share a host identity: an equal `host.id`, an equal
    /// `host.name` (a short name also matches the first label of a dotted one), or a common
    /// `host.ip`.
    pub fn shares_host(&self, other: &HostIdentity) -> bool {
        (self.id != 0 && self.id == other.id)
            || (self.name != 0 && self.name == other.name)
            || (self.name != 0 && self.name_label == 0 && self.name == other.name_label)
            || (other.name != 0 && other.name_label == 0 && other.name == self.name_label)
            || self.ips.iter().any(|&a| a != 0 && other.ips.contains(&a))
    }
}

/// Loopback, unspecified and link-local addresses: every host has them.
fn shared_by_every_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_unspecified() || a.is_link_local(),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return shared_by_every_host(IpAddr::V4(v4));
            }
            a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Reads the addresses of a `host.ip` value (`AnyValue` bytes): a string, or an array of
/// strings.
pub fn read_ips(any: &[u8], base: usize, host: &mut HostIdentity) -> Result<(), WireError> {
    for f in Fields::new(any, base) {
        let f = f?;
        match (f.number, f.value) {
            (1, Value::Len(r)) => host.add_ip(&any[r]),
            (5, Value::Len(r)) => read_ip_array(&any[r.clone()], base + r.start, host)?,
            _ => {}
        }
    }
    Ok(())
}

fn read_ip_array(arr: &[u8], base: usize, host: &mut HostIdentity) -> Result<(), WireError> {
    for f in Fields::new(arr, base) {
        let f = f?;
        if let (1, Value::Len(r)) = (f.number, f.value) {
            let any = &arr[r.clone()];
            for g in Fields::new(any, base + r.start) {
                let g = g?;
                if let (1, Value::Len(s)) = (g.number, g.value) {
                    host.add_ip(&any[s]);
                }
            }
        }
    }
    Ok(())
}

/// The `AnyValue` of a `KeyValue` (its bytes' range), if any.
pub fn kv_value(kv: &[u8], base: usize) -> Result<Option<Range<usize>>, WireError> {
    let mut value = None;
    for f in Fields::new(kv, base) {
        let f = f?;
        if let (2, Value::Len(r)) = (f.number, f.value) {
            value = Some(r);
        }
    }
    Ok(value)
}

/// The SDK that stamped a resource's spans, by `telemetry.sdk.language` (every official SDK
/// sends `telemetry.sdk.name` = `opentelemetry`, so the language tells them apart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Sdk {
    /// No or another language: times taken as exact.
    #[default]
    Other = 0,
    Nodejs,
    Webjs,
    Java,
    Dotnet,
    Python,
    Go,
}

/// How an SDK stamps times: the one table of per-SDK tolerances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamping {
    /// How far a start (or end) stamp may read earlier than the moment it stands for,
    /// because of the clock's granularity.
    pub granularity_ns: u64,
    /// How far a child may end after its parent *in the same process* because the
    /// instrumentations end both on one event (on top of the granularity of both).
    pub end_overhang_ns: u64,
    /// How far its end stamps (and the start stamps of spans under a local root) may read
    /// earlier than the other processes' clocks, on top of the granularity: a child in
    /// another process may start this much after such a parent ended without a finding.
    pub end_early_ns: u64,
    /// Whether its OTLP exporter writes the W3C trace-flags byte (bits 0–7 of
    /// `Span.flags`) on every span whose `flags` say the remote bit is known (0x100).
    pub writes_trace_flags: bool,
}

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

impl Sdk {
    pub fn from_language(v: &[u8]) -> Sdk {
        match v {
            b"nodejs" => Sdk::Nodejs,
            b"webjs" => Sdk::Webjs,
            b"java" => Sdk::Java,
            b"dotnet" => Sdk::Dotnet,
            b"python" => Sdk::Python,
            b"go" => Sdk::Go,
            _ => Sdk::Other,
        }
    }

    /// The table (docs/DESIGN.md, "Clocks and SDKs", says where each number comes from).
    pub const fn stamping(self) -> Stamping {
        match self {
            // Starts from `Date.now()` (whole milliseconds), ends from start + elapsed
            // `performance.now()`; http / express / router spans end on one `close` event,
            // children in later listeners (~1 ms, 6 ms seen when the process pauses; the
            // express / router layers get more, see `checks::LAYER_OVERHANG_NS`).
            Sdk::Nodejs | Sdk::Webjs => Stamping {
                granularity_ns: MS,
                end_overhang_ns: 20 * MS,
                end_early_ns: 0,
                writes_trace_flags: true,
            },
            // Spans of one local root are timed from one anchor (`AnchoredClock`: the wall
            // clock read at the root's start, then `System.nanoTime()` read in a second
            // call): a pause of the thread between the two reads makes every later stamp of
            // that root (its end, its descendants) read early by the pause. Seen 3.9 ms on a
            // loaded machine (a Go SERVER starting after its Java CLIENT ended); 20 ms
            // allowed, as for Node.js's listeners on the same machine.
            Sdk::Java => Stamping {
                granularity_ns: MS,
                end_overhang_ns: 0,
                end_early_ns: 20 * MS,
                writes_trace_flags: true,
            },
            // `DateTime.UtcNow`: 100 ns ticks; taken as 1 µs.
            Sdk::Dotnet => Stamping {
                granularity_ns: US,
                end_overhang_ns: 0,
                end_early_ns: 0,
                writes_trace_flags: false,
            },
            // `time.time_ns()`; its OTLP exporter writes only the remote bits of `flags`.
            Sdk::Python => Stamping {
                granularity_ns: 0,
                end_overhang_ns: 0,
                end_early_ns: 0,
                writes_trace_flags: false,
            },
            // `time.Now()`; releases before the fix wrote only the remote bits.
            Sdk::Go | Sdk::Other => Stamping {
                granularity_ns: 0,
                end_overhang_ns: 0,
                end_early_ns: 0,
                writes_trace_flags: false,
            },
        }
    }
}

/// Groups resources into clock domains: resources that share a host identity (directly or
/// through others) are one domain; a resource without host attributes is a domain of its
/// own. `O(r)` expected in the number of resources.
pub struct Domains {
    parent: Vec<usize>,
    split: Vec<bool>,
}

impl Domains {
    pub fn new(hosts: &[HostIdentity]) -> Domains {
        let mut d = Domains {
            parent: (0..hosts.len()).collect(),
            split: vec![false; hosts.len()],
        };
        let mut by_key: HashMap<(u8, u64), usize> = HashMap::new();
        let mut short_names: HashMap<u64, usize> = HashMap::new();
        let mut dotted: Vec<(usize, u64)> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let mut keys: Vec<(u8, u64)> = Vec::with_capacity(2 + MAX_HOST_IPS);
            if h.id != 0 {
                keys.push((NS_ID, h.id));
            }
            if h.name != 0 {
                keys.push((NS_NAME, h.name));
                if h.name_label == 0 {
                    short_names.entry(h.name).or_insert(i);
                } else {
                    dotted.push((i, h.name_label));
                }
            }
            keys.extend(h.ips.iter().filter(|&&a| a != 0).map(|&a| (NS_IP, a)));
            for k in keys {
                let first = *by_key.entry(k).or_insert(i);
                d.union(first, i);
            }
        }
        for (i, label) in dotted {
            if let Some(&j) = short_names.get(&label) {
                d.union(i, j);
            }
        }
        d
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }

    /// Takes `i` out of its domain, into one of its own (the others stay together).
    pub fn split(&mut self, i: usize) {
        self.split[i] = true;
    }

    /// The domain of resource `i`: equal for resources of one domain.
    pub fn domain(&mut self, i: usize) -> usize {
        if self.split[i] {
            self.parent.len() + i
        } else {
            self.find(i)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::index::scan_request;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    use super::*;

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }
    }

    fn kv(k: &str, v: AnyValue) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(v),
            ..Default::default()
        }
    }

    /// The resource entry the scanner builds from these attributes.
    fn scanned(attrs: Vec<KeyValue>) -> (HostIdentity, Sdk) {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: attrs,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![1; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let b = scan_request(&req.encode_to_vec()).unwrap();
        (b.groups[0].resource.host, b.groups[0].resource.sdk)
    }

    #[test]
    fn ingest_reads_host_identity_and_sdk_of_each_official_sdk() {
        // Node.js: host.id + host.name.
        let (node, sdk) = scanned(vec![
            kv("host.id", s("4b7cd1e0")),
            kv("host.name", s("box")),
            kv("telemetry.sdk.language", s("nodejs")),
            kv("telemetry.sdk.name", s("opentelemetry")),
        ]);
        assert_eq!(sdk, Sdk::Nodejs);
        // Java agent: host.name only (and the same name in upper case).
        let (java, sdk) = scanned(vec![
            kv("host.name", s("BOX")),
            kv("telemetry.sdk.language", s("java")),
        ]);
        assert_eq!(sdk, Sdk::Java);
        assert!(node.shares_host(&java));
        // Python: no host attribute.
        let (python, sdk) = scanned(vec![
            kv("service.instance.id", s("f00")),
            kv("telemetry.sdk.language", s("python")),
        ]);
        assert_eq!(sdk, Sdk::Python);
        assert!(!python.is_known());
        assert!(!python.shares_host(&node));
        // host.ip as semantic conventions define it, an array of strings; loopback ignored.
        let ips = |v: &[&str]| AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: v.iter().map(|x| s(x)).collect(),
            })),
        };
        let (a, _) = scanned(vec![kv(
            "host.ip",
            ips(&["127.0.0.1", "::1", "192.168.1.7"]),
        )]);
        let (b, _) = scanned(vec![kv("host.ip", ips(&["fe80::1", "192.168.1.7"]))]);
        let (c, _) = scanned(vec![kv(
            "host.ip",
            ips(&["127.0.0.1", "::1", "192.168.1.8"]),
        )]);
        assert!(a.shares_host(&b));
        assert!(!a.shares_host(&c));
        // A single string works too; an unknown language is `Other`.
        let (d, sdk) = scanned(vec![
            kv("host.ip", s("192.168.1.7")),
            kv("telemetry.sdk.language", s("cobol")),
        ]);
        assert!(d.shares_host(&a));
        assert_eq!(sdk, Sdk::Other);
    }

    #[test]
    fn ipv4_and_its_mapped_ipv6_form_are_one_address() {
        let mut a = HostIdentity::default();
        a.add_ip(b"10.1.2.3");
        let mut b = HostIdentity::default();
        b.add_ip(b"::ffff:10.1.2.3");
        assert!(a.shares_host(&b));
        let mut lo = HostIdentity::default();
        lo.add_ip(b"::ffff:127.0.0.1");
        assert!(!lo.is_known());
    }
}
