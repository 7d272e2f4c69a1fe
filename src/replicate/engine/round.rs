//! One transaction round on the target: produce a set of partitions' batches, write the
//! offset-map segments they created, commit the flow's progress, and (with `exactly_once`)
//! end the transaction, all as one owned task so the scheduler keeps fetching meanwhile.
//!
//! Partitions are isolated inside a round. A batch refused for a transient reason (no
//! leader, NOT_ENOUGH_REPLICAS, a leader that moved) is sent again with the same sequence
//! after a metadata refresh, as Kafka's Java producer does; if the cause outlasts
//! [`TRANSIENT_BUDGET`] the partition is held back (its batches go back to the scheduler,
//! nothing of it is committed) and the round commits the others. A batch whose outcome is
//! unknown (a connection lost after the request was sent, a request timeout) may have been
//! written: it is retried up to [`UNKNOWN_BUDGET`] (the broker deduplicates a retry with the
//! same sequence), and if it never resolves the whole round is aborted, because committing
//! it would make a record visible that progress does not count. A batch the target refuses
//! for good stops only its partition. Producer-state errors abort the round.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::super::forward::{self, ForwardError, Stamp};
use super::super::offset_map::{OffsetMap, Segment};
use super::super::state;
use super::partition::{coalesce_round, Pending, SourcePartition};
use crate::client::{
    produce_outcomes, submit_produce, ClientError, Cluster, CommittedOffset, ConnectionError, GroupOffsets, Messenger,
    ProduceBatch, ProducerIdentity, TxnProtocol,
};
use crate::metrics::{BatchPath, RoundStep};
use crate::protocol::error_code::{ErrorCode, ResponseError};

/// How long a round retries a partition refused for a transient reason before it holds
/// the partition back and commits the rest.
pub(super) const TRANSIENT_BUDGET: Duration = Duration::from_secs(3);
/// How long a round retries a batch whose outcome is unknown before it aborts (a killed
/// broker's partitions need a new leader first: KRaft fences a silent broker after
/// `broker.session.timeout.ms`, 9 s by default).
pub(super) const UNKNOWN_BUDGET: Duration = Duration::from_secs(25);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Produce requests on the wire at once per target leader (the broker deduplicates the
/// last 5 batches per producer and partition, so a retried batch is still recognised).
const REQUESTS_IN_FLIGHT: usize = 5;
/// State records per batch: far below any `max.message.bytes` (a record is under 200 bytes).
const STATE_RECORDS_PER_BATCH: usize = 2_000;
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The first pause when every refusal was CONCURRENT_TRANSACTIONS: the leader found the
/// previous transaction still writing its markers (KIP-890), which takes milliseconds, and
/// the broker already waited for it before answering; with 50 ms the few rounds that meet
/// it set the latency's p99.
const FIRST_CONCURRENT_PAUSE: Duration = Duration::from_millis(10);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(800);

/// Everything a round needs, owned, so it runs as a task of its own.
pub(super) struct RoundPlan {
    pub(super) target: Arc<Cluster>,
    pub(super) producer: ProducerIdentity,
    /// `Some` with `exactly_once`: batches, segments and progress are one transaction.
    pub(super) transactional_id: Option<String>,
    pub(super) progress_group: String,
    /// Where this replicator's offset-map segments go: its shard's state partition.
    pub(super) state: StatePartition,
    pub(super) state_sequence: i32,
    pub(super) partitions: Vec<RoundPartition>,
}

/// The partition of the state topic a replicator writes (one per shard, so no other
/// producer's open transaction ever sits in front of its segments).
#[derive(Debug, Clone)]
pub(super) struct StatePartition {
    pub(super) topic: String,
    pub(super) partition: i32,
}

/// One partition's share of a round.
pub(super) struct RoundPartition {
    pub(super) source: SourcePartition,
    pub(super) target_topic: String,
    /// Batches with their sequence numbers, in order.
    pub(super) batches: Vec<(Pending, i32)>,
    /// Whether small batches may be merged (see [`coalesce_round`]).
    pub(super) may_coalesce: bool,
    /// Progress committed if every batch lands.
    pub(super) progress_to: i64,
    /// A start position not yet in the progress group: committed even if no batch lands,
    /// so a later failure never resolves `start` again (records written after kferry first
    /// placed the partition would be skipped).
    pub(super) unrecorded_start: Option<i64>,
    pub(super) source_end: i64,
    /// The partition's last offset-map segment before the round.
    pub(super) last_segment: Option<Segment>,
    /// Source starts of segments of an earlier incarnation of the source (before a reset),
    /// deleted from the state topic by this round.
    pub(super) retired: Vec<i64>,
}

/// What a round did, per partition, for the scheduler to book.
pub(super) struct RoundReport {
    pub(super) partitions: Vec<PartitionReport>,
    /// The state partition's next sequence number.
    pub(super) state_sequence: i32,
    /// Batches merged into others before producing.
    pub(super) coalesced: usize,
    /// How long each step the round took lasted, in order.
    pub(super) steps: Vec<(RoundStep, Duration)>,
    pub(super) result: Result<RoundDone, RoundError>,
}

/// A round that ended: committed, possibly without some partitions.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RoundDone {
    pub(super) transactions: u64,
    /// With transaction protocol V2: the producer identity of the next round (EndTxn
    /// bumped the epoch, so every sequence starts at 0 again).
    pub(super) next_producer: Option<ProducerIdentity>,
}

