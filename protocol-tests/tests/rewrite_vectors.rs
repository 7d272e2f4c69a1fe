//! Offline tests of the slow path (`kferry::replicate::rewrite`) on batches real Kafka made:
//!
//! - `compacted-<codec>`: a compacted topic after Kafka's log cleaner ran. Three idempotent
//!   producer runs (keys `k00..k09`, then `k00..k19` with headers, then `k00..k04`, a
//!   tombstone for `k15` and `k12` again), then three single-record runs to roll segments.
//!   The cleaner left a header-only batch (every record of the first run superseded; kept
//!   for its producer's state), a batch of 13 records over 20 offsets, and a batch whose
//!   tombstone got a delete horizon (attribute bit 6, base timestamp = the horizon). The
//!   cleaner rewrote those batches itself, so they carry the broker's (Java) codec framing.
//! - `log-append-time-<codec>`: three producer runs of 15 records into a topic with
//!   `message.timestamp.type=LogAppendTime`; the broker set the attribute and maxTimestamp.
//!
//! Each `.bin` is the raw fetched records blob (kferry's `Cluster::fetch`, Kafka 4.4.0); the
//! `.json` beside it holds what confluent-kafka's consumer read from the same topic (offset,
//! key, value, headers, timestamp): the expectations come from the independent client, not
//! from kferry. The rewritten batches are decoded here with kafka-protocol's codecs and a
//! record parser of this file's own, not with kferry's.
//!
//! Captured with a one-off confluent-kafka script and capture test against
//! `scripts/kafka/cluster.sh start rw 39592 4.4.0` (topic configs `cleanup.policy=compact,
//! segment.ms=100, min.cleanable.dirty.ratio=0.01, delete.retention.ms=100,
//! min.compaction.lag.ms=0, max.compaction.lag.ms=1000`, then `cleanup.policy=delete,
//! retention.ms=-1` to freeze the result before reading it). The same capture produced
//! every rewritten batch back to the broker (`Cluster::produce`, base offset 0, a compacted
//! target topic for the compacted vectors) and confluent-kafka read the records back equal
//! to the JSON, with CreateTime timestamps: the broker accepts what `rewrite` writes in all
//! five codecs.

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
use kafka_protocol::records::RecordBatchDecoder;
use kferry::protocol::batch::{attributes, BatchItem, BatchIter, Compression, RecordBatch};
use kferry::replicate::forward::{stamp, Stamp};
use kferry::replicate::rewrite::{needs_rewrite, rewrite, Rewritten};
use protocol_tests::{crate_dir, ConsumedRecord, BATCH_CODECS};

struct Vector {
    name: String,
    batches: Vec<RecordBatch>,
    expected: Vec<ConsumedRecord>,
}

