//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554) through `dispatch`, on a
//! node without sockets: Kafka's answers for each case, durability across a reopen, and the answer
//! of a node that keeps no credentials.

use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_auth::ScramMechanism;
use once_broker::dispatch::dispatch;
use once_node::{Node, NodeConfig};
use once_wire::{DecodedRequest, ResponseError};

const SHA256: i8 = 1;
const SHA512: i8 = 2;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// A node that keeps credentials (as with a SASL listener), with `admin` created at start.
fn open(dir: &Path) -> Arc<Node> {
    Node::open(NodeConfig {
        data_dir: dir.to_path_buf(),
        scram_users: vec![("admin".into(), "admin-secret".into())],
        ..NodeConfig::default()
    })
    .expect("open the node")
}

async fn call(node: &Arc<Node>, api_key: ApiKey, body: RequestKind) -> ResponseKind {
    let header = RequestHeader::default().with_request_api_key(api_key as i16).with_request_api_version(0);
    let request = DecodedRequest { api_key, api_version: 0, header, body };
    let pending = dispatch(node, request).response();
    pending.await.expect("a response")
}

async fn describe(node: &Arc<Node>, users: Option<&[&str]>) -> DescribeUserScramCredentialsResponse {
    let users = users.map(|users| users.iter().map(|user| UserName::default().with_name(text(user))).collect());
    let request = DescribeUserScramCredentialsRequest::default().with_users(users);
    match call(node, ApiKey::DescribeUserScramCredentials, RequestKind::DescribeUserScramCredentials(request)).await {
        ResponseKind::DescribeUserScramCredentials(response) => response,
        other => panic!("unexpected {other:?}"),
    }
}

fn upsertion(user: &str, mechanism: i8, iterations: i32, password: &str) -> ScramCredentialUpsertion {
    let salt = b"a salt of some sixteen bytes".to_vec();
    let salted = ScramMechanism::from_kafka_type(mechanism)
        .map(|scram| scram.salted_password(password.as_bytes(), &salt, iterations.clamp(4096, 16384) as u32))
        .unwrap_or_else(|_| vec![0; 32]);
    ScramCredentialUpsertion::default()
        .with_name(text(user))
        .with_mechanism(mechanism)
        .with_iterations(iterations)
        .with_salt(salt.into())
        .with_salted_password(salted.into())
}

fn deletion(user: &str, mechanism: i8) -> ScramCredentialDeletion {
    ScramCredentialDeletion::default().with_name(text(user)).with_mechanism(mechanism)
}

