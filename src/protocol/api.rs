//! Requests and responses as bytes: which message belongs to which API key, how a request is
//! framed with its header, how a response is matched (correlation id) and decoded, and which
//! version two peers speak.
//!
//! kferry's client only encodes requests and decodes responses, so it builds
//! `kafka-protocol` with its `client` feature alone; that feature does not provide the
//! crate's request/response pairing, so [`ApiRequest`] does it here. Adding a call to kferry
//! is one line in the `api_requests!` table below.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{self as m, ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes, VersionRange};

use super::ProtocolError;

/// A request message kferry sends, paired with the response it gets back.
pub trait ApiRequest: Encodable + Message + HeaderVersion + Send + Sync + 'static {
    /// The API this request belongs to.
    const KEY: ApiKey;
    /// The API's name as operators read it in errors (`Produce`, `Fetch`, ...).
    const NAME: &'static str;
    /// The response the broker answers with.
    type Response: Decodable + HeaderVersion + Send + 'static;
    /// How long the broker asks the client to wait before its next request (a quota,
    /// KIP-219); 0 for the few responses without the field.
    fn throttle_time_ms(_response: &Self::Response) -> i32 {
        0
    }
}

/// Requests whose response carries `throttle_time_ms`.
macro_rules! api_requests {
    ($($key:ident: $request:ident => $response:ident;)*) => {
        $(
            impl ApiRequest for m::$request {
                const KEY: ApiKey = ApiKey::$key;
                const NAME: &'static str = stringify!($key);
                type Response = m::$response;
                fn throttle_time_ms(response: &Self::Response) -> i32 {
                    response.throttle_time_ms
                }
            }
        )*
    };
}

/// Requests whose response has no throttle time (the SASL exchange).
macro_rules! unthrottled_api_requests {
    ($($key:ident: $request:ident => $response:ident;)*) => {
        $(
            impl ApiRequest for m::$request {
                const KEY: ApiKey = ApiKey::$key;
                const NAME: &'static str = stringify!($key);
                type Response = m::$response;
            }
        )*
    };
}

api_requests! {
    ApiVersions: ApiVersionsRequest => ApiVersionsResponse;
    Metadata: MetadataRequest => MetadataResponse;
    DescribeCluster: DescribeClusterRequest => DescribeClusterResponse;
    ListOffsets: ListOffsetsRequest => ListOffsetsResponse;
    Produce: ProduceRequest => ProduceResponse;
    Fetch: FetchRequest => FetchResponse;
    DescribeConfigs: DescribeConfigsRequest => DescribeConfigsResponse;
    CreateTopics: CreateTopicsRequest => CreateTopicsResponse;
    CreatePartitions: CreatePartitionsRequest => CreatePartitionsResponse;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse;
    DescribeAcls: DescribeAclsRequest => DescribeAclsResponse;
    CreateAcls: CreateAclsRequest => CreateAclsResponse;
    FindCoordinator: FindCoordinatorRequest => FindCoordinatorResponse;
    OffsetFetch: OffsetFetchRequest => OffsetFetchResponse;
    OffsetCommit: OffsetCommitRequest => OffsetCommitResponse;
    InitProducerId: InitProducerIdRequest => InitProducerIdResponse;
    AddPartitionsToTxn: AddPartitionsToTxnRequest => AddPartitionsToTxnResponse;
    AddOffsetsToTxn: AddOffsetsToTxnRequest => AddOffsetsToTxnResponse;
    TxnOffsetCommit: TxnOffsetCommitRequest => TxnOffsetCommitResponse;
    EndTxn: EndTxnRequest => EndTxnResponse;
    ListGroups: ListGroupsRequest => ListGroupsResponse;
    DescribeGroups: DescribeGroupsRequest => DescribeGroupsResponse;
    JoinGroup: JoinGroupRequest => JoinGroupResponse;
    SyncGroup: SyncGroupRequest => SyncGroupResponse;
    Heartbeat: HeartbeatRequest => HeartbeatResponse;
    LeaveGroup: LeaveGroupRequest => LeaveGroupResponse;
    DeleteRecords: DeleteRecordsRequest => DeleteRecordsResponse;
    DeleteTopics: DeleteTopicsRequest => DeleteTopicsResponse;
}

