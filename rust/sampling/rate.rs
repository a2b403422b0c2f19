//! A token bucket of spans per second, on a clock the caller passes (monotonic ns).

/// Keeps at most `rate` spans per second over time. The bucket holds one second's worth; a
/// trace passes when the bucket holds at least its spans (or, for a trace larger than one
/// second's worth, when the bucket is full), and its spans are taken even if that leaves the
/// bucket in debt, so that the long-run rate never exceeds `rate`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last_ns: Option<u64>,
}

impl TokenBucket {
    /// A full bucket of `rate` spans per second (`rate > 0`).
    pub fn new(rate: f64) -> TokenBucket {
        TokenBucket { rate, tokens: rate, last_ns: None }
    }

    /// Whether a trace of `spans` spans passes at `now_ns`; if so its spans are taken.
    pub fn take(&mut self, spans: u64, now_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            // A clock that goes back refills nothing.
            let dt = now_ns.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        let need = (spans as f64).min(self.rate);
        if self.tokens + 1e-9 >= need {
            self.tokens -= spans as f64;
            true
        } else {
            false
        }
    }
}
