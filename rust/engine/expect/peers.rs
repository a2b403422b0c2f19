//! Reading a span's name and the peer attributes of its call key from its encoding.

use crate::wire::{Fields, Value};

pub(super) fn truncate(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// The peer attributes of a call key, in the order of [`name_and_peers`]'s result.
pub(super) const PEERS: [&[u8]; PEER_COUNT] = [
    b"peer.service",
    b"server.address",
    b"server.port",
    b"net.peer.name",
    b"net.peer.port",
    b"db.system",
    b"db.system.name",
];
pub(super) const PEER_COUNT: usize = 7;
/// Where the database system attributes are in [`PEERS`]: a call with one is a database call.
pub(super) const DB_PEERS: [usize; 2] = [5, 6];

/// A span's name and the encoded values of its peer attributes ([`PEERS`]; empty when
/// absent) from its encoding. A malformed span gives what was read.
pub(super) fn name_and_peers(span: &[u8]) -> (&[u8], [&[u8]; PEER_COUNT]) {
    let mut name: &[u8] = &[];
    let mut peers: [&[u8]; PEER_COUNT] = [&[]; PEER_COUNT];
    for f in Fields::new(span, 0) {
        let Ok(f) = f else { break };
        match (f.number, f.value) {
            (5, Value::Len(r)) => name = &span[r],
            (9, Value::Len(r)) => {
                let Some((k, v)) = key_and_value(&span[r]) else { continue };
                if let Some(slot) = PEERS.iter().position(|p| *p == k) {
                    peers[slot] = v;
                }
            }
            _ => {}
        }
    }
    (name, peers)
}

/// A `KeyValue`'s key and its `AnyValue`'s encoding (a string and an int alike).
pub(super) fn key_and_value(kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    for f in Fields::new(kv, 0) {
        match f.ok()? {
            crate::wire::Field { number: 1, value: Value::Len(r), .. } => key = &kv[r],
            crate::wire::Field { number: 2, value: Value::Len(r), .. } => value = &kv[r],
            _ => {}
        }
    }
    Some((key, value))
}
