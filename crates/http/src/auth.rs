//! Who is asking, and whether they may: the same users as the Kafka edge's SASL (the node's
//! credential store) and the same ACLs (the node's authorizer).
//!
//! - [`authenticate`] (middleware on every route): `Authorization: Basic base64(user:password)` is
//!   checked as a SASL PLAIN login would be (once-auth, against the stored SCRAM verifiers, in
//!   constant time); no header is `User:ANONYMOUS`. A failed login is answered 401 with
//!   `WWW-Authenticate: Basic realm="once"` after 100 ms (as the Kafka edge's failed SASL logins)
//!   and logged at most every few seconds. Basic credentials over plain HTTP are refused (400)
//!   unless the connection came from this host: a password must not cross a network in clear.
//!   Other schemes (Bearer) are not supported: 401.
//! - [`Caller::require`]: one ACL check, a 403 problem naming the operation when denied.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use once_acl::{Operation, Principal, ResourceType};
use once_node::Session;

use crate::listen::{Peer, Scheme};
use crate::problem::Problem;
use crate::HttpState;

/// How long a failed login waits before its answer (as the Kafka edge, Kafka's
/// `connection.failed.authentication.delay.ms`).
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(100);
/// The challenge sent with every 401.
/// Failed logins are logged every few seconds at most (a password-guessing client would fill the log).
static FAILED_LOGINS: once_node::storage::EveryFewSeconds = once_node::storage::EveryFewSeconds::new();
/// Refused cleartext credentials, likewise.
static CLEARTEXT_REFUSED: once_node::storage::EveryFewSeconds = once_node::storage::EveryFewSeconds::new();

/// What a request's `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No header: the anonymous principal.
    None,
    Basic {
        user: String,
        password: String,
    },
    /// A header that is not usable Basic credentials (another scheme, bad base64, no colon, …): why.
    Unusable(&'static str),
}

/// Reads the `Authorization` header (RFC 7617: `Basic base64(user-id ":" password)`, UTF-8; the
/// user id cannot hold a colon).
pub fn credentials(headers: &HeaderMap) -> Credentials {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::AUTHORIZATION) {
            Credentials::Unusable("more than one Authorization header")
        } else {
            Credentials::None
        };
    };
    let Ok(value) = value.to_str() else { return Credentials::Unusable("the Authorization header is not ASCII") };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Unusable("only Basic authentication is supported (no bearer tokens)");
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return Credentials::Unusable("the Basic credentials are not base64");
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Credentials::Unusable("the Basic credentials are not UTF-8");
    };
    match decoded.split_once(':') {
        Some((user, password)) => Credentials::Basic { user: user.to_string(), password: password.to_string() },
        None => Credentials::Unusable("the Basic credentials have no ':' between user and password"),
    }
}

/// Whether Basic credentials may be checked on this connection: over TLS, or over plain HTTP from
/// this host (a local reverse proxy, a local script). From anywhere else the password has crossed
/// a network in clear; the request is refused rather than served, so the mistake shows.
pub fn basic_allowed(scheme: Scheme, peer: Option<Peer>) -> bool {
    scheme == Scheme::Https || peer.is_some_and(|peer| peer.is_loopback())
}

/// The authenticated (or anonymous) principal of a request and where it came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: Session,
    /// Whether this caller could log in: the broker has users, and Basic credentials are accepted
    /// on this connection ([`basic_allowed`]). A refusal challenges for a login only then — a
    /// browser must not be asked to send a password the broker would refuse to read.
    pub may_log_in: bool,
}

