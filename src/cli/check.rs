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

pub(super) async fn check(config: &Config, json: bool) -> Result<(), Failure> {
    let clusters = connect_all(config, check_client_config()).await?;
    let mut report = Report { healthy: true, clusters: Vec::new(), flows: Vec::new() };
    for (name, cluster) in &clusters {
        let checked = match cluster {
            Ok(cluster) => check_cluster(cluster).await,
            Err(e) => ClusterReport::failed(name, "UNREACHABLE", e.to_string()),
        };
        report.healthy &= checked.error.is_none() && checked.brokers.iter().all(|b| b.error.is_none());
        report.clusters.push(checked);
    }
    for flow in &config.flows {
        let checked = check_flow(flow, &clusters).await;
        report.healthy &= checked.error.is_none();
        report.flows.push(checked);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        report.print_text();
    }
    close_all(&clusters, report.healthy)
}

/// What `check` found; printed as text or, with `--json`, as one JSON document.
#[derive(Debug, serde::Serialize)]
struct Report {
    healthy: bool,
    clusters: Vec<ClusterReport>,
    flows: Vec<FlowReport>,
}

#[derive(Debug, serde::Serialize)]
struct ClusterReport {
    name: String,
    /// `ok`, `UNREACHABLE` or `ERROR`.
    status: &'static str,
    id: Option<String>,
    security: Option<String>,
    brokers: Vec<BrokerReport>,
    error: Option<String>,
}

impl ClusterReport {
    fn failed(name: &str, status: &'static str, error: String) -> Self {
        Self { name: name.to_owned(), status, id: None, security: None, brokers: Vec::new(), error: Some(error) }
    }
}

#[derive(Debug, serde::Serialize)]
struct BrokerReport {
    node_id: i32,
    address: String,
    controller: bool,
    /// The Kafka release range its API versions show, like `Kafka >= 4.1`.
    kafka: Option<String>,
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct FlowReport {
    name: String,
    policy: String,
    /// The target cluster's alias.
    target: String,
    topics: Vec<TopicReport>,
    source_topics: usize,
    /// Why the flow could not be checked.
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct TopicReport {
    source: String,
    /// `None`: not sent back to the target it came from.
    target: Option<String>,
    partitions: usize,
}

impl Report {
    fn print_text(&self) {
        for cluster in &self.clusters {
            match &cluster.id {
                Some(id) => {
                    println!("cluster {}: id {id}, {} broker(s)", cluster.name, cluster.brokers.len());
                    println!("  security: {}", cluster.security.as_deref().unwrap_or_default());
                }
                None => println!("cluster {}: {}", cluster.name, cluster.status),
            }
            if let Some(e) = &cluster.error {
                eprintln!("error: {e}");
            }
            for broker in &cluster.brokers {
                let controller = if broker.controller { ", controller" } else { "" };
                match &broker.kafka {
                    Some(kafka) => println!("  broker {} at {}{controller}: {kafka}", broker.node_id, broker.address),
                    None => println!("  broker {} at {}{controller}: UNREACHABLE", broker.node_id, broker.address),
                }
                if let Some(e) = &broker.error {
                    eprintln!("error: {e}");
                }
            }
        }
        for flow in &self.flows {
            flow.print_text();
        }
    }
}

impl FlowReport {
    fn print_text(&self) {
        println!("flow {} ({} names)", self.name, self.policy);
        if let Some(e) = &self.error {
            match e.strip_prefix(UNREACHABLE_SOURCE) {
                Some(source) => println!("  not checked: source cluster {source} is unreachable"),
                None => eprintln!("error: {e}"),
            }
            return;
        }
        let mut selected = 0;
        for topic in &self.topics {
            match &topic.target {
                Some(target) => {
                    selected += 1;
                    println!("  {} -> {target} ({} partitions)", topic.source, topic.partitions);
                }
                None => println!("  {}: not sent back to {} (it came from there)", topic.source, self.target),
            }
        }
        println!("  {selected} of {} source topics selected", self.source_topics);
    }
}

/// How a flow's error starts when its source cluster is unreachable (the alias follows).
const UNREACHABLE_SOURCE: &str = "unreachable source cluster ";

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

/// `failover` and `failback` find out as quickly as `check` whether a cluster answers at all
/// (a lost source is the reason to fail over), but once connected they ride out what a
/// cluster in trouble answers for a while (a coordinator moving or still loading after a
/// broker restart: COORDINATOR_NOT_AVAILABLE for seconds) with the full retry policy,
/// instead of giving up a failover after three attempts in a third of a second.
pub(super) fn dr_client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.connection.connect_timeout = Duration::from_secs(5);
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

async fn check_cluster(cluster: &Cluster) -> ClusterReport {
    let description = match cluster.describe_cluster().await {
        Ok(description) => description,
        Err(e) => return ClusterReport::failed(cluster.name(), "ERROR", e.to_string()),
    };
    let mut brokers = Vec::new();
    for broker in &description.brokers {
        let (kafka, error) = match cluster.broker(broker.node_id).await {
            Ok(messenger) => (Some(format!("Kafka {}", messenger.versions().kafka_releases())), None),
            Err(e) => (None, Some(e.to_string())),
        };
        brokers.push(BrokerReport {
            node_id: broker.node_id,
            address: broker.address(),
            controller: description.controller_id == Some(broker.node_id),
            kafka,
            error,
        });
    }
    ClusterReport {
        name: cluster.name().to_string(),
        status: "ok",
        id: Some(description.cluster_id.to_string()),
        security: Some(cluster.config().connection.security.describe()),
        brokers,
        error: None,
    }
}

async fn check_flow(flow: &FlowConfig, clusters: &BTreeMap<String, Result<Arc<Cluster>, ClientError>>) -> FlowReport {
    let mut report = FlowReport {
        name: flow.name(),
        policy: flow.policy.to_string(),
        target: flow.target.clone(),
        topics: Vec::new(),
        source_topics: 0,
        error: None,
    };
    let Some(Ok(source)) = clusters.get(&flow.source) else {
        report.error = Some(format!("{UNREACHABLE_SOURCE}{}", flow.source));
        return report;
    };
    let filter = match TopicFilter::new(flow) {
        Ok(filter) => filter,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let metadata = match source.all_topics().await {
        Ok(metadata) => metadata,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.source_topics = metadata.topics.len();
    for (topic, info) in &metadata.topics {
        if filter.selects(topic) {
            report.topics.push(TopicReport {
                source: topic.clone(),
                target: target_topic_name(flow.policy, &flow.source, &flow.target, &flow.separator, topic),
                partitions: info.partitions.len(),
            });
        }
    }
    report
}
