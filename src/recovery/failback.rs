//! `kferry failback`: after a failover of `primary -> secondary`, the data written on
//! `secondary` goes back to `primary` through the reverse flow `secondary -> primary`
//! (identity names), and `--complete` returns the pair to where it started.
//!
//! - `reset` (what MM2's runbook describes): the old primary's records in the replicated
//!   topics are deleted (DeleteRecords; topics, configs and ACLs stay), then everything on
//!   `secondary` is copied back. Kafka refuses DeleteRecords on compact-only topics
//!   (`_schemas`, `connect-configs`, `connect-offsets`, `connect-status`): those are deleted
//!   and created again with the same partitions, replication factor and topic configs
//!   (ACLs name the topic, not its id, so they stay), which the plan shows.
//! - `incremental`: only what `secondary` received after the failover point is copied back.
//!   What reached `primary` but never `secondary` (the divergent tail) is exported to a file
//!   and reported; groups that moved never land in it. The reverse flow's offset map is
//!   seeded with the inverse of the forward one, so a group positioned before the failover
//!   point translates to the original record on `primary`.
//! - `complete`: waits for the reverse flow to catch up, syncs groups a last time, marks the
//!   reverse flow failing over, fences it, and only then reads the primary's ends and sets
//!   the forward flow's progress and offset map so that it resumes right after the
//!   copied-back data, never copying it to `secondary` a second time.
//!
//! Offset maps are cleaned as they go stale, so a pair can go round the cycle again: a
//! failback removes the reverse flow's map of an earlier cycle before it seeds or copies,
//! and `--complete` removes forward segments whose records on the primary are deleted.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::failover::{failover_point, write_table, GroupPosition};
use super::marker::{self, FailoverRecord, FlowState, MarkerError};
use crate::client::{
    ClientError, Cluster, CommittedOffset, ConfigSource, FetchSpec, GroupOffsets, Isolation, NewTopic, OffsetSpec,
};
use crate::config::{Delivery, FlowConfig, ReplicationPolicy};
use crate::groups::sync::{GroupSync, GroupsError};
use crate::protocol::error_code::ResponseError;
use crate::replicate::engine::progress_group;
use crate::replicate::forward;
use crate::replicate::offset_map::Segment;
use crate::replicate::rewrite::{decode_records, DecodedRecord};
use crate::replicate::shard::{transactional_ids, Shard};
use crate::replicate::state::{self, offset_map_topic, progress_metadata, SourcePartition};

/// How long the fencing InitProducerId may keep a transaction open (it aborts it at once).
const FENCE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long deleting a compact-only topic and creating it again may take.
const RECREATE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailbackMode {
    Reset,
    Incremental,
}

impl fmt::Display for FailbackMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reset => "reset",
            Self::Incremental => "incremental",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailbackError {
    #[error("flow {flow}: failback refused: it copies topics back under the same names, and this flow uses the {policy} policy")]
    NotIdentity { flow: String, policy: ReplicationPolicy },
    #[error(
        "flow {flow}: failback refused: the flow is not failed over (no failover record on {target}), so it may still \
         be running and the reverse flow would copy its data straight back (a cycle). Run `kferry failover` first"
    )]
    NotFailedOver { flow: String, target: String },
    #[error("flow {flow}: cluster {cluster}: topic {topic} cannot be recreated: {reason}")]
    Recreate { flow: String, cluster: String, topic: String, reason: String },
    #[error("flow {flow}: no failback in progress (the reverse flow {reverse} has no active record on {source_alias}): run `kferry failback --mode reset|incremental` first")]
    NotFailingBack { flow: String, reverse: String, source_alias: String },
    #[error("flow {flow}: the reverse flow still lags by {lag} offsets after {waited:?}; stop producers on {target} and keep `kferry failback` running, then try again (or raise --timeout)")]
    LagNotZero { flow: String, target: String, lag: i64, waited: Duration },
    #[error("flow {flow}: cannot write the divergent records to {path}: {source}")]
    Export {
        flow: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("flow {flow}: a divergent record of {topic} partition {partition} cannot be read: {reason}")]
    Decode { flow: String, topic: String, partition: i32, reason: String },
    #[error("flow {flow}: {source}")]
    Client {
        flow: String,
        #[source]
        source: Box<ClientError>,
    },
    #[error("flow {flow}: {source}")]
    Marker {
        flow: String,
        #[source]
        source: MarkerError,
    },
    #[error(transparent)]
    Failover(#[from] Box<super::failover::FailoverError>),
    #[error(transparent)]
    Groups(#[from] GroupsError),
}

/// One partition of a failback plan. "Primary" is the forward flow's source, where the
/// data goes back to; "secondary" its target, where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionFailback {
    pub topic: String,
    pub partition: i32,
    /// The primary's end offset when the plan was made: copied-back records land after it.
    pub primary_end: i64,
    /// `reset`: records of the primary before this offset are deleted.
    pub delete_before: Option<i64>,
    /// `incremental`: primary offsets `[from, to)` that never reached the secondary.
    pub divergent: Option<(i64, i64)>,
    /// Secondary offsets `[from, to)` copied back (the reverse flow then keeps copying
    /// whatever arrives after `to`).
    pub copy: (i64, i64),
    /// `reset` of a compact-only topic: the topic is deleted and created again instead of
    /// its records deleted, so the copies start at offset 0.
    #[serde(default)]
    pub recreate: bool,
}

