//! The vocabulary of MirrorMaker 2's own integration tests (Apache Kafka's
//! `connect/mirror/src/test/java/org/apache/kafka/connect/mirror/integration/`), over kferry
//! and the shared test clusters, for `tests/mm2_scenarios.rs`: a `primary` and a `backup`
//! cluster under aliases unique to a test, configs with flows between them, and the reads
//! MM2's tests make with connect-mirror-client's `MirrorClient` (run as a Java subprocess,
//! `verify/mirror-client/MirrorClientView.java`) and on the checkpoints topic.
//!
//! What kferry is asked is MM2's test, not kferry's own idea of it; where kferry promises more
//! (exact offsets, no heartbeats) the scenarios assert the stronger property.

use std::collections::BTreeMap;
use std::time::Duration;

use kferry::groups::checkpoint::{checkpoints_topic, Checkpoint};
use serde::Deserialize;

use crate::{by_topic_partition, consume, describe_topic, eventually, run_mirror_client, verify_json};

/// One cluster of an MM2 test: its alias in kferry's config, where kferry reaches it (with
/// its `security` YAML, if any) and where the verifiers reach it.
#[derive(Debug, Clone)]
pub struct Side {
    pub alias: String,
    /// The listener kferry uses.
    pub kferry_bootstrap: String,
    /// kferry's `security` value for that listener (a YAML flow mapping), if not plaintext.
    pub security: Option<String>,
    /// The PLAINTEXT listener of the same broker, for confluent-kafka and connect-mirror-client.
    pub bootstrap: String,
}

impl Side {
    /// A plaintext cluster at `bootstrap` under a fresh alias starting with `prefix`.
    pub fn plaintext(prefix: &str, bootstrap: &str) -> Self {
        Self {
            alias: crate::alias(prefix),
            kferry_bootstrap: bootstrap.to_string(),
            security: None,
            bootstrap: bootstrap.to_string(),
        }
    }

    /// The shared `primary` test cluster.
    pub fn primary() -> Self {
        Self::plaintext("primary", &crate::primary())
    }

    /// The shared `secondary` test cluster, MM2's `backup`.
    pub fn backup() -> Self {
        Self::plaintext("backup", &crate::secondary())
    }

    /// The secured test broker as the backup, kferry connecting over mutual TLS (MM2's
    /// SSL variant); the verifiers use its PLAINTEXT listener (the same broker).
    pub fn tls_backup() -> Self {
        Self {
            alias: crate::alias("backup"),
            kferry_bootstrap: crate::secure::mtls(),
            security: Some(crate::secure::mtls_security()),
            bootstrap: crate::secure::plaintext(),
        }
    }

    /// The name `topic` of this cluster gets on another with the prefix policy.
    pub fn remote(&self, topic: &str) -> String {
        format!("{}.{topic}", self.alias)
    }

    /// This cluster's entry under `clusters:` in kferry's config.
    fn yaml(&self) -> String {
        let security = self.security.as_ref().map(|s| format!(", security: {s}")).unwrap_or_default();
        format!("  {}: {{ bootstrap_servers: [\"{}\"]{security} }}\n", self.alias, self.kferry_bootstrap)
    }
}

/// A kferry config holding `sides` and one flow per `(source, target, keys)`, `keys` being
/// extra YAML lines of the flow, 4-space indented.
pub fn config(sides: &[&Side], flows: &[(&Side, &Side, &str)]) -> String {
    let mut text = String::from("clusters:\n");
    for side in sides {
        text.push_str(&side.yaml());
    }
    text.push_str("flows:\n");
    for (source, target, keys) in flows {
        text.push_str(&format!("  - source: {}\n    target: {}\n{keys}", source.alias, target.alias));
    }
    text
}

/// What `MirrorClient` (connect-mirror-client) reports on one cluster about a remote alias.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MirrorClientView {
    pub upstream_clusters: Vec<String>,
    pub heartbeat_topics: Vec<String>,
    pub checkpoint_topics: Vec<String>,
    pub remote_topics: Vec<String>,
    /// `replicationHops(alias)`: -1 when the alias is not upstream.
    pub replication_hops: i32,
    /// `remoteConsumerOffsets(group, alias)`, i.e. what the checkpoints say, by `topic/partition`.
    offsets: BTreeMap<String, i64>,
}

impl MirrorClientView {
    /// The translated offsets by (topic, partition).
    pub fn offsets(&self) -> BTreeMap<(String, i32), i64> {
        by_topic_partition(self.offsets.clone())
    }

    /// The translated offsets of `topic` only, by partition.
    pub fn offsets_of(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.offsets().into_iter().filter(|((t, _), _)| t == topic).map(|((_, p), o)| (p, o)).collect()
    }
}

