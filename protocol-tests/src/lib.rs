//! Shared pieces of kferry's real-Kafka tests: where the test clusters are, unique names,
//! and the independent verifier (`verify/kafka_verify.py`, confluent-kafka) that writes and
//! reads back data so that kferry never grades its own work.
//!
//! MM2 checkpoints are read back with Apache Kafka's own connect-mirror-client
//! (`verify/mirror-client`, see [`mm2_translate_offsets`]).
//!
//! `scripts/test` starts two real Kafka clusters and sets `KFERRY_TEST_PRIMARY`,
//! `KFERRY_TEST_SECONDARY`, `KFERRY_TEST_KAFKA_VERSION` and `KFERRY_VERIFY`. A test run
//! without them fails with a message saying so: a skipped real-Kafka test would pass
//! without testing anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod connect;
pub mod dr;
pub mod fake;
pub mod mm2;
pub mod multi;
pub mod secure;

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

/// Each codec's name with the codec kferry's batch view reads from a batch's attributes.
pub const BATCH_CODECS: [(&str, kferry::protocol::batch::Compression); 5] = {
    use kferry::protocol::batch::Compression;
    [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ]
};

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

/// A record's key, value, headers and timestamp: what must be equal on both clusters
/// (offsets differ: kferry's own transaction markers take offsets on the target).
pub type Payload = (Option<Vec<u8>>, Option<Vec<u8>>, Headers, i64);

/// Per partition, the records' payloads in order.
pub type Content = std::collections::BTreeMap<i32, Vec<Payload>>;

pub fn content(records: &[ConsumedRecord]) -> Content {
    let mut by_partition = Content::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r.payload());
    }
    by_partition
}

/// The records of each partition, in order.
pub fn by_partition(records: &[ConsumedRecord]) -> std::collections::BTreeMap<i32, Vec<ConsumedRecord>> {
    let mut map: std::collections::BTreeMap<i32, Vec<ConsumedRecord>> = Default::default();
    for r in records {
        map.entry(r.partition).or_default().push(r.clone());
    }
    map
}

impl ConsumedRecord {
    pub fn payload(&self) -> Payload {
        (self.key.clone(), self.value.clone(), self.headers.clone(), self.timestamp)
    }

