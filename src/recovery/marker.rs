//! The failover record of a flow: whether the flow may write to its target, and the point
//! where it was failed over. Kept on the flow's target in the compacted topic
//! `__kferry.failover` (key: the flow's name, value: JSON), so it survives every kferry
//! process and fences flows that are restarted by mistake.
//!
//! A record with thousands of partitions does not fit in one message (about 130 bytes per
//! partition against the broker's 1 MiB default), so the partitions go in parts of at most
//! [`PART_BYTES`] under the keys `<flow>/part/<n>`, written before the record itself
//! (key `<flow>`, which names how many parts it has and when it was written): whoever
//! sees the record sees its parts. Flow names (`<alias>-><alias>`) never hold a `/`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{ClientError, Cluster};
use crate::protocol::records::{build_batch, KeyValueRef};
use crate::replicate::state::{ensure_topic, latest_values};

/// The topic holding the failover records of the flows that write to a cluster.
pub const FAILOVER_TOPIC: &str = "__kferry.failover";

/// Whether a flow may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Runs normally (after a completed failback, or for a reverse flow being set up).
    Active,
    /// A failover (or `failback --complete`) has begun: written before the fence, so a
    /// kferry that takes the transactional id back after the fence reads it right after
    /// its InitProducerId and stops instead of writing. No failover point yet.
    FailingOver,
    /// Failed over: fenced; `kferry run` refuses to start it.
    FailedOver,
}

/// One partition at the failover point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPoint {
    pub source_topic: String,
    pub partition: i32,
    pub target_topic: String,
    /// Every source offset before this one is on the target.
    pub replicated_to: i64,
    /// The source's end offset: live for a planned failover, else as kferry last fetched it
    /// (`None` when never known).
    pub source_end: Option<i64>,
    /// The target partition's end offset.
    pub target_end: i64,
    /// Source offsets not on the target (`source_end - replicated_to`): the data at risk
    /// of a forced failover.
    pub not_replicated: Option<i64>,
}

impl PartitionPoint {
    pub fn new(
        source: (String, i32),
        target_topic: String,
        replicated_to: i64,
        source_end: Option<i64>,
        target_end: i64,
    ) -> Self {
        let not_replicated = source_end.map(|end| (end - replicated_to).max(0));
        let (source_topic, partition) = source;
        Self { source_topic, partition, target_topic, replicated_to, source_end, target_end, not_replicated }
    }

    pub fn not_replicated(&self) -> Option<i64> {
        self.not_replicated
    }
}

/// A flow's failover record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub flow: String,
    pub state: FlowState,
    /// `planned`, `force`, or what set the state (`failback`).
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Whether `source_end` offsets were read live from the source.
    pub source_reachable: bool,
    pub partitions: Vec<PartitionPoint>,
    /// How many parts under `<flow>/part/<n>` hold `partitions` (0: all inline; records
    /// written before parts existed have none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parts: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One part of a record's partitions; `at_ms` ties it to the record it belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct Part {
    at_ms: i64,
    partitions: Vec<PartitionPoint>,
}

/// Most bytes of partition points in one message: well below the 1 MiB a topic accepts by
/// default, whatever the topic names' lengths.
pub const PART_BYTES: usize = 256 * 1024;

