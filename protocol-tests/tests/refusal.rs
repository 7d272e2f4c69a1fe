//! An `exactly_once` flow refuses to start on a target that cannot do transactions, with
//! a message that says why and names `at_least_once`; it never degrades silently.
//!
//! The target here is an in-process FAKE broker, on purpose: a Kafka-compatible broker
//! without the transaction APIs is not part of the test machines (tansu, which offers all
//! of them but EndTxn, is exercised by scripts/compat/tansu-smoke). The fake announces the
//! APIs a case gives it but answers only ApiVersions and Metadata, and counts any other
//! request; the source is the real primary test cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A broker announcing `apis` (besides ApiVersions and Metadata); it serves until the test
/// ends and counts the requests it got for anything else.
async fn target_with(apis: &'static [(ApiKey, i16)]) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let other_requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&other_requests);
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                while let Some(head) = read_request(&mut socket).await {
                    let out = match head.api {
                        ApiKey::ApiVersions => {
                            let mut offered = vec![(ApiKey::ApiVersions, 3), (ApiKey::Metadata, 12)];
                            offered.extend_from_slice(apis);
                            response(&head, &api_versions(&offered))
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
                        _ => {
                            counter.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("127.0.0.1:{port}"), other_requests, server)
}

/// Runs an exactly_once replicator against a target offering `apis`; returns its error and
/// how many requests beyond ApiVersions/Metadata reached the target.
async fn refusal(apis: &'static [(ApiKey, i16)]) -> (ReplicateError, usize) {
    let topic = unique_name("refused");
    create_topic(&primary(), &topic, 1, &[]).await;
    let (address, other_requests, server) = target_with(apis).await;
    let source = connect("primary", &primary()).await;
    let target = Cluster::connect("notxn", &[address], ClientConfig::default()).await.unwrap();
    let flow = FlowConfig { delivery: Delivery::ExactlyOnce, ..FlowConfig::between("primary", "notxn") };
    let (_topics, replicated) = tokio::sync::watch::channel(Some(BTreeMap::from([(topic.clone(), topic.clone())])));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        Replicator::new(&flow, Arc::clone(&source), Arc::clone(&target), replicated).run(stopped),
    )
    .await
    .expect("refuses at once, without retrying for ever");
    server.abort();
    (outcome.expect_err("no exactly_once without transactions"), other_requests.load(Ordering::SeqCst))
}

fn assert_refusal(error: &ReplicateError, missing_api: &str) {
    assert!(matches!(error, ReplicateError::TransactionsUnavailable { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("delivery exactly_once needs transactions on target cluster notxn"), "{message}");
    assert!(message.contains("delivery: at_least_once"), "{message}");
    assert!(message.contains(missing_api), "names the missing API {missing_api}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_refuses_a_target_without_transaction_apis() {
    let (error, other_requests) = refusal(&[]).await;
    assert_refusal(&error, "FindCoordinator");
    assert_eq!(other_requests, 0, "nothing was sent but the API check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_refuses_a_target_that_can_begin_but_not_end_a_transaction() {
    // Like tansu 0.6: every transaction API but EndTxn. Producing there would leave
    // transactions open that such a broker may expose to consumers.
    const ALL_BUT_END_TXN: &[(ApiKey, i16)] = &[
        (ApiKey::FindCoordinator, 6),
        (ApiKey::InitProducerId, 5),
        (ApiKey::AddPartitionsToTxn, 5),
        (ApiKey::AddOffsetsToTxn, 4),
        (ApiKey::TxnOffsetCommit, 4),
        (ApiKey::Produce, 11),
    ];
    let (error, other_requests) = refusal(ALL_BUT_END_TXN).await;
    assert_refusal(&error, "EndTxn");
    assert_eq!(other_requests, 0, "refused before InitProducerId or any Produce");
}
