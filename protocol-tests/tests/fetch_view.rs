//! confluent-kafka produces (every codec, and transactions with aborts); kferry fetches the
//! raw batches and its batch view must read every header field right: offsets, counts,
//! timestamps, producer fields, attribute bits, and a CRC-32C equal to the one the broker
//! accepted. The fetched blobs can be saved as vectors for the offline tests
//! (`KFERRY_CAPTURE_VECTORS=1`, see `vectors.rs`).

use std::time::Duration;

use bytes::Bytes;
use kferry::client::{Cluster, FetchSpec, Isolation, OffsetSpec};
use kferry::protocol::batch::{BatchItem, BatchIter, Compression, RecordBatch};
use protocol_tests::{connect, consume, crate_dir, create_topic, primary, produce, unique_name, CODECS};

/// Fetches a single-partition topic from offset 0 to its end; returns the whole blob, as
/// the concatenation of whole batches (partial tails are fetched again).
async fn fetch_all(cluster: &Cluster, topic: &str, isolation: Isolation) -> (Vec<RecordBatch>, Vec<(i64, i64)>, Bytes) {
    let end = cluster.list_offset(topic, 0, OffsetSpec::Latest, isolation).await.unwrap();
    let (mut batches, mut aborted, mut blob) = (Vec::new(), Vec::new(), Vec::new());
    let mut offset = 0;
    for _ in 0..1_000 {
        if offset >= end {
            break;
        }
        // A small max_bytes so responses end in partial batches, which must be fetched again.
        let spec = FetchSpec { offset, max_bytes: 4_096, max_wait: Duration::from_millis(100), isolation };
        let fetched = cluster.fetch(topic, 0, &spec).await.unwrap();
        aborted.extend(fetched.aborted_transactions);
        for item in BatchIter::new(fetched.records) {
            match item.expect("well-formed batches") {
                BatchItem::Batch(batch) if batch.last_offset() < offset => {}
                BatchItem::Batch(batch) => {
                    offset = batch.last_offset() + 1;
                    blob.extend_from_slice(batch.as_bytes());
                    batches.push(batch);
                }
                BatchItem::Partial { base_offset, .. } => assert_eq!(base_offset, offset, "partial tail resumes here"),
            }
        }
    }
    assert_eq!(offset, end, "{topic}: fetched up to the end offset");
    aborted.sort_unstable();
    aborted.dedup();
    (batches, aborted, Bytes::from(blob))
}

fn compression(name: &str) -> Compression {
    protocol_tests::BATCH_CODECS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).expect("known codec")
}

