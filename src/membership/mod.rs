//! Several `kferry run` processes sharing the flows (the `group` config section), through
//! Kafka's own group protocol on one cluster, as Kafka Connect's workers do: no coordinator
//! of kferry's own.
//!
//! The unit of work is a shard of a flow ([`crate::replicate::shard`]): it has its own
//! transactional id, state partition and progress, so any process can take it over and the
//! new owner's InitProducerId fences the old one. The group leader assigns shards
//! ([`assign`]), members replicate what they were given and report what they run in their
//! next JoinGroup ([`wire`]), and [`member`] is the loop that keeps a process in the group.
//! What the rest of `run` sees is an [`Ownership`]: which shards to replicate now, and
//! whether this process is the leader (topic sync and group-offset sync run there only).
//! A process without `group` owns every shard and is its own leader.

pub mod assign;
pub mod member;
pub mod wire;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::replicate::shard::Shard;

/// One shard of one flow: what the group assigns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Unit {
    /// The flow's name (`source->target`).
    pub flow: String,
    pub shard: u16,
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} shard {}", self.flow, self.shard)
    }
}

/// Every shard of every flow in `config`.
pub fn units(config: &Config) -> BTreeSet<Unit> {
    config
        .flows
        .iter()
        .flat_map(|flow| Shard::all(flow).map(move |shard| Unit { flow: flow.name(), shard: shard.index }))
        .collect()
}

/// What this process replicates now, as the group last decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The group generation that assigned it (0 for a process without a group).
    pub generation: i32,
    /// Whether this process runs topic sync and group-offset sync.
    pub leader: bool,
    pub units: BTreeSet<Unit>,
}

impl Ownership {
    /// Nothing yet: a member before its first assignment, or one that lost its group.
    pub fn none() -> Self {
        Self { generation: -1, leader: false, units: BTreeSet::new() }
    }

    /// The shards of flow `flow` this process replicates.
    pub fn shards_of(&self, flow: &str) -> BTreeSet<u16> {
        self.units.iter().filter(|u| u.flow == flow).map(|u| u.shard).collect()
    }
}

/// The shards of one flow.
pub fn units_of_flow(flow: &crate::config::FlowConfig) -> BTreeSet<Unit> {
    Shard::all(flow).map(|shard| Unit { flow: flow.name(), shard: shard.index }).collect()
}

/// A flow's side of its process's membership: which of its shards to run, where to say
/// which run, and how to ask for a new generation.
#[derive(Clone)]
pub struct Assignments {
    ownership: watch::Receiver<Ownership>,
    running: Arc<watch::Sender<BTreeSet<Unit>>>,
    rejoin: Arc<Notify>,
    grouped: bool,
    /// A process alone holds its never-changing ownership's sender here, so the channel
    /// stays open (a closed one means "stop").
    _fixed: Option<Arc<watch::Sender<Ownership>>>,
}

/// The member loop's side of the same: what it publishes and what it watches.
pub struct MemberChannels {
    pub ownership: watch::Sender<Ownership>,
    pub running: watch::Receiver<BTreeSet<Unit>>,
    pub rejoin: Arc<Notify>,
}

impl Assignments {
    /// A process alone with `units`: they are all its own, for good.
    pub fn alone(units: BTreeSet<Unit>) -> Self {
        let (sender, ownership) = watch::channel(Ownership { generation: 0, leader: true, units });
        let (mut assignments, _) = Self::with(ownership, false);
        assignments._fixed = Some(Arc::new(sender));
        assignments
    }

    /// A member of a group: nothing owned until the group assigns it.
    pub fn grouped() -> (Self, MemberChannels) {
        let (sender, ownership) = watch::channel(Ownership::none());
        let (assignments, running) = Self::with(ownership, true);
        let channels = MemberChannels { ownership: sender, running, rejoin: Arc::clone(&assignments.rejoin) };
        (assignments, channels)
    }

    fn with(ownership: watch::Receiver<Ownership>, grouped: bool) -> (Self, watch::Receiver<BTreeSet<Unit>>) {
        let (running, watched) = watch::channel(BTreeSet::new());
        let assignments =
            Self { ownership, running: Arc::new(running), rejoin: Arc::new(Notify::new()), grouped, _fixed: None };
        (assignments, watched)
    }

    /// What the group assigned this process, and its changes.
    pub fn ownership(&self) -> watch::Receiver<Ownership> {
        self.ownership.clone()
    }

    /// Whether this process shares its flows with others (a shard fenced by another
    /// process is then theirs now, not a reason to stop the flow).
    pub fn is_grouped(&self) -> bool {
        self.grouped
    }

    /// Whether this process runs topic and group-offset sync now.
    pub fn is_leader(&self) -> bool {
        self.ownership.borrow().leader
    }

    pub fn started(&self, unit: Unit) {
        self.running.send_modify(|running| {
            running.insert(unit);
        });
    }

    pub fn stopped(&self, unit: &Unit) {
        self.running.send_modify(|running| {
            running.remove(unit);
        });
    }

    /// Asks the member loop to join the group again.
    pub fn request_rejoin(&self) {
        self.rejoin.notify_one();
    }
}