/// A compact-only topic a reset failback deletes and creates again on the primary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecreatedTopic {
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i16,
    /// The configs set on the topic itself (not inherited), given to the new topic.
    pub configs: std::collections::BTreeMap<String, String>,
}

/// What a failback does (dry run) or did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailbackPlan {
    pub flow: String,
    pub reverse_flow: String,
    pub mode: FailbackMode,
    pub partitions: Vec<PartitionFailback>,
    /// Groups on the secondary and where they are there now; the reverse flow's group sync
    /// carries them to the primary as the data arrives.
    pub groups: Vec<GroupPosition>,
    /// Where the divergent records go (`incremental` with a divergent tail).
    pub export: Option<PathBuf>,
    /// `reset`: compact-only topics deleted and created again on the primary.
    pub recreate: Vec<RecreatedTopic>,
}

/// The reverse flow of `flow`: its target back to its source, same topics and groups,
/// identity names. Topic configs and ACLs are not copied back: the primary has its own.
pub fn reverse_flow(flow: &FlowConfig) -> FlowConfig {
    FlowConfig {
        topics: flow.topics.clone(),
        topics_exclude: flow.topics_exclude.clone(),
        replication_factor: flow.replication_factor,
        sync_topic_configs: false,
        sync_topic_acls: false,
        refresh_topics_interval_seconds: flow.refresh_topics_interval_seconds,
        delivery: flow.delivery,
        buffer_bytes: flow.buffer_bytes,
        groups: flow.groups.clone(),
        groups_exclude: flow.groups_exclude.clone(),
        sync_group_offsets: flow.sync_group_offsets,
        sync_group_offsets_interval_seconds: flow.sync_group_offsets_interval_seconds,
        ..FlowConfig::between(&flow.target, &flow.source)
    }
}

fn client(flow: &FlowConfig) -> impl Fn(ClientError) -> FailbackError + '_ {
    move |e| FailbackError::Client { flow: flow.name(), source: Box::new(e) }
}

fn marker_error(flow: &FlowConfig) -> impl Fn(MarkerError) -> FailbackError + '_ {
    move |source| FailbackError::Marker { flow: flow.name(), source }
}

/// The checks before a failback starts: identity names, and the flow failed over (so
/// fenced: the reverse flow with identity names would otherwise form a cycle with it; a
/// configured identity flow back is refused by config validation already). Returns the
/// failover record.
pub async fn check_preconditions(flow: &FlowConfig, secondary: &Cluster) -> Result<FailoverRecord, FailbackError> {
    if flow.policy != ReplicationPolicy::Identity {
        return Err(FailbackError::NotIdentity { flow: flow.name(), policy: flow.policy });
    }
    match marker::read(secondary, &flow.name()).await.map_err(marker_error(flow))? {
        Some(record) if record.state == FlowState::FailedOver => Ok(record),
        _ => Err(FailbackError::NotFailedOver { flow: flow.name(), target: flow.target.clone() }),
    }
}

