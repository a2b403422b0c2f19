//! A unit waiting in the ready queue: a released trace, or spans forwarded without assembly
//! (late or unassembled), each with its own copy of the span bytes.

use std::mem::size_of;

use crate::findings::ReleaseReason;
use crate::index::{Group, SpanRec};
use crate::wal::record::Key;

use super::memory::{class_len, groups_bytes, rec_heap, vec_bytes};

pub struct Unit {
    /// The trace's ID (0 for spans forwarded without assembly).
    pub trace_id: u128,
    pub reason: ReleaseReason,
    pub spans: Vec<SpanRec>,
    pub buf: Vec<u8>,
    pub groups: Vec<Group>,
    pub age_ns: u64,
    /// Bytes counted for the unit while it waits (as `ready_bytes`).
    pub bytes: u64,
    /// The write-ahead log's keys of the unit's spans (empty without a log).
    pub wal: Vec<Key>,
    /// The trace holds spans replayed from the write-ahead log.
    pub recovered: bool,
    /// A trace handed off to its current owner rather than released (`reason` says why:
    /// `shutdown` or `idle_timeout`); it waits in the hand-off queue.
    pub handoff: bool,
    /// Late spans of a trace sampling kept with a consistent threshold: written into their
    /// tracestate as into the trace's.
    pub threshold: Option<crate::sampling::threshold::Threshold>,
}

/// A waiting unit's slot in its queue (a slot of the channel's blocks, not an allocation
/// of its own).
fn unit_bytes() -> u64 {
    size_of::<Unit>() as u64
}

impl Unit {
    #[allow(clippy::too_many_arguments)]
    pub fn from_trace(trace_id: u128, reason: ReleaseReason, spans: Vec<SpanRec>, buf: Vec<u8>, groups: Vec<Group>, age_ns: u64, held: u64, wal: Vec<Key>, recovered: bool) -> Unit {
        let bytes = held + unit_bytes() + vec_bytes(&wal);
        Unit { trace_id, reason, spans, buf, groups, age_ns, bytes, wal, recovered, handoff: false, threshold: None }
    }

    /// Attaches the write-ahead log's keys of a unit built from a batch.
    pub fn with_wal(mut self, wal: Vec<Key>) -> Unit {
        self.bytes += vec_bytes(&wal);
        self.wal = wal;
        self
    }

    /// The spans `idx` of a scanned batch (span bytes in `data`), copied out.
    pub fn from_batch(data: &[u8], groups: &[Group], spans: &[SpanRec], idx: &[u32], reason: ReleaseReason) -> Unit {
        let mut unit = Unit { trace_id: 0, reason, spans: Vec::with_capacity(idx.len()), buf: Vec::new(), groups: Vec::new(), age_ns: 0, bytes: 0, wal: Vec::new(), recovered: false, handoff: false, threshold: None };
        unit.buf.reserve_exact(class_len(idx.iter().map(|&i| spans[i as usize].len()).sum()));
        let mut map: Vec<Option<u32>> = vec![None; groups.len()];
        let mut extra = 0u64;
        for (seq, &i) in idx.iter().enumerate() {
            let s = &spans[i as usize];
            let src = &data[s.bytes.start as usize..s.bytes.end as usize];
            let g = s.group as usize;
            let gi = *map[g].get_or_insert_with(|| {
                unit.groups.push(groups[g].clone());
                (unit.groups.len() - 1) as u32
            });
            let start = unit.buf.len() as u32;
            unit.buf.extend_from_slice(src);
            let mut rec = s.clone();
            rec.bytes = start..unit.buf.len() as u32;
            rec.group = gi;
            rec.seq = seq as u32;
            extra += rec_heap(&rec);
            unit.spans.push(rec);
        }
        unit.bytes = vec_bytes(&unit.buf) + vec_bytes(&unit.spans) + extra + groups_bytes(&unit.groups) + unit_bytes();
        unit
    }
}