impl FailoverRecord {
    /// A record in state `state` with no failover point, set by `reason` now.
    pub fn state(flow: &str, state: FlowState, reason: &str) -> Self {
        Self {
            flow: flow.to_string(),
            state,
            reason: reason.to_string(),
            at_ms: now_ms(),
            source_reachable: true,
            partitions: Vec::new(),
            parts: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cluster {cluster}: failover record of flow {flow} in {FAILOVER_TOPIC} is not valid: {reason}")]
    Invalid { cluster: String, flow: String, reason: String },
}

/// The failover record of `flow` on `target` (the flow's target cluster), if any.
pub async fn read(target: &Cluster, flow: &str) -> Result<Option<FailoverRecord>, MarkerError> {
    let values = latest_values(target, FAILOVER_TOPIC).await?;
    let Some(value) = values.get(flow.as_bytes()) else { return Ok(None) };
    let invalid =
        |reason: String| MarkerError::Invalid { cluster: target.name().to_string(), flow: flow.to_string(), reason };
    let mut record: FailoverRecord = serde_json::from_slice(value).map_err(|e| invalid(e.to_string()))?;
    for n in 0..record.parts {
        let part = values.get(part_key(flow, n).as_bytes()).ok_or_else(|| invalid(format!("part {n} is missing")))?;
        let part: Part = serde_json::from_slice(part).map_err(|e| invalid(format!("part {n}: {e}")))?;
        if part.at_ms != record.at_ms {
            return Err(invalid(format!("part {n} belongs to another record (written at {} ms)", part.at_ms)));
        }
        record.partitions.extend(part.partitions);
    }
    Ok(Some(record))
}

fn part_key(flow: &str, n: usize) -> String {
    format!("{flow}/part/{n}")
}

/// Writes `record` (replacing the flow's previous one): its parts first, then the record.
/// `replication_factor` (the flow's setting) applies if the topic must be created.
pub async fn write(
    target: &Cluster,
    record: &FailoverRecord,
    replication_factor: Option<i16>,
) -> Result<(), MarkerError> {
    let encoded = encode(record)?;
    ensure_topic(target, FAILOVER_TOPIC, 1, replication_factor).await?;
    for (key, value) in &encoded {
        let records: [KeyValueRef<'_>; 1] = [(Some(key.as_bytes()), Some(value))];
        let batch = build_batch(&records, record.at_ms);
        target.produce(FAILOVER_TOPIC, 0, batch.into_bytes(), Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// The messages of `record`, in the order they are written: parts, then the record.
fn encode(record: &FailoverRecord) -> Result<Vec<(String, Vec<u8>)>, MarkerError> {
    let invalid = |e: serde_json::Error| MarkerError::Invalid {
        cluster: "(not written)".to_string(),
        flow: record.flow.clone(),
        reason: e.to_string(),
    };
    let mut parts: Vec<Vec<PartitionPoint>> = Vec::new();
    let mut bytes = 0;
    for point in &record.partitions {
        let size = serde_json::to_vec(point).map_err(invalid)?.len() + 1;
        if parts.is_empty() || bytes + size > PART_BYTES {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        parts.last_mut().into_iter().for_each(|part| part.push(point.clone()));
    }
    let mut messages = Vec::new();
    // Small records stay in one message, as kferry always wrote them.
    let inline = parts.len() <= 1;
    if !inline {
        for (n, partitions) in parts.into_iter().enumerate() {
            let part = Part { at_ms: record.at_ms, partitions };
            messages.push((part_key(&record.flow, n), serde_json::to_vec(&part).map_err(invalid)?));
        }
    }
    let head = FailoverRecord {
        partitions: if inline { record.partitions.clone() } else { Vec::new() },
        parts: messages.len(),
        ..record.clone()
    };
    messages.push((record.flow.clone(), serde_json::to_vec(&head).map_err(invalid)?));
    Ok(messages)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partitions: usize) -> FailoverRecord {
        let point = |p: usize| {
            PartitionPoint::new((format!("orders-{}", p % 7), p as i32), format!("orders-{}", p % 7), 10, Some(12), 11)
        };
        FailoverRecord {
            partitions: (0..partitions).map(point).collect(),
            ..FailoverRecord::state("p->s", FlowState::FailedOver, "force")
        }
    }

    /// Reassembles messages as `read` does, from the newest value of each key.
    fn decode(messages: &[(String, Vec<u8>)], flow: &str) -> FailoverRecord {
        let values: std::collections::BTreeMap<&str, &[u8]> =
            messages.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        let mut head: FailoverRecord = serde_json::from_slice(values[flow]).unwrap();
        for n in 0..head.parts {
            let part: Part = serde_json::from_slice(values[part_key(flow, n).as_str()]).unwrap();
            assert_eq!(part.at_ms, head.at_ms);
            head.partitions.extend(part.partitions);
        }
        head
    }

    #[test]
    fn a_small_record_is_one_message() {
        let small = record(3);
        let messages = encode(&small).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(decode(&messages, "p->s"), small);
    }

    #[test]
    fn thousands_of_partitions_are_split_into_parts_each_below_the_limit() {
        let big = record(20_000);
        let messages = encode(&big).unwrap();
        assert!(messages.len() > 2, "{} messages", messages.len());
        for (key, value) in &messages {
            assert!(value.len() < PART_BYTES + 1024, "{key}: {} bytes", value.len());
        }
        assert_eq!(messages.last().unwrap().0, "p->s", "the record comes after its parts");
        let mut expected = big.clone();
        expected.parts = messages.len() - 1;
        assert_eq!(decode(&messages, "p->s"), expected);
    }

    #[test]
    fn records_written_before_parts_existed_still_read() {
        let old = r#"{"flow":"p->s","state":"failed_over","reason":"planned","at_ms":1,"source_reachable":true,"partitions":[]}"#;
        let record: FailoverRecord = serde_json::from_str(old).unwrap();
        assert_eq!((record.state, record.parts), (FlowState::FailedOver, 0));
    }
}
