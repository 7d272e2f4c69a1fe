//! The topic planner against real Kafka, with `kferry plan` and `kferry run` as
//! subprocesses and confluent-kafka's admin client checking the target.
//!
//! The test clusters are shared, so each test gives its clusters unique aliases (with the
//! prefix policy, target names carry them) or its topics a unique prefix.

use std::time::{Duration, Instant};

use protocol_tests::{
    alias, consume, create_topic, describe_topic, eventually, list_topics, primary, secondary, two_cluster_config,
    unique_flow_config, unique_name, verify_json, Kferry,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_flow_copies_topics_with_partitions_and_configs_but_no_internal_topic() {
    let (src, dst) = (alias("src"), alias("dst"));
    let orders = unique_name("orders");
    create_topic(
        &primary(),
        &orders,
        6,
        &["cleanup.policy=compact", "retention.ms=123456789", "min.insync.replicas=1"],
    )
    .await;
    if !list_topics(&primary()).await.contains(&"_schemas".to_string()) {
        create_topic(&primary(), "_schemas", 1, &["cleanup.policy=compact"]).await;
    }
    // Kafka creates __consumer_offsets when a client first looks for a group coordinator,
    // which confluent-kafka's consumer does.
    consume(&primary(), &orders, "read_uncommitted", 0).await;
    eventually("__consumer_offsets on the source", Duration::from_secs(30), || async {
        list_topics(&primary()).await.iter().any(|t| t == "__consumer_offsets").then_some(())
    })
    .await;

    let config = two_cluster_config(
        &src,
        &dst,
        "    topics: [\".*\"]\n    policy: prefix\n    refresh_topics_interval_seconds: 1\n",
    );
    let kferry = Kferry::start("run", &config);
    let remote_orders = format!("{src}.{orders}");
    let described = eventually("remote orders topic", Duration::from_secs(60), || async {
        Some(describe_topic(&secondary(), &remote_orders).await).filter(|d| d.exists)
    })
    .await;
    assert_eq!(described.partitions, 6);
    assert_eq!(described.configs.get("cleanup.policy").map(String::as_str), Some("compact"));
    assert_eq!(described.configs.get("retention.ms").map(String::as_str), Some("123456789"));
    assert!(!described.configs.contains_key("min.insync.replicas"), "never copied: {:?}", described.configs);
    let remote_schemas = format!("{src}._schemas");
    eventually("remote _schemas topic", Duration::from_secs(30), || async {
        describe_topic(&secondary(), &remote_schemas).await.exists.then_some(())
    })
    .await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "kferry run stops cleanly on SIGTERM:\n{stderr}");
    let copied_internal: Vec<String> =
        list_topics(&secondary()).await.into_iter().filter(|t| t.starts_with(&format!("{src}.__"))).collect();
    assert!(copied_internal.is_empty(), "no __* topic is ever copied: {copied_internal:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_topics_partitions_and_config_changes_reach_the_target_while_running() {
    let prefix = unique_name("live");
    let first = format!("{prefix}-first");
    create_topic(&primary(), &first, 2, &[]).await;
    let interval = 2;
    let config = unique_flow_config(&format!(
        "    topics: [\"{prefix}-.*\"]\n    policy: identity\n    refresh_topics_interval_seconds: {interval}\n"
    ));
    let kferry = Kferry::start("run", &config);
    eventually("first topic", Duration::from_secs(30), || async {
        describe_topic(&secondary(), &first).await.exists.then_some(())
    })
    .await;

    let late = format!("{prefix}-late");
    create_topic(&primary(), &late, 1, &[]).await;
    let created_at = Instant::now();
    eventually("topic created while running", Duration::from_secs(30), || async {
        describe_topic(&secondary(), &late).await.exists.then_some(())
    })
    .await;
    println!("new source topic on the target after {:?} (interval {interval} s)", created_at.elapsed());

    verify_json(&["add-partitions", "--bootstrap", &primary(), "--topic", &first, "--total", "4"]).await;
    verify_json(&["alter-config", "--bootstrap", &primary(), "--topic", &first, "--set", "retention.ms=7654321"]).await;
    let synced = eventually("partitions and retention.ms synced", Duration::from_secs(30), || async {
        let d = describe_topic(&secondary(), &first).await;
        (d.partitions == 4 && d.configs.get("retention.ms").map(String::as_str) == Some("7654321")).then_some(d)
    })
    .await;
    assert_eq!(synced.partitions, 4);
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("create topic {late}")), "the creation is logged:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_lists_exactly_what_run_creates() {
    let prefix = unique_name("planned");
    let (src, dst) = (alias("psrc"), alias("pdst"));
    for (i, partitions) in [1u32, 2, 3].iter().enumerate() {
        create_topic(&primary(), &format!("{prefix}-{i}"), *partitions, &["retention.ms=86400000"]).await;
    }
    // With the prefix this name exceeds Kafka's 249 characters: a conflict, not a creation.
    let long = format!("{prefix}-{}", "x".repeat(249 - prefix.len() - 1));
    create_topic(&primary(), &long, 1, &[]).await;
    let config = two_cluster_config(&src, &dst, &format!("    topics: [\"{prefix}-.*\"]\n    policy: prefix\n"));

    let (code, plan, stderr) = Kferry::run_to_end("plan", &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    let planned: Vec<String> = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("create topic "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..3).map(|i| format!("{src}.{prefix}-{i}")).collect();
    assert_eq!(planned, expected, "plan:\n{plan}");
    assert!(plan.contains("configs retention.ms=86400000"), "{plan}");
    assert!(
        plan.contains(&format!("CONFLICT, {long} is not replicated")) && plan.contains("Kafka allows 249"),
        "{plan}"
    );

    let kferry = Kferry::start("run", &config);
    eventually("planned topics created", Duration::from_secs(60), || async {
        let on_target: Vec<String> =
            list_topics(&secondary()).await.into_iter().filter(|t| t.starts_with(&format!("{src}."))).collect();
        (on_target == expected).then_some(())
    })
    .await;
    kferry.stop().await;
    let created: Vec<String> =
        list_topics(&secondary()).await.into_iter().filter(|t| t.starts_with(&format!("{src}."))).collect();
    assert_eq!(created, expected, "run created what plan listed, and nothing else");
    for (i, name) in expected.iter().enumerate() {
        assert_eq!(describe_topic(&secondary(), name).await.partitions, i as u32 + 1);
    }
    let (_, again, _) = Kferry::run_to_end("plan", &config).await;
    assert!(again.contains("nothing to change"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_reported_and_other_topics_still_replicated() {
    let prefix = unique_name("conflict");
    let (wide, compacted, fine) = (format!("{prefix}-wide"), format!("{prefix}-compacted"), format!("{prefix}-fine"));
    create_topic(&primary(), &wide, 2, &[]).await;
    create_topic(&primary(), &compacted, 1, &["cleanup.policy=compact"]).await;
    create_topic(&primary(), &fine, 1, &[]).await;
    create_topic(&secondary(), &wide, 5, &[]).await;
    create_topic(&secondary(), &compacted, 1, &[]).await;
    let config = unique_flow_config(&format!("    topics: [\"{prefix}-.*\"]\n"));
    let (code, plan, stderr) = Kferry::run_to_end("plan", &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        plan.contains(&format!(
            "CONFLICT, {wide} is not replicated: target topic {wide} has 5 partitions, the source 2"
        )),
        "{plan}"
    );
    assert!(plan.contains(&format!("CONFLICT, {compacted} is not replicated: target topic {compacted} has cleanup.policy=delete, the source compact")), "{plan}");
    assert!(plan.contains(&format!("create topic {fine}")), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_flows_both_ways_are_refused_naming_both() {
    let config = format!(
        "clusters:\n  a: {{ bootstrap_servers: [\"{}\"] }}\n  b: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - {{ source: a, target: b, policy: identity }}\n  - {{ source: b, target: a, policy: identity }}\n",
        primary(),
        secondary()
    );
    let (code, _, stderr) = Kferry::run_to_end("check", &config).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("a->b") && stderr.contains("b->a") && stderr.contains("cycle"), "{stderr}");
}
