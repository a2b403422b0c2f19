//! The two kinds of entry of the learned tables: what is known of one call key, and the
//! export lag of one service.

use super::{Decision, COLD_LAG_NS, EXPECT_FROM, LAG_WINDOW_NS, PROBE_EVERY};

/// What is known of one call key.
#[derive(Clone, Copy, Debug)]
pub(super) struct KeyState {
    pub(super) key: u64,
    /// Decaying share of waited-for calls that had a child.
    pub(super) p: f32,
    /// Observations (saturating).
    pub(super) obs: u16,
    /// Calls released without a child and without being waited for, since the last waited
    /// observation.
    pub(super) unwaited: u16,
    /// The service the children came from (hash), 0 unknown.
    pub(super) child_service: u64,
    pub(super) referenced: bool,
}

impl KeyState {
    pub(super) fn decision(&self) -> Decision {
        if self.obs == 0 || (self.obs < 2 && self.p < EXPECT_FROM) {
            Decision::Unknown
        } else if self.p >= EXPECT_FROM {
            Decision::Expected { service: self.child_service }
        } else if self.unwaited >= PROBE_EVERY {
            Decision::Probe
        } else {
            Decision::NoChild
        }
    }
}

/// Export lag of one service.
#[derive(Clone, Debug)]
pub(super) struct ServiceLag {
    pub(super) hash: u64,
    pub(super) name: Box<str>,
    pub(super) first_seen: u64,
    pub(super) window_start: u64,
    pub(super) cur: u64,
    pub(super) prev: u64,
    /// The latest span end (its host's wall clock) among the spans of the service that
    /// arrived: an SDK exports its spans in the order they ended, so a child that ended
    /// before this has come, if it is coming.
    pub(super) watermark: u64,
    pub(super) referenced: bool,
}

impl ServiceLag {
    pub(super) fn observe(&mut self, lag: u64, now: u64) {
        let age = now.saturating_sub(self.window_start);
        if age >= LAG_WINDOW_NS {
            self.prev = if age >= 2 * LAG_WINDOW_NS { 0 } else { self.cur };
            self.cur = 0;
            self.window_start = now;
        }
        self.cur = self.cur.max(lag);
        self.referenced = true;
    }

    /// The lag to wait for: the largest of the last two windows; at least the cold lag
    /// until the service has been seen for a whole window.
    pub(super) fn lag(&self, now: u64) -> u64 {
        let seen = self.cur.max(self.prev);
        if now.saturating_sub(self.first_seen) < LAG_WINDOW_NS {
            seen.max(COLD_LAG_NS)
        } else {
            seen
        }
    }
}
