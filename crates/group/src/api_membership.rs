//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup: wire requests in, state-machine
//! calls, wire responses out. The codec refuses fields a version lacks, so each response sets only
//! what its version carries.

use std::time::Instant;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::config::CoordinatorNode;
use crate::coordinator::{now_ms, GroupCoordinator, RequestContext};
use crate::error::{code_of, error_code, GroupError};
use crate::group::{Group, JoinSuccess, Reply, SyncSuccess};
use crate::membership::{JoinRequest, SyncRequest};
use crate::records::GroupRecord;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub(crate) fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn optional_text(value: &Option<StrBytes>) -> Option<String> {
    value.as_ref().map(|value| value.to_string())
}

pub fn find_coordinator(
    node: &CoordinatorNode,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let key_type_error = (request.key_type != KEY_TYPE_GROUP && request.key_type != KEY_TYPE_TRANSACTION)
        .then_some(GroupError::InvalidRequest(format!("key type {}", request.key_type)));
    let code = key_type_error.as_ref().map(|error| error_code(error).code()).unwrap_or(0);
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node.node_id))
                    .with_host(text(&node.host))
                    .with_port(node.port)
                    .with_error_code(code)
                    .with_error_message(None)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let response = FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_node_id(BrokerId(node.node_id))
        .with_host(text(&node.host))
        .with_port(node.port);
    if version >= 1 {
        response.with_error_message(None)
    } else {
        response
    }
}

fn join_request(
    request: &JoinGroupRequest,
    version: i16,
    context: &RequestContext<'_>,
    members_max: usize,
) -> JoinRequest {
    JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: optional_text(&request.group_instance_id),
        client_id: context.client_id.to_string(),
        client_host: context.client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 { request.session_timeout_ms } else { request.rebalance_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
        members_max,
    }
}

pub async fn join_group(
    coordinator: &GroupCoordinator,
    request: JoinGroupRequest,
    version: i16,
    context: &RequestContext<'_>,
) -> JoinGroupResponse {
    let group_id = request.group_id.0.to_string();
    let join = join_request(&request, version, context, coordinator.config.members_per_group_max);
    let mut recorded = None;
    let reply = admit_join(coordinator, group_id.clone(), join, &mut recorded);
    if let Some(Recorded { written, protocol_type, previous }) = recorded {
        // The group's new protocol type, durable before the join is answered; the join itself does
        // not depend on it. A refused write (the log's queue full: `Busy`) wrote nothing and does not
        // latch the log, so memory forgets it recorded the type and the next join of the group
        // writes it again (an I/O failure latches the log, and every later write fails too).
        if let Err(error) = written.await {
            tracing::warn!(%error, group = %group_id, "recording a group's protocol type failed");
            forget_recorded(coordinator, &group_id, protocol_type, previous);
        }
    }
    join_response(reply.resolve().await, &request.member_id, version)
}

/// A group record queued by [`admit_join`]: its write, the type it records and the recorded type
/// it replaced.
struct Recorded {
    written: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), GroupError>> + Send>>,
    protocol_type: Option<String>,
    previous: Option<String>,
}

/// Undoes memory's note that `protocol_type` is recorded, unless a later record replaced it: the
/// previous recorded type is what the log may still hold (so a drop still writes its tombstone),
/// and differing from the group's type makes the next join record it again.
fn forget_recorded(
    coordinator: &GroupCoordinator,
    group_id: &str,
    protocol_type: Option<String>,
    previous: Option<String>,
) {
    let mut groups = coordinator.lock();
    if let Some(group) = groups.groups.get_mut(group_id) {
        if group.durable_protocol_type == protocol_type {
            group.durable_protocol_type = previous;
        }
    }
}

fn admit_join(
    coordinator: &GroupCoordinator,
    group_id: String,
    join: JoinRequest,
    recorded: &mut Option<Recorded>,
) -> Reply<JoinSuccess> {
    if coordinator.is_closed() {
        return Reply::Now(Err(GroupError::CoordinatorNotAvailable));
    }
    if group_id.is_empty() {
        return Reply::Now(Err(GroupError::InvalidGroupId));
    }
    let config = &coordinator.config;
    if join.session_timeout_ms < config.session_timeout_min_ms
        || join.session_timeout_ms > config.session_timeout_max_ms
    {
        return Reply::Now(Err(GroupError::InvalidSessionTimeout(join.session_timeout_ms)));
    }
    let mut groups = coordinator.lock();
    let groups_count = groups.groups.len();
    if !groups.groups.contains_key(&group_id) {
        if !join.member_id.is_empty() {
            return Reply::Now(Err(GroupError::UnknownMemberId));
        }
        if groups_count >= config.groups_max {
            return Reply::Now(Err(GroupError::CoordinatorFull(config.groups_max, groups_count)));
        }
    }
    let groups = &mut *groups;
    let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id, now_ms()));
    let reply = group.join(join, Instant::now(), now_ms());
    if group.protocol_type.is_some() && group.protocol_type != group.durable_protocol_type {
        // Queued under the lock, so records of one group reach the log in the order of their changes.
        let record = GroupRecord {
            group: group.id.clone(),
            protocol_type: group.protocol_type.clone(),
            generation_id: group.generation_id,
        };
        let previous = std::mem::replace(&mut group.durable_protocol_type, group.protocol_type.clone());
        groups.commit_sequence += 1;
        *recorded = Some(Recorded {
            written: Box::pin(coordinator.store.append_groups(&[record], now_ms())),
            protocol_type: group.protocol_type.clone(),
            previous,
        });
    }
    reply
}

