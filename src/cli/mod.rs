//! The `kferry` command line: argument parsing, logging set-up, the async runtime, and
//! exit codes. Each command lives in its own module and only calls the library.
//!
//! Exit codes (also in `--help`): 0 success, 1 a cluster or broker problem, 2 a
//! configuration or usage problem. clap's own usage errors exit with 2 as well.

mod check;
mod convert_mm2;
mod failback;
mod failover;
mod offsets;
mod plan;
mod run;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::flow::ClusterAccess;
use crate::recovery::failback::FailbackMode;
use crate::recovery::failover::Mode;

/// What `--help` says after the options.
const AFTER_HELP: &str = "\
Environment:
  KFERRY_CONFIG      the configuration file when --config is not given
  KFERRY_LOG         log filter (tracing syntax: info, debug, kferry::client=trace); default info
  KFERRY_LOG_FORMAT  text or json (one JSON object per line); overrides the config's log.format

Exit codes:
  0  success
  1  a cluster or broker problem (unreachable, refused, replication failed)
  2  a configuration or usage problem (bad file, bad arguments)";

/// Replicates Kafka topics from one cluster to another (a MirrorMaker 2 replacement).
#[derive(Debug, Parser)]
#[command(name = "kferry", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the configured replication flows until stopped.
    Run {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
        config: PathBuf,
    },
    /// Connects to every cluster and shows what each flow would replicate; changes nothing.
    Check {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
        config: PathBuf,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prints what `run` would create or change on each target (topics, partitions,
    /// configs, ACLs) and the conflicts it would report; changes nothing.
    Plan {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
        config: PathBuf,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prints, per group and partition, the source group's committed offset, the target
    /// offset it translates to, the group's offset on the target and the lag; changes
    /// nothing.
    Offsets {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
        config: PathBuf,
        /// Only this group.
        #[arg(long)]
        group: Option<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints per flow and partition the state, replicated offset, source end and lag (records
    /// and seconds), read from the clusters (works with no kferry running) and, when the
    /// config has `metrics.listen`, what the running kferry reports; changes nothing.
    Status {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
        config: PathBuf,
        /// Only this flow, as `source->target`.
        #[arg(long)]
        flow: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Fails a flow over to its target: waits until everything is replicated (--planned) or
    /// takes what is there (--force), syncs group offsets, fences the flow and records the
    /// failover point.
    Failover {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
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
    /// After a failover, brings the data written on the target back to the source through
    /// the reverse flow (--mode reset|incremental, then runs it), or switches back once it
    /// has caught up (--complete).
    Failback {
        /// The YAML configuration file.
        #[arg(long, short, env = "KFERRY_CONFIG")]
        config: PathBuf,
        /// The flow that was failed over, as `source->target`.
        #[arg(long)]
        flow: String,
        /// reset: delete the old source's records and copy everything back; incremental:
        /// copy back only what was written after the failover point.
        #[arg(long, value_enum, conflicts_with = "complete", required_unless_present = "complete")]
        mode: Option<FailbackModeArg>,
        /// Wait for the reverse flow to catch up, fence it, and resume the forward flow.
        #[arg(long)]
        complete: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds --complete waits for the reverse flow to catch up.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Where incremental failback writes the divergent records.
        #[arg(long, default_value = ".")]
        export_dir: PathBuf,
        /// Do not ask before --mode reset deletes records and recreates the compact-only
        /// topics its plan lists (`_schemas`, `connect-*`); it asks only on a terminal, and
        /// off one recreating needs this flag.
        #[arg(long)]
        yes: bool,
    },
    /// Prints the kferry config equivalent to a MirrorMaker 2 properties file; every
    /// property it cannot carry over goes to standard error with the reason.
    #[command(name = "convert-mm2")]
    ConvertMm2 {
        /// The MM2 properties file (dedicated mode, e.g. mm2.properties).
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FailbackModeArg {
    Reset,
    Incremental,
}

/// Why a command failed, mapped to the exit code.
enum Failure {
    Config,
    Cluster,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging starts once the format is known: after the config is loaded (a config that
    // does not load is reported with eprintln), or at once for convert-mm2, which has none.
    let log_format = match log_format_from_env() {
        Ok(format) => format,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let load = |path: &std::path::Path| load(path, log_format);
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
            Command::Check { config, json } => check::check(&load(&config)?, json).await,
            Command::Plan { config, json } => plan::plan(&load(&config)?, json).await,
            Command::ConvertMm2 { file } => {
                init_logging(log_format.unwrap_or_default());
                convert_mm2::convert_mm2(&file)
            }
            Command::Failover { config, flow, planned, force: _, dry_run, timeout, json } => {
                let mode = if planned { Mode::Planned } else { Mode::Force };
                let timeout = std::time::Duration::from_secs(timeout);
                failover::failover(&load(&config)?, &flow, mode, dry_run, timeout, json).await
            }
            Command::Failback { config, flow, mode, complete: _, dry_run, timeout, json, export_dir, yes } => {
                let mode = mode.map(|m| match m {
                    FailbackModeArg::Reset => FailbackMode::Reset,
                    FailbackModeArg::Incremental => FailbackMode::Incremental,
                });
                let timeout = std::time::Duration::from_secs(timeout);
                let args =
                    failback::FailbackArgs { flow: &flow, mode, dry_run, timeout, json, export_dir: &export_dir, yes };
                failback::failback(&load(&config)?, args).await
            }
            Command::Status { config, flow, json } => status::status(&load(&config)?, flow.as_deref(), json).await,
            Command::Offsets { config, group, json } => offsets::offsets(&load(&config)?, group.as_deref(), json).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Cluster) => ExitCode::from(1),
        Err(Failure::Config) => ExitCode::from(2),
    }
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
                for warning in security.cleartext_warnings(name) {
                    tracing::warn!("{warning}");
                }
                let mut client = base.clone();
                client.connection.security = std::sync::Arc::new(security);
                client.connection.client_id.clone_from(&cluster.client_id);
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

/// Loads the config at `path` and starts logging in its `log.format`, unless `log_format`
/// (from `KFERRY_LOG_FORMAT`) overrides it.
fn load(path: &std::path::Path, log_format: Option<LogFormat>) -> Result<Config, Failure> {
    let config = Config::load(path).map_err(|e| {
        eprintln!("{e}");
        Failure::Config
    })?;
    init_logging(log_format.unwrap_or(config.log.format));
    Ok(config)
}

/// `KFERRY_LOG_FORMAT`: `None` when unset or empty, an error naming the allowed values when
/// it names no format.
fn log_format_from_env() -> Result<Option<LogFormat>, String> {
    match std::env::var("KFERRY_LOG_FORMAT") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => LogFormat::from_name(&value).map(Some).ok_or_else(|| {
            format!("KFERRY_LOG_FORMAT: unknown value \"{value}\"; allowed: {}", LogFormat::NAMES.join(", "))
        }),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("KFERRY_LOG_FORMAT: not UTF-8; allowed: {}", LogFormat::NAMES.join(", ")))
        }
    }
}

/// Logs go to stderr; `KFERRY_LOG` takes tracing's filter syntax (`debug`,
/// `kferry::client=trace`), default `info`. `json`: one object per line with `timestamp`,
/// `level`, `target`, `message` and the event's fields beside them (kferry opens no spans,
/// so there are no span lists to carry).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KFERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(colours).init();
        }
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).with_ansi(false).init();
        }
    }
}
