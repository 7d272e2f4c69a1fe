//! A Kafka 4.x source replicated into an older (3.9) target without an authorizer: topic
//! configs the target does not know are left out and reported, and the rest is copied; ACL
//! sync turns itself off with one warning. Needs the extra 3.9 cluster that `scripts/test`
//! starts beside the 4.x pair (`KFERRY_TEST_OLD_TARGET`); every test here is named
//! `older_target_*` so the 3.9-only phase can skip them.

use std::time::Duration;

use protocol_tests::{alias, create_topic, describe_topic, eventually, primary, unique_name, Kferry};

fn old_target() -> String {
    std::env::var("KFERRY_TEST_OLD_TARGET")
        .expect("KFERRY_TEST_OLD_TARGET is not set: ./scripts/test starts a Kafka 3.9 cluster for this test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_target_refused_configs_are_dropped_and_reported() {
    let old_target = old_target();
    let topic = unique_name("newer-configs");
    // max.decompressed.message.bytes is a Kafka 4.x topic config; 3.9 answers INVALID_CONFIG.
    create_topic(&primary(), &topic, 2, &["max.decompressed.message.bytes=1000000", "retention.ms=1234567"]).await;
    let config = format!(
        "clusters:\n  {new}: {{ bootstrap_servers: [\"{}\"] }}\n  {old}: {{ bootstrap_servers: [\"{old_target}\"] }}\n\
         flows:\n  - {{ source: {new}, target: {old}, topics: [\"{topic}\"], refresh_topics_interval_seconds: 1 }}\n",
        primary(),
        new = alias("new"),
        old = alias("old"),
    );
    let kferry = Kferry::start("run", &config);
    let created = eventually("topic on the 3.9 target", Duration::from_secs(60), || async {
        Some(describe_topic(&old_target, &topic).await).filter(|d| d.exists)
    })
    .await;
    // One more round: the refused key must not be tried again and fail every round.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(created.partitions, 2);
    assert_eq!(created.configs.get("retention.ms").map(String::as_str), Some("1234567"), "{:?}", created.configs);
    assert!(!created.configs.contains_key("max.decompressed.message.bytes"));
    assert_eq!(
        stderr.matches("target refuses config max.decompressed.message.bytes=1000000").count(),
        1,
        "reported once:\n{stderr}"
    );
    assert!(!stderr.contains("ERROR"), "no failed change:\n{stderr}");

    // A restarted kferry no longer knows the key was refused: it finds out again, once,
    // without an error, and leaves the topic as it is.
    let (code, _, stderr) = {
        let kferry = Kferry::start("run", &config);
        tokio::time::sleep(Duration::from_secs(3)).await;
        kferry.stop().await
    };
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr.matches("target refuses config max.decompressed.message.bytes").count(), 1, "{stderr}");
    assert!(!stderr.contains("ERROR"), "no failed change after a restart:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_target_without_authorizer_turns_acl_sync_off_and_syncs_topics() {
    let topic = unique_name("no-authorizer");
    create_topic(&primary(), &topic, 1, &[]).await;
    let config = format!(
        "clusters:\n  {new}: {{ bootstrap_servers: [\"{}\"] }}\n  {old}: {{ bootstrap_servers: [\"{}\"] }}\n\
         flows:\n  - {{ source: {new}, target: {old}, topics: [\"{topic}\"], sync_topic_acls: true }}\n",
        primary(),
        old_target(),
        new = alias("new"),
        old = alias("old"),
    );
    let (code, plan, stderr) = Kferry::run_to_end("plan", &config).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(plan.contains(&format!("create topic {topic}")), "{plan}");
    assert!(stderr.contains("topic ACL sync is off") && stderr.contains("SECURITY_DISABLED"), "{stderr}");
}
