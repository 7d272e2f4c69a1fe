//! What kferry tells an operator without a log line: the counters, gauges and histograms
//! of every flow, their Prometheus text exposition, and the health and readiness answers
//! of the HTTP endpoints (`metrics.listen`).
//!
//! One struct per concept: [`Registry`] (the process), [`FlowMetrics`] (one flow: its
//! throughput, rounds, latency, errors, state, group and topic sync) and
//! [`PartitionMetrics`] (one source partition: lag, state). The engine resolves a handle
//! once (a flow's at start, a partition's when it is first replicated) and then only
//! touches atomics: no lock per record, none per batch. The few maps behind a mutex
//! (errors, partitions, the latency histogram) are written once per round or per error.
//!
//! This module owns no I/O but the listener in [`http`]; it knows nothing of Kafka beyond
//! the names it is given.

mod exposition;
mod health;
mod histogram;
pub mod http;
mod lag;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub use health::{Health, Readiness};
use histogram::{Buckets, Latency};
pub use lag::LagClock;

/// A lock whose holder panicked still holds consistent counters: keep using it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every flow's metrics in one process.
#[derive(Debug)]
pub struct Registry {
    /// Per-partition series (lag, offsets, records) on `/metrics`; off for very large flows.
    per_partition: bool,
    /// The clock of every heartbeat and lag age in this registry.
    epoch: Instant,
    flows: Mutex<Vec<Arc<FlowMetrics>>>,
    /// This process's place in its group (the config's `group`), once it has one.
    membership: Mutex<Option<Arc<MembershipMetrics>>>,
}

/// A process's membership of its group: what `kferry_group_*` show.
#[derive(Debug)]
pub struct MembershipMetrics {
    pub group: String,
    /// The generation of the last assignment; -1 while the process has none.
    pub generation: AtomicI64,
    /// 1 while this process is the leader (runs topic and group-offset sync).
    pub leader: AtomicU8,
    /// Shards this process replicates, over all flows.
    pub shards: AtomicU64,
    /// Assignments received (each generation joined).
    pub rebalances: AtomicU64,
}

