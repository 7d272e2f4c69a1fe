//! A zero-copy view of v2 record batches (magic 2), the unit kferry forwards.
//!
//! A Fetch response carries a partition's records as one blob of consecutive batches. This
//! module splits the blob into [`RecordBatch`]es that are `Bytes` slices of it, reads every
//! header field, checks and recomputes the CRC-32C, and patches the producer fields a
//! forwarder must own. The records after the 61-byte header are never decoded: whatever the
//! codec, the bytes that leave are the bytes that came in.
//!
//! Header layout (big-endian), from Kafka's `DefaultRecordBatch`:
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
//! attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32`.

use bytes::{Bytes, BytesMut};

/// Bytes in a v2 batch header; the records follow.
pub const HEADER_BYTES: usize = 61;
/// Bytes before `batchLength`'s count starts (baseOffset + batchLength itself).
const LOG_OVERHEAD: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_START: usize = 21;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const BASE_TIMESTAMP_OFFSET: usize = 27;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const RECORDS_COUNT_OFFSET: usize = 57;

/// Attribute bits of a v2 batch.
pub mod attributes {
    /// Bits 0-2: the compression codec.
    pub const COMPRESSION_MASK: i16 = 0x07;
    /// Bit 3: timestamps are LogAppendTime (set by the broker) rather than CreateTime.
    pub const LOG_APPEND_TIME: i16 = 0x08;
    /// Bit 4: the batch belongs to a transaction.
    pub const TRANSACTIONAL: i16 = 0x10;
    /// Bit 5: a control batch (transaction marker), never application data.
    pub const CONTROL: i16 = 0x20;
    /// Bit 6: the batch carries a delete horizon (compaction of tombstones and markers).
    pub const DELETE_HORIZON: i16 = 0x40;
}

/// The compression codec named by a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// A codec id Kafka does not define (5-7): the batch is corrupt or from the future.
    Unknown(u8),
}

impl Compression {
    /// The codec bits (0-2) of a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Self {
        match (attributes & attributes::COMPRESSION_MASK) as u8 {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            other => Self::Unknown(other),
        }
    }
}

/// Why the bytes at some position of a records blob are not a batch kferry can forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// `batchLength` is smaller than a v2 header can be.
    #[error("batch at byte {position} declares length {length}, less than a batch header")]
    BadLength { position: usize, length: i32 },
    /// The old message formats (v0/v1) are not record batches.
    #[error("batch at byte {position} has message format v{magic}; kferry forwards only v2 record batches (Kafka 0.11+). Convert the source topic (message.format.version) or upgrade its producers")]
    UnsupportedMagic { position: usize, magic: i8 },
}

/// One v2 record batch: a cheap `Bytes` slice of the blob it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("records_count", &self.records_count())
            .field("attributes", &format_args!("{:#06x}", self.attributes()))
            .field("len", &self.bytes.len())
            .finish()
    }
}

macro_rules! be_field {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $offset:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> $ty {
                const N: usize = std::mem::size_of::<$ty>();
                let mut raw = [0u8; N];
                raw.copy_from_slice(&self.bytes[$offset..$offset + N]);
                <$ty>::from_be_bytes(raw)
            }
        )*
    };
}

impl RecordBatch {
    be_field! {
        /// Offset of the first record; the target broker assigns its own on append.
        base_offset: i64 = 0;
        /// Bytes after this field: the batch is `batch_length() + 12` bytes long.
        batch_length: i32 = 8;
        /// Set by the leader that appended the batch; the target overwrites it.
        partition_leader_epoch: i32 = 12;
        /// Record format version; always 2 for a `RecordBatch`.
        magic: i8 = MAGIC_OFFSET;
        /// The CRC-32C stored in the header.
        stored_crc: u32 = CRC_OFFSET;
        /// Codec, timestamp type, transactional, control and delete-horizon bits.
        attributes: i16 = ATTRIBUTES_OFFSET;
        /// Offset of the last record relative to `base_offset`.
        last_offset_delta: i32 = LAST_OFFSET_DELTA_OFFSET;
        /// Timestamp of the first record (or the delete horizon when that bit is set).
        base_timestamp: i64 = BASE_TIMESTAMP_OFFSET;
        /// Largest timestamp in the batch; with LogAppendTime, the time of append.
        max_timestamp: i64 = MAX_TIMESTAMP_OFFSET;
        /// The producer that wrote the batch, or -1.
        producer_id: i64 = PRODUCER_ID_OFFSET;
        /// That producer's epoch, or -1.
        producer_epoch: i16 = PRODUCER_EPOCH_OFFSET;
        /// Sequence number of the first record for idempotence, or -1.
        base_sequence: i32 = BASE_SEQUENCE_OFFSET;
        /// Records in the batch; less than `last_offset_delta + 1` after compaction.
        records_count: i32 = RECORDS_COUNT_OFFSET;
    }

