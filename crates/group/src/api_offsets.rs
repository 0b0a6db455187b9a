//! OffsetCommit, OffsetFetch and OffsetDelete as coordinator operations on plain types. A commit is
//! acknowledged only after the offsets log has fsynced the batch that holds it.

use std::collections::HashSet;

use bytes::Bytes;

use crate::coordinator::{now_ms, GroupCoordinator, Groups, RequestContext};
use crate::error::GroupError;
use crate::group::{Group, GroupState};
use crate::records::{CommittedOffset, OffsetKey, OffsetRecord};

/// The member a commit names (OffsetCommit; TxnOffsetCommit v3+): checked against the group.
#[derive(Debug, Clone, Default)]
pub struct CommitMember {
    /// -1 when the client names no generation (a client that assigns itself).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone)]
pub struct PartitionOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// The offsets of one topic to commit, as the request lists them.
#[derive(Debug, Clone)]
pub struct TopicOffsets {
    pub topic: String,
    pub partitions: Vec<PartitionOffset>,
}

/// An OffsetCommit.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    pub group_id: String,
    pub member: CommitMember,
    pub topics: Vec<TopicOffsets>,
}

/// Per topic, in the request's order: per partition, its outcome.
pub type TopicOutcomes = Vec<(String, Vec<(i32, Result<(), GroupError>)>)>;

/// One partition's committed offset as OffsetFetch reports it: -1 and empty metadata when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub outcome: Result<(), GroupError>,
}

/// An OffsetFetch of one group: its id and, per topic, the partitions wanted (`None`: every
/// committed one).
pub type WantedOffsets = (String, Option<Vec<(String, Vec<i32>)>>);

/// The committed offsets of one group, per topic.
pub type GroupOffsets = Vec<(String, Vec<FetchedOffset>)>;

/// Which topics a member's subscription names, from its metadata for the group's protocol (`None`
/// when it does not decode). The consumer protocol's format is the edge's to read, not the group's.
pub type SubscriptionTopics = dyn Fn(Bytes) -> Option<Vec<String>> + Sync;

/// Every outcome of `topics` the same: a refused request answers each partition with its error.
pub(crate) fn refuse_all(topics: Vec<TopicOffsets>, error: &GroupError) -> TopicOutcomes {
    topics
        .into_iter()
        .map(|topic| {
            let partitions =
                topic.partitions.iter().map(|partition| (partition.partition, Err(error.clone()))).collect();
            (topic.topic, partitions)
        })
        .collect()
}

/// Planned outcomes as answered once the write ended: a planned record takes the write's outcome.
pub(crate) fn answer(planned: Planned, written: Result<(), GroupError>) -> TopicOutcomes {
    planned
        .into_iter()
        .map(|(name, partitions)| {
            let partitions =
                partitions.into_iter().map(|(index, outcome)| (index, outcome.and_then(|_| written.clone()))).collect();
            (name, partitions)
        })
        .collect()
}

/// The records of a plan, to write as one batch.
pub(crate) fn planned_records(planned: &Planned) -> Vec<OffsetRecord> {
    planned
        .iter()
        .flat_map(|(_, partitions)| partitions.iter().filter_map(|(_, outcome)| outcome.as_ref().ok().cloned()))
        .collect()
}

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

/// Per topic, per partition: the record to write, or the error to answer.
pub(crate) type Planned = Vec<(String, Vec<(i32, Result<OffsetRecord, GroupError>)>)>;

fn plan_commit(
    coordinator: &GroupCoordinator,
    groups: &mut Groups,
    commit: &OffsetCommit,
    partition_exists: &(dyn Fn(&str, i32) -> bool + Sync),
) -> Result<Planned, GroupError> {
    let group_id = commit.group_id.clone();
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    let member = &commit.member;
    validate_commit(
        groups.groups.get(&group_id),
        member.generation_id,
        &member.member_id,
        member.group_instance_id.as_deref(),
    )?;
    let config = &coordinator.config;
    let groups_count = groups.groups.len();
    if !groups.groups.contains_key(&group_id) && groups_count >= config.groups_max {
        return Err(GroupError::CoordinatorFull(config.groups_max, groups_count));
    }
    let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id.clone(), now_ms()));
    if let Some(member) = group.members.get_mut(member.member_id.as_str()) {
        member.touch(std::time::Instant::now());
    }
    let mut room = config.offsets_per_group_max.saturating_sub(group.offsets.len());
    let commit_timestamp_ms = now_ms();
    let mut planned = Vec::with_capacity(commit.topics.len());
    for topic in &commit.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let metadata_len = partition.metadata.as_ref().map(|metadata| metadata.len()).unwrap_or(0);
            let slot = (topic.topic.clone(), partition.partition);
            let outcome = if metadata_len > config.offset_metadata_bytes_max {
                Err(GroupError::OffsetMetadataTooLarge(metadata_len))
            } else if !partition_exists(&topic.topic, partition.partition) {
                Err(GroupError::UnknownTopicOrPartition)
            } else if !group.offsets.contains_key(&slot) && room == 0 {
                Err(GroupError::CoordinatorFull(config.groups_max, config.offsets_per_group_max))
            } else {
                room = room.saturating_sub(usize::from(!group.offsets.contains_key(&slot)));
                let committed = CommittedOffset {
                    offset: partition.offset,
                    leader_epoch: partition.leader_epoch,
                    metadata: partition.metadata.clone(),
                    commit_timestamp_ms,
                };
                Ok(OffsetRecord {
                    key: OffsetKey { group: group_id.clone(), topic: slot.0, partition: slot.1 },
                    value: Some(committed),
                })
            };
            partitions.push((partition.partition, outcome));
        }
        planned.push((topic.topic.clone(), partitions));
    }
    Ok(planned)
}

