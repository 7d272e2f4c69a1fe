//! The YAML configuration: its types, parsing and validation. No network.
//!
//! Owns the schema (clusters and the flows between them) and every check that can be
//! made from the file alone, all reported together with key path and line. Whether the
//! clusters are reachable, and which topics exist, is left to `cli` and `client`; what a
//! flow's patterns select and how topics are renamed is `topics`.
//!
//! Every struct refuses unknown keys, so a misspelt key is an error rather than a
//! setting silently ignored. New keys get a serde default so existing files keep working.

mod error;
mod locate;
pub mod mm2;
mod security;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

pub use error::{ConfigError, Problem};
pub use security::{Expanded, SaslConfig, SaslMechanism, Secret, SecurityConfig, TlsConfig};
pub(crate) use validate::regex_error_reason;

/// A whole kferry configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Clusters by alias. The alias names the cluster in flows, and with the `prefix`
    /// policy it becomes part of remote topic names.
    // Defaulted so that a file without the key gets "no clusters defined" together with
    // every other problem, instead of serde stopping at "missing key".
    #[serde(default, deserialize_with = "unique_keys")]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Replication flows, each copying topics from one cluster to another.
    #[serde(default)]
    pub flows: Vec<FlowConfig>,
    /// The HTTP listener of `/metrics`, `/healthz` and `/readyz`; off unless `listen` is set.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How log lines are written; `KFERRY_LOG_FORMAT` overrides `format`.
    #[serde(default)]
    pub log: LogConfig,
    /// Several `kferry run` processes sharing the flows' shards through a group on one
    /// cluster; absent: this process replicates every shard alone.
    #[serde(default)]
    pub group: Option<GroupConfig>,
}

/// The group several `kferry run` processes with the same configuration form (as Kafka
/// Connect's distributed workers do with `group.id`): each process replicates the shards
/// the group's leader assigns it, and topic and group-offset sync run on the leader only.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// The group's id on `cluster` (Connect's `group.id`).
    pub id: String,
    /// Alias of the cluster the group lives on: a target of the flows (the one that stays
    /// up when the source's region is lost).
    pub cluster: String,
    /// A stable name for this process (Kafka's `group.instance.id`, KIP-345), e.g. a pod
    /// name: a process restarted within `session_timeout_ms` gets its shards back without
    /// a rebalance. Absent: a dynamic member, which leaves the group when it stops.
    /// `${NAME}` takes an environment variable (`${HOSTNAME}` in a StatefulSet).
    #[serde(default)]
    pub instance_id: Option<Expanded>,
    /// How long the group waits for a silent process before its shards move to the others
    /// (Kafka's `session.timeout.ms`; the broker allows 6000 to 1800000 by default).
    #[serde(default = "session_timeout_ms")]
    pub session_timeout_ms: u32,
}

fn session_timeout_ms() -> u32 {
    10_000
}

/// kferry's log lines (always on standard error; which ones, `KFERRY_LOG` says).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Plain text for people, or one JSON object per line for a log pipeline.
    #[serde(default)]
    pub format: LogFormat,
}

/// How each log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message, `key=value` fields
    /// (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// own fields (`flow`, `topic`, `partition`, ...) beside them, never coloured.
    Json,
}

impl LogFormat {
    /// The names a config file or `KFERRY_LOG_FORMAT` may give.
    pub const NAMES: [&'static str; 2] = ["text", "json"];

    /// The format named `name` (as in the config file), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Prometheus metrics and health endpoints of `kferry run`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` to serve on, e.g. `0.0.0.0:9464`; absent: no listener.
    #[serde(default)]
    pub listen: Option<String>,
    /// Series per source partition (lag, offsets, records); turn off for flows of many
    /// thousands of partitions, whose per-flow totals stay.
    #[serde(default = "yes")]
    pub per_partition: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: None, per_partition: true }
    }
}

/// How to reach one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` of brokers to ask for cluster metadata; one reachable broker is enough.
    pub bootstrap_servers: Vec<String>,
    /// TLS and SASL; absent: plaintext without authentication.
    #[serde(default)]
    pub security: SecurityConfig,
    /// The client id in kferry's requests to this cluster: what broker quotas
    /// (`producer_byte_rate`, `consumer_byte_rate` for a client id) and request logs see.
    #[serde(default = "client_id")]
    pub client_id: String,
}

fn client_id() -> String {
    "kferry".to_owned()
}

