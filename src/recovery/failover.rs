//! `kferry failover`: the flow's target takes over. Planned (the source is still up): wait
//! until nothing is left to replicate, sync group offsets a last time, fence the flow, and
//! record the failover point. Forced (the source is lost): the same with what was
//! replicated so far, reporting per partition the source offsets that never arrived.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::marker::{self, FailoverRecord, FlowState, MarkerError, PartitionPoint};
use crate::client::{ClientError, Cluster, Isolation, OffsetSpec};
use crate::config::{Delivery, FlowConfig};
use crate::groups::checkpoint::{checkpoints_topic, Checkpoint};
use crate::groups::sync::{GroupSync, GroupsError};
use crate::replicate::engine::progress_group;
use crate::replicate::shard::transactional_ids;
use crate::replicate::state::{latest_values, read_progress};

/// How long the fencing InitProducerId may keep a transaction open (it aborts it at once).
const FENCE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Planned (source up, nothing lost) or forced (source lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Planned,
    Force,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Planned => "planned",
            Self::Force => "force",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    #[error("flow {flow}: a planned failover needs the source cluster {source_alias}, which is unreachable ({reason}); if it is lost, use --force")]
    SourceUnreachable { flow: String, source_alias: String, reason: String },
    #[error(
        "flow {flow}: already failed over ({reason}); a second failover would record the records written on {target} \
         since then as replicated. Run `kferry failback` to bring them back first"
    )]
    AlreadyFailedOver { flow: String, target: String, reason: String },
    #[error("flow {flow}: nothing replicated yet (no progress on {target}): there is no failover point")]
    NoProgress { flow: String, target: String },
    #[error(
        "flow {flow}: replication lag still {lag} offsets after {waited:?} ({partitions}); are producers still writing \
         to {source_alias}? Stop them, make sure `kferry run` runs for this flow, and try again (or raise --timeout)"
    )]
    LagNotZero { flow: String, source_alias: String, lag: i64, waited: Duration, partitions: String },
    #[error("flow {flow}: {source}")]
    Client {
        flow: String,
        #[source]
        source: Box<ClientError>,
    },
    #[error("flow {flow}: {source}")]
    Marker {
        flow: String,
        #[source]
        source: MarkerError,
    },
    #[error(transparent)]
    Groups(#[from] GroupsError),
}

/// Where one group continues on the target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupPosition {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The offset the group continues from on the target.
    pub offset: i64,
}

/// What a failover does (dry run) or did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverPlan {
    pub flow: String,
    pub mode: String,
    pub source_reachable: bool,
    /// The transactional ids bumped to fence the flow, two per shard (`exactly_once`
    /// flows; empty for `at_least_once`).
    pub fence: Vec<String>,
    pub partitions: Vec<PartitionPoint>,
    pub groups: Vec<GroupPosition>,
}

fn client(flow: &FlowConfig) -> impl Fn(ClientError) -> FailoverError + '_ {
    move |e| FailoverError::Client { flow: flow.name(), source: Box::new(e) }
}

/// The flow's state now: per partition how far it is replicated, the source's end (live
/// when `source` is given, else as last fetched) and the target's end.
pub async fn failover_point(
    flow: &FlowConfig,
    source: Option<&Cluster>,
    target: &Cluster,
) -> Result<Vec<PartitionPoint>, FailoverError> {
    let progress = read_progress(target, &progress_group(flow)).await.map_err(client(flow))?;
    if progress.is_empty() {
        return Err(FailoverError::NoProgress { flow: flow.name(), target: flow.target.clone() });
    }
    let mut points = Vec::new();
    for p in progress {
        let (source_topic, partition) = p.source;
        let target_end = target
            .list_offset(&p.target_topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted)
            .await
            .map_err(client(flow))?;
        let source_end = match source {
            Some(source) => Some(
                source
                    .list_offset(&source_topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted)
                    .await
                    .map_err(client(flow))?,
            ),
            None => p.source_end,
        };
        points.push(PartitionPoint::new(
            (source_topic, partition),
            p.target_topic,
            p.next_offset,
            source_end,
            target_end,
        ));
    }
    Ok(points)
}

