//! One source partition's replication state, in one struct: where its progress stands on
//! the target, what has been fetched but not committed, its producer sequence, its offset
//! map, and whether it is stopped and why. The scheduler ([`super::Replicator`]) owns one
//! per replicated partition and asks it the rules: may it be fetched, what goes into the
//! next transaction round, what a round's outcome means for it. No I/O here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::super::coalesce::{coalesce_again, worth_coalescing_again};
use super::super::forward::{self, Forwarded};
use super::super::offset_map::{OffsetMap, Segment};
use crate::metrics::PartitionPhase;

/// A source partition (topic, partition).
pub(super) type SourcePartition = (String, i32);

/// First pause after a partition failed; doubled per failure up to [`MAX_RETRY_BACKOFF`].
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(200);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(5);
/// A partition stopped for good (a batch the target refuses, a corrupt source batch) is
/// tried again this often, so a fixed cause (an ACL, a topic config) heals without a restart.
pub(super) const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// A fetched batch waiting to be produced.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) forwarded: Forwarded,
    /// The source offset after this batch (and after any markers or aborted data the same
    /// fetch skipped right behind it is not counted here: see `PartitionState::fetch_position`).
    pub(super) source_next: i64,
}

impl Pending {
    pub(super) fn bytes(&self) -> usize {
        self.forwarded.batch.as_bytes().len()
    }

    /// The offsets of the source this batch carries, as (base, span) runs for the offset map.
    pub(super) fn source_base(&self) -> i64 {
        self.forwarded.batch.base_offset()
    }
}

/// Merges runs of small batches of one round into one batch each, across the fetches they
/// came in (batches a fetch already coalesced join again): at a low rate every fetch
/// brings a batch or two, and a round producing each on
/// its own pays a Produce round trip per five of them (a request carries one batch per
/// partition). A merged batch takes the first one's sequence (the records, and so the
/// sequences they use, are the same) and the last one's next source offset. Returns the
/// batches and how many were merged into others; on any doubt about a batch (content that
/// does not decode, a CRC that does not match) the batches go as they are, and stamping
/// reports the damage.
pub(super) fn coalesce_round(batches: Vec<(Pending, i32)>) -> (Vec<(Pending, i32)>, usize) {
    if !worth_coalescing_again(batches.iter().map(|(pending, _)| &pending.forwarded)) {
        return (batches, 0);
    }
    let forwarded: Vec<Forwarded> = batches.iter().map(|(pending, _)| pending.forwarded.clone()).collect();
    let merged = match coalesce_again(forwarded) {
        Ok(coalesced) if coalesced.corrupt.is_none() && coalesced.merged > 0 => coalesced,
        _ => return (batches, 0),
    };
    let mut inputs = batches.into_iter().peekable();
    let mut out = Vec::with_capacity(merged.batches.len());
    for forwarded in merged.batches {
        let wanted = i64::from(forwarded.batch.records_count().max(0));
        let (first, sequence) = inputs.next().expect("every output comes from at least one input");
        let (mut records, mut source_next) =
            (i64::from(first.forwarded.batch.records_count().max(0)), first.source_next);
        while records < wanted {
            let Some((next, _)) = inputs.next() else { break };
            records += i64::from(next.forwarded.batch.records_count().max(0));
            source_next = next.source_next;
        }
        out.push((Pending { forwarded, source_next }, sequence));
    }
    (out, merged.merged)
}

/// Why a partition is not replicating right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stall {
    /// What kind of stop this is (the `reason` label of the partition metrics).
    pub(super) phase: PartitionPhase,
    pub(super) reason: String,
    pub(super) retry_at: Instant,
    /// Failures in a row; sets the backoff of transient stalls.
    pub(super) failures: u32,
}

