//! Records replicated by `kferry run` (a subprocess) between the real test clusters, read
//! back on both sides by confluent-kafka: every committed source record must be on the
//! target exactly once, with the same key, value, headers, timestamp, partition and order.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::{
    consume, create_topic, describe_topic, eventually, primary, produce, secondary, two_cluster_config, unique_name,
    ConsumedRecord, Kferry, CODECS,
};

/// Per partition, the records in order without their offsets (the target's offsets differ:
/// kferry's own transaction markers take offsets there).
type Content = BTreeMap<i32, Vec<(Option<Vec<u8>>, Option<Vec<u8>>, Vec<(String, Option<Vec<u8>>)>, i64)>>;

fn content(records: &[ConsumedRecord]) -> Content {
    let mut by_partition = Content::new();
    for r in records {
        assert_eq!(r.timestamp_type, "create_time");
        by_partition.entry(r.partition).or_default().push((
            r.key.clone(),
            r.value.clone(),
            r.headers.clone(),
            r.timestamp,
        ));
    }
    by_partition
}

async fn wait_until_replicated(topic: &str, expected: usize) -> Vec<ConsumedRecord> {
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

fn flow_config(topics: &str, delivery: &str) -> String {
    two_cluster_config(
        "primary",
        "secondary",
        &format!("    topics: [\"{topics}\"]\n    delivery: {delivery}\n    refresh_topics_interval_seconds: 1\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_replicates_exactly_once_with_identical_records() {
    let prefix = unique_name("codecs");
    const TOPICS: usize = 8;
    const PER_TOPIC: u32 = 25_000; // 200,000 records in all
    let mut sources = Vec::new();
    for i in 0..TOPICS {
        let topic = format!("{prefix}-{i}");
        create_topic(&primary(), &topic, 4, &[]).await;
        produce(&primary(), &topic, PER_TOPIC, CODECS[i % CODECS.len()], &[]).await;
        sources.push(topic);
    }
    let kferry = Kferry::start("run", &flow_config(&format!("{prefix}-.*"), "exactly_once"));
    for topic in &sources {
        let target = wait_until_replicated(topic, PER_TOPIC as usize).await;
        let source = consume(&primary(), topic, "read_committed", PER_TOPIC as usize).await;
        assert_eq!(content(&target), content(&source), "{topic}: target differs from source");
    }
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_source_transactions_never_reach_the_target() {
    let topic = unique_name("txn-source");
    create_topic(&primary(), &topic, 2, &[]).await;
    let txn = unique_name("source-txn");
    let args = ["--transactional-id", txn.as_str(), "--txn-size", "10", "--abort-every", "3"];
    let summary = produce(&primary(), &topic, 300, "snappy", &args).await;
    let committed = summary["committed"].as_u64().unwrap() as usize;
    assert_eq!(committed, 200);
    let kferry = Kferry::start("run", &flow_config(&topic, "exactly_once"));
    let target = wait_until_replicated(&topic, committed).await;
    let source = consume(&primary(), &topic, "read_committed", committed).await;
    assert_eq!(content(&target), content(&source));
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_replicates_every_record() {
    let topic = unique_name("alo");
    create_topic(&primary(), &topic, 3, &[]).await;
    produce(&primary(), &topic, 5_000, "gzip", &[]).await;
    let kferry = Kferry::start("run", &flow_config(&topic, "at_least_once"));
    let target = wait_until_replicated(&topic, 5_000).await;
    let source = consume(&primary(), &topic, "read_committed", 5_000).await;
    assert_eq!(content(&target), content(&source), "no failure, so not a record more");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_kferry_leaves_no_duplicates() {
    let topic = unique_name("kill");
    create_topic(&primary(), &topic, 4, &[]).await;
    let config = flow_config(&topic, "exactly_once");
    let mut total = 0;
    for round in 0..3u32 {
        let count = 8_000;
        produce(&primary(), &topic, count, CODECS[round as usize % CODECS.len()], &[]).await;
        total += count as usize;
        let kferry = Kferry::start("run", &config);
        tokio::time::sleep(Duration::from_millis(700 + 400 * u64::from(round))).await;
        kferry.kill().await;
    }
    let kferry = Kferry::start("run", &config);
    let target = wait_until_replicated(&topic, total).await;
    let source = consume(&primary(), &topic, "read_committed", total).await;
    assert_eq!(content(&target), content(&source), "every record exactly once after 3 SIGKILLs");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}
