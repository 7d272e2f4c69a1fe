//! Replication on 3-broker clusters while a broker is down (issue 13), checked with
//! confluent-kafka: with RF 3 and `min.insync.replicas` 2 every partition keeps
//! replicating when one target broker stops; with RF 1 the partitions of the other brokers
//! go on and the stopped broker's catch up when it returns; the same with one source broker
//! cut off by the proxy in front of it. Exactly once, in order, at the end. And kferry's own
//! topics (offset map, failover record, checkpoints) survive a target broker's loss (issue 14).
//!
//! The clusters are `protocol_tests::multi`'s (started by scripts/test); the tests of this
//! file stop their nodes, so they run one at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use protocol_tests::multi::{self, NodeGuard, Side};
use protocol_tests::{
    alias, consume, consume_partitions, content, describe_topic, eventually, produce, unique_name, verify_json,
    ConsumedRecord, Kferry,
};

/// Restores a cut proxy when dropped, also when the test fails: the next tests need it.
struct WanRestore(u32);

impl Drop for WanRestore {
    fn drop(&mut self) {
        let wan = std::env::var("KFERRY_TEST_MULTI_WAN").unwrap_or_default();
        let script = protocol_tests::crate_dir().join("../scripts/kafka/wan.sh");
        let _ = std::process::Command::new(script).args(["restore", &wan, &self.0.to_string()]).status();
    }
}

/// The tests of this file take nodes down: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A flow of `topic` between the 3-broker clusters, under aliases of its own.
fn config(topic: &str, extra: &str) -> String {
    config_named(&alias("mp"), &alias("ms"), topic, extra)
}

fn config_named(source: &str, target: &str, topic: &str, extra: &str) -> String {
    let list = |bootstrap: String| {
        multi::servers(&bootstrap).iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
    };
    format!(
        "clusters:\n  {source}: {{ bootstrap_servers: [{}] }}\n  {target}: {{ bootstrap_servers: [{}] }}\n\
         flows:\n  - source: {source}\n    target: {target}\n    topics: [\"{topic}\"]\n    refresh_topics_interval_seconds: 1\n{extra}",
        list(multi::primary()),
        list(multi::secondary()),
    )
}

async fn create(bootstrap: &str, topic: &str, partitions: u32, replication_factor: u32) {
    let (partitions, rf) = (partitions.to_string(), replication_factor.to_string());
    let args = ["create-topic", "--bootstrap", bootstrap, "--topic", topic, "--partitions", &partitions];
    verify_json(&[&args[..], &["--replication-factor", &rf]].concat()).await;
}

/// Partition leaders (node ids) as confluent-kafka's admin client sees them.
async fn leaders(bootstrap: &str, topic: &str) -> BTreeMap<i32, i32> {
    let json = verify_json(&["describe-topic", "--bootstrap", bootstrap, "--topic", topic]).await;
    let leaders: BTreeMap<String, i32> = serde_json::from_value(json["leaders"].clone()).expect("leaders");
    leaders.into_iter().map(|(p, l)| (p.parse().expect("partition"), l)).collect()
}

/// Waits until each partition of the target topic holds the number of records `wanted`
/// gives (read_committed); more than wanted fails at once (a duplicate).
async fn wait_for_counts(topic: &str, wanted: &BTreeMap<i32, usize>, within: Duration) -> Vec<ConsumedRecord> {
    eventually(&format!("{topic}: {wanted:?} records per partition on the target"), within, || async {
        if !describe_topic(&multi::secondary(), topic).await.exists {
            return None;
        }
        let records = consume(&multi::secondary(), topic, "read_committed", 0).await;
        let mut counts: BTreeMap<i32, usize> = BTreeMap::new();
        for r in &records {
            *counts.entry(r.partition).or_default() += 1;
        }
        for (partition, &count) in &counts {
            assert!(
                count <= wanted.get(partition).copied().unwrap_or(0),
                "{topic} partition {partition}: {count} records, more than on the source"
            );
        }
        wanted.iter().all(|(p, &n)| counts.get(p).copied().unwrap_or(0) >= n).then_some(records)
    })
    .await
}

fn every(partitions: i32, count: usize) -> BTreeMap<i32, usize> {
    (0..partitions).map(|p| (p, count)).collect()
}

