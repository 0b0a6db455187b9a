//! SASL on a connection (KIP-43 SaslHandshake, KIP-152 SaslAuthenticate): which mechanism the
//! client chose, the exchange in progress, and who it proved to be. The exchanges themselves are
//! once-auth's; this module translates them to and from the Kafka messages and decides when the
//! connection must close (Kafka closes it after a failed authentication).
//!
//! On a SASL listener a connection may send only ApiVersions, SaslHandshake and SaslAuthenticate
//! until it has authenticated; anything else closes it.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{
    ResponseKind, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use once_auth::{AuthError, CredentialStore, SaslMechanism, ScramServer};
use once_wire::ResponseError;

/// Failed logins are logged every few seconds at most (a password-guessing client would fill the log).
static FAILED_LOGINS: once_node::storage::EveryFewSeconds = once_node::storage::EveryFewSeconds::new();

enum State {
    /// No SaslHandshake yet.
    Start,
    /// Handshake done; PLAIN's single message expected.
    Plain,
    /// SCRAM: the client-first expected, then the client-final.
    Scram(Box<ScramServer<Arc<CredentialStore>>>),
    /// Authenticated as this user.
    Done(String),
    /// Failed: the connection closes.
    Failed,
}

/// One connection's SASL state.
pub struct Sasl {
    /// Whether the listener asks for SASL at all.
    enabled: bool,
    credentials: Option<Arc<CredentialStore>>,
    state: State,
    /// The user the exchange's first message named, for the failed-login log.
    attempted: String,
}

/// A SASL response, and whether the connection closes after it is written.
pub struct Answer {
    pub response: ResponseKind,
    pub close: bool,
    /// A failed authentication (answered after a delay).
    pub failed: bool,
}

/// The user a SASL message names, for the log only: PLAIN's authcid, SCRAM's `n=`; at most 64
/// characters, lossily decoded.
fn named_user(mechanism: &str, message: &[u8]) -> String {
    let user: Vec<u8> = if mechanism == "PLAIN" {
        message.split(|byte| *byte == 0).nth(1).unwrap_or_default().to_vec()
    } else {
        message
            .split(|byte| *byte == b',')
            .find_map(|attribute| attribute.strip_prefix(b"n="))
            .unwrap_or_default()
            .to_vec()
    };
    String::from_utf8_lossy(&user).chars().take(64).collect()
}

fn mechanisms() -> Vec<StrBytes> {
    SaslMechanism::ALL.iter().map(|mechanism| StrBytes::from_static_str(mechanism.name())).collect()
}

impl Sasl {
    /// `credentials`: the node's store, which exists whenever a listener asks for SASL.
    pub fn new(enabled: bool, credentials: Option<Arc<CredentialStore>>) -> Sasl {
        assert!(!enabled || credentials.is_some(), "a SASL listener has the node's credential store");
        Sasl { enabled, credentials, state: State::Start, attempted: String::new() }
    }

    /// The store; only reached once a handshake was accepted, which needs SASL enabled.
    fn store(&self) -> &Arc<CredentialStore> {
        self.credentials.as_ref().expect("SASL is enabled only with a credential store")
    }

    /// Whether requests other than the SASL ones may be served.
    pub fn admits_requests(&self) -> bool {
        !self.enabled || matches!(self.state, State::Done(_))
    }

    /// The authenticated user, if any.
    pub fn principal(&self) -> Option<&str> {
        match &self.state {
            State::Done(user) => Some(user),
            _ => None,
        }
    }

    pub fn handshake(&mut self, request: &SaslHandshakeRequest) -> Answer {
        let response = |code: Option<ResponseError>| {
            let code = code.map_or(0, |code| code.code());
            ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_error_code(code).with_mechanisms(mechanisms()),
            )
        };
        if !self.enabled || !matches!(self.state, State::Start) {
            return Answer { response: response(Some(ResponseError::IllegalSaslState)), close: true, failed: false };
        }
        match SaslMechanism::parse(request.mechanism.as_str()) {
            Ok(SaslMechanism::Plain) => self.state = State::Plain,
            Ok(SaslMechanism::Scram(mechanism)) => {
                self.state = State::Scram(Box::new(ScramServer::new(mechanism, self.store().clone())));
            }
            Err(_) => {
                return Answer {
                    response: response(Some(ResponseError::UnsupportedSaslMechanism)),
                    close: true,
                    failed: false,
                }
            }
        }
        Answer { response: response(None), close: false, failed: false }
    }

    pub fn authenticate(&mut self, request: &SaslAuthenticateRequest, peer: Option<std::net::SocketAddr>) -> Answer {
        let reply = |code: Option<ResponseError>, message: Option<&str>, bytes: Vec<u8>| {
            ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(code.map_or(0, |code| code.code()))
                    .with_error_message(message.map(|text| StrBytes::from_string(text.to_string())))
                    .with_auth_bytes(Bytes::from(bytes))
                    .with_session_lifetime_ms(0),
            )
        };
        let first = match &self.state {
            State::Plain => true,
            State::Scram(server) => server.awaiting_client_first(),
            _ => false,
        };
        if first {
            self.attempted = named_user(self.mechanism_name(), &request.auth_bytes);
        }
        let outcome: Result<(Vec<u8>, Option<String>), AuthError> = match &mut self.state {
            State::Plain => {
                once_auth::authenticate_plain(&request.auth_bytes, &**self.store()).map(|user| (Vec::new(), Some(user)))
            }
            State::Scram(server) if server.awaiting_client_first() => {
                server.client_first(&request.auth_bytes).map(|first| (first, None))
            }
            State::Scram(server) => server.client_final(&request.auth_bytes).map(|(last, user)| (last, Some(user))),
            State::Start | State::Done(_) | State::Failed => Err(AuthError::IllegalState("no exchange in progress")),
        };
        match outcome {
            Ok((bytes, Some(user))) => {
                tracing::debug!(?peer, user = %user, "SASL authenticated");
                self.state = State::Done(user);
                Answer { response: reply(None, None, bytes), close: false, failed: false }
            }
            Ok((bytes, None)) => Answer { response: reply(None, None, bytes), close: false, failed: false },
            Err(AuthError::IllegalState(_)) => {
                self.state = State::Failed;
                Answer {
                    response: reply(
                        Some(ResponseError::IllegalSaslState),
                        Some("unexpected SaslAuthenticate"),
                        Vec::new(),
                    ),
                    close: true,
                    failed: false,
                }
            }
            Err(error) => {
                let mechanism = self.mechanism_name();
                self.state = State::Failed;
                if let Some(suppressed) = FAILED_LOGINS.due() {
                    tracing::warn!(?peer, user = %self.attempted, mechanism, %error, suppressed, "SASL authentication failed");
                }
                let message = format!("Authentication failed: invalid credentials with SASL mechanism {mechanism}");
                Answer {
                    response: reply(Some(ResponseError::SaslAuthenticationFailed), Some(&message), Vec::new()),
                    close: true,
                    failed: true,
                }
            }
        }
    }

    fn mechanism_name(&self) -> &'static str {
        match &self.state {
            State::Plain => "PLAIN",
            State::Scram(server) => server.mechanism().name(),
            _ => "none",
        }
    }
}
