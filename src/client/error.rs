//! The client's errors: one enum for a single connection ([`ConnectionError`]) and one for
//! cluster-level calls ([`ClientError`]), each carrying the context an operator needs to act
//! (cluster, broker, API, topic, partition).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::protocol::VersionRange;

use super::security::{CredentialError, SecurityError};
use crate::config::SaslMechanism;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::ProtocolError;

/// Which broker a connection goes to, for messages: `cluster primary, broker 1 (127.0.0.1:9092)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRef {
    pub cluster: Arc<str>,
    /// The broker's node id; `None` for a bootstrap address not yet matched to a node.
    pub node_id: Option<i32>,
    pub address: Arc<str>,
}

impl fmt::Display for BrokerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node_id {
            Some(node) => write!(f, "cluster {}, broker {} ({})", self.cluster, node, self.address),
            None => write!(f, "cluster {}, bootstrap server {}", self.cluster, self.address),
        }
    }
}

/// Something went wrong on one broker connection. Once one of these has been returned for
/// a reason other than a refused version, the connection is dropped and every request in
/// flight on it fails with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    #[error("{broker}: cannot resolve the address: {source}")]
    Resolve { broker: BrokerRef, source: super::resolve::ResolveError },
    #[error("{broker}: cannot connect: {source}")]
    Connect { broker: BrokerRef, source: Arc<std::io::Error> },
    #[error("{broker}: no connection after {after:?} (is the address right and the broker up?)")]
    ConnectTimeout { broker: BrokerRef, after: Duration },
    #[error("{broker}: connection lost: {source}")]
    Io { broker: BrokerRef, source: Arc<std::io::Error> },
    #[error(
        "{broker}: the broker closed the connection{}{}",
        if *.mid_response { " in the middle of a response" } else { "" },
        if *.after_first_response {
            " right after its first answer, as a SASL listener does to a client that does not \
             authenticate (set security.sasl for this cluster, or use the broker's PLAINTEXT or SSL port)"
        } else {
            ""
        }
    )]
    Closed { broker: BrokerRef, mid_response: bool, after_first_response: bool },
    #[error("{broker}: no response to {api} within {after:?}; connection dropped")]
    RequestTimeout { broker: BrokerRef, api: &'static str, after: Duration },
    #[error("{broker}: {source}; connection dropped")]
    Protocol { broker: BrokerRef, source: ProtocolError },
    /// A request kferry built does not fit the negotiated version: a kferry bug, nothing
    /// was sent and the connection is fine.
    #[error("{broker}: {source} (a kferry bug: please report it)")]
    Encode { broker: BrokerRef, source: ProtocolError },
    #[error(
        "{broker}: response with correlation id {correlation_id} answers no request in flight; connection dropped"
    )]
    UnexpectedCorrelationId { broker: BrokerRef, correlation_id: i32 },
    #[error("{broker}: the broker does not support {api} in a version kferry speaks (kferry: v{ours}, broker: {})", theirs.map_or("none".to_string(), |v| format!("v{v}")))]
    UnsupportedApi { broker: BrokerRef, api: &'static str, ours: VersionRange, theirs: Option<VersionRange> },
    #[error("{broker}: ApiVersions handshake refused: {code}")]
    Handshake { broker: BrokerRef, code: ErrorCode },
    #[error("{broker}: connection closed by kferry")]
    Shutdown { broker: BrokerRef },
    /// The TLS handshake failed: untrusted certificate, wrong name, refused client
    /// certificate, or no TLS listener at the address.
    #[error("{broker}: TLS: {reason}")]
    Tls { broker: BrokerRef, reason: String },
    /// Plaintext sent to a TLS listener: its answer is a TLS alert.
    #[error(
        "{broker}: the broker answered with TLS: this is a TLS listener (SSL or SASL_SSL); \
         set security.tls for this cluster, or use the broker's plaintext port"
    )]
    TlsListener { broker: BrokerRef },
    #[error("{broker}: SASL mechanism {mechanism} is not enabled on this listener; enabled: {}", if .enabled.is_empty() { "none" } else { .enabled.as_str() })]
    SaslMechanism { broker: BrokerRef, mechanism: SaslMechanism, enabled: String },
    /// The broker refused the credentials.
    #[error("{broker}: {mechanism} authentication{} failed: {message}", .user.as_ref().map_or(String::new(), |u| format!(" as user {u}")))]
    Authentication { broker: BrokerRef, mechanism: SaslMechanism, user: Option<String>, message: String },
    #[error("{broker}: {mechanism} authentication: {reason}")]
    Sasl { broker: BrokerRef, mechanism: SaslMechanism, reason: String },
    #[error("{broker}: no credentials to authenticate with: {source}")]
    Credentials { broker: BrokerRef, source: CredentialError },
    /// The SASL session ran out before it could be renewed (the connection sat idle).
    #[error("{broker}: SASL session expired; reconnecting")]
    SessionExpired { broker: BrokerRef },
}

impl ConnectionError {
    /// Whether a new connection may succeed where this one failed.
    pub fn is_retriable(&self) -> bool {
        // Configuration problems stay until an operator acts; retrying only delays the
        // message. Credentials (a token endpoint down, a file being rotated) may come back.
        !matches!(
            self,
            Self::UnsupportedApi { .. }
                | Self::Handshake { .. }
                | Self::Encode { .. }
                | Self::Tls { .. }
                | Self::TlsListener { .. }
                | Self::SaslMechanism { .. }
                | Self::Authentication { .. }
                | Self::Sasl { .. }
        )
    }
}