pub(super) struct PartitionReport {
    pub(super) source: SourcePartition,
    /// Batches the target acknowledged, with the target offset of their first record.
    pub(super) landed: Vec<(Pending, i64)>,
    /// Batches not written, in order, with their sequences.
    pub(super) returned: Vec<(Pending, i32)>,
    /// The progress committed for the partition by this round.
    pub(super) committed_to: Option<i64>,
    pub(super) failure: Option<PartitionFailure>,
}

/// Why a partition was left out of a round's commit.
#[derive(Debug, Clone)]
pub(super) enum PartitionFailure {
    /// A transient cause outlasted the round's retries: the partition is held back.
    Transient(ClientError),
    /// The target refuses the batch at `offset` for good. `built`: kferry built that batch
    /// (coalesced or rewritten) rather than forwarding it as it came.
    Refused { error: ClientError, code: ErrorCode, offset: i64, built: bool },
    /// The source batch at `offset` is corrupt (its CRC does not match its content).
    Corrupt(ForwardError),
}

/// Why a whole round failed.
#[derive(Debug, Clone)]
pub(super) enum RoundError {
    /// The producer was fenced: another instance owns the transactional id.
    Fenced(ClientError),
    /// The target lacks an API the round needs.
    Unsupported(ClientError),
    /// Anything else: the transaction is abandoned (the next InitProducerId aborts it).
    Abort(ClientError),
}

/// A batch on its way, stamped once for all its retries.
struct Outbound {
    pending: Pending,
    sequence: i32,
    stamped: Option<Bytes>,
}

/// How a send ended for a partition.
enum Failed {
    Transient(ClientError),
    /// The request may have been written.
    Unknown(ClientError),
    Refused(ClientError, ErrorCode, i64),
    ProducerState(ClientError),
    Fenced(ClientError),
    Unsupported(ClientError),
    Corrupt(ForwardError),
}

/// One target partition's queue during a round.
struct Work {
    topic: String,
    /// Resolved before each send (Produce v13+ names topics by id).
    topic_id: uuid::Uuid,
    partition: i32,
    queue: VecDeque<Outbound>,
    landed: Vec<(Pending, i64)>,
    failed: Option<Failed>,
}

struct Context {
    target: Arc<Cluster>,
    producer: ProducerIdentity,
    transactional_id: Option<String>,
}