    /// The same record on another cluster: same payload, whatever the offset.
    pub fn same_as(&self, other: &ConsumedRecord) -> bool {
        self.payload() == other.payload()
    }
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

/// Two source topics `<prefix>-big` and `<prefix>-small` with records, where the target copy
/// of `big` (created here with `max.message.bytes=300`) refuses every batch of it: the
/// fixture of a partition the target refuses while another goes on. The flow must keep
/// `max.message.bytes` out of config sync (`topic_configs_exclude`). Returns (big, small).
pub async fn refused_batch_topics(prefix: &str) -> (String, String) {
    let (big, small) = (format!("{prefix}-big"), format!("{prefix}-small"));
    create_topic(&primary(), &big, 1, &[]).await;
    create_topic(&primary(), &small, 1, &[]).await;
    create_topic(&secondary(), &big, 1, &["max.message.bytes=300"]).await;
    produce(&primary(), &big, 200, "none", &["--linger-ms", "50"]).await;
    produce(&primary(), &small, 300, "gzip", &[]).await;
    (big, small)
}

/// Produces `count` deterministic records with confluent-kafka; returns its JSON summary.
pub async fn produce(bootstrap: &str, topic: &str, count: u32, compression: &str, extra: &[&str]) -> serde_json::Value {
    let count = count.to_string();
    let mut args =
        vec!["produce", "--bootstrap", bootstrap, "--topic", topic, "--count", &count, "--compression", compression];
    args.extend_from_slice(extra);
    let out = run_verifier(&args, Duration::from_secs(300)).await;
    serde_json::from_str(out.trim()).expect("produce summary is JSON")
}

/// Reads a whole topic back with confluent-kafka, sorted by (partition, offset).
pub async fn consume(bootstrap: &str, topic: &str, isolation: &str, expect: usize) -> Vec<ConsumedRecord> {
    consume_with(bootstrap, topic, isolation, expect, &[]).await
}

/// As [`consume`], with librdkafka settings for the connection (`--client-config`, e.g.
/// `security.protocol=SSL`).
pub async fn consume_with(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    expect: usize,
    client_config: &[String],
) -> Vec<ConsumedRecord> {
    let expect = expect.to_string();
    let mut args =
        vec!["consume", "--bootstrap", bootstrap, "--topic", topic, "--isolation", isolation, "--expect", &expect];
    for setting in client_config {
        args.extend(["--client-config", setting.as_str()]);
    }
    let out = run_verifier(&args, Duration::from_secs(90)).await;
    out.lines().map(|line| serde_json::from_str(line).expect("consumed record is JSON")).collect()
}

/// As [`consume`] (read_committed, what is there now), of `partitions` only: the others
/// may have no leader at the moment.
pub async fn consume_partitions(bootstrap: &str, topic: &str, partitions: &[i32]) -> Vec<ConsumedRecord> {
    let list = partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let args =
        ["consume", "--bootstrap", bootstrap, "--topic", topic, "--isolation", "read_committed", "--partitions", &list];
    let out = run_verifier(&args, Duration::from_secs(90)).await;
    out.lines().map(|line| serde_json::from_str(line).expect("consumed record is JSON")).collect()
}

/// Consumes as a member of `group` with confluent-kafka (read_committed, from the group's
/// committed offsets): `per_partition` records of each partition (`N` or `P=N,P=N`), then
/// commits the offset after the last one read unless `extra` has `--no-commit`.
pub async fn group_consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    per_partition: &str,
    extra: &[&str],
) -> Vec<ConsumedRecord> {
    let mut args = vec![
        "group-consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--per-partition",
        per_partition,
    ];
    args.extend_from_slice(extra);
    let out = run_verifier(&args, Duration::from_secs(90)).await;
    out.lines().map(|line| serde_json::from_str(line).expect("consumed record is JSON")).collect()
}

/// A consumer group as confluent-kafka's admin client describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupDescription {
    pub state: String,
    pub members: usize,
    /// Committed offsets by `topic/partition`.
    pub offsets: std::collections::BTreeMap<String, i64>,
}

pub async fn describe_group(bootstrap: &str, group: &str) -> GroupDescription {
    let json = verify_json(&["describe-group", "--bootstrap", bootstrap, "--group", group]).await;
    serde_json::from_value(json).expect("describe-group output")
}

/// A confluent-kafka consumer that joins `group` on `topic` without reading or committing
/// anything and stays a member for `seconds`; killed when dropped.
pub fn spawn_group_member(bootstrap: &str, topic: &str, group: &str, seconds: u32) -> tokio::process::Child {
    tokio::process::Command::new("python3")
        .arg(required_env("KFERRY_VERIFY"))
        .args(["group-consume", "--bootstrap", bootstrap, "--topic", topic, "--group", group])
        .args(["--per-partition", "0", "--no-commit", "--hold-seconds", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs")
}

/// Runs a verifier subcommand that prints one JSON object.
pub async fn verify_json(args: &[&str]) -> serde_json::Value {
    let out = run_verifier(args, Duration::from_secs(60)).await;
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("verifier {args:?} printed no JSON ({e}): {out}"))
}

/// What Java tooling gets from MM2's checkpoints: runs `verify/mirror-client/TranslateOffsets.java`,
/// i.e. connect-mirror-client's `RemoteClusterUtils.translateOffsets(bootstrap, source_alias,
/// group)`, and returns the translated offsets by (topic, partition). Panics (failing the test)
/// on error or after a minute; the Java process is killed and reaped either way.
pub async fn mm2_translate_offsets(bootstrap: &str, source_alias: &str, group: &str) -> BTreeMap<(String, i32), i64> {
    let stdout = run_mirror_client("TranslateOffsets.java", &[bootstrap, source_alias, group]).await;
    let offsets: BTreeMap<String, i64> = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("TranslateOffsets printed no offsets JSON ({e}): {stdout}"));
    by_topic_partition(offsets)
}

