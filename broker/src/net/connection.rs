//! One client connection: a reader task that frames and dispatches requests, and a writer task
//! that sends responses strictly in request order while up to `queued.max.requests` are in flight.
//!
//! Fault model: a malformed frame (bad size, unknown API key, undecodable body for a version we
//! serve) closes this connection only, with a log line; it never touches another connection.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use spool_protocol::frame::{split_frame, FrameError, SIZE_PREFIX_BYTES};

use crate::kafka::{self, Outcome, Pending};
use crate::runtime::{self, Task};
use crate::shard::Shard;

/// Bytes read from the socket per read call when no larger frame is expected.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Request bytes one connection may have in flight (decoded, waiting for their responses)
/// before the reader stops reading; a single larger request is still admitted alone. Bounds the
/// memory a pipelining producer can pin, whatever `queued.max.requests` allows.
pub const INFLIGHT_REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most bytes one read call may add to the buffer, so a large announced frame costs memory only
/// as its bytes actually arrive.
const READ_BYTES_MAX: usize = 1024 * 1024;

/// The stream shared by the reader and writer tasks of one connection. Both run on the same
/// thread and a borrow never spans an await, so the `RefCell` cannot conflict; glommio keeps
/// separate read and write wakers.
#[derive(Clone)]
struct Shared(Rc<RefCell<TcpStream>>);

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let client_host: Rc<str> = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default()
        .into();
    let shared = Shared(Rc::new(RefCell::new(stream)));
    let (tx, rx) =
        runtime::new_bounded::<(Task<Outcome>, usize)>(shard.config.inflight_requests_max);
    let budget = Budget::new();
    let writer = runtime::spawn(write_loop(shared.clone(), rx, budget.clone()));
    if let Err(reason) = read_loop(&shard, &client_host, shared.clone(), tx, &budget).await {
        tracing::warn!(peer, "closing connection: {reason}");
    }
    // The writer finishes the responses already in flight, then stops.
    writer.await;
    let _ = shared.clone().close().await;
}

async fn read_loop(
    shard: &Rc<Shard>,
    client_host: &Rc<str>,
    mut stream: Shared,
    inflight: runtime::LocalSender<(Task<Outcome>, usize)>,
    budget: &Budget,
) -> Result<(), String> {
    let max = shard.config.socket_request_max_bytes;
    let mut buf = ReadBuffer::default();
    loop {
        let frame = loop {
            match buf.take_frame(max) {
                Ok(Some(frame)) => break frame,
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            // Size the read to the frame being assembled, already checked against `max`.
            let want = match spool_protocol::frame::frame_size(buf.filled(), max) {
                Ok(Some(size)) => (size + SIZE_PREFIX_BYTES - buf.filled().len())
                    .clamp(READ_CHUNK_BYTES, READ_BYTES_MAX),
                _ => READ_CHUNK_BYTES,
            };
            let n = match stream.read(buf.space(want)).await {
                Ok(n) => n,
                Err(e) => return Err(format!("read failed: {e}")),
            };
            buf.fill(n);
            if n == 0 {
                return if buf.filled().is_empty() {
                    Ok(())
                } else {
                    Err("connection closed mid-frame".into())
                };
            }
        };
        let size = frame.len();
        budget.reserve(size).await;
        let pending: Pending = kafka::dispatch(shard, client_host, frame)
            .await
            .map_err(|e| e.to_string())?;
        if inflight
            .send((runtime::spawn(pending), size))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

/// Received bytes not yet split into frames, followed by zeroed space the next read fills.
/// Safe Rust must initialise memory before a read may write it; keeping the zeroed space across
/// reads (instead of truncating it away) zeroes each byte once rather than once per read, which
/// for 1 MiB produce requests arriving 64 KiB at a time was 5% of the broker's CPU.
#[derive(Default)]
struct ReadBuffer {
    buf: BytesMut,
    filled: usize,
}

impl ReadBuffer {
    fn filled(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Splits one complete frame (without its size prefix) off the front, if there is one.
    fn take_frame(&mut self, request_bytes_max: usize) -> Result<Option<Bytes>, FrameError> {
        let frame = split_frame(&mut self.buf, self.filled, request_bytes_max)?;
        if let Some(frame) = &frame {
            self.filled -= SIZE_PREFIX_BYTES + frame.len();
        }
        Ok(frame)
    }

    /// At least `want` bytes of space after the filled bytes.
    fn space(&mut self, want: usize) -> &mut [u8] {
        if self.buf.len() < self.filled + want {
            // Growing may reallocate: carry only the filled bytes, not stale space.
            self.buf.truncate(self.filled);
            self.buf.resize(self.filled + want, 0);
        }
        &mut self.buf[self.filled..]
    }

    fn fill(&mut self, n: usize) {
        assert!(self.filled + n <= self.buf.len(), "read past the buffer");
        self.filled += n;
    }
}

async fn write_loop(
    mut stream: Shared,
    inflight: runtime::LocalReceiver<(Task<Outcome>, usize)>,
    budget: Budget,
) {
    while let Some((task, size)) = inflight.recv().await {
        let response = task.await;
        budget.release(size);
        let chunks: &[Bytes] = match &response {
            Outcome::Send(bytes) => std::slice::from_ref(bytes),
            Outcome::SendChunks(chunks) => chunks,
            Outcome::Silent => continue,
            Outcome::Close => {
                // Half-close: the client sees the connection end instead of waiting.
                budget.close();
                let _ = stream.close().await;
                return;
            }
        };
        for chunk in chunks {
            if let Err(e) = stream.write_all(chunk).await {
                tracing::debug!("write failed: {e}");
                budget.close();
                return;
            }
        }
    }
}

/// The connection's in-flight request bytes, shared by its reader and writer tasks (same thread).
#[derive(Clone)]
struct Budget {
    used: Rc<std::cell::Cell<usize>>,
    /// Set when the writer stopped: nothing will be released any more.
    closed: Rc<std::cell::Cell<bool>>,
    freed: Rc<(runtime::LocalSender<()>, runtime::LocalReceiver<()>)>,
}

impl Budget {
    fn new() -> Budget {
        Budget {
            used: Rc::new(std::cell::Cell::new(0)),
            closed: Rc::new(std::cell::Cell::new(false)),
            freed: Rc::new(runtime::new_bounded(1)),
        }
    }

    /// Waits until `size` more bytes fit, or nothing else is in flight.
    async fn reserve(&self, size: usize) {
        while !self.closed.get()
            && self.used.get() > 0
            && self.used.get() + size > INFLIGHT_REQUEST_BYTES_MAX
        {
            if self.freed.1.recv().await.is_none() {
                break;
            }
        }
        self.used.set(self.used.get() + size);
    }

    fn release(&self, size: usize) {
        assert!(
            self.used.get() >= size,
            "released more in-flight bytes than reserved"
        );
        self.used.set(self.used.get() - size);
        let _ = self.freed.0.try_send(());
    }

    fn close(&self) {
        self.closed.set(true);
        let _ = self.freed.0.try_send(());
    }
}
