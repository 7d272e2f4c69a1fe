//! Offline tests of the batch view on record batches captured from real Kafka (a fetch of
//! what confluent-kafka produced, one file per codec plus a transactional one with aborts;
//! recaptured with `KFERRY_CAPTURE_VECTORS=1 ./scripts/test fetch_view`). Each `.json`
//! beside a `.bin` holds the producer's own summary, so the expectations come from the
//! independent client, not from kferry. No broker is needed.

use bytes::Bytes;
use kferry::protocol::batch::{attributes, BatchItem, BatchIter, RecordBatch};
use protocol_tests::{crate_dir, BATCH_CODECS};

fn vector(name: &str) -> (Bytes, serde_json::Value) {
    let dir = crate_dir().join("vectors");
    let blob = std::fs::read(dir.join(format!("{name}.bin"))).unwrap_or_else(|e| panic!("vector {name}: {e}"));
    let meta = std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap();
    (Bytes::from(blob), serde_json::from_str(&meta).unwrap())
}

fn batches(blob: Bytes) -> Vec<RecordBatch> {
    BatchIter::new(blob)
        .map(|item| match item.expect("valid batch") {
            BatchItem::Batch(b) => b,
            partial => panic!("captured vectors hold whole batches only: {partial:?}"),
        })
        .collect()
}

#[test]
fn every_codec_vector_reads_as_the_producer_wrote_it() {
    for (codec, compression) in BATCH_CODECS {
        let (blob, meta) = vector(&format!("fetch-{codec}"));
        let runs = meta["producer_summary"].as_array().expect("one summary per producer run");
        let per_run: i64 = runs[0]["count"].as_i64().unwrap();
        let mut next = 0;
        for b in batches(blob) {
            let run = &runs[(b.base_offset() / per_run) as usize];
            let run_start = b.base_offset() / per_run * per_run;
            let base_timestamp = run["base_timestamp"].as_i64().unwrap();
            assert!(b.crc_is_valid(), "{codec}: CRC-32C");
            assert_eq!((b.magic(), b.compression()), (2, compression), "{codec}");
            assert_eq!(b.base_offset(), next, "{codec}: contiguous");
            assert_eq!(b.base_timestamp(), base_timestamp + b.base_offset() - run_start, "{codec}");
            assert_eq!(b.max_timestamp(), base_timestamp + b.last_offset() - run_start, "{codec}");
            assert_eq!(i64::from(b.base_sequence()), b.base_offset() - run_start, "{codec}");
            assert_eq!(b.records_count(), b.last_offset_delta() + 1, "{codec}");
            next = b.last_offset() + 1;
        }
        let total: i64 = runs.iter().map(|r| r["count"].as_i64().unwrap()).sum();
        assert_eq!(next, total, "{codec}: every produced record is in the vector");
    }
}

#[test]
fn transactional_vector_has_markers_and_the_aborted_ranges() {
    let (blob, meta) = vector("fetch-transactional");
    let summary = &meta["producer_summary"];
    let all = batches(blob);
    let (control, data): (Vec<_>, Vec<_>) = all.iter().partition(|b| b.is_control());
    assert_eq!(control.len() as i64, summary["transactions"].as_i64().unwrap());
    assert!(all.iter().all(|b| b.is_transactional() && b.crc_is_valid()));
    let records: i64 = data.iter().map(|b| i64::from(b.records_count())).sum();
    assert_eq!(records, summary["count"].as_i64().unwrap());
    // Each transaction is its records followed by one marker, so the k-th marker (0-based)
    // sits at offset (k + 1) * (records per transaction + 1) - 1.
    let per_transaction = summary["count"].as_i64().unwrap() / summary["transactions"].as_i64().unwrap();
    let markers: Vec<i64> = control.iter().map(|m| m.base_offset()).collect();
    let expected: Vec<i64> = (1..=markers.len() as i64).map(|k| k * (per_transaction + 1) - 1).collect();
    assert_eq!(markers, expected);
    assert!(data.iter().all(|b| !markers.contains(&b.base_offset())));
}

#[test]
fn every_cut_of_a_real_blob_yields_whole_batches_then_a_partial_tail() {
    for name in ["fetch-zstd", "fetch-transactional"] {
        let (blob, _) = vector(name);
        let whole = batches(blob.clone());
        let mut boundaries = vec![0usize];
        for b in &whole {
            boundaries.push(boundaries.last().unwrap() + b.as_bytes().len());
        }
        for cut in 0..blob.len() {
            let items: Vec<_> = BatchIter::new(blob.slice(..cut)).collect::<Result<_, _>>().expect("no error on a cut");
            let complete = boundaries.iter().filter(|&&end| end > 0 && end <= cut).count();
            let batches_seen = items.iter().filter(|i| matches!(i, BatchItem::Batch(_))).count();
            assert_eq!(batches_seen, complete, "{name} cut at {cut}");
            let on_boundary = boundaries.contains(&cut);
            match items.last() {
                Some(BatchItem::Partial { base_offset, .. }) => {
                    assert!(!on_boundary, "{name} cut at {cut}");
                    if cut - boundaries[complete] >= 8 {
                        assert_eq!(*base_offset, whole[complete].base_offset(), "{name} cut at {cut}");
                    }
                }
                _ => assert!(on_boundary, "{name} cut at {cut}: a cut inside a batch must be reported"),
            }
        }
    }
}

#[test]
fn patching_a_real_batch_keeps_its_records_and_a_valid_crc() {
    for (codec, _) in BATCH_CODECS {
        let (blob, _) = vector(&format!("fetch-{codec}"));
        let original = batches(blob).remove(0);
        let mut patch = original.to_patchable();
        let plain = original.attributes() & !attributes::TRANSACTIONAL;
        patch.set_producer(4242, 7, 1_000).set_attributes(plain | attributes::TRANSACTIONAL).set_base_offset(0);
        let patched = patch.finish();
        assert!(patched.crc_is_valid(), "{codec}");
        assert_ne!(patched.stored_crc(), original.stored_crc(), "{codec}: producer fields are covered by the CRC");
        assert_eq!((patched.producer_id(), patched.producer_epoch(), patched.base_sequence()), (4242, 7, 1_000));
        assert!(patched.is_transactional() && patched.compression() == original.compression());
        assert_eq!(&patched.as_bytes()[61..], &original.as_bytes()[61..], "{codec}: records untouched");
    }
}

#[test]
fn a_flipped_bit_in_the_records_fails_the_crc() {
    let (blob, _) = vector("fetch-lz4");
    let first = batches(blob).remove(0);
    let mut bytes = first.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let corrupted = batches(Bytes::from(bytes)).remove(0);
    assert!(!corrupted.crc_is_valid());
}
