//! An `exactly_once` flow refuses to start on a target that cannot do transactions, with
//! a message that says why and names `at_least_once`; it never degrades silently.
//!
//! The target here is an in-process FAKE broker, on purpose: a Kafka-compatible broker
//! without the transaction APIs (tansu, say) is not part of the test machines. The fake
//! offers ApiVersions and Metadata only; the source is the real primary test cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataResponse};
use kafka_protocol::protocol::StrBytes;
use kferry::client::{ClientConfig, Cluster};
use kferry::config::{Delivery, FlowConfig};
use kferry::replicate::engine::{ReplicateError, Replicator};
use protocol_tests::fake::{api_versions, read_request, response};
use protocol_tests::{connect, create_topic, primary, unique_name};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// A broker that knows no transaction API; it serves until the test ends.
async fn target_without_transactions() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut socket).await {
                    let out = match head.api {
                        ApiKey::ApiVersions => {
                            response(&head, &api_versions(&[(ApiKey::ApiVersions, 3), (ApiKey::Metadata, 12)]))
                        }
                        ApiKey::Metadata => response(
                            &head,
                            &MetadataResponse::default().with_controller_id(BrokerId(1)).with_brokers(vec![
                                MetadataResponseBroker::default()
                                    .with_node_id(BrokerId(1))
                                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                                    .with_port(i32::from(port)),
                            ]),
                        ),
                        _ => return,
                    };
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("127.0.0.1:{port}"), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_refuses_a_target_without_transactions_naming_at_least_once() {
    let topic = unique_name("refused");
    create_topic(&primary(), &topic, 1, &[]).await;
    let (address, server) = target_without_transactions().await;
    let source = connect("primary", &primary()).await;
    let target = Cluster::connect("notxn", &[address], ClientConfig::default()).await.unwrap();
    let flow = FlowConfig { delivery: Delivery::ExactlyOnce, ..FlowConfig::between("primary", "notxn") };
    let (_topics, replicated) = tokio::sync::watch::channel(BTreeMap::from([(topic.clone(), topic.clone())]));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        Replicator::new(&flow, Arc::clone(&source), Arc::clone(&target), replicated).run(stopped),
    )
    .await
    .expect("refuses at once, without retrying for ever");
    let error = outcome.expect_err("no exactly_once without transactions");
    assert!(matches!(error, ReplicateError::TransactionsUnavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("delivery exactly_once needs transactions on target cluster notxn"), "{message}");
    assert!(message.contains("delivery: at_least_once"), "{message}");
    assert!(
        message.contains("FindCoordinator") || message.contains("InitProducerId"),
        "says which API is missing: {message}"
    );
    server.abort();
}
