use super::*;
use crate::config::ReplicationPolicy;

fn state(partitions: i32, overrides: &[(&str, &str)]) -> TopicState {
    let overrides: BTreeMap<String, String> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let cleanup_policy = overrides.get("cleanup.policy").cloned().unwrap_or_else(|| "delete".to_string());
    TopicState { partitions, overrides, cleanup_policy }
}

fn view(topics: &[(&str, TopicState)]) -> ClusterView {
    ClusterView { topics: topics.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(), acls: Vec::new() }
}

fn rules(policy: ReplicationPolicy) -> Rules {
    Rules::new(&FlowConfig { policy, ..FlowConfig::between("primary", "secondary") }).unwrap()
}

fn plan_of(rules: &Rules, source: &ClusterView, target: &ClusterView) -> Plan {
    plan(rules, source, target, &BTreeSet::new(), &BTreeSet::new())
}

#[test]
fn creates_missing_topics_with_partitions_and_copied_configs() {
    let source = view(&[
        (
            "orders",
            state(6, &[("cleanup.policy", "compact"), ("retention.ms", "123456789"), ("min.insync.replicas", "2")]),
        ),
        ("_schemas", state(1, &[])),
        ("__consumer_offsets", state(50, &[])),
    ]);
    let plan = plan_of(&rules(ReplicationPolicy::Prefix), &source, &ClusterView::default());
    let created: Vec<(&str, i32, Vec<&str>)> = plan
        .changes
        .iter()
        .map(|c| match c {
            Change::CreateTopic { topic, .. } => {
                (topic.name.as_str(), topic.partitions, topic.configs.keys().map(String::as_str).collect())
            }
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(
        created,
        [("primary._schemas", 1, vec![]), ("primary.orders", 6, vec!["cleanup.policy", "retention.ms"])],
        "min.insync.replicas is never copied, __* never replicated"
    );
    assert!(plan.notices.is_empty(), "{plan}");
}

#[test]
fn grows_partitions_and_syncs_configs_both_ways() {
    let source = view(&[("orders", state(8, &[("retention.ms", "1000"), ("segment.ms", "60000")]))]);
    let target = view(&[(
        "orders",
        state(6, &[("retention.ms", "5"), ("max.message.bytes", "2000"), ("min.insync.replicas", "3")]),
    )]);
    let plan = plan_of(&rules(ReplicationPolicy::Identity), &source, &target);
    let expected_configs = BTreeMap::from([
        ("max.message.bytes".to_string(), None),
        ("retention.ms".to_string(), Some("1000".to_string())),
        ("segment.ms".to_string(), Some("60000".to_string())),
    ]);
    assert_eq!(
        plan.changes,
        [
            Change::AddPartitions { topic: "orders".into(), from: 6, to: 8 },
            Change::AlterConfigs { topic: "orders".into(), changes: expected_configs },
        ],
        "the target's own min.insync.replicas is left alone"
    );
}

#[test]
fn in_sync_topic_needs_nothing() {
    let source = view(&[("orders", state(3, &[("retention.ms", "1000")]))]);
    let plan = plan_of(&rules(ReplicationPolicy::Identity), &source, &source.clone());
    assert!(plan.is_empty(), "{plan}");
    assert_eq!(plan.to_string(), "  nothing to change\n");
}

#[test]
fn conflicts_are_reported_and_leave_the_topic_alone() {
    let source = view(&[("a", state(3, &[])), ("b", state(3, &[("cleanup.policy", "compact")])), ("c", state(1, &[]))]);
    let target = view(&[("a", state(4, &[])), ("b", state(3, &[]))]);
    let plan = plan_of(&rules(ReplicationPolicy::Identity), &source, &target);
    assert_eq!(plan.changes.len(), 1, "only c is created: {plan}");
    let conflicts: Vec<&Conflict> = plan
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::Conflict { conflict, .. } => Some(conflict),
            _ => None,
        })
        .collect();
    assert_eq!(
        conflicts,
        [
            &Conflict::MorePartitionsOnTarget { source: 3, target: 4 },
            &Conflict::CleanupPolicy { source: "compact".into(), target: "delete".into() }
        ]
    );
    assert!(plan.to_string().contains("CONFLICT, a is not replicated: target topic a has 4 partitions, the source 3"));
    assert_eq!(
        plan.replicated,
        BTreeMap::from([("c".to_string(), "c".to_string())]),
        "conflicted topics are not replicated"
    );
}