/// Runs a round to its end; never panics on a broker's answer.
pub(super) async fn run(plan: RoundPlan) -> RoundReport {
    let RoundPlan { target, producer, transactional_id, progress_group, state, state_sequence, mut partitions } = plan;
    let context = Context { target, producer, transactional_id };
    let mut coalesced = 0;
    let mut works: Vec<Work> = partitions
        .iter_mut()
        .map(|p| Work {
            topic: p.target_topic.clone(),
            topic_id: uuid::Uuid::nil(),
            partition: p.source.1,
            queue: take_batches(p, &mut coalesced)
                .into_iter()
                .map(|(pending, sequence)| Outbound { pending, sequence, stamped: None })
                .collect(),
            landed: Vec::new(),
            failed: None,
        })
        .collect();
    let mut state_sequence = state_sequence;
    let mut steps = Steps::default();
    let result = async {
        // Whether the coordinator may hold an open transaction for this round.
        let mut begun = context.producer.protocol == TxnProtocol::V2;
        if let (Some(id), TxnProtocol::V1) = (&context.transactional_id, context.producer.protocol) {
            begun = steps.time(RoundStep::AddPartitions, add_partitions(&context, id, &mut works, &state)).await?;
        }
        steps.time(RoundStep::Produce, produce_with_retries(&context, &mut works)).await?;
        let segments = new_segments(&partitions, &works);
        let retired = retired_segments(&partitions);
        if !segments.is_empty() || !retired.is_empty() {
            let write = write_segments(&context, &state, state_sequence, &retired, &segments);
            state_sequence = steps.time(RoundStep::OffsetMap, write).await?;
        }
        let offsets = progress(&partitions, &works);
        let empty = works.iter().all(|w| w.landed.is_empty())
            && segments.is_empty()
            && retired.is_empty()
            && offsets.is_empty();
        let ending = match (empty, begun) {
            (false, _) => Ending::Commit,
            (true, true) => Ending::Abort,
            (true, false) => Ending::Nothing,
        };
        // One step after the other: sent side by side (AddOffsetsToTxn beside the batches,
        // the offset map beside the progress), rounds on 3 loaded brokers measured 2-4x
        // slower (BENCHMARKS.md, 2026-12-02 01:02 and 01:19). The likely cause: a 4.x
        // partition leader verifies each transactional batch with the coordinator
        // (KIP-890), and one that meets the coordinator mid-update is refused as
        // retriable, so the batch waits for a retry.
        if !offsets.is_empty() {
            let commit = async {
                add_offsets(&context, &progress_group).await?;
                commit_progress(&context, &progress_group, &offsets).await
            };
            steps.time(RoundStep::Progress, commit).await?;
        }
        if context.transactional_id.is_some() {
            steps.time(RoundStep::Commit, end(&context, ending)).await
        } else {
            end(&context, ending).await
        }
    }
    .await;
    let committed = result.is_ok();
    let reports =
        partitions.into_iter().zip(works).map(|(partition, work)| report(partition, work, committed)).collect();
    RoundReport { partitions: reports, state_sequence, coalesced, steps: steps.0, result }
}

/// A partition's batches for the round, small ones merged where allowed; counts the merged.
fn take_batches(partition: &mut RoundPartition, coalesced: &mut usize) -> Vec<(Pending, i32)> {
    let batches = std::mem::take(&mut partition.batches);
    if !partition.may_coalesce {
        return batches;
    }
    let (batches, merged) = coalesce_round(batches);
    *coalesced += merged;
    batches
}

/// The steps a round took and how long each lasted.
#[derive(Default)]
struct Steps(Vec<(RoundStep, Duration)>);

impl Steps {
    async fn time<T>(&mut self, step: RoundStep, call: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let outcome = call.await;
        self.0.push((step, started.elapsed()));
        outcome
    }
}

fn report(partition: RoundPartition, work: Work, committed: bool) -> PartitionReport {
    let Work { queue, landed, failed, .. } = work;
    let failure = match failed {
        Some(Failed::Transient(e)) => Some(PartitionFailure::Transient(e)),
        Some(Failed::Refused(error, code, offset)) => {
            let built = queue.front().is_some_and(|o| o.pending.forwarded.source_offsets.is_some());
            Some(PartitionFailure::Refused { error, code, offset, built })
        }
        Some(Failed::Corrupt(e)) => Some(PartitionFailure::Corrupt(e)),
        _ => None,
    };
    let mut returned: Vec<(Pending, i32)> = queue.into_iter().map(|o| (o.pending, o.sequence)).collect();
    if !committed {
        // Nothing of an abandoned round counts: every batch goes back, landed ones first.
        let mut all: Vec<(Pending, i32)> = Vec::with_capacity(landed.len() + returned.len());
        // Their sequences no longer matter: an aborted round ends with a new producer.
        all.extend(landed.into_iter().map(|(p, _)| (p, 0)));
        all.append(&mut returned);
        return PartitionReport {
            source: partition.source,
            landed: Vec::new(),
            returned: all,
            committed_to: None,
            failure,
        };
    }
    let committed_to = committed_offset(&partition, &landed, returned.is_empty());
    PartitionReport { source: partition.source, landed, returned, committed_to, failure }
}

