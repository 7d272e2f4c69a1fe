//! `kferry status`: where a flow's replication stands, read from the clusters themselves,
//! so that it answers with no kferry running: per partition the replicated offset (the
//! progress group on the target), the source's end (its last stable offset), the lag in
//! records and in seconds (the age, by its timestamp, of the oldest record not yet
//! replicated), and whether the flow was failed over (its failover record).
//!
//! What only a running kferry knows (a partition stalled and why, an unreachable cluster)
//! is added by the caller from the process' `/readyz`, when it has a metrics listener.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::failover::{failover_point, FailoverError};
use super::marker::{self, FlowState};
use crate::client::{Cluster, FetchSpec, Isolation};
use crate::config::FlowConfig;
use crate::protocol::batch::{BatchItem, BatchIter};
use crate::replicate::shard::Shard;

/// The most a status Fetch asks for: one batch is enough to read a timestamp.
const TIMESTAMP_FETCH_BYTES: i32 = 64 * 1024;

/// A flow as its clusters record it.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatus {
    #[serde(flatten)]
    pub summary: FlowSummary,
    pub partitions: Vec<PartitionStatus>,
}

/// A flow's state as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    pub flow: String,
    pub source: String,
    pub target: String,
    /// `active`, `failing_over` or `failed_over` (from the failover record), or
    /// `not_started` when nothing was replicated yet.
    pub state: &'static str,
    /// Why it was failed over (`planned`, `force`, `failback`), with the state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    /// Whether the source answered: if not, `source_end` is what kferry last fetched.
    pub source_reachable: bool,
}

/// One source partition of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    /// The shard that replicates it, when the flow has several (`shards`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u16>,
    pub target_topic: String,
    /// Every source offset below this one is committed on the target.
    pub replicated_offset: i64,
    /// The source's last stable offset (live, or as last fetched while it is unreachable).
    pub source_end: Option<i64>,
    /// `source_end - replicated_offset`.
    pub lag_records: Option<i64>,
    /// Age of the oldest record not yet replicated, by its timestamp; 0 when caught up,
    /// `None` when it could not be read (the source unreachable).
    pub lag_seconds: Option<f64>,
    /// The target partition's end offset (read_committed).
    pub target_end: i64,
}

/// Reads the status of `flow`; `source` is `None` when it is unreachable.
pub async fn flow_status(
    flow: &FlowConfig,
    source: Option<&Cluster>,
    target: &Cluster,
) -> Result<FlowStatus, FailoverError> {
    let record = marker::read(target, &flow.name())
        .await
        .map_err(|source| FailoverError::Marker { flow: flow.name(), source })?;
    let points = match failover_point(flow, source, target).await {
        Ok(points) => points,
        Err(FailoverError::NoProgress { .. }) => Vec::new(),
        Err(other) => return Err(other),
    };
    let state = match (&record, points.is_empty()) {
        (Some(record), _) => match record.state {
            FlowState::Active => "active",
            FlowState::FailingOver => "failing_over",
            FlowState::FailedOver => "failed_over",
        },
        (None, true) => "not_started",
        (None, false) => "active",
    };
    let mut partitions = Vec::with_capacity(points.len());
    for point in points {
        let lag_seconds = match (source, point.not_replicated()) {
            (_, Some(0)) => Some(0.0),
            (Some(source), Some(_)) => {
                oldest_unreplicated_age(source, &point.source_topic, point.partition, point.replicated_to).await
            }
            _ => None,
        };
        let shard = (flow.shards > 1).then(|| Shard::of(flow, &point.source_topic, point.partition).index);
        partitions.push(PartitionStatus {
            shard,
            lag_records: point.not_replicated(),
            topic: point.source_topic,
            partition: point.partition,
            target_topic: point.target_topic,
            replicated_offset: point.replicated_to,
            source_end: point.source_end,
            lag_seconds,
            target_end: point.target_end,
        });
    }
    let summary = FlowSummary {
        flow: flow.name(),
        source: flow.source.clone(),
        target: flow.target.clone(),
        state,
        state_reason: record.filter(|r| r.state != FlowState::Active).map(|r| r.reason),
        source_reachable: source.is_some(),
    };
    Ok(FlowStatus { summary, partitions })
}

/// Seconds since the timestamp of the source record at `offset` (the first batch holding
/// it: its first record's time, or the append time of a LogAppendTime topic). `None`
/// when it cannot be read; a status is still worth printing without it.
async fn oldest_unreplicated_age(source: &Cluster, topic: &str, partition: i32, offset: i64) -> Option<f64> {
    let spec = FetchSpec {
        offset,
        max_bytes: TIMESTAMP_FETCH_BYTES,
        max_wait: std::time::Duration::ZERO,
        isolation: Isolation::ReadCommitted,
    };
    let fetched = source.fetch(topic, partition, &spec).await.ok()?;
    let batch = BatchIter::new(fetched.records).find_map(|item| match item {
        Ok(BatchItem::Batch(batch)) if batch.last_offset() >= offset && !batch.is_control() => Some(batch),
        _ => None,
    })?;
    let millis = if batch.has_log_append_time() { batch.max_timestamp() } else { batch.base_timestamp() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    Some((now - millis).max(0) as f64 / 1000.0)
}
