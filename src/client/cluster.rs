//! One Kafka cluster as kferry sees it: a pool of broker connections keyed by node id, a
//! metadata cache, and the retry policy every call goes through.
//!
//! The cache is refreshed when it is older than `metadata_max_age`, when a caller asks for a
//! topic it does not cover, and after any error that means it is stale (a moved leader, an
//! unknown topic or partition, a fenced leader epoch, a lost connection). Retries back off
//! exponentially up to a cap and apply to retriable errors only; anything else surfaces at
//! once with its context.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::CoordinatorKind;
use super::error::{BrokerRef, ClientError, ConnectionError};
use super::messenger::{ConnectionConfig, Messenger};
use super::metadata::{MetadataSnapshot, TopicInfo};
use super::quota::QuotaWaits;
use crate::protocol::api::ApiRequest;

/// Pause before asking again after CONCURRENT_TRANSACTIONS.
const CONCURRENT_TRANSACTIONS_BACKOFF: Duration = Duration::from_millis(20);
/// How long CONCURRENT_TRANSACTIONS is retried before the ordinary policy takes over.
const CONCURRENT_TRANSACTIONS_PATIENCE: Duration = Duration::from_secs(10);

/// How a [`Cluster`] connects, caches and retries.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub connection: ConnectionConfig,
    /// Metadata older than this is refreshed before it is used.
    pub metadata_max_age: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            metadata_max_age: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// Capped exponential backoff for retriable errors.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), max_attempts: 10 }
    }
}

impl RetryPolicy {
    /// The pause after `attempt` (1-based) failed: initial, doubled each time, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Where a pooled connection goes: a known broker, or a bootstrap address before we know
/// which broker answers there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Endpoint {
    Node(i32),
    Bootstrap(usize),
}

/// Connections opened to one broker (the first, then one per reconnect) and attempts that
/// failed: what an operator looks at when a broker's connections flap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub opened: u64,
    pub failed: u64,
}

/// One pooled connection: `None` until connected, replaced when poisoned. The async lock
/// makes concurrent callers share a single connect attempt per broker.
type PooledConnection = Arc<tokio::sync::Mutex<Option<Arc<Messenger>>>>;

struct CachedMetadata {
    snapshot: Arc<MetadataSnapshot>,
    fetched_at: Instant,
    /// Whether the snapshot lists every topic (a Metadata request for all topics).
    complete: bool,
    stale: bool,
}

/// A Kafka cluster: broker pool, metadata cache, retries. Cheap to share as `Arc<Cluster>`.
pub struct Cluster {
    name: Arc<str>,
    bootstrap: Vec<String>,
    config: ClientConfig,
    connections: Mutex<HashMap<Endpoint, PooledConnection>>,
    /// Per broker (node id, or `bootstrap <address>` before one is known).
    connection_counts: Mutex<std::collections::BTreeMap<String, ConnectionCounts>>,
    metadata: RwLock<Option<CachedMetadata>>,
    /// Serialises refreshes so a burst of stale-metadata errors sends one request.
    refreshing: tokio::sync::Mutex<()>,
    /// Coordinator node ids by (kind, key), until a call says one moved.
    coordinators: Mutex<HashMap<(CoordinatorKind, String), i32>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("name", &self.name).field("bootstrap", &self.bootstrap).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the first bootstrap server that answers and loads the broker list.
    pub async fn connect(name: &str, bootstrap: &[String], mut config: ClientConfig) -> Result<Arc<Self>, ClientError> {
        // Throttle times are counted per cluster connection pool (one per flow and side).
        config.connection.quota = Arc::default();
        let cluster = Arc::new(Self {
            name: name.into(),
            bootstrap: bootstrap.to_vec(),
            config,
            connections: Mutex::default(),
            connection_counts: Mutex::default(),
            metadata: RwLock::default(),
            refreshing: tokio::sync::Mutex::default(),
            coordinators: Mutex::default(),
        });
        cluster.retrying(|| cluster.refresh(Some(&[]))).await?;
        Ok(cluster)
    }

    /// The cluster's name in kferry's config, used in every message about it.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// What this cluster's brokers asked kferry to wait (quotas).
    pub fn quota_waits(&self) -> &QuotaWaits {
        &self.config.connection.quota
    }

    /// Metadata listing every topic of the cluster (always a fresh request).
    pub async fn all_topics(&self) -> Result<Arc<MetadataSnapshot>, ClientError> {
        self.retrying(|| self.refresh(None)).await
    }

    /// Metadata of one topic: from the cache when fresh, else from a new Metadata request.
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicInfo>, ClientError> {
        self.retrying(|| self.topic_once(topic)).await
    }

