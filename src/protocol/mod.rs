//! The Kafka wire protocol as bytes: no sockets, no tokio, no policy.
//!
//! This layer owns what a byte sequence means: the size-prefixed [`frame`]s, the request and
//! response headers and version negotiation rules in [`api`], the v2 record-batch header view
//! in [`batch`], and the broker error-code table in [`error_code`]. Message bodies come from
//! the `kafka-protocol` crate; its `anyhow` errors are wrapped here into [`ProtocolError`]
//! so callers see one typed error per layer. Everything here is what `fuzz/` targets.

pub mod api;
pub mod batch;
pub mod error_code;
pub mod frame;
pub mod records;
pub mod versions;

/// A byte sequence that is not what the Kafka protocol says it should be.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame's size prefix is negative or larger than the configured limit.
    #[error("frame size {size} is outside 0..={limit} bytes")]
    FrameSize { size: i64, limit: usize },
    /// A response too short to hold even its correlation id.
    #[error("response frame of {len} bytes is too short for a response header")]
    ShortResponse { len: usize },
    /// The message body could not be encoded at the negotiated version.
    #[error("cannot encode {api} v{version}: {reason}")]
    Encode { api: &'static str, version: i16, reason: String },
    /// The message body could not be decoded at the negotiated version.
    #[error("cannot decode {api} v{version} response: {reason}")]
    Decode { api: &'static str, version: i16, reason: String },
    /// A response body left bytes unread: the version or the framing is wrong.
    #[error("{api} v{version} response has {left} unexpected trailing bytes")]
    TrailingBytes { api: &'static str, version: i16, left: usize },
}
