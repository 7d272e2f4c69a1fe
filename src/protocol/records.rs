//! v2 records inside a batch: zigzag varints, record parsing and encoding. Bytes only.
//!
//! The fast path never looks inside a batch; the slow path (`replicate::rewrite`) and
//! kferry's own state records (`replicate::state`) do, through this module. Parsing never
//! reads past its input and never trusts a count from the wire for an allocation.

use bytes::{Bytes, BytesMut};

use super::batch::{PatchedBatch, RecordBatch, HEADER_BYTES};

/// What is wrong with a record.
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

/// One v2 record, decoded only as far as the rewrite needs: the fields after the offset
/// delta (key, value, headers) are validated and then copied as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRecord<'a> {
    /// Where the record (its length varint) starts in the decompressed records.
    pub(crate) position: usize,
    pub(crate) attributes: u8,
    pub(crate) timestamp_delta: i64,
    pub(crate) offset_delta: i32,
    /// keyLength, key, valueLength, value, headerCount, headers: untouched.
    pub(crate) rest: &'a [u8],
}

/// (record index, byte position, problem).
pub(crate) type ParseError = (usize, usize, Corruption);

/// A cursor over the decompressed records that never reads past their end.
pub(crate) struct Reader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
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
    pub(crate) fn varint(&mut self) -> Result<i32, Corruption> {
        let n = u32::try_from(self.unsigned(5, 32)?).map_err(|_| Corruption::BadVarint)?;
        Ok((n >> 1) as i32 ^ -((n & 1) as i32))
    }

    /// A zigzag varlong (Kafka's `ByteUtils.readVarlong`).
    pub(crate) fn varlong(&mut self) -> Result<i64, Corruption> {
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
pub(crate) fn parse_records(
    data: &[u8],
    declared: i32,
    last_offset_delta: i32,
) -> Result<Vec<RawRecord<'_>>, ParseError> {
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

pub(crate) fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Appends `record` with new timestamp and offset deltas; the rest is copied. `None`: the
/// record, grown by longer deltas, no longer fits a record's i32 length.
pub(crate) fn encode_record(
    out: &mut Vec<u8>,
    record: &RawRecord<'_>,
    timestamp_delta: i64,
    offset_delta: i32,
) -> Option<()> {
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

/// A record's key and value, `None` for null.
pub type KeyValueRef<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// A record of one of kferry's own state batches: its offset, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// A record's key, value and headers (`None` for null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFields<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

impl<'a> RawRecord<'a> {
    /// The record's key, value and headers.
    pub(crate) fn fields(&self) -> Result<RecordFields<'a>, Corruption> {
        let mut fields = Reader { data: self.rest, at: 0 };
        let key = fields.nullable_bytes()?;
        let value = fields.nullable_bytes()?;
        let count = fields.varint()?;
        let mut headers = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(self.rest.len()));
        for _ in 0..count {
            let name = fields.nullable_bytes()?.unwrap_or_default();
            headers.push((name, fields.nullable_bytes()?));
        }
        Ok(RecordFields { key, value, headers })
    }

    /// The record's key and value (`None` for null), the headers left out.
    pub(crate) fn key_value(&self) -> Result<KeyValueRef<'a>, Corruption> {
        let mut fields = Reader { data: self.rest, at: 0 };
        let key = fields.nullable_bytes()?;
        let value = fields.nullable_bytes()?;
        Ok((key, value))
    }
}

impl<'a> Reader<'a> {
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, Corruption> {
        match self.varint()? {
            -1 => Ok(None),
            length if length < 0 => Err(Corruption::BadLength { length: i64::from(length) }),
            length => self.take(length as usize).map(Some),
        }
    }
}

/// The key and value of every record of an uncompressed batch, in order, with its offset.
pub fn uncompressed_key_values(batch: &RecordBatch) -> Result<Vec<StateRecord>, Corruption> {
    let data = batch.as_bytes().slice(HEADER_BYTES..);
    let records = parse_records(&data, batch.records_count(), batch.last_offset_delta()).map_err(|(_, _, c)| c)?;
    records
        .iter()
        .map(|r| {
            let (key, value) = r.key_value()?;
            let slice = |part: &[u8]| data.slice_ref(part);
            Ok(StateRecord {
                offset: batch.base_offset() + i64::from(r.offset_delta),
                key: key.map(slice),
                value: value.map(slice),
            })
        })
        .collect()
}

/// An uncompressed batch (base offset 0, no producer) of records with keys and values and
/// no headers, all stamped `timestamp`: what kferry writes to its own state topics.
pub fn build_batch(records: &[KeyValueRef<'_>], timestamp: i64) -> RecordBatch {
    let mut body = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        let mut rest = Vec::new();
        for part in [key, value] {
            match part {
                Some(bytes) => {
                    put_varint(&mut rest, bytes.len() as i32);
                    rest.extend_from_slice(bytes);
                }
                None => put_varint(&mut rest, -1),
            }
        }
        put_varint(&mut rest, 0); // no headers
        let record =
            RawRecord { position: 0, attributes: 0, timestamp_delta: 0, offset_delta: index as i32, rest: &rest };
        encode_record(&mut body, &record, 0, index as i32).expect("state records are small");
    }
    let count = records.len() as i32;
    let mut b = BytesMut::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes()); // base offset
    b.extend_from_slice(&((HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    b.extend_from_slice(&[2]); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, computed by finish()
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes: uncompressed, CreateTime
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&body);
    PatchedBatch::from_batch_bytes(b).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_batches_read_back() {
        let batch = build_batch(&[(Some(b"k1"), Some(b"v1")), (None, Some(b"")), (Some(b"k3"), None)], 1_000);
        assert!(batch.crc_is_valid());
        assert_eq!((batch.records_count(), batch.last_offset_delta(), batch.max_timestamp()), (3, 2, 1_000));
        let records = uncompressed_key_values(&batch).unwrap();
        let plain: Vec<(i64, KeyValueRef<'_>)> =
            records.iter().map(|r| (r.offset, (r.key.as_deref(), r.value.as_deref()))).collect();
        let expected: [(i64, KeyValueRef<'_>); 3] =
            [(0, (Some(b"k1"), Some(b"v1"))), (1, (None, Some(b""))), (2, (Some(b"k3"), None))];
        assert_eq!(plain, expected);
    }
}
