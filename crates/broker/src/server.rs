//! The TCP server: a bounded number of connections (each a [`Connection`]) and graceful shutdown. At
//! shutdown it stops accepting, drains the connections, then closes the node. (Metrics are served by
//! the HTTP edge, once-http, on `--http-listen` and `--metrics-listen`.)

use std::sync::Arc;
use std::time::Duration;

use once_node::Node;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::connection::Connection;

/// How long shutdown waits for connections to finish what they were doing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
}

impl Server {
    pub async fn bind(node: Arc<Node>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(&node.config.listen).await?;
        Ok(Server { node, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains connections and closes every log cleanly.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server { node, listener } = self;
        let (stop, stopping) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(node.config.connections_max));
        // Bytes of requests read but not yet answered, across all connections (queued.max.request.bytes).
        let request_budget = Arc::new(Semaphore::new(node.config.queued_request_bytes_max));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, limit = node.config.connections_max, "connection limit reached; closing new connection");
                            drop(socket);
                            continue;
                        };
                        let _ = socket.set_nodelay(true);
                        let node = node.clone();
                        let stopping = stopping.clone();
                        let request_budget = request_budget.clone();
                        tokio::spawn(async move {
                            Connection::new(node, socket, request_budget).run(stopping).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::info!("shutting down: no new connections; draining");
        drop(listener);
        let _ = stop.send(true);
        node.stop_upkeep();
        let all = u32::try_from(node.config.connections_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await.is_err() {
            tracing::warn!("connections still busy after the grace period; closing logs anyway");
        }
        node.close().await;
        tracing::info!("shutdown complete; logs closed cleanly");
    }
}
