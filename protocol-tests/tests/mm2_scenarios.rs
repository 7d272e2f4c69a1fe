//! MirrorMaker 2's own acceptance scenarios, ported to kferry: each test sets up the data of
//! one test method of Apache Kafka's `connect/mirror/.../integration/` tests (connect-mirror
//! 4.3.1: `MirrorConnectorsIntegrationBaseTest` and its variants, `DedicatedMirrorIntegrationTest`)
//! and asserts what MM2 asserts there, with `kferry run` (a subprocess) in place of MM2's
//! connectors. `protocol-tests/MM2-SCENARIOS.md` maps every MM2 test method to its port here.
//!
//! Records are read back with confluent-kafka, group positions with connect-mirror-client's
//! `MirrorClient` where MM2's test uses it. MM2's names (`test-topic-1`, `primary`, `backup`,
//! `consumer-group-...`) become unique per test, since the clusters are shared. Where kferry
//! differs from MM2 by design the port asserts the stronger property, with a comment saying
//! why: no heartbeats, exact offsets (MM2 allows `offset.lag.max` redeliveries, kferry 0).

use std::collections::BTreeMap;
use std::time::Duration;

use protocol_tests::mm2::{
    assert_monotonic_checkpoints, checkpoints, commit_offsets, config, end_offsets, mirror_client,
    wait_for_checkpoints, MirrorClientView, Side,
};
use protocol_tests::{
    by_partition, consume, create_topic, describe_group, describe_topic, eventually, expected_target_offset,
    group_consume, list_topics, produce, unique_name, verify_json, ConsumedRecord, Kferry,
};

/// MM2's `NUM_PARTITIONS`, `NUM_RECORDS_PER_PARTITION` and `NUM_RECORDS_PRODUCED`.
const PARTITIONS: u32 = 10;
const PER_PARTITION: u32 = 10;
const RECORDS: u32 = PARTITIONS * PER_PARTITION;

/// How long kferry may take to copy what a scenario produced (MM2 allows 30 s).
const TRANSFER: Duration = Duration::from_secs(60);

/// One MM2 test's world: the two clusters, a unique topic prefix (MM2's `test-topic-`), a
/// group (MM2's `consumer-group-...`) and the replication policy.
struct Scenario {
    primary: Side,
    backup: Side,
    prefix: String,
    group: String,
    /// IdentityReplicationPolicy (same names) instead of the default prefix policy.
    identity: bool,
    /// Source records written in transactions (MM2's TransactionsTest).
    transactional: bool,
}

impl Scenario {
    fn new() -> Self {
        Self::with(Side::backup(), false, false)
    }

    fn with(backup: Side, identity: bool, transactional: bool) -> Self {
        Self {
            primary: Side::primary(),
            backup,
            prefix: unique_name("test-topic"),
            group: unique_name("consumer-group"),
            identity,
            transactional,
        }
    }

