//! OffsetCommit, OffsetFetch and OffsetDelete. A commit is acknowledged only after the offsets log
//! has fsynced the batch that holds it.

use std::collections::HashSet;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::api_membership::text;
use crate::coordinator::{now_ms, GroupCoordinator, Groups, RequestContext};
use crate::error::{code_of, error_code, GroupError};
use crate::group::{Group, GroupState};
use crate::records::{CommittedOffset, OffsetKey, OffsetRecord};
use crate::subscription::subscribed_topics;

/// Whether `member_id` at `generation_id` may commit for `group` (Kafka's `validateOffsetCommit`).
/// Fencing first, then a generation of -1 on an empty group (offsets stored for a client that
/// assigns itself), then membership, generation and state.
fn validate_commit(
    group: Option<&Group>,
    generation_id: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Result<(), GroupError> {
    let Some(group) = group else {
        return if generation_id < 0 {
            Ok(())
        } else {
            Err(GroupError::IllegalGeneration { given: generation_id, current: -1 })
        };
    };
    if let Some(instance_id) = group_instance_id {
        if group.static_members.get(instance_id).is_some_and(|holder| holder != member_id) {
            return Err(GroupError::FencedInstanceId);
        }
    }
    if generation_id < 0 && group.state == GroupState::Empty {
        return Ok(());
    }
    if !group.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if generation_id != group.generation_id {
        return Err(GroupError::IllegalGeneration { given: generation_id, current: group.generation_id });
    }
    match group.state {
        GroupState::Stable | GroupState::PreparingRebalance => Ok(()),
        GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
        GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
    }
}

/// Per partition: the record to write, or the error to answer.
type Planned = Vec<(StrBytes, Vec<(i32, Result<OffsetRecord, GroupError>)>)>;

fn plan_commit(
    coordinator: &GroupCoordinator,
    groups: &mut Groups,
    request: &OffsetCommitRequest,
    partition_exists: &(dyn Fn(&str, i32) -> bool + Sync),
) -> Result<Planned, GroupError> {
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    validate_commit(
        groups.groups.get(&group_id),
        request.generation_id_or_member_epoch,
        &request.member_id,
        request.group_instance_id.as_deref(),
    )?;
    let config = &coordinator.config;
    let groups_count = groups.groups.len();
    if !groups.groups.contains_key(&group_id) && groups_count >= config.groups_max {
        return Err(GroupError::CoordinatorFull(config.groups_max, groups_count));
    }
    let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id.clone(), now_ms()));
    if let Some(member) = group.members.get_mut(request.member_id.as_str()) {
        member.touch(std::time::Instant::now());
    }
    let mut room = config.offsets_per_group_max.saturating_sub(group.offsets.len());
    let commit_timestamp_ms = now_ms();
    let mut planned = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let metadata_len = partition.committed_metadata.as_ref().map(|metadata| metadata.len()).unwrap_or(0);
            let slot = (topic.name.0.to_string(), partition.partition_index);
            let outcome = if metadata_len > config.offset_metadata_bytes_max {
                Err(GroupError::OffsetMetadataTooLarge(metadata_len))
            } else if !partition_exists(&topic.name.0, partition.partition_index) {
                Err(GroupError::UnknownTopicOrPartition)
            } else if !group.offsets.contains_key(&slot) && room == 0 {
                Err(GroupError::CoordinatorFull(config.groups_max, config.offsets_per_group_max))
            } else {
                room = room.saturating_sub(usize::from(!group.offsets.contains_key(&slot)));
                let committed = CommittedOffset {
                    offset: partition.committed_offset,
                    leader_epoch: partition.committed_leader_epoch,
                    metadata: partition.committed_metadata.as_ref().map(|metadata| metadata.to_string()),
                    commit_timestamp_ms,
                };
                Ok(OffsetRecord {
                    key: OffsetKey { group: group_id.clone(), topic: slot.0, partition: slot.1 },
                    value: Some(committed),
                })
            };
            partitions.push((partition.partition_index, outcome));
        }
        planned.push((topic.name.0.clone(), partitions));
    }
    Ok(planned)
}

pub async fn offset_commit(
    coordinator: &GroupCoordinator,
    request: OffsetCommitRequest,
    context: &RequestContext<'_>,
) -> OffsetCommitResponse {
    let (planned, written) = {
        let mut groups = coordinator.lock();
        let planned = if coordinator.is_closed() {
            Err(GroupError::CoordinatorNotAvailable)
        } else {
            plan_commit(coordinator, &mut groups, &request, context.partition_exists)
        };
        let records: Vec<OffsetRecord> = planned
            .iter()
            .flatten()
            .flat_map(|(_, partitions)| partitions.iter().filter_map(|(_, outcome)| outcome.as_ref().ok().cloned()))
            .collect();
        let written = coordinator.write(&mut groups, records);
        (planned, written)
    };
    let written = written.await;
    let topics = match planned {
        Ok(planned) => planned
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, outcome)| {
                        let outcome = outcome.and_then(|_| written.clone());
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(code_of(&outcome))
                    })
                    .collect();
                OffsetCommitResponseTopic::default().with_name(TopicName(name)).with_partitions(partitions)
            })
            .collect(),
        Err(error) => {
            let code = error_code(&error).code();
            request
                .topics
                .into_iter()
                .map(|topic| {
                    let partitions = topic
                        .partitions
                        .iter()
                        .map(|partition| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(code)
                        })
                        .collect();
                    OffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions)
                })
                .collect()
        }
    };
    OffsetCommitResponse::default().with_topics(topics)
}