/// The failback plan: per partition what is deleted, exported and copied back, and the
/// groups on the secondary.
pub async fn plan(
    flow: &FlowConfig,
    mode: FailbackMode,
    failover: &FailoverRecord,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
    export_dir: &Path,
) -> Result<FailbackPlan, FailbackError> {
    let recreate = match mode {
        FailbackMode::Reset => compact_only_topics(flow, failover, primary).await?,
        FailbackMode::Incremental => Vec::new(),
    };
    let mut partitions = Vec::new();
    for point in &failover.partitions {
        let (topic, partition) = (point.target_topic.clone(), point.partition);
        let primary_end = primary
            .list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted)
            .await
            .map_err(client(flow))?;
        let secondary_end = secondary
            .list_offset(&topic, partition, OffsetSpec::Latest, Isolation::ReadCommitted)
            .await
            .map_err(client(flow))?;
        let entry = match mode {
            FailbackMode::Reset => {
                let secondary_start = secondary
                    .list_offset(&topic, partition, OffsetSpec::Earliest, Isolation::ReadCommitted)
                    .await
                    .map_err(client(flow))?;
                let recreated = recreate.iter().any(|r| r.topic == topic);
                PartitionFailback {
                    topic,
                    partition,
                    primary_end,
                    delete_before: (!recreated).then_some(primary_end),
                    divergent: None,
                    copy: (secondary_start, secondary_end),
                    recreate: recreated,
                }
            }
            FailbackMode::Incremental => PartitionFailback {
                topic,
                partition,
                primary_end,
                delete_before: None,
                divergent: (point.replicated_to < primary_end).then_some((point.replicated_to, primary_end)),
                copy: (point.target_end, secondary_end),
                recreate: false,
            },
        };
        partitions.push(entry);
    }
    let export = partitions
        .iter()
        .any(|p| p.divergent.is_some())
        .then(|| export_dir.join(format!("kferry-divergent-{}-{}.jsonl", flow.source, failover.at_ms)));
    let groups = secondary_groups(flow, primary, secondary).await?;
    Ok(FailbackPlan {
        flow: flow.name(),
        reverse_flow: reverse_flow(flow).name(),
        mode,
        partitions,
        groups,
        export,
        recreate,
    })
}

/// The compact-only topics of the failover record on the primary, as they are now: Kafka
/// refuses DeleteRecords on them, so reset deletes and recreates them instead.
async fn compact_only_topics(
    flow: &FlowConfig,
    failover: &FailoverRecord,
    primary: &Cluster,
) -> Result<Vec<RecreatedTopic>, FailbackError> {
    let mut topics: Vec<String> = failover.partitions.iter().map(|p| p.source_topic.clone()).collect();
    topics.sort();
    topics.dedup();
    let mut recreate = Vec::new();
    for (topic, configs) in primary.describe_topics_configs(&topics).await.map_err(client(flow))? {
        let configs = configs.map_err(client(flow))?;
        let policy = configs.get("cleanup.policy").and_then(|c| c.value.clone());
        if policy.is_none_or(|p| p.split(',').any(|part| part.trim() == "delete")) {
            continue;
        }
        let info = primary.topic(&topic).await.map_err(client(flow))?;
        let replicas = info.partitions.values().map(|p| p.replicas.len()).max().unwrap_or(0);
        let cannot = |reason: String| FailbackError::Recreate {
            flow: flow.name(),
            cluster: flow.source.clone(),
            topic: topic.clone(),
            reason,
        };
        // A config whose value the broker hides would be lost: refuse before deleting.
        if let Some((name, _)) = configs.iter().find(|(_, c)| c.source == ConfigSource::Topic && c.value.is_none()) {
            return Err(cannot(format!("its config {name} is sensitive and cannot be read back")));
        }
        let own = configs
            .into_iter()
            .filter(|(_, c)| c.source == ConfigSource::Topic && !c.read_only)
            .filter_map(|(name, c)| c.value.map(|v| (name, v)))
            .collect();
        recreate.push(RecreatedTopic {
            topic: topic.clone(),
            partitions: i32::try_from(info.partitions.len()).map_err(|e| cannot(e.to_string()))?,
            replication_factor: i16::try_from(replicas).map_err(|e| cannot(e.to_string()))?,
            configs: own,
        });
    }
    Ok(recreate)
}

