//! Hand-made batches. Batches captured from real Kafka (compacted by its cleaner, stamped
//! with LogAppendTime by its broker) are tested in `protocol-tests/tests/rewrite_vectors.rs`.

use bytes::BytesMut;

use super::*;
use crate::protocol::records::{put_varint, put_varlong};

const CODECS: [Compression; 5] =
    [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

fn codec_bits(codec: Compression) -> i16 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::Unknown(id) => i16::from(id),
    }
}

/// A record as a test writes it: offset and timestamp deltas, key, value, headers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn rec(offset_delta: i32, timestamp_delta: i64, key: Option<&str>, value: Option<&str>) -> Rec {
    Rec {
        offset_delta,
        timestamp_delta,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

fn encode(records: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let mut body = vec![0u8];
        put_varlong(&mut body, r.timestamp_delta);
        put_varint(&mut body, r.offset_delta);
        put_nullable(&mut body, r.key.as_deref());
        put_nullable(&mut body, r.value.as_deref());
        put_varint(&mut body, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_nullable(&mut body, Some(k));
            put_nullable(&mut body, v.as_deref());
        }
        put_varint(&mut out, body.len() as i32);
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a batch's records back into `Rec`s (with absolute timestamps in
/// `timestamp_delta`: base timestamp + delta).
fn decode(batch: &RecordBatch) -> Vec<Rec> {
    let raw = decompress(batch.compression(), &batch.as_bytes()[HEADER_BYTES..], MAX_RECORDS_BYTES)
        .unwrap_or_else(|_| panic!("decompress"));
    let parsed = parse_records(&raw, batch.records_count(), batch.last_offset_delta()).expect("records parse");
    parsed
        .iter()
        .map(|r| {
            let mut fields = Reader { data: r.rest, at: 0 };
            let nullable = |f: &mut Reader<'_>| {
                let len = f.varint().unwrap();
                (len >= 0).then(|| f.take(len as usize).unwrap().to_vec())
            };
            let key = nullable(&mut fields);
            let value = nullable(&mut fields);
            let count = fields.varint().unwrap();
            let headers = (0..count).map(|_| (nullable(&mut fields).unwrap(), nullable(&mut fields))).collect();
            let timestamp = batch.base_timestamp() + r.timestamp_delta;
            Rec { offset_delta: r.offset_delta, timestamp_delta: timestamp, key, value, headers }
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Spec {
    base_offset: i64,
    last_offset_delta: i32,
    attributes: i16,
    base_timestamp: i64,
    max_timestamp: i64,
    records_count: i32,
}

impl Spec {
    fn new(base_offset: i64, last_offset_delta: i32, records: &[Rec]) -> Self {
        Spec {
            base_offset,
            last_offset_delta,
            attributes: 0,
            base_timestamp: 1_000,
            max_timestamp: 1_000 + records.iter().map(|r| r.timestamp_delta).max().unwrap_or(0),
            records_count: records.len() as i32,
        }
    }
}

/// A batch whose records section is `section` as given (already compressed, or garbage).
fn batch_with_section(spec: &Spec, section: &[u8]) -> RecordBatch {
    let mut b = BytesMut::new();
    b.extend_from_slice(&spec.base_offset.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + section.len()) as i32).to_be_bytes());
    b.extend_from_slice(&17i32.to_be_bytes()); // partition leader epoch
    b.extend_from_slice(&[2]);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&spec.attributes.to_be_bytes());
    b.extend_from_slice(&spec.last_offset_delta.to_be_bytes());
    b.extend_from_slice(&spec.base_timestamp.to_be_bytes());
    b.extend_from_slice(&spec.max_timestamp.to_be_bytes());
    b.extend_from_slice(&4242i64.to_be_bytes()); // producer id
    b.extend_from_slice(&3i16.to_be_bytes()); // epoch
    b.extend_from_slice(&77i32.to_be_bytes()); // base sequence
    b.extend_from_slice(&spec.records_count.to_be_bytes());
    b.extend_from_slice(section);
    PatchedBatch::from_batch_bytes(b).finish()
}

fn batch(spec: &Spec, codec: Compression, records: &[Rec]) -> RecordBatch {
    let spec = Spec { attributes: spec.attributes | codec_bits(codec), ..*spec };
    batch_with_section(&spec, &compress(codec, &encode(records)).unwrap())
}

/// Four survivors of ten offsets, with keys, nulls, empty values and headers.
fn compacted_records() -> Vec<Rec> {
    let mut with_headers = rec(4, 4, Some("k4"), Some(""));
    with_headers.headers = vec![(b"h".to_vec(), Some(b"v".to_vec())), (b"n".to_vec(), None), (b"".to_vec(), None)];
    vec![
        rec(1, 1, Some("k1"), Some("one")),
        rec(3, 3, Some("k3"), None),
        with_headers,
        rec(9, 9, Some("k9"), Some("x")),
    ]
}

fn check_valid(rewritten: &Rewritten, input: &RecordBatch) {
    let b = &rewritten.batch;
    assert!(b.crc_is_valid(), "CRC-32C");
    assert_eq!(b.magic(), 2);
    assert_eq!(b.records_count(), rewritten.records);
    assert_eq!(b.last_offset_delta() + 1, b.records_count(), "dense");
    assert_eq!(b.batch_length() as usize + LOG_OVERHEAD, b.as_bytes().len());
    assert_eq!(b.compression(), input.compression(), "same codec");
    assert_eq!(b.base_offset(), input.base_offset());
    assert_eq!(b.partition_leader_epoch(), input.partition_leader_epoch());
    assert_eq!((b.producer_id(), b.producer_epoch(), b.base_sequence()), (4242, 3, 77));
    assert!(!b.has_log_append_time());
    assert_eq!(b.attributes() & attributes::DELETE_HORIZON, 0);
    assert_eq!(rewritten.source_offsets.len(), rewritten.records as usize);
    let decoded = decode(b);
    assert_eq!(decoded.iter().map(|r| r.offset_delta).collect::<Vec<_>>(), (0..rewritten.records).collect::<Vec<_>>());
    assert_eq!(b.max_timestamp(), decoded.iter().map(|r| r.timestamp_delta).max().unwrap(), "max timestamp");
    assert_eq!(b.base_timestamp(), decoded[0].timestamp_delta, "base timestamp is the first record's");
}

#[test]
fn compacted_batch_is_renumbered_in_every_codec() {
    let records = compacted_records();
    for codec in CODECS {
        let input = batch(&Spec::new(100, 9, &records), codec, &records);
        assert!(needs_rewrite(&input), "{codec:?}");
        let out = rewrite(&input).unwrap().expect("records left");
        check_valid(&out, &input);
        assert_eq!(out.records, 4);
        assert_eq!(out.source_offsets, [101, 103, 104, 109], "{codec:?}");
        let decoded = decode(&out.batch);
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(got.offset_delta, i as i32);
            assert_eq!(got.timestamp_delta, 1_000 + want.timestamp_delta, "{codec:?}: timestamp unchanged");
            assert_eq!((&got.key, &got.value, &got.headers), (&want.key, &want.value, &want.headers), "{codec:?}");
        }
        assert!(!needs_rewrite(&out.batch));
    }
}

