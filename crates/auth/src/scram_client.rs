//! The client side of one SASL/SCRAM exchange, [`ScramClient`] (RFC 5802 section 5), for Once's own
//! tools (the `once` CLI's admin client) logging in to a SCRAM listener.
//!
//! The client checks what a careful client must: the server's nonce extends the client's, the salt
//! and iteration count are within Kafka's bounds (a hostile server cannot make the client spend
//! unbounded CPU on `Hi`), and the server's final signature is compared in constant time before the
//! login is trusted — a server that does not know `ServerKey` is refused even if it says yes.

use std::mem;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::credential::{check_password, check_user_name, random_bytes};
use crate::scram_message::{is_printable_nonce, CLIENT_NONCE_BYTES_MAX};
use crate::{AuthError, ScramMechanism, ITERATIONS_MAX, ITERATIONS_MIN, SALT_BYTES_MAX};

/// Random bytes in the client nonce: 192 bits, 32 base64 characters (librdkafka sends 32 too).
const CLIENT_NONCE_BYTES: usize = 24;
/// The longest server-first message accepted: a 255-byte client nonce, as long a server half, a
/// 256-byte salt in base64 and a few extensions stay well under it.
const SERVER_MESSAGE_BYTES_MAX: usize = 4096;
/// The GS2 header this client sends: no channel binding, no authorization id. Its base64, `biws`,
/// is client-final's `c=`.
const GS2_HEADER: &str = "n,,";

/// One SCRAM exchange, client side.
///
/// ```
/// use once_auth::{LookupFn, ScramClient, ScramCredential, ScramMechanism, ScramServer};
///
/// let credential = ScramCredential::new("pencil", ScramMechanism::Sha512, 4096).unwrap();
/// let lookup = LookupFn(move |user: &str, _| (user == "alice").then(|| credential.clone()));
/// let mut server = ScramServer::new(ScramMechanism::Sha512, lookup);
/// let mut client = ScramClient::new(ScramMechanism::Sha512, "alice", "pencil").unwrap();
/// let server_first = server.client_first(&client.client_first()).unwrap();
/// let client_final = client.server_first(&server_first).unwrap();
/// let (server_final, user) = server.client_final(&client_final).unwrap();
/// client.server_final(&server_final).unwrap();
/// assert_eq!(user, "alice");
/// ```
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: Vec<u8>,
    /// `client-first-message-bare`: `n=<escaped user>,r=<client nonce>`.
    client_first_bare: String,
    client_nonce: String,
    state: State,
}

enum State {
    /// client-first not yet taken.
    Start,
    AwaitingServerFirst,
    /// What the server's signature is checked against.
    AwaitingServerFinal {
        server_key: Vec<u8>,
        auth_message: String,
    },
    Complete,
    Failed,
}

impl ScramClient {
    /// An exchange logging in as `user` with `password`, with a fresh random client nonce.
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Result<Self, AuthError> {
        let nonce = BASE64.encode(random_bytes(CLIENT_NONCE_BYTES)?);
        Self::with_nonce(mechanism, user, password, &nonce)
    }

    /// [`ScramClient::new`] with a fixed client nonce, so an exchange can be compared byte for byte
    /// with a published example. Test builds only: a client must not reuse a nonce.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn with_fixed_nonce(
        mechanism: ScramMechanism,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> Result<Self, AuthError> {
        Self::with_nonce(mechanism, user, password, nonce)
    }

    fn with_nonce(mechanism: ScramMechanism, user: &str, password: &str, nonce: &str) -> Result<Self, AuthError> {
        check_user_name(user)?;
        check_password(password.as_bytes())?;
        assert!(!nonce.is_empty(), "a client nonce must not be empty");
        assert!(nonce.len() <= CLIENT_NONCE_BYTES_MAX, "a client nonce is at most 255 bytes");
        assert!(is_printable_nonce(nonce), "a client nonce must be printable ASCII without commas");
        Ok(ScramClient {
            mechanism,
            password: password.as_bytes().to_vec(),
            client_first_bare: format!("n={},r={nonce}", escape_saslname(user)),
            client_nonce: nonce.to_owned(),
            state: State::Start,
        })
    }

