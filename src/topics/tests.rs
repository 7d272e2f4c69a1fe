use super::*;

fn flow(topics: &[&str], exclude: &[&str]) -> FlowConfig {
    FlowConfig {
        topics: topics.iter().map(|s| (*s).to_owned()).collect(),
        topics_exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
        ..FlowConfig::between("primary", "secondary")
    }
}

fn filter(topics: &[&str], exclude: &[&str]) -> TopicFilter {
    match TopicFilter::new(&flow(topics, exclude)) {
        Ok(filter) => filter,
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn all_topics_selects_data_topics_users_copy() {
    let all = filter(&[".*"], &[]);
    let selected = [
        "orders",
        "_schemas",
        "_confluent-command",
        "connect-offsets",
        "connect-configs",
        "connect-status",
        "app-store-changelog",
        "app-store-repartition",
        "primary.orders",
        "orders-internal",
        "orders.internal",
        "app.events.internal",
        "mm2-orders",
        "heartbeats-v2",
        "a",
    ];
    for topic in selected {
        assert!(all.selects(topic), "{topic} should be selected");
    }
}

#[test]
fn internal_topics_are_never_selected() {
    let all = filter(&[".*", "__consumer_offsets", "__.*", ".*internal", "heartbeats"], &[]);
    let never = [
        "__consumer_offsets",
        "__transaction_state",
        "__cluster_metadata",
        "__anything",
        "__kferry.offset-map",
        "mm2-offset-syncs.secondary.internal",
        "primary.checkpoints.internal",
        "mm2-configs.primary.internal",
        "mm2-offsets.primary.internal",
        "mm2-status.primary.internal",
        "heartbeats",
        "primary.heartbeats",
        "secondary.primary.heartbeats",
    ];
    for topic in never {
        assert!(!all.selects(topic), "{topic} should never be selected");
    }
    assert!(!all.selects(&format!("{STATE_TOPIC_PREFIX}progress")));
}

#[test]
fn patterns_match_the_whole_name() {
    let cases: &[(&[&str], &[&str], &str, bool)] = &[
        (&["orders"], &[], "orders", true),
        (&["orders"], &[], "orders-dlq", false),
        (&["orders"], &[], "old-orders", false),
        (&["orders|payments"], &[], "payments", true),
        (&["orders|payments"], &[], "orders-payments", false),
        (&["a", "b.*"], &[], "bee", true),
        (&["a", "b.*"], &[], "ab", false),
        (&["(?i)ORDERS"], &[], "orders", true),
        (&[".*"], &["test-.*"], "test-1", false),
        (&[".*"], &["test-.*"], "my-test-1", true),
        (&[".*"], &["test"], "test-1", true),
        (&[".*"], &["_schemas"], "_schemas", false),
        (&[], &[], "orders", false),
    ];
    for (topics, exclude, topic, want) in cases {
        let got = filter(topics, exclude).selects(topic);
        assert_eq!(got, *want, "topics {topics:?} exclude {exclude:?} on {topic}");
    }
}

#[test]
fn invalid_patterns_are_errors_not_panics() {
    for (pattern, reason) in [("a(", "unclosed group"), ("a)|(b", "unopened group")] {
        match TopicFilter::new(&flow(&[".*"], &[pattern])) {
            Ok(_) => panic!("{pattern} accepted"),
            Err(err) => assert_eq!(
                err.to_string(),
                format!("flow primary->secondary: invalid topic regex \"{pattern}\": {reason}")
            ),
        }
    }
}

#[test]
fn identity_keeps_the_name() {
    for topic in ["orders", "secondary.orders", "primary.orders", "_schemas"] {
        let name = target_topic_name(ReplicationPolicy::Identity, "primary", "secondary", ".", topic);
        assert_eq!(name.as_deref(), Some(topic));
    }
}

#[test]
fn prefix_names_and_cycle_prevention() {
    let cases = [
        // (source, target, separator, topic, expected)
        ("primary", "secondary", ".", "orders", Some("primary.orders")),
        ("primary", "secondary", ".", "primary.orders", Some("primary.primary.orders")),
        ("primary", "secondary", ".", "_schemas", Some("primary._schemas")),
        ("primary", "secondary", ".", "orders.v1", Some("primary.orders.v1")),
        ("primary", "secondary", ".", "secondaryorders", Some("primary.secondaryorders")),
        ("primary", "secondary", ".", "secondary", Some("primary.secondary")),
        ("primary", "secondary", "_", "secondary.orders", Some("primary_secondary.orders")),
        // Came from the target: active-active does not send it back.
        ("primary", "secondary", ".", "secondary.orders", None),
        ("primary", "secondary", "_", "secondary_orders", None),
        ("primary", "secondary", "--", "secondary--orders", None),
        // Deeper in a chain (a ring of three clusters), as MM2's isCycle finds it.
        ("primary", "secondary", ".", "third.secondary.orders", None),
        ("primary", "secondary", ".", "third.fourth.orders", Some("primary.third.fourth.orders")),
        // Looks remote: held back as MM2 does.
        ("primary", "secondary", ".", "app.secondary.v1", None),
        ("primary", "secondary", ".", "secondary.", None),
    ];
    for (source, target, separator, topic, want) in cases {
        let got = target_topic_name(ReplicationPolicy::Prefix, source, target, separator, topic);
        assert_eq!(got.as_deref(), want, "{source}->{target} sep {separator:?}: {topic}");
    }
}

#[test]
fn empty_separator_does_not_panic() {
    let got = target_topic_name(ReplicationPolicy::Prefix, "primary", "secondary", "", "orders");
    assert_eq!(got.as_deref(), Some("primaryorders"));
    let got = target_topic_name(ReplicationPolicy::Prefix, "primary", "secondary", "", "secondaryx");
    assert_eq!(got, None);
}
