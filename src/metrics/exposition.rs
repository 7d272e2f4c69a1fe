//! The Prometheus text exposition format (version 0.0.4) of a [`Registry`]: one family
//! (HELP, TYPE, samples) per metric name, every flow's samples in it, labels escaped.
//! Names follow Prometheus' conventions: `kferry_` prefix, `_total` on counters, seconds
//! and bytes as units.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::histogram::LATENCY_BUCKETS;
use super::{lock, BatchPath, FlowMetrics, FlowState, PartitionMetrics, PartitionPhase, Registry, RoundStep, Side};

/// Escapes a label value: backslash, double quote and newline.
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Builds the text, one family at a time.
struct Text {
    out: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A histogram's buckets (upper bound, cumulative count), +Inf, sum and count.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], buckets: &[(f64, u64)], count: u64, sum: f64) {
        let bucket = format!("{name}_bucket");
        for (bound, cumulative) in buckets {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, cumulative);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, count);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// A per-flow counter family.
fn counter(
    text: &mut Text,
    flows: &[std::sync::Arc<FlowMetrics>],
    name: &str,
    help: &str,
    value: impl Fn(&FlowMetrics) -> u64,
) {
    text.family(name, "counter", help);
    for flow in flows {
        text.sample(name, &[("flow", &flow.name)], value(flow));
    }
}

/// The process's place in its group of kferry processes.
fn membership(text: &mut Text, member: &super::MembershipMetrics) {
    let labels = [("group", member.group.as_str())];
    let gauges = [
        (
            "kferry_group_generation",
            "The group generation of this process's assignment; -1 while it has none.",
            member.generation.load(Ordering::Relaxed),
        ),
        (
            "kferry_group_leader",
            "1 while this process leads its group (and runs topic and group-offset sync).",
            i64::from(member.leader.load(Ordering::Relaxed)),
        ),
        (
            "kferry_group_shards",
            "Shards this process replicates, over every flow.",
            member.shards.load(Ordering::Relaxed) as i64,
        ),
    ];
    for (name, help, value) in gauges {
        text.family(name, "gauge", help);
        text.sample(name, &labels, value);
    }
    text.family(
        "kferry_group_rebalances_total",
        "counter",
        "Assignments this process received: one per group generation it joined.",
    );
    text.sample("kferry_group_rebalances_total", &labels, member.rebalances.load(Ordering::Relaxed));
}