/// Deletes `topic` on the primary and creates it again as it was.
async fn recreate_topic(flow: &FlowConfig, primary: &Cluster, topic: &RecreatedTopic) -> Result<(), FailbackError> {
    let cannot = |e: ClientError| FailbackError::Recreate {
        flow: flow.name(),
        cluster: flow.source.clone(),
        topic: topic.topic.clone(),
        reason: e.to_string(),
    };
    primary.delete_topic(&topic.topic, RECREATE_TIMEOUT).await.map_err(cannot)?;
    let new = NewTopic {
        name: topic.topic.clone(),
        partitions: topic.partitions,
        replication_factor: Some(topic.replication_factor),
        configs: topic.configs.clone(),
    };
    // The controller may still be removing the old topic's partitions for a moment.
    let started = Instant::now();
    loop {
        let outcome = primary.create_topics(std::slice::from_ref(&new), false, RECREATE_TIMEOUT).await;
        match outcome.map(|mut o| o.remove(0).1) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(ClientError::Topic { code, .. }))
                if code.0 == ResponseError::TopicAlreadyExists && started.elapsed() < RECREATE_TIMEOUT =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Ok(Err(e)) | Err(e) => return Err(cannot(e)),
        }
    }
}

/// The groups' committed offsets on the secondary for the replicated topics.
async fn secondary_groups(
    flow: &FlowConfig,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
) -> Result<Vec<GroupPosition>, FailbackError> {
    let reverse = reverse_flow(flow);
    let mut sync = GroupSync::new(&reverse, Arc::clone(secondary), Arc::clone(primary))?;
    let mut positions = Vec::new();
    for view in sync.view(None).await? {
        for p in &view.partitions {
            let (group, topic, partition) = (view.group.clone(), p.source_topic.clone(), p.partition);
            positions.push(GroupPosition { group, topic, partition, offset: p.source.offset });
        }
    }
    Ok(positions)
}

/// Carries out `plan` up to the point where the reverse flow can run: deletes (reset) or
/// exports (incremental), sets the reverse flow's starting positions and offset map, and
/// marks it active.
pub async fn prepare(
    flow: &FlowConfig,
    plan: &FailbackPlan,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
) -> Result<(), FailbackError> {
    let reverse = reverse_flow(flow);
    if let Some(path) = &plan.export {
        export_divergent(flow, plan, primary, path).await?;
    }
    for topic in &plan.recreate {
        recreate_topic(flow, primary, topic).await?;
    }
    for p in &plan.partitions {
        if let Some(before) = p.delete_before {
            primary.delete_records(&p.topic, p.partition, before).await.map_err(client(flow))?;
        }
    }
    // A map of an earlier failback points at records this one deleted or does not copy:
    // gone before the new one is seeded or grows, so groups never translate through it.
    clear_segments(flow, &reverse, primary, |(source, _, _)| {
        plan.partitions.iter().any(|p| (&p.topic, p.partition) == (&source.0, source.1))
    })
    .await?;
    if plan.mode == FailbackMode::Incremental {
        seed_reverse_map(flow, plan, primary, secondary).await?;
    }
    // The reverse flow starts where the plan copies from.
    let start: GroupOffsets = plan
        .partitions
        .iter()
        .map(|p| {
            let metadata = progress_metadata(&p.topic, p.copy.1);
            ((p.topic.clone(), p.partition), CommittedOffset { offset: p.copy.0, metadata: Some(metadata) })
        })
        .collect();
    primary.commit_group_offsets(&progress_group(&reverse), &start).await.map_err(client(flow))?;
    let record = FailoverRecord::state(&reverse.name(), FlowState::Active, &format!("failback {}", plan.mode));
    marker::write(primary, &record, flow.replication_factor).await.map_err(marker_error(flow))
}

/// Writes the divergent records (primary offsets `[from, to)` of each partition) to `path`
/// as JSON lines: topic, partition, offset, timestamp, key, value, headers (bytes as
/// standard base64, `null` kept; header names as text).
///
/// The file is created with mode 0600 and never over an existing one: it holds record
/// data other users of the machine may not read, and a second export must not destroy the
/// first.
async fn export_divergent(
    flow: &FlowConfig,
    plan: &FailbackPlan,
    primary: &Cluster,
    path: &Path,
) -> Result<(), FailbackError> {
    let export_error = |source| FailbackError::Export { flow: flow.name(), path: path.to_owned(), source };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(export_error)?;
    let mut file = std::io::BufWriter::new(file);
    for p in &plan.partitions {
        let Some((from, to)) = p.divergent else { continue };
        let mut offset = from;
        while offset < to {
            let spec = FetchSpec {
                offset,
                max_bytes: 4 * 1024 * 1024,
                max_wait: Duration::from_millis(100),
                isolation: Isolation::ReadCommitted,
            };
            let fetched = primary.fetch(&p.topic, p.partition, &spec).await.map_err(client(flow))?;
            let decode_error = |reason: String| FailbackError::Decode {
                flow: flow.name(),
                topic: p.topic.clone(),
                partition: p.partition,
                reason,
            };
            let selection = forward::select(fetched.records, offset, &fetched.aborted_transactions)
                .map_err(|e| decode_error(e.to_string()))?;
            for forwarded in &selection.batches {
                for record in decode_records(&forwarded.batch).map_err(|e| decode_error(e.to_string()))? {
                    if record.offset < from || record.offset >= to {
                        continue;
                    }
                    let line = export_line(&p.topic, p.partition, &record);
                    writeln!(file, "{line}").map_err(export_error)?;
                }
            }
            if selection.next_offset == offset {
                break;
            }
            offset = selection.next_offset;
        }
    }
    file.flush().map_err(export_error)
}