    /// The whole batch, header included: what is forwarded.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives back the batch's bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Offset of the last record; the next batch starts after it.
    pub fn last_offset(&self) -> i64 {
        self.base_offset() + i64::from(self.last_offset_delta())
    }

    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes())
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & attributes::TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & attributes::CONTROL != 0
    }

    pub fn has_log_append_time(&self) -> bool {
        self.attributes() & attributes::LOG_APPEND_TIME != 0
    }

    /// The CRC-32C of bytes 21..end, as the header should store it.
    pub fn computed_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[CRC_START..])
    }

    /// The CRC-32C of the records (bytes 61..end), the part a patch never changes.
    pub fn records_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[HEADER_BYTES..])
    }

    /// The batch's CRC from the CRC of its records part ([`Self::records_crc`]): only the
    /// 40 header bytes the CRC covers are read again.
    pub fn crc_with_records_crc(&self, records_crc: u32) -> u32 {
        let header = crc32c::crc32c(&self.bytes[CRC_START..HEADER_BYTES]);
        crc32c::crc32c_combine(header, records_crc, self.bytes.len() - HEADER_BYTES)
    }

    /// Whether the stored CRC matches the batch's content.
    pub fn crc_is_valid(&self) -> bool {
        self.stored_crc() == self.computed_crc()
    }

    /// Copies the batch so its header can be patched; see [`PatchedBatch`].
    pub fn to_patchable(&self) -> PatchedBatch {
        PatchedBatch { bytes: BytesMut::from(&self.bytes[..]) }
    }
}

/// A batch whose producer fields are being rewritten before it is produced elsewhere.
///
/// Every setter leaves the CRC stale; [`PatchedBatch::finish`] recomputes it once.
#[derive(Debug)]
pub struct PatchedBatch {
    bytes: BytesMut,
}

impl PatchedBatch {
    /// Wraps bytes that already hold one whole v2 batch (as checked by [`BatchIter`]).
    pub fn from_batch_bytes(bytes: BytesMut) -> Self {
        Self { bytes }
    }

    fn put(&mut self, offset: usize, value: &[u8]) {
        self.bytes[offset..offset + value.len()].copy_from_slice(value);
    }

    /// Sets the batch's base offset. A batch produced by a client must have base offset 0
    /// (Kafka's LogValidator refuses anything else: "The baseOffset of the record batch in
    /// the append ... should be 0"), while a fetched batch carries its source offset. The
    /// field lies outside the CRC, so this costs no recomputation.
    pub fn set_base_offset(&mut self, base_offset: i64) -> &mut Self {
        self.put(0, &base_offset.to_be_bytes());
        self
    }

    /// Sets the producer identity the target will see (kferry's own, not the source's).
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> &mut Self {
        self.put(PRODUCER_ID_OFFSET, &producer_id.to_be_bytes());
        self.put(PRODUCER_EPOCH_OFFSET, &producer_epoch.to_be_bytes());
        self.put(BASE_SEQUENCE_OFFSET, &base_sequence.to_be_bytes());
        self
    }

    /// Replaces the attribute bits (e.g. to set or clear the transactional bit).
    pub fn set_attributes(&mut self, attributes: i16) -> &mut Self {
        self.put(ATTRIBUTES_OFFSET, &attributes.to_be_bytes());
        self
    }

