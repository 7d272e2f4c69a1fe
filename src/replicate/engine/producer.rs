//! The flow's producers on the target: InitProducerId (fencing an earlier instance with the
//! same transactional id and aborting its open transaction), the checks around it (the
//! target has the transaction APIs; after it, the flow is not failing or failed over), and
//! the state read back from the target: the progress group and the offset maps. The state
//! is read in full once; after an abandoned round only the progress is read, and the maps
//! again only if the progress shows the round committed after all (an EndTxn whose answer
//! was lost).
//!
//! With `exactly_once` on a target with KIP-890's transaction protocol (V2) a shard has two
//! transactional ids whose producers take turns at rounds ([`Producers`]).

use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    TxnOffsetCommitRequest,
};

use super::partition::PartitionState;
use super::{ReplicateError, Replicator, StepError};
use crate::client::{ClientError, ConnectionError, ProducerIdentity, TxnProtocol};
use crate::protocol::error_code::ResponseError;
use crate::recovery::marker::{self, FlowState, MarkerError};
use crate::replicate::state;

/// Transactions left open longer are aborted by the target's coordinator.
const TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One producer of a replicator on the target.
#[derive(Debug, Clone)]
pub(super) struct TargetProducer {
    /// `Some` with `exactly_once`.
    pub(super) transactional_id: Option<String>,
    pub(super) identity: ProducerIdentity,
}

/// A replicator's producers on the target, taking turns at rounds.
///
/// Why two with KIP-890 (V2): EndTxn returns once the coordinator has decided, and the
/// coordinator then writes the markers. Until they are written, the next batch of the same
/// transactional id waits: the partition leader verifies the new transaction with the
/// coordinator, which answers CONCURRENT_TRANSACTIONS. On 3 brokers that wait was 100-230
/// ms in the slowest rounds, the latency's p99. The other id's last transaction ended a
/// round earlier, so its markers are written by then. Rounds still run one at a time: the
/// next starts only after the previous EndTxn returned, so transactions commit in order
/// and a crash leaves a prefix. Every EndTxn bumps the epoch under V2, so every partition's
/// sequence starts at 0 whichever producer's turn it is.
///
/// With V1 (AddPartitionsToTxn, the epoch kept between transactions) and `at_least_once`
/// there is one: sequences then continue from round to round for one producer.
#[derive(Debug, Clone)]
pub(super) struct Producers {
    members: Vec<TargetProducer>,
    turn: usize,
}

impl Producers {
    /// The producer of the next round (of the round in flight while one is).
    pub(super) fn current(&self) -> &TargetProducer {
        &self.members[self.turn]
    }

    /// The round in flight ended as planned (committed, or an empty V2 round aborted): its
    /// producer takes the identity EndTxn gave it (V2 bumps the epoch), and the next round
    /// is the other producer's.
    pub(super) fn round_ended(&mut self, next: Option<ProducerIdentity>) {
        if let Some(next) = next {
            self.members[self.turn].identity = next;
        }
        self.turn = (self.turn + 1) % self.members.len();
    }
}

impl Replicator {
    /// The producers for the next rounds, every partition's sequence starting at 0.
    pub(super) async fn start_producer(&mut self) -> Result<(), StepError> {
        if self.transactional() {
            self.check_transaction_apis().await?;
        }
        let transactional_id = self.transactional().then(|| self.transactional_id.clone());
        let first = self.init_producer(transactional_id).await?;
        let mut members = vec![first.clone()];
        if first.transactional_id.is_some() && first.identity.protocol == TxnProtocol::V2 {
            if let Some(second) = self.init_alternate().await? {
                members.push(second);
            }
        }
        // Read the failover record *after* InitProducerId: a failover marks the flow before
        // it fences, so a producer initialised after the fence sees the mark here and stops
        // instead of writing.
        self.check_not_failed_over().await?;
        self.ensure_state_topic().await?;
        if !self.loaded || self.progress_moved().await? {
            self.load_state().await?;
        }
        self.restart_sequences();
        self.producers = Some(Producers { members, turn: 0 });
        Ok(())
    }

    /// InitProducerId for one of the replicator's producers.
    async fn init_producer(&self, transactional_id: Option<String>) -> Result<TargetProducer, StepError> {
        let identity = match self.target.init_producer_id(transactional_id.as_deref(), TRANSACTION_TIMEOUT).await {
            Ok(identity) => identity,
            Err(error) => return Err(self.classify_init_error(error)),
        };
        tracing::info!(flow = %self.name(), shard = %self.shard, transactional_id = %transactional_id.as_deref().unwrap_or("-"), producer_id = identity.id, epoch = identity.epoch, delivery = %self.flow.delivery, transaction_protocol = %identity.protocol, "producer ready on the target");
        Ok(TargetProducer { transactional_id, identity })
    }

