//! Failover and failback on real Kafka, as an operator runs them: `kferry run`, `kferry
//! failover` and `kferry failback` are subprocesses; what the clusters hold afterwards and
//! where groups continue is read with confluent-kafka (read_committed), never with kferry.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::{
    alias, consume, create_topic, eventually, group_consume, primary, produce, secondary, two_cluster_config,
    unique_name, ConsumedRecord, Kferry,
};
use serde_json::Value;

/// Per partition, the records as (key, value, headers, timestamp), in order.
type Content = BTreeMap<i32, Vec<(Option<Vec<u8>>, Option<Vec<u8>>, protocol_tests::Headers, i64)>>;

fn content(records: &[ConsumedRecord]) -> Content {
    let mut by_partition = Content::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push((
            r.key.clone(),
            r.value.clone(),
            r.headers.clone(),
            r.timestamp,
        ));
    }
    by_partition
}

fn by_partition(records: &[ConsumedRecord]) -> BTreeMap<i32, Vec<ConsumedRecord>> {
    let mut map: BTreeMap<i32, Vec<ConsumedRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r.clone());
    }
    map
}

fn same_record(a: &ConsumedRecord, b: &ConsumedRecord) -> bool {
    (&a.key, &a.value, &a.headers, a.timestamp) == (&b.key, &b.value, &b.headers, b.timestamp)
}

/// A config with the flow `<p> -> <s>` over `topic`, syncing `group`, every second.
fn dr_config(source: &str, target: &str, topic: &str, group: &str) -> String {
    two_cluster_config(
        source,
        target,
        &format!(
            "    topics: [\"{topic}\"]\n    groups: [\"{group}\"]\n    refresh_topics_interval_seconds: 1\n    \
             sync_group_offsets_interval_seconds: 1\n"
        ),
    )
}

async fn wait_for_content(bootstrap: &str, topic: &str, expected: &Content, what: &str) {
    let total: usize = expected.values().map(Vec::len).sum();
    eventually(what, Duration::from_secs(120), || async {
        let records = consume(bootstrap, topic, "read_committed", 0).await;
        assert!(records.len() <= total, "{what}: {} records, more than the {total} expected", records.len());
        (content(&records) == *expected).then_some(())
    })
    .await;
}

