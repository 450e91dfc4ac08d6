//! One blocking Kafka connection: framing, correlation ids and API version negotiation.
//!
//! Wire format (Kafka protocol guide): every message is an i32 big-endian size followed by that
//! many bytes; a request is a `RequestHeader` (header version from the API and its version) and
//! the body; a response is a `ResponseHeader` and the body. Invariants:
//! - a response frame's size is checked against `RESPONSE_BYTES_MAX` before anything is allocated;
//! - every response's correlation id must equal the request's (one request in flight at a time);
//! - each API is spoken at min(our max, broker max), so the same client works against Spool and
//!   Apache Kafka 4.x; the connection refuses to send an API neither side can agree on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::error::CliError;

/// Largest response frame accepted. Fetch asks for at most `FETCH_BYTES_MAX` (8 MiB), but a
/// broker may exceed it to return one whole oversized batch; 256 MiB bounds memory regardless.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// How long a connect, a write or a read may stall before the command fails.
pub const SOCKET_TIMEOUT_MS: u64 = 30_000;
const CLIENT_ID: &str = "spool-cli";

/// Highest version of each API this client sends. The crate can encode newer ones, but these are
/// the last versions that address topics by name (Produce v13 and Fetch v13 switch to topic ids,
/// as do OffsetCommit v10 and OffsetFetch v10, whose requests the crate cannot encode).
fn version_cap(api: ApiKey) -> i16 {
    match api {
        ApiKey::Produce | ApiKey::Fetch => 12,
        ApiKey::OffsetCommit | ApiKey::OffsetFetch => 9,
        _ => i16::MAX,
    }
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    /// The broker's advertised (min, max) per API key, from ApiVersions.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects and negotiates API versions.
    pub fn open(addr: &str) -> Result<Connection, CliError> {
        let mut conn = Connection::connect(addr)?;
        let versions = match conn.api_versions(3) {
            Ok(v) => v,
            // A broker too old for v3 cannot parse a flexible header; v0 is universally understood.
            Err(_) => {
                conn = Connection::connect(addr)?;
                conn.api_versions(0)?
            }
        };
        conn.broker_versions = versions;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn connect(addr: &str) -> Result<Connection, CliError> {
        let connect_err = |source| CliError::Connect {
            addr: addr.to_string(),
            source,
        };
        let timeout = Duration::from_millis(SOCKET_TIMEOUT_MS);
        let mut last = None;
        for sock in addr.to_socket_addrs().map_err(connect_err)? {
            match TcpStream::connect_timeout(&sock, timeout) {
                Ok(stream) => {
                    let io_err = |source| CliError::Io {
                        addr: addr.to_string(),
                        source,
                    };
                    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
                    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
                    stream.set_nodelay(true).map_err(io_err)?;
                    return Ok(Connection {
                        addr: addr.to_string(),
                        stream,
                        correlation_id: 0,
                        broker_versions: HashMap::new(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        let source = last.unwrap_or_else(|| std::io::Error::other("address resolved to nothing"));
        Err(connect_err(source))
    }

    fn api_versions(&mut self, version: i16) -> Result<HashMap<i16, (i16, i16)>, CliError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_string(CLIENT_ID.to_string()))
            .with_client_software_version(StrBytes::from_string(
                env!("CARGO_PKG_VERSION").to_string(),
            ));
        let resp: ApiVersionsResponse = self.send_version(&req, version)?;
        if resp.error_code != 0 {
            return Err(CliError::kafka(
                format!("ApiVersions to {}", self.addr),
                resp.error_code,
                None,
            ));
        }
        Ok(resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect())
    }

    /// The version this connection speaks for `api`: the highest both sides support.
    pub fn version_for(&self, api: ApiKey) -> Result<i16, CliError> {
        let ours = api.valid_versions();
        let ours_max = ours.max.min(version_cap(api));
        let unsupported = || CliError::Unsupported {
            addr: self.addr.clone(),
            api,
            ours_min: ours.min,
            ours_max,
        };
        let &(theirs_min, theirs_max) = self
            .broker_versions
            .get(&(api as i16))
            .ok_or_else(unsupported)?;
        let version = ours_max.min(theirs_max);
        if version < ours.min || version < theirs_min {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// Sends `req` at the negotiated version and waits for its response.
    pub fn send<R: Request>(&mut self, req: &R) -> Result<(R::Response, i16), CliError> {
        let version = self.version_for(api_key::<R>())?;
        Ok((self.send_version(req, version)?, version))
    }

    /// Sends `req` without reading a response: only for Produce with acks=0, where the broker
    /// sends none.
    pub fn send_oneway<R: Request>(&mut self, req: &R) -> Result<i16, CliError> {
        let version = self.version_for(api_key::<R>())?;
        self.write_request(req, version)?;
        Ok(version)
    }

    fn send_version<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response, CliError> {
        let correlation_id = self.write_request(req, version)?;
        let frame = self.read_frame()?;
        decode_response::<R>(frame, version, correlation_id, &self.addr)
    }

    fn write_request<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, CliError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_request(req, version, self.correlation_id)?;
        let addr = &self.addr;
        self.stream
            .write_all(&frame)
            .map_err(|source| CliError::Io {
                addr: addr.clone(),
                source,
            })?;
        Ok(self.correlation_id)
    }

    fn read_frame(&mut self) -> Result<BytesMut, CliError> {
        let io_err = |source| CliError::Io {
            addr: self.addr.clone(),
            source,
        };
        let mut size_buf = [0u8; 4];
        self.stream.read_exact(&mut size_buf).map_err(io_err)?;
        let size = i32::from_be_bytes(size_buf);
        let len = checked_frame_len(size, &self.addr)?;
        let mut frame = BytesMut::zeroed(len);
        self.stream.read_exact(&mut frame).map_err(io_err)?;
        Ok(frame)
    }
}

fn api_key<R: Request>() -> ApiKey {
    // Request::KEY comes from the same generated table as ApiKey, so this cannot fail.
    ApiKey::try_from(R::KEY)
        .unwrap_or_else(|_| unreachable!("request key {} has no ApiKey", R::KEY))
}

/// Validates a response's size prefix before it is used to allocate.
fn checked_frame_len(size: i32, addr: &str) -> Result<usize, CliError> {
    // A response holds at least a 4-byte correlation id.
    match usize::try_from(size) {
        Ok(len) if (4..=RESPONSE_BYTES_MAX).contains(&len) => Ok(len),
        _ => Err(CliError::FrameSize {
            addr: addr.to_string(),
            size: i64::from(size),
            max: RESPONSE_BYTES_MAX,
        }),
    }
}

/// The complete request frame: size prefix, header, body.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
) -> Result<BytesMut, CliError> {
    let api = api_key::<R>();
    let encode_err = encode_error(api, version);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(CLIENT_ID.to_string())));
    let header_version = api.request_header_version(version);
    let size = header.compute_size(header_version).map_err(&encode_err)?
        + req.compute_size(version).map_err(&encode_err)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    let size_i32 = i32::try_from(size).map_err(|_| CliError::Encode {
        api,
        version,
        reason: format!("{size} bytes"),
    })?;
    buf.extend_from_slice(&size_i32.to_be_bytes());
    header
        .encode(&mut buf, header_version)
        .map_err(&encode_err)?;
    req.encode(&mut buf, version).map_err(&encode_err)?;
    assert_eq!(
        buf.len(),
        4 + size,
        "compute_size disagrees with encode for {api:?} v{version}"
    );
    Ok(buf)
}

/// Decodes a response frame (without its size prefix) and checks its correlation id.
pub fn decode_response<R: Request>(
    mut frame: BytesMut,
    version: i16,
    correlation_id: i32,
    addr: &str,
) -> Result<R::Response, CliError> {
    let api = api_key::<R>();
    let decode_err = decode_error(api, version, addr);
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(&decode_err)?;
    if header.correlation_id != correlation_id {
        return Err(CliError::Correlation {
            addr: addr.to_string(),
            expected: correlation_id,
            got: header.correlation_id,
        });
    }
    let resp = R::Response::decode(&mut frame, version).map_err(&decode_err)?;
    if frame.has_remaining() {
        // Trailing bytes mean we and the broker disagree about the schema: do not trust the result.
        let reason = format!("{} unread trailing bytes", frame.remaining());
        return Err(CliError::Decode {
            api,
            version,
            addr: addr.to_string(),
            reason,
        });
    }
    Ok(resp)
}

// The codec reports anyhow errors; these keep only their text, without depending on anyhow.
fn encode_error<E: std::fmt::Display>(api: ApiKey, version: i16) -> impl Fn(E) -> CliError {
    move |e| CliError::Encode {
        api,
        version,
        reason: e.to_string(),
    }
}

fn decode_error<E: std::fmt::Display>(
    api: ApiKey,
    version: i16,
    addr: &str,
) -> impl Fn(E) -> CliError + '_ {
    move |e| CliError::Decode {
        api,
        version,
        addr: addr.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

    #[test]
    fn request_frame_layout() {
        // ApiVersions v3 uses request header v2: key, version, correlation id, client id, tags.
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_string("a".into()))
            .with_client_software_version(StrBytes::from_string("1".into()));
        let frame = encode_request(&req, 3, 7).expect("encode");
        let mut expected = vec![];
        let body: &[u8] = &[
            0, 18, 0, 3, 0, 0, 0, 7, // api key 18, version 3, correlation 7
            0, 9, b's', b'p', b'o', b'o', b'l', b'-', b'c', b'l',
            b'i', // client id (i16 length)
            0,    // header tagged fields
            2, b'a', 2, b'1', 0, // compact strings, body tagged fields
        ];
        expected.extend_from_slice(&(body.len() as i32).to_be_bytes());
        expected.extend_from_slice(body);
        assert_eq!(&frame[..], &expected[..]);
    }

    #[test]
    fn response_round_trip_and_correlation_check() {
        for version in [1i16, 9, 12] {
            let resp = MetadataResponse::default().with_controller_id(1.into());
            let header = ResponseHeader::default().with_correlation_id(42);
            let mut buf = BytesMut::new();
            header
                .encode(&mut buf, ApiKey::Metadata.response_header_version(version))
                .expect("header");
            resp.encode(&mut buf, version).expect("body");
            let ok =
                decode_response::<MetadataRequest>(buf.clone(), version, 42, "t").expect("decode");
            assert_eq!(ok.controller_id, 1);
            let err = decode_response::<MetadataRequest>(buf.clone(), version, 43, "t");
            assert!(matches!(
                err,
                Err(CliError::Correlation {
                    expected: 43,
                    got: 42,
                    ..
                })
            ));
            buf.extend_from_slice(&[0]);
            assert!(matches!(
                decode_response::<MetadataRequest>(buf, version, 42, "t"),
                Err(CliError::Decode { .. })
            ));
        }
    }

    #[test]
    fn frame_sizes_are_bounded() {
        assert!(checked_frame_len(-1, "t").is_err());
        assert!(checked_frame_len(0, "t").is_err());
        assert!(checked_frame_len(3, "t").is_err());
        assert_eq!(checked_frame_len(4, "t").expect("min"), 4);
        assert!(checked_frame_len(i32::MAX, "t").is_err());
    }

    #[test]
    fn version_negotiation_takes_the_common_maximum() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let mut conn = Connection::connect(&addr).expect("connect");
        conn.broker_versions
            .insert(ApiKey::Metadata as i16, (0, 11));
        conn.broker_versions.insert(ApiKey::Fetch as i16, (4, 17));
        conn.broker_versions
            .insert(ApiKey::CreateTopics as i16, (2, 3));
        conn.broker_versions
            .insert(ApiKey::DeleteTopics as i16, (7, 9));
        assert_eq!(conn.version_for(ApiKey::Metadata).expect("metadata"), 11);
        assert_eq!(
            conn.version_for(ApiKey::Fetch).expect("fetch"),
            12,
            "capped: v13 drops topic names"
        );
        assert_eq!(conn.version_for(ApiKey::CreateTopics).expect("create"), 3);
        assert!(
            conn.version_for(ApiKey::DeleteTopics).is_err(),
            "no common version"
        );
        assert!(conn.version_for(ApiKey::Produce).is_err(), "not advertised");
    }
}
