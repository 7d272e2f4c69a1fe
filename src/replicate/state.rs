//! kferry's state on the target cluster: each flow's offset map, in a compacted topic
//! (`__kferry.offset-map.<source alias>`, one partition), written in the same transaction
//! as the records it describes so the two can never disagree.
//!
//! One record per segment: key `<source topic>/<partition>/<source start>` (topic names
//! cannot hold `/`), value `<target topic> <source end> <target start>` in ASCII. A growing
//! segment is written again under the same key; compaction keeps the newest. A segment
//! that no longer describes the target's records (a failback deleted them) is removed by a
//! tombstone (its key, no value). Group-offset translation and failover read the topic back
//! with [`load`].

use std::collections::BTreeMap;
use std::time::Duration;

use super::forward;
use super::offset_map::{OffsetMap, Segment};
use crate::client::{ClientError, Cluster, FetchSpec, Isolation, OffsetSpec};
use crate::config::FlowConfig;
use crate::protocol::batch::RecordBatch;
use crate::protocol::error_code::ResponseError;
use crate::protocol::records::{build_batch, KeyValueRef};
use crate::replicate::rewrite::decode_records;

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
        segment_key(source, segment.source_start),
        format!("{target_topic} {} {}", segment.source_end, segment.target_start),
    )
}

/// A state record back into a segment; `None` for a record kferry did not write.
pub fn decode_segment(key: &[u8], value: &[u8]) -> Option<(SourcePartition, String, Segment)> {
    let ((topic, partition), source_start) = decode_key(key)?;
    let value = std::str::from_utf8(value).ok()?;
    let mut value_parts = value.split(' ');
    let target_topic = value_parts.next()?.to_string();
    let source_end = value_parts.next()?.parse().ok()?;
    let target_start = value_parts.next()?.parse().ok()?;
    Some(((topic, partition), target_topic, Segment { source_start, source_end, target_start }))
}

/// The metadata committed with a progress offset: the source topic (the target's name may
/// differ) and the source partition's high watermark as last fetched, which tells a forced
/// failover how much was not replicated when the source cluster is gone.
pub fn progress_metadata(source_topic: &str, source_end: i64) -> String {
    format!("{source_topic} {source_end}")
}

/// One partition of a flow's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub source: SourcePartition,
    pub target_topic: String,
    /// The next source offset to replicate: everything before it is on the target.
    pub next_offset: i64,
    /// The source's high watermark when kferry last fetched the partition.
    pub source_end: Option<i64>,
}

/// Reads a flow's progress group back (topic names cannot hold a space, so the metadata
/// splits unambiguously; older metadata is the source topic alone).
pub async fn read_progress(target: &Cluster, progress_group: &str) -> Result<Vec<PartitionProgress>, ClientError> {
    let committed = target.fetch_group_offsets(progress_group).await?;
    Ok(committed
        .into_iter()
        .map(|((target_topic, partition), c)| {
            let metadata = c.metadata.unwrap_or_default();
            let (source_topic, source_end) = match metadata.split_once(' ') {
                Some((topic, end)) => (topic.to_string(), end.parse().ok()),
                None => (metadata.clone(), None),
            };
            let source_topic = if source_topic.is_empty() { target_topic.clone() } else { source_topic };
            PartitionProgress { source: (source_topic, partition), target_topic, next_offset: c.offset, source_end }
        })
        .collect())
}

/// A batch of state records for `segments`.
pub fn state_batch(segments: &[(SourcePartition, String, Segment)], timestamp: i64) -> RecordBatch {
    let records: Vec<(String, String)> = segments.iter().map(|(s, t, seg)| encode_segment(s, t, seg)).collect();
    let refs: Vec<KeyValueRef<'_>> = records.iter().map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes()))).collect();
    build_batch(&refs, timestamp)
}

/// A batch of tombstones deleting the segments starting at these source offsets (of an
/// earlier incarnation of a source partition that was reset).
pub fn tombstone_batch(retired: &[(SourcePartition, i64)], timestamp: i64) -> RecordBatch {
    let keys: Vec<String> = retired.iter().map(|(source, start)| segment_key(source, *start)).collect();
    let refs: Vec<KeyValueRef<'_>> = keys.iter().map(|k| (Some(k.as_bytes()), None)).collect();
    build_batch(&refs, timestamp)
}

fn segment_key(source: &SourcePartition, source_start: i64) -> String {
    format!("{}/{}/{}", source.0, source.1, source_start)
}

/// The source partition and segment start a state key names.
fn decode_key(key: &[u8]) -> Option<(SourcePartition, i64)> {
    let key = std::str::from_utf8(key).ok()?;
    let mut parts = key.rsplitn(3, '/');
    let source_start = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    Some(((parts.next()?.to_string(), partition), source_start))
}

