//! Where each replicated source offset landed on the target, for one partition.
//!
//! Every forwarded batch gives a pair (source base offset, target base offset) and offsets
//! inside a batch keep their deltas, so the map is a list of segments of constant
//! `target - source`. A new segment starts only where the source has a gap the target
//! does not (transaction markers, aborted data, compaction). Group-offset translation and
//! failover read it; it is a pure data structure.

/// Offsets `source_start..source_end` map to `target_start..` one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source_start: i64,
    /// Exclusive.
    pub source_end: i64,
    pub target_start: i64,
}

impl Segment {
    fn target_end(&self) -> i64 {
        self.target_start + (self.source_end - self.source_start)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetMap {
    segments: Vec<Segment>,
}

impl OffsetMap {
    /// Records that source offsets `source_base..source_base + span` were written at
    /// `target_base..`. Batches are recorded in source order.
    pub fn record(&mut self, mut source_base: i64, mut span: i64, mut target_base: i64) {
        // A repeat delivery (at_least_once after a restart) of offsets already mapped: the
        // first copy stays the mapped one, only offsets beyond it are new.
        if let Some(last) = self.segments.last() {
            if source_base < last.source_end {
                let repeated = last.source_end - source_base;
                if repeated >= span {
                    return;
                }
                source_base += repeated;
                target_base += repeated;
                span -= repeated;
            }
        }
        if let Some(last) = self.segments.last_mut() {
            if last.source_end == source_base && last.target_end() == target_base {
                last.source_end += span;
                return;
            }
        }
        self.segments.push(Segment {
            source_start: source_base,
            source_end: source_base + span,
            target_start: target_base,
        });
    }

    /// A map holding `segments` (in source order), e.g. the last one of a partition, from
    /// which new records continue.
    pub fn from_segments(segments: Vec<Segment>) -> Self {
        Self { segments }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Puts a segment read back from the state topic in place: one with the same source
    /// start is replaced (a segment is rewritten as it grows).
    pub fn upsert(&mut self, segment: Segment) {
        match self.segments.binary_search_by_key(&segment.source_start, |s| s.source_start) {
            Ok(index) => self.segments[index] = segment,
            Err(index) => self.segments.insert(index, segment),
        }
    }

    /// Removes the segment starting at source offset `source_start`, if any (a tombstone
    /// read back from the state topic).
    pub fn remove(&mut self, source_start: i64) {
        if let Ok(index) = self.segments.binary_search_by_key(&source_start, |s| s.source_start) {
            self.segments.remove(index);
        }
    }

    /// Removes the segments that end at or below source offset `offset`, except the last
    /// one (new records continue from it); returns their source starts.
    pub fn remove_below(&mut self, offset: i64) -> Vec<i64> {
        let below = self.segments.partition_point(|s| s.source_end <= offset);
        let removable = below.min(self.segments.len().saturating_sub(1));
        self.segments.drain(..removable).map(|s| s.source_start).collect()
    }

    /// The target offset a consumer positioned at source offset `source` (the next record
    /// to read) continues from: the target offset of the first replicated record at or
    /// after it, so nothing is read twice or skipped. `None` beyond what is replicated.
    pub fn translate(&self, source: i64) -> Option<i64> {
        let index = self.segments.partition_point(|s| s.source_end <= source);
        match self.segments.get(index) {
            Some(s) if s.source_start <= source => Some(s.target_start + (source - s.source_start)),
            // In a gap (markers, aborted data): the next replicated record.
            Some(s) => Some(s.target_start),
            // Caught up with everything replicated so far.
            None => self.segments.last().filter(|s| s.source_end == source).map(Segment::target_end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_below_an_offset_are_removed_but_never_the_last() {
        let mut map = OffsetMap::default();
        for cycle in 0..5 {
            map.record(cycle * 10, 9, cycle * 10 + 1000); // one marker per cycle: a segment each
        }
        assert_eq!(map.segments().len(), 5);
        assert_eq!(map.remove_below(25), [0, 10], "segments ending at 9 and 19 lie below 25");
        assert_eq!(map.translate(25), Some(1025), "what is above stays exact");
        assert_eq!(map.translate(3), Some(1020), "below the pruned range: the first record kept");
        assert_eq!(map.remove_below(1_000), [20, 30], "the last segment stays");
        assert_eq!(map.segments().len(), 1);
        assert!(map.remove_below(1_000).is_empty());
    }

    #[test]
    fn contiguous_batches_share_a_segment_and_gaps_start_new_ones() {
        let mut map = OffsetMap::default();
        map.record(0, 10, 100);
        map.record(10, 5, 110);
        map.record(16, 4, 115); // source offset 15 was a transaction marker
        assert_eq!(map.segments().len(), 2);
        assert_eq!(map.translate(0), Some(100));
        assert_eq!(map.translate(14), Some(114));
        assert_eq!(map.translate(15), Some(115), "a consumer at the marker continues at the next record");
        assert_eq!(map.translate(16), Some(115));
        assert_eq!(map.translate(20), Some(119), "caught up");
        assert_eq!(map.translate(21), None, "not replicated yet");
    }

    #[test]
    fn repeated_deliveries_keep_the_first_copy() {
        let mut map = OffsetMap::default();
        map.record(0, 10, 0);
        map.record(5, 10, 10); // 5..10 again, then 10..15 new
        assert_eq!(map.translate(7), Some(7), "first copy");
        assert_eq!(map.translate(10), Some(15));
        assert_eq!(map.translate(15), Some(20), "caught up");
        map.record(0, 3, 40);
        assert_eq!(map.segments().len(), 2);
    }

    #[test]
    fn translation_never_goes_backwards() {
        let mut map = OffsetMap::default();
        for (i, gap) in [0i64, 2, 0, 1, 3].iter().enumerate() {
            let source = map.segments().last().map_or(0, |s| s.source_end) + gap;
            map.record(
                source,
                3 + i as i64,
                1_000 + map.segments().iter().map(|s| s.source_end - s.source_start).sum::<i64>(),
            );
        }
        let end = map.segments().last().unwrap().source_end;
        let translated: Vec<i64> = (0..=end).filter_map(|o| map.translate(o)).collect();
        assert!(translated.windows(2).all(|w| w[0] <= w[1]), "{translated:?}");
        assert_eq!(translated.len() as i64, end + 1);
    }
}
