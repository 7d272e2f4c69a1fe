//! One flow's tasks, supervised: connect to both clusters (retrying), then run side by
//! side topic sync ([`sync_loops`]: creates and updates target topics and tells the
//! replicator what to copy), the replicators of the shards this process owns ([`shards`])
//! and group offset sync, all under the failover guard (a flow marked failed over stops
//! within a second). `kferry run` runs one per configured flow; `kferry failback` runs the
//! reverse flow with it. A replicator that stops for good takes the flow's other loops
//! down with it; a stop request ends them all, the round in flight given a moment.

mod shards;
mod sync_loops;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::client::{ClientConfig, ClientError, Cluster};
use crate::config::FlowConfig;
use crate::groups::sync::GroupSync;
use crate::membership::Assignments;
use crate::metrics::{FlowMetrics, FlowState, Probe, Side};
use crate::topics::sync::TopicSync;

/// Pause between attempts to reach a flow's clusters.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);

/// How to reach one configured cluster: its bootstrap servers and client settings with its
/// security (certificates read, credentials prepared).
#[derive(Clone)]
pub struct ClusterAccess {
    pub bootstrap: Vec<String>,
    pub client: ClientConfig,
}

/// How a flow's loops ended.
pub enum FlowEnd {
    /// Stopped when asked to (a signal).
    Stopped,
    /// Stopped on an error it cannot recover from, logged.
    Failed,
    /// Stopped by its failover record: an error for `kferry run`, the expected end for the
    /// reverse flow of `kferry failback` once `--complete` has fenced it. Not logged: the
    /// caller knows which it is.
    TakenAway(crate::recovery::fence::TakenAway),
}

/// One flow: connect (retrying), then topic sync and replication side by side.
pub async fn run_alone(
    flow: FlowConfig,
    source: ClusterAccess,
    target: ClusterAccess,
    stopped: watch::Receiver<bool>,
) -> FlowEnd {
    let metrics = FlowMetrics::detached(&flow.name(), &flow.source, &flow.target, flow.buffer_bytes);
    let assignments = Assignments::alone(crate::membership::units_of_flow(&flow));
    run(flow, source, target, stopped, metrics, assignments).await
}

/// As [`run_alone`], replicating the shards `assignments` gives this process and booking
/// the flow's metrics into `metrics`.
pub async fn run(
    flow: FlowConfig,
    source: ClusterAccess,
    target: ClusterAccess,
    mut stopped: watch::Receiver<bool>,
    metrics: Arc<FlowMetrics>,
    assignments: Assignments,
) -> FlowEnd {
    let (source, target) = loop {
        match connect(&flow, &source, &target).await {
            Ok(clusters) => {
                metrics.set_unreachable(Side::Source, Probe::Connect, None);
                metrics.set_unreachable(Side::Target, Probe::Connect, None);
                metrics.set_state(FlowState::Starting, None);
                break clusters;
            }
            Err((side, e)) => {
                metrics.error(side, &e.metric_code());
                metrics.set_unreachable(side, Probe::Connect, Some(e.to_string()));
                metrics
                    .set_state(FlowState::Connecting, Some(format!("cluster {} unreachable", metrics.cluster(side))));
                tracing::error!(flow = %flow.name(), error = %e, "cluster unreachable; retrying in {CONNECT_RETRY:?}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CONNECT_RETRY) => {}
            _ = stopped.wait_for(|stop| *stop) => return FlowEnd::Stopped,
        }
    };
    let sync = match TopicSync::new(&flow, Arc::clone(&source), Arc::clone(&target)) {
        Ok(sync) => sync,
        Err(e) => return cannot_start(&flow, &metrics, &e),
    };
    let groups = match GroupSync::new(&flow, Arc::clone(&source), Arc::clone(&target)) {
        Ok(groups) => groups,
        Err(e) => return cannot_start(&flow, &metrics, &e),
    };
    let (topics, replicated) = watch::channel(None);
    let (flow_stop, flow_stopped) = watch::channel(false);
    let mut flow_stopped_for_sync = flow_stopped.clone();
    let mut flow_stopped_for_groups = flow_stopped.clone();
    let target_for_guard = Arc::clone(&target);
    let shards = shards::replicate(
        &flow,
        source,
        target,
        replicated,
        Arc::clone(&metrics),
        stopped.clone(),
        assignments.clone(),
    );
    let replication = async {
        let outcome = shards.await;
        // A replicator that stopped for good takes topic sync down with it.
        flow_stop.send_replace(true);
        outcome
    };
    let syncing =
        sync_loops::topics(&flow, &metrics, sync, topics, &assignments, stopped.clone(), &mut flow_stopped_for_sync);
    let group_syncing =
        sync_loops::groups(&flow, &metrics, groups, &assignments, stopped.clone(), &mut flow_stopped_for_groups);
    let loops = async { tokio::join!(replication, syncing, group_syncing).0 };
    // Disaster recovery (issue 14): no round at all for a failed-over flow, and the loops
    // stop within a second of a failover or `failback --complete` marking the flow.
    let outcome = crate::recovery::fence::guard(&flow, &target_for_guard, loops).await;
    drop(flow_stopped);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(taken) => {
            metrics.set_state(FlowState::Stopped, Some(taken.to_string()));
            return FlowEnd::TakenAway(taken);
        }
    };
    match outcome {
        Ok(totals) => {
            tracing::info!(flow = %flow.name(), records = totals.records, bytes = totals.bytes, rewritten = totals.rewritten, "flow stopped");
            FlowEnd::Stopped
        }
        Err(e) => {
            tracing::error!(flow = %flow.name(), "{e}");
            FlowEnd::Failed
        }
    }
}

/// A flow whose loops cannot be set up (its configuration does not fit the clusters):
/// stopped, with the reason in its state and the log.
fn cannot_start(flow: &FlowConfig, metrics: &FlowMetrics, error: &dyn std::fmt::Display) -> FlowEnd {
    metrics.set_state(FlowState::Stopped, Some(format!("flow cannot start: {error}")));
    tracing::error!(flow = %flow.name(), error = %error, "flow cannot start");
    FlowEnd::Failed
}

/// Connects to both clusters; an error says which one failed.
async fn connect(
    flow: &FlowConfig,
    source: &ClusterAccess,
    target: &ClusterAccess,
) -> Result<(Arc<Cluster>, Arc<Cluster>), (Side, ClientError)> {
    let source = Cluster::connect(&flow.source, &source.bootstrap, source.client.clone())
        .await
        .map_err(|e| (Side::Source, e))?;
    let target = Cluster::connect(&flow.target, &target.bootstrap, target.client.clone())
        .await
        .map_err(|e| (Side::Target, e))?;
    Ok((source, target))
}
