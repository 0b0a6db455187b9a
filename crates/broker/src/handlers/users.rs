//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): users' SCRAM credentials,
//! over the node's credential store.
//!
//! Semantics are Kafka's. Describe answers every user with a credential when no names are given, and
//! for named ones RESOURCE_NOT_FOUND (no credential) or DUPLICATE_RESOURCE (named twice). Alter
//! takes upsertions (salt and salted password made by the client, so the password never reaches the
//! broker) and deletions, and answers one result per user: UNSUPPORTED_SASL_MECHANISM for a mechanism
//! other than SCRAM-SHA-256/512, UNACCEPTABLE_CREDENTIAL for iterations outside 4096..=16384 or an
//! unusable name, salt or salted password, RESOURCE_NOT_FOUND for deleting what is not there, and
//! DUPLICATE_RESOURCE for a user both upserted and deleted, or given the same mechanism twice. A
//! user's changes are kept all or none; every change the request accepts is made durable in one
//! write before the answer.
//!
//! One difference from Kafka in KRaft mode, which refuses any user named twice in one request
//! (ScramControlManager): several upsertions of one user for *different* mechanisms are accepted,
//! as ZooKeeper-mode Kafka did (`once user create` sends one request per mechanism anyway, so that
//! it works against either).
//!
//! A broker without a credential store (no SASL listener, no `--scram-user`, no HTTP listener, whose
//! Basic auth uses the same users) answers
//! SECURITY_DISABLED: there is nothing a credential could be used for on it, and Kafka uses that code
//! for security APIs (delegation tokens) a broker's setup does not allow.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, DescribeUserScramCredentialsRequest,
    DescribeUserScramCredentialsResponse, ResponseKind,
};
use once_auth::{CredentialChange, CredentialStore, ScramCredential, ScramMechanism};
use once_node::Node;
use once_wire::ResponseError;

use super::str_bytes;
use crate::errors::auth_error_code;

const NO_STORE: &str = "this broker keeps no SCRAM credentials: it has no SASL or HTTP listener and no \
                        --scram-user (start it with a SASL_SSL or SASL_PLAINTEXT listener)";

/// DescribeUserScramCredentials.
pub fn describe(node: &Node, request: DescribeUserScramCredentialsRequest) -> ResponseKind {
    // Authorization (DESCRIBE on the cluster) is checked before this runs: crate::authorize.
    let mut response = DescribeUserScramCredentialsResponse::default();
    let Some(store) = node.credentials.as_deref() else {
        response.error_code = ResponseError::SecurityDisabled.code();
        response.error_message = Some(str_bytes(NO_STORE));
        return ResponseKind::DescribeUserScramCredentials(response);
    };
    let listed = store.list();
    let info = |mechanisms: &[(ScramMechanism, u32)]| -> Vec<CredentialInfo> {
        mechanisms
            .iter()
            .map(|(mechanism, iterations)| {
                CredentialInfo::default()
                    .with_mechanism(mechanism.kafka_type())
                    .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
            })
            .collect()
    };
    let named: Vec<String> =
        request.users.unwrap_or_default().into_iter().map(|user| user.name.as_str().to_owned()).collect();
    if named.is_empty() {
        response.results = listed
            .iter()
            .map(|(user, mechanisms)| {
                DescribeUserScramCredentialsResult::default()
                    .with_user(str_bytes(user))
                    .with_credential_infos(info(mechanisms))
            })
            .collect();
        return ResponseKind::DescribeUserScramCredentials(response);
    }
    let by_user: BTreeMap<&str, &[(ScramMechanism, u32)]> =
        listed.iter().map(|(user, mechanisms)| (user.as_str(), mechanisms.as_slice())).collect();
    let mut answered = BTreeSet::new();
    for user in &named {
        if !answered.insert(user.as_str()) {
            continue;
        }
        let result = DescribeUserScramCredentialsResult::default().with_user(str_bytes(user));
        let result = if named.iter().filter(|other| *other == user).count() > 1 {
            result
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(Some(str_bytes("the user is named more than once in the request")))
        } else {
            match by_user.get(user.as_str()) {
                Some(mechanisms) => result.with_credential_infos(info(mechanisms)),
                None => result
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(Some(str_bytes("the user has no SCRAM credential"))),
            }
        };
        response.results.push(result);
    }
    ResponseKind::DescribeUserScramCredentials(response)
}

/// What a request asks of one user, gathered before anything is decided.
#[derive(Default)]
struct UserAlterations {
    deletions: Vec<i8>,
    /// Mechanism number, iterations, salt, salted password.
    upsertions: Vec<(i8, i32, bytes::Bytes, bytes::Bytes)>,
}

