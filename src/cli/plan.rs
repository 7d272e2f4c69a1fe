//! `kferry plan`: prints, per flow, exactly what `kferry run` would create or change on the
//! target (topics, partitions, configs, ACLs) and the conflicts it would report. It reads
//! both clusters and changes nothing; the plan comes from the same planner `run` applies.

use super::check::{close_all, connect_all};
use super::Failure;
use crate::config::Config;
use crate::topics::sync::TopicSync;

pub(super) async fn plan(config: &Config) -> Result<(), Failure> {
    let clusters = connect_all(config, super::check::check_client_config()).await?;
    let mut healthy = true;
    for flow in &config.flows {
        println!("flow {} ({} names), changes on {}:", flow.name(), flow.policy, flow.target);
        let (Some(Ok(source)), Some(Ok(target))) = (clusters.get(&flow.source), clusters.get(&flow.target)) else {
            for (name, cluster) in
                [(&flow.source, clusters.get(&flow.source)), (&flow.target, clusters.get(&flow.target))]
            {
                if let Some(Err(e)) = cluster {
                    eprintln!("error: {e}");
                    println!("  not planned: cluster {name} is unreachable");
                }
            }
            healthy = false;
            continue;
        };
        let sync = match TopicSync::new(flow, source.clone(), target.clone()) {
            Ok(sync) => sync,
            Err(e) => {
                eprintln!("error: {e}");
                healthy = false;
                continue;
            }
        };
        match sync.plan().await {
            Ok(plan) => print!("{plan}"),
            Err(e) => {
                eprintln!("error: {e}");
                healthy = false;
            }
        }
    }
    close_all(&clusters, healthy)
}