/// `{"topic/partition": offset}` keyed by (topic, partition) instead.
pub fn by_topic_partition(offsets: BTreeMap<String, i64>) -> BTreeMap<(String, i32), i64> {
    offsets
        .into_iter()
        .map(|(key, offset)| {
            let (topic, partition) = key.rsplit_once('/').unwrap_or_else(|| panic!("`{key}` is not topic/partition"));
            let partition = partition.parse().unwrap_or_else(|e| panic!("`{key}`: partition not a number ({e})"));
            ((topic.to_string(), partition), offset)
        })
        .collect()
}

/// Runs `verify/mirror-client/<program>` (a single-file Java program on connect-mirror-client's
/// classpath) with `args` and returns its stdout. Panics (failing the test) on error or after a
/// minute; the Java process is killed and reaped either way.
pub async fn run_mirror_client(program: &str, args: &[&str]) -> String {
    let dir = crate_dir().join("verify/mirror-client");
    let fetched = std::process::Command::new(dir.join("fetch.sh")).output().expect("mirror-client/fetch.sh runs");
    assert!(fetched.status.success(), "mirror-client/fetch.sh failed:\n{}", String::from_utf8_lossy(&fetched.stderr));
    let classpath = String::from_utf8_lossy(&fetched.stdout).trim().to_string();
    let classes = compiled_mirror_client(&dir.join(program), &classpath).await;
    let class = program.strip_suffix(".java").expect("a .java program");
    let mut child = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{}:{classpath}", classes.display()))
        .arg(class)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("java runs");
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let output = tokio::spawn(async move { tokio::join!(drain(stdout, None), drain(stderr, None)) });
    let timeout = Duration::from_secs(60);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.expect("Java exit status"),
        Err(_) => {
            // kill() also waits, so the process is reaped before the test fails.
            let _ = child.kill().await;
            panic!("{program} {args:?} still running after {timeout:?}");
        }
    };
    let (stdout, stderr) = output.await.expect("Java output drained");
    assert!(status.success(), "{program} {args:?} failed ({status}):\n{stderr}\n{stdout}");
    stdout
}

/// The class directory of `source` compiled once per content (a single-file launch compiles
/// it anew every time, seconds each on a busy machine): compiled into a fresh directory that
/// is renamed into place, so tests compiling at the same time never see a partial one.
async fn compiled_mirror_client(source: &std::path::Path, classpath: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let text = std::fs::read(source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let name = source.file_stem().and_then(|s| s.to_str()).expect("program name");
    let classes = std::env::temp_dir().join(format!("kferry-mirror-client-{name}-{:016x}", hasher.finish()));
    if classes.exists() {
        return classes;
    }
    let building = std::env::temp_dir().join(unique_name(&format!("kferry-mirror-client-{name}")));
    let output = tokio::process::Command::new("javac")
        .arg("-cp")
        .arg(classpath)
        .arg("-d")
        .arg(&building)
        .arg(source)
        .output()
        .await
        .expect("javac runs");
    assert!(output.status.success(), "javac {} failed:\n{}", source.display(), String::from_utf8_lossy(&output.stderr));
    // Another test may have renamed its copy into place first: then that one is used.
    if std::fs::rename(&building, &classes).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    classes
}

/// A topic as confluent-kafka's admin client describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TopicDescription {
    pub exists: bool,
    #[serde(default)]
    pub partitions: u32,
    /// The most replicas any partition has.
    #[serde(default)]
    pub replication_factor: u32,
    /// Configs set on the topic itself.
    #[serde(default)]
    pub configs: std::collections::BTreeMap<String, String>,
    /// Every config in force, defaults included (`None`: a sensitive value).
    #[serde(default)]
    pub all_configs: std::collections::BTreeMap<String, Option<String>>,
}

impl TopicDescription {
    /// The value in force of config `name` (the topic's own or a default).
    pub fn config(&self, name: &str) -> Option<&str> {
        self.all_configs.get(name).and_then(|value| value.as_deref())
    }
}

pub async fn describe_topic(bootstrap: &str, topic: &str) -> TopicDescription {
    let json = verify_json(&["describe-topic", "--bootstrap", bootstrap, "--topic", topic]).await;
    serde_json::from_value(json).expect("describe-topic output")
}

