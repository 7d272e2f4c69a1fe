use bytes::BytesMut;

use super::*;
use crate::protocol::batch::PatchedBatch;

/// A hand-made uncompressed batch: `count` offsets from `base`, `records` records in it.
fn batch(base: i64, count: i32, records: i32, producer: i64, attrs: i16) -> Bytes {
    let payload = vec![7u8; 10];
    let mut b = BytesMut::new();
    b.extend_from_slice(&base.to_be_bytes());
    b.extend_from_slice(&((49 + payload.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&[2]);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&attrs.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&1_000i64.to_be_bytes());
    b.extend_from_slice(&1_000i64.to_be_bytes());
    b.extend_from_slice(&producer.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&records.to_be_bytes());
    b.extend_from_slice(&payload);
    PatchedBatch::from_batch_bytes(b).finish().into_bytes()
}

fn blob(parts: &[Bytes]) -> Bytes {
    let mut all = BytesMut::new();
    for part in parts {
        all.extend_from_slice(part);
    }
    all.freeze()
}

const TXN: i16 = attributes::TRANSACTIONAL;
const MARKER: i16 = attributes::TRANSACTIONAL | attributes::CONTROL;

#[test]
fn drops_markers_and_aborted_transactions_keeps_committed_ones() {
    let records = blob(&[
        batch(0, 3, 3, -1, 0),     // plain
        batch(3, 2, 2, 7, TXN),    // producer 7, aborted
        batch(5, 2, 2, 8, TXN),    // producer 8, committed, interleaved
        batch(7, 1, 1, 7, MARKER), // abort marker of 7
        batch(8, 1, 1, 8, MARKER), // commit marker of 8
        batch(9, 2, 2, 7, TXN),    // producer 7 again, a later committed transaction
    ]);
    let selection = select(records, 0, &[(7, 3)]).unwrap();
    let kept: Vec<i64> = selection.batches.iter().map(|f| f.batch.base_offset()).collect();
    assert_eq!(kept, [0, 5, 9]);
    assert_eq!((selection.next_offset, selection.dropped), (11, 3));
}

#[test]
fn skips_what_is_below_the_resume_position_and_stops_at_a_partial_batch() {
    let whole = blob(&[batch(0, 3, 3, -1, 0), batch(3, 3, 3, -1, 0)]);
    let cut = whole.slice(..whole.len() - 5);
    let selection = select(cut, 3, &[]).unwrap();
    assert!(selection.batches.is_empty(), "first batch is below 3, second is partial");
    assert_eq!(selection.next_offset, 3, "fetch again from the partial batch");
    let selection = select(whole, 3, &[]).unwrap();
    assert_eq!(selection.batches.len(), 1);
    assert_eq!(selection.next_offset, 6);
}

#[test]
fn compacted_and_log_append_time_batches_take_the_slow_path() {
    // Real compacted and LogAppendTime batches are covered in rewrite's own tests; here only
    // the routing: a hand-made batch with a gap goes through rewrite (and its garbage
    // records are reported there, not forwarded as they are).
    let compacted = select(blob(&[batch(10, 5, 3, -1, 0)]), 0, &[]).unwrap_err();
    assert!(matches!(compacted, ForwardError::Rewrite(_)), "{compacted:?}");
    let log_append = select(blob(&[batch(0, 1, 1, -1, attributes::LOG_APPEND_TIME)]), 0, &[]).unwrap_err();
    assert!(matches!(log_append, ForwardError::Rewrite(_)), "{log_append:?}");
}

#[test]
fn stamp_rewrites_only_base_offset_producer_and_transactional_bit() {
    let original = select(blob(&[batch(42, 4, 4, 99, 0)]), 0, &[]).unwrap().batches.remove(0).batch;
    let stamped = stamp(&original, Stamp { producer_id: 5, producer_epoch: 2, base_sequence: 17, transactional: true });
    let view = select(stamped.clone(), 0, &[]).unwrap().batches.remove(0).batch;
    assert_eq!((view.base_offset(), view.producer_id(), view.producer_epoch(), view.base_sequence()), (0, 5, 2, 17));
    assert!(view.is_transactional() && view.crc_is_valid());
    assert_eq!(&stamped[61..], &original.as_bytes()[61..], "records untouched");
    let plain = stamp(&view, Stamp { producer_id: 5, producer_epoch: 2, base_sequence: 0, transactional: false });
    assert!(!select(plain, 0, &[]).unwrap().batches[0].batch.is_transactional());
}

#[test]
fn sequences_wrap_like_kafkas() {
    assert_eq!(next_sequence(0, 5), 5);
    assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
}

#[test]
fn real_transactional_vector_keeps_exactly_the_committed_records() {
    // Captured from Kafka 4.4.0 (protocol-tests/vectors): 12 transactions of 10 records,
    // each followed by its marker; transactions 3, 6, 9 and 12 were aborted.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/protocol-tests/vectors/fetch-transactional.bin");
    let records = Bytes::from(std::fs::read(path).unwrap());
    let producer = BatchIter::new(records.clone())
        .find_map(|item| match item {
            Ok(BatchItem::Batch(b)) => Some(b.producer_id()),
            _ => None,
        })
        .unwrap();
    let aborted: Vec<(i64, i64)> = [3i64, 6, 9, 12].iter().map(|k| (producer, (k - 1) * 11)).collect();
    let selection = select(records, 0, &aborted).unwrap();
    let kept: i32 = selection.batches.iter().map(|f| f.batch.records_count()).sum();
    assert_eq!(kept, 80);
    for b in selection.batches.iter().map(|f| &f.batch) {
        let transaction = b.base_offset() / 11 + 1;
        assert!(transaction % 3 != 0, "batch at {} belongs to aborted transaction {transaction}", b.base_offset());
    }
    assert_eq!(selection.next_offset, 132);
}

#[test]
fn stamp_owned_patches_a_unique_batch_in_place_and_copies_a_shared_one() {
    let s = Stamp { producer_id: 5, producer_epoch: 2, base_sequence: 17, transactional: true };
    // A slice of a fetch answer (shared with the answer): copied, the answer untouched.
    let answer = blob(&[batch(42, 4, 4, 99, 0)]);
    let shared = select(answer.clone(), 0, &[]).unwrap().batches.remove(0).batch;
    let expected = stamp(&shared, s);
    assert_eq!(stamp_owned(shared, s), expected);
    assert_eq!(select(answer, 0, &[]).unwrap().batches[0].batch.producer_id(), 99, "the answer is untouched");
    // A batch nobody else holds (as coalescing builds them): same bytes, written in place.
    let unique = PatchedBatch::from_batch_bytes(BytesMut::from(&batch(42, 4, 4, 99, 0)[..])).finish();
    let address = unique.as_bytes().as_ptr();
    let stamped = stamp_owned(unique, s);
    assert_eq!(stamped, expected);
    assert_eq!(stamped.as_ptr(), address, "patched where it was, not copied");
}

#[test]
fn stamp_verified_gives_the_bytes_of_stamp_and_refuses_a_flipped_byte() {
    let batch = crate::protocol::records::build_batch(&[(Some(&b"key"[..]), Some(&b"value"[..]))], 1_000);
    let stamp = Stamp { producer_id: 7, producer_epoch: 3, base_sequence: 42, transactional: true };
    assert_eq!(stamp_verified(&batch, stamp).unwrap(), super::stamp(&batch, stamp), "one read, same bytes");
    let mut bytes = batch.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let corrupt = match crate::protocol::batch::BatchIter::new(bytes::Bytes::from(bytes)).next() {
        Some(Ok(crate::protocol::batch::BatchItem::Batch(b))) => b,
        other => panic!("expected a batch, got {other:?}"),
    };
    let error = stamp_verified(&corrupt, stamp).unwrap_err();
    assert!(error.to_string().contains("fails its CRC-32C check"), "{error}");
}
