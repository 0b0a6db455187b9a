//! ListGroups, DescribeGroups and DeleteGroups as coordinator operations on plain types.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::coordinator::{now_ms, GroupCoordinator};
use crate::error::GroupError;
use crate::group::{Group, GroupState};
use crate::records::{GroupRecord, OffsetKey, OffsetRecord};

/// Every group here speaks the classic protocol (KIP-848 groups are not served).
pub const GROUP_TYPE: &str = "classic";

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    /// Empty when no member ever joined (a group that only commits offsets).
    pub protocol_type: String,
    pub state: GroupState,
    pub group_type: &'static str,
}

/// One member as DescribeGroups reports it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    /// Its assignment, only once the group is stable (empty otherwise).
    pub assignment: Bytes,
}

/// One group as DescribeGroups reports it; an unknown group is Dead, with nothing else.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The chosen protocol's name (empty before one is chosen).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

fn describe(group: Option<&Group>, group_id: String) -> GroupDescription {
    let Some(group) = group else {
        // Kafka before DescribeGroups v6 answers an unknown group as Dead without an error.
        return GroupDescription {
            group_id,
            state: GroupState::Dead,
            protocol_type: String::new(),
            protocol: String::new(),
            members: Vec::new(),
        };
    };
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let stable = group.state == GroupState::Stable;
    let members = group
        .members
        .values()
        .map(|member| MemberDescription {
            member_id: member.member_id.clone(),
            group_instance_id: member.group_instance_id.clone(),
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
            metadata: member.metadata_for(&protocol),
            assignment: if stable { member.assignment.clone() } else { Bytes::new() },
        })
        .collect();
    GroupDescription {
        group_id,
        state: group.state,
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol,
        members,
    }
}

impl GroupCoordinator {
    /// ListGroups: every group whose state is in `states_filter` and type in `types_filter` (an empty
    /// filter takes all; names compare ignoring case), sorted by group id.
    pub fn list_groups(&self, states_filter: &[String], types_filter: &[String]) -> Vec<ListedGroup> {
        let groups = self.lock();
        let state_wanted = |state: GroupState| {
            states_filter.is_empty() || states_filter.iter().any(|wanted| wanted.eq_ignore_ascii_case(state.name()))
        };
        let type_wanted =
            types_filter.is_empty() || types_filter.iter().any(|wanted| wanted.eq_ignore_ascii_case(GROUP_TYPE));
        let mut listed: Vec<ListedGroup> = groups
            .groups
            .values()
            .filter(|group| type_wanted && state_wanted(group.state))
            .map(|group| ListedGroup {
                group_id: group.id.clone(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                state: group.state,
                group_type: GROUP_TYPE,
            })
            .collect();
        listed.sort_by(|left, right| left.group_id.cmp(&right.group_id));
        listed
    }

    /// DescribeGroups, in the order asked.
    pub fn describe_groups(&self, group_ids: Vec<String>) -> Vec<GroupDescription> {
        let groups = self.lock();
        group_ids.into_iter().map(|group_id| describe(groups.groups.get(&group_id), group_id)).collect()
    }

    /// Deletes empty groups: their offsets get tombstones, durable before the answer. As in Kafka, only
    /// members stop a deletion, not open transactions: the partitions with pending transactional offsets
    /// get tombstones too, which discard those offsets (in memory now, and at replay, since they come
    /// later in the log), so the transaction's commit marker cannot bring the deleted group's offsets back.
    pub async fn delete_groups(&self, group_ids: Vec<String>) -> Vec<(String, Result<(), GroupError>)> {
        let coordinator = self;
        let mut results = Vec::with_capacity(group_ids.len());
        let mut writes = Vec::new();
        let mut group_writes = Vec::new();
        {
            let mut groups = coordinator.lock();
            for group_id in group_ids {
                let outcome = match groups.groups.get(&group_id) {
                    None => Err(GroupError::GroupIdNotFound),
                    Some(group) if !group.members.is_empty() || group.state != GroupState::Empty => {
                        Err(GroupError::NonEmptyGroup)
                    }
                    Some(_) => Ok(()),
                };
                if outcome.is_ok() {
                    if let Some(group) = groups.groups.remove(&group_id) {
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
                coordinator.lock().unrecorded_drops.insert(results[index].0.clone());
                results[index].1 = Err(error);
            }
        }
        results
    }
}
