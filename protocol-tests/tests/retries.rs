//! Retry policy against errors on demand: a retriable error (NOT_LEADER_OR_FOLLOWER) is
//! retried after a metadata refresh and the call then succeeds; a non-retriable one
//! surfaces at once, naming cluster, broker, topic and partition.
//!
//! This test uses an in-process FAKE broker, on purpose: a single-node real cluster cannot
//! be made to answer NOT_LEADER_OR_FOLLOWER on demand. The fake speaks real Kafka messages
//! (encoded with kafka-protocol's broker-side codec) for ApiVersions, Metadata and
//! ListOffsets, and counts what it was asked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, ListOffsetsResponse, MetadataResponse, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kferry::client::{ClientConfig, ClientError, Cluster, Isolation, OffsetSpec, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOPIC: &str = "orders";

/// What the fake answers to ListOffsets: `failures` times `error_code`, then offset 42.
struct Script {
    error_code: i16,
    failures: usize,
    list_offsets_seen: AtomicUsize,
    metadata_seen: AtomicUsize,
}

fn frame(correlation_id: i32, header_version: i16, body: impl Encodable, version: i16) -> BytesMut {
    let mut payload = BytesMut::new();
    ResponseHeader::default().with_correlation_id(correlation_id).encode(&mut payload, header_version).unwrap();
    body.encode(&mut payload, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(&payload);
    out
}

fn api_versions() -> ApiVersionsResponse {
    let api =
        |key: ApiKey, max| ApiVersion::default().with_api_key(key as i16).with_min_version(0).with_max_version(max);
    ApiVersionsResponse::default().with_api_keys(vec![
        api(ApiKey::ApiVersions, 3),
        api(ApiKey::Metadata, 12),
        api(ApiKey::ListOffsets, 8),
    ])
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
    loop {
        let Ok(size) = socket.read_i32().await else { return };
        let mut request = vec![0u8; size as usize];
        if socket.read_exact(&mut request).await.is_err() {
            return;
        }
        let key = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let correlation_id = i32::from_be_bytes([request[4], request[5], request[6], request[7]]);
        let api = ApiKey::try_from(key).unwrap();
        let header_version = api.response_header_version(version);
        let out = match api {
            ApiKey::ApiVersions => frame(correlation_id, header_version, api_versions(), version),
            ApiKey::Metadata => {
                script.metadata_seen.fetch_add(1, Ordering::SeqCst);
                frame(correlation_id, header_version, metadata(port), version)
            }
            ApiKey::ListOffsets => {
                let seen = script.list_offsets_seen.fetch_add(1, Ordering::SeqCst);
                let code = if seen < script.failures { script.error_code } else { 0 };
                frame(correlation_id, header_version, list_offsets(code), version)
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
