//! kferry's state on the target cluster: each flow's offset map, in a compacted topic
//! (`__kferry.offset-map.<source alias>`, one partition), written in the same transaction
//! as the records it describes so the two can never disagree.
//!
//! One record per segment: key `<source topic>/<partition>/<source start>` (topic names
//! cannot hold `/`), value `<target topic> <source end> <target start>` in ASCII. A growing
//! segment is written again under the same key; compaction keeps the newest. Group-offset
//! translation and failover read the topic back with [`load`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::forward;
use super::offset_map::{OffsetMap, Segment};
use crate::client::{ClientError, Cluster, FetchSpec, Isolation, NewTopic, OffsetSpec};
use crate::config::FlowConfig;
use crate::protocol::batch::RecordBatch;
use crate::protocol::error_code::ResponseError;
use crate::protocol::records::{build_batch, uncompressed_key_values, KeyValueRef};

/// A source partition (topic, partition).
pub type SourcePartition = (String, i32);

/// The offset maps of a flow, with the target topic of each source partition.
pub type OffsetMaps = BTreeMap<SourcePartition, (String, OffsetMap)>;

/// The state topic of `flow` on its target.
pub fn offset_map_topic(flow: &FlowConfig) -> String {
    format!("{}offset-map.{}", crate::topics::STATE_TOPIC_PREFIX, flow.source)
}

/// One segment as a state record (key, value).
pub fn encode_segment(source: &SourcePartition, target_topic: &str, segment: &Segment) -> (String, String) {
    (
        format!("{}/{}/{}", source.0, source.1, segment.source_start),
        format!("{target_topic} {} {}", segment.source_end, segment.target_start),
    )
}

/// A state record back into a segment; `None` for a record kferry did not write.
pub fn decode_segment(key: &[u8], value: &[u8]) -> Option<(SourcePartition, String, Segment)> {
    let key = std::str::from_utf8(key).ok()?;
    let value = std::str::from_utf8(value).ok()?;
    let mut key_parts = key.rsplitn(3, '/');
    let source_start = key_parts.next()?.parse().ok()?;
    let partition = key_parts.next()?.parse().ok()?;
    let topic = key_parts.next()?.to_string();
    let mut value_parts = value.split(' ');
    let target_topic = value_parts.next()?.to_string();
    let source_end = value_parts.next()?.parse().ok()?;
    let target_start = value_parts.next()?.parse().ok()?;
    Some(((topic, partition), target_topic, Segment { source_start, source_end, target_start }))
}

/// A batch of state records for `segments`.
pub fn state_batch(segments: &[(SourcePartition, String, Segment)], timestamp: i64) -> RecordBatch {
    let records: Vec<(String, String)> = segments.iter().map(|(s, t, seg)| encode_segment(s, t, seg)).collect();
    let refs: Vec<KeyValueRef<'_>> = records.iter().map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes()))).collect();
    build_batch(&refs, timestamp)
}

/// Creates the state topic if it is missing (compacted, one partition).
pub async fn ensure_topic(target: &Cluster, topic: &str) -> Result<(), ClientError> {
    if target.topic(topic).await.is_ok() {
        return Ok(());
    }
    let new = NewTopic {
        name: topic.to_string(),
        partitions: 1,
        replication_factor: None,
        configs: BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]),
    };
    let mut outcomes = target.create_topics(&[new], false, Duration::from_secs(30)).await?;
    match outcomes.remove(0).1 {
        Err(ClientError::Topic { code, .. }) if code.0 == ResponseError::TopicAlreadyExists => Ok(()),
        other => other,
    }
}

/// Reads a flow's offset maps back from its state topic (committed records only).
pub async fn load(target: &Cluster, topic: &str) -> Result<OffsetMaps, ClientError> {
    let mut reader = StateReader::new(topic);
    reader.catch_up(target).await?;
    Ok(reader.maps)
}

