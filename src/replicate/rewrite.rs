//! The slow path: rewriting a fetched batch that the target broker refuses as it is.
//!
//! Two kinds of v2 batches cannot be forwarded byte for byte (see the design notes, "What the
//! target broker checks"):
//!
//! - **Compacted** batches: the log cleaner removed records but kept the batch's offset
//!   range, so `recordsCount < lastOffsetDelta + 1`, which Kafka refuses from a client
//!   ("Inconsistent batch offset range"). The surviving records get contiguous offset deltas
//!   `0..n`; the source offset of each one is returned, so the offset map stays exact.
//! - **LogAppendTime** batches: the attribute is refused from a client (INVALID_TIMESTAMP).
//!   The bit is cleared and every record gets the batch's `maxTimestamp`, the time of append
//!   that the source's consumers saw.
//!
//! [`rewrite`] decodes the records (decompressing them with the batch's codec), re-encodes
//! them with new offset and timestamp deltas and recompresses them with the same codec. Keys,
//! values, headers and record attributes are copied byte for byte; so are the header's
//! base offset, partition leader epoch and producer fields (the caller stamps kferry's
//! producer afterwards with [`super::forward::stamp`]).
//!
//! Pure: no I/O, and no panic on any input. A CRC-32C mismatch, corrupt records, a failing
//! codec or an unknown one are [`RewriteError`]s naming the batch's offset and codec (the
//! input's CRC is checked first: the fresh CRC of a rewrite must not cover up corruption). Decompression is bounded
//! ([`MAX_RECORDS_BYTES`]): a small batch cannot inflate into gigabytes.
//!
//! Codecs, as Kafka writes and reads them:
//!
//! - gzip: one gzip member (several are read).
//! - snappy: Kafka's Java clients and broker write the xerial "snappy-java" stream (header
//!   `\x82SNAPPY\0` + version 1 + compatible version 1, then blocks of 32 KiB, each a 4-byte
//!   big-endian length and a raw snappy block); librdkafka writes one raw snappy block. Both
//!   are read (as Java's `SnappyInputStream` does); xerial is written.
//! - lz4: the LZ4 frame format with independent 64 KiB blocks, no checksums and no content
//!   size, exactly as Kafka's `Lz4BlockOutputStream` writes it. Kafka's reader refuses
//!   linked blocks and dictionary ids.
//! - zstd: one frame at level 3, Kafka's default.

use std::borrow::Cow;
use std::io::{Read, Write};

use bytes::BytesMut;

use crate::protocol::batch::{attributes, Compression, PatchedBatch, RecordBatch, HEADER_BYTES};
pub use crate::protocol::records::Corruption;
use crate::protocol::records::{encode_record, parse_records, RawRecord, Reader};

/// The most bytes the records of one batch may take once decompressed. Kafka has no such
/// limit, but a few kilobytes of zeros compress into a batch that would inflate into
/// gigabytes; a batch larger than this stops its partition with [`RewriteError::TooLarge`].
pub const MAX_RECORDS_BYTES: usize = 256 * 1024 * 1024;

/// Header fields the rewrite changes (offsets in the v2 header, see `protocol::batch`).
const BATCH_LENGTH_OFFSET: usize = 8;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const RECORDS_COUNT_OFFSET: usize = 57;
/// Bytes of a batch before `batchLength`'s count starts (baseOffset + batchLength).
const LOG_OVERHEAD: usize = 12;

/// Kafka's default zstd level (`ZSTD_CLEVEL_DEFAULT`, also the Java client's default).
const ZSTD_LEVEL: i32 = 3;
/// xerial snappy-java's stream header: magic, format version 1, compatible version 1.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// The magic alone (what readers check).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// snappy-java's default block size, which Kafka uses.
const XERIAL_BLOCK: usize = 32 * 1024;