/// Creates the state topic if it is missing (compacted, one partition), with the durability
/// of kferry's own topics ([`crate::topics::own`]; `replication_factor`: the flow's setting).
pub async fn ensure_topic(
    target: &Cluster,
    topic: &str,
    partitions: i32,
    replication_factor: Option<i16>,
) -> Result<i32, ClientError> {
    if let Ok(info) = target.topic(topic).await {
        return Ok(info.partitions.len() as i32);
    }
    let mut new = crate::topics::own::own_topic(target, topic, replication_factor).await?;
    new.partitions = partitions;
    let mut outcomes = target.create_topics(&[new], false, Duration::from_secs(30)).await?;
    match outcomes.remove(0).1 {
        Ok(()) => Ok(partitions),
        // Created meanwhile (by another shard): as it is, once its metadata has spread
        // (a broker may not know it for a moment).
        Err(ClientError::Topic { code, .. }) if code.0 == ResponseError::TopicAlreadyExists => {
            let mut attempt = 0;
            loop {
                target.invalidate_metadata();
                match target.topic(topic).await {
                    Ok(info) => return Ok(info.partitions.len() as i32),
                    Err(ClientError::UnknownTopic { .. }) if attempt < 20 => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(other) => return Err(other),
                }
            }
        }
        Err(other) => Err(other),
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
    /// Per state partition (one per shard of the flow), the next offset to read; absent
    /// until the first read finds the log start.
    next_offsets: BTreeMap<i32, i64>,
    maps: OffsetMaps,
}

impl StateReader {
    pub fn new(topic: &str) -> Self {
        Self { topic: topic.to_string(), next_offsets: BTreeMap::new(), maps: OffsetMaps::new() }
    }

    /// The maps as of the last catch-up.
    pub fn maps(&self) -> &OffsetMaps {
        &self.maps
    }

    /// Reads every record committed to the state topic since the last call. A state topic
    /// that does not exist yet (no data replicated) leaves the maps empty.
    pub async fn catch_up(&mut self, target: &Cluster) -> Result<&OffsetMaps, ClientError> {
        let partitions: Vec<i32> = match target.topic(&self.topic).await {
            Ok(info) => info.partitions.keys().copied().collect(),
            Err(ClientError::UnknownTopic { .. }) => return Ok(&self.maps),
            Err(other) => return Err(other),
        };
        // A source partition's segments and tombstones are all in its shard's partition,
        // so the partitions can be read one after the other.
        for partition in partitions {
            self.catch_up_partition(target, partition).await?;
        }
        Ok(&self.maps)
    }

    async fn catch_up_partition(&mut self, target: &Cluster, partition: i32) -> Result<(), ClientError> {
        let maps = &mut self.maps;
        let from = self.next_offsets.get(&partition).copied();
        let next = read_records(target, &self.topic, partition, from, |key, value| {
            let Some(value) = value else {
                // A tombstone: the segment of a source partition that was reset is gone.
                if let Some((source, start)) = decode_key(key) {
                    if let Some((_, map)) = maps.get_mut(&source) {
                        map.remove(start);
                    }
                }
                return;
            };
            if let Some((source, target_topic, segment)) = decode_segment(key, value) {
                let entry = maps.entry(source).or_insert_with(|| (target_topic.clone(), OffsetMap::default()));
                entry.0 = target_topic;
                entry.1.upsert(segment);
            }
        })
        .await?;
        if let Some(next) = next {
            self.next_offsets.insert(partition, next);
        }
        Ok(())
    }
}

/// The newest value of every key of a compacted kferry topic (partition 0, committed
/// records only); empty when the topic does not exist.
pub async fn latest_values(cluster: &Cluster, topic: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, ClientError> {
    let mut values = BTreeMap::new();
    read_records(cluster, topic, 0, None, |key, value| match value {
        Some(value) => {
            values.insert(key.to_vec(), value.to_vec());
        }
        None => {
            values.remove(key);
        }
    })
    .await?;
    Ok(values)
}

/// Calls `on_record` with the key and value of every committed record of partition 0 of
/// `topic` from `from` (the log start if `None`) to its end, whatever codec the target
/// broker stored them with (a target with `compression.type` set recompresses kferry's
/// writes); records without a key are skipped, tombstones come with no value. Returns the offset after the last one read, `None` if the topic does not
/// exist.
async fn read_records(
    cluster: &Cluster,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    mut on_record: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<Option<i64>, ClientError> {
    match cluster.topic(topic).await {
        Ok(_) => {}
        Err(ClientError::UnknownTopic { .. }) => return Ok(None),
        Err(other) => return Err(other),
    }
    let malformed = |missing: String| ClientError::IncompleteResponse {
        cluster: cluster.name().clone(),
        what: "kferry state topic",
        missing,
    };
    let end = cluster.list_offset(topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted).await?;
    let mut offset = match from {
        Some(offset) => offset,
        None => cluster.list_offset(topic, partition, OffsetSpec::Earliest, Isolation::ReadCommitted).await?,
    };
    while offset < end {
        let spec = FetchSpec {
            offset,
            max_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_millis(100),
            isolation: Isolation::ReadCommitted,
        };
        let fetched = cluster.fetch(topic, partition, &spec).await?;
        // Markers and aborted batches are dropped as for replicated data.
        let selection = forward::select(fetched.records, offset, &fetched.aborted_transactions)
            .map_err(|e| malformed(e.to_string()))?;
        for forwarded in &selection.batches {
            let records =
                decode_records(&forwarded.batch).map_err(|e| malformed(format!("well-formed records ({e})")))?;
            for record in records {
                if let Some(key) = record.key {
                    on_record(&key, record.value.as_deref());
                }
            }
        }
        if selection.next_offset == offset {
            break;
        }
        offset = selection.next_offset;
    }
    Ok(Some(offset))
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
        let decoded: Vec<_> =
            decode_records(&batch).unwrap().into_iter().filter_map(|r| decode_segment(&r.key?, &r.value?)).collect();
        assert_eq!(decoded, segments);
    }
}
