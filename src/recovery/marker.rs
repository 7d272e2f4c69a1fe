//! The failover record of a flow: whether the flow may write to its target, and the point
//! where it was failed over. Kept on the flow's target in the compacted topic
//! `__kferry.failover` (key: the flow's name, value: JSON), so it survives every kferry
//! process and fences flows that are restarted by mistake.

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
    serde_json::from_slice(value).map(Some).map_err(|e| MarkerError::Invalid {
        cluster: target.name().to_string(),
        flow: flow.to_string(),
        reason: e.to_string(),
    })
}

/// Writes `record` (replacing the flow's previous one).
pub async fn write(target: &Cluster, record: &FailoverRecord) -> Result<(), MarkerError> {
    ensure_topic(target, FAILOVER_TOPIC).await?;
    let value = serde_json::to_vec(record).map_err(|e| MarkerError::Invalid {
        cluster: target.name().to_string(),
        flow: record.flow.clone(),
        reason: e.to_string(),
    })?;
    let records: [KeyValueRef<'_>; 1] = [(Some(record.flow.as_bytes()), Some(&value))];
    let batch = build_batch(&records, now_ms());
    target.produce(FAILOVER_TOPIC, 0, batch.into_bytes(), Duration::from_secs(30)).await?;
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
