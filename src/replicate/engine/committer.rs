//! The committer side of the scheduler: what goes into the next transaction round, and
//! what a finished round means for each partition (progress, offset map, sequence, a
//! partition held back or stopped, the flow fenced).

use std::time::Instant;

use super::gauges;
use super::round::{self, PartitionFailure, RoundError, RoundPartition, RoundPlan, RoundReport, StatePartition};
use super::{ReplicateError, Replicator};
use crate::metrics::{PartitionPhase, Probe, Side};
use crate::protocol::error_code::ResponseError;

/// Least a round may carry per partition when the budget is shared by many.
const MIN_ROUND_BYTES_PER_PARTITION: usize = 64 * 1024;

impl Replicator {
    /// Starts a round when none is in flight and some partition has work: as soon as the
    /// previous one ended, so rounds batch whatever arrived meanwhile.
    pub(super) fn launch_round(&mut self) {
        if self.round.is_some() {
            return;
        }
        let Some(producer) = self.producers.as_ref().map(|p| p.current().clone()) else { return };
        let now = Instant::now();
        let ready: Vec<_> = self.partitions.iter().filter(|(_, p)| p.has_work(now)).map(|(k, _)| k.clone()).collect();
        if ready.is_empty() {
            return;
        }
        // A third of the budget for the round: its batches exist fetched and stamped.
        let round_budget = (self.flow.buffer_bytes / 3) as usize;
        let per_partition = (round_budget / ready.len()).max(MIN_ROUND_BYTES_PER_PARTITION);
        let mut partitions = Vec::with_capacity(ready.len());
        let mut bytes = 0;
        for key in ready {
            let state = self.partitions.get_mut(&key).expect("listed above");
            state.prune_offset_map();
            let last_segment = state.last_segment();
            let unrecorded_start = (!state.committed_on_target).then_some(state.committed);
            let (batches, progress_to) = state.take_for_round(per_partition);
            bytes += batches.iter().map(|(p, _)| p.bytes()).sum::<usize>();
            partitions.push(RoundPartition {
                source: key,
                target_topic: state.target_topic.clone(),
                batches,
                may_coalesce: state.coalesce,
                progress_to,
                unrecorded_start,
                source_end: state.source_end,
                last_segment,
                retired: state.retired_segments.clone(),
            });
        }
        self.round_bytes = bytes * 2;
        let plan = RoundPlan {
            target: self.target.clone(),
            producer: producer.identity,
            transactional_id: producer.transactional_id,
            progress_group: self.progress_group.clone(),
            state: StatePartition { topic: self.state_topic.clone(), partition: self.shard.state_partition() },
            state_sequence: self.state_sequence,
            partitions,
        };
        self.round_started = Some(Instant::now());
        self.round = Some(tokio::spawn(round::run(plan)));
    }

    /// Books a finished round. Only a fenced producer or a missing API is fatal.
    pub(super) fn on_round(
        &mut self,
        joined: Result<RoundReport, tokio::task::JoinError>,
    ) -> Result<(), Box<ReplicateError>> {
        self.round_bytes = 0;
        let took = self.round_started.take().map(|started| started.elapsed());
        if let Some(took) = took {
            self.metrics.round(took.as_secs_f64());
        }
        let report = match joined {
            Ok(report) => {
                self.book_steps(&report, took);
                report
            }
            Err(error) => {
                // The task is gone with the batches it held: start again from what is committed.
                tracing::error!(flow = %self.name(), %error, "transaction round task lost; resuming from the committed progress");
                for state in self.partitions.values_mut().filter(|p| p.in_round) {
                    state.in_round = false;
                    state.rewind();
                }
                self.producers = None;
                return Ok(());
            }
        };
        self.state_sequence = report.state_sequence;
        self.totals.coalesced += report.coalesced as u64;
        let committed = report.result.is_ok();
        let now = Instant::now();
        let committed_at = unix_millis();
        let mut latencies = Vec::new();
        for partition in report.partitions {
            self.book_partition(partition, committed, now, committed_at, &mut latencies);
        }
        self.metrics.latencies(&latencies);
        if let Err(RoundError::Fenced(error) | RoundError::Unsupported(error) | RoundError::Abort(error)) =
            &report.result
        {
            self.metrics.error(Side::Target, &error.metric_code());
        }
        let outcome = match report.result {
            Ok(done) => {
                if let Some(producers) = &mut self.producers {
                    producers.round_ended(done.next_producer);
                }
                if done.next_producer.is_some() {
                    self.restart_sequences();
                }
                self.totals.transactions += done.transactions;
                if done.transactions > 0 {
                    self.metrics.transaction(true);
                }
                self.metrics.set_unreachable(Side::Target, Probe::Produce, None);
                Ok(())
            }
            Err(RoundError::Fenced(error)) if self.transactional() => Err(Box::new(self.fenced(error))),
            Err(RoundError::Unsupported(error)) => Err(Box::new(self.refused(error))),
            Err(RoundError::Fenced(error) | RoundError::Abort(error)) => {
                self.totals.aborted += 1;
                self.metrics.transaction(false);
                tracing::warn!(flow = %self.name(), %error, "transaction round abandoned; its batches are sent again with a new producer epoch");
                self.explain_blocked_transaction(&error);
                self.producers = None;
                Ok(())
            }
        };
        self.publish(true);
        outcome
    }

