//! Fetching from the source: one fetch in flight per source broker, each in its own task
//! with its own incremental fetch session (KIP-227), so an idle or unreachable broker never
//! delays the others. The scheduler decides what each broker is asked for; this module
//! sends the request and keeps each broker's session and backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::coalesce::{coalesce, Coalesced};
use super::super::forward;
use super::super::rewrite::RewriteError;
use super::partition::SourcePartition;
use crate::client::{
    ClientError, Cluster, FetchSession, FetchedPartition, Isolation, PartitionFetch, PartitionFetched,
};
use crate::metrics::{PartitionPhase, Probe, Side};
use crate::protocol::batch::{BatchItem, BatchIter};
use crate::protocol::error_code::ResponseError;

/// How long a Fetch waits for data when the source has none. While a broker waits, the
/// others and the target side go on: this bounds only how quickly an idle broker's
/// partitions notice new data if its session were lost, not latency.
pub(super) const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long after its last failed fetch a broker still makes its cluster unreachable.
const FAILING_FOR: Duration = Duration::from_secs(30);

/// What one source broker's fetch brought back.
pub(super) struct FetchAnswer {
    pub(super) broker: i32,
    pub(super) session: FetchSession,
    /// What was asked, per partition: answers are matched to the offset they were asked at.
    pub(super) requested: Vec<PartitionFetch>,
    /// What it reserved of the flow's rate limit (its `max_bytes`, 0 without a limit).
    pub(super) reserved: usize,
    pub(super) result: Result<Vec<PartitionFetched>, ClientError>,
}

/// One source broker as the scheduler sees it.
#[derive(Debug, Default)]
pub(super) struct BrokerFetcher {
    /// `None` while a fetch is in flight (the task owns the session then).
    session: Option<FetchSession>,
    in_flight: bool,
    /// Failed fetches in a row; sets the backoff.
    failures: u32,
    retry_at: Option<Instant>,
}

impl BrokerFetcher {
    /// Whether a fetch may be sent to this broker now.
    pub(super) fn ready(&self, now: Instant) -> bool {
        !self.in_flight && self.retry_at.is_none_or(|at| at <= now)
    }

    /// Starts a fetch of `partitions` in a task of `tasks`.
    pub(super) fn launch(
        &mut self,
        tasks: &mut tokio::task::JoinSet<FetchAnswer>,
        source: &Arc<Cluster>,
        broker: i32,
        partitions: Vec<PartitionFetch>,
        max_bytes: i32,
        reserved: usize,
    ) -> tokio::task::Id {
        let mut session = self.session.take().unwrap_or_default();
        self.in_flight = true;
        let source = Arc::clone(source);
        let handle = tasks.spawn(async move {
            let result = match source.broker(broker).await {
                Ok(messenger) => {
                    source
                        .fetch_from(
                            &messenger,
                            &mut session,
                            &partitions,
                            FETCH_MAX_WAIT,
                            max_bytes,
                            Isolation::ReadCommitted,
                        )
                        .await
                }
                Err(error) => Err(error),
            };
            FetchAnswer { broker, session, requested: partitions, reserved, result }
        });
        handle.id()
    }

    /// Takes the session back after a fetch; a failed one backs the broker off. Returns the
    /// number of failures in a row (0 after a success), so the caller logs the first.
    pub(super) fn finished(&mut self, session: FetchSession, ok: bool, now: Instant) -> u32 {
        self.in_flight = false;
        self.session = Some(session);
        if ok {
            self.failures = 0;
            self.retry_at = None;
        } else {
            self.failures += 1;
            let backoff = (FIRST_BACKOFF * 2u32.saturating_pow(self.failures.min(8) - 1)).min(MAX_BACKOFF);
            self.retry_at = Some(now + backoff);
        }
        self.failures
    }

    /// Whether the last fetch from this broker failed, recently: a broker asked nothing
    /// since (its partitions led elsewhere now) no longer counts after a while.
    pub(super) fn failing(&self, now: Instant) -> bool {
        self.failures > 0 && self.retry_at.is_some_and(|at| at + FAILING_FOR > now)
    }

    /// The task was lost (cancelled or panicked): start a new session next time.
    pub(super) fn lost(&mut self) {
        self.in_flight = false;
        self.session = None;
    }
}

/// The bytes of the whole batches at the start of a fetched records blob.
fn whole_batch_bytes(records: &bytes::Bytes) -> usize {
    BatchIter::new(records.clone())
        .map_while(|item| match item {
            Ok(BatchItem::Batch(batch)) => Some(batch.as_bytes().len()),
            _ => None,
        })
        .sum()
}

/// Most bytes one partition contributes to one fetch; less when the buffer budget is
/// shared by many partitions. Larger than Kafka's consumer default (1 MiB): with few
/// partitions a round must carry enough data to amortise its fixed cost.
const PARTITION_FETCH_BYTES: usize = 8 * 1024 * 1024;
/// Least bytes asked per partition: KIP-74 returns a first batch larger than the limit
/// anyway, so smaller only means more round trips.
const MIN_PARTITION_FETCH_BYTES: usize = 16 * 1024;