#[derive(Debug)]
pub(super) struct PartitionState {
    pub(super) target_topic: String,
    /// The source topic's id when the partition was positioned: a different id later means
    /// the topic was deleted and recreated.
    pub(super) source_topic_id: uuid::Uuid,
    /// The next source offset as committed in the progress group on the target.
    pub(super) committed: i64,
    /// False while `committed` is only a resolved start position (`start: latest`, a
    /// timestamp) not yet written to the progress group: the next round commits it, so a
    /// later failure never resolves the start again.
    pub(super) committed_on_target: bool,
    /// The next source offset to fetch. Everything between `committed` and here is in
    /// `buffered`, in the round in flight, or was dropped (markers, aborted data).
    pub(super) fetch_position: i64,
    /// Fetched batches, in order, not yet handed to a round.
    pub(super) buffered: VecDeque<Pending>,
    pub(super) buffered_bytes: usize,
    /// A fetch for this partition is on the wire (its answer is only used if it was asked
    /// at the current `fetch_position`).
    pub(super) fetching: bool,
    /// A transaction round holding this partition's batches is in flight.
    pub(super) in_round: bool,
    /// The next producer sequence number on the target partition for the current producer.
    pub(super) next_sequence: i32,
    pub(super) offset_map: OffsetMap,
    /// The source's high watermark in the last fetch answer.
    pub(super) source_end: i64,
    /// The source's last stable offset in the last fetch answer: the end read_committed
    /// consumers see, against which lag is measured.
    pub(super) stable_end: i64,
    /// The source's log start offset in the last fetch answer: offset-map segments below
    /// it are pruned (see [`PartitionState::prune_offset_map`]).
    pub(super) source_log_start: i64,
    pub(super) stall: Option<Stall>,
    /// Small batches may be coalesced; cleared when the target refused a coalesced batch
    /// as too large.
    pub(super) coalesce: bool,
    /// The slow path was logged once for this partition.
    pub(super) slow_path_reported: bool,
    /// The target refused a batch with NOT_ENOUGH_REPLICAS and none has landed since. A
    /// transaction that touched the partition then cannot end (its marker cannot be
    /// written), whatever later refusals (CONCURRENT_TRANSACTIONS) say.
    pub(super) short_of_replicas: bool,
    /// Source starts of offset-map segments of an earlier incarnation of the source
    /// (before a reset), to be deleted (tombstoned) in the state topic by the next round.
    pub(super) retired_segments: Vec<i64>,
}

impl PartitionState {
    pub(super) fn new(target_topic: String, source_topic_id: uuid::Uuid, start: i64) -> Self {
        Self {
            target_topic,
            source_topic_id,
            committed: start,
            committed_on_target: false,
            fetch_position: start,
            buffered: VecDeque::new(),
            buffered_bytes: 0,
            fetching: false,
            in_round: false,
            next_sequence: 0,
            offset_map: OffsetMap::default(),
            source_end: start,
            stable_end: start,
            source_log_start: 0,
            stall: None,
            coalesce: true,
            slow_path_reported: false,
            short_of_replicas: false,
            retired_segments: Vec::new(),
        }
    }

    /// A partition whose progress was read back from the target.
    pub(super) fn resumed(target_topic: String, next_offset: i64, source_end: Option<i64>) -> Self {
        let mut state = Self::new(target_topic, uuid::Uuid::nil(), next_offset);
        state.committed_on_target = true;
        state.source_end = source_end.unwrap_or(next_offset);
        state.stable_end = state.source_end;
        state
    }

    fn stalled_now(&self, now: Instant) -> bool {
        self.stall.as_ref().is_some_and(|s| s.retry_at > now)
    }

    /// Whether a fetch may be sent for this partition now, with `room` bytes left in the
    /// flow's buffer and `cap` the most one partition may hold.
    pub(super) fn wants_fetch(&self, now: Instant, cap: usize) -> bool {
        !self.fetching && !self.stalled_now(now) && self.buffered_bytes < cap
    }

    /// Takes the fetched batches in. `requested_at` is the offset the fetch asked from: an
    /// answer to a fetch made before the position moved back (a rewind) is ignored.
    pub(super) fn take_fetched(
        &mut self,
        requested_at: i64,
        batches: Vec<Forwarded>,
        next_offset: i64,
        source_end: i64,
        source_log_start: i64,
    ) -> bool {
        self.fetching = false;
        if requested_at != self.fetch_position {
            return false;
        }
        for forwarded in batches {
            let source_next = forwarded.batch.last_offset() + 1;
            let pending = Pending { forwarded, source_next };
            self.buffered_bytes += pending.bytes();
            self.buffered.push_back(pending);
        }
        self.fetch_position = self.fetch_position.max(next_offset);
        self.source_end = source_end;
        self.source_log_start = self.source_log_start.max(source_log_start);
        true
    }

    /// Retires the offset-map segments that lie wholly below the source's log start, to be
    /// tombstoned in the state topic by the next round (see `retired_segments`). With
    /// exactly_once every round's commit marker starts a new segment per partition, so
    /// without this the map grows by one segment per round for ever. No translation needs
    /// them: a source group positioned below the log start is out of range on the source
    /// (it resets), and one at or above it translates through the segments kept; the target
    /// copy of those records goes with the retention topic sync copies. Called when the
    /// partition joins a round, so what a round tombstones is what it was given.
    pub(super) fn prune_offset_map(&mut self) {
        let pruned = self.offset_map.remove_below(self.source_log_start);
        self.retired_segments.extend(pruned);
    }

