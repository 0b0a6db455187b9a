//! ListGroups, DescribeGroups and DeleteGroups.

use std::collections::BTreeSet;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;

use crate::api_membership::text;
use crate::coordinator::{now_ms, GroupCoordinator};
use crate::error::{code_of, GroupError};
use crate::group::{Group, GroupState};
use crate::records::{GroupRecord, OffsetKey, OffsetRecord};

/// Every group here speaks the classic protocol (KIP-848 groups are not served).
const GROUP_TYPE: &str = "classic";

pub fn list_groups(coordinator: &GroupCoordinator, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let groups = coordinator.lock();
    let state_wanted = |state: GroupState| {
        request.states_filter.is_empty()
            || request.states_filter.iter().any(|wanted| wanted.eq_ignore_ascii_case(state.name()))
    };
    let type_wanted = request.types_filter.is_empty()
        || request.types_filter.iter().any(|wanted| wanted.eq_ignore_ascii_case(GROUP_TYPE));
    let mut listed: Vec<ListedGroup> = groups
        .groups
        .values()
        .filter(|group| type_wanted && state_wanted(group.state))
        .map(|group| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(text(&group.id)))
                .with_protocol_type(text(group.protocol_type.as_deref().unwrap_or("")));
            let listed = if version >= 4 { listed.with_group_state(text(group.state.name())) } else { listed };
            if version >= 5 {
                listed.with_group_type(text(GROUP_TYPE))
            } else {
                listed
            }
        })
        .collect();
    listed.sort_by(|left, right| left.group_id.0.cmp(&right.group_id.0));
    ListGroupsResponse::default().with_groups(listed)
}

fn describe(group: Option<&Group>, group_id: GroupId, version: i16) -> DescribedGroup {
    let described = DescribedGroup::default().with_group_id(group_id);
    let Some(group) = group else {
        // Kafka before DescribeGroups v6 answers an unknown group as Dead without an error.
        return described.with_group_state(text(GroupState::Dead.name()));
    };
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let stable = group.state == GroupState::Stable;
    let members = group
        .members
        .values()
        .map(|member| {
            let described = DescribedGroupMember::default()
                .with_member_id(text(&member.member_id))
                .with_client_id(text(&member.client_id))
                .with_client_host(text(&member.client_host))
                .with_member_metadata(member.metadata_for(&protocol))
                .with_member_assignment(if stable { member.assignment.clone() } else { Default::default() });
            if version >= 4 {
                described.with_group_instance_id(member.group_instance_id.as_deref().map(text))
            } else {
                described
            }
        })
        .collect();
    described
        .with_group_state(text(group.state.name()))
        .with_protocol_type(text(group.protocol_type.as_deref().unwrap_or("")))
        .with_protocol_data(text(&protocol))
        .with_members(members)
}

pub fn describe_groups(
    coordinator: &GroupCoordinator,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let groups = coordinator.lock();
    let described = request
        .groups
        .into_iter()
        .map(|group_id| describe(groups.groups.get(group_id.0.as_str()), group_id, version))
        .collect();
    DescribeGroupsResponse::default().with_groups(described)
}

/// Deletes empty groups: their offsets get tombstones, durable before the answer. As in Kafka, only
/// members stop a deletion, not open transactions: the partitions with pending transactional offsets
/// get tombstones too, which discard those offsets (in memory now, and at replay, since they come
/// later in the log), so the transaction's commit marker cannot bring the deleted group's offsets back.
pub async fn delete_groups(coordinator: &GroupCoordinator, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    let mut writes = Vec::new();
    let mut group_writes = Vec::new();
    {
        let mut groups = coordinator.lock();
        for group_id in request.groups_names {
            let outcome = match groups.groups.get(group_id.0.as_str()) {
                None => Err(GroupError::GroupIdNotFound),
                Some(group) if !group.members.is_empty() || group.state != GroupState::Empty => {
                    Err(GroupError::NonEmptyGroup)
                }
                Some(_) => Ok(()),
            };
            if outcome.is_ok() {
                if let Some(group) = groups.groups.remove(group_id.0.as_str()) {
                    let slots: BTreeSet<&(String, i32)> =
                        group.offsets.keys().chain(group.pending_offsets.slots()).collect();
                    let tombstones: Vec<OffsetRecord> = slots
                        .into_iter()
                        .map(|(topic, partition)| OffsetRecord {
                            key: OffsetKey { group: group.id.clone(), topic: topic.clone(), partition: *partition },
                            value: None,
                        })
                        .collect();
                    tracing::info!(group = %group.id, offsets = tombstones.len(), "deleting group");
                    writes.push((results.len(), coordinator.write(&mut groups, tombstones)));
                    if group.durable_protocol_type.is_some() {
                        groups.commit_sequence += 1;
                        let tombstone = GroupRecord::tombstone(&group);
                        group_writes.push((results.len(), coordinator.store.append_groups(&[tombstone], now_ms())));
                    }
                }
            }
            results.push((group_id, outcome));
        }
    }
    for (index, written) in writes {
        if let Err(error) = written.await {
            results[index].1 = Err(error);
        }
    }
    for (index, written) in group_writes {
        if let Err(error) = written.await {
            // The group is gone from memory, so a retried DeleteGroups finds nothing to delete: the
            // timer writes the refused tombstone again (`Groups::unrecorded_drops`).
            coordinator.lock().unrecorded_drops.insert(results[index].0 .0.to_string());
            results[index].1 = Err(error);
        }
    }
    let results = results
        .into_iter()
        .map(|(group_id, outcome)| {
            DeletableGroupResult::default().with_group_id(group_id).with_error_code(code_of(&outcome))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
