//! The group APIs' checks (see [`crate::authorize`]): a member needs READ on its group; committing
//! offsets READ on the group and on each topic; reading them DESCRIBE; deleting DELETE; finding a
//! coordinator DESCRIBE on the group or transactional id; listing groups DESCRIBE on the cluster
//! (or only the groups it may describe).

use std::collections::HashSet;

use kafka_protocol::messages::*;
use once_acl::Operation;
use once_wire::ResponseError;

use crate::access::Access;
use crate::authorize::{Gate, Patch};

const TOPIC_DENIED: ResponseError = ResponseError::TopicAuthorizationFailed;
const GROUP_DENIED: ResponseError = ResponseError::GroupAuthorizationFailed;
const TXN_DENIED: ResponseError = ResponseError::TransactionalIdAuthorizationFailed;

fn unchanged(body: RequestKind) -> Gate {
    Gate::Go(body, Box::new(|response| response))
}

fn patched(body: RequestKind, patch: Patch) -> Gate {
    Gate::Go(body, patch)
}

/// The group APIs, and every API with nothing to check (ApiVersions, SASL, and the ACL and user
/// APIs, whose handlers check the cluster themselves).
pub fn gate(access: &Access, body: RequestKind, _version: i16) -> Gate {
    match body {
        RequestKind::FindCoordinator(request) => find_coordinator(access, request),
        RequestKind::JoinGroup(request) if !access.group(Operation::Read, &request.group_id) => {
            Gate::Answer(ResponseKind::JoinGroup(
                JoinGroupResponse::default().with_error_code(GROUP_DENIED.code()).with_generation_id(-1),
            ))
        }
        RequestKind::SyncGroup(request) if !access.group(Operation::Read, &request.group_id) => {
            Gate::Answer(ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(GROUP_DENIED.code())))
        }
        RequestKind::Heartbeat(request) if !access.group(Operation::Read, &request.group_id) => {
            Gate::Answer(ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(GROUP_DENIED.code())))
        }
        RequestKind::LeaveGroup(request) if !access.group(Operation::Read, &request.group_id) => {
            Gate::Answer(ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(GROUP_DENIED.code())))
        }
        RequestKind::OffsetCommit(request) => offset_commit(access, request),
        RequestKind::OffsetFetch(request) => offset_fetch(access, request),
        RequestKind::OffsetDelete(request) => offset_delete(access, request),
        RequestKind::ListGroups(request) => {
            if access.cluster_quietly(Operation::Describe) {
                return unchanged(RequestKind::ListGroups(request));
            }
            let access = access.clone();
            patched(
                RequestKind::ListGroups(request),
                Box::new(move |response| match response {
                    ResponseKind::ListGroups(mut response) => {
                        response.groups.retain(|group| access.group_quietly(Operation::Describe, &group.group_id));
                        ResponseKind::ListGroups(response)
                    }
                    other => other,
                }),
            )
        }
        RequestKind::DescribeGroups(request) => {
            let access = access.clone();
            patched(
                RequestKind::DescribeGroups(request),
                Box::new(move |response| match response {
                    ResponseKind::DescribeGroups(mut response) => {
                        for group in &mut response.groups {
                            if !access.group(Operation::Describe, &group.group_id) {
                                *group = describe_groups_response::DescribedGroup::default()
                                    .with_group_id(group.group_id.clone())
                                    .with_error_code(GROUP_DENIED.code());
                            }
                        }
                        ResponseKind::DescribeGroups(response)
                    }
                    other => other,
                }),
            )
        }
        RequestKind::DeleteGroups(mut request) => {
            let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.groups_names)
                .into_iter()
                .partition(|group| access.group(Operation::Delete, group));
            request.groups_names = allowed;
            if denied.is_empty() {
                return unchanged(RequestKind::DeleteGroups(request));
            }
            patched(
                RequestKind::DeleteGroups(request),
                Box::new(move |response| match response {
                    ResponseKind::DeleteGroups(mut response) => {
                        response.results.extend(denied.into_iter().map(|group| {
                            delete_groups_response::DeletableGroupResult::default()
                                .with_group_id(group)
                                .with_error_code(GROUP_DENIED.code())
                        }));
                        ResponseKind::DeleteGroups(response)
                    }
                    other => other,
                }),
            )
        }
        other => unchanged(other),
    }
}

/// Key type 0 is a group, 1 a transactional id; each needs DESCRIBE.
fn find_coordinator(access: &Access, request: FindCoordinatorRequest) -> Gate {
    let access = access.clone();
    let key_type = request.key_type;
    let allowed = move |key: &str| match key_type {
        0 => access.group(Operation::Describe, key),
        1 => access.transactional_id(Operation::Describe, key),
        _ => true,
    };
    let code = if key_type == 1 { TXN_DENIED } else { GROUP_DENIED };
    patched(
        RequestKind::FindCoordinator(request.clone()),
        Box::new(move |response| match response {
            ResponseKind::FindCoordinator(mut response) => {
                if request.coordinator_keys.is_empty() {
                    if !allowed(&request.key) {
                        response = FindCoordinatorResponse::default()
                            .with_error_code(code.code())
                            .with_node_id((-1).into())
                            .with_port(-1);
                    }
                } else {
                    for coordinator in &mut response.coordinators {
                        if !allowed(&coordinator.key) {
                            *coordinator = find_coordinator_response::Coordinator::default()
                                .with_key(coordinator.key.clone())
                                .with_error_code(code.code())
                                .with_node_id((-1).into())
                                .with_port(-1);
                        }
                    }
                }
                ResponseKind::FindCoordinator(response)
            }
            other => other,
        }),
    )
}

