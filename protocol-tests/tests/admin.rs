//! The admin calls against a real broker: DescribeConfigs reports values and where they
//! come from, CreateTopics reports each topic's outcome on its own, and the metadata cache
//! notices a topic that was created after it was first looked up.

use std::collections::BTreeMap;
use std::time::Duration;

use kferry::client::{ClientError, ConfigSource, NewTopic};
use protocol_tests::{connect, create_topic, primary, unique_name};

fn new_topic(name: &str, configs: &[(&str, &str)]) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        partitions: 2,
        replication_factor: None,
        configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_configs_tells_topic_settings_from_inherited_ones() {
    let cluster = connect("primary", &primary()).await;
    let topic = unique_name("configs");
    create_topic(&primary(), &topic, 1, &["cleanup.policy=compact", "retention.ms=123456789"]).await;
    let configs = cluster.describe_topic_configs(&topic).await.unwrap();
    let policy = &configs["cleanup.policy"];
    assert_eq!((policy.value.as_deref(), policy.source), (Some("compact"), ConfigSource::Topic));
    assert_eq!(configs["retention.ms"].value.as_deref(), Some("123456789"));
    assert_eq!(configs["segment.bytes"].source, ConfigSource::Inherited, "not set on the topic");
    let missing = cluster.describe_topic_configs("no-such-topic-kferry-configs").await.unwrap_err();
    assert!(matches!(missing, ClientError::UnknownTopic { .. }), "not retried: the topic does not exist: {missing:?}");
    assert!(missing.to_string().contains("no-such-topic-kferry-configs"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_topics_reports_each_topic_on_its_own() {
    let cluster = connect("primary", &primary()).await;
    let (good, bad, existing) = (unique_name("create-ok"), unique_name("create-bad"), unique_name("create-dup"));
    create_topic(&primary(), &existing, 1, &[]).await;
    let topics = [
        new_topic(&good, &[("cleanup.policy", "compact")]),
        new_topic(&bad, &[("cleanup.policy", "bogus")]),
        new_topic(&existing, &[]),
    ];
    let outcomes = cluster.create_topics(&topics, false, Duration::from_secs(30)).await.unwrap();
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0]);
    for (name, outcome, code) in
        [(&bad, &outcomes[1].1, "INVALID_CONFIG"), (&existing, &outcomes[2].1, "TOPIC_ALREADY_EXISTS")]
    {
        let message = outcome.as_ref().unwrap_err().to_string();
        assert!(message.contains(name.as_str()) && message.contains(code) && message.contains("primary"), "{message}");
    }
    let created = cluster.topic(&good).await.unwrap();
    assert_eq!(created.partitions.len(), 2);
    assert_eq!(
        cluster.describe_topic_configs(&good).await.unwrap()["cleanup.policy"].value.as_deref(),
        Some("compact")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_only_creates_nothing() {
    let cluster = connect("primary", &primary()).await;
    let topic = unique_name("validate-only");
    let outcomes = cluster.create_topics(&[new_topic(&topic, &[])], true, Duration::from_secs(30)).await.unwrap();
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0]);
    assert!(matches!(cluster.topic(&topic).await, Err(ClientError::UnknownTopic { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_after_a_failed_lookup_is_found() {
    let cluster = connect("primary", &primary()).await;
    let topic = unique_name("late-topic");
    let error = cluster.topic(&topic).await.unwrap_err();
    assert!(matches!(error, ClientError::UnknownTopic { .. }), "{error:?}");
    assert_eq!(error.to_string(), format!("cluster primary: topic {topic} does not exist"));
    create_topic(&primary(), &topic, 3, &[]).await;
    let info = cluster.topic(&topic).await.expect("metadata asked again");
    assert_eq!(info.partitions.len(), 3);
    assert!(info.partitions.values().all(|p| p.leader == Some(1) && p.leader_epoch >= 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_and_incremental_alter_configs() {
    let cluster = connect("primary", &primary()).await;
    let topic = unique_name("grow");
    create_topic(&primary(), &topic, 1, &["retention.ms=1000", "segment.ms=600000"]).await;
    cluster.create_partitions(&topic, 3, Duration::from_secs(30)).await.unwrap();
    let changes =
        BTreeMap::from([("retention.ms".to_string(), Some("2000".to_string())), ("segment.ms".to_string(), None)]);
    cluster.alter_topic_configs(&topic, &changes).await.unwrap();
    let seen = protocol_tests::describe_topic(&primary(), &topic).await;
    assert_eq!(seen.partitions, 3);
    assert_eq!(seen.configs, BTreeMap::from([("retention.ms".to_string(), "2000".to_string())]), "segment.ms removed");
    let shrink = cluster.create_partitions(&topic, 2, Duration::from_secs(30)).await.unwrap_err().to_string();
    assert!(shrink.contains(&topic) && shrink.contains("INVALID_PARTITIONS"), "{shrink}");
}