    /// MM2's `test-topic-<name>`.
    fn topic(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// The name `topic` of `from` has on the other cluster.
    fn remote(&self, topic: &str, from: &Side) -> String {
        match self.identity {
            true => topic.to_string(),
            false => from.remote(topic),
        }
    }

    /// MM2's base config as kferry keys: the scenario's topics and group, refresh and sync
    /// every second, `delete.retention.*` kept off the target (MM2's test sets
    /// `config.properties.exclude` to it), then `extra` lines.
    fn flow_keys(&self, extra: &str) -> String {
        let policy = if self.identity { "identity" } else { "prefix" };
        format!(
            "    topics: [\"{}-.*\"]\n    policy: {policy}\n    refresh_topics_interval_seconds: 1\n    \
             groups: [\"{}\"]\n    sync_group_offsets_interval_seconds: 1\n    \
             topic_configs_exclude: ['delete\\.retention\\..*']\n{extra}",
            self.prefix, self.group
        )
    }

    /// primary -> backup only (MM2: `backup->primary.enabled = false`).
    fn one_way(&self, extra: &str) -> String {
        config(&[&self.primary, &self.backup], &[(&self.primary, &self.backup, &self.flow_keys(extra))])
    }

    /// Both ways (MM2's default in these tests: active-active with the prefix policy).
    fn two_way(&self) -> String {
        let keys = self.flow_keys("");
        config(
            &[&self.primary, &self.backup],
            &[(&self.primary, &self.backup, &keys), (&self.backup, &self.primary, &keys)],
        )
    }

    /// MM2's `createTopics`: `test-topic-no-checkpoints` (1 partition) and `test-topic-1`
    /// (compacted) on the primary, `test-topic-1` on the backup.
    async fn create_topics(&self, on_backup: bool) {
        create_topic(&self.primary.bootstrap, &self.topic("no-checkpoints"), 1, &[]).await;
        create_topic(&self.primary.bootstrap, &self.topic("1"), PARTITIONS, &["cleanup.policy=compact"]).await;
        if on_backup {
            create_topic(&self.backup.bootstrap, &self.topic("1"), PARTITIONS, &[]).await;
        }
    }

    /// MM2's `produceMessages`: `PER_PARTITION` records to each of `partitions` (all when
    /// `None`), in one transaction for the TransactionsTest variant. Keys are unique and never
    /// null, as `test-topic-1` is compacted.
    async fn produce(&self, side: &Side, topic: &str, partitions: Option<u32>) {
        let count = PER_PARTITION * partitions.unwrap_or(PARTITIONS);
        let listed: Option<String> = partitions.map(|n| (0..n).map(|p| p.to_string()).collect::<Vec<_>>().join(","));
        let txn = unique_name("embedded-kafka");
        let txn_size = count.to_string();
        let mut extra = vec!["--key-space", "1000000"];
        if let Some(listed) = &listed {
            extra.extend(["--partitions", listed]);
        }
        if self.transactional {
            extra.extend(["--transactional-id", &txn, "--txn-size", &txn_size]);
        }
        let summary = produce(&side.bootstrap, topic, count, "none", &extra).await;
        assert_eq!(summary["delivered"], count, "{summary}");
    }
}

/// Waits until `topic` exists on `bootstrap` (MM2's `waitForTopicCreated`).
async fn wait_for_topic(bootstrap: &str, topic: &str) {
    eventually(&format!("topic {topic} on {bootstrap}"), TRANSFER, || async {
        describe_topic(bootstrap, topic).await.exists.then_some(())
    })
    .await;
}

/// Waits until `bootstrap` holds exactly the records of `source` (per partition, same key,
/// value, headers and timestamp: MM2 counts them, kferry must also copy them intact), read
/// with read_committed; more records than that fail at once (a duplicate).
async fn wait_for_copy(bootstrap: &str, topic: &str, source: &[ConsumedRecord]) -> Vec<ConsumedRecord> {
    let want = protocol_tests::content(source);
    wait_for_topic(bootstrap, topic).await;
    eventually(&format!("{} records in {topic} on {bootstrap}", source.len()), TRANSFER, || async {
        let copied = consume(bootstrap, topic, "read_committed", 0).await;
        assert!(
            copied.len() <= source.len(),
            "{topic}: {} records, more than the {} of the source",
            copied.len(),
            source.len()
        );
        (protocol_tests::content(&copied) == want).then_some(copied)
    })
    .await
}

/// Replicates `topic` of `from` and waits for the copy on `to`: the source records and the copy.
async fn copied(
    scenario: &Scenario,
    from: &Side,
    to: &Side,
    topic: &str,
) -> (Vec<ConsumedRecord>, Vec<ConsumedRecord>) {
    let source = consume(&from.bootstrap, topic, "read_committed", 0).await;
    let copy = wait_for_copy(&to.bootstrap, &scenario.remote(topic, from), &source).await;
    (source, copy)
}

/// Per partition, the target offset where a group that read `read[p]` records of source
/// partition `p` continues: the copy of the next source record (or the end).
fn continue_at(
    source: &[ConsumedRecord],
    target: &[ConsumedRecord],
    read: impl Fn(i32) -> usize,
) -> BTreeMap<i32, i64> {
    let (source, target) = (by_partition(source), by_partition(target));
    source
        .iter()
        .map(|(p, records)| {
            let committed =
                records.get(read(*p)).map_or_else(|| records.last().map_or(0, |r| r.offset + 1), |r| r.offset);
            (*p, expected_target_offset(records, &target[p], committed))
        })
        .collect()
}

/// The group's committed offsets of `topic` on `bootstrap`, by partition.
async fn group_offsets(bootstrap: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let offsets = describe_group(bootstrap, group).await.offsets;
    offsets
        .into_iter()
        .filter_map(|(key, offset)| {
            let (t, p) = key.rsplit_once('/')?;
            (t == topic).then(|| (p.parse().expect("partition"), offset))
        })
        .collect()
}

/// Waits until kferry has committed exactly `expected` for the group on `bootstrap` (exact,
/// not MM2's `offset > last - offset.lag.max`, and never past the log end); fails showing
/// the offsets last seen.
async fn wait_for_group_offsets(bootstrap: &str, group: &str, topic: &str, expected: &BTreeMap<i32, i64>) {
    let started = std::time::Instant::now();
    loop {
        let offsets = group_offsets(bootstrap, group, topic).await;
        if offsets == *expected {
            return;
        }
        assert!(
            started.elapsed() < TRANSFER,
            "{group} on {topic}: offsets {offsets:?} after {TRANSFER:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The failover step of MM2's `testReplication`, with kferry's exact offsets: MirrorClient
/// translates the group on every partition to the copy of the next record it had not read,
/// kferry committed the same offsets for the group, and the group continues there.
async fn assert_failover(
    bootstrap: &str,
    source_alias: &str,
    group: &str,
    topic: &str,
    expected: &BTreeMap<i32, i64>,
    next: &BTreeMap<i32, ConsumedRecord>,
) -> MirrorClientView {
    wait_for_group_offsets(bootstrap, group, topic, expected).await;
    let view = wait_for_checkpoints(bootstrap, source_alias, group, topic, PARTITIONS as i32, None).await;
    assert_eq!(&view.offsets_of(topic), expected, "MirrorClient's translation of {group} on {topic}");
    let first = by_partition(&group_consume(bootstrap, topic, group, "1", &["--no-commit", "--timeout", "20"]).await);
    for (p, record) in next {
        assert!(first[p][0].same_as(record), "{topic}/{p}: the group continues with {:?}, not {record:?}", first[p][0]);
    }
    view
}

/// The source records the group reads next, by partition, after reading `read` of each.
fn next_records(source: &[ConsumedRecord], read: usize) -> BTreeMap<i32, ConsumedRecord> {
    by_partition(source).into_iter().map(|(p, records)| (p, records[read].clone())).collect()
}

/// Stops kferry; it must exit cleanly and have logged no error.
async fn stop(kferry: Kferry) -> String {
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR"), "kferry logged an error:\n{stderr}");
    stderr
}

/// MM2's `createAndTestNewTopicWithConfigFilter`: a topic created with `delete.retention.ms`
/// (excluded) and `retention.bytes` (copied) arrives with only the latter.
async fn assert_new_topic_with_config_filter(scenario: &Scenario) {
    let topic = scenario.topic("with-config");
    create_topic(
        &scenario.primary.bootstrap,
        &topic,
        PARTITIONS,
        &["delete.retention.ms=1000", "retention.bytes=1000"],
    )
    .await;
    let remote = scenario.remote(&topic, &scenario.primary);
    wait_for_topic(&scenario.backup.bootstrap, &remote).await;
    let copy = describe_topic(&scenario.backup.bootstrap, &remote).await;
    assert_ne!(copy.config("delete.retention.ms"), Some("1000"), "excluded config copied");
    assert_eq!(copy.config("retention.bytes"), Some("1000"), "config not copied");
}

/// MM2's `testReplication` (and the TransactionsTest, SSLTest and IdentityReplication variants
/// of it): records both ways (or one, `two_way` false), config sync with its exclude,
/// checkpoints, a group failing over to the backup and back, topics created while running.
async fn replication_scenario(scenario: Scenario, two_way: bool) {
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    // The identity variant's `test-topic-1` already on the backup would be a conflict for
    // kferry (cleanup.policy delete there, compact on the source): kferry refuses to turn a
    // topic it did not create into a compacted one (topic_sync.rs,
    // conflicts_are_reported_and_other_topics_still_replicated), where MM2 alters it.
    scenario.create_topics(!scenario.identity).await;
    let t1 = scenario.topic("1");
    scenario.produce(primary, &t1, None).await;
    if two_way {
        scenario.produce(backup, &t1, None).await;
    }
    // MM2 warms the group up before starting: it reads part of test-topic-1 on both clusters.
    group_consume(&primary.bootstrap, &t1, group, "4", &[]).await;
    if two_way {
        group_consume(&backup.bootstrap, &t1, group, "6", &[]).await;
    }
    let config = if two_way { scenario.two_way() } else { scenario.one_way("") };
    let kferry = Kferry::start("run", &config);
    let (backup_t1, reverse_t1) = (scenario.remote(&t1, primary), backup.remote(&t1));

    eventually("cleanup.policy of the copy synced", TRANSFER, || async {
        let copy = describe_topic(&backup.bootstrap, &backup_t1).await;
        (copy.config("cleanup.policy") == Some("compact")).then_some(())
    })
    .await;
    assert_new_topic_with_config_filter(&scenario).await;

    let (source, copy) = copied(&scenario, primary, backup, &t1).await;
    assert_eq!(source.len(), RECORDS as usize);
    let reverse = if two_way { Some(copied(&scenario, backup, primary, &t1).await) } else { None };
    if two_way {
        // The prefix policy sends no remote topic back to its origin: no cycle.
        let on_primary = list_topics(&primary.bootstrap).await;
        assert!(!on_primary.contains(&backup.remote(&backup_t1)), "{backup_t1} was sent back to the primary");
        let on_backup = list_topics(&backup.bootstrap).await;
        assert!(!on_backup.contains(&primary.remote(&reverse_t1)), "{reverse_t1} was sent back to the backup");
    }

    // Failover to the backup: MM2 only checks 0 < position <= 100 on partition 0.
    let expected = continue_at(&source, &copy, |_| 4);
    let view =
        assert_failover(&backup.bootstrap, &primary.alias, group, &backup_t1, &expected, &next_records(&source, 4))
            .await;
    // MM2 asserts heartbeats on both clusters and MirrorClient's upstreamClusters /
    // replicationHops (both read from heartbeat topics). kferry writes no heartbeats: none
    // may appear, and MirrorClient accordingly finds no upstream cluster; the remote topics
    // it does find by name.
    view.assert_no_heartbeats(&primary.alias);
    if !scenario.identity {
        assert!(view.remote_topics.contains(&backup_t1), "MirrorClient.remoteTopics: {:?}", view.remote_topics);
    }
    assert!(assert_monotonic_checkpoints(&backup.bootstrap, &primary.alias).await > 0);

    // Failback: the group's position on the backup's own test-topic-1 reaches the primary.
    if let Some((source, copy)) = &reverse {
        let expected = continue_at(source, copy, |_| 6);
        let view =
            assert_failover(&primary.bootstrap, &backup.alias, group, &reverse_t1, &expected, &next_records(source, 6))
                .await;
        view.assert_no_heartbeats(&backup.alias);
        assert!(view.remote_topics.contains(&reverse_t1), "MirrorClient.remoteTopics: {:?}", view.remote_topics);
        assert_monotonic_checkpoints(&primary.bootstrap, &backup.alias).await;
    }

    // Topics created while running are found and copied; records only in partition 0.
    let t2 = scenario.topic("2");
    create_topic(&primary.bootstrap, &t2, PARTITIONS, &[]).await;
    wait_for_topic(&backup.bootstrap, &scenario.remote(&t2, primary)).await;
    scenario.produce(primary, &t2, Some(1)).await;
    let (source2, _) = copied(&scenario, primary, backup, &t2).await;
    assert_eq!(source2.len(), PER_PARTITION as usize);
    if two_way {
        let t3 = scenario.topic("3");
        create_topic(&backup.bootstrap, &t3, PARTITIONS, &[]).await;
        wait_for_topic(&primary.bootstrap, &backup.remote(&t3)).await;
        scenario.produce(backup, &t3, Some(1)).await;
        copied(&scenario, backup, primary, &t3).await;
    }
    stop(kferry).await;
}

/// MM2's `testReplication`; the ExactlyOnceTest variant too, kferry's default delivery being
/// exactly_once (its KIP-875 offset-reset part has no kferry counterpart: MM2-SCENARIOS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication() {
    replication_scenario(Scenario::new(), true).await;
}

/// MirrorConnectorsIntegrationTransactionsTest.testReplication: the source records come in
/// transactions. One way only (MM2: both), to keep the suite's time: the transactional
/// records are read the same way in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_of_transactional_records() {
    replication_scenario(Scenario::with(Side::backup(), false, true), false).await;
}

/// IdentityReplicationIntegrationTest.testReplication: one way, same topic names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_replication() {
    replication_scenario(Scenario::with(Side::backup(), true, false), false).await;
}

/// MirrorConnectorsIntegrationSSLTest.testReplication: the backup is reached over TLS (the
/// secured test broker's mutual-TLS listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_to_a_tls_backup() {
    replication_scenario(Scenario::with(Side::tls_backup(), false, false), true).await;
}

