//! The `kferry` command line: argument parsing, logging set-up, the async runtime, and
//! exit codes. Each command lives in its own module and only calls the library.
//!
//! Exit codes: 0 success, 1 a cluster or broker problem, 2 a configuration problem.

mod check;
mod plan;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

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
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Cluster) => ExitCode::from(1),
        Err(Failure::Config) => ExitCode::from(2),
    }
}

/// How to reach one configured cluster: its bootstrap servers and client settings with its
/// security (certificates read, credentials prepared).
#[derive(Clone)]
struct ClusterAccess {
    bootstrap: Vec<String>,
    client: crate::client::ClientConfig,
}

/// [`ClusterAccess`] of every cluster, from `base` settings. A certificate file that cannot
/// be used is a configuration error, reported before any connection is tried.
fn cluster_access(
    config: &Config,
    base: &crate::client::ClientConfig,
) -> Result<std::collections::BTreeMap<String, ClusterAccess>, Failure> {
    let mut access = std::collections::BTreeMap::new();
    let mut failed = false;
    for (name, cluster) in &config.clusters {
        match crate::client::security::Security::from_config(name, &cluster.security) {
            Ok(security) => {
                let mut client = base.clone();
                client.connection.security = std::sync::Arc::new(security);
                access.insert(name.clone(), ClusterAccess { bootstrap: cluster.bootstrap_servers.clone(), client });
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        Err(Failure::Config)
    } else {
        Ok(access)
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
