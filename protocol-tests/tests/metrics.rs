//! `kferry run` with `metrics.listen`, against the real test clusters: what `/metrics` says
//! is checked against what confluent-kafka reads on the target, the exposition against
//! Prometheus' own `promtool check metrics`, and a real Prometheus server scrapes kferry
//! and is asked through its HTTP API. `/readyz` must fail, naming the cluster, while a
//! target cannot be reached, and pass again once it can. HTTP is spoken by curl, never by
//! kferry's own code. Every process a test starts (kferry, Prometheus, a broker) is stopped
//! by a guard, also when the test fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use protocol_tests::{
    consume, create_topic, describe_group, describe_topic, eventually, primary, produce, secondary, two_cluster_config,
    unique_name, wait_until_replicated, ClientQuota, Kferry,
};

/// A port nothing listens on right now (the kernel's choice, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// GET with curl: (status, body), or `None` while nothing answers on the port.
fn get(url: &str) -> Option<(u16, String)> {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", url])
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (scripts/setup installs it)");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).expect("utf-8 answer");
    let (body, status) = text.rsplit_once('\n').expect("curl wrote the status");
    Some((status.parse().expect("an HTTP status"), body.to_string()))
}

/// The samples of metric `name` in a Prometheus text exposition: labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut found = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let (metric, labels) = match series.split_once('{') {
            Some((metric, labels)) => (metric, labels.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (key, value) = l.split_once('=').expect("label=value");
                (key.to_string(), value.trim_matches('"').to_string())
            })
            .collect();
        found.push((labels, value.parse().expect("a number")));
    }
    found
}

/// The sum of `name` over the samples whose labels include `matching`.
fn sum(text: &str, name: &str, matching: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .iter()
        .filter(|(labels, _)| matching.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, value)| value)
        .sum()
}

fn with_metrics(config: String, port: u16) -> String {
    format!("{config}metrics:\n  listen: \"127.0.0.1:{port}\"\n")
}

fn flow_keys(topic: &str) -> String {
    format!("    topics: [\"{topic}\"]\n    refresh_topics_interval_seconds: 1\n    sync_group_offsets: false\n")
}

