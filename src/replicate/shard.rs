//! Shards of a flow (`shards` in its config): its partitions split into groups, each
//! replicated by a replicator of its own with its own transactional id and its own
//! partition of the state topic. A transaction that cannot end (a target partition below
//! its `min.insync.replicas`, whose commit marker the coordinator cannot write) then holds
//! back only its shard, and the other shards go on.
//!
//! Which shard owns a partition depends only on its topic, its number and the shard
//! count, so every process and command (`run`, `status`, `failover`) agrees without asking.
//! The state topic has one partition per shard; a flow whose state was written with another
//! shard count is refused at start (moving offset-map segments between shards is not
//! built). Pure: no I/O.

use crate::config::FlowConfig;

/// One shard of a flow: number `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u16,
    pub count: u16,
}

impl Shard {
    /// The only shard of a flow that is not split.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Every shard of `flow`.
    pub fn all(flow: &FlowConfig) -> impl Iterator<Item = Shard> {
        let count = flow.shards.max(1);
        (0..count).map(move |index| Shard { index, count })
    }

    /// The shard of `flow` that replicates source partition `partition` of `topic`.
    /// Consecutive partitions of one topic go to consecutive shards, so a topic's
    /// partitions spread evenly; the topic's hash sets where it starts.
    pub fn of(flow: &FlowConfig, topic: &str, partition: i32) -> Shard {
        let count = flow.shards.max(1);
        let start = u64::from(crc32c::crc32c(topic.as_bytes()));
        let index = ((start + u64::from(partition.unsigned_abs())) % u64::from(count)) as u16;
        Shard { index, count }
    }

    /// Whether this shard replicates `partition` of `topic`.
    pub fn owns(&self, flow: &FlowConfig, topic: &str, partition: i32) -> bool {
        self.count <= 1 || Self::of(flow, topic, partition) == *self
    }

    /// The state topic partition this shard writes its offset-map segments to.
    pub fn state_partition(&self) -> i32 {
        i32::from(self.index)
    }

    /// The transactional id of this shard: the flow's own for an unsplit flow, so that
    /// flows from before shards existed keep theirs.
    pub fn transactional_id(&self, flow: &FlowConfig) -> String {
        let base = format!("kferry.{}.{}", flow.source, flow.target);
        if self.count <= 1 {
            base
        } else {
            format!("{base}.shard-{}-of-{}", self.index, self.count)
        }
    }

    /// The second transactional id of this shard: with KIP-890's transaction protocol its
    /// rounds alternate between the two (see `engine::producer::Producers`).
    pub fn alternate_transactional_id(&self, flow: &FlowConfig) -> String {
        format!("{}.alt", self.transactional_id(flow))
    }

    /// This shard's part of a flow-wide budget (`buffer_bytes`, `max_bytes_per_second`),
    /// never below `floor`.
    pub fn share(&self, total: u64, floor: u64) -> u64 {
        (total / u64::from(self.count.max(1))).max(floor)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The transactional ids of every shard of `flow`, both of each: what a failover fences.
pub fn transactional_ids(flow: &FlowConfig) -> Vec<String> {
    Shard::all(flow).flat_map(|shard| [shard.transactional_id(flow), shard.alternate_transactional_id(flow)]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(shards: u16) -> FlowConfig {
        let mut flow = FlowConfig::between("primary", "secondary");
        flow.shards = shards;
        flow
    }

    #[test]
    fn an_unsplit_flow_keeps_its_transactional_id_and_state_partition() {
        let flow = flow(1);
        assert_eq!(transactional_ids(&flow), ["kferry.primary.secondary", "kferry.primary.secondary.alt"]);
        assert!(Shard::WHOLE.owns(&flow, "orders", 7));
        assert_eq!(Shard::WHOLE.state_partition(), 0);
    }

    #[test]
    fn every_partition_has_exactly_one_shard_and_a_topic_spreads_evenly() {
        let flow = flow(4);
        let shards: Vec<Shard> = Shard::all(&flow).collect();
        assert_eq!(shards.len(), 4);
        let mut per_shard = [0; 4];
        for partition in 0..24 {
            let owners: Vec<&Shard> = shards.iter().filter(|s| s.owns(&flow, "orders", partition)).collect();
            assert_eq!(owners.len(), 1, "partition {partition}");
            assert_eq!(*owners[0], Shard::of(&flow, "orders", partition));
            per_shard[usize::from(owners[0].index)] += 1;
        }
        assert_eq!(per_shard, [6; 4]);
        // The same answer every time (and in every process).
        assert_eq!(Shard::of(&flow, "orders", 5), Shard::of(&flow, "orders", 5));
    }

    #[test]
    fn shards_have_distinct_ids_and_an_even_share_of_the_budget() {
        let flow = flow(3);
        let ids = transactional_ids(&flow);
        assert_eq!(ids.len(), 6);
        assert_eq!(ids[4], "kferry.primary.secondary.shard-2-of-3");
        assert_eq!(ids[5], "kferry.primary.secondary.shard-2-of-3.alt");
        let shard = Shard { index: 1, count: 3 };
        assert_eq!(shard.share(300, 1), 100);
        assert_eq!(shard.share(30, 64), 64);
    }
}
