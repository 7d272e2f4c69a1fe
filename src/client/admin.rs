//! The admin calls kferry needs: DescribeCluster, DescribeConfigs, CreateTopics,
//! DeleteTopics, CreatePartitions and IncrementalAlterConfigs (ACLs are in `acls`). Each
//! goes to any broker (KRaft brokers forward controller work themselves) through the
//! cluster's retry policy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::error::ClientError;
use super::metadata::BrokerInfo;
use crate::protocol::error_code::{ErrorCode, ResponseError};

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// DescribeConfigs resource type of a broker.
const RESOURCE_BROKER: i8 = 4;

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

/// Every config of one topic, by name.
pub type TopicConfigs = BTreeMap<String, ConfigEntry>;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

    /// Deletes the records of `topic`/`partition` before `before` (DeleteRecords, sent to
    /// the partition's leader); returns the new log start offset.
    pub async fn delete_records(&self, topic: &str, partition: i32, before: i64) -> Result<i64, ClientError> {
        let request =
            DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(before)])]);
        self.retrying(|| async {
            let (leader, _) = self.leader_once(topic, partition).await?;
            let (_, response) = leader.request(&request).await?;
            let answer = response.topics.iter().flat_map(|t| &t.partitions).find(|p| p.partition_index == partition);
            let Some(answer) = answer else {
                return Err(ClientError::IncompleteResponse {
                    cluster: self.name().clone(),
                    what: "DeleteRecords",
                    missing: format!("an answer for {topic} partition {partition}"),
                });
            };
            if let Some(code) = ErrorCode::from_code(answer.error_code) {
                if code.needs_metadata_refresh() {
                    self.invalidate_metadata();
                }
                return Err(ClientError::Partition {
                    broker: leader.broker().clone(),
                    api: "DeleteRecords",
                    topic: topic.to_string(),
                    partition,
                    code,
                    message: None,
                });
            }
            Ok(answer.low_watermark)
        })
        .await
    }

    /// Deletes `topic` (DeleteTopics) and waits until the cluster no longer knows it, so it
    /// can be created again under the same name. A topic already gone is not an error.
    pub async fn delete_topic(&self, topic: &str, timeout: Duration) -> Result<(), ClientError> {
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let started = Instant::now();
        self.retrying(|| async {
            let broker = self.any_broker().await?;
            let name = TopicName(StrBytes::from_string(topic.to_string()));
            // Version 6 names topics in `topics` (name or id), older ones in `topic_names`.
            let request = match broker.version_for::<DeleteTopicsRequest>() {
                Ok(version) if version >= 6 => DeleteTopicsRequest::default()
                    .with_timeout_ms(timeout_ms)
                    .with_topics(vec![DeleteTopicState::default().with_name(Some(name))]),
                _ => DeleteTopicsRequest::default().with_timeout_ms(timeout_ms).with_topic_names(vec![name]),
            };
            let (_, response) = broker.request(&request).await?;
            let result = response.responses.iter().find(|r| r.name.as_ref().is_some_and(|n| n.0.as_str() == topic));
            match result.and_then(|r| ErrorCode::from_code(r.error_code).map(|code| (code, r.error_message.clone()))) {
                Some((code, _)) if code.0 == ResponseError::UnknownTopicOrPartition => Ok(()),
                Some((code, message)) => Err(self.topic_error("DeleteTopics", topic, code, message)),
                None => Ok(()),
            }
        })
        .await?;
        loop {
            self.invalidate_metadata();
            match self.topic_once(topic).await {
                Err(ClientError::UnknownTopic { .. }) => return Ok(()),
                Err(other) => return Err(other),
                Ok(_) if started.elapsed() >= timeout => {
                    return Err(ClientError::TopicNotDeleted {
                        cluster: self.name().clone(),
                        topic: topic.to_string(),
                        waited: started.elapsed(),
                    })
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The configs of broker `node_id` (DescribeConfigs of a BROKER resource), in the shape
    /// of a topic's.
    pub async fn describe_broker_configs(&self, node_id: i32) -> Result<TopicConfigs, ClientError> {
        let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_string(node_id.to_string()))
            .with_configuration_keys(None)]);
        let (_, response) = self.request_any(&request).await?;
        let result = response.results.into_iter().next().ok_or_else(|| ClientError::IncompleteResponse {
            cluster: self.name().clone(),
            what: "DescribeConfigs",
            missing: format!("broker {node_id}"),
        })?;
        self.topic_configs(result).1
    }

    /// Every config of `topic`, with where its value comes from.
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<TopicConfigs, ClientError> {
        let mut answers = self.describe_topics_configs(&[topic.to_string()]).await?;
        answers.remove(topic).unwrap_or_else(|| Err(self.missing_topic("DescribeConfigs", topic)))
    }

    /// The configs of several topics in one request, with one result per topic.
    pub async fn describe_topics_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Result<TopicConfigs, ClientError>>, ClientError> {
        let request = DescribeConfigsRequest::default().with_resources(
            topics
                .iter()
                .map(|topic| {
                    DescribeConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(StrBytes::from_string(topic.clone()))
                        .with_configuration_keys(None)
                })
                .collect(),
        );
        let (_, response) = self.request_any(&request).await?;
        let mut answers: BTreeMap<String, Result<TopicConfigs, ClientError>> =
            response.results.into_iter().map(|result| self.topic_configs(result)).collect();
        for topic in topics {
            answers.entry(topic.clone()).or_insert_with(|| Err(self.missing_topic("DescribeConfigs", topic)));
        }
        Ok(answers)
    }

    fn topic_configs(&self, result: DescribeConfigsResult) -> (String, Result<TopicConfigs, ClientError>) {
        let topic = result.resource_name.to_string();
        if let Some(code) = ErrorCode::from_code(result.error_code) {
            // For an admin lookup this means the topic does not exist: no point retrying.
            let error = if code.0 == ResponseError::UnknownTopicOrPartition {
                ClientError::UnknownTopic { cluster: self.name().clone(), topic: topic.clone() }
            } else {
                self.topic_error("DescribeConfigs", &topic, code, result.error_message)
            };
            return (topic, Err(error));
        }
        let configs = result
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
            .collect();
        (topic, Ok(configs))
    }

    fn topic_error(&self, api: &'static str, topic: &str, code: ErrorCode, message: Option<StrBytes>) -> ClientError {
        let message = message.map(|m| m.to_string());
        ClientError::Topic { cluster: self.name().clone(), api, topic: topic.to_string(), code, message }
    }

    fn missing_topic(&self, what: &'static str, topic: &str) -> ClientError {
        ClientError::IncompleteResponse { cluster: self.name().clone(), what, missing: format!("topic {topic}") }
    }

    /// Grows `topic` to `total` partitions (CreatePartitions); Kafka never shrinks a topic.
    pub async fn create_partitions(&self, topic: &str, total: i32, timeout: Duration) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX))
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_count(total)
                // Null, not empty: an empty list means "these 0 assignments" and is refused.
                .with_assignments(None)]);
        let (_, response) = self.request_any(&request).await?;
        self.invalidate_metadata();
        let result = response
            .results
            .into_iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| self.missing_topic("CreatePartitions", topic))?;
        match ErrorCode::from_code(result.error_code) {
            Some(code) => Err(self.topic_error("CreatePartitions", topic, code, result.error_message)),
            None => Ok(()),
        }
    }

    /// Sets (`Some`) or removes (`None`, back to the inherited value) configs of `topic`,
    /// leaving its other configs as they are (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), ClientError> {
        let configs = changes
            .iter()
            .map(|(name, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.clone()))
                    // Kafka's AlterConfigOp: 0 SET, 1 DELETE.
                    .with_config_operation(if value.is_some() { 0 } else { 1 })
                    .with_value(value.clone().map(StrBytes::from_string))
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(configs)]);
        let (_, response) = self.request_any(&request).await?;
        let result = response
            .responses
            .into_iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| self.missing_topic("IncrementalAlterConfigs", topic))?;
        match ErrorCode::from_code(result.error_code) {
            Some(code) => Err(self.topic_error("IncrementalAlterConfigs", topic, code, result.error_message)),
            None => Ok(()),
        }
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
        let (_, response) = self.request_any(&request).await?;
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
                    Some((Some(code), message)) => {
                        Err(self.topic_error("CreateTopics", &topic.name, code, message.clone()))
                    }
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
