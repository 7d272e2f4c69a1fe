//! Building blocks for in-process FAKE brokers. They exist for fault injection (errors on
//! demand, malformed frames), which a real broker cannot be made to produce, and for
//! measuring kferry alone (`examples/ceiling.rs`); every test or example that uses them says
//! so. Responses are real Kafka messages, encoded with kafka-protocol's
//! broker-side codec.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The start of a request: enough to answer it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

/// Reads one whole request frame; `None` once the client has gone or sent garbage.
pub async fn read_request(socket: &mut TcpStream) -> Option<RequestHead> {
    let size = socket.read_i32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(size).ok()?];
    socket.read_exact(&mut body).await.ok()?;
    let api = ApiKey::try_from(i16::from_be_bytes([*body.first()?, *body.get(1)?])).ok()?;
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    Some(RequestHead { api, version, correlation_id })
}

/// Reads one whole request frame: its head and its body (after the request header), ready
/// for the request type's `decode`. `None` once the client has gone or sent garbage.
pub async fn read_request_body(socket: &mut TcpStream) -> Option<(RequestHead, Bytes)> {
    let size = socket.read_i32().await.ok()?;
    let mut frame = vec![0u8; usize::try_from(size).ok()?];
    socket.read_exact(&mut frame).await.ok()?;
    let mut frame = Bytes::from(frame);
    let api = ApiKey::try_from(i16::from_be_bytes([*frame.first()?, *frame.get(1)?])).ok()?;
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version)).ok()?;
    Some((RequestHead { api, version, correlation_id: header.correlation_id }, frame))
}

/// A response frame (size prefix, header, body) answering `head`.
pub fn response(head: &RequestHead, body: &impl Encodable) -> BytesMut {
    let mut payload = BytesMut::new();
    let header_version = head.api.response_header_version(head.version);
    ResponseHeader::default().with_correlation_id(head.correlation_id).encode(&mut payload, header_version).unwrap();
    body.encode(&mut payload, head.version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(payload.len() as i32);
    frame.extend_from_slice(&payload);
    frame
}

/// An ApiVersions answer offering each API from version 0 up to the given one.
pub fn api_versions(apis: &[(ApiKey, i16)]) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        apis.iter()
            .map(|&(key, max)| ApiVersion::default().with_api_key(key as i16).with_min_version(0).with_max_version(max))
            .collect(),
    )
}