/// A batch rewritten so that the target accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new batch: contiguous offset deltas (`recordsCount == lastOffsetDelta + 1`),
    /// CreateTime, the input's codec, base offset, partition leader epoch and producer
    /// fields, and a fresh CRC-32C. Produce it through [`super::forward::stamp`].
    pub batch: RecordBatch,
    /// Records in `batch` (at least one).
    pub records: i32,
    /// The source offset of each record of `batch`, in order: record `i` lands at the
    /// target base offset + `i`. Offsets removed by compaction are missing here, and so
    /// in the offset map.
    pub source_offsets: Vec<i64>,
}

/// Why a batch could not be rewritten. Each names the batch by its source base offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The batch's content does not match its CRC-32C. Forwarded as it is, such a batch is
    /// refused by the target (CORRUPT_MESSAGE); a rewrite would compute a fresh CRC and so
    /// launder the corruption, hence it refuses first.
    #[error("batch at offset {base_offset} fails its CRC-32C check (stored {stored:#010x}, computed {computed:#010x}): it is corrupt in the source log or was damaged on the way")]
    Crc { base_offset: i64, stored: u32, computed: u32 },
    /// Control batches (transaction markers) are dropped, never forwarded.
    #[error(
        "batch at offset {base_offset} is a control batch (transaction marker); markers are dropped, not rewritten"
    )]
    Control { base_offset: i64 },
    /// Codec ids 5-7 are not defined by Kafka.
    #[error("batch at offset {base_offset} names compression codec id {id}, which Kafka does not define: the batch is corrupt or from a newer Kafka")]
    UnknownCodec { base_offset: i64, id: u8 },
    /// The records section is not valid data of the batch's codec.
    #[error("batch at offset {base_offset}: its {} records do not decompress: {detail}", codec_name(.codec))]
    Decompress { base_offset: i64, codec: Compression, detail: String },
    /// The records decompress to more than the limit (see [`MAX_RECORDS_BYTES`]).
    #[error("batch at offset {base_offset}: its {} records decompress to more than {limit} bytes, kferry's limit for rewriting one batch", codec_name(.codec))]
    TooLarge { base_offset: i64, codec: Compression, limit: usize },
    /// The decompressed records are not well-formed v2 records.
    #[error("batch at offset {base_offset} ({}): record {index} is corrupt (byte {position} of the decompressed records): {problem}", codec_name(.codec))]
    Corrupt { base_offset: i64, codec: Compression, index: usize, position: usize, problem: Corruption },
    /// Recompressing failed (an encoder error; not expected with in-memory buffers).
    #[error("batch at offset {base_offset}: recompressing its records with {} failed: {detail}", codec_name(.codec))]
    Compress { base_offset: i64, codec: Compression, detail: String },
}

/// Rewrites a batch the target would refuse (compacted, or with LogAppendTime timestamps)
/// into one it accepts; see the module docs. `Ok(None)`: no record is left (compaction
/// removed them all; the cleaner keeps such empty batches for producer state), so there is
/// nothing to produce.
///
/// Any batch may be given: one that needs no rewrite comes back with the same records.
pub fn rewrite(batch: &RecordBatch) -> Result<Option<Rewritten>, RewriteError> {
    rewrite_within(batch, MAX_RECORDS_BYTES)
}