#[test]
fn a_dense_uncompressed_batch_comes_back_byte_for_byte() {
    let records: Vec<Rec> = (0..5).map(|i| rec(i, i64::from(i) * 2, Some("k"), Some("v"))).collect();
    let input = batch(&Spec::new(7, 4, &records), Compression::None, &records);
    assert!(!needs_rewrite(&input));
    let out = rewrite(&input).unwrap().unwrap();
    assert_eq!(out.batch, input);
    assert_eq!(out.source_offsets, [7, 8, 9, 10, 11]);
}

#[test]
fn zero_records_left_is_skipped() {
    // What the cleaner keeps of an idempotent producer's last batch: the header alone.
    let empty = batch_with_section(&Spec { records_count: 0, ..Spec::new(50, 9, &[]) }, &[]);
    assert_eq!(rewrite(&empty), Ok(None));
    // Or a compressed section holding no record.
    for codec in CODECS {
        let spec = Spec { records_count: 0, ..Spec::new(50, 9, &[]) };
        assert_eq!(rewrite(&batch(&spec, codec, &[])), Ok(None), "{codec:?}");
    }
}

#[test]
fn log_append_time_gives_every_record_the_batch_max_timestamp() {
    let records = vec![rec(0, 0, Some("a"), Some("1")), rec(1, 7, Some("b"), Some("2")), rec(2, 3, None, Some("3"))];
    for codec in CODECS {
        let spec = Spec {
            attributes: attributes::LOG_APPEND_TIME | attributes::TRANSACTIONAL,
            max_timestamp: 1_700_000_000_000,
            ..Spec::new(0, 2, &records)
        };
        let input = batch(&spec, codec, &records);
        assert!(needs_rewrite(&input));
        let out = rewrite(&input).unwrap().unwrap();
        check_valid(&out, &input);
        assert!(out.batch.is_transactional(), "other attribute bits are kept");
        assert_eq!(out.batch.base_timestamp(), 1_700_000_000_000);
        assert_eq!(out.batch.max_timestamp(), 1_700_000_000_000);
        assert_eq!(out.source_offsets, [0, 1, 2]);
        let decoded = decode(&out.batch);
        assert!(decoded.iter().all(|r| r.timestamp_delta == 1_700_000_000_000), "{codec:?}");
        // Every record's delta is 0 in the new encoding.
        let raw =
            decompress(codec, &out.batch.as_bytes()[HEADER_BYTES..], MAX_RECORDS_BYTES).unwrap_or_else(|_| panic!());
        assert!(parse_records(&raw, 3, 2).unwrap().iter().all(|r| r.timestamp_delta == 0));
    }
}

