//! `kferry plan`: prints, per flow, exactly what `kferry run` would create or change on the
//! target (topics, partitions, configs, ACLs) and the conflicts it would report. It reads
//! both clusters and changes nothing; the plan comes from the same planner `run` applies.
//! `--json` prints one array with an entry per flow instead of text.

use super::check::{close_all, connect_all};
use super::Failure;
use crate::config::{Config, FlowConfig};
use crate::topics::plan::Plan;
use crate::topics::sync::TopicSync;

/// One flow's plan, or why there is none.
#[derive(Debug, serde::Serialize)]
struct FlowPlan {
    flow: String,
    policy: String,
    target: String,
    plan: Option<Plan>,
    error: Option<String>,
}

pub(super) async fn plan(config: &Config, json: bool) -> Result<(), Failure> {
    let clusters = connect_all(config, super::check::check_client_config()).await?;
    let mut plans = Vec::new();
    for flow in &config.flows {
        let outcome = plan_flow(flow, &clusters).await;
        let entry = FlowPlan {
            flow: flow.name(),
            policy: flow.policy.to_string(),
            target: flow.target.clone(),
            error: outcome.as_ref().err().cloned(),
            plan: outcome.ok(),
        };
        if !json {
            print_text(&entry);
        }
        plans.push(entry);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&plans).unwrap_or_default());
    }
    let healthy = plans.iter().all(|p| p.error.is_none());
    close_all(&clusters, healthy)
}

fn print_text(entry: &FlowPlan) {
    println!("flow {} ({} names), changes on {}:", entry.flow, entry.policy, entry.target);
    if let Some(plan) = &entry.plan {
        print!("{plan}");
    }
    if let Some(e) = &entry.error {
        eprintln!("error: {e}");
    }
}

async fn plan_flow(
    flow: &FlowConfig,
    clusters: &std::collections::BTreeMap<
        String,
        Result<std::sync::Arc<crate::client::Cluster>, crate::client::ClientError>,
    >,
) -> Result<Plan, String> {
    let (Some(Ok(source)), Some(Ok(target))) = (clusters.get(&flow.source), clusters.get(&flow.target)) else {
        let unreachable: Vec<String> = [&flow.source, &flow.target]
            .into_iter()
            .filter_map(|name| match clusters.get(name) {
                Some(Err(e)) => Some(format!("cluster {name} is unreachable: {e}")),
                _ => None,
            })
            .collect();
        return Err(format!("not planned: {}", unreachable.join("; ")));
    };
    let sync = TopicSync::new(flow, source.clone(), target.clone()).map_err(|e| e.to_string())?;
    sync.plan().await.map_err(|e| e.to_string())
}
