//! One flow's replicator: a scheduler that keeps every source broker fetching and the
//! target committing at the same time.
//!
//! - [`fetcher`]: one fetch in flight per source leader, each with its own incremental
//!   session; an idle or unreachable broker holds back only its own partitions.
//! - [`round`]: one transaction round on the target as a task of its own: produce the
//!   waiting batches (up to 5 requests in flight per leader, every leader at once), write
//!   the offset-map segments, commit progress, end the transaction. A partition that fails
//!   is retried or held back inside the round; the others commit.
//! - [`partition`]: one struct per source partition: committed progress, fetched batches,
//!   sequence, offset map, stall.
//! - [`producer`]: the producers on the target (InitProducerId, fencing, refusals; with
//!   KIP-890 two transactional ids whose rounds alternate) and the state read back at start.
//! - [`tracking`]: which partitions are replicated and where new ones start; source resets.
//!
//! The next round starts as soon as the previous one is done and data is waiting, while
//! the fetchers already read what follows: a cycle pays its round trips once, not in series.
//! With `exactly_once` a round is one transaction (batches, offset map and progress, so a
//! crash leaves both or neither); with `at_least_once` progress is committed after the
//! acks. Memory is bounded by `buffer_bytes`: fetches are sent only while the batches
//! buffered and in the round in flight leave room.

mod committer;
mod fetcher;
mod gauges;
mod partition;
mod producer;
mod round;
mod throttle;
mod tracking;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::shard::Shard;
use crate::client::{ClientError, Cluster};
use crate::config::{Delivery, FlowConfig};
use crate::metrics::{FlowMetrics, FlowState, Probe, Side};
use fetcher::{BrokerFetcher, FetchAnswer};
use partition::{PartitionState, SourcePartition};
use round::RoundReport;
use throttle::RateLimit;

/// Wake-up when nothing else happens: stalls and broker backoffs expire on it.
const TICK: Duration = Duration::from_millis(100);
/// Pause after the producer could not be started before trying again.
const RESET_BACKOFF: Duration = Duration::from_secs(1);
/// How long a stop waits for the round in flight to end before it abandons it (the open
/// transaction is then aborted by the coordinator or the next instance).
const STOP_GRACE: Duration = Duration::from_secs(3);
const REPORT_EVERY: Duration = Duration::from_secs(10);

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
    #[error(
        "flow {flow}: `shards: {shards}` does not match its state on {target}: {topic} has {partitions} partition(s), \
         one per shard the flow was started with. Changing a flow's shard count is not supported (its offset map \
         would have to move between shards): set shards back to {partitions}"
    )]
    ShardsChanged { flow: String, target: String, topic: String, partitions: i32, shards: u16 },
    #[error("flow {flow}: the replicator of shard {shard} ended unexpectedly ({reason}); the flow stops")]
    ShardLost { flow: String, shard: String, reason: String },
}

/// A failed step: `Fatal` stops the flow, `Retry` is tried again after a pause.
enum StepError {
    Fatal(Box<ReplicateError>),
    Retry(ClientError),
}

impl From<ClientError> for StepError {
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
    /// Rounds abandoned (aborted) and tried again.
    pub aborted: u64,
    /// Source offsets deleted by retention before kferry copied them.
    pub lost: u64,
}

impl Totals {
    /// Adds another shard's totals.
    pub fn add(&mut self, other: Totals) {
        self.batches += other.batches;
        self.rewritten += other.rewritten;
        self.records += other.records;
        self.bytes += other.bytes;
        self.transactions += other.transactions;
        self.coalesced += other.coalesced;
        self.aborted += other.aborted;
        self.lost += other.lost;
    }
}

/// Source topics to replicate and the target topic of each, as topic sync plans them.
pub type TopicPlan = BTreeMap<String, String>;

/// The progress group of a flow on its target: the committed offsets of this group are
/// the next source offsets to replicate, keyed by target topic and partition.
pub fn progress_group(flow: &FlowConfig) -> String {
    format!("kferry.progress.{}.{}", flow.source, flow.target)
}

/// The transactional id of an unsplit flow on its target (a split flow has one per shard:
/// [`super::shard::transactional_ids`]).
pub fn transactional_id(flow: &FlowConfig) -> String {
    Shard::WHOLE.transactional_id(flow)
}

