//! Where and how the HTTP edge listens: `--http-listen [http://|https://]HOST:PORT` ([`ListenAddress`]),
//! plain TCP or TLS ([`TlsListener`]: rustls from the broker's `--tls-cert`/`--tls-key`, built by
//! once-tls as for the Kafka listeners), and the peer address every request carries ([`Peer`]).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over its TLS handshake (as on the Kafka listeners).
const TLS_HANDSHAKE_MAX: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past it, each new connection evicts the oldest handshake still
/// in progress (a client that completes its handshake takes milliseconds, so idle connections held
/// open to use up the slots are what gets evicted: they cannot keep HTTPS from others).
const TLS_HANDSHAKES_MAX: usize = 256;

/// Plain HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed `--http-listen` (or `--metrics-listen`) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub scheme: Scheme,
    /// `HOST:PORT`, as given.
    pub address: String,
}

impl ListenAddress {
    /// `https://HOST:PORT` is HTTPS; `http://HOST:PORT` and a bare `HOST:PORT` (as before HTTPS
    /// existed) are plain HTTP. A path or another scheme is refused.
    pub fn parse(text: &str) -> Result<ListenAddress, String> {
        let (scheme, address) = match text.split_once("://") {
            None => (Scheme::Http, text),
            Some((scheme, address)) if scheme.eq_ignore_ascii_case("http") => (Scheme::Http, address),
            Some((scheme, address)) if scheme.eq_ignore_ascii_case("https") => (Scheme::Https, address),
            Some((scheme, _)) => return Err(format!("'{text}': the scheme '{scheme}' is neither http nor https")),
        };
        let address = address.strip_suffix('/').unwrap_or(address);
        if address.is_empty() || address.contains('/') || !address.contains(':') {
            return Err(format!("'{text}' is not [http://|https://]HOST:PORT"));
        }
        Ok(ListenAddress { scheme, address: address.to_string() })
    }
}

/// The acceptor for HTTPS: the broker's certificate and key, no client certificate asked for (callers
/// authenticate with Basic credentials), HTTP/1.1 offered by ALPN.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let mut config = once_tls::server_config(cert, key, None)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The address a request came from: what ACL host patterns match and failed logins name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Peer {
    /// Whether the connection came from this host (127.0.0.0/8, ::1, or ::ffff:127.x.x.x): a
    /// plaintext request from it never crossed a network.
    pub fn is_loopback(&self) -> bool {
        is_loopback(self.0.ip())
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether a `Host` header names this host by a loopback address or `localhost` (any port).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// `router` answering only requests whose Host names this host ([`loopback_host_guard`]): for a
/// listener bound to a loopback address.
pub fn loopback_hosts_only(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(loopback_host_guard))
}

/// Middleware for a listener bound to a loopback address: a request must name this host
/// (`Host: 127.0.0.1:…`, `localhost:…`, `[::1]:…`). A web page a developer visits can point its
/// own domain name at 127.0.0.1 (DNS rebinding) and then read the console's records as a
/// same-origin page; it cannot make the browser send one of these Host values. A local reverse
/// proxy passes the upstream's address as Host by default (nginx's `$proxy_host`).
pub async fn loopback_host_guard(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let host = request.headers().get(axum::http::header::HOST).and_then(|value| value.to_str().ok());
    match host {
        Some(host) if !is_loopback_host(host) => crate::problem::Problem::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "host-not-local",
            "This listener answers only requests naming this host",
            format!("Host '{host}' is not a loopback address or localhost: the listener is bound to loopback"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

/// A TCP listener whose connections are served after a TLS handshake. Handshakes run concurrently
/// (a slow client does not hold up the others), each for at most 10 s, at most 256 at once (the
/// oldest evicted for a newcomer); a failed one closes its connection and is logged at debug level.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Dropped with the listener, which aborts the handshakes in progress.
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
    /// The handshakes' abort handles, oldest first (some may have finished).
    started: VecDeque<AbortHandle>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        TlsListener { tcp, acceptor, handshakes: JoinSet::new(), started: VecDeque::new() }
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        self.started.retain(|handle| !handle.is_finished());
        while self.started.len() >= TLS_HANDSHAKES_MAX {
            let oldest = self.started.pop_front().expect("not empty");
            oldest.abort();
            tracing::debug!(%peer, "HTTPS: {TLS_HANDSHAKES_MAX} handshakes in progress; the oldest is closed for this one");
        }
        let acceptor = self.acceptor.clone();
        let handle = self.handshakes.spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_MAX, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "HTTPS: TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTPS: TLS handshake timed out");
                    None
                }
            }
        });
        self.started.push_back(handle);
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: a handshake started stays in the set.
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, peer)) => self.start_handshake(stream, peer),
                    Err(error) => {
                        // As axum's own TCP listener: a reset is the client's; anything else (EMFILE)
                        // is worth a line and a pause rather than a busy loop.
                        if !matches!(
                            error.kind(),
                            std::io::ErrorKind::ConnectionRefused
                                | std::io::ErrorKind::ConnectionAborted
                                | std::io::ErrorKind::ConnectionReset
                        ) {
                            tracing::error!(%error, "HTTPS: accept failed");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(established)) = done {
                        return established;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serves `router` on `listener` — through TLS with `tls` — until `shutdown` completes, then finishes
/// the requests in progress. Handlers see each request's [`Peer`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = router.into_make_service_with_connect_info::<Peer>();
    match tls {
        None => axum::serve(listener, service).with_graceful_shutdown(shutdown).await,
        Some(acceptor) => {
            axum::serve(TlsListener::new(listener, acceptor), service).with_graceful_shutdown(shutdown).await
        }
    }
}

#[cfg(test)]
mod host_tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_names_pass() {
        for good in ["127.0.0.1:8082", "127.0.0.1", "localhost:8082", "LOCALHOST", "[::1]:8082", "[::1]", "127.9.9.9:1"]
        {
            assert!(is_loopback_host(good), "{good}");
        }
        for bad in [
            "evil.example:8082",
            "evil.example",
            "10.0.0.1:8082",
            "[2001:db8::1]:80",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_name_their_scheme() {
        let parsed = |text| ListenAddress::parse(text);
        assert_eq!(
            parsed("127.0.0.1:8080"),
            Ok(ListenAddress { scheme: Scheme::Http, address: "127.0.0.1:8080".into() })
        );
        assert_eq!(parsed("http://[::1]:80/").map(|listen| listen.scheme), Ok(Scheme::Http));
        assert_eq!(
            parsed("HTTPS://localhost:8443"),
            Ok(ListenAddress { scheme: Scheme::Https, address: "localhost:8443".into() })
        );
        for refused in ["ftp://h:1", "https://", "https://h:1/path", "h", ""] {
            assert!(parsed(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn loopback_includes_mapped_addresses() {
        for (ip, loopback) in [("127.0.0.1", true), ("127.9.9.9", true), ("::1", true), ("::ffff:127.0.0.1", true)]
            .into_iter()
            .chain([("10.0.0.1", false), ("0.0.0.0", false), ("::ffff:10.0.0.1", false), ("fe80::1", false)])
        {
            assert_eq!(is_loopback(ip.parse().expect("an IP")), loopback, "{ip}");
        }
    }
}