/// MM2's `testReplicationWithEmptyPartition`: the group's offset of a partition that never
/// had a record reaches the backup as 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_with_empty_partition() {
    let scenario = Scenario::new();
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    let topic = scenario.topic("with-empty-partition");
    create_topic(&primary.bootstrap, &topic, PARTITIONS, &[]).await;
    scenario.produce(primary, &topic, Some(PARTITIONS - 1)).await;
    // The group reads everything and commits its position on every partition, the empty
    // one at 0 (MM2: commitSync after consuming all records).
    let mut positions: BTreeMap<i32, i64> = (0..PARTITIONS as i32 - 1).map(|p| (p, PER_PARTITION as i64)).collect();
    positions.insert(PARTITIONS as i32 - 1, 0);
    commit_offsets(&primary.bootstrap, group, &topic, &positions).await;
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let (source, copy) = copied(&scenario, primary, backup, &topic).await;
    assert_eq!(source.len(), (RECORDS - PER_PARTITION) as usize);
    // MM2 has the backup consumer read all 90 records again (no offset sync in that test),
    // then checks the offset of the empty partition it committed is 0. kferry syncs the
    // group: it continues after the last record of every partition that had records. The
    // empty one gets no offset and no checkpoint, as under MM2 (nothing was mirrored from
    // it: no_checkpoints_if_no_records_are_mirrored); its copy is empty too, so a consumer
    // starts it at 0 whatever its auto.offset.reset, and commits 0 as MM2's did.
    let expected = continue_at(&source, &copy, |_| PER_PARTITION as usize);
    assert_eq!(expected.len(), PARTITIONS as usize - 1);
    let remote = scenario.remote(&topic, primary);
    wait_for_group_offsets(&backup.bootstrap, group, &remote, &expected).await;
    assert_eq!(end_offsets(&backup.bootstrap, &remote).await[&(PARTITIONS as i32 - 1)], 0);
    assert_reads_nothing_twice(&backup.bootstrap, &remote, group).await;
    stop(kferry).await;
}