impl super::Replicator {
    /// Sends a fetch to every source leader that has none in flight, for its partitions
    /// that have buffer room.
    pub(super) async fn launch_fetches(&mut self) {
        if self.producers.is_none() {
            return;
        }
        // A third of the budget for fetched batches, a third for the round in flight
        // (fetched and stamped), the rest for decompression on the slow path.
        let fetch_budget = (self.flow.buffer_bytes / 3) as usize;
        let held = self.bytes_held();
        if held >= fetch_budget * 2 {
            return;
        }
        let mut room = fetch_budget * 2 - held;
        let now = Instant::now();
        if let Some(limit) = &mut self.rate_limit {
            // Held back (and the time counted) until the bucket has bytes again; the
            // scheduler's tick comes back here.
            match limit.available(now) {
                0 => return,
                allowed => room = room.min(allowed),
            }
        }
        let cap = (fetch_budget / self.partitions.len().max(1)).clamp(MIN_PARTITION_FETCH_BYTES, PARTITION_FETCH_BYTES);
        let mut by_leader: std::collections::BTreeMap<i32, Vec<PartitionFetch>> = Default::default();
        let mut leaderless = Vec::new();
        for (key, state) in &self.partitions {
            if !state.wants_fetch(now, cap) {
                continue;
            }
            // One attempt: a metadata failure skips the partition this pass, it never
            // blocks the scheduler.
            let Ok(info) = self.source.topic_once(&key.0).await else { continue };
            let Some(meta) = info.partitions.get(&key.1) else { continue };
            let Some(leader) = meta.leader else {
                leaderless.push(key.clone());
                continue;
            };
            if !self.brokers.entry(leader).or_default().ready(now) {
                continue;
            }
            by_leader.entry(leader).or_default().push(PartitionFetch {
                topic: key.0.clone(),
                topic_id: info.id,
                partition: key.1,
                offset: state.fetch_position,
                leader_epoch: meta.leader_epoch,
                max_bytes: cap as i32,
            });
        }
        self.hold_leaderless(leaderless, now);
        let leaders = by_leader.len().max(1);
        for (leader, partitions) in by_leader {
            let max_bytes = i32::try_from((room / leaders).min(cap * partitions.len()).max(MIN_PARTITION_FETCH_BYTES))
                .unwrap_or(i32::MAX);
            for p in &partitions {
                if let Some(state) = self.partitions.get_mut(&(p.topic.clone(), p.partition)) {
                    state.fetching = true;
                }
            }
            let reserved = match &mut self.rate_limit {
                Some(limit) => {
                    limit.reserve(max_bytes as usize);
                    max_bytes as usize
                }
                None => 0,
            };
            let fetcher = self.brokers.entry(leader).or_default();
            let id = fetcher.launch(&mut self.fetches, &self.source, leader, partitions, max_bytes, reserved);
            self.fetch_brokers.insert(id, leader);
        }
    }

    /// Source partitions without a leader (their broker down, an election under way) wait
    /// with backoff, reported once, while the metadata is asked again.
    fn hold_leaderless(&mut self, leaderless: Vec<SourcePartition>, now: Instant) {
        if leaderless.is_empty() {
            return;
        }
        self.source.invalidate_metadata();
        for key in leaderless {
            let Some(state) = self.partitions.get_mut(&key) else { continue };
            if state.stop(PartitionPhase::WaitingForLeader, "the source partition has no leader".into(), now) {
                tracing::warn!(flow = %self.flow.name(), topic = %key.0, partition = key.1, "source partition has no leader; it waits (retried with backoff), the others go on");
            }
        }
    }