fn offset_commit(access: &Access, mut request: OffsetCommitRequest) -> Gate {
    let group_allowed = access.group(Operation::Read, &request.group_id);
    let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topics)
        .into_iter()
        .partition(|topic| group_allowed && access.topic(Operation::Read, &topic.name));
    let code = if group_allowed { TOPIC_DENIED } else { GROUP_DENIED };
    let answers: Vec<offset_commit_response::OffsetCommitResponseTopic> = denied
        .into_iter()
        .map(|topic| {
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partitions(
                    topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            offset_commit_response::OffsetCommitResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(code.code())
                        })
                        .collect(),
                )
        })
        .collect();
    if !group_allowed {
        return Gate::Answer(ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(answers)));
    }
    request.topics = allowed;
    if answers.is_empty() {
        return unchanged(RequestKind::OffsetCommit(request));
    }
    patched(
        RequestKind::OffsetCommit(request),
        Box::new(move |response| match response {
            ResponseKind::OffsetCommit(mut response) => {
                response.topics.extend(answers);
                ResponseKind::OffsetCommit(response)
            }
            other => other,
        }),
    )
}

/// DESCRIBE on the group; the offsets of topics it may not describe are answered
/// TOPIC_AUTHORIZATION_FAILED when named, left out when all are asked for (reads: filtered after).
fn offset_fetch(access: &Access, request: OffsetFetchRequest) -> Gate {
    // v0–v7 name one group at the top level.
    if request.groups.is_empty() && !access.group(Operation::Describe, &request.group_id) {
        let topics = request
            .topics
            .iter()
            .flatten()
            .map(|topic| {
                offset_fetch_response::OffsetFetchResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        topic
                            .partition_indexes
                            .iter()
                            .map(|index| {
                                offset_fetch_response::OffsetFetchResponsePartition::default()
                                    .with_partition_index(*index)
                                    .with_committed_offset(-1)
                                    .with_error_code(GROUP_DENIED.code())
                            })
                            .collect(),
                    )
            })
            .collect();
        return Gate::Answer(ResponseKind::OffsetFetch(
            OffsetFetchResponse::default().with_error_code(GROUP_DENIED.code()).with_topics(topics),
        ));
    }
    // Asked for all its topics (null list), a principal is not shown those it may not describe;
    // named, they answer TOPIC_AUTHORIZATION_FAILED (Kafka's rule).
    let all_single = request.groups.is_empty() && request.topics.is_none();
    let all_groups: HashSet<String> =
        request.groups.iter().filter(|group| group.topics.is_none()).map(|group| group.group_id.to_string()).collect();
    let access = access.clone();
    patched(
        RequestKind::OffsetFetch(request),
        Box::new(move |response| match response {
            ResponseKind::OffsetFetch(mut response) => {
                for group in &mut response.groups {
                    if !access.group(Operation::Describe, &group.group_id) {
                        group.topics.clear();
                        group.error_code = GROUP_DENIED.code();
                        continue;
                    }
                    if all_groups.contains(group.group_id.as_str()) {
                        group.topics.retain(|topic| access.topic_quietly(Operation::Describe, &topic.name));
                    }
                    for topic in &mut group.topics {
                        if !access.topic(Operation::Describe, &topic.name) {
                            for partition in &mut topic.partitions {
                                partition.committed_offset = -1;
                                partition.metadata = None;
                                partition.error_code = TOPIC_DENIED.code();
                            }
                        }
                    }
                }
                if all_single {
                    response.topics.retain(|topic| access.topic_quietly(Operation::Describe, &topic.name));
                }
                for topic in &mut response.topics {
                    if !access.topic(Operation::Describe, &topic.name) {
                        for partition in &mut topic.partitions {
                            partition.committed_offset = -1;
                            partition.metadata = None;
                            partition.error_code = TOPIC_DENIED.code();
                        }
                    }
                }
                ResponseKind::OffsetFetch(response)
            }
            other => other,
        }),
    )
}

fn offset_delete(access: &Access, mut request: OffsetDeleteRequest) -> Gate {
    if !access.group(Operation::Delete, &request.group_id) {
        return Gate::Answer(ResponseKind::OffsetDelete(
            OffsetDeleteResponse::default().with_error_code(GROUP_DENIED.code()),
        ));
    }
    let (allowed, denied): (Vec<_>, Vec<_>) =
        std::mem::take(&mut request.topics).into_iter().partition(|topic| access.topic(Operation::Read, &topic.name));
    request.topics = allowed;
    if denied.is_empty() {
        return unchanged(RequestKind::OffsetDelete(request));
    }
    patched(
        RequestKind::OffsetDelete(request),
        Box::new(move |response| match response {
            ResponseKind::OffsetDelete(mut response) => {
                response.topics.extend(denied.into_iter().map(|topic| {
                    offset_delete_response::OffsetDeleteResponseTopic::default().with_name(topic.name).with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|partition| {
                                offset_delete_response::OffsetDeleteResponsePartition::default()
                                    .with_partition_index(partition.partition_index)
                                    .with_error_code(TOPIC_DENIED.code())
                            })
                            .collect(),
                    )
                }));
                ResponseKind::OffsetDelete(response)
            }
            other => other,
        }),
    )
}
