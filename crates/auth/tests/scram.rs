//! SCRAM exchanges end to end: the published RFC 7677 example byte for byte, round trips against an
//! independent client, refusals, state misuse, and every small corruption of valid messages.

mod common;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use common::rfc7677::*;
use common::{salted_password, TestClient};
use once_auth::{AuthError, CredentialLookup, LookupFn, ScramCredential, ScramMechanism, ScramServer};
use proptest::prelude::*;

/// A lookup holding one user's credential.
fn one_user(user: &str, credential: ScramCredential) -> impl CredentialLookup {
    let user = user.to_owned();
    LookupFn(move |asked: &str, mechanism| {
        (asked == user && mechanism == credential.mechanism()).then(|| credential.clone())
    })
}

/// What the server answered to client-final: server-final and the user.
type Authenticated = Result<(Vec<u8>, String), AuthError>;

/// A full exchange; answers server-first, the server's last answer, and the server-final the
/// client expects.
fn exchange(lookup: impl CredentialLookup, client: &TestClient) -> (Vec<u8>, Authenticated, String) {
    let mut server = ScramServer::new(client.mechanism, lookup);
    let server_first = server.client_first(client.client_first().as_bytes()).expect("client-first");
    let client_final = client.client_final(&server_first);
    let result = server.client_final(client_final.message.as_bytes());
    (server_first, result, client_final.expected_server_final)
}

fn rfc_credential() -> ScramCredential {
    let salt = BASE64.decode(RFC_SALT).expect("base64");
    let salted = salted_password(ScramMechanism::Sha256, "pencil", &salt, 4096);
    ScramCredential::from_salted_password(ScramMechanism::Sha256, &salt, 4096, &salted).expect("valid credential")
}

fn rfc_server() -> ScramServer<impl CredentialLookup> {
    ScramServer::new(ScramMechanism::Sha256, one_user("user", rfc_credential()))
        .with_nonce_suffix(RFC_SERVER_NONCE_SUFFIX)
}

#[test]
fn rfc_7677_example_byte_for_byte() {
    let mut server = rfc_server();
    let server_first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("client-first");
    assert_eq!(String::from_utf8_lossy(&server_first), RFC_SERVER_FIRST);
    assert_eq!(server.authenticated_user(), None);
    let (server_final, user) = server.client_final(RFC_CLIENT_FINAL.as_bytes()).expect("proof");
    assert_eq!(String::from_utf8_lossy(&server_final), RFC_SERVER_FINAL);
    assert_eq!(user, "user");
    assert_eq!(server.authenticated_user(), Some("user"));
}

#[test]
fn rfc_7677_example_with_another_password_fails() {
    let salt = BASE64.decode(RFC_SALT).expect("base64");
    let salted = salted_password(ScramMechanism::Sha256, "pencil2", &salt, 4096);
    let credential =
        ScramCredential::from_salted_password(ScramMechanism::Sha256, &salt, 4096, &salted).expect("valid");
    let mut server = ScramServer::new(ScramMechanism::Sha256, one_user("user", credential))
        .with_nonce_suffix(RFC_SERVER_NONCE_SUFFIX);
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("client-first");
    assert!(matches!(server.client_final(RFC_CLIENT_FINAL.as_bytes()), Err(AuthError::AuthenticationFailed)));
}

#[test]
fn round_trips_with_both_mechanisms_and_random_nonces() {
    for mechanism in ScramMechanism::ALL {
        for iterations in [4096, 8192] {
            let credential = ScramCredential::new("hunter2 ü", mechanism, iterations).expect("ok");
            let client = TestClient::new(mechanism, "alice", "hunter2 ü");
            let (server_first, result, expected) = exchange(one_user("alice", credential), &client);
            let (server_final, user) = result.expect("the right password authenticates");
            assert_eq!(String::from_utf8_lossy(&server_final), expected, "server signature");
            assert_eq!(user, "alice");
            let text = String::from_utf8_lossy(&server_first).into_owned();
            assert!(text.ends_with(&format!(",i={iterations}")), "{text}");
            // 24 random bytes of suffix as base64: 32 characters after the client's nonce.
            let nonce = text.split(',').next().expect("r=");
            assert_eq!(nonce.len(), 2 + client.client_nonce.len() + 32, "{text}");
        }
    }
}