/// Every topic of a cluster, internal ones included, sorted.
pub async fn list_topics(bootstrap: &str) -> Vec<String> {
    let json = verify_json(&["list-topics", "--bootstrap", bootstrap]).await;
    serde_json::from_value(json["topics"].clone()).expect("list-topics output")
}

/// Waits until the secondary holds `expected` committed records of `topic` (read back with
/// confluent-kafka); more than that fails at once: a record was copied twice.
pub async fn wait_until_replicated(topic: &str, expected: usize) -> Vec<ConsumedRecord> {
    eventually(&format!("{expected} records of {topic} on the target"), Duration::from_secs(120), || async {
        if !describe_topic(&secondary(), topic).await.exists {
            return None;
        }
        let records = consume(&secondary(), topic, "read_committed", 0).await;
        assert!(
            records.len() <= expected,
            "{topic}: {} records on the target, more than the {expected} on the source",
            records.len()
        );
        (records.len() == expected).then_some(records)
    })
    .await
}

/// Where a group positioned at source offset `committed` must continue on the target,
/// worked out from what confluent-kafka reads on both sides (read_committed): the target
/// offset of the first source record at or after `committed`, or the position after the
/// last target record when the group has read everything.
pub fn expected_target_offset(source: &[ConsumedRecord], target: &[ConsumedRecord], committed: i64) -> i64 {
    assert_eq!(source.len(), target.len(), "both sides hold the same records");
    match source.iter().position(|r| r.offset >= committed) {
        Some(index) => target[index].offset,
        None => target.last().map_or(0, |r| r.offset + 1),
    }
}

/// Polls `check` (bounded by `timeout`, every 250 ms) until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < timeout, "{what}: not seen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A `kferry` process started by a test; killed when dropped, also when the test fails.
/// Its output is drained as it comes (a full pipe would block the process); with
/// `KFERRY_TEST_LOG_DIR` set, each process's stderr and stdout are also written to files
/// there (`.log`, `.out`) as they come, to read what a failed test's kferry said
/// (`KFERRY_TEST_KFERRY_LOG`, e.g. `kferry=debug`, sets their log filter).
pub struct Kferry {
    child: tokio::process::Child,
    config: PathBuf,
    output: tokio::task::JoinHandle<(String, String)>,
}

