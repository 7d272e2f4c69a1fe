//! Coordinators and group offsets: FindCoordinator (for consumer groups and transactional
//! ids), ListGroups, OffsetFetch and OffsetCommit. kferry commits its own progress as a group's
//! offsets, and the group-sync loop reads and writes other groups' offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    FindCoordinatorRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::error::{BrokerRef, ClientError};
use super::messenger::Messenger;
use crate::protocol::error_code::{ErrorCode, ResponseError};

/// What a coordinator coordinates (Kafka's `CoordinatorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoordinatorKind {
    Group,
    Transaction,
}

impl CoordinatorKind {
    fn code(self) -> i8 {
        match self {
            Self::Group => 0,
            Self::Transaction => 1,
        }
    }
}

/// A partition's committed offset and the metadata string committed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub metadata: Option<String>,
}

/// Committed offsets by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub id: String,
    /// `consumer` for consumer groups, empty for groups that only ever committed offsets.
    pub protocol_type: String,
    /// `Empty`, `Stable`, `PreparingRebalance`, ... (ListGroups v4+, else `None`).
    pub state: Option<String>,
}

impl ListedGroup {
    /// Whether the group has no members right now, so offsets may be committed for it from
    /// outside. Without a state (brokers before Kafka 2.6) that cannot be known: no.
    pub fn is_memberless(&self) -> bool {
        matches!(self.state.as_deref(), Some("Empty" | "Dead"))
    }
}

/// Whether `code` means the coordinator moved or is not ready: find it again and retry.
pub(super) fn coordinator_moved(code: ErrorCode) -> bool {
    matches!(code.0, ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable)
}

impl Cluster {
    /// The coordinator of `key` (a group id or a transactional id), found once and cached
    /// until a call reports it moved, or its broker cannot be reached (stopped: its
    /// coordinators move to other brokers), so the caller's retry asks again.
    pub async fn coordinator(&self, kind: CoordinatorKind, key: &str) -> Result<Arc<Messenger>, ClientError> {
        if let Some(node) = self.cached_coordinator(kind, key) {
            return self.coordinator_broker(kind, key, node).await;
        }
        // v4+ asks for several keys at once, older versions for one.
        let build = |version: i16| {
            let request = FindCoordinatorRequest::default().with_key_type(kind.code());
            if version >= 4 {
                request.with_coordinator_keys(vec![StrBytes::from_string(key.to_string())])
            } else {
                request.with_key(StrBytes::from_string(key.to_string()))
            }
        };
        let (broker, response) = self
            .retrying(|| async {
                let broker = self.any_broker().await?;
                let (_, response) = broker.request_built(build).await?;
                Ok((broker.broker().clone(), response))
            })
            .await?;
        // v4+ answers in `coordinators`, older versions in the top-level fields.
        let (code, message, node) = match response.coordinators.first() {
            Some(c) => (c.error_code, c.error_message.clone(), c.node_id.0),
            None => (response.error_code, response.error_message.clone(), response.node_id.0),
        };
        if let Some(code) = ErrorCode::from_code(code) {
            let message = message.map(|m| m.to_string());
            return Err(ClientError::Request { broker, api: "FindCoordinator", code, message });
        }
        self.cache_coordinator(kind, key, node);
        self.coordinator_broker(kind, key, node).await
    }

    async fn coordinator_broker(
        &self,
        kind: CoordinatorKind,
        key: &str,
        node: i32,
    ) -> Result<Arc<Messenger>, ClientError> {
        let broker = self.broker(node).await;
        if broker.is_err() {
            self.forget_coordinator(kind, key);
        }
        broker
    }

