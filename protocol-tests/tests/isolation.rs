//! The scheduler's promises on the real test clusters (issue 13), checked with
//! confluent-kafka (a partition refused for a while is in `multi_broker.rs`: Kafka 4.x caps
//! `min.insync.replicas` at the replication factor, so one broker cannot refuse): a start position is never resolved twice (records
//! written after kferry placed a partition are never skipped); kferry's own state survives
//! a target that recompresses what kferry writes; progress reaches the end of a partition
//! whose last records are an aborted transaction, so a planned failover finishes at once;
//! a source topic deleted and recreated under a running kferry is noticed and handled by
//! `on_source_reset`.

use std::time::{Duration, Instant};

use protocol_tests::{
    alias, consume, content, create_topic, describe_group, eventually, group_consume, primary, produce, secondary,
    two_cluster_config, unique_name, wait_until_replicated, Kferry,
};

fn flow_keys(topics: &str, extra: &str) -> String {
    format!("    topics: [\"{topics}\"]\n    refresh_topics_interval_seconds: 1\n{extra}")
}

/// Sets topic configs on a target topic with confluent-kafka's admin client.
async fn alter_target(topic: &str, set: &str) {
    protocol_tests::verify_json(&["alter-config", "--bootstrap", &secondary(), "--topic", topic, "--set", set]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_latest_never_skips_records_written_after_the_start() {
    let topic = unique_name("start-latest");
    create_topic(&primary(), &topic, 1, &[]).await;
    produce(&primary(), &topic, 50, "none", &[]).await; // before the start: never copied
                                                        // The target refuses every batch until the limit is raised (kferry leaves it alone).
    create_topic(&secondary(), &topic, 1, &["max.message.bytes=200"]).await;
    let keys = "    start: latest\n    topic_configs_exclude: [\"max.message.bytes\"]\n";
    let config = two_cluster_config(&alias("p"), &alias("s"), &flow_keys(&topic, keys));
    let first = Kferry::start("run", &config);
    // Let it place the partition (at offset 50), then write while the target refuses.
    tokio::time::sleep(Duration::from_secs(6)).await;
    produce(&primary(), &topic, 30, "none", &[]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (code, _, stderr) = first.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("partition stopped"), "the refusal is reported:\n{stderr}");
    assert!(consume(&secondary(), &topic, "read_committed", 0).await.is_empty());
    // A new process: had the start not been committed, it would resolve `latest` again
    // (offset 80) and skip the 30 records.
    alter_target(&topic, "max.message.bytes=1048588").await;
    let second = Kferry::start("run", &config);
    let target = wait_until_replicated(&topic, 30).await;
    let source = consume(&primary(), &topic, "read_committed", 80).await;
    assert_eq!(content(&target)[&0], content(&source)[&0][50..], "exactly the records written after the start");
    let (code, _, stderr) = second.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kferrys_state_survives_a_target_that_recompresses_it() {
    let (source_alias, target_alias) = (alias("p"), alias("s"));
    let topic = unique_name("zstd-target");
    create_topic(&primary(), &topic, 1, &[]).await;
    // The target stores kferry's state records zstd-compressed, whatever kferry sends.
    let state_topic = format!("__kferry.offset-map.{source_alias}");
    create_topic(&secondary(), &state_topic, 1, &["cleanup.policy=compact", "compression.type=zstd"]).await;
    let txn = unique_name("zstd-txn");
    let args = ["--transactional-id", txn.as_str(), "--txn-size", "10", "--abort-every", "4"];
    let first = produce(&primary(), &topic, 120, "snappy", &args).await["committed"].as_u64().unwrap() as usize;
    let config = two_cluster_config(
        &source_alias,
        &target_alias,
        &flow_keys(&topic, "    sync_group_offsets_interval_seconds: 1\n"),
    );
    let kferry = Kferry::start("run", &config);
    wait_until_replicated(&topic, first).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // After a restart kferry reads its (recompressed) offset map back and goes on.
    let txn2 = unique_name("zstd-txn");
    let args = ["--transactional-id", txn2.as_str(), "--txn-size", "10", "--abort-every", "4"];
    let second = produce(&primary(), &topic, 120, "snappy", &args).await["committed"].as_u64().unwrap() as usize;
    let kferry = Kferry::start("run", &config);
    let target = wait_until_replicated(&topic, first + second).await;
    let source = consume(&primary(), &topic, "read_committed", first + second).await;
    assert_eq!(content(&target), content(&source));
    // Group sync translates through the same map: the group continues at the next record.
    let group = unique_name("zstd-group");
    group_consume(&primary(), &topic, &group, "0=100", &[]).await;
    let expected = target[100].offset;
    eventually("the group's translated offset on the target", Duration::from_secs(30), || async {
        let offsets = describe_group(&secondary(), &group).await.offsets;
        (offsets.get(&format!("{topic}/0")) == Some(&expected)).then_some(())
    })
    .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("WARN") && !stderr.contains("ERROR"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_after_an_aborted_last_transaction_finishes_at_once() {
    let (source_alias, target_alias) = (alias("p"), alias("s"));
    let topic = unique_name("aborted-tail");
    create_topic(&primary(), &topic, 2, &[]).await;
    // Two transactions per partition's worth of records, the last one aborted: the
    // partition ends with aborted records and an abort marker.
    let txn = unique_name("tail-txn");
    let args = ["--transactional-id", txn.as_str(), "--txn-size", "25", "--abort-every", "2"];
    let committed = produce(&primary(), &topic, 50, "none", &args).await["committed"].as_u64().unwrap() as usize;
    assert_eq!(committed, 25);
    let config = two_cluster_config(&source_alias, &target_alias, &flow_keys(&topic, ""));
    let kferry = Kferry::start("run", &config);
    wait_until_replicated(&topic, committed).await;
    let flow = format!("{source_alias}->{target_alias}");
    let started = Instant::now();
    let (code, stdout, stderr) =
        Kferry::run_to_end_with("failover", &["--flow", &flow, "--planned", "--timeout", "30"], &config).await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(20), "planned failover took {took:?}:\n{stdout}\n{stderr}");
    let _ = kferry.stop().await;
}

/// Deletes a source topic and creates it again (new topic id, offsets from 0) with the
/// same partitions, with confluent-kafka's admin client.
async fn recreate_source(topic: &str, partitions: u32) {
    protocol_tests::verify_json(&["delete-topic", "--bootstrap", &primary(), "--topic", topic]).await;
    create_topic(&primary(), topic, partitions, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_source_topic_stops_its_partitions_by_default() {
    let topic = unique_name("recreated-fail");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 200, "lz4", &[]).await;
    let config = two_cluster_config(&alias("p"), &alias("s"), &flow_keys(&topic, ""));
    let kferry = Kferry::start("run", &config);
    let before = wait_until_replicated(&topic, 200).await;
    recreate_source(&topic, 2).await;
    produce(&primary(), &topic, 50, "lz4", &[]).await;
    // Time for a few tracking passes (every 2 s): the new topic id is seen and, with the
    // default policy, its partitions stop instead of copying the new topic's records.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    for partition in 0..2 {
        // Noticed by the new topic id, or by the fetch position now beyond the log's end.
        assert!(
            stderr.lines().any(|l| l.contains("source reset")
                && l.contains("on_source_reset: fail")
                && l.contains(&format!("partition={partition}"))),
            "partition {partition}'s reset is reported with the policy:\n{stderr}"
        );
    }
    let after = consume(&secondary(), &topic, "read_committed", 0).await;
    assert_eq!(content(&after), content(&before), "nothing of the new topic is copied under `fail`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_source_topic_is_copied_again_with_restart_from_log_start() {
    let topic = unique_name("recreated-restart");
    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 200, "lz4", &[]).await;
    let keys = "    on_source_reset: restart_from_log_start\n";
    let config = two_cluster_config(&alias("p"), &alias("s"), &flow_keys(&topic, keys));
    let kferry = Kferry::start("run", &config);
    let old = wait_until_replicated(&topic, 200).await;
    recreate_source(&topic, 2).await;
    produce(&primary(), &topic, 50, "zstd", &[]).await;
    let new = consume(&primary(), &topic, "read_committed", 50).await;
    let target = wait_until_replicated(&topic, 250).await;
    // Each target partition: the old topic's records, then the new topic's, each once.
    let (old, new, target) = (content(&old), content(&new), content(&target));
    for (partition, records) in &target {
        let mut expected = old.get(partition).cloned().unwrap_or_default();
        expected.extend(new.get(partition).cloned().unwrap_or_default());
        assert_eq!(records, &expected, "partition {partition}");
    }
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("copying it again from its log start"), "the restart is reported:\n{stderr}");
}

/// Port of the source cluster the corrupt-batch test damages (its controller uses the next
/// one): `KFERRY_TEST_CRC_PORT`, by default 19684, outside every range scripts/test and the
/// benchmarks use.
fn crc_source_port() -> u16 {
    std::env::var("KFERRY_TEST_CRC_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(19684)
}

/// Flips one byte of the `nth` occurrence of `needle` in `file`.
fn flip_byte(file: &std::path::Path, needle: &[u8], nth: usize) {
    let mut bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let at = (0..bytes.len().saturating_sub(needle.len()))
        .filter(|&i| &bytes[i..i + needle.len()] == needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{}: occurrence {nth} of {needle:?} not found", file.display()));
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).expect("segment written back");
}

/// A batch damaged in the source's log (one payload byte flipped in a segment file of a
/// real broker; stopped cleanly, the broker does not re-check the segment when it starts,
/// and serves the bytes as they are, as after a disk fault): kferry copies the batches
/// before it, stops that partition with a CRC error naming topic, partition and offset,
/// copies nothing of the damaged batch or after it, and another topic goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_source_batch_stops_its_partition_and_nothing_of_it_is_copied() {
    let source = protocol_tests::OwnCluster::start("crcsource", crc_source_port()).await;
    let prefix = unique_name("crc");
    let (damaged, healthy) = (format!("{prefix}-damaged"), format!("{prefix}-healthy"));
    create_topic(&source.bootstrap, &damaged, 1, &[]).await;
    create_topic(&source.bootstrap, &healthy, 1, &[]).await;
    // Three writes, three batches of 10 (uncompressed, so the values are in the segment as
    // written): the second gets the flipped byte.
    for _ in 0..3 {
        produce(&source.bootstrap, &damaged, 10, "none", &[]).await;
    }
    let written = consume(&source.bootstrap, &damaged, "read_committed", 30).await;
    source.halt().await;
    flip_byte(&source.data_dir().join(format!("{damaged}-0/00000000000000000000.log")), b"value-00000003|", 1);
    source.restart().await;

    let (p, s) = (alias("p"), alias("s"));
    let config = format!(
        "clusters:\n  {p}: {{ bootstrap_servers: [\"{}\"] }}\n  {s}: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - source: {p}\n    target: {s}\n{}",
        source.bootstrap,
        secondary(),
        flow_keys(&format!("{prefix}-.*"), "")
    );
    let kferry = Kferry::start("run", &config);
    produce(&source.bootstrap, &healthy, 40, "lz4", &[]).await;
    let healthy_source = consume(&source.bootstrap, &healthy, "read_committed", 40).await;
    eventually("the healthy topic copied", Duration::from_secs(60), || async {
        let copied = consume(&secondary(), &healthy, "read_committed", 0).await;
        (content(&copied) == content(&healthy_source)).then_some(())
    })
    .await;
    // Past the partition's first attempts: whatever was to be copied of it is there.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let copied = consume(&secondary(), &damaged, "read_committed", 0).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("partition stopped: a source batch is corrupt"))
        .unwrap_or_else(|| panic!("the corrupt batch is reported:\n{stderr}"));
    assert!(line.contains(&damaged) && line.contains("partition=0") && line.contains("CRC-32C"), "{line}");
    let offset: usize = line
        .split("batch at offset ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the line names the offset: {line}"));
    // The damaged record is the 4th of the second write (offset 13), in a batch starting at
    // 10 unless the producer split that write.
    assert!((10..=13).contains(&offset), "{line}");
    assert_eq!(content(&copied), content(&written[..offset]), "exactly the records before the damaged batch");
}

/// The offset-map segments of `topic` partition 0 in the flow's state topic, read with
/// confluent-kafka (newest record per key): live ones as (source start, source end), and
/// the source starts of those deleted (a tombstone is the newest record of their key).
async fn state_segments(source_alias: &str, topic: &str) -> (Vec<(i64, i64)>, Vec<i64>) {
    let state = format!("__kferry.offset-map.{source_alias}");
    let mut newest = std::collections::BTreeMap::new();
    for record in consume(&secondary(), &state, "read_committed", 0).await {
        let key = String::from_utf8(record.key.clone().unwrap_or_default()).expect("a UTF-8 key");
        if let Some(start) = key.strip_prefix(&format!("{topic}/0/")) {
            newest.insert(start.parse::<i64>().expect("a source start"), record.value.clone());
        }
    }
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for (start, value) in newest {
        match value {
            // "<target topic> <source end> <target start>"
            Some(value) => {
                let text = String::from_utf8(value).expect("a UTF-8 value");
                let end = text.split(' ').nth(1).and_then(|e| e.parse().ok()).expect("a source end");
                live.push((start, end));
            }
            None => deleted.push(start),
        }
    }
    (live, deleted)
}

/// Bounded state: with exactly_once every round's commit marker starts a new offset-map
/// segment, so the map grows by one segment per round. Once the source's log start moves
/// past them (DeleteRecords here, retention in production), the segments wholly below it
/// are tombstoned in the state topic and dropped; a group above the log start still
/// translates exactly, also after a restart, and nothing is copied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_map_segments_below_the_source_log_start_are_pruned() {
    let topic = unique_name("pruned");
    let group = unique_name("pruned-group");
    create_topic(&primary(), &topic, 1, &[]).await;
    let p = alias("p");
    let keys = format!("    groups: [\"{group}\"]\n    sync_group_offsets_interval_seconds: 1\n");
    let config = two_cluster_config(&p, &alias("s"), &flow_keys(&topic, &keys));
    let mut kferry = Kferry::start("run", &config);
    // Twelve rounds apart: twelve segments.
    for round in 1..=12 {
        produce(&primary(), &topic, 10, "none", &[]).await;
        wait_until_replicated(&topic, round * 10).await;
    }
    let (live, deleted) = state_segments(&p, &topic).await;
    assert!(live.len() >= 12 && deleted.is_empty(), "a segment per round: {live:?}");

    let delete = ["delete-records", "--bootstrap", &primary(), "--topic", &topic, "--partition", "0", "--offset", "70"];
    protocol_tests::verify_json(&delete).await;
    for round in 1..=2 {
        produce(&primary(), &topic, 10, "none", &[]).await;
        wait_until_replicated(&topic, 120 + round * 10).await;
        if round == 1 {
            let (code, _, stderr) = kferry.stop().await;
            assert_eq!(code, Some(0), "{stderr}");
            kferry = Kferry::start("run", &config);
        }
    }
    let (live, deleted) = eventually("segments below the log start tombstoned", Duration::from_secs(30), || async {
        let (live, deleted) = state_segments(&p, &topic).await;
        live.iter().all(|&(_, end)| end > 70).then_some((live, deleted))
    })
    .await;
    assert!(deleted.len() >= 6, "the segments below offset 70 are deleted: {deleted:?}, live {live:?}");
    assert!(live.iter().any(|&(start, end)| start <= 70 && 70 < end), "the segment holding the log start stays");

    // A group at the log start continues on the target at exactly the next record.
    let read = group_consume(&primary(), &topic, &group, "15", &[]).await;
    assert_eq!(read.first().map(|r| r.offset), Some(70));
    let target = consume(&secondary(), &topic, "read_committed", 0).await;
    assert_eq!(target.len(), 140, "nothing copied twice");
    // A plain producer's records sit at offsets 0..140 on the source: the group's next
    // record, source offset 85, is the 86th record, whose copy is target[85].
    let source = consume(&primary(), &topic, "read_committed", 0).await;
    assert_eq!(source.first().map(|r| r.offset), Some(70));
    assert!(source.iter().zip(target[70..].iter()).all(|(s, t)| s.same_as(t)), "the copy is the source's records");
    let expected = target[85].offset;
    eventually("the group translated through the pruned map", Duration::from_secs(30), || async {
        let offsets = describe_group(&secondary(), &group).await.offsets;
        (offsets.get(&format!("{topic}/0")) == Some(&expected)).then_some(())
    })
    .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}
