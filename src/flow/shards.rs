//! The replicators of a flow's shards this process owns, started and stopped as the
//! group's assignment changes.

use std::sync::Arc;

use tokio::sync::watch;

use crate::client::Cluster;
use crate::config::FlowConfig;
use crate::membership::{Assignments, Unit};
use crate::metrics::FlowMetrics;
use crate::replicate::engine::{ReplicateError, Replicator, TopicPlan, Totals};
use crate::replicate::shard::Shard;

/// Runs a replicator for each shard of the flow this process owns (every shard for a
/// process alone), starting and stopping them as the group's assignment changes, until
/// `stopped`. A shard that stops for good stops the others: a flow replicates whole or not
/// at all. A shard another process fenced is theirs now when processes share the flow:
/// it is dropped and the group asked to rebalance. Returns the shards' totals summed, or
/// the first fatal error.
pub(super) async fn replicate(
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
