//! Drain: released (or handed-off) units taken from their queue and emitted as one OTLP
//! request, and the acknowledgement of what was delivered.

use crossbeam_channel::Receiver;

use crate::wal::record::Key;

use super::stats::stat;
use super::types::Release;
use super::unit::Unit;
use super::{lock, Engine};


/// Units taken from a queue by a drain, until the release holding them is handed out. On
/// every way out their spans and bytes leave the ready counters (which throttle ingest). If
/// the drain unwinds first (a bug in the checks or the encoder), the units are gone: their
/// spans are counted in `drain_lost_spans` and their write-ahead log keys resolved, so that
/// the log does not keep them forever and a restart does not replay what would fail again.
struct Taken<'a> {
    engine: &'a Engine,
    spans: u64,
    bytes: u64,
    keys: Vec<Key>,
    handed_out: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let e = self.engine;
        e.c.sub(stat!(ready_spans), self.spans);
        e.c.sub(stat!(ready_bytes), self.bytes);
        if self.handed_out {
            return;
        }
        e.c.add(stat!(drain_lost_spans), self.spans);
        if let Some(w) = &e.wal {
            w.resolve(&self.keys);
        }
    }
}

impl Engine {

    /// Takes released units (whole; at least one if any is ready) up to about `max_spans`
    /// spans, runs the checks, and encodes them as one `ExportTraceServiceRequest`.
    /// `None` when nothing is ready.
    pub fn drain(&self, max_spans: u64) -> Option<Release> {
        self.drain_from(&self.ready_rx, max_spans)
    }

    /// Takes whole units from `queue` up to about `max_spans` spans (at least one if any is
    /// waiting) and emits them, counting what emission dropped; the late caches learn the
    /// content hashes of the released traces; with a write-ahead log the release gets its
    /// delivery token. The units are freed by the time it returns: their bytes leave the
    /// count. Traces dropped by sampling are freed here (never encoded) and, with a log,
    /// acknowledged with the release that holds the kept ones (at once when a batch kept
    /// nothing). Panic-safe: if anything on the way unwinds, what was taken is counted lost
    /// (see [`Taken`]).
    fn drain_from(&self, queue: &Receiver<Unit>, max_spans: u64) -> Option<Release> {
        loop {
            let mut units = Vec::new();
            let mut taken = Taken { engine: self, spans: 0, bytes: 0, keys: Vec::new(), handed_out: false };
            while taken.spans < max_spans.max(1) {
                match queue.try_recv() {
                    Ok(mut u) => {
                        taken.spans += u.spans.len() as u64;
                        taken.bytes += u.bytes;
                        taken.keys.extend(std::mem::take(&mut u.wal));
                        units.push(u);
                    }
                    Err(_) => break,
                }
            }
            if units.is_empty() {
                return None;
            }
            let emitted = self.emitter.emit(units, self.last_mono.load(std::sync::atomic::Ordering::Relaxed));
            // What the late caches need to recognise re-sends of these traces' spans.
            for (id, hashes, verdict) in emitted.released {
                let mut shard = lock(&self.shards[self.shard_of(id)]);
                shard.late.set_released(id, hashes, verdict);
                self.sync(&mut shard);
            }
            self.c.add(stat!(duplicates_dropped), emitted.duplicates);
            self.c.add(stat!(conflicts_dropped), emitted.conflicts);
            let mut release = emitted.release;
            if release.units.is_empty() {
                // Every unit was a trace dropped by sampling: nothing goes out, and the log
                // forgets them as it forgets delivered ones. Take the next units.
                if let Some(w) = &self.wal {
                    let token = w.drained(std::mem::take(&mut taken.keys));
                    if token != 0 {
                        w.delivered(token);
                    }
                }
                taken.handed_out = true;
                continue;
            }
            if let Some(w) = &self.wal {
                release.token = w.drained(std::mem::take(&mut taken.keys));
            }
            taken.handed_out = true;
            return Some(release);
        }
    }


    /// Takes handed-off traces (whole; at least one if any is waiting) up to about
    /// `max_spans` spans and encodes them as one `ExportTraceServiceRequest`, each span
    /// with its HLC stamp and its hop count. `None` when nothing is waiting. The units of
    /// the release say why each trace was handed off (`shutdown` or `idle_timeout`).
    pub fn drain_handoff(&self, max_spans: u64) -> Option<Release> {
        // With a write-ahead log, acknowledged once the hand-off output took it: until then
        // a restart replays these spans here.
        self.drain_from(&self.handoff.rx, max_spans)
    }


    /// Acknowledges a release ([`Release::token`]): downstream accepted it, or it was counted
    /// as lost. Its spans are not replayed after a restart, and log segments that hold only
    /// acknowledged data are deleted. Returns whether the token was known.
    pub fn delivered(&self, token: u64) -> bool {
        match &self.wal {
            Some(w) if token != 0 => w.delivered(token),
            _ => false,
        }
    }

}