/// One JSON line of the divergent-tail export.
fn export_line(topic: &str, partition: i32, record: &DecodedRecord) -> serde_json::Value {
    let b64 = |bytes: &Option<Vec<u8>>| bytes.as_ref().map(|b| BASE64.encode(b));
    let headers: Vec<_> = record
        .headers
        .iter()
        .map(|(name, value)| serde_json::json!([String::from_utf8_lossy(name), b64(value)]))
        .collect();
    serde_json::json!({
        "topic": topic, "partition": partition, "offset": record.offset,
        "timestamp": record.timestamp, "key": b64(&record.key), "value": b64(&record.value),
        "headers": headers,
    })
}

/// Seeds the reverse flow's offset map (on the primary) with the inverse of the forward
/// one, plus an empty segment at each failover point leading to the primary's end: a group
/// positioned before the failover point translates to the original record, one at it to
/// the first record copied back, never into the divergent tail.
async fn seed_reverse_map(
    flow: &FlowConfig,
    plan: &FailbackPlan,
    primary: &Cluster,
    secondary: &Cluster,
) -> Result<(), FailbackError> {
    let reverse = reverse_flow(flow);
    let forward_maps = state::load(secondary, &offset_map_topic(flow)).await.map_err(client(flow))?;
    let mut seeds: Vec<(SourcePartition, String, Segment)> = Vec::new();
    for p in &plan.partitions {
        let key = (p.topic.clone(), p.partition);
        if let Some((_, map)) = forward_maps.get(&key) {
            seeds.extend(map.segments().iter().map(|s| (key.clone(), p.topic.clone(), invert(s))));
        }
        // Forward segments all lie before the failover point, so the bridge comes last.
        let bridge = Segment { source_start: p.copy.0, source_end: p.copy.0, target_start: p.primary_end };
        seeds.push((key, p.topic.clone(), bridge));
    }
    write_segments(flow, &reverse, primary, &seeds).await
}

/// A segment of one direction as a segment of the other.
fn invert(segment: &Segment) -> Segment {
    Segment {
        source_start: segment.target_start,
        source_end: segment.target_start + (segment.source_end - segment.source_start),
        target_start: segment.source_start,
    }
}

/// Deletes (tombstones) every segment of `owner`'s offset maps (on `cluster`, `owner`'s
/// target) that `stale` selects. `flow` is the flow being failed back, for errors.
async fn clear_segments(
    flow: &FlowConfig,
    owner: &FlowConfig,
    cluster: &Cluster,
    stale: impl Fn(&(SourcePartition, String, Segment)) -> bool,
) -> Result<(), FailbackError> {
    let topic = offset_map_topic(owner);
    let maps = state::load(cluster, &topic).await.map_err(client(flow))?;
    let doomed: Vec<(SourcePartition, i64)> = maps
        .iter()
        .flat_map(|(source, (target_topic, map))| {
            map.segments().iter().map(move |s| (source.clone(), target_topic.clone(), *s))
        })
        .filter(|entry| stale(entry))
        .map(|(source, _, segment)| (source, segment.source_start))
        .collect();
    // A tombstone goes where its segment is: the state partition of the partition's shard.
    let batch = |chunk: &[(SourcePartition, i64)]| state::tombstone_batch(chunk, marker::now_ms());
    write_by_shard(flow, owner, cluster, &topic, doomed, |(source, _)| source, batch).await
}

