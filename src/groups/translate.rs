//! Exact translation of a source group's committed offset into the target offset where the
//! same group continues: pure, from a flow's offset maps and its replication progress.
//!
//! A committed offset `o` means "the next record to read is at `o`". It translates to the
//! target offset of the first replicated record at or after `o`, so the group neither reads
//! a record twice nor skips one, whatever gaps (transaction markers, aborted data,
//! compaction) lie in between. Beyond what is replicated so far nothing is guessed: the
//! translation waits for the data.

use std::collections::BTreeMap;

use crate::replicate::state::{OffsetMaps, SourcePartition};

/// The next source offset the flow has replicated up to, per source partition (what its
/// progress group holds).
pub type Progress = BTreeMap<SourcePartition, i64>;

/// Where a source group's committed offset leads on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// Commit `offset` for the group on the target's `topic`/partition.
    Target { topic: String, offset: i64 },
    /// The flow does not replicate this partition.
    NotReplicated,
    /// The offset lies beyond what is replicated so far; translated once the data is there.
    Pending,
}

/// Translates through one consistent view of a flow's state: the progress must have been
/// read before the offset maps, so the maps cover everything the progress counts as done.
#[derive(Debug, Clone, Copy)]
pub struct Translator<'a> {
    maps: &'a OffsetMaps,
    progress: &'a Progress,
}

impl<'a> Translator<'a> {
    pub fn new(maps: &'a OffsetMaps, progress: &'a Progress) -> Self {
        Self { maps, progress }
    }

    /// The target topic the flow writes `source` to, if it has replicated anything from it.
    pub fn target_topic(&self, source: &SourcePartition) -> Option<&'a str> {
        self.maps.get(source).map(|(topic, _)| topic.as_str())
    }

    pub fn translate(&self, source: &SourcePartition, offset: i64) -> Translation {
        let Some((topic, map)) = self.maps.get(source) else {
            // Progress without a map: replicated only gaps so far (markers, aborted data),
            // so there is no target position to point at yet.
            return match self.progress.contains_key(source) {
                true => Translation::Pending,
                false => Translation::NotReplicated,
            };
        };
        if let Some(target) = map.translate(offset) {
            return Translation::Target { topic: topic.clone(), offset: target };
        }
        // Past the last mapped record: if the flow has read the source up to `offset`,
        // everything in between was a gap and the group continues right after the last
        // replicated record.
        let replicated_up_to = self.progress.get(source).copied().unwrap_or(i64::MIN);
        match map.segments().last() {
            Some(last) if offset <= replicated_up_to => Translation::Target {
                topic: topic.clone(),
                offset: last.target_start + (last.source_end - last.source_start),
            },
            _ => Translation::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicate::offset_map::OffsetMap;

    fn state(progress: i64) -> (OffsetMaps, Progress) {
        // Source: records 0..10, a commit marker at 10, an aborted transaction 11..15 with
        // its marker at 15, records 16..20, a marker at 20. Target: 0..10 then 10..14.
        let mut map = OffsetMap::default();
        map.record(0, 10, 0);
        map.record(16, 4, 10);
        let source = ("orders".to_string(), 0);
        (OffsetMaps::from([(source.clone(), ("orders".to_string(), map))]), Progress::from([(source, progress)]))
    }

    fn at(offset: i64) -> Translation {
        Translation::Target { topic: "orders".into(), offset }
    }

    #[test]
    fn gaps_translate_to_the_next_replicated_record() {
        let (maps, progress) = state(21);
        let t = Translator::new(&maps, &progress);
        let source = ("orders".to_string(), 0);
        assert_eq!(t.translate(&source, 0), at(0));
        assert_eq!(t.translate(&source, 10), at(10), "at the marker: next is source 16, target 10");
        assert_eq!(t.translate(&source, 13), at(10), "inside the aborted transaction");
        assert_eq!(t.translate(&source, 17), at(11));
        assert_eq!(t.translate(&source, 20), at(14), "caught up");
        assert_eq!(t.translate(&source, 21), at(14), "after the trailing marker, which progress covers");
        assert_eq!(t.translate(&source, 22), Translation::Pending, "not replicated yet");
    }

    #[test]
    fn the_trailing_gap_waits_for_progress() {
        let (maps, progress) = state(20);
        let t = Translator::new(&maps, &progress);
        assert_eq!(t.translate(&("orders".to_string(), 0), 21), Translation::Pending);
    }

    #[test]
    fn partitions_the_flow_does_not_replicate() {
        let (maps, mut progress) = state(21);
        progress.insert(("payments".to_string(), 0), 3);
        let t = Translator::new(&maps, &progress);
        assert_eq!(t.translate(&("payments".to_string(), 0), 2), Translation::Pending, "only markers so far");
        assert_eq!(t.translate(&("audit".to_string(), 0), 2), Translation::NotReplicated);
        assert_eq!(t.target_topic(&("orders".to_string(), 0)), Some("orders"));
    }
}
