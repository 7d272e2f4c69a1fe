//! The data-plane calls: ListOffsets, Produce and Fetch, each sent to the partition's leader
//! through the cluster's retry policy, with errors naming topic and partition.
//!
//! Records travel as `Bytes` in both directions: what Fetch returns is a slice of the
//! response frame, and what Produce sends is exactly the bytes it is given.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::error::ClientError;
use super::messenger::Messenger;
use super::metadata::TopicInfo;
use crate::protocol::error_code::ErrorCode;

/// Which offset ListOffsets should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The end of the log: the high watermark (or the last stable offset with `ReadCommitted`).
    Latest,
    /// The first offset whose timestamp is at or after this (milliseconds since the epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            Self::Earliest => -2,
            Self::Latest => -1,
            Self::Timestamp(ms) => ms,
        }
    }
}

/// Which records a reader may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    /// Only committed transactional data, up to the last stable offset.
    ReadCommitted,
}

impl Isolation {
    fn level(self) -> i8 {
        match self {
            Self::ReadUncommitted => 0,
            Self::ReadCommitted => 1,
        }
    }
}

/// Where a Produce landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Offset the target assigned to the first record of the batch.
    pub base_offset: i64,
    /// The append time when the topic uses LogAppendTime, else -1.
    pub log_append_time_ms: i64,
}

/// What Fetch returned for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedPartition {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Transactions aborted in the fetched range: (producer id, first offset).
    pub aborted_transactions: Vec<(i64, i64)>,
    /// The raw record batches; may end with a partial batch.
    pub records: Bytes,
}

/// One Fetch of one partition.
#[derive(Debug, Clone)]
pub struct FetchSpec {
    pub offset: i64,
    pub max_bytes: i32,
    pub max_wait: Duration,
    pub isolation: Isolation,
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

impl Cluster {
    fn partition_error(
        leader: &Messenger,
        api: &'static str,
        topic: &str,
        partition: i32,
        code: ErrorCode,
        message: Option<String>,
    ) -> ClientError {
        ClientError::Partition {
            broker: leader.broker().clone(),
            api,
            topic: topic.to_string(),
            partition,
            code,
            message,
        }
    }

    fn missing(&self, what: &'static str, topic: &str, partition: i32) -> ClientError {
        ClientError::IncompleteResponse {
            cluster: self.name().clone(),
            what,
            missing: format!("topic {topic} partition {partition}"),
        }
    }

    /// The offset `spec` names in one partition, asked of its leader.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<i64, ClientError> {
        self.retrying(|| async {
            let (leader, leader_epoch) = self.leader_once(topic, partition).await?;
            let request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_isolation_level(isolation.level())
                .with_topics(vec![ListOffsetsTopic::default().with_name(topic_name(topic)).with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(leader_epoch)
                        .with_timestamp(spec.timestamp()),
                ])]);
            let (_, response) = leader.request(&request).await?;
            let answer = response
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| self.missing("ListOffsets", topic, partition))?;
            match ErrorCode::from_code(answer.error_code) {
                Some(code) => Err(Self::partition_error(&leader, "ListOffsets", topic, partition, code, None)),
                None => Ok(answer.offset),
            }
        })
        .await
    }

    /// Appends `records` (exactly one v2 batch, base offset 0) to a partition with `acks=all`.
    ///
    /// kferry never produces with `acks=0` or `1`: a replicated record must be safe on the
    /// target before the source position moves on.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
        timeout: Duration,
    ) -> Result<Produced, ClientError> {
        self.retrying(|| async {
            let info = self.topic_once(topic).await?;
            let (leader, _) = self.leader_once(topic, partition).await?;
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic_name(topic))
                    .with_topic_id(info.id)
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records.clone()))])]);
            let (_, response) =
                leader.request_with_timeout(&request, timeout + self.config().connection.request_timeout).await?;
            let answer = response
                .responses
                .iter()
                .filter(|t| same_topic(&info, &t.name, t.topic_id))
                .flat_map(|t| &t.partition_responses)
                .find(|p| p.index == partition)
                .ok_or_else(|| self.missing("Produce", topic, partition))?;
            match ErrorCode::from_code(answer.error_code) {
                Some(code) => {
                    let message = produce_error_message(answer);
                    Err(Self::partition_error(&leader, "Produce", topic, partition, code, message))
                }
                None => Ok(Produced { base_offset: answer.base_offset, log_append_time_ms: answer.log_append_time_ms }),
            }
        })
        .await
    }

    /// Fetches one partition from its leader, from `spec.offset` on.
    pub async fn fetch(&self, topic: &str, partition: i32, spec: &FetchSpec) -> Result<FetchedPartition, ClientError> {
        self.retrying(|| async {
            let info = self.topic_once(topic).await?;
            let (leader, leader_epoch) = self.leader_once(topic, partition).await?;
            let max_wait_ms = i32::try_from(spec.max_wait.as_millis()).unwrap_or(i32::MAX);
            let request = FetchRequest::default()
                .with_max_wait_ms(max_wait_ms)
                .with_min_bytes(1)
                .with_max_bytes(spec.max_bytes)
                .with_isolation_level(spec.isolation.level())
                .with_topics(vec![FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_topic_id(info.id)
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(leader_epoch)
                        .with_fetch_offset(spec.offset)
                        .with_partition_max_bytes(spec.max_bytes)])]);
            let timeout = spec.max_wait + self.config().connection.request_timeout;
            let (_, response) = leader.request_with_timeout(&request, timeout).await?;
            if let Some(code) = ErrorCode::from_code(response.error_code) {
                return Err(Self::partition_error(&leader, "Fetch", topic, partition, code, None));
            }
            let answer = response
                .responses
                .into_iter()
                .filter(|t| same_topic(&info, &t.topic, t.topic_id))
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| self.missing("Fetch", topic, partition))?;
            if let Some(code) = ErrorCode::from_code(answer.error_code) {
                return Err(Self::partition_error(&leader, "Fetch", topic, partition, code, None));
            }
            Ok(FetchedPartition {
                high_watermark: answer.high_watermark,
                last_stable_offset: answer.last_stable_offset,
                log_start_offset: answer.log_start_offset,
                aborted_transactions: answer
                    .aborted_transactions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect(),
                records: answer.records.unwrap_or_default(),
            })
        })
        .await
    }
}