#[test]
fn compacted_log_append_time_batch_gets_both_rewrites() {
    let records = vec![rec(2, 0, Some("a"), Some("1")), rec(5, 0, Some("b"), Some("2"))];
    let spec = Spec { attributes: attributes::LOG_APPEND_TIME, max_timestamp: 9_000, ..Spec::new(10, 6, &records) };
    let out = rewrite(&batch(&spec, Compression::Lz4, &records)).unwrap().unwrap();
    assert_eq!(out.source_offsets, [12, 15]);
    assert_eq!(
        (out.batch.base_timestamp(), out.batch.max_timestamp(), out.batch.last_offset_delta()),
        (9_000, 9_000, 1)
    );
    assert!(decode(&out.batch).iter().all(|r| r.timestamp_delta == 9_000));
}

#[test]
fn delete_horizon_base_timestamp_is_replaced_by_the_first_records() {
    // With the delete-horizon bit the base timestamp is the horizon; record timestamps are
    // still base + delta, so they must survive while the base and the bit change.
    let records =
        vec![rec(0, -500, Some("a"), Some("1")), rec(3, -200, Some("b"), None), rec(4, -900, Some("c"), None)];
    let spec = Spec {
        attributes: attributes::DELETE_HORIZON,
        base_timestamp: 10_000,
        max_timestamp: 9_800,
        ..Spec::new(0, 4, &records)
    };
    let input = batch(&spec, Compression::Zstd, &records);
    let out = rewrite(&input).unwrap().unwrap();
    check_valid(&out, &input);
    let times: Vec<i64> = decode(&out.batch).iter().map(|r| r.timestamp_delta).collect();
    assert_eq!(times, [9_500, 9_800, 9_100]);
    assert_eq!((out.batch.base_timestamp(), out.batch.max_timestamp()), (9_500, 9_800));
}

