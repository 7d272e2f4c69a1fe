//! Hand-made batches. The real-Kafka proof (1-record batches from a Java-compatible producer,
//! read back by confluent-kafka, offset map checked) is `protocol-tests/tests/coalescing.rs`.

use super::*;
use crate::protocol::batch::{Compression, HEADER_BYTES};
use crate::protocol::records::build_batch;

/// A batch of `values` (keys `k<offset>`) at source offset `base`, all stamped `timestamp`,
/// compressed with `codec` (lz4 = 3).
fn batch(base: i64, values: &[&str], timestamp: i64, codec: i16) -> RecordBatch {
    let keys: Vec<String> = (0..values.len()).map(|i| format!("k{}", base + i as i64)).collect();
    let pairs: Vec<_> = keys.iter().zip(values).map(|(k, v)| (Some(k.as_bytes()), Some(v.as_bytes()))).collect();
    let plain = build_batch(&pairs, timestamp);
    let encoded = Encoded {
        base_offset: base,
        records: &plain.as_bytes()[HEADER_BYTES..],
        records_count: plain.records_count(),
        base_timestamp: timestamp,
        max_timestamp: timestamp,
        attributes: codec,
    };
    assemble(&plain, &encoded, MAX_RECORDS_BYTES).unwrap()
}

fn forwarded(batch: RecordBatch) -> Forwarded {
    Forwarded { batch, source_offsets: None, path: BatchPath::Fast }
}

/// (timestamp, key, value) of every record, absolute timestamps.
fn records(batch: &RecordBatch) -> Vec<(i64, String, String)> {
    let raw = records_section(batch, MAX_RECORDS_BYTES).unwrap();
    parse_records(&raw, batch.records_count(), batch.last_offset_delta())
        .unwrap()
        .iter()
        .map(|r| {
            let (k, v) = r.key_value().unwrap();
            let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap().to_vec()).unwrap();
            (batch.base_timestamp() + r.timestamp_delta, text(k), text(v))
        })
        .collect()
}

#[test]
fn small_batches_become_one_with_every_record_and_its_source_offset() {
    for codec in [0, 3] {
        // Source offset 13 is a transaction marker: the gap stays in the offsets.
        let input =
            vec![batch(10, &["a"], 1_000, codec), batch(11, &["b", "c"], 900, codec), batch(14, &["d"], 1_100, codec)];
        let out = coalesce(input.into_iter().map(forwarded).collect()).unwrap();
        assert_eq!((out.batches.len(), out.merged), (1, 2));
        let Forwarded { batch, source_offsets, .. } = &out.batches[0];
        assert_eq!(source_offsets.as_deref(), Some(&[10, 11, 12, 14][..]), "codec {codec}");
        assert!(batch.crc_is_valid());
        assert_eq!(batch.compression(), Compression::from_attributes(codec));
        assert_eq!((batch.records_count(), batch.last_offset_delta(), batch.base_offset()), (4, 3, 10));
        assert_eq!((batch.base_timestamp(), batch.max_timestamp()), (1_000, 1_100));
        let expected = [(1_000, "k10", "a"), (900, "k11", "b"), (900, "k12", "c"), (1_100, "k14", "d")]
            .map(|(t, k, v)| (t, k.to_owned(), v.to_owned()));
        assert_eq!(records(batch), expected);
    }
}

#[test]
fn large_batches_end_a_run_and_codecs_mix() {
    // Letters from a linear congruential sequence: lz4 cannot shrink it below the limit.
    let mut state = 12_345u32;
    let big: String = (0..SMALL_BATCH_BYTES)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            char::from(b'a' + (state >> 16) as u8 % 26)
        })
        .collect();
    let input = [
        batch(0, &["a"], 1, 3),
        batch(1, &["b"], 1, 3),
        batch(2, &[big.as_str()], 1, 3),
        batch(3, &["c"], 1, 3),
        batch(4, &["d"], 1, 0),
        batch(5, &["e"], 1, 0),
    ];
    let out = coalesce(input.iter().cloned().map(forwarded).collect()).unwrap();
    let shape: Vec<(i64, i32)> = out.batches.iter().map(|f| (f.batch.base_offset(), f.batch.records_count())).collect();
    assert_eq!(shape, [(0, 2), (2, 1), (3, 3)]);
    assert_eq!(out.merged, 3);
    assert_eq!(out.batches[1], forwarded(input[2].clone()), "a large batch passes untouched");
    // lz4 then uncompressed (a producer skips compression where it would grow a tiny batch):
    // merged, the records are compressed as the producer was configured to.
    assert_eq!(out.batches[2].batch.compression(), Compression::Lz4);
    let values: Vec<String> = records(&out.batches[2].batch).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(values, ["c", "d", "e"]);
    let alone = coalesce(vec![forwarded(input[3].clone())]).unwrap();
    assert_eq!(alone.batches, [forwarded(input[3].clone())], "a run of one is not rewritten");
}