/// Runs `MirrorClientView.java` against `bootstrap` for the remote cluster `alias` and `group`.
pub async fn mirror_client(bootstrap: &str, alias: &str, group: &str) -> MirrorClientView {
    let stdout = run_mirror_client("MirrorClientView.java", &[bootstrap, alias, group]).await;
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("MirrorClientView printed no view ({e}): {stdout}"))
}

/// Waits (MM2's `waitForCheckpointOnAllPartitions`) until `MirrorClient` translates `group`'s
/// offsets on all `partitions` of `topic`; with `differing`, until every partition's
/// translation differs from it (`waitForNewCheckpointOnAllPartitions`). Returns that view.
pub async fn wait_for_checkpoints(
    bootstrap: &str,
    alias: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    differing: Option<&BTreeMap<i32, i64>>,
) -> MirrorClientView {
    eventually(&format!("checkpoints of {group} for every partition of {topic}"), Duration::from_secs(60), || async {
        let view = mirror_client(bootstrap, alias, group).await;
        let offsets = view.offsets_of(topic);
        let all = offsets.len() == partitions as usize;
        let new = differing.is_none_or(|old| offsets.iter().all(|(p, o)| old.get(p) != Some(o)));
        (all && new).then_some(view)
    })
    .await
}

/// Every checkpoint record in `<source alias>.checkpoints.internal` on `bootstrap`, in order
/// (none while that topic does not exist).
pub async fn checkpoints(bootstrap: &str, source_alias: &str) -> Vec<Checkpoint> {
    let topic = checkpoints_topic(source_alias);
    if !describe_topic(bootstrap, &topic).await.exists {
        return Vec::new();
    }
    consume(bootstrap, &topic, "read_uncommitted", 0)
        .await
        .iter()
        .map(|r| {
            let (key, value) =
                (r.key.as_deref().expect("checkpoint key"), r.value.as_deref().expect("checkpoint value"));
            Checkpoint::decode(key, value)
                .unwrap_or_else(|e| panic!("{topic} holds a record that is no checkpoint: {e}"))
        })
        .collect()
}

/// MM2's `assertMonotonicCheckpoints`: per group and partition, no checkpoint's downstream
/// offset is below the one before it. Returns how many checkpoints were read.
pub async fn assert_monotonic_checkpoints(bootstrap: &str, source_alias: &str) -> usize {
    let all = checkpoints(bootstrap, source_alias).await;
    let mut last: BTreeMap<(&str, &str, i32), i64> = BTreeMap::new();
    for c in &all {
        let key = (c.group.as_str(), c.topic.as_str(), c.partition);
        if let Some(&before) = last.get(&key) {
            assert!(
                c.downstream_offset >= before,
                "checkpoints of {} for {}/{} went backwards: {before} then {}",
                c.group,
                c.topic,
                c.partition,
                c.downstream_offset
            );
        }
        last.insert(key, c.downstream_offset);
    }
    all.len()
}

/// The log end offset (high watermark) of every partition of `topic`, by partition.
pub async fn end_offsets(bootstrap: &str, topic: &str) -> BTreeMap<i32, i64> {
    let json = verify_json(&["end-offsets", "--bootstrap", bootstrap, "--topic", topic]).await;
    let offsets: BTreeMap<String, i64> = serde_json::from_value(json["offsets"].clone()).expect("end-offsets output");
    by_topic_partition(offsets).into_iter().map(|((_, p), o)| (p, o)).collect()
}

impl MirrorClientView {
    /// MM2 tests' heartbeat asserts, turned around: kferry writes no heartbeats, so on this
    /// cluster `MirrorClient` finds no heartbeat topic (neither `heartbeats` nor
    /// `<alias>.heartbeats`), hence no upstream cluster and no replication hops to `alias`.
    pub fn assert_no_heartbeats(&self, alias: &str) {
        assert!(self.heartbeat_topics.is_empty(), "heartbeat topics exist: {:?}", self.heartbeat_topics);
        assert!(self.upstream_clusters.is_empty(), "upstream clusters found: {:?}", self.upstream_clusters);
        assert_eq!(self.replication_hops, -1, "replication hops to {alias} without heartbeats");
    }
}

/// Commits `offsets` (by partition) for `group` on `topic`, as a consumer's `commitSync`
/// would (the group must have no members).
pub async fn commit_offsets(bootstrap: &str, group: &str, topic: &str, offsets: &BTreeMap<i32, i64>) {
    let list: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}={o}")).collect();
    verify_json(&[
        "reset-group",
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--topic",
        topic,
        "--offset",
        &list.join(","),
    ])
    .await;
}