    /// The second transactional producer. A target that refuses it (an ACL granting only
    /// the first id) leaves the flow with one, which works with longer rounds: said once.
    async fn init_alternate(&mut self) -> Result<Option<TargetProducer>, StepError> {
        let id = self.shard.alternate_transactional_id(&self.flow);
        match self.init_producer(Some(id.clone())).await {
            Ok(second) => Ok(Some(second)),
            Err(StepError::Fatal(refusal)) if matches!(*refusal, ReplicateError::TransactionsUnavailable { .. }) => {
                if !self.alternate_refused {
                    self.alternate_refused = true;
                    tracing::warn!(flow = %self.name(), transactional_id = %id, reason = %refusal, "the target refuses kferry's second transactional id; the flow runs with one, and each round waits for the previous one's markers (grant WRITE and DESCRIBE on TransactionalId {id}, or on the prefix kferry., for shorter rounds)");
                }
                Ok(None)
            }
            Err(other) => Err(other),
        }
    }

    /// A new producer id or epoch: every partition's sequence (the state partition's too)
    /// starts at 0, parked partitions' included, so one that is replicated again later does
    /// not resume an old epoch's numbering.
    pub(super) fn restart_sequences(&mut self) {
        for partition in self.partitions.values_mut().chain(self.parked.values_mut()) {
            partition.next_sequence = 0;
        }
        self.state_sequence = 0;
    }

    /// Creates the state topic with a partition per shard, or checks that it has that many:
    /// a flow whose shard count changed would look for its segments in the wrong places.
    async fn ensure_state_topic(&self) -> Result<(), StepError> {
        let count = i32::from(self.shard.count);
        let partitions =
            state::ensure_topic(&self.target, &self.state_topic, count, self.flow.replication_factor).await?;
        if partitions != count {
            return Err(StepError::Fatal(Box::new(ReplicateError::ShardsChanged {
                flow: self.name(),
                target: self.flow.target.clone(),
                topic: self.state_topic.clone(),
                partitions,
                shards: self.shard.count,
            })));
        }
        Ok(())
    }

    /// Reads progress and offset maps back; every partition then resumes from its
    /// committed progress (those not replicated now are parked with it). Partitions not in
    /// the progress group keep the start position they were given (it is committed with
    /// the next round).
    async fn load_state(&mut self) -> Result<(), StepError> {
        let mut maps = state::load(&self.target, &self.state_topic).await?;
        let progress = state::read_progress(&self.target, &self.progress_group).await?;
        // The other shards' partitions are theirs to resume.
        for p in progress.into_iter().filter(|p| self.shard.owns(&self.flow, &p.source.0, p.source.1)) {
            let mut partition = PartitionState::resumed(p.target_topic, p.next_offset, p.source_end);
            if let Some((_, map)) = maps.remove(&p.source) {
                partition.offset_map = map;
            }
            match self.partitions.get(&p.source) {
                Some(old) => {
                    partition.source_topic_id = old.source_topic_id;
                    partition.coalesce = old.coalesce;
                    self.partitions.insert(p.source, partition);
                }
                // Tracking moves it in once topic sync plans its topic.
                None => {
                    self.parked.insert(p.source, partition);
                }
            }
        }
        for partition in self.partitions.values_mut().filter(|p| !p.committed_on_target) {
            partition.rewind();
        }
        self.loaded = true;
        Ok(())
    }

    /// Whether the progress group differs from what this process believes was committed:
    /// a round it gave up on was committed after all.
    async fn progress_moved(&mut self) -> Result<bool, StepError> {
        let progress = state::read_progress(&self.target, &self.progress_group).await?;
        let moved = progress.iter().any(|p| {
            self.partitions
                .get(&p.source)
                .is_some_and(|known| known.committed_on_target && known.committed != p.next_offset)
        });
        if moved {
            tracing::warn!(flow = %self.name(), "a transaction round reported as failed was committed on the target; reading the flow's state back");
        } else {
            // Nothing committed: batches fetched but not committed are sent again.
            tracing::debug!(flow = %self.name(), "progress on the target as expected; resuming with the fetched batches");
        }
        Ok(moved)
    }