    /// The connection to the current leader of `topic`/`partition`, and its leader epoch.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<(Arc<Messenger>, i32), ClientError> {
        self.retrying(|| self.leader_once(topic, partition)).await
    }

    /// As [`Cluster::topic`] without retries, for use inside a call that retries as a whole
    /// (nested retries would multiply the attempts).
    pub async fn topic_once(&self, topic: &str) -> Result<Arc<TopicInfo>, ClientError> {
        // A topic the last answer had an error for is asked again: it may exist by now.
        let covers = |s: &MetadataSnapshot| s.topics.contains_key(topic);
        let snapshot = match self.cached(covers) {
            Some(snapshot) => snapshot,
            None => self.refresh(Some(&[topic.to_string()])).await?,
        };
        if let Some(info) = snapshot.topics.get(topic) {
            return Ok(info.clone());
        }
        match snapshot.topic_errors.get(topic) {
            Some(code) if code.0 != crate::protocol::error_code::ResponseError::UnknownTopicOrPartition => {
                Err(ClientError::Topic {
                    cluster: self.name.clone(),
                    api: "Metadata",
                    topic: topic.to_string(),
                    code: *code,
                    message: None,
                })
            }
            _ => Err(ClientError::UnknownTopic { cluster: self.name.clone(), topic: topic.to_string() }),
        }
    }

    /// As [`Cluster::leader`] without retries; see [`Cluster::topic_once`].
    pub async fn leader_once(&self, topic: &str, partition: i32) -> Result<(Arc<Messenger>, i32), ClientError> {
        let info = self.topic_once(topic).await?;
        let p = info.partitions.get(&partition).ok_or_else(|| ClientError::UnknownPartition {
            cluster: self.name.clone(),
            topic: topic.to_string(),
            partition,
        })?;
        let leader = p.leader.ok_or_else(|| ClientError::NoLeader {
            cluster: self.name.clone(),
            topic: topic.to_string(),
            partition,
        })?;
        Ok((self.broker(leader).await?, p.leader_epoch))
    }

    /// Marks the cached metadata stale: the next lookup sends a Metadata request.
    pub fn invalidate_metadata(&self) {
        if let Some(cached) = self.metadata.write().unwrap_or_else(|p| p.into_inner()).as_mut() {
            cached.stale = true;
        }
    }

    fn cached(&self, covers: impl Fn(&MetadataSnapshot) -> bool) -> Option<Arc<MetadataSnapshot>> {
        let guard = self.metadata.read().unwrap_or_else(|p| p.into_inner());
        let cached = guard.as_ref()?;
        let fresh = !cached.stale && cached.fetched_at.elapsed() < self.config.metadata_max_age;
        (fresh && covers(&cached.snapshot)).then(|| Arc::clone(&cached.snapshot))
    }

    /// Sends one Metadata request (no retries) for `topics` (`None`: all topics) plus every
    /// topic the cache already covers, so one caller's refresh never drops another's topics.
    async fn refresh(&self, topics: Option<&[String]>) -> Result<Arc<MetadataSnapshot>, ClientError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let (mut wanted, was_complete) = {
            let guard = self.metadata.read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(cached) => (cached.snapshot.topics.keys().cloned().collect::<Vec<_>>(), cached.complete),
                None => (Vec::new(), false),
            }
        };
        let complete = topics.is_none() || was_complete;
        if let Some(topics) = topics {
            wanted.extend(topics.iter().cloned());
            wanted.sort();
            wanted.dedup();
        }
        let request = MetadataRequest::default()
            .with_topics((!complete).then(|| {
                wanted
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let (_, response) = self.any_broker().await?.request(&request).await?;
        let snapshot = Arc::new(MetadataSnapshot::from_response(response));
        *self.metadata.write().unwrap_or_else(|p| p.into_inner()) = Some(CachedMetadata {
            snapshot: Arc::clone(&snapshot),
            fetched_at: Instant::now(),
            complete,
            stale: false,
        });
        Ok(snapshot)
    }

    /// A live connection to broker `node_id`, opened if needed (no retries).
    pub async fn broker(&self, node_id: i32) -> Result<Arc<Messenger>, ClientError> {
        let address = self.broker_address(node_id).await?;
        let broker = BrokerRef { cluster: self.name.clone(), node_id: Some(node_id), address: address.into() };
        Ok(self.pooled(Endpoint::Node(node_id), broker).await?)
    }

    async fn broker_address(&self, node_id: i32) -> Result<String, ClientError> {
        if let Some(b) = self.cached(|_| true).and_then(|s| s.brokers.get(&node_id).cloned()) {
            return Ok(b.address());
        }
        let snapshot = self.refresh(Some(&[])).await?;
        snapshot
            .brokers
            .get(&node_id)
            .map(|b| b.address())
            .ok_or_else(|| ClientError::UnknownBroker { cluster: self.name.clone(), node_id })
    }

    /// Any live connection: a pooled one if there is one, else the first broker or
    /// bootstrap server that accepts a new connection.
    pub async fn any_broker(&self) -> Result<Arc<Messenger>, ClientError> {
        if let Some(messenger) = self.live_connection() {
            return Ok(messenger);
        }
        let known = self.metadata.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|c| Arc::clone(&c.snapshot));
        let mut attempts = Vec::new();
        for broker in known.iter().flat_map(|s| s.brokers.values()) {
            let target = BrokerRef {
                cluster: self.name.clone(),
                node_id: Some(broker.node_id),
                address: broker.address().into(),
            };
            match self.pooled(Endpoint::Node(broker.node_id), target).await {
                Ok(messenger) => return Ok(messenger),
                Err(e) => attempts.push(e),
            }
        }
        for (index, address) in self.bootstrap.iter().enumerate() {
            let target = BrokerRef { cluster: self.name.clone(), node_id: None, address: address.as_str().into() };
            match self.pooled(Endpoint::Bootstrap(index), target).await {
                Ok(messenger) => return Ok(messenger),
                Err(e) => attempts.push(e),
            }
        }
        Err(ClientError::NoBootstrap { cluster: self.name.clone(), attempts })
    }

    fn live_connection(&self) -> Option<Arc<Messenger>> {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.values().find_map(|slot| {
            let slot = slot.try_lock().ok()?;
            slot.as_ref().filter(|m| !m.is_poisoned()).cloned()
        })
    }

    async fn pooled(&self, endpoint: Endpoint, broker: BrokerRef) -> Result<Arc<Messenger>, ConnectionError> {
        let slot = Arc::clone(self.connections.lock().unwrap_or_else(|p| p.into_inner()).entry(endpoint).or_default());
        let mut slot = slot.lock().await;
        if let Some(messenger) = slot.as_ref().filter(|m| !m.is_poisoned() && m.broker().address == broker.address) {
            return Ok(Arc::clone(messenger));
        }
        tracing::debug!(%broker, "connecting");
        let label = match broker.node_id {
            Some(node) => node.to_string(),
            None => format!("bootstrap {}", broker.address),
        };
        let connected = Messenger::connect(broker, &self.config.connection).await;
        let mut counts = self.connection_counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(label).or_default();
        match &connected {
            Ok(_) => count.opened += 1,
            Err(_) => count.failed += 1,
        }
        drop(counts);
        let messenger = Arc::new(connected?);
        *slot = Some(Arc::clone(&messenger));
        Ok(messenger)
    }

    /// Connections opened and failed so far, per broker.
    pub fn connection_counts(&self) -> Vec<(String, ConnectionCounts)> {
        let counts = self.connection_counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().map(|(broker, count)| (broker.clone(), *count)).collect()
    }

    /// Sends `request` to any broker, with retries; returns which broker answered (for
    /// errors the caller finds in the response) and the response.
    pub async fn request_any<R: ApiRequest>(&self, request: &R) -> Result<(BrokerRef, R::Response), ClientError> {
        self.retrying(|| async {
            let broker = self.any_broker().await?;
            let (_, response) = broker.request(request).await?;
            Ok((broker.broker().clone(), response))
        })
        .await
    }

    /// Runs `call` until it succeeds, fails with a non-retriable error, or the retry policy
    /// is used up; refreshes metadata before retrying when the error says it is stale.
    pub async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let policy = &self.config.retry;
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !error.is_retriable() {
                return Err(error);
            }
            // The coordinator is still writing the previous transaction's markers: ask
            // again shortly (Kafka's producer waits 20 ms), without using up an attempt.
            if error.is_concurrent_transactions() && started.elapsed() < CONCURRENT_TRANSACTIONS_PATIENCE {
                tokio::time::sleep(CONCURRENT_TRANSACTIONS_BACKOFF).await;
                continue;
            }
            if attempt >= policy.max_attempts {
                return Err(ClientError::RetriesExhausted {
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    last: Box::new(error),
                });
            }
            if error.needs_metadata_refresh() {
                self.invalidate_metadata();
            }
            let pause = policy.backoff(attempt);
            tracing::debug!(cluster = %self.name, %error, attempt, ?pause, "retrying");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    pub(super) fn cached_coordinator(&self, kind: CoordinatorKind, key: &str) -> Option<i32> {
        self.coordinators.lock().unwrap_or_else(|p| p.into_inner()).get(&(kind, key.to_string())).copied()
    }

    pub(super) fn cache_coordinator(&self, kind: CoordinatorKind, key: &str, node: i32) {
        self.coordinators.lock().unwrap_or_else(|p| p.into_inner()).insert((kind, key.to_string()), node);
    }

    pub(super) fn forget_coordinator(&self, kind: CoordinatorKind, key: &str) {
        self.coordinators.lock().unwrap_or_else(|p| p.into_inner()).remove(&(kind, key.to_string()));
    }

    /// Closes every pooled connection; requests in flight fail with a shutdown error.
    pub fn close(&self) {
        let connections = std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        for slot in connections.values() {
            if let Ok(slot) = slot.try_lock() {
                if let Some(messenger) = slot.as_ref() {
                    messenger.close();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_attempts: 10,
        };
        let pauses: Vec<_> = (1..=6).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(200), Duration::from_secs(1));
    }
}
