//! The producer side of idempotence and transactions: InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn, and Produce of several partitions' batches
//! in one request.
//!
//! kferry speaks the transaction protocol as Kafka 3.x clients do (explicit
//! AddPartitionsToTxn/AddOffsetsToTxn, EndTxn before v5, Produce before v12). Kafka 4.x
//! brokers with `transaction.version=2` (KIP-890) still serve that protocol to such
//! clients, and 3.x brokers only have it, so one code path works on both; the versions are
//! capped below so a 4.x broker never sees a half-new, half-old transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId, InitProducerIdRequest, ProduceRequest,
    ProduceResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::coordinator::{coordinator_moved, CoordinatorKind, GroupOffsets};
use super::error::ClientError;
use super::messenger::{Messenger, Queued};
use crate::protocol::error_code::ErrorCode;

/// Highest versions of the pre-KIP-890 transaction protocol (what Kafka 3.9 speaks).
const PRODUCE_MAX: i16 = 11;
const ADD_PARTITIONS_TO_TXN_MAX: i16 = 3;
const ADD_OFFSETS_TO_TXN_MAX: i16 = 4;
const TXN_OFFSET_COMMIT_MAX: i16 = 4;
const END_TXN_MAX: i16 = 4;

/// The producer id and epoch the target assigned; written into every produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
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
            Ok(ProducerIdentity { id: response.producer_id.0, epoch: response.producer_epoch })
        })
        .await
    }

    /// Adds target partitions to the open transaction before anything is produced to them.
    pub async fn add_partitions_to_txn(
        &self,
        transactional_id: &str,
        producer: ProducerIdentity,
        partitions: &BTreeMap<String, Vec<i32>>,
    ) -> Result<(), ClientError> {
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
            let codes = response.results_by_topic_v3_and_below.iter().flat_map(|t| &t.results_by_partition);
            for code in codes.filter_map(|p| ErrorCode::from_code(p.partition_error_code)) {
                // OPERATION_NOT_ATTEMPTED only says another partition of the request failed.
                if code.0 != crate::protocol::error_code::ResponseError::OperationNotAttempted {
                    return Err(self.txn_error(&coordinator, "AddPartitionsToTxn", transactional_id, code));
                }
            }
            if let Some(code) = ErrorCode::from_code(response.error_code) {
                return Err(self.txn_error(&coordinator, "AddPartitionsToTxn", transactional_id, code));
            }
            Ok(())
        })
        .await
    }

    /// Adds `group`'s offsets to the open transaction (AddOffsetsToTxn), which
    /// [`Cluster::txn_offset_commit`] needs first. It does not depend on the records, so a
    /// round sends it while its batches are produced.
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
    /// group's coordinator, after [`Cluster::add_offsets_to_txn`]): they become visible
    /// with the data.
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
            let (_, response) = coordinator.request_capped(&commit, TXN_OFFSET_COMMIT_MAX, timeout).await?;
            let broker = coordinator.broker().clone();
            for partition in response.topics.iter().flat_map(|t| &t.partitions) {
                self.check_group_code(group, &broker, "TxnOffsetCommit", partition.error_code)?;
            }
            Ok(())
        })
        .await
    }

    /// Commits (`commit`) or aborts the open transaction.
    pub async fn end_txn(
        &self,
        transactional_id: &str,
        producer: ProducerIdentity,
        commit: bool,
    ) -> Result<(), ClientError> {
        let request = EndTxnRequest::default()
            .with_transactional_id(txn_id(transactional_id))
            .with_producer_id(ProducerId(producer.id))
            .with_producer_epoch(producer.epoch)
            .with_committed(commit);
        self.retrying(|| async {
            let coordinator = self.coordinator(CoordinatorKind::Transaction, transactional_id).await?;
            let timeout = coordinator.request_timeout();
            let (_, response) = coordinator.request_capped(&request, END_TXN_MAX, timeout).await?;
            match ErrorCode::from_code(response.error_code) {
                Some(code) => Err(self.txn_error(&coordinator, "EndTxn", transactional_id, code)),
                None => Ok(()),
            }
        })
        .await
    }

    /// Produces `batches` (at most one per partition) to `leader` in one request, with
    /// `acks=all`; one outcome per batch. No retries here: the caller owns the sequence
    /// numbers and decides what a failed batch means.
    pub async fn produce_to(
        &self,
        leader: &Messenger,
        transactional_id: Option<&str>,
        batches: &[ProduceBatch],
        timeout: Duration,
    ) -> Result<Vec<ProduceOutcome>, ClientError> {
        let (_, response) = submit_produce(leader, transactional_id, batches, timeout).await?.response().await?;
        Ok(produce_outcomes(response, batches))
    }
}

/// Queues a Produce of `batches` (at most one per partition) on `leader` and returns
/// without waiting: Produce requests queued one after the other keep their order on the
/// wire, so several rounds of a partition's batches can be in flight at once.
pub async fn submit_produce<'m>(
    leader: &'m Messenger,
    transactional_id: Option<&str>,
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
    let cap = if transactional_id.is_some() { PRODUCE_MAX } else { i16::MAX };
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