/// A user's outcome: the changes to make, or the error that refuses them all.
type Decision = Result<Vec<CredentialChange>, (ResponseError, String)>;

/// AlterUserScramCredentials.
pub fn alter(node: &Node, request: AlterUserScramCredentialsRequest) -> ResponseKind {
    // Authorization (ALTER on the cluster) is checked before this runs: crate::authorize.
    let mut users: BTreeMap<String, UserAlterations> = BTreeMap::new();
    for deletion in request.deletions {
        users.entry(deletion.name.as_str().to_owned()).or_default().deletions.push(deletion.mechanism);
    }
    for upsertion in request.upsertions {
        users.entry(upsertion.name.as_str().to_owned()).or_default().upsertions.push((
            upsertion.mechanism,
            upsertion.iterations,
            upsertion.salt,
            upsertion.salted_password,
        ));
    }
    let mut response = AlterUserScramCredentialsResponse::default();
    let Some(store) = node.credentials.as_deref() else {
        response.results = users
            .into_keys()
            .map(|user| result(&user, Err((ResponseError::SecurityDisabled, NO_STORE.to_owned()))))
            .collect();
        return ResponseKind::AlterUserScramCredentials(response);
    };
    let decisions: Vec<(String, Decision)> =
        users.into_iter().map(|(user, alterations)| (user.clone(), decide(store, &user, &alterations))).collect();
    let changes: Vec<CredentialChange> =
        decisions.iter().filter_map(|(_, decision)| decision.as_ref().ok()).flatten().cloned().collect();
    // One durable write for every accepted user; if it fails, none of them was changed.
    let committed = if changes.is_empty() { Ok(()) } else { store.alter(&changes) };
    // The store's own errors name its file: logged by the mapping, not sent to the client.
    let committed =
        committed.map_err(|error| (auth_error_code(&error), "the credential store could not be changed".to_owned()));
    response.results = decisions
        .into_iter()
        .map(|(user, decision)| match (decision, &committed) {
            (Ok(_), Err(error)) => result(&user, Err(error.clone())),
            (decision, _) => result(&user, decision.map(|_| Vec::new())),
        })
        .collect();
    ResponseKind::AlterUserScramCredentials(response)
}

fn result(user: &str, decision: Decision) -> AlterUserScramCredentialsResult {
    let outcome = AlterUserScramCredentialsResult::default().with_user(str_bytes(user));
    match decision {
        Ok(_) => outcome,
        Err((code, message)) => outcome.with_error_code(code.code()).with_error_message(Some(str_bytes(&message))),
    }
}

/// Decides one user's alterations against the store as it is now.
fn decide(store: &CredentialStore, user: &str, alterations: &UserAlterations) -> Decision {
    let refuse = |code: ResponseError, message: &str| Err((code, message.to_owned()));
    if !alterations.deletions.is_empty() && !alterations.upsertions.is_empty() {
        return refuse(ResponseError::DuplicateResource, "a user cannot be both upserted and deleted in one request");
    }
    let mut mechanisms: Vec<i8> = alterations.deletions.clone();
    mechanisms.extend(alterations.upsertions.iter().map(|(mechanism, ..)| *mechanism));
    if (1..mechanisms.len()).any(|index| mechanisms[..index].contains(&mechanisms[index])) {
        return refuse(ResponseError::DuplicateResource, "a user's credential is altered twice in one request");
    }
    if let Err(error) = once_auth::check_user_name(user) {
        return refuse(ResponseError::UnacceptableCredential, &error.to_string());
    }
    let mut changes = Vec::new();
    for &number in &alterations.deletions {
        let mechanism = mechanism(number)?;
        if store.get(user, mechanism).is_none() {
            return refuse(ResponseError::ResourceNotFound, "attempt to delete a user credential that does not exist");
        }
        changes.push(CredentialChange::Delete { user: user.to_owned(), mechanism });
    }
    for (number, iterations, salt, salted_password) in &alterations.upsertions {
        let mechanism = mechanism(*number)?;
        let iterations = u32::try_from(*iterations)
            .map_err(|_| (ResponseError::UnacceptableCredential, "the iteration count is negative".to_owned()))?;
        let credential = ScramCredential::from_salted_password(mechanism, salt, iterations, salted_password)
            .map_err(|error| (auth_error_code(&error), error.to_string()))?;
        changes.push(CredentialChange::Upsert { user: user.to_owned(), mechanism, credential });
    }
    Ok(changes)
}

fn mechanism(number: i8) -> Result<ScramMechanism, (ResponseError, String)> {
    ScramMechanism::from_kafka_type(number)
        .map_err(|error| (auth_error_code(&error), format!("mechanism {number}: {error}")))
}