/// Source and target hold the same records, partition by partition, in order.
async fn assert_identical(topic: &str, total: usize) {
    let source = consume(&multi::primary(), topic, "read_committed", total).await;
    let target = consume(&multi::secondary(), topic, "read_committed", total).await;
    assert_eq!(content(&target), content(&source), "{topic}: the target differs from the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_a_stopped_target_broker_with_rf3_stalls_no_partition() {
    let _serial = SERIAL.lock().await;
    let prefix = unique_name("rf3");
    let (topic, strict) = (format!("{prefix}-a"), format!("{prefix}-strict"));
    create(&multi::primary(), &topic, 6, 3).await;
    create(&multi::primary(), &strict, 1, 3).await;
    // All three replicas required in sync on the target: with a broker down, every produce
    // answers NOT_ENOUGH_REPLICAS (min.insync.replicas is never synced from the source).
    create(&multi::secondary(), &strict, 1, 3).await;
    alter(&multi::secondary(), &strict, "min.insync.replicas=3").await;
    produce(&multi::primary(), &topic, 600, "lz4", &[]).await;
    produce(&multi::primary(), &strict, 100, "lz4", &[]).await;
    let kferry = Kferry::start("run", &config(&format!("{prefix}-.*"), "    replication_factor: 3\n"));
    wait_for_counts(&topic, &every(6, 100), Duration::from_secs(120)).await;
    wait_for_counts(&strict, &every(1, 100), Duration::from_secs(60)).await;
    let down = NodeGuard::stop(Side::Secondary, 2).await;
    let stopped = Instant::now();
    produce(&multi::primary(), &topic, 600, "lz4", &[]).await;
    produce(&multi::primary(), &strict, 100, "lz4", &[]).await;
    wait_for_counts(&topic, &every(6, 200), Duration::from_secs(90)).await;
    let caught_up = stopped.elapsed();
    assert_eq!(
        consume(&multi::secondary(), &strict, "read_committed", 0).await.len(),
        100,
        "the strict topic's new records wait while a replica is down"
    );
    down.start().await;
    wait_for_counts(&strict, &every(1, 200), Duration::from_secs(120)).await;
    assert_identical(&topic, 1200).await;
    assert_identical(&strict, 200).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let held: Vec<&str> = stderr.lines().filter(|l| l.contains("partition held back")).collect();
    assert!(
        held.iter().any(|l| l.contains(&strict) && l.contains("NOT_ENOUGH_REPLICAS")),
        "the refused partition is reported:\n{stderr}"
    );
    eprintln!("every partition of {topic} replicated again {caught_up:?} after a target broker stopped");
}

/// With `shards`, a target partition whose in-sync replicas fall below its
/// `min.insync.replicas` holds back at most its own shard: the transaction that touched it
/// cannot end (the coordinator cannot write its marker there), but the other shards have
/// transactional ids of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_a_partition_below_min_insync_holds_back_only_its_shard() {
    let _serial = SERIAL.lock().await;
    let prefix = unique_name("shard-strict");
    let (topic, strict) = (format!("{prefix}-a"), format!("{prefix}-strict"));
    create(&multi::primary(), &topic, 8, 3).await;
    create(&multi::primary(), &strict, 1, 3).await;
    create(&multi::secondary(), &strict, 1, 3).await;
    alter(&multi::secondary(), &strict, "min.insync.replicas=3").await;
    produce(&multi::primary(), &topic, 800, "lz4", &[]).await;
    produce(&multi::primary(), &strict, 100, "lz4", &[]).await;
    let (source, target) = (alias("mp"), alias("ms"));
    const SHARDS: u16 = 4;
    let config = config_named(
        &source,
        &target,
        &format!("{prefix}-.*"),
        &format!("    shards: {SHARDS}\n    replication_factor: 3\n"),
    );
    let mut flow = kferry::config::FlowConfig::between(&source, &target);
    flow.shards = SHARDS;
    let strict_shard = kferry::replicate::shard::Shard::of(&flow, &strict, 0);
    let others: Vec<i32> =
        (0..8).filter(|&p| kferry::replicate::shard::Shard::of(&flow, &topic, p) != strict_shard).collect();
    assert!(others.len() >= 4, "most partitions are in other shards than the strict topic's: {others:?}");
    let kferry = Kferry::start("run", &config);
    wait_for_counts(&topic, &every(8, 100), Duration::from_secs(120)).await;
    wait_for_counts(&strict, &every(1, 100), Duration::from_secs(60)).await;

    let down = NodeGuard::stop(Side::Secondary, 2).await;
    let stopped = Instant::now();
    produce(&multi::primary(), &strict, 100, "lz4", &[]).await;
    produce(&multi::primary(), &topic, 800, "lz4", &[]).await;
    // The other shards' partitions replicate while the broker is down.
    eventually("the other shards' partitions replicate", Duration::from_secs(60), || async {
        let records = consume_partitions(&multi::secondary(), &topic, &others).await;
        assert!(records.len() <= others.len() * 200, "a record copied twice");
        (records.len() == others.len() * 200).then_some(())
    })
    .await;
    let others_caught_up = stopped.elapsed();
    // By now the strict shard's transaction is stuck (its round is abandoned after some
    // 30 s of CONCURRENT_TRANSACTIONS; an unsplit flow waits like this as a whole until the
    // broker is back). Records written now must still reach the other shards' partitions.
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(stopped.elapsed())).await;
    produce(&multi::primary(), &topic, 800, "lz4", &[]).await;
    eventually("the other shards' partitions replicate while one shard is stuck", Duration::from_secs(45), || async {
        let records = consume_partitions(&multi::secondary(), &topic, &others).await;
        assert!(records.len() <= others.len() * 300, "a record copied twice");
        (records.len() == others.len() * 300).then_some(())
    })
    .await;
    let others_again = stopped.elapsed();
    assert_eq!(
        consume(&multi::secondary(), &strict, "read_committed", 0).await.len(),
        100,
        "the strict topic's new records wait while a replica is down"
    );
    down.start().await;
    wait_for_counts(&strict, &every(1, 200), Duration::from_secs(180)).await;
    wait_for_counts(&topic, &every(8, 300), Duration::from_secs(180)).await;
    assert_identical(&topic, 2400).await;
    assert_identical(&strict, 200).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("cannot end"), "the stuck shard is explained:\n{stderr}");
    eprintln!(
        "shards: the {} partitions outside shard {strict_shard} replicated {others_caught_up:?} after a target broker \
         stopped, and records written later {others_again:?} after",
        others.len()
    );
}

