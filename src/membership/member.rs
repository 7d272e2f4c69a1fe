//! The loop that keeps one `kferry run` process in its group: join, sync (assigning, when
//! this process leads), heartbeat, and join again when the coordinator asks; publish what
//! the process owns after each step; leave on the way out.
//!
//! The rules that keep two processes from replicating one shard at once:
//! - A shard dropped from this process's assignment is stopped, and the process joins again
//!   only once it has stopped; the leader gives it to another process no earlier than that
//!   next generation ([`super::assign`]).
//! - A process that has not heard from the coordinator for a session timeout (paused,
//!   cut off) stops every shard before anything else: by then the group has moved them.
//! - If both fail (a process frozen mid-write), the new owner's InitProducerId has fenced
//!   the old producer, whose writes the target then refuses.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::assign::{assign, Candidate};
use super::wire::{MemberAssignment, MemberMetadata, PROTOCOL_NAME, PROTOCOL_TYPE};
use super::{MemberChannels, Ownership, Unit};
use crate::client::{ClientError, Cluster, JoinRequest, Joined, Member};
use crate::metrics::MembershipMetrics;
use crate::protocol::error_code::ResponseError;

/// How long the coordinator waits for every member to join again in a rebalance; a member
/// stops the shards it loses well within it (a replicator stops within a few seconds).
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeats at most this far apart (Kafka's default `heartbeat.interval.ms`).
const HEARTBEAT_MAX: Duration = Duration::from_secs(3);
/// Pause after a failed call before the next attempt.
const RETRY: Duration = Duration::from_secs(1);
/// How long leaving waits for the shards to stop and for LeaveGroup (inside the 5 s a
/// SIGTERM allows).
const LEAVE_WAIT: Duration = Duration::from_millis(3_500);

/// One process's membership of its group.
pub struct GroupMember {
    cluster: Arc<Cluster>,
    group: String,
    session_timeout: Duration,
    layout: String,
    units: BTreeSet<Unit>,
    member: Member,
    /// What the flows must replicate: written here, read by every flow.
    ownership: watch::Sender<Ownership>,
    /// What the flows replicate right now: written by them, read here before rejoining.
    running: watch::Receiver<BTreeSet<Unit>>,
    /// A flow asks for a new generation (one of its shards was fenced by another process).
    rejoin: Arc<Notify>,
    metrics: Arc<MembershipMetrics>,
}

/// Why this process is not in a generation right now, as the coordinator said.
enum Setback {
    /// Join again (a rebalance started, the coordinator moved, a call failed).
    Rejoin,
    /// The group no longer knows this member: its shards may be elsewhere already.
    Expelled,
}

impl GroupMember {
    pub fn new(
        cluster: Arc<Cluster>,
        config: &crate::config::GroupConfig,
        layout: String,
        units: BTreeSet<Unit>,
        channels: MemberChannels,
        metrics: Arc<MembershipMetrics>,
    ) -> Self {
        let MemberChannels { ownership, running, rejoin } = channels;
        Self {
            cluster,
            group: config.id.clone(),
            session_timeout: Duration::from_millis(u64::from(config.session_timeout_ms)),
            layout,
            units,
            member: Member {
                member_id: String::new(),
                instance_id: config.instance_id.as_ref().map(|id| id.as_str().to_string()),
            },
            ownership,
            running,
            rejoin,
            metrics,
        }
    }

    fn heartbeat_interval(&self) -> Duration {
        (self.session_timeout / 3).min(HEARTBEAT_MAX)
    }

    /// Runs until `stopped`, then stops every shard and leaves the group.
    pub async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut last_contact = Instant::now();
        'generations: loop {
            if *stopped.borrow() {
                break;
            }
            if last_contact.elapsed() > self.session_timeout && !self.owned().is_empty() {
                self.drop_all("no answer from the group coordinator for longer than the session timeout").await;
            }
            let joined = tokio::select! {
                joined = self.join() => joined,
                _ = stopped.wait_for(|stop| *stop) => break,
            };
            let joined = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    self.setback("JoinGroup", &e).await;
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => continue,
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                }
            };
            let assignment = match self.sync(&joined).await {
                Ok(assignment) => assignment,
                Err(e) => {
                    if matches!(self.setback("SyncGroup", &e).await, Setback::Expelled) {
                        tokio::time::sleep(RETRY).await;
                    }
                    continue;
                }
            };
            last_contact = Instant::now();
            if let Some(reason) = &assignment.refused {
                tracing::error!(group = %self.group, "the group's leader gives this process no shards: {reason}");
            }
            let revoked: BTreeSet<Unit> = self.owned().difference(&assignment.units).cloned().collect();
            let units: Vec<String> = assignment.units.iter().map(Unit::to_string).collect();
            tracing::info!(
                group = %self.group, generation = joined.generation, leader = joined.is_leader(), member = %self.member.member_id,
                shards = %units.join(", "), "joined the group"
            );
            self.metrics.assigned(joined.generation, joined.is_leader(), assignment.units.len());
            self.ownership.send_replace(Ownership {
                generation: joined.generation,
                leader: joined.is_leader(),
                units: assignment.units,
            });
            if !revoked.is_empty() {
                // The leader hands these to another process in the next generation, which
                // this process starts by joining again once they have stopped.
                self.wait_stopped(&revoked).await;
                continue;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.heartbeat_interval()) => {}
                    _ = self.rejoin.notified() => continue 'generations,
                    _ = stopped.wait_for(|stop| *stop) => break 'generations,
                }
                if last_contact.elapsed() > self.session_timeout {
                    // Paused or cut off: the group has moved these shards by now.
                    self.drop_all("no heartbeat answered for longer than the session timeout").await;
                    continue 'generations;
                }
                match self.cluster.heartbeat(&self.group, joined.generation, &self.member).await {
                    Ok(()) => last_contact = Instant::now(),
                    Err(e) => match group_code(&e) {
                        Some(ResponseError::RebalanceInProgress) => continue 'generations,
                        Some(_) if matches!(self.setback("Heartbeat", &e).await, Setback::Expelled) => {
                            continue 'generations
                        }
                        _ => tracing::debug!(group = %self.group, error = %e, "heartbeat failed; trying again"),
                    },
                }
            }
        }
        self.leave().await;
    }

    fn owned(&self) -> BTreeSet<Unit> {
        self.ownership.borrow().units.clone()
    }

    async fn join(&mut self) -> Result<Joined, ClientError> {
        let request = JoinRequest {
            group: self.group.clone(),
            member: self.member.clone(),
            session_timeout: self.session_timeout,
            rebalance_timeout: REBALANCE_TIMEOUT,
            protocol_type: PROTOCOL_TYPE,
            protocol_name: PROTOCOL_NAME,
            metadata: MemberMetadata::new(self.layout.clone(), self.owned()).encode(),
        };
        let joined = self.cluster.join_group(&request).await?;
        self.member.member_id = joined.member_id.clone();
        Ok(joined)
    }

    /// SyncGroup, with every member's assignment when this process leads.
    async fn sync(&self, joined: &Joined) -> Result<MemberAssignment, ClientError> {
        let assignments = if joined.is_leader() { self.lead(joined) } else { Vec::new() };
        let bytes = self
            .cluster
            .sync_group(&self.group, joined.generation, &self.member, (PROTOCOL_TYPE, PROTOCOL_NAME), assignments)
            .await?;
        Ok(MemberAssignment::decode(&bytes).unwrap_or_else(|e| {
            tracing::error!(group = %self.group, error = %e, "the group's assignment is unreadable: replicating nothing until the next one");
            MemberAssignment::new("", BTreeSet::new(), Some(e.to_string()))
        }))
    }

    /// The leader's part: every member's shards, from what each runs now.
    fn lead(&self, joined: &Joined) -> Vec<(String, bytes::Bytes)> {
        let mut refusals = std::collections::BTreeMap::new();
        let candidates: Vec<Candidate> = joined
            .members
            .iter()
            .map(|m| {
                let metadata = MemberMetadata::decode(&m.metadata);
                let refusal = match &metadata {
                    Ok(metadata) if metadata.layout == self.layout => None,
                    Ok(metadata) => Some(format!(
                        "its flows and shards ({}) differ from the leader's ({}): give every process the same config",
                        metadata.layout, self.layout
                    )),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(refusal) = &refusal {
                    tracing::error!(group = %self.group, member = %m.member_id, "member gets no shards: {refusal}");
                    refusals.insert(m.member_id.clone(), refusal.clone());
                }
                Candidate {
                    member_id: m.member_id.clone(),
                    owned: metadata.map(|m| m.owned).unwrap_or_default(),
                    compatible: refusal.is_none(),
                }
            })
            .collect();
        let assignment = assign(&self.units, &candidates);
        for (member, waiting) in &assignment.pending {
            let waiting: Vec<String> = waiting.iter().map(Unit::to_string).collect();
            tracing::info!(group = %self.group, member = %member, shards = %waiting.join(", "), "moving once their owner has stopped them");
        }
        assignment
            .now
            .into_iter()
            .map(|(member, units)| {
                let refused = refusals.remove(&member);
                (member, MemberAssignment::new(&joined.leader_id, units, refused).encode())
            })
            .collect()
    }

    /// What an error from the coordinator means for this member.
    async fn setback(&mut self, api: &str, error: &ClientError) -> Setback {
        match group_code(error) {
            Some(ResponseError::RebalanceInProgress) => Setback::Rejoin,
            Some(ResponseError::UnknownMemberId | ResponseError::IllegalGeneration) => {
                tracing::warn!(group = %self.group, member = %self.member.member_id, "{api}: the group no longer knows this member ({error}); stopping its shards and joining again");
                self.member.member_id.clear();
                self.drop_all("expelled from the group").await;
                Setback::Expelled
            }
            Some(ResponseError::FencedInstanceId) => {
                tracing::error!(group = %self.group, instance_id = ?self.member.instance_id, "{api}: another process joined with this process's instance_id ({error}); two processes must not share one: stopping its shards");
                self.member.member_id.clear();
                self.drop_all("fenced by another process with the same instance_id").await;
                Setback::Expelled
            }
            // A coordinator starting or moving (a new group, a broker restarting) answers
            // like this for a moment: not worth a warning unless it lasts.
            _ if error.is_retriable() => {
                tracing::info!(group = %self.group, "{api} failed: {error}; trying again");
                Setback::Rejoin
            }
            _ => {
                tracing::warn!(group = %self.group, "{api} failed: {error}; trying again");
                Setback::Rejoin
            }
        }
    }

    /// Stops every shard and waits for them to stop.
    async fn drop_all(&mut self, why: &str) {
        let owned = self.owned();
        if owned.is_empty() {
            return;
        }
        tracing::warn!(group = %self.group, shards = owned.len(), "stopping every shard of this process: {why}");
        self.metrics.assigned(-1, false, 0);
        self.ownership.send_replace(Ownership::none());
        self.wait_stopped(&owned).await;
    }

    /// Waits, up to the rebalance timeout, until none of `units` runs any more.
    async fn wait_stopped(&mut self, units: &BTreeSet<Unit>) {
        if !self.wait_stopped_within(units, REBALANCE_TIMEOUT).await {
            tracing::warn!(group = %self.group, "shards still running {REBALANCE_TIMEOUT:?} after they were dropped; joining anyway (the next owner fences them)");
        }
    }

    /// Whether none of `units` runs any more within `limit`.
    async fn wait_stopped_within(&mut self, units: &BTreeSet<Unit>, limit: Duration) -> bool {
        let stopped = self.running.wait_for(|running| running.is_disjoint(units));
        tokio::time::timeout(limit, stopped).await.is_ok()
    }

    /// Stops every shard, then leaves the group (a dynamic member; a static one keeps its
    /// place for a restart within the session timeout, as KIP-345 intends).
    async fn leave(&mut self) {
        self.ownership.send_replace(Ownership::none());
        let all = self.units.clone();
        self.wait_stopped_within(&all, LEAVE_WAIT).await;
        if self.member.instance_id.is_some() || self.member.member_id.is_empty() {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(1), self.cluster.leave_group(&self.group, &self.member)).await {
            Ok(Ok(())) => tracing::info!(group = %self.group, "left the group"),
            Ok(Err(e)) => {
                tracing::warn!(group = %self.group, error = %e, "LeaveGroup failed; the group notices within the session timeout")
            }
            Err(_) => {
                tracing::warn!(group = %self.group, "LeaveGroup unanswered; the group notices within the session timeout")
            }
        }
    }
}

/// The Kafka error code of a group call's error, if it has one.
fn group_code(error: &ClientError) -> Option<ResponseError> {
    match error {
        ClientError::Group { code, .. } => Some(code.0),
        _ => None,
    }
}
