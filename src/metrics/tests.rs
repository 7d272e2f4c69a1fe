use super::{BatchPath, FlowState, PartitionPhase, Probe, Registry, Side};

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
}

#[test]
fn exposes_counters_histograms_and_partition_series() {
    let registry = Registry::new(true);
    let flow = registry.flow("a->b", "a", "b", 1024);
    flow.set_state(FlowState::Replicating, None);
    flow.replicated(BatchPath::Fast, 2, 30, 4096);
    flow.replicated(BatchPath::Coalesced, 1, 10, 100);
    flow.partition("orders", 0).replicated(40, 4196);
    flow.partition("orders", 0).set(40, 50, 1_500, PartitionPhase::Replicating);
    flow.latencies(&[(20, 30), (2_000, 10)]);
    flow.round(0.03);
    flow.transaction(true);
    flow.error(Side::Target, "NOT_LEADER_OR_FOLLOWER");
    let text = registry.render();
    assert_eq!(
        line(&text, "kferry_records_replicated_total{"),
        r#"kferry_records_replicated_total{flow="a->b",topic="orders",partition="0"} 40"#
    );
    assert_eq!(
        line(&text, "kferry_batches_replicated_total{flow=\"a->b\",path=\"coalesced\"}"),
        r#"kferry_batches_replicated_total{flow="a->b",path="coalesced"} 1"#
    );
    assert_eq!(
        line(&text, "kferry_replication_latency_seconds_bucket{flow=\"a->b\",le=\"0.025\"}"),
        r#"kferry_replication_latency_seconds_bucket{flow="a->b",le="0.025"} 30"#
    );
    assert_eq!(
        line(&text, "kferry_replication_latency_seconds_bucket{flow=\"a->b\",le=\"+Inf\"}"),
        r#"kferry_replication_latency_seconds_bucket{flow="a->b",le="+Inf"} 40"#
    );
    assert_eq!(
        line(&text, "kferry_replication_latency_seconds_sum"),
        r#"kferry_replication_latency_seconds_sum{flow="a->b"} 20.6"#
    );
    assert_eq!(
        line(&text, "kferry_round_duration_seconds_bucket{flow=\"a->b\",le=\"0.05\"}"),
        r#"kferry_round_duration_seconds_bucket{flow="a->b",le="0.05"} 1"#
    );
    assert_eq!(line(&text, "kferry_lag_records{"), r#"kferry_lag_records{flow="a->b"} 10"#);
    assert_eq!(
        line(&text, "kferry_partition_lag_seconds{"),
        r#"kferry_partition_lag_seconds{flow="a->b",topic="orders",partition="0"} 1.5"#
    );
    assert_eq!(
        line(&text, "kferry_errors_total{"),
        r#"kferry_errors_total{flow="a->b",cluster="b",code="NOT_LEADER_OR_FOLLOWER"} 1"#
    );
    assert_eq!(
        line(&text, "kferry_flow_state{flow=\"a->b\",state=\"replicating\"}"),
        r#"kferry_flow_state{flow="a->b",state="replicating"} 1"#
    );
    // One HELP and TYPE per family, whatever the number of flows.
    registry.flow("c->d", "c", "d", 1024);
    let text = registry.render();
    assert_eq!(text.matches("# TYPE kferry_lag_records gauge").count(), 1);
    assert!(text.contains(r#"kferry_lag_records{flow="c->d"} 0"#));
}

#[test]
fn per_partition_series_can_be_turned_off() {
    let registry = Registry::new(false);
    let flow = registry.flow("a->b", "a", "b", 1024);
    flow.replicated(BatchPath::Fast, 1, 7, 70);
    flow.partition("orders", 3).set(7, 9, 0, PartitionPhase::Replicating);
    let text = registry.render();
    assert_eq!(line(&text, "kferry_records_replicated_total{"), r#"kferry_records_replicated_total{flow="a->b"} 7"#);
    assert!(!text.contains("partition=\""), "{text}");
    assert_eq!(line(&text, "kferry_lag_records{"), r#"kferry_lag_records{flow="a->b"} 2"#);
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(super::exposition::escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
}

#[test]
fn readiness_names_what_is_wrong() {
    let registry = Registry::new(true);
    let flow = registry.flow("a->b", "a", "b", 1024);
    assert!(!registry.readiness().ready, "a connecting flow is not ready");
    flow.set_state(FlowState::Replicating, None);
    flow.partition("orders", 0).set(5, 5, 0, PartitionPhase::Replicating);
    assert!(registry.readiness().ready);
    flow.partition("orders", 1).set(0, 5, 0, PartitionPhase::TargetUnavailable);
    flow.set_unreachable(Side::Target, Probe::Produce, Some("cluster b: cannot connect".into()));
    flow.set_unreachable(Side::Target, Probe::TopicSync, None);
    let readiness = registry.readiness();
    assert!(!readiness.ready);
    let json = serde_json::to_value(&readiness).unwrap();
    assert_eq!(json["flows"][0]["unreachable_clusters"][0]["cluster"], "b");
    assert_eq!(json["flows"][0]["partitions"][0]["partition"], 1);
    assert_eq!(json["flows"][0]["partitions"][0]["reason"], "target_unavailable");
    assert!(registry.render().contains(r#"kferry_cluster_reachable{flow="a->b",cluster="b",role="target"} 0"#));
    flow.set_unreachable(Side::Target, Probe::TopicSync, None);
    assert!(!registry.readiness().ready, "only what found it unreachable clears it");
    flow.set_unreachable(Side::Target, Probe::Produce, None);
    flow.partition("orders", 1).deactivate();
    assert!(registry.readiness().ready, "a partition no longer replicated does not count");
    assert!(registry.health().healthy);
}