impl Caller {
    /// `Ok` if the ACLs allow `operation` on the resource (always, with authorization off); else
    /// a 403 problem naming what is missing. Denials are logged by the node's authorizer.
    pub fn require(
        &self,
        state: &HttpState,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Problem> {
        if state.node.authorizer.allows(&self.session, operation, resource_type, name) {
            return Ok(());
        }
        let (kind, title) = match resource_type {
            ResourceType::Topic => ("topic-authorization-failed", "Topic authorization failed"),
            ResourceType::Cluster => ("cluster-authorization-failed", "Cluster authorization failed"),
            _ => ("authorization-failed", "Authorization failed"),
        };
        let principal = &self.session.principal;
        let hint = if *principal == Principal::anonymous() {
            " (no credentials were sent: use Authorization: Basic over https)"
        } else {
            ""
        };
        Err(Problem::new(
            StatusCode::FORBIDDEN,
            kind,
            title,
            format!("{principal} is not allowed {operation} on {resource_type} '{name}'{hint}"),
        ))
    }

    /// Whether the ACLs allow `operation`, not logged: for filtering what a list shows.
    pub fn permits(&self, state: &HttpState, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        state.node.authorizer.permits(&self.session, operation, resource_type, name)
    }
}

/// Middleware: authenticates the request and hands its [`Caller`] to the handler, or answers the
/// refusal itself.
pub async fn authenticate(State(state): State<Arc<HttpState>>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<Peer>>().map(|ConnectInfo(peer)| *peer);
    let host = peer.map(|Peer(address)| address.ip());
    let session = match credentials(request.headers()) {
        Credentials::None => Session::anonymous(host),
        Credentials::Unusable(why) => return unauthorized(why.to_string()),
        Credentials::Basic { user, .. } if !basic_allowed(state.scheme, peer) => {
            if let Some(suppressed) = CLEARTEXT_REFUSED.due() {
                tracing::warn!(?peer, user = %shortened(&user), suppressed, "HTTP: Basic credentials over plain HTTP from another host refused");
            }
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "credentials-over-plain-http",
                "Credentials over plain HTTP",
                "Basic credentials are accepted over plain HTTP only from this host: they crossed the network \
                 unencrypted. Use the broker's https:// listener (and consider this password exposed)",
            )
            .into_response();
        }
        Credentials::Basic { user, password } => match check_password(&state, user.clone(), password).await {
            Ok(user) => Session::new(Principal::user(&user), host),
            Err(reason) => {
                tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                if let Some(suppressed) = FAILED_LOGINS.due() {
                    tracing::warn!(?peer, user = %shortened(&user), %reason, suppressed, "HTTP authentication failed");
                }
                return unauthorized(format!("invalid credentials for user '{}'", shortened(&user)));
            }
        },
    };
    let may_log_in = state.node.credentials.is_some() && basic_allowed(state.scheme, peer);
    request.extensions_mut().insert(Caller { session, may_log_in });
    next.run(request).await
}

/// The user's password checked against the stored SCRAM verifiers, as a SASL PLAIN login: PBKDF2
/// with the user's salt, off the async workers; an unknown user costs the same. A login already
/// verified against the user's current verifier is not derived again ([`crate::logins`]).
async fn check_password(state: &HttpState, user: String, password: String) -> Result<String, String> {
    let Some(store) = state.node.credentials.clone() else {
        return Err("the broker has no credential store".to_string());
    };
    if state.logins.as_ref().is_some_and(|logins| logins.contains(&store, &user, &password)) {
        return Ok(user);
    }
    // The PLAIN message `\0user\0password`: a NUL inside either makes it malformed, so refused.
    let message = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
    // The credential is read once and the password checked against that very one, so what is
    // remembered is what was verified even if the password changes meanwhile.
    let snapshot = crate::logins::VerifiedLogins::credential(&store, &user);
    let checked_against = snapshot.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let lookup = once_auth::LookupFn(move |_: &str, _| snapshot.clone());
        once_auth::authenticate_plain(&message, &lookup)
    })
    .await;
    match checked {
        Ok(Ok(user)) => {
            if let (Some(logins), Some(credential)) = (&state.logins, &checked_against) {
                logins.insert(credential, &user, &password);
            }
            Ok(user)
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}

/// A user name for a log line or an answer: at most 64 characters.
fn shortened(user: &str) -> String {
    user.chars().take(64).collect()
}

fn unauthorized(detail: String) -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, "authentication-failed", "Authentication failed", detail)
        .challenge()
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).expect("a header value"));
        }
        headers
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic { user: user.into(), password: password.into() }
    }

    #[test]
    fn basic_credentials_are_read_strictly() {
        assert_eq!(credentials(&headers(&[])), Credentials::None);
        // RFC 7617's example: Aladdin / open sesame.
        assert_eq!(credentials(&headers(&["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="])), basic("Aladdin", "open sesame"));
        assert_eq!(credentials(&headers(&["basic  YTpiOmM= "])), basic("a", "b:c"), "the first colon splits");
        for unusable in [
            &["Bearer abc"][..],
            &["Basic"],
            &["Basic !!!"],
            &["Basic YWxpY2U="],
            &["Basic /w=="],
            &["Basic YTpi", "Basic YTpi"],
        ] {
            assert!(matches!(credentials(&headers(unusable)), Credentials::Unusable(_)), "{unusable:?}");
        }
    }

    #[test]
    fn basic_needs_tls_or_a_local_peer() {
        let peer = |text: &str| Some(Peer(text.parse().expect("a socket address")));
        assert!(basic_allowed(Scheme::Https, peer("10.0.0.7:5000")));
        assert!(basic_allowed(Scheme::Https, None));
        assert!(basic_allowed(Scheme::Http, peer("127.0.0.1:5000")));
        assert!(basic_allowed(Scheme::Http, peer("[::1]:5000")));
        assert!(!basic_allowed(Scheme::Http, peer("10.0.0.7:5000")), "a password in clear over a network");
        assert!(!basic_allowed(Scheme::Http, peer("[2001:db8::1]:5000")));
        assert!(!basic_allowed(Scheme::Http, None), "an unknown peer is not trusted");
    }
}