pub(super) fn render(registry: &Registry) -> String {
    let flows = registry.flows();
    let mut text = Text { out: String::with_capacity(4096) };
    let partitions: Vec<Partitions> = flows.iter().map(|f| f.partitions()).collect();

    text.family("kferry_build_info", "gauge", "kferry's version; always 1.");
    text.sample("kferry_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    if let Some(bytes) = super::resident_bytes() {
        text.family("kferry_process_resident_memory_bytes", "gauge", "Resident memory of the kferry process.");
        text.sample("kferry_process_resident_memory_bytes", &[], bytes);
    }

    text.family(
        "kferry_flow_state",
        "gauge",
        "1 for the state each flow is in (connecting, starting, replicating, stopped).",
    );
    for flow in &flows {
        let current = flow.state();
        for state in FlowState::ALL {
            text.sample(
                "kferry_flow_state",
                &[("flow", &flow.name), ("state", state.name())],
                u8::from(state == current),
            );
        }
    }
    text.family("kferry_cluster_reachable", "gauge", "1 while kferry reaches the flow's cluster, 0 while it cannot.");
    for flow in &flows {
        for (side, role) in [(Side::Source, "source"), (Side::Target, "target")] {
            let labels = [("flow", flow.name.as_str()), ("cluster", flow.cluster(side)), ("role", role)];
            text.sample("kferry_cluster_reachable", &labels, u8::from(flow.reachable(side)));
        }
    }

    if let Some(member) = registry.member() {
        membership(&mut text, &member);
    }

    replicated(&mut text, registry.per_partition, &flows, &partitions);

    text.family("kferry_batches_replicated_total", "counter", "Batches committed on the target, by path: fast (header patched only), coalesced (small batches merged), rewritten (compacted or LogAppendTime).");
    for flow in &flows {
        for path in BatchPath::ALL {
            let value = flow.batches[path as usize].load(Ordering::Relaxed);
            text.sample("kferry_batches_replicated_total", &[("flow", &flow.name), ("path", path.name())], value);
        }
    }
    text.family(
        "kferry_transactions_total",
        "counter",
        "Transaction rounds on the target, by outcome (committed, aborted).",
    );
    for flow in &flows {
        for (outcome, counter) in [("committed", &flow.transactions_committed), ("aborted", &flow.transactions_aborted)]
        {
            text.sample(
                "kferry_transactions_total",
                &[("flow", &flow.name), ("outcome", outcome)],
                counter.load(Ordering::Relaxed),
            );
        }
    }
    counter(
        &mut text,
        &flows,
        "kferry_records_lost_total",
        "Source records deleted by retention before kferry copied them.",
        |f| f.records_lost.load(Ordering::Relaxed),
    );

    text.family(
        "kferry_round_duration_seconds",
        "histogram",
        "Duration of transaction rounds (produce, offset map, progress, commit).",
    );
    for flow in &flows {
        let (buckets, count, sum) = flow.rounds.snapshot();
        text.histogram("kferry_round_duration_seconds", &[("flow", &flow.name)], &buckets, count, sum);
    }
    text.family(
        "kferry_round_step_duration_seconds",
        "histogram",
        "Time transaction rounds spent per step: add_partitions (AddPartitionsToTxn), produce (the batches), offset_map (the state topic), progress (AddOffsetsToTxn and the offset commit), commit (EndTxn).",
    );
    for flow in &flows {
        for step in RoundStep::ALL {
            let (buckets, count, sum) = flow.round_steps[step as usize].snapshot();
            let labels = [("flow", flow.name.as_str()), ("step", step.name())];
            text.histogram("kferry_round_step_duration_seconds", &labels, &buckets, count, sum);
        }
    }
    text.family(
        "kferry_replication_latency_seconds",
        "histogram",
        "Per record: source timestamp (CreateTime or LogAppendTime) to the commit on the target.",
    );
    for flow in &flows {
        let latency = lock(&flow.latency);
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().map(|&b| (b, latency.at_most(b))).collect();
        text.histogram(
            "kferry_replication_latency_seconds",
            &[("flow", &flow.name)],
            &buckets,
            latency.count(),
            latency.sum_seconds(),
        );
    }

    lag(&mut text, registry.per_partition, &flows, &partitions);

    text.family(
        "kferry_errors_total",
        "counter",
        "Errors by cluster and Kafka error code (connection: the cluster could not be reached; other: no code).",
    );
    for flow in &flows {
        for ((cluster, code), count) in lock(&flow.errors).iter() {
            text.sample("kferry_errors_total", &[("flow", &flow.name), ("cluster", cluster), ("code", code)], count);
        }
    }
    text.family(
        "kferry_buffer_bytes",
        "gauge",
        "Bytes of records the flow holds (fetched, and in the round in flight).",
    );
    for flow in &flows {
        text.sample("kferry_buffer_bytes", &[("flow", &flow.name)], flow.buffer_bytes());
    }
    text.family("kferry_buffer_limit_bytes", "gauge", "The flow's buffer_bytes.");
    for flow in &flows {
        text.sample("kferry_buffer_limit_bytes", &[("flow", &flow.name)], flow.buffer_limit);
    }

    throttling(&mut text, &flows);
    connections(&mut text, &flows);
    group_sync(&mut text, &flows);
    topic_sync(&mut text, &flows);
    text.out
}

/// Connections per broker: a count that keeps rising is a connection that keeps breaking.
fn connections(text: &mut Text, flows: &[std::sync::Arc<FlowMetrics>]) {
    type Count = fn(&super::BrokerConnections) -> u64;
    let families: [(&str, &str, Count); 2] = [
        (
            "kferry_connections_opened_total",
            "Connections the flow opened to the broker: the first, then one per reconnect.",
            |c| c.opened,
        ),
        ("kferry_connection_failures_total", "Connection attempts to the broker that failed.", |c| c.failed),
    ];
    for (name, help, value) in families {
        text.family(name, "counter", help);
        for flow in flows {
            let connections = lock(&flow.connections).clone();
            for (side, role) in [(Side::Source, "source"), (Side::Target, "target")] {
                for broker in &connections[side as usize] {
                    let labels = [
                        ("flow", flow.name.as_str()),
                        ("cluster", flow.cluster(side)),
                        ("role", role),
                        ("broker", broker.broker.as_str()),
                    ];
                    text.sample(name, &labels, value(broker));
                }
            }
        }
    }
}

