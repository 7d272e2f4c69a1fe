use std::sync::LazyLock;

use regex::Regex;

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

/// Every series name and the labels its samples carry, from an exposition of a registry
/// with one flow whose every family has samples (a partition, an error, ...). Histograms
/// give `_bucket` (with `le`), `_sum` and `_count`, never their bare name.
fn exposed_series() -> std::collections::BTreeMap<String, Vec<std::collections::BTreeMap<String, String>>> {
    let registry = Registry::new(true);
    let flow = registry.flow("a->b", "a", "b", 1024);
    flow.set_state(FlowState::Replicating, None);
    flow.replicated(BatchPath::Fast, 1, 10, 100);
    flow.partition("orders", 0).replicated(10, 100);
    flow.partition("orders", 0).set(10, 12, 500, PartitionPhase::Replicating);
    flow.latencies(&[(20, 10)]);
    flow.round(0.03);
    flow.transaction(true);
    flow.error(Side::Target, "NOT_LEADER_OR_FOLLOWER");
    flow.set_connections(Side::Source, vec![super::BrokerConnections { broker: "1".into(), opened: 2, failed: 1 }]);
    registry.membership("kferry-dr").assigned(3, true, 2);
    let text = registry.render();
    let sample = Regex::new(r#"^([a-z_]+)(?:\{(.*)\})? \S+$"#).unwrap();
    let label = Regex::new(r#"([a-z_]+)="((?:[^"\\]|\\.)*)""#).unwrap();
    let mut series: std::collections::BTreeMap<String, Vec<_>> = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let caps = sample.captures(line).unwrap_or_else(|| panic!("not a sample line: {line}"));
        let labels = label
            .captures_iter(caps.get(2).map_or("", |m| m.as_str()))
            .map(|l| (l[1].to_owned(), l[2].to_owned()))
            .collect();
        series.entry(caps[1].to_owned()).or_default().push(labels);
    }
    assert!(series.contains_key("kferry_process_resident_memory_bytes"), "no RSS on this platform:\n{text}");
    series
}

/// Checks that `expr` uses only series kferry exposes, each selector only labels (and
/// label values, where matched exactly) its samples carry, and every `by (...)` and
/// legend `{{label}}` a label of one of its series (or one Prometheus adds at scrape).
fn check_expr(
    series: &std::collections::BTreeMap<String, Vec<std::collections::BTreeMap<String, String>>>,
    where_: &str,
    expr: &str,
    legend: &str,
) -> usize {
    static SELECTOR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(kferry_[a-z_]+)(?:\{([^}]*)\})?").unwrap());
    static MATCHER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)""#).unwrap());
    static GROUPING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap());
    static LEGEND: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\{\{\s*([a-z_]+)\s*\}\}").unwrap());
    let (selector, matcher, grouping, legend_label) = (&*SELECTOR, &*MATCHER, &*GROUPING, &*LEGEND);
    let mut labels: std::collections::BTreeSet<&str> = ["instance", "job"].into();
    let mut names = 0;
    for caps in selector.captures_iter(expr) {
        let name = &caps[1];
        let samples = series.get(name).unwrap_or_else(|| panic!("{where_}: {name} is not exposed by kferry: {expr}"));
        labels.extend(samples.iter().flat_map(|s| s.keys().map(String::as_str)));
        for m in matcher.captures_iter(caps.get(2).map_or("", |m| m.as_str())) {
            let (key, op, value) = (&m[1], &m[2], &m[3]);
            assert!(samples.iter().any(|s| s.contains_key(key)), "{where_}: {name} has no label {key}: {expr}");
            if op == "=" || op == "!=" {
                let known = samples.iter().any(|s| s.get(key).map(String::as_str) == Some(value));
                assert!(known, "{where_}: {name} never has {key}=\"{value}\": {expr}");
            }
        }
        names += 1;
    }
    for caps in grouping.captures_iter(expr) {
        for key in caps[1].split(',').map(str::trim).filter(|k| !k.is_empty()) {
            assert!(labels.contains(key), "{where_}: no series here has label {key}: {expr}");
        }
    }
    for caps in legend_label.captures_iter(legend) {
        assert!(labels.contains(&caps[1]), "{where_}: legend {legend} names label {}, absent: {expr}", &caps[1]);
    }
    names
}

#[test]
fn the_grafana_dashboard_uses_only_exposed_series_and_labels() {
    let series = exposed_series();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../deploy/grafana/kferry-dashboard.json")).unwrap();
    let mut exprs = 0;
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let legend = target["legendFormat"].as_str().unwrap_or("");
            let title = panel["title"].as_str().unwrap();
            assert!(check_expr(&series, title, expr, legend) > 0, "{title}: no kferry series in {expr}");
            assert!(
                expr.contains("flow=~\"$flow\"") || !expr.contains("flow"),
                "{title}: not filtered by $flow: {expr}"
            );
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            exprs += 1;
        }
    }
    assert!(exprs > 30, "only {exprs} queries");
    let flow = &dashboard["templating"]["list"][1];
    assert_eq!(flow["name"], "flow");
    check_expr(&series, "the flow variable", flow["definition"].as_str().unwrap(), "");
    // Every family kferry exposes is on the dashboard, so a new metric is not forgotten.
    let family = |name: &str| -> String {
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
        match base {
            Some(base) if series.contains_key(&format!("{base}_bucket")) => base.to_owned(),
            _ => name.to_owned(),
        }
    };
    let used: std::collections::BTreeSet<String> = Regex::new(r"\bkferry_[a-z_]+")
        .unwrap()
        .find_iter(&dashboard.to_string())
        .map(|m| family(m.as_str()))
        .collect();
    let on_purpose = ["kferry_partition_replicated_offset", "kferry_partition_source_end_offset"];
    for name in series.keys().map(|n| family(n)) {
        assert!(used.contains(&name) || on_purpose.contains(&name.as_str()), "{name} is not on the dashboard");
    }
}

#[test]
fn the_example_alerts_use_only_exposed_series_and_labels() {
    let series = exposed_series();
    let rules: serde_norway::Value =
        serde_norway::from_str(include_str!("../../deploy/prometheus/kferry-alerts.yml")).unwrap();
    let label_reference = Regex::new(r"\$labels\.([a-z_]+)").unwrap();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let expr = rule["expr"].as_str().unwrap();
            let summary = rule["annotations"]["summary"].as_str().unwrap();
            let legend = label_reference.replace_all(summary, "{{$1}}");
            assert!(check_expr(&series, name, expr, &legend) > 0, "{name}: no kferry series in {expr}");
            alerts += 1;
        }
    }
    assert!(alerts >= 8, "{alerts} alerts");
}
