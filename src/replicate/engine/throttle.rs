//! A flow's `max_bytes_per_second`: a token bucket shared by all of the flow's fetchers.
//!
//! A fetch reserves what it may bring back (its `max_bytes`) when it is sent, and gives
//! back what it did not use when its answer arrives. A fetch may bring back more than it
//! reserved (Kafka returns a partition's first batch whole even when it is larger, KIP-74):
//! the bucket then goes into debt and no fetch is sent until the debt is paid. Over any
//! stretch of time the bytes fetched are at most the rate times that time plus one burst,
//! whatever the batch sizes, so a backlog is copied at the configured rate.

use std::time::{Duration, Instant};

/// The burst is this much of a second's worth of bytes: enough for one fetch per source
/// broker to keep a long round trip busy, small enough to keep the rate even.
const BURST_SHARE: f64 = 0.25;
/// The least burst, so that a low rate still fetches batches of a useful size.
const MIN_BURST: f64 = 64.0 * 1024.0;

#[derive(Debug)]
pub(super) struct RateLimit {
    bytes_per_second: f64,
    burst: f64,
    /// Bytes that may be fetched now; negative while in debt.
    tokens: f64,
    refilled_at: Instant,
    /// Since when fetches have been held back by the limit, while they are.
    holding_since: Option<Instant>,
    /// Time fetches were held back in total, the metric of a throttled flow.
    held: Duration,
}

impl RateLimit {
    pub(super) fn new(bytes_per_second: u64, now: Instant) -> Self {
        let bytes_per_second = bytes_per_second as f64;
        let burst = (bytes_per_second * BURST_SHARE).max(MIN_BURST);
        Self { bytes_per_second, burst, tokens: burst, refilled_at: now, holding_since: None, held: Duration::ZERO }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.bytes_per_second).min(self.burst);
        self.refilled_at = now;
    }

    /// The bytes fetches may reserve now; 0 holds them back (and counts the time). Fetches
    /// wait for half a burst: a trickle of tiny fetches would cost a round trip each and
    /// cut more batches short (a partial batch at the end of a fetch is read again).
    pub(super) fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        if self.tokens >= self.burst / 2.0 {
            if let Some(since) = self.holding_since.take() {
                self.held += now.saturating_duration_since(since);
            }
            self.tokens as usize
        } else {
            self.holding_since.get_or_insert(now);
            0
        }
    }

    /// A fetch that may bring back `bytes` was sent.
    pub(super) fn reserve(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// A fetch that reserved `reserved` bytes brought back `fetched` (whole batches: what a
    /// partial batch at its end held is read again by the next fetch, and counted then).
    pub(super) fn settle(&mut self, reserved: usize, fetched: usize) {
        self.tokens = (self.tokens + reserved as f64 - fetched as f64).min(self.burst);
    }

    /// Time fetches were held back so far, including a hold under way.
    pub(super) fn held(&self, now: Instant) -> Duration {
        self.held + self.holding_since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates fetchers that each reserve what is available and bring back as many whole
    /// batches of `batch` bytes as fit, at least one (KIP-74), settled `rtt` later, for
    /// `seconds` of a backlog: returns the bytes fetched.
    fn simulate(rate: u64, batch: usize, fetchers: usize, rtt: Duration, seconds: u64) -> usize {
        let start = Instant::now();
        let mut limit = RateLimit::new(rate, start);
        let tick = Duration::from_millis(10);
        let mut in_flight: Vec<(Instant, usize)> = Vec::new();
        let mut fetched = 0;
        let mut now = start;
        while now < start + Duration::from_secs(seconds) {
            in_flight.retain(|&(due, reserved)| {
                if due <= now {
                    let answer = (reserved / batch).max(1) * batch;
                    limit.settle(reserved, answer);
                    fetched += answer;
                    false
                } else {
                    true
                }
            });
            while in_flight.len() < fetchers {
                let available = limit.available(now);
                if available == 0 {
                    break;
                }
                let reserved = available;
                limit.reserve(reserved);
                in_flight.push((now + rtt, reserved));
            }
            now += tick;
        }
        fetched
    }

    #[test]
    fn a_backlog_is_fetched_at_the_rate_whatever_the_batch_size() {
        let rate = 5 * 1024 * 1024;
        // The excess is at most a burst and one batch per fetcher, whatever the duration:
        // batches of 8 MiB (a topic's max.message.bytes raised) need a longer stretch.
        let cases = [(16 * 1024, 1, 1, 20), (1024 * 1024, 3, 20, 20), (8 * 1024 * 1024, 2, 50, 200)];
        for (batch, fetchers, rtt_ms, seconds) in cases {
            let fetched = simulate(rate, batch, fetchers, Duration::from_millis(rtt_ms), seconds);
            let measured = fetched as f64 / seconds as f64;
            let ratio = measured / rate as f64;
            assert!((0.9..=1.1).contains(&ratio), "batch {batch}, {fetchers} fetchers: {measured} B/s, ratio {ratio}");
        }
    }

    #[test]
    fn a_fetch_larger_than_its_reservation_is_paid_back_before_the_next() {
        let now = Instant::now();
        let mut limit = RateLimit::new(1024 * 1024, now);
        let available = limit.available(now);
        limit.reserve(available);
        limit.settle(available, available + 1024 * 1024);
        // A second's worth of debt: nothing may be fetched for about a second.
        assert_eq!(limit.available(now + Duration::from_millis(900)), 0);
        assert!(limit.available(now + Duration::from_millis(1200)) > 0);
        assert!(limit.held(now + Duration::from_millis(1200)) >= Duration::from_millis(300));
    }

    #[test]
    fn unused_reservations_come_back_and_idle_time_does_not_build_a_larger_burst() {
        let now = Instant::now();
        let mut limit = RateLimit::new(1024 * 1024, now);
        let burst = limit.available(now);
        limit.reserve(burst);
        limit.settle(burst, 0);
        assert_eq!(limit.available(now), burst);
        assert_eq!(limit.available(now + Duration::from_secs(60)), burst);
        assert_eq!(limit.held(now + Duration::from_secs(60)), Duration::ZERO);
    }
}