/// A cluster-level call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("cluster {cluster}: none of the bootstrap servers answered: {}", list(.attempts))]
    NoBootstrap { cluster: Arc<str>, attempts: Vec<ConnectionError> },
    #[error("{broker}: {api} for topic {topic} partition {partition} failed: {code}{}", detail(.message))]
    Partition {
        broker: BrokerRef,
        api: &'static str,
        topic: String,
        partition: i32,
        code: ErrorCode,
        message: Option<String>,
    },
    #[error("cluster {cluster}: {api} for topic {topic} failed: {code}{}", detail(.message))]
    Topic { cluster: Arc<str>, api: &'static str, topic: String, code: ErrorCode, message: Option<String> },
    #[error("{broker}: {api} failed: {code}{}", detail(.message))]
    Request { broker: BrokerRef, api: &'static str, code: ErrorCode, message: Option<String> },
    #[error("{broker}: {api} for group {group} failed: {code}")]
    Group { broker: BrokerRef, api: &'static str, group: String, code: ErrorCode },
    #[error("{broker}: {api} for transactional id {transactional_id} failed: {code}")]
    Transaction { broker: BrokerRef, api: &'static str, transactional_id: String, code: ErrorCode },
    #[error("cluster {cluster}: topic {topic} does not exist")]
    UnknownTopic { cluster: Arc<str>, topic: String },
    #[error("cluster {cluster}: topic {topic} has no partition {partition}")]
    UnknownPartition { cluster: Arc<str>, topic: String, partition: i32 },
    #[error("cluster {cluster}: topic {topic} partition {partition} has no leader right now")]
    NoLeader { cluster: Arc<str>, topic: String, partition: i32 },
    #[error("cluster {cluster}: topic {topic} was created but has no leader for every partition after {waited:?}")]
    TopicNotReady { cluster: Arc<str>, topic: String, waited: Duration },
    #[error("cluster {cluster}: topic {topic} was deleted but is still listed after {waited:?}")]
    TopicNotDeleted { cluster: Arc<str>, topic: String, waited: Duration },
    #[error("cluster {cluster}: metadata names broker {node_id}, but no address for it")]
    UnknownBroker { cluster: Arc<str>, node_id: i32 },
    #[error("cluster {cluster}: {what} answered without {missing}")]
    IncompleteResponse { cluster: Arc<str>, what: &'static str, missing: String },
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("{last} (gave up after {attempts} attempts in {elapsed:?})")]
    RetriesExhausted { attempts: u32, elapsed: Duration, last: Box<ClientError> },
}

fn list(errors: &[ConnectionError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn detail(message: &Option<String>) -> String {
    message.as_deref().filter(|m| !m.is_empty()).map_or(String::new(), |m| format!(": {m}"))
}

impl ClientError {
    /// Whether sending the same call again (after a backoff) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connection(e) => e.is_retriable(),
            // Every bootstrap server refusing kferry's TLS or credentials will refuse again.
            Self::NoBootstrap { attempts, .. } => {
                attempts.is_empty() || attempts.iter().any(ConnectionError::is_retriable)
            }
            Self::NoLeader { .. } | Self::UnknownBroker { .. } => true,
            Self::Partition { code, .. }
            | Self::Topic { code, .. }
            | Self::Request { code, .. }
            | Self::Group { code, .. }
            | Self::Transaction { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// Whether a transaction coordinator answered CONCURRENT_TRANSACTIONS (it is still
    /// completing the previous transaction).
    pub fn is_concurrent_transactions(&self) -> bool {
        matches!(self, Self::Transaction { code, .. } if code.0 == crate::protocol::error_code::ResponseError::ConcurrentTransactions)
    }

    /// The Kafka error code the broker answered with, if the error is one.
    pub fn kafka_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Partition { code, .. }
            | Self::Topic { code, .. }
            | Self::Request { code, .. }
            | Self::Group { code, .. }
            | Self::Transaction { code, .. } => Some(*code),
            Self::Connection(ConnectionError::Handshake { code, .. }) => Some(*code),
            Self::RetriesExhausted { last, .. } => last.kafka_code(),
            _ => None,
        }
    }

    /// How the error is counted in `kferry_errors_total`: the Kafka error name
    /// (`NOT_LEADER_OR_FOLLOWER`), `connection` when the cluster could not be reached or the
    /// connection broke, `no_leader` for a partition without one, `other` otherwise.
    pub fn metric_code(&self) -> String {
        if let Some(code) = self.kafka_code() {
            return code.name();
        }
        match self {
            Self::Connection(_) | Self::NoBootstrap { .. } => "connection".into(),
            Self::NoLeader { .. } | Self::TopicNotReady { .. } => "no_leader".into(),
            Self::RetriesExhausted { last, .. } => last.metric_code(),
            _ => "other".into(),
        }
    }

    /// Whether cached metadata is likely stale and must be refreshed before a retry.
    pub fn needs_metadata_refresh(&self) -> bool {
        match self {
            Self::Connection(_) | Self::NoLeader { .. } | Self::UnknownBroker { .. } => true,
            Self::Partition { code, .. } | Self::Topic { code, .. } | Self::Request { code, .. } => {
                code.needs_metadata_refresh()
            }
            _ => false,
        }
    }
}
