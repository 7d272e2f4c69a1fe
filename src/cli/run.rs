//! `kferry run`: runs every configured flow until SIGINT or SIGTERM.
//!
//! Each flow is its own task with its own cluster connections, so an unreachable cluster
//! stalls only the flows that use it; they keep retrying. A flow runs two loops: topic sync
//! (creates and updates target topics on its interval, and tells the replicator which
//! topics to copy) and the replicator (records). On a signal the replicator finishes the
//! cycle in progress, so a transaction is committed or never started, and `run` exits 0.
//! It exits 1 once every flow has stopped on an error it cannot recover from.
//! A third loop, on its own interval, syncs consumer-group offsets (`groups`): it only reads
//! the state the replicator commits, so it never slows the hot path.
//! With `metrics.listen` set, an HTTP listener serves `/metrics`, `/healthz` and `/readyz`
//! from the registry every flow's loops write to (see [`crate::metrics`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{ClusterAccess, Failure};
use crate::client::{ClientConfig, ClientError, Cluster};
use crate::config::{Config, FlowConfig, GroupConfig};
use crate::groups::sync::GroupSync;
use crate::membership::member::GroupMember;
use crate::membership::{Assignments, MemberChannels, Unit};
use crate::metrics::{inc, FlowMetrics, FlowState, Probe, Registry, Side};
use crate::replicate::engine::{ReplicateError, Replicator, TopicPlan, Totals};
use crate::replicate::shard::Shard;
use crate::topics::plan::{Change, Notice};
use crate::topics::sync::SyncError;
use crate::topics::sync::TopicSync;

/// Pause between attempts to reach a flow's clusters.
const CONNECT_RETRY: Duration = Duration::from_secs(5);
/// How long a stopping process lets its flows finish their cycles (below the 5 s within
/// which a service manager's SIGTERM must end it).
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

pub(super) async fn run(config: &Config) -> Result<(), Failure> {
    let access = super::cluster_access(config, &ClientConfig::default())?;
    let (stop, stopped) = watch::channel(false);
    let registry = Registry::new(config.metrics.per_partition);
    let mut listener = None;
    if let Some(address) = &config.metrics.listen {
        match crate::metrics::http::bind(address).await {
            Ok(bound) => {
                tracing::info!(address = %address, "serving /metrics, /healthz and /readyz");
                listener =
                    Some(tokio::spawn(crate::metrics::http::serve(bound, Arc::clone(&registry), stopped.clone())));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Err(Failure::Config);
            }
        }
    }
    let mut flows = tokio::task::JoinSet::new();
    let (assignments, membership) = match &config.group {
        None => (Assignments::alone(crate::membership::units(config)), None),
        Some(group) => {
            let (assignments, channels) = Assignments::grouped();
            let cluster = access[&group.cluster].clone();
            let metrics = registry.membership(&group.id);
            let member = run_member(config.clone(), group.clone(), cluster, channels, metrics, stopped.clone());
            (assignments, Some(tokio::spawn(member)))
        }
    };
    for flow in &config.flows {
        let source = access[&flow.source].clone();
        let target = access[&flow.target].clone();
        let metrics = registry.flow(&flow.name(), &flow.source, &flow.target, flow.buffer_bytes);
        flows.spawn(run_flow_with(flow.clone(), source, target, stopped.clone(), metrics, assignments.clone()));
    }
    tracing::info!(flows = config.flows.len(), "running");
    let mut failed = false;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            joined = flows.join_next() => match joined {
                Some(Ok(FlowEnd::Stopped)) => {}
                Some(Ok(FlowEnd::Failed)) => failed = true,
                Some(Ok(FlowEnd::TakenAway(taken))) => {
                    tracing::error!("{taken}");
                    failed = true;
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "a flow task panicked");
                    failed = true;
                }
                None => {
                    tracing::error!("every flow has stopped");
                    stop.send_replace(true);
                    if let Some(membership) = membership {
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, membership).await;
                    }
                    if let Some(listener) = listener {
                        let _ = listener.await;
                    }
                    return if failed { Err(Failure::Cluster) } else { Ok(()) };
                }
            },
        }
    }
    tracing::info!("stopping: finishing the cycles in progress");
    stop.send_replace(true);
    // SIGTERM must end the process within 5 s whatever a flow is doing (connecting,
    // retrying, a long request): a flow not done by then is dropped. An open transaction
    // it leaves is aborted by the next InitProducerId or the transaction timeout.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = flows.join_next().await {
            failed |= !matches!(joined, Ok(FlowEnd::Stopped));
        }
        // It leaves the group once the flows have stopped their shards.
        if let Some(membership) = membership {
            let _ = membership.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("flows still busy after {SHUTDOWN_GRACE:?}: stopped without finishing their cycles");
        flows.abort_all();
    }
    if failed {
        Err(Failure::Cluster)
    } else {
        Ok(())
    }
}

