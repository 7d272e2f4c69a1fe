//! Consumer-group offset sync on the real test clusters: groups consume on the source with
//! confluent-kafka, `kferry run` (a subprocess) syncs their offsets, and the same group id on
//! the target (confluent-kafka again, read_committed) must continue at exactly the next
//! record: nothing read twice, nothing skipped, across aborted transactions and compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::{
    consume, create_topic, describe_group, eventually, group_consume, primary, produce, secondary, spawn_group_member,
    unique_flow_config, unique_name, ConsumedRecord, Kferry,
};

/// A flow that replicates `topic` and syncs the groups matching `groups` every `interval`
/// seconds.
fn flow_config(topic: &str, groups: &str, interval: u64) -> String {
    unique_flow_config(&format!(
        "    topics: [\"{topic}\"]\n    groups: [\"{groups}\"]\n    refresh_topics_interval_seconds: 1\n    \
         sync_group_offsets_interval_seconds: {interval}\n"
    ))
}

fn by_partition(records: &[ConsumedRecord]) -> BTreeMap<i32, Vec<ConsumedRecord>> {
    let mut map: BTreeMap<i32, Vec<ConsumedRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r.clone());
    }
    map
}

/// The same record: key, value, headers and timestamp (offsets differ between clusters).
fn same_record(a: &ConsumedRecord, b: &ConsumedRecord) -> bool {
    (&a.key, &a.value, &a.headers, a.timestamp) == (&b.key, &b.value, &b.headers, b.timestamp)
}

/// Waits until the target holds as many committed records of `topic` as the source.
async fn wait_until_replicated(topic: &str, expected: usize) -> Vec<ConsumedRecord> {
    eventually(&format!("{expected} records of {topic} on the target"), Duration::from_secs(120), || async {
        let records = consume(&secondary(), topic, "read_committed", 0).await;
        (records.len() == expected).then_some(records)
    })
    .await
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

/// Where a group positioned at source offset `committed` must continue on the target,
/// worked out from what confluent-kafka reads on both sides (read_committed): the target
/// offset of the first source record at or after `committed`, or the position after the
/// last target record when the group has read everything.
fn expected_target_offset(source: &[ConsumedRecord], target: &[ConsumedRecord], committed: i64) -> i64 {
    assert_eq!(source.len(), target.len(), "both sides hold the same records");
    match source.iter().position(|r| r.offset >= committed) {
        Some(index) => target[index].offset,
        None => target.last().map_or(0, |r| r.offset + 1),
    }
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
            same_record(first, next),
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
    let mut produced = 0;
    eventually("the log cleaner compacting the source", Duration::from_secs(120), || {
        let topic = topic.clone();
        produced += 600;
        async move {
            produce(&primary(), &topic, 600, "zstd", &["--key-space", "40"]).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let remaining = consume(&primary(), &topic, "read_committed", 0).await.len();
            (remaining < produced / 2).then_some(())
        }
    })
    .await;
    // Both clusters go on compacting, so the record the group continues with must be one
    // compaction keeps everywhere: the newest of its key. Stop right before such a record
    // that follows a compaction gap.
    let source = by_partition(&consume(&primary(), &topic, "read_committed", 0).await);
    let mut limits = Vec::new();
    for (partition, records) in &source {
        let index = (1..records.len())
            .find(|&i| {
                let gap = records[i].offset > records[i - 1].offset + 1;
                let newest = !records[i + 1..].iter().any(|r| r.key == records[i].key);
                gap && newest
            })
            .unwrap_or_else(|| panic!("partition {partition}: no newest-of-its-key record after a compaction gap"));
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