#[test]
fn snappy_reads_raw_and_xerial_and_writes_xerial() {
    let big = "kferry-".repeat(10_000); // 70 kB: three xerial blocks
    let records = vec![rec(0, 0, Some("k"), Some(&big)), rec(2, 1, Some("k2"), Some("small"))];
    let raw_section = snap::raw::Encoder::new().compress_vec(&encode(&records)).unwrap();
    let spec = Spec { attributes: 2, ..Spec::new(0, 2, &records) };
    // librdkafka's way: one raw block.
    let out = rewrite(&batch_with_section(&spec, &raw_section)).unwrap().unwrap();
    let written = &out.batch.as_bytes()[HEADER_BYTES..];
    assert!(written.starts_with(XERIAL_HEADER), "Kafka's Java framing is written");
    let first_block = u32::from_be_bytes(written[16..20].try_into().unwrap()) as usize;
    let first = snap::raw::Decoder::new().decompress_vec(&written[20..20 + first_block]).unwrap();
    assert_eq!(first.len(), XERIAL_BLOCK, "32 KiB blocks");
    assert_eq!(decode(&out.batch)[0].value.as_deref(), Some(big.as_bytes()));
    // The xerial output reads again, also as two concatenated streams.
    let again = rewrite(&out.batch).unwrap().unwrap();
    assert_eq!(decode(&again.batch), decode(&out.batch));
    let halves = [encode(&records[..1]), encode(&records[1..])];
    let mut concatenated = compress(Compression::Snappy, &halves[0]).unwrap();
    concatenated.extend(compress(Compression::Snappy, &halves[1]).unwrap());
    let out = rewrite(&batch_with_section(&spec, &concatenated)).unwrap().unwrap();
    assert_eq!(out.source_offsets, [0, 2]);
}

#[test]
fn lz4_frame_header_is_the_one_kafka_writes() {
    // Kafka's Lz4BlockOutputStream (and librdkafka): FLG 0x60 (version 1, independent
    // blocks, no checksums, no content size), BD 0x40 (64 KiB blocks), header checksum 0x82.
    let section = compress(Compression::Lz4, &encode(&compacted_records())).unwrap();
    assert_eq!(&section[..7], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82]);
}

#[test]
fn varints_are_kafkas_zigzag_encoding() {
    // From Kafka's ByteUtilsTest: zigzag varints of 0, -1, 1, 300, i32::MIN, and a varlong.
    let cases: [(i32, &[u8]); 5] =
        [(0, &[0]), (-1, &[1]), (1, &[2]), (300, &[0xd8, 0x04]), (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f])];
    for (value, bytes) in cases {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        assert_eq!(out, bytes, "{value}");
        assert_eq!(Reader { data: bytes, at: 0 }.varint(), Ok(value));
    }
    let mut out = Vec::new();
    put_varlong(&mut out, i64::MIN);
    assert_eq!(out, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(Reader { data: &out, at: 0 }.varlong(), Ok(i64::MIN));
    // Too long, or bits beyond the type: errors, as in Kafka.
    assert_eq!(Reader { data: &[0xff, 0xff, 0xff, 0xff, 0x1f], at: 0 }.varint(), Err(Corruption::BadVarint));
    assert_eq!(Reader { data: &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], at: 0 }.varint(), Err(Corruption::BadVarint));
    let long = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03];
    assert_eq!(Reader { data: &long, at: 0 }.varlong(), Err(Corruption::BadVarint));
    assert_eq!(Reader { data: &[0x80], at: 0 }.varint(), Err(Corruption::Truncated));
}

#[test]
fn a_batch_failing_its_crc_is_refused_not_laundered() {
    let records = compacted_records();
    let good = batch(&Spec::new(40, 9, &records), Compression::Gzip, &records);
    let mut bytes = good.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x10;
    // Re-split the damaged bytes without recomputing the CRC.
    let Some(Ok(crate::protocol::batch::BatchItem::Batch(damaged))) =
        crate::protocol::batch::BatchIter::new(bytes.into()).next()
    else {
        panic!("one batch")
    };
    let err = rewrite(&damaged).unwrap_err();
    assert!(matches!(err, RewriteError::Crc { base_offset: 40, .. }), "{err:?}");
    assert!(err.to_string().contains("offset 40") && err.to_string().contains("CRC-32C"), "{err}");
}

