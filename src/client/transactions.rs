//! The producer side of idempotence and transactions: InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn, and Produce of several partitions' batches
//! in one request.
//!
//! Two transaction protocols, chosen per producer when it is initialised ([`TxnProtocol`]):
//! - V1, what Kafka 3.x speaks: partitions and the group are added to the transaction
//!   explicitly (AddPartitionsToTxn, AddOffsetsToTxn), EndTxn before v5, Produce before v12.
//! - V2 (KIP-890), where the coordinator has `transaction.version` 2 finalized (Kafka 4.x):
//!   a Produce v12+ adds its partition and a TxnOffsetCommit v5 its group, and every EndTxn
//!   v5 bumps the producer epoch and answers the next one (sequences restart at 0). Two
//!   round trips fewer per transaction, and the leader checks each batch against the
//!   coordinator, so a late batch of an ended transaction cannot join the next one.
//!
//! The versions are capped per protocol, so a broker never sees a half-new, half-old
//! transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId, InitProducerIdRequest, ProduceRequest,
    ProduceResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::cluster::Cluster;
use super::coordinator::{coordinator_moved, CoordinatorKind, GroupOffsets};
use super::error::ClientError;
use super::messenger::{Messenger, Queued};
use crate::protocol::error_code::{ErrorCode, ResponseError};
use crate::protocol::versions::ApiVersionTable;

/// Highest versions of the pre-KIP-890 transaction protocol (what Kafka 3.9 speaks).
const V1_PRODUCE_MAX: i16 = 11;
const ADD_PARTITIONS_TO_TXN_MAX: i16 = 3;
const ADD_OFFSETS_TO_TXN_MAX: i16 = 4;
const V1_TXN_OFFSET_COMMIT_MAX: i16 = 4;
const V1_END_TXN_MAX: i16 = 4;
/// The first versions of KIP-890's protocol.
const V2_PRODUCE_MIN: i16 = 12;
const V2_TXN_OFFSET_COMMIT_MIN: i16 = 5;
const V2_END_TXN_MIN: i16 = 5;

/// Which transaction protocol a producer speaks (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnProtocol {
    V1,
    V2,
}

impl TxnProtocol {
    /// V2 where the coordinator finalized `transaction.version` 2 and has the versions it
    /// needs; V1 elsewhere.
    fn of(versions: &ApiVersionTable) -> Self {
        let reaches = |key, version| versions.range(key).is_some_and(|r: VersionRange| r.max >= version);
        let v2 = versions.feature("transaction.version").is_some_and(|level| level >= 2)
            && reaches(ApiKey::Produce, V2_PRODUCE_MIN)
            && reaches(ApiKey::TxnOffsetCommit, V2_TXN_OFFSET_COMMIT_MIN)
            && reaches(ApiKey::EndTxn, V2_END_TXN_MIN);
        if v2 {
            Self::V2
        } else {
            Self::V1
        }
    }

    fn produce_cap(self) -> i16 {
        match self {
            Self::V1 => V1_PRODUCE_MAX,
            Self::V2 => i16::MAX,
        }
    }

    fn txn_offset_commit_cap(self) -> i16 {
        match self {
            Self::V1 => V1_TXN_OFFSET_COMMIT_MAX,
            Self::V2 => i16::MAX,
        }
    }

    fn end_txn_cap(self) -> i16 {
        match self {
            Self::V1 => V1_END_TXN_MAX,
            Self::V2 => i16::MAX,
        }
    }
}

impl std::fmt::Display for TxnProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2 (KIP-890)",
        })
    }
}

/// The producer id and epoch the target assigned, written into every produced batch, and
/// the transaction protocol they are used with (V1 for a producer without transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
    pub protocol: TxnProtocol,
}

/// One batch to produce: target topic (name and id), partition, and the batch bytes.
#[derive(Debug, Clone)]
pub struct ProduceBatch {
    pub topic: String,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub records: Bytes,
}

/// What the broker said about one batch of a multi-partition Produce.
#[derive(Debug, Clone)]
pub struct ProduceOutcome {
    pub topic: String,
    pub partition: i32,
    /// The target offset of the batch's first record, or the broker's error and message.
    pub result: Result<i64, (ErrorCode, Option<String>)>,
}

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
}

impl Cluster {
    fn txn_error(&self, leader: &Messenger, api: &'static str, transactional_id: &str, code: ErrorCode) -> ClientError {
        if coordinator_moved(code) {
            self.forget_coordinator(CoordinatorKind::Transaction, transactional_id);
        }
        ClientError::Transaction {
            broker: leader.broker().clone(),
            api,
            transactional_id: transactional_id.to_string(),
            code,
        }
    }

