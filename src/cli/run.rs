//! `kferry run`: runs every configured flow until SIGINT or SIGTERM.
//!
//! Each flow is its own task with its own cluster connections, so an unreachable cluster
//! stalls only the flows that use it; they keep retrying on their interval. Today a flow
//! keeps the target's topics in sync with the source (discovery, creation, partitions,
//! configs, ACLs); moving records is the hot path, not built yet.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Failure;
use crate::client::{ClientConfig, Cluster};
use crate::config::{Config, FlowConfig};
use crate::topics::sync::TopicSync;

pub(super) async fn run(config: &Config) -> Result<(), Failure> {
    let (stop, stopped) = watch::channel(false);
    let mut flows = tokio::task::JoinSet::new();
    for flow in &config.flows {
        let source = config.clusters[&flow.source].bootstrap_servers.clone();
        let target = config.clusters[&flow.target].bootstrap_servers.clone();
        flows.spawn(run_flow(flow.clone(), source, target, stopped.clone()));
    }
    tracing::info!(flows = config.flows.len(), "running; records are not replicated yet by this build, topics are");
    wait_for_signal().await;
    tracing::info!("stopping");
    stop.send_replace(true);
    while flows.join_next().await.is_some() {}
    Ok(())
}

async fn wait_for_signal() {
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

/// One flow's loop: connect (retrying), then a topic sync round every interval.
async fn run_flow(flow: FlowConfig, source: Vec<String>, target: Vec<String>, mut stopped: watch::Receiver<bool>) {
    let interval = Duration::from_secs(flow.refresh_topics_interval_seconds);
    let mut sync: Option<TopicSync> = None;
    loop {
        if sync.is_none() {
            sync = connect(&flow, &source, &target).await;
        }
        if let Some(sync) = sync.as_mut() {
            match sync.round().await {
                Ok((plan, applied)) => {
                    let failed = applied.iter().filter(|a| a.outcome.is_err()).count();
                    tracing::debug!(flow = %flow.name(), changes = applied.len(), failed, topics = plan.replicated.len(), "topic sync round done");
                }
                Err(e) => {
                    tracing::error!(flow = %flow.name(), error = %e, "topic sync round failed; next try in {interval:?}")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

async fn connect(flow: &FlowConfig, source: &[String], target: &[String]) -> Option<TopicSync> {
    let clusters = async {
        let source = Cluster::connect(&flow.source, source, ClientConfig::default()).await?;
        let target = Cluster::connect(&flow.target, target, ClientConfig::default()).await?;
        Ok::<(Arc<Cluster>, Arc<Cluster>), crate::client::ClientError>((source, target))
    };
    match clusters.await {
        Ok((source, target)) => match TopicSync::new(flow, source, target) {
            Ok(sync) => Some(sync),
            Err(e) => {
                tracing::error!(flow = %flow.name(), error = %e, "flow cannot start");
                None
            }
        },
        Err(e) => {
            tracing::error!(flow = %flow.name(), error = %e, "cluster unreachable; retrying");
            None
        }
    }
}