pub(super) async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// How a flow's loops ended.
pub(super) enum FlowEnd {
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
pub(super) async fn run_flow(
    flow: FlowConfig,
    source: ClusterAccess,
    target: ClusterAccess,
    stopped: watch::Receiver<bool>,
) -> FlowEnd {
    let metrics = FlowMetrics::detached(&flow.name(), &flow.source, &flow.target, flow.buffer_bytes);
    let assignments = Assignments::alone(crate::membership::units_of_flow(&flow));
    run_flow_with(flow, source, target, stopped, metrics, assignments).await
}

/// Keeps this process in its group (connecting first, retrying) until `stopped`.
async fn run_member(
    config: Config,
    group: GroupConfig,
    cluster: ClusterAccess,
    channels: MemberChannels,
    metrics: Arc<crate::metrics::MembershipMetrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let cluster = loop {
        match Cluster::connect(&group.cluster, &cluster.bootstrap, cluster.client.clone()).await {
            Ok(cluster) => break cluster,
            Err(e) => {
                tracing::error!(group = %group.id, error = %e, "cannot reach the group's cluster; retrying in {CONNECT_RETRY:?}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CONNECT_RETRY) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    };
    let layout = crate::membership::wire::layout(&config);
    let member = GroupMember::new(cluster, &group, layout, crate::membership::units(&config), channels, metrics);
    member.run(stopped).await;
}

/// As [`run_flow`], booking the flow's metrics into `metrics`.
async fn run_flow_with(
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
        Err(e) => {
            metrics.set_state(FlowState::Stopped, Some(format!("flow cannot start: {e}")));
            tracing::error!(flow = %flow.name(), error = %e, "flow cannot start");
            return FlowEnd::Failed;
        }
    };
    let groups = match GroupSync::new(&flow, Arc::clone(&source), Arc::clone(&target)) {
        Ok(groups) => groups,
        Err(e) => {
            metrics.set_state(FlowState::Stopped, Some(format!("flow cannot start: {e}")));
            tracing::error!(flow = %flow.name(), error = %e, "flow cannot start");
            return FlowEnd::Failed;
        }
    };
    let (topics, replicated) = watch::channel(None);
    let (flow_stop, flow_stopped) = watch::channel(false);
    let mut flow_stopped_for_sync = flow_stopped.clone();
    let mut flow_stopped_for_groups = flow_stopped.clone();
    let target_for_guard = Arc::clone(&target);
    let shards =
        replicate_shards(&flow, source, target, replicated, Arc::clone(&metrics), stopped.clone(), assignments.clone());
    let replication = async {
        let outcome = shards.await;
        // A replicator that stopped for good takes topic sync down with it.
        flow_stop.send_replace(true);
        outcome
    };
    let syncing =
        topic_sync_loop(&flow, &metrics, sync, topics, &assignments, stopped.clone(), &mut flow_stopped_for_sync);
    let group_syncing =
        group_sync_loop(&flow, &metrics, groups, &assignments, stopped.clone(), &mut flow_stopped_for_groups);
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

/// Runs a replicator for each shard of the flow this process owns (every shard for a
/// process alone), starting and stopping them as the group's assignment changes, until
/// `stopped`. A shard that stops for good stops the others: a flow replicates whole or not
/// at all. A shard another process fenced is theirs now when processes share the flow:
/// it is dropped and the group asked to rebalance. Returns the shards' totals summed, or
/// the first fatal error.
async fn replicate_shards(
    flow: &FlowConfig,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    topics: watch::Receiver<Option<TopicPlan>>,
    metrics: Arc<FlowMetrics>,
    mut stopped: watch::Receiver<bool>,
    assignments: Assignments,
) -> Result<Totals, ReplicateError> {
    let name = flow.name();
    let mut ownership = assignments.ownership();
    let mut running = tokio::task::JoinSet::new();
    let mut shards: std::collections::BTreeMap<u16, (tokio::task::Id, watch::Sender<bool>)> = Default::default();
    let mut totals = Totals::default();
    let mut failure = None;
    let mut stopping = false;
    let mut wanted = ownership.borrow_and_update().shards_of(&name);
    loop {
        if !stopping {
            for (index, (_, stop)) in &shards {
                if !wanted.contains(index) {
                    stop.send_replace(true);
                }
            }
            let missing: Vec<u16> = wanted.iter().filter(|index| !shards.contains_key(index)).copied().collect();
            for index in missing {
                let shard = Shard { index, count: flow.shards.max(1) };
                let (stop, shard_stopped) = watch::channel(false);
                let replicator = Replicator::new(flow, Arc::clone(&source), Arc::clone(&target), topics.clone())
                    .with_metrics(Arc::clone(&metrics))
                    .with_shard(shard);
                assignments.started(Unit { flow: name.clone(), shard: index });
                let id = running.spawn(replicator.run(shard_stopped)).id();
                shards.insert(index, (id, stop));
            }
        } else {
            for (_, stop) in shards.values() {
                stop.send_replace(true);
            }
        }
        if stopping && shards.is_empty() {
            break;
        }
        tokio::select! {
            changed = ownership.changed(), if !stopping => match changed {
                Ok(()) => wanted = ownership.borrow_and_update().shards_of(&name),
                Err(_) => stopping = true,
            },
            joined = running.join_next_with_id(), if !shards.is_empty() => {
                let Some(joined) = joined else { continue };
                let id = match &joined {
                    Ok((id, _)) => *id,
                    Err(lost) => lost.id(),
                };
                let Some(index) = shards.iter().find(|(_, (task, _))| *task == id).map(|(index, _)| *index) else {
                    continue;
                };
                shards.remove(&index);
                let unit = Unit { flow: name.clone(), shard: index };
                assignments.stopped(&unit);
                match joined {
                    Ok((_, Ok(shard_totals))) => totals.add(shard_totals),
                    Ok((_, Err(error @ ReplicateError::Fenced { .. }))) if assignments.is_grouped() => {
                        // Started again if the next generation still gives it to this process.
                        tracing::warn!(flow = %name, shard = index, "{error}: another member of the group has it now; asking for a rebalance");
                        wanted.remove(&index);
                        assignments.request_rejoin();
                    }
                    Ok((_, Err(error))) => {
                        failure.get_or_insert(error);
                        stopping = true;
                    }
                    Err(lost) => {
                        let shard = Shard { index, count: flow.shards.max(1) }.to_string();
                        failure.get_or_insert(ReplicateError::ShardLost { flow: name.clone(), shard, reason: lost.to_string() });
                        stopping = true;
                    }
                }
            }
            _ = stopped.wait_for(|stop| *stop), if !stopping => stopping = true,
        }
    }
    failure.map_or(Ok(totals), Err)
}

async fn topic_sync_loop(
    flow: &FlowConfig,
    metrics: &FlowMetrics,
    mut sync: TopicSync,
    topics: watch::Sender<Option<TopicPlan>>,
    assignments: &Assignments,
    mut stopped: watch::Receiver<bool>,
    flow_stopped: &mut watch::Receiver<bool>,
) {
    let interval = Duration::from_secs(flow.refresh_topics_interval_seconds);
    loop {
        // Only the group's leader changes the target; the others only read what to copy.
        let round = if assignments.is_leader() { sync.round().await } else { sync.observe().await };
        match round {
            Ok((plan, applied)) => {
                metrics.set_unreachable(Side::Source, Probe::TopicSync, None);
                metrics.set_unreachable(Side::Target, Probe::TopicSync, None);
                count_topic_sync(metrics, &plan, &applied);
                let failed = applied.iter().filter(|a| a.outcome.is_err()).count();
                tracing::debug!(flow = %flow.name(), changes = applied.len(), failed, topics = plan.replicated.len(), "topic sync round done");
                let replicated = crate::topics::sync::replicated_after(&plan, &applied);
                topics.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&replicated);
                    *current = Some(replicated);
                    changed
                });
            }
            Err(e) => {
                inc(&metrics.topics.errors, 1);
                // An idle flow notices a cluster gone here, within its refresh interval.
                let (side, error) = match &e {
                    SyncError::Source { source, .. } => (Side::Source, source),
                    SyncError::Target { source, .. } => (Side::Target, source),
                };
                metrics.error(side, &error.metric_code());
                metrics.set_unreachable(side, Probe::TopicSync, Some(error.to_string()));
                tracing::error!(flow = %flow.name(), error = %e, "topic sync round failed; next try in {interval:?}")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = flow_stopped.wait_for(|stop| *stop) => return,
        }
    }
}

async fn group_sync_loop(
    flow: &FlowConfig,
    metrics: &FlowMetrics,
    mut groups: GroupSync,
    assignments: &Assignments,
    mut stopped: watch::Receiver<bool>,
    flow_stopped: &mut watch::Receiver<bool>,
) {
    if !flow.sync_group_offsets {
        return;
    }
    let interval = Duration::from_secs(flow.sync_group_offsets_interval_seconds);
    loop {
        // The group's leader alone commits group offsets, so processes never race on them.
        if assignments.is_leader() {
            sync_groups_once(flow, metrics, &mut groups, interval).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = flow_stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// One group-offset sync round, booked in the flow's metrics.
async fn sync_groups_once(flow: &FlowConfig, metrics: &FlowMetrics, groups: &mut GroupSync, interval: Duration) {
    match groups.round().await {
        Ok(report) => {
            let counters = &metrics.groups;
            inc(&counters.rounds, 1);
            inc(&counters.groups_synced, report.groups as u64);
            inc(&counters.offsets_committed, report.committed as u64);
            inc(&counters.groups_skipped, report.active.len() as u64);
            inc(&counters.checkpoints, report.checkpoints as u64);
            counters.last_success_unix_millis.store(crate::recovery::marker::now_ms().max(0) as u64, Ordering::Relaxed);
            tracing::debug!(flow = %flow.name(), groups = report.groups, committed = report.committed, active = report.active.len(), "group offset sync round done")
        }
        Err(e) => {
            inc(&metrics.groups.errors, 1);
            tracing::warn!(flow = %flow.name(), error = %e, "group offset sync round failed; next try in {interval:?}")
        }
    }
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

/// Books a topic sync round: the changes applied (or refused) and the conflicts reported.
fn count_topic_sync(metrics: &FlowMetrics, plan: &crate::topics::plan::Plan, applied: &[crate::topics::sync::Applied]) {
    let counters = &metrics.topics;
    inc(&counters.rounds, 1);
    for change in applied {
        if change.outcome.is_err() {
            inc(&counters.changes_failed, 1);
            continue;
        }
        let counter = match change.change {
            Change::CreateTopic { .. } => &counters.topics_created,
            Change::AddPartitions { .. } => &counters.partitions_added,
            Change::AlterConfigs { .. } => &counters.configs_changed,
            Change::CreateAcl { .. } => &counters.acls_created,
        };
        inc(counter, 1);
    }
    let conflicts = plan.notices.iter().filter(|n| matches!(n, Notice::Conflict { .. })).count();
    counters.conflicts.store(conflicts as u64, std::sync::atomic::Ordering::Relaxed);
}
