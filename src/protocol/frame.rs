//! Size-prefixed framing: every Kafka request and response is a big-endian `i32` length
//! followed by that many bytes.
//!
//! Decoding is check-then-parse (as in mini-redis): an incomplete frame is a normal state
//! that asks for more bytes, not an error. Only a size that can never be valid is an error,
//! and it is detected before any allocation so a corrupt or hostile peer cannot make us
//! reserve gigabytes.

use bytes::{Buf, Bytes, BytesMut};

use super::ProtocolError;

/// Bytes taken by the size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// Splits the first complete frame (without its size prefix) off `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame; `buf` is then left as it
/// was, with room reserved for the rest of the frame.
pub fn decode_frame(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Bytes>, ProtocolError> {
    let Some(size_bytes) = buf.get(..SIZE_PREFIX_BYTES) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]);
    let size = usize::try_from(size)
        .ok()
        .filter(|&size| size <= max_frame_bytes)
        .ok_or(ProtocolError::FrameSize { size: size.into(), limit: max_frame_bytes })?;
    let whole = SIZE_PREFIX_BYTES + size;
    if buf.len() < whole {
        buf.reserve(whole - buf.len());
        return Ok(None);
    }
    buf.advance(SIZE_PREFIX_BYTES);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
        buf.extend_from_slice(body);
        buf
    }

    #[test]
    fn incomplete_prefix_and_body_wait_for_more() {
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert_eq!(decode_frame(&mut buf, 100).unwrap(), None);
        let mut buf = framed(b"hello");
        buf.truncate(7);
        assert_eq!(decode_frame(&mut buf, 100).unwrap(), None);
        assert_eq!(buf.len(), 7, "an incomplete frame is left untouched");
    }

    #[test]
    fn splits_consecutive_frames() {
        let mut buf = framed(b"one");
        buf.extend_from_slice(&framed(b"three"));
        assert_eq!(decode_frame(&mut buf, 100).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(decode_frame(&mut buf, 100).unwrap().unwrap(), &b"three"[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_negative_and_oversized_frames() {
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert!(matches!(decode_frame(&mut buf, 100), Err(ProtocolError::FrameSize { size: -1, .. })));
        let mut buf = BytesMut::from(&(101i32).to_be_bytes()[..]);
        assert!(matches!(decode_frame(&mut buf, 100), Err(ProtocolError::FrameSize { size: 101, limit: 100 })));
    }
}
