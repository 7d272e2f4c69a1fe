//! kferry's MM2 checkpoint codec against the Java reader Java tooling actually uses:
//! records encoded by `kferry::groups::checkpoint` are written to a real Kafka topic, then
//! read back by Apache Kafka's connect-mirror-client (`RemoteClusterUtils.translateOffsets`,
//! run as a subprocess) and by confluent-kafka (raw bytes, decoded by kferry).

use std::collections::BTreeMap;
use std::time::Duration;

use kferry::groups::checkpoint::{checkpoints_topic, Checkpoint, CHECKPOINTS_PARTITION};
use kferry::protocol::records::{build_batch, KeyValueRef};
use protocol_tests::{alias, connect, consume, create_topic, mm2_translate_offsets, secondary, unique_name};

fn checkpoint(group: &str, topic: &str, partition: i32, upstream: i64, downstream: i64) -> Checkpoint {
    Checkpoint {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
        upstream_offset: upstream,
        downstream_offset: downstream,
        metadata: format!("committed at {upstream}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_client_translates_offsets_from_kferry_checkpoints() {
    let source = alias("src");
    let topic = checkpoints_topic(&source);
    // As MM2 creates it (MirrorUtils.createSinglePartitionCompactedTopic).
    create_topic(&secondary(), &topic, 1, &["cleanup.policy=compact"]).await;

    let (group, other) = (unique_name("app"), unique_name("other"));
    let (orders, ledger) = (format!("{source}.orders"), "ledger".to_string());
    // Two produce requests; within and across them a later checkpoint of the same
    // (group, partition) replaces an earlier one, as compaction and readers both assume.
    let first = vec![
        checkpoint(&group, &orders, 0, 12, 10),
        checkpoint(&group, &orders, 1, 9, 7),
        checkpoint(&other, &orders, 0, 1000, 999),
        checkpoint(&group, &orders, 0, 20, 17),
    ];
    let second = vec![
        checkpoint(&group, &orders, 0, 30, 25),
        checkpoint(&group, &ledger, 0, 0, 0),
        checkpoint(&other, &ledger, 2, 5, 4),
    ];

    let target = connect("secondary", &secondary()).await;
    for checkpoints in [&first, &second] {
        let records: Vec<(Vec<u8>, Vec<u8>)> =
            checkpoints.iter().map(|c| c.encode().expect("checkpoint encodes")).collect();
        let refs: Vec<KeyValueRef<'_>> =
            records.iter().map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice()))).collect();
        let batch = build_batch(&refs, 1_700_000_000_000);
        target
            .produce(&topic, CHECKPOINTS_PARTITION, batch.into_bytes(), Duration::from_secs(30))
            .await
            .expect("checkpoints produced");
    }

    let expected = BTreeMap::from([((orders.clone(), 0), 25), ((orders.clone(), 1), 7), ((ledger.clone(), 0), 0)]);
    assert_eq!(mm2_translate_offsets(&secondary(), &source, &group).await, expected);
    let expected_other = BTreeMap::from([((orders.clone(), 0), 999), ((ledger, 2), 4)]);
    assert_eq!(mm2_translate_offsets(&secondary(), &source, &other).await, expected_other);
    assert_eq!(mm2_translate_offsets(&secondary(), &source, &unique_name("nobody")).await, BTreeMap::new());

    // The bytes as an independent client fetched them decode back to what was written.
    let written: Vec<Checkpoint> = first.into_iter().chain(second).collect();
    let fetched = consume(&secondary(), &topic, "read_uncommitted", written.len()).await;
    let decoded: Vec<Checkpoint> = fetched
        .iter()
        .map(|r| {
            let (key, value) = (r.key.as_deref().expect("key"), r.value.as_deref().expect("value"));
            Checkpoint::decode(key, value).expect("checkpoint decodes")
        })
        .collect();
    assert_eq!(decoded, written);
}
