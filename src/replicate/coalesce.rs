//! Coalescing: runs of consecutive small batches of one partition become one batch before
//! they are produced.
//!
//! A source producer with `linger.ms=0` writes one batch per record. Forwarded as they are,
//! each is its own Produce entry, a Produce request carries one batch per partition, so a
//! partition's cycle takes one round trip per record, and the target appends, indexes and
//! replicates every tiny batch on its own. Kafka's producer (and so MirrorMaker 2) re-batches.
//! Here a run of small batches is decoded and re-encoded as one batch with their codec: keys,
//! values, headers and record attributes byte for byte, every record's timestamp kept, offset
//! deltas made contiguous. Each record's source offset is returned, as on the slow path
//! ([`super::rewrite`]), so the offset map stays exact: a gap between two batches of a run (a
//! transaction marker, aborted data) stays a gap.
//!
//! Batches kept out of runs: large ones (they gain nothing), and any whose timestamps or
//! header the re-encoding would change the meaning of (LogAppendTime, a delete horizon;
//! control batches never get here). A run may mix codecs (see [`run_codec`]). Pure: no I/O.

use super::forward::Forwarded;
use super::rewrite::{assemble, records_section, Encoded, RewriteError, MAX_RECORDS_BYTES};
use crate::metrics::BatchPath;
use crate::protocol::batch::{attributes, RecordBatch};
use crate::protocol::records::{encode_record, parse_records, Corruption};

/// Batches at least this large are forwarded as they are. Well below Kafka's default
/// producer `batch.size` (16 KiB): full-size batches must keep the byte-for-byte fast path
/// (re-encoding costs a decompression and a compression); what is coalesced is what a
/// producer sent without lingering, typically one record.
pub const SMALL_BATCH_BYTES: usize = 4 * 1024;
/// Most bytes (the input batches', as fetched) coalesced into one batch. Well below Kafka's
/// default `max.message.bytes` (1 MiB), which topic sync copies from the source, so a
/// coalesced batch is not refused where its parts would have been accepted.
pub const MAX_COALESCED_BYTES: usize = 128 * 1024;

/// Most bytes the records of one run may take decompressed. A run whose records inflate
/// beyond this is forwarded as it is: a few kilobytes that decompress into megabytes are not
/// the small-record traffic coalescing is for, and memory stays bounded.
pub const MAX_COALESCED_RECORDS_BYTES: usize = 8 * 1024 * 1024;

/// A partition's batches after coalescing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesced {
    pub batches: Vec<Forwarded>,
    /// Input batches that were merged into others (input count minus output count).
    pub merged: usize,
    /// A small batch as fetched failed its CRC-32C check: `batches` are those before it,
    /// and nothing of it or after it. Merging decodes the records and builds a batch with
    /// a fresh CRC, which would launder the damage, so the check comes first here (batches
    /// forwarded as they are get it when they are stamped).
    pub corrupt: Option<RewriteError>,
}

/// Coalesces runs of consecutive small batches of one partition, in order.
pub fn coalesce(batches: Vec<Forwarded>) -> Result<Coalesced, RewriteError> {
    coalesce_with(batches, Joins::Small)
}

/// As [`coalesce`], where batches kferry built (coalesced or rewritten, whatever their
/// size) join runs too: they are re-encoded already, so merging them again loses no
/// byte-for-byte forwarding. For a transaction round, whose batches come from several
/// fetches each coalesced on its own.
pub fn coalesce_again(batches: Vec<Forwarded>) -> Result<Coalesced, RewriteError> {
    coalesce_with(batches, Joins::SmallOrBuilt)
}

/// Whether [`coalesce_again`] could merge anything: two neighbours that may both join a
/// run. Lets a round of full-size batches skip it without copying their list.
pub fn worth_coalescing_again<'a>(mut batches: impl Iterator<Item = &'a Forwarded>) -> bool {
    let Some(mut previous) = batches.next() else { return false };
    batches.any(|batch| {
        let pair = Joins::SmallOrBuilt.admits(previous) && Joins::SmallOrBuilt.admits(batch);
        previous = batch;
        pair
    })
}

/// Which batches may join a run.
#[derive(Clone, Copy)]
enum Joins {
    Small,
    SmallOrBuilt,
}

impl Joins {
    fn admits(self, forwarded: &Forwarded) -> bool {
        let built = forwarded.source_offsets.is_some();
        let small = forwarded.batch.as_bytes().len() < SMALL_BATCH_BYTES;
        let size_ok = match self {
            Self::Small => small,
            Self::SmallOrBuilt => small || built,
        };
        size_ok && mergeable(&forwarded.batch)
    }
}