/// The plan of a failover: the failover point as it is now and where groups continue.
pub async fn plan(
    flow: &FlowConfig,
    mode: Mode,
    source: Option<&Arc<Cluster>>,
    target: &Arc<Cluster>,
) -> Result<FailoverPlan, FailoverError> {
    let partitions = failover_point(flow, source.map(|s| &**s), target).await?;
    let groups = group_positions(flow, source, target).await?;
    Ok(FailoverPlan {
        flow: flow.name(),
        mode: mode.to_string(),
        source_reachable: source.is_some(),
        fence: if flow.delivery == Delivery::ExactlyOnce { transactional_ids(flow) } else { Vec::new() },
        partitions,
        groups,
    })
}

/// Where the source's groups continue on the target: translated now when the source is
/// reachable, else as the last checkpoints recorded them.
async fn group_positions(
    flow: &FlowConfig,
    source: Option<&Arc<Cluster>>,
    target: &Arc<Cluster>,
) -> Result<Vec<GroupPosition>, FailoverError> {
    let mut positions = Vec::new();
    if let Some(source) = source {
        let mut sync = GroupSync::new(flow, Arc::clone(source), Arc::clone(target))?;
        for view in sync.view(None).await? {
            for p in &view.partitions {
                if let Some((topic, offset)) = p.translated() {
                    let (group, topic, partition) = (view.group.clone(), topic.to_string(), p.partition);
                    positions.push(GroupPosition { group, topic, partition, offset });
                }
            }
        }
        return Ok(positions);
    }
    let mut latest = BTreeMap::new();
    for (key, value) in latest_values(target, &checkpoints_topic(&flow.source)).await.map_err(client(flow))? {
        if let Ok(c) = Checkpoint::decode(&key, &value) {
            latest.insert((c.group, c.topic, c.partition), c.downstream_offset);
        }
    }
    Ok(latest
        .into_iter()
        .map(|((group, topic, partition), offset)| GroupPosition { group, topic, partition, offset })
        .collect())
}

/// Fails the flow over. Planned: waits (up to `timeout`) until every partition is
/// replicated to the source's end and syncs group offsets a last time; forced: takes what
/// is there. Then, in this order, so that no cycle can land outside the recorded point:
///
/// 1. marks the flow `failing_over` (a kferry that initialises its producer from now on
///    reads it and stops; a running one stops within a second),
/// 2. fences the flow (a new epoch of its transactional id: a kferry initialised before
///    the mark fails at its next transactional request, its open transaction aborted),
/// 3. reads the failover point (nothing kferry writes can land after it any more),
/// 4. records it (`failed_over`).
///
/// Everything that can be checked is checked before step 1. An interrupted failover (the
/// flow left `failing_over`) is completed by running it again.
pub async fn execute(
    flow: &FlowConfig,
    mode: Mode,
    source: Option<&Arc<Cluster>>,
    target: &Arc<Cluster>,
    timeout: Duration,
) -> Result<FailoverPlan, FailoverError> {
    let marker_error = |source| FailoverError::Marker { flow: flow.name(), source };
    if let Some(record) = marker::read(target, &flow.name()).await.map_err(marker_error)? {
        if record.state == FlowState::FailedOver {
            let (flow, target, reason) = (flow.name(), flow.target.clone(), record.reason);
            return Err(FailoverError::AlreadyFailedOver { flow, target, reason });
        }
    }
    if mode == Mode::Planned {
        let Some(source) = source else {
            let reason = "not connected".to_string();
            return Err(FailoverError::SourceUnreachable {
                flow: flow.name(),
                source_alias: flow.source.clone(),
                reason,
            });
        };
        wait_for_zero_lag(flow, source, target, timeout).await?;
    }
    if let Some(source) = source {
        GroupSync::new(flow, Arc::clone(source), Arc::clone(target))?.round().await?;
    }
    // The plan before the mark: it fails (no progress, a cluster error) while nothing is
    // changed yet, and gives the groups' positions, which the fence does not move.
    let before = plan(flow, mode, source, target).await?;
    let mark = FailoverRecord::state(&flow.name(), FlowState::FailingOver, &mode.to_string());
    marker::write(target, &mark, flow.replication_factor).await.map_err(marker_error)?;
    for transactional_id in &before.fence {
        target.init_producer_id(Some(transactional_id), FENCE_TRANSACTION_TIMEOUT).await.map_err(client(flow))?;
    }
    let partitions = failover_point(flow, source.map(|s| &**s), target).await?;
    let record = FailoverRecord {
        source_reachable: source.is_some(),
        partitions: partitions.clone(),
        ..FailoverRecord::state(&flow.name(), FlowState::FailedOver, &mode.to_string())
    };
    marker::write(target, &record, flow.replication_factor).await.map_err(marker_error)?;
    Ok(FailoverPlan { partitions, ..before })
}