/// A record as a consumer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Every record of a data batch, decompressed: what failback exports for the operator.
pub fn decode_records(batch: &RecordBatch) -> Result<Vec<DecodedRecord>, RewriteError> {
    let base_offset = batch.base_offset();
    let codec = batch.compression();
    if let Compression::Unknown(id) = codec {
        return Err(RewriteError::UnknownCodec { base_offset, id });
    }
    let raw =
        decompress(codec, &batch.as_bytes()[HEADER_BYTES..], MAX_RECORDS_BYTES).map_err(|failure| match failure {
            Failure::TooLarge => RewriteError::TooLarge { base_offset, codec, limit: MAX_RECORDS_BYTES },
            Failure::Codec(detail) => RewriteError::Decompress { base_offset, codec, detail },
        })?;
    let corrupt = |(index, position, problem)| RewriteError::Corrupt { base_offset, codec, index, position, problem };
    let records = parse_records(&raw, batch.records_count(), batch.last_offset_delta()).map_err(corrupt)?;
    let owned = |bytes: Option<&[u8]>| bytes.map(<[u8]>::to_vec);
    records
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let fields = r.fields().map_err(|problem| corrupt((index, r.position, problem)))?;
            let timestamp = if batch.has_log_append_time() {
                batch.max_timestamp()
            } else {
                batch.base_timestamp() + r.timestamp_delta
            };
            Ok(DecodedRecord {
                offset: base_offset + i64::from(r.offset_delta),
                timestamp,
                key: owned(fields.key),
                value: owned(fields.value),
                headers: fields.headers.into_iter().map(|(k, v)| (k.to_vec(), owned(v))).collect(),
            })
        })
        .collect()
}

/// Whether the target refuses `batch` as it is and [`rewrite`] must run first.
pub fn needs_rewrite(batch: &RecordBatch) -> bool {
    i64::from(batch.records_count()) != i64::from(batch.last_offset_delta()) + 1 || batch.has_log_append_time()
}

/// [`rewrite`] with a limit on the decompressed size of the records.
pub fn rewrite_within(batch: &RecordBatch, max_records_bytes: usize) -> Result<Option<Rewritten>, RewriteError> {
    let base_offset = batch.base_offset();
    let codec = batch.compression();
    if !batch.crc_is_valid() {
        return Err(RewriteError::Crc { base_offset, stored: batch.stored_crc(), computed: batch.computed_crc() });
    }
    if batch.is_control() {
        return Err(RewriteError::Control { base_offset });
    }
    if let Compression::Unknown(id) = codec {
        return Err(RewriteError::UnknownCodec { base_offset, id });
    }
    let section = &batch.as_bytes()[HEADER_BYTES..];
    if batch.records_count() == 0 && section.is_empty() {
        // What the cleaner leaves of a batch whose records all went (header only).
        return Ok(None);
    }
    let raw = decompress(codec, section, max_records_bytes).map_err(|failure| match failure {
        Failure::TooLarge => RewriteError::TooLarge { base_offset, codec, limit: max_records_bytes },
        Failure::Codec(detail) => RewriteError::Decompress { base_offset, codec, detail },
    })?;
    let corrupt = |(index, position, problem)| RewriteError::Corrupt { base_offset, codec, index, position, problem };
    let records = parse_records(&raw, batch.records_count(), batch.last_offset_delta()).map_err(corrupt)?;
    if records.is_empty() {
        return Ok(None);
    }

    // Every record's timestamp as consumers of the source saw it.
    let log_append_time = batch.has_log_append_time();
    let timestamp = |index: usize, record: &RawRecord<'_>| {
        if log_append_time {
            Ok(batch.max_timestamp())
        } else {
            batch.base_timestamp().checked_add(record.timestamp_delta).ok_or((
                index,
                record.position,
                Corruption::TimestampOverflow,
            ))
        }
    };
    // Like a producer: the base timestamp is the first record's, the max the largest.
    let base_timestamp = timestamp(0, &records[0]).map_err(corrupt)?;
    let mut max_timestamp = base_timestamp;
    let mut encoded = Vec::with_capacity(raw.len());
    let mut source_offsets = Vec::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let at = timestamp(index, record).map_err(corrupt)?;
        max_timestamp = max_timestamp.max(at);
        let delta = at.checked_sub(base_timestamp).ok_or((index, record.position, Corruption::TimestampOverflow));
        let offset_delta = i32::try_from(index).expect("fewer records than the header's i32 count");
        encode_record(&mut encoded, record, delta.map_err(corrupt)?, offset_delta).ok_or(RewriteError::TooLarge {
            base_offset,
            codec,
            limit: max_records_bytes,
        })?;
        let source_offset = base_offset.checked_add(i64::from(record.offset_delta));
        source_offsets
            .push(source_offset.ok_or((index, record.position, Corruption::OffsetOverflow)).map_err(corrupt)?);
    }

    let records_count = i32::try_from(records.len()).expect("fewer records than the header's i32 count");
    // Neither LogAppendTime nor a delete horizon: the base timestamp is now the first
    // record's, and a horizon is the target cleaner's to set.
    let attributes = batch.attributes() & !(attributes::LOG_APPEND_TIME | attributes::DELETE_HORIZON);
    let encoded = Encoded { base_offset, records: &encoded, records_count, base_timestamp, max_timestamp, attributes };
    let batch = assemble(batch, &encoded, max_records_bytes)?;
    Ok(Some(Rewritten { batch, records: records_count, source_offsets }))
}