    /// Like [`Self::finish`], from the CRC of the records part, which the patch did not
    /// change: only the header is read again.
    pub fn finish_with_records_crc(mut self, records_crc: u32) -> RecordBatch {
        let header = crc32c::crc32c(&self.bytes[CRC_START..HEADER_BYTES]);
        let crc = crc32c::crc32c_combine(header, records_crc, self.bytes.len() - HEADER_BYTES);
        self.put(CRC_OFFSET, &crc.to_be_bytes());
        RecordBatch { bytes: self.bytes.freeze() }
    }

    /// Recomputes the CRC-32C over bytes 21..end and returns the finished batch.
    pub fn finish(mut self) -> RecordBatch {
        let crc = crc32c::crc32c(&self.bytes[CRC_START..]);
        self.put(CRC_OFFSET, &crc.to_be_bytes());
        RecordBatch { bytes: self.bytes.freeze() }
    }
}

/// What a records blob holds at the current position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem {
    /// A whole v2 batch.
    Batch(RecordBatch),
    /// The blob ends inside a batch: the broker cut it at the fetch size. The missing part
    /// is fetched again from `base_offset` next time; this is normal, not an error.
    Partial { base_offset: i64, available: usize, needed: usize },
}

/// Iterates the batches of a records blob (a Fetch response's `records`) without copying.
///
/// After a partial batch or an error the iterator ends.
#[derive(Debug, Clone)]
pub struct BatchIter {
    rest: Bytes,
    position: usize,
    done: bool,
}

impl BatchIter {
    pub fn new(records: Bytes) -> Self {
        Self { rest: records, position: 0, done: false }
    }

    fn next_item(&mut self) -> Result<Option<BatchItem>, BatchError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let base_offset = self.rest.get(..8).map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")));
        let Some(length_bytes) = self.rest.get(8..LOG_OVERHEAD) else {
            return Ok(Some(self.partial(base_offset.unwrap_or(-1), HEADER_BYTES)));
        };
        let base_offset = base_offset.expect("12 bytes hold the base offset");
        let length = i32::from_be_bytes(length_bytes.try_into().expect("4 bytes"));
        if length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength { position: self.position, length });
        }
        let whole = LOG_OVERHEAD + length as usize;
        // The magic byte is checked as soon as it is there: an old-format message set must be
        // reported as such even when it is also cut short.
        if let Some(&magic) = self.rest.get(MAGIC_OFFSET) {
            if magic != 2 {
                return Err(BatchError::UnsupportedMagic { position: self.position, magic: magic as i8 });
            }
        }
        if self.rest.len() < whole {
            return Ok(Some(self.partial(base_offset, whole)));
        }
        let bytes = self.rest.split_to(whole);
        self.position += whole;
        Ok(Some(BatchItem::Batch(RecordBatch { bytes })))
    }

    fn partial(&mut self, base_offset: i64, needed: usize) -> BatchItem {
        let available = self.rest.len();
        self.rest = Bytes::new();
        BatchItem::Partial { base_offset, available, needed }
    }
}

impl Iterator for BatchIter {
    type Item = Result<BatchItem, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_item().transpose();
        if !matches!(item, Some(Ok(BatchItem::Batch(_)))) {
            self.done = true;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made uncompressed batch with `count` empty-ish records' worth of payload bytes.
    /// Real batches captured from Kafka are tested in `protocol-tests/`.
    fn batch(base_offset: i64, last_offset_delta: i32, payload: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.extend_from_slice(&base_offset.to_be_bytes());
        b.extend_from_slice(&((HEADER_BYTES - LOG_OVERHEAD + payload.len()) as i32).to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes()); // leader epoch
        b.extend_from_slice(&[2]); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, fixed below
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&last_offset_delta.to_be_bytes());
        b.extend_from_slice(&1_000i64.to_be_bytes());
        b.extend_from_slice(&2_000i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(last_offset_delta + 1).to_be_bytes());
        b.extend_from_slice(payload);
        PatchedBatch::from_batch_bytes(b).finish().into_bytes()
    }

