//! The topic planner: given what the source and the target hold, what must change on the
//! target so that it has every topic the flow replicates, with the right partition count,
//! configs and ACLs. A pure function over names and numbers: reading the clusters and
//! carrying the plan out is `sync`'s job, and `kferry plan` prints the very plan that
//! `kferry run` then applies, so the two cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regex::RegexSet;

use super::{target_topic_name, whole_name_set, TopicFilter, TopicsError};
use crate::client::{AclOperation, AclPattern, AclPermission, NewTopic, TopicAcl};
use crate::config::FlowConfig;

/// Topic configs never copied from source to target, whatever the flow says: MM2's
/// `DefaultConfigPropertyFilter` list plus the newer timestamp window keys. They describe
/// the source cluster's hardware and policies (replica counts, throttles), or they would
/// change what the target does with replicated records: a timestamp window would refuse old
/// records, and `message.timestamp.type=LogAppendTime` would overwrite the source's
/// timestamps on append.
pub const ALWAYS_EXCLUDED_CONFIGS: &[&str] = &[
    "min.insync.replicas",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "message.timestamp.difference.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.type",
    "message.downconversion.enable",
    "unclean.leader.election.enable",
];

/// Kafka refuses longer topic names.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// One topic as the planner sees it, on either cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub partitions: i32,
    /// Configs set on the topic itself (not inherited), without read-only or sensitive ones.
    pub overrides: BTreeMap<String, String>,
    /// The `cleanup.policy` in force, wherever it is set.
    pub cleanup_policy: String,
}

/// What the planner knows of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Data topics (broker-internal ones left out) by name.
    pub topics: BTreeMap<String, TopicState>,
    /// LITERAL topic ACLs; read only when the flow syncs ACLs.
    pub acls: Vec<TopicAcl>,
}

/// The flow's rules, compiled once.
#[derive(Debug, Clone)]
pub struct Rules {
    pub flow: FlowConfig,
    filter: TopicFilter,
    config_exclude: RegexSet,
}

impl Rules {
    pub fn new(flow: &FlowConfig) -> Result<Self, TopicsError> {
        let mut exclude: Vec<String> = ALWAYS_EXCLUDED_CONFIGS.iter().map(|c| regex::escape(c)).collect();
        exclude.extend(flow.topic_configs_exclude.iter().cloned());
        Ok(Self {
            flow: flow.clone(),
            filter: TopicFilter::new(flow)?,
            config_exclude: whole_name_set(flow, &exclude)?,
        })
    }

    /// Whether the config `name` is copied by this flow.
    pub fn copies_config(&self, name: &str) -> bool {
        !self.config_exclude.is_match(name)
    }

    /// The target name of a source topic this flow replicates, `None` if it does not.
    pub fn target_name(&self, source_topic: &str) -> Option<String> {
        let flow = &self.flow;
        self.filter
            .selects(source_topic)
            .then(|| target_topic_name(flow.policy, &flow.source, &flow.target, &flow.separator, source_topic))
            .flatten()
    }
}

/// A change the plan makes on the target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    CreateTopic {
        source_topic: String,
        topic: NewTopic,
    },
    AddPartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    /// `Some` sets a config, `None` removes the topic's own value.
    AlterConfigs {
        topic: String,
        changes: BTreeMap<String, Option<String>>,
    },
    CreateAcl {
        acl: TopicAcl,
    },
}

/// Something the operator should know that changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// The topic is not replicated until the conflict is resolved; the others are.
    Conflict { source_topic: String, topic: String, conflict: Conflict },
    /// A selected topic that came from the target: copying it back would loop.
    NotSentBack { source_topic: String },
    /// A topic replicated before is gone from the source; its copy stays on the target.
    SourceTopicGone { source_topic: String },
    /// A `topics` pattern selects no source topic (a typo, or a topic still to come).
    PatternMatchesNothing { pattern: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Conflict {
    /// Kafka cannot remove partitions, and records would land in other partitions.
    MorePartitionsOnTarget {
        source: i32,
        target: i32,
    },
    /// Changing compaction of a topic that holds data is the operator's decision.
    CleanupPolicy {
        source: String,
        target: String,
    },
    NameTooLong {
        length: usize,
    },
}

/// What one sync round does to the target, and what it reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
    pub notices: Vec<Notice>,
    /// Source topics the flow replicates once the changes are made (conflicts left out),
    /// with their target names.
    pub replicated: BTreeMap<String, String>,
}

