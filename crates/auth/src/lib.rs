//! Authentication core for Once: the server side (and, for Once's own tools, the client side) of SASL/SCRAM-SHA-256 and SCRAM-SHA-512
//! (RFC 5802, RFC 7677, as Kafka uses them) and SASL/PLAIN (RFC 4616), and a durable store of the
//! salted SCRAM verifiers both check against. No network, no broker: the broker feeds this crate the
//! bytes of SaslAuthenticate requests (KIP-152) and maps its [`AuthError`]s to Kafka error codes.
//!
//! # The SCRAM exchange
//! ```text
//! client-first  n,,n=<user>,r=<client nonce>            → ScramServer::client_first
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=<iterations>
//! client-final  c=biws,r=<both nonces>,p=<proof>        → ScramServer::client_final
//! server-final  v=<server signature>                      (and the authenticated user name)
//! ```
//! The proof shows the client knows `ClientKey` (derived from the password) without sending it; the
//! server checks `H(proof XOR HMAC(StoredKey, AuthMessage)) = StoredKey` in constant time, and its
//! signature shows the client the server knew `ServerKey`. Parsing is strict: channel binding
//! (`p=`), mandatory extensions (`m=`) and Kafka's delegation tokens (`tokenauth=true`) are refused
//! with [`AuthError::UnsupportedExtension`]; an authorization id must equal the user name; any
//! misuse of the state machine is [`AuthError::IllegalState`], never a panic.
//!
//! # Why unknown users get a salt
//! A server that said "unknown user" at client-first, or made up a fresh salt each time, would let
//! anyone list the user names that exist. Here an unknown user is answered like a known one: a salt
//! derived from the user name under a secret key (HMAC, as long as a real salt, the same on every
//! attempt) and the default 4096 iterations; the exchange then fails at client-final with the very
//! [`AuthError::AuthenticationFailed`] a wrong password gets, after the same work. The secret key
//! lives in the credential store's file, so the answer survives restarts too. (A user created with
//! non-default iterations, or with a salt of another length through AlterUserScramCredentials, is
//! still told apart by its shape; that is the operator's choice.)
//!
//! # The client side
//! [`ScramClient`] is the same exchange from the other end, for Once's own tools: it checks the
//! server's nonce, bounds the salt and iteration count a server may ask for, and verifies the
//! server's signature in constant time.
//!
//! # Where verifiers live
//! [`CredentialStore`]: one JSON file (mode 0600) holding, per user and mechanism, the salt, the
//! iteration count, `StoredKey` and `ServerKey`, never a password. Every change is durable before it
//! returns (temporary file, fsync, rename, fsync of the directory). PLAIN logins check the password
//! against the same verifiers by deriving `StoredKey` from it.
//!
//! Passwords are taken as UTF-8 bytes without SASLprep, as Kafka's clients send them; see
//! [`ScramMechanism::salted_password`].
//!
//! # Layout
//! - [`mechanism`] — [`ScramMechanism`], Kafka's names and numbers for it, the RFC 5802 functions.
//! - [`credential`] — [`ScramCredential`] (a verifier, always within Kafka's bounds), user names,
//!   [`CredentialLookup`] and the stand-in answered for unknown users.
//! - `scram_message` — the strict parsers of the two SCRAM client messages.
//! - [`scram`] — [`ScramServer`], the state machine of one SCRAM exchange.
//! - [`scram_client`] — [`ScramClient`], the client side of one exchange.
//! - [`plain`] — [`authenticate_plain`].
//! - [`store`] — [`CredentialStore`], its file format and commit.
//! - [`error`] — [`AuthError`].

#![forbid(unsafe_code)]

pub mod credential;
pub mod error;
pub mod mechanism;
pub mod plain;
pub mod scram;
pub mod scram_client;
mod scram_message;
pub mod store;

pub use credential::{
    check_user_name, new_salted_password, CredentialLookup, LookupFn, ScramCredential, PASSWORD_BYTES_MAX,
    SALT_BYTES_MAX, USER_NAME_BYTES_MAX,
};
pub use error::AuthError;
pub use mechanism::{ScramMechanism, ITERATIONS_DEFAULT, ITERATIONS_MAX, ITERATIONS_MIN};
pub use plain::{authenticate_plain, PLAIN_MECHANISM};
pub use scram::ScramServer;
pub use scram_client::ScramClient;
pub use scram_message::CLIENT_MESSAGE_BYTES_MAX;
pub use store::{CredentialChange, CredentialStore};

/// A SASL mechanism Once offers, as SaslHandshake names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616), checked against SCRAM verifiers.
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(ScramMechanism),
}

impl SaslMechanism {
    /// Every mechanism offered, in the order SaslHandshake lists them.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
    ];

    /// The mechanism for a SaslHandshake name (exact spelling, as Kafka matches it).
    pub fn parse(name: &str) -> Result<Self, AuthError> {
        if name == PLAIN_MECHANISM {
            return Ok(SaslMechanism::Plain);
        }
        ScramMechanism::parse(name).map(SaslMechanism::Scram)
    }

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => PLAIN_MECHANISM,
            SaslMechanism::Scram(mechanism) => mechanism.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_mechanism_names_round_trip() {
        for mechanism in SaslMechanism::ALL {
            assert_eq!(SaslMechanism::parse(mechanism.name()).ok(), Some(mechanism));
        }
        assert!(matches!(SaslMechanism::parse("GSSAPI"), Err(AuthError::UnsupportedMechanism)));
        assert!(matches!(SaslMechanism::parse("plain"), Err(AuthError::UnsupportedMechanism)));
    }
}
