//! kferry's client produces one batch per codec (with headers, null keys, null values and
//! explicit timestamps) to a real broker; confluent-kafka reads the records back and they
//! must be identical, offset by offset.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use kferry::client::{Isolation, NewTopic, OffsetSpec};
use protocol_tests::{connect, consume, primary, unique_name, ConsumedRecord, CODECS};

const RECORDS_PER_BATCH: i64 = 25;

fn codec(name: &str) -> Compression {
    match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => panic!("unknown codec {other}"),
    }
}

/// Record `i`: every third has a null key, every fifth a null value, every other one
/// carries headers (one of them with a null value).
fn record(i: i64, first: i64, base_timestamp: i64) -> Record {
    let mut headers = IndexMap::new();
    if i % 2 == 0 {
        headers.insert(StrBytes::from_string(format!("h{i}")), Some(Bytes::from(format!("header-{i}"))));
        headers.insert(StrBytes::from_static_str("nothing"), None);
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        // A produced batch must start at offset 0 (the broker assigns real offsets; Kafka's
        // LogValidator refuses any other baseOffset from a client).
        offset: i - first,
        // kafka-protocol's encoder starts a new batch wherever `offset - sequence` changes;
        // this keeps one batch with baseSequence -1 (no producer id, no idempotence).
        sequence: (i - first) as i32 - 1,
        timestamp: base_timestamp + i * 7,
        key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
        value: (i % 5 != 0).then(|| Bytes::from(format!("value-{i}-{}", "payload ".repeat(i as usize % 9)))),
        headers,
    }
}

/// What confluent-kafka must read for record `i` of batch `batch_index`.
fn expected(record: &Record, offset: i64) -> ConsumedRecord {
    ConsumedRecord {
        partition: 0,
        offset,
        key: record.key.as_ref().map(|k| k.to_vec()),
        value: record.value.as_ref().map(|v| v.to_vec()),
        headers: record.headers.iter().map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec()))).collect(),
        timestamp: record.timestamp,
        timestamp_type: "create_time".to_string(),
    }
}

fn encode(records: &[Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression })
        .expect("test batch encodes");
    buf.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_produced_by_kferry_read_back_identically_by_confluent_kafka() {
    let bootstrap = primary();
    let cluster = connect("primary", &bootstrap).await;
    let base_timestamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 60_000;
    for codec_name in CODECS {
        let topic = unique_name(&format!("produce-{codec_name}"));
        let created = cluster
            .create_topics(
                &[NewTopic {
                    name: topic.clone(),
                    partitions: 1,
                    replication_factor: None,
                    configs: Default::default(),
                }],
                false,
                Duration::from_secs(30),
            )
            .await
            .expect("CreateTopics answered");
        assert!(created[0].1.is_ok(), "{topic}: {:?}", created[0].1);

        let mut want = Vec::new();
        for batch_index in 0..2 {
            let records: Vec<Record> = (0..RECORDS_PER_BATCH)
                .map(|i| record(batch_index * RECORDS_PER_BATCH + i, batch_index * RECORDS_PER_BATCH, base_timestamp))
                .collect();
            let batch = encode(&records, codec(codec_name));
            assert_eq!(kferry::protocol::batch::BatchIter::new(batch.clone()).count(), 1, "one batch per produce");
            let produced = cluster
                .produce(&topic, 0, batch, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{codec_name}: {e}"));
            assert_eq!(produced.base_offset, batch_index * RECORDS_PER_BATCH, "{codec_name}: base offset");
            want.extend(records.iter().enumerate().map(|(i, r)| expected(r, produced.base_offset + i as i64)));
        }

        let latest = cluster.list_offset(&topic, 0, OffsetSpec::Latest, Isolation::ReadUncommitted).await.unwrap();
        assert_eq!(latest, 2 * RECORDS_PER_BATCH, "{codec_name}: log end offset");
        let got = consume(&bootstrap, &topic, "read_uncommitted", want.len()).await;
        assert_eq!(got.len(), want.len(), "{codec_name}: record count");
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(got, want, "{codec_name}: record at offset {}", want.offset);
        }
    }
}
