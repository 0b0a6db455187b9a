//! The errors of authentication and of the credential store, [`AuthError`].
//!
//! The broker maps them to Kafka error codes in one place. The reasons are `&'static str` on
//! purpose: an error never echoes the bytes a client sent, so a log line or an error message sent
//! back cannot be used to smuggle text into either, and cannot hold a password someone mistyped into
//! the user name field.

use std::path::PathBuf;

/// Why an authentication, a credential or the credential store was refused.
///
/// The intended mapping to Kafka's codes: [`AuthError::AuthenticationFailed`],
/// [`AuthError::Malformed`], [`AuthError::AuthorizationIdMismatch`] and
/// [`AuthError::UnsupportedExtension`] → SASL_AUTHENTICATION_FAILED;
/// [`AuthError::IllegalState`] → ILLEGAL_SASL_STATE; [`AuthError::UnsupportedMechanism`] →
/// UNSUPPORTED_SASL_MECHANISM; [`AuthError::InvalidCredential`] and [`AuthError::InvalidUser`]
/// → UNACCEPTABLE_CREDENTIAL (AlterUserScramCredentials); the store's errors →
/// UNKNOWN_SERVER_ERROR, logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The client's message does not follow the grammar (RFC 5802 section 7, RFC 4616 section 2).
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    /// The user is unknown or the password or proof is wrong. Deliberately one variant for both, so
    /// that nothing a client sees tells an unknown user from a wrong password.
    #[error("authentication failed: invalid credentials")]
    AuthenticationFailed,
    /// The client asked to act as another identity than the one it authenticates as; like Kafka,
    /// Once allows an authorization id only when it equals the user name.
    #[error("authentication failed: the authorization id differs from the user name")]
    AuthorizationIdMismatch,
    /// A mechanism name Once does not offer.
    #[error("unsupported SASL mechanism (supported: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")]
    UnsupportedMechanism,
    /// The client asked for something Once does not do: channel binding, a mandatory extension,
    /// delegation-token authentication.
    #[error("unsupported SCRAM feature: {0}")]
    UnsupportedExtension(&'static str),
    /// The server's final signature (SCRAM `v=`) is not the one a server holding the user's verifier
    /// would sign: the client is talking to something that does not know the credential. Only the
    /// client side ([`crate::ScramClient`]) answers this.
    #[error("the server did not prove it holds the user's credential (wrong SCRAM server signature)")]
    ServerNotVerified,
    /// A message arrived in a state that expects none (after the end, after a failure, or out of
    /// order). Once an exchange has failed, it stays failed.
    #[error("illegal SASL state: {0}")]
    IllegalState(&'static str),
    /// A credential outside what Kafka accepts (iterations, salt, key lengths, password length).
    #[error("unacceptable credential: {0}")]
    InvalidCredential(&'static str),
    /// A user name that cannot be stored or authenticated (empty, too long, NUL).
    #[error("invalid user name: {0}")]
    InvalidUser(&'static str),
    /// The operating system's random number generator failed; no salt or nonce was made.
    #[error("the operating system's random number generator failed: {0}")]
    Randomness(getrandom::Error),
    /// Reading or writing the credential store failed.
    #[error("credential store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The credential store's file is not what this crate writes. It is never emptied or rewritten
    /// on its own: an operator has to look at it.
    #[error("credential store {path} is corrupt: {reason}")]
    CorruptStore { path: PathBuf, reason: String },
    /// Another store has this file open (in this process or another); two writers would lose each
    /// other's changes.
    #[error("credential store {path} is in use by another process or store")]
    StoreInUse { path: PathBuf },
    /// An earlier write of the store failed, so what is on disk is unknown; changes are refused until
    /// the store is opened again (reads go on from memory: the last state known durable).
    #[error("credential store {path} refuses changes after a failed write; reopen it")]
    StoreLatched { path: PathBuf },
}
