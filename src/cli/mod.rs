//! The `kferry` command line: argument parsing, logging set-up, the async runtime, and
//! exit codes. Each command lives in its own module and only calls the library.
//!
//! Exit codes: 0 success, 1 a cluster or broker problem, 2 a configuration problem.

mod check;
mod failover;
mod offsets;
mod plan;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::failover::failover::Mode;

/// Replicates Kafka topics from one cluster to another (a MirrorMaker 2 replacement).
#[derive(Debug, Parser)]
#[command(name = "kferry", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the configured replication flows until stopped.
    Run {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Connects to every cluster and shows what each flow would replicate; changes nothing.
    Check {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Prints what `run` would create or change on each target (topics, partitions,
    /// configs, ACLs) and the conflicts it would report; changes nothing.
    Plan {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Prints, per group and partition, the source group's committed offset, the target
    /// offset it translates to, the group's offset on the target and the lag; changes
    /// nothing.
    Offsets {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fails a flow over to its target: waits until everything is replicated (--planned) or
    /// takes what is there (--force), syncs group offsets, fences the flow and records the
    /// failover point.
    Failover {
        /// The YAML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The flow, as `source->target`.
        #[arg(long)]
        flow: String,
        /// The source is still up: wait until replication lag is zero.
        #[arg(long, conflicts_with = "force", required_unless_present = "force")]
        planned: bool,
        /// The source is lost: fail over with what was replicated so far.
        #[arg(long)]
        force: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds a planned failover waits for replication to catch up.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed, mapped to the exit code.
enum Failure {
    Config,
    Cluster,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kferry: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run::run(&load(&config)?).await,
            Command::Check { config } => check::check(&load(&config)?).await,
            Command::Plan { config } => plan::plan(&load(&config)?).await,
            Command::Failover { config, flow, planned, force: _, dry_run, timeout, json } => {
                let mode = if planned { Mode::Planned } else { Mode::Force };
                let timeout = std::time::Duration::from_secs(timeout);
                failover::failover(&load(&config)?, &flow, mode, dry_run, timeout, json).await
            }
            Command::Offsets { config, group, json } => offsets::offsets(&load(&config)?, group.as_deref(), json).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Cluster) => ExitCode::from(1),
        Err(Failure::Config) => ExitCode::from(2),
    }
}

fn load(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        Failure::Config
    })
}

/// Logs go to stderr; `KFERRY_LOG` takes tracing's filter syntax (`debug`,
/// `kferry::client=trace`), default `info`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours).init();
}
