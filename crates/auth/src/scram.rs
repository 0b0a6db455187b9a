//! The server side of one SASL/SCRAM exchange, [`ScramServer`]: a state machine over the two client
//! messages (RFC 5802 section 5).

use std::mem;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::credential::{random_bytes, unknown_user_credential};
use crate::scram_message::{parse_client_final, parse_client_first};
use crate::{AuthError, CredentialLookup, ScramCredential, ScramMechanism};

/// Random bytes in the server's half of the nonce: 192 bits, as base64 32 printable characters
/// without commas (RFC 5802 asks for a nonce no one can predict; Kafka uses 130 bits).
const NONCE_SUFFIX_BYTES: usize = 24;

/// One SCRAM exchange on one connection, server side.
///
/// ```
/// use once_auth::{LookupFn, ScramCredential, ScramMechanism, ScramServer};
///
/// let credential = ScramCredential::new("pencil", ScramMechanism::Sha512, 4096).unwrap();
/// let lookup = LookupFn(move |user: &str, _| (user == "user").then(|| credential.clone()));
/// let mut server = ScramServer::new(ScramMechanism::Sha512, lookup);
/// let server_first = server.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
/// assert!(server_first.starts_with(b"r=fyko+d2lbbFgONRv9qkxdawL"));
/// // A client-final with a wrong proof fails, and the exchange stays failed.
/// let nonce = std::str::from_utf8(&server_first).unwrap().split(',').next().unwrap();
/// let wrong = format!("c=biws,{nonce},p={}", "A".repeat(86) + "==");
/// assert!(server.client_final(wrong.as_bytes()).is_err());
/// assert!(server.client_final(wrong.as_bytes()).is_err());
/// ```
pub struct ScramServer<L> {
    mechanism: ScramMechanism,
    lookup: L,
    state: State,
    /// A fixed server nonce suffix instead of a random one; only the test hook sets it.
    nonce_suffix: Option<String>,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(Box<Pending>),
    Complete { user: String },
    Failed,
}

/// What the server keeps between its two answers.
struct Pending {
    user: String,
    /// False when `credential` is the stand-in for an unknown user: then client-final fails whatever
    /// the proof (no proof can match it anyway; this says so without relying on that).
    user_known: bool,
    credential: ScramCredential,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by the server's suffix.
    nonce: String,
    /// Bytes of the server's suffix at the end of `nonce`.
    suffix_len: usize,
}

impl<L: CredentialLookup> ScramServer<L> {
    /// An exchange for `mechanism` that finds verifiers through `lookup`.
    pub fn new(mechanism: ScramMechanism, lookup: L) -> Self {
        ScramServer { mechanism, lookup, state: State::AwaitingClientFirst, nonce_suffix: None }
    }

