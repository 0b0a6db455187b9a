//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup; translation only: Kafka requests
//! to the group coordinator's membership operations and back.

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_group::{CoordinatorNode, GroupCoordinator, GroupError, JoinRequest, JoinSuccess, SyncRequest, SyncSuccess};

use super::code_of;
use crate::errors::group_error_code;
use crate::handlers::str_bytes as text;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn optional_text(value: &Option<StrBytes>) -> Option<String> {
    value.as_ref().map(|value| value.to_string())
}

/// This broker coordinates every group and every transactional id.
pub fn find_coordinator(
    node: &CoordinatorNode,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let key_type_error = (request.key_type != KEY_TYPE_GROUP && request.key_type != KEY_TYPE_TRANSACTION)
        .then_some(GroupError::InvalidRequest(format!("key type {}", request.key_type)));
    let code = key_type_error.as_ref().map(|error| group_error_code(error).code()).unwrap_or(0);
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

fn join_request(request: &JoinGroupRequest, version: i16, client_id: &str, client_host: &str) -> JoinRequest {
    JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: optional_text(&request.group_instance_id),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 { request.session_timeout_ms } else { request.rebalance_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            // Copied out of the request frame: kept for the group's generation, a slice would keep
            // the whole frame (a pooled buffer among them) alive that long.
            .map(|protocol| (protocol.name.to_string(), Bytes::copy_from_slice(&protocol.metadata)))
            .collect(),
        require_known_member_id: version >= 4,
    }
}

/// JoinGroup of a client: its id and host are what DescribeGroups reports of the member (the host
/// empty when unknown).
pub async fn join_group(
    groups: &GroupCoordinator,
    request: JoinGroupRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> JoinGroupResponse {
    let join = join_request(&request, version, client_id, client_host);
    let outcome = groups.join(&request.group_id.0, join).await;
    join_response(outcome, &request.member_id, version)
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

pub async fn sync_group(groups: &GroupCoordinator, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let sync = SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: optional_text(&request.group_instance_id),
        generation_id: request.generation_id,
        protocol_type: optional_text(&request.protocol_type),
        protocol_name: optional_text(&request.protocol_name),
        assignments: request
            .assignments
            .into_iter()
            // Copied out of the request frame, as the protocols' metadata at JoinGroup.
            .map(|assignment| (assignment.member_id.to_string(), Bytes::copy_from_slice(&assignment.assignment)))
            .collect(),
    };
    sync_response(groups.sync(&request.group_id.0, sync).await, version)
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

pub fn heartbeat(groups: &GroupCoordinator, request: HeartbeatRequest) -> HeartbeatResponse {
    let outcome = groups.heartbeat(
        &request.group_id.0,
        &request.member_id,
        request.group_instance_id.as_deref(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code_of(&outcome))
}

pub fn leave_group(groups: &GroupCoordinator, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
        request.members.into_iter().map(|member| (member.member_id, member.group_instance_id)).collect()
    } else {
        vec![(request.member_id, None)]
    };
    let members: Vec<(String, Option<String>)> = leaving
        .iter()
        .map(|(member_id, group_instance_id)| (member_id.to_string(), optional_text(group_instance_id)))
        .collect();
    let outcomes = match groups.leave(&request.group_id.0, &members) {
        Ok(outcomes) => outcomes,
        Err(error) => return LeaveGroupResponse::default().with_error_code(group_error_code(&error).code()),
    };
    let results: Vec<MemberResponse> = leaving
        .into_iter()
        .zip(outcomes)
        .map(|((member_id, group_instance_id), outcome)| {
            MemberResponse::default()
                .with_member_id(member_id)
                .with_group_instance_id(group_instance_id)
                .with_error_code(code_of(&outcome))
        })
        .collect();
    if version >= 3 {
        LeaveGroupResponse::default().with_members(results)
    } else {
        LeaveGroupResponse::default().with_error_code(results.first().map(|result| result.error_code).unwrap_or(0))
    }
}