    #[test]
    fn reads_header_fields() {
        let bytes = batch(42, 2, b"records");
        let Some(Ok(BatchItem::Batch(b))) = BatchIter::new(bytes).next() else { panic!("one batch") };
        assert_eq!((b.base_offset(), b.last_offset(), b.records_count()), (42, 44, 3));
        assert_eq!((b.partition_leader_epoch(), b.magic(), b.attributes()), (7, 2, 0));
        assert_eq!((b.base_timestamp(), b.max_timestamp()), (1_000, 2_000));
        assert_eq!((b.producer_id(), b.producer_epoch(), b.base_sequence()), (-1, -1, -1));
        assert_eq!(b.compression(), Compression::None);
        assert!(b.crc_is_valid());
    }

    #[test]
    fn patch_changes_only_producer_fields_and_crc() {
        let original = batch(0, 0, b"payload");
        let Some(Ok(BatchItem::Batch(b))) = BatchIter::new(original.clone()).next() else { panic!() };
        let mut patch = b.to_patchable();
        patch.set_producer(9, 3, 100).set_attributes(attributes::TRANSACTIONAL).set_base_offset(0);
        let patched = patch.finish();
        assert_eq!(patched.base_offset(), 0);
        assert!(patched.crc_is_valid());
        assert_eq!((patched.producer_id(), patched.producer_epoch(), patched.base_sequence()), (9, 3, 100));
        assert!(patched.is_transactional());
        let changed: Vec<usize> = (0..original.len()).filter(|&i| original[i] != patched.as_bytes()[i]).collect();
        assert!(changed.iter().all(|&i| (17..23).contains(&i) || (43..57).contains(&i)), "{changed:?}");
        let mut rebased = BatchIter::new(original.clone()).next();
        if let Some(Ok(BatchItem::Batch(b))) = rebased.take() {
            let mut patch = b.to_patchable();
            patch.set_base_offset(1234);
            assert_eq!(patch.finish().stored_crc(), b.stored_crc(), "base offset is outside the CRC");
        }
        assert_eq!(&original[61..], &patched.as_bytes()[61..], "records untouched");
    }

    #[test]
    fn splits_batches_and_reports_partial_tail() {
        let mut blob = BytesMut::new();
        blob.extend_from_slice(&batch(0, 1, b"ab"));
        blob.extend_from_slice(&batch(2, 0, b"c"));
        let third = batch(3, 0, b"ddddd");
        blob.extend_from_slice(&third[..30]);
        let items: Vec<_> = BatchIter::new(blob.freeze()).collect::<Result<_, _>>().unwrap();
        assert_eq!(items.len(), 3);
        assert!(
            matches!(items[2], BatchItem::Partial { base_offset: 3, available: 30, needed } if needed == third.len())
        );
    }

    #[test]
    fn tail_shorter_than_length_field_is_partial() {
        let items: Vec<_> = BatchIter::new(Bytes::from_static(&[0, 0, 0])).collect();
        assert!(matches!(items[..], [Ok(BatchItem::Partial { available: 3, .. })]));
    }

    #[test]
    fn corrupt_crc_is_detected() {
        let mut bytes = BytesMut::from(&batch(0, 0, b"x")[..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let Some(Ok(BatchItem::Batch(b))) = BatchIter::new(bytes.freeze()).next() else { panic!() };
        assert!(!b.crc_is_valid());
    }

    #[test]
    fn old_formats_and_bad_lengths_are_errors() {
        let mut bytes = BytesMut::from(&batch(0, 0, b"x")[..]);
        bytes[MAGIC_OFFSET] = 1;
        assert_eq!(
            BatchIter::new(bytes.freeze()).next(),
            Some(Err(BatchError::UnsupportedMagic { position: 0, magic: 1 }))
        );
        let mut bytes = BytesMut::from(&batch(0, 0, b"x")[..]);
        bytes[8..12].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(BatchIter::new(bytes.freeze()).next(), Some(Err(BatchError::BadLength { position: 0, length: 5 })));
    }
}
