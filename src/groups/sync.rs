//! The group-offset sync loop of a flow, separate from the hot path and on its own
//! interval: reads the source's consumer groups and their committed offsets, translates them
//! exactly ([`super::translate`]) and commits them for the same group id on the target.
//!
//! Safety rules, stricter than MM2's `sync.group.offsets.enabled`:
//! - a group with members on the target is never touched (its own consumers own its
//!   offsets there); it is synced once it is empty again;
//! - a target offset never moves backwards, unless the source group itself moved backwards
//!   (a reset), which is logged;
//! - the metadata string committed on the source is carried over.
//!
//! Every round also writes MM2-format checkpoints (`<source alias>.checkpoints.internal` on
//! the target) for the translations that changed, for every selected group, active or not,
//! as MM2 does: Java tooling reading them gets the same offsets kferry commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use regex::RegexSet;

use super::checkpoint::{checkpoints_topic, Checkpoint, CheckpointError, CHECKPOINTS_PARTITION};
use super::translate::{Progress, Translation, Translator};
use crate::client::{ClientError, Cluster, CommittedOffset, GroupOffsets, ListedGroup};
use crate::config::FlowConfig;
use crate::protocol::error_code::ResponseError;
use crate::protocol::records::{build_batch, KeyValueRef};
use crate::replicate::engine::progress_group;
use crate::replicate::state::{latest_values, offset_map_topic, read_progress, SourcePartition, StateReader};

/// Group ids kferry uses itself: never synced.
const OWN_GROUP_PREFIX: &str = "kferry.progress.";

/// How long the target may take to create the checkpoints topic or accept checkpoints.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Groups whose offsets are read at once (each read is pipelined on the coordinator's
/// connection).
const GROUPS_READ_AT_ONCE: usize = 16;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupsError {
    /// A `groups` or `groups_exclude` entry is not a valid regex (config validation catches
    /// this first; this is for flows built some other way).
    #[error("flow {flow}: invalid group regex \"{pattern}\": {reason}")]
    InvalidPattern { flow: String, pattern: String, reason: String },
    #[error("flow {flow}: group offset sync: {source}")]
    Client {
        flow: String,
        #[source]
        source: Box<ClientError>,
    },
    #[error("flow {flow}: group {group}: checkpoint not written: {source}")]
    Checkpoint {
        flow: String,
        group: String,
        #[source]
        source: CheckpointError,
    },
}

/// Which source groups a flow syncs.
#[derive(Debug, Clone)]
pub struct GroupFilter {
    include: RegexSet,
    exclude: RegexSet,
}

impl GroupFilter {
    pub fn new(flow: &FlowConfig) -> Result<Self, GroupsError> {
        let compile = |patterns: &[String]| {
            let anchored: Vec<String> = patterns.iter().map(|p| format!("^(?:{p})$")).collect();
            RegexSet::new(&anchored).map_err(|e| GroupsError::InvalidPattern {
                flow: flow.name(),
                pattern: patterns.join(", "),
                reason: crate::config::regex_error_reason(&e),
            })
        };
        Ok(Self { include: compile(&flow.groups)?, exclude: compile(&flow.groups_exclude)? })
    }

    pub fn selects(&self, group: &ListedGroup) -> bool {
        // Groups of other protocols (Connect workers, ...) hold no consumer offsets.
        let consumer = group.protocol_type.is_empty() || group.protocol_type == "consumer";
        consumer
            && !group.id.starts_with(OWN_GROUP_PREFIX)
            && self.include.is_match(&group.id)
            && !self.exclude.is_match(&group.id)
    }
}

/// One partition of one group, as a round sees it: what `kferry offsets` prints and what
/// the sync acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub source_topic: String,
    pub partition: i32,
    pub source: CommittedOffset,
    pub translation: Translation,
    /// The group's committed offset on the target partition, if any.
    pub target_offset: Option<i64>,
}

impl PartitionView {
    pub fn source_partition(&self) -> SourcePartition {
        (self.source_topic.clone(), self.partition)
    }

