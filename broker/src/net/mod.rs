//! Sockets: one SO_REUSEPORT listener per shard; each accepted connection lives and dies on the
//! shard that accepted it. The listeners open together once every shard is ready (`gate`), on an
//! address no other process listens on (`exclusive`).

pub mod connection;
pub mod exclusive;
pub mod gate;

use std::net::SocketAddr;
use std::rc::Rc;

use glommio::net::TcpListener;

use crate::runtime;
use crate::shard::Shard;

/// Connections one shard serves at once; beyond this, new ones are closed at accept.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;

/// Binds and listens on this shard's listener (glommio sets SO_REUSEPORT, so every shard binds
/// the same address and the kernel spreads connections across them).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| std::io::Error::other(e.to_string()))
}

pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                if shard.shutting_down.get() {
                    return;
                }
                tracing::warn!("accept failed: {e}");
                runtime::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.shutting_down.get() {
            return;
        }
        if open.get() >= CONNECTIONS_PER_SHARD_MAX {
            tracing::warn!("connection limit reached; closing new connection");
            continue;
        }
        let _ = stream.set_nodelay(true);
        open.set(open.get() + 1);
        let shard = shard.clone();
        let open = open.clone();
        runtime::spawn_detached(async move {
            connection::serve(shard, stream).await;
            open.set(open.get() - 1);
        });
    }
}