/// MM2's `testOneWayReplicationWithAutoOffsetSync` and `...WithFrequentOffsetSyncs` (the
/// same scenario with `offset.lag.max` 10 and 0; kferry has no such knob, its translation is
/// exact): the group's offsets are synced to the backup, also for a topic created later, and
/// a consumer of the same group there reads nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_replication_with_offset_sync() {
    let scenario = Scenario::new();
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    scenario.create_topics(true).await;
    let t1 = scenario.topic("1");
    scenario.produce(primary, &t1, None).await;
    group_consume(&primary.bootstrap, &t1, group, &PER_PARTITION.to_string(), &[]).await;
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let backup_t1 = scenario.remote(&t1, primary);
    let (source, copy) = copied(&scenario, primary, backup, &t1).await;
    // One way: nothing of the backup reaches the primary.
    assert!(!list_topics(&primary.bootstrap).await.contains(&backup.remote(&t1)));
    assert_fully_synced(&backup.bootstrap, group, &backup_t1, &source, &copy).await;

    let t2 = scenario.topic("2");
    create_topic(&primary.bootstrap, &t2, PARTITIONS, &[]).await;
    let backup_t2 = scenario.remote(&t2, primary);
    wait_for_topic(&backup.bootstrap, &backup_t2).await;
    scenario.produce(primary, &t2, None).await;
    group_consume(&primary.bootstrap, &t2, group, &PER_PARTITION.to_string(), &[]).await;
    let (source2, copy2) = copied(&scenario, primary, backup, &t2).await;
    assert_fully_synced(&backup.bootstrap, group, &backup_t2, &source2, &copy2).await;
    assert_fully_synced(&backup.bootstrap, group, &backup_t1, &source, &copy).await;
    assert!(assert_monotonic_checkpoints(&backup.bootstrap, &primary.alias).await > 0);
    stop(kferry).await;
}