impl MembershipMetrics {
    /// Books an assignment of `shards` shards in `generation`.
    pub fn assigned(&self, generation: i32, leader: bool, shards: usize) {
        self.generation.store(i64::from(generation), Ordering::Relaxed);
        self.leader.store(u8::from(leader), Ordering::Relaxed);
        self.shards.store(shards as u64, Ordering::Relaxed);
        if generation >= 0 {
            self.rebalances.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Registry {
    pub fn new(per_partition: bool) -> Arc<Self> {
        Arc::new(Self {
            per_partition,
            epoch: Instant::now(),
            flows: Mutex::new(Vec::new()),
            membership: Mutex::new(None),
        })
    }

    /// Registers this process as a member of `group`; its handle is what the member loop
    /// writes to.
    pub fn membership(&self, group: &str) -> Arc<MembershipMetrics> {
        let metrics = Arc::new(MembershipMetrics {
            group: group.to_string(),
            generation: AtomicI64::new(-1),
            leader: AtomicU8::new(0),
            shards: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
        });
        *lock(&self.membership) = Some(Arc::clone(&metrics));
        metrics
    }

    fn member(&self) -> Option<Arc<MembershipMetrics>> {
        lock(&self.membership).clone()
    }

    /// Registers a flow; its handle is what the flow's loops write to.
    pub fn flow(&self, name: &str, source: &str, target: &str, buffer_limit: u64) -> Arc<FlowMetrics> {
        let flow = Arc::new(FlowMetrics::new(name, source, target, buffer_limit, self.epoch));
        lock(&self.flows).push(Arc::clone(&flow));
        flow
    }

    fn flows(&self) -> Vec<Arc<FlowMetrics>> {
        lock(&self.flows).clone()
    }

    /// The Prometheus text exposition (format 0.0.4) of everything registered.
    pub fn render(&self) -> String {
        exposition::render(self)
    }

    /// Whether the process and every running flow's loop are alive.
    pub fn health(&self) -> Health {
        health::health(self)
    }

    /// Whether every flow is replicating: no stopped flow, stalled partition or
    /// unreachable cluster.
    pub fn readiness(&self) -> Readiness {
        health::readiness(self)
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Where a flow stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum FlowState {
    /// Reaching its clusters (retried until they answer).
    Connecting = 0,
    /// Connected; the producer on the target is not started yet (or being restarted).
    #[default]
    Starting = 1,
    Replicating = 2,
    /// Stopped for good (fenced, failed over, transactions refused): needs an operator.
    Stopped = 3,
}

impl FlowState {
    /// How far from replicating: the flow shows its worst shard.
    fn severity(self) -> u8 {
        match self {
            Self::Replicating => 0,
            Self::Starting => 1,
            Self::Connecting => 2,
            Self::Stopped => 3,
        }
    }

    const ALL: [FlowState; 4] = [Self::Connecting, Self::Starting, Self::Replicating, Self::Stopped];

    fn from_u8(value: u8) -> Self {
        Self::ALL.get(usize::from(value)).copied().unwrap_or(Self::Stopped)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Starting => "starting",
            Self::Replicating => "replicating",
            Self::Stopped => "stopped",
        }
    }
}

/// Why a partition is not replicating; the `reason` label of stalled partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PartitionPhase {
    Replicating = 0,
    /// The source partition has no leader (its broker down, an election under way).
    WaitingForLeader = 1,
    /// The target cannot take its batches right now (no leader, not enough replicas).
    TargetUnavailable = 2,
    /// The target refuses a batch for good (too large, an ACL, a timestamp window).
    TargetRefused = 3,
    /// A source batch is corrupt or cannot be forwarded (an unsupported format).
    Unforwardable = 4,
    /// The source topic was recreated or truncated under kferry (`on_source_reset: fail`).
    SourceReset = 5,
}

impl PartitionPhase {
    const ALL: [PartitionPhase; 6] = [
        Self::Replicating,
        Self::WaitingForLeader,
        Self::TargetUnavailable,
        Self::TargetRefused,
        Self::Unforwardable,
        Self::SourceReset,
    ];

    fn from_u8(value: u8) -> Self {
        Self::ALL.get(usize::from(value)).copied().unwrap_or(Self::Replicating)
    }

    /// The `state` label: replicating, waiting_for_leader or stalled.
    pub fn state(self) -> &'static str {
        match self {
            Self::Replicating => "replicating",
            Self::WaitingForLeader => "waiting_for_leader",
            _ => "stalled",
        }
    }

    /// The `reason` label ("" while replicating).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Replicating => "",
            Self::WaitingForLeader => "source_no_leader",
            Self::TargetUnavailable => "target_unavailable",
            Self::TargetRefused => "target_refused",
            Self::Unforwardable => "unforwardable",
            Self::SourceReset => "source_reset",
        }
    }
}

/// How a replicated batch reached the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPath {
    /// As it came, only its header patched.
    Fast = 0,
    /// Built by merging small source batches.
    Coalesced = 1,
    /// Renumbered (compacted) or restamped (LogAppendTime).
    Rewritten = 2,
}

impl BatchPath {
    const ALL: [BatchPath; 3] = [Self::Fast, Self::Coalesced, Self::Rewritten];

    fn name(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Coalesced => "coalesced",
            Self::Rewritten => "rewritten",
        }
    }
}

/// A step of a transaction round, timed apart so a slow round shows which call it waited on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundStep {
    /// AddPartitionsToTxn (exactly_once).
    AddPartitions = 0,
    /// Producing the partitions' batches, retries included.
    Produce = 1,
    /// Producing the offset-map segments to the state topic.
    OffsetMap = 2,
    /// AddOffsetsToTxn and the progress commit (TxnOffsetCommit, or OffsetCommit).
    Progress = 3,
    /// EndTxn (exactly_once).
    Commit = 4,
}

impl RoundStep {
    pub const ALL: [RoundStep; 5] = [Self::AddPartitions, Self::Produce, Self::OffsetMap, Self::Progress, Self::Commit];

    pub fn name(self) -> &'static str {
        match self {
            Self::AddPartitions => "add_partitions",
            Self::Produce => "produce",
            Self::OffsetMap => "offset_map",
            Self::Progress => "progress",
            Self::Commit => "commit",
        }
    }
}

/// Which of a flow's clusters something concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    fn role(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Target => "target",
        }
    }
}

/// What found a cluster unreachable. Each clears only what it set, so one that succeeds
/// (topic sync's metadata) never hides what another still sees (a broker that cannot be
/// fetched from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Probe {
    /// Connecting to the flow's clusters at start.
    Connect = 0,
    /// Fetching from the source's brokers.
    Fetch = 1,
    /// Starting the producer and committing rounds on the target.
    Produce = 2,
    /// Topic sync reading either cluster.
    TopicSync = 3,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Fetch => "fetch",
            Self::Produce => "produce",
            Self::TopicSync => "topic_sync",
        }
    }
}

