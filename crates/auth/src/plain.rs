//! SASL/PLAIN (RFC 4616) checked against the stored SCRAM verifiers, [`authenticate_plain`].
//!
//! PLAIN sends the password itself, so it belongs only on TLS listeners (the broker's concern).
//! The broker never keeps the password: it derives `SaltedPassword` with the user's stored salt and
//! iteration count and compares the resulting `StoredKey`, as a SCRAM login would.

use std::hint::black_box;

use crate::credential::{check_password, unknown_user_credential, PASSWORD_BYTES_MAX};
use crate::{AuthError, CredentialLookup, ScramMechanism, USER_NAME_BYTES_MAX};

/// The SASL mechanism name.
pub const PLAIN_MECHANISM: &str = "PLAIN";
/// The longest PLAIN message: three fields of at most 255 bytes and two NULs.
pub const PLAIN_MESSAGE_BYTES_MAX: usize = USER_NAME_BYTES_MAX * 2 + PASSWORD_BYTES_MAX + 2;

/// Authenticates one PLAIN message, `authzid NUL authcid NUL passwd`, and answers the user name.
///
/// The authorization id must be empty or the user name (as Kafka's PLAIN server requires). The
/// password is checked against the user's SCRAM-SHA-512 verifier, or its SCRAM-SHA-256 one when it
/// has no SHA-512 verifier: never both, so a user whose two verifiers were set from different
/// passwords has one PLAIN password, not two. An unknown user costs the same `Hi` as a known one and
/// gets the same [`AuthError::AuthenticationFailed`] as a wrong password.
pub fn authenticate_plain<L: CredentialLookup + ?Sized>(message: &[u8], lookup: &L) -> Result<String, AuthError> {
    let (authzid, user, password) = parse_plain(message)?;
    if !authzid.is_empty() && authzid != user {
        return Err(AuthError::AuthorizationIdMismatch);
    }
    let credential =
        lookup.credential(user, ScramMechanism::Sha512).or_else(|| lookup.credential(user, ScramMechanism::Sha256));
    match credential {
        Some(credential) if credential.verifies_password(password.as_bytes()) => Ok(user.to_owned()),
        Some(_) => Err(AuthError::AuthenticationFailed),
        None => {
            // Pay for `Hi` as if the user existed, so the answer's timing does not list users.
            let key = lookup.unknown_user_key()?;
            let stand_in = unknown_user_credential(ScramMechanism::Sha512, user, &key);
            black_box(stand_in.verifies_password(black_box(password.as_bytes())));
            Err(AuthError::AuthenticationFailed)
        }
    }
}

/// Splits and checks the three fields: exactly two NULs, UTF-8, authzid 0..=255 bytes, authcid and
/// password 1..=255 bytes.
fn parse_plain(message: &[u8]) -> Result<(&str, &str, &str), AuthError> {
    if message.len() > PLAIN_MESSAGE_BYTES_MAX {
        return Err(AuthError::Malformed("the PLAIN message is longer than 767 bytes"));
    }
    let mut fields = message.split(|&byte| byte == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(AuthError::Malformed("a PLAIN message has exactly two NUL separators"));
    };
    let (authzid, user, password) = (utf8(authzid)?, utf8(user)?, utf8(password)?);
    if authzid.len() > USER_NAME_BYTES_MAX {
        return Err(AuthError::Malformed("the PLAIN authorization id is longer than 255 bytes"));
    }
    crate::check_user_name(user)
        .map_err(|_| AuthError::Malformed("the PLAIN user name is empty or longer than 255 bytes"))?;
    check_password(password.as_bytes())
        .map_err(|_| AuthError::Malformed("the PLAIN password is empty or longer than 255 bytes"))?;
    Ok((authzid, user, password))
}

fn utf8(field: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(field).map_err(|_| AuthError::Malformed("a PLAIN field is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_split_strictly() {
        assert_eq!(parse_plain(b"\0alice\0pw").ok(), Some(("", "alice", "pw")));
        assert_eq!(parse_plain(b"alice\0alice\0p w").ok(), Some(("alice", "alice", "p w")));
        for refused in [
            &b""[..],
            b"\0",
            b"\0alice",
            b"\0alice\0",
            b"\0\0pw",
            b"\0alice\0pw\0",
            b"\0alice\0pw\0x",
            b"\0al\xffice\0pw",
            b"\0alice\0p\xffw",
        ] {
            assert!(parse_plain(refused).is_err(), "{refused:?}");
        }
        let long = "x".repeat(255);
        let message = format!("{long}\0{long}\0{long}");
        assert_eq!(message.len(), PLAIN_MESSAGE_BYTES_MAX);
        assert!(parse_plain(message.as_bytes()).is_ok());
        assert!(parse_plain(format!("\0{long}x\0pw").as_bytes()).is_err());
        assert!(parse_plain(format!("\0alice\0{long}x").as_bytes()).is_err());
        assert!(parse_plain(format!("{long}x\0alice\0pw").as_bytes()).is_err());
    }
}