    /// The translated target offset, when there is one.
    pub fn translated(&self) -> Option<(&str, i64)> {
        match &self.translation {
            Translation::Target { topic, offset } => Some((topic, *offset)),
            _ => None,
        }
    }
}

/// A source group and its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group: String,
    /// The group on the target, if it exists there.
    pub on_target: Option<ListedGroup>,
    pub partitions: Vec<PartitionView>,
}

/// What to do with one translated partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Commit the translated offset.
    Commit,
    /// Commit it although it is behind the target's: the source group was reset backwards.
    Rewind,
    /// Already there.
    Unchanged,
    /// The target group is ahead and the source group did not move back: leave it.
    KeepAhead,
}

/// The rule for one partition: `translated` (the target offset the source group's position
/// maps to), the target group's current offset, the source offset now and the one seen in
/// the previous round.
pub fn decide(
    translated: i64,
    target_offset: Option<i64>,
    source_offset: i64,
    previous_source: Option<i64>,
) -> Decision {
    match target_offset {
        None => Decision::Commit,
        Some(current) if translated > current => Decision::Commit,
        Some(current) if translated == current => Decision::Unchanged,
        Some(_) if previous_source.is_some_and(|previous| source_offset < previous) => Decision::Rewind,
        Some(_) => Decision::KeepAhead,
    }
}

/// What one sync round did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub groups: usize,
    /// Partitions committed on the target.
    pub committed: usize,
    /// Groups left alone because they have members on the target.
    pub active: Vec<String>,
    /// Checkpoint records written.
    pub checkpoints: usize,
}

/// The group-offset sync of one flow.
pub struct GroupSync {
    flow: FlowConfig,
    source: Arc<Cluster>,
    target: Arc<Cluster>,
    filter: GroupFilter,
    state: StateReader,
    /// Each group's source offset per partition as the previous round saw it: tells a
    /// source-side reset from a target group that simply moved ahead.
    previous: BTreeMap<(String, SourcePartition), i64>,
    /// Groups the target refused for good (invalid id, not authorized): reported once.
    refused: BTreeSet<String>,
    /// The last checkpoint written per (group, target topic, partition): (upstream,
    /// downstream) offsets, so only changes are written.
    checkpointed: BTreeMap<(String, String, i32), (i64, i64)>,
    checkpoints_topic_ready: bool,
    /// Whether `previous` and `checkpointed` were seeded from the checkpoints an earlier
    /// kferry process wrote.
    seeded: bool,
}

impl GroupSync {
    pub fn new(flow: &FlowConfig, source: Arc<Cluster>, target: Arc<Cluster>) -> Result<Self, GroupsError> {
        Ok(Self {
            filter: GroupFilter::new(flow)?,
            state: StateReader::new(&offset_map_topic(flow)),
            flow: flow.clone(),
            source,
            target,
            previous: BTreeMap::new(),
            refused: BTreeSet::new(),
            checkpointed: BTreeMap::new(),
            checkpoints_topic_ready: false,
            seeded: false,
        })
    }

    fn client_error(&self, source: ClientError) -> GroupsError {
        GroupsError::Client { flow: self.flow.name(), source: Box::new(source) }
    }