#[test]
fn server_nonces_differ_between_exchanges() {
    let credential = ScramCredential::new("pw", ScramMechanism::Sha512, 4096).expect("ok");
    let client = TestClient::new(ScramMechanism::Sha512, "alice", "pw");
    let first = |_| {
        let mut server = ScramServer::new(ScramMechanism::Sha512, one_user("alice", credential.clone()));
        server.client_first(client.client_first().as_bytes()).expect("client-first")
    };
    let answers: Vec<Vec<u8>> = (0..8).map(first).collect();
    for (i, a) in answers.iter().enumerate() {
        for b in &answers[i + 1..] {
            assert_ne!(a, b, "every exchange gets a fresh server nonce");
        }
    }
}

#[test]
fn gs2_variants_authzid_and_y_flag() {
    let mechanism = ScramMechanism::Sha256;
    let credential = ScramCredential::new("pw", mechanism, 4096).expect("ok");
    for gs2_header in ["y,,", "n,a=alice,", "y,a=alice,"] {
        let mut client = TestClient::new(mechanism, "alice", "pw");
        client.gs2_header = gs2_header.to_owned();
        let (_, result, _) = exchange(one_user("alice", credential.clone()), &client);
        assert_eq!(result.expect(gs2_header).1, "alice");
    }
    let mut client = TestClient::new(mechanism, "alice", "pw");
    client.gs2_header = "n,a=admin,".to_owned();
    let mut server = ScramServer::new(mechanism, one_user("alice", credential.clone()));
    assert!(matches!(server.client_first(client.client_first().as_bytes()), Err(AuthError::AuthorizationIdMismatch)));
    // A client that says "n" but binds as "y" (a downgrade) fails at c=.
    let client = TestClient::new(mechanism, "alice", "pw");
    let mut server = ScramServer::new(mechanism, one_user("alice", credential));
    let server_first = server.client_first(client.client_first().as_bytes()).expect("first");
    let mut lying = TestClient::new(mechanism, "alice", "pw");
    lying.gs2_header = "y,,".to_owned();
    let message = lying.client_final(&server_first).message;
    assert!(matches!(server.client_final(message.as_bytes()), Err(AuthError::Malformed(_))));
}

/// librdkafka's client-final repeats its client nonce before the combined nonce (its `r=` is the
/// client nonce followed by server-first's `r=`); Kafka's server accepts that form, and so does
/// Once — only that one, with a valid proof over the message as sent.
#[test]
fn librdkafkas_repeated_client_nonce_is_accepted_and_nothing_else() {
    let mechanism = ScramMechanism::Sha512;
    let credential = ScramCredential::new("pw", mechanism, 4096).expect("ok");
    let client = TestClient::new(mechanism, "alice", "pw");
    let first_nonce = |server_first: &[u8]| {
        let text = std::str::from_utf8(server_first).expect("utf-8").to_owned();
        text.split(',').next().and_then(|r| r.strip_prefix("r=")).expect("r=").to_owned()
    };
    let mut server = ScramServer::new(mechanism, one_user("alice", credential.clone()));
    let server_first = server.client_first(client.client_first().as_bytes()).expect("first");
    let librdkafka = format!("{}{}", client.client_nonce, first_nonce(&server_first));
    let message = client.client_final_with_nonce(&server_first, Some(&librdkafka)).message;
    let (_, user) = server.client_final(message.as_bytes()).expect("librdkafka's form authenticates");
    assert_eq!(user, "alice");
    // Twice repeated, or another prefix: refused.
    for prefix in [format!("{0}{0}", client.client_nonce), "x".to_owned()] {
        let mut server = ScramServer::new(mechanism, one_user("alice", credential.clone()));
        let server_first = server.client_first(client.client_first().as_bytes()).expect("first");
        let nonce = format!("{prefix}{}", first_nonce(&server_first));
        let message = client.client_final_with_nonce(&server_first, Some(&nonce)).message;
        assert!(server.client_final(message.as_bytes()).is_err(), "{nonce}");
    }
}

#[test]
fn a_proof_over_another_nonce_is_refused() {
    // The proof is valid for what the client sent; only the nonce check stands in the way (RFC
    // 5802: the server must verify that the nonce is the one it sent).
    let mechanism = ScramMechanism::Sha256;
    let credential = ScramCredential::new("pw", mechanism, 4096).expect("ok");
    let client = TestClient::new(mechanism, "alice", "pw");
    for nonce in ["fyko+d2lbbFgONRv9qkxdawL", "fyko+d2lbbFgONRv9qkxdawLsuffix", "other"] {
        let mut server = ScramServer::new(mechanism, one_user("alice", credential.clone()));
        let server_first = server.client_first(client.client_first().as_bytes()).expect("first");
        let message = client.client_final_with_nonce(&server_first, Some(nonce)).message;
        let result = server.client_final(message.as_bytes());
        assert!(matches!(result, Err(AuthError::Malformed(_))), "{nonce}: {result:?}");
    }
}

