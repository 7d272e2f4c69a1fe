//! One flow's replicator: fetch from the source leaders, forward the batches to the target
//! leaders, commit progress; cycle after cycle until stopped.
//!
//! A cycle is: fetch (READ_COMMITTED) every replicated source partition from its leader,
//! select and stamp the batches ([`super::forward`]), produce them (one batch per
//! partition per request, partitions of a leader together), then commit progress: the next
//! source offset of every partition, as offsets of the flow's progress group on the target.
//! With `exactly_once` the produced batches and the progress are one transaction: a crash
//! anywhere leaves either both or neither, and the next instance fences this one
//! (InitProducerId) and resumes from the committed progress. With `at_least_once` progress
//! is committed after the data is acknowledged, so a crash can only repeat records.
//!
//! Any error other than fencing or a refusal of transactions resets the flow to its
//! committed state: the open transaction is aborted, the producer is initialised again and
//! positions are read back from the progress group.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::coalesce::{coalesce, Coalesced};
use super::forward::{self, Forwarded, Stamp};
use super::offset_map::OffsetMap;
use super::state;
use crate::client::{
    produce_outcomes, submit_produce, ClientError, Cluster, CommittedOffset, ConnectionError, FetchSession,
    GroupOffsets, Isolation, Messenger, OffsetSpec, PartitionFetch, ProduceBatch, ProduceOutcome, ProducerIdentity,
};
use crate::config::{Delivery, FlowConfig, StartPosition};
use crate::protocol::batch::RecordBatch;
use crate::protocol::error_code::{ErrorCode, ResponseError};
use crate::recovery::marker::{self, FlowState, MarkerError};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    TxnOffsetCommitRequest,
};

/// How long a Fetch waits for data when the source has none.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Most bytes one partition contributes to one cycle; less when the buffer budget is
/// shared by many partitions. Larger than Kafka's consumer default (1 MiB): with few
/// partitions a cycle (and with exactly_once a transaction) must carry enough data to
/// amortise its fixed cost (measured: 1 MiB cycles held one partition to ~25 MiB/s).
const PARTITION_FETCH_BYTES: i64 = 8 * 1024 * 1024;
/// Least bytes asked per partition: KIP-74 returns a first batch larger than the limit
/// anyway, so smaller only means more round trips.
const MIN_PARTITION_FETCH_BYTES: i64 = 16 * 1024;
/// Transactions left open longer are aborted by the target's coordinator.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Produce requests on the wire at once per target leader (Kafka's broker deduplicates
/// the last 5 batches per producer and partition).
const PRODUCE_ROUNDS_IN_FLIGHT: usize = 5;
/// Pause after a failed cycle before the flow is reset and tried again.
const RESET_BACKOFF: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A source partition (topic, partition).
type SourcePartition = (String, i32);

/// Why a flow's replication stopped for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicateError {
    #[error(
        "flow {flow}: delivery exactly_once needs transactions on target cluster {target}, which refuses them: {reason}. \
         Set `delivery: at_least_once` for this flow, or, where authorization is the cause, grant kferry's principal \
         WRITE and DESCRIBE on TransactionalId {transactional_id}"
    )]
    TransactionsUnavailable { flow: String, target: String, transactional_id: String, reason: ClientError },
    #[error("flow {flow}: another kferry instance took over transactional id {transactional_id} on {target}; this one stops ({reason})")]
    Fenced { flow: String, target: String, transactional_id: String, reason: ClientError },
    #[error("flow {flow}: the target refuses kferry's producer: {reason}")]
    ProducerRefused { flow: String, reason: ClientError },
    #[error(
        "flow {flow}: failed over ({reason}, recorded in {topic} on {target}); it stays stopped so it cannot write to \
         {target} again. Run `kferry failback` to bring data back and resume it"
    )]
    FailedOver { flow: String, target: String, topic: &'static str, reason: String },
    #[error("flow {flow}: cannot read its failover record: {reason}")]
    FailoverRecord { flow: String, reason: crate::recovery::marker::MarkerError },
}

/// What went wrong in one cycle; everything but `Fatal` is retried after a reset.
enum CycleError {
    Fatal(Box<ReplicateError>),
    Retry(ClientError),
}

