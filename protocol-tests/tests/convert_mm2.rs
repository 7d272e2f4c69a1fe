//! `kferry convert-mm2` on MirrorMaker 2 configs written the way the Kafka docs and Strimzi
//! write them (`protocol-tests/mm2/*.properties`), each followed by `kferry check --json` on
//! the converted config against the real test clusters: the check must pass and select the
//! topic confluent-kafka created, under the name MM2's policy would give it.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use protocol_tests::{crate_dir, create_topic, kferry_binary, primary, secondary, secure, unique_name};
use serde_json::Value;

/// A file removed when dropped, also when the test fails.
struct TempFile(PathBuf);

impl TempFile {
    fn new(suffix: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}{suffix}", unique_name("kferry-mm2")));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn kferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let run =
        tokio::process::Command::new(kferry_binary()).args(args).envs(env.iter().copied()).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("kferry finishes").expect("kferry runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The fixture `name` with its `@MARKER@`s filled in.
fn fixture(name: &str, markers: &[(&str, String)]) -> String {
    let path = crate_dir().join("mm2").join(name);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (marker, value) in markers {
        text = text.replace(marker, value);
    }
    assert!(!text.contains("@PRIMARY@") && !text.contains("@TOPIC@"), "a marker left in {name}");
    text
}

/// Converts `properties`, checks what went to stderr, then runs `check --json` on the result.
struct Converted {
    yaml: String,
    stderr: String,
    check: Value,
}

async fn convert_and_check(properties: &str, env: &[(&str, &str)]) -> Converted {
    let input = TempFile::new(".properties", properties);
    let out = kferry(&["convert-mm2", input.0.to_str().unwrap()], env).await;
    let (yaml, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "convert-mm2 failed: {stderr}");
    assert!(!stderr.contains("note: the converted config does not pass validation"), "{stderr}\n{yaml}");
    let config = TempFile::new(".yaml", &yaml);
    let out = kferry(&["check", "--json", "--config", config.0.to_str().unwrap()], env).await;
    assert!(
        out.status.success(),
        "check on the converted config failed:\n{yaml}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let check: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(check["healthy"], true, "{check:#}");
    Converted { yaml, stderr, check }
}

/// The target name `check` shows for `topic` in flow `flow`.
fn target_of(check: &Value, flow: &str, topic: &str) -> Option<String> {
    let flow = check["flows"].as_array()?.iter().find(|f| f["name"] == flow)?;
    let entry = flow["topics"].as_array()?.iter().find(|t| t["source"] == topic)?;
    entry["target"].as_str().map(str::to_owned)
}

/// `stderr` reports `key` as not converted, with a reason.
fn reported(stderr: &str, key: &str) -> bool {
    stderr.lines().any(|l| l.starts_with("not converted: ") && l.contains(&format!(": {key}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_docs_config_converts_to_a_prefix_flow() {
    let topic = unique_name("mm2docs");
    create_topic(&primary(), &topic, 2, &[]).await;
    let properties = fixture(
        "kafka-docs.properties",
        &[("@PRIMARY@", primary()), ("@SECONDARY@", secondary()), ("@TOPIC@", topic.clone())],
    );
    let out = convert_and_check(&properties, &[]).await;
    assert_eq!(
        target_of(&out.check, "primary->secondary", &topic),
        Some(format!("primary.{topic}")),
        "{:#}",
        out.check
    );
    assert_eq!(out.check["flows"].as_array().map(Vec::len), Some(1), "secondary->primary is disabled");
    assert!(out.yaml.contains("replication_factor: 1"), "{}", out.yaml);
    assert!(
        out.yaml.contains("sync_topic_acls: true") && out.yaml.contains("sync_group_offsets: false"),
        "{}",
        out.yaml
    );
    for key in [
        "heartbeats.topic.replication.factor",
        "offset-syncs.topic.replication.factor",
        "offset.storage.replication.factor",
    ] {
        assert!(reported(&out.stderr, key), "{key} not reported:\n{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strimzi_identity_config_keeps_topic_names_and_syncs_groups() {
    let topic = unique_name("mm2strimzi");
    create_topic(&primary(), &topic, 1, &[]).await;
    let properties = fixture(
        "strimzi-identity.properties",
        &[("@PRIMARY@", primary()), ("@SECONDARY@", secondary()), ("@TOPIC@", topic.clone())],
    );
    let out = convert_and_check(&properties, &[]).await;
    assert_eq!(target_of(&out.check, "source->target", &topic), Some(topic.clone()), "{:#}", out.check);
    for line in [
        "policy: identity",
        "sync_group_offsets: true",
        "sync_group_offsets_interval_seconds: 30",
        "refresh_topics_interval_seconds: 60",
        "sync_topic_acls: false",
    ] {
        assert!(out.yaml.contains(line), "{line} missing:\n{}", out.yaml);
    }
    assert!(!out.yaml.contains("replication_factor"), "-1 is the target's default:\n{}", out.yaml);
    for key in [
        "tasks.max",
        "key.converter",
        "offset-syncs.topic.location",
        "refresh.groups.interval.seconds",
        "replication.policy.separator",
    ] {
        assert!(reported(&out.stderr, key), "{key} not reported:\n{}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_scram_config_authenticates_with_the_converted_settings() {
    let topic = unique_name("mm2scram");
    create_topic(&secure::plaintext(), &topic, 1, &[]).await;
    let properties = fixture(
        "sasl-ssl-scram.properties",
        &[
            ("@SASL_SSL@", secure::sasl_ssl()),
            ("@CA@", secure::cert_file("ca.pem").display().to_string()),
            ("@PRIMARY@", primary()),
            ("@TOPIC@", topic.clone()),
        ],
    );
    let password = secure::scram_password();
    let out = convert_and_check(&properties, &[("KFERRY_TEST_MM2_PASSWORD", &password)]).await;
    assert!(!out.yaml.contains(&password), "the password stays in the environment:\n{}", out.yaml);
    assert!(out.yaml.contains("password: \"${KFERRY_TEST_MM2_PASSWORD}\""), "{}", out.yaml);
    let onprem = out.check["clusters"].as_array().unwrap().iter().find(|c| c["name"] == "onprem").expect("onprem");
    assert_eq!(onprem["security"], "TLS, SASL SCRAM-SHA-512 as kferry", "{onprem:#}");
    assert_eq!(target_of(&out.check, "onprem->cloud", &topic), Some(format!("onprem.{topic}")), "{:#}", out.check);
    for key in [
        "onprem.producer.compression.type",
        "onprem.ssl.enabled.protocols",
        "emit.heartbeats.enabled",
        "config.providers",
    ] {
        assert!(reported(&out.stderr, key), "{key} not reported:\n{}", out.stderr);
    }
    assert!(!reported(&out.stderr, "onprem.sasl.jaas.config"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_flows_convert_with_their_own_settings() {
    let topic = unique_name("mm2multi");
    create_topic(&primary(), &topic, 1, &[]).await;
    create_topic(&primary(), &format!("{topic}-dr"), 1, &[]).await;
    let properties = fixture(
        "several-flows.properties",
        &[("@PRIMARY@", primary()), ("@SECONDARY@", secondary()), ("@TOPIC@", topic.clone())],
    );
    let out = convert_and_check(&properties, &[]).await;
    let names: Vec<&str> = out.check["flows"].as_array().unwrap().iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(names, ["east->west", "west->east", "east->dr"], "file order");
    assert_eq!(target_of(&out.check, "east->west", &topic), Some(format!("east_{topic}")), "{:#}", out.check);
    assert_eq!(target_of(&out.check, "east->dr", &topic), None, "east->dr has its own topics");
    assert_eq!(target_of(&out.check, "east->dr", &format!("{topic}-dr")), Some(format!("east_{topic}-dr")));
    assert_eq!(out.yaml.matches("sync_topic_configs: false").count(), 1, "{}", out.yaml);
    assert_eq!(out.yaml.matches("groups_exclude: [\"test-.*\", \"console-consumer-.*\"]").count(), 3, "{}", out.yaml);
    assert!(out.stderr.lines().all(|l| !l.starts_with("not converted")), "everything carried over:\n{}", out.stderr);
}