/// MM2's `waitForConsumerGroupFullSync` + `assertDownstreamRedeliveriesBoundedByMaxLag` with
/// kferry's exact offsets: the group that read everything on the source sits at the end of
/// every partition of the copy (MM2: within offset.lag.max below it, never beyond the log
/// end), and a consumer of the group there reads 0 records (MM2: fewer than offset.lag.max).
async fn assert_fully_synced(
    bootstrap: &str,
    group: &str,
    topic: &str,
    source: &[ConsumedRecord],
    copy: &[ConsumedRecord],
) {
    let expected = continue_at(source, copy, |_| usize::MAX);
    wait_for_group_offsets(bootstrap, group, topic, &expected).await;
    let ends = end_offsets(bootstrap, topic).await;
    for (p, offset) in &expected {
        assert!(*offset <= ends[p], "{topic}/{p}: {offset} beyond the log end {}", ends[p]);
    }
    assert_reads_nothing_twice(bootstrap, topic, group).await;
}

/// A consumer of `group` on `topic` finds nothing to read: every record was read on the
/// source already (MM2 allows fewer than offset.lag.max per partition).
async fn assert_reads_nothing_twice(bootstrap: &str, topic: &str, group: &str) {
    let again = group_consume(bootstrap, topic, group, "all", &["--no-commit", "--timeout", "20"]).await;
    assert!(again.is_empty(), "{topic}: the group re-read {} records", again.len());
}

/// MM2's `testReplicationWithoutOffsetSyncWillNotCreateOffsetSyncsTopic` and
/// DedicatedMirrorIntegrationTest's `testClusterWithEmitOffsetDisabled`: with group sync off
/// (MM2: `emit.offset-syncs.enabled = false`) records are still copied and no offset-syncs
/// topic appears. Stronger: kferry never writes to the source cluster at all (its offset map
/// lives on the target), and without group sync writes no checkpoints either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_without_offset_sync_creates_no_offset_syncs_topic() {
    let scenario = Scenario::new();
    let (primary, backup) = (&scenario.primary, &scenario.backup);
    scenario.create_topics(true).await;
    let t1 = scenario.topic("1");
    scenario.produce(primary, &t1, None).await;
    scenario.produce(backup, &t1, None).await;
    group_consume(&primary.bootstrap, &t1, &scenario.group, "3", &[]).await;
    let before = list_topics(&primary.bootstrap).await;
    let kferry = Kferry::start("run", &scenario.one_way("    sync_group_offsets: false\n"));
    copied(&scenario, primary, backup, &t1).await;
    // MM2 checks the backup's own test-topic-1 still holds just its own records.
    assert_eq!(consume(&backup.bootstrap, &t1, "read_committed", 0).await.len(), RECORDS as usize);
    // Two sync intervals: a checkpoint would have been written by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop(kferry).await;
    assert_offset_syncs_nowhere(&scenario).await;
    let new_on_primary: Vec<String> = list_topics(&primary.bootstrap)
        .await
        .into_iter()
        .filter(|t| !before.contains(t) && t.contains(&primary.alias))
        .collect();
    assert!(new_on_primary.is_empty(), "kferry created topics on the source: {new_on_primary:?}");
    let checkpoints_topic = format!("{}.checkpoints.internal", primary.alias);
    assert!(
        !list_topics(&backup.bootstrap).await.contains(&checkpoints_topic),
        "checkpoints written with group sync off"
    );
}

/// No `mm2-offset-syncs.<alias>.internal` of the scenario's aliases on either cluster.
async fn assert_offset_syncs_nowhere(scenario: &Scenario) {
    for side in [&scenario.primary, &scenario.backup] {
        let topics = list_topics(&side.bootstrap).await;
        for alias in [&scenario.primary.alias, &scenario.backup.alias] {
            let syncs = format!("mm2-offset-syncs.{alias}.internal");
            assert!(!topics.contains(&syncs), "{syncs} exists on {}", side.bootstrap);
        }
    }
}

/// MM2's `testOffsetSyncsTopicsOnTarget` (`offset-syncs.topic.location = target`), which is
/// where kferry always keeps its offset map: checkpoints of the remote topic appear on the
/// backup, they never go backwards, and no offset-syncs topic exists on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_syncs_on_the_target() {
    let scenario = Scenario::new();
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    scenario.create_topics(true).await;
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let t1 = scenario.topic("1");
    let remote = scenario.remote(&t1, primary);
    wait_for_topic(&backup.bootstrap, &remote).await;
    scenario.produce(primary, &t1, None).await;
    group_consume(&primary.bootstrap, &t1, group, "5", &[]).await;
    eventually("a checkpoint of the remote topic", TRANSFER, || async {
        checkpoints(&backup.bootstrap, &primary.alias).await.iter().any(|c| c.topic == remote).then_some(())
    })
    .await;
    assert_monotonic_checkpoints(&backup.bootstrap, &primary.alias).await;
    stop(kferry).await;
    assert_offset_syncs_nowhere(&scenario).await;
}