/// Follows a state topic: each [`StateReader::catch_up`] reads only what was committed
/// since the last one, so a loop can keep its view of the offset maps current cheaply.
#[derive(Debug)]
pub struct StateReader {
    topic: String,
    /// The next offset to read; `None` until the first read finds the log start.
    next_offset: Option<i64>,
    maps: OffsetMaps,
}

impl StateReader {
    pub fn new(topic: &str) -> Self {
        Self { topic: topic.to_string(), next_offset: None, maps: OffsetMaps::new() }
    }

    /// The maps as of the last catch-up.
    pub fn maps(&self) -> &OffsetMaps {
        &self.maps
    }

    /// Reads every record committed to the state topic since the last call. A state topic
    /// that does not exist yet (no data replicated) leaves the maps empty.
    pub async fn catch_up(&mut self, target: &Cluster) -> Result<&OffsetMaps, ClientError> {
        match target.topic(&self.topic).await {
            Ok(_) => {}
            Err(ClientError::UnknownTopic { .. }) => return Ok(&self.maps),
            Err(other) => return Err(other),
        }
        let end = target.list_offset(&self.topic, 0, OffsetSpec::Latest, Isolation::ReadCommitted).await?;
        let mut offset = match self.next_offset {
            Some(offset) => offset,
            None => target.list_offset(&self.topic, 0, OffsetSpec::Earliest, Isolation::ReadCommitted).await?,
        };
        while offset < end {
            let next = self.read_from(target, offset).await?;
            if next == offset {
                break;
            }
            offset = next;
        }
        self.next_offset = Some(offset);
        Ok(&self.maps)
    }

    /// One fetch from `offset`; returns the offset after what it read.
    async fn read_from(&mut self, target: &Cluster, offset: i64) -> Result<i64, ClientError> {
        let malformed = |missing: String| ClientError::IncompleteResponse {
            cluster: target.name().clone(),
            what: "state topic",
            missing,
        };
        let spec = FetchSpec {
            offset,
            max_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_millis(100),
            isolation: Isolation::ReadCommitted,
        };
        let fetched = target.fetch(&self.topic, 0, &spec).await?;
        // Markers and aborted batches are dropped as for replicated data.
        let selection = forward::select(fetched.records, offset, &fetched.aborted_transactions)
            .map_err(|e| malformed(e.to_string()))?;
        for forwarded in &selection.batches {
            let records = uncompressed_key_values(&forwarded.batch)
                .map_err(|e| malformed(format!("well-formed records ({e})")))?;
            for record in records {
                let (Some(key), Some(value)) = (record.key, record.value) else { continue };
                if let Some((source, target_topic, segment)) = decode_segment(&key, &value) {
                    let entry = self.maps.entry(source).or_insert_with(|| (target_topic.clone(), OffsetMap::default()));
                    entry.0 = target_topic;
                    entry.1.upsert(segment);
                }
            }
        }
        Ok(selection.next_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_through_state_records() {
        let source = ("orders.eu/v2".replace('/', "-"), 7);
        let segment = Segment { source_start: 100, source_end: 250, target_start: 90 };
        let (key, value) = encode_segment(&source, "primary.orders", &segment);
        assert_eq!((key.as_str(), value.as_str()), ("orders.eu-v2/7/100", "primary.orders 250 90"));
        assert_eq!(decode_segment(key.as_bytes(), value.as_bytes()), Some((source, "primary.orders".into(), segment)));
        assert_eq!(decode_segment(b"junk", b"1 2"), None);
    }

    #[test]
    fn a_state_batch_reads_back_as_the_same_segments() {
        let segments = vec![
            (("a".to_string(), 0), "a".to_string(), Segment { source_start: 0, source_end: 10, target_start: 0 }),
            (("b".to_string(), 3), "b".to_string(), Segment { source_start: 5, source_end: 6, target_start: 2 }),
        ];
        let batch = state_batch(&segments, 1_000);
        let decoded: Vec<_> = uncompressed_key_values(&batch)
            .unwrap()
            .into_iter()
            .filter_map(|r| decode_segment(&r.key?, &r.value?))
            .collect();
        assert_eq!(decoded, segments);
    }
}
