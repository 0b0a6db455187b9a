//! Random SASL conversations against one connection's SASL state (`once_broker::sasl::Sasl`), with
//! a real credential store: whatever the client sends, nothing panics, a connection is admitted only
//! after a correct login of a real user, and every refusal closes it.
//! (`crates/cli/tests/sasl_frames.rs` sends random frames to a running broker too.)

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use kafka_protocol::messages::{ResponseKind, SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use once_auth::{CredentialStore, ScramCredential, ScramMechanism};
use once_broker::sasl::Sasl;
use proptest::prelude::*;

/// A store with alice (password alice-secret) under both SCRAM mechanisms; kept for the whole run.
fn store() -> Arc<CredentialStore> {
    static STORE: OnceLock<(tempfile::TempDir, Arc<CredentialStore>)> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = CredentialStore::open(dir.path().join("credentials.json")).expect("store");
            for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
                let credential = ScramCredential::new("alice-secret", mechanism, 4096).expect("credential");
                store.upsert("alice", mechanism, credential).expect("upsert");
            }
            (dir, Arc::new(store))
        })
        .1
        .clone()
}

#[derive(Debug, Clone)]
enum Step {
    Handshake(String),
    Authenticate(Vec<u8>),
}

const CORRECT_PLAIN: &[u8] = b"\0alice\0alice-secret";

fn mechanism() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("PLAIN".to_string()),
        Just("SCRAM-SHA-256".to_string()),
        Just("SCRAM-SHA-512".to_string()),
        Just("GSSAPI".to_string()),
        "[A-Za-z0-9-]{0,20}",
    ]
}

fn auth_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(CORRECT_PLAIN.to_vec()),
        Just(b"\0alice\0wrong".to_vec()),
        "n,,n=alice,r=[a-zA-Z0-9]{0,30}".prop_map(String::into_bytes),
        "c=biws,r=[a-zA-Z0-9]{0,40},p=[a-zA-Z0-9+/=]{0,90}".prop_map(String::into_bytes),
        "n,[a-z=,]{0,10},n=[a-z=,]{0,10},r=.{0,20}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![mechanism().prop_map(Step::Handshake), auth_bytes().prop_map(Step::Authenticate)]
}

fn error_code(response: &ResponseKind) -> i16 {
    match response {
        ResponseKind::SaslHandshake(response) => response.error_code,
        ResponseKind::SaslAuthenticate(response) => response.error_code,
        other => panic!("a SASL answer, not {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_conversations(steps in proptest::collection::vec(step(), 1..8)) {
        let mut sasl = Sasl::new(true, Some(store()));
        let mut plain_chosen = false;
        for step in steps {
            prop_assert!(!sasl.admits_requests() || sasl.principal() == Some("alice"));
            let answer = match &step {
                Step::Handshake(mechanism) => {
                    let answer = sasl.handshake(&SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.clone())));
                    plain_chosen = error_code(&answer.response) == 0 && mechanism == "PLAIN";
                    answer
                }
                Step::Authenticate(bytes) => sasl.authenticate(
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes.clone())),
                    None,
                ),
            };
            let code = error_code(&answer.response);
            // Every refusal closes the connection; closing without an error code never happens.
            prop_assert_eq!(code != 0, answer.close, "{:?}", step);
            prop_assert!(!answer.failed || answer.close);
            if answer.close {
                // The connection ends here; a failed login never leaves it admitted.
                prop_assert!(!answer.failed || !sasl.admits_requests(), "a failed login is not admitted");
                break;
            }
            if let Some(user) = sasl.principal() {
                // Random SCRAM proofs never pass; the only way in here is alice's right password.
                prop_assert_eq!(user, "alice");
                prop_assert!(plain_chosen && matches!(&step, Step::Authenticate(bytes) if bytes == CORRECT_PLAIN));
            }
        }
    }
}