/// MM2's `testNoCheckpointsIfNoRecordsAreMirrored`: a group's offset of a topic nothing was
/// copied from yet gets no checkpoint; once records are copied, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_checkpoints_if_no_records_are_mirrored() {
    let scenario = Scenario::new();
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    scenario.create_topics(true).await;
    let (t1, empty) = (scenario.topic("1"), scenario.topic("no-checkpoints"));
    scenario.produce(primary, &t1, None).await;
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let (remote1, remote_empty) = (scenario.remote(&t1, primary), scenario.remote(&empty, primary));
    wait_for_topic(&backup.bootstrap, &remote1).await;
    wait_for_topic(&backup.bootstrap, &remote_empty).await;
    let (source, copy) = copied(&scenario, primary, backup, &t1).await;
    // The group commits the end offsets of partition 0 of both topics.
    let commit_ends = || async {
        for topic in [&t1, &empty] {
            let end = end_offsets(&primary.bootstrap, topic).await[&0];
            commit_offsets(&primary.bootstrap, group, topic, &BTreeMap::from([(0, end)])).await;
        }
    };
    commit_ends().await;
    let expected1 = continue_at(&source, &copy, |_| usize::MAX)[&0];
    let view = eventually("a checkpoint of test-topic-1 only", TRANSFER, || async {
        let view = mirror_client(&backup.bootstrap, &primary.alias, group).await;
        view.offsets().contains_key(&(remote1.clone(), 0)).then_some(view)
    })
    .await;
    assert_eq!(view.offsets().get(&(remote1.clone(), 0)), Some(&expected1), "exact translation");
    assert!(!view.offsets().contains_key(&(remote_empty.clone(), 0)), "checkpoint without any record copied");

    scenario.produce(primary, &empty, Some(1)).await;
    let (source_empty, copy_empty) = copied(&scenario, primary, backup, &empty).await;
    commit_ends().await;
    let expected_empty = continue_at(&source_empty, &copy_empty, |_| usize::MAX)[&0];
    eventually("checkpoints of both topics", TRANSFER, || async {
        let offsets = mirror_client(&backup.bootstrap, &primary.alias, group).await.offsets();
        let both = offsets.get(&(remote1.clone(), 0)) == Some(&expected1)
            && offsets.get(&(remote_empty.clone(), 0)) == Some(&expected_empty);
        both.then_some(())
    })
    .await;
    stop(kferry).await;
}

/// MM2's `testRestartReplication`: the group's offsets are fully synced, kferry restarts,
/// more records come and are consumed, and the sync continues; checkpoints never go
/// backwards. Stronger: the restart copies no record twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replication() {
    let scenario = Scenario::new();
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    scenario.create_topics(true).await;
    let config = scenario.one_way("");
    let t1 = scenario.topic("1");
    let remote = scenario.remote(&t1, primary);
    let kferry = Kferry::start("run", &config);
    scenario.produce(primary, &t1, None).await;
    group_consume(&primary.bootstrap, &t1, group, &PER_PARTITION.to_string(), &[]).await;
    let (source, copy) = copied(&scenario, primary, backup, &t1).await;
    assert_fully_synced(&backup.bootstrap, group, &remote, &source, &copy).await;
    // MM2 restarts its connectors; kferry's process is the connector.
    stop(kferry).await;
    let kferry = Kferry::start("run", &config);
    assert_monotonic_checkpoints(&backup.bootstrap, &primary.alias).await;
    scenario.produce(primary, &t1, None).await;
    group_consume(&primary.bootstrap, &t1, group, &PER_PARTITION.to_string(), &[]).await;
    let (source, copy) = copied(&scenario, primary, backup, &t1).await;
    assert_eq!(copy.len(), 2 * RECORDS as usize);
    assert_fully_synced(&backup.bootstrap, group, &remote, &source, &copy).await;
    assert_monotonic_checkpoints(&backup.bootstrap, &primary.alias).await;
    stop(kferry).await;
}

/// MM2's `testOffsetTranslationBehindReplicationFlow`: after a first checkpoint, 99 times
/// more records are copied; the group then commits at 90 % of each partition (checkpoints
/// advance), then at 10 % (checkpoints rewind). Stronger: each checkpoint is the exact copy
/// of the committed record, where MM2's lie within offset.lag.max.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_translation_behind_replication_flow() {
    let scenario = Scenario::new();
    let (primary, backup, group) = (&scenario.primary, &scenario.backup, &scenario.group);
    scenario.create_topics(true).await;
    let t1 = scenario.topic("1");
    let remote = scenario.remote(&t1, primary);
    let kferry = Kferry::start("run", &scenario.one_way(""));
    scenario.produce(primary, &t1, None).await;
    group_consume(&primary.bootstrap, &t1, group, "3", &[]).await;
    let initial = wait_for_checkpoints(&backup.bootstrap, &primary.alias, group, &remote, PARTITIONS as i32, None)
        .await
        .offsets_of(&remote);
    const ITERATIONS: u32 = 100;
    let more = (ITERATIONS - 1) * RECORDS;
    let summary = produce(&primary.bootstrap, &t1, more, "lz4", &["--key-space", "10000000"]).await;
    assert_eq!(summary["delivered"], more);
    let (source, copy) = copied(&scenario, primary, backup, &t1).await;
    assert_eq!(copy.len(), (ITERATIONS * RECORDS) as usize);
    let mut last = initial.clone();
    for (step, fraction) in [("advance", 0.9), ("rewind", 0.1)] {
        let at = |p: i32| (by_partition(&source)[&p].len() as f64 * fraction) as usize;
        let commit: BTreeMap<i32, i64> = by_partition(&source).iter().map(|(p, r)| (*p, r[at(*p)].offset)).collect();
        commit_offsets(&primary.bootstrap, group, &t1, &commit).await;
        let expected = continue_at(&source, &copy, at);
        let checkpointed =
            wait_for_checkpoints(&backup.bootstrap, &primary.alias, group, &remote, PARTITIONS as i32, Some(&last))
                .await
                .offsets_of(&remote);
        assert_eq!(checkpointed, expected, "{step}: exact checkpoints");
        for (p, offset) in &checkpointed {
            match step {
                "advance" => assert!(*offset > last[p], "{remote}/{p}: checkpoint did not advance"),
                _ => assert!(*offset < last[p], "{remote}/{p}: checkpoint did not rewind"),
            }
        }
        if step == "advance" {
            assert_monotonic_checkpoints(&backup.bootstrap, &primary.alias).await;
        }
        last = checkpointed;
    }
    stop(kferry).await;
}