/// Where a partition's committed progress stands after the round: everything if every
/// batch landed, else up to the last batch that did.
fn committed_offset(partition: &RoundPartition, landed: &[(Pending, i64)], all_landed: bool) -> Option<i64> {
    if all_landed {
        return Some(partition.progress_to);
    }
    landed.last().map(|(pending, _)| pending.source_next).or(partition.unrecorded_start)
}

/// Adds the round's partitions and the state partition to the transaction (protocol V1);
/// returns whether any were added (the transaction began). A partition the coordinator
/// refuses for good (no WRITE permission, a topic it does not know) is refused in the
/// round, as a Produce refusal would be, and the others are asked for again: the
/// coordinator adds all of a request or none.
async fn add_partitions(
    context: &Context,
    id: &str,
    works: &mut [Work],
    state: &StatePartition,
) -> Result<bool, RoundError> {
    // Bounded: every pass that does not end refuses at least one partition.
    loop {
        let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for work in works.iter().filter(|w| !w.queue.is_empty() && w.failed.is_none()) {
            partitions.entry(work.topic.clone()).or_default().push(work.partition);
        }
        if partitions.is_empty() {
            // A round that only commits progress (markers read past, a start position).
            return Ok(false);
        }
        partitions.entry(state.topic.clone()).or_default().push(state.partition);
        let refused =
            context.target.add_partitions_to_txn(id, context.producer, &partitions).await.map_err(classify_call)?;
        if refused.is_empty() {
            return Ok(true);
        }
        for error in refused {
            let ClientError::Partition { topic, partition, code, .. } = &error else { continue };
            let Some(work) = works.iter_mut().find(|w| &w.topic == topic && w.partition == *partition) else {
                // kferry's own state partition: the round cannot commit without it.
                return Err(RoundError::Abort(error));
            };
            let offset = work.queue.front().map_or(-1, |o| o.pending.source_base());
            work.failed = Some(Failed::Refused(error.clone(), *code, offset));
        }
    }
}

