//! Topic sync for one flow: reads both clusters into [`ClusterView`]s, asks the planner
//! what to change, and carries the plan out on the target, round after round.
//!
//! What the target refuses is remembered, not retried forever: a config key it does not
//! know is dropped (and reported once), an API it lacks (CreatePartitions,
//! IncrementalAlterConfigs, ACLs on a Kafka-compatible broker) turns that part of the sync
//! off with one warning naming the API and the broker; everything else keeps working.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::plan::{plan, Change, ClusterView, Notice, Plan, Rules, TopicState};
use super::TopicsError;
use crate::client::{AclPattern, ClientError, Cluster, ConnectionError, NewTopic, TopicConfigs};
use crate::config::FlowConfig;
use crate::protocol::error_code::ResponseError;

/// How long a CreateTopics/CreatePartitions may take on the target.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A sync round could not read one of the clusters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("flow {flow}: cannot read the source: {source}")]
    Source { flow: String, source: ClientError },
    #[error("flow {flow}: cannot read the target: {source}")]
    Target { flow: String, source: ClientError },
}

/// What happened to one planned change.
#[derive(Debug)]
pub struct Applied {
    pub change: Change,
    pub outcome: Result<(), ClientError>,
}

/// Keeps one flow's target topics in line with its source.
pub struct TopicSync {
    rules: Rules,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    /// Source topics replicated in earlier rounds, to notice deleted ones.
    seen: BTreeSet<String>,
    /// Config keys the target refused; left out from now on.
    refused_configs: BTreeSet<String>,
    /// APIs the target does not offer; the changes that need them are skipped.
    missing_apis: BTreeSet<&'static str>,
    /// Notices already logged, so a standing conflict is not logged every round.
    reported: BTreeSet<String>,
    /// Changes applied so far, to tell a change the target keeps reporting as not made.
    applied: BTreeSet<String>,
    /// Whether "ACL sync is off" was logged (a cluster without authorizer or ACL API).
    acls_unavailable_reported: std::sync::atomic::AtomicBool,
}

impl TopicSync {
    pub fn new(flow: &FlowConfig, source: Arc<Cluster>, target: Arc<Cluster>) -> Result<Self, TopicsError> {
        Ok(Self {
            rules: Rules::new(flow)?,
            source,
            target,
            seen: BTreeSet::new(),
            refused_configs: BTreeSet::new(),
            missing_apis: BTreeSet::new(),
            reported: BTreeSet::new(),
            applied: BTreeSet::new(),
            acls_unavailable_reported: Default::default(),
        })
    }

    fn flow_name(&self) -> String {
        self.rules.flow.name()
    }

    /// Reads both clusters and plans the next round; changes nothing.
    pub async fn plan(&self) -> Result<Plan, SyncError> {
        let source = self.read_source().await.map_err(|source| SyncError::Source { flow: self.flow_name(), source })?;
        let target =
            self.read_target(&source).await.map_err(|source| SyncError::Target { flow: self.flow_name(), source })?;
        Ok(plan(&self.rules, &source, &target, &self.seen, &self.refused_configs))
    }

    /// One round: plan, apply, log. Returns the plan and what became of each change.
    pub async fn round(&mut self) -> Result<(Plan, Vec<Applied>), SyncError> {
        let plan = self.plan().await?;
        self.report_notices(&plan);
        let mut applied = Vec::with_capacity(plan.changes.len());
        for change in &plan.changes {
            let outcome = self.apply(change).await;
            match &outcome {
                // A broker that applies a config but reports it as a default (tansu 0.6)
                // gets the same change every round: say it once.
                Ok(()) if !self.applied.insert(change.to_string()) => {
                    tracing::debug!(flow = %self.flow_name(), "{change} (again: the target reports it unchanged)")
                }
                Ok(()) => tracing::info!(flow = %self.flow_name(), "{change}"),
                Err(e) => tracing::error!(flow = %self.flow_name(), error = %e, "failed: {change}"),
            }
            applied.push(Applied { change: change.clone(), outcome });
        }
        self.remember_replicated(&plan);
        Ok((plan, applied))
    }

