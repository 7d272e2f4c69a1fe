//! Which fetched batches are forwarded, and how their headers are rewritten for the target.
//!
//! Pure functions over batch views: no I/O. A fetched records blob is split into batches;
//! control batches (transaction markers) and batches of aborted transactions are dropped,
//! as a read_committed consumer would; batches wholly below the resume position are
//! skipped; a partial trailing batch ends the selection (it is fetched again next time).
//! A forwarded batch keeps its records byte for byte: only the base offset (a client
//! must produce with 0), the producer fields (the target knows kferry's producer, not the
//! source's), the transactional bit and the CRC change. Batches the target would refuse as
//! they are (compacted, LogAppendTime) take the slow path in [`super::rewrite`].

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use super::rewrite::{needs_rewrite, rewrite, RewriteError};
use crate::metrics::BatchPath;
use crate::protocol::batch::{attributes, BatchError, BatchItem, BatchIter, PatchedBatch, RecordBatch};

/// Why a fetched batch cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The slow path could not rewrite a batch the target would refuse as it is.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
}

/// A batch to forward and the source offsets of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub batch: RecordBatch,
    /// `None`: the records are the batch's dense source offsets (the fast path). `Some`:
    /// the batch was rewritten (compacted, LogAppendTime) and record `i` came from
    /// source offset `source_offsets[i]`.
    pub source_offsets: Option<Vec<i64>>,
    /// How the batch was made, for the metrics (`kferry_batches_replicated_total`).
    pub path: BatchPath,
}

/// The batches of one fetch that are to be forwarded, and where the next fetch starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub batches: Vec<Forwarded>,
    /// The offset after the last batch looked at (forwarded or dropped).
    pub next_offset: i64,
    /// Batches dropped: transaction markers, aborted data, batches compaction emptied.
    pub dropped: usize,
    /// Batches that took the slow path (rewritten records).
    pub rewritten: usize,
}

/// Selects what to forward from `records` fetched at `resume` (READ_COMMITTED), given
/// the response's aborted transactions as (producer id, first offset).
pub fn select(records: Bytes, resume: i64, aborted: &[(i64, i64)]) -> Result<Selection, ForwardError> {
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec();
    aborted.sort_by_key(|&(_, first)| first);
    let mut pending = aborted.into_iter().peekable();
    let mut aborting: BTreeSet<i64> = BTreeSet::new();
    let mut selection = Selection { next_offset: resume, ..Selection::default() };
    for item in BatchIter::new(records) {
        let batch = match item? {
            BatchItem::Batch(batch) => batch,
            BatchItem::Partial { .. } => break,
        };
        if batch.last_offset() < resume {
            continue;
        }
        selection.next_offset = batch.last_offset() + 1;
        // The aborted list names each aborted transaction by its first offset: from there
        // on, that producer's transactional batches are dropped until its abort marker.
        while let Some(&(producer, _)) = pending.peek().filter(|&&(_, first)| first <= batch.last_offset()) {
            aborting.insert(producer);
            pending.next();
        }
        if batch.is_control() {
            aborting.remove(&batch.producer_id());
            selection.dropped += 1;
            continue;
        }
        if batch.is_transactional() && aborting.contains(&batch.producer_id()) {
            selection.dropped += 1;
            continue;
        }
        if !needs_rewrite(&batch) {
            selection.batches.push(Forwarded { batch, source_offsets: None, path: BatchPath::Fast });
            continue;
        }
        // The slow path: the target refuses this batch as it is (compaction left gaps in
        // its offsets, or its timestamps are LogAppendTime).
        match rewrite(&batch)? {
            Some(rewritten) => {
                selection.rewritten += 1;
                selection.batches.push(Forwarded {
                    batch: rewritten.batch,
                    source_offsets: Some(rewritten.source_offsets),
                    path: BatchPath::Rewritten,
                });
            }
            None => selection.dropped += 1,
        }
    }
    Ok(selection)
}

/// kferry's producer fields for one forwarded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    /// Whether the batch is part of kferry's transaction on the target.
    pub transactional: bool,
}

/// The bytes to produce for `batch`: base offset 0, kferry's producer fields, the
/// transactional bit as `stamp` says, and a fresh CRC. The records are not touched.
pub fn stamp(batch: &RecordBatch, stamp: Stamp) -> Bytes {
    apply(batch.to_patchable(), batch.attributes(), stamp)
}

/// [`stamp`] for a batch as it came from the source, checking its CRC-32C on the way: the
/// records are read once, for the source CRC and the new one together (the CRC of the
/// header part before and after the patch, combined with the records' CRC). A corrupt
/// batch is refused instead of reaching the target with a fresh, valid CRC.
pub fn stamp_verified(batch: &RecordBatch, stamp: Stamp) -> Result<Bytes, ForwardError> {
    let records_crc = batch.records_crc();
    let computed = batch.crc_with_records_crc(records_crc);
    if computed != batch.stored_crc() {
        let base_offset = batch.base_offset();
        return Err(RewriteError::Crc { base_offset, stored: batch.stored_crc(), computed }.into());
    }
    let mut patch = batch.to_patchable();
    let plain = batch.attributes() & !attributes::TRANSACTIONAL;
    let attributes = if stamp.transactional { plain | attributes::TRANSACTIONAL } else { plain };
    patch
        .set_base_offset(0)
        .set_producer(stamp.producer_id, stamp.producer_epoch, stamp.base_sequence)
        .set_attributes(attributes);
    Ok(patch.finish_with_records_crc(records_crc).into_bytes())
}

/// [`stamp`], in place when nothing else holds the batch's bytes (a batch the slow path or
/// coalescing built): no copy. A batch sharing its bytes (a slice of a fetch answer) is
/// copied, as by [`stamp`].
pub fn stamp_owned(batch: RecordBatch, stamp: Stamp) -> Bytes {
    let attributes = batch.attributes();
    let bytes = match batch.into_bytes().try_into_mut() {
        Ok(unique) => unique,
        Err(shared) => BytesMut::from(&shared[..]),
    };
    apply(PatchedBatch::from_batch_bytes(bytes), attributes, stamp)
}

fn apply(mut patch: PatchedBatch, attributes: i16, stamp: Stamp) -> Bytes {
    let plain = attributes & !attributes::TRANSACTIONAL;
    let attributes = if stamp.transactional { plain | attributes::TRANSACTIONAL } else { plain };
    patch
        .set_base_offset(0)
        .set_producer(stamp.producer_id, stamp.producer_epoch, stamp.base_sequence)
        .set_attributes(attributes);
    patch.finish().into_bytes()
}

/// The sequence number after a batch of `records` records starting at `sequence`
/// (Kafka's sequences wrap from i32::MAX to 0).
pub fn next_sequence(sequence: i32, records: i32) -> i32 {
    let next = i64::from(sequence) + i64::from(records);
    i32::try_from(next % (i64::from(i32::MAX) + 1)).expect("reduced into i32 range")
}

#[cfg(test)]
mod tests;