/// Sends every partition's batches, retrying transient and unknown failures per
/// partition, until each has landed, been held back or refused.
async fn produce_with_retries(context: &Context, works: &mut [Work]) -> Result<(), RoundError> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        let pending: Vec<usize> =
            (0..works.len()).filter(|&i| !works[i].queue.is_empty() && works[i].failed.is_none()).collect();
        if pending.is_empty() {
            return Ok(());
        }
        send_once(context, works, &pending).await;
        let mut retry = false;
        let mut only_concurrent = true;
        for &i in &pending {
            let work = &mut works[i];
            match work.failed.take() {
                None => {}
                Some(Failed::Fenced(e)) => return Err(RoundError::Fenced(e)),
                Some(Failed::Unsupported(e)) => return Err(RoundError::Unsupported(e)),
                Some(Failed::ProducerState(e)) => return Err(RoundError::Abort(e)),
                Some(Failed::Unknown(e)) if started.elapsed() >= UNKNOWN_BUDGET => return Err(RoundError::Abort(e)),
                Some(Failed::Unknown(e)) => {
                    tracing::debug!(topic = %work.topic, partition = work.partition, error = %e, "produce outcome unknown; retrying with the same sequence");
                    only_concurrent = false;
                    retry = true;
                }
                Some(Failed::Transient(e)) if started.elapsed() < TRANSIENT_BUDGET => {
                    tracing::debug!(topic = %work.topic, partition = work.partition, error = %e, "produce refused for now; retrying");
                    only_concurrent &= e.kafka_code().is_some_and(|c| c.0 == ResponseError::ConcurrentTransactions);
                    retry = true;
                }
                Some(final_failure) => work.failed = Some(final_failure),
            }
        }
        if retry {
            // The leader is right when it only waits for the previous transaction.
            if !only_concurrent {
                context.target.invalidate_metadata();
            }
            let first = if only_concurrent { FIRST_CONCURRENT_PAUSE } else { FIRST_RETRY_PAUSE };
            let pause = (first * 2u32.saturating_pow(attempt.min(6))).min(MAX_RETRY_PAUSE);
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

/// One pass: the partitions in `pending` grouped by their current leader, every leader
/// sent to at once.
async fn send_once(context: &Context, works: &mut [Work], pending: &[usize]) {
    let mut by_leader: BTreeMap<i32, (Arc<Messenger>, Vec<usize>)> = BTreeMap::new();
    for &i in pending {
        let work = &mut works[i];
        // One attempt each: this loop retries per partition, within its budgets.
        match context.target.topic_once(&work.topic).await {
            Ok(info) => work.topic_id = info.id,
            Err(e) => {
                work.failed = Some(classify_lookup(e));
                continue;
            }
        }
        match context.target.leader_once(&work.topic, work.partition).await {
            Ok((leader, _)) => {
                let node = leader.broker().node_id.unwrap_or(-1);
                by_leader.entry(node).or_insert_with(|| (leader, Vec::new())).1.push(i);
            }
            Err(e) => work.failed = Some(classify_lookup(e)),
        }
    }
    // Each leader gets its partitions' work moved in, and hands it back.
    let mut taken: Vec<Option<Work>> =
        works.iter_mut().map(|w| Some(std::mem::replace(w, Work::placeholder()))).collect();
    let sends = by_leader.into_values().map(|(leader, indices)| {
        let group: Vec<(usize, Work)> =
            indices.iter().map(|&i| (i, taken[i].take().expect("one leader each"))).collect();
        send_to_leader(context, leader, group)
    });
    let done = futures_util::future::join_all(sends).await;
    for (i, work) in done.into_iter().flatten() {
        taken[i] = Some(work);
    }
    for (slot, work) in works.iter_mut().zip(taken) {
        if let Some(work) = work {
            *slot = work;
        }
    }
}

impl Work {
    fn placeholder() -> Self {
        Self {
            topic: String::new(),
            topic_id: uuid::Uuid::nil(),
            partition: -1,
            queue: VecDeque::new(),
            landed: Vec::new(),
            failed: None,
        }
    }
}

/// Sends one leader's batches: each request carries at most one batch per partition and
/// up to [`REQUESTS_IN_FLIGHT`] requests are queued in order, so every partition's
/// sequence numbers reach the broker in order. A partition stops at its first failure;
/// its later batches in flight fail as a consequence and are sent again with it.
async fn send_to_leader(
    context: &Context,
    leader: Arc<Messenger>,
    mut group: Vec<(usize, Work)>,
) -> Vec<(usize, Work)> {
    let transactional_id = context.transactional_id.as_deref();
    // Per partition: how many of its queued batches are on the wire.
    let mut sent = vec![0usize; group.len()];
    let mut stopped = vec![false; group.len()];
    let mut in_flight = VecDeque::new();
    loop {
        while in_flight.len() < REQUESTS_IN_FLIGHT {
            let (members, requests) = next_request(context, &mut group, &mut sent, &mut stopped);
            if requests.is_empty() {
                break;
            }
            let protocol = context.producer.protocol;
            match submit_produce(&leader, transactional_id, protocol, &requests, PRODUCE_TIMEOUT).await {
                Ok(queued) => in_flight.push_back((members, requests, queued)),
                Err(e) => {
                    // Nothing of this request went out (connect or encode failed).
                    for &m in &members {
                        stopped[m] = true;
                        group[m].1.failed.get_or_insert(classify_unsent(e.clone()));
                    }
                    break;
                }
            }
        }
        let Some((members, requests, queued)) = in_flight.pop_front() else { return group };
        match queued.response().await {
            Ok((_, response)) => {
                let outcomes = produce_outcomes(response, &requests);
                for (&m, request) in members.iter().zip(&requests) {
                    let work = &mut group[m].1;
                    let outcome =
                        outcomes.iter().find(|o| o.topic == request.topic && o.partition == request.partition);
                    sent[m] -= 1;
                    match outcome.map(|o| &o.result) {
                        Some(Ok(base)) if work.failed.is_none() => {
                            let outbound = work.queue.pop_front().expect("a sent batch is queued");
                            work.landed.push((outbound.pending, *base));
                        }
                        // Behind a failed batch of the same partition: not written.
                        Some(_) if work.failed.is_some() => {}
                        Some(Err((code, message))) => {
                            stopped[m] = true;
                            let offset = work.queue.front().map_or(-1, |o| o.pending.source_base());
                            let error = ClientError::Partition {
                                broker: leader.broker().clone(),
                                api: "Produce",
                                topic: request.topic.clone(),
                                partition: request.partition,
                                code: *code,
                                message: message.clone(),
                            };
                            work.failed = Some(classify_produce(error, *code, offset));
                        }
                        _ => {
                            stopped[m] = true;
                            work.failed.get_or_insert(Failed::Unknown(ClientError::IncompleteResponse {
                                cluster: context.target.name().clone(),
                                what: "Produce",
                                missing: format!("topic {} partition {}", request.topic, request.partition),
                            }));
                        }
                    }
                }
            }
            Err(e) => {
                // The connection is gone: this request and every one behind it may or may
                // not have been written.
                let error = ClientError::from(e);
                let behind = in_flight.drain(..).flat_map(|(members, _, _)| members);
                for m in members.iter().copied().chain(behind) {
                    stopped[m] = true;
                    sent[m] = 0;
                    group[m].1.failed.get_or_insert(Failed::Unknown(error.clone()));
                }
                return group;
            }
        }
        let drained = in_flight.is_empty();
        if drained && (0..group.len()).all(|m| stopped[m] || group[m].1.queue.len() == sent[m]) {
            return group;
        }
    }
}

/// The next request of a leader: the next unsent batch of every partition still going.
fn next_request(
    context: &Context,
    group: &mut [(usize, Work)],
    sent: &mut [usize],
    stopped: &mut [bool],
) -> (Vec<usize>, Vec<ProduceBatch>) {
    let mut members = Vec::new();
    let mut requests = Vec::new();
    for (m, (_, work)) in group.iter_mut().enumerate() {
        if stopped[m] {
            continue;
        }
        let Some(outbound) = work.queue.get_mut(sent[m]) else { continue };
        let records = match stamped(context, outbound) {
            Ok(records) => records,
            Err(e) => {
                stopped[m] = true;
                if sent[m] == 0 {
                    work.failed = Some(Failed::Corrupt(e));
                }
                continue;
            }
        };
        requests.push(ProduceBatch {
            topic: work.topic.clone(),
            topic_id: work.topic_id,
            partition: work.partition,
            records,
        });
        members.push(m);
        sent[m] += 1;
    }
    (members, requests)
}

/// The batch as the target gets it: kferry's producer fields, the source CRC checked on
/// the way (a batch kferry built itself carries a CRC kferry computed).
fn stamped(context: &Context, outbound: &mut Outbound) -> Result<Bytes, ForwardError> {
    if let Some(bytes) = &outbound.stamped {
        return Ok(bytes.clone());
    }
    let stamp = Stamp {
        producer_id: context.producer.id,
        producer_epoch: context.producer.epoch,
        base_sequence: outbound.sequence,
        transactional: context.transactional_id.is_some(),
    };
    let forwarded = &outbound.pending.forwarded;
    let bytes = match forwarded.source_offsets {
        Some(_) => forward::stamp(&forwarded.batch, stamp),
        None => forward::stamp_verified(&forwarded.batch, stamp)?,
    };
    outbound.stamped = Some(bytes.clone());
    Ok(bytes)
}

/// The segments the round's landed batches created or extended, per partition.
fn new_segments(partitions: &[RoundPartition], works: &[Work]) -> Vec<(SourcePartition, String, Segment)> {
    let mut touched = Vec::new();
    for (partition, work) in partitions.iter().zip(works) {
        if work.landed.is_empty() {
            continue;
        }
        let mut map = OffsetMap::from_segments(partition.last_segment.into_iter().collect());
        for (pending, base) in &work.landed {
            record(&mut map, pending, *base);
        }
        for segment in map.segments() {
            touched.push((partition.source.clone(), partition.target_topic.clone(), *segment));
        }
    }
    touched
}

/// The state keys of the segments the round deletes.
fn retired_segments(partitions: &[RoundPartition]) -> Vec<(SourcePartition, i64)> {
    partitions.iter().flat_map(|p| p.retired.iter().map(|&start| (p.source.clone(), start))).collect()
}

/// Books a landed batch into an offset map (shared with the scheduler's own bookkeeping).
pub(super) fn record(map: &mut OffsetMap, pending: &Pending, target_base: i64) {
    let batch = &pending.forwarded.batch;
    match &pending.forwarded.source_offsets {
        None => map.record(batch.base_offset(), i64::from(batch.last_offset_delta()) + 1, target_base),
        // A rewritten or coalesced batch's records are dense on the target only.
        Some(offsets) => {
            for (i, &offset) in offsets.iter().enumerate() {
                map.record(offset, 1, target_base + i as i64);
            }
        }
    }
}

/// Writes the segments to the state topic in chunks well under any size limit; returns
/// the state partition's next sequence.
async fn write_segments(
    context: &Context,
    state: &StatePartition,
    mut sequence: i32,
    retired: &[(SourcePartition, i64)],
    segments: &[(SourcePartition, String, Segment)],
) -> Result<i32, RoundError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    // Deletions first: a new segment may reuse a retired one's key.
    let batches = retired
        .chunks(STATE_RECORDS_PER_BATCH)
        .map(|chunk| state::tombstone_batch(chunk, now))
        .chain(segments.chunks(STATE_RECORDS_PER_BATCH).map(|chunk| state::state_batch(chunk, now)));
    let mut queue = VecDeque::new();
    for batch in batches {
        let next = forward::next_sequence(sequence, batch.records_count());
        // kferry's own state: never counted as replicated, whatever its path says.
        let forwarded = forward::Forwarded { batch, source_offsets: Some(Vec::new()), path: BatchPath::Rewritten };
        queue.push_back(Outbound { pending: Pending { forwarded, source_next: 0 }, sequence, stamped: None });
        sequence = next;
    }
    let mut works = [Work {
        topic: state.topic.clone(),
        topic_id: uuid::Uuid::nil(),
        partition: state.partition,
        queue,
        landed: Vec::new(),
        failed: None,
    }];
    produce_with_retries(context, &mut works).await?;
    match works[0].failed.take() {
        None => Ok(sequence),
        // The state must land with the data it describes, or the round is abandoned.
        Some(Failed::Transient(e) | Failed::Refused(e, _, _) | Failed::Unknown(e) | Failed::ProducerState(e)) => {
            Err(RoundError::Abort(e))
        }
        Some(Failed::Fenced(e)) => Err(RoundError::Fenced(e)),
        Some(Failed::Unsupported(e)) => Err(RoundError::Unsupported(e)),
        Some(Failed::Corrupt(e)) => Err(RoundError::Abort(ClientError::IncompleteResponse {
            cluster: context.target.name().clone(),
            what: "kferry state batch",
            missing: e.to_string(),
        })),
    }
}

