//! Bad input from a broker: malformed frames, truncated responses, a wrong correlation id,
//! undecodable bodies, a broker that closes mid-response or never answers. Each must give a
//! typed error, never a panic or a hang; the connection is dropped and every request in
//! flight fails with that same error.
//!
//! This test uses an in-process FAKE broker, on purpose: a real broker cannot be made to
//! send garbage. The fake (`protocol_tests::fake`) answers the ApiVersions handshake
//! properly, then misbehaves on the first later request as told.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, MetadataRequest};
use kferry::client::{BrokerRef, ConnectionConfig, ConnectionError, Messenger};
use protocol_tests::fake::{api_versions, read_request, response};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A size prefix that can never be valid.
    NegativeFrameSize,
    /// Half a response, then the connection closes.
    TruncatedThenClose,
    /// A well-formed response whose correlation id answers nothing.
    WrongCorrelationId,
    /// The right correlation id, then bytes that are not a Metadata response.
    GarbageBody,
    /// Nothing at all: the request times out.
    Silent,
}

async fn misbehave(socket: &mut TcpStream, fault: Fault, correlation_id: i32) {
    let mut out = BytesMut::new();
    match fault {
        Fault::NegativeFrameSize => out.put_i32(-42),
        Fault::TruncatedThenClose => {
            out.put_i32(100);
            out.put_i32(correlation_id);
            out.put_slice(&[0; 6]);
        }
        Fault::WrongCorrelationId => {
            out.put_i32(4);
            out.put_i32(correlation_id + 100_000);
        }
        Fault::GarbageBody => {
            out.put_i32(9);
            out.put_i32(correlation_id);
            out.put_slice(&[0xff; 5]);
        }
        Fault::Silent => return,
    }
    let _ = socket.write_all(&out).await;
    if matches!(fault, Fault::TruncatedThenClose) {
        let _ = socket.shutdown().await;
    }
}

/// Starts the fake on 127.0.0.1; it serves one connection, then stops.
async fn fake_broker(fault: Fault) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let mut misbehaved = false;
        while let Some(head) = read_request(&mut socket).await {
            if head.api == ApiKey::ApiVersions {
                let versions = api_versions(&[(ApiKey::ApiVersions, 4), (ApiKey::Metadata, 12)]);
                let _ = socket.write_all(&response(&head, &versions)).await;
            } else if !misbehaved {
                // Only the first data request triggers the fault; the client must fail the
                // others in flight with the same error without their own answers.
                misbehave(&mut socket, fault, head.correlation_id).await;
                misbehaved = true;
            }
        }
    });
    (address, task)
}

async fn check_fault(fault: Fault, expect: fn(&ConnectionError) -> bool) {
    let (address, fake) = fake_broker(fault).await;
    let broker = BrokerRef { cluster: "fake".into(), node_id: Some(1), address: address.into() };
    let config = ConnectionConfig { request_timeout: Duration::from_millis(500), ..ConnectionConfig::default() };
    let messenger = std::sync::Arc::new(Messenger::connect(broker, &config).await.expect("handshake with the fake"));

    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let messenger = std::sync::Arc::clone(&messenger);
        in_flight.spawn(async move { messenger.request(&MetadataRequest::default()).await.map(|_| ()) });
    }
    let outcomes = tokio::time::timeout(Duration::from_secs(10), in_flight.join_all())
        .await
        .unwrap_or_else(|_| panic!("{fault:?}: requests hung"));
    let errors: Vec<String> = outcomes
        .iter()
        .map(|outcome| {
            let error = outcome.as_ref().expect_err("no request may succeed");
            assert!(expect(error), "{fault:?}: unexpected error {error:?}");
            error.to_string()
        })
        .collect();
    assert!(errors.windows(2).all(|w| w[0] == w[1]), "{fault:?}: all in-flight requests fail alike: {errors:?}");
    assert!(errors[0].contains("cluster fake, broker 1"), "{fault:?}: error names the broker: {}", errors[0]);
    assert!(messenger.is_poisoned(), "{fault:?}: connection dropped");
    let later = messenger.request(&MetadataRequest::default()).await.expect_err("poisoned connection refuses");
    assert_eq!(later.to_string(), errors[0], "{fault:?}: later requests get the same error");
    drop(messenger);
    fake.abort();
}

#[tokio::test]
async fn negative_frame_size_is_a_protocol_error() {
    check_fault(Fault::NegativeFrameSize, |e| matches!(e, ConnectionError::Protocol { .. })).await;
}

#[tokio::test]
async fn connection_closed_mid_response_is_reported_as_such() {
    check_fault(Fault::TruncatedThenClose, |e| matches!(e, ConnectionError::Closed { mid_response: true, .. })).await;
}

#[tokio::test]
async fn wrong_correlation_id_drops_the_connection() {
    check_fault(Fault::WrongCorrelationId, |e| matches!(e, ConnectionError::UnexpectedCorrelationId { .. })).await;
}

#[tokio::test]
async fn undecodable_response_body_is_a_protocol_error() {
    check_fault(Fault::GarbageBody, |e| matches!(e, ConnectionError::Protocol { .. })).await;
}

#[tokio::test]
async fn silent_broker_times_out() {
    check_fault(Fault::Silent, |e| matches!(e, ConnectionError::RequestTimeout { .. })).await;
}

#[tokio::test]
async fn unsupported_api_names_the_api_and_both_version_ranges() {
    let (address, fake) = fake_broker(Fault::Silent).await;
    let broker = BrokerRef { cluster: "fake".into(), node_id: Some(1), address: address.into() };
    let messenger = Messenger::connect(broker, &ConnectionConfig::default()).await.unwrap();
    let error = messenger.version_for::<kafka_protocol::messages::ProduceRequest>().unwrap_err();
    assert!(matches!(error, ConnectionError::UnsupportedApi { api: "Produce", theirs: None, .. }), "{error:?}");
    assert!(error.to_string().contains("Produce") && error.to_string().contains("kferry: v3..13"), "{error}");
    assert!(!messenger.is_poisoned(), "a refused version is not a broken connection");
    fake.abort();
}

#[tokio::test]
async fn unreachable_broker_names_cluster_and_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let broker = BrokerRef { cluster: "gone".into(), node_id: None, address: address.clone().into() };
    let error = Messenger::connect(broker, &ConnectionConfig::default()).await.unwrap_err();
    assert!(matches!(error, ConnectionError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&format!("cluster gone, bootstrap server {address}")), "{error}");
}

#[tokio::test]
async fn close_fails_requests_in_flight_with_a_shutdown_error() {
    let (address, fake) = fake_broker(Fault::Silent).await;
    let broker = BrokerRef { cluster: "fake".into(), node_id: Some(1), address: address.into() };
    let messenger = std::sync::Arc::new(Messenger::connect(broker, &ConnectionConfig::default()).await.unwrap());
    let waiting = {
        let messenger = std::sync::Arc::clone(&messenger);
        tokio::spawn(async move { messenger.request(&MetadataRequest::default()).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    messenger.close();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("no hang").unwrap();
    assert!(matches!(outcome, Err(ConnectionError::Shutdown { .. })), "{outcome:?}");
    fake.abort();
}
