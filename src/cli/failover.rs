//! `kferry failover`: prints the failover plan of one flow (`--dry-run`) or carries it out,
//! then prints what it did and where every group continues on the target.

use std::time::Duration;

use super::check::{close_all, connect_all};
use super::Failure;
use crate::config::{Config, FlowConfig};
use crate::recovery::failover::{self, Mode};

pub(super) async fn failover(
    config: &Config,
    flow_name: &str,
    mode: Mode,
    dry_run: bool,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    let flow = find_flow(config, flow_name)?;
    let clusters = connect_all(config, super::check::dr_client_config()).await?;
    let target = match &clusters[&flow.target] {
        Ok(target) => target,
        Err(e) => {
            eprintln!("error: failover refused: the flow's target cluster {} is unreachable: {e}", flow.target);
            return close_all(&clusters, false);
        }
    };
    let source = match &clusters[&flow.source] {
        Ok(source) => Some(source),
        Err(e) if mode == Mode::Planned => {
            eprintln!(
                "error: a planned failover needs the source cluster {}, which is unreachable: {e}; if it is lost, use --force",
                flow.source
            );
            return close_all(&clusters, false);
        }
        Err(e) => {
            eprintln!("warning: source cluster {} unreachable ({e}): using what kferry last saw of it", flow.source);
            None
        }
    };
    let outcome = if dry_run {
        failover::plan(flow, mode, source, target).await
    } else {
        failover::execute(flow, mode, source, target, timeout).await
    };
    let healthy = match outcome {
        Ok(plan) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
            } else {
                if dry_run {
                    println!("dry run: nothing changed; a failover now would do this:");
                }
                print!("{plan}");
                if !dry_run {
                    println!("flow {} failed over: clients can move to {}", flow.name(), flow.target);
                }
            }
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    };
    close_all(&clusters, healthy)
}

/// The flow named `name` (`source->target`), or a configuration error listing the flows.
pub(super) fn find_flow<'a>(config: &'a Config, name: &str) -> Result<&'a FlowConfig, Failure> {
    config.flows.iter().find(|f| f.name() == name).ok_or_else(|| {
        let names: Vec<String> = config.flows.iter().map(FlowConfig::name).collect();
        eprintln!("error: --flow {name}: no such flow in the configuration; flows: {}", names.join(", "));
        Failure::Config
    })
}