#[test]
fn escaped_user_names_authenticate_as_the_unescaped_name() {
    let mechanism = ScramMechanism::Sha512;
    let user = "a,b=c=2C";
    let credential = ScramCredential::new("pw", mechanism, 4096).expect("ok");
    let client = TestClient::new(mechanism, user, "pw");
    assert_eq!(client.client_first(), "n,,n=a=2Cb=3Dc=3D2C,r=fyko+d2lbbFgONRv9qkxdawL");
    let (_, result, _) = exchange(one_user(user, credential.clone()), &client);
    assert_eq!(result.expect("escaped name").1, user);

    let mut client = TestClient::new(mechanism, user, "pw");
    client.gs2_header = "n,a=a=2Cb=3Dc=3D2C,".to_owned();
    let (_, result, _) = exchange(one_user(user, credential.clone()), &client);
    assert_eq!(result.expect("escaped authzid").1, user);

    for bad in ["n,,n=a=2cb,r=abc", "n,,n=a=,r=abc", "n,,n=a=41,r=abc", "n,,n=a=3,r=abc"] {
        let mut server = ScramServer::new(mechanism, one_user(user, credential.clone()));
        assert!(matches!(server.client_first(bad.as_bytes()), Err(AuthError::Malformed(_))), "{bad}");
    }
}

/// Parses a server-first message into (nonce length, salt bytes, iterations).
fn shape(server_first: &[u8]) -> (usize, Vec<u8>, String) {
    let text = std::str::from_utf8(server_first).expect("UTF-8");
    let parts: Vec<&str> = text.split(',').collect();
    assert_eq!(parts.len(), 3, "{text}");
    let salt = BASE64.decode(parts[1].strip_prefix("s=").expect("s=")).expect("base64");
    (parts[0].len(), salt, parts[2].to_owned())
}

#[test]
fn unknown_user_looks_like_a_wrong_password() {
    for mechanism in ScramMechanism::ALL {
        let credential = ScramCredential::new("right", mechanism, 4096).expect("ok");
        let lookup = one_user("alice", credential);
        let wrong_password = TestClient::new(mechanism, "alice", "wrong");
        let unknown_user = TestClient::new(mechanism, "mallory", "wrong");

        let (known_first, known, _) = exchange(&lookup, &wrong_password);
        let (unknown_first, unknown, _) = exchange(&lookup, &unknown_user);
        let known = known.expect_err("wrong password");
        let unknown = unknown.expect_err("unknown user");
        assert!(matches!(known, AuthError::AuthenticationFailed), "{known:?}");
        assert!(matches!(unknown, AuthError::AuthenticationFailed), "{unknown:?}");
        assert_eq!(known.to_string(), unknown.to_string());

        let (known_nonce, known_salt, known_iterations) = shape(&known_first);
        let (unknown_nonce, unknown_salt, unknown_iterations) = shape(&unknown_first);
        assert_eq!(known_nonce, unknown_nonce);
        assert_eq!(known_salt.len(), unknown_salt.len());
        assert_eq!(known_iterations, unknown_iterations);

        // A real user's salt is the same on every attempt, so an unknown user's must be too, and
        // different from another unknown user's.
        let (again_first, _, _) = exchange(&lookup, &unknown_user);
        assert_eq!(shape(&again_first).1, unknown_salt);
        let other = TestClient::new(mechanism, "mallory2", "wrong");
        let (other_first, _, _) = exchange(&lookup, &other);
        assert_ne!(shape(&other_first).1, unknown_salt);
    }
}

#[test]
fn state_misuse_is_an_error_never_a_panic() {
    let illegal = |result: Result<(), AuthError>| matches!(result, Err(AuthError::IllegalState(_)));

    let mut server = rfc_server();
    assert!(illegal(server.client_final(RFC_CLIENT_FINAL.as_bytes()).map(drop)));
    assert!(illegal(server.client_first(RFC_CLIENT_FIRST.as_bytes()).map(drop)), "failed stays failed");

    let mut server = rfc_server();
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("first");
    assert!(illegal(server.client_first(RFC_CLIENT_FIRST.as_bytes()).map(drop)));
    assert!(illegal(server.client_final(RFC_CLIENT_FINAL.as_bytes()).map(drop)), "failed stays failed");

    let mut server = rfc_server();
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("first");
    server.client_final(RFC_CLIENT_FINAL.as_bytes()).expect("final");
    assert!(illegal(server.client_final(RFC_CLIENT_FINAL.as_bytes()).map(drop)));
    assert!(illegal(server.client_first(RFC_CLIENT_FIRST.as_bytes()).map(drop)));
    assert_eq!(server.authenticated_user(), Some("user"), "completion is not undone by misuse");

    // A wrong proof ends the exchange: the right one is not accepted on a second try.
    let mut server = rfc_server();
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("first");
    let wrong = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert!(matches!(server.client_final(wrong.as_bytes()), Err(AuthError::AuthenticationFailed)));
    assert!(illegal(server.client_final(RFC_CLIENT_FINAL.as_bytes()).map(drop)));
    assert_eq!(server.authenticated_user(), None);
}

