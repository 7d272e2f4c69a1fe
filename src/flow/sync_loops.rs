//! A flow's two loops beside replication, each on its own interval: topic sync (the
//! group's leader changes the target, every process learns what to copy) and group offset
//! sync (the leader alone commits; it only reads what the replicators committed, so it
//! never slows the hot path).

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::FlowConfig;
use crate::groups::sync::GroupSync;
use crate::membership::Assignments;
use crate::metrics::{inc, FlowMetrics, Probe, Side};
use crate::replicate::engine::TopicPlan;
use crate::topics::plan::{Change, Notice};
use crate::topics::sync::{SyncError, TopicSync};

pub(super) async fn topics(
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

pub(super) async fn groups(
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
