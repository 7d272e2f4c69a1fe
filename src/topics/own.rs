//! How kferry's own topics on a target are created: the offset maps
//! (`__kferry.offset-map.*`), the failover records (`__kferry.failover`) and the MM2-format
//! checkpoints (`*.checkpoints.internal`). They are what failover, failback and group
//! translation read, so they must survive the loss of a broker: on a cluster of 3 or more
//! brokers they get at least 3 replicas and `min.insync.replicas` 2, whatever the cluster's
//! `default.replication.factor` says (often 1 on clusters set up by hand). The callers own
//! when a topic is created; this module only decides its settings.

use std::collections::BTreeMap;

use crate::client::{ClientError, Cluster, NewTopic};

/// Least replicas of kferry's own topics where the cluster has that many brokers.
const SAFE_REPLICAS: i16 = 3;
/// `min.insync.replicas` given to them there: one broker may be down and writes go on.
const SAFE_MIN_INSYNC: i16 = 2;

/// Replicas and `min.insync.replicas` for one of kferry's own topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    /// `None`: the cluster's `default.replication.factor`.
    pub replication_factor: Option<i16>,
    pub min_insync_replicas: Option<i16>,
}

/// The flow's `replication_factor` when set, else the cluster's default; raised to 3 where
/// the cluster has 3 brokers or more, also when the flow asks for fewer (RF 1 for its
/// replicated topics must not put the state every partition's round writes on one broker:
/// that broker stopped would stall the whole flow). `min.insync.replicas` 2 wherever there
/// are 3 replicas on 3 brokers or more.
pub fn durability(configured: Option<i16>, cluster_default: Option<i16>, brokers: usize) -> Durability {
    let enough_brokers = brokers >= SAFE_REPLICAS as usize;
    let replication_factor = match (configured, enough_brokers) {
        (Some(rf), true) => Some(rf.max(SAFE_REPLICAS)),
        (Some(rf), false) => Some(rf),
        (None, true) => Some(cluster_default.unwrap_or(1).max(SAFE_REPLICAS)),
        (None, false) => None,
    };
    let min_insync_replicas =
        (enough_brokers && replication_factor.is_some_and(|rf| rf >= SAFE_REPLICAS)).then_some(SAFE_MIN_INSYNC);
    Durability { replication_factor, min_insync_replicas }
}

/// The durability of kferry's own topics on `cluster`, from its broker count and
/// `default.replication.factor` (unknown, e.g. not authorised to read it: treated as 1).
pub async fn cluster_durability(cluster: &Cluster, configured: Option<i16>) -> Result<Durability, ClientError> {
    let description = cluster.describe_cluster().await?;
    let default = match description.brokers.first() {
        Some(broker) => cluster
            .describe_broker_configs(broker.node_id)
            .await
            .ok()
            .and_then(|configs| configs.get("default.replication.factor").and_then(|c| c.value.clone()))
            .and_then(|v| v.parse().ok()),
        None => None,
    };
    Ok(durability(configured, default, description.brokers.len()))
}

/// One of kferry's own topics as it is created: compacted, one partition (its records are
/// read back in order), with the cluster's durability for kferry's topics. Segments roll
/// at 16 MiB or after an hour: compaction only cleans closed segments, and with the broker
/// defaults (1 GiB, 7 days) every write to the offset map (a segment per partition and
/// round, then its tombstone once pruned) would stay on disk for a week. Tombstones are
/// kept an hour, not the default day: a reader that misses one (it fell behind by more
/// than that, or reads the topic afresh) only keeps or never sees a segment below the
/// source's log start, which no translation uses.
pub async fn own_topic(cluster: &Cluster, name: &str, configured: Option<i16>) -> Result<NewTopic, ClientError> {
    let durability = cluster_durability(cluster, configured).await?;
    let mut configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), (16 * 1024 * 1024).to_string()),
        ("segment.ms".to_string(), (60 * 60 * 1000).to_string()),
        ("delete.retention.ms".to_string(), (60 * 60 * 1000).to_string()),
    ]);
    if let Some(min) = durability.min_insync_replicas {
        configs.insert("min.insync.replicas".to_string(), min.to_string());
    }
    Ok(NewTopic { name: name.to_string(), partitions: 1, replication_factor: durability.replication_factor, configs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_brokers_get_three_replicas_and_two_in_sync_whatever_the_default() {
        let safe = Durability { replication_factor: Some(3), min_insync_replicas: Some(2) };
        assert_eq!(durability(None, Some(1), 3), safe);
        assert_eq!(durability(None, None, 5), safe);
        assert_eq!(
            durability(None, Some(4), 5),
            Durability { replication_factor: Some(4), min_insync_replicas: Some(2) }
        );
    }

    #[test]
    fn the_flows_setting_raises_but_never_lowers_and_small_clusters_keep_their_default() {
        assert_eq!(
            durability(Some(1), Some(3), 3),
            Durability { replication_factor: Some(3), min_insync_replicas: Some(2) }
        );
        assert_eq!(
            durability(Some(5), Some(3), 6),
            Durability { replication_factor: Some(5), min_insync_replicas: Some(2) }
        );
        assert_eq!(
            durability(Some(3), None, 3),
            Durability { replication_factor: Some(3), min_insync_replicas: Some(2) }
        );
        assert_eq!(durability(None, Some(1), 1), Durability { replication_factor: None, min_insync_replicas: None });
        assert_eq!(durability(Some(1), None, 1), Durability { replication_factor: Some(1), min_insync_replicas: None });
    }
}