/// Re-encoded records and the header fields that describe them.
pub(super) struct Encoded<'a> {
    /// The source offset the batch is named by (outside the CRC; the stamp sets 0).
    pub(super) base_offset: i64,
    /// The records, uncompressed, offset deltas `0..records_count`.
    pub(super) records: &'a [u8],
    pub(super) records_count: i32,
    pub(super) base_timestamp: i64,
    pub(super) max_timestamp: i64,
    /// The new batch's attributes; their codec compresses `records`.
    pub(super) attributes: i16,
}

/// A new batch: `template`'s header (leader epoch, producer fields) with the
/// fields of `encoded`, its records compressed with the codec its attributes name, and a
/// fresh CRC-32C.
pub(super) fn assemble(
    template: &RecordBatch,
    encoded: &Encoded<'_>,
    max_records_bytes: usize,
) -> Result<RecordBatch, RewriteError> {
    let base_offset = encoded.base_offset;
    let codec = Compression::from_attributes(encoded.attributes);
    let compressed =
        compress(codec, encoded.records).map_err(|detail| RewriteError::Compress { base_offset, codec, detail })?;
    let batch_length = i32::try_from(HEADER_BYTES - LOG_OVERHEAD + compressed.len())
        .map_err(|_| RewriteError::TooLarge { base_offset, codec, limit: max_records_bytes })?;
    let mut out = BytesMut::with_capacity(HEADER_BYTES + compressed.len());
    out.extend_from_slice(&template.as_bytes()[..HEADER_BYTES]);
    out.extend_from_slice(&compressed);
    put(&mut out, 0, &base_offset.to_be_bytes());
    put(&mut out, BATCH_LENGTH_OFFSET, &batch_length.to_be_bytes());
    put(&mut out, ATTRIBUTES_OFFSET, &encoded.attributes.to_be_bytes());
    put(&mut out, LAST_OFFSET_DELTA_OFFSET, &(encoded.records_count - 1).to_be_bytes());
    put(&mut out, BASE_TIMESTAMP_OFFSET, &encoded.base_timestamp.to_be_bytes());
    put(&mut out, MAX_TIMESTAMP_OFFSET, &encoded.max_timestamp.to_be_bytes());
    put(&mut out, RECORDS_COUNT_OFFSET, &encoded.records_count.to_be_bytes());
    Ok(PatchedBatch::from_batch_bytes(out).finish())
}

/// A batch's records section, decompressed (at most `max_records_bytes`), after checking its
/// CRC-32C: a fresh CRC over re-encoded records must not cover up corruption.
pub(super) fn records_section(batch: &RecordBatch, max_records_bytes: usize) -> Result<Cow<'_, [u8]>, RewriteError> {
    let base_offset = batch.base_offset();
    let codec = batch.compression();
    if !batch.crc_is_valid() {
        return Err(RewriteError::Crc { base_offset, stored: batch.stored_crc(), computed: batch.computed_crc() });
    }
    if let Compression::Unknown(id) = codec {
        return Err(RewriteError::UnknownCodec { base_offset, id });
    }
    decompress(codec, &batch.as_bytes()[HEADER_BYTES..], max_records_bytes).map_err(|failure| match failure {
        Failure::TooLarge => RewriteError::TooLarge { base_offset, codec, limit: max_records_bytes },
        Failure::Codec(detail) => RewriteError::Decompress { base_offset, codec, detail },
    })
}

