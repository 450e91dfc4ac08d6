//! Kafka connections for the load generator: framing, version negotiation, and a pipelined
//! split into a writing half (the producer's or consumer's thread) and a reading half.
//!
//! Every API is spoken at min(our cap, the broker's max), so the same client drives Spool and
//! Apache Kafka 4.x identically. Response frames are size-checked before allocation.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::error::BenchError;

/// Largest response accepted: a Fetch asks for at most `fetchMaxBytes` (capped below this).
pub const RESPONSE_BYTES_MAX: usize = 128 * 1024 * 1024;
/// A broker that stops answering for this long fails the run rather than hanging it.
pub const SOCKET_TIMEOUT_MS: u64 = 60_000;
const CLIENT_ID: &str = "spool-bench";

/// Highest version sent per API: Produce and Fetch v13 address topics by id, which this client
/// does not track; v12 is served by Spool and every Kafka 4.x.
fn version_cap(api: ApiKey) -> i16 {
    match api {
        ApiKey::Produce | ApiKey::Fetch => 12,
        _ => i16::MAX,
    }
}

pub fn api_key<R: Request>() -> ApiKey {
    // Request::KEY comes from the same generated table as ApiKey.
    ApiKey::try_from(R::KEY)
        .unwrap_or_else(|_| unreachable!("request key {} has no ApiKey", R::KEY))
}

pub struct Conn {
    pub addr: String,
    stream: TcpStream,
    correlation_id: i32,
    versions: HashMap<i16, (i16, i16)>,
}

impl Conn {
    pub fn connect(addr: &str) -> Result<Conn, BenchError> {
        let stream =
            TcpStream::connect(addr).map_err(BenchError::io(format!("connecting to {addr}")))?;
        let timeout = Some(Duration::from_millis(SOCKET_TIMEOUT_MS));
        let setup = |s: &TcpStream| -> std::io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(timeout)?;
            s.set_write_timeout(timeout)
        };
        setup(&stream).map_err(BenchError::io(format!("configuring socket to {addr}")))?;
        let mut conn = Conn {
            addr: addr.to_string(),
            stream,
            correlation_id: 0,
            versions: HashMap::new(),
        };
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(CLIENT_ID))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp: ApiVersionsResponse = conn.call_version(&req, 3)?;
        if resp.error_code != 0 {
            return Err(BenchError::Kafka {
                what: format!("ApiVersions to {addr}"),
                code: resp.error_code,
                message: None,
            });
        }
        conn.versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(conn)
    }

    /// The version this connection speaks for `api`.
    pub fn version_for(&self, api: ApiKey) -> Result<i16, BenchError> {
        let ours = api.valid_versions();
        let ours_max = ours.max.min(version_cap(api));
        let &(min, max) = self
            .versions
            .get(&(api as i16))
            .ok_or_else(|| BenchError::Protocol(format!("{} does not serve {api:?}", self.addr)))?;
        let v = ours_max.min(max);
        if v < ours.min || v < min {
            return Err(BenchError::Protocol(format!(
                "no common version of {api:?} with {} (broker {min}..={max})",
                self.addr
            )));
        }
        Ok(v)
    }

    /// One request, waiting for its response (admin calls and the consumer's fetches).
    pub fn call<R: Request>(&mut self, req: &R) -> Result<R::Response, BenchError> {
        let v = self.version_for(api_key::<R>())?;
        self.call_version(req, v)
    }

    fn call_version<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, BenchError> {
        let corr = self.send_version(req, version)?;
        let frame = read_frame(&mut self.stream, &self.addr)?;
        decode_response::<R>(frame, version, corr)
    }

    /// The correlation id the next request will carry.
    pub fn next_correlation_id(&self) -> i32 {
        self.correlation_id.wrapping_add(1)
    }

    /// Writes a request without reading; returns its correlation id. A failed write shuts the
    /// socket down, so a reader thread blocked on it wakes with an error instead of a timeout.
    pub fn send_version<R: Request>(&mut self, req: &R, version: i16) -> Result<i32, BenchError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = encode_request(req, version, self.correlation_id)?;
        if let Err(e) = self.stream.write_all(&frame) {
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
            return Err(BenchError::Io {
                what: format!("writing to {}", self.addr),
                source: e,
            });
        }
        Ok(self.correlation_id)
    }

    /// A second handle on the socket for a thread that only reads responses.
    pub fn reader(&self) -> Result<FrameReader, BenchError> {
        let stream = self
            .stream
            .try_clone()
            .map_err(BenchError::io(format!("cloning socket to {}", self.addr)))?;
        Ok(FrameReader {
            addr: self.addr.clone(),
            stream,
        })
    }
}

pub struct FrameReader {
    pub addr: String,
    stream: TcpStream,
}

impl FrameReader {
    pub fn read(&mut self) -> Result<BytesMut, BenchError> {
        read_frame(&mut self.stream, &self.addr)
    }
}

fn read_frame(stream: &mut TcpStream, addr: &str) -> Result<BytesMut, BenchError> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(BenchError::io(format!("reading from {addr}")))?;
    let size = i32::from_be_bytes(size);
    let len = match usize::try_from(size) {
        Ok(len) if (4..=RESPONSE_BYTES_MAX).contains(&len) => len,
        _ => {
            return Err(BenchError::Protocol(format!(
                "{addr} sent a {size}-byte response frame (allowed 4..={RESPONSE_BYTES_MAX})"
            )))
        }
    };
    // read_to_end fills spare capacity without zeroing it first (a zeroed 16 MiB fetch
    // response per call was 3% of the machine in the max-throughput run).
    let mut frame = Vec::with_capacity(len);
    let n = (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut frame)
        .map_err(BenchError::io(format!("reading from {addr}")))?;
    if n != len {
        return Err(BenchError::Protocol(format!(
            "{addr} closed the connection {n} bytes into a {len}-byte response"
        )));
    }
    Ok(BytesMut::from(Bytes::from(frame)))
}

pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
) -> Result<Bytes, BenchError> {
    let api = api_key::<R>();
    let err = |e: String| BenchError::Protocol(format!("encoding {api:?} v{version}: {e}"));
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let hv = api.request_header_version(version);
    let size = header.compute_size(hv).map_err(|e| err(e.to_string()))?
        + req.compute_size(version).map_err(|e| err(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.extend_from_slice(&(size as i32).to_be_bytes());
    header
        .encode(&mut buf, hv)
        .map_err(|e| err(e.to_string()))?;
    req.encode(&mut buf, version)
        .map_err(|e| err(e.to_string()))?;
    assert_eq!(
        buf.len(),
        4 + size,
        "compute_size disagrees with encode for {api:?} v{version}"
    );
    Ok(buf.freeze())
}

/// Decodes a response frame (size prefix already removed) and checks its correlation id.
pub fn decode_response<R: Request>(
    mut frame: BytesMut,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, BenchError> {
    let api = api_key::<R>();
    let err =
        |e: String| BenchError::Protocol(format!("decoding {api:?} v{version} response: {e}"));
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
        .map_err(|e| err(e.to_string()))?;
    if header.correlation_id != correlation_id {
        return Err(err(format!(
            "correlation id {} where {correlation_id} was expected",
            header.correlation_id
        )));
    }
    let resp = R::Response::decode(&mut frame, version).map_err(|e| err(e.to_string()))?;
    if frame.has_remaining() {
        return Err(err(format!("{} trailing bytes", frame.remaining())));
    }
    Ok(resp)
}