    /// Books the time the round spent per step; logged per round at debug level, so a slow
    /// round names the call it waited on.
    fn book_steps(&self, report: &RoundReport, took: Option<std::time::Duration>) {
        for (step, duration) in &report.steps {
            self.metrics.round_step(*step, duration.as_secs_f64());
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let steps: Vec<String> = report
                .steps
                .iter()
                .map(|(step, duration)| format!("{}={:.1}ms", step.name(), duration.as_secs_f64() * 1e3))
                .collect();
            let batches: usize = report.partitions.iter().map(|p| p.landed.len()).sum();
            tracing::debug!(flow = %self.name(), took_ms = took.map_or(0.0, |t| t.as_secs_f64() * 1e3), partitions = report.partitions.len(), batches, steps = %steps.join(" "), "round ended");
        }
    }

    /// Books one partition's share of a round. `committed_at` (Unix milliseconds) and
    /// `latencies` collect the end-to-end latency of its landed batches.
    fn book_partition(
        &mut self,
        report: round::PartitionReport,
        committed: bool,
        now: Instant,
        committed_at: i64,
        latencies: &mut Vec<(u64, u64)>,
    ) {
        let flow = self.flow.name();
        let Some(state) = self.partitions.get_mut(&report.source) else { return };
        state.in_round = false;
        let (mut records, mut bytes) = (0, 0);
        for (pending, target_base) in &report.landed {
            state.landed(pending, *target_base);
            let batch = &pending.forwarded.batch;
            let (batch_records, batch_bytes) = (batch.records_count().max(0) as u64, pending.bytes() as u64);
            self.totals.batches += 1;
            self.totals.records += (batch.last_offset_delta() as u64) + 1;
            self.totals.bytes += batch_bytes;
            self.metrics.replicated(pending.forwarded.path, 1, batch_records, batch_bytes);
            // The batch's newest record time: what a consumer of the source saw last.
            latencies.push(((committed_at - batch.max_timestamp()).max(0) as u64, batch_records));
            records += batch_records;
            bytes += batch_bytes;
        }
        if records > 0 {
            gauges::handle(&mut self.gauges, &self.metrics, &report.source).handle.replicated(records, bytes);
        }
        if committed {
            state.retired_segments.clear();
        }
        if let Some(offset) = report.committed_to {
            state.committed_to(offset);
        }
        state.give_back(report.returned);
        let (topic, partition) = (&report.source.0, report.source.1);
        match report.failure {
            None => {}
            Some(PartitionFailure::Transient(error)) => {
                self.metrics.error(Side::Target, &error.metric_code());
                if error.kafka_code().is_some_and(|c| c.0 == ResponseError::NotEnoughReplicas) {
                    state.short_of_replicas = true;
                }
                let news = state.stop(PartitionPhase::TargetUnavailable, error.to_string(), now);
                if news {
                    tracing::warn!(flow, topic = %topic, partition, offset = state.committed, %error, "partition held back: the target cannot take its batches right now; the others go on, it is retried with backoff");
                }
            }
            Some(PartitionFailure::Refused { error, code, offset, built: true })
                if code.0 == ResponseError::MessageTooLarge && state.coalesce =>
            {
                self.metrics.error(Side::Target, &code.name());
                // Coalescing may have built a batch larger than the target topic accepts,
                // where the batches as they came pass: fetch them again, uncoalesced.
                state.coalesce = false;
                state.rewind();
                tracing::warn!(flow, topic = %topic, partition, offset, %error, "the target refuses a coalesced batch as too large (its max.message.bytes is below what kferry built); this partition's batches are forwarded as they came from now on");
            }
            Some(PartitionFailure::Refused { error, code, offset, .. }) => {
                self.metrics.error(Side::Target, &code.name());
                let news = state.stop(PartitionPhase::TargetRefused, error.to_string(), now);
                if news {
                    tracing::error!(flow, topic = %topic, partition, offset, %error, "partition stopped: the target refuses its batch at this source offset; the others go on, it is tried again every {:?}", super::partition::REFUSED_RETRY);
                }
            }
            Some(PartitionFailure::Corrupt(error)) => {
                state.rewind();
                if state.stop(PartitionPhase::Unforwardable, error.to_string(), now) {
                    tracing::error!(flow, topic = %topic, partition, %error, "partition stopped: a source batch is corrupt; nothing of it was forwarded");
                }
            }
        }
    }
}

/// Now as the Unix time in milliseconds, the clock of record timestamps.
fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