/// Time kferry waited for its own rate limit and for the brokers' quotas.
fn throttling(text: &mut Text, flows: &[std::sync::Arc<FlowMetrics>]) {
    let seconds = |millis: &std::sync::atomic::AtomicU64| millis.load(Ordering::Relaxed) as f64 / 1000.0;
    text.family(
        "kferry_rate_limited_seconds_total",
        "counter",
        "Time the flow's fetches were held back by its max_bytes_per_second.",
    );
    for flow in flows {
        text.sample("kferry_rate_limited_seconds_total", &[("flow", &flow.name)], flow.rate_limited_seconds());
    }
    text.family(
        "kferry_quota_throttle_seconds_total",
        "counter",
        "Throttle time the cluster's brokers asked for (client quotas, throttle_time_ms); kferry's requests to them waited as long.",
    );
    for flow in flows {
        for (side, role) in [(Side::Source, "source"), (Side::Target, "target")] {
            let labels = [("flow", flow.name.as_str()), ("cluster", flow.cluster(side)), ("role", role)];
            text.sample(
                "kferry_quota_throttle_seconds_total",
                &labels,
                seconds(&flow.quota_throttle_millis[side as usize]),
            );
        }
    }
}

type Partitions = Vec<((String, i32), std::sync::Arc<PartitionMetrics>)>;
/// A per-flow counter: its name, help and how to read it.
type FlowCounter = (&'static str, &'static str, fn(&FlowMetrics) -> u64);