#[test]
fn a_run_stops_at_the_size_limit() {
    let value = "v".repeat(1000);
    let input: Vec<Forwarded> = (0..300).map(|i| forwarded(batch(i, &[value.as_str()], 1, 0))).collect();
    let out = coalesce(input).unwrap();
    assert!(out.batches.len() > 1);
    let mut next = 0;
    for f in &out.batches {
        assert!(f.batch.as_bytes().len() <= MAX_COALESCED_BYTES + HEADER_BYTES);
        let offsets = f.source_offsets.clone().unwrap_or_else(|| vec![f.batch.base_offset()]);
        assert_eq!(offsets, (next..next + offsets.len() as i64).collect::<Vec<_>>(), "in order, none lost");
        next += offsets.len() as i64;
    }
    assert_eq!(next, 300);
}

#[test]
fn rewritten_batches_keep_their_named_source_offsets() {
    // As the slow path returns a compacted batch: records renumbered 0..n, offsets named.
    let compacted = Forwarded {
        batch: batch(20, &["a", "b"], 5, 3),
        source_offsets: Some(vec![20, 23]),
        path: BatchPath::Rewritten,
    };
    let out = coalesce(vec![compacted, forwarded(batch(24, &["c"], 6, 3))]).unwrap();
    assert_eq!(out.batches[0].source_offsets.as_deref(), Some(&[20, 23, 24][..]));
}

#[test]
fn a_corrupt_batch_is_refused_not_laundered() {
    let good = batch(0, &["a"], 1, 3);
    let mut bytes = batch(1, &["b"], 1, 3).as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let Some(Ok(crate::protocol::batch::BatchItem::Batch(bad))) =
        crate::protocol::batch::BatchIter::new(bytes.into()).next()
    else {
        panic!("one batch")
    };
    let after = batch(2, &["c"], 1, 3);
    let coalesced = coalesce(vec![forwarded(good.clone()), forwarded(bad), forwarded(after)]).unwrap();
    // What came before the corrupt batch goes on as it is; nothing of it or after it.
    assert_eq!(coalesced.batches, [forwarded(good)]);
    assert!(matches!(coalesced.corrupt, Some(RewriteError::Crc { base_offset: 1, .. })), "{:?}", coalesced.corrupt);
}

#[test]
fn a_run_that_inflates_too_much_is_forwarded_as_it_is() {
    // Two zstd batches of a few hundred bytes, each holding a 5 MiB value: together more than
    // MAX_COALESCED_RECORDS_BYTES once decompressed.
    let value = "x".repeat(5 * 1024 * 1024);
    let input: Vec<Forwarded> = (0..2).map(|i| forwarded(batch(i, &[value.as_str()], 1, 4))).collect();
    assert!(input.iter().all(|f| f.batch.as_bytes().len() < SMALL_BATCH_BYTES), "small on the wire");
    let out = coalesce(input.clone()).unwrap();
    assert_eq!((out.batches, out.merged), (input, 0));
}

#[test]
fn batches_built_by_an_earlier_coalescing_join_again_only_when_asked() {
    // Two fetches, each of three small batches of 2 KiB: each fetch coalesces into a batch
    // over the small limit; a round coalesces those two again.
    let value = "v".repeat(2 * 1024);
    let fetch = |base: i64| {
        let input = (0..3).map(|i| forwarded(batch(base + i, &[value.as_str()], 1_000 + base + i, 0))).collect();
        let out = coalesce(input).unwrap();
        assert_eq!(out.batches.len(), 1);
        out.batches.into_iter().next().unwrap()
    };
    let (first, second) = (fetch(10), fetch(20));
    assert!(first.batch.as_bytes().len() >= SMALL_BATCH_BYTES);
    let again = coalesce(vec![first.clone(), second.clone()]).unwrap();
    assert_eq!(again.merged, 0, "within a fetch, built batches over the small limit stay as they are");
    let again = coalesce_again(vec![first, second]).unwrap();
    assert_eq!((again.batches.len(), again.merged), (1, 1));
    let merged = &again.batches[0];
    assert_eq!(merged.source_offsets.as_deref(), Some(&[10, 11, 12, 20, 21, 22][..]));
    let keys: Vec<String> = records(&merged.batch).into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(keys, ["k10", "k11", "k12", "k20", "k21", "k22"]);
    let stamps: Vec<i64> = records(&merged.batch).into_iter().map(|(t, _, _)| t).collect();
    assert_eq!(stamps, [1_010, 1_011, 1_012, 1_020, 1_021, 1_022]);
}
