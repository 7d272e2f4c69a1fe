//! The seed's disaster-recovery drill, as an operator runs it: a real Kafka Connect cluster
//! (connect-runtime 4.3.1, distributed mode, Connect's default internal topic names) runs a
//! file source and a file sink connector on the primary; kferry replicates `.*` with identity
//! names and syncs every group. Twice round: Connect stopped, planned failover, the same
//! Connect cluster started on the secondary resumes both connectors from the replicated
//! `connect-configs`/`connect-offsets` and the sink's translated group offsets; Connect
//! stopped again, failback (incremental the first time, reset with the compact-only
//! `connect-*` topics recreated the second), Connect back on the primary resumes again.
//!
//! "Nothing twice" is checked where an operator would see it: every line of the source
//! file is in the topic exactly once (nothing produced twice) and in the sink's file exactly
//! once (nothing consumed twice), read with confluent-kafka and from the file. The clusters
//! are the test's own (it needs `.*`, which on the shared clusters would copy every other
//! test's topics).

use std::path::Path;
use std::time::Duration;

use protocol_tests::connect::ConnectWorker;
use protocol_tests::dr::{kferry_json, wait_for_content};
use protocol_tests::{consume, content, create_topic, eventually, unique_name, Kferry, OwnCluster};
use serde_json::json;

/// First of the five ports the drill uses: primary broker and controller, secondary broker
/// and controller, Connect's REST listener. `KFERRY_TEST_DRILL_PORT`, by default 19694
/// (after the disaster test's 19692-19693, outside every range scripts/test and the
/// benchmarks use).
fn drill_port() -> u16 {
    std::env::var("KFERRY_TEST_DRILL_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19694)
}

const TOPIC: &str = "drill-lines";
const CONNECT_GROUP: &str = "drill-connect";

/// Appends lines `from..from + count` to the source connector's file.
fn append_lines(file: &Path, from: usize, count: usize) {
    use std::io::Write;
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(file).expect("input file opens");
    for n in from..from + count {
        writeln!(out, "drill line {n:06}").expect("line written");
    }
}

/// The lines of a file, sorted (the sink writes the topic's partitions interleaved).
fn sorted_lines(file: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(file).unwrap_or_default().lines().map(String::from).collect();
    lines.sort();
    lines
}

/// Waits until the sink's file holds every line of the source's file once; a line twice
/// fails at once.
async fn wait_for_sink(input: &Path, output: &Path, what: &str) {
    let expected = sorted_lines(input);
    eventually(what, Duration::from_secs(90), || async {
        let got = sorted_lines(output);
        assert!(got.windows(2).all(|w| w[0] != w[1]), "{what}: a line consumed twice: {got:?}");
        assert!(got.len() <= expected.len(), "{what}: {} lines, more than the {} written", got.len(), expected.len());
        (got == expected).then_some(())
    })
    .await;
}

/// The topic on `bootstrap` holds every line of the source's file exactly once.
async fn assert_produced_once(bootstrap: &str, input: &Path, what: &str) {
    let mut values: Vec<String> = consume(bootstrap, TOPIC, "read_committed", 0)
        .await
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default()).expect("a line is UTF-8"))
        .collect();
    values.sort();
    assert_eq!(values, sorted_lines(input), "{what}: the topic holds each line of the file once");
}

