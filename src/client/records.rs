//! The data-plane calls: ListOffsets, Produce and Fetch, each sent to the partition's leader
//! through the cluster's retry policy, with errors naming topic and partition.
//!
//! Records travel as `Bytes` in both directions: what Fetch returns is a slice of the
//! response frame, and what Produce sends is exactly the bytes it is given.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
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

    /// The offset `spec` names in one partition, asked of its leader (retried).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<i64, ClientError> {
        self.retrying(|| self.list_offset_once(topic, partition, spec, isolation)).await
    }

    /// As [`Cluster::list_offset`], one attempt: for callers with a retry loop of their own.
    pub async fn list_offset_once(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<i64, ClientError> {
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
            Ok(FetchedPartition::from(answer))
        })
        .await
    }
}

impl From<PartitionData> for FetchedPartition {
    fn from(answer: PartitionData) -> Self {
        FetchedPartition {
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
        }
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
    /// Fetches `partitions` from `leader` in one request, within `session` (KIP-227): after
    /// the first full request, only partitions whose fetch position changed are sent, and
    /// the broker answers only for partitions with something new. No retries: per-partition
    /// errors come back for the caller to act on.
    pub async fn fetch_from(
        &self,
        leader: &Messenger,
        session: &mut FetchSession,
        partitions: &[PartitionFetch],
        max_wait: Duration,
        max_bytes: i32,
        isolation: Isolation,
    ) -> Result<Vec<PartitionFetched>, ClientError> {
        let (changed, forgotten) = session.plan(partitions);
        let mut topics: std::collections::BTreeMap<(&str, uuid::Uuid), Vec<FetchPartition>> = Default::default();
        for p in changed {
            topics.entry((&p.topic, p.topic_id)).or_default().push(
                FetchPartition::default()
                    .with_partition(p.partition)
                    .with_current_leader_epoch(p.leader_epoch)
                    .with_fetch_offset(p.offset)
                    .with_partition_max_bytes(p.max_bytes),
            );
        }
        let mut gone: std::collections::BTreeMap<(&str, uuid::Uuid), Vec<i32>> = Default::default();
        for (topic, id, partition) in &forgotten {
            gone.entry((topic, *id)).or_default().push(*partition);
        }
        let request = FetchRequest::default()
            .with_max_wait_ms(i32::try_from(max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(isolation.level())
            .with_session_id(session.id)
            .with_session_epoch(session.epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|((name, id), partitions)| {
                        FetchTopic::default().with_topic(topic_name(name)).with_topic_id(id).with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_forgotten_topics_data(
                gone.into_iter()
                    .map(|((name, id), partitions)| {
                        ForgottenTopic::default()
                            .with_topic(topic_name(name))
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let (_, response) = match leader.request_with_timeout(&request, max_wait + leader.request_timeout()).await {
            Ok(answer) => answer,
            Err(e) => {
                session.reset();
                return Err(e.into());
            }
        };
        if let Some(code) = ErrorCode::from_code(response.error_code) {
            // FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, ...: start over.
            session.reset();
            return Err(ClientError::Request { broker: leader.broker().clone(), api: "Fetch", code, message: None });
        }
        session.established(response.session_id);
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
                let partition = answer.partition_index;
                let result = match ErrorCode::from_code(answer.error_code) {
                    Some(code) => Err(code),
                    None => Ok(FetchedPartition::from(answer)),
                };
                fetched.push(PartitionFetched { topic: name.clone(), partition, result });
            }
        }
        Ok(fetched)
    }
}

/// An incremental fetch session with one broker (KIP-227): what the broker already knows
/// of each partition, so requests carry only what changed.
#[derive(Debug, Default)]
pub struct FetchSession {
    /// 0 until the broker assigns one.
    id: i32,
    /// 0 for the full request that opens a session, then 1, 2, ...
    epoch: i32,
    /// Partitions in the session, as last sent: (offset, leader epoch, max bytes).
    sent: std::collections::BTreeMap<(String, uuid::Uuid, i32), (i64, i32, i32)>,
}

impl FetchSession {
    /// Forgets the session: the next request is a full one.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The partitions to send (all of them for a full request, else those that changed)
    /// and those to drop from the session.
    fn plan<'p>(&mut self, wanted: &'p [PartitionFetch]) -> (Vec<&'p PartitionFetch>, Vec<(String, uuid::Uuid, i32)>) {
        let full = self.id == 0;
        let mut changed = Vec::new();
        let mut still: std::collections::BTreeSet<(String, uuid::Uuid, i32)> = Default::default();
        for p in wanted {
            let key = (p.topic.clone(), p.topic_id, p.partition);
            let state = (p.offset, p.leader_epoch, p.max_bytes);
            if full || self.sent.get(&key) != Some(&state) {
                changed.push(p);
                self.sent.insert(key.clone(), state);
            }
            still.insert(key);
        }
        let forgotten: Vec<_> =
            if full { Vec::new() } else { self.sent.keys().filter(|k| !still.contains(*k)).cloned().collect() };
        self.sent.retain(|k, _| still.contains(k));
        (changed, forgotten)
    }

    /// Records the broker's answer: a session id (0: the broker keeps no session, so every
    /// request stays a full one).
    fn established(&mut self, id: i32) {
        if id == 0 {
            self.reset();
        } else if self.id == id {
            self.epoch = self.epoch.checked_add(1).unwrap_or(1);
        } else {
            self.id = id;
            self.epoch = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(offsets: &[(i32, i64)]) -> Vec<PartitionFetch> {
        offsets
            .iter()
            .map(|&(partition, offset)| PartitionFetch {
                topic: "t".into(),
                topic_id: uuid::Uuid::nil(),
                partition,
                offset,
                leader_epoch: 0,
                max_bytes: 100,
            })
            .collect()
    }

    #[test]
    fn sessions_send_everything_first_then_only_changes() {
        let mut session = FetchSession::default();
        let first = wanted(&[(0, 10), (1, 20)]);
        assert_eq!(session.plan(&first).0.len(), 2, "full request");
        session.established(42);
        assert_eq!((session.id, session.epoch), (42, 1));
        let next = wanted(&[(0, 15), (1, 20)]);
        let (changed, forgotten) = session.plan(&next);
        assert_eq!(changed.iter().map(|p| p.partition).collect::<Vec<_>>(), [0], "only the moved partition");
        assert!(forgotten.is_empty());
        session.established(42);
        assert_eq!(session.epoch, 2);
        let only_zero = wanted(&[(0, 15)]);
        let (changed, forgotten) = session.plan(&only_zero);
        assert!(changed.is_empty());
        assert_eq!(forgotten, [("t".to_string(), uuid::Uuid::nil(), 1)], "partition 1 leaves the session");
        session.reset();
        assert_eq!(session.plan(&wanted(&[(0, 15)])).0.len(), 1, "full again after a reset");
    }
}
