//! What a cluster looks like right now: brokers, topics, partitions, leaders and leader
//! epochs, as a Metadata response describes them. Plain data, built once per response and
//! shared read-only (`Arc`) by every caller until the next refresh.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::MetadataResponse;
use uuid::Uuid;

use crate::protocol::error_code::ErrorCode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `host:port`, as a socket address to connect to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// `None` while the partition has no leader (election in progress, replicas offline).
    pub leader: Option<i32>,
    /// Sent back in Fetch/ListOffsets so a stale leader is detected (FENCED_LEADER_EPOCH).
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
    /// A partition-level error (e.g. LEADER_NOT_AVAILABLE), if the broker reported one.
    pub error: Option<ErrorCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    /// The topic's id (KIP-516); Fetch and Produce name topics by id in their newest versions.
    pub id: Uuid,
    pub is_internal: bool,
    pub partitions: BTreeMap<i32, PartitionInfo>,
}

/// One Metadata response, reshaped for lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSnapshot {
    pub cluster_id: Option<String>,
    pub controller_id: Option<i32>,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Shared, so handing a topic's metadata out costs a reference count, not a copy of
    /// its partitions.
    pub topics: BTreeMap<String, Arc<TopicInfo>>,
    /// Topics the broker answered with an error for (UNKNOWN_TOPIC_OR_PARTITION, ...).
    pub topic_errors: BTreeMap<String, ErrorCode>,
}

impl MetadataSnapshot {
    pub fn from_response(response: MetadataResponse) -> Self {
        let mut snapshot = MetadataSnapshot {
            cluster_id: response.cluster_id.map(|id| id.to_string()),
            controller_id: Some(response.controller_id.0).filter(|&id| id >= 0),
            brokers: response
                .brokers
                .into_iter()
                .map(|b| {
                    let info = BrokerInfo {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.map(|r| r.to_string()),
                    };
                    (info.node_id, info)
                })
                .collect(),
            ..Default::default()
        };
        for topic in response.topics {
            let Some(name) = topic.name.map(|n| n.0.to_string()) else { continue };
            if let Some(code) = ErrorCode::from_code(topic.error_code) {
                snapshot.topic_errors.insert(name, code);
                continue;
            }
            let partitions = topic
                .partitions
                .into_iter()
                .map(|p| {
                    let info = PartitionInfo {
                        partition: p.partition_index,
                        leader: Some(p.leader_id.0).filter(|&id| id >= 0),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.into_iter().map(|n| n.0).collect(),
                        in_sync_replicas: p.isr_nodes.into_iter().map(|n| n.0).collect(),
                        error: ErrorCode::from_code(p.error_code),
                    };
                    (info.partition, info)
                })
                .collect();
            let info = TopicInfo { name: name.clone(), id: topic.topic_id, is_internal: topic.is_internal, partitions };
            snapshot.topics.insert(name, Arc::new(info));
        }
        snapshot
    }
}