/// Writes segments into `owner`'s state topic on `cluster`, each in the state partition
/// of its source partition's shard (the topic created with a partition per shard if
/// missing). `flow` is the flow being failed back, for errors.
async fn write_segments(
    flow: &FlowConfig,
    owner: &FlowConfig,
    cluster: &Cluster,
    segments: &[(SourcePartition, String, Segment)],
) -> Result<(), FailbackError> {
    let topic = offset_map_topic(owner);
    let shards = i32::from(owner.shards.max(1));
    state::ensure_topic(cluster, &topic, shards, owner.replication_factor).await.map_err(client(flow))?;
    let batch = |chunk: &[(SourcePartition, String, Segment)]| state::state_batch(chunk, marker::now_ms());
    write_by_shard(flow, owner, cluster, &topic, segments.to_vec(), |(source, _, _)| source, batch).await
}

/// Produces `items` to `owner`'s state topic, each into the state partition of its source
/// partition's shard, as batches of at most 1,000 built by `batch`.
async fn write_by_shard<T>(
    flow: &FlowConfig,
    owner: &FlowConfig,
    cluster: &Cluster,
    topic: &str,
    items: Vec<T>,
    source: impl Fn(&T) -> &SourcePartition,
    batch: impl Fn(&[T]) -> crate::protocol::batch::RecordBatch,
) -> Result<(), FailbackError> {
    let mut by_partition: BTreeMap<i32, Vec<T>> = BTreeMap::new();
    for item in items {
        let (topic, partition) = source(&item);
        by_partition.entry(Shard::of(owner, topic, *partition).state_partition()).or_default().push(item);
    }
    for (partition, items) in by_partition {
        for chunk in items.chunks(1_000) {
            let bytes = batch(chunk).into_bytes();
            cluster.produce(topic, partition, bytes, Duration::from_secs(30)).await.map_err(client(flow))?;
        }
    }
    Ok(())
}

/// What `--complete` does (dry run) or did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompletePlan {
    pub flow: String,
    pub reverse_flow: String,
    /// Reverse-flow offsets not yet copied back, per partition.
    pub lag: Vec<(String, i32, i64)>,
    /// Where the forward flow resumes: (topic, partition, primary offset).
    pub forward_positions: Vec<(String, i32, i64)>,
    /// Groups on the primary after the last sync.
    pub groups: Vec<GroupPosition>,
    /// The transactional ids bumped to fence the reverse flow, two per shard (empty for
    /// `at_least_once`).
    pub fence: Vec<String>,
}

/// The plan of `--complete`: the reverse flow's lag now and where the forward flow would
/// resume.
pub async fn complete_plan(
    flow: &FlowConfig,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
) -> Result<CompletePlan, FailbackError> {
    let reverse = reverse_flow(flow);
    match marker::read(primary, &reverse.name()).await.map_err(marker_error(flow))? {
        // Failing over: a `--complete` interrupted after its mark; running it again finishes it.
        Some(record) if record.state != FlowState::FailedOver => {}
        _ => {
            return Err(FailbackError::NotFailingBack {
                flow: flow.name(),
                reverse: reverse.name(),
                source_alias: flow.source.clone(),
            })
        }
    }
    let points = failover_point(&reverse, Some(secondary), primary).await.map_err(Box::new)?;
    let lag = points.iter().map(|p| (p.source_topic.clone(), p.partition, p.not_replicated().unwrap_or(0))).collect();
    let forward_positions = primary_ends(flow, &points, primary).await?;
    let mut groups = Vec::new();
    for (group, offsets) in primary_groups(&reverse, primary, secondary).await? {
        for ((topic, partition), offset) in offsets {
            groups.push(GroupPosition { group: group.clone(), topic, partition, offset });
        }
    }
    Ok(CompletePlan {
        flow: flow.name(),
        reverse_flow: reverse.name(),
        lag,
        forward_positions,
        groups,
        fence: if reverse.delivery == Delivery::ExactlyOnce { transactional_ids(&reverse) } else { Vec::new() },
    })
}

/// Where the forward flow resumes: the primary's read-committed end of every partition the
/// reverse flow copies.
async fn primary_ends(
    flow: &FlowConfig,
    points: &[super::marker::PartitionPoint],
    primary: &Cluster,
) -> Result<Vec<(String, i32, i64)>, FailbackError> {
    let mut ends = Vec::new();
    for p in points {
        let end = primary
            .list_offset(&p.target_topic, p.partition, OffsetSpec::Latest, Isolation::ReadCommitted)
            .await
            .map_err(client(flow))?;
        ends.push((p.target_topic.clone(), p.partition, end));
    }
    Ok(ends)
}

