//! SCRAM verifiers ([`ScramCredential`]), user names, and how an exchange finds a user's verifier
//! ([`CredentialLookup`]), including the stand-in verifier answered for unknown users.

use std::fmt;
use std::sync::{Arc, OnceLock};

use subtle::ConstantTimeEq;

use crate::{AuthError, ScramMechanism, ITERATIONS_DEFAULT, ITERATIONS_MAX, ITERATIONS_MIN};

/// The longest user name accepted, in bytes of UTF-8. Kafka sets none; a bound keeps messages, logs
/// and the store small, and 255 is what RFC 4616 implementations commonly allow.
pub const USER_NAME_BYTES_MAX: usize = 255;
/// The longest password accepted, in bytes. One bound for SCRAM credentials and PLAIN so that every
/// password a credential can be made from can also log in over PLAIN.
pub const PASSWORD_BYTES_MAX: usize = 255;
/// The longest salt accepted from AlterUserScramCredentials, in bytes. The salt is sent back in
/// every server-first message, so it is bounded like everything else a client can set.
pub const SALT_BYTES_MAX: usize = 256;
/// The length of the key that derives unknown users' salts.
pub const UNKNOWN_USER_KEY_BYTES: usize = 32;

/// What the server keeps for one user and one mechanism (RFC 5802 section 3): the salt, the
/// iteration count, `StoredKey` and `ServerKey`. Neither key lets anyone log in by itself: the client
/// proof needs `ClientKey`, of which `StoredKey` is a hash. The password is never kept.
///
/// Every value of this type is within Kafka's bounds (iterations 4096..=16384, key lengths those of
/// the mechanism, a salt of 1..=256 bytes): the constructors check, so users of it need not.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    mechanism: ScramMechanism,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramCredential {
    /// A credential for `password` with a fresh random salt as long as the mechanism's hash (what
    /// `kafka-configs --add-config 'SCRAM-SHA-512=[password=…]'` does, with a longer salt).
    pub fn new(password: &str, mechanism: ScramMechanism, iterations: u32) -> Result<Self, AuthError> {
        let (salt, salted_password) = new_salted_password(password, mechanism, iterations)?;
        Self::from_salted_password(mechanism, &salt, iterations, &salted_password)
    }

    /// A credential from what AlterUserScramCredentials (KIP-554) carries: the client derives
    /// `SaltedPassword` itself and sends it with the salt and iteration count, so the password never
    /// reaches the broker.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        iterations: u32,
        salted_password: &[u8],
    ) -> Result<Self, AuthError> {
        // Kafka's clients send Hi()'s output, which is exactly one hash long; anything else is a
        // client that derived it some other way and would never log in.
        if salted_password.len() != mechanism.output_bytes() {
            return Err(AuthError::InvalidCredential("the salted password is not as long as the mechanism's hash"));
        }
        Self::from_parts(
            mechanism,
            salt.to_vec(),
            iterations,
            mechanism.stored_key(salted_password),
            mechanism.server_key(salted_password),
        )
    }

    /// A credential from its stored parts, checked against Kafka's bounds.
    pub fn from_parts(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: u32,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    ) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        if salt.is_empty() {
            return Err(AuthError::InvalidCredential("the salt is empty"));
        }
        if salt.len() > SALT_BYTES_MAX {
            return Err(AuthError::InvalidCredential("the salt is longer than 256 bytes"));
        }
        if stored_key.len() != mechanism.output_bytes() {
            return Err(AuthError::InvalidCredential("the stored key is not as long as the mechanism's hash"));
        }
        if server_key.len() != mechanism.output_bytes() {
            return Err(AuthError::InvalidCredential("the server key is not as long as the mechanism's hash"));
        }
        Ok(ScramCredential { mechanism, salt, iterations, stored_key, server_key })
    }

    /// The mechanism this credential belongs to.
    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The iteration count of `Hi`.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// `StoredKey`, `H(ClientKey)`.
    pub fn stored_key(&self) -> &[u8] {
        &self.stored_key
    }

    /// `ServerKey`, which signs the server-final message.
    pub fn server_key(&self) -> &[u8] {
        &self.server_key
    }

    /// Whether `password` derives this credential's `StoredKey`, compared in constant time. This is
    /// how PLAIN logs in against a SCRAM verifier: the full `Hi` cost is paid on every attempt.
    pub(crate) fn verifies_password(&self, password: &[u8]) -> bool {
        let salted_password = self.mechanism.salted_password(password, &self.salt, self.iterations);
        let stored_key = self.mechanism.stored_key(&salted_password);
        stored_key.ct_eq(&self.stored_key).into()
    }
}