/// One flow's metrics.
#[derive(Debug)]
pub struct FlowMetrics {
    name: String,
    source: String,
    target: String,
    epoch: Instant,
    state: AtomicU8,
    /// Why the flow stopped, or which cluster it cannot reach while connecting.
    state_detail: Mutex<Option<String>>,
    /// Milliseconds since the registry's epoch of the flow loop's last turn.
    heartbeat: AtomicU64,
    /// Why a cluster is unreachable, by what found it so, while it is.
    unreachable: Mutex<BTreeMap<(Side, Probe), String>>,
    /// Per side, a bit per [`Probe`] that finds it unreachable: a healthy flow never takes
    /// the lock above.
    down: [AtomicU8; 2],
    records: AtomicU64,
    bytes: AtomicU64,
    batches: [AtomicU64; 3],
    transactions_committed: AtomicU64,
    transactions_aborted: AtomicU64,
    /// Source records deleted by retention before kferry copied them.
    records_lost: AtomicU64,
    rounds: Buckets,
    /// Per [`RoundStep`], the time rounds spent in it.
    round_steps: [Buckets; RoundStep::ALL.len()],
    latency: Mutex<Latency>,
    buffer_limit: u64,
    /// The flow's replicators, one per shard (one for an unsplit flow), by shard index:
    /// their state and gauges. The flow is as far along as its worst shard.
    shards: Mutex<BTreeMap<u16, ShardGauges>>,
    /// Per side, the milliseconds of throttle time the cluster's brokers asked for (quotas).
    quota_throttle_millis: [AtomicU64; 2],
    /// Per side, connections opened and failed per broker, as last published.
    connections: Mutex<[Vec<BrokerConnections>; 2]>,
    /// Errors by cluster alias and Kafka error code (or a kind for errors without one).
    errors: Mutex<BTreeMap<(String, String), u64>>,
    partitions: Mutex<BTreeMap<(String, i32), Arc<PartitionMetrics>>>,
    pub groups: GroupSyncMetrics,
    pub topics: TopicSyncMetrics,
}

impl FlowMetrics {
    fn new(name: &str, source: &str, target: &str, buffer_limit: u64, epoch: Instant) -> Self {
        Self {
            name: name.to_string(),
            source: source.to_string(),
            target: target.to_string(),
            epoch,
            state: AtomicU8::new(FlowState::Connecting as u8),
            state_detail: Mutex::new(None),
            heartbeat: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            unreachable: Mutex::new(BTreeMap::new()),
            down: Default::default(),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            batches: Default::default(),
            transactions_committed: AtomicU64::new(0),
            transactions_aborted: AtomicU64::new(0),
            records_lost: AtomicU64::new(0),
            rounds: Buckets::seconds(),
            round_steps: std::array::from_fn(|_| Buckets::seconds()),
            latency: Mutex::new(Latency::new()),
            buffer_limit,
            shards: Mutex::new(BTreeMap::new()),
            quota_throttle_millis: Default::default(),
            connections: Mutex::default(),
            errors: Mutex::new(BTreeMap::new()),
            partitions: Mutex::new(BTreeMap::new()),
            groups: GroupSyncMetrics::default(),
            topics: TopicSyncMetrics::default(),
        }
    }

