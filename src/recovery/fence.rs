//! Keeps a running flow from outliving its failover. `kferry run` and the reverse flow of
//! `kferry failback` run each flow inside [`guard`]: a flow whose failover record says it
//! is failed over (or being failed over) does not start at all, so it does no topic-sync
//! or group-sync round against a target that now belongs to other producers; and a flow
//! that is running stops within [`WATCH_INTERVAL`] of a failover (or `failback
//! --complete`) marking it, also when it is idle and would otherwise notice the fence only
//! at its next transactional request.
//!
//! The replicator checks the record itself right after every InitProducerId (see
//! `replicate::engine`); this watcher covers the loops around it and the idle case.

use std::future::Future;
use std::time::Duration;

use super::marker::{self, FlowState, MarkerError, FAILOVER_TOPIC};
use crate::client::Cluster;
use crate::config::FlowConfig;

/// How often a running flow reads its failover record.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Why a flow was stopped by its failover record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TakenAway {
    #[error(
        "flow {flow}: {what} ({reason}, recorded in {FAILOVER_TOPIC} on {target}); it stops so it cannot write to \
         {target} again. Run `kferry failback` to bring data back and resume it"
    )]
    FailedOver { flow: String, target: String, what: &'static str, reason: String },
    #[error("flow {flow}: cannot read its failover record: {reason}")]
    Unreadable { flow: String, reason: MarkerError },
}

/// Runs `work` (a flow's loops) while the flow's failover record on `target` lets it:
/// refuses to start it when the record says failed over or failing over, and drops it
/// (cancelling whatever it was doing: a fenced flow's open transaction is aborted by the
/// fence) as soon as the record changes to one of those.
pub async fn guard<T>(flow: &FlowConfig, target: &Cluster, work: impl Future<Output = T>) -> Result<T, TakenAway> {
    check(flow, target).await?;
    tokio::select! {
        done = work => Ok(done),
        taken = watch(flow, target) => Err(taken),
    }
}

/// Reads the record until it can be read: a target that does not answer cannot be written
/// to either, and the flow's own loops would only fail against it.
async fn check(flow: &FlowConfig, target: &Cluster) -> Result<(), TakenAway> {
    loop {
        match read(flow, target).await {
            Ok(()) => return Ok(()),
            Err(Some(taken)) => return Err(taken),
            Err(None) => tokio::time::sleep(WATCH_INTERVAL).await,
        }
    }
}

/// Resolves once the flow must stop.
async fn watch(flow: &FlowConfig, target: &Cluster) -> TakenAway {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if let Err(Some(taken)) = read(flow, target).await {
            return taken;
        }
    }
}

/// `Ok` when the flow may run; `Err(None)` when the record could not be read now (retried).
async fn read(flow: &FlowConfig, target: &Cluster) -> Result<(), Option<TakenAway>> {
    let record = match marker::read(target, &flow.name()).await {
        Ok(record) => record,
        Err(MarkerError::Client(error)) => {
            tracing::debug!(flow = %flow.name(), %error, "failover record not readable now; retried");
            return Err(None);
        }
        Err(reason) => return Err(Some(TakenAway::Unreadable { flow: flow.name(), reason })),
    };
    let Some(record) = record else { return Ok(()) };
    let what = match record.state {
        FlowState::Active => return Ok(()),
        FlowState::FailingOver => "being failed over",
        FlowState::FailedOver => "failed over",
    };
    Err(Some(TakenAway::FailedOver { flow: flow.name(), target: flow.target.clone(), what, reason: record.reason }))
}