/// Sets a topic config with confluent-kafka's admin client.
async fn alter(bootstrap: &str, topic: &str, set: &str) {
    verify_json(&["alter-config", "--bootstrap", bootstrap, "--topic", topic, "--set", set]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_rf1_partitions_of_a_stopped_target_broker_wait_and_catch_up() {
    let _serial = SERIAL.lock().await;
    let topic = unique_name("rf1-target");
    create(&multi::primary(), &topic, 6, 3).await;
    produce(&multi::primary(), &topic, 600, "none", &[]).await;
    let kferry = Kferry::start("run", &config(&topic, "    replication_factor: 1\n"));
    wait_for_counts(&topic, &every(6, 100), Duration::from_secs(120)).await;
    let on_node_3: Vec<i32> =
        leaders(&multi::secondary(), &topic).await.into_iter().filter(|&(_, l)| l == 3).map(|(p, _)| p).collect();
    assert!(!on_node_3.is_empty() && on_node_3.len() < 6, "RF 1 partitions are spread: {on_node_3:?} on node 3");
    let down = NodeGuard::stop(Side::Secondary, 3).await;
    produce(&multi::primary(), &topic, 600, "none", &[]).await;
    let others: BTreeMap<i32, usize> = (0..6).map(|p| (p, if on_node_3.contains(&p) { 0 } else { 200 })).collect();
    // The stopped broker's partitions cannot be read meanwhile: count only the others.
    let healthy: Vec<i32> = others.iter().filter(|(_, &n)| n > 0).map(|(&p, _)| p).collect();
    eventually("the other brokers' partitions replicate", Duration::from_secs(90), || async {
        let records = consume_partitions(&multi::secondary(), &topic, &healthy).await;
        (records.len() == healthy.len() * 200).then_some(())
    })
    .await;
    down.start().await;
    wait_for_counts(&topic, &every(6, 200), Duration::from_secs(120)).await;
    assert_identical(&topic, 1200).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("partition held back"), "the waiting partitions are reported:\n{stderr}");
}

/// A round in which every partition is held back lands nothing: with KIP-890's protocol its
/// transaction may be empty on the coordinator, which refuses to commit one
/// (INVALID_TXN_STATE). Such a round must end without being abandoned, so the flow keeps
/// its producer and catches up when the broker returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_a_flow_whose_only_partition_waits_abandons_no_round() {
    let _serial = SERIAL.lock().await;
    let topic = unique_name("rf1-only");
    create(&multi::primary(), &topic, 1, 3).await;
    produce(&multi::primary(), &topic, 100, "none", &[]).await;
    let kferry = Kferry::start("run", &config(&topic, "    replication_factor: 1\n"));
    wait_for_counts(&topic, &every(1, 100), Duration::from_secs(120)).await;
    let leader = u32::try_from(leaders(&multi::secondary(), &topic).await[&0]).expect("a leader");
    let down = NodeGuard::stop(Side::Secondary, leader).await;
    produce(&multi::primary(), &topic, 100, "none", &[]).await;
    // Long enough for the partition to be held back more than once (each round retries
    // it for 3 s) and for KRaft to fence the stopped broker (9 s).
    tokio::time::sleep(Duration::from_secs(20)).await;
    down.start().await;
    wait_for_counts(&topic, &every(1, 200), Duration::from_secs(120)).await;
    assert_identical(&topic, 200).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("partition held back"), "the waiting partition is reported:\n{stderr}");
    assert!(!stderr.contains("transaction round abandoned"), "no round failed:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_a_source_broker_cut_off_holds_back_only_its_partitions() {
    let _serial = SERIAL.lock().await;
    let topic = unique_name("rf1-source");
    create(&multi::primary(), &topic, 6, 1).await;
    produce(&multi::primary(), &topic, 600, "snappy", &[]).await;
    let on_node_2: Vec<i32> =
        leaders(&multi::primary(), &topic).await.into_iter().filter(|&(_, l)| l == 2).map(|(p, _)| p).collect();
    assert!(!on_node_2.is_empty() && on_node_2.len() < 6, "RF 1 partitions are spread: {on_node_2:?} on node 2");
    let _restore = WanRestore(2);
    multi::wan_cut(2).await;
    let kferry = Kferry::start("run", &config(&topic, ""));
    let others: BTreeMap<i32, usize> = (0..6).filter(|p| !on_node_2.contains(p)).map(|p| (p, 100)).collect();
    wait_for_counts(&topic, &others, Duration::from_secs(120)).await;
    multi::wan_restore(2).await;
    wait_for_counts(&topic, &every(6, 100), Duration::from_secs(120)).await;
    // Cut off again while running: the broker's fetches fail, the others' go on. (Producers
    // reach broker 2 through the same proxy: its partitions get theirs after the restore.)
    multi::wan_cut(2).await;
    let healthy: Vec<i32> = (0..6).filter(|p| !on_node_2.contains(p)).collect();
    let list = |partitions: &[i32]| partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let count = 100 * healthy.len() as u32;
    produce(&multi::primary(), &topic, count, "snappy", &["--partitions", &list(&healthy)]).await;
    eventually(
        "the other brokers' partitions replicate while broker 2 is cut off",
        Duration::from_secs(60),
        || async {
            let records = consume_partitions(&multi::secondary(), &topic, &healthy).await;
            (records.len() == healthy.len() * 200).then_some(())
        },
    )
    .await;
    multi::wan_restore(2).await;
    produce(&multi::primary(), &topic, 100 * on_node_2.len() as u32, "snappy", &["--partitions", &list(&on_node_2)])
        .await;
    wait_for_counts(&topic, &every(6, 200), Duration::from_secs(120)).await;
    assert_identical(&topic, 1200).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // Both waits are reported: for the start position (cut off at start), for fetches
    // (cut off while running).
    assert!(
        stderr.contains("partition waits for its start position"),
        "the waiting partitions are reported:\n{stderr}"
    );
    assert!(stderr.contains("source broker cannot be fetched from"), "the cut-off broker is reported:\n{stderr}");
}