    /// A round that changes nothing, for a process whose group leader applies the changes:
    /// what to copy is what the target has already (topics the plan would create are left
    /// out until the leader has created them).
    pub async fn observe(&mut self) -> Result<(Plan, Vec<Applied>), SyncError> {
        let mut plan = self.plan().await?;
        let pending: BTreeSet<String> = plan
            .changes
            .iter()
            .filter_map(|change| match change {
                Change::CreateTopic { source_topic, .. } => Some(source_topic.clone()),
                _ => None,
            })
            .collect();
        plan.replicated.retain(|source, _| !pending.contains(source));
        plan.changes.clear();
        self.remember_replicated(&plan);
        Ok((plan, Vec::new()))
    }

    fn report_notices(&mut self, plan: &Plan) {
        for notice in &plan.notices {
            if self.reported.insert(notice.to_string()) {
                tracing::warn!(flow = %self.flow_name(), "{notice}");
            }
        }
    }

    /// Deleted source topics are reported once; replicated ones are watched from now on.
    fn remember_replicated(&mut self, plan: &Plan) {
        for notice in &plan.notices {
            if let Notice::SourceTopicGone { source_topic } = notice {
                self.seen.remove(source_topic);
            }
        }
        self.seen.extend(plan.replicated.keys().cloned());
    }

    async fn read_source(&self) -> Result<ClusterView, ClientError> {
        let metadata = self.source.all_topics().await?;
        let names: Vec<String> =
            metadata.topics.keys().filter(|t| self.rules.target_name(t).is_some()).cloned().collect();
        let mut view = read_view(&self.source, &metadata, &names).await?;
        // Unselected topics count for "pattern matches nothing" and nothing else.
        for (name, info) in &metadata.topics {
            if !info.is_internal && !view.topics.contains_key(name) {
                let partitions = info.partitions.len() as i32;
                view.topics.insert(
                    name.clone(),
                    TopicState { partitions, overrides: BTreeMap::new(), cleanup_policy: String::new() },
                );
            }
        }
        if self.rules.flow.sync_topic_acls {
            view.acls = self.read_acls(&self.source).await?;
        }
        Ok(view)
    }