unthrottled_api_requests! {
    SaslHandshake: SaslHandshakeRequest => SaslHandshakeResponse;
    SaslAuthenticate: SaslAuthenticateRequest => SaslAuthenticateResponse;
}

/// The version both sides speak: the highest version in both ranges.
///
/// `None` when the ranges do not overlap; the caller names the API and both ranges.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Option<i16> {
    let common = ours.intersect(&theirs);
    (!common.is_empty()).then_some(common.max)
}

/// Encodes `request` with its header into one frame, size prefix included.
pub fn encode_request<R: ApiRequest>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &StrBytes,
) -> Result<Bytes, ProtocolError> {
    let encode_error =
        |reason: anyhow::Error| ProtocolError::Encode { api: R::NAME, version, reason: reason.to_string() };
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id.clone()));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version).map_err(encode_error)?
        + request.compute_size(version).map_err(encode_error)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(
        i32::try_from(size).map_err(|_| ProtocolError::FrameSize { size: size as i64, limit: i32::MAX as usize })?,
    );
    header.encode(&mut buf, header_version).map_err(encode_error)?;
    request.encode(&mut buf, version).map_err(encode_error)?;
    Ok(buf.freeze())
}

/// The correlation id of a response frame: its first four bytes in every header version.
pub fn response_correlation_id(frame: &[u8]) -> Result<i32, ProtocolError> {
    match frame.get(..4) {
        Some(id) => Ok(i32::from_be_bytes([id[0], id[1], id[2], id[3]])),
        None => Err(ProtocolError::ShortResponse { len: frame.len() }),
    }
}

/// Decodes a response frame (header and body) that answers an `R` sent at `version`.
///
/// Record data in Fetch responses stays a slice of `frame`: nothing is copied.
pub fn decode_response<R: ApiRequest>(mut frame: Bytes, version: i16) -> Result<R::Response, ProtocolError> {
    let decode_error =
        |reason: anyhow::Error| ProtocolError::Decode { api: R::NAME, version, reason: reason.to_string() };
    ResponseHeader::decode(&mut frame, R::Response::header_version(version)).map_err(decode_error)?;
    let response = R::Response::decode(&mut frame, version).map_err(decode_error)?;
    if !frame.is_empty() {
        return Err(ProtocolError::TrailingBytes { api: R::NAME, version, left: frame.len() });
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    #[test]
    fn negotiation_takes_highest_common_version() {
        let ours = VersionRange { min: 4, max: 17 };
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 12 }), Some(12));
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 20 }), Some(17));
        assert_eq!(negotiate(ours, VersionRange { min: 0, max: 3 }), None);
    }

    #[test]
    fn request_frame_carries_size_key_version_and_correlation_id() {
        let frame = encode_request(&ApiVersionsRequest::default(), 0, 77, &StrBytes::from_static_str("t")).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(size as usize, frame.len() - 4);
        assert_eq!(i16::from_be_bytes(frame[4..6].try_into().unwrap()), ApiKey::ApiVersions as i16);
        assert_eq!(i16::from_be_bytes(frame[6..8].try_into().unwrap()), 0);
        assert_eq!(i32::from_be_bytes(frame[8..12].try_into().unwrap()), 77);
    }

    #[test]
    fn short_and_garbage_responses_are_errors_not_panics() {
        assert!(matches!(response_correlation_id(&[0, 1]), Err(ProtocolError::ShortResponse { len: 2 })));
        let garbage = Bytes::from_static(&[0, 0, 0, 1, 0xff, 0xff, 0xff]);
        assert!(decode_response::<ApiVersionsRequest>(garbage, 3).is_err());
    }

    #[test]
    fn huge_array_count_is_an_error_not_an_allocation() {
        // Found by fuzz/response_decode: 11 bytes claiming ~10^9 topics in a ProduceResponse
        // (v3: correlation id, then an Int32 topic count of 0x6b000009) made kafka-protocol
        // reserve 172 GB, and the failed allocation aborted the process
        // (fixed in vendor/kafka-protocol).
        let frame = Bytes::from_static(&[0, 0, 0, 0, 0x6b, 0, 0, 0x09, 0x04]);
        assert!(decode_response::<m::ProduceRequest>(frame, 3).is_err());
    }
}