    /// Refuses to write to a target the flow was failed over to: its records there now come
    /// from the target's own producers.
    async fn check_not_failed_over(&self) -> Result<(), StepError> {
        let fatal = |e| StepError::Fatal(Box::new(e));
        match marker::read(&self.target, &self.name()).await {
            // Failing over counts: the failover has begun and its fence may come next.
            Ok(Some(record)) if record.state != FlowState::Active => Err(fatal(ReplicateError::FailedOver {
                flow: self.name(),
                target: self.flow.target.clone(),
                topic: marker::FAILOVER_TOPIC,
                reason: record.reason,
            })),
            Ok(_) => Ok(()),
            Err(MarkerError::Client(e)) => Err(StepError::Retry(e)),
            Err(reason) => Err(fatal(ReplicateError::FailoverRecord { flow: self.name(), reason })),
        }
    }

    /// Refuses, before anything is produced, a target that lacks one of the transaction
    /// APIs: a transaction that can be begun but never ended is worse than none (a broker
    /// without EndTxn may expose the open transaction's records).
    async fn check_transaction_apis(&self) -> Result<(), StepError> {
        let broker = self.target.any_broker().await?;
        let checks = [
            broker.version_for::<FindCoordinatorRequest>().err(),
            broker.version_for::<InitProducerIdRequest>().err(),
            broker.version_for::<AddPartitionsToTxnRequest>().err(),
            broker.version_for::<AddOffsetsToTxnRequest>().err(),
            broker.version_for::<TxnOffsetCommitRequest>().err(),
            broker.version_for::<EndTxnRequest>().err(),
        ];
        match checks.into_iter().flatten().next() {
            Some(missing) => Err(StepError::Fatal(Box::new(self.refused(ClientError::Connection(missing))))),
            None => Ok(()),
        }
    }

    /// The fatal error for a target that refuses kferry's producer.
    pub(super) fn refused(&self, error: ClientError) -> ReplicateError {
        if self.transactional() {
            ReplicateError::TransactionsUnavailable {
                flow: self.name(),
                target: self.flow.target.clone(),
                transactional_id: self.transactional_id.clone(),
                reason: error,
            }
        } else {
            ReplicateError::ProducerRefused { flow: self.name(), reason: error }
        }
    }

    /// The fatal error for the producer of the round in flight, which another instance fenced.
    pub(super) fn fenced(&self, error: ClientError) -> ReplicateError {
        let fenced_id = self.producers.as_ref().and_then(|p| p.current().transactional_id.clone());
        ReplicateError::Fenced {
            flow: self.name(),
            target: self.flow.target.clone(),
            transactional_id: fenced_id.unwrap_or_else(|| self.transactional_id.clone()),
            reason: error,
        }
    }

    fn classify_init_error(&self, error: ClientError) -> StepError {
        let refused = match &error {
            ClientError::Connection(ConnectionError::UnsupportedApi { .. }) => true,
            ClientError::Transaction { code, .. } | ClientError::Request { code, .. } => matches!(
                code.0,
                ResponseError::TransactionalIdAuthorizationFailed
                    | ResponseError::ClusterAuthorizationFailed
                    | ResponseError::UnsupportedVersion
            ),
            _ => false,
        };
        if refused {
            StepError::Fatal(Box::new(self.refused(error)))
        } else {
            StepError::Retry(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(id: &str, producer_id: i64) -> TargetProducer {
        let identity = ProducerIdentity { id: producer_id, epoch: 0, protocol: TxnProtocol::V2 };
        TargetProducer { transactional_id: Some(id.to_string()), identity }
    }

    #[test]
    fn two_producers_take_turns_and_each_keeps_its_own_bumped_epoch() {
        let mut producers = Producers { members: vec![producer("a", 1), producer("b", 2)], turn: 0 };
        assert_eq!(producers.current().transactional_id.as_deref(), Some("a"));
        producers.round_ended(Some(ProducerIdentity { id: 1, epoch: 1, protocol: TxnProtocol::V2 }));
        assert_eq!(producers.current().transactional_id.as_deref(), Some("b"));
        assert_eq!(producers.current().identity.epoch, 0);
        producers.round_ended(Some(ProducerIdentity { id: 2, epoch: 1, protocol: TxnProtocol::V2 }));
        let a = producers.current();
        assert_eq!((a.transactional_id.as_deref(), a.identity.id, a.identity.epoch), (Some("a"), 1, 1));
    }

    #[test]
    fn one_producer_keeps_its_identity_when_the_epoch_stays() {
        let mut producers = Producers { members: vec![producer("a", 1)], turn: 0 };
        producers.round_ended(None);
        producers.round_ended(None);
        assert_eq!((producers.current().identity.id, producers.current().identity.epoch), (1, 0));
    }
}
