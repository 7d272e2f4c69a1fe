//! Micro-benchmarks of the hot path's pure parts (no I/O): what kferry does to every
//! forwarded byte, against the floor of copying it.
//!
//! - `stamp`: header patch + CRC-32C of one batch ([`forward::stamp`], which copies the
//!   batch once, patches the producer fields and recomputes the CRC) against a plain
//!   `memcpy` of the same bytes into a fresh buffer, for 1 KiB, 16 KiB and 1 MiB batches.
//! - `select`: splitting an 8 MiB fetch answer into batches ([`BatchIter`]) and the whole
//!   selection the engine runs on it ([`forward::select`]), for 16 KiB and 1-record batches.
//! - `offset_map`: translating source offsets in a map of 1M segments.
//!
//! `cargo bench --bench hot_path`; figures and the machine they came from are in
//! BENCHMARKS.md.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kferry::protocol::batch::{BatchItem, BatchIter, RecordBatch};
use kferry::protocol::records::{build_batch, KeyValueRef};
use kferry::replicate::forward::{self, Stamp};
use kferry::replicate::offset_map::OffsetMap;

/// Bytes of a record value; with its key and framing a record takes about 1 KiB.
const VALUE_BYTES: usize = 1000;
/// A fetch answer's size in the `select` benchmarks (the engine's per-partition cap).
const FETCH_BYTES: usize = 8 * 1024 * 1024;
const SEGMENTS: i64 = 1_000_000;

/// An uncompressed batch of about `bytes` bytes of 1 KiB records (one record at least).
/// The payload is pseudo-random so nothing downstream can shortcut on zeros.
fn batch_of(bytes: usize, seed: u64) -> RecordBatch {
    let records = (bytes / (VALUE_BYTES + 24)).max(1);
    let mut state = seed | 1;
    let values: Vec<Vec<u8>> = (0..records)
        .map(|_| {
            (0..VALUE_BYTES)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect();
    let keys: Vec<String> = (0..records).map(|i| format!("key-{i:06}")).collect();
    let pairs: Vec<KeyValueRef<'_>> =
        keys.iter().zip(&values).map(|(k, v)| (Some(k.as_bytes()), Some(v.as_slice()))).collect();
    build_batch(&pairs, 1_700_000_000_000)
}

/// A fetch answer: consecutive batches like `template`, renumbered, up to `FETCH_BYTES`.
fn fetch_answer(template: &RecordBatch) -> Bytes {
    let mut blob = BytesMut::with_capacity(FETCH_BYTES + template.as_bytes().len());
    let mut offset = 0i64;
    while blob.len() < FETCH_BYTES {
        let start = blob.len();
        blob.extend_from_slice(template.as_bytes());
        blob[start..start + 8].copy_from_slice(&offset.to_be_bytes());
        offset += i64::from(template.last_offset_delta()) + 1;
    }
    blob.freeze()
}

const STAMP: Stamp = Stamp { producer_id: 4242, producer_epoch: 3, base_sequence: 17, transactional: true };

fn stamp_vs_memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("stamp");
    for (label, bytes) in [("1KiB", 1024), ("16KiB", 16 * 1024), ("1MiB", 1024 * 1024)] {
        let batch = batch_of(bytes, 7);
        group.throughput(Throughput::Bytes(batch.as_bytes().len() as u64));
        group.bench_function(format!("patch+crc32c/{label}"), |b| b.iter(|| forward::stamp(black_box(&batch), STAMP)));
        group.bench_function(format!("memcpy/{label}"), |b| {
            b.iter(|| Bytes::from(black_box(batch.as_bytes()).to_vec()))
        });
        // The CRC alone, the part of the patch that reads every byte once more.
        group.bench_function(format!("crc32c/{label}"), |b| b.iter(|| black_box(&batch).computed_crc()));
    }
    group.finish();
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("select");
    for (label, bytes) in [("16KiB-batches", 16 * 1024), ("1-record-batches", VALUE_BYTES)] {
        let answer = fetch_answer(&batch_of(bytes, 11));
        group.throughput(Throughput::Bytes(answer.len() as u64));
        group.bench_function(format!("iterate/{label}"), |b| {
            b.iter(|| {
                BatchIter::new(black_box(answer.clone()))
                    .map(|item| match item {
                        Ok(BatchItem::Batch(batch)) => batch.records_count() as u64,
                        _ => 0,
                    })
                    .sum::<u64>()
            })
        });
        group.bench_function(format!("select/{label}"), |b| {
            b.iter(|| forward::select(black_box(answer.clone()), 0, &[]).expect("well-formed answer").batches.len())
        });
    }
    group.finish();
}

fn offset_map(c: &mut Criterion) {
    // 1M segments of 100 offsets each, every one after a gap of 1 (a transaction marker).
    let mut map = OffsetMap::default();
    for i in 0..SEGMENTS {
        map.record(i * 101, 100, i * 100);
    }
    assert_eq!(map.segments().len(), SEGMENTS as usize);
    let end = SEGMENTS * 101;
    let mut group = c.benchmark_group("offset_map");
    group.throughput(Throughput::Elements(1));
    let mut probe = 0x9E37_79B9_7F4A_7C15u64;
    group.bench_function("translate/1M-segments", |b| {
        b.iter_batched(
            || {
                probe = probe.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (probe >> 11) as i64 % end
            },
            |source| map.translate(black_box(source)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, stamp_vs_memcpy, select, offset_map);
criterion_main!(benches);
