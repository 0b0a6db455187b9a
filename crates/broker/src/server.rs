//! The TCP server: every listener (plaintext or TLS), a bounded number of connections in all (each a
//! [`Connection`]) and graceful shutdown. At shutdown it stops accepting, drains the connections,
//! then closes the node. (Metrics are served by the HTTP edge, once-http, on `--http-listen` and
//! `--metrics-listen`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use once_node::listeners::Listener;
use once_node::Node;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::connection::{Connection, Stream};

/// How long shutdown waits for connections to finish what they were doing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_MAX: Duration = Duration::from_secs(10);

struct Bound {
    listener: Arc<Listener>,
    socket: TcpListener,
    /// For SSL and SASL_SSL listeners.
    tls: Option<TlsAcceptor>,
}

pub struct Server {
    node: Arc<Node>,
    bound: Vec<Bound>,
}

impl Server {
    /// Binds every listener of the node; a TLS listener without `--tls-cert`/`--tls-key`, or with
    /// unreadable ones, is an error naming them.
    pub async fn bind(node: Arc<Node>) -> std::io::Result<Server> {
        let needs_tls = node.listeners.iter().any(|listener| listener.protocol.tls());
        // Files given are checked even without a TLS listener: a mistake shows at start.
        let acceptors = match (&node.config.tls, needs_tls) {
            (Some(files), _) => Some((
                crate::tls::acceptor(files, true).map_err(std::io::Error::other)?,
                crate::tls::acceptor(files, false).map_err(std::io::Error::other)?,
            )),
            (None, true) => {
                return Err(std::io::Error::other("an SSL or SASL_SSL listener needs --tls-cert and --tls-key"))
            }
            (None, false) => None,
        };
        if node
            .listeners
            .iter()
            .any(|listener| listener.protocol == once_node::listeners::SecurityProtocol::SaslPlaintext)
        {
            tracing::warn!("a SASL_PLAINTEXT listener: PLAIN passwords and every record cross the network unencrypted; use SASL_SSL beyond loopback");
        }
        let client_ca = node.config.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some());
        if client_ca
            && node
                .listeners
                .iter()
                .any(|listener| listener.protocol == once_node::listeners::SecurityProtocol::SaslSsl)
        {
            tracing::info!("--tls-client-ca: client certificates are required on SSL listeners; SASL_SSL listeners authenticate with SASL and ask for none (as Kafka's)");
        }
        let mut bound = Vec::with_capacity(node.listeners.len());
        for listener in &node.listeners {
            let socket = TcpListener::bind(&listener.bind).await.map_err(|error| {
                std::io::Error::new(error.kind(), format!("{} {}: {error}", listener.name, listener.bind))
            })?;
            let tls = listener.protocol.tls().then(|| {
                let (ssl, sasl_ssl) = acceptors.clone().expect("built when a listener needs it");
                if listener.protocol.sasl() {
                    sasl_ssl
                } else {
                    ssl
                }
            });
            bound.push(Bound { listener: Arc::new(listener.clone()), socket, tls });
        }
        Ok(Server { node, bound })
    }

    /// The first listener's bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.bound[0].socket.local_addr()
    }

    /// Every listener with its bound address.
    pub fn local_addrs(&self) -> Vec<(Arc<Listener>, std::io::Result<SocketAddr>)> {
        self.bound.iter().map(|bound| (bound.listener.clone(), bound.socket.local_addr())).collect()
    }

    /// Serves until `shutdown` resolves, then drains connections and closes every log cleanly.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server { node, bound } = self;
        let (stop, stopping) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(node.config.connections_max));
        // Bytes of requests read but not yet answered, across all connections (queued.max.request.bytes).
        let request_budget = Arc::new(Semaphore::new(node.config.queued_request_bytes_max));
        let accepting: Vec<_> = bound
            .into_iter()
            .map(|bound| {
                let (node, connections, request_budget) = (node.clone(), connections.clone(), request_budget.clone());
                tokio::spawn(accept_loop(node, bound, connections, request_budget, stopping.clone()))
            })
            .collect();
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining");
        let _ = stop.send(true);
        for task in accepting {
            let _ = task.await;
        }
        node.stop_upkeep();
        let all = u32::try_from(node.config.connections_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await.is_err() {
            tracing::warn!("connections still busy after the grace period; closing logs anyway");
        }
        node.close().await;
        tracing::info!("shutdown complete; logs closed cleanly");
    }
}

/// Accepts on one listener until `stopping` changes; each connection runs on its own task.
async fn accept_loop(
    node: Arc<Node>,
    bound: Bound,
    connections: Arc<Semaphore>,
    request_budget: Arc<Semaphore>,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopping.changed() => return,
            accepted = bound.socket.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    node.connections.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%peer, limit = node.config.connections_max, "connection limit reached; closing new connection");
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let (node, listener, tls) = (node.clone(), bound.listener.clone(), bound.tls.clone());
                let (stopping, request_budget) = (stopping.clone(), request_budget.clone());
                node.connections.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                node.connections.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(async move {
                    if let Some((stream, certificate_subject)) = secure(socket, tls, peer, &listener).await {
                        Connection::new(node.clone(), stream, Some(peer), listener, request_budget)
                            .with_certificate_subject(certificate_subject)
                            .run(stopping)
                            .await;
                    }
                    node.connections.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    drop(permit);
                });
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The connection's stream: the socket itself, or TLS over it once the handshake succeeded (a
/// plaintext client on a TLS port fails here, logged at debug, and is closed), with the subject of
/// the client's certificate when it showed one (mTLS).
async fn secure(
    socket: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: SocketAddr,
    listener: &Listener,
) -> Option<(Box<dyn Stream>, Option<String>)> {
    let Some(acceptor) = tls else { return Some((Box::new(socket), None)) };
    match tokio::time::timeout(TLS_HANDSHAKE_MAX, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => {
            let subject = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| crate::tls::subject(leaf.as_ref()));
            Some((Box::new(stream), subject))
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, listener = %listener.name, %error, "TLS handshake failed; closing");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, listener = %listener.name, "TLS handshake timed out; closing");
            None
        }
    }
}