fn error_of(spec: &Spec, section: &[u8]) -> RewriteError {
    rewrite(&batch_with_section(spec, section)).expect_err("must fail")
}

#[test]
fn typed_errors_name_offset_and_codec() {
    let records = compacted_records();
    let spec = Spec::new(300, 9, &records);
    let control = batch(
        &Spec { attributes: attributes::CONTROL | attributes::TRANSACTIONAL, ..spec },
        Compression::None,
        &records,
    );
    assert_eq!(rewrite(&control), Err(RewriteError::Control { base_offset: 300 }));

    let unknown = error_of(&Spec { attributes: 6, ..spec }, &encode(&records));
    assert_eq!(unknown, RewriteError::UnknownCodec { base_offset: 300, id: 6 });
    assert!(unknown.to_string().contains("offset 300") && unknown.to_string().contains("id 6"), "{unknown}");

    for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let err = error_of(&Spec { attributes: codec_bits(codec), ..spec }, b"certainly not compressed data");
        assert!(matches!(err, RewriteError::Decompress { base_offset: 300, codec: c, .. } if c == codec), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("offset 300") && message.contains(codec_name(&codec)), "{message}");
    }

    // A varint with six continuation bytes, in the first record's length.
    let err = error_of(&spec, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    assert!(
        matches!(err, RewriteError::Corrupt { index: 0, position: 0, problem: Corruption::BadVarint, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("offset 300 (uncompressed): record 0"), "{err}");

    // More records declared than there are.
    let err = error_of(&Spec { records_count: 5, ..spec }, &encode(&records));
    assert!(matches!(err, RewriteError::Corrupt { index: 4, problem: Corruption::Truncated, .. }), "{err:?}");
    // Fewer declared: the rest is trailing garbage.
    let err = error_of(&Spec { records_count: 3, ..spec }, &encode(&records));
    assert!(matches!(err, RewriteError::Corrupt { problem: Corruption::TrailingBytes { declared: 3 }, .. }), "{err:?}");
    // A negative count.
    let err = error_of(&Spec { records_count: -2, ..spec }, &encode(&records));
    assert!(
        matches!(err, RewriteError::Corrupt { problem: Corruption::NegativeCount { declared: -2 }, .. }),
        "{err:?}"
    );
    // Offset deltas that do not rise, or pass lastOffsetDelta.
    let err = error_of(&spec, &encode(&[rec(3, 0, Some("a"), None), rec(3, 0, Some("b"), None)]));
    assert!(matches!(err, RewriteError::Corrupt { index: 1, problem: Corruption::OffsetDelta { .. }, .. }), "{err:?}");
    let spec2 = Spec { records_count: 1, ..spec };
    let err = error_of(&spec2, &encode(&[rec(10, 0, Some("a"), None)]));
    assert!(matches!(err, RewriteError::Corrupt { problem: Corruption::OffsetDelta { delta: 10, last: 9, .. }, .. }));
    // A header key cannot be null; a record's length must match its fields.
    let mut null_header_key = rec(0, 0, Some("a"), None);
    null_header_key.headers = vec![(b"x".to_vec(), None)];
    let mut bytes = encode(&[null_header_key]);
    let at = bytes.len() - 3; // the header key's length varint (1 = "x" of length 1, zigzag 2)
    assert_eq!(bytes[at], 2);
    bytes[at] = 1; // -1
    let err = error_of(&spec2, &bytes);
    assert!(matches!(err, RewriteError::Corrupt { problem: Corruption::BadLength { length: -1 }, .. }), "{err:?}");
    let mut bytes = encode(&[rec(0, 0, Some("a"), None)]);
    bytes[0] += 2; // one byte longer than the fields
    bytes.push(0);
    let err = error_of(&spec2, &bytes);
    assert!(matches!(err, RewriteError::Corrupt { problem: Corruption::RecordLength { .. }, .. }), "{err:?}");
    // Offsets that overflow.
    let err = error_of(&Spec { base_offset: i64::MAX - 1, ..spec2 }, &encode(&[rec(5, 0, Some("a"), None)]));
    assert!(matches!(err, RewriteError::Corrupt { problem: Corruption::OffsetOverflow, .. }), "{err:?}");
    // Timestamps that overflow.
    let spec3 = Spec { base_timestamp: i64::MAX - 1, ..spec2 };
    let err = error_of(&spec3, &encode(&[rec(0, 5, Some("a"), None)]));
    assert!(matches!(err, RewriteError::Corrupt { problem: Corruption::TimestampOverflow, .. }), "{err:?}");
}

#[test]
fn decompression_is_bounded() {
    let zeros = vec![0u8; 1 << 20];
    for codec in CODECS {
        let section = compress(codec, &zeros).unwrap();
        let input = batch_with_section(&Spec { attributes: codec_bits(codec), ..Spec::new(0, 0, &[]) }, &section);
        let err = rewrite_within(&input, 64 * 1024).unwrap_err();
        assert_eq!(err, RewriteError::TooLarge { base_offset: 0, codec, limit: 64 * 1024 }, "{codec:?}");
        assert!(err.to_string().contains("65536"), "{err}");
    }
}

/// xorshift64*: deterministic garbage without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_records_give_errors_never_a_panic() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for round in 0..3_000 {
        let attributes = (noise.next() % 128) as i16 & !attributes::CONTROL;
        let len = (noise.next() % 200) as usize;
        let mut section = noise.bytes(len);
        // Some with a valid codec preamble so the decoders get past their headers.
        if round % 3 == 0 {
            let preamble: &[u8] = match attributes & 7 {
                1 => &[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff],
                2 => XERIAL_HEADER,
                3 => &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82],
                4 => &[0x28, 0xb5, 0x2f, 0xfd],
                _ => &[],
            };
            section.splice(0..0, preamble.iter().copied());
        }
        let spec = Spec {
            attributes,
            records_count: (noise.next() % 20) as i32 - 2,
            last_offset_delta: (noise.next() % 30) as i32 - 2,
            base_timestamp: noise.next() as i64,
            max_timestamp: noise.next() as i64,
            base_offset: if round % 2 == 0 { i64::MAX - (noise.next() % 8) as i64 } else { noise.next() as i64 },
        };
        let _ = rewrite_within(&batch_with_section(&spec, &section), 1 << 20);
    }
}