/// Runs a kferry command to its end; it must succeed; returns its stdout as JSON.
async fn kferry_json(command: &str, args: &[&str], config: &str) -> Value {
    let (code, stdout, stderr) = Kferry::run_to_end_with(command, args, config).await;
    assert_eq!(code, Some(0), "kferry {command} {args:?} failed:\n{stderr}\n{stdout}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("kferry {command} {args:?} printed no JSON ({e}):\n{stdout}"))
}

/// The first record of every partition the group reads on `bootstrap` (not committed).
async fn first_records(bootstrap: &str, topic: &str, group: &str) -> BTreeMap<i32, ConsumedRecord> {
    by_partition(&group_consume(bootstrap, topic, group, "1", &["--no-commit", "--timeout", "20"]).await)
        .into_iter()
        .map(|(p, records)| (p, records[0].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover_then_reset_failback_returns_the_pair_without_duplicates() {
    let (p, s) = (alias("p"), alias("s"));
    let flow = format!("{p}->{s}");
    let topic = unique_name("dr-planned");
    let group = unique_name("dr-group");
    let config = dr_config(&p, &s, &topic, &group);
    create_topic(&primary(), &topic, 3, &[]).await;
    let txn = unique_name("txn");
    produce(&primary(), &topic, 300, "lz4", &["--transactional-id", &txn, "--txn-size", "7", "--abort-every", "3"])
        .await;
    let kferry = Kferry::start("run", &config);
    let consumed_on_primary = by_partition(&group_consume(&primary(), &topic, &group, "20", &[]).await);
    let on_primary = consume(&primary(), &topic, "read_committed", 0).await;
    wait_for_content(&secondary(), &topic, &content(&on_primary), "everything on the secondary").await;

    // Planned failover: producers stopped; nothing left behind; the running flow is fenced.
    let dry_run = kferry_json("failover", &["--flow", &flow, "--planned", "--dry-run", "--json"], &config).await;
    let failover = kferry_json("failover", &["--flow", &flow, "--planned", "--json"], &config).await;
    for point in failover["partitions"].as_array().unwrap() {
        assert_eq!(point["source_end"], point["replicated_to"], "{point}");
    }
    assert_eq!(dry_run["partitions"], failover["partitions"], "the dry run shows the failover point it then records");
    let (code, _, stderr) = tokio::time::timeout(Duration::from_secs(60), kferry.stop()).await.expect("kferry ends");
    assert!(stderr.contains("another kferry instance took over") || code == Some(0), "{stderr}");
    let (code, _, stderr) = Kferry::run_to_end("run", &config).await;
    assert_eq!(code, Some(1), "a failed-over flow must not run again:\n{stderr}");
    assert!(stderr.contains("failed over"), "{stderr}");

    // The group resumes on the secondary at exactly the next record.
    let source = by_partition(&on_primary);
    let first = first_records(&secondary(), &topic, &group).await;
    for (partition, record) in &first {
        let next = &source[partition][consumed_on_primary[partition].len()];
        assert!(same_record(record, next), "partition {partition}: got {record:?}, expected {next:?}");
    }
    let groups = failover["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{groups:?}");

    // Producers write to the secondary; the group moves on there.
    produce(&secondary(), &topic, 90, "zstd", &["--base-timestamp", "1600000000000"]).await;
    let moved_on_secondary = by_partition(&group_consume(&secondary(), &topic, &group, "30", &[]).await);
    let on_secondary = consume(&secondary(), &topic, "read_committed", 0).await;

    // Failback, reset mode: the primary's copy is deleted and everything comes back once.
    let plan = kferry_json("failback", &["--flow", &flow, "--mode", "reset", "--dry-run", "--json"], &config).await;
    let runner = Kferry::start_with("failback", &["--flow", &flow, "--mode", "reset", "--json"], &config);
    wait_for_content(&primary(), &topic, &content(&on_secondary), "the secondary's records back on the primary").await;
    let complete = kferry_json("failback", &["--flow", &flow, "--complete", "--json"], &config).await;
    let (code, stdout, stderr) =
        tokio::time::timeout(Duration::from_secs(60), runner.stop()).await.expect("runner ends");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("fenced by `failback --complete`"), "{stderr}");
    let acted: Value = serde_json::Deserializer::from_str(&stdout).into_iter().next().unwrap().unwrap();
    assert_eq!(acted["partitions"], plan["partitions"], "the dry run lists what the real run then does");
    assert_eq!(acted["groups"], plan["groups"]);
    for partition in complete["lag"].as_array().unwrap() {
        assert_eq!(partition[2], 0, "{partition}");
    }

    // The primary holds every record exactly once in its live range, and the group
    // continues there at the next record.
    let back_on_primary = consume(&primary(), &topic, "read_committed", 0).await;
    assert_eq!(content(&back_on_primary), content(&on_secondary));
    let secondary_records = by_partition(&on_secondary);
    let first = first_records(&primary(), &topic, &group).await;
    for (partition, record) in &first {
        let read = consumed_on_primary[partition].len() + moved_on_secondary[partition].len();
        let next = &secondary_records[partition][read];
        assert!(same_record(record, next), "partition {partition}: got {record:?}, expected {next:?}");
    }

    // The forward flow runs again from the right place: new records reach the secondary
    // once, nothing already there comes back a second time.
    let kferry = Kferry::start("run", &config);
    produce(&primary(), &topic, 60, "gzip", &["--base-timestamp", "1700000000000"]).await;
    let everything = consume(&primary(), &topic, "read_committed", 0).await;
    wait_for_content(&secondary(), &topic, &content(&everything), "the forward flow copying new records").await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}