    /// Takes a fetch answer in: batches into their partitions' buffers, errors to the
    /// partition or broker they concern.
    pub(super) async fn on_fetched(&mut self, joined: Result<(tokio::task::Id, FetchAnswer), tokio::task::JoinError>) {
        let answer = match joined {
            Ok((id, answer)) => {
                self.fetch_brokers.remove(&id);
                answer
            }
            Err(error) => {
                if let Some(broker) = self.fetch_brokers.remove(&error.id()) {
                    self.brokers.entry(broker).or_default().lost();
                }
                // Which partitions it held is unknown: let every waiting one fetch again.
                let busy: std::collections::BTreeSet<i32> =
                    self.brokers.iter().filter(|(_, b)| !b.ready(Instant::now())).map(|(&id, _)| id).collect();
                if busy.is_empty() {
                    self.partitions.values_mut().for_each(|p| p.fetching = false);
                }
                tracing::error!(flow = %self.name(), %error, "fetch task lost");
                return;
            }
        };
        let FetchAnswer { broker, session, requested, reserved, result } = answer;
        let now = Instant::now();
        if let Some(limit) = &mut self.rate_limit {
            let fetched = result.as_ref().map_or(0, |answers| {
                answers.iter().filter_map(|a| a.result.as_ref().ok()).map(|data| whole_batch_bytes(&data.records)).sum()
            });
            limit.settle(reserved, fetched);
        }
        let asked: std::collections::BTreeMap<(String, i32), i64> =
            requested.iter().map(|p| ((p.topic.clone(), p.partition), p.offset)).collect();
        for key in asked.keys() {
            if let Some(state) = self.partitions.get_mut(key) {
                state.fetching = false;
            }
        }
        let answers = match result {
            Ok(answers) => {
                self.brokers.entry(broker).or_default().finished(session, true, now);
                if !self.brokers.values().any(|b| b.failing(now)) {
                    self.metrics.set_unreachable(Side::Source, Probe::Fetch, None);
                }
                answers
            }
            Err(error) => {
                let failures = self.brokers.entry(broker).or_default().finished(session, false, now);
                self.metrics.error(Side::Source, &error.metric_code());
                self.metrics.set_unreachable(Side::Source, Probe::Fetch, Some(format!("broker {broker}: {error}")));
                self.source.invalidate_metadata();
                if failures == 1 || failures % 50 == 0 {
                    tracing::warn!(flow = %self.name(), broker, partitions = asked.len(), failures, %error, "source broker cannot be fetched from; its partitions wait (retried with backoff), the others go on");
                }
                return;
            }
        };
        for answer in answers {
            let key = (answer.topic, answer.partition);
            let Some(&requested_at) = asked.get(&key) else { continue };
            match answer.result {
                Ok(data) => self.take_data(&key, requested_at, data),
                Err(code) if code.0 == ResponseError::OffsetOutOfRange => {
                    if let Err(error) = self.out_of_range(&key).await {
                        tracing::warn!(flow = %self.name(), topic = %key.0, partition = key.1, %error, "cannot read the source's offsets after OFFSET_OUT_OF_RANGE; retried");
                    }
                }
                Err(code) => {
                    self.metrics.error(Side::Source, &code.name());
                    if code.needs_metadata_refresh() {
                        self.source.invalidate_metadata();
                    }
                    tracing::debug!(flow = %self.name(), topic = %key.0, partition = key.1, %code, "fetch error, retried");
                }
            }
        }
    }

    /// Selects what to forward from one partition's fetched records and buffers it.
    fn take_data(&mut self, key: &(String, i32), requested_at: i64, data: FetchedPartition) {
        let flow = self.flow.name();
        let Some(state) = self.partitions.get_mut(key) else { return };
        if requested_at != state.fetch_position {
            // Asked before the partition was rewound: the answer is stale.
            return;
        }
        let may_coalesce = state.coalesce;
        let selected =
            forward::select(data.records, requested_at, &data.aborted_transactions).and_then(|mut selection| {
                let batches = std::mem::take(&mut selection.batches);
                let coalesced =
                    if may_coalesce { coalesce(batches)? } else { Coalesced { batches, merged: 0, corrupt: None } };
                Ok((coalesced, selection))
            });
        match selected {
            Ok((coalesced, mut selection)) => {
                self.totals.coalesced += coalesced.merged as u64;
                if selection.rewritten > 0 {
                    self.totals.rewritten += selection.rewritten as u64;
                    if !state.slow_path_reported {
                        state.slow_path_reported = true;
                        tracing::info!(flow, topic = %key.0, partition = key.1, "slow path: compacted or LogAppendTime batches are rewritten (records renumbered or restamped); counted in `rewritten`");
                    }
                }
                if let Some(RewriteError::Crc { base_offset, .. }) = &coalesced.corrupt {
                    // The batches before the corrupt one go on; the next fetch starts at it.
                    selection.next_offset = *base_offset;
                }
                let corrupt_first = coalesced.batches.is_empty().then_some(coalesced.corrupt).flatten();
                state.take_fetched(
                    requested_at,
                    coalesced.batches,
                    selection.next_offset,
                    data.high_watermark,
                    data.log_start_offset,
                );
                // Brokers too old to know it answer -1: the high watermark is the end then.
                state.stable_end =
                    if data.last_stable_offset >= 0 { data.last_stable_offset } else { data.high_watermark };
                if let Some(error) = corrupt_first {
                    if state.stop(PartitionPhase::Unforwardable, error.to_string(), Instant::now()) {
                        tracing::error!(flow, topic = %key.0, partition = key.1, %error, "partition stopped: a source batch is corrupt; nothing of it was forwarded");
                    }
                }
            }
            Err(error) => {
                if state.stop(PartitionPhase::Unforwardable, error.to_string(), Instant::now()) {
                    tracing::error!(flow, topic = %key.0, partition = key.1, offset = requested_at, %error, "partition stopped: its next batch cannot be forwarded; the others go on");
                }
            }
        }
    }
}
