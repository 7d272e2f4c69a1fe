//! Flows split into shards (`shards: N`), against the real test clusters: each shard is a
//! replicator with its own transactional ids (two on Kafka 4.x, whose rounds alternate) and
//! its own partition of the state topic; the
//! records read back by confluent-kafka must be on the target exactly once and in order,
//! also after SIGKILLs, the offset map must translate group offsets as for an unsplit flow,
//! `kferry status` must name each partition's shard, and a changed shard count must be
//! refused rather than read the state wrongly.

use std::time::Duration;

use protocol_tests::{
    alias, consume, create_topic, describe_group, describe_topic, group_consume, primary, produce, secondary,
    two_cluster_config, unique_name, wait_until_replicated, Kferry, CODECS,
};

fn sharded_config(source: &str, target: &str, prefix: &str, shards: u16) -> String {
    two_cluster_config(
        source,
        target,
        &format!(
            "    topics: [\"{prefix}-.*\"]\n    groups: [\"{prefix}-.*\"]\n    shards: {shards}\n    \
             refresh_topics_interval_seconds: 1\n    sync_group_offsets_interval_seconds: 1\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_of_three_shards_replicates_exactly_once_through_sigkills_and_translates_groups() {
    let prefix = unique_name("shards");
    let (wide, narrow) = (format!("{prefix}-wide"), format!("{prefix}-narrow"));
    create_topic(&primary(), &wide, 6, &[]).await;
    create_topic(&primary(), &narrow, 2, &[]).await;
    let (source, target) = (alias("p"), alias("s"));
    let config = sharded_config(&source, &target, &prefix, 3);

    // Three rounds of writing, each interrupted by a SIGKILL a moment after kferry started,
    // with aborted transactions among the records.
    for round in 0..3u32 {
        let codec = CODECS[round as usize % CODECS.len()];
        let txn = format!("{prefix}-producer-{round}");
        produce(&primary(), &wide, 3_000, codec, &["--transactional-id", &txn, "--abort-every", "7"]).await;
        produce(&primary(), &narrow, 1_000, codec, &[]).await;
        let kferry = Kferry::start("run", &config);
        tokio::time::sleep(Duration::from_millis(900 + 500 * u64::from(round))).await;
        kferry.kill().await;
    }
    let kferry = Kferry::start("run", &config);
    for topic in [&wide, &narrow] {
        let source_records = consume(&primary(), topic, "read_committed", 0).await;
        let on_target = wait_until_replicated(topic, source_records.len()).await;
        assert_eq!(
            protocol_tests::content(&on_target),
            protocol_tests::content(&source_records),
            "{topic}: every committed record exactly once, in order, after 3 SIGKILLs"
        );
    }

    // One state partition per shard on the target, every one of them written to.
    let state = describe_topic(&secondary(), &format!("__kferry.offset-map.{source}")).await;
    assert_eq!(state.partitions, 3, "a state partition per shard");

    // A group's position translates through the shards' offset maps.
    let group = format!("{prefix}-group");
    group_consume(&primary(), &wide, &group, "100", &["--isolation", "read_committed"]).await;
    let synced = protocol_tests::eventually("the group synced to the target", Duration::from_secs(60), || async {
        let on_target = describe_group(&secondary(), &group).await.offsets;
        (on_target.len() == 6).then_some(on_target)
    })
    .await;
    let source_wide = consume(&primary(), &wide, "read_committed", 0).await;
    let target_wide = consume(&secondary(), &wide, "read_committed", 0).await;
    let on_source = describe_group(&primary(), &group).await.offsets;
    for partition in 0..6 {
        let key = format!("{wide}/{partition}");
        let committed = on_source[&key];
        let source: Vec<_> = source_wide.iter().filter(|r| r.partition == partition).cloned().collect();
        let target: Vec<_> = target_wide.iter().filter(|r| r.partition == partition).cloned().collect();
        let expected = protocol_tests::expected_target_offset(&source, &target, committed);
        assert_eq!(synced[&key], expected, "{key}: source offset {committed}");
    }

    // `kferry status` names each partition's shard; the shards share the partitions out.
    let (code, status, stderr) = Kferry::run_to_end_with("status", &["--json"], &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json is JSON");
    let partitions = status["flows"][0]["partitions"].as_array().expect("partitions").clone();
    assert_eq!(partitions.len(), 8, "{status}");
    let mut per_shard = [0; 3];
    for p in &partitions {
        let shard = p["shard"].as_u64().unwrap_or_else(|| panic!("a shard in {p}"));
        per_shard[shard as usize] += 1;
        assert_eq!(p["lag_records"], 0, "{p}");
    }
    assert!(per_shard.iter().all(|&n| n >= 2), "8 partitions over 3 shards: {per_shard:?}");

    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let ready: Vec<&str> = stderr.lines().filter(|l| l.contains("producer ready on the target")).collect();
    for shard in 0..3 {
        let id = format!("kferry.{source}.{target}.shard-{shard}-of-3");
        assert!(ready.iter().any(|l| l.contains(&id)), "shard {shard} has its own transactional id {id}: {stderr}");
        // Kafka 4.x formats with transaction.version 2 (KIP-890): each shard's rounds then
        // alternate between two ids; a 3.9 target (the old protocol) gets one.
        let alternate = format!("{id}.alt ");
        let kip890 = !protocol_tests::kafka_version().starts_with("3.");
        let started = ready.iter().any(|l| l.contains(&alternate));
        assert_eq!(started, kip890, "shard {shard}: second transactional id {alternate}started: {stderr}");
    }

    // Another shard count would look for the offset maps in the wrong partitions: refused.
    let other = sharded_config(&source, &target, &prefix, 2);
    let kferry = Kferry::start("run", &other);
    let (code, _, stderr) = kferry.wait_exit(Duration::from_secs(60)).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("`shards: 2` does not match") && stderr.contains("3 partition(s)"), "{stderr}");
}