/// Whether a response's topic entry is `info`: newer versions name topics by id only.
fn same_topic(info: &TopicInfo, name: &TopicName, id: uuid::Uuid) -> bool {
    if id.is_nil() {
        name.0.as_str() == info.name
    } else {
        id == info.id
    }
}

/// The broker's explanation of a refused batch: its error message plus the per-record
/// errors (KIP-467), which say which record broke which rule.
fn produce_error_message(answer: &PartitionProduceResponse) -> Option<String> {
    let records = answer.record_errors.iter().map(|e| {
        let why = e.batch_index_error_message.as_ref().map_or("", |m| m.as_str());
        format!("record {}: {why}", e.batch_index)
    });
    let parts: Vec<String> = answer.error_message.iter().map(|m| m.to_string()).chain(records).collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One partition of a multi-partition Fetch.
#[derive(Debug, Clone)]
pub struct PartitionFetch {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub offset: i64,
    /// The leader epoch from metadata, so a stale leader answers FENCED_LEADER_EPOCH.
    pub leader_epoch: i32,
    pub max_bytes: i32,
}

/// What a multi-partition Fetch returned for one partition.
#[derive(Debug, Clone)]
pub struct PartitionFetched {
    pub topic: String,
    pub partition: i32,
    pub result: Result<FetchedPartition, ErrorCode>,
}

impl Cluster {
    /// Fetches several partitions led by `leader` in one request (sessionless). No
    /// retries: per-partition errors come back for the caller to act on.
    pub async fn fetch_from(
        &self,
        leader: &Messenger,
        partitions: &[PartitionFetch],
        max_wait: Duration,
        max_bytes: i32,
        isolation: Isolation,
    ) -> Result<Vec<PartitionFetched>, ClientError> {
        let mut topics: std::collections::BTreeMap<(&str, uuid::Uuid), Vec<FetchPartition>> = Default::default();
        for p in partitions {
            topics.entry((&p.topic, p.topic_id)).or_default().push(
                FetchPartition::default()
                    .with_partition(p.partition)
                    .with_current_leader_epoch(p.leader_epoch)
                    .with_fetch_offset(p.offset)
                    .with_partition_max_bytes(p.max_bytes),
            );
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(isolation.level())
            .with_topics(
                topics
                    .into_iter()
                    .map(|((name, id), partitions)| {
                        FetchTopic::default().with_topic(topic_name(name)).with_topic_id(id).with_partitions(partitions)
                    })
                    .collect(),
            );
        let (_, response) = leader.request_with_timeout(&request, max_wait + leader.request_timeout()).await?;
        if let Some(code) = ErrorCode::from_code(response.error_code) {
            return Err(ClientError::Request { broker: leader.broker().clone(), api: "Fetch", code, message: None });
        }
        let mut fetched = Vec::new();
        for topic in response.responses {
            let name = partitions
                .iter()
                .find(|p| {
                    (!topic.topic_id.is_nil() && p.topic_id == topic.topic_id) || p.topic == topic.topic.0.as_str()
                })
                .map(|p| p.topic.clone())
                .unwrap_or_else(|| topic.topic.0.to_string());
            for answer in topic.partitions {
                let result = match ErrorCode::from_code(answer.error_code) {
                    Some(code) => Err(code),
                    None => Ok(FetchedPartition {
                        high_watermark: answer.high_watermark,
                        last_stable_offset: answer.last_stable_offset,
                        log_start_offset: answer.log_start_offset,
                        aborted_transactions: answer
                            .aborted_transactions
                            .unwrap_or_default()
                            .into_iter()
                            .map(|a| (a.producer_id.0, a.first_offset))
                            .collect(),
                        records: answer.records.unwrap_or_default(),
                    }),
                };
                fetched.push(PartitionFetched { topic: name.clone(), partition: answer.partition_index, result });
            }
        }
        Ok(fetched)
    }
}