/// The progress to commit: partitions whose batches landed (some or all) or that only had
/// progress to commit.
fn progress(partitions: &[RoundPartition], works: &[Work]) -> GroupOffsets {
    partitions
        .iter()
        .zip(works)
        .filter_map(|(partition, work)| {
            let offset = committed_offset(partition, &work.landed, work.queue.is_empty())?;
            let metadata = state::progress_metadata(&partition.source.0, partition.source_end);
            Some((
                (partition.target_topic.clone(), partition.source.1),
                CommittedOffset { offset, metadata: Some(metadata) },
            ))
        })
        .collect()
}

/// Adds the progress group to the transaction (exactly_once with protocol V1 only: a V2
/// TxnOffsetCommit adds it).
async fn add_offsets(context: &Context, group: &str) -> Result<(), RoundError> {
    match (&context.transactional_id, context.producer.protocol) {
        (Some(id), TxnProtocol::V1) => {
            context.target.add_offsets_to_txn(id, context.producer, group).await.map_err(classify_call)
        }
        _ => Ok(()),
    }
}

/// Commits the partitions' progress (some): inside the transaction, or as plain offsets.
async fn commit_progress(context: &Context, group: &str, offsets: &GroupOffsets) -> Result<(), RoundError> {
    let target = &context.target;
    match &context.transactional_id {
        Some(id) => target.txn_offset_commit(id, context.producer, group, offsets).await,
        None => target.commit_group_offsets(group, offsets).await,
    }
    .map_err(classify_call)
}

