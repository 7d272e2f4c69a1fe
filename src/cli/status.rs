//! `kferry status`: per flow and partition, the state, replicated offset, source end and
//! lag in records and seconds, from the clusters themselves (so it works with no kferry
//! running), plus what a running kferry knows (a partition stalled and why, a cluster it
//! cannot reach) from its `/readyz` when the config has `metrics.listen`, and, with a
//! `group`, the group's members with the shards each replicates (DescribeGroups). Changes
//! nothing.
//!
//! Exit 0 when every flow could be read and, where a kferry answers, it is ready; 1 when
//! a cluster or flow could not be read, or the running kferry reports a problem.

use serde::{Deserialize, Serialize};

use super::check::{close_all, connect_all};
use super::Failure;
use crate::config::Config;
use crate::membership::wire::MemberAssignment;
use crate::membership::Unit;
use crate::metrics::http::probe;
use crate::recovery::status::{flow_status, FlowStatus, FlowSummary, PartitionStatus};
use crate::replicate::shard::Shard;

/// The whole answer of `--json`.
#[derive(Debug, Serialize)]
struct Status {
    /// The running kferry as its `/readyz` answered, if the config has `metrics.listen`.
    kferry: Process,
    /// The group the processes share, with what each owns (the config's `group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupReport>,
    flows: Vec<FlowReport>,
}