    /// The cluster's LITERAL topic ACLs; none, with one warning, where the cluster has no
    /// authorizer or no ACL API: ACL sync is then off and the rest of the sync goes on.
    async fn read_acls(&self, cluster: &Cluster) -> Result<Vec<crate::client::TopicAcl>, ClientError> {
        match cluster.describe_topic_acls(AclPattern::Literal).await {
            Ok(acls) => Ok(acls),
            Err(e) if acls_unavailable(&e) => {
                if !self.acls_unavailable_reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(flow = %self.flow_name(), error = %e, "topic ACL sync is off for this flow");
                }
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    async fn read_target(&self, source: &ClusterView) -> Result<ClusterView, ClientError> {
        let metadata = self.target.all_topics().await?;
        let names: Vec<String> = source
            .topics
            .keys()
            .filter_map(|t| self.rules.target_name(t))
            .filter(|t| metadata.topics.contains_key(t))
            .collect();
        let mut view = read_view(&self.target, &metadata, &names).await?;
        if self.rules.flow.sync_topic_acls {
            view.acls = self.read_acls(&self.target).await?;
        }
        Ok(view)
    }

    async fn apply(&mut self, change: &Change) -> Result<(), ClientError> {
        let api = match change {
            Change::CreateTopic { .. } => "CreateTopics",
            Change::AddPartitions { .. } => "CreatePartitions",
            Change::AlterConfigs { .. } => "IncrementalAlterConfigs",
            Change::CreateAcl { .. } => "CreateAcls",
        };
        if self.missing_apis.contains(api) {
            return Ok(());
        }
        let outcome = match change {
            Change::CreateTopic { topic, .. } => self.create_topic(topic).await,
            Change::AddPartitions { topic, to, .. } => self.target.create_partitions(topic, *to, ADMIN_TIMEOUT).await,
            Change::AlterConfigs { topic, changes } => self.alter_configs(topic, changes).await,
            Change::CreateAcl { acl } => {
                self.target.create_topic_acls(std::slice::from_ref(acl)).await.and_then(|mut r| r.remove(0))
            }
        };
        match outcome {
            Err(ClientError::Connection(ConnectionError::UnsupportedApi { broker, api, .. })) => {
                tracing::warn!(
                    flow = %self.flow_name(),
                    "{broker} does not support {api}: this part of topic sync is off for this flow; the rest goes on"
                );
                self.missing_apis.insert(api);
                Ok(())
            }
            other => other,
        }
    }

    /// Creates a topic; configs the target refuses are found one by one, dropped,
    /// remembered and reported, and the topic is created without them.
    async fn create_topic(&mut self, topic: &NewTopic) -> Result<(), ClientError> {
        let first = create_one(&self.target, topic, false).await;
        if !is_invalid_config(&first) || topic.configs.is_empty() {
            return first;
        }
        let mut accepted = topic.clone();
        for (name, value) in &topic.configs {
            let alone = NewTopic { configs: BTreeMap::from([(name.clone(), value.clone())]), ..topic.clone() };
            if let Err(e) = create_one(&self.target, &alone, true).await {
                tracing::warn!(flow = %self.flow_name(), topic = %topic.name, "target refuses config {name}={value}, created without it: {e}");
                self.refused_configs.insert(name.clone());
                accepted.configs.remove(name);
            }
        }
        create_one(&self.target, &accepted, false).await
    }

    /// Alters configs; as with creation, keys the target refuses are dropped and reported.
    async fn alter_configs(
        &mut self,
        topic: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<(), ClientError> {
        let first = self.target.alter_topic_configs(topic, changes).await;
        if !is_invalid_config(&first) {
            return first;
        }
        for (name, value) in changes {
            let single = BTreeMap::from([(name.clone(), value.clone())]);
            let outcome =
                if changes.len() == 1 { first.clone() } else { self.target.alter_topic_configs(topic, &single).await };
            if is_invalid_config(&outcome) {
                let e = outcome.expect_err("an invalid config is an error");
                tracing::warn!(flow = %self.flow_name(), topic, "target refuses config {name}, left out: {e}");
                self.refused_configs.insert(name.clone());
            } else {
                outcome?;
            }
        }
        Ok(())
    }
}

/// The topics to replicate after a round: the plan's, less those whose target topic
/// could not be created.
pub fn replicated_after(plan: &Plan, applied: &[Applied]) -> BTreeMap<String, String> {
    let failed: BTreeSet<&str> = applied
        .iter()
        .filter(|a| a.outcome.is_err())
        .filter_map(|a| match &a.change {
            Change::CreateTopic { source_topic, .. } => Some(source_topic.as_str()),
            _ => None,
        })
        .collect();
    plan.replicated
        .iter()
        .filter(|(source, _)| !failed.contains(source.as_str()))
        .map(|(s, t)| (s.clone(), t.clone()))
        .collect()
}

async fn create_one(cluster: &Cluster, topic: &NewTopic, validate_only: bool) -> Result<(), ClientError> {
    let mut outcomes = cluster.create_topics(std::slice::from_ref(topic), validate_only, ADMIN_TIMEOUT).await?;
    outcomes.remove(0).1
}

/// A cluster without an authorizer (SECURITY_DISABLED) or without the ACL APIs.
fn acls_unavailable(error: &ClientError) -> bool {
    match error {
        ClientError::Request { code, .. } => code.0 == ResponseError::SecurityDisabled,
        ClientError::Connection(ConnectionError::UnsupportedApi { .. }) => true,
        _ => false,
    }
}

fn is_invalid_config(outcome: &Result<(), ClientError>) -> bool {
    matches!(outcome, Err(ClientError::Topic { code, .. }) if code.0 == ResponseError::InvalidConfig)
}

/// The planner's view of `names` on `cluster`, with their configs read in one request.
async fn read_view(
    cluster: &Cluster,
    metadata: &crate::client::MetadataSnapshot,
    names: &[String],
) -> Result<ClusterView, ClientError> {
    let mut view = ClusterView::default();
    if names.is_empty() {
        return Ok(view);
    }
    let configs = cluster.describe_topics_configs(names).await?;
    for (name, configs) in configs {
        let configs = match configs {
            Ok(configs) => configs,
            // Deleted between the two requests: it will be seen as missing next round.
            Err(ClientError::UnknownTopic { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Some(info) = metadata.topics.get(&name) else { continue };
        view.topics.insert(name, topic_state(info.partitions.len() as i32, &configs));
    }
    Ok(view)
}

fn topic_state(partitions: i32, configs: &TopicConfigs) -> TopicState {
    let overrides = configs
        .iter()
        .filter(|(_, c)| c.source == crate::client::ConfigSource::Topic && !c.read_only && !c.sensitive)
        .filter_map(|(name, c)| Some((name.clone(), c.value.clone()?)))
        .collect();
    let cleanup_policy =
        configs.get("cleanup.policy").and_then(|c| c.value.clone()).unwrap_or_else(|| "delete".to_string());
    TopicState { partitions, overrides, cleanup_policy }
}