/// Whether an open transaction holds an offset of this partition not yet committed or aborted
/// (queued or durable). RequireStable fetches then get UNSTABLE_OFFSET_COMMIT (KIP-447).
fn has_pending_transactional_offsets(group: &Group, topic: &str, partition: i32) -> bool {
    group.pending_offsets.contains_slot(topic, partition)
}

/// (partition index, offset, leader epoch, metadata, outcome) of one fetched partition.
type Fetched = (i32, i64, i32, Option<StrBytes>, Result<(), GroupError>);

/// Committed offsets of one group: the partitions asked for, or all when `topics` is `None`.
fn fetch_group(
    group: Option<&Group>,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(TopicName, Vec<Fetched>)> {
    let topics = topics.unwrap_or_else(|| {
        let mut all: Vec<(TopicName, Vec<i32>)> = Vec::new();
        if let Some(group) = group {
            let mut slots: Vec<&(String, i32)> = group.offsets.keys().collect();
            slots.sort();
            for (topic, partition) in slots {
                match all.last_mut() {
                    Some((name, partitions)) if name.0.as_str() == topic => partitions.push(*partition),
                    _ => all.push((TopicName(text(topic)), vec![*partition])),
                }
            }
        }
        all
    });
    topics
        .into_iter()
        .map(|(name, partitions)| {
            let fetched = partitions
                .into_iter()
                .map(|partition| {
                    let stored = group.and_then(|group| group.offsets.get(&(name.0.to_string(), partition)));
                    let unstable = require_stable
                        && group.is_some_and(|group| has_pending_transactional_offsets(group, &name.0, partition));
                    // Unstable: no offset at all, as Kafka answers, so the client retries rather than use it.
                    match stored {
                        _ if unstable => {
                            (partition, -1, -1, Some(StrBytes::default()), Err(GroupError::UnstableOffsetCommit))
                        }
                        Some(stored) => (
                            partition,
                            stored.committed.offset,
                            stored.committed.leader_epoch,
                            stored.committed.metadata.as_deref().map(text),
                            Ok(()),
                        ),
                        None => (partition, -1, -1, Some(StrBytes::default()), Ok(())),
                    }
                })
                .collect();
            (name, fetched)
        })
        .collect()
}

pub fn offset_fetch(coordinator: &GroupCoordinator, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let groups = coordinator.lock();
    if version >= 8 {
        let results = request
            .groups
            .into_iter()
            .map(|wanted| {
                let topics = wanted
                    .topics
                    .map(|topics| topics.into_iter().map(|topic| (topic.name, topic.partition_indexes)).collect());
                let fetched =
                    fetch_group(groups.groups.get(wanted.group_id.0.as_str()), topics, request.require_stable);
                let topics = fetched
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|(index, offset, epoch, metadata, outcome)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(metadata)
                                    .with_error_code(code_of(&outcome))
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(name).with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default().with_group_id(wanted.group_id).with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(results);
    }
    let topics =
        request.topics.map(|topics| topics.into_iter().map(|topic| (topic.name, topic.partition_indexes)).collect());
    let fetched =
        fetch_group(groups.groups.get(request.group_id.0.as_str()), topics, version >= 7 && request.require_stable);
    let topics = fetched
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, offset, epoch, metadata, outcome)| {
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(offset)
                        .with_metadata(metadata)
                        .with_error_code(code_of(&outcome));
                    if version >= 5 {
                        partition.with_committed_leader_epoch(epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub async fn offset_delete(coordinator: &GroupCoordinator, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let (planned, written) = {
        let mut groups = coordinator.lock();
        let planned = plan_delete(groups.groups.get(request.group_id.0.as_str()), &request);
        let records = match &planned {
            Ok(topics) => topics
                .iter()
                .flat_map(|(_, partitions)| partitions.iter().filter_map(|(_, outcome)| outcome.as_ref().ok().cloned()))
                .collect(),
            Err(_) => Vec::new(),
        };
        let written = coordinator.write(&mut groups, records);
        (planned, written)
    };
    let written = written.await;
    match planned {
        Err(error) => OffsetDeleteResponse::default().with_error_code(error_code(&error).code()),
        Ok(topics) => {
            let topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(index, outcome)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code_of(&outcome.and_then(|_| written.clone())))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default().with_name(name).with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}

type PlannedDelete = Vec<(TopicName, Vec<(i32, Result<OffsetRecord, GroupError>)>)>;

/// Tombstones for OffsetDelete: refused for topics a live consumer group subscribes to.
fn plan_delete(group: Option<&Group>, request: &OffsetDeleteRequest) -> Result<PlannedDelete, GroupError> {
    let group = group.ok_or(GroupError::GroupIdNotFound)?;
    let subscribed: HashSet<String> = match group.state {
        GroupState::Empty => HashSet::new(),
        _ if group.protocol_type.as_deref() == Some("consumer") => subscribed_topics(group),
        _ => return Err(GroupError::NonEmptyGroup),
    };
    Ok(request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let outcome = if subscribed.contains(topic.name.0.as_str()) {
                        Err(GroupError::GroupSubscribedToTopic)
                    } else {
                        Ok(OffsetRecord {
                            key: OffsetKey {
                                group: group.id.clone(),
                                topic: topic.name.0.to_string(),
                                partition: partition.partition_index,
                            },
                            value: None,
                        })
                    };
                    (partition.partition_index, outcome)
                })
                .collect();
            (topic.name.clone(), partitions)
        })
        .collect())
}
