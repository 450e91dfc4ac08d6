//! One TCP stream read by one task and written by another.

use std::cell::RefCell;
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// Both tasks run on the shard's thread and a borrow never spans an await (only a poll), so the
/// `RefCell` cannot conflict; glommio keeps separate read and write wakers.
#[derive(Clone)]
pub(super) struct SharedStream(Rc<RefCell<TcpStream>>);

impl SharedStream {
    pub(super) fn new(stream: TcpStream) -> SharedStream {
        // Raft RPCs are small and latency-bound (heartbeats, votes); never wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on an RPC connection: {e}");
        }
        SharedStream(Rc::new(RefCell::new(stream)))
    }

    pub(super) fn peer(&self) -> String {
        self.0
            .borrow()
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Ends both directions, so the other task's pending read or write fails promptly and the
    /// peer sees the connection close. The fd stays open until the last clone is dropped.
    pub(super) fn shutdown(&self) {
        // glommio's shutdown is a plain `shutdown(2)` behind an always-ready future, so
        // `block_on` returns at its first poll and the borrow never spans a suspension. An error
        // (already shut down, not connected) means there is nothing left to end.
        let stream = self.0.borrow();
        let _ = futures_lite::future::block_on(stream.shutdown(Shutdown::Both));
    }
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedStream {
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