/// Starts Connect on `bootstrap` and waits for both connectors (already configured in
/// `connect-configs`) to run.
async fn connect_on(bootstrap: &str, dir: &Path, label: &str) -> ConnectWorker {
    let worker = ConnectWorker::start(bootstrap, CONNECT_GROUP, drill_port() + 4, dir, label).await;
    for connector in ["drill-source", "drill-sink"] {
        worker.wait_running(connector).await;
    }
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_moves_to_the_secondary_and_back_twice_with_no_record_twice() {
    let primary = OwnCluster::start("drillp", drill_port()).await;
    let secondary = OwnCluster::start("drills", drill_port() + 2).await;
    let flow = "primary->secondary";
    let config = format!(
        "clusters:\n  primary: {{ bootstrap_servers: [\"{}\"] }}\n  secondary: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - source: primary\n    target: secondary\n    topics: [\".*\"]\n    groups: [\".*\"]\n    \
         refresh_topics_interval_seconds: 1\n    sync_group_offsets_interval_seconds: 1\n",
        primary.bootstrap, secondary.bootstrap
    );
    let dir = std::env::temp_dir().join(unique_name("connect-drill"));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.txt"), dir.join("out.txt"));
    let mut written = 0;
    append_lines(&input, written, 100);
    written += 100;

    create_topic(&primary.bootstrap, TOPIC, 3, &[]).await;
    let mut worker = ConnectWorker::start(&primary.bootstrap, CONNECT_GROUP, drill_port() + 4, &dir, "primary-0").await;
    let file = |path: &Path| path.to_str().unwrap().to_string();
    worker
        .put_connector(
            "drill-source",
            json!({"connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                   "tasks.max": "1", "file": file(&input), "topic": TOPIC}),
        )
        .await;
    worker
        .put_connector(
            "drill-sink",
            json!({"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
                   "tasks.max": "1", "file": file(&output), "topics": TOPIC}),
        )
        .await;
    for connector in ["drill-source", "drill-sink"] {
        worker.wait_running(connector).await;
    }
    wait_for_sink(&input, &output, "the sink on the primary").await;
    let mut kferry = Kferry::start("run", &config);

    for (cycle, mode) in [(1, "incremental"), (2, "reset")] {
        // Planned failover: the operator sees the secondary caught up, stops the applications
        // (Connect), then kferry drains what they wrote last and fences the flow.
        let on_primary = content(&consume(&primary.bootstrap, TOPIC, "read_committed", 0).await);
        wait_for_content(&secondary.bootstrap, TOPIC, &on_primary, &format!("cycle {cycle}: on the secondary")).await;
        worker.stop().await;
        let failover = kferry_json("failover", &["--flow", flow, "--planned", "--json"], &config).await;
        for point in failover["partitions"].as_array().unwrap() {
            assert_eq!(point["source_end"], point["replicated_to"], "cycle {cycle}: {point}");
        }
        let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(code, Some(1), "cycle {cycle}: the forward kferry stops by itself:\n{stderr}");

        // The same Connect cluster on the secondary: its connectors come from the copied
        // configs, the source continues at its copied file position, the sink at its group's
        // translated offsets.
        worker = connect_on(&secondary.bootstrap, &dir, &format!("secondary-{cycle}")).await;
        let mut connectors = worker.connectors().await;
        connectors.sort();
        assert_eq!(connectors, ["drill-sink", "drill-source"], "cycle {cycle}");
        append_lines(&input, written, 50);
        written += 50;
        wait_for_sink(&input, &output, &format!("cycle {cycle}: the sink on the secondary")).await;
        assert_produced_once(&secondary.bootstrap, &input, &format!("cycle {cycle}: secondary")).await;

        // Failback: Connect stops on the secondary, the primary gets the secondary's data back.
        worker.stop().await;
        let on_secondary = content(&consume(&secondary.bootstrap, TOPIC, "read_committed", 0).await);
        let mut args = vec!["--flow", flow, "--mode", mode, "--json"];
        if mode == "reset" {
            let plan = kferry_json("failback", &[&args[..], &["--dry-run"]].concat(), &config).await;
            let mut recreated: Vec<&str> =
                plan["recreate"].as_array().unwrap().iter().map(|t| t["topic"].as_str().unwrap()).collect();
            recreated.sort();
            assert_eq!(recreated, ["connect-configs", "connect-offsets", "connect-status"], "{plan}");
            args.push("--yes");
        }
        let runner = Kferry::start_with("failback", &args, &config);
        wait_for_content(&primary.bootstrap, TOPIC, &on_secondary, &format!("cycle {cycle}: back on the primary"))
            .await;
        kferry_json("failback", &["--flow", flow, "--complete", "--json"], &config).await;
        let (code, _, stderr) = runner.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(code, Some(0), "cycle {cycle}: the failback process exits by itself:\n{stderr}");

        // Connect back on the primary resumes again, and the forward flow protects it again.
        worker = connect_on(&primary.bootstrap, &dir, &format!("primary-{cycle}")).await;
        kferry = Kferry::start("run", &config);
        append_lines(&input, written, 50);
        written += 50;
        wait_for_sink(&input, &output, &format!("cycle {cycle}: the sink on the primary again")).await;
        assert_produced_once(&primary.bootstrap, &input, &format!("cycle {cycle}: primary")).await;
    }
    worker.stop().await;
    let (took, code, _, stderr) = kferry.stop_timed().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