/// A fresh random salt (as long as the mechanism's hash) and `SaltedPassword` for `password`: what a
/// client sends in AlterUserScramCredentials (KIP-554), so the password itself never leaves it.
/// The password and iteration count are checked against the bounds every credential meets.
pub fn new_salted_password(
    password: &str,
    mechanism: ScramMechanism,
    iterations: u32,
) -> Result<(Vec<u8>, Vec<u8>), AuthError> {
    check_password(password.as_bytes())?;
    check_iterations(iterations)?;
    let salt = random_bytes(mechanism.output_bytes())?;
    let salted_password = mechanism.salted_password(password.as_bytes(), &salt, iterations);
    Ok((salt, salted_password))
}

/// Keys are left out: a credential printed into a log must not hand out `ServerKey` (with it, anyone
/// can impersonate the broker to a client) or `StoredKey`.
impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("salt_bytes", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Checks a user name as stored and as authenticated: 1..=255 bytes of UTF-8, no NUL (which PLAIN
/// uses as a separator and RFC 5802's `saslname` excludes).
pub fn check_user_name(user: &str) -> Result<(), AuthError> {
    if user.is_empty() {
        return Err(AuthError::InvalidUser("the user name is empty"));
    }
    if user.len() > USER_NAME_BYTES_MAX {
        return Err(AuthError::InvalidUser("the user name is longer than 255 bytes"));
    }
    if user.contains('\0') {
        return Err(AuthError::InvalidUser("the user name contains NUL"));
    }
    Ok(())
}

pub(crate) fn check_password(password: &[u8]) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::InvalidCredential("the password is empty"));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::InvalidCredential("the password is longer than 255 bytes"));
    }
    Ok(())
}

fn check_iterations(iterations: u32) -> Result<(), AuthError> {
    if iterations < ITERATIONS_MIN {
        return Err(AuthError::InvalidCredential("fewer iterations than Kafka's minimum, 4096"));
    }
    if iterations > ITERATIONS_MAX {
        return Err(AuthError::InvalidCredential("more iterations than Kafka's maximum, 16384"));
    }
    Ok(())
}

/// Where an exchange finds a user's verifier.
///
/// Implemented by [`crate::CredentialStore`], by references and `Arc`s of any lookup, and by
/// closures wrapped in [`LookupFn`].
pub trait CredentialLookup {
    /// The user's credential for `mechanism`, or `None` when there is none.
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential>;

    /// The key that derives the salt answered for an unknown user (the crate docs say why).
    /// It must stay the same for as long as possible: if it changed while real users' salts did not,
    /// a client could tell the two apart by asking twice. The default is a random key made once per
    /// process; [`crate::CredentialStore`] keeps one in its file, so it survives restarts too.
    fn unknown_user_key(&self) -> Result<[u8; UNKNOWN_USER_KEY_BYTES], AuthError> {
        process_unknown_user_key()
    }
}

impl<T: CredentialLookup + ?Sized> CredentialLookup for &T {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (**self).credential(user, mechanism)
    }

    fn unknown_user_key(&self) -> Result<[u8; UNKNOWN_USER_KEY_BYTES], AuthError> {
        (**self).unknown_user_key()
    }
}

impl<T: CredentialLookup + ?Sized> CredentialLookup for Arc<T> {
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (**self).credential(user, mechanism)
    }

    fn unknown_user_key(&self) -> Result<[u8; UNKNOWN_USER_KEY_BYTES], AuthError> {
        (**self).unknown_user_key()
    }
}

/// A closure as a [`CredentialLookup`], with the per-process key for unknown users. (A blanket
/// implementation for closures would collide with the one for references, which are closures too.)
pub struct LookupFn<F>(pub F);

impl<F> CredentialLookup for LookupFn<F>
where
    F: Fn(&str, ScramMechanism) -> Option<ScramCredential>,
{
    fn credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        (self.0)(user, mechanism)
    }
}

/// The credential answered for a user who has none: a salt derived from the user name under a
/// secret key, the default iteration count, and keys that no password matches (callers also
/// refuse it regardless of the proof).
///
/// Why: a server that answered "unknown user" at the first message, or a fresh random salt each
/// time, would let anyone list which user names exist. A real user's salt is the same on every
/// attempt and as long as the mechanism's hash; so is this one, and without the key no one can
/// tell it from a real salt.
pub(crate) fn unknown_user_credential(
    mechanism: ScramMechanism,
    user: &str,
    key: &[u8; UNKNOWN_USER_KEY_BYTES],
) -> ScramCredential {
    let derive = |label: &[u8]| {
        mechanism.hmac(
            key,
            &[b"once-auth unknown user\0", label, b"\0", mechanism.name().as_bytes(), b"\0", user.as_bytes()],
        )
    };
    let credential = ScramCredential::from_parts(
        mechanism,
        derive(b"salt"),
        ITERATIONS_DEFAULT,
        derive(b"stored key"),
        derive(b"server key"),
    );
    // Every part is a hash long and the iterations are the default: within bounds by construction.
    credential.expect("an unknown user's credential is within Kafka's bounds")
}