/// Reads a stream to its end; with `keep`, also writes what comes to that file as it
/// comes (so it is there even when the test panics and the process is killed).
async fn drain(stream: Option<impl tokio::io::AsyncRead + Unpin>, keep: Option<PathBuf>) -> String {
    use std::io::Write as _;
    let mut text = Vec::new();
    let mut file = keep.and_then(|path| std::fs::File::create(path).ok());
    if let Some(mut stream) = stream {
        let mut chunk = Vec::with_capacity(8192);
        while let Ok(1..) = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut chunk).await {
            text.extend_from_slice(&chunk);
            if let Some(file) = file.as_mut() {
                let _ = file.write_all(&chunk);
            }
            chunk.clear();
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

impl Kferry {
    /// Starts `kferry <command> --config <file holding config_text>`.
    pub fn start(command: &str, config_text: &str) -> Self {
        Self::launch(command, &[], &[], config_text)
    }

    /// As [`Kferry::start`], with `extra` arguments after the config.
    pub fn start_with(command: &str, extra: &[&str], config_text: &str) -> Self {
        Self::launch(command, extra, &[], config_text)
    }

    /// As [`Kferry::start`], with extra environment variables (`KFERRY_LOG` among them
    /// overrides the default `info`).
    pub fn start_with_env(command: &str, config_text: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(command, &[], env, config_text)
    }

    fn launch(command: &str, extra: &[&str], env: &[(&str, &str)], config_text: &str) -> Self {
        let config = std::env::temp_dir().join(format!("{}.yaml", unique_name("kferry-config")));
        std::fs::write(&config, config_text).expect("config written");
        let mut child = tokio::process::Command::new(kferry_binary())
            .args([command, "--config"])
            .arg(&config)
            .args(extra)
            .env("KFERRY_LOG", std::env::var("KFERRY_TEST_KFERRY_LOG").unwrap_or_else(|_| "info".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kferry starts");
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let keep = std::env::var_os("KFERRY_TEST_LOG_DIR")
            .map(|dir| PathBuf::from(dir).join(unique_name(&format!("kferry-{command}"))));
        let (keep_out, keep_err) =
            (keep.as_ref().map(|p| p.with_extension("out")), keep.as_ref().map(|p| p.with_extension("log")));
        let output = tokio::spawn(async move { tokio::join!(drain(stdout, keep_out), drain(stderr, keep_err)) });
        Self { child, config, output }
    }

    /// Runs `kferry <command>` to completion (bounded); returns exit code, stdout, stderr.
    pub async fn run_to_end(command: &str, config_text: &str) -> (Option<i32>, String, String) {
        Self::run_to_end_with(command, &[], config_text).await
    }

    /// As [`Kferry::run_to_end`], with `extra` arguments after the config.
    pub async fn run_to_end_with(command: &str, extra: &[&str], config_text: &str) -> (Option<i32>, String, String) {
        Self::launch(command, extra, &[], config_text).finish(Duration::from_secs(60)).await
    }

    /// As [`Kferry::run_to_end`], with extra environment variables.
    pub async fn run_to_end_with_env(
        command: &str,
        config_text: &str,
        env: &[(&str, &str)],
    ) -> (Option<i32>, String, String) {
        let kferry = Self::start_with_env(command, config_text, env);
        kferry.finish(Duration::from_secs(60)).await
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kferry killed");
    }

    /// Asks the process to stop (SIGTERM) and collects its output.
    pub async fn stop(self) -> (Option<i32>, String, String) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        self.finish(Duration::from_secs(30)).await
    }

    /// Waits for the process to exit by itself (no signal); fails the test after `timeout`.
    pub async fn wait_exit(self, timeout: Duration) -> (Option<i32>, String, String) {
        self.finish(timeout).await
    }

    /// As [`Kferry::stop`], also measuring how long the process took to exit after SIGTERM.
    pub async fn stop_timed(self) -> (Duration, Option<i32>, String, String) {
        let started = std::time::Instant::now();
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let mut this = self;
        let status = tokio::time::timeout(Duration::from_secs(30), this.child.wait())
            .await
            .unwrap_or_else(|_| panic!("kferry still running 30 s after SIGTERM"))
            .expect("kferry exit status");
        let elapsed = started.elapsed();
        let (stdout, stderr) = (&mut this.output).await.expect("output drained");
        (elapsed, status.code(), stdout, stderr)
    }

    async fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("kferry still running after {timeout:?}"))
            .expect("kferry exit status");
        let (stdout, stderr) = (&mut self.output).await.expect("output drained");
        (status.code(), stdout, stderr)
    }
}

impl Drop for Kferry {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A single-node Kafka cluster of one test's own (started with scripts/kafka/cluster.sh),
/// for tests that kill or restart a broker, which the shared clusters must never see.
/// Stopped, its data removed, when dropped, also when the test fails.
pub struct OwnCluster {
    name: String,
    pub bootstrap: String,
}

fn cluster_script() -> PathBuf {
    crate_dir().join("../scripts/kafka/cluster.sh")
}

async fn cluster_command(args: &[&str]) {
    let output = tokio::process::Command::new(cluster_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("cluster.sh runs");
    assert!(output.status.success(), "cluster.sh {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

impl OwnCluster {
    /// Starts cluster `name` on 127.0.0.1:`port` (and `port + 1` for its controller) with
    /// the Kafka version of the test clusters.
    pub async fn start(name: &str, port: u16) -> Self {
        let name = format!("{name}-{}", std::process::id());
        cluster_command(&["start", &name, &port.to_string(), &kafka_version()]).await;
        Self { name, bootstrap: format!("127.0.0.1:{port}") }
    }

    /// Kills the broker with SIGKILL, as a machine loss would.
    pub async fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir().join("pid")).expect("broker pid");
        let status = std::process::Command::new("kill").args(["-KILL", pid.trim()]).status().expect("kill runs");
        assert!(status.success(), "broker {} not killed", self.name);
    }

    /// Stops the broker cleanly (SIGTERM, as an operator's stop), keeping its data: a
    /// clean shutdown means the broker does not re-check its log segments at the next
    /// start. Waits (up to 60 s) until the process is gone.
    pub async fn halt(&self) {
        let pid = std::fs::read_to_string(self.dir().join("pid")).expect("broker pid");
        let pid = pid.trim().to_string();
        let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "broker {} not signalled", self.name);
        let proc = PathBuf::from("/proc").join(&pid);
        eventually(&format!("broker {} stopped", self.name), Duration::from_secs(60), || async {
            (!proc.exists()).then_some(())
        })
        .await;
    }

    /// The broker's log directory (one folder per partition, `TOPIC-PARTITION`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn dir(&self) -> PathBuf {
        let run_dir = std::env::var("KFERRY_RUN_DIR").unwrap_or_else(|_| "/tmp/kferry-kafka".into());
        PathBuf::from(run_dir).join(&self.name)
    }

    /// Starts the broker again on its data.
    pub async fn restart(&self) {
        cluster_command(&["restart", &self.name]).await;
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(cluster_script()).args(["stop", &self.name]).status();
    }
}

/// A client quota (`producer_byte_rate`, `consumer_byte_rate`, ...) for one client id on a
/// test cluster, set with Apache Kafka's own kafka-configs tool (scripts/kafka/configs.sh);
/// removed again when dropped, also when the test fails.
pub struct ClientQuota {
    bootstrap: String,
    client_id: String,
    keys: Vec<String>,
}

fn configs_tool(bootstrap: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate_dir().join("../scripts/kafka/configs.sh"))
        .arg(kafka_version())
        .args(["--bootstrap-server", bootstrap])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/kafka/configs.sh runs")
}