fn save_vector(name: &str, blob: &Bytes, summary: &serde_json::Value) {
    if std::env::var_os("KFERRY_CAPTURE_VECTORS").is_none() {
        return;
    }
    let dir = crate_dir().join("vectors");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.bin")), blob).unwrap();
    let meta = serde_json::json!({ "kafka_version": protocol_tests::kafka_version(), "producer_summary": summary });
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&meta).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_reads_every_header_field_of_batches_confluent_kafka_wrote() {
    let bootstrap = primary();
    let cluster = connect("primary", &bootstrap).await;
    // Three producer runs per topic: at least three batches, from three producer ids.
    const RUNS: i64 = 3;
    const PER_RUN: i64 = 100;
    for codec in CODECS {
        let topic = unique_name(&format!("fetch-{codec}"));
        create_topic(&bootstrap, &topic, 1, &[]).await;
        let mut summaries = Vec::new();
        for _ in 0..RUNS {
            summaries.push(produce(&bootstrap, &topic, PER_RUN as u32, codec, &["--partition", "0"]).await);
        }
        let (batches, aborted, blob) = fetch_all(&cluster, &topic, Isolation::ReadUncommitted).await;
        assert!(aborted.is_empty());
        assert!(batches.len() as i64 >= RUNS, "{codec}: at least one batch per run, got {}", batches.len());

        let mut next = 0;
        let mut producer_ids = Vec::new();
        for b in &batches {
            let run = b.base_offset() / PER_RUN;
            let run_start = run * PER_RUN;
            let base_timestamp = summaries[run as usize]["base_timestamp"].as_i64().unwrap();
            assert_eq!(b.magic(), 2);
            assert!(b.crc_is_valid(), "{codec}: our CRC-32C {:#x} != stored {:#x}", b.computed_crc(), b.stored_crc());
            assert_eq!(b.base_offset(), next, "{codec}: batches are contiguous");
            assert_eq!(b.last_offset() / PER_RUN, run, "{codec}: a batch never spans two producer runs");
            assert_eq!(b.records_count(), b.last_offset_delta() + 1, "{codec}: uncompacted batch is dense");
            assert_eq!(b.compression(), compression(codec), "{codec}: codec bits");
            assert!(!b.is_transactional() && !b.is_control() && !b.has_log_append_time());
            // The verifier stamps record i of a run with base_timestamp + i.
            assert_eq!(b.base_timestamp(), base_timestamp + b.base_offset() - run_start, "{codec}: base timestamp");
            assert_eq!(b.max_timestamp(), base_timestamp + b.last_offset() - run_start, "{codec}: max timestamp");
            // confluent-kafka runs idempotent: its producer id, epoch 0, sequence = index in run.
            assert!(b.producer_id() >= 0 && b.producer_epoch() == 0, "{codec}: producer fields");
            assert_eq!(i64::from(b.base_sequence()), b.base_offset() - run_start, "{codec}: sequence");
            assert!(b.partition_leader_epoch() >= 0);
            producer_ids.push((run, b.producer_id()));
            next = b.last_offset() + 1;
        }
        assert_eq!(next, RUNS * PER_RUN);
        producer_ids.dedup();
        assert_eq!(producer_ids.len() as i64, RUNS, "{codec}: one producer id per run: {producer_ids:?}");
        save_vector(&format!("fetch-{codec}"), &blob, &serde_json::json!(summaries));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_sees_transactions_control_batches_and_aborts() {
    let bootstrap = primary();
    let cluster = connect("primary", &bootstrap).await;
    let topic = unique_name("fetch-txn");
    create_topic(&bootstrap, &topic, 1, &[]).await;
    let txn_id = unique_name("txn");
    // 12 transactions of 10 records; the 3rd, 6th, 9th and 12th are aborted.
    let args = ["--partition", "0", "--transactional-id", &txn_id, "--txn-size", "10", "--abort-every", "3"];
    let summary = produce(&bootstrap, &topic, 120, "lz4", &args).await;
    assert_eq!(summary["aborted"], 40);

    let (batches, aborted, blob) = fetch_all(&cluster, &topic, Isolation::ReadCommitted).await;
    let (control, data): (Vec<_>, Vec<_>) = batches.iter().partition(|b| b.is_control());
    assert_eq!(control.len(), 12, "one marker per transaction");
    assert!(batches.iter().all(|b| b.is_transactional() && b.crc_is_valid()));
    assert!(control.iter().all(|b| b.records_count() == 1 && b.compression() == Compression::None));
    assert_eq!(data.iter().map(|b| i64::from(b.records_count())).sum::<i64>(), 120);
    let producer_id = data[0].producer_id();
    assert!(batches.iter().all(|b| b.producer_id() == producer_id));

    // The response lists the aborted transactions by their first offset: each aborted
    // transaction's first data batch starts there.
    assert_eq!(aborted.len(), 4, "{aborted:?}");
    for (pid, first_offset) in &aborted {
        assert_eq!(*pid, producer_id);
        assert!(data.iter().any(|b| b.base_offset() == *first_offset), "aborted txn starts at a data batch");
    }
    let committed = consume(&bootstrap, &topic, "read_committed", 80).await;
    assert_eq!(committed.len(), 80, "confluent-kafka sees the committed records only");
    save_vector("fetch-transactional", &blob, &summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_earliest_latest_and_by_timestamp() {
    let bootstrap = primary();
    let cluster = connect("primary", &bootstrap).await;
    let topic = unique_name("offsets");
    create_topic(&bootstrap, &topic, 1, &[]).await;
    let summary = produce(&bootstrap, &topic, 50, "none", &["--partition", "0"]).await;
    let base = summary["base_timestamp"].as_i64().unwrap();
    let at = |spec| cluster.list_offset(&topic, 0, spec, Isolation::ReadUncommitted);
    assert_eq!(at(OffsetSpec::Earliest).await.unwrap(), 0);
    assert_eq!(at(OffsetSpec::Latest).await.unwrap(), 50);
    assert_eq!(at(OffsetSpec::Timestamp(base + 20)).await.unwrap(), 20);
    let missing = cluster.list_offset("no-such-topic-kferry", 0, OffsetSpec::Latest, Isolation::ReadUncommitted).await;
    let message = missing.unwrap_err().to_string();
    assert!(message.contains("no-such-topic-kferry") && message.contains("primary"), "{message}");
}
