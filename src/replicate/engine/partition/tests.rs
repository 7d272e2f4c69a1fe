//! The scheduler's per-partition rules, without brokers: what may be fetched, what a round
//! takes, how a round's outcome is booked, how failures back off.

use std::time::{Duration, Instant};

use super::*;
use crate::protocol::records::{build_batch, KeyValueRef};

/// A batch of `count` records at source offset `base`.
fn pending(base: i64, count: usize) -> Forwarded {
    let records: Vec<KeyValueRef<'_>> = (0..count).map(|_| (Some(&b"k"[..]), Some(&b"v"[..]))).collect();
    let built = build_batch(&records, 1_000);
    let mut patch = built.to_patchable();
    patch.set_base_offset(base);
    Forwarded { batch: patch.finish(), source_offsets: None, path: crate::metrics::BatchPath::Fast }
}

fn partition() -> PartitionState {
    PartitionState::new("t".into(), uuid::Uuid::nil(), 100)
}

#[test]
fn a_fresh_start_position_is_work_until_committed() {
    let mut p = partition();
    let now = Instant::now();
    assert!(p.has_work(now), "a resolved start is committed by the next round");
    let (batches, progress_to) = p.take_for_round(1 << 20);
    assert!(batches.is_empty());
    assert_eq!(progress_to, 100);
    assert!(!p.has_work(now), "in a round");
    p.in_round = false;
    p.committed_to(progress_to);
    assert!(!p.has_work(now), "nothing left once committed");
}

#[test]
fn markers_read_past_are_committed_without_data() {
    let mut p = partition();
    p.committed_to(100);
    // A fetch that found only an abort marker and aborted data up to 126.
    assert!(p.take_fetched(100, Vec::new(), 126, 126, 0));
    assert!(p.has_work(Instant::now()), "progress to commit");
    let (batches, progress_to) = p.take_for_round(1 << 20);
    assert!(batches.is_empty());
    assert_eq!(progress_to, 126);
}

#[test]
fn batches_get_consecutive_sequences_and_return_with_theirs() {
    let mut p = partition();
    p.committed_to(100);
    assert!(p.take_fetched(100, vec![pending(100, 3), pending(103, 2)], 106, 106, 0));
    let (batches, progress_to) = p.take_for_round(1 << 20);
    assert_eq!(batches.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [0, 3]);
    assert_eq!(progress_to, 106, "the marker at 105 is covered");
    assert_eq!(p.next_sequence, 5);
    // The second batch did not land: it comes back with its sequence.
    let mut batches = batches;
    let second = batches.pop().unwrap();
    p.in_round = false;
    p.landed(&batches[0].0, 0);
    p.committed_to(batches[0].0.source_next);
    p.give_back(vec![second]);
    assert_eq!(p.committed, 103);
    assert_eq!(p.next_sequence, 3, "the sequence of the batch never written");
    assert_eq!(p.buffered.len(), 1);
    assert_eq!(p.offset_map.translate(101), Some(1));
}

#[test]
fn a_round_takes_at_most_its_share_but_always_one_batch() {
    let mut p = partition();
    assert!(p.take_fetched(100, vec![pending(100, 1), pending(101, 1), pending(102, 1)], 103, 103, 0));
    let one = p.buffered[0].bytes();
    let (batches, progress_to) = p.take_for_round(one);
    assert_eq!(batches.len(), 1);
    assert_eq!(progress_to, 101, "progress only up to the next batch left behind");
    p.in_round = false;
    let (batches, _) = p.take_for_round(1);
    assert_eq!(batches.len(), 1, "one batch even over the share");
}

#[test]
fn an_answer_to_a_fetch_made_before_a_rewind_is_ignored() {
    let mut p = partition();
    p.committed_to(100);
    assert!(p.take_fetched(100, vec![pending(100, 5)], 105, 105, 0));
    p.fetching = true;
    p.rewind();
    assert_eq!(p.fetch_position, 100);
    assert!(!p.take_fetched(105, vec![pending(105, 5)], 110, 110, 0), "asked at 105, the partition is at 100 now");
    assert!(p.buffered.is_empty());
    assert!(!p.fetching);
}