/// Whether an open transaction holds an offset of this partition not yet committed or aborted
/// (queued or durable). RequireStable fetches then get UNSTABLE_OFFSET_COMMIT (KIP-447).
fn has_pending_transactional_offsets(group: &Group, topic: &str, partition: i32) -> bool {
    group.pending_offsets.contains_slot(topic, partition)
}

/// Committed offsets of one group: the partitions asked for, or all when `topics` is `None`.
fn fetch_group(group: Option<&Group>, topics: Option<Vec<(String, Vec<i32>)>>, require_stable: bool) -> GroupOffsets {
    let topics = topics.unwrap_or_else(|| {
        let mut all: Vec<(String, Vec<i32>)> = Vec::new();
        if let Some(group) = group {
            let mut slots: Vec<&(String, i32)> = group.offsets.keys().collect();
            slots.sort();
            for (topic, partition) in slots {
                match all.last_mut() {
                    Some((name, partitions)) if name == topic => partitions.push(*partition),
                    _ => all.push((topic.clone(), vec![*partition])),
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
                    let stored = group.and_then(|group| group.offsets.get(&(name.clone(), partition)));
                    let unstable = require_stable
                        && group.is_some_and(|group| has_pending_transactional_offsets(group, &name, partition));
                    let none = |outcome| FetchedOffset {
                        partition,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: Some(String::new()),
                        outcome,
                    };
                    // Unstable: no offset at all, as Kafka answers, so the client retries rather than use it.
                    match stored {
                        _ if unstable => none(Err(GroupError::UnstableOffsetCommit)),
                        Some(stored) => FetchedOffset {
                            partition,
                            offset: stored.committed.offset,
                            leader_epoch: stored.committed.leader_epoch,
                            metadata: stored.committed.metadata.clone(),
                            outcome: Ok(()),
                        },
                        None => none(Ok(())),
                    }
                })
                .collect();
            (name, fetched)
        })
        .collect()
}

impl GroupCoordinator {
    /// OffsetCommit: validates the member (Kafka's `validateOffsetCommit`), bounds groups, offsets and
    /// metadata, and answers once the accepted offsets are durable. A refused request answers every
    /// partition with its error.
    pub async fn commit_offsets(&self, commit: OffsetCommit, context: &RequestContext<'_>) -> TopicOutcomes {
        let (planned, written) = {
            let mut groups = self.lock();
            let planned = if self.is_closed() {
                Err(GroupError::CoordinatorNotAvailable)
            } else {
                plan_commit(self, &mut groups, &commit, context.partition_exists)
            };
            let records = planned.as_ref().map(planned_records).unwrap_or_default();
            let written = self.write(&mut groups, records);
            (planned, written)
        };
        let written = written.await;
        match planned {
            Ok(planned) => answer(planned, written),
            Err(error) => refuse_all(commit.topics, &error),
        }
    }

    /// OffsetFetch of several groups under one lock: for each (group id, topics and partitions, or
    /// `None` for every committed one), its offsets. With `require_stable`, a partition with pending
    /// transactional offsets answers UNSTABLE_OFFSET_COMMIT.
    pub fn fetch_offsets(&self, wanted: Vec<WantedOffsets>, require_stable: bool) -> Vec<GroupOffsets> {
        let groups = self.lock();
        wanted
            .into_iter()
            .map(|(group_id, topics)| fetch_group(groups.groups.get(&group_id), topics, require_stable))
            .collect()
    }

    /// OffsetDelete: tombstones for the partitions, durable before the answer; refused for topics a
    /// live consumer group subscribes to (`subscription_topics` reads a member's subscription).
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        topics: Vec<(String, Vec<i32>)>,
        subscription_topics: &SubscriptionTopics,
    ) -> Result<TopicOutcomes, GroupError> {
        let (planned, written) = {
            let mut groups = self.lock();
            let planned = plan_delete(groups.groups.get(group_id), topics, subscription_topics);
            let records = planned.as_ref().map(planned_records).unwrap_or_default();
            let written = self.write(&mut groups, records);
            (planned, written)
        };
        let written = written.await;
        Ok(answer(planned?, written))
    }
}

/// Every topic some member of a consumer group subscribes to (metadata of the chosen protocol).
fn subscribed_topics(group: &Group, subscription_topics: &SubscriptionTopics) -> HashSet<String> {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    group.members.values().filter_map(|member| subscription_topics(member.metadata_for(&protocol))).flatten().collect()
}

/// Tombstones for OffsetDelete: refused for topics a live consumer group subscribes to.
fn plan_delete(
    group: Option<&Group>,
    topics: Vec<(String, Vec<i32>)>,
    subscription_topics: &SubscriptionTopics,
) -> Result<Planned, GroupError> {
    let group = group.ok_or(GroupError::GroupIdNotFound)?;
    let subscribed: HashSet<String> = match group.state {
        GroupState::Empty => HashSet::new(),
        _ if group.protocol_type.as_deref() == Some("consumer") => subscribed_topics(group, subscription_topics),
        _ => return Err(GroupError::NonEmptyGroup),
    };
    Ok(topics
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|partition| {
                    let outcome = if subscribed.contains(topic.as_str()) {
                        Err(GroupError::GroupSubscribedToTopic)
                    } else {
                        Ok(OffsetRecord {
                            key: OffsetKey { group: group.id.clone(), topic: topic.clone(), partition },
                            value: None,
                        })
                    };
                    (partition, outcome)
                })
                .collect();
            (topic, partitions)
        })
        .collect())
}
