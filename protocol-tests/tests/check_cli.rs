//! `kferry check`, run as a subprocess against the real test clusters: what it prints for
//! healthy clusters and flows, and how it fails on a misspelt key or an unreachable cluster.

use std::process::Output;

use protocol_tests::{create_topic, kafka_version, kferry_binary, primary, secondary, unique_name};

/// A config file that removes itself when dropped.
struct TempConfig(std::path::PathBuf);

impl TempConfig {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.yaml", unique_name("kferry-check")));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn check(config_text: &str) -> Output {
    let config = TempConfig::new(config_text);
    let run = tokio::process::Command::new(kferry_binary()).args(["check", "--config"]).arg(&config.0).output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("check finishes").expect("check runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn config(primary: &str, secondary: &str, flow_extra: &str) -> String {
    format!(
        "clusters:\n  primary: {{ bootstrap_servers: [\"{primary}\"] }}\n  secondary: {{ bootstrap_servers: [\"{secondary}\"] }}\nflows:\n  - source: primary\n    target: secondary\n{flow_extra}"
    )
}

/// What `check` must infer from ApiVersions for the release the clusters run.
fn expected_release_range() -> &'static str {
    match kafka_version().as_str() {
        v if v.starts_with("3.9") => "Kafka >= 3.8, < 4.0",
        v if v.starts_with("4.") && !v.starts_with("4.0") => "Kafka >= 4.1",
        other => panic!("no expectation for Kafka {other}; add one"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_both_clusters_and_the_selected_topics() {
    let topic = unique_name("check-orders");
    create_topic(&primary(), &topic, 3, &[]).await;
    let out = check(&config(&primary(), &secondary(), "    policy: prefix\n")).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, text(&out.stderr));
    for cluster in ["primary", "secondary"] {
        assert!(stdout.contains(&format!("cluster {cluster}: id ")), "{stdout}");
    }
    assert!(stdout.contains(expected_release_range()), "{stdout}");
    assert!(stdout.contains(&format!("{topic} -> primary.{topic} (3 partitions)")), "{stdout}");
    assert!(!stdout.contains("__consumer_offsets ->"), "broker-internal topics are never selected:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misspelt_key_is_refused_naming_the_key_and_line() {
    let out = check(&config(&primary(), &secondary(), "    polcy: identity\n")).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("flows[0]") && stderr.contains("polcy") && stderr.contains("line 7"), "{stderr}");
    assert!(stderr.contains("allowed:"), "says what is allowed: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_is_named_with_its_address() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = check(&config(&primary(), &address, "")).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("cluster secondary: UNREACHABLE"), "{stdout}");
    assert!(stderr.contains("cluster secondary") && stderr.contains(&address), "{stderr}");
    assert!(stdout.contains("cluster primary: id "), "the reachable cluster is still checked: {stdout}");
}

async fn kferry_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let run =
        tokio::process::Command::new(kferry_binary()).args(args).envs(env.iter().copied()).kill_on_drop(true).output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("kferry finishes").expect("kferry runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_plan_read_kferry_config_and_print_json() {
    let topic = unique_name("check-json");
    create_topic(&primary(), &topic, 2, &[]).await;
    let file =
        TempConfig::new(&config(&primary(), &secondary(), &format!("    policy: prefix\n    topics: [\"{topic}\"]\n")));
    let env = [("KFERRY_CONFIG", file.0.to_str().unwrap())];

    let out = kferry_with_env(&["check", "--json"], &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    assert_eq!(report["healthy"], true, "{report:#}");
    assert_eq!(report["clusters"].as_array().map(Vec::len), Some(2), "{report:#}");
    let topics = &report["flows"][0]["topics"];
    assert_eq!(topics[0]["source"], topic.as_str(), "{report:#}");
    assert_eq!(topics[0]["target"], format!("primary.{topic}"), "{report:#}");
    assert_eq!(topics[0]["partitions"], 2, "{report:#}");

    let out = kferry_with_env(&["plan", "--json"], &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json prints JSON");
    assert_eq!(plans[0]["flow"], "primary->secondary", "{plans:#}");
    let changes = plans[0]["plan"]["changes"].as_array().expect("changes");
    let create = changes.iter().find(|c| c["kind"] == "create_topic").expect("a topic to create");
    assert_eq!(create["topic"]["name"], format!("primary.{topic}"), "{plans:#}");
    assert_eq!(create["topic"]["partitions"], 2, "{plans:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_exit_codes_and_a_misspelt_command_gets_a_suggestion() {
    let out = kferry_with_env(&["--help"], &[]).await;
    let help = text(&out.stdout);
    assert!(out.status.success());
    for wanted in ["Exit codes:", "KFERRY_CONFIG", "convert-mm2"] {
        assert!(help.contains(wanted), "{wanted} missing:\n{help}");
    }
    assert!(!help.contains('\u{1b}'), "no colour codes when not on a terminal:\n{help}");
    let out = kferry_with_env(&["chek"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("similar") && stderr.contains("'check'"), "{stderr}");
    let out = kferry_with_env(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "no --config and no KFERRY_CONFIG");
}