/// A topic of the primary created while kferry runs (one way), with `configs`; waits for
/// its copy and returns (topic, copy's name).
async fn topic_while_running(scenario: &Scenario, configs: &[&str]) -> (String, String) {
    let topic = scenario.topic("with-config");
    create_topic(&scenario.primary.bootstrap, &topic, PARTITIONS, configs).await;
    let remote = scenario.remote(&topic, &scenario.primary);
    wait_for_topic(&scenario.backup.bootstrap, &remote).await;
    (topic, remote)
}

/// Sets configs of `topic` on `bootstrap` (MM2: incrementalAlterConfigs SET / DELETE).
async fn alter(bootstrap: &str, topic: &str, op: &str, configs: &[&str]) {
    let mut args = vec!["alter-config", "--bootstrap", bootstrap, "--topic", topic];
    for config in configs {
        args.extend([op, config]);
    }
    verify_json(&args).await;
}

/// Waits until config `name` of `topic` on `bootstrap` is `value` (defaults included).
async fn wait_for_config(bootstrap: &str, topic: &str, name: &str, value: &str) {
    eventually(&format!("{name}={value} on {topic}"), TRANSFER, || async {
        (describe_topic(bootstrap, topic).await.config(name) == Some(value)).then_some(())
    })
    .await;
}

/// The excluded `delete.retention.ms` keeps the value set on the target over several syncs.
async fn assert_excluded_config_left_alone(scenario: &Scenario, topic: &str, remote: &str) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let source = describe_topic(&scenario.primary.bootstrap, topic).await;
    let copy = describe_topic(&scenario.backup.bootstrap, remote).await;
    assert_ne!(source.config("delete.retention.ms"), copy.config("delete.retention.ms"), "excluded, yet synced");
    assert_eq!(copy.config("delete.retention.ms"), Some("2000"), "set on the target, kept there");
}

/// MM2's `testSyncTopicConfigs`: a copied config altered on the target is synced back to the
/// source's value; an excluded one altered there stays as set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_topic_configs() {
    let scenario = Scenario::new();
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let (topic, remote) = topic_while_running(&scenario, &["delete.retention.ms=1000", "retention.bytes=1000"]).await;
    alter(&scenario.backup.bootstrap, &remote, "--set", &["delete.retention.ms=2000", "retention.bytes=2000"]).await;
    wait_for_config(&scenario.backup.bootstrap, &remote, "retention.bytes", "1000").await;
    assert_excluded_config_left_alone(&scenario, &topic, &remote).await;
    stop(kferry).await;
}

/// MM2's `testReplicateSourceDefault` (`use.defaults.from = source`): a config the source
/// topic leaves at its default, altered on the target, goes back to that default (-1).
/// kferry has no such switch: it removes target overrides the source lacks, so the target
/// cluster's default applies, which on these clusters (same broker defaults) is the
/// source's; the excluded config stays as set on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_source_default() {
    let scenario = Scenario::new();
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let (topic, remote) = topic_while_running(&scenario, &[]).await;
    alter(&scenario.backup.bootstrap, &remote, "--set", &["delete.retention.ms=2000", "retention.bytes=2000"]).await;
    wait_for_config(&scenario.backup.bootstrap, &remote, "retention.bytes", "-1").await;
    let source = describe_topic(&scenario.primary.bootstrap, &topic).await;
    assert_eq!(source.config("retention.bytes"), Some("-1"));
    assert_excluded_config_left_alone(&scenario, &topic, &remote).await;
    stop(kferry).await;
}

/// MM2's `testReplicateTargetDefault`: a config copied to the target and then deleted on the
/// source goes back to the target's default there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_target_default() {
    let scenario = Scenario::new();
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let (topic, remote) = topic_while_running(&scenario, &["retention.bytes=1000"]).await;
    wait_for_config(&scenario.backup.bootstrap, &remote, "retention.bytes", "1000").await;
    alter(&scenario.primary.bootstrap, &topic, "--delete", &["retention.bytes"]).await;
    wait_for_config(&scenario.backup.bootstrap, &remote, "retention.bytes", "-1").await;
    stop(kferry).await;
}