pub struct Replicator {
    /// The flow, with this shard's share of its budgets.
    flow: FlowConfig,
    /// Which of the flow's partitions this replicator owns.
    shard: Shard,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    /// Replicated source topics and their target names, as topic sync last planned them;
    /// `None` until its first plan.
    topics: watch::Receiver<Option<TopicPlan>>,
    transactional_id: String,
    progress_group: String,
    /// Where the flow's offset map is persisted on the target.
    state_topic: String,
    /// `None` until started, and after a round was abandoned (new ones fence them).
    producers: Option<producer::Producers>,
    /// Whether the target refused the shard's second transactional id (said once).
    alternate_refused: bool,
    /// The state partition's next sequence for the current producer.
    state_sequence: i32,
    /// Whether the progress and offset maps were read back from the target yet.
    loaded: bool,
    /// The partitions replicated now.
    partitions: BTreeMap<SourcePartition, PartitionState>,
    /// Partitions with progress on the target that topic sync does not plan now (not yet,
    /// at start, or no longer): kept so that they resume at their progress, never at the
    /// flow's `start`, when they are replicated again.
    parked: BTreeMap<SourcePartition, PartitionState>,
    /// New partitions whose start position is being resolved, and those tasks.
    placing: std::collections::BTreeSet<SourcePartition>,
    placements: JoinSet<tracking::Placement>,
    brokers: BTreeMap<i32, BrokerFetcher>,
    fetches: JoinSet<FetchAnswer>,
    /// `max_bytes_per_second`, when the flow has one.
    rate_limit: Option<RateLimit>,
    /// Which broker each fetch task asks, to recover from a task that was lost.
    fetch_brokers: BTreeMap<tokio::task::Id, i32>,
    round: Option<JoinHandle<RoundReport>>,
    /// Bytes of records the round in flight holds (counted twice: fetched and stamped).
    round_bytes: usize,
    /// When the replicated partitions were last compared with topic sync's plan.
    tracked_at: Option<Instant>,
    totals: Totals,
    /// Where the flow's counters and gauges go (a detached set unless `kferry run` gives
    /// it the registry's).
    metrics: Arc<FlowMetrics>,
    /// Per-partition metrics handles, resolved once each.
    gauges: BTreeMap<SourcePartition, gauges::Gauge>,
    published_at: Option<Instant>,
    /// The steady clock of lag ages.
    clock_origin: Instant,
    /// When the round in flight started.
    round_started: Option<Instant>,
}

impl Replicator {
    pub fn new(
        flow: &FlowConfig,
        source: Arc<Cluster>,
        target: Arc<Cluster>,
        topics: watch::Receiver<Option<TopicPlan>>,
    ) -> Self {
        Self {
            transactional_id: transactional_id(flow),
            progress_group: progress_group(flow),
            state_topic: super::state::offset_map_topic(flow),
            flow: flow.clone(),
            shard: Shard::WHOLE,
            source,
            target,
            topics,
            producers: None,
            alternate_refused: false,
            state_sequence: 0,
            loaded: false,
            partitions: BTreeMap::new(),
            parked: BTreeMap::new(),
            placing: Default::default(),
            placements: JoinSet::new(),
            brokers: BTreeMap::new(),
            fetches: JoinSet::new(),
            rate_limit: flow.max_bytes_per_second.map(|rate| RateLimit::new(rate, Instant::now())),
            fetch_brokers: BTreeMap::new(),
            round: None,
            round_bytes: 0,
            tracked_at: None,
            totals: Totals::default(),
            metrics: FlowMetrics::detached(&flow.name(), &flow.source, &flow.target, flow.buffer_bytes),
            gauges: BTreeMap::new(),
            published_at: None,
            clock_origin: Instant::now(),
            round_started: None,
        }
    }

    /// Books the flow's metrics into `metrics` (the registry's handle of this flow).
    pub fn with_metrics(mut self, metrics: Arc<FlowMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Replicates only `shard`'s partitions, with its transactional id, its state partition
    /// and its share of `buffer_bytes` and `max_bytes_per_second`.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self.transactional_id = shard.transactional_id(&self.flow);
        self.flow.buffer_bytes = shard.share(self.flow.buffer_bytes, 1024 * 1024);
        self.flow.max_bytes_per_second = self.flow.max_bytes_per_second.map(|rate| shard.share(rate, 64 * 1024));
        self.rate_limit = self.flow.max_bytes_per_second.map(|rate| RateLimit::new(rate, Instant::now()));
        self
    }

    fn name(&self) -> String {
        self.flow.name()
    }

    /// Publishes this shard's state; the detail names the shard when the flow has several.
    fn set_state(&self, state: FlowState, detail: Option<String>) {
        let detail = match detail {
            Some(detail) if self.shard.count > 1 => Some(format!("shard {}: {detail}", self.shard)),
            other => other,
        };
        self.metrics.set_shard_state(self.shard.index, state, detail);
    }

    fn transactional(&self) -> bool {
        self.flow.delivery == Delivery::ExactlyOnce
    }