#[test]
fn prefixed_names_over_249_characters_are_refused_with_the_topic_named() {
    let long = "t".repeat(245);
    let plan = plan_of(&rules(ReplicationPolicy::Prefix), &view(&[(&long, state(1, &[]))]), &ClusterView::default());
    assert!(plan.changes.is_empty());
    assert!(matches!(&plan.notices[..], [Notice::Conflict { conflict: Conflict::NameTooLong { length: 253 }, .. }]));
    assert!(plan.to_string().contains(&format!("primary.{long} has 253 characters")));
}

#[test]
fn topics_from_the_target_are_not_sent_back() {
    let plan = plan_of(
        &rules(ReplicationPolicy::Prefix),
        &view(&[("secondary.orders", state(1, &[]))]),
        &ClusterView::default(),
    );
    assert_eq!(plan.notices, [Notice::NotSentBack { source_topic: "secondary.orders".into() }]);
}

#[test]
fn refused_configs_are_left_out_and_deleted_sources_reported() {
    let source = view(&[("orders", state(1, &[("retention.ms", "1"), ("new.fancy.config", "x")]))]);
    let refused = BTreeSet::from(["new.fancy.config".to_string()]);
    let seen = BTreeSet::from(["orders".to_string(), "gone".to_string()]);
    let plan = plan(&rules(ReplicationPolicy::Identity), &source, &ClusterView::default(), &seen, &refused);
    let Change::CreateTopic { topic, .. } = &plan.changes[0] else { panic!("{plan}") };
    assert_eq!(topic.configs.keys().collect::<Vec<_>>(), ["retention.ms"]);
    assert_eq!(plan.notices, [Notice::SourceTopicGone { source_topic: "gone".into() }]);
}

#[test]
fn user_config_exclusions_add_to_the_built_in_list() {
    let flow = FlowConfig { topic_configs_exclude: vec!["retention\\..*".into()], ..FlowConfig::between("p", "s") };
    let rules = Rules::new(&flow).unwrap();
    assert!(!rules.copies_config("retention.ms") && !rules.copies_config("retention.bytes"));
    assert!(!rules.copies_config("min.insync.replicas") && !rules.copies_config("message.timestamp.type"));
    assert!(rules.copies_config("cleanup.policy") && rules.copies_config("segment.ms"));
}

#[test]
fn pattern_matching_nothing_is_a_notice() {
    let flow = FlowConfig { topics: vec!["orders".into(), "typo-topic".into()], ..FlowConfig::between("p", "s") };
    let plan = plan_of(&Rules::new(&flow).unwrap(), &view(&[("orders", state(1, &[]))]), &ClusterView::default());
    assert_eq!(plan.notices, [Notice::PatternMatchesNothing { pattern: "typo-topic".into() }]);
}

fn acl(topic: &str, pattern: AclPattern, operation: AclOperation, permission: AclPermission) -> TopicAcl {
    TopicAcl { topic: topic.into(), pattern, principal: "User:alice".into(), host: "*".into(), operation, permission }
}

#[test]
fn acls_follow_mm2_rules() {
    use AclOperation as Op;
    use AclPattern::*;
    use AclPermission::*;
    let mut source = view(&[("orders", state(1, &[]))]);
    source.acls = vec![
        acl("orders", Literal, Op::READ, Allow),
        acl("orders", Literal, Op::WRITE, Allow),
        acl("orders", Literal, Op::ALL, Allow),
        acl("orders", Literal, Op::WRITE, Deny),
        acl("ord", Prefixed, Op::READ, Allow),
        acl("unknown", Literal, Op::READ, Allow),
    ];
    let flow = FlowConfig {
        sync_topic_acls: true,
        policy: ReplicationPolicy::Prefix,
        ..FlowConfig::between("primary", "secondary")
    };
    let plan = plan(&Rules::new(&flow).unwrap(), &source, &ClusterView::default(), &BTreeSet::new(), &BTreeSet::new());
    let acls: Vec<TopicAcl> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::CreateAcl { acl } => Some(acl.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        acls,
        [acl("primary.orders", Literal, Op::READ, Allow), acl("primary.orders", Literal, Op::WRITE, Deny)],
        "READ copied, ALLOW WRITE never, ALLOW ALL becomes READ (deduplicated), DENY kept, prefixed and unknown skipped"
    );
    let target = ClusterView { acls, ..view(&[("primary.orders", state(1, &[]))]) };
    let again = super::plan(&Rules::new(&flow).unwrap(), &source, &target, &BTreeSet::new(), &BTreeSet::new());
    assert!(again.changes.is_empty(), "{again}");
}