/// MM2's `testReplicateFromLatest` (`auto.offset.reset = latest`, kferry's `start: latest`):
/// records written before kferry started are not copied, those written after are, 10 per
/// partition. Stronger: they are exactly the later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_from_latest() {
    let scenario = Scenario::new();
    let (primary, backup) = (&scenario.primary, &scenario.backup);
    let (topic, sentinel) = (scenario.topic("1"), scenario.topic("sentinel"));
    create_topic(&primary.bootstrap, &topic, PARTITIONS, &[]).await;
    scenario.produce(primary, &topic, None).await;
    create_topic(&primary.bootstrap, &sentinel, 1, &[]).await;
    let kferry = Kferry::start("run", &scenario.one_way("    start: latest\n"));
    let remote_sentinel = scenario.remote(&sentinel, primary);
    wait_for_topic(&backup.bootstrap, &remote_sentinel).await;
    // Proof that kferry runs and has taken its start positions: a sentinel record gets through.
    eventually("a sentinel record copied", TRANSFER, || async {
        produce(&primary.bootstrap, &sentinel, 1, "none", &[]).await;
        (!consume(&backup.bootstrap, &remote_sentinel, "read_committed", 0).await.is_empty()).then_some(())
    })
    .await;
    let before = consume(&primary.bootstrap, &topic, "read_committed", 0).await.len();
    scenario.produce(primary, &topic, None).await;
    let later: Vec<ConsumedRecord> = by_partition(&consume(&primary.bootstrap, &topic, "read_committed", 0).await)
        .into_values()
        .flat_map(|records| records.into_iter().skip(PER_PARTITION as usize))
        .collect();
    assert_eq!(later.len() + before, 2 * RECORDS as usize);
    let copy = wait_for_copy(&backup.bootstrap, &scenario.remote(&topic, primary), &later).await;
    for (p, records) in by_partition(&copy) {
        assert_eq!(records.len(), PER_PARTITION as usize, "partition {p}");
    }
    stop(kferry).await;
}

/// DedicatedMirrorIntegrationTest's `testSingleNodeCluster`: one kferry process, A->B enabled
/// and B->A not (MM2 also turns B->A heartbeats off; kferry has none), a topic created after
/// the start is created on B and its records copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_single_node() {
    let scenario = Scenario::new();
    let (primary, backup) = (&scenario.primary, &scenario.backup);
    let kferry = Kferry::start("run", &scenario.one_way(""));
    let topic = scenario.topic("1");
    create_topic(&primary.bootstrap, &topic, 1, &[]).await;
    wait_for_topic(&backup.bootstrap, &scenario.remote(&topic, primary)).await;
    scenario.produce(primary, &topic, Some(1)).await;
    copied(&scenario, primary, backup, &topic).await;
    stop(kferry).await;
    assert!(!list_topics(&primary.bootstrap).await.contains(&backup.remote(&topic)), "B->A ran");
}

/// DedicatedMirrorIntegrationTest's `testMultiNodeCluster`, as far as kferry goes: kferry
/// runs a flow in one process (no multi-node cluster, so no REST forwarding, rebalances or
/// URL-encoded alias; see MM2-SCENARIOS.md). Ported: one topic per "node" created and copied
/// while running, then a rolling restart onto a changed config
/// (`refresh_topics_interval_seconds` 1 -> 2, as MM2's), each restart followed by more
/// records of one topic (copied once each), and a topic created afterwards is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_rolling_restart_with_a_new_config() {
    const NODES: usize = 3;
    let scenario = Scenario::new();
    let (primary, backup) = (&scenario.primary, &scenario.backup);
    let mut kferry = Kferry::start("run", &scenario.one_way(""));
    let topics: Vec<String> = (0..NODES).map(|node| scenario.topic(&node.to_string())).collect();
    for topic in &topics {
        create_topic(&primary.bootstrap, topic, 1, &[]).await;
        wait_for_topic(&backup.bootstrap, &scenario.remote(topic, primary)).await;
        scenario.produce(primary, topic, Some(1)).await;
        copied(&scenario, primary, backup, topic).await;
    }
    let new_config =
        scenario.one_way("").replace("refresh_topics_interval_seconds: 1", "refresh_topics_interval_seconds: 2");
    assert!(new_config.contains("refresh_topics_interval_seconds: 2"));
    for topic in &topics {
        stop(kferry).await;
        kferry = Kferry::start("run", &new_config);
        // MM2 waits for the restarted node's tasks; here: the next records get through.
        scenario.produce(primary, topic, Some(1)).await;
        let (_, copy) = copied(&scenario, primary, backup, topic).await;
        assert_eq!(copy.len(), 2 * PER_PARTITION as usize);
    }
    let late = scenario.topic("late");
    create_topic(&primary.bootstrap, &late, 1, &[]).await;
    scenario.produce(primary, &late, Some(1)).await;
    copied(&scenario, primary, backup, &late).await;
    stop(kferry).await;
}

/// What IdentityReplicationIntegrationTest avoids (it turns backup->primary off): MM2 has no
/// cycle detection with the identity policy, so an identity flow both ways would copy every record around forever under MM2; kferry's
/// config validation refuses it before anything runs (`kferry run` exits 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_flows_both_ways_are_refused() {
    let scenario = Scenario::with(Side::backup(), true, false);
    let keys = scenario.flow_keys("");
    let config = config(
        &[&scenario.primary, &scenario.backup],
        &[(&scenario.primary, &scenario.backup, &keys), (&scenario.backup, &scenario.primary, &keys)],
    );
    let (code, _, stderr) = Kferry::run_to_end("run", &config).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cycle"), "{stderr}");
}