/// The group of kferry processes as its coordinator describes it.
#[derive(Debug, Serialize)]
struct GroupReport {
    id: String,
    cluster: String,
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`.
    state: String,
    members: Vec<MemberReport>,
    /// Shards no member owns right now (moving, or the group is rebalancing).
    unowned: Vec<Unit>,
}

#[derive(Debug, Serialize)]
struct MemberReport {
    /// The instance id of a static member, else the member id.
    name: String,
    member_id: String,
    host: String,
    leader: bool,
    shards: Vec<Unit>,
}

#[derive(Debug, Serialize)]
struct Process {
    /// The `metrics.listen` asked; `None` when the config has none.
    metrics_listen: Option<String>,
    /// Whether a kferry answered there.
    running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct FlowReport {
    #[serde(flatten)]
    summary: FlowSummary,
    /// The flow in the running kferry: its state and what it cannot reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<LiveFlow>,
    partitions: Vec<PartitionReport>,
}

#[derive(Debug, Serialize)]
struct PartitionReport {
    #[serde(flatten)]
    status: PartitionStatus,
    /// The group member that replicates it (`group` configs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// In the running kferry: `replicating`, `waiting_for_leader` or `stalled`; `None` when
    /// no kferry answered.
    state: Option<String>,
    /// Why it is not replicating (`target_refused`, `target_unavailable`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The last error the running kferry saw for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `/readyz` as kferry serves it (`metrics::Readiness`).
#[derive(Debug, Deserialize)]
struct Readiness {
    flows: Vec<LiveFlow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LiveFlow {
    flow: String,
    state: String,
    ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(default)]
    unreachable_clusters: Vec<serde_json::Value>,
    #[serde(default, skip_serializing)]
    partitions: Vec<LivePartition>,
}

#[derive(Debug, Clone, Deserialize)]
struct LivePartition {
    topic: String,
    partition: i32,
    state: String,
    reason: String,
    #[serde(default)]
    error: Option<String>,
}

pub(super) async fn status(config: &Config, only: Option<&str>, json: bool) -> Result<(), Failure> {
    if let Some(name) = only {
        super::failover::find_flow(config, name)?;
    }
    let (process, live) = ask_running_kferry(config).await;
    let clusters = connect_all(config, super::check::check_client_config()).await?;
    let mut healthy = live.as_ref().is_none_or(|flows| flows.iter().all(|f| f.ready));
    let mut flows = Vec::new();
    for flow in config.flows.iter().filter(|f| only.is_none_or(|name| f.name() == name)) {
        let target = match &clusters[&flow.target] {
            Ok(target) => target,
            Err(e) => {
                eprintln!("error: flow {}: its target cluster {} is unreachable: {e}", flow.name(), flow.target);
                healthy = false;
                continue;
            }
        };
        let source = clusters[&flow.source].as_ref().ok();
        if let Err(e) = &clusters[&flow.source] {
            eprintln!(
                "warning: flow {}: source cluster {} unreachable ({e}): source ends as kferry last saw them",
                flow.name(),
                flow.source
            );
        }
        match flow_status(flow, source.map(|s| &**s), target).await {
            Ok(status) => {
                let running =
                    live.as_ref().and_then(|flows| flows.iter().find(|f| f.flow == status.summary.flow)).cloned();
                flows.push(report(status, running));
            }
            Err(e) => {
                eprintln!("error: {e}");
                healthy = false;
            }
        }
    }
    let group = match &config.group {
        Some(group) => match &clusters[&group.cluster] {
            Ok(cluster) => match describe_members(config, group, cluster).await {
                Ok(report) => Some(report),
                Err(e) => {
                    eprintln!("error: group {} on cluster {}: {e}", group.id, group.cluster);
                    healthy = false;
                    None
                }
            },
            Err(e) => {
                eprintln!("error: group {}: its cluster {} is unreachable: {e}", group.id, group.cluster);
                healthy = false;
                None
            }
        },
        None => None,
    };
    if let Some(group) = &group {
        name_owners(config, group, &mut flows);
    }
    let status = Status { kferry: process, group, flows };
    if json {
        println!("{}", serde_json::to_string_pretty(&status).unwrap_or_default());
    } else {
        print_text(&status);
    }
    close_all(&clusters, healthy)
}

/// The running kferry's `/readyz`, when the config names a metrics listener. A kferry not
/// answering is part of the status, not a failure of the command.
async fn ask_running_kferry(config: &Config) -> (Process, Option<Vec<LiveFlow>>) {
    let Some(listen) = config.metrics.listen.clone() else {
        return (Process { metrics_listen: None, running: false, error: None }, None);
    };
    let answer = probe(&listen, "/readyz").await.map_err(|e| e.to_string()).and_then(|(_, body)| {
        serde_json::from_str::<Readiness>(&body).map_err(|e| format!("/readyz is not kferry's: {e}"))
    });
    match answer {
        Ok(readiness) => (Process { metrics_listen: Some(listen), running: true, error: None }, Some(readiness.flows)),
        Err(error) => (Process { metrics_listen: Some(listen), running: false, error: Some(error) }, None),
    }
}

fn report(status: FlowStatus, running: Option<LiveFlow>) -> FlowReport {
    let partitions = status
        .partitions
        .into_iter()
        .map(|partition| {
            let Some(flow) = &running else {
                return PartitionReport { status: partition, owner: None, state: None, reason: None, error: None };
            };
            match flow.partitions.iter().find(|p| p.topic == partition.topic && p.partition == partition.partition) {
                Some(live) => PartitionReport {
                    status: partition,
                    owner: None,
                    state: Some(live.state.clone()),
                    reason: Some(live.reason.clone()),
                    error: live.error.clone(),
                },
                None => {
                    let replicating = Some("replicating".into());
                    PartitionReport { status: partition, owner: None, state: replicating, reason: None, error: None }
                }
            }
        })
        .collect();
    FlowReport { summary: status.summary, running, partitions }
}

/// The group's members and the shards each was assigned, from DescribeGroups.
async fn describe_members(
    config: &Config,
    group: &crate::config::GroupConfig,
    cluster: &crate::client::Cluster,
) -> Result<GroupReport, crate::client::ClientError> {
    let described = cluster.describe_group(&group.id).await?;
    let kferry = crate::membership::wire::PROTOCOL_TYPE;
    if !described.protocol_type.is_empty() && described.protocol_type != kferry {
        eprintln!(
            "warning: group {} on cluster {} is a {:?} group, not kferry's: choose another group.id for kferry",
            group.id, group.cluster, described.protocol_type
        );
    }
    let mut owned = std::collections::BTreeSet::new();
    let mut members: Vec<MemberReport> = described
        .members
        .into_iter()
        .map(|m| {
            let assignment = MemberAssignment::decode(&m.assignment)
                .unwrap_or_else(|e| MemberAssignment::new("", Default::default(), Some(e.to_string())));
            owned.extend(assignment.units.iter().cloned());
            MemberReport {
                name: m.instance_id.clone().unwrap_or_else(|| m.member_id.clone()),
                leader: assignment.leader == m.member_id,
                member_id: m.member_id,
                host: m.client_host,
                shards: assignment.units.into_iter().collect(),
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let unowned = crate::membership::units(config).into_iter().filter(|u| !owned.contains(u)).collect();
    Ok(GroupReport { id: group.id.clone(), cluster: group.cluster.clone(), state: described.state, members, unowned })
}

/// Each partition's owner: the member assigned its shard.
fn name_owners(config: &Config, group: &GroupReport, flows: &mut [FlowReport]) {
    for flow in flows {
        let Some(flow_config) = config.flows.iter().find(|f| f.name() == flow.summary.flow) else { continue };
        for partition in &mut flow.partitions {
            let shard = Shard::of(flow_config, &partition.status.topic, partition.status.partition).index;
            let unit = Unit { flow: flow.summary.flow.clone(), shard };
            partition.owner = group.members.iter().find(|m| m.shards.contains(&unit)).map(|m| m.name.clone());
        }
    }
}

fn print_text(status: &Status) {
    match (&status.kferry.metrics_listen, status.kferry.running) {
        (None, _) => println!("kferry process: unknown (no metrics.listen in the config); offsets from the clusters"),
        (Some(listen), true) => println!("kferry process: running (metrics on {listen})"),
        (Some(listen), false) => println!(
            "kferry process: not answering on {listen} ({}); offsets from the clusters",
            status.kferry.error.as_deref().unwrap_or("no answer")
        ),
    }
    if let Some(group) = &status.group {
        println!(
            "\ngroup {} on cluster {}: {}, {} member(s)",
            group.id,
            group.cluster,
            group.state,
            group.members.len()
        );
        for member in &group.members {
            let shards: Vec<String> = member.shards.iter().map(Unit::to_string).collect();
            let leader = if member.leader { ", leader" } else { "" };
            println!(
                "  {} ({}{leader}): {}",
                member.name,
                member.host,
                if shards.is_empty() { "no shards".to_string() } else { shards.join(", ") }
            );
        }
        if !group.unowned.is_empty() {
            let unowned: Vec<String> = group.unowned.iter().map(Unit::to_string).collect();
            println!("  unowned right now: {}", unowned.join(", "));
        }
    }
    for flow in &status.flows {
        let f = &flow.summary;
        let reason = f.state_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        let running = flow.running.as_ref().map(|r| format!("; running: {}", r.state)).unwrap_or_default();
        let source = if f.source_reachable { "" } else { "; source unreachable, its ends as last seen" };
        println!("\nflow {}: {}{reason}{running}{source}", f.flow, f.state);
        if let Some(detail) = flow.running.as_ref().and_then(|r| r.detail.as_deref()) {
            println!("  {detail}");
        }
        if flow.partitions.is_empty() {
            println!("  no partition replicated yet");
            continue;
        }
        println!(
            "  {:<40} {:>14} {:>14} {:>10} {:>10}  STATE",
            "TOPIC-PARTITION", "REPLICATED", "SOURCE-END", "LAG", "LAG-S"
        );
        for p in &flow.partitions {
            let s = &p.status;
            let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            let state = match (&p.state, &p.reason) {
                (Some(state), Some(reason)) if !reason.is_empty() => format!("{state}: {reason}"),
                (Some(state), _) => state.clone(),
                (None, _) if s.lag_records == Some(0) => "caught up".into(),
                (None, _) => "behind".into(),
            };
            println!(
                "  {:<40} {:>14} {:>14} {:>10} {:>10}  {state}",
                format!("{}-{}", s.topic, s.partition),
                s.replicated_offset,
                dash(s.source_end),
                dash(s.lag_records),
                s.lag_seconds.map_or("-".to_string(), |v| format!("{v:.1}")),
            );
            if let Some(owner) = &p.owner {
                println!("      replicated by {owner}");
            }
            if let Some(error) = &p.error {
                println!("      {error}");
            }
        }
    }
}
