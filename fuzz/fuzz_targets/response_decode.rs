//! Arbitrary bytes as what a broker sends back: the frame decoder, correlation-id read and
//! every response kferry decodes, at every version it may negotiate, must return a value or
//! a typed error, never panic. The first two input bytes pick the API and the version.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages as m;
use kafka_protocol::protocol::Message;
use kferry::protocol::api::{decode_response, response_correlation_id, ApiRequest};
use kferry::protocol::frame::decode_frame;
use libfuzzer_sys::fuzz_target;

fn decode<R: ApiRequest>(version_pick: u8, body: &[u8]) {
    let span = (R::VERSIONS.max - R::VERSIONS.min + 1) as u8;
    let version = R::VERSIONS.min + i16::from(version_pick % span);
    let _ = decode_response::<R>(Bytes::copy_from_slice(body), version);
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, 1 << 20) {
        let _ = response_correlation_id(&frame);
    }
    let [api, version, body @ ..] = data else { return };
    match api % 8 {
        0 => decode::<m::ApiVersionsRequest>(*version, body),
        1 => decode::<m::MetadataRequest>(*version, body),
        2 => decode::<m::DescribeClusterRequest>(*version, body),
        3 => decode::<m::ListOffsetsRequest>(*version, body),
        4 => decode::<m::ProduceRequest>(*version, body),
        5 => decode::<m::FetchRequest>(*version, body),
        6 => decode::<m::DescribeConfigsRequest>(*version, body),
        _ => decode::<m::CreateTopicsRequest>(*version, body),
    }
});