/// Sends an alter and answers each user's (name, error code), sorted by name.
async fn alter(
    node: &Arc<Node>,
    upsertions: Vec<ScramCredentialUpsertion>,
    deletions: Vec<ScramCredentialDeletion>,
) -> Vec<(String, i16)> {
    let request = AlterUserScramCredentialsRequest::default().with_upsertions(upsertions).with_deletions(deletions);
    let response =
        match call(node, ApiKey::AlterUserScramCredentials, RequestKind::AlterUserScramCredentials(request)).await {
            ResponseKind::AlterUserScramCredentials(response) => response,
            other => panic!("unexpected {other:?}"),
        };
    let mut results: Vec<(String, i16)> =
        response.results.iter().map(|result| (result.user.to_string(), result.error_code)).collect();
    results.sort();
    results
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_describe_delete_as_kafka_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = open(dir.path());
    let all = describe(&node, None).await;
    assert_eq!(all.error_code, 0);
    let listed: Vec<(String, Vec<(i8, i32)>)> = all
        .results
        .iter()
        .map(|result| {
            (
                result.user.to_string(),
                result.credential_infos.iter().map(|info| (info.mechanism, info.iterations)).collect(),
            )
        })
        .collect();
    assert_eq!(listed, vec![("admin".to_owned(), vec![(SHA256, 4096), (SHA512, 4096)])]);

    // Both mechanisms for one user in one request: accepted (ZooKeeper-mode Kafka's rule).
    let results =
        alter(&node, vec![upsertion("alice", SHA256, 8192, "pw"), upsertion("alice", SHA512, 4096, "pw")], vec![])
            .await;
    assert_eq!(results, vec![("alice".to_owned(), 0)]);
    let named = describe(&node, Some(&["alice", "nobody", "admin", "admin"])).await;
    let answers: Vec<(String, i16, usize)> = named
        .results
        .iter()
        .map(|result| (result.user.to_string(), result.error_code, result.credential_infos.len()))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("alice".to_owned(), 0, 2),
            ("nobody".to_owned(), code(ResponseError::ResourceNotFound), 0),
            ("admin".to_owned(), code(ResponseError::DuplicateResource), 0),
        ]
    );
    assert_eq!(named.results[0].credential_infos[0].iterations, 8192);

    // Each refusal, one user each, in one request: the good one is applied, the others are not.
    let results = alter(
        &node,
        vec![
            upsertion("few", SHA256, 4095, "pw"),
            upsertion("many", SHA256, 16385, "pw"),
            upsertion("unknown-mechanism", 3, 4096, "pw"),
            upsertion("twice", SHA256, 4096, "pw"),
            upsertion("twice", SHA256, 4096, "other"),
            upsertion("both", SHA256, 4096, "pw"),
            upsertion("", SHA256, 4096, "pw"),
            upsertion("bob", SHA512, 4096, "pw"),
        ],
        vec![deletion("both", SHA512), deletion("ghost", SHA256), deletion("alice", SHA256)],
    )
    .await;
    assert_eq!(
        results,
        vec![
            ("".to_owned(), code(ResponseError::UnacceptableCredential)),
            ("alice".to_owned(), 0),
            ("bob".to_owned(), 0),
            ("both".to_owned(), code(ResponseError::DuplicateResource)),
            ("few".to_owned(), code(ResponseError::UnacceptableCredential)),
            ("ghost".to_owned(), code(ResponseError::ResourceNotFound)),
            ("many".to_owned(), code(ResponseError::UnacceptableCredential)),
            ("twice".to_owned(), code(ResponseError::DuplicateResource)),
            ("unknown-mechanism".to_owned(), code(ResponseError::UnsupportedSaslMechanism)),
        ]
    );
    // Deleting a mechanism the user does not have is RESOURCE_NOT_FOUND too.
    assert_eq!(
        alter(&node, vec![], vec![deletion("bob", SHA256)]).await,
        vec![("bob".to_owned(), code(ResponseError::ResourceNotFound))]
    );

    // Durable: a reopened node has exactly what was accepted.
    drop(node);
    let node = open(dir.path());
    let users: Vec<(String, usize)> = describe(&node, None)
        .await
        .results
        .iter()
        .map(|result| (result.user.to_string(), result.credential_infos.len()))
        .collect();
    assert_eq!(users, vec![("admin".to_owned(), 2), ("alice".to_owned(), 1), ("bob".to_owned(), 1)]);
    let store = node.credentials.as_ref().expect("a store");
    assert!(store.get("alice", ScramMechanism::Sha256).is_none());
    assert_eq!(store.get("alice", ScramMechanism::Sha512).map(|credential| credential.iterations()), Some(4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_credentials_says_security_is_disabled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::open(NodeConfig { data_dir: dir.path().to_path_buf(), ..NodeConfig::default() }).expect("open");
    assert!(node.credentials.is_none());
    let described = describe(&node, None).await;
    assert_eq!(described.error_code, code(ResponseError::SecurityDisabled));
    assert!(described.error_message.is_some_and(|message| message.contains("SASL")));
    let results = alter(&node, vec![upsertion("alice", SHA256, 4096, "pw")], vec![]).await;
    assert_eq!(results, vec![("alice".to_owned(), code(ResponseError::SecurityDisabled))]);
}
