//! The 3-broker test clusters (issue 13's tests): where they are, and stopping, killing and
//! starting one of their nodes.
//!
//! `scripts/kafka/cluster.sh` starts them (`KFERRY_KAFKA_BROKERS=3 cluster.sh start NAME PORT
//! VERSION`: node `i` takes clients on `PORT + 10 * (i - 1)`), and the test command exports
//!
//! - `KFERRY_TEST_MULTI_PRIMARY` / `KFERRY_TEST_MULTI_SECONDARY`: the bootstrap lists
//!   (comma-separated, as `cluster.sh start` prints them),
//! - `KFERRY_TEST_MULTI_PRIMARY_NAME` / `KFERRY_TEST_MULTI_SECONDARY_NAME`: their names in
//!   cluster.sh, which the node commands below need,
//! - `KFERRY_TEST_MULTI_WAN`: the name of the `scripts/kafka/wan.sh` WAN (Toxiproxy) in front
//!   of the primary's brokers, when the primary advertises its proxy ports (the `wan_*`
//!   functions below; the WAN applies to every client of the primary while it is set).
//!
//! Nodes are numbered from 1, as Kafka's node ids are. A test that stops a node must start it
//! again before it ends (also when it fails: see [`NodeGuard`]), since the clusters are shared
//! by every multi-broker test of the run.

use std::path::PathBuf;
use std::process::Stdio;

use crate::{cluster_script, crate_dir, required_env};

/// Bootstrap servers of the 3-broker `primary` test cluster, comma-separated.
pub fn primary() -> String {
    required_env("KFERRY_TEST_MULTI_PRIMARY")
}

/// Bootstrap servers of the 3-broker `secondary` test cluster, comma-separated.
pub fn secondary() -> String {
    required_env("KFERRY_TEST_MULTI_SECONDARY")
}

/// The bootstrap list of a cluster as a vector, e.g. for `bootstrap_servers` in a config.
pub fn servers(bootstrap: &str) -> Vec<String> {
    bootstrap.split(',').map(str::to_string).collect()
}

/// One of the two 3-broker test clusters, by its cluster.sh name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Primary,
    Secondary,
}

impl Side {
    /// The cluster's name in cluster.sh (`KFERRY_TEST_MULTI_*_NAME`).
    pub fn name(self) -> String {
        match self {
            Side::Primary => required_env("KFERRY_TEST_MULTI_PRIMARY_NAME"),
            Side::Secondary => required_env("KFERRY_TEST_MULTI_SECONDARY_NAME"),
        }
    }

    /// The cluster's bootstrap list (`KFERRY_TEST_MULTI_PRIMARY` or `_SECONDARY`).
    pub fn bootstrap(self) -> String {
        match self {
            Side::Primary => primary(),
            Side::Secondary => secondary(),
        }
    }
}

async fn node_command(command: &str, side: Side, node: u32) {
    script_command(cluster_script(), &[command.to_string(), side.name(), node.to_string()]).await;
}

fn wan_script() -> PathBuf {
    crate_dir().join("../scripts/kafka/wan.sh")
}

async fn script_command(script: PathBuf, args: &[String]) {
    let output = tokio::process::Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{} does not run: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stops node `node` (1-based) cleanly: TERM, so it hands its leaderships over first
/// (controlled shutdown); KILL after cluster.sh's stop timeout. Its data stays.
pub async fn stop_node(side: Side, node: u32) {
    node_command("stop-node", side, node).await;
}

/// Kills node `node` with SIGKILL, as a machine loss would: its partitions get new leaders
/// once the controller fences it (broker.session.timeout.ms, 6 s on these clusters).
pub async fn kill_node(side: Side, node: u32) {
    node_command("kill-node", side, node).await;
}

/// Starts node `node` again on its data; returns once it answers a metadata request that lists
/// it (registered and unfenced). It may still be catching up: not yet back in every ISR.
pub async fn start_node(side: Side, node: u32) {
    node_command("start-node", side, node).await;
}

/// Starts the node again when dropped (a stopped node must not outlive the test that stopped
/// it, also when that test panics). Prefer `guard.start().await` on the test's normal path.
pub struct NodeGuard {
    side: Side,
    node: u32,
    started: bool,
}

impl NodeGuard {
    /// Stops (TERM) the node and returns a guard that starts it again.
    pub async fn stop(side: Side, node: u32) -> Self {
        stop_node(side, node).await;
        Self { side, node, started: false }
    }

    /// Kills (SIGKILL) the node and returns a guard that starts it again.
    pub async fn kill(side: Side, node: u32) -> Self {
        kill_node(side, node).await;
        Self { side, node, started: false }
    }

    /// Starts the node again now.
    pub async fn start(mut self) {
        start_node(self.side, self.node).await;
        self.started = true;
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if !self.started {
            // Blocking on purpose: Drop cannot await, and the node must be up for the next test.
            let _ = std::process::Command::new(cluster_script())
                .args(["start-node", &self.side.name(), &self.node.to_string()])
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// Sets the latency between the primary's clients and its brokers: `up_ms` added to what goes
/// to the brokers, `down_ms` to what comes back (a round trip grows by their sum); 0 and 0
/// removes it. Needs `KFERRY_TEST_MULTI_WAN`.
pub async fn wan_latency(up_ms: u32, down_ms: u32) {
    let wan = required_env("KFERRY_TEST_MULTI_WAN");
    script_command(wan_script(), &["latency".into(), wan, up_ms.to_string(), down_ms.to_string()]).await;
}

/// Cuts the primary's node `node` off from its clients (its proxy refuses connections and
/// resets the open ones; replication between the nodes goes on). Undo with [`wan_restore`].
pub async fn wan_cut(node: u32) {
    let wan = required_env("KFERRY_TEST_MULTI_WAN");
    script_command(wan_script(), &["cut".into(), wan, node.to_string()]).await;
}

/// Lets no data through the proxy of the primary's node `node`, either way, while connections
/// stay open (a network partition rather than a refused port). Undo with [`wan_restore`].
pub async fn wan_blackhole(node: u32) {
    let wan = required_env("KFERRY_TEST_MULTI_WAN");
    script_command(wan_script(), &["blackhole".into(), wan, node.to_string()]).await;
}

/// Undoes [`wan_cut`] and [`wan_blackhole`] for node `node`.
pub async fn wan_restore(node: u32) {
    let wan = required_env("KFERRY_TEST_MULTI_WAN");
    script_command(wan_script(), &["restore".into(), wan, node.to_string()]).await;
}
