//! The admin calls kferry needs: DescribeCluster, DescribeConfigs and CreateTopics. Each
//! goes to any broker (KRaft brokers forward controller work themselves) through the
//! cluster's retry policy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{CreateTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::error::ClientError;
use super::metadata::BrokerInfo;
use crate::protocol::error_code::{ErrorCode, ResponseError};

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// The cluster as DescribeCluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: Option<i32>,
    pub brokers: Vec<BrokerInfo>,
}

/// Where a config value comes from (Kafka's `ConfigSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic itself.
    Topic,
    /// Inherited from a broker or cluster setting, or Kafka's default.
    Inherited,
    Unknown,
}

/// One config of a topic, as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// `None` for sensitive values the broker does not disclose.
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
}

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// `None`: the target cluster's `default.replication.factor`.
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
}

impl Cluster {
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        self.retrying(|| async {
            let broker = self.any_broker().await?;
            let (_, response) = broker.request(&DescribeClusterRequest::default()).await?;
            if let Some(code) = ErrorCode::from_code(response.error_code) {
                let message = response.error_message.map(|m| m.to_string());
                return Err(ClientError::Request {
                    broker: broker.broker().clone(),
                    api: "DescribeCluster",
                    code,
                    message,
                });
            }
            Ok(ClusterDescription {
                cluster_id: response.cluster_id.to_string(),
                controller_id: Some(response.controller_id.0).filter(|&id| id >= 0),
                brokers: response
                    .brokers
                    .into_iter()
                    .map(|b| BrokerInfo {
                        node_id: b.broker_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.map(|r| r.to_string()),
                    })
                    .collect(),
            })
        })
        .await
    }

    /// Every config of `topic`, with where its value comes from.
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<BTreeMap<String, ConfigEntry>, ClientError> {
        self.retrying(|| async {
            let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configuration_keys(None)]);
            let (_, response) = self.any_broker().await?.request(&request).await?;
            let result = response.results.into_iter().find(|r| r.resource_name.as_str() == topic).ok_or_else(|| {
                ClientError::IncompleteResponse {
                    cluster: self.name().clone(),
                    what: "DescribeConfigs",
                    missing: format!("topic {topic}"),
                }
            })?;
            if let Some(code) = ErrorCode::from_code(result.error_code) {
                // For an admin lookup this means the topic does not exist: no point retrying.
                if code.0 == ResponseError::UnknownTopicOrPartition {
                    return Err(ClientError::UnknownTopic { cluster: self.name().clone(), topic: topic.to_string() });
                }
                let message = result.error_message.map(|m| m.to_string());
                return Err(ClientError::Topic {
                    cluster: self.name().clone(),
                    api: "DescribeConfigs",
                    topic: topic.to_string(),
                    code,
                    message,
                });
            }
            Ok(result
                .configs
                .into_iter()
                .map(|c| {
                    let entry = ConfigEntry {
                        value: c.value.map(|v| v.to_string()),
                        // DYNAMIC_TOPIC_CONFIG (1) is the only source that belongs to the topic.
                        source: match c.config_source {
                            1 => ConfigSource::Topic,
                            2..=6 => ConfigSource::Inherited,
                            _ => ConfigSource::Unknown,
                        },
                        read_only: c.read_only,
                        sensitive: c.is_sensitive,
                    };
                    (c.name.to_string(), entry)
                })
                .collect())
        })
        .await
    }

    /// Creates `topics`; returns one result per topic, in order, so one refused topic does
    /// not hide the others. `validate_only` asks the broker to check without creating.
    ///
    /// A created topic is reported `Ok` only once this cluster's metadata shows it with a
    /// leader for every partition (KRaft brokers learn of a new topic a moment after the
    /// controller accepted it), so the caller can produce to it at once.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        validate_only: bool,
        timeout: Duration,
    ) -> Result<Vec<(String, Result<(), ClientError>)>, ClientError> {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
            .with_validate_only(validate_only)
            .with_topics(topics.iter().map(creatable_topic).collect());
        let started = Instant::now();
        let (_, response) = self.retrying(|| async { Ok(self.any_broker().await?.request(&request).await?) }).await?;
        self.invalidate_metadata();
        let mut outcomes: Vec<(String, Result<(), ClientError>)> = topics
            .iter()
            .map(|topic| {
                let result = response.topics.iter().find(|r| r.name.0.as_str() == topic.name);
                let outcome = match result.map(|r| (ErrorCode::from_code(r.error_code), &r.error_message)) {
                    None => Err(ClientError::IncompleteResponse {
                        cluster: self.name().clone(),
                        what: "CreateTopics",
                        missing: format!("topic {}", topic.name),
                    }),
                    Some((None, _)) => Ok(()),
                    Some((Some(code), message)) => Err(ClientError::Topic {
                        cluster: self.name().clone(),
                        api: "CreateTopics",
                        topic: topic.name.clone(),
                        code,
                        message: message.as_ref().map(|m| m.to_string()),
                    }),
                };
                (topic.name.clone(), outcome)
            })
            .collect();
        if !validate_only {
            for (topic, outcome) in outcomes.iter_mut().filter(|(_, outcome)| outcome.is_ok()) {
                *outcome = self.await_leaders(topic, started + timeout).await;
            }
        }
        Ok(outcomes)
    }

    /// Polls metadata until every partition of `topic` has a leader, or `deadline` passes.
    async fn await_leaders(&self, topic: &str, deadline: Instant) -> Result<(), ClientError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.topic_once(topic).await {
                Ok(info) if info.partitions.values().all(|p| p.leader.is_some()) => return Ok(()),
                Ok(_) | Err(ClientError::UnknownTopic { .. }) => {}
                Err(other) => return Err(other),
            }
            if Instant::now() + pause > deadline {
                return Err(ClientError::TopicNotReady {
                    cluster: self.name().clone(),
                    topic: topic.to_string(),
                    waited: started.elapsed(),
                });
            }
            self.invalidate_metadata();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

fn creatable_topic(topic: &NewTopic) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
        .with_num_partitions(topic.partitions)
        .with_replication_factor(topic.replication_factor.unwrap_or(-1))
        .with_configs(
            topic
                .configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.clone()))
                        .with_value(Some(StrBytes::from_string(v.clone())))
                })
                .collect(),
        )
}
