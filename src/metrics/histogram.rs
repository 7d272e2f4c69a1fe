//! The two histogram kinds: [`Latency`], end-to-end replication latency kept in an
//! HdrHistogram (3 significant digits from a millisecond to a week, so the Prometheus
//! buckets, fixed here, could be any others without losing precision); and
//! [`Buckets`], a lock-free fixed-bucket histogram for round durations.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Upper bounds (seconds) of the latency buckets on `/metrics`: from what a live flow
/// shows (tens of milliseconds) to a backlog being copied (hours).
pub(super) const LATENCY_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

/// Upper bounds (seconds) of the round-duration buckets.
pub(super) const ROUND_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Longest latency kept as it is (a week, in ms); longer ones count as a week.
const LATENCY_MAX_MS: u64 = 7 * 24 * 3600 * 1000;

/// End-to-end latency: source record time (CreateTime, or the broker's LogAppendTime) to
/// the target commit, per record, in milliseconds.
#[derive(Debug)]
pub(super) struct Latency {
    histogram: Histogram<u64>,
    /// Exact sum in milliseconds (the histogram's own would be rounded).
    sum_ms: u64,
}

impl Latency {
    pub(super) fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_MS, 3).expect("constant bounds are valid");
        Self { histogram, sum_ms: 0 }
    }

    /// Records `count` records that took `millis`.
    pub(super) fn record(&mut self, millis: u64, count: u64) {
        let millis = millis.min(LATENCY_MAX_MS);
        // Within bounds by the line above; a failure could only be a counter overflow.
        let _ = self.histogram.record_n(millis, count);
        self.sum_ms = self.sum_ms.saturating_add(millis.saturating_mul(count));
    }

    pub(super) fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub(super) fn sum_seconds(&self) -> f64 {
        self.sum_ms as f64 / 1000.0
    }

    /// Records at or under `seconds` (a bucket's cumulative count).
    pub(super) fn at_most(&self, seconds: f64) -> u64 {
        let millis = (seconds * 1000.0).round() as u64;
        self.histogram.count_between(0, millis)
    }
}

/// A fixed-bucket histogram of seconds, written with atomics only.
#[derive(Debug)]
pub(super) struct Buckets {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one for values above every bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Buckets {
    pub(super) fn seconds() -> Self {
        Self {
            bounds: &ROUND_BUCKETS,
            counts: (0..=ROUND_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub(super) fn observe(&self, seconds: f64) {
        let slot = self.bounds.iter().position(|&bound| seconds <= bound).unwrap_or(self.bounds.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// (upper bound, cumulative count) per bucket, without +Inf; then the total and the sum.
    pub(super) fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let total = cumulative + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        (buckets, total, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}
