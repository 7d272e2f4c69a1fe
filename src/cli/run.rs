//! `kferry run`: runs every configured flow until SIGINT or SIGTERM.
//!
//! Each flow is its own task with its own cluster connections ([`crate::flow`]), so an
//! unreachable cluster stalls only the flows that use it; they keep retrying. With a
//! `group`, this process is a member of it and replicates the shards the group gives it.
//! On a signal the replicators finish the round in progress, so a transaction is committed
//! or never started, and `run` exits 0. It exits 1 once every flow has stopped on an error
//! it cannot recover from.
//! With `metrics.listen` set, an HTTP listener serves `/metrics`, `/healthz` and `/readyz`
//! from the registry every flow's loops write to (see [`crate::metrics`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Failure;
use crate::client::{ClientConfig, Cluster};
use crate::config::{Config, GroupConfig};
use crate::flow::{ClusterAccess, FlowEnd, CONNECT_RETRY};
use crate::membership::member::GroupMember;
use crate::membership::{Assignments, MemberChannels};
use crate::metrics::Registry;

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
        flows.spawn(crate::flow::run(flow.clone(), source, target, stopped.clone(), metrics, assignments.clone()));
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
