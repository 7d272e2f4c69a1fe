//! `kferry check`: connects to every configured cluster, prints what it found (id,
//! brokers, Kafka release range) and, per flow, which source topics would be replicated
//! under which target names. It changes nothing on any cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Failure;
use crate::client::{ClientConfig, ClientError, Cluster, RetryPolicy};
use crate::config::{Config, FlowConfig};
use crate::topics::{target_topic_name, TopicFilter};

pub(super) async fn check(config: &Config) -> Result<(), Failure> {
    let clusters = connect_all(config, check_client_config()).await?;
    let mut healthy = true;
    for (name, cluster) in &clusters {
        match cluster {
            Ok(cluster) => healthy &= print_cluster(cluster).await,
            Err(e) => {
                healthy = false;
                println!("cluster {name}: UNREACHABLE");
                eprintln!("error: {e}");
            }
        }
    }
    for flow in &config.flows {
        healthy &= print_flow(flow, &clusters).await;
    }
    close_all(&clusters, healthy)
}

/// Closes every connection; the command's outcome from whether all went well.
pub(super) fn close_all(
    clusters: &BTreeMap<String, Result<Arc<Cluster>, ClientError>>,
    healthy: bool,
) -> Result<(), Failure> {
    for cluster in clusters.values().flatten() {
        cluster.close();
    }
    if healthy {
        Ok(())
    } else {
        Err(Failure::Cluster)
    }
}

/// `check` should answer in seconds, not wait through a long retry schedule.
pub(super) fn check_client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.connection.connect_timeout = Duration::from_secs(5);
    config.connection.request_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
    config
}

/// Connects to every configured cluster, concurrently; fails only when a cluster's
/// security settings cannot be used at all (an unreadable certificate file).
pub(super) async fn connect_all(
    config: &Config,
    client: ClientConfig,
) -> Result<BTreeMap<String, Result<Arc<Cluster>, ClientError>>, Failure> {
    let mut pending = tokio::task::JoinSet::new();
    for (name, access) in super::cluster_access(config, &client)? {
        pending.spawn(async move {
            let cluster = Cluster::connect(&name, &access.bootstrap, access.client).await;
            (name, cluster)
        });
    }
    let mut clusters = BTreeMap::new();
    while let Some(joined) = pending.join_next().await {
        // A connect task only panics on a bug; surface it rather than hide a cluster.
        let (name, cluster) = joined.expect("cluster connect task panicked");
        clusters.insert(name, cluster);
    }
    Ok(clusters)
}

async fn print_cluster(cluster: &Cluster) -> bool {
    let description = match cluster.describe_cluster().await {
        Ok(description) => description,
        Err(e) => {
            println!("cluster {}: ERROR", cluster.name());
            eprintln!("error: {e}");
            return false;
        }
    };
    println!("cluster {}: id {}, {} broker(s)", cluster.name(), description.cluster_id, description.brokers.len());
    println!("  security: {}", cluster.config().connection.security.describe());
    let mut healthy = true;
    for broker in &description.brokers {
        let controller = if description.controller_id == Some(broker.node_id) { ", controller" } else { "" };
        match cluster.broker(broker.node_id).await {
            Ok(messenger) => println!(
                "  broker {} at {}{}: Kafka {}",
                broker.node_id,
                broker.address(),
                controller,
                messenger.versions().kafka_releases()
            ),
            Err(e) => {
                healthy = false;
                println!("  broker {} at {}{}: UNREACHABLE", broker.node_id, broker.address(), controller);
                eprintln!("error: {e}");
            }
        }
    }
    healthy
}

async fn print_flow(flow: &FlowConfig, clusters: &BTreeMap<String, Result<Arc<Cluster>, ClientError>>) -> bool {
    println!("flow {} ({:?} names)", flow.name(), flow.policy);
    let Some(Ok(source)) = clusters.get(&flow.source) else {
        println!("  not checked: source cluster {} is unreachable", flow.source);
        return false;
    };
    let filter = match TopicFilter::new(flow) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    let metadata = match source.all_topics().await {
        Ok(metadata) => metadata,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    let mut selected = 0;
    for (topic, info) in &metadata.topics {
        if !filter.selects(topic) {
            continue;
        }
        match target_topic_name(flow.policy, &flow.source, &flow.target, &flow.separator, topic) {
            Some(target) => {
                selected += 1;
                println!("  {topic} -> {target} ({} partitions)", info.partitions.len());
            }
            None => println!("  {topic}: not sent back to {} (it came from there)", flow.target),
        }
    }
    println!("  {selected} of {} source topics selected", metadata.topics.len());
    true
}