impl From<ClientError> for CycleError {
    fn from(error: ClientError) -> Self {
        Self::Retry(error)
    }
}

/// Counters since start, logged every few seconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub batches: u64,
    /// Batches that took the slow path (compacted or LogAppendTime, rewritten).
    pub rewritten: u64,
    pub records: u64,
    pub bytes: u64,
    pub transactions: u64,
    /// Small source batches merged into others before producing (see [`super::coalesce`]).
    pub coalesced: u64,
}

/// The progress group of a flow on its target: the committed offsets of this group are
/// the next source offsets to replicate, keyed by target topic and partition.
pub fn progress_group(flow: &FlowConfig) -> String {
    format!("kferry.progress.{}.{}", flow.source, flow.target)
}

/// The flow's transactional id on its target.
pub fn transactional_id(flow: &FlowConfig) -> String {
    format!("kferry.{}.{}", flow.source, flow.target)
}

pub struct Replicator {
    flow: FlowConfig,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    /// Replicated source topics and their target names, as topic sync last planned them.
    topics: watch::Receiver<BTreeMap<String, String>>,
    transactional_id: String,
    progress_group: String,
    /// Where the flow's offset map is persisted on the target.
    state_topic: String,
    producer: Option<ProducerIdentity>,
    /// The next source offset to replicate, per source partition.
    positions: BTreeMap<SourcePartition, i64>,
    /// The next sequence number per target partition, for the current producer.
    sequences: BTreeMap<SourcePartition, i32>,
    /// Where replicated offsets landed (loaded from the state topic at start).
    offset_maps: BTreeMap<SourcePartition, OffsetMap>,
    /// Partitions stopped by a batch that cannot be forwarded, with the reason.
    stalled: BTreeMap<SourcePartition, String>,
    /// Partitions whose coalesced batch the target refused as too large (its
    /// `max.message.bytes` is below what coalescing builds): their batches go as they came.
    uncoalesced: BTreeSet<SourcePartition>,
    /// Partitions with coalesced batches in the current cycle.
    coalesced_now: BTreeSet<SourcePartition>,
    /// Incremental fetch sessions (KIP-227), per source leader.
    fetch_sessions: BTreeMap<i32, FetchSession>,
    /// Partitions whose first slow-path batch was logged.
    slow_path_reported: std::collections::BTreeSet<SourcePartition>,
    totals: Totals,
}

/// One stamped batch on its way to the target, with where it came from.
struct InFlight {
    source: SourcePartition,
    /// The target partition; its records are the stamped batch once its round is sent.
    batch: ProduceBatch,
    /// The batch and its stamp until its round is sent: stamping (a copy, for a slice of the
    /// fetch answer) waits until then, so a cycle never holds a stamped copy of all its
    /// batches next to the fetch answer, only of the rounds on the wire.
    unstamped: Option<(RecordBatch, Stamp)>,
    source_base: i64,
    /// Offsets the batch covers (lastOffsetDelta + 1).
    span: i64,
    /// Source offset of each record, for a batch the slow path rewrote.
    source_offsets: Option<Vec<i64>>,
}

/// One partition's batches to forward in this cycle.
struct Outgoing {
    source: SourcePartition,
    target_topic: String,
    batches: Vec<Forwarded>,
    next_offset: i64,
    /// The source partition's high watermark in this fetch.
    source_end: i64,
}

impl Replicator {
    pub fn new(
        flow: &FlowConfig,
        source: Arc<Cluster>,
        target: Arc<Cluster>,
        topics: watch::Receiver<BTreeMap<String, String>>,
    ) -> Self {
        Self {
            transactional_id: transactional_id(flow),
            progress_group: progress_group(flow),
            state_topic: state::offset_map_topic(flow),
            flow: flow.clone(),
            source,
            target,
            topics,
            producer: None,
            positions: BTreeMap::new(),
            sequences: BTreeMap::new(),
            offset_maps: BTreeMap::new(),
            stalled: BTreeMap::new(),
            uncoalesced: BTreeSet::new(),
            coalesced_now: BTreeSet::new(),
            slow_path_reported: Default::default(),
            fetch_sessions: BTreeMap::new(),
            totals: Totals::default(),
        }
    }

    fn name(&self) -> String {
        self.flow.name()
    }