/// One replication flow: which topics of `source` are copied to `target`, and how they
/// are named there.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Alias of the cluster records are read from.
    pub source: String,
    /// Alias of the cluster records are written to.
    pub target: String,
    /// Regexes, each matched against the whole topic name; a topic is copied if any
    /// matches (and no `topics_exclude` does).
    #[serde(default = "all_topics")]
    pub topics: Vec<String>,
    /// Regexes, each matched against the whole topic name; a match is never copied.
    #[serde(default)]
    pub topics_exclude: Vec<String>,
    /// How a source topic is named on the target.
    #[serde(default)]
    pub policy: ReplicationPolicy,
    /// Goes between the source alias and the topic name with the `prefix` policy.
    #[serde(default = "dot")]
    pub separator: String,
    /// Replication factor of the topics kferry creates on the target; absent: the target
    /// cluster's `default.replication.factor`.
    #[serde(default)]
    pub replication_factor: Option<i16>,
    /// Copy topic config overrides from source to target and keep them in sync (MM2's
    /// `sync.topic.configs.enabled`).
    #[serde(default = "yes")]
    pub sync_topic_configs: bool,
    /// Topic configs never copied (regexes, whole name), on top of the built-in list in
    /// `topics::plan::ALWAYS_EXCLUDED_CONFIGS` (MM2's `config.properties.exclude`).
    #[serde(default)]
    pub topic_configs_exclude: Vec<String>,
    /// Copy LITERAL topic ACLs from source to target (MM2's `sync.topic.acls.enabled`, on by
    /// default there; opt-in here because it needs describe rights on the source's ACLs).
    #[serde(default)]
    pub sync_topic_acls: bool,
    /// Seconds between two rounds of topic discovery and sync (MM2's
    /// `refresh.topics.interval.seconds`, 600 there).
    #[serde(default = "ten")]
    pub refresh_topics_interval_seconds: u64,
    /// How records reach the target.
    #[serde(default)]
    pub delivery: Delivery,
    /// Where a partition without recorded progress starts.
    #[serde(default)]
    pub start: StartPosition,
    /// What a partition does when its source was reset under kferry: the topic deleted and
    /// recreated (a new topic id, offsets from 0 again) or its log truncated below kferry's
    /// position (an unclean leader election).
    #[serde(default)]
    pub on_source_reset: OnSourceReset,
    /// Bytes of records the flow holds in memory at once (fetched and being produced),
    /// whatever the number of partitions.
    #[serde(default = "buffer_bytes")]
    pub buffer_bytes: u64,
    /// Bytes per second the flow fetches from its source at most, over all its partitions
    /// (record batches as stored there); absent: as fast as the clusters allow. Keeps a
    /// catch-up from saturating a WAN link or the source brokers.
    #[serde(default)]
    pub max_bytes_per_second: Option<u64>,
    /// Replicators the flow's partitions are split over, each with its own transactional
    /// id, so that a transaction that cannot end holds back only its shard's partitions
    /// (`buffer_bytes` and `max_bytes_per_second` are shared evenly). Fixed for a flow's
    /// life: its state on the target is laid out by it.
    #[serde(default = "one")]
    pub shards: u16,
    /// Translate the committed offsets of the source's consumer groups and commit them on
    /// the target (MM2's `sync.group.offsets.enabled`, off by default there), and write
    /// MM2-format checkpoints.
    #[serde(default = "yes")]
    pub sync_group_offsets: bool,
    /// Regexes, each matched against the whole group id; a group is synced if any matches
    /// (and no `groups_exclude` does). kferry's own groups are never synced.
    #[serde(default = "all_groups")]
    pub groups: Vec<String>,
    /// Regexes, each matched against the whole group id; a match is never synced.
    #[serde(default)]
    pub groups_exclude: Vec<String>,
    /// Seconds between two group-offset sync rounds (MM2's
    /// `sync.group.offsets.interval.seconds`, 60 there).
    #[serde(default = "five")]
    pub sync_group_offsets_interval_seconds: u64,
}

fn one() -> u16 {
    1
}

/// 256 MiB.
fn buffer_bytes() -> u64 {
    256 * 1024 * 1024
}

/// How a flow writes records to its target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Every record exactly once for read_committed consumers of the target: records and
    /// progress are committed in one transaction.
    #[default]
    ExactlyOnce,
    /// Every record at least once (an idempotent producer; a restart may repeat the last
    /// records), for targets that cannot do transactions.
    AtLeastOnce,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExactlyOnce => "exactly_once",
            Self::AtLeastOnce => "at_least_once",
        })
    }
}