    /// Gets a producer id: with a transactional id, from its transaction coordinator, which
    /// also fences any earlier producer with the same id and aborts its open transaction.
    pub async fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
        transaction_timeout: Duration,
    ) -> Result<ProducerIdentity, ClientError> {
        self.retrying(|| async {
            let coordinator = match transactional_id {
                Some(id) => self.coordinator(CoordinatorKind::Transaction, id).await?,
                None => self.any_broker().await?,
            };
            let request = InitProducerIdRequest::default()
                .with_transactional_id(transactional_id.map(txn_id))
                .with_transaction_timeout_ms(timeout_ms(transaction_timeout));
            let (_, response) = coordinator.request(&request).await?;
            if let Some(code) = ErrorCode::from_code(response.error_code) {
                return Err(self.txn_error(&coordinator, "InitProducerId", transactional_id.unwrap_or("(none)"), code));
            }
            let protocol =
                if transactional_id.is_some() { TxnProtocol::of(coordinator.versions()) } else { TxnProtocol::V1 };
            Ok(ProducerIdentity { id: response.producer_id.0, epoch: response.producer_epoch, protocol })
        })
        .await
    }

    /// Adds target partitions to the open transaction before anything is produced to them
    /// (V1 only: with V2 the Produce adds them).
    ///
    /// The coordinator adds all or none. Partitions it refuses for good (a topic it does
    /// not know, or one the producer may not write) come back as `Ok` refusals, nothing
    /// added, so the caller can leave them out and ask again for the others.
    pub async fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer: ProducerIdentity,
        partitions: &BTreeMap<String, Vec<i32>>,
    ) -> Result<Vec<ClientError>, ClientError> {
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(transactional_id))
            .with_v3_and_below_producer_id(ProducerId(producer.id))
            .with_v3_and_below_producer_epoch(producer.epoch)
            .with_v3_and_below_topics(
                partitions
                    .iter()
                    .map(|(topic, partitions)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.clone())))
                            .with_partitions(partitions.clone())
                    })
                    .collect(),
            );
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Transaction, transactional_id).await?;
            let timeout = coordinator.request_timeout();
            let (_, response) = coordinator.request_capped(&request, ADD_PARTITIONS_TO_TXN_MAX, timeout).await?;
            if let Some(code) = ErrorCode::from_code(response.error_code) {
                return Err(self.txn_error(&coordinator, "AddPartitionsToTxn", transactional_id, code));
            }
            let mut refused = Vec::new();
            for topic in &response.results_by_topic_v3_and_below {
                for result in &topic.results_by_partition {
                    let Some(code) = ErrorCode::from_code(result.partition_error_code) else { continue };
                    match code.0 {
                        // Only says another partition of the request failed.
                        ResponseError::OperationNotAttempted => {}
                        ResponseError::TopicAuthorizationFailed | ResponseError::UnknownTopicOrPartition => {
                            refused.push(ClientError::Partition {
                                broker: coordinator.broker().clone(),
                                api: "AddPartitionsToTxn",
                                topic: topic.name.to_string(),
                                partition: result.partition_index,
                                code,
                                message: None,
                            });
                        }
                        _ => return Err(self.txn_error(&coordinator, "AddPartitionsToTxn", transactional_id, code)),
                    }
                }
            }
            Ok(refused)
        })
        .await
    }

    /// Adds `group`'s offsets to the open transaction (AddOffsetsToTxn), which
    /// [`Cluster::txn_offset_commit`] needs first (V1 only: with V2 the commit adds them).
    pub async fn add_offsets_to_txn(
        &self,
        transactional_id: &str,
        producer: ProducerIdentity,
        group: &str,
    ) -> Result<(), ClientError> {
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id(transactional_id))
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())));
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Transaction, transactional_id).await?;
            let timeout = coordinator.request_timeout();
            let (_, response) = coordinator.request_capped(&add, ADD_OFFSETS_TO_TXN_MAX, timeout).await?;
            match ErrorCode::from_code(response.error_code) {
                Some(code) => Err(self.txn_error(&coordinator, "AddOffsetsToTxn", transactional_id, code)),
                None => Ok(()),
            }
        })
        .await
    }

    /// Commits `offsets` of `group` inside the open transaction (TxnOffsetCommit to the
    /// group's coordinator, with V1 after [`Cluster::add_offsets_to_txn`]): they become
    /// visible with the data.
    pub async fn txn_offset_commit(
        &self,
        transactional_id: &str,
        producer: ProducerIdentity,
        group: &str,
        offsets: &GroupOffsets,
    ) -> Result<(), ClientError> {
        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for ((topic, partition), committed) in offsets {
            topics.entry(topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(committed.offset)
                    .with_committed_metadata(committed.metadata.clone().map(StrBytes::from_string)),
            );
        }
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn_id(transactional_id))
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Group, group).await?;
            let timeout = coordinator.request_timeout();
            let cap = producer.protocol.txn_offset_commit_cap();
            let (_, response) = coordinator.request_capped(&commit, cap, timeout).await?;
            let broker = coordinator.broker().clone();
            for partition in response.topics.iter().flat_map(|t| &t.partitions) {
                self.check_group_code(group, &broker, "TxnOffsetCommit", partition.error_code)?;
            }
            Ok(())
        })
        .await
    }

    /// Commits (`commit`) or aborts the open transaction. With V2 the coordinator bumped
    /// the epoch (or, at its end, assigned a new producer id): the identity for the next
    /// transaction, every sequence starting at 0 again.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer: ProducerIdentity,
        commit: bool,
    ) -> Result<Option<ProducerIdentity>, ClientError> {
        let request = EndTxnRequest::default()
            .with_transactional_id(txn_id(transactional_id))
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_committed(commit);
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Transaction, transactional_id).await?;
            let timeout = coordinator.request_timeout();
            let cap = producer.protocol.end_txn_cap();
            let (version, response) = coordinator.request_capped(&request, cap, timeout).await?;
            if let Some(code) = ErrorCode::from_code(response.error_code) {
                return Err(self.txn_error(&coordinator, "EndTxn", transactional_id, code));
            }
            let bumped = version >= V2_END_TXN_MIN && response.producer_id.0 >= 0;
            Ok(bumped.then_some(ProducerIdentity {
                id: response.producer_id.0,
                epoch: response.producer_epoch,
                protocol: producer.protocol,
            }))
        })
        .await
    }
}