    /// Every group of the cluster: each broker lists the groups it coordinates, so all
    /// brokers are asked.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, ClientError> {
        let brokers: Vec<i32> = self.all_topics().await?.brokers.keys().copied().collect();
        let mut groups = Vec::new();
        for node in brokers {
            let response = self
                .retrying(|| async {
                    let broker = self.broker(node).await?;
                    let (_, response) = broker.request(&ListGroupsRequest::default()).await?;
                    if let Some(code) = ErrorCode::from_code(response.error_code) {
                        let broker = broker.broker().clone();
                        return Err(ClientError::Request { broker, api: "ListGroups", code, message: None });
                    }
                    Ok(response)
                })
                .await?;
            groups.extend(response.groups.into_iter().map(|g| ListedGroup {
                id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: Some(g.group_state.to_string()).filter(|s| !s.is_empty()),
            }));
        }
        Ok(groups)
    }

    /// The committed offsets of `group`, all topics.
    pub async fn fetch_group_offsets(&self, group: &str) -> Result<GroupOffsets, ClientError> {
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
            let group_id = GroupId(StrBytes::from_string(group.to_string()));
            // v8+ asks for several groups at once, older versions for one.
            let build = |version: i16| {
                let request = OffsetFetchRequest::default();
                let request = if version >= 8 {
                    request.with_groups(vec![OffsetFetchRequestGroup::default()
                        .with_group_id(group_id.clone())
                        .with_topics(None)])
                } else {
                    request.with_group_id(group_id.clone()).with_topics(None)
                };
                // Wait for offsets of transactions still being committed (KIP-447, v7+).
                request.with_require_stable(version >= 7)
            };
            let (_, response) = coordinator.request_built(build).await?;
            let broker = coordinator.broker().clone();
            let mut offsets = GroupOffsets::new();
            let group_error = match response.groups.first() {
                Some(g) => g.error_code,
                None => response.error_code,
            };
            self.check_group_code(group, &broker, "OffsetFetch", group_error)?;
            // v10+ names topics by id only.
            let by_id = if response.groups.iter().flat_map(|g| &g.topics).any(|t| t.name.0.is_empty()) {
                let metadata = self.all_topics().await?;
                metadata.topics.values().map(|t| (t.id, t.name.clone())).collect()
            } else {
                std::collections::HashMap::new()
            };
            let partitions: Vec<(String, i32, i64, Option<StrBytes>, i16)> = match response.groups.into_iter().next() {
                Some(g) => g
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let name = by_id.get(&t.topic_id).cloned().unwrap_or_else(|| t.name.0.to_string());
                        t.partitions.into_iter().map(move |p| {
                            (name.clone(), p.partition_index, p.committed_offset, p.metadata, p.error_code)
                        })
                    })
                    .collect(),
                None => response
                    .topics
                    .into_iter()
                    .flat_map(|t| {
                        let name = t.name.0.to_string();
                        t.partitions.into_iter().map(move |p| {
                            (name.clone(), p.partition_index, p.committed_offset, p.metadata, p.error_code)
                        })
                    })
                    .collect(),
            };
            for (topic, partition, offset, metadata, code) in partitions {
                self.check_group_code(group, &broker, "OffsetFetch", code)?;
                if offset >= 0 {
                    let metadata = metadata.map(|m| m.to_string());
                    offsets.insert((topic, partition), CommittedOffset { offset, metadata });
                }
            }
            Ok(offsets)
        })
        .await
    }

    /// Commits `offsets` for `group` as a simple (memberless) consumer would.
    pub async fn commit_group_offsets(&self, group: &str, offsets: &GroupOffsets) -> Result<(), ClientError> {
        let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), committed) in offsets {
            by_topic.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(committed.offset)
                    .with_committed_metadata(committed.metadata.clone().map(StrBytes::from_string)),
            );
        }
        let mut topics = Vec::new();
        for (topic, partitions) in by_topic {
            let id = self.topic(topic).await?.id;
            topics.push((topic.to_string(), id, partitions));
        }
        // v10+ names topics by id, older versions by name.
        let build = |version: i16| {
            let topics = topics
                .iter()
                .map(|(name, id, partitions)| {
                    let topic = OffsetCommitRequestTopic::default().with_partitions(partitions.clone());
                    if version >= 10 {
                        topic.with_topic_id(*id)
                    } else {
                        topic.with_name(TopicName(StrBytes::from_string(name.clone())))
                    }
                })
                .collect();
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_topics(topics)
        };
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
            let (_, response) = coordinator.request_built(build).await?;
            let broker = coordinator.broker().clone();
            for partition in response.topics.iter().flat_map(|t| &t.partitions) {
                self.check_group_code(group, &broker, "OffsetCommit", partition.error_code)?;
            }
            Ok(())
        })
        .await
    }

    /// Turns a group-level error code into an error; forgets a coordinator that moved.
    pub(super) fn check_group_code(
        &self,
        group: &str,
        broker: &BrokerRef,
        api: &'static str,
        code: i16,
    ) -> Result<(), ClientError> {
        let Some(code) = ErrorCode::from_code(code) else { return Ok(()) };
        if coordinator_moved(code) {
            self.forget_coordinator(CoordinatorKind::Group, group);
        }
        Err(ClientError::Group { broker: broker.clone(), api, group: group.to_string(), code })
    }
}