/// Scrapes until `/metrics` answers.
async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    eventually("kferry serving /metrics", Duration::from_secs(30), || async {
        get(&url).map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_target_holds_and_promtool_accepts_them() {
    let topic = unique_name("metrics-count");
    const RECORDS: usize = 6_000;
    create_topic(&primary(), &topic, 3, &[]).await;
    produce(&primary(), &topic, RECORDS as u32, "lz4", &[]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let flow = format!("{source}->{target}");
    let port = free_port();
    // With group sync (every second), for its counters and the age of its last round.
    // Only this test's groups (none): a round over every group of the shared cluster takes
    // long once many tests have left groups there.
    let keys = flow_keys(&topic).replace(
        "sync_group_offsets: false",
        &format!("sync_group_offsets_interval_seconds: 1\n    groups: [\"{topic}-.*\"]"),
    );
    let kferry = Kferry::start("run", &with_metrics(two_cluster_config(&source, &target, &keys), port));

    let on_target = wait_until_replicated(&topic, RECORDS).await;
    assert_eq!(on_target.len(), RECORDS);
    // The counters are booked as the transaction commits, before the records are visible.
    let text = scrape(port).await;
    let replicated = sum(&text, "kferry_records_replicated_total", &[("flow", &flow), ("topic", &topic)]);
    assert_eq!(replicated, on_target.len() as f64, "records counter vs confluent-kafka on the target\n{text}");
    for partition in ["0", "1", "2"] {
        let labels = [("flow", flow.as_str()), ("topic", topic.as_str()), ("partition", partition)];
        let on_partition = on_target.iter().filter(|r| r.partition.to_string() == partition).count() as f64;
        assert_eq!(sum(&text, "kferry_records_replicated_total", &labels), on_partition, "partition {partition}");
        assert_eq!(sum(&text, "kferry_partition_replicated_offset", &labels), on_partition);
    }
    assert!(sum(&text, "kferry_bytes_replicated_total", &[("flow", &flow)]) > RECORDS as f64);
    let batches = sum(&text, "kferry_batches_replicated_total", &[("flow", &flow)]);
    assert!(batches >= 3.0, "at least one batch per partition: {batches}");
    assert!(sum(&text, "kferry_transactions_total", &[("flow", &flow), ("outcome", "committed")]) >= 1.0);
    assert_eq!(sum(&text, "kferry_replication_latency_seconds_count", &[("flow", &flow)]), RECORDS as f64);
    let inf = sum(&text, "kferry_replication_latency_seconds_bucket", &[("flow", &flow), ("le", "+Inf")]);
    assert_eq!(inf, RECORDS as f64);
    assert!(sum(&text, "kferry_round_duration_seconds_count", &[("flow", &flow)]) >= 1.0);
    assert_eq!(sum(&text, "kferry_topics_created_total", &[("flow", &flow)]), 1.0);
    assert_eq!(sum(&text, "kferry_flow_state", &[("flow", &flow), ("state", "replicating")]), 1.0);
    assert!(sum(&text, "kferry_process_resident_memory_bytes", &[]) > 1e6);
    assert!(sum(&text, "kferry_connections_opened_total", &[("flow", &flow), ("role", "source")]) >= 1.0);
    assert!(sum(&text, "kferry_connections_opened_total", &[("flow", &flow), ("role", "target")]) >= 1.0);
    // Group sync runs in a loop of its own: its first round (every group of the shared
    // cluster looked at) may still be under way when the records are all there.
    let synced = eventually("a group sync round completed", Duration::from_secs(60), || async {
        let text = scrape(port).await;
        (sum(&text, "kferry_group_sync_rounds_total", &[("flow", &flow)]) >= 1.0).then_some(text)
    })
    .await;
    let synced_at = sum(&synced, "kferry_group_sync_last_success_timestamp_seconds", &[("flow", &flow)]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs_f64();
    assert!((0.0..30.0).contains(&(now - synced_at)), "last group sync round {synced_at}, now {now}");
    // Caught up: no lag, every partition replicating (published within half a second).
    let text = eventually("lag 0 once caught up", Duration::from_secs(10), || async {
        let text = scrape(port).await;
        (sum(&text, "kferry_lag_records", &[("flow", &flow)]) == 0.0).then_some(text)
    })
    .await;
    assert_eq!(sum(&text, "kferry_partitions", &[("flow", &flow), ("state", "replicating")]), 3.0);
    assert_eq!(sum(&text, "kferry_partitions", &[("flow", &flow), ("state", "stalled")]), 0.0);

    // Prometheus' own linter: no error and no warning.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/setup installs it)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes()).expect("exposition sent");
    let checked = promtool.wait_with_output().expect("promtool finishes");
    let said = format!("{}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");

    let (status, body) = get(&format!("http://127.0.0.1:{port}/healthz")).expect("healthz answers");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("http://127.0.0.1:{port}/readyz")).expect("readyz answers");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["flows"][0]["flow"], flow.as_str());
    let (status, _) = get(&format!("http://127.0.0.1:{port}/nothing")).expect("answers");
    assert_eq!(status, 404);

    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_an_unreachable_target_and_healthz_stays_ok() {
    let topic = unique_name("metrics-unreachable");
    create_topic(&primary(), &topic, 1, &[]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let nowhere = free_port();
    let config = format!(
        "clusters:\n  {source}: {{ bootstrap_servers: [\"{}\"] }}\n  {target}: {{ bootstrap_servers: [\"127.0.0.1:{nowhere}\"] }}\n\
         flows:\n  - source: {source}\n    target: {target}\n{}",
        primary(),
        flow_keys(&topic)
    );
    let port = free_port();
    let kferry = Kferry::start("run", &with_metrics(config, port));
    let url = format!("http://127.0.0.1:{port}/readyz");
    let body = eventually("/readyz naming the target", Duration::from_secs(30), || async {
        let (status, body) = get(&url)?;
        let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
        let named = ready["flows"][0]["unreachable_clusters"][0]["cluster"] == target.as_str();
        (named && status == 503).then_some(ready)
    })
    .await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["flows"][0]["state"], "connecting", "{body}");
    assert_eq!(body["flows"][0]["unreachable_clusters"][0]["role"], "target", "{body}");
    let reason = body["flows"][0]["unreachable_clusters"][0]["reason"].as_str().expect("a reason");
    assert!(reason.contains(&nowhere.to_string()), "the reason names the address: {reason}");
    let (status, health) = get(&format!("http://127.0.0.1:{port}/healthz")).expect("healthz answers");
    assert_eq!(status, 200, "{health}");
    let text = scrape(port).await;
    let labels = [("cluster", target.as_str()), ("role", "target")];
    assert_eq!(sum(&text, "kferry_cluster_reachable", &labels), 0.0, "{text}");
    assert!(sum(&text, "kferry_errors_total", &[("cluster", &target), ("code", "connection")]) >= 1.0, "{text}");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_the_target_refuses_is_stalled_in_readyz_and_its_lag_is_what_is_missing() {
    let prefix = unique_name("metrics-refused");
    // As in replication.rs: the target copy of `big` takes no batch over 300 bytes, and the
    // flow keeps that limit out of config sync.
    let (big, small) = protocol_tests::refused_batch_topics(&prefix).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let flow = format!("{source}->{target}");
    let keys = format!(
        "    topics: [\"{prefix}-.*\"]\n    topic_configs_exclude: [\"max.message.bytes\"]\n    \
         refresh_topics_interval_seconds: 1\n    sync_group_offsets: false\n"
    );
    let port = free_port();
    let kferry = Kferry::start("run", &with_metrics(two_cluster_config(&source, &target, &keys), port));
    let small_on_target = wait_until_replicated(&small, 300).await;
    let url = format!("http://127.0.0.1:{port}/readyz");
    let not_ready = eventually("/readyz naming the refused partition", Duration::from_secs(30), || async {
        let (status, body) = get(&url)?;
        let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
        (status == 503 && ready["flows"][0]["partitions"].as_array().is_some_and(|p| !p.is_empty())).then_some(ready)
    })
    .await;
    let partitions = not_ready["flows"][0]["partitions"].as_array().expect("a list");
    assert_eq!(partitions.len(), 1, "only the refused partition: {not_ready}");
    assert_eq!(partitions[0]["topic"], big.as_str());
    assert_eq!(partitions[0]["partition"], 0);
    assert_eq!(partitions[0]["state"], "stalled");
    assert_eq!(partitions[0]["reason"], "target_refused");
    assert_eq!(not_ready["flows"][0]["unreachable_clusters"], serde_json::json!([]), "both clusters answer");

    let text = scrape(port).await;
    let stalled = [("flow", flow.as_str()), ("state", "stalled"), ("reason", "target_refused")];
    assert_eq!(sum(&text, "kferry_partitions", &stalled), 1.0, "{text}");
    let too_large = [("cluster", target.as_str()), ("code", "MESSAGE_TOO_LARGE")];
    assert!(sum(&text, "kferry_errors_total", &too_large) >= 1.0, "{text}");
    let small_labels = [("topic", small.as_str()), ("partition", "0")];
    assert_eq!(sum(&text, "kferry_records_replicated_total", &small_labels), small_on_target.len() as f64);
    assert_eq!(sum(&text, "kferry_partition_lag_records", &small_labels), 0.0);
    // The refused partition is behind by every record confluent-kafka reads on the source
    // and none of which it finds on the target.
    let on_source = consume(&primary(), &big, "read_committed", 200).await.len();
    let on_target = consume(&secondary(), &big, "read_committed", 0).await.len();
    let big_labels = [("topic", big.as_str()), ("partition", "0")];
    assert_eq!(sum(&text, "kferry_partition_lag_records", &big_labels), (on_source - on_target) as f64);
    assert_eq!(sum(&text, "kferry_records_replicated_total", &big_labels), on_target as f64);
    assert!(sum(&text, "kferry_lag_seconds", &[("flow", &flow)]) > 0.0, "the stalled partition ages");

    // `kferry status --json` says the same as the metrics, read from the clusters and the
    // running kferry's /readyz; nothing moves any more, so "the same moment" is any moment.
    let config = with_metrics(two_cluster_config(&source, &target, &keys), port);
    let (code, status, stderr) = Kferry::run_to_end_with("status", &["--json"], &config).await;
    assert_eq!(code, Some(1), "a stalled partition is not a healthy status: {stderr}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json is JSON");
    assert_eq!(status["kferry"]["running"], true, "{status}");
    let flow_status = &status["flows"][0];
    assert_eq!(flow_status["flow"], flow.as_str());
    assert_eq!(flow_status["state"], "active");
    assert_eq!(flow_status["running"]["state"], "replicating");
    let text = scrape(port).await;
    let partition = |topic: &str| {
        let found = flow_status["partitions"].as_array().expect("partitions").iter().find(|p| p["topic"] == topic);
        found.unwrap_or_else(|| panic!("{topic} in the status: {status}")).clone()
    };
    for (topic, labels) in [(&big, &big_labels), (&small, &small_labels)] {
        let p = partition(topic);
        let metric = |name: &str| sum(&text, name, labels);
        assert_eq!(p["replicated_offset"].as_f64(), Some(metric("kferry_partition_replicated_offset")), "{topic}: {p}");
        assert_eq!(p["source_end"].as_f64(), Some(metric("kferry_partition_source_end_offset")), "{topic}: {p}");
        assert_eq!(p["lag_records"].as_f64(), Some(metric("kferry_partition_lag_records")), "{topic}: {p}");
        // The status dates the oldest missing record by its timestamp, the metric from when
        // kferry first saw it: a few seconds apart at most (the records were written just
        // before kferry started).
        let (by_status, by_metric) =
            (p["lag_seconds"].as_f64().expect("lag_seconds"), metric("kferry_partition_lag_seconds"));
        assert!((by_status - by_metric).abs() < 15.0, "{topic}: lag {by_status} s by status, {by_metric} s by metrics");
    }
    let refused = partition(&big);
    assert_eq!((refused["state"].as_str(), refused["reason"].as_str()), (Some("stalled"), Some("target_refused")));
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("MESSAGE_TOO_LARGE")), "{refused}");
    assert_eq!(refused["lag_records"].as_i64(), Some((on_source - on_target) as i64));
    assert_eq!(partition(&small)["state"], "replicating");
    assert_eq!(partition(&small)["lag_records"], 0);

    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // With kferry stopped: the same offsets, from the clusters alone.
    let (code, stopped, stderr) = Kferry::run_to_end_with("status", &["--json"], &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    let stopped: serde_json::Value = serde_json::from_str(&stopped).expect("status --json is JSON");
    assert_eq!(stopped["kferry"]["running"], false, "{stopped}");
    for topic in [&big, &small] {
        let after = stopped["flows"][0]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .find(|p| p["topic"] == topic.as_str())
            .cloned();
        let after = after.unwrap_or_else(|| panic!("{topic} in the status: {stopped}"));
        let before = partition(topic);
        for key in ["replicated_offset", "source_end", "lag_records", "target_end"] {
            assert_eq!(after[key], before[key], "{topic} {key} with kferry stopped: {after}");
        }
        assert_eq!(after["state"], serde_json::Value::Null);
    }
    let (code, text_status, _) = Kferry::run_to_end("status", &config).await;
    assert_eq!(code, Some(0));
    assert!(text_status.contains(&format!("{big}-0")) && text_status.contains("not answering"), "{text_status}");
}

/// The port of the target cluster the readiness test owns (and its controller, port + 1).
fn own_target_port() -> u16 {
    std::env::var("KFERRY_TEST_METRICS_OWN_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19740)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_the_target_broker_is_down_and_passes_once_it_is_back() {
    let own = protocol_tests::OwnCluster::start("mtarget", own_target_port()).await;
    let topic = unique_name("metrics-target-down");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 1_000, "zstd", &[]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let config = format!(
        "clusters:\n  {source}: {{ bootstrap_servers: [\"{}\"] }}\n  {target}: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - source: {source}\n    target: {target}\n{}",
        primary(),
        own.bootstrap,
        flow_keys(&topic)
    );
    let port = free_port();
    let kferry = Kferry::start("run", &with_metrics(config, port));
    let url = format!("http://127.0.0.1:{port}/readyz");
    eventually("1,000 records on the own target", Duration::from_secs(120), || async {
        if !describe_topic(&own.bootstrap, &topic).await.exists {
            return None;
        }
        (consume(&own.bootstrap, &topic, "read_committed", 0).await.len() == 1_000).then_some(())
    })
    .await;
    eventually("ready while replicating", Duration::from_secs(30), || async {
        get(&url).and_then(|(status, _)| (status == 200).then_some(()))
    })
    .await;

    own.kill().await;
    // Records to copy, so that the target is needed.
    produce(&primary(), &topic, 500, "zstd", &[]).await;
    let not_ready = eventually("/readyz failing with the target down", Duration::from_secs(60), || async {
        let (status, body) = get(&url)?;
        (status == 503).then(|| serde_json::from_str::<serde_json::Value>(&body).expect("JSON"))
    })
    .await;
    let flow = &not_ready["flows"][0];
    assert_eq!(flow["ready"], false, "{not_ready}");
    let unreachable = flow["unreachable_clusters"].as_array().expect("a list");
    assert!(
        unreachable.iter().any(|c| c["cluster"] == target.as_str() && c["role"] == "target"),
        "the body names the stopped target: {not_ready}"
    );
    let (status, health) = get(&format!("http://127.0.0.1:{port}/healthz")).expect("healthz answers");
    assert_eq!(status, 200, "{health}");

    own.restart().await;
    eventually("ready again with the target back", Duration::from_secs(120), || async {
        get(&url).and_then(|(status, _)| (status == 200).then_some(()))
    })
    .await;
    let all = eventually("1,500 records on the own target", Duration::from_secs(120), || async {
        let records = consume(&own.bootstrap, &topic, "read_committed", 0).await;
        assert!(records.len() <= 1_500, "a record copied twice: {}", records.len());
        (records.len() == 1_500).then_some(records)
    })
    .await;
    let text = scrape(port).await;
    assert_eq!(sum(&text, "kferry_records_replicated_total", &[("topic", &topic)]), all.len() as f64);
    // The broker's loss shows in its connection counts: attempts that failed while it was
    // down, and a connection opened again once it was back.
    let target_broker = [("cluster", target.as_str()), ("role", "target"), ("broker", "1")];
    assert!(sum(&text, "kferry_connections_opened_total", &target_broker) >= 2.0, "{text}");
    assert!(sum(&text, "kferry_connection_failures_total", &target_broker) >= 1.0, "{text}");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// A Prometheus server of the test's own, scraping one target every second; killed and
/// its data removed when dropped, also when the test fails.
struct Prometheus {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let dir = std::env::temp_dir().join(unique_name("kferry-prometheus"));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kferry\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("prometheus.yml written");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus runs (Debian package prometheus; scripts/setup installs it)");
        Self { child, dir, port }
    }

    /// The results of an instant query (fails the test if Prometheus refuses the query),
    /// `None` while Prometheus does not answer.
    fn results(&self, query: &str) -> Option<Vec<serde_json::Value>> {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "5", "-G", &format!("http://127.0.0.1:{}/api/v1/query", self.port)])
            .args(["--data-urlencode", &format!("query={query}")])
            .stdin(Stdio::null())
            .output()
            .expect("curl runs");
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        assert_ne!(answer["status"], "error", "{query}: {answer}");
        answer["data"]["result"].as_array().cloned()
    }

    /// The value of an instant query's first result, `None` while it has none.
    fn query(&self, query: &str) -> Option<f64> {
        self.results(query)?.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Polls `query` until `accept` takes its value; fails with the last value after `timeout`.
    async fn wait_for(&self, query: &str, timeout: Duration, accept: impl Fn(f64) -> bool) -> f64 {
        eventually(&format!("Prometheus: {query}"), timeout, || async { self.query(query).filter(|v| accept(*v)) })
            .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_scraping_kferry_sees_the_records_confluent_kafka_reads() {
    let topic = unique_name("metrics-prometheus");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 4_000, "snappy", &[]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let flow = format!("{source}->{target}");
    let port = free_port();
    // Throttled to 512 KiB/s, so the burst below (some 8 MiB) is written faster than it is
    // copied and the lag is there for Prometheus to see whatever the machine's pace.
    // Group sync on (every second), so that its dashboard panels have data too.
    let keys = flow_keys(&topic).replace(
        "sync_group_offsets: false",
        &format!("sync_group_offsets_interval_seconds: 1\n    groups: [\"{topic}-.*\"]"),
    );
    let keys = format!("{keys}    max_bytes_per_second: 524288\n");
    // A member of a group (alone in it), so that the group panels have data too.
    let group = format!("group:\n  id: {}\n  cluster: {target}\n", unique_name("metrics-group"));
    let config = format!("{}{group}", with_metrics(two_cluster_config(&source, &target, &keys), port));
    let kferry = Kferry::start("run", &config);
    let prometheus = Prometheus::start(port);
    let first = wait_until_replicated(&topic, 4_000).await;
    let records = format!("sum(kferry_records_replicated_total{{flow=\"{flow}\",topic=\"{topic}\"}})");
    let seen = prometheus.wait_for(&records, Duration::from_secs(60), |v| v == first.len() as f64).await;
    assert_eq!(seen, 4_000.0);
    assert_eq!(prometheus.query("up{job=\"kferry\"}"), Some(1.0));

    // A burst while kferry runs, faster than the flow's limit: Prometheus sees lag while it
    // is copied, then none.
    produce(&primary(), &topic, 100_000, "none", &[]).await;
    let all = wait_until_replicated(&topic, 104_000).await;
    prometheus.wait_for(&records, Duration::from_secs(60), |v| v == all.len() as f64).await;
    let lag = format!("kferry_lag_records{{flow=\"{flow}\"}}");
    let peak = prometheus.wait_for(&format!("max_over_time({lag}[5m])"), Duration::from_secs(10), |_| true).await;
    assert!(peak > 0.0, "lag seen while the burst was copied");
    prometheus.wait_for(&lag, Duration::from_secs(30), |v| v == 0.0).await;
    let latency = format!("sum(kferry_replication_latency_seconds_count{{flow=\"{flow}\"}})");
    prometheus.wait_for(&latency, Duration::from_secs(30), |v| v == 104_000.0).await;
    let p99 =
        format!("histogram_quantile(0.99, sum by (le) (kferry_replication_latency_seconds_bucket{{flow=\"{flow}\"}}))");
    let p99 = prometheus.wait_for(&p99, Duration::from_secs(10), |v| v.is_finite()).await;
    assert!(p99 > 0.0 && p99 < 3_600.0, "p99 latency {p99} s");

    // Every query of the Grafana dashboard, for this flow: Prometheus takes it and has an
    // answer (errors only once there were some).
    for (panel, query) in dashboard_queries(&flow, "1m") {
        let results = prometheus.results(&query).expect("Prometheus answers");
        assert!(!results.is_empty() || query.contains("kferry_errors_total"), "{panel}: no data for {query}");
    }
    drop(prometheus);
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

/// Bytes one verifier record with `--value-bytes 4096` takes in an uncompressed batch: the
/// value, its key and headers (some 18 bytes on average) and the record's framing (some 12:
/// length, attributes, timestamp and offset deltas, key and value lengths); the batch header
/// (61 bytes) is shared by hundreds of records. Within 1% of the truth, which is enough to
/// check a rate to ±10%.
const STORED_RECORD_BYTES: f64 = 4096.0 + 18.0 + 12.0;

/// The records of `topic` the flow's progress group says are replicated (read by
/// confluent-kafka), and when.
async fn progress(group: &str, topic: &str) -> (std::time::Instant, i64) {
    let offsets = describe_group(&secondary(), group).await.offsets;
    let replicated = offsets.iter().filter(|(tp, _)| tp.starts_with(&format!("{topic}/"))).map(|(_, o)| o).sum();
    (std::time::Instant::now(), replicated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_throttled_to_5_mib_s_copies_a_backlog_at_that_rate_and_its_lag_falls_to_0() {
    const RECORDS: i64 = 15_000;
    const RATE: f64 = 5.0 * 1024.0 * 1024.0;
    let topic = unique_name("throttled");
    create_topic(&primary(), &topic, 3, &[]).await;
    produce(&primary(), &topic, RECORDS as u32, "none", &["--value-bytes", "4096"]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let flow = format!("{source}->{target}");
    let group = format!("kferry.progress.{source}.{target}");
    let port = free_port();
    let keys = format!("{}    max_bytes_per_second: {}\n", flow_keys(&topic), RATE as u64);
    let kferry = Kferry::start("run", &with_metrics(two_cluster_config(&source, &target, &keys), port));

    // The rate between 10% and 85% of the backlog, from the progress kferry commits with
    // its transactions: start-up and the last round are left out.
    let mut samples = Vec::new();
    let started = std::time::Instant::now();
    let mut lag_seen = 0.0f64;
    loop {
        let sample = progress(&group, &topic).await;
        samples.push(sample);
        let text = scrape(port).await;
        lag_seen = lag_seen.max(sum(&text, "kferry_lag_records", &[("flow", &flow)]));
        if sample.1 >= RECORDS {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "backlog not copied within 120 s: {samples:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = samples.iter().find(|(_, n)| *n >= RECORDS / 10).expect("a sample past 10%");
    let last = samples.iter().find(|(_, n)| *n >= RECORDS * 85 / 100).expect("a sample past 85%");
    let seconds = last.0.duration_since(first.0).as_secs_f64();
    let rate = (last.1 - first.1) as f64 * STORED_RECORD_BYTES / seconds;
    println!("throttled backlog copy: {:.2} MiB/s over {seconds:.1} s (limit 5 MiB/s)", rate / 1048576.0);
    assert!((0.9 * RATE..=1.1 * RATE).contains(&rate), "{rate} B/s, not 5 MiB/s ±10%: {samples:?}");
    assert!(lag_seen > 1000.0, "the lag rose while the flow was held back: {lag_seen}");

    let text = eventually("lag 0 once caught up", Duration::from_secs(10), || async {
        let text = scrape(port).await;
        (sum(&text, "kferry_lag_records", &[("flow", &flow)]) == 0.0).then_some(text)
    })
    .await;
    assert!(sum(&text, "kferry_rate_limited_seconds_total", &[("flow", &flow)]) > 1.0, "{text}");
    let on_target = wait_until_replicated(&topic, RECORDS as usize).await;
    let on_source = consume(&primary(), &topic, "read_committed", 0).await;
    assert_eq!(protocol_tests::content(&on_target), protocol_tests::content(&on_source));
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_quotas_on_kferrys_client_id_slow_it_down_without_an_error_or_a_reset() {
    const RECORDS: usize = 1_500;
    let topic = unique_name("quota");
    let client_id = unique_name("kferry-quota");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, RECORDS as u32, "none", &["--value-bytes", "4096"]).await;
    // About 6 MiB through a 384 KiB/s fetch quota on the source and a 256 KiB/s produce
    // quota on the target (slower, so that the source's pace still exceeds it). A broker
    // measures the rate over its whole quota window (10 s at first), so some 10 s worth of
    // each quota goes through at once and the rest is throttled, for several seconds.
    let _fetch_quota = ClientQuota::set(&primary(), &client_id, &["consumer_byte_rate=393216"]).await;
    let _produce_quota = ClientQuota::set(&secondary(), &client_id, &["producer_byte_rate=262144"]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let flow = format!("{source}->{target}");
    let port = free_port();
    let config = format!(
        "clusters:\n  {source}: {{ bootstrap_servers: [\"{}\"], client_id: \"{client_id}\" }}\n  \
         {target}: {{ bootstrap_servers: [\"{}\"], client_id: \"{client_id}\" }}\n\
         flows:\n  - source: {source}\n    target: {target}\n{}",
        primary(),
        secondary(),
        flow_keys(&topic)
    );
    let started = std::time::Instant::now();
    let kferry = Kferry::start("run", &with_metrics(config, port));
    let on_target = wait_until_replicated(&topic, RECORDS).await;
    let elapsed = started.elapsed();
    let on_source = consume(&primary(), &topic, "read_committed", 0).await;
    assert_eq!(protocol_tests::content(&on_target), protocol_tests::content(&on_source));

    let text = scrape(port).await;
    let throttled = |role: &str| sum(&text, "kferry_quota_throttle_seconds_total", &[("flow", &flow), ("role", role)]);
    println!(
        "6 MiB through 384 and 256 KiB/s quotas: {elapsed:?}; throttled {:.1} s by the source, {:.1} s by the target",
        throttled("source"),
        throttled("target")
    );
    assert!(throttled("source") > 0.0 && throttled("target") > 0.0, "both quotas were met\n{text}");
    assert_eq!(sum(&text, "kferry_transactions_total", &[("flow", &flow), ("outcome", "aborted")]), 0.0);
    assert_eq!(sum(&text, "kferry_errors_total", &[("flow", &flow)]), 0.0, "{text}");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("the broker throttles kferry"), "the throttling is logged: {stderr}");
}

/// The Grafana dashboard (deploy/grafana), as Grafana loads it.
fn dashboard() -> serde_json::Value {
    serde_json::from_str(include_str!("../../deploy/grafana/kferry-dashboard.json")).expect("the dashboard is JSON")
}

/// Every query of the dashboard with its panel's title, Grafana's variables filled in as
/// Grafana would: `$flow` with `flow` (a regex), `$__rate_interval` with `rate_interval`.
fn dashboard_queries(flow: &str, rate_interval: &str) -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a query has an expr");
            let expr = expr.replace("$__rate_interval", rate_interval).replace("$flow", flow);
            assert!(!expr.contains('$'), "a Grafana variable left in {expr}");
            queries.push((panel["title"].as_str().expect("a title").to_owned(), expr));
        }
    }
    assert!(queries.len() > 30, "{} queries", queries.len());
    queries
}

/// Runs `promtool` with `args` in `dir`; fails the test with what it said unless it succeeds.
fn promtool(dir: &std::path::Path, args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/setup installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?}: {said}");
}

/// Needs no broker: every query of the Grafana dashboard parses as PromQL (`promtool check
/// rules` on a rules file of them), and the example alerts in deploy/prometheus parse and
/// fire as their unit tests say (`promtool test rules`). That they name only series kferry
/// exposes is checked in kferry's own unit tests (src/metrics/tests.rs); that Prometheus
/// answers them for a real flow, in the test above.
#[test]
fn the_dashboard_queries_and_the_example_alerts_pass_promtool() {
    let dir = std::env::temp_dir().join(unique_name("kferry-promtool"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rules = String::from("groups:\n  - name: kferry-dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries(".*", "5m").iter().enumerate() {
        let expr = serde_json::to_string(expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!("      - record: kferry_dashboard:query_{i}\n        expr: {expr}\n"));
    }
    std::fs::write(dir.join("dashboard-rules.yml"), rules).expect("rules written");
    promtool(&dir, &["check", "rules", "dashboard-rules.yml"]);
    let _ = std::fs::remove_dir_all(&dir);
    let alerts = protocol_tests::crate_dir().join("../deploy/prometheus");
    promtool(&alerts, &["check", "rules", "kferry-alerts.yml"]);
    promtool(&alerts, &["test", "rules", "kferry-alerts.test.yml"]);
}