fn put(buf: &mut BytesMut, at: usize, value: &[u8]) {
    buf[at..at + value.len()].copy_from_slice(value);
}

/// The codec's name as Kafka's `compression.type` spells it.
fn codec_name(codec: &Compression) -> &'static str {
    match codec {
        Compression::None => "uncompressed",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
        Compression::Unknown(_) => "unknown-codec",
    }
}

// -------------------------------------------------------------------------------- codecs

/// Why decompression stopped.
enum Failure {
    TooLarge,
    Codec(String),
}

/// Reads a decoder to its end, failing once it yields more than `limit` bytes.
fn read_bounded(decoder: impl Read, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder.take(cap).read_to_end(&mut out).map_err(|e| Failure::Codec(e.to_string()))?;
    if out.len() > limit {
        return Err(Failure::TooLarge);
    }
    Ok(out)
}

fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, Failure> {
    match codec {
        Compression::None if data.len() > limit => Err(Failure::TooLarge),
        Compression::None => Ok(Cow::Borrowed(data)),
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit).map(Cow::Owned),
        Compression::Snappy => snappy_decompress(data, limit).map(Cow::Owned),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit).map(Cow::Owned),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(|e| Failure::Codec(e.to_string()))?;
            read_bounded(decoder, limit).map(Cow::Owned)
        }
        Compression::Unknown(id) => Err(Failure::Codec(format!("codec id {id} is not defined"))),
    }
}

/// Raw snappy (librdkafka) or the xerial stream (Kafka's Java code), told apart by the
/// xerial magic as snappy-java's `SnappyInputStream` does.
fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, Failure> {
    let codec_error = |e: snap::Error| Failure::Codec(e.to_string());
    if !data.starts_with(XERIAL_MAGIC) {
        if snap::raw::decompress_len(data).map_err(codec_error)? > limit {
            return Err(Failure::TooLarge);
        }
        return snap::raw::Decoder::new().decompress_vec(data).map_err(codec_error);
    }
    let mut reader = Reader { data, at: 0 };
    let truncated = |_| Failure::Codec("the xerial snappy stream ends inside a block".to_owned());
    let mut out = Vec::new();
    while reader.at < data.len() {
        // A stream header, at the start or where streams were concatenated.
        if data[reader.at..].starts_with(XERIAL_MAGIC) {
            reader.take(XERIAL_HEADER.len()).map_err(truncated)?;
            continue;
        }
        let length = u32::from_be_bytes(reader.take(4).map_err(truncated)?.try_into().expect("4 bytes"));
        let block = reader.take(length as usize).map_err(truncated)?;
        let start = out.len();
        let size = snap::raw::decompress_len(block).map_err(codec_error)?;
        if start.saturating_add(size) > limit {
            return Err(Failure::TooLarge);
        }
        out.resize(start + size, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..]).map_err(codec_error)?;
    }
    Ok(out)
}

fn compress(codec: Compression, data: &[u8]) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| e.to_string();
    match codec {
        Compression::None => Ok(data.to_vec()),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).map_err(io)?;
            encoder.finish().map_err(io)
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(XERIAL_HEADER.len() + snap::raw::max_compress_len(data.len()));
            out.extend_from_slice(XERIAL_HEADER);
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = encoder.compress_vec(chunk).map_err(|e| e.to_string())?;
                let length = u32::try_from(block.len()).map_err(|e| e.to_string())?;
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(data).map_err(io)?;
            encoder.finish().map_err(|e| e.to_string())
        }
        Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).map_err(io),
        Compression::Unknown(id) => Err(format!("codec id {id} is not defined")),
    }
}

#[cfg(test)]
mod tests;
