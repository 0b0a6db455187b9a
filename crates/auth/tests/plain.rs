//! SASL/PLAIN against SCRAM verifiers: who gets in, who does not, and that all refusals of a
//! login look alike.

use once_auth::{authenticate_plain, AuthError, CredentialLookup, LookupFn, ScramCredential, ScramMechanism};

/// alice: the same password for both mechanisms; bob: SCRAM-SHA-256 only; carol: "new" for
/// SHA-512 and "old" for SHA-256 (a half-finished password change).
fn users() -> impl CredentialLookup {
    let credential =
        |password: &str, mechanism| ScramCredential::new(password, mechanism, 4096).expect("valid credential");
    let alice_256 = credential("alice-pw", ScramMechanism::Sha256);
    let alice_512 = credential("alice-pw", ScramMechanism::Sha512);
    let bob_256 = credential("bob-pw", ScramMechanism::Sha256);
    let carol_256 = credential("old", ScramMechanism::Sha256);
    let carol_512 = credential("new", ScramMechanism::Sha512);
    LookupFn(move |user: &str, mechanism| {
        let found = match (user, mechanism) {
            ("alice", ScramMechanism::Sha256) => &alice_256,
            ("alice", ScramMechanism::Sha512) => &alice_512,
            ("bob", ScramMechanism::Sha256) => &bob_256,
            ("carol", ScramMechanism::Sha256) => &carol_256,
            ("carol", ScramMechanism::Sha512) => &carol_512,
            _ => return None,
        };
        Some(found.clone())
    })
}

fn login(message: &[u8]) -> Result<String, AuthError> {
    authenticate_plain(message, &users())
}

#[test]
fn right_passwords_log_in() {
    assert_eq!(login(b"\0alice\0alice-pw").ok().as_deref(), Some("alice"));
    assert_eq!(login(b"alice\0alice\0alice-pw").ok().as_deref(), Some("alice"));
    assert_eq!(login(b"\0bob\0bob-pw").ok().as_deref(), Some("bob"), "SHA-256 verifier only");
    assert_eq!(login(b"\0carol\0new").ok().as_deref(), Some("carol"));
}

#[test]
fn wrong_passwords_and_unknown_users_fail_alike() {
    let failures = [
        login(b"\0alice\0alice-pw "),
        login(b"\0alice\0ALICE-PW"),
        login(b"\0alice\0bob-pw"),
        login(b"\0carol\0old"), // the SHA-512 verifier decides; SHA-256's older password is not a second one
        login(b"\0mallory\0alice-pw"),
        login(b"\0Alice\0alice-pw"),
    ];
    for failure in failures {
        let error = failure.expect_err("must not log in");
        assert!(matches!(error, AuthError::AuthenticationFailed), "{error:?}");
        assert_eq!(error.to_string(), "authentication failed: invalid credentials");
    }
}

#[test]
fn authorization_id_must_be_the_user() {
    assert!(matches!(login(b"bob\0alice\0alice-pw"), Err(AuthError::AuthorizationIdMismatch)));
    assert!(matches!(login(b"admin\0mallory\0x"), Err(AuthError::AuthorizationIdMismatch)));
}

#[test]
fn malformed_messages_are_refused_before_any_lookup() {
    let panicking_lookup =
        LookupFn(|_: &str, _| -> Option<ScramCredential> { panic!("a malformed message must not reach the lookup") });
    let too_long = [vec![b'a'; 256], b"\0\0pw".to_vec()].concat();
    for message in [
        &b""[..],
        b"alice-pw",
        b"\0alice",
        b"\0alice\0",
        b"\0\0alice-pw",
        b"\0alice\0alice-pw\0",
        b"\0al\xffice\0alice-pw",
        &too_long,
    ] {
        let result = authenticate_plain(message, &panicking_lookup);
        assert!(matches!(result, Err(AuthError::Malformed(_))), "{message:?}: {result:?}");
    }
}

#[test]
fn every_truncation_and_flip_of_a_login_fails() {
    let valid = b"\0alice\0alice-pw";
    let lookup = users();
    for end in 0..valid.len() {
        assert!(authenticate_plain(&valid[..end], &lookup).is_err(), "truncated to {end}");
    }
    for at in 0..valid.len() {
        for mask in [0x01, 0x20, 0x80, 0xff] {
            let mut flipped = valid.to_vec();
            flipped[at] ^= mask;
            assert!(authenticate_plain(&flipped, &lookup).is_err(), "{flipped:?}");
        }
    }
}