    fn transactional(&self) -> bool {
        self.flow.delivery == Delivery::ExactlyOnce
    }

    /// Replicates until `stop` turns true (the cycle in progress is finished first) or a
    /// fatal error.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Totals, ReplicateError> {
        let mut reported = Instant::now();
        let mut reported_totals = self.totals;
        while !*stop.borrow() {
            match self.cycle().await {
                Ok(()) => {}
                Err(CycleError::Fatal(error)) => return Err(*error),
                Err(CycleError::Retry(error)) => {
                    tracing::warn!(flow = %self.name(), %error, "replication cycle failed; resuming from the committed progress");
                    self.reset().await;
                    tokio::select! {
                        _ = tokio::time::sleep(RESET_BACKOFF) => {}
                        _ = stop.wait_for(|stop| *stop) => {}
                    }
                }
            }
            if reported.elapsed() >= REPORT_EVERY && self.totals.records != reported_totals.records {
                let t = self.totals;
                tracing::info!(flow = %self.name(), records = t.records, bytes = t.bytes, batches = t.batches, rewritten = t.rewritten, coalesced = t.coalesced, transactions = t.transactions, "replicated so far");
                reported = Instant::now();
                reported_totals = t;
            }
        }
        if self.transactional() {
            tracing::info!(flow = %self.name(), "stopped between cycles: no transaction left open");
        }
        Ok(self.totals)
    }

    /// Drops everything not committed: the next cycle starts from the progress group.
    async fn reset(&mut self) {
        if let (true, Some(producer)) = (self.transactional(), self.producer) {
            // Best effort: the next InitProducerId aborts it anyway.
            let _ = self.target.end_txn(&self.transactional_id, producer, false).await;
        }
        self.producer = None;
        self.positions.clear();
        self.sequences.clear();
        self.fetch_sessions.clear();
        // Leaders may have moved (or a new topic's leader not be ready yet).
        self.source.invalidate_metadata();
        self.target.invalidate_metadata();
    }

    async fn cycle(&mut self) -> Result<(), CycleError> {
        if self.producer.is_none() {
            self.start_producer().await?;
        }
        let topics = self.topics.borrow().clone();
        if topics.is_empty() {
            tokio::time::sleep(FETCH_MAX_WAIT).await;
            return Ok(());
        }
        self.position_new_partitions(&topics).await?;
        let mut outgoing = self.fetch(&topics).await?;
        if outgoing.iter().all(|o| o.batches.is_empty()) {
            // Only markers or aborted data: keep the positions, commit with the next data.
            for o in outgoing {
                self.positions.insert(o.source, o.next_offset);
            }
            return Ok(());
        }
        self.forward(&mut outgoing).await?;
        for o in outgoing {
            self.positions.insert(o.source, o.next_offset);
        }
        Ok(())
    }

    /// InitProducerId (fencing an earlier instance with the same transactional id) and
    /// positions from the committed progress.
    async fn start_producer(&mut self) -> Result<(), CycleError> {
        if self.transactional() {
            self.check_transaction_apis().await?;
        }
        let transactional_id = self.transactional().then_some(self.transactional_id.as_str());
        let producer = match self.target.init_producer_id(transactional_id, TRANSACTION_TIMEOUT).await {
            Ok(producer) => producer,
            Err(error) => return Err(self.classify_init_error(error)),
        };
        // Disaster recovery (issue 14): read the failover record *after* InitProducerId. A
        // failover marks the flow before it fences: a producer initialised after the fence
        // sees the mark here and stops instead of writing.
        self.check_not_failed_over().await?;
        tracing::info!(flow = %self.name(), producer_id = producer.id, epoch = producer.epoch, delivery = %self.flow.delivery, "producer ready on the target");
        state::ensure_topic(&self.target, &self.state_topic, self.flow.replication_factor).await?;
        // Continue the persisted map, so segments go on growing across restarts.
        self.offset_maps =
            state::load(&self.target, &self.state_topic).await?.into_iter().map(|(k, (_, m))| (k, m)).collect();
        self.producer = Some(producer);
        self.sequences.clear();
        self.positions = state::read_progress(&self.target, &self.progress_group)
            .await?
            .into_iter()
            .map(|p| (p.source, p.next_offset))
            .collect();
        Ok(())
    }

    /// Refuses to write to a target the flow was failed over to: its records there now come
    /// from the target's own producers.
    async fn check_not_failed_over(&self) -> Result<(), CycleError> {
        let fatal = |e| CycleError::Fatal(Box::new(e));
        match marker::read(&self.target, &self.name()).await {
            // Failing over counts: the failover has begun and its fence may come next.
            Ok(Some(record)) if record.state != FlowState::Active => Err(fatal(ReplicateError::FailedOver {
                flow: self.name(),
                target: self.flow.target.clone(),
                topic: marker::FAILOVER_TOPIC,
                reason: record.reason,
            })),
            Ok(_) => Ok(()),
            Err(MarkerError::Client(e)) => Err(CycleError::Retry(e)),
            Err(reason) => Err(fatal(ReplicateError::FailoverRecord { flow: self.name(), reason })),
        }
    }

    /// Refuses, before anything is produced, a target that lacks one of the transaction
    /// APIs: a transaction that can be begun but never ended is worse than none (a broker
    /// without EndTxn may expose the open transaction's records).
    async fn check_transaction_apis(&self) -> Result<(), CycleError> {
        let broker = self.target.any_broker().await?;
        let checks = [
            broker.version_for::<FindCoordinatorRequest>().err(),
            broker.version_for::<InitProducerIdRequest>().err(),
            broker.version_for::<AddPartitionsToTxnRequest>().err(),
            broker.version_for::<AddOffsetsToTxnRequest>().err(),
            broker.version_for::<TxnOffsetCommitRequest>().err(),
            broker.version_for::<EndTxnRequest>().err(),
        ];
        match checks.into_iter().flatten().next() {
            Some(missing) => Err(self.refused(ClientError::Connection(missing))),
            None => Ok(()),
        }
    }

    /// The fatal error for a target that refuses kferry's producer.
    fn refused(&self, error: ClientError) -> CycleError {
        CycleError::Fatal(Box::new(if self.transactional() {
            ReplicateError::TransactionsUnavailable {
                flow: self.name(),
                target: self.flow.target.clone(),
                transactional_id: self.transactional_id.clone(),
                reason: error,
            }
        } else {
            ReplicateError::ProducerRefused { flow: self.name(), reason: error }
        }))
    }

    fn classify_init_error(&self, error: ClientError) -> CycleError {
        let refused = match &error {
            ClientError::Connection(ConnectionError::UnsupportedApi { .. }) => true,
            ClientError::Transaction { code, .. } | ClientError::Request { code, .. } => matches!(
                code.0,
                ResponseError::TransactionalIdAuthorizationFailed
                    | ResponseError::ClusterAuthorizationFailed
                    | ResponseError::UnsupportedVersion
            ),
            _ => false,
        };
        if !refused {
            return CycleError::Retry(error);
        }
        self.refused(error)
    }

    /// Gives every replicated partition without a position its start position.
    async fn position_new_partitions(&mut self, topics: &BTreeMap<String, String>) -> Result<(), ClientError> {
        for source_topic in topics.keys() {
            let info = self.source.topic(source_topic).await?;
            let mut started = 0;
            for &partition in info.partitions.keys() {
                let key = (source_topic.clone(), partition);
                if self.positions.contains_key(&key) {
                    continue;
                }
                let spec = match self.flow.start {
                    StartPosition::Earliest => OffsetSpec::Earliest,
                    StartPosition::Latest => OffsetSpec::Latest,
                    StartPosition::Timestamp(ms) => OffsetSpec::Timestamp(ms),
                };
                let mut offset =
                    self.source.list_offset(source_topic, partition, spec, Isolation::ReadCommitted).await?;
                if offset < 0 {
                    // No record at or after the timestamp yet: start at the end.
                    offset = self
                        .source
                        .list_offset(source_topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted)
                        .await?;
                }
                tracing::debug!(flow = %self.name(), topic = %source_topic, partition, offset, "partition starts");
                self.positions.insert(key, offset);
                started += 1;
            }
            if started > 0 {
                tracing::info!(flow = %self.name(), topic = %source_topic, partitions = started, start = ?self.flow.start, "replication of new partitions starts");
            }
        }
        Ok(())
    }

    /// One Fetch per source leader; returns the batches to forward per partition.
    async fn fetch(&mut self, topics: &BTreeMap<String, String>) -> Result<Vec<Outgoing>, ClientError> {
        self.coalesced_now.clear();
        // A third of the budget for fetched records: they exist up to three times at the
        // peak (the fetch response, coalesced copies of small batches, stamped copies and
        // Produce frames of the rounds on the wire).
        // Shared by every partition, so memory does not grow with their number.
        let fetch_budget = i64::try_from(self.flow.buffer_bytes / 3).unwrap_or(i64::MAX);
        let partition_bytes =
            (fetch_budget / self.positions.len().max(1) as i64).clamp(MIN_PARTITION_FETCH_BYTES, PARTITION_FETCH_BYTES);
        let mut by_leader: BTreeMap<i32, Vec<PartitionFetch>> = BTreeMap::new();
        for ((topic, partition), &offset) in &self.positions {
            if !topics.contains_key(topic) || self.stalled.contains_key(&(topic.clone(), *partition)) {
                continue;
            }
            let info = self.source.topic(topic).await?;
            let Some(meta) = info.partitions.get(partition) else { continue };
            let Some(leader) = meta.leader else { continue };
            by_leader.entry(leader).or_default().push(PartitionFetch {
                topic: topic.clone(),
                topic_id: info.id,
                partition: *partition,
                offset,
                leader_epoch: meta.leader_epoch,
                max_bytes: partition_bytes as i32,
            });
        }
        let mut outgoing = Vec::new();
        let leaders = by_leader.len().max(1) as i64;
        for (leader, partitions) in by_leader {
            let messenger = self.source.broker(leader).await?;
            let max_bytes = i32::try_from((fetch_budget / leaders).min(partition_bytes * partitions.len() as i64))
                .unwrap_or(i32::MAX);
            let session = self.fetch_sessions.entry(leader).or_default();
            let fetched = self
                .source
                .fetch_from(&messenger, session, &partitions, FETCH_MAX_WAIT, max_bytes, Isolation::ReadCommitted)
                .await?;
            for answer in fetched {
                let key = (answer.topic.clone(), answer.partition);
                let Some(&position) = self.positions.get(&key) else { continue };
                let data = match answer.result {
                    Ok(data) => data,
                    Err(code) => {
                        self.partition_fetch_error(&key, position, code).await?;
                        continue;
                    }
                };
                let may_coalesce = !self.uncoalesced.contains(&key);
                let selected =
                    forward::select(data.records, position, &data.aborted_transactions).and_then(|mut selection| {
                        let batches = std::mem::take(&mut selection.batches);
                        let coalesced =
                            if may_coalesce { coalesce(batches)? } else { Coalesced { batches, merged: 0 } };
                        Ok((coalesced, selection))
                    });
                match selected {
                    Ok((coalesced, selection)) => {
                        self.totals.coalesced += coalesced.merged as u64;
                        if coalesced.merged > 0 {
                            self.coalesced_now.insert(key.clone());
                        }
                        if selection.rewritten > 0 {
                            self.totals.rewritten += selection.rewritten as u64;
                            if self.slow_path_reported.insert(key.clone()) {
                                tracing::info!(flow = %self.name(), topic = %key.0, partition = key.1, "slow path: compacted or LogAppendTime batches are rewritten (records renumbered or restamped); counted in `rewritten`");
                            }
                        }
                        outgoing.push(Outgoing {
                            target_topic: topics[&key.0].clone(),
                            source: key,
                            batches: coalesced.batches,
                            next_offset: selection.next_offset,
                            source_end: data.high_watermark,
                        });
                    }
                    Err(error) => {
                        tracing::error!(flow = %self.name(), topic = %key.0, partition = key.1, %error, "partition stopped: its next batch cannot be forwarded");
                        self.stalled.insert(key, error.to_string());
                    }
                }
            }
        }
        Ok(outgoing)
    }

    async fn partition_fetch_error(
        &mut self,
        key: &SourcePartition,
        position: i64,
        code: ErrorCode,
    ) -> Result<(), ClientError> {
        if code.0 == ResponseError::OffsetOutOfRange {
            // Retention deleted records before kferry copied them: say how many, go on.
            let start = self.source.list_offset(&key.0, key.1, OffsetSpec::Earliest, Isolation::ReadCommitted).await?;
            if start > position {
                tracing::error!(flow = %self.name(), topic = %key.0, partition = key.1, lost = start - position, from = position, to = start, "source deleted records before they were replicated; resuming at the log start");
                self.positions.insert(key.clone(), start);
            }
            return Ok(());
        }
        if code.needs_metadata_refresh() {
            self.source.invalidate_metadata();
        }
        tracing::debug!(flow = %self.name(), topic = %key.0, partition = key.1, %code, "fetch error, retried next cycle");
        Ok(())
    }

    /// Produces every outgoing batch and commits progress (in one transaction). The batches
    /// are taken out of `outgoing` as they are stamped, so that one kferry built (coalesced,
    /// rewritten) is stamped in place instead of copied.
    async fn forward(&mut self, outgoing: &mut [Outgoing]) -> Result<(), CycleError> {
        let producer = self.producer.expect("started before a cycle fetches");
        let transactional = self.transactional();
        if transactional {
            let mut partitions: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for o in outgoing.iter().filter(|o| !o.batches.is_empty()) {
                partitions.entry(o.target_topic.clone()).or_default().push(o.source.1);
            }
            partitions.entry(self.state_topic.clone()).or_default().push(0);
            self.target
                .add_partitions_to_txn(&self.transactional_id, producer, &partitions)
                .await
                .map_err(|e| self.fenced_or_retry(e))?;
        }
        let segments_before: BTreeMap<SourcePartition, usize> = outgoing
            .iter()
            .filter(|o| !o.batches.is_empty())
            .map(|o| (o.source.clone(), self.offset_maps.get(&o.source).map_or(0, |m| m.segments().len())))
            .collect();
        let mut by_leader: BTreeMap<i32, Vec<InFlight>> = BTreeMap::new();
        for o in outgoing.iter_mut() {
            if o.batches.is_empty() {
                continue;
            }
            let info = self.target.topic(&o.target_topic).await?;
            let (leader, _) = self.target.leader(&o.target_topic, o.source.1).await?;
            let node = leader.broker().node_id.unwrap_or(-1);
            let sequence_key = (o.target_topic.clone(), o.source.1);
            for Forwarded { batch, source_offsets } in std::mem::take(&mut o.batches) {
                let sequence = self.sequences.get(&sequence_key).copied().unwrap_or(0);
                let stamp = Stamp {
                    producer_id: producer.id,
                    producer_epoch: producer.epoch,
                    base_sequence: sequence,
                    transactional,
                };
                self.sequences.insert(sequence_key.clone(), forward::next_sequence(sequence, batch.records_count()));
                let span = i64::from(batch.last_offset_delta()) + 1;
                let source_base = batch.base_offset();
                by_leader.entry(node).or_default().push(InFlight {
                    source: o.source.clone(),
                    batch: ProduceBatch {
                        topic: o.target_topic.clone(),
                        topic_id: info.id,
                        partition: o.source.1,
                        records: Bytes::new(),
                    },
                    unstamped: Some((batch, stamp)),
                    source_base,
                    span,
                    source_offsets,
                });
            }
        }
        for (node, batches) in by_leader {
            self.produce_in_rounds(node, batches).await?;
        }
        self.write_offset_map(outgoing, &segments_before).await?;
        let offsets: GroupOffsets = outgoing
            .iter()
            .map(|o| {
                let key = (o.target_topic.clone(), o.source.1);
                let metadata = state::progress_metadata(&o.source.0, o.source_end);
                (key, CommittedOffset { offset: o.next_offset, metadata: Some(metadata) })
            })
            .collect();
        if transactional {
            self.target
                .commit_offsets_in_txn(&self.transactional_id, producer, &self.progress_group, &offsets)
                .await
                .map_err(|e| self.fenced_or_retry(e))?;
            self.target.end_txn(&self.transactional_id, producer, true).await.map_err(|e| self.fenced_or_retry(e))?;
            self.totals.transactions += 1;
        } else {
            self.target.commit_group_offsets(&self.progress_group, &offsets).await?;
        }
        Ok(())
    }

    /// Writes the offset-map segments this cycle created or extended to the state topic,
    /// in the cycle's transaction.
    async fn write_offset_map(
        &mut self,
        outgoing: &[Outgoing],
        segments_before: &BTreeMap<SourcePartition, usize>,
    ) -> Result<(), CycleError> {
        let mut touched = Vec::new();
        for o in outgoing {
            let (Some(&before), Some(map)) = (segments_before.get(&o.source), self.offset_maps.get(&o.source)) else {
                continue;
            };
            // The last segment before the cycle may have grown; later ones are new.
            for segment in &map.segments()[before.saturating_sub(1)..] {
                touched.push((o.source.clone(), o.target_topic.clone(), *segment));
            }
        }
        if touched.is_empty() {
            return Ok(());
        }
        let producer = self.producer.expect("started before a cycle fetches");
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let batch = state::state_batch(&touched, now);
        let key = (self.state_topic.clone(), 0);
        let sequence = self.sequences.get(&key).copied().unwrap_or(0);
        let transactional = self.transactional();
        let stamp =
            Stamp { producer_id: producer.id, producer_epoch: producer.epoch, base_sequence: sequence, transactional };
        self.sequences.insert(key, forward::next_sequence(sequence, batch.records_count()));
        let info = self.target.topic(&self.state_topic).await?;
        let (leader, _) = self.target.leader(&self.state_topic, 0).await?;
        let request = ProduceBatch {
            topic: self.state_topic.clone(),
            topic_id: info.id,
            partition: 0,
            records: forward::stamp(&batch, stamp),
        };
        let transactional_id = transactional.then_some(self.transactional_id.as_str());
        let outcomes = self
            .target
            .produce_to(&leader, transactional_id, std::slice::from_ref(&request), PRODUCE_TIMEOUT)
            .await
            .map_err(|e| self.fenced_or_retry(e))?;
        match outcomes.into_iter().next().map(|o| o.result) {
            Some(Ok(_)) => Ok(()),
            Some(Err((code, message))) => Err(self.fenced_or_retry(ClientError::Partition {
                broker: leader.broker().clone(),
                api: "Produce",
                topic: self.state_topic.clone(),
                partition: 0,
                code,
                message,
            })),
            None => Err(CycleError::Retry(ClientError::IncompleteResponse {
                cluster: self.target.name().clone(),
                what: "Produce",
                missing: format!("topic {} partition 0", self.state_topic),
            })),
        }
    }

    /// Sends one leader's batches: each request carries at most one batch per partition,
    /// so a partition's batches go in order, one round after the other.
    async fn produce_in_rounds(&mut self, node: i32, batches: Vec<InFlight>) -> Result<(), CycleError> {
        let leader = self.target.broker(node).await?;
        let transactional_id = self.transactional().then(|| self.transactional_id.clone());
        let mut queues: BTreeMap<(String, i32), VecDeque<InFlight>> = BTreeMap::new();
        for entry in batches {
            queues.entry((entry.batch.topic.clone(), entry.batch.partition)).or_default().push_back(entry);
        }
        let mut rounds = std::iter::from_fn(|| {
            let round: Vec<InFlight> = queues.values_mut().filter_map(|q| q.pop_front()).collect();
            (!round.is_empty()).then_some(round)
        });
        // Several rounds on the wire at once, queued in order so each partition's
        // sequence numbers reach the broker in order; no more than the broker tracks per
        // producer and partition (5), so a retried batch would still be deduplicated.
        let mut waiting = VecDeque::new();
        loop {
            while waiting.len() < PRODUCE_ROUNDS_IN_FLIGHT {
                let Some(mut round) = rounds.next() else { break };
                for in_flight in &mut round {
                    if let Some((batch, stamp)) = in_flight.unstamped.take() {
                        in_flight.batch.records = forward::stamp_owned(batch, stamp);
                    }
                }
                let requests: Vec<ProduceBatch> = round.iter().map(|f: &InFlight| f.batch.clone()).collect();
                let queued = submit_produce(&leader, transactional_id.as_deref(), &requests, PRODUCE_TIMEOUT)
                    .await
                    .map_err(|e| self.fenced_or_retry(e))?;
                waiting.push_back((round, requests, queued));
            }
            let Some((round, requests, queued)) = waiting.pop_front() else { return Ok(()) };
            let (_, response) = queued.response().await.map_err(|e| self.fenced_or_retry(e.into()))?;
            let outcomes = produce_outcomes(response, &requests);
            for in_flight in round {
                self.record_produced(&leader, in_flight, &outcomes)?;
            }
        }
    }

    /// Books one produced batch: its offsets into the offset map, its size into the totals.
    fn record_produced(
        &mut self,
        leader: &Messenger,
        in_flight: InFlight,
        outcomes: &[ProduceOutcome],
    ) -> Result<(), CycleError> {
        let InFlight { source, batch, source_base, span, source_offsets, .. } = in_flight;
        let outcome =
            outcomes.iter().find(|o| o.topic == batch.topic && o.partition == batch.partition).ok_or_else(|| {
                ClientError::IncompleteResponse {
                    cluster: self.target.name().clone(),
                    what: "Produce",
                    missing: format!("topic {} partition {}", batch.topic, batch.partition),
                }
            })?;
        match &outcome.result {
            Ok(target_base) => {
                let map = self.offset_maps.entry(source).or_default();
                match &source_offsets {
                    None => map.record(source_base, span, *target_base),
                    // A rewritten batch's records are dense on the target only.
                    Some(offsets) => {
                        for (i, &offset) in offsets.iter().enumerate() {
                            map.record(offset, 1, target_base + i as i64);
                        }
                    }
                }
                self.totals.batches += 1;
                self.totals.records += span as u64;
                self.totals.bytes += batch.records.len() as u64;
                Ok(())
            }
            Err((code, message)) => {
                let error = ClientError::Partition {
                    broker: leader.broker().clone(),
                    api: "Produce",
                    topic: batch.topic.clone(),
                    partition: batch.partition,
                    code: *code,
                    message: message.clone(),
                };
                let outcome = self.fenced_or_retry(error.clone());
                // Coalescing built a batch larger than the target topic accepts, where the
                // batches as they came may pass: the cycle is retried with this partition's
                // batches forwarded as they are (and stops it only if they are refused too).
                if code.0 == ResponseError::MessageTooLarge
                    && self.coalesced_now.contains(&source)
                    && self.uncoalesced.insert(source.clone())
                {
                    tracing::warn!(flow = %self.name(), topic = %source.0, partition = source.1, offset = source_base, %error, "the target refuses a coalesced batch as too large (its max.message.bytes is below kferry's coalescing limit); this partition's batches are forwarded as they came from now on");
                    return Err(outcome);
                }
                // A batch the target will never take (MESSAGE_TOO_LARGE, INVALID_TIMESTAMP,
                // ...) stops its partition, with the reason, and only that partition: the
                // cycle is retried without it. Never skipped silently.
                if !code.is_retriable() && matches!(outcome, CycleError::Retry(_)) {
                    tracing::error!(flow = %self.name(), topic = %source.0, partition = source.1, offset = source_base, %error, "partition stopped: the target refuses its batch at this source offset");
                    self.stalled.insert(source, error.to_string());
                }
                Err(outcome)
            }
        }
    }

    /// Fencing errors stop the flow: another instance owns the transactional id now. So
    /// does an API the target lacks: retrying cannot help.
    fn fenced_or_retry(&self, error: ClientError) -> CycleError {
        if matches!(error, ClientError::Connection(ConnectionError::UnsupportedApi { .. })) {
            return self.refused(error);
        }
        let code = match &error {
            ClientError::Transaction { code, .. }
            | ClientError::Partition { code, .. }
            | ClientError::Group { code, .. }
            | ClientError::Request { code, .. } => Some(code.0),
            _ => None,
        };
        let fenced = matches!(
            code,
            Some(
                ResponseError::ProducerFenced
                    | ResponseError::InvalidProducerEpoch
                    | ResponseError::TransactionalIdAuthorizationFailed
            )
        );
        if fenced && self.transactional() {
            return CycleError::Fatal(Box::new(ReplicateError::Fenced {
                flow: self.name(),
                target: self.flow.target.clone(),
                transactional_id: self.transactional_id.clone(),
                reason: error,
            }));
        }
        CycleError::Retry(error)
    }
}
