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

/// What is wrong with a record; see [`RewriteError::Corrupt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    #[error("the data ends inside a field")]
    Truncated,
    #[error("a varint runs past its maximum length or value")]
    BadVarint,
    #[error("the header declares {declared} records")]
    NegativeCount { declared: i32 },
    #[error("a length of {length} is invalid")]
    BadLength { length: i64 },
    #[error("a header count of {count} is invalid")]
    BadHeaderCount { count: i32 },
    #[error("the record declares {declared} bytes but its fields end after {used}")]
    RecordLength { declared: usize, used: usize },
    #[error("offset delta {delta} is not above the previous record's ({previous}) or beyond the batch's lastOffsetDelta {last}")]
    OffsetDelta { delta: i32, previous: i32, last: i32 },
    #[error("its offset (base offset + offset delta) does not fit in 64 bits")]
    OffsetOverflow,
    #[error("its timestamp does not fit in 64 bits")]
    TimestampOverflow,
    #[error("bytes remain after the {declared} records the header declares")]
    TrailingBytes { declared: i32 },
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

    let compressed =
        compress(codec, &encoded).map_err(|detail| RewriteError::Compress { base_offset, codec, detail })?;
    let records_count = i32::try_from(records.len()).expect("fewer records than the header's i32 count");
    let batch_length = i32::try_from(HEADER_BYTES - LOG_OVERHEAD + compressed.len())
        .map_err(|_| RewriteError::TooLarge { base_offset, codec, limit: max_records_bytes })?;
    // Neither LogAppendTime nor a delete horizon: the base timestamp is now the first
    // record's, and a horizon is the target cleaner's to set.
    let attributes = batch.attributes() & !(attributes::LOG_APPEND_TIME | attributes::DELETE_HORIZON);

    let mut out = BytesMut::with_capacity(HEADER_BYTES + compressed.len());
    out.extend_from_slice(&batch.as_bytes()[..HEADER_BYTES]);
    out.extend_from_slice(&compressed);
    put(&mut out, BATCH_LENGTH_OFFSET, &batch_length.to_be_bytes());
    put(&mut out, ATTRIBUTES_OFFSET, &attributes.to_be_bytes());
    put(&mut out, LAST_OFFSET_DELTA_OFFSET, &(records_count - 1).to_be_bytes());
    put(&mut out, BASE_TIMESTAMP_OFFSET, &base_timestamp.to_be_bytes());
    put(&mut out, MAX_TIMESTAMP_OFFSET, &max_timestamp.to_be_bytes());
    put(&mut out, RECORDS_COUNT_OFFSET, &records_count.to_be_bytes());
    Ok(Some(Rewritten { batch: PatchedBatch::from_batch_bytes(out).finish(), records: records_count, source_offsets }))
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

// ------------------------------------------------------------------------------- records

/// One v2 record, decoded only as far as the rewrite needs: the fields after the offset
/// delta (key, value, headers) are validated and then copied as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawRecord<'a> {
    /// Where the record (its length varint) starts in the decompressed records.
    position: usize,
    attributes: u8,
    timestamp_delta: i64,
    offset_delta: i32,
    /// keyLength, key, valueLength, value, headerCount, headers: untouched.
    rest: &'a [u8],
}

/// (record index, byte position, problem).
type ParseError = (usize, usize, Corruption);

