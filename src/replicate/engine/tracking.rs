//! Which source partitions the flow replicates: those of the topics topic sync planned,
//! each with its start position when it has no progress (resolved once and committed with
//! the next round, so it is never resolved again), and the partitions whose source was
//! reset under kferry (the topic recreated, the log truncated below kferry's position),
//! handled by the flow's `on_source_reset` policy. A topic that cannot be looked at now is
//! skipped and looked at again later: it never holds back the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::partition::{PartitionState, SourcePartition};
use super::{Replicator, TopicPlan};
use crate::client::{ClientError, Cluster, Isolation, OffsetSpec};
use crate::config::{OnSourceReset, StartPosition};
use crate::metrics::PartitionPhase;

/// How often the replicated partitions are compared with the plan and the source's
/// metadata (partition increases, recreated topics) when the plan did not change.
const TRACK_EVERY: Duration = Duration::from_secs(2);

impl Replicator {
    /// Adds new partitions, drops those no longer replicated, and notices recreated
    /// source topics.
    pub(super) async fn track_partitions(&mut self) {
        if self.producers.is_none() || self.tracked_at.is_some_and(|at| at.elapsed() < TRACK_EVERY) {
            return;
        }
        // Before topic sync's first plan nothing is known to be dropped or added.
        let Some(topics) = self.topics.borrow().clone() else { return };
        self.tracked_at = Some(Instant::now());
        self.park_unplanned(&topics);
        for (source_topic, target_topic) in &topics {
            if let Err(error) = self.track_topic(source_topic, target_topic).await {
                tracing::warn!(flow = %self.name(), topic = %source_topic, %error, "cannot look at the source topic now; its new partitions wait");
            }
        }
    }

    /// Parks the partitions of topics no longer planned, with their committed progress
    /// (what was fetched beyond it is dropped). One in a round waits for the round's
    /// outcome, so the progress it parks with is the one on the target.
    fn park_unplanned(&mut self, topics: &TopicPlan) {
        let unplanned: Vec<SourcePartition> = self
            .partitions
            .iter()
            .filter(|((topic, _), state)| !topics.contains_key(topic) && !state.in_round)
            .map(|(key, _)| key.clone())
            .collect();
        for key in unplanned {
            let mut state = self.partitions.remove(&key).expect("listed above");
            state.rewind();
            state.fetching = false;
            if state.committed_on_target {
                self.parked.insert(key, state);
            }
        }
    }

    async fn track_topic(&mut self, source_topic: &str, target_topic: &str) -> Result<(), ClientError> {
        let info = self.source.topic(source_topic).await?;
        let mut placing = 0;
        for &partition in info.partitions.keys() {
            if !self.shard.owns(&self.flow, source_topic, partition) {
                continue;
            }
            let key = (source_topic.to_string(), partition);
            match self.partitions.get_mut(&key) {
                Some(state) if state.source_topic_id.is_nil() => state.source_topic_id = info.id,
                Some(state) if state.source_topic_id != info.id && !info.id.is_nil() => {
                    let reason = format!(
                        "the source topic was deleted and recreated (topic id {} is now {})",
                        state.source_topic_id, info.id
                    );
                    let new_id = info.id;
                    self.source_reset(&key, reason, Some(new_id)).await?;
                }
                Some(_) => {}
                None if self.parked.get(&key).is_some_and(|p| p.target_topic == *target_topic) => {
                    let state = self.parked.remove(&key).expect("checked");
                    tracing::debug!(flow = %self.name(), topic = %source_topic, partition, offset = state.committed, "partition resumes at its progress");
                    self.partitions.insert(key, state);
                }
                None if self.placing.contains(&key) => {}
                None => {
                    // Resolved in a task of its own: a partition whose leader cannot answer
                    // (a broker cut off) waits without holding up the scheduler or the
                    // topic's other partitions.
                    self.placing.insert(key.clone());
                    let (source, start, flow) = (Arc::clone(&self.source), self.flow.start, self.name());
                    let (topic, target) = (source_topic.to_string(), target_topic.to_string());
                    let id = info.id;
                    self.placements.spawn(async move {
                        let offset = start_position(&flow, &source, start, &topic, partition).await;
                        Placement { source: (topic, partition), target_topic: target, source_topic_id: id, offset }
                    });
                    placing += 1;
                }
            }
        }
        if placing > 0 {
            tracing::info!(flow = %self.name(), topic = %source_topic, partitions = placing, start = ?self.flow.start, "replication of new partitions starts");
        }
        Ok(())
    }

    /// A new partition's start position was found (it starts replicating), or the source
    /// refused it for a reason retrying does not cure (an authorization error): tried again
    /// at the next tracking pass.
    pub(super) fn on_placed(&mut self, joined: Result<Placement, tokio::task::JoinError>) {
        let Ok(placement) = joined else {
            // A lost task (a panic): every partition waiting is placed afresh next pass.
            self.placing.clear();
            return;
        };
        let Placement { source, target_topic, source_topic_id, offset } = placement;
        self.placing.remove(&source);
        let planned = self.topics.borrow().as_ref().is_some_and(|t| t.get(&source.0) == Some(&target_topic));
        if !planned || self.partitions.contains_key(&source) {
            return;
        }
        match offset {
            Ok(start) => {
                tracing::debug!(flow = %self.name(), topic = %source.0, partition = source.1, offset = start, "replication of a new partition starts");
                self.partitions.insert(source, PartitionState::new(target_topic, source_topic_id, start));
            }
            Err(error) => {
                tracing::error!(flow = %self.name(), topic = %source.0, partition = source.1, %error, "the source refuses the partition's start position; tried again at the next tracking pass");
            }
        }
    }