fn coalesce_with(batches: Vec<Forwarded>, joins: Joins) -> Result<Coalesced, RewriteError> {
    let input = batches.len();
    let mut out = Vec::with_capacity(input);
    let mut run: Vec<Forwarded> = Vec::new();
    let mut run_bytes = 0;
    for (taken, forwarded) in batches.into_iter().enumerate() {
        let batch = &forwarded.batch;
        let admitted = joins.admits(&forwarded);
        if forwarded.source_offsets.is_none() && admitted && !batch.crc_is_valid() {
            flush(&mut run, &mut out)?;
            let (base_offset, stored, computed) = (batch.base_offset(), batch.stored_crc(), batch.computed_crc());
            let corrupt = Some(RewriteError::Crc { base_offset, stored, computed });
            return Ok(Coalesced { merged: taken - out.len(), batches: out, corrupt });
        }
        let size = forwarded.batch.as_bytes().len();
        if !(admitted && run_bytes + size <= MAX_COALESCED_BYTES) {
            flush(&mut run, &mut out)?;
            run_bytes = 0;
        }
        if admitted {
            run_bytes += size;
            run.push(forwarded);
        } else {
            out.push(forwarded);
        }
    }
    flush(&mut run, &mut out)?;
    let merged = input - out.len();
    Ok(Coalesced { batches: out, merged, corrupt: None })
}

/// Whether a batch's records may be re-encoded into another batch (its size aside).
fn mergeable(batch: &RecordBatch) -> bool {
    let refused = attributes::CONTROL | attributes::LOG_APPEND_TIME | attributes::DELETE_HORIZON;
    batch.attributes() & refused == 0 && !matches!(batch.compression(), crate::protocol::batch::Compression::Unknown(_))
}

/// The codec of a merged batch: the first one a batch of the run is compressed with. A
/// producer sends a batch uncompressed where compression would make it larger (librdkafka
/// does so for tiny batches), so a partition written with lz4 holds lz4 and uncompressed
/// batches side by side; merged, they compress as the producer was configured to.
fn run_codec(run: &[Forwarded]) -> i16 {
    run.iter().map(|f| f.batch.attributes() & attributes::COMPRESSION_MASK).find(|&codec| codec != 0).unwrap_or(0)
}

/// Ends a run: one batch stays as it is, several become one.
fn flush(run: &mut Vec<Forwarded>, out: &mut Vec<Forwarded>) -> Result<(), RewriteError> {
    match run.len() {
        0 => {}
        1 => out.append(run),
        _ => {
            match merge(run)? {
                Some(merged) => out.push(merged),
                None => out.append(run),
            }
            run.clear();
        }
    }
    Ok(())
}

/// One batch holding every record of `run`, in order, with each record's source offset;
/// `None` when the records decompress to more than [`MAX_COALESCED_RECORDS_BYTES`].
fn merge(run: &[Forwarded]) -> Result<Option<Forwarded>, RewriteError> {
    let first = &run[0].batch;
    let mut encoded = Vec::new();
    let mut source_offsets: Vec<i64> = Vec::new();
    let mut base_timestamp = None;
    let mut max_timestamp = i64::MIN;
    for Forwarded { batch, source_offsets: rewritten, .. } in run {
        let base_offset = batch.base_offset();
        let codec = batch.compression();
        let corrupt =
            |(index, position, problem)| RewriteError::Corrupt { base_offset, codec, index, position, problem };
        let raw = match records_section(batch, MAX_COALESCED_RECORDS_BYTES.saturating_sub(encoded.len())) {
            Err(RewriteError::TooLarge { .. }) => return Ok(None),
            other => other?,
        };
        let records = parse_records(&raw, batch.records_count(), batch.last_offset_delta()).map_err(corrupt)?;
        for (index, record) in records.iter().enumerate() {
            let overflow = |problem| corrupt((index, record.position, problem));
            let at = batch
                .base_timestamp()
                .checked_add(record.timestamp_delta)
                .ok_or(overflow(Corruption::TimestampOverflow))?;
            let base = *base_timestamp.get_or_insert(at);
            max_timestamp = max_timestamp.max(at);
            // A batch the slow path rewrote names its records' source offsets; a forwarded one
            // has them as base offset + delta.
            let source = match rewritten {
                Some(offsets) => offsets.get(index).copied(),
                None => base_offset.checked_add(i64::from(record.offset_delta)),
            }
            .ok_or(overflow(Corruption::OffsetOverflow))?;
            let delta = at.checked_sub(base).ok_or(overflow(Corruption::TimestampOverflow))?;
            let offset_delta = i32::try_from(source_offsets.len()).map_err(|_| overflow(Corruption::OffsetOverflow))?;
            encode_record(&mut encoded, record, delta, offset_delta).ok_or(RewriteError::TooLarge {
                base_offset,
                codec,
                limit: MAX_RECORDS_BYTES,
            })?;
            source_offsets.push(source);
        }
    }
    let records_count = i32::try_from(source_offsets.len()).expect("at most MAX_COALESCED_BYTES of records");
    let (Some(base_timestamp), Some(&first_offset)) = (base_timestamp, source_offsets.first()) else {
        // Only empty batches (none get here: compaction's empty ones are dropped earlier).
        return Ok(None);
    };
    // Named by the first record's source offset, as errors and the offset map name it.
    let encoded = Encoded {
        base_offset: first_offset,
        records: &encoded,
        records_count,
        base_timestamp,
        max_timestamp,
        attributes: (first.attributes() & attributes::TRANSACTIONAL) | run_codec(run),
    };
    let batch = assemble(first, &encoded, MAX_RECORDS_BYTES)?;
    Ok(Some(Forwarded { batch, source_offsets: Some(source_offsets), path: BatchPath::Coalesced }))
}

#[cfg(test)]
mod tests;
