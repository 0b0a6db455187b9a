//! ListGroups, DescribeGroups and DeleteGroups; translation only: Kafka requests to the group
//! coordinator's operations and back.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::*;
use once_group::{GroupCoordinator, GroupDescription};

use super::code_of;
use crate::handlers::str_bytes as text;

pub fn list_groups(groups: &GroupCoordinator, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|state| state.to_string()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|group_type| group_type.to_string()).collect();
    let listed = groups
        .list_groups(&states, &types)
        .into_iter()
        .map(|group| {
            let listed = ListedGroup::default()
                .with_group_id(GroupId(text(&group.group_id)))
                .with_protocol_type(text(&group.protocol_type));
            let listed = if version >= 4 { listed.with_group_state(text(group.state.name())) } else { listed };
            if version >= 5 {
                listed.with_group_type(text(group.group_type))
            } else {
                listed
            }
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

fn described(group: GroupDescription, version: i16) -> DescribedGroup {
    // An unknown group comes as Dead with nothing else: Kafka before DescribeGroups v6 answers it so,
    // without an error.
    let described = DescribedGroup::default().with_group_id(GroupId(text(&group.group_id)));
    let members = group
        .members
        .into_iter()
        .map(|member| {
            let described = DescribedGroupMember::default()
                .with_member_id(text(&member.member_id))
                .with_client_id(text(&member.client_id))
                .with_client_host(text(&member.client_host))
                .with_member_metadata(member.metadata)
                .with_member_assignment(member.assignment);
            if version >= 4 {
                described.with_group_instance_id(member.group_instance_id.as_deref().map(text))
            } else {
                described
            }
        })
        .collect();
    described
        .with_group_state(text(group.state.name()))
        .with_protocol_type(text(&group.protocol_type))
        .with_protocol_data(text(&group.protocol))
        .with_members(members)
}

pub fn describe_groups(
    groups: &GroupCoordinator,
    request: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let group_ids = request.groups.iter().map(|group_id| group_id.0.to_string()).collect();
    let described = groups.describe_groups(group_ids).into_iter().map(|group| described(group, version)).collect();
    DescribeGroupsResponse::default().with_groups(described)
}

pub async fn delete_groups(groups: &GroupCoordinator, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let group_ids = request.groups_names.iter().map(|group_id| group_id.0.to_string()).collect();
    let results = groups
        .delete_groups(group_ids)
        .await
        .into_iter()
        .map(|(group_id, outcome)| {
            DeletableGroupResult::default().with_group_id(GroupId(text(&group_id))).with_error_code(code_of(&outcome))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