/// What a partition does when its source was reset (recreated, or truncated below
/// kferry's position).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSourceReset {
    /// The partition stops with an error naming the offsets; an operator decides.
    #[default]
    Fail,
    /// The partition starts again from the source's log start (records already on the
    /// target stay; the new ones follow them).
    RestartFromLogStart,
}

impl fmt::Display for OnSourceReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fail => "fail",
            Self::RestartFromLogStart => "restart_from_log_start",
        })
    }
}

/// Where a partition starts when kferry has no progress recorded for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// The log start (MM2's only choice).
    #[default]
    Earliest,
    /// The end: only records written from now on.
    Latest,
    /// The first record at or after this time (milliseconds since the Unix epoch).
    Timestamp(i64),
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            other => parse_rfc3339_millis(other).map(Self::Timestamp).ok_or_else(|| {
                de::Error::custom(format!(
                    "\"{other}\" is not a start position; allowed: earliest, latest, or an RFC 3339 time like 2026-01-31T12:00:00Z"
                ))
            }),
        }
    }
}

/// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)`.
fn parse_rfc3339_millis(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (parts.next()??, parts.next()??, parts.next()??);
    let millis = format!("{fraction:0<3}").get(..3)?.parse::<i64>().ok()?;
    let offset_minutes = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
        }
    };
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 61;
    valid.then_some(())?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

impl FlowConfig {
    /// A flow from `source` to `target` with every other key at its default, as a config
    /// file naming only those two keys would give.
    pub fn between(source: &str, target: &str) -> Self {
        Self {
            source: source.to_owned(),
            target: target.to_owned(),
            topics: all_topics(),
            topics_exclude: Vec::new(),
            policy: ReplicationPolicy::default(),
            separator: dot(),
            replication_factor: None,
            sync_topic_configs: yes(),
            topic_configs_exclude: Vec::new(),
            sync_topic_acls: false,
            refresh_topics_interval_seconds: ten(),
            delivery: Delivery::default(),
            start: StartPosition::default(),
            on_source_reset: OnSourceReset::default(),
            buffer_bytes: buffer_bytes(),
            max_bytes_per_second: None,
            shards: one(),
            sync_group_offsets: yes(),
            groups: all_groups(),
            groups_exclude: Vec::new(),
            sync_group_offsets_interval_seconds: five(),
        }
    }

    /// The flow's name in messages and logs, like `primary->secondary`.
    pub fn name(&self) -> String {
        format!("{}->{}", self.source, self.target)
    }
}

/// How a flow names its topics on the target cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationPolicy {
    /// Same name as on the source (MM2's `IdentityReplicationPolicy`). The default,
    /// unlike MM2's: kferry's first use is disaster recovery, where clients must find the
    /// same topic names after failover.
    #[default]
    Identity,
    /// `<source alias><separator><topic>` (MM2's `DefaultReplicationPolicy`), which
    /// lets flows run both ways (active-active) without copying topics back.
    Prefix,
}

impl fmt::Display for ReplicationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Identity => "identity",
            Self::Prefix => "prefix",
        })
    }
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read, otherwise as [`Config::parse`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration `text`; `origin` (usually the file name) starts
    /// every error message.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] for the first syntax or schema error (unknown key, wrong
    /// type, missing key), else [`ConfigError::Invalid`] listing every failed check.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = serde_norway::from_str(text).map_err(|err| ConfigError::Parse {
            origin: origin.to_owned(),
            problem: error::parse_problem(&err, text),
        })?;
        let problems = validate::problems(&config, text);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { origin: origin.to_owned(), problems })
        }
    }
}

fn yes() -> bool {
    true
}

fn ten() -> u64 {
    10
}

fn five() -> u64 {
    5
}

fn all_groups() -> Vec<String> {
    vec![".*".to_owned()]
}

fn all_topics() -> Vec<String> {
    vec![".*".to_owned()]
}

fn dot() -> String {
    ".".to_owned()
}

/// Deserializes a mapping, refusing a key given twice (a plain `BTreeMap` would keep the
/// last one and drop the first without a word).
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of names to settings")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value()?;
                if out.contains_key(&key) {
                    return Err(de::Error::custom(error::duplicate_key_message(&key)));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(UniqueKeys(PhantomData))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod time_tests {
    use super::parse_rfc3339_millis;

    #[test]
    fn parses_rfc3339_times() {
        assert_eq!(parse_rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_millis("2026-01-31T12:00:00.5Z"), Some(1_769_860_800_500));
        assert_eq!(parse_rfc3339_millis("2026-01-31T14:00:00+02:00"), Some(1_769_860_800_000));
        assert_eq!(parse_rfc3339_millis("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-01-31", "2026-01-31T12:00:00"] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }
}