/// Waits until every partition is replicated up to the source's end.
async fn wait_for_zero_lag(
    flow: &FlowConfig,
    source: &Cluster,
    target: &Cluster,
    timeout: Duration,
) -> Result<(), FailoverError> {
    let started = Instant::now();
    loop {
        let points = failover_point(flow, Some(source), target).await?;
        let behind: Vec<&PartitionPoint> = points.iter().filter(|p| p.not_replicated().unwrap_or(0) > 0).collect();
        if behind.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let lag = behind.iter().filter_map(|p| p.not_replicated()).sum();
            let partitions = behind
                .iter()
                .take(5)
                .map(|p| format!("{} partition {}: {}", p.source_topic, p.partition, p.not_replicated().unwrap_or(0)))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(FailoverError::LagNotZero {
                flow: flow.name(),
                source_alias: flow.source.clone(),
                lag,
                waited: started.elapsed(),
                partitions,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl fmt::Display for FailoverPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source_end = if self.source_reachable { "SOURCE-END" } else { "SOURCE-END(last seen)" };
        writeln!(f, "flow {} failover ({}):", self.flow, self.mode)?;
        let mut rows = vec![[
            "TOPIC".to_string(),
            "PARTITION".into(),
            source_end.into(),
            "REPLICATED-TO".into(),
            "NOT-REPLICATED".into(),
            "TARGET-TOPIC".into(),
            "TARGET-END".into(),
        ]];
        let dash = |v: Option<i64>| v.map_or("unknown".to_string(), |v| v.to_string());
        for p in &self.partitions {
            rows.push([
                p.source_topic.clone(),
                p.partition.to_string(),
                dash(p.source_end),
                p.replicated_to.to_string(),
                dash(p.not_replicated()),
                p.target_topic.clone(),
                p.target_end.to_string(),
            ]);
        }
        write_table(f, &rows)?;
        let at_risk: i64 = self.partitions.iter().filter_map(PartitionPoint::not_replicated).sum();
        writeln!(f, "  source offsets not replicated: {at_risk}")?;
        match self.fence.as_slice() {
            [] => writeln!(f, "  fence: at_least_once flow: stop its `kferry run`; a restart refuses to run it")?,
            ids => writeln!(f, "  fence: transactional id {} (a new producer epoch)", ids.join(", "))?,
        }
        writeln!(f, "  groups continue on the target at:")?;
        if self.groups.is_empty() {
            writeln!(f, "    (no groups)")?;
        }
        let mut rows = vec![["GROUP".to_string(), "TOPIC".into(), "PARTITION".into(), "OFFSET".into()]];
        for g in &self.groups {
            rows.push([g.group.clone(), g.topic.clone(), g.partition.to_string(), g.offset.to_string()]);
        }
        if !self.groups.is_empty() {
            write_table(f, &rows)?;
        }
        Ok(())
    }
}

/// Rows as left-aligned columns, indented by two spaces.
pub(crate) fn write_table<const N: usize>(f: &mut fmt::Formatter<'_>, rows: &[[String; N]]) -> fmt::Result {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    for row in rows {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        writeln!(f, "  {}", cells.join("  ").trim_end())?;
    }
    Ok(())
}