#[test]
fn delegation_tokens_and_channel_binding_are_refused_clearly() {
    for message in ["n,,n=user,r=abc,tokenauth=true", "p=tls-server-end-point,,n=user,r=abc", "n,,m=ext,n=user,r=abc"] {
        let mut server = rfc_server();
        assert!(
            matches!(server.client_first(message.as_bytes()), Err(AuthError::UnsupportedExtension(_))),
            "{message}"
        );
    }
    // Unknown optional extensions are ignored (RFC 5802) and signed over as sent.
    let mut server = rfc_server();
    assert!(server.client_first(b"n,,n=user,r=abc,ext=1").is_ok());
}

/// Every single-byte corruption of `message`: each truncation, each byte removed, each byte flipped
/// by several masks, and `,` `=` NUL inserted everywhere.
fn corruptions(message: &str) -> Vec<Vec<u8>> {
    let bytes = message.as_bytes();
    let mut out = Vec::new();
    for end in 0..bytes.len() {
        out.push(bytes[..end].to_vec());
    }
    for at in 0..bytes.len() {
        let mut removed = bytes.to_vec();
        removed.remove(at);
        out.push(removed);
        for mask in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            let mut flipped = bytes.to_vec();
            flipped[at] ^= mask;
            out.push(flipped);
        }
    }
    for at in 0..=bytes.len() {
        for inserted in [b',', b'=', 0] {
            let mut longer = bytes.to_vec();
            longer.insert(at, inserted);
            out.push(longer);
        }
    }
    out
}

#[test]
fn no_corrupted_client_first_leads_to_authentication() {
    let cases = corruptions(RFC_CLIENT_FIRST);
    assert!(cases.len() > 300);
    for corrupted in cases {
        let mut server = rfc_server();
        if server.client_first(&corrupted).is_ok() {
            // A corruption that still parses (a shorter nonce, another user, y instead of n) must
            // not let the genuine client-final through.
            assert!(
                server.client_final(RFC_CLIENT_FINAL.as_bytes()).is_err(),
                "{:?} authenticated",
                String::from_utf8_lossy(&corrupted)
            );
        }
    }
}

#[test]
fn every_corrupted_client_final_is_refused() {
    let cases = corruptions(RFC_CLIENT_FINAL);
    assert!(cases.len() > 1000);
    for corrupted in cases {
        let mut server = rfc_server();
        server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("first");
        let result = server.client_final(&corrupted);
        assert!(result.is_err(), "{:?} authenticated", String::from_utf8_lossy(&corrupted));
        assert_eq!(server.authenticated_user(), None);
    }
}

#[test]
fn oversized_messages_are_refused() {
    let mut server = rfc_server();
    let long = format!("n,,n=user,r=abc,x={}", "y".repeat(5000));
    assert!(matches!(server.client_first(long.as_bytes()), Err(AuthError::Malformed(_))));
    let mut server = rfc_server();
    server.client_first(RFC_CLIENT_FIRST.as_bytes()).expect("first");
    let long = RFC_CLIENT_FINAL.replace(",p=", &format!(",x={},p=", "y".repeat(5000)));
    assert!(matches!(server.client_final(long.as_bytes()), Err(AuthError::Malformed(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_nor_authenticate(
        first in proptest::collection::vec(any::<u8>(), 0..200),
        last in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut server = rfc_server();
        let _ = server.client_first(&first);
        prop_assert!(server.client_final(&last).is_err());
    }

    #[test]
    fn scram_shaped_strings_never_panic_nor_authenticate(
        first in "[ny]?,?(a=[a-z=23CD,]{0,6})?,?(n=[a-z=23CD]{0,8})?,?(r=[!-~]{0,12})?(,[a-z]{1,9}=[a-z]{0,4}){0,3}",
        last in "(c=[A-Za-z0-9+/=]{0,8})?,?(r=[!-~]{0,12})?(,[a-z]=[a-z]{0,3}){0,2},?(p=[A-Za-z0-9+/=]{0,48})?",
    ) {
        let mut server = rfc_server();
        let _ = server.client_first(first.as_bytes());
        prop_assert!(server.client_final(last.as_bytes()).is_err());
    }
}
