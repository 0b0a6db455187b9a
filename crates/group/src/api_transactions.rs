//! TxnOffsetCommit and the completion of a transaction by its marker. The broker calls both directly
//! (not through `GroupCoordinator::handle`): TxnOffsetCommit after the transaction coordinator
//! confirmed the group is part of the producer's transaction, the completion when the coordinator
//! writes its markers.
//!
//! A TxnOffsetCommit is answered only after its transactional batch is durable; its offsets are then
//! pending (`crate::transactions`) and OffsetFetch keeps answering the last committed ones.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use once_partition::TxnMarker;

use crate::coordinator::{now_ms, GroupCoordinator, Groups};
use crate::error::{code_of, error_code, GroupError};
use crate::group::Group;
use crate::records::{CommittedOffset, OffsetKey, OffsetRecord, TransactionalProducer};

/// Whether the member may commit transactional offsets for `group` (KIP-447, TxnOffsetCommit v3+).
///
/// Checked only when the request names a member (a generation, a member id or an instance id) and the
/// group has members. Kafka also fences a named member of a group without members; Once keeps
/// membership in memory only, so after a restart every group is empty and that check would fence
/// every transactional producer still running with its consumer's old generation. Within a run the
/// checks are Kafka's, static fencing first: FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION.
/// The group's state is not checked (Kafka does not for transactional commits).
pub(crate) fn validate_txn_commit(
    group: Option<&Group>,
    version: i16,
    generation_id: i32,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Result<(), GroupError> {
    if version < 3 {
        return Ok(());
    }
    let Some(group) = group.filter(|group| !group.members.is_empty()) else {
        return Ok(());
    };
    let names_member = generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some();
    if !names_member {
        return Ok(());
    }
    if let Some(instance_id) = group_instance_id {
        if group.static_members.get(instance_id).is_some_and(|holder| holder != member_id) {
            return Err(GroupError::FencedInstanceId);
        }
    }
    if !group.members.contains_key(member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if generation_id != group.generation_id {
        return Err(GroupError::IllegalGeneration { given: generation_id, current: group.generation_id });
    }
    Ok(())
}

/// Per partition: the record to write, or the error to answer.
type Planned = Vec<(TopicName, Vec<(i32, Result<OffsetRecord, GroupError>)>)>;

/// Validates a TxnOffsetCommit under the lock and plans its records. The group is created if needed
/// (as Kafka does), within the coordinator's bounds; pending records per group are bounded by
/// `offsets_per_group_max` like committed ones.
fn plan(
    coordinator: &GroupCoordinator,
    groups: &mut Groups,
    request: &TxnOffsetCommitRequest,
    version: i16,
) -> Result<Planned, GroupError> {
    if coordinator.is_closed() {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    let group_id = request.group_id.0.to_string();
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    if request.producer_id.0 < 0 || request.producer_epoch < 0 {
        // The broker verified the producer with the transaction coordinator: this is a routing bug.
        return Err(GroupError::InvalidRequest(format!(
            "TxnOffsetCommit without a producer (id {}, epoch {})",
            request.producer_id.0, request.producer_epoch
        )));
    }
    validate_txn_commit(
        groups.groups.get(&group_id),
        version,
        request.generation_id,
        &request.member_id,
        request.group_instance_id.as_deref(),
    )?;
    let config = &coordinator.config;
    let groups_count = groups.groups.len();
    if !groups.groups.contains_key(&group_id) && groups_count >= config.groups_max {
        return Err(GroupError::CoordinatorFull(config.groups_max, groups_count));
    }
    let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id.clone(), now_ms()));
    let producer_id = request.producer_id.0;
    let mut room = config.offsets_per_group_max.saturating_sub(group.pending_offsets.len());
    let commit_timestamp_ms = now_ms();
    let mut planned = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let metadata_len = partition.committed_metadata.as_ref().map(|metadata| metadata.len()).unwrap_or(0);
            let slot = (topic.name.0.to_string(), partition.partition_index);
            let outcome = if metadata_len > config.offset_metadata_bytes_max {
                Err(GroupError::OffsetMetadataTooLarge(metadata_len))
            } else if room == 0 && !group.pending_offsets.producer_has_slot(producer_id, &slot) {
                Err(GroupError::CoordinatorFull(config.groups_max, config.offsets_per_group_max))
            } else {
                room = room.saturating_sub(1);
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
        planned.push((topic.name.clone(), partitions));
    }
    Ok(planned)
}

pub(crate) async fn txn_offset_commit(
    coordinator: &GroupCoordinator,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let producer = TransactionalProducer { producer_id: request.producer_id.0, producer_epoch: request.producer_epoch };
    let (planned, written) = {
        let mut groups = coordinator.lock();
        let planned = plan(coordinator, &mut groups, &request, version);
        let records: Vec<OffsetRecord> = planned
            .iter()
            .flatten()
            .flat_map(|(_, partitions)| partitions.iter().filter_map(|(_, outcome)| outcome.as_ref().ok().cloned()))
            .collect();
        // One batch for the whole request: the partition sees one transactional append.
        let written = coordinator.write_transactional(&mut groups, producer, records);
        (planned, written)
    };
    let written = written.await;
    if let Err(error) = &written {
        tracing::warn!(group = %request.group_id.0, producer_id = producer.producer_id, %error, "transactional offsets not written");
    }
    let topics = match planned {
        Ok(planned) => planned
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, outcome)| {
                        let outcome = outcome.and_then(|_| written.clone());
                        TxnOffsetCommitResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(code_of(&outcome))
                    })
                    .collect();
                TxnOffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
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
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(partition.partition_index)
                                .with_error_code(code)
                        })
                        .collect();
                    TxnOffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions)
                })
                .collect()
        }
    };
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub(crate) async fn complete_transaction(
    coordinator: &GroupCoordinator,
    group_id: &str,
    marker: TxnMarker,
) -> Result<(), GroupError> {
    if marker.producer_id < 0 {
        return Err(GroupError::InvalidRequest(format!("a marker for producer id {}", marker.producer_id)));
    }
    let written = {
        let mut groups = coordinator.lock();
        if coordinator.is_closed() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        coordinator.write_marker(&mut groups, marker, group_id.to_string())
    };
    written.await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::group::{GroupState, Member};

    fn member(member_id: &str, group_instance_id: Option<&str>) -> Member {
        Member {
            member_id: member_id.into(),
            group_instance_id: group_instance_id.map(str::to_string),
            client_id: "client".into(),
            client_host: String::new(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            assignment: Bytes::new(),
            session_deadline: Instant::now(),
            join_waiter: None,
            sync_waiter: None,
        }
    }

    /// A stable group at generation 4 with a dynamic member `m1` and a static member `m2` (`i2`).
    fn stable_group() -> Group {
        let mut group = Group::new("g".into(), 0);
        group.state = GroupState::Stable;
        group.generation_id = 4;
        group.members.insert("m1".into(), member("m1", None));
        group.members.insert("m2".into(), member("m2", Some("i2")));
        group.static_members.insert("i2".into(), "m2".into());
        group
    }

    #[test]
    fn the_current_member_and_generation_may_commit() {
        let group = stable_group();
        assert_eq!(validate_txn_commit(Some(&group), 3, 4, "m1", None), Ok(()));
        assert_eq!(validate_txn_commit(Some(&group), 3, 4, "m2", Some("i2")), Ok(()));
    }

    #[test]
    fn an_unknown_member_is_refused() {
        let group = stable_group();
        assert_eq!(validate_txn_commit(Some(&group), 3, 4, "zombie", None), Err(GroupError::UnknownMemberId));
    }

    #[test]
    fn an_old_generation_is_refused() {
        let group = stable_group();
        assert_eq!(
            validate_txn_commit(Some(&group), 3, 3, "m1", None),
            Err(GroupError::IllegalGeneration { given: 3, current: 4 })
        );
        assert_eq!(
            validate_txn_commit(Some(&group), 3, -1, "m1", None),
            Err(GroupError::IllegalGeneration { given: -1, current: 4 }),
            "a member id without a generation is checked too"
        );
    }

    #[test]
    fn a_fenced_static_instance_is_refused_before_anything_else() {
        let group = stable_group();
        assert_eq!(validate_txn_commit(Some(&group), 3, 4, "m1", Some("i2")), Err(GroupError::FencedInstanceId));
        assert_eq!(
            validate_txn_commit(Some(&group), 3, 1, "old-m2", Some("i2")),
            Err(GroupError::FencedInstanceId),
            "fencing comes before membership and generation"
        );
    }

    #[test]
    fn requests_without_a_member_are_not_checked() {
        let group = stable_group();
        assert_eq!(validate_txn_commit(Some(&group), 3, -1, "", None), Ok(()), "v3 without consumer metadata");
        assert_eq!(validate_txn_commit(Some(&group), 2, 9, "zombie", None), Ok(()), "before v3 nothing is checked");
    }

    #[test]
    fn groups_without_members_are_not_checked() {
        let group = Group::new("g".into(), 0);
        assert_eq!(validate_txn_commit(Some(&group), 3, 7, "m-before-restart", None), Ok(()));
        assert_eq!(validate_txn_commit(None, 3, 7, "m-before-restart", None), Ok(()));
    }
}