fn process_unknown_user_key() -> Result<[u8; UNKNOWN_USER_KEY_BYTES], AuthError> {
    static KEY: OnceLock<[u8; UNKNOWN_USER_KEY_BYTES]> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(*key);
    }
    // Made outside `get_or_init` so that a failing random source is an error, not a panic; if two
    // threads race here, both return the one value that won.
    let mut key = [0u8; UNKNOWN_USER_KEY_BYTES];
    getrandom::fill(&mut key).map_err(AuthError::Randomness)?;
    Ok(*KEY.get_or_init(|| key))
}

/// `len` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes(len: usize) -> Result<Vec<u8>, AuthError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(AuthError::Randomness)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_credential_verifies_its_password_only() {
        for mechanism in ScramMechanism::ALL {
            let credential = ScramCredential::new("pencil", mechanism, 4096).expect("valid");
            assert_eq!(credential.salt().len(), mechanism.output_bytes());
            assert_eq!(credential.stored_key().len(), mechanism.output_bytes());
            assert!(credential.verifies_password(b"pencil"));
            assert!(!credential.verifies_password(b"pencil "));
            assert!(!credential.verifies_password(b"Pencil"));
            let again = ScramCredential::new("pencil", mechanism, 4096).expect("valid");
            assert_ne!(credential.salt(), again.salt(), "every credential gets a fresh salt");
        }
    }

    #[test]
    fn bounds_are_refused() {
        let mechanism = ScramMechanism::Sha256;
        for iterations in [0, 4095, 16385] {
            assert!(matches!(
                ScramCredential::new("pencil", mechanism, iterations),
                Err(AuthError::InvalidCredential(_))
            ));
        }
        assert!(ScramCredential::new("", mechanism, 4096).is_err());
        assert!(ScramCredential::new(&"x".repeat(256), mechanism, 4096).is_err());
        assert!(ScramCredential::new(&"x".repeat(255), mechanism, 16384).is_ok());
        let salted = vec![7u8; 32];
        assert!(ScramCredential::from_salted_password(mechanism, b"", 4096, &salted).is_err());
        assert!(ScramCredential::from_salted_password(mechanism, &[1; 257], 4096, &salted).is_err());
        assert!(ScramCredential::from_salted_password(mechanism, b"s", 4096, &salted[..31]).is_err());
        assert!(ScramCredential::from_salted_password(ScramMechanism::Sha512, b"s", 4096, &salted).is_err());
        assert!(ScramCredential::from_salted_password(mechanism, b"s", 4096, &salted).is_ok());
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("a,b=c é").is_ok());
        assert!(check_user_name(&"u".repeat(255)).is_ok());
        assert!(check_user_name("").is_err());
        assert!(check_user_name(&"u".repeat(256)).is_err());
        assert!(check_user_name("a\0b").is_err());
    }

    #[test]
    fn unknown_user_credentials_are_stable_per_user_and_key() {
        let key = [9u8; UNKNOWN_USER_KEY_BYTES];
        let other_key = [8u8; UNKNOWN_USER_KEY_BYTES];
        for mechanism in ScramMechanism::ALL {
            let a = unknown_user_credential(mechanism, "mallory", &key);
            assert_eq!(a, unknown_user_credential(mechanism, "mallory", &key));
            assert_ne!(a.salt(), unknown_user_credential(mechanism, "mallor", &key).salt());
            assert_ne!(a.salt(), unknown_user_credential(mechanism, "mallory", &other_key).salt());
            assert_eq!(a.salt().len(), mechanism.output_bytes());
            assert_eq!(a.iterations(), ITERATIONS_DEFAULT);
        }
        let sha256 = unknown_user_credential(ScramMechanism::Sha256, "mallory", &key);
        let sha512 = unknown_user_credential(ScramMechanism::Sha512, "mallory", &key);
        assert_ne!(sha256.salt(), &sha512.salt()[..32]);
        assert_eq!(process_unknown_user_key().ok(), process_unknown_user_key().ok());
    }

    #[test]
    fn debug_hides_the_keys() {
        let credential = ScramCredential::new("pencil", ScramMechanism::Sha256, 4096).expect("valid");
        let printed = format!("{credential:?}");
        assert!(printed.contains("iterations: 4096"));
        assert!(!printed.contains("stored_key"));
        assert!(!printed.contains("server_key"));
    }
}