/// How a round's transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    /// Nothing landed and nothing is committed (every partition held back or refused), but
    /// the coordinator may hold the transaction open: with V2 a Produce that reached a
    /// leader and failed may still have enrolled its partition, and an empty transaction
    /// may be aborted (it bumps the epoch) where committing it is INVALID_TXN_STATE.
    Abort,
    /// Nothing landed, and with V1 nothing was added: no transaction began.
    Nothing,
}

/// Ends the round: ends the transaction (exactly_once), or nothing is left to do.
async fn end(context: &Context, ending: Ending) -> Result<RoundDone, RoundError> {
    match &context.transactional_id {
        Some(id) if ending != Ending::Nothing => {
            let commit = ending == Ending::Commit;
            let next_producer = context.target.end_txn(id, context.producer, commit).await.map_err(classify_call)?;
            Ok(RoundDone { transactions: u64::from(commit), next_producer })
        }
        _ => Ok(RoundDone::default()),
    }
}

fn is_fencing(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::ProducerFenced
            | ResponseError::InvalidProducerEpoch
            | ResponseError::TransactionalIdAuthorizationFailed
    )
}

fn is_producer_state(code: ResponseError) -> bool {
    matches!(
        code,
        ResponseError::OutOfOrderSequenceNumber
            | ResponseError::UnknownProducerId
            | ResponseError::InvalidTxnState
            | ResponseError::TransactionAbortable
            | ResponseError::InvalidProducerIdMapping
    )
}