fn join_response(
    outcome: Result<JoinSuccess, GroupError>,
    requested_member_id: &StrBytes,
    version: i16,
) -> JoinGroupResponse {
    let response = JoinGroupResponse::default().with_error_code(code_of(&outcome));
    let success = match outcome {
        Ok(success) => success,
        Err(GroupError::MemberIdRequired(member_id)) => {
            return response
                .with_member_id(text(&member_id))
                .with_generation_id(-1)
                .with_protocol_name(Some(StrBytes::default()))
        }
        Err(_) => {
            return response
                .with_member_id(requested_member_id.clone())
                .with_generation_id(-1)
                .with_protocol_name(Some(StrBytes::default()))
        }
    };
    let members = success
        .members
        .into_iter()
        .map(|member| {
            let joined = JoinGroupResponseMember::default()
                .with_member_id(text(&member.member_id))
                .with_metadata(member.metadata);
            if version >= 5 {
                joined.with_group_instance_id(member.group_instance_id.as_deref().map(text))
            } else {
                joined
            }
        })
        .collect();
    let response = response
        .with_generation_id(success.generation_id)
        .with_protocol_name(Some(text(&success.protocol_name)))
        .with_leader(text(&success.leader_id))
        .with_member_id(text(&success.member_id))
        .with_members(members);
    let response =
        if version >= 7 { response.with_protocol_type(Some(text(&success.protocol_type))) } else { response };
    // Before v9 the leader cannot be told to skip: it assigns again and SyncGroup in Stable ignores it.
    if version >= 9 {
        response.with_skip_assignment(success.skip_assignment)
    } else {
        response
    }
}

pub async fn sync_group(coordinator: &GroupCoordinator, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: optional_text(&request.group_instance_id),
        generation_id: request.generation_id,
        protocol_type: optional_text(&request.protocol_type),
        protocol_name: optional_text(&request.protocol_name),
        assignments: request
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    };
    let reply = if coordinator.is_closed() {
        Reply::Now(Err(GroupError::CoordinatorNotAvailable))
    } else {
        let mut groups = coordinator.lock();
        match groups.groups.get_mut(request.group_id.0.as_str()) {
            Some(group) => group.sync(sync, Instant::now()),
            None => Reply::Now(Err(GroupError::UnknownMemberId)),
        }
    };
    sync_response(reply.resolve().await, version)
}

fn sync_response(outcome: Result<SyncSuccess, GroupError>, version: i16) -> SyncGroupResponse {
    let response = SyncGroupResponse::default().with_error_code(code_of(&outcome));
    let Ok(success) = outcome else {
        return response;
    };
    let response = response.with_assignment(success.assignment);
    if version >= 5 {
        response
            .with_protocol_type(Some(text(&success.protocol_type)))
            .with_protocol_name(Some(text(&success.protocol_name)))
    } else {
        response
    }
}

pub fn heartbeat(coordinator: &GroupCoordinator, request: HeartbeatRequest) -> HeartbeatResponse {
    let outcome = if coordinator.is_closed() {
        Err(GroupError::CoordinatorNotAvailable)
    } else {
        let mut groups = coordinator.lock();
        match groups.groups.get_mut(request.group_id.0.as_str()) {
            Some(group) => group.heartbeat(
                &request.member_id,
                request.group_instance_id.as_deref(),
                request.generation_id,
                Instant::now(),
            ),
            None => Err(GroupError::UnknownMemberId),
        }
    };
    HeartbeatResponse::default().with_error_code(code_of(&outcome))
}

pub fn leave_group(coordinator: &GroupCoordinator, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
        request.members.into_iter().map(|member| (member.member_id, member.group_instance_id)).collect()
    } else {
        vec![(request.member_id, None)]
    };
    let mut groups = coordinator.lock();
    let Some(group) = groups.groups.get_mut(request.group_id.0.as_str()) else {
        return LeaveGroupResponse::default().with_error_code(error_code(&GroupError::UnknownMemberId).code());
    };
    let mut results = Vec::with_capacity(leaving.len());
    for (member_id, group_instance_id) in leaving {
        let outcome = group.leave(&member_id, group_instance_id.as_deref());
        results.push(
            MemberResponse::default()
                .with_member_id(member_id)
                .with_group_instance_id(group_instance_id)
                .with_error_code(code_of(&outcome)),
        );
    }
    if results.iter().any(|result| result.error_code == 0) {
        group.after_member_gone(Instant::now(), now_ms());
    }
    if version >= 3 {
        LeaveGroupResponse::default().with_members(results)
    } else {
        LeaveGroupResponse::default().with_error_code(results.first().map(|result| result.error_code).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;

    use super::*;
    use crate::config::GroupConfig;

    /// A group record the log refuses (here: a closed log; in service, a full queue) is written by
    /// no one, so memory must not take the type as recorded: the next join has to write it again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_group_record_is_not_taken_as_recorded() {
        let data = tempfile::tempdir().expect("temp dir");
        let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
        let coordinator = GroupCoordinator::open(GroupConfig::new(data.path(), node)).expect("open");
        coordinator.store.close().await.expect("close the offsets log");
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(text("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(Bytes::from_static(b"m"))]);
        let partition_exists = |_: &str, _: i32| true;
        let context = RequestContext { client_id: "client", client_host: "", partition_exists: &partition_exists };
        let response = tokio::time::timeout(Duration::from_secs(10), join_group(&coordinator, request, 3, &context))
            .await
            .expect("the join is answered");
        assert_eq!(response.error_code, 0, "the join does not depend on the record");
        let groups = coordinator.lock();
        let group = groups.groups.get("g").expect("the group");
        assert_eq!(group.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(group.durable_protocol_type, None, "so the next join records the type again");
    }
}