    /// A transaction that cannot end makes the coordinator answer CONCURRENT_TRANSACTIONS
    /// to every call on the flow's transactional id. The usual cause is a target partition
    /// the transaction touched whose in-sync replicas fell below its `min.insync.replicas`:
    /// the coordinator cannot write the commit (or abort) marker there and retries until the
    /// replicas are back, and the whole flow waits meanwhile. Says so, naming the partitions
    /// held back for that reason, so the stall is not a mystery.
    fn explain_blocked_transaction(&self, error: &ClientError) {
        let concurrent = match error {
            ClientError::RetriesExhausted { last, .. } => last.is_concurrent_transactions(),
            other => other.is_concurrent_transactions(),
        };
        if !concurrent {
            return;
        }
        let short: Vec<String> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.short_of_replicas)
            .map(|((_, partition), p)| format!("{}-{partition}", p.target_topic))
            .collect();
        if !short.is_empty() {
            tracing::warn!(flow = %self.name(), partitions = %short.join(", "), "the flow's last transaction cannot end: Kafka's transaction coordinator must write its marker to every partition the transaction touched, and cannot while these have fewer in-sync replicas than their min.insync.replicas (NOT_ENOUGH_REPLICAS); every partition of the flow waits until their replicas are back");
        }
    }

    /// The bytes of records held: buffered batches and the round in flight.
    fn bytes_held(&self) -> usize {
        self.round_bytes + self.partitions.values().map(|p| p.buffered_bytes).sum::<usize>()
    }

    /// Replicates until `stop` turns true or a fatal error. A stop ends within a few
    /// seconds wherever the flow is: the round in flight gets [`STOP_GRACE`] to finish.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<Totals, ReplicateError> {
        let mut reporter = Reporter::default();
        let outcome = loop {
            if *stop.borrow() {
                break Ok(());
            }
            if let Err(fatal) = self.step(&mut stop).await {
                break Err(*fatal);
            }
            self.metrics.beat();
            self.publish(false);
            reporter.maybe_report(&self.name(), self.shard, self.totals);
        };
        if let Err(fatal) = &outcome {
            self.set_state(FlowState::Stopped, Some(fatal.to_string()));
        }
        self.shutdown().await;
        outcome.map(|()| self.totals)
    }

    /// Starts what can start (producer, fetches, a round), then waits for one event.
    async fn step(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Box<ReplicateError>> {
        if self.producers.is_none() && self.round.is_none() {
            match self.start_producer().await {
                Ok(()) => {
                    self.set_state(FlowState::Replicating, None);
                    self.metrics.set_unreachable(Side::Target, Probe::Produce, None);
                }
                Err(StepError::Fatal(error)) => return Err(error),
                Err(StepError::Retry(error)) => {
                    self.metrics.error(Side::Target, &error.metric_code());
                    self.set_state(FlowState::Starting, Some(format!("cannot start the producer: {error}")));
                    self.metrics.set_unreachable(Side::Target, Probe::Produce, Some(error.to_string()));
                    tracing::warn!(flow = %self.name(), %error, "cannot start the producer on the target; retrying in {RESET_BACKOFF:?}");
                    self.explain_blocked_transaction(&error);
                    tokio::select! {
                        _ = tokio::time::sleep(RESET_BACKOFF) => {}
                        _ = stop.changed() => {}
                    }
                    return Ok(());
                }
            }
        }
        self.track_partitions().await;
        self.launch_fetches().await;
        self.launch_round();
        tokio::select! {
            Some(joined) = self.fetches.join_next_with_id(), if !self.fetches.is_empty() => self.on_fetched(joined).await,
            Some(joined) = self.placements.join_next(), if !self.placements.is_empty() => self.on_placed(joined),
            joined = async { self.round.as_mut().expect("guarded").await }, if self.round.is_some() => {
                self.round = None;
                return self.on_round(joined);
            }
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
            _ = self.topics.changed() => self.tracked_at = None,
        }
        Ok(())
    }

    /// Stops fetching and gives the round in flight a moment to end.
    async fn shutdown(&mut self) {
        self.fetches.abort_all();
        self.placements.abort_all();
        if let Some(mut round) = self.round.take() {
            match tokio::time::timeout(STOP_GRACE, &mut round).await {
                Ok(joined) => {
                    let _ = self.on_round(joined);
                }
                Err(_) => {
                    round.abort();
                    tracing::warn!(flow = %self.name(), "stopping with a transaction round still in flight; it is aborted");
                    self.abort_open_transaction().await;
                }
            }
        }
        if self.transactional() {
            tracing::info!(flow = %self.name(), "stopped: no transaction left open");
        }
    }

    /// Best effort, bounded: the next InitProducerId or the coordinator's timeout aborts
    /// the transaction anyway.
    async fn abort_open_transaction(&self) {
        let Some(producer) = self.producers.as_ref().map(producer::Producers::current) else { return };
        if let Some(id) = &producer.transactional_id {
            let abort = self.target.end_txn(id, producer.identity, false);
            let _ = tokio::time::timeout(Duration::from_secs(1), abort).await;
        }
    }
}

/// Logs the totals every [`REPORT_EVERY`] while they move.
#[derive(Default)]
struct Reporter {
    reported_at: Option<Instant>,
    records: u64,
}

impl Reporter {
    fn maybe_report(&mut self, flow: &str, shard: Shard, t: Totals) {
        let due = self.reported_at.is_none_or(|at| at.elapsed() >= REPORT_EVERY);
        if due && t.records != self.records {
            tracing::info!(
                flow,
                shard = %shard,
                records = t.records,
                bytes = t.bytes,
                batches = t.batches,
                rewritten = t.rewritten,
                coalesced = t.coalesced,
                transactions = t.transactions,
                aborted = t.aborted,
                lost = t.lost,
                "replicated so far"
            );
            self.reported_at = Some(Instant::now());
            self.records = t.records;
        }
    }
}