/// A transactional call (AddPartitionsToTxn, TxnOffsetCommit, EndTxn, OffsetCommit) failed.
fn classify_call(error: ClientError) -> RoundError {
    if matches!(error, ClientError::Connection(ConnectionError::UnsupportedApi { .. })) {
        return RoundError::Unsupported(error);
    }
    let code = match &error {
        ClientError::Transaction { code, .. }
        | ClientError::Partition { code, .. }
        | ClientError::Group { code, .. }
        | ClientError::Request { code, .. } => Some(code.0),
        ClientError::RetriesExhausted { last, .. } => match last.as_ref() {
            ClientError::Transaction { code, .. } | ClientError::Request { code, .. } => Some(code.0),
            _ => None,
        },
        _ => None,
    };
    match code {
        Some(code) if is_fencing(code) => RoundError::Fenced(error),
        _ => RoundError::Abort(error),
    }
}

/// A partition-level Produce error.
fn classify_produce(error: ClientError, code: ErrorCode, offset: i64) -> Failed {
    match code.0 {
        c if is_fencing(c) => Failed::Fenced(error),
        c if is_producer_state(c) => Failed::ProducerState(error),
        // The broker may have appended the batch before it failed or timed out.
        ResponseError::RequestTimedOut | ResponseError::NotEnoughReplicasAfterAppend => Failed::Unknown(error),
        _ if code.is_retriable() || code.needs_metadata_refresh() => Failed::Transient(error),
        _ => Failed::Refused(error, code, offset),
    }
}

/// No leader could be found for a partition: nothing was sent.
fn classify_lookup(error: ClientError) -> Failed {
    match &error {
        ClientError::UnknownTopic { .. } | ClientError::UnknownPartition { .. } => {
            let code = ErrorCode(ResponseError::UnknownTopicOrPartition);
            Failed::Refused(error, code, -1)
        }
        _ => Failed::Transient(error),
    }
}

/// A request that never went out (the connection could not be made).
fn classify_unsent(error: ClientError) -> Failed {
    match &error {
        ClientError::Connection(ConnectionError::UnsupportedApi { .. }) => Failed::Unsupported(error),
        _ => Failed::Transient(error),
    }
}