fn vector(name: &str) -> Vector {
    let dir = crate_dir().join("vectors");
    let blob = std::fs::read(dir.join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("vector {name}: {e}"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let expected = serde_json::from_value(meta["records"].clone()).expect("records as confluent-kafka read them");
    let batches = BatchIter::new(Bytes::from(blob))
        .map(|item| match item.expect("valid batch") {
            BatchItem::Batch(b) => b,
            partial => panic!("{name}: whole batches only: {partial:?}"),
        })
        .collect();
    Vector { name: name.to_string(), batches, expected }
}

/// One record decoded independently of kferry.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    offset_delta: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Kafka's zigzag varint, read from the front of `data`.
fn varlong(data: &mut &[u8]) -> i64 {
    let (mut value, mut shift) = (0u64, 0);
    loop {
        let byte = data[0];
        *data = &data[1..];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return (value >> 1) as i64 ^ -((value & 1) as i64);
        }
        shift += 7;
    }
}

fn nullable(data: &mut &[u8]) -> Option<Vec<u8>> {
    let length = varlong(data);
    (length >= 0).then(|| {
        let (bytes, rest) = data.split_at(length as usize);
        *data = rest;
        bytes.to_vec()
    })
}

/// Decompresses a batch's records with kafka-protocol's codecs (librdkafka and Java
/// framings alike) and parses them.
fn decode(batch: &RecordBatch) -> Vec<Decoded> {
    let mut section = batch.as_bytes().slice(61..);
    let copy = |b: &mut Bytes| Ok(b.to_vec());
    let raw = match batch.compression() {
        Compression::None => section.to_vec(),
        Compression::Gzip => Gzip::decompress(&mut section, copy).unwrap(),
        Compression::Snappy => Snappy::decompress(&mut section, copy).unwrap(),
        Compression::Lz4 => Lz4::decompress(&mut section, copy).unwrap(),
        Compression::Zstd => Zstd::decompress(&mut section, copy).unwrap(),
        other => panic!("codec {other:?}"),
    };
    let mut data = &raw[..];
    let mut records = Vec::new();
    for _ in 0..batch.records_count() {
        let length = varlong(&mut data) as usize;
        let (mut body, rest) = data.split_at(length);
        data = rest;
        body = &body[1..]; // record attributes
        let timestamp_delta = varlong(&mut body);
        let offset_delta = varlong(&mut body) as i32;
        let key = nullable(&mut body);
        let value = nullable(&mut body);
        let headers = (0..varlong(&mut body))
            .map(|_| (String::from_utf8(nullable(&mut body).unwrap()).unwrap(), nullable(&mut body)))
            .collect();
        assert!(body.is_empty(), "record fields fill the record");
        let timestamp = batch.base_timestamp() + timestamp_delta;
        records.push(Decoded { offset_delta, timestamp, key, value, headers });
    }
    assert!(data.is_empty(), "records fill the section");
    records
}

/// Rewrites every batch of a vector, checking each result; returns them with the source
/// batch they came from.
fn rewrite_all(v: &Vector) -> Vec<(RecordBatch, Rewritten)> {
    let mut out = Vec::new();
    for source in &v.batches {
        let Some(rewritten) = rewrite(source).unwrap_or_else(|e| panic!("{}: {e}", v.name)) else {
            assert_eq!(source.records_count(), 0, "{}: only an empty batch is skipped", v.name);
            continue;
        };
        let b = &rewritten.batch;
        // (i) A valid v2 batch on its own: it splits off as one whole batch, its CRC holds,
        // and its offsets are dense.
        let again: Vec<_> = BatchIter::new(b.as_bytes().clone()).collect::<Result<_, _>>().unwrap();
        assert!(matches!(&again[..], [BatchItem::Batch(x)] if x == b), "{}", v.name);
        assert!(b.crc_is_valid(), "{}: CRC-32C", v.name);
        assert_eq!(b.records_count(), b.last_offset_delta() + 1, "{}: dense", v.name);
        assert_eq!(b.records_count(), rewritten.records);
        assert!(!needs_rewrite(b) && !b.has_log_append_time(), "{}", v.name);
        assert_eq!(b.compression(), source.compression(), "{}: same codec", v.name);
        assert_eq!(b.base_offset(), source.base_offset());
        assert_eq!((b.producer_id(), b.producer_epoch(), b.base_sequence()), {
            (source.producer_id(), source.producer_epoch(), source.base_sequence())
        });
        // kafka-protocol reads it too (its own CRC check, header and record parsing).
        let stamped = stamp(b, Stamp { producer_id: 1, producer_epoch: 0, base_sequence: 0, transactional: false });
        let set = RecordBatchDecoder::decode(&mut stamped.clone()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(set.records.len(), rewritten.records as usize);
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..i64::from(rewritten.records)).collect::<Vec<_>>(), "{}: dense from 0", v.name);
        out.push((source.clone(), rewritten));
    }
    out
}

/// (ii) The rewritten records, in order, are the records confluent-kafka read, at the same
/// source offsets, with the same keys, values, headers and timestamps.
fn check_records(v: &Vector, rewritten: &[(RecordBatch, Rewritten)]) {
    let mut expected = v.expected.iter();
    for (_, r) in rewritten {
        let decoded = decode(&r.batch);
        assert_eq!(decoded.len(), r.source_offsets.len());
        for (i, (record, &source_offset)) in decoded.iter().zip(&r.source_offsets).enumerate() {
            let want = expected.next().unwrap_or_else(|| panic!("{}: more records than confluent-kafka read", v.name));
            let at = format!("{} source offset {source_offset}", v.name);
            assert_eq!(record.offset_delta, i as i32, "{at}");
            assert_eq!(source_offset, want.offset, "{at}");
            assert_eq!(record.key, want.key, "{at}: key");
            assert_eq!(record.value, want.value, "{at}: value");
            assert_eq!(record.headers, want.headers, "{at}: headers");
            assert_eq!(record.timestamp, want.timestamp, "{at}: timestamp");
        }
    }
    assert!(expected.next().is_none(), "{}: every record confluent-kafka read is there", v.name);
}