    /// Fixes the server's half of the nonce, so an exchange can be replayed byte for byte against a
    /// published example. Test builds only: a predictable nonce makes a recorded exchange replayable.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn with_nonce_suffix(mut self, suffix: &str) -> Self {
        assert!(!suffix.is_empty(), "a nonce suffix must not be empty");
        assert!(
            crate::scram_message::is_printable_nonce(suffix),
            "a nonce suffix must be printable ASCII without commas"
        );
        self.nonce_suffix = Some(suffix.to_owned());
        self
    }

    /// Whether the exchange still waits for the client-first message (the edge routes a client's
    /// next message by it).
    pub fn awaiting_client_first(&self) -> bool {
        matches!(self.state, State::AwaitingClientFirst)
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// The authenticated user, once the exchange has completed.
    pub fn authenticated_user(&self) -> Option<&str> {
        match &self.state {
            State::Complete { user } => Some(user),
            _ => None,
        }
    }

    /// Takes the client-first message and answers the server-first message
    /// (`r=<nonce>,s=<salt>,i=<iterations>`).
    ///
    /// An unknown user gets an answer of the same shape as a known one (see
    /// [`crate::CredentialLookup::unknown_user_key`]); the exchange then fails at client-final with
    /// [`AuthError::AuthenticationFailed`], as a wrong password does. Any error leaves the exchange
    /// failed for good.
    pub fn client_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        match mem::replace(&mut self.state, State::Failed) {
            State::AwaitingClientFirst => {}
            State::AwaitingClientFinal(_) => {
                return Err(AuthError::IllegalState("a second client-first message"));
            }
            complete @ State::Complete { .. } => {
                // The login stands; the stray message is refused without undoing it.
                self.state = complete;
                return Err(AuthError::IllegalState("a message after the exchange completed"));
            }
            State::Failed => return Err(AuthError::IllegalState("a message after the exchange failed")),
        }
        let first = parse_client_first(message)?;
        let (credential, user_known) = match self.lookup.credential(&first.user, self.mechanism) {
            Some(credential) => (credential, true),
            None => {
                let key = self.lookup.unknown_user_key()?;
                (unknown_user_credential(self.mechanism, &first.user, &key), false)
            }
        };
        assert_eq!(
            credential.mechanism(),
            self.mechanism,
            "the credential lookup answered a credential of another mechanism"
        );
        let suffix = match &self.nonce_suffix {
            Some(suffix) => suffix.clone(),
            None => BASE64.encode(random_bytes(NONCE_SUFFIX_BYTES)?),
        };
        let nonce = format!("{}{suffix}", first.client_nonce);
        let server_first = format!("r={nonce},s={},i={}", BASE64.encode(credential.salt()), credential.iterations());
        self.state = State::AwaitingClientFinal(Box::new(Pending {
            user: first.user,
            user_known,
            credential,
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            suffix_len: suffix.len(),
        }));
        Ok(server_first.into_bytes())
    }

    /// Takes the client-final message; on a valid proof answers the server-final message
    /// (`v=<server signature>`) and the authenticated user name.
    ///
    /// A wrong proof and an unknown user both give [`AuthError::AuthenticationFailed`]. Any error
    /// leaves the exchange failed for good.
    pub fn client_final(&mut self, message: &[u8]) -> Result<(Vec<u8>, String), AuthError> {
        let pending = match mem::replace(&mut self.state, State::Failed) {
            State::AwaitingClientFinal(pending) => pending,
            State::AwaitingClientFirst => {
                return Err(AuthError::IllegalState("a client-final message before client-first"));
            }
            complete @ State::Complete { .. } => {
                self.state = complete;
                return Err(AuthError::IllegalState("a message after the exchange completed"));
            }
            State::Failed => return Err(AuthError::IllegalState("a message after the exchange failed")),
        };
        let last = parse_client_final(message, self.mechanism.output_bytes())?;
        if last.channel_binding != pending.gs2_header.as_bytes() {
            return Err(AuthError::Malformed("the channel binding (c=) is not the GS2 header sent"));
        }
        // librdkafka (every version to date) sends its client nonce again in front of the combined
        // nonce; Kafka's own server accepts a final nonce that ends with the combined one for it.
        // Only that one extra form is accepted here, and the proof covers the message as sent.
        let client_nonce = &pending.nonce[..pending.nonce.len() - pending.suffix_len];
        let librdkafka = last.nonce.strip_prefix(client_nonce) == Some(pending.nonce.as_str());
        if last.nonce != pending.nonce && !librdkafka {
            return Err(AuthError::Malformed("the nonce (r=) is not the one the server sent"));
        }
        // AuthMessage := client-first-message-bare "," server-first-message ","
        //                client-final-message-without-proof
        let auth_message: [&[u8]; 5] = [
            pending.client_first_bare.as_bytes(),
            b",",
            pending.server_first.as_bytes(),
            b",",
            last.without_proof.as_bytes(),
        ];
        let credential = &pending.credential;
        let client_signature = self.mechanism.hmac(credential.stored_key(), &auth_message);
        assert_eq!(client_signature.len(), last.proof.len(), "the parser checked the proof's length");
        // ClientKey := ClientProof XOR ClientSignature; the client knew the password iff
        // H(ClientKey) = StoredKey. Compared in constant time, so timing says nothing of how much of
        // a forged proof was right.
        let client_key: Vec<u8> =
            last.proof.iter().zip(&client_signature).map(|(proof, signature)| proof ^ signature).collect();
        let proof_matches: bool = self.mechanism.hash(&client_key).ct_eq(credential.stored_key()).into();
        if !(proof_matches & pending.user_known) {
            return Err(AuthError::AuthenticationFailed);
        }
        let server_signature = self.mechanism.hmac(credential.server_key(), &auth_message);
        let server_final = format!("v={}", BASE64.encode(server_signature)).into_bytes();
        self.state = State::Complete { user: pending.user.clone() };
        Ok((server_final, pending.user))
    }
}
