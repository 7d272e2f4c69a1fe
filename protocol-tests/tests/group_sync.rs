//! Consumer-group offset sync on the real test clusters: groups consume on the source with
//! confluent-kafka, `kferry run` (a subprocess) syncs their offsets, and the same group id on
//! the target (confluent-kafka again, read_committed) must continue at exactly the next
//! record: nothing read twice, nothing skipped, across aborted transactions and compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::{
    alias, by_partition, consume, create_topic, describe_group, eventually, expected_target_offset, group_consume,
    mm2_translate_offsets, primary, produce, secondary, spawn_group_member, two_cluster_config, unique_flow_config,
    unique_name, wait_until_replicated, ConsumedRecord, Kferry,
};

/// A flow that replicates `topic` and syncs the groups matching `groups` every `interval`
/// seconds.
fn flow_config(topic: &str, groups: &str, interval: u64) -> String {
    unique_flow_config(&format!(
        "    topics: [\"{topic}\"]\n    groups: [\"{groups}\"]\n    refresh_topics_interval_seconds: 1\n    \
         sync_group_offsets_interval_seconds: {interval}\n"
    ))
}

/// Waits until `group` has committed offsets on the target for every one of `partitions`.
async fn wait_for_target_offsets(topic: &str, group: &str, partitions: i32) -> BTreeMap<String, i64> {
    eventually(&format!("offsets of group {group} on the target"), Duration::from_secs(60), || async {
        let offsets = describe_group(&secondary(), group).await.offsets;
        let all = (0..partitions).all(|p| offsets.contains_key(&format!("{topic}/{p}")));
        all.then_some(offsets)
    })
    .await
}