/// kferry's own topics on a 3-broker target get 3 replicas and `min.insync.replicas` 2 (the
/// flow sets no replication factor; the target's default is 1): with the leader of the
/// failover record stopped, the offset map, the checkpoints and the failover record read
/// back whole (confluent-kafka), and a restarted `kferry run` still finds the record and
/// refuses the failed-over flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_kferrys_own_topics_survive_a_stopped_target_broker() {
    let _serial = SERIAL.lock().await;
    let (source, target) = (alias("mp"), alias("ms"));
    let topic = unique_name("own-topics");
    let group = unique_name("own-topics-group");
    let extra = format!("    groups: [\"{group}\"]\n    sync_group_offsets_interval_seconds: 1\n");
    let config = config_named(&source, &target, &topic, &extra);
    create(&multi::primary(), &topic, 3, 3).await;
    produce(&multi::primary(), &topic, 300, "lz4", &[]).await;
    let kferry = Kferry::start("run", &config);
    wait_for_counts(&topic, &every(3, 100), Duration::from_secs(120)).await;
    protocol_tests::group_consume(&multi::primary(), &topic, &group, "40", &[]).await;
    let (state, checkpoints) = (format!("__kferry.offset-map.{source}"), format!("{source}.checkpoints.internal"));
    eventually("checkpoints of the group on the target", Duration::from_secs(60), || async {
        let exists = describe_topic(&multi::secondary(), &checkpoints).await.exists;
        (exists && !consume(&multi::secondary(), &checkpoints, "read_committed", 0).await.is_empty()).then_some(())
    })
    .await;
    let flow = format!("{source}->{target}");
    let (code, _, stderr) = Kferry::run_to_end_with("failover", &["--flow", &flow, "--planned"], &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(1), "{stderr}");

    let own = [state.as_str(), "__kferry.failover", checkpoints.as_str()];
    let mut before = BTreeMap::new();
    for name in own {
        let description = describe_topic(&multi::secondary(), name).await;
        assert_eq!(description.replication_factor, 3, "{name}: {description:?}");
        assert_eq!(description.config("min.insync.replicas"), Some("2"), "{name}");
        before.insert(name, content(&consume(&multi::secondary(), name, "read_uncommitted", 0).await));
    }
    let leader = leaders(&multi::secondary(), "__kferry.failover").await[&0] as u32;
    let down = NodeGuard::stop(Side::Secondary, leader).await;
    for name in own {
        let after = content(&consume(&multi::secondary(), name, "read_uncommitted", 0).await);
        assert_eq!(after, before[name], "{name} with broker {leader} down");
    }
    let (code, _, stderr) = Kferry::run_to_end("run", &config).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("failed over"), "the failover record is read with broker {leader} down:\n{stderr}");
    down.start().await;
}