/// Queues a Produce of `batches` (at most one per partition) on `leader` and returns
/// without waiting: Produce requests queued one after the other keep their order on the
/// wire, so several rounds of a partition's batches can be in flight at once.
pub async fn submit_produce<'m>(
    leader: &'m Messenger,
    transactional_id: Option<&str>,
    protocol: TxnProtocol,
    batches: &[ProduceBatch],
    timeout: Duration,
) -> Result<Queued<'m, ProduceRequest>, ClientError> {
    let mut topics: BTreeMap<(&str, uuid::Uuid), Vec<PartitionProduceData>> = BTreeMap::new();
    for batch in batches {
        topics.entry((&batch.topic, batch.topic_id)).or_default().push(
            PartitionProduceData::default().with_index(batch.partition).with_records(Some(batch.records.clone())),
        );
    }
    let request = ProduceRequest::default()
        .with_transactional_id(transactional_id.map(txn_id))
        .with_acks(-1)
        .with_timeout_ms(timeout_ms(timeout))
        .with_topic_data(
            topics
                .into_iter()
                .map(|((name, id), partitions)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_string())))
                        .with_topic_id(id)
                        .with_partition_data(partitions)
                })
                .collect(),
        );
    let cap = if transactional_id.is_some() { protocol.produce_cap() } else { i16::MAX };
    Ok(leader.submit(&request, cap, timeout + leader.request_timeout()).await?)
}

/// One outcome per partition of a Produce response, named as the request named them.
pub fn produce_outcomes(response: ProduceResponse, batches: &[ProduceBatch]) -> Vec<ProduceOutcome> {
    let mut outcomes = Vec::with_capacity(batches.len());
    for topic in response.responses {
        let name = batches
            .iter()
            .find(|b| b.topic == topic.name.0.as_str() || (!topic.topic_id.is_nil() && b.topic_id == topic.topic_id))
            .map(|b| b.topic.clone())
            .unwrap_or_else(|| topic.name.0.to_string());
        for p in topic.partition_responses {
            let result = match ErrorCode::from_code(p.error_code) {
                None => Ok(p.base_offset),
                Some(code) => Err((code, p.error_message.map(|m| m.to_string()))),
            };
            outcomes.push(ProduceOutcome { topic: name.clone(), partition: p.index, result });
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey};
    use kafka_protocol::messages::ApiVersionsResponse;

    use super::*;

    fn broker(transaction_version: Option<i16>, end_txn_max: i16) -> ApiVersionTable {
        let api = |key: ApiKey, max| ApiVersion::default().with_api_key(key as i16).with_max_version(max);
        let features = transaction_version
            .map(|level| {
                vec![FinalizedFeatureKey::default()
                    .with_name(StrBytes::from_static_str("transaction.version"))
                    .with_max_version_level(level)]
            })
            .unwrap_or_default();
        let response = ApiVersionsResponse::default()
            .with_api_keys(vec![
                api(ApiKey::Produce, 13),
                api(ApiKey::TxnOffsetCommit, 5),
                api(ApiKey::EndTxn, end_txn_max),
            ])
            .with_finalized_features(features);
        ApiVersionTable::from_response(&response)
    }

    #[test]
    fn v2_only_where_the_feature_is_finalized_and_the_versions_are_there() {
        assert_eq!(TxnProtocol::of(&broker(Some(2), 5)), TxnProtocol::V2);
        assert_eq!(TxnProtocol::of(&broker(Some(1), 5)), TxnProtocol::V1, "transaction.version 1: the old protocol");
        assert_eq!(TxnProtocol::of(&broker(None, 5)), TxnProtocol::V1, "a 3.x broker finalizes no such feature");
        assert_eq!(TxnProtocol::of(&broker(Some(2), 4)), TxnProtocol::V1, "no EndTxn v5");
    }

    #[test]
    fn v1_caps_every_call_below_kip_890() {
        let v1 = TxnProtocol::V1;
        assert_eq!((v1.produce_cap(), v1.txn_offset_commit_cap(), v1.end_txn_cap()), (11, 4, 4));
        let v2 = TxnProtocol::V2;
        assert!(v2.produce_cap() >= V2_PRODUCE_MIN && v2.end_txn_cap() >= V2_END_TXN_MIN);
    }
}
