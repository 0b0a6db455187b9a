//! The SCRAM client: RFC 7677's published example byte for byte, and full exchanges against the
//! crate's own server with both mechanisms, wrong passwords and a server that cannot sign.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::rfc7677::*;
use common::salted_password;
use once_auth::{AuthError, CredentialLookup, LookupFn, ScramClient, ScramCredential, ScramMechanism, ScramServer};

fn rfc_client(password: &str) -> ScramClient {
    ScramClient::with_fixed_nonce(ScramMechanism::Sha256, "user", password, RFC_CLIENT_NONCE).expect("valid")
}

#[test]
fn rfc_7677_example_byte_for_byte() {
    let mut client = rfc_client("pencil");
    assert_eq!(String::from_utf8_lossy(&client.client_first()), RFC_CLIENT_FIRST);
    let client_final = client.server_first(RFC_SERVER_FIRST.as_bytes()).expect("server-first");
    assert_eq!(String::from_utf8_lossy(&client_final), RFC_CLIENT_FINAL);
    assert!(!client.is_complete());
    client.server_final(RFC_SERVER_FINAL.as_bytes()).expect("the RFC's server signature verifies");
    assert!(client.is_complete());
}

#[test]
fn rfc_7677_server_signature_for_another_password_is_refused() {
    let mut client = rfc_client("pencil2");
    client.client_first();
    let client_final = client.server_first(RFC_SERVER_FIRST.as_bytes()).expect("server-first");
    assert_ne!(String::from_utf8_lossy(&client_final), RFC_CLIENT_FINAL);
    assert!(matches!(client.server_final(RFC_SERVER_FINAL.as_bytes()), Err(AuthError::ServerNotVerified)));
    assert!(!client.is_complete());
}

#[test]
fn tampered_server_final_is_refused() {
    let mut signature = BASE64.decode(&RFC_SERVER_FINAL[2..]).expect("base64");
    for index in [0, signature.len() - 1] {
        signature[index] ^= 1;
        let mut client = rfc_client("pencil");
        client.client_first();
        client.server_first(RFC_SERVER_FIRST.as_bytes()).expect("server-first");
        let tampered = format!("v={}", BASE64.encode(&signature));
        assert!(matches!(client.server_final(tampered.as_bytes()), Err(AuthError::ServerNotVerified)));
        signature[index] ^= 1;
    }
    for refused in ["e=invalid-proof", "x=1", "v=not base64", ""] {
        let mut client = rfc_client("pencil");
        client.client_first();
        client.server_first(RFC_SERVER_FIRST.as_bytes()).expect("server-first");
        assert!(client.server_final(refused.as_bytes()).is_err(), "{refused:?}");
    }
}

fn store_of(user: &str, credential: ScramCredential) -> impl CredentialLookup {
    let user = user.to_owned();
    LookupFn(move |asked: &str, mechanism| {
        (asked == user && mechanism == credential.mechanism()).then(|| credential.clone())
    })
}

/// A full exchange of the client against the crate's server.
fn login(mechanism: ScramMechanism, stored: ScramCredential, user: &str, password: &str) -> Result<String, AuthError> {
    let mut server = ScramServer::new(mechanism, store_of(user, stored));
    let mut client = ScramClient::new(mechanism, user, password)?;
    let server_first = server.client_first(&client.client_first())?;
    let client_final = client.server_first(&server_first)?;
    let (server_final, authenticated) = server.client_final(&client_final)?;
    client.server_final(&server_final)?;
    assert!(client.is_complete());
    Ok(authenticated)
}

#[test]
fn logs_in_to_the_crate_server_with_both_mechanisms() {
    for mechanism in ScramMechanism::ALL {
        for (user, iterations) in [("alice", 4096), ("a,b=c", 8192), ("é", 16384)] {
            let stored = ScramCredential::new("s3cret ,=", mechanism, iterations).expect("credential");
            assert_eq!(login(mechanism, stored, user, "s3cret ,=").expect("login"), user);
        }
    }
}

#[test]
fn a_credential_made_from_a_salted_password_logs_in() {
    // What `once user create` sends (KIP-554): the salted password, computed by the client.
    let salt = [7u8; 32];
    let salted = salted_password(ScramMechanism::Sha512, "pw", &salt, 4096);
    let stored =
        ScramCredential::from_salted_password(ScramMechanism::Sha512, &salt, 4096, &salted).expect("credential");
    assert_eq!(login(ScramMechanism::Sha512, stored, "bob", "pw").expect("login"), "bob");
}

#[test]
fn wrong_password_is_refused_by_the_server() {
    let stored = ScramCredential::new("right", ScramMechanism::Sha512, 4096).expect("credential");
    assert!(matches!(login(ScramMechanism::Sha512, stored, "alice", "wrong"), Err(AuthError::AuthenticationFailed)));
}

#[test]
fn a_server_without_the_server_key_is_refused_by_the_client() {
    // The server knows StoredKey (so it accepts the proof) but not ServerKey: the client must not
    // believe it.
    let mechanism = ScramMechanism::Sha256;
    let real = ScramCredential::new("pw", mechanism, 4096).expect("credential");
    let forged = ScramCredential::from_parts(
        mechanism,
        real.salt().to_vec(),
        real.iterations(),
        real.stored_key().to_vec(),
        vec![0u8; mechanism.output_bytes()],
    )
    .expect("well-formed");
    assert!(matches!(login(mechanism, forged, "alice", "pw"), Err(AuthError::ServerNotVerified)));
}
