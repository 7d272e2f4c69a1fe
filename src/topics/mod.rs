//! Which source topics a flow replicates, and what they are called on the target.
//!
//! Pure functions over names: listing topics, creating them and syncing their configs is
//! the planner's job, talking to brokers is `client`'s.
//!
//! kferry's own state topics (offset map, progress) live under [`STATE_TOPIC_PREFIX`],
//! `__kferry.`: the `__` start keeps them out of every flow, like the broker's own.

use regex::{Regex, RegexSet};

use crate::config::{regex_error_reason, FlowConfig, ReplicationPolicy};

pub mod own;
pub mod plan;
pub mod sync;

/// Prefix of the topics kferry keeps its own state in.
pub const STATE_TOPIC_PREFIX: &str = "__kferry.";

/// Why a flow's topic patterns could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicsError {
    /// A `topics` or `topics_exclude` entry is not a valid regex (config validation
    /// catches this first; this is for flows built some other way).
    #[error("flow {flow}: invalid topic regex \"{pattern}\": {reason}")]
    InvalidPattern { flow: String, pattern: String, reason: String },
}

/// Decides which source topics a flow replicates.
#[derive(Clone, Debug)]
pub struct TopicFilter {
    include: RegexSet,
    exclude: RegexSet,
}

impl TopicFilter {
    /// The flow's `topics` patterns that match none of `topics`: worth a warning (a typo
    /// selects nothing silently), not an error (the topic may be created later).
    pub fn patterns_matching_nothing<'a>(&self, topics: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
        let mut matched = vec![false; self.include.len()];
        for topic in topics {
            for index in self.include.matches(topic).iter() {
                matched[index] = true;
            }
        }
        matched.iter().enumerate().filter(|(_, hit)| !**hit).map(|(index, _)| index).collect()
    }
}

impl TopicFilter {
    /// Compiles the flow's `topics` and `topics_exclude`, each anchored so that it must
    /// match the whole topic name (`orders` selects `orders`, not `orders-dlq`).
    ///
    /// # Errors
    ///
    /// [`TopicsError::InvalidPattern`] if a pattern is not a valid regex, which config
    /// validation has already reported for flows that came from [`Config::load`].
    ///
    /// [`Config::load`]: crate::config::Config::load
    pub fn new(flow: &FlowConfig) -> Result<TopicFilter, TopicsError> {
        Ok(TopicFilter {
            include: whole_name_set(flow, &flow.topics)?,
            exclude: whole_name_set(flow, &flow.topics_exclude)?,
        })
    }

    /// Whether the flow replicates `topic`: never for topics that are not user data
    /// (broker-internal `__*` including kferry's own, MM2's own topics and heartbeats),
    /// otherwise when an include pattern matches and no exclude pattern does.
    pub fn selects(&self, topic: &str) -> bool {
        !is_never_replicated(topic) && self.include.is_match(topic) && !self.exclude.is_match(topic)
    }
}

/// Compiles `patterns` so that each must match a whole name.
pub(crate) fn whole_name_set(flow: &FlowConfig, patterns: &[String]) -> Result<RegexSet, TopicsError> {
    let invalid = |pattern: &str, err: &regex::Error| TopicsError::InvalidPattern {
        flow: flow.name(),
        pattern: pattern.to_owned(),
        reason: regex_error_reason(err),
    };
    let mut anchored = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        // Checked alone first: wrapping can make a broken pattern valid with another
        // meaning (`a)|(b` would become `^(?:a)|(b)$`).
        Regex::new(pattern).map_err(|err| invalid(pattern, &err))?;
        anchored.push(format!("^(?:{pattern})$"));
    }
    // Each pattern compiled alone, so a failure here can only be the set's size limit.
    RegexSet::new(&anchored).map_err(|err| invalid(&patterns.join(", "), &err))
}

/// Topics no flow copies, whatever its patterns:
///
/// - `__*`: broker-internal topics (`__consumer_offsets`, `__transaction_state`,
///   `__cluster_metadata`) and kferry's own state topics ([`STATE_TOPIC_PREFIX`]). MM2
///   excludes `__.*` too.
/// - MirrorMaker 2's own topics, in case kferry replaces MM2 on clusters that still hold
///   them: `mm2-*.internal` (`mm2-offset-syncs.<alias>.internal`, `mm2-configs.<alias>.internal`,
///   `mm2-offsets.<alias>.internal`, `mm2-status.<alias>.internal`), checkpoints
///   `*.checkpoints.internal` (kferry writes its own there), `heartbeats` and remote
///   heartbeats `*.heartbeats`.
///
/// Every other name is data users may copy: `_schemas`, `connect-offsets`,
/// `connect-configs`, `connect-status`, `*-changelog`, and user topics ending in
/// `.internal` or `-internal`, which MM2 copies too since Kafka 4 (KAFKA-17200). A user
/// topic named `mm2-orders` is copied: only MM2's `mm2-<kind>.<alias>.internal` are not.
fn is_never_replicated(topic: &str) -> bool {
    topic.starts_with("__")
        || (topic.starts_with("mm2-") && topic.ends_with(".internal"))
        || topic.ends_with(".checkpoints.internal")
        || topic == "heartbeats"
        || topic.ends_with(".heartbeats")
}

/// The name `topic` gets on the target cluster, or `None` when the flow must not copy it
/// because it came from the target in the first place.
///
/// - [`ReplicationPolicy::Identity`]: the same name, as MM2's `IdentityReplicationPolicy`.
///   It cannot see cycles; config validation refuses identity flows that form one.
/// - [`ReplicationPolicy::Prefix`]: `<source_alias><separator><topic>`, as MM2's
///   `DefaultReplicationPolicy`. Like MM2's cycle check (`MirrorSourceConnector::isCycle`),
///   a topic is not copied when the target's alias is any of its separator-delimited
///   prefixes: `secondary.orders` is not sent to `secondary`, and in a ring
///   `primary -> secondary -> third -> primary`, `third.secondary.orders` is not sent back
///   to `secondary` either. As in MM2, this also holds back a topic that merely looks
///   remote (`app.secondary.v1` for a target aliased `secondary`); another separator or
///   alias avoids that.
///
/// The caller checks the result against Kafka's 249-character limit on topic names.
pub fn target_topic_name(
    policy: ReplicationPolicy,
    source_alias: &str,
    target_alias: &str,
    separator: &str,
    topic: &str,
) -> Option<String> {
    match policy {
        ReplicationPolicy::Identity => Some(topic.to_owned()),
        ReplicationPolicy::Prefix if came_from(topic, target_alias, separator) => None,
        ReplicationPolicy::Prefix => Some(format!("{source_alias}{separator}{topic}")),
    }
}

/// Whether `alias` is one of the remote prefixes of `topic`, i.e. one of the
/// `separator`-delimited parts before the last one.
fn came_from(topic: &str, alias: &str, separator: &str) -> bool {
    if separator.is_empty() {
        // No way to cut the name into parts; config validation refuses this separator.
        return topic.starts_with(alias);
    }
    topic.rsplit_once(separator).is_some_and(|(prefixes, _)| prefixes.split(separator).any(|part| part == alias))
}

#[cfg(test)]
mod tests;
