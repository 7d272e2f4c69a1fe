//! `kferry failback`: `--mode reset|incremental` prints the plan (`--dry-run`) or carries it
//! out and then runs the reverse flow until `--complete` (another invocation) fences it;
//! `--complete` waits for the reverse flow to catch up and resumes the forward flow.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::check::{close_all, connect_all};
use super::failover::find_flow;
use super::Failure;
use crate::client::{ClientConfig, Cluster};
use crate::config::{Config, FlowConfig};
use crate::flow::FlowEnd;
use crate::recovery::failback::{self, FailbackMode};
use crate::recovery::marker::{self, FlowState};

pub(super) struct FailbackArgs<'a> {
    pub(super) flow: &'a str,
    /// `None`: `--complete`.
    pub(super) mode: Option<FailbackMode>,
    pub(super) dry_run: bool,
    pub(super) timeout: Duration,
    pub(super) json: bool,
    pub(super) export_dir: &'a Path,
    /// `--yes`: reset deletes records and recreates compact-only topics without asking.
    pub(super) yes: bool,
}

pub(super) async fn failback(config: &Config, args: FailbackArgs<'_>) -> Result<(), Failure> {
    let flow = find_flow(config, args.flow)?;
    let clusters = connect_all(config, super::check::dr_client_config()).await?;
    let (Ok(primary), Ok(secondary)) = (&clusters[&flow.source], &clusters[&flow.target]) else {
        for (alias, cluster) in [(&flow.source, &clusters[&flow.source]), (&flow.target, &clusters[&flow.target])] {
            if let Err(e) = cluster {
                eprintln!("error: failback needs cluster {alias}, which is unreachable: {e}");
            }
        }
        return close_all(&clusters, false);
    };
    let healthy = match args.mode {
        Some(mode) => start(config, flow, mode, &args, primary, secondary).await,
        None => complete(flow, &args, primary, secondary).await,
    };
    close_all(&clusters, healthy)
}

fn print(value: &(impl serde::Serialize + std::fmt::Display), json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
    } else {
        print!("{value}");
    }
}

async fn start(
    config: &Config,
    flow: &FlowConfig,
    mode: FailbackMode,
    args: &FailbackArgs<'_>,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
) -> bool {
    let failover = match failback::check_preconditions(flow, secondary).await {
        Ok(failover) => failover,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    let reverse = failback::reverse_flow(flow);
    // A failback already under way is resumed, never planned again (that would delete or
    // copy a second time); so a record that cannot be read stops here.
    let in_progress = match marker::read(primary, &reverse.name()).await {
        Ok(Some(record)) if record.state == FlowState::FailingOver => {
            eprintln!(
                "error: flow {}: a `kferry failback --complete` was interrupted after it began fencing the reverse flow {}; \
                 run `kferry failback --flow {} --complete` again to finish it",
                flow.name(),
                reverse.name(),
                flow.name()
            );
            return false;
        }
        Ok(record) => record.filter(|r| r.state == FlowState::Active),
        Err(e) => {
            eprintln!("error: flow {}: {e}", reverse.name());
            return false;
        }
    };
    if let Some(record) = in_progress {
        if !args.dry_run {
            eprintln!(
                "failback of flow {} in progress ({}): resuming the reverse flow {}; nothing is deleted or copied twice",
                flow.name(),
                record.reason,
                reverse.name()
            );
            return run_reverse_flow(config, &reverse, primary).await;
        }
    }
    let plan = match failback::plan(flow, mode, &failover, primary, secondary, args.export_dir).await {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    if args.dry_run {
        if !args.json {
            println!("dry run: nothing changed; a failback now would do this:");
        }
        print(&plan, args.json);
        return true;
    }
    print(&plan, args.json);
    if mode == FailbackMode::Reset && !args.yes && !confirmed(&plan, &flow.source).await {
        return false;
    }
    if let Err(e) = failback::prepare(flow, &plan, primary, secondary).await {
        eprintln!("error: {e}");
        return false;
    }
    eprintln!(
        "reverse flow {} running; once producers on {} stop and it has caught up, run `kferry failback --flow {} --complete`",
        reverse.name(),
        flow.target,
        flow.name()
    );
    run_reverse_flow(config, &reverse, primary).await
}

/// Whether reset may go on without `--yes`: on a terminal, when the operator types yes;
/// elsewhere (scripts, CI) there is no one to ask, so deleting records goes on as `--yes`
/// would, but recreating compact-only topics (`_schemas`, `connect-*`) needs `--yes`.
async fn confirmed(plan: &failback::FailbackPlan, primary: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    let recreated: Vec<&str> = plan.recreate.iter().map(|t| t.topic.as_str()).collect();
    if !std::io::stdin().is_terminal() {
        if recreated.is_empty() {
            return true;
        }
        eprintln!(
            "error: flow {}: reset deletes and recreates the compact-only topics {} on the primary (see the plan); \
             nothing was changed. Rerun with --yes to confirm",
            plan.flow,
            recreated.join(", ")
        );
        return false;
    }
    let mut question = format!("Delete the records listed above on cluster {primary}");
    if !recreated.is_empty() {
        question.push_str(&format!(" and recreate {}", recreated.join(", ")));
    }
    question.push_str("? Type \"yes\" to go on: ");
    let answer = tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(question.as_bytes());
        let _ = stderr.flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    let yes = matches!(answer, Ok(Ok(line)) if line.trim().eq_ignore_ascii_case("yes"));
    if !yes {
        eprintln!("failback not started: nothing was deleted");
    }
    yes
}

/// Runs the reverse flow until a signal, or until `--complete` fences it (a success).
async fn run_reverse_flow(config: &Config, reverse: &FlowConfig, primary: &Cluster) -> bool {
    let access = match super::cluster_access(config, &ClientConfig::default()) {
        Ok(access) => access,
        Err(_) => return false,
    };
    let (stop, stopped) = watch::channel(false);
    let (source, target) = (access[&reverse.source].clone(), access[&reverse.target].clone());
    let running = crate::flow::run_alone(reverse.clone(), source, target, stopped);
    tokio::pin!(running);
    let end = tokio::select! {
        end = &mut running => end,
        _ = super::run::wait_for_signal() => {
            stop.send_replace(true);
            // Within 5 s of SIGTERM, as `kferry run`.
            tokio::time::timeout(super::run::SHUTDOWN_GRACE, running).await.unwrap_or(FlowEnd::Failed)
        }
    };
    match marker::read(primary, &reverse.name()).await {
        // Failing over: `--complete` has marked the reverse flow and is fencing it.
        Ok(Some(record)) if record.state != FlowState::Active => {
            eprintln!("reverse flow {} fenced by `failback --complete`: done", reverse.name());
            true
        }
        _ => match end {
            FlowEnd::Stopped => true,
            FlowEnd::Failed => false,
            FlowEnd::TakenAway(taken) => {
                tracing::error!("{taken}");
                false
            }
        },
    }
}

async fn complete(
    flow: &FlowConfig,
    args: &FailbackArgs<'_>,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
) -> bool {
    let outcome = if args.dry_run {
        failback::complete_plan(flow, primary, secondary).await
    } else {
        failback::complete(flow, primary, secondary, args.timeout).await
    };
    match outcome {
        Ok(plan) => {
            if args.dry_run && !args.json {
                println!("dry run: nothing changed; completing the failback now would do this:");
            }
            print(&plan, args.json);
            if !args.dry_run && !args.json {
                println!("failback complete: restart `kferry run` to resume flow {}", flow.name());
            }
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}