fn replicated(text: &mut Text, per_partition: bool, flows: &[std::sync::Arc<FlowMetrics>], partitions: &[Partitions]) {
    type Families = [(&'static str, &'static str, fn(&FlowMetrics) -> u64, fn(&PartitionMetrics) -> u64); 2];
    let families: Families = [
        (
            "kferry_records_replicated_total",
            "Records committed on the target.",
            |f| f.records.load(Ordering::Relaxed),
            |p| p.records.load(Ordering::Relaxed),
        ),
        (
            "kferry_bytes_replicated_total",
            "Bytes of record batches committed on the target.",
            |f| f.bytes.load(Ordering::Relaxed),
            |p| p.bytes.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, flow_value, partition_value) in families {
        text.family(name, "counter", help);
        for (flow, partitions) in flows.iter().zip(partitions) {
            if !per_partition {
                text.sample(name, &[("flow", &flow.name)], flow_value(flow));
                continue;
            }
            for ((topic, partition), metrics) in partitions {
                let partition = partition.to_string();
                let labels = [("flow", flow.name.as_str()), ("topic", topic), ("partition", &partition)];
                text.sample(name, &labels, partition_value(metrics));
            }
        }
    }
}

fn lag(text: &mut Text, per_partition: bool, flows: &[std::sync::Arc<FlowMetrics>], partitions: &[Partitions]) {
    text.family("kferry_lag_records", "gauge", "Records on the source (up to its last stable offset) not yet committed on the target, summed over the flow's partitions.");
    for (flow, partitions) in flows.iter().zip(partitions) {
        let sum: i64 = partitions.iter().filter(|(_, p)| p.active()).map(|(_, p)| p.lag_records()).sum();
        text.sample("kferry_lag_records", &[("flow", &flow.name)], sum);
    }
    text.family(
        "kferry_lag_seconds",
        "gauge",
        "Age of the oldest source record not yet replicated (since kferry first saw it), worst partition of the flow.",
    );
    for (flow, partitions) in flows.iter().zip(partitions) {
        let worst =
            partitions.iter().filter(|(_, p)| p.active()).map(|(_, p)| p.lag_millis.load(Ordering::Relaxed)).max();
        text.sample("kferry_lag_seconds", &[("flow", &flow.name)], worst.unwrap_or(0) as f64 / 1000.0);
    }
    text.family(
        "kferry_partitions",
        "gauge",
        "Replicated partitions by state (replicating, waiting_for_leader, stalled) and reason.",
    );
    for (flow, partitions) in flows.iter().zip(partitions) {
        for phase in PartitionPhase::ALL {
            let count = partitions.iter().filter(|(_, p)| p.active() && p.phase() == phase).count();
            let labels = [("flow", flow.name.as_str()), ("state", phase.state()), ("reason", phase.reason())];
            text.sample("kferry_partitions", &labels, count);
        }
    }
    if !per_partition {
        return;
    }
    type Gauge = fn(&PartitionMetrics) -> String;
    let gauges: [(&str, &str, Gauge); 4] = [
        ("kferry_partition_lag_records", "Records of the partition not yet committed on the target.", |p| {
            p.lag_records().to_string()
        }),
        ("kferry_partition_lag_seconds", "Age of the partition's oldest record not yet replicated.", |p| {
            (p.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0).to_string()
        }),
        ("kferry_partition_replicated_offset", "The next source offset committed on the target.", |p| {
            p.replicated.load(Ordering::Relaxed).to_string()
        }),
        ("kferry_partition_source_end_offset", "The source's last stable offset as kferry last saw it.", |p| {
            p.source_end.load(Ordering::Relaxed).to_string()
        }),
    ];
    for (name, help, value) in gauges {
        text.family(name, "gauge", help);
        for (flow, partitions) in flows.iter().zip(partitions) {
            for ((topic, partition), metrics) in partitions.iter().filter(|(_, p)| p.active()) {
                let partition = partition.to_string();
                let labels = [("flow", flow.name.as_str()), ("topic", topic), ("partition", &partition)];
                text.sample(name, &labels, value(metrics));
            }
        }
    }
}

fn group_sync(text: &mut Text, flows: &[std::sync::Arc<FlowMetrics>]) {
    let counters: [FlowCounter; 6] = [
        ("kferry_group_sync_rounds_total", "Group offset sync rounds that completed.", |f| {
            f.groups.rounds.load(Ordering::Relaxed)
        }),
        ("kferry_group_sync_groups_total", "Source groups synced (summed over rounds).", |f| {
            f.groups.groups_synced.load(Ordering::Relaxed)
        }),
        ("kferry_group_sync_offsets_committed_total", "Translated group offsets committed on the target.", |f| {
            f.groups.offsets_committed.load(Ordering::Relaxed)
        }),
        (
            "kferry_group_sync_groups_skipped_total",
            "Groups left alone because they have members on the target (summed over rounds).",
            |f| f.groups.groups_skipped.load(Ordering::Relaxed),
        ),
        ("kferry_group_sync_checkpoints_total", "MM2-format checkpoint records written.", |f| {
            f.groups.checkpoints.load(Ordering::Relaxed)
        }),
        ("kferry_group_sync_errors_total", "Group offset sync rounds that failed.", |f| {
            f.groups.errors.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, value) in counters {
        counter(text, flows, name, help, value);
    }
    text.family(
        "kferry_group_sync_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last group offset sync round that completed (0: none yet); time() minus it is how old the group offsets on the target may be.",
    );
    for flow in flows {
        let millis = flow.groups.last_success_unix_millis.load(Ordering::Relaxed);
        text.sample(
            "kferry_group_sync_last_success_timestamp_seconds",
            &[("flow", &flow.name)],
            millis as f64 / 1000.0,
        );
    }
}

fn topic_sync(text: &mut Text, flows: &[std::sync::Arc<FlowMetrics>]) {
    let counters: [FlowCounter; 7] = [
        ("kferry_topic_sync_rounds_total", "Topic sync rounds that completed.", |f| {
            f.topics.rounds.load(Ordering::Relaxed)
        }),
        ("kferry_topics_created_total", "Topics created on the target.", |f| {
            f.topics.topics_created.load(Ordering::Relaxed)
        }),
        ("kferry_topic_partitions_added_total", "Partition increases applied on the target.", |f| {
            f.topics.partitions_added.load(Ordering::Relaxed)
        }),
        ("kferry_topic_configs_changed_total", "Topic config changes applied on the target.", |f| {
            f.topics.configs_changed.load(Ordering::Relaxed)
        }),
        ("kferry_topic_acls_created_total", "Topic ACLs created on the target.", |f| {
            f.topics.acls_created.load(Ordering::Relaxed)
        }),
        ("kferry_topic_sync_changes_failed_total", "Topic changes the target refused.", |f| {
            f.topics.changes_failed.load(Ordering::Relaxed)
        }),
        ("kferry_topic_sync_errors_total", "Topic sync rounds that failed.", |f| {
            f.topics.errors.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, value) in counters {
        counter(text, flows, name, help, value);
    }
    text.family(
        "kferry_topic_conflicts",
        "gauge",
        "Source topics not replicated because of a conflict on the target, as of the last topic sync round.",
    );
    for flow in flows {
        text.sample("kferry_topic_conflicts", &[("flow", &flow.name)], flow.topics.conflicts.load(Ordering::Relaxed));
    }
}