#[test]
fn compacted_batches_are_renumbered_with_their_source_offsets() {
    for (codec, compression) in BATCH_CODECS {
        let v = vector(&format!("compacted-{codec}"));
        // What the cleaner left, as described above.
        let shapes: Vec<(i32, i32)> =
            v.batches.iter().map(|b| (b.records_count(), b.last_offset_delta() + 1)).collect();
        assert_eq!(shapes, [(0, 10), (13, 20), (7, 7), (1, 1), (1, 1), (1, 1)], "{codec}");
        assert!(v.batches[1..3].iter().all(|b| b.compression() == compression), "{codec}");
        let horizon = &v.batches[2];
        assert!(horizon.attributes() & attributes::DELETE_HORIZON != 0, "{codec}: tombstone batch has a horizon");
        assert!(horizon.base_timestamp() > horizon.max_timestamp(), "{codec}: base timestamp is the horizon");
        assert_eq!(v.batches.iter().map(needs_rewrite).collect::<Vec<_>>(), [true, true, false, false, false, false]);

        let rewritten = rewrite_all(&v);
        assert_eq!(rewritten.len(), 5, "{codec}: the empty batch is skipped");
        let (_, renumbered) = &rewritten[0];
        assert_eq!((renumbered.records, renumbered.batch.last_offset_delta()), (13, 12), "{codec}");
        let (_, tombstones) = &rewritten[1];
        assert_eq!(tombstones.batch.attributes() & attributes::DELETE_HORIZON, 0, "{codec}: horizon cleared");
        assert_eq!(tombstones.source_offsets, (30..37).collect::<Vec<_>>(), "{codec}");
        check_records(&v, &rewritten);
    }
}

#[test]
fn log_append_time_batches_get_create_time_equal_to_what_consumers_saw() {
    for (codec, compression) in BATCH_CODECS {
        let v = vector(&format!("log-append-time-{codec}"));
        assert_eq!(v.batches.len(), 3, "{codec}");
        assert!(v.expected.iter().all(|r| r.timestamp_type == "log_append_time"), "{codec}");
        let rewritten = rewrite_all(&v);
        for (source, r) in &rewritten {
            assert!(source.has_log_append_time() && source.compression() == compression, "{codec}");
            assert_eq!(r.batch.attributes(), source.attributes() & !attributes::LOG_APPEND_TIME, "{codec}");
            // (iii) Every record carries the source batch's maxTimestamp.
            assert_eq!(r.batch.base_timestamp(), source.max_timestamp(), "{codec}");
            assert_eq!(r.batch.max_timestamp(), source.max_timestamp(), "{codec}");
            assert!(decode(&r.batch).iter().all(|d| d.timestamp == source.max_timestamp()), "{codec}");
            let first = source.base_offset();
            assert_eq!(r.source_offsets, (first..=source.last_offset()).collect::<Vec<_>>(), "{codec}");
        }
        check_records(&v, &rewritten);
    }
}

#[test]
fn the_vectors_show_both_snappy_framings_and_kafkas_lz4_frame() {
    // Batches the broker's cleaner rewrote carry Java's framing: xerial for snappy.
    let cleaned = &vector("compacted-snappy").batches[1];
    assert!(cleaned.as_bytes()[61..].starts_with(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"));
    // Batches librdkafka wrote and the broker kept: raw snappy, no framing.
    let librdkafka = &vector("log-append-time-snappy").batches[0];
    assert!(!librdkafka.as_bytes()[61..].starts_with(b"\x82SNAPPY"));
    // rewrite reads both and writes the xerial framing.
    for batch in [cleaned, librdkafka] {
        let out = rewrite(batch).unwrap().unwrap();
        assert!(out.batch.as_bytes()[61..].starts_with(b"\x82SNAPPY\x00"));
    }
    // lz4: Java and librdkafka write the same frame descriptor, and so does rewrite.
    for name in ["compacted-lz4", "log-append-time-lz4"] {
        let source = &vector(name).batches[1];
        let out = rewrite(source).unwrap().unwrap();
        for b in [source, &out.batch] {
            assert_eq!(&b.as_bytes()[61..68], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82], "{name}");
        }
    }
}

#[test]
fn garbage_inside_real_batches_gives_errors_not_panics() {
    for (codec, _) in BATCH_CODECS {
        for name in [format!("compacted-{codec}"), format!("log-append-time-{codec}")] {
            let v = vector(&name);
            let source = v.batches.iter().find(|b| b.records_count() > 1).unwrap();
            let bytes = source.as_bytes();
            for at in (61..bytes.len()).step_by(3) {
                let mut corrupt = bytes.to_vec();
                corrupt[at] = corrupt[at].wrapping_add(0x55);
                let patched = kferry::protocol::batch::PatchedBatch::from_batch_bytes(corrupt[..].into()).finish();
                // Either an error or, where the byte was inside a key or value, a valid batch.
                if let Ok(Some(out)) = rewrite(&patched) {
                    assert!(out.batch.crc_is_valid() && !needs_rewrite(&out.batch), "{name} byte {at}");
                }
            }
        }
    }
}
