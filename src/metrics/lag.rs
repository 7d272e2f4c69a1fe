//! Lag in seconds of one partition: how long ago kferry first saw the oldest source record
//! it has not replicated yet. The source's end is sampled as kferry sees it; each new end
//! is remembered with the time it was first seen, and forgotten once replication passes
//! it. A partition kept busy by a steady producer therefore shows the age of what it is
//! behind on, not the time since it last stood exactly at the end.

use std::collections::VecDeque;

/// Ends remembered at most; further ones are skipped until replication passes the oldest,
/// which keeps the age of the oldest unreplicated record (never younger than it is).
const SAMPLES: usize = 64;

/// One partition's record of source ends and when they were first seen.
#[derive(Debug, Default)]
pub struct LagClock {
    /// (source end, milliseconds when first seen), ends increasing.
    seen: VecDeque<(i64, u64)>,
}

impl LagClock {
    /// Takes the latest source end and replicated position at `now` (milliseconds on any
    /// steady clock); returns the lag in milliseconds (0 when caught up).
    pub fn update(&mut self, source_end: i64, replicated: i64, now: u64) -> u64 {
        // An end at or below the replicated position is caught up with. An end above
        // the source's current one (the topic was recreated) no longer describes it.
        self.seen.retain(|&(end, _)| end > replicated && end <= source_end);
        if source_end > self.seen.back().map_or(i64::MIN, |&(end, _)| end) && self.seen.len() < SAMPLES {
            self.seen.push_back((source_end, now));
        }
        if replicated >= source_end {
            self.seen.clear();
            return 0;
        }
        // Everything up to the oldest remembered end above `replicated` existed then.
        self.seen.front().map_or(0, |&(_, at)| now.saturating_sub(at))
    }
}

#[cfg(test)]
mod tests {
    use super::LagClock;

    #[test]
    fn caught_up_is_zero() {
        let mut clock = LagClock::default();
        assert_eq!(clock.update(10, 10, 1_000), 0);
        assert_eq!(clock.update(10, 10, 5_000), 0);
    }

    #[test]
    fn age_of_the_oldest_unreplicated_end() {
        let mut clock = LagClock::default();
        assert_eq!(clock.update(100, 0, 1_000), 0);
        assert_eq!(clock.update(200, 50, 3_000), 2_000, "records below 100 were there at 1 s");
        assert_eq!(clock.update(300, 150, 4_000), 1_000, "100 passed: the end seen at 3 s is the oldest");
        assert_eq!(clock.update(300, 300, 5_000), 0);
    }

    #[test]
    fn a_steady_producer_does_not_make_lag_grow() {
        let mut clock = LagClock::default();
        // The source grows by 10 a second and kferry stays 5 behind.
        let mut worst = 0;
        for second in 1..=600u64 {
            let end = second as i64 * 10;
            worst = worst.max(clock.update(end, end - 5, second * 1_000));
        }
        assert!(worst <= 1_000, "lag {worst} ms for a partition 0.5 s behind");
    }

    #[test]
    fn a_stuck_partition_ages_even_with_the_samples_full() {
        let mut clock = LagClock::default();
        for second in 1..=1_000u64 {
            clock.update(second as i64, 0, second * 1_000);
        }
        assert_eq!(clock.update(1_001, 0, 1_001_000), 1_000_000);
    }

    #[test]
    fn a_source_end_going_back_is_taken_as_it_is() {
        let mut clock = LagClock::default();
        clock.update(500, 0, 1_000);
        assert_eq!(clock.update(20, 0, 2_000), 0, "the recreated topic's end is new");
        assert_eq!(clock.update(20, 0, 4_000), 2_000);
    }
}
