//! kferry's own Kafka client: sockets, pipelining, brokers, metadata, retries and calls.
//!
//! - [`Messenger`]: one pipelined connection to one broker (correlation ids, bounded
//!   in-flight requests, poisoning, cancel-safety, API version negotiation).
//! - [`Cluster`]: the broker pool of one cluster, its metadata cache and retry policy.
//! - [`resolve`] (host names from /etc/hosts and DNS, no glibc), `transport` (TCP or TLS stream) and [`security`] (TLS settings, SASL mechanisms,
//!   KIP-368 re-authentication): what sits under a messenger.
//! - `records` (ListOffsets, Produce, Fetch), `admin` (DescribeCluster, DescribeConfigs,
//!   CreateTopics, CreatePartitions, IncrementalAlterConfigs) and `acls` (DescribeAcls,
//!   CreateAcls), `coordinator` (group offsets) and `membership` (JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup, DescribeGroups): the calls, as methods on [`Cluster`].
//!
//! The client knows nothing of flows, topic naming or replication policy; it only moves
//! requests and bytes, and reports failures with cluster, broker, topic and partition.

mod acls;
mod admin;
mod cluster;
mod coordinator;
mod error;
mod membership;
mod messenger;
mod metadata;
mod quota;
mod records;
pub mod resolve;
pub mod security;
mod transactions;
mod transport;

pub use acls::{AclOperation, AclPattern, AclPermission, TopicAcl};
pub use admin::{ClusterDescription, ConfigEntry, ConfigSource, NewTopic, TopicConfigs};
pub use cluster::{ClientConfig, Cluster, ConnectionCounts, RetryPolicy};
pub use coordinator::{CommittedOffset, CoordinatorKind, GroupOffsets, ListedGroup};
pub use error::{BrokerRef, ClientError, ConnectionError};
pub use membership::{DescribedGroup, DescribedMember, JoinRequest, Joined, JoinedMember, Member};
pub use messenger::{ConnectionConfig, Messenger, Queued};
pub use metadata::{BrokerInfo, MetadataSnapshot, PartitionInfo, TopicInfo};
pub use quota::QuotaWaits;
pub use records::{
    FetchSession, FetchSpec, FetchedPartition, Isolation, OffsetSpec, PartitionFetch, PartitionFetched, Produced,
};
pub use transactions::{produce_outcomes, submit_produce, ProduceBatch, ProduceOutcome, ProducerIdentity, TxnProtocol};