    /// Every selected source group with its translated offsets; `only` limits it to one
    /// group. Reads, changes nothing.
    pub async fn view(&mut self, only: Option<&str>) -> Result<Vec<GroupView>, GroupsError> {
        // Progress first, then the maps: the maps then cover everything the progress
        // counts as replicated (both are written in one transaction, or maps first).
        let progress = self.progress().await.map_err(|e| self.client_error(e))?;
        if let Err(e) = self.state.catch_up(&self.target).await {
            return Err(self.client_error(e));
        }
        let translator = Translator::new(self.state.maps(), &progress);
        let source_groups = self.source.list_groups().await.map_err(|e| self.client_error(e))?;
        let target_groups: BTreeMap<String, ListedGroup> = match self.target.list_groups().await {
            Ok(groups) => groups.into_iter().map(|g| (g.id.clone(), g)).collect(),
            Err(e) => return Err(self.client_error(e)),
        };
        let selected: Vec<&ListedGroup> = source_groups
            .iter()
            .filter(|g| self.filter.selects(g))
            .filter(|g| only.is_none_or(|only| only == g.id))
            .collect();
        // Two round trips per group (source and target offsets), so a cluster of hundreds
        // of groups is read several groups at a time, in order.
        let mut fetched = Vec::with_capacity(selected.len());
        for chunk in selected.chunks(GROUPS_READ_AT_ONCE) {
            let reads: Vec<_> =
                chunk.iter().map(|group| self.read_offsets(group, target_groups.contains_key(&group.id))).collect();
            fetched.extend(futures_util::future::join_all(reads).await);
        }
        let mut views = Vec::new();
        for (group, source_offsets, target_offsets) in fetched {
            let source_offsets = match source_offsets {
                Ok(offsets) => offsets,
                Err(e) => {
                    tracing::warn!(flow = %self.flow.name(), group = %group.id, error = %e, "cannot read the group's offsets on the source; next round tries again");
                    continue;
                }
            };
            let on_target = target_groups.get(&group.id).cloned();
            let target_offsets = match target_offsets {
                Some(offsets) => offsets.map_err(|e| self.client_error(e))?,
                None => GroupOffsets::new(),
            };
            let partitions = source_offsets
                .into_iter()
                .map(|((topic, partition), committed)| {
                    let source = (topic, partition);
                    let translation = translator.translate(&source, committed.offset);
                    if translation == Translation::NotReplicated {
                        tracing::debug!(flow = %self.flow.name(), group = %group.id, topic = %source.0, partition, "group offset for a topic this flow does not replicate: skipped");
                    }
                    let target_offset = match &translation {
                        Translation::Target { topic, .. } => {
                            target_offsets.get(&(topic.clone(), partition)).map(|c| c.offset)
                        }
                        _ => None,
                    };
                    PartitionView { source_topic: source.0, partition, source: committed, translation, target_offset }
                })
                .collect();
            views.push(GroupView { group: group.id.clone(), on_target, partitions });
        }
        Ok(views)
    }