    /// The client-first message, `n,,n=<user>,r=<nonce>`. Taken once; a second call is a bug.
    pub fn client_first(&mut self) -> Vec<u8> {
        assert!(matches!(self.state, State::Start), "client-first is sent once, first");
        self.state = State::AwaitingServerFirst;
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Takes the server-first message and answers client-final (with the proof). Any error leaves
    /// the exchange failed for good.
    pub fn server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        match mem::replace(&mut self.state, State::Failed) {
            State::AwaitingServerFirst => {}
            _ => return Err(AuthError::IllegalState("a server-first message out of order")),
        }
        let first = parse_server_first(message, &self.client_nonce)?;
        let mechanism = self.mechanism;
        let salted_password = mechanism.salted_password(&self.password, &first.salt, first.iterations);
        // RFC 5802 section 3: ClientKey := HMAC(SaltedPassword, "Client Key"); StoredKey := H(ClientKey);
        // ClientSignature := HMAC(StoredKey, AuthMessage); ClientProof := ClientKey XOR ClientSignature.
        let client_key = mechanism.hmac(&salted_password, &[b"Client Key"]);
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c={},r={}", BASE64.encode(GS2_HEADER), first.nonce);
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, first.text);
        let client_signature = mechanism.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(key, signature)| key ^ signature).collect();
        let server_key = mechanism.server_key(&salted_password);
        self.state = State::AwaitingServerFinal { server_key, auth_message };
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Takes the server-final message and checks the server's signature (in constant time). Only
    /// after this answers `Ok` has the server proved it holds the user's verifier.
    pub fn server_final(&mut self, message: &[u8]) -> Result<(), AuthError> {
        let (server_key, auth_message) = match mem::replace(&mut self.state, State::Failed) {
            State::AwaitingServerFinal { server_key, auth_message } => (server_key, auth_message),
            _ => return Err(AuthError::IllegalState("a server-final message out of order")),
        };
        let text =
            std::str::from_utf8(message).map_err(|_| AuthError::Malformed("the server-final message is not UTF-8"))?;
        if text.starts_with("e=") {
            // The server refused the proof (Kafka's brokers fail the SaslAuthenticate instead).
            return Err(AuthError::AuthenticationFailed);
        }
        // `v=` may be followed by extensions, which a client ignores (RFC 5802 section 7).
        let signature = text
            .split(',')
            .next()
            .and_then(|attribute| attribute.strip_prefix("v="))
            .ok_or(AuthError::Malformed("the server-final message is not v=<signature>"))?;
        let signature =
            BASE64.decode(signature).map_err(|_| AuthError::Malformed("the server signature (v=) is not base64"))?;
        let expected = self.mechanism.hmac(&server_key, &[auth_message.as_bytes()]);
        if !bool::from(expected.ct_eq(&signature)) {
            return Err(AuthError::ServerNotVerified);
        }
        self.state = State::Complete;
        Ok(())
    }

    /// Whether the server's signature has been checked.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Complete)
    }
}

/// A parsed server-first message.
struct ServerFirst<'a> {
    /// The message as sent, the middle part of `AuthMessage`.
    text: &'a str,
    /// The combined nonce.
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