    /// A flow's metrics registered nowhere: what a flow run outside `kferry run` writes to.
    pub fn detached(name: &str, source: &str, target: &str, buffer_limit: u64) -> Arc<Self> {
        Arc::new(Self::new(name, source, target, buffer_limit, Instant::now()))
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The flow's loop is alive.
    pub fn beat(&self) {
        self.heartbeat.store(self.now(), Ordering::Relaxed);
    }

    /// The flow's state before its replicators run (connecting, starting) and when it is
    /// stopped from outside them.
    pub fn set_state(&self, state: FlowState, detail: Option<String>) {
        self.state.store(state as u8, Ordering::Relaxed);
        *lock(&self.state_detail) = detail;
        self.beat();
    }

    /// The state of one shard's replicator (`detail` already names the shard if the flow
    /// has several).
    pub fn set_shard_state(&self, shard: u16, state: FlowState, detail: Option<String>) {
        let mut shards = lock(&self.shards);
        let gauges = shards.entry(shard).or_default();
        gauges.state = state;
        gauges.detail = detail;
        drop(shards);
        self.beat();
    }

    /// The flow's state and why: stopped from outside, else its worst shard, else (before
    /// any replicator ran) what the flow set.
    fn state_and_detail(&self) -> (FlowState, Option<String>) {
        let flow = FlowState::from_u8(self.state.load(Ordering::Relaxed));
        if flow != FlowState::Stopped {
            let shards = lock(&self.shards);
            if let Some(worst) = shards.values().max_by_key(|s| s.state.severity()) {
                return (worst.state, worst.detail.clone());
            }
        }
        (flow, lock(&self.state_detail).clone())
    }

    pub fn state(&self) -> FlowState {
        self.state_and_detail().0
    }

    fn state_detail(&self) -> Option<String> {
        self.state_and_detail().1
    }

    /// Marks a cluster of the flow unreachable as `probe` found it (`Some(why)`), or
    /// reachable again as far as `probe` is concerned (`None`).
    pub fn set_unreachable(&self, side: Side, probe: Probe, why: Option<String>) {
        let bit = 1u8 << (probe as u8);
        let down = &self.down[side as usize];
        // A healthy flow calls this on every success: only a change takes the lock.
        if why.is_none() && down.load(Ordering::Relaxed) & bit == 0 {
            return;
        }
        let mut unreachable = lock(&self.unreachable);
        match why {
            Some(why) => {
                down.fetch_or(bit, Ordering::Relaxed);
                unreachable.insert((side, probe), why);
            }
            None => {
                down.fetch_and(!bit, Ordering::Relaxed);
                unreachable.remove(&(side, probe));
            }
        }
    }

    fn reachable(&self, side: Side) -> bool {
        self.down[side as usize].load(Ordering::Relaxed) == 0
    }

    pub fn cluster(&self, side: Side) -> &str {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    /// Counts an error on one of the flow's clusters; `code` is a Kafka error name such as
    /// `NOT_LEADER_OR_FOLLOWER`, or a kind (`connection`, `other`) for errors without one.
    pub fn error(&self, side: Side, code: &str) {
        let cluster = self.cluster(side).to_string();
        *lock(&self.errors).entry((cluster, code.to_string())).or_default() += 1;
    }

    /// Books batches that landed on the target and were committed.
    pub fn replicated(&self, path: BatchPath, batches: u64, records: u64, bytes: u64) {
        self.batches[path as usize].fetch_add(batches, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn transaction(&self, committed: bool) {
        let counter = if committed { &self.transactions_committed } else { &self.transactions_aborted };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn lost(&self, records: u64) {
        self.records_lost.fetch_add(records, Ordering::Relaxed);
    }

    pub fn round(&self, seconds: f64) {
        self.rounds.observe(seconds);
    }

    /// Books the time one round spent in one of its steps.
    pub fn round_step(&self, step: RoundStep, seconds: f64) {
        self.round_steps[step as usize].observe(seconds);
    }

    /// Records end-to-end latencies (milliseconds, with the records each stands for) of one
    /// round, under one lock.
    pub fn latencies(&self, samples: &[(u64, u64)]) {
        if samples.is_empty() {
            return;
        }
        let mut latency = lock(&self.latency);
        for &(millis, records) in samples {
            latency.record(millis, records);
        }
    }

    /// One shard's buffer use and the time its fetches were held back by its share of
    /// `max_bytes_per_second`, so far.
    pub fn set_shard_gauges(&self, shard: u16, buffer_bytes: u64, rate_limited: std::time::Duration) {
        let mut shards = lock(&self.shards);
        let gauges = shards.entry(shard).or_default();
        gauges.buffer_bytes = buffer_bytes;
        gauges.rate_limited_millis = rate_limited.as_millis() as u64;
    }

    fn buffer_bytes(&self) -> u64 {
        lock(&self.shards).values().map(|s| s.buffer_bytes).sum()
    }

    fn rate_limited_seconds(&self) -> f64 {
        lock(&self.shards).values().map(|s| s.rate_limited_millis).sum::<u64>() as f64 / 1000.0
    }

    /// The connections to one cluster's brokers so far.
    pub fn set_connections(&self, side: Side, brokers: Vec<BrokerConnections>) {
        lock(&self.connections)[side as usize] = brokers;
    }

    /// The throttle time one cluster's brokers asked of the flow's connections, so far.
    pub fn set_quota_throttle(&self, side: Side, throttled: std::time::Duration) {
        self.quota_throttle_millis[side as usize].store(throttled.as_millis() as u64, Ordering::Relaxed);
    }

    /// The handle of one source partition, created on first use and kept (its counters
    /// never go back); [`Self::retain_partitions`] marks those no longer replicated.
    pub fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionMetrics> {
        let mut partitions = lock(&self.partitions);
        if let Some(found) = partitions.get(&(topic.to_string(), partition)) {
            return Arc::clone(found);
        }
        let created = Arc::new(PartitionMetrics::default());
        partitions.insert((topic.to_string(), partition), Arc::clone(&created));
        created
    }

    fn partitions(&self) -> Vec<((String, i32), Arc<PartitionMetrics>)> {
        lock(&self.partitions).iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }
}

/// One shard's replicator.
#[derive(Debug, Default)]
struct ShardGauges {
    state: FlowState,
    detail: Option<String>,
    buffer_bytes: u64,
    rate_limited_millis: u64,
}

/// Connections of a flow to one broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerConnections {
    /// The node id, or `bootstrap <address>` for a bootstrap server.
    pub broker: String,
    pub opened: u64,
    pub failed: u64,
}

/// One source partition.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    records: AtomicU64,
    bytes: AtomicU64,
    /// The next source offset committed on the target.
    replicated: AtomicI64,
    /// The source's last stable offset (read_committed end) kferry last saw.
    source_end: AtomicI64,
    /// Milliseconds since kferry first saw the oldest record not yet replicated; 0 when
    /// caught up.
    lag_millis: AtomicU64,
    phase: AtomicU8,
    /// Why it is not replicating, as the engine said it (`None` while it replicates).
    error: Mutex<Option<String>>,
    /// Whether `error` holds one: a replicating partition never takes its lock.
    has_error: AtomicBool,
    /// Replicated now; false once its topic is no longer planned (its gauges are dropped,
    /// its counters stay).
    active: AtomicBool,
}

impl PartitionMetrics {
    pub fn replicated(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Publishes where the partition stands.
    pub fn set(&self, replicated: i64, source_end: i64, lag_millis: u64, phase: PartitionPhase) {
        self.replicated.store(replicated, Ordering::Relaxed);
        self.source_end.store(source_end, Ordering::Relaxed);
        self.lag_millis.store(lag_millis, Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
        self.active.store(true, Ordering::Relaxed);
    }

    /// Publishes why the partition is stopped (`None`: it replicates); takes the lock only
    /// while it is stopped or just was.
    pub fn set_error(&self, error: Option<&str>) {
        if error.is_none() && !self.has_error.load(Ordering::Relaxed) {
            return;
        }
        let mut held = lock(&self.error);
        if held.as_deref() != error {
            *held = error.map(str::to_string);
        }
        self.has_error.store(error.is_some(), Ordering::Relaxed);
    }

    fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub fn deactivate(&self) {
        self.active.store(false, Ordering::Relaxed);
    }

    fn lag_records(&self) -> i64 {
        (self.source_end.load(Ordering::Relaxed) - self.replicated.load(Ordering::Relaxed)).max(0)
    }

    fn phase(&self) -> PartitionPhase {
        PartitionPhase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

/// Consumer-group offset sync of one flow.
#[derive(Debug, Default)]
pub struct GroupSyncMetrics {
    pub rounds: AtomicU64,
    /// Groups looked at (and synced where allowed), summed over rounds.
    pub groups_synced: AtomicU64,
    pub offsets_committed: AtomicU64,
    /// Groups left alone because they have members on the target.
    pub groups_skipped: AtomicU64,
    pub checkpoints: AtomicU64,
    pub errors: AtomicU64,
    /// Milliseconds since the Unix epoch of the last round that completed (0: none yet):
    /// how old the group offsets on the target may be.
    pub last_success_unix_millis: AtomicU64,
}

/// Topic sync of one flow.
#[derive(Debug, Default)]
pub struct TopicSyncMetrics {
    pub rounds: AtomicU64,
    pub topics_created: AtomicU64,
    pub partitions_added: AtomicU64,
    pub configs_changed: AtomicU64,
    pub acls_created: AtomicU64,
    /// Changes the target refused.
    pub changes_failed: AtomicU64,
    pub errors: AtomicU64,
    /// Topics not replicated because of a conflict, as of the last round.
    pub conflicts: AtomicU64,
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The resident memory of this process in bytes, from /proc/self/statm (Linux); `None`
/// elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // 4 KiB pages on every platform kferry ships for (x86-64 and arm64 Linux defaults).
    Some(pages * 4096)
}

#[cfg(test)]
mod tests;
