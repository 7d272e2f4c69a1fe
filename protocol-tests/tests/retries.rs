//! Retry policy against errors on demand: a retriable error (NOT_LEADER_OR_FOLLOWER) is
//! retried after a metadata refresh and the call then succeeds; a non-retriable one
//! surfaces at once, naming cluster, broker, topic and partition.
//!
//! This test uses an in-process FAKE broker, on purpose: a single-node real cluster cannot
//! be made to answer NOT_LEADER_OR_FOLLOWER on demand. The fake (`protocol_tests::fake`)
//! speaks real Kafka messages for ApiVersions, Metadata and ListOffsets, and counts what it
//! was asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ListOffsetsResponse, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kferry::client::{ClientConfig, ClientError, Cluster, Isolation, OffsetSpec, RetryPolicy};
use protocol_tests::fake::{api_versions, read_request, response};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const TOPIC: &str = "orders";

/// What the fake answers to ListOffsets: `failures` times `error_code`, then offset 42.
struct Script {
    error_code: i16,
    failures: usize,
    list_offsets_seen: AtomicUsize,
    metadata_seen: AtomicUsize,
}

fn metadata(port: u16) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(i32::from(port))])
        .with_cluster_id(Some(StrBytes::from_static_str("fake-cluster")))
        .with_controller_id(BrokerId(1))
        .with_topics(vec![MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(TOPIC))))
            .with_partitions(vec![MetadataResponsePartition::default()
                .with_partition_index(0)
                .with_leader_id(BrokerId(1))
                .with_leader_epoch(3)])])
}

fn list_offsets(error_code: i16) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
        .with_partitions(vec![ListOffsetsPartitionResponse::default()
            .with_partition_index(0)
            .with_error_code(error_code)
            .with_offset(if error_code == 0 { 42 } else { -1 })])])
}

async fn serve(mut socket: TcpStream, port: u16, script: Arc<Script>) {
    while let Some(head) = read_request(&mut socket).await {
        let out = match head.api {
            ApiKey::ApiVersions => response(
                &head,
                &api_versions(&[(ApiKey::ApiVersions, 3), (ApiKey::Metadata, 12), (ApiKey::ListOffsets, 8)]),
            ),
            ApiKey::Metadata => {
                script.metadata_seen.fetch_add(1, Ordering::SeqCst);
                response(&head, &metadata(port))
            }
            ApiKey::ListOffsets => {
                let seen = script.list_offsets_seen.fetch_add(1, Ordering::SeqCst);
                let code = if seen < script.failures { script.error_code } else { 0 };
                response(&head, &list_offsets(code))
            }
            other => panic!("the fake does not serve {other:?}"),
        };
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn fake_cluster(script: Arc<Script>) -> (Arc<Cluster>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, port, Arc::clone(&script)));
        }
    });
    let config = ClientConfig {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            max_attempts: 5,
        },
        ..ClientConfig::default()
    };
    let cluster = Cluster::connect("fake", &[format!("127.0.0.1:{port}")], config).await.unwrap();
    (cluster, server)
}

#[tokio::test]
async fn retriable_error_is_retried_after_a_metadata_refresh() {
    let script = Arc::new(Script { error_code: 6, failures: 2, list_offsets_seen: 0.into(), metadata_seen: 0.into() });
    let (cluster, server) = fake_cluster(Arc::clone(&script)).await;
    let offset = cluster.list_offset(TOPIC, 0, OffsetSpec::Latest, Isolation::ReadCommitted).await.unwrap();
    assert_eq!(offset, 42);
    assert_eq!(script.list_offsets_seen.load(Ordering::SeqCst), 3, "two NOT_LEADER_OR_FOLLOWER, then success");
    // One Metadata at connect (the fake always lists the topic, so it is cached from then
    // on), then one refresh after each stale-leader error.
    assert_eq!(script.metadata_seen.load(Ordering::SeqCst), 3);
    server.abort();
}

#[tokio::test]
async fn retries_stop_at_the_policy_limit() {
    let script =
        Arc::new(Script { error_code: 6, failures: usize::MAX, list_offsets_seen: 0.into(), metadata_seen: 0.into() });
    let (cluster, server) = fake_cluster(Arc::clone(&script)).await;
    let error = cluster.list_offset(TOPIC, 0, OffsetSpec::Latest, Isolation::ReadCommitted).await.unwrap_err();
    assert!(matches!(error, ClientError::RetriesExhausted { attempts: 5, .. }), "{error:?}");
    assert_eq!(script.list_offsets_seen.load(Ordering::SeqCst), 5);
    assert!(
        error.to_string().contains("NOT_LEADER_OR_FOLLOWER (6)")
            && error.to_string().contains("gave up after 5 attempts")
    );
    server.abort();
}

#[tokio::test]
async fn non_retriable_error_surfaces_at_once_with_its_context() {
    // UNSUPPORTED_FOR_MESSAGE_FORMAT (43) is not retriable.
    let script =
        Arc::new(Script { error_code: 43, failures: usize::MAX, list_offsets_seen: 0.into(), metadata_seen: 0.into() });
    let (cluster, server) = fake_cluster(Arc::clone(&script)).await;
    let error = cluster.list_offset(TOPIC, 0, OffsetSpec::Latest, Isolation::ReadCommitted).await.unwrap_err();
    assert_eq!(script.list_offsets_seen.load(Ordering::SeqCst), 1, "no retry");
    let message = error.to_string();
    assert!(
        message.starts_with("cluster fake, broker 1 (127.0.0.1:")
            && message.contains("ListOffsets for topic orders partition 0 failed: UNSUPPORTED_FOR_MESSAGE_FORMAT (43)"),
        "{message}"
    );
    server.abort();
}