/// A source partition truncated under kferry by an unclean leader election (RF 2,
/// `unclean.leader.election.enable` on the topic): its follower is stopped, records are
/// written to the leader alone and copied, the leader stops, the follower comes back and is
/// elected with a shorter log, and new records are written there. kferry's position is now
/// beyond the log's end: detected, logged with both offsets, the partition stopped
/// (`on_source_reset: fail`), nothing of the new log copied; another topic goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_a_source_truncated_by_an_unclean_election_is_detected() {
    let _serial = SERIAL.lock().await;
    let prefix = unique_name("unclean");
    let (truncated, healthy) = (format!("{prefix}-truncated"), format!("{prefix}-healthy"));
    create(&multi::primary(), &truncated, 1, 2).await;
    alter(&multi::primary(), &truncated, "unclean.leader.election.enable=true").await;
    // One replica in sync must do while the follower is down.
    alter(&multi::primary(), &truncated, "min.insync.replicas=1").await;
    create(&multi::primary(), &healthy, 1, 3).await;
    produce(&multi::primary(), &truncated, 100, "none", &[]).await;
    let kferry = Kferry::start("run", &config(&format!("{prefix}-.*"), ""));
    wait_for_counts(&truncated, &every(1, 100), Duration::from_secs(120)).await;

    let json = verify_json(&["describe-topic", "--bootstrap", &multi::primary(), "--topic", &truncated]).await;
    let replicas: Vec<u32> = serde_json::from_value(json["replicas"]["0"].clone()).expect("replicas");
    let leader = leaders(&multi::primary(), &truncated).await[&0] as u32;
    let follower = *replicas.iter().find(|&&r| r != leader).expect("two replicas");
    let follower_down = NodeGuard::stop(Side::Primary, follower).await;
    produce(&multi::primary(), &truncated, 50, "none", &[]).await;
    wait_for_counts(&truncated, &every(1, 150), Duration::from_secs(90)).await;
    let leader_down = NodeGuard::stop(Side::Primary, leader).await;
    follower_down.start().await;
    eventually("the follower elected, uncleanly", Duration::from_secs(60), || async {
        (leaders(&multi::primary(), &truncated).await.get(&0) == Some(&(follower as i32))).then_some(())
    })
    .await;
    // The new log ends at 100, then 110: below kferry's position 150 either way.
    produce(&multi::primary(), &truncated, 10, "none", &[]).await;
    produce(&multi::primary(), &healthy, 30, "none", &[]).await;
    wait_for_counts(&healthy, &every(1, 30), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        consume(&multi::secondary(), &truncated, "read_committed", 0).await.len(),
        150,
        "nothing of the truncated partition's new log is copied"
    );
    leader_down.start().await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("source reset") && l.contains(&truncated))
        .unwrap_or_else(|| panic!("the truncation is reported:\n{stderr}"));
    // Seen as soon as kferry fetches from the new leader: before the 10 new records
    // (the log then ends at 100) or after them (110).
    assert!(
        ["100", "110"]
            .iter()
            .any(|end| line.contains(&format!("the source log ends at offset {end}, below kferry's position 150"))),
        "{line}"
    );
    assert!(line.contains("partition stopped (on_source_reset: fail)"), "{line}");
}