    /// The source answered OFFSET_OUT_OF_RANGE at the partition's fetch position: either
    /// retention deleted records kferry had not copied (counted and reported, replication
    /// resumes at the log start, as a consumer with `auto.offset.reset=earliest` would), or
    /// the log now ends below kferry's position (truncated, or recreated): a source reset.
    pub(super) async fn out_of_range(&mut self, key: &SourcePartition) -> Result<(), ClientError> {
        let Some(position) = self.partitions.get(key).map(|p| p.fetch_position) else { return Ok(()) };
        let start = self.source.list_offset(&key.0, key.1, OffsetSpec::Earliest, Isolation::ReadUncommitted).await?;
        let end = self.source.list_offset(&key.0, key.1, OffsetSpec::Latest, Isolation::ReadUncommitted).await?;
        if position < start {
            let lost = start - position;
            self.totals.lost += lost as u64;
            self.metrics.lost(lost as u64);
            tracing::error!(flow = %self.name(), topic = %key.0, partition = key.1, lost, from = position, to = start, "source deleted records before they were replicated (retention); resuming at the log start");
            if let Some(state) = self.partitions.get_mut(key) {
                state.fetch_position = start;
            }
        } else if position > end {
            let reason = format!("the source log ends at offset {end}, below kferry's position {position} (truncated, e.g. by an unclean leader election, or recreated)");
            self.source_reset(key, reason, None).await?;
        }
        Ok(())
    }

    /// Applies `on_source_reset` to a partition whose source was reset.
    async fn source_reset(
        &mut self,
        key: &SourcePartition,
        reason: String,
        new_topic_id: Option<uuid::Uuid>,
    ) -> Result<(), ClientError> {
        let policy = self.flow.on_source_reset;
        let now = Instant::now();
        match policy {
            OnSourceReset::Fail => {
                let Some(state) = self.partitions.get_mut(key) else { return Ok(()) };
                let message = format!("{reason}; partition stopped (on_source_reset: fail). Set `on_source_reset: restart_from_log_start` to copy it again from its log start");
                if state.stop(PartitionPhase::SourceReset, message.clone(), now) {
                    tracing::error!(flow = %self.flow.name(), topic = %key.0, partition = key.1, committed = state.committed, "source reset: {message}");
                }
            }
            OnSourceReset::RestartFromLogStart => {
                // Noticed by the fetch position (no id given): the topic's id now, so the
                // same reset is not noticed again by its id and copied a second time.
                let new_topic_id = match new_topic_id {
                    Some(id) => Some(id),
                    None => Some(self.source.topic(&key.0).await?.id),
                };
                let start =
                    self.source.list_offset(&key.0, key.1, OffsetSpec::Earliest, Isolation::ReadCommitted).await?;
                let Some(state) = self.partitions.get_mut(key) else { return Ok(()) };
                tracing::error!(flow = %self.flow.name(), topic = %key.0, partition = key.1, was = state.committed, restart = start, "source reset: {reason}; copying it again from its log start (on_source_reset: restart_from_log_start)");
                if let Some(id) = new_topic_id {
                    state.source_topic_id = id;
                }
                state.restart_at(start);
            }
        }
        Ok(())
    }
}

/// A new partition's start position, resolved off the scheduler's loop.
pub(super) struct Placement {
    source: SourcePartition,
    target_topic: String,
    source_topic_id: uuid::Uuid,
    offset: Result<i64, ClientError>,
}

/// First pause after a start position could not be found; doubled up to [`MAX_PLACE_BACKOFF`].
const FIRST_PLACE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_PLACE_BACKOFF: Duration = Duration::from_secs(5);

/// Where a partition without progress starts, per the flow's `start`: asked until the
/// source answers (the task is dropped when the flow stops). The first failure is logged
/// at once, naming the partition and the broker, so a partition that waits is never silent.
async fn start_position(
    flow: &str,
    source: &Cluster,
    start: StartPosition,
    topic: &str,
    partition: i32,
) -> Result<i64, ClientError> {
    let (mut backoff, mut attempt) = (FIRST_PLACE_BACKOFF, 0u32);
    loop {
        attempt = attempt.saturating_add(1);
        match start_position_once(source, start, topic, partition).await {
            Ok(offset) => {
                if attempt > 1 {
                    tracing::info!(
                        flow,
                        topic,
                        partition,
                        offset,
                        attempts = attempt,
                        "the source answered: the partition starts"
                    );
                }
                return Ok(offset);
            }
            Err(error) if error.is_retriable() => {
                if attempt == 1 {
                    tracing::warn!(flow, topic, partition, %error, "partition waits for its start position: the source cannot answer for it now; retried with backoff");
                }
                source.invalidate_metadata();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_PLACE_BACKOFF);
            }
            Err(error) => return Err(error),
        }
    }
}

async fn start_position_once(
    source: &Cluster,
    start: StartPosition,
    topic: &str,
    partition: i32,
) -> Result<i64, ClientError> {
    let spec = match start {
        StartPosition::Earliest => OffsetSpec::Earliest,
        StartPosition::Latest => OffsetSpec::Latest,
        StartPosition::Timestamp(ms) => OffsetSpec::Timestamp(ms),
    };
    let offset = source.list_offset_once(topic, partition, spec, Isolation::ReadCommitted).await?;
    if offset >= 0 {
        return Ok(offset);
    }
    // No record at or after the timestamp yet: start at the end.
    source.list_offset_once(topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted).await
}