/// A cursor over the decompressed records that never reads past their end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.data.len()).ok_or(Corruption::Truncated)?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// An unsigned LEB128 of at most `max_bytes` bytes whose value fits in `bits`.
    fn unsigned(&mut self, max_bytes: u32, bits: u32) -> Result<u64, Corruption> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let byte = self.take(1)?[0];
            let bits_here = u64::from(byte & 0x7f);
            if (bits_here << (7 * i)) >> (7 * i) != bits_here {
                return Err(Corruption::BadVarint); // bits beyond 64
            }
            value |= bits_here << (7 * i);
            if byte & 0x80 == 0 {
                return if bits < 64 && value >> bits != 0 { Err(Corruption::BadVarint) } else { Ok(value) };
            }
        }
        Err(Corruption::BadVarint)
    }

    /// A zigzag varint (Kafka's `ByteUtils.readVarint`).
    fn varint(&mut self) -> Result<i32, Corruption> {
        let n = u32::try_from(self.unsigned(5, 32)?).map_err(|_| Corruption::BadVarint)?;
        Ok((n >> 1) as i32 ^ -((n & 1) as i32))
    }

    /// A zigzag varlong (Kafka's `ByteUtils.readVarlong`).
    fn varlong(&mut self) -> Result<i64, Corruption> {
        let n = self.unsigned(10, 64)?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// A length-prefixed byte string; `nullable` allows -1 (null).
    fn bytes(&mut self, nullable: bool) -> Result<(), Corruption> {
        match self.varint()? {
            -1 if nullable => Ok(()),
            length if length < 0 => Err(Corruption::BadLength { length: i64::from(length) }),
            length => self.take(length as usize).map(drop),
        }
    }
}

/// Parses exactly `declared` records, which must fill `data`; offset deltas must rise and
/// stay within `last_offset_delta`.
fn parse_records(data: &[u8], declared: i32, last_offset_delta: i32) -> Result<Vec<RawRecord<'_>>, ParseError> {
    let count = usize::try_from(declared).map_err(|_| (0, 0, Corruption::NegativeCount { declared }))?;
    // Every record takes at least 7 bytes: never reserve more than the data could hold.
    let mut records = Vec::with_capacity(count.min(data.len() / 7));
    let mut reader = Reader { data, at: 0 };
    let mut previous = -1;
    for index in 0..count {
        let position = reader.at;
        let record = parse_record(&mut reader).map_err(|problem| (index, position, problem))?;
        if record.offset_delta <= previous || record.offset_delta > last_offset_delta {
            let problem = Corruption::OffsetDelta { delta: record.offset_delta, previous, last: last_offset_delta };
            return Err((index, position, problem));
        }
        previous = record.offset_delta;
        records.push(record);
    }
    if reader.at != data.len() {
        return Err((count, reader.at, Corruption::TrailingBytes { declared }));
    }
    Ok(records)
}

/// One record: `length varint | attributes int8 | timestampDelta varlong | offsetDelta varint
/// | keyLength varint | key | valueLength varint | value | headerCount varint | headers`,
/// each header `keyLength varint | key | valueLength varint | value` (Kafka's
/// `DefaultRecord`; null key or value: length -1; a header key is never null).
fn parse_record<'a>(reader: &mut Reader<'a>) -> Result<RawRecord<'a>, Corruption> {
    let position = reader.at;
    let length = reader.varint()?;
    let declared = usize::try_from(length).map_err(|_| Corruption::BadLength { length: i64::from(length) })?;
    let body = reader.take(declared)?;
    let mut fields = Reader { data: body, at: 0 };
    let attributes = fields.take(1)?[0];
    let timestamp_delta = fields.varlong()?;
    let offset_delta = fields.varint()?;
    let rest_start = fields.at;
    fields.bytes(true)?; // key
    fields.bytes(true)?; // value
    let headers = fields.varint()?;
    if headers < 0 {
        return Err(Corruption::BadHeaderCount { count: headers });
    }
    for _ in 0..headers {
        fields.bytes(false)?;
        fields.bytes(true)?;
    }
    if fields.at != body.len() {
        return Err(Corruption::RecordLength { declared, used: fields.at });
    }
    Ok(RawRecord { position, attributes, timestamp_delta, offset_delta, rest: &body[rest_start..] })
}

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Appends `record` with new timestamp and offset deltas; the rest is copied. `None`: the
/// record, grown by longer deltas, no longer fits a record's i32 length.
fn encode_record(out: &mut Vec<u8>, record: &RawRecord<'_>, timestamp_delta: i64, offset_delta: i32) -> Option<()> {
    let mut head = Vec::with_capacity(16);
    head.push(record.attributes);
    put_varlong(&mut head, timestamp_delta);
    put_varint(&mut head, offset_delta);
    let length = i32::try_from(head.len() + record.rest.len()).ok()?;
    put_varint(out, length);
    out.extend_from_slice(&head);
    out.extend_from_slice(record.rest);
    Some(())
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
