//! Which fetched batches are forwarded, and how their headers are rewritten for the target.
//!
//! Pure functions over batch views: no I/O. A fetched records blob is split into batches;
//! control batches (transaction markers) and batches of aborted transactions are dropped,
//! as a read_committed consumer would; batches wholly below the resume position are
//! skipped; a partial trailing batch ends the selection (it is fetched again next time).
//! A forwarded batch keeps its records byte for byte: only the base offset (a client
//! must produce with 0), the producer fields (the target knows kferry's producer, not the
//! source's), the transactional bit and the CRC change.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::protocol::batch::{attributes, BatchError, BatchItem, BatchIter, RecordBatch};

/// Why a fetched batch cannot be forwarded as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Compaction removed records but kept the offset range; Kafka refuses such a batch
    /// from a client ("Inconsistent batch offset range"). It must be renumbered.
    #[error("batch at offset {base_offset} holds {records} records over {span} offsets (compacted); it needs renumbering, which this build cannot do yet")]
    Compacted { base_offset: i64, records: i32, span: i64 },
    /// The target refuses the LogAppendTime attribute from a client.
    #[error("batch at offset {base_offset} carries LogAppendTime timestamps; rewriting them is not supported by this build yet")]
    LogAppendTime { base_offset: i64 },
}

/// The batches of one fetch that are to be forwarded, and where the next fetch starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub batches: Vec<RecordBatch>,
    /// The offset after the last batch looked at (forwarded or dropped).
    pub next_offset: i64,
    /// Batches dropped: transaction markers and aborted data.
    pub dropped: usize,
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
        check_forwardable(&batch)?;
        selection.batches.push(batch);
    }
    Ok(selection)
}

fn check_forwardable(batch: &RecordBatch) -> Result<(), ForwardError> {
    let span = i64::from(batch.last_offset_delta()) + 1;
    if i64::from(batch.records_count()) != span {
        return Err(ForwardError::Compacted { base_offset: batch.base_offset(), records: batch.records_count(), span });
    }
    if batch.has_log_append_time() {
        return Err(ForwardError::LogAppendTime { base_offset: batch.base_offset() });
    }
    Ok(())
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
    let mut patch = batch.to_patchable();
    let plain = batch.attributes() & !attributes::TRANSACTIONAL;
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
