//! Kafka request framing: a 4-byte big-endian size, then that many bytes of header and body.
//!
//! The size is checked against `request_bytes_max` (`socket.request.max.bytes`) *before* any
//! buffer for the body is allocated, so a hostile length prefix costs nothing.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// Kafka's default `socket.request.max.bytes`.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Bytes of the size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("request of {size} bytes exceeds socket.request.max.bytes {max}")]
    TooLarge { size: i64, max: usize },
    #[error("negative request size {size}")]
    NegativeSize { size: i32 },
    #[error("request header is truncated or malformed")]
    BadHeader,
    #[error("unknown api key {api_key}")]
    UnknownApiKey { api_key: i16 },
}

/// Parses the size prefix. `Ok(None)` means fewer than four bytes are buffered.
pub fn frame_size(buf: &[u8], request_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < SIZE_PREFIX_BYTES {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if size < 0 {
        return Err(FrameError::NegativeSize { size });
    }
    let size_usize = size as usize;
    if size_usize > request_bytes_max {
        return Err(FrameError::TooLarge {
            size: i64::from(size),
            max: request_bytes_max,
        });
    }
    Ok(Some(size_usize))
}

/// The fixed prefix every request header version starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id without decoding the rest, so that even a request
/// whose version we cannot decode can be answered with its correlation id.
pub fn peek_header_prefix(frame: &[u8]) -> Result<HeaderPrefix, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::BadHeader);
    }
    Ok(HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    })
}

/// Decodes the request header for a known API key and version, leaving `frame` at the body.
pub fn decode_request_header(frame: &mut Bytes) -> Result<RequestHeader, FrameError> {
    let prefix = peek_header_prefix(frame)?;
    let api_key = ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApiKey {
        api_key: prefix.api_key,
    })?;
    let header_version = api_key.request_header_version(prefix.api_version);
    RequestHeader::decode(frame, header_version).map_err(|_| FrameError::BadHeader)
}

/// Encodes a full response frame (size prefix, header, body) into one buffer.
pub fn encode_response<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, EncodeError> {
    let header_version = api_key.response_header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header
        .compute_size(header_version)
        .and_then(|h| body.compute_size(api_version).map(|b| h + b))
        .map_err(|e| EncodeError(e.to_string()))?;
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + size);
    out.extend_from_slice(&(size as i32).to_be_bytes());
    header
        .encode(&mut out, header_version)
        .map_err(|e| EncodeError(e.to_string()))?;
    body.encode(&mut out, api_version)
        .map_err(|e| EncodeError(e.to_string()))?;
    assert_eq!(
        out.len(),
        SIZE_PREFIX_BYTES + size,
        "compute_size disagrees with encode"
    );
    Ok(out.freeze())
}

/// A response could not be encoded: a field is out of range for the version.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode response: {0}")]
pub struct EncodeError(pub String);

/// Splits one complete frame (without its size prefix) off the front of `buf`, if the first
/// `filled` bytes hold one; bytes after `filled` are free space a reader has not filled yet.
pub fn split_frame(
    buf: &mut BytesMut,
    filled: usize,
    request_bytes_max: usize,
) -> Result<Option<Bytes>, FrameError> {
    assert!(filled <= buf.len(), "filled past the buffer");
    let Some(size) = frame_size(&buf[..filled], request_bytes_max)? else {
        return Ok(None);
    };
    if filled < SIZE_PREFIX_BYTES + size {
        return Ok(None);
    }
    buf.advance(SIZE_PREFIX_BYTES);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_prefix_cases() {
        let max = 1000;
        type Case<'a> = (&'a [u8], Result<Option<usize>, FrameError>);
        let cases: &[Case] = &[
            (&[0, 0, 0], Ok(None)),
            (&[0, 0, 0, 10], Ok(Some(10))),
            (&[0, 0, 3, 232], Ok(Some(1000))),
            (
                &[0, 0, 3, 233],
                Err(FrameError::TooLarge { size: 1001, max }),
            ),
            (
                &[255, 255, 255, 255],
                Err(FrameError::NegativeSize { size: -1 }),
            ),
            (
                &[127, 255, 255, 255],
                Err(FrameError::TooLarge {
                    size: i64::from(i32::MAX),
                    max,
                }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(&frame_size(input, max), expected, "input {input:?}");
        }
    }

    #[test]
    fn split_waits_for_whole_frame() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert_eq!(split_frame(&mut buf, 6, 100), Ok(None));
        buf.extend_from_slice(&[3, 0, 0]);
        let frame = split_frame(&mut buf, 9, 100)
            .expect("valid")
            .expect("complete");
        assert_eq!(&frame[..], &[1, 2, 3]);
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn split_ignores_space_after_the_filled_bytes() {
        // A complete frame's worth of bytes, but only five filled: the rest is unread space.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 0, 0, 0, 0][..]);
        assert_eq!(split_frame(&mut buf, 5, 100), Ok(None));
        assert_eq!(split_frame(&mut buf, 3, 100), Ok(None));
        let frame = split_frame(&mut buf, 7, 100)
            .expect("valid")
            .expect("complete");
        assert_eq!(&frame[..], &[1, 0, 0]);
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn header_prefix_needs_eight_bytes() {
        assert_eq!(peek_header_prefix(&[0; 7]), Err(FrameError::BadHeader));
        let p = peek_header_prefix(&[0, 18, 0, 3, 0, 0, 0, 7]).expect("ok");
        assert_eq!(
            p,
            HeaderPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 7
            }
        );
    }

    #[test]
    fn hostile_lengths_fail_without_allocating() {
        use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, ProduceRequest};
        // Metadata v4: topics array claims i32::MAX entries, none follow.
        let mut body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(MetadataRequest::decode(&mut body, 4).is_err());
        // Metadata v9 (flexible): compact array claims u32::MAX - 1 entries.
        let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(MetadataRequest::decode(&mut body, 9).is_err());
        // CreateTopics v2: one topic whose name claims 32767 bytes.
        let mut body = Bytes::from_static(&[0, 0, 0, 1, 0x7f, 0xff]);
        assert!(CreateTopicsRequest::decode(&mut body, 2).is_err());
        // Produce v3: records bytes claim 2 GiB.
        let mut body = Bytes::from_static(&[
            0xff, 0xff, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0x7f,
            0xff, 0xff, 0xff,
        ]);
        assert!(ProduceRequest::decode(&mut body, 3).is_err());
    }
}