    /// A group's committed offsets on the source, and on the target where it exists there.
    async fn read_offsets<'g>(
        &self,
        group: &'g ListedGroup,
        on_target: bool,
    ) -> (&'g ListedGroup, Result<GroupOffsets, ClientError>, Option<Result<GroupOffsets, ClientError>>) {
        let source = self.source.fetch_group_offsets(&group.id).await;
        let target = match on_target {
            true => Some(self.target.fetch_group_offsets(&group.id).await),
            false => None,
        };
        (group, source, target)
    }

    /// One round: view, decide, commit, checkpoint.
    pub async fn round(&mut self) -> Result<RoundReport, GroupsError> {
        let views = self.view(None).await?;
        if !self.seeded {
            self.seed_from_checkpoints().await?;
            self.seeded = true;
        }
        let mut report = RoundReport { groups: views.len(), ..RoundReport::default() };
        report.checkpoints = self.write_checkpoints(&views).await?;
        for view in &views {
            if self.refused.contains(&view.group) {
                continue;
            }
            if view.on_target.as_ref().is_some_and(|g| !g.is_memberless()) {
                tracing::debug!(flow = %self.flow.name(), group = %view.group, "group has members on the target: not touched");
                report.active.push(view.group.clone());
                self.remember(view);
                continue;
            }
            let offsets = self.offsets_to_commit(view);
            if !offsets.is_empty() {
                match self.target.commit_group_offsets(&view.group, &offsets).await {
                    Ok(()) => report.committed += offsets.len(),
                    Err(e) => self.commit_failed(&view.group, e, &mut report)?,
                }
            }
            self.remember(view);
        }
        Ok(report)
    }

    /// Remembers what the last checkpoints say (the source offset each group had, and what
    /// was written), so that after a restart a source group that moved backwards is still
    /// told from a target group that moved ahead, and unchanged checkpoints are not written
    /// again.
    async fn seed_from_checkpoints(&mut self) -> Result<(), GroupsError> {
        let topic = checkpoints_topic(&self.flow.source);
        let records = match latest_values(&self.target, &topic).await {
            Ok(records) => records,
            Err(e) => return Err(self.client_error(e)),
        };
        // Checkpoints name the target topic; the offset map knows its source.
        let sources: BTreeMap<(&str, i32), &SourcePartition> =
            self.state.maps().iter().map(|(source, (target, _))| ((target.as_str(), source.1), source)).collect();
        let mut previous = Vec::new();
        for (key, value) in &records {
            let Ok(c) = Checkpoint::decode(key, value) else { continue };
            if let Some(source) = sources.get(&(c.topic.as_str(), c.partition)) {
                previous.push(((c.group.clone(), (*source).clone()), c.upstream_offset));
            }
            self.checkpointed.insert((c.group, c.topic, c.partition), (c.upstream_offset, c.downstream_offset));
        }
        for (key, offset) in previous {
            self.previous.entry(key).or_insert(offset);
        }
        Ok(())
    }

    /// Writes a checkpoint for every translation that changed since the last one written.
    /// Outside any transaction and never a tombstone: MM2's Java reader reads
    /// read_uncommitted and fails on a null value.
    async fn write_checkpoints(&mut self, views: &[GroupView]) -> Result<usize, GroupsError> {
        let mut changed = Vec::new();
        for view in views {
            for p in &view.partitions {
                let Some((topic, downstream)) = p.translated() else { continue };
                let key = (view.group.clone(), topic.to_string(), p.partition);
                if self.checkpointed.get(&key) == Some(&(p.source.offset, downstream)) {
                    continue;
                }
                changed.push(Checkpoint {
                    group: view.group.clone(),
                    topic: topic.to_string(),
                    partition: p.partition,
                    upstream_offset: p.source.offset,
                    downstream_offset: downstream,
                    metadata: p.source.metadata.clone().unwrap_or_default(),
                });
            }
        }
        if changed.is_empty() {
            return Ok(0);
        }
        let mut records = Vec::with_capacity(changed.len());
        for checkpoint in &changed {
            let record = checkpoint.encode().map_err(|source| GroupsError::Checkpoint {
                flow: self.flow.name(),
                group: checkpoint.group.clone(),
                source,
            })?;
            records.push(record);
        }
        let topic = checkpoints_topic(&self.flow.source);
        self.ensure_checkpoints_topic(&topic).await.map_err(|e| self.client_error(e))?;
        let refs: Vec<KeyValueRef<'_>> =
            records.iter().map(|(k, v)| (Some(k.as_slice()), Some(v.as_slice()))).collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let batch = build_batch(&refs, now);
        if let Err(e) = self.target.produce(&topic, CHECKPOINTS_PARTITION, batch.into_bytes(), PRODUCE_TIMEOUT).await {
            return Err(self.client_error(e));
        }
        for c in changed.iter() {
            self.checkpointed
                .insert((c.group.clone(), c.topic.clone(), c.partition), (c.upstream_offset, c.downstream_offset));
        }
        Ok(changed.len())
    }

    /// Creates the checkpoints topic as MM2 does (compacted, one partition) if missing.
    async fn ensure_checkpoints_topic(&mut self, topic: &str) -> Result<(), ClientError> {
        if self.checkpoints_topic_ready || self.target.topic(topic).await.is_ok() {
            self.checkpoints_topic_ready = true;
            return Ok(());
        }
        // Compacted, one partition, as MM2's; as durable as kferry's other topics.
        let new = crate::topics::own::own_topic(&self.target, topic, self.flow.replication_factor).await?;
        match self.target.create_topics(&[new], false, PRODUCE_TIMEOUT).await?.remove(0).1 {
            Err(ClientError::Topic { code, .. }) if code.0 == ResponseError::TopicAlreadyExists => {}
            other => other?,
        }
        self.checkpoints_topic_ready = true;
        Ok(())
    }

    /// The offsets of `view` the rules allow to commit now.
    fn offsets_to_commit(&self, view: &GroupView) -> GroupOffsets {
        let mut offsets = GroupOffsets::new();
        for p in &view.partitions {
            let Some((target_topic, translated)) = p.translated() else { continue };
            let previous = self.previous.get(&(view.group.clone(), p.source_partition())).copied();
            match decide(translated, p.target_offset, p.source.offset, previous) {
                Decision::Commit => {}
                Decision::Rewind => {
                    tracing::warn!(flow = %self.flow.name(), group = %view.group, topic = %p.source_topic, partition = p.partition,
                        source_from = previous, source_to = p.source.offset, target_from = p.target_offset, target_to = translated,
                        "source group moved backwards (reset): moving the target group back too");
                }
                Decision::Unchanged => continue,
                Decision::KeepAhead => {
                    tracing::debug!(flow = %self.flow.name(), group = %view.group, topic = %p.source_topic, partition = p.partition,
                        translated, target = p.target_offset, "target group is ahead: left as is");
                    continue;
                }
            }
            let committed = CommittedOffset { offset: translated, metadata: p.source.metadata.clone() };
            offsets.insert((target_topic.to_string(), p.partition), committed);
        }
        offsets
    }

    fn remember(&mut self, view: &GroupView) {
        for p in &view.partitions {
            self.previous.insert((view.group.clone(), p.source_partition()), p.source.offset);
        }
    }

    /// A refused commit: a member joined meanwhile (try next round), or the target refuses
    /// the group for good (report once, then leave it alone).
    fn commit_failed(&mut self, group: &str, error: ClientError, report: &mut RoundReport) -> Result<(), GroupsError> {
        let code = match &error {
            ClientError::Group { code, .. } => Some(code.0),
            _ => None,
        };
        match code {
            Some(
                ResponseError::UnknownMemberId
                | ResponseError::IllegalGeneration
                | ResponseError::RebalanceInProgress
                | ResponseError::StaleMemberEpoch,
            ) => {
                tracing::debug!(flow = %self.flow.name(), %group, "group gained members on the target: not touched");
                report.active.push(group.to_string());
                Ok(())
            }
            Some(
                ResponseError::InvalidGroupId
                | ResponseError::GroupAuthorizationFailed
                | ResponseError::InvalidCommitOffsetSize,
            ) => {
                tracing::error!(flow = %self.flow.name(), %group, %error, "the target refuses this group: its offsets are not synced (until kferry restarts)");
                self.refused.insert(group.to_string());
                Ok(())
            }
            _ => Err(self.client_error(error)),
        }
    }

    /// The flow's replication progress: next source offset per source partition.
    async fn progress(&self) -> Result<Progress, ClientError> {
        let progress = read_progress(&self.target, &progress_group(&self.flow)).await?;
        Ok(progress.into_iter().map(|p| (p.source, p.next_offset)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_offsets_only_move_forward_unless_the_source_was_reset() {
        assert_eq!(decide(10, None, 5, None), Decision::Commit);
        assert_eq!(decide(10, Some(7), 5, Some(3)), Decision::Commit);
        assert_eq!(decide(10, Some(10), 5, Some(5)), Decision::Unchanged);
        assert_eq!(decide(10, Some(12), 5, Some(5)), Decision::KeepAhead, "consumers moved on on the target");
        assert_eq!(decide(10, Some(12), 5, None), Decision::KeepAhead, "nothing seen before: no proof of a reset");
        assert_eq!(decide(4, Some(12), 2, Some(5)), Decision::Rewind, "source group reset from 5 to 2");
    }

    #[test]
    fn the_filter_skips_kferry_and_non_consumer_groups() {
        let flow = FlowConfig {
            groups: vec!["app-.*".into(), "kferry\\..*".into()],
            groups_exclude: vec!["app-test".into()],
            ..FlowConfig::between("primary", "secondary")
        };
        let filter = GroupFilter::new(&flow).unwrap();
        let group =
            |id: &str, protocol: &str| ListedGroup { id: id.into(), protocol_type: protocol.into(), state: None };
        assert!(filter.selects(&group("app-orders", "consumer")));
        assert!(filter.selects(&group("app-simple", "")), "groups that only commit offsets");
        assert!(!filter.selects(&group("app-test", "consumer")));
        assert!(!filter.selects(&group("app-connect", "connect")));
        assert!(!filter.selects(&group("kferry.progress.a.b", "")));
        assert!(!filter.selects(&group("other", "consumer")));
    }
}