#[test]
fn transient_failures_back_off_and_refusals_wait_for_an_operator() {
    let mut p = partition();
    let now = Instant::now();
    assert!(p.stop(PartitionPhase::TargetUnavailable, "NOT_ENOUGH_REPLICAS".into(), now), "news the first time");
    assert!(
        !p.stop(PartitionPhase::TargetUnavailable, "NOT_ENOUGH_REPLICAS".into(), now),
        "the same cause is not logged again"
    );
    let stall = p.stall.clone().unwrap();
    assert_eq!(stall.failures, 2);
    assert_eq!(stall.retry_at - now, Duration::from_millis(400));
    assert!(!p.wants_fetch(now, 1 << 20) && !p.has_work(now));
    assert!(p.wants_fetch(now + Duration::from_secs(1), 1 << 20), "tried again after the backoff");
    for _ in 0..20 {
        p.stop(PartitionPhase::TargetUnavailable, "NOT_ENOUGH_REPLICAS".into(), now);
    }
    assert_eq!(p.stall.clone().unwrap().retry_at - now, Duration::from_secs(5), "capped");
    assert!(p.stop(PartitionPhase::TargetRefused, "MESSAGE_TOO_LARGE".into(), now));
    assert_eq!(p.stall.clone().unwrap().retry_at - now, REFUSED_RETRY);
    p.committed_to(100);
    assert!(p.stall.is_none(), "a commit clears the stall");
}

#[test]
fn a_full_buffer_stops_fetching() {
    let mut p = partition();
    assert!(p.take_fetched(100, vec![pending(100, 50)], 150, 150, 0));
    let held = p.buffered_bytes;
    let now = Instant::now();
    assert!(!p.wants_fetch(now, held), "at the cap");
    assert!(p.wants_fetch(now, held + 1));
}

#[test]
fn a_source_reset_restarts_the_map_and_retires_the_old_segments() {
    let mut p = partition();
    assert!(p.take_fetched(100, vec![pending(100, 5)], 105, 105, 0));
    let (batches, _) = p.take_for_round(1 << 20);
    p.in_round = false;
    p.landed(&batches[0].0, 0);
    p.committed_to(105);
    p.restart_at(0);
    assert_eq!((p.committed, p.fetch_position, p.committed_on_target), (0, 0, false));
    assert!(p.offset_map.segments().is_empty());
    assert_eq!(p.retired_segments, [100]);
}

#[test]
fn a_round_merges_small_batches_of_several_fetches_and_keeps_their_numbering() {
    let mut p = partition();
    p.committed_to(100);
    // Three fetches of one small batch each; a marker at 103 between the first two.
    assert!(p.take_fetched(100, vec![pending(100, 3)], 104, 104, 0));
    assert!(p.take_fetched(104, vec![pending(104, 2)], 106, 106, 0));
    assert!(p.take_fetched(106, vec![pending(106, 1)], 107, 107, 0));
    let (batches, progress_to) = p.take_for_round(1 << 20);
    assert_eq!(batches.len(), 3);
    let (merged, count) = coalesce_round(batches);
    assert_eq!(count, 2, "three batches became one");
    assert_eq!(merged.len(), 1);
    let (pending, sequence) = &merged[0];
    assert_eq!(*sequence, 0, "the first batch's sequence");
    assert_eq!(pending.forwarded.batch.records_count(), 6, "the records the sequences were counted for");
    assert_eq!(pending.source_next, 107);
    assert_eq!(
        pending.forwarded.source_offsets.as_deref(),
        Some(&[100, 101, 102, 104, 105, 106][..]),
        "the marker's offset stays a gap"
    );
    assert_eq!(progress_to, 107);
    // Landed at target offset 50: the map knows each record's place.
    p.in_round = false;
    p.landed(pending, 50);
    assert_eq!(p.offset_map.translate(104), Some(53));
    assert_eq!(p.offset_map.translate(106), Some(55));
}

#[test]
fn a_round_of_one_batch_or_large_batches_is_left_alone() {
    let single = vec![(Pending { forwarded: pending(0, 2), source_next: 2 }, 7)];
    let (out, merged) = coalesce_round(single);
    assert_eq!((out.len(), merged, out[0].1), (1, 0, 7));
    let big = |base: i64| {
        let value = vec![b'x'; 8 * 1024];
        let built = build_batch(&[(None, Some(&value[..]))], 1_000);
        let mut patch = built.to_patchable();
        patch.set_base_offset(base);
        Pending {
            forwarded: Forwarded { batch: patch.finish(), source_offsets: None, path: crate::metrics::BatchPath::Fast },
            source_next: base + 1,
        }
    };
    let (out, merged) = coalesce_round(vec![(big(0), 0), (big(1), 1)]);
    assert_eq!(merged, 0);
    assert_eq!(out.iter().map(|(p, s)| (p.source_next, *s)).collect::<Vec<_>>(), [(1, 0), (2, 1)]);
}
