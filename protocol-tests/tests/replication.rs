//! Records replicated by `kferry run` (a subprocess) between the real test clusters, read
//! back on both sides by confluent-kafka: every committed source record must be on the
//! target exactly once, with the same key, value, headers, timestamp, partition and order.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::{
    consume, create_topic, eventually, primary, produce, secondary, two_cluster_config, unique_flow_config,
    unique_name, wait_until_replicated, ConsumedRecord, Content, Kferry, Payload, CODECS,
};

/// A record's key, value, headers and timestamp.
/// [`protocol_tests::content`] of records that must all carry CreateTime timestamps.
fn content(records: &[ConsumedRecord]) -> Content {
    assert!(records.iter().all(|r| r.timestamp_type == "create_time"));
    protocol_tests::content(records)
}

fn flow_config(topics: &str, delivery: &str) -> String {
    unique_flow_config(&format!(
        "    topics: [\"{topics}\"]\n    delivery: {delivery}\n    refresh_topics_interval_seconds: 1\n"
    ))
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
    let source = consume(&primary(), &topic, "read_committed", 5_000).await;
    let target = eventually("every record on the target", Duration::from_secs(120), || async {
        let target = consume(&secondary(), &topic, "read_committed", 0).await;
        (target.len() >= 5_000).then_some(target)
    })
    .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    if stderr.contains("transaction round abandoned") {
        // A failed cycle (a timeout on a loaded machine) is retried from the last committed
        // progress: at least once means its records may come twice, never that one is lost,
        // and each partition's records stay in their order.
        for (partition, records) in content(&source) {
            let copied = &content(&target)[&partition];
            let mut at = 0;
            for record in &records {
                at += copied[at..].iter().position(|r| r == record).expect("every source record, in order") + 1;
            }
        }
    } else {
        assert_eq!(content(&target), content(&source), "no failure, so not a record more");
    }
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

/// Records of a topic as (partition, key, value, headers, timestamp), timestamp type aside.
fn records_without_type(records: &[ConsumedRecord]) -> Vec<(i32, Payload)> {
    records.iter().map(|r| (r.partition, (r.key.clone(), r.value.clone(), r.headers.clone(), r.timestamp))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_source_batches_take_the_slow_path() {
    let topic = unique_name("compacted");
    let cleaner = [
        "cleanup.policy=compact",
        "segment.ms=100",
        "min.cleanable.dirty.ratio=0.01",
        "min.compaction.lag.ms=0",
        "delete.retention.ms=100",
    ];
    create_topic(&primary(), &topic, 2, &cleaner).await;
    let mut produced = 0;
    // Several rounds so segments roll and the cleaner leaves gaps inside batches; every
    // codec, so the slow path recompresses each of them.
    let remaining = eventually("the log cleaner compacting the source", Duration::from_secs(120), || {
        let topic = topic.clone();
        produced += 600;
        let codec = CODECS[(produced / 600) % CODECS.len()];
        async move {
            produce(&primary(), &topic, 600, codec, &["--key-space", "40"]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let remaining = consume(&primary(), &topic, "read_committed", 0).await.len();
            (remaining < produced / 2).then_some(remaining)
        }
    })
    .await;
    // Both sides keep compacting (the target copy gets the same cleaner configs), so record
    // counts move; what must agree once kferry's progress reaches the source's end is the
    // newest value of every key, which compaction always keeps.
    let (source_alias, target_alias) = (protocol_tests::alias("cp"), protocol_tests::alias("cs"));
    let config = protocol_tests::two_cluster_config(
        &source_alias,
        &target_alias,
        &format!("    topics: [\"{topic}\"]\n    refresh_topics_interval_seconds: 1\n"),
    );
    let kferry = Kferry::start("run", &config);
    let progress_group = format!("kferry.progress.{source_alias}.{target_alias}");
    let (source_cluster, target_cluster) = (
        protocol_tests::connect("primary", &primary()).await,
        protocol_tests::connect("secondary", &secondary()).await,
    );
    eventually("kferry's progress at the end of the source", Duration::from_secs(120), || async {
        let mut source_end = 0;
        for partition in 0..2 {
            source_end += source_cluster
                .list_offset(
                    &topic,
                    partition,
                    kferry::client::OffsetSpec::Latest,
                    kferry::client::Isolation::ReadCommitted,
                )
                .await
                .ok()?;
        }
        let committed = target_cluster.fetch_group_offsets(&progress_group).await.ok()?;
        let progress: i64 = committed.iter().filter(|((t, _), _)| *t == topic).map(|(_, c)| c.offset).sum();
        (progress == source_end).then_some(())
    })
    .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let newest = |records: &[ConsumedRecord]| {
        let mut latest = BTreeMap::new();
        for r in records {
            latest.insert((r.partition, r.key.clone()), (r.value.clone(), r.headers.clone(), r.timestamp));
        }
        latest
    };
    let source = consume(&primary(), &topic, "read_committed", 0).await;
    let target = consume(&secondary(), &topic, "read_committed", 0).await;
    assert_eq!(newest(&target), newest(&source), "the newest value of every key is the same on both sides");
    assert!(stderr.contains("slow path"), "the slow path is reported:\n{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let rewritten: u64 = stderr
        .lines()
        .filter(|l| l.contains("flow stopped"))
        .find_map(|l| l.split("rewritten=").nth(1)?.split_whitespace().next()?.parse().ok())
        .expect("rewritten count in the final log line");
    assert!(rewritten > 0, "{stderr}");
    println!(
        "{produced} produced, {remaining} left by the cleaner, {} on the target, {rewritten} batches rewritten",
        target.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_append_time_source_keeps_the_timestamps_consumers_saw() {
    let topic = unique_name("log-append");
    create_topic(&primary(), &topic, 2, &["message.timestamp.type=LogAppendTime"]).await;
    produce(&primary(), &topic, 2_000, "zstd", &[]).await;
    let source = consume(&primary(), &topic, "read_committed", 2_000).await;
    assert!(source.iter().all(|r| r.timestamp_type == "log_append_time"));
    let kferry = Kferry::start("run", &flow_config(&topic, "exactly_once"));
    let target = wait_until_replicated(&topic, 2_000).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(target.iter().all(|r| r.timestamp_type == "create_time"), "the target topic uses CreateTime");
    assert_eq!(records_without_type(&target), records_without_type(&source), "same records and timestamps");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_map_on_the_target_maps_every_record_exactly() {
    let topic = unique_name("mapped");
    create_topic(&primary(), &topic, 2, &[]).await;
    let txn = unique_name("mapped-txn");
    // Aborted transactions and markers leave gaps in the source offsets.
    let args = ["--transactional-id", txn.as_str(), "--txn-size", "7", "--abort-every", "2"];
    let summary = produce(&primary(), &topic, 400, "lz4", &args).await;
    let committed = summary["committed"].as_u64().unwrap() as usize;
    let (source_alias, target_alias) = (protocol_tests::alias("mp"), protocol_tests::alias("ms"));
    let config = protocol_tests::two_cluster_config(
        &source_alias,
        &target_alias,
        &format!("    topics: [\"{topic}\"]\n    refresh_topics_interval_seconds: 1\n"),
    );
    let kferry = Kferry::start("run", &config);
    let target = wait_until_replicated(&topic, committed).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let source = consume(&primary(), &topic, "read_committed", committed).await;

    let cluster = protocol_tests::connect("secondary", &secondary()).await;
    let state_topic = format!("__kferry.offset-map.{source_alias}");
    let maps = kferry::replicate::state::load(&cluster, &state_topic).await.expect("state topic readable");
    for partition in 0..2 {
        let (target_topic, map) = &maps[&(topic.clone(), partition)];
        assert_eq!(target_topic, &topic);
        let on_source: Vec<&ConsumedRecord> = source.iter().filter(|r| r.partition == partition).collect();
        let on_target: Vec<&ConsumedRecord> = target.iter().filter(|r| r.partition == partition).collect();
        assert_eq!(on_source.len(), on_target.len());
        for (s, t) in on_source.iter().zip(&on_target) {
            assert_eq!(map.translate(s.offset), Some(t.offset), "partition {partition}: source offset {}", s.offset);
        }
        // A consumer positioned inside an aborted range or at a marker continues at the
        // next committed record, on the target as on the source.
        for pair in on_source.windows(2).zip(on_target.windows(2)) {
            let ((s0, s1), (_, t1)) = ((pair.0[0], pair.0[1]), (pair.1[0], pair.1[1]));
            for gap in s0.offset + 1..s1.offset {
                assert_eq!(map.translate(gap), Some(t1.offset), "partition {partition}: offset {gap} in a gap");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_target_refuses_stops_only_its_partition() {
    let prefix = unique_name("refused-batch");
    // The target copy of `big` takes no batch over 300 bytes; kferry must not sync that
    // limit away, so the flow excludes it from config sync.
    let (big, small) = protocol_tests::refused_batch_topics(&prefix).await;
    let config = unique_flow_config(&format!(
        "    topics: [\"{prefix}-.*\"]\n    topic_configs_exclude: [\"max.message.bytes\"]\n    refresh_topics_interval_seconds: 1\n"
    ));
    let kferry = Kferry::start("run", &config);
    let target = wait_until_replicated(&small, 300).await;
    let source = consume(&primary(), &small, "read_committed", 300).await;
    assert_eq!(content(&target), content(&source), "the other topic is replicated in full");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(consume(&secondary(), &big, "read_committed", 0).await.is_empty(), "no batch of the refused partition");
    let stopped: Vec<&str> = stderr.lines().filter(|l| l.contains("partition stopped")).collect();
    assert_eq!(stopped.len(), 1, "reported once:\n{stderr}");
    assert!(
        stopped[0].contains(&big) && stopped[0].contains("MESSAGE_TOO_LARGE") && stopped[0].contains("offset=0"),
        "{}",
        stopped[0]
    );
}

/// `log.format: json` in the config: `kferry run` writes nothing but JSON objects on
/// standard error, and an event about one partition carries `flow`, `topic` and
/// `partition` as fields of its own (a number for the partition), beside `timestamp`,
/// `level`, `target` and `message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_flow_topic_and_partition_as_fields() {
    let topic = unique_name("json-logs");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 100, "none", &[]).await;
    let (source, target) = (protocol_tests::alias("p"), protocol_tests::alias("s"));
    let flow = format!("{source}->{target}");
    let keys =
        format!("    topics: [\"{topic}\"]\n    refresh_topics_interval_seconds: 1\n    sync_group_offsets: false\n");
    let config = format!("{}log:\n  format: json\n", two_cluster_config(&source, &target, &keys));
    // The per-partition start is a debug event of the engine's partition tracking.
    let env = [("KFERRY_LOG", "info,kferry::replicate::engine::tracking=debug")];
    let kferry = Kferry::start_with_env("run", &config, &env);
    wait_until_replicated(&topic, 100).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let events: Vec<serde_json::Map<String, serde_json::Value>> = stderr
        .lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(event)) => event,
            _ => panic!("a log line that is not a JSON object: {line}\n{stderr}"),
        })
        .collect();
    for event in &events {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(event.get(key).is_some_and(serde_json::Value::is_string), "no {key} in {event:?}");
        }
        assert_ne!(event["level"], "ERROR", "{stderr}");
    }
    let mut partitions: Vec<i64> = events
        .iter()
        .filter(|e| e["message"] == "replication of a new partition starts" && e["topic"] == topic.as_str())
        .inspect(|e| assert_eq!(e["flow"], flow.as_str(), "{e:?}"))
        .map(|e| e["partition"].as_i64().unwrap_or_else(|| panic!("partition is not a number: {e:?}")))
        .collect();
    partitions.sort_unstable();
    assert_eq!(partitions, [0, 1], "{stderr}");
    let stopped = events.iter().find(|e| e["message"] == "flow stopped").unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(stopped["flow"], flow.as_str());
    assert_eq!(stopped["records"], 100, "{stopped:?}");
}