impl ClientQuota {
    /// Sets `quotas` (`key=value`, e.g. `producer_byte_rate=1048576`) for `client_id`.
    pub async fn set(bootstrap: &str, client_id: &str, quotas: &[&str]) -> Self {
        let (bootstrap, client_id, quotas) = (bootstrap.to_string(), client_id.to_string(), quotas.join(","));
        let keys = quotas.split(',').map(|q| q.split('=').next().unwrap_or_default().to_string()).collect();
        let (b, c) = (bootstrap.clone(), client_id.clone());
        let output = tokio::task::spawn_blocking(move || {
            configs_tool(&b, &["--alter", "--entity-type", "clients", "--entity-name", &c, "--add-config", &quotas])
        })
        .await
        .expect("configs tool task");
        assert!(output.status.success(), "kafka-configs failed:\n{}", String::from_utf8_lossy(&output.stderr));
        Self { bootstrap, client_id, keys }
    }
}

impl Drop for ClientQuota {
    fn drop(&mut self) {
        let keys = self.keys.join(",");
        let _ = configs_tool(
            &self.bootstrap,
            &["--alter", "--entity-type", "clients", "--entity-name", &self.client_id, "--delete-config", &keys],
        );
    }
}

/// A cluster alias unique to this test run (letters and digits).
pub fn alias(prefix: &str) -> String {
    unique_name(prefix).replace('-', "")
}

/// A config with one flow from the primary to the secondary test cluster, under aliases
/// unique to the test: the flow's transactional id, progress group and state topic are
/// then its own, so tests running side by side never fence each other.
pub fn unique_flow_config(flow_keys: &str) -> String {
    two_cluster_config(&alias("p"), &alias("s"), flow_keys)
}

/// A two-cluster config with one flow from `source` to `target` (aliases), pointing at the
/// shared test clusters; `flow_keys` are extra YAML lines of the flow, 4-space indented.
pub fn two_cluster_config(source: &str, target: &str, flow_keys: &str) -> String {
    format!(
        "clusters:\n  {source}: {{ bootstrap_servers: [\"{}\"] }}\n  {target}: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - source: {source}\n    target: {target}\n{flow_keys}",
        primary(),
        secondary()
    )
}