    /// Whether the next round has something to do for this partition: batches to produce,
    /// or progress to commit (markers or aborted data read past, a fresh start position).
    pub(super) fn has_work(&self, now: Instant) -> bool {
        !self.in_round
            && !self.stalled_now(now)
            && (!self.buffered.is_empty() || self.fetch_position > self.committed || !self.committed_on_target)
    }

    /// Moves up to `max_bytes` of batches (at least one) into a round, with their
    /// sequence numbers, and says where progress stands if they all land.
    pub(super) fn take_for_round(&mut self, max_bytes: usize) -> (Vec<(Pending, i32)>, i64) {
        let mut taken = Vec::new();
        let mut bytes = 0;
        while let Some(pending) = self.buffered.front() {
            if !taken.is_empty() && bytes + pending.bytes() > max_bytes {
                break;
            }
            let pending = self.buffered.pop_front().expect("front exists");
            bytes += pending.bytes();
            self.buffered_bytes -= pending.bytes();
            let sequence = self.next_sequence;
            self.next_sequence = forward::next_sequence(sequence, pending.forwarded.batch.records_count());
            taken.push((pending, sequence));
        }
        // Markers or aborted data after the last buffered batch are covered too, but only
        // once every fetched batch is in the round.
        let progress_to = match (self.buffered.front(), taken.last()) {
            (Some(next), _) => next.source_base().min(self.fetch_position),
            (None, _) => self.fetch_position,
        };
        self.in_round = true;
        (taken, progress_to)
    }

    /// Puts batches a round did not land back in front of the buffer, in order, with the
    /// sequence of the first of them as the next one (it was never written).
    pub(super) fn give_back(&mut self, batches: Vec<(Pending, i32)>) {
        if let Some((_, sequence)) = batches.first() {
            self.next_sequence = *sequence;
        }
        for (pending, _) in batches.into_iter().rev() {
            self.buffered_bytes += pending.bytes();
            self.buffered.push_front(pending);
        }
    }

    /// Books a batch the target acknowledged at `target_base`.
    pub(super) fn landed(&mut self, pending: &Pending, target_base: i64) {
        self.short_of_replicas = false;
        super::round::record(&mut self.offset_map, pending, target_base);
    }

    /// The round committed progress up to `next_offset`.
    pub(super) fn committed_to(&mut self, next_offset: i64) {
        self.committed = self.committed.max(next_offset);
        self.committed_on_target = true;
        self.stall = None;
    }

    /// Stops the partition for a while: with a growing backoff for a transient cause
    /// (no leader, the target unavailable), for [`REFUSED_RETRY`] when an operator must
    /// act. Returns whether this is news (the first failure in a row, or a different
    /// reason), so the caller logs it once.
    pub(super) fn stop(&mut self, phase: PartitionPhase, reason: String, now: Instant) -> bool {
        let needs_operator = !matches!(phase, PartitionPhase::WaitingForLeader | PartitionPhase::TargetUnavailable);
        let failures = self.stall.as_ref().map_or(0, |s| s.failures) + 1;
        let news = self.stall.as_ref().is_none_or(|s| s.reason != reason);
        let wait = if needs_operator {
            REFUSED_RETRY
        } else {
            (FIRST_RETRY_BACKOFF * 2u32.saturating_pow(failures.min(8) - 1)).min(MAX_RETRY_BACKOFF)
        };
        self.stall = Some(Stall { phase, reason, retry_at: now + wait, failures });
        news
    }

    /// Forgets everything fetched but not committed: the next fetch starts at `committed`.
    pub(super) fn rewind(&mut self) {
        self.buffered.clear();
        self.buffered_bytes = 0;
        self.fetch_position = self.committed;
    }

    /// Starts the partition again at `offset` of a source that was reset: what was fetched
    /// is dropped, the new start is committed with the next round, and the offset map
    /// starts afresh (the old offsets now name other records). The old segments stay in
    /// the state topic until they are overwritten; see `retired_segments`.
    pub(super) fn restart_at(&mut self, offset: i64) {
        self.retired_segments.extend(self.offset_map.segments().iter().map(|s| s.source_start));
        self.offset_map = OffsetMap::default();
        self.committed = offset;
        self.committed_on_target = false;
        self.stall = None;
        self.rewind();
    }

    /// The last offset-map segment, from which a round's new records continue.
    pub(super) fn last_segment(&self) -> Option<Segment> {
        self.offset_map.segments().last().copied()
    }
}

#[cfg(test)]
mod tests;