/// Parses `r=<nonce>,s=<salt>,i=<iterations>[,extensions]`, checking that the nonce extends
/// `client_nonce` and that salt and iterations are within Kafka's bounds.
fn parse_server_first<'a>(message: &'a [u8], client_nonce: &str) -> Result<ServerFirst<'a>, AuthError> {
    if message.len() > SERVER_MESSAGE_BYTES_MAX {
        return Err(AuthError::Malformed("the server-first message is longer than 4096 bytes"));
    }
    let text =
        std::str::from_utf8(message).map_err(|_| AuthError::Malformed("the server-first message is not UTF-8"))?;
    if text.starts_with("m=") {
        return Err(AuthError::UnsupportedExtension("mandatory extension (m=)"));
    }
    let mut attributes = text.split(',');
    let mut next = |name: &'static str, missing: &'static str| {
        attributes.next().and_then(|attribute| attribute.strip_prefix(name)).ok_or(AuthError::Malformed(missing))
    };
    let nonce = next("r=", "the nonce (r=) is not the first attribute of server-first")?;
    let salt = next("s=", "the salt (s=) does not follow the nonce")?;
    let iterations = next("i=", "the iteration count (i=) does not follow the salt")?;
    // Anything after is an extension, which the client ignores (RFC 5802 section 7).
    let server_half = nonce
        .strip_prefix(client_nonce)
        .ok_or(AuthError::Malformed("the server's nonce does not start with the client's"))?;
    if server_half.is_empty() {
        return Err(AuthError::Malformed("the server added nothing to the nonce"));
    }
    if !is_printable_nonce(server_half) {
        return Err(AuthError::Malformed("the server's nonce has a byte outside printable ASCII"));
    }
    let salt = BASE64.decode(salt).map_err(|_| AuthError::Malformed("the salt (s=) is not base64"))?;
    if salt.is_empty() || salt.len() > SALT_BYTES_MAX {
        return Err(AuthError::Malformed("the salt is empty or longer than 256 bytes"));
    }
    // Digits only: `u32::from_str` would also take a leading '+'.
    if iterations.is_empty() || !iterations.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(AuthError::Malformed("the iteration count (i=) is not a number"));
    }
    let iterations: u32 =
        iterations.parse().map_err(|_| AuthError::Malformed("the iteration count (i=) is out of range"))?;
    if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        return Err(AuthError::Malformed("the iteration count is outside Kafka's bounds, 4096 to 16384"));
    }
    Ok(ServerFirst { text, nonce, salt, iterations })
}

/// A user name as `saslname`: `=` as `=3D`, `,` as `=2C` (RFC 5802 section 5.1).
fn escape_saslname(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awaiting_server_first() -> ScramClient {
        let mut client = ScramClient::with_fixed_nonce(ScramMechanism::Sha256, "a=b,c", "pw", "abc").expect("valid");
        assert_eq!(client.client_first(), b"n,,n=a=3Db=2Cc,r=abc");
        client
    }

    #[test]
    fn server_first_refusals() {
        let salt = BASE64.encode([1u8; 16]);
        for refused in [
            format!("r=abc,s={salt},i=4096"),
            format!("r=abd123,s={salt},i=4096"),
            format!("r=xabc123,s={salt},i=4096"),
            format!("r=abc1 3,s={salt},i=4096"),
            format!("s={salt},r=abc123,i=4096"),
            "r=abc123,s=,i=4096".to_owned(),
            "r=abc123,s=!!,i=4096".to_owned(),
            format!("r=abc123,s={},i=4096", BASE64.encode([1u8; 257])),
            format!("r=abc123,s={salt},i=4095"),
            format!("r=abc123,s={salt},i=16385"),
            format!("r=abc123,s={salt},i=+4096"),
            format!("r=abc123,s={salt},i=99999999999"),
            format!("r=abc123,s={salt}"),
            format!("m=x,r=abc123,s={salt},i=4096"),
        ] {
            let mut client = awaiting_server_first();
            assert!(client.server_first(refused.as_bytes()).is_err(), "{refused:?} was accepted");
            assert!(client.server_first(refused.as_bytes()).is_err(), "a failed exchange stays failed");
        }
        let mut client = awaiting_server_first();
        assert!(client.server_first(format!("r=abc123,s={salt},i=4096,x=ext").as_bytes()).is_ok());
    }

    #[test]
    fn out_of_order_messages_are_refused() {
        let mut client = ScramClient::new(ScramMechanism::Sha512, "u", "p").expect("valid");
        assert!(client.server_final(b"v=AAAA").is_err());
        assert!(ScramClient::new(ScramMechanism::Sha512, "", "p").is_err());
        assert!(ScramClient::new(ScramMechanism::Sha512, "u", "").is_err());
    }
}
