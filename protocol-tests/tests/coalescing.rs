//! Coalescing on real Kafka: a source written one record per batch (confluent-kafka with
//! `batch.num.messages=1`, in transactions some of which abort, so markers and aborted
//! data leave gaps between the tiny batches) is replicated by `kferry run` (a subprocess).
//! The target must hold the same records, in the same order, with the same keys, values,
//! headers and timestamps (read back by confluent-kafka), in far fewer batches than the
//! source (fetched with kferry's client), and the offset map kferry wrote must translate
//! every source offset, and every offset in a gap, exactly.

use std::time::Duration;

use kferry::client::{Cluster, FetchSpec, Isolation, OffsetSpec};
use kferry::protocol::batch::{BatchItem, BatchIter};
use protocol_tests::{
    alias, by_partition, connect, consume, content, create_topic, describe_topic, eventually, primary, produce,
    secondary, two_cluster_config, unique_name, Kferry,
};

const PARTITIONS: i32 = 2;
const RECORDS: u32 = 1_200;

/// Data batches (control batches, i.e. transaction markers, left out) of one partition.
async fn data_batches(cluster: &Cluster, topic: &str, partition: i32) -> usize {
    let end = cluster.list_offset(topic, partition, OffsetSpec::Latest, Isolation::ReadUncommitted).await.unwrap();
    let (mut offset, mut batches) = (0, 0);
    for _ in 0..10_000 {
        if offset >= end {
            break;
        }
        let spec = FetchSpec {
            offset,
            max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(100),
            isolation: Isolation::ReadUncommitted,
        };
        let fetched = cluster.fetch(topic, partition, &spec).await.unwrap();
        for item in BatchIter::new(fetched.records) {
            match item.expect("well-formed batches") {
                BatchItem::Batch(batch) if batch.last_offset() >= offset => {
                    offset = batch.last_offset() + 1;
                    batches += usize::from(!batch.is_control());
                }
                BatchItem::Batch(_) | BatchItem::Partial { .. } => {}
            }
        }
    }
    assert_eq!(offset, end, "{topic}/{partition}: fetched to the end");
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_batches_are_coalesced_with_records_and_offset_map_exact() {
    let topic = unique_name("coalesce");
    create_topic(&primary(), &topic, PARTITIONS as u32, &[]).await;
    let txn = unique_name("coalesce-txn");
    let args = [
        "--transactional-id",
        txn.as_str(),
        "--txn-size",
        "40",
        "--abort-every",
        "3",
        "--linger-ms",
        "0",
        "--batch-records",
        "1",
    ];
    let summary = produce(&primary(), &topic, RECORDS, "lz4", &args).await;
    let committed = summary["committed"].as_u64().unwrap() as usize;
    let source_records = consume(&primary(), &topic, "read_committed", committed).await;
    assert_eq!(source_records.len(), committed);

    let (source_alias, target_alias) = (alias("cs"), alias("ct"));
    let flow =
        format!("    topics: [\"{topic}\"]\n    delivery: exactly_once\n    refresh_topics_interval_seconds: 1\n");
    let kferry = Kferry::start("run", &two_cluster_config(&source_alias, &target_alias, &flow));
    let target_records =
        eventually(&format!("{committed} records of {topic} on the target"), Duration::from_secs(120), || async {
            // kferry creates the target topic: reading it before would fail.
            if !describe_topic(&secondary(), &topic).await.exists {
                return None;
            }
            let records = consume(&secondary(), &topic, "read_committed", 0).await;
            assert!(records.len() <= committed, "more records on the target than committed on the source");
            (records.len() == committed).then_some(records)
        })
        .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("WARN"), "{stderr}");
    assert!(target_records.iter().all(|r| r.timestamp_type == "create_time"));
    assert_eq!(content(&target_records), content(&source_records), "records, order, keys, headers, timestamps");

    // The source holds one batch per record; the target far fewer (kferry merged them).
    let (source, target) = (connect("primary", &primary()).await, connect("secondary", &secondary()).await);
    for partition in 0..PARTITIONS {
        let on_source = data_batches(&source, &topic, partition).await;
        let on_target = data_batches(&target, &topic, partition).await;
        let records = source_records.iter().filter(|r| r.partition == partition).count();
        assert!(
            on_source >= records,
            "partition {partition}: the source has {on_source} batches for {records} records"
        );
        assert!(
            on_target * 10 <= on_source,
            "partition {partition}: {on_target} batches on the target against {on_source} on the source: not coalesced"
        );
    }

    // The offset map: every committed source record maps to its copy; a consumer positioned in
    // a gap (aborted records, markers) continues at the next record, on both sides.
    let state_topic = format!("__kferry.offset-map.{source_alias}");
    let maps = kferry::replicate::state::load(&target, &state_topic).await.expect("state topic readable");
    let (source_by_partition, target_by_partition) = (by_partition(&source_records), by_partition(&target_records));
    for partition in 0..PARTITIONS {
        let (target_topic, map) = &maps[&(topic.clone(), partition)];
        assert_eq!(target_topic, &topic);
        let (on_source, on_target) = (&source_by_partition[&partition], &target_by_partition[&partition]);
        for (s, t) in on_source.iter().zip(on_target) {
            assert_eq!(map.translate(s.offset), Some(t.offset), "partition {partition}: source offset {}", s.offset);
        }
        for (s, t) in on_source.windows(2).zip(on_target.windows(2)) {
            for gap in s[0].offset + 1..s[1].offset {
                assert_eq!(map.translate(gap), Some(t[1].offset), "partition {partition}: offset {gap} in a gap");
            }
        }
    }
}

/// A target topic whose `max.message.bytes` (copied from the source by topic sync) is below
/// what coalescing builds: the target refuses the coalesced batch (MESSAGE_TOO_LARGE), kferry
/// says so once and forwards that partition's batches as they came; every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_topic_refusing_coalesced_batches_gets_them_as_they_came() {
    let topic = unique_name("coalesce-small-max");
    create_topic(&primary(), &topic, 1, &["max.message.bytes=8192"]).await;
    let args = ["--linger-ms", "0", "--batch-records", "1"];
    produce(&primary(), &topic, 600, "none", &args).await;
    let source_records = consume(&primary(), &topic, "read_committed", 600).await;

    let flow =
        format!("    topics: [\"{topic}\"]\n    delivery: exactly_once\n    refresh_topics_interval_seconds: 1\n");
    let kferry = Kferry::start("run", &two_cluster_config(&alias("cs"), &alias("ct"), &flow));
    let target_records =
        eventually(&format!("600 records of {topic} on the target"), Duration::from_secs(120), || async {
            if !describe_topic(&secondary(), &topic).await.exists {
                return None;
            }
            let records = consume(&secondary(), &topic, "read_committed", 0).await;
            (records.len() == 600).then_some(records)
        })
        .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        describe_topic(&secondary(), &topic).await.configs.get("max.message.bytes").map(String::as_str),
        Some("8192")
    );
    assert_eq!(content(&target_records), content(&source_records));
    assert_eq!(stderr.matches("refuses a coalesced batch as too large").count(), 1, "{stderr}");
    assert!(!stderr.contains("ERROR") && !stderr.contains("partition stopped"), "{stderr}");
}