/// The reverse flow's groups as translated to the primary now.
async fn primary_groups(
    reverse: &FlowConfig,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
) -> Result<Vec<(String, Vec<((String, i32), i64)>)>, FailbackError> {
    let mut sync = GroupSync::new(reverse, Arc::clone(secondary), Arc::clone(primary))?;
    Ok(sync
        .view(None)
        .await?
        .into_iter()
        .map(|v| {
            let offsets = v
                .partitions
                .iter()
                .filter_map(|p| p.translated().map(|(t, o)| ((t.to_string(), p.partition), o)))
                .collect();
            (v.group, offsets)
        })
        .collect())
}

/// `--complete`: waits until the reverse flow has copied everything, syncs groups a last
/// time, then, in this order: marks the reverse flow failing over (a kferry initialising
/// its producer from now on stops; a running one within a second), fences it, reads where
/// the forward flow resumes (nothing copied back can land after that any more), and sets
/// the forward flow up to resume there. Returns what it did.
pub async fn complete(
    flow: &FlowConfig,
    primary: &Arc<Cluster>,
    secondary: &Arc<Cluster>,
    timeout: Duration,
) -> Result<CompletePlan, FailbackError> {
    let reverse = reverse_flow(flow);
    let started = Instant::now();
    loop {
        let plan = complete_plan(flow, primary, secondary).await?;
        let lag: i64 = plan.lag.iter().map(|(_, _, lag)| lag).sum();
        if lag == 0 {
            break;
        }
        if started.elapsed() >= timeout {
            return Err(FailbackError::LagNotZero {
                flow: flow.name(),
                target: flow.target.clone(),
                lag,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    GroupSync::new(&reverse, Arc::clone(secondary), Arc::clone(primary))?.round().await?;
    let before = complete_plan(flow, primary, secondary).await?;
    // How the failback began (its record's reason, `failback reset|incremental`): after a
    // reset, no forward segment of before describes the primary's records any more.
    let began = marker::read(primary, &reverse.name()).await.map_err(marker_error(flow))?.map(|r| r.reason);
    let began = began.unwrap_or_default();
    let reset = began == format!("failback {}", FailbackMode::Reset);
    // The mark keeps that reason, so a `--complete` run again after an interruption knows it.
    let mark = FailoverRecord::state(&reverse.name(), FlowState::FailingOver, &began);
    marker::write(primary, &mark, flow.replication_factor).await.map_err(marker_error(flow))?;
    for id in &before.fence {
        primary.init_producer_id(Some(id), FENCE_TRANSACTION_TIMEOUT).await.map_err(client(flow))?;
    }
    let points = failover_point(&reverse, Some(secondary), primary).await.map_err(Box::new)?;
    let plan = CompletePlan { forward_positions: primary_ends(flow, &points, primary).await?, ..before };
    let fenced = FailoverRecord::state(&reverse.name(), FlowState::FailedOver, "failback complete");
    marker::write(primary, &fenced, flow.replication_factor).await.map_err(marker_error(flow))?;
    resume_forward(flow, &plan, reset, primary, secondary).await?;
    Ok(plan)
}

/// The forward flow resumes at the primary's end, with the reverse flow's offset map
/// inverted into its own so that groups moving back are translated exactly.
async fn resume_forward(
    flow: &FlowConfig,
    plan: &CompletePlan,
    reset: bool,
    primary: &Cluster,
    secondary: &Cluster,
) -> Result<(), FailbackError> {
    let reverse = reverse_flow(flow);
    let reverse_maps = state::load(primary, &offset_map_topic(&reverse)).await.map_err(client(flow))?;
    let inverted: Vec<(SourcePartition, String, Segment)> = reverse_maps
        .iter()
        .flat_map(|((topic, partition), (target_topic, map))| {
            map.segments()
                .iter()
                .filter(|s| s.source_end > s.source_start)
                .map(move |s| ((target_topic.clone(), *partition), topic.clone(), invert(s)))
        })
        .collect();
    // Forward segments of records the primary no longer has (a reset failback deleted them,
    // or recreated their topic so its offsets start again at 0) would translate its groups
    // to the wrong records: removed.
    let mut log_starts = std::collections::BTreeMap::new();
    for (topic, partition, _) in &plan.forward_positions {
        let start = primary
            .list_offset(topic, *partition, OffsetSpec::Earliest, Isolation::ReadCommitted)
            .await
            .map_err(client(flow))?;
        log_starts.insert((topic.clone(), *partition), start);
    }
    clear_segments(flow, flow, secondary, |(source, _, segment)| {
        log_starts.get(source).is_some_and(|&start| reset || segment.source_end <= start)
    })
    .await?;
    write_segments(flow, flow, secondary, &inverted).await?;
    let progress: GroupOffsets = plan
        .forward_positions
        .iter()
        .map(|(topic, partition, end)| {
            let metadata = progress_metadata(topic, *end);
            ((topic.clone(), *partition), CommittedOffset { offset: *end, metadata: Some(metadata) })
        })
        .collect();
    secondary.commit_group_offsets(&progress_group(flow), &progress).await.map_err(client(flow))?;
    let active = FailoverRecord::state(&flow.name(), FlowState::Active, "failback complete");
    marker::write(secondary, &active, flow.replication_factor).await.map_err(marker_error(flow))
}

impl fmt::Display for FailbackPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "flow {} failback ({}), reverse flow {}:", self.flow, self.mode, self.reverse_flow)?;
        let range = |r: Option<(i64, i64)>| r.map_or("-".to_string(), |(a, b)| format!("{a}..{b} ({})", b - a));
        let mut rows = vec![[
            "TOPIC".to_string(),
            "PARTITION".into(),
            "PRIMARY-END".into(),
            "DELETE-ON-PRIMARY-BEFORE".into(),
            "DIVERGENT-ON-PRIMARY".into(),
            "COPY-FROM-SECONDARY".into(),
        ]];
        for p in &self.partitions {
            rows.push([
                p.topic.clone(),
                p.partition.to_string(),
                p.primary_end.to_string(),
                match (p.recreate, p.delete_before) {
                    (true, _) => "all (topic recreated)".to_string(),
                    (false, before) => before.map_or("-".to_string(), |o| o.to_string()),
                },
                range(p.divergent),
                range(Some(p.copy)),
            ]);
        }
        write_table(f, &rows)?;
        for t in &self.recreate {
            let configs: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(
                f,
                "  recreate on the primary (compact-only, Kafka refuses DeleteRecords): {} ({} partitions, replication \
                 factor {}, configs {}); ACLs stay",
                t.topic,
                t.partitions,
                t.replication_factor,
                if configs.is_empty() { "-".to_string() } else { configs.join(",") }
            )?;
        }
        if let Some(path) = &self.export {
            writeln!(f, "  divergent records go to {} (written when the failback runs)", path.display())?;
        }
        writeln!(f, "  groups on the secondary (carried to the primary as the data arrives):")?;
        let mut rows = vec![["GROUP".to_string(), "TOPIC".into(), "PARTITION".into(), "OFFSET".into()]];
        for g in &self.groups {
            rows.push([g.group.clone(), g.topic.clone(), g.partition.to_string(), g.offset.to_string()]);
        }
        write_table(f, &rows)
    }
}

impl fmt::Display for CompletePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "flow {} failback completion (reverse flow {}):", self.flow, self.reverse_flow)?;
        let mut rows =
            vec![["TOPIC".to_string(), "PARTITION".into(), "REVERSE-LAG".into(), "FORWARD-RESUMES-AT".into()]];
        for ((topic, partition, lag), (_, _, resume)) in self.lag.iter().zip(&self.forward_positions) {
            rows.push([topic.clone(), partition.to_string(), lag.to_string(), resume.to_string()]);
        }
        write_table(f, &rows)?;
        match self.fence.as_slice() {
            [] => writeln!(f, "  fence: the reverse flow's record (at_least_once: stop `kferry failback` first)")?,
            ids => writeln!(f, "  fence: transactional id {}", ids.join(", "))?,
        }
        writeln!(f, "  groups on the primary:")?;
        let mut rows = vec![["GROUP".to_string(), "TOPIC".into(), "PARTITION".into(), "OFFSET".into()]];
        for g in &self.groups {
            rows.push([g.group.clone(), g.topic.clone(), g.partition.to_string(), g.offset.to_string()]);
        }
        write_table(f, &rows)
    }
}