#[test]
fn every_cut_and_flipped_byte_of_a_valid_section_is_handled() {
    let records = compacted_records();
    for codec in CODECS {
        let spec = Spec { attributes: codec_bits(codec), ..Spec::new(0, 9, &records) };
        let section = compress(codec, &encode(&records)).unwrap();
        let whole = rewrite(&batch_with_section(&spec, &section)).unwrap().unwrap();
        for cut in 0..section.len() {
            // A cut section fails, or (an lz4 frame cut in or before its end mark, which
            // lz4_flex tolerates) still holds every record.
            match rewrite(&batch_with_section(&spec, &section[..cut])) {
                Err(_) => {}
                Ok(Some(out)) if codec == Compression::Lz4 && cut >= section.len() - 4 => assert_eq!(out, whole),
                other => panic!("{codec:?}: cut at {cut} of {} must fail, got {other:?}", section.len()),
            }
        }
        let mut noise = Noise(7);
        for at in 0..section.len() {
            let mut flipped = section.clone();
            flipped[at] ^= 1 << (noise.next() % 8);
            // Some flips still decode (a changed byte inside a value); none may panic, and
            // whatever comes back must be a valid batch.
            if let Ok(Some(out)) = rewrite(&batch_with_section(&spec, &flipped)) {
                assert!(out.batch.crc_is_valid() && out.batch.records_count() == out.batch.last_offset_delta() + 1);
            }
        }
    }
}