/// The group consumes `per_partition` on the source and commits; kferry syncs; the same
/// group on the target must then read, as its first record of every partition, the source
/// record right after the last one it consumed there.
async fn assert_group_continues_at_the_next_record(topic: &str, partitions: i32, per_partition: &str) {
    let group = unique_name("group");
    let consumed_on_source = by_partition(&group_consume(&primary(), topic, &group, per_partition, &[]).await);
    let source = by_partition(&consume(&primary(), topic, "read_committed", 0).await);
    let total: usize = source.values().map(Vec::len).sum();
    let kferry = Kferry::start("run", &flow_config(topic, &group, 1));
    wait_until_replicated(topic, total).await;
    wait_for_target_offsets(topic, &group, partitions).await;
    let first_on_target =
        by_partition(&group_consume(&secondary(), topic, &group, "1", &["--no-commit", "--timeout", "20"]).await);
    for partition in 0..partitions {
        let read = consumed_on_source.get(&partition).map_or(0, Vec::len);
        let next = &source[&partition][read];
        let first = &first_on_target[&partition][0];
        assert!(
            first.same_as(next),
            "partition {partition}: the group read {read} records on the source, so it must continue with the \
             record at source offset {}; on the target it got {first:?} instead of {next:?}",
            next.offset
        );
    }
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_continues_at_the_next_record_across_aborted_transactions() {
    let topic = unique_name("groups-txn");
    create_topic(&primary(), &topic, 3, &[]).await;
    // Every third transaction of 7 records aborted: gaps of aborted data and markers.
    let txn = unique_name("txn");
    produce(&primary(), &topic, 600, "lz4", &["--transactional-id", &txn, "--txn-size", "7", "--abort-every", "3"])
        .await;
    // Different depths per partition, each ending next to a gap or inside a run.
    assert_group_continues_at_the_next_record(&topic, 3, "0=13,1=14,2=40").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_continues_at_the_next_record_on_a_compacted_topic() {
    let topic = unique_name("groups-compact");
    let cleaner = [
        "cleanup.policy=compact",
        "segment.ms=100",
        "min.cleanable.dirty.ratio=0.01",
        "min.compaction.lag.ms=0",
        "delete.retention.ms=100",
    ];
    create_topic(&primary(), &topic, 2, &cleaner).await;
    // Keys 0..79 once, then only keys 0..39: compaction removes the first round's records of
    // keys 0..39 and keeps those of 40..79, which leaves gaps between records it keeps.
    produce(&primary(), &topic, 600, "zstd", &["--key-space", "80"]).await;
    eventually("the log cleaner leaving gaps in every partition", Duration::from_secs(120), || {
        let topic = topic.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            produce(&primary(), &topic, 600, "zstd", &["--key-space", "40"]).await;
            let records = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
            let gapped = |r: &Vec<ConsumedRecord>| r.windows(2).any(|w| w[1].offset > w[0].offset + 1);
            (records.len() == 2 && records.values().all(gapped)).then_some(())
        }
    })
    .await;
    // The cleaner stops here (it would otherwise remove, on either cluster, the record the
    // group must continue with); the gaps it left stay. The target copy gets these configs.
    let quiet = ["--set", "min.cleanable.dirty.ratio=0.99", "--set", "segment.ms=604800000"];
    let bootstrap = primary();
    let mut args = vec!["alter-config", "--bootstrap", &bootstrap, "--topic", &topic];
    args.extend(quiet);
    protocol_tests::verify_json(&args).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The group stops right before a record that follows a compaction gap, so its committed
    // offset lies inside the gap.
    let source = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
    let mut limits = Vec::new();
    for (partition, records) in &source {
        let index = (1..records.len())
            .find(|&i| records[i].offset > records[i - 1].offset + 1)
            .unwrap_or_else(|| panic!("partition {partition}: no compaction gap"));
        limits.push(format!("{partition}={index}"));
    }
    assert_group_continues_at_the_next_record(&topic, 2, &limits.join(",")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_members_on_the_target_is_left_alone_until_it_leaves() {
    let topic = unique_name("groups-active");
    let group = unique_name("group");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 200, "none", &[]).await;
    group_consume(&primary(), &topic, &group, "30", &[]).await;
    // The same group is busy on the target before kferry starts (the topic is created there
    // first, as kferry would).
    create_topic(&secondary(), &topic, 2, &[]).await;
    let mut member = spawn_group_member(&secondary(), &topic, &group, 25);
    eventually("the member on the target", Duration::from_secs(30), || async {
        let described = describe_group(&secondary(), &group).await;
        (described.members == 1).then_some(())
    })
    .await;
    let kferry = Kferry::start("run", &flow_config(&topic, &group, 1));
    let target = wait_until_replicated(&topic, 200).await;
    // Several sync intervals (1 s) while the member stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let described = describe_group(&secondary(), &group).await;
    assert_eq!(described.members, 1, "the member is still there");
    assert!(described.offsets.is_empty(), "kferry committed for an active group: {:?}", described.offsets);
    let status = tokio::time::timeout(Duration::from_secs(40), member.wait()).await.expect("member leaves").unwrap();
    assert!(status.success());
    let offsets = wait_for_target_offsets(&topic, &group, 2).await;
    let source = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
    let target = by_partition(&target);
    for partition in 0..2 {
        let expected = expected_target_offset(&source[&partition], &target[&partition], source[&partition][30].offset);
        assert_eq!(offsets[&format!("{topic}/{partition}")], expected, "partition {partition}");
    }
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consuming_source_group_is_followed_within_two_intervals_and_never_backwards() {
    let topic = unique_name("groups-follow");
    let group = unique_name("group");
    create_topic(&primary(), &topic, 2, &[]).await;
    let txn = unique_name("txn");
    produce(&primary(), &topic, 400, "snappy", &["--transactional-id", &txn, "--txn-size", "9", "--abort-every", "4"])
        .await;
    let source = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
    let total: usize = source.values().map(Vec::len).sum();
    const INTERVAL: u64 = 2;
    let kferry = Kferry::start("run", &flow_config(&topic, &group, INTERVAL));
    let target = by_partition(&wait_until_replicated(&topic, total).await);
    let seen: std::sync::Mutex<BTreeMap<String, Vec<i64>>> = Default::default();
    for step in 1..=4 {
        let consumed = by_partition(&group_consume(&primary(), &topic, &group, "11", &[]).await);
        let started = std::time::Instant::now();
        let expected: BTreeMap<String, i64> = (0..2)
            .map(|p| {
                let last = consumed[&p].last().expect("read 11").offset;
                (format!("{topic}/{p}"), expected_target_offset(&source[&p], &target[&p], last + 1))
            })
            .collect();
        let offsets = eventually(&format!("step {step}: target offsets {expected:?}"), Duration::from_secs(20), || {
            let (expected, seen, group) = (expected.clone(), &seen, &group);
            async move {
                let offsets = describe_group(&secondary(), group).await.offsets;
                let mut seen = seen.lock().unwrap();
                for (key, offset) in &offsets {
                    seen.entry(key.clone()).or_default().push(*offset);
                }
                (offsets == expected).then_some(offsets)
            }
        })
        .await;
        // Two intervals, plus the second or so one describe-group (a Python start) takes.
        let bound = Duration::from_secs(2 * INTERVAL) + Duration::from_millis(1_500);
        assert!(started.elapsed() < bound, "step {step}: took {:?}, more than {bound:?}", started.elapsed());
        assert_eq!(offsets, expected);
    }
    for (key, offsets) in seen.lock().unwrap().iter() {
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{key} went backwards: {offsets:?}");
    }
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mm2_tooling_reads_from_kferrys_checkpoints_what_kferry_offsets_prints() {
    let topic = unique_name("groups-mm2");
    let group = unique_name("group");
    create_topic(&primary(), &topic, 3, &[]).await;
    let txn = unique_name("txn");
    produce(&primary(), &topic, 300, "gzip", &["--transactional-id", &txn, "--txn-size", "5", "--abort-every", "2"])
        .await;
    group_consume(&primary(), &topic, &group, "0=7,1=20,2=33", &[]).await;
    let source_alias = alias("p");
    let config = two_cluster_config(
        &source_alias,
        &alias("s"),
        &format!(
            "    topics: [\"{topic}\"]\n    groups: [\"{group}\"]\n    refresh_topics_interval_seconds: 1\n    \
             sync_group_offsets_interval_seconds: 1\n"
        ),
    );
    let kferry = Kferry::start("run", &config);
    let committed = wait_for_target_offsets(&topic, &group, 3).await;
    // What Java tooling reads from `<source alias>.checkpoints.internal`.
    let from_mm2_tooling = eventually("checkpoints for every partition", Duration::from_secs(30), || async {
        let offsets = mm2_translate_offsets(&secondary(), &source_alias, &group).await;
        (offsets.len() == 3).then_some(offsets)
    })
    .await;
    let (code, stdout, stderr) = Kferry::run_to_end_with("offsets", &["--group", &group, "--json"], &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("offsets --json prints a JSON array");
    let from_kferry: BTreeMap<(String, i32), i64> = rows
        .iter()
        .map(|row| {
            assert_eq!(row["status"], "translated", "{row}");
            assert_eq!(row["lag"], 0, "{row}");
            let key = (row["target_topic"].as_str().unwrap().to_string(), row["partition"].as_i64().unwrap() as i32);
            (key, row["translated"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(from_mm2_tooling, from_kferry, "RemoteClusterUtils.translateOffsets and kferry offsets");
    let from_target: BTreeMap<(String, i32), i64> = committed
        .iter()
        .map(|(key, offset)| {
            let (topic, partition) = key.rsplit_once('/').unwrap();
            ((topic.to_string(), partition.parse().unwrap()), *offset)
        })
        .collect();
    assert_eq!(from_kferry, from_target, "kferry offsets and the group's offsets on the target");
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_group_reset_while_kferry_was_down_moves_the_target_group_back() {
    let topic = unique_name("groups-reset");
    let group = unique_name("group");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 200, "none", &[]).await;
    group_consume(&primary(), &topic, &group, "60", &[]).await;
    let config = flow_config(&topic, &group, 1);
    let kferry = Kferry::start("run", &config);
    let target = by_partition(&wait_until_replicated(&topic, 200).await);
    let source = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
    let expected = |index: usize| -> BTreeMap<String, i64> {
        (0..2)
            .map(|p| {
                (format!("{topic}/{p}"), expected_target_offset(&source[&p], &target[&p], source[&p][index].offset))
            })
            .collect()
    };
    let synced = wait_for_target_offsets(&topic, &group, 2).await;
    assert_eq!(synced, expected(60));
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // The operator rewinds the group on the source while kferry is down.
    let rewind: Vec<String> = (0..2).map(|p| format!("{p}={}", source[&p][25].offset)).collect();
    protocol_tests::verify_json(&[
        "reset-group",
        "--bootstrap",
        &primary(),
        "--group",
        &group,
        "--topic",
        &topic,
        "--offset",
        &rewind.join(","),
    ])
    .await;
    let kferry = Kferry::start("run", &config);
    eventually("the target group moved back", Duration::from_secs(30), || async {
        (describe_group(&secondary(), &group).await.offsets == expected(25)).then_some(())
    })
    .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("source group moved backwards (reset)"), "the rewind is logged:\n{stderr}");
}