impl Plan {
    /// Nothing to change and nothing to report.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.notices.is_empty()
    }
}

/// Configs of `state` the flow copies, minus keys the target is known to refuse.
fn copied_configs(rules: &Rules, state: &TopicState, refused: &BTreeSet<String>) -> BTreeMap<String, String> {
    state
        .overrides
        .iter()
        .filter(|(name, _)| rules.copies_config(name) && !refused.contains(*name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Plans one round: `seen` are the source topics replicated in earlier rounds (to notice
/// deleted ones), `refused` the config keys the target has refused before.
pub fn plan(
    rules: &Rules,
    source: &ClusterView,
    target: &ClusterView,
    seen: &BTreeSet<String>,
    refused: &BTreeSet<String>,
) -> Plan {
    let mut plan = Plan::default();
    for index in rules.filter.patterns_matching_nothing(source.topics.keys().map(String::as_str)) {
        plan.notices.push(Notice::PatternMatchesNothing { pattern: rules.flow.topics[index].clone() });
    }
    for (source_topic, state) in &source.topics {
        if !rules.filter.selects(source_topic) {
            continue;
        }
        let Some(topic) = rules.target_name(source_topic) else {
            plan.notices.push(Notice::NotSentBack { source_topic: source_topic.clone() });
            continue;
        };
        if topic.len() > MAX_TOPIC_NAME_LENGTH {
            let conflict = Conflict::NameTooLong { length: topic.len() };
            plan.notices.push(Notice::Conflict { source_topic: source_topic.clone(), topic, conflict });
            continue;
        }
        match target.topics.get(&topic) {
            None => plan.changes.push(Change::CreateTopic {
                source_topic: source_topic.clone(),
                topic: NewTopic {
                    name: topic.clone(),
                    partitions: state.partitions,
                    replication_factor: rules.flow.replication_factor,
                    configs: copied_configs(rules, state, refused),
                },
            }),
            Some(existing) => {
                if !plan_existing(rules, source_topic, state, topic.clone(), existing, refused, &mut plan) {
                    continue;
                }
            }
        }
        plan.replicated.insert(source_topic.clone(), topic);
    }
    for gone in seen.iter().filter(|t| !source.topics.contains_key(*t)) {
        plan.notices.push(Notice::SourceTopicGone { source_topic: gone.clone() });
    }
    if rules.flow.sync_topic_acls {
        plan_acls(rules, source, target, &mut plan);
    }
    plan
}

/// Plans the changes to a topic that exists on both sides; `false` on a conflict.
fn plan_existing(
    rules: &Rules,
    source_topic: &str,
    state: &TopicState,
    topic: String,
    existing: &TopicState,
    refused: &BTreeSet<String>,
    plan: &mut Plan,
) -> bool {
    let conflict = if existing.partitions > state.partitions {
        Some(Conflict::MorePartitionsOnTarget { source: state.partitions, target: existing.partitions })
    } else if existing.cleanup_policy != state.cleanup_policy {
        Some(Conflict::CleanupPolicy { source: state.cleanup_policy.clone(), target: existing.cleanup_policy.clone() })
    } else {
        None
    };
    if let Some(conflict) = conflict {
        plan.notices.push(Notice::Conflict { source_topic: source_topic.to_string(), topic, conflict });
        return false;
    }
    if existing.partitions < state.partitions {
        plan.changes.push(Change::AddPartitions {
            topic: topic.clone(),
            from: existing.partitions,
            to: state.partitions,
        });
    }
    if rules.flow.sync_topic_configs {
        let wanted = copied_configs(rules, state, refused);
        let current = copied_configs(rules, existing, refused);
        let mut changes: BTreeMap<String, Option<String>> = wanted
            .iter()
            .filter(|(name, value)| current.get(*name) != Some(*value))
            .map(|(name, value)| (name.clone(), Some(value.clone())))
            .collect();
        changes.extend(current.keys().filter(|name| !wanted.contains_key(*name)).map(|name| (name.clone(), None)));
        // Equal policies in force, set at different levels: nothing to change.
        changes.remove("cleanup.policy");
        if !changes.is_empty() {
            plan.changes.push(Change::AlterConfigs { topic, changes });
        }
    }
    true
}

/// MM2's ACL rules: only LITERAL topic ACLs of replicated topics, renamed; never ALLOW
/// WRITE (only kferry writes to remote topics); ALLOW ALL becomes ALLOW READ.
fn plan_acls(rules: &Rules, source: &ClusterView, target: &ClusterView, plan: &mut Plan) {
    let existing: BTreeSet<&TopicAcl> = target.acls.iter().collect();
    let mut planned = BTreeSet::new();
    for acl in source.acls.iter().filter(|acl| acl.pattern == AclPattern::Literal) {
        let Some(topic) = rules.target_name(&acl.topic) else { continue };
        if !source.topics.contains_key(&acl.topic) {
            continue;
        }
        let allow = acl.permission == AclPermission::Allow;
        if allow && acl.operation == AclOperation::WRITE {
            continue;
        }
        let operation = if allow && acl.operation == AclOperation::ALL { AclOperation::READ } else { acl.operation };
        let remote = TopicAcl { topic, operation, ..acl.clone() };
        if !existing.contains(&remote) && planned.insert(remote.clone()) {
            plan.changes.push(Change::CreateAcl { acl: remote });
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CreateTopic { source_topic, topic } => {
                let rf = topic.replication_factor.map_or("target default".to_string(), |rf| rf.to_string());
                write!(
                    f,
                    "create topic {} from {source_topic}: {} partitions, replication factor {rf}",
                    topic.name, topic.partitions
                )?;
                if !topic.configs.is_empty() {
                    let configs: Vec<String> = topic.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, ", configs {}", configs.join(", "))?;
                }
                Ok(())
            }
            Self::AddPartitions { topic, from, to } => write!(f, "add partitions to {topic}: {from} -> {to}"),
            Self::AlterConfigs { topic, changes } => {
                let changes: Vec<String> = changes
                    .iter()
                    .map(|(k, v)| match v {
                        Some(v) => format!("set {k}={v}"),
                        None => format!("remove {k}"),
                    })
                    .collect();
                write!(f, "alter configs of {topic}: {}", changes.join(", "))
            }
            Self::CreateAcl { acl } => write!(f, "create ACL: {acl}"),
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict { source_topic, topic, conflict } => {
                write!(f, "CONFLICT, {source_topic} is not replicated: ")?;
                match conflict {
                    Conflict::MorePartitionsOnTarget { source, target } => write!(
                        f,
                        "target topic {topic} has {target} partitions, the source {source}; Kafka cannot remove partitions"
                    ),
                    Conflict::CleanupPolicy { source, target } => write!(
                        f,
                        "target topic {topic} has cleanup.policy={target}, the source {source}; change one of them"
                    ),
                    Conflict::NameTooLong { length } => {
                        write!(f, "target name {topic} has {length} characters, Kafka allows {MAX_TOPIC_NAME_LENGTH}")
                    }
                }
            }
            Self::NotSentBack { source_topic } => {
                write!(f, "skip {source_topic}: it came from the target, copying it back would loop")
            }
            Self::SourceTopicGone { source_topic } => write!(
                f,
                "source topic {source_topic} was deleted; its copy stays on the target (delete it there if you want)"
            ),
            Self::PatternMatchesNothing { pattern } => {
                write!(f, "warning: topics pattern \"{pattern}\" selects no source topic")
            }
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            writeln!(f, "  {change}")?;
        }
        for notice in &self.notices {
            writeln!(f, "  {notice}")?;
        }
        if self.changes.is_empty() {
            writeln!(f, "  nothing to change")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
