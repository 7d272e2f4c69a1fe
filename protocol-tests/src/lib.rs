//! Shared pieces of kferry's real-Kafka tests: where the test clusters are, unique names,
//! and the independent verifier (`verify/kafka_verify.py`, confluent-kafka) that writes and
//! reads back data so that kferry never grades its own work.
//!
//! `scripts/test` starts two real Kafka clusters and sets `KFERRY_TEST_PRIMARY`,
//! `KFERRY_TEST_SECONDARY`, `KFERRY_TEST_KAFKA_VERSION` and `KFERRY_VERIFY`. A test run
//! without them fails with a message saying so: a skipped real-Kafka test would pass
//! without testing anything.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod fake;

use base64::Engine;
use kferry::client::{ClientConfig, Cluster};
use serde::Deserialize;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the real-Kafka tests with ./scripts/test, which starts the clusters")
    })
}

/// Bootstrap address of the shared `primary` test cluster.
pub fn primary() -> String {
    required_env("KFERRY_TEST_PRIMARY")
}

/// Bootstrap address of the shared `secondary` test cluster.
pub fn secondary() -> String {
    required_env("KFERRY_TEST_SECONDARY")
}

/// The Apache Kafka release the test clusters run (e.g. `4.4.0`).
pub fn kafka_version() -> String {
    required_env("KFERRY_TEST_KAFKA_VERSION")
}

/// A topic or group name no other test (or earlier run on the same clusters) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// kferry's client for a test cluster.
pub async fn connect(name: &str, bootstrap: &str) -> Arc<Cluster> {
    Cluster::connect(name, &[bootstrap.to_string()], ClientConfig::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test cluster {name}: {e}"))
}

/// The compression codecs Kafka defines, by their names in producer configs.
pub const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// The root of the protocol-tests crate (vectors live under it).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `kferry` binary built for this test run (`cargo build` puts it beside `deps/`).
pub fn kferry_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("kferry");
    assert!(bin.exists(), "{} not built: run `cargo build --workspace` first (./scripts/test does)", bin.display());
    bin
}

/// Record headers in order: name and value (`None` for a null value).
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// One record as confluent-kafka's consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    #[serde(deserialize_with = "b64_opt")]
    pub key: Option<Vec<u8>>,
    #[serde(deserialize_with = "b64_opt")]
    pub value: Option<Vec<u8>>,
    #[serde(deserialize_with = "b64_headers")]
    pub headers: Headers,
    pub timestamp: i64,
    pub timestamp_type: String,
}

fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())
}

fn b64_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| decode_b64(&t)).transpose().map_err(serde::de::Error::custom)
}

fn b64_headers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Headers, D::Error> {
    let raw: Vec<(String, Option<String>)> = Vec::deserialize(d)?;
    raw.into_iter()
        .map(|(name, value)| Ok((name, value.map(|v| decode_b64(&v)).transpose()?)))
        .collect::<Result<_, String>>()
        .map_err(serde::de::Error::custom)
}

/// Runs the verifier with `args`; panics (failing the test) on error or after `timeout`.
async fn run_verifier(args: &[&str], timeout: Duration) -> String {
    let script = required_env("KFERRY_VERIFY");
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("verifier {args:?} still running after {timeout:?}"))
        .expect("verifier output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "verifier {args:?} failed ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Creates a topic with confluent-kafka's admin client.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: u32, configs: &[&str]) {
    let partitions = partitions.to_string();
    let mut args = vec!["create-topic", "--bootstrap", bootstrap, "--topic", topic, "--partitions", &partitions];
    for config in configs {
        args.extend(["--config", config]);
    }
    run_verifier(&args, Duration::from_secs(60)).await;
}

/// Produces `count` deterministic records with confluent-kafka; returns its JSON summary.
pub async fn produce(bootstrap: &str, topic: &str, count: u32, compression: &str, extra: &[&str]) -> serde_json::Value {
    let count = count.to_string();
    let mut args =
        vec!["produce", "--bootstrap", bootstrap, "--topic", topic, "--count", &count, "--compression", compression];
    args.extend_from_slice(extra);
    let out = run_verifier(&args, Duration::from_secs(90)).await;
    serde_json::from_str(out.trim()).expect("produce summary is JSON")
}

/// Reads a whole topic back with confluent-kafka, sorted by (partition, offset).
pub async fn consume(bootstrap: &str, topic: &str, isolation: &str, expect: usize) -> Vec<ConsumedRecord> {
    let expect = expect.to_string();
    let args = ["consume", "--bootstrap", bootstrap, "--topic", topic, "--isolation", isolation, "--expect", &expect];
    let out = run_verifier(&args, Duration::from_secs(90)).await;
    out.lines().map(|line| serde_json::from_str(line).expect("consumed record is JSON")).collect()
}
