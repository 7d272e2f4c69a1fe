//! What the scheduler tells the metrics registry about where the flow stands: each
//! replicated partition's position, source end, lag and state, and the flow's buffer use.
//! Published from the scheduler's own loop at most every [`PUBLISH_EVERY`] (and after each
//! round), so the hot path pays nothing per record; counters are booked where they happen
//! (committer, fetcher).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::partition::{PartitionState, SourcePartition};
use super::Replicator;
use crate::metrics::{BrokerConnections, LagClock, PartitionMetrics, PartitionPhase, Side};

/// How often the gauges are brought up to date between rounds.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

/// One partition's metrics handle, resolved once, and its lag clock.
#[derive(Debug)]
pub(super) struct Gauge {
    pub(super) handle: Arc<PartitionMetrics>,
    clock: LagClock,
}

/// The handle of a partition, resolved on first use.
pub(super) fn handle<'a>(
    gauges: &'a mut BTreeMap<SourcePartition, Gauge>,
    metrics: &crate::metrics::FlowMetrics,
    key: &SourcePartition,
) -> &'a mut Gauge {
    // Looked up before inserting: no key is cloned once the handle exists.
    if !gauges.contains_key(key) {
        let gauge = Gauge { handle: metrics.partition(&key.0, key.1), clock: LagClock::default() };
        gauges.insert(key.clone(), gauge);
    }
    gauges.get_mut(key).expect("inserted above")
}

fn phase(state: &PartitionState) -> PartitionPhase {
    state.stall.as_ref().map_or(PartitionPhase::Replicating, |s| s.phase)
}

impl Replicator {
    /// Brings the gauges up to date if they are due (`force`: now).
    pub(super) fn publish(&mut self, force: bool) {
        if !force && self.published_at.is_some_and(|at| at.elapsed() < PUBLISH_EVERY) {
            return;
        }
        let now = Instant::now();
        self.published_at = Some(now);
        let millis = self.clock_origin.elapsed().as_millis() as u64;
        for (key, state) in &self.partitions {
            let gauge = handle(&mut self.gauges, &self.metrics, key);
            let end = state.stable_end.max(state.committed);
            let lag = gauge.clock.update(end, state.committed, millis);
            gauge.handle.set(state.committed, end, lag, phase(state));
            gauge.handle.set_error(state.stall.as_ref().map(|s| s.reason.as_str()));
        }
        // Partitions no longer replicated keep their counters, not their gauges.
        let partitions = &self.partitions;
        self.gauges.retain(|key, gauge| {
            let kept = partitions.contains_key(key);
            if !kept {
                gauge.handle.deactivate();
            }
            kept
        });
        let rate_limited = self.rate_limit.as_ref().map_or(Duration::ZERO, |limit| limit.held(now));
        self.metrics.set_shard_gauges(self.shard.index, self.bytes_held() as u64, rate_limited);
        for (side, cluster) in [(Side::Source, &self.source), (Side::Target, &self.target)] {
            self.metrics.set_quota_throttle(side, cluster.quota_waits().throttled());
            let brokers = cluster
                .connection_counts()
                .into_iter()
                .map(|(broker, count)| BrokerConnections { broker, opened: count.opened, failed: count.failed })
                .collect();
            self.metrics.set_connections(side, brokers);
        }
    }
}
