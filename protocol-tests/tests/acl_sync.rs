//! Topic ACL sync (opt-in, MM2's `sync.topic.acls.enabled`) against real Kafka brokers
//! running KRaft's StandardAuthorizer (scripts/test starts them so): LITERAL topic ACLs
//! are copied by MM2's rules, checked with confluent-kafka's admin client.

use std::time::Duration;

use protocol_tests::{
    create_topic, eventually, primary, secondary, unique_flow_config, unique_name, verify_json, Kferry,
};

async fn create_acl(bootstrap: &str, topic: &str, principal: &str, operation: &str) {
    let args = [
        "create-acl",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--principal",
        principal,
        "--operation",
        operation,
        "--permission",
        "ALLOW",
    ];
    verify_json(&args).await;
}

/// (principal, operation) of every ALLOW ACL on `topic`, sorted.
async fn allowed(bootstrap: &str, topic: &str) -> Vec<(String, String)> {
    let json = verify_json(&["describe-acls", "--bootstrap", bootstrap, "--topic", topic]).await;
    let mut acls: Vec<(String, String)> = json["acls"]
        .as_array()
        .expect("acls list")
        .iter()
        .filter(|a| a["permission"] == "ALLOW" && a["name"] == topic)
        .map(|a| (a["principal"].as_str().unwrap().to_string(), a["operation"].as_str().unwrap().to_string()))
        .collect();
    acls.sort();
    acls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_topic_acls_are_copied_without_write() {
    let topic = unique_name("acl-orders");
    create_topic(&primary(), &topic, 1, &[]).await;
    create_acl(&primary(), &topic, "User:alice", "READ").await;
    create_acl(&primary(), &topic, "User:bob", "WRITE").await;
    create_acl(&primary(), &topic, "User:carol", "ALL").await;
    let config = unique_flow_config(&format!(
        "    topics: [\"{topic}\"]\n    sync_topic_acls: true\n    refresh_topics_interval_seconds: 1\n"
    ));
    let kferry = Kferry::start("run", &config);
    let copied = eventually("ACLs on the target", Duration::from_secs(60), || async {
        let acls = allowed(&secondary(), &topic).await;
        (acls.len() >= 2).then_some(acls)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, _, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        copied,
        [("User:alice".to_string(), "READ".to_string()), ("User:carol".to_string(), "READ".to_string())],
        "READ copied, ALLOW ALL becomes READ, ALLOW WRITE never copied"
    );
    assert_eq!(allowed(&secondary(), &topic).await, copied, "nothing added in later rounds");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
