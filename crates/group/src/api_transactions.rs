//! TxnOffsetCommit and the completion of a transaction by its marker. The broker calls the first
//! after the transaction coordinator confirmed the group is part of the producer's transaction, the
//! completion when the coordinator writes its markers.
//!
//! A TxnOffsetCommit is answered only after its transactional batch is durable; its offsets are then
//! pending (`crate::transactions`) and OffsetFetch keeps answering the last committed ones.

use once_partition::TxnMarker;

use crate::api_offsets::{answer, planned_records, refuse_all, CommitMember, Planned, TopicOffsets, TopicOutcomes};
use crate::coordinator::{now_ms, GroupCoordinator, Groups};
use crate::error::GroupError;
use crate::group::Group;
use crate::records::{CommittedOffset, OffsetKey, OffsetRecord, TransactionalProducer};

/// A TxnOffsetCommit: the offsets of a producer's transaction for one group.
#[derive(Debug, Clone)]
pub struct TxnOffsetCommit {
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The consumer's member, checked against the group (KIP-447); `None` before v3.
    pub member: Option<CommitMember>,
    pub topics: Vec<TopicOffsets>,
}

/// Whether the member may commit transactional offsets for `group` (KIP-447: `member` is `None` before
/// TxnOffsetCommit v3, which carries none).
///
/// Checked only when the request names a member (a generation, a member id or an instance id) and the
/// group has members. Kafka also fences a named member of a group without members; Once keeps
/// membership in memory only, so after a restart every group is empty and that check would fence
/// every transactional producer still running with its consumer's old generation. Within a run the
/// checks are Kafka's, static fencing first: FENCED_INSTANCE_ID, UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION.
/// The group's state is not checked (Kafka does not for transactional commits).
pub(crate) fn validate_txn_commit(group: Option<&Group>, member: Option<&CommitMember>) -> Result<(), GroupError> {
    let Some(CommitMember { generation_id, member_id, group_instance_id }) = member else {
        return Ok(());
    };
    let (generation_id, group_instance_id) = (*generation_id, group_instance_id.as_deref());
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

/// Validates a TxnOffsetCommit under the lock and plans its records. The group is created if needed
/// (as Kafka does), within the coordinator's bounds; pending records per group are bounded by
/// `offsets_per_group_max` like committed ones.
fn plan(coordinator: &GroupCoordinator, groups: &mut Groups, commit: &TxnOffsetCommit) -> Result<Planned, GroupError> {
    if coordinator.is_closed() {
        return Err(GroupError::CoordinatorNotAvailable);
    }
    let group_id = commit.group_id.clone();
    if group_id.is_empty() {
        return Err(GroupError::InvalidGroupId);
    }
    if commit.producer_id < 0 || commit.producer_epoch < 0 {
        // The broker verified the producer with the transaction coordinator: this is a routing bug.
        return Err(GroupError::InvalidRequest(format!(
            "TxnOffsetCommit without a producer (id {}, epoch {})",
            commit.producer_id, commit.producer_epoch
        )));
    }
    validate_txn_commit(groups.groups.get(&group_id), commit.member.as_ref())?;
    let config = &coordinator.config;
    let groups_count = groups.groups.len();
    if !groups.groups.contains_key(&group_id) && groups_count >= config.groups_max {
        return Err(GroupError::CoordinatorFull(config.groups_max, groups_count));
    }
    let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id.clone(), now_ms()));
    let producer_id = commit.producer_id;
    let mut room = config.offsets_per_group_max.saturating_sub(group.pending_offsets.len());
    let commit_timestamp_ms = now_ms();
    let mut planned = Vec::with_capacity(commit.topics.len());
    for topic in &commit.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let metadata_len = partition.metadata.as_ref().map(|metadata| metadata.len()).unwrap_or(0);
            let slot = (topic.topic.clone(), partition.partition);
            let outcome = if metadata_len > config.offset_metadata_bytes_max {
                Err(GroupError::OffsetMetadataTooLarge(metadata_len))
            } else if room == 0 && !group.pending_offsets.producer_has_slot(producer_id, &slot) {
                Err(GroupError::CoordinatorFull(config.groups_max, config.offsets_per_group_max))
            } else {
                room = room.saturating_sub(1);
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

pub(crate) async fn txn_offset_commit(coordinator: &GroupCoordinator, commit: TxnOffsetCommit) -> TopicOutcomes {
    let producer = TransactionalProducer { producer_id: commit.producer_id, producer_epoch: commit.producer_epoch };
    let (planned, written) = {
        let mut groups = coordinator.lock();
        let planned = plan(coordinator, &mut groups, &commit);
        let records = planned.as_ref().map(planned_records).unwrap_or_default();
        // One batch for the whole request: the partition sees one transactional append.
        let written = coordinator.write_transactional(&mut groups, producer, records);
        (planned, written)
    };
    let written = written.await;
    if let Err(error) = &written {
        tracing::warn!(group = %commit.group_id, producer_id = producer.producer_id, %error, "transactional offsets not written");
    }
    match planned {
        Ok(planned) => answer(planned, written),
        Err(error) => refuse_all(commit.topics, &error),
    }
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

    /// The member a v3+ request names.
    fn member_ref(generation_id: i32, member_id: &str, group_instance_id: Option<&str>) -> CommitMember {
        CommitMember {
            generation_id,
            member_id: member_id.into(),
            group_instance_id: group_instance_id.map(str::to_string),
        }
    }

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
        assert_eq!(validate_txn_commit(Some(&group), Some(&member_ref(4, "m1", None))), Ok(()));
        assert_eq!(validate_txn_commit(Some(&group), Some(&member_ref(4, "m2", Some("i2")))), Ok(()));
    }

    #[test]
    fn an_unknown_member_is_refused() {
        let group = stable_group();
        assert_eq!(
            validate_txn_commit(Some(&group), Some(&member_ref(4, "zombie", None))),
            Err(GroupError::UnknownMemberId)
        );
    }

    #[test]
    fn an_old_generation_is_refused() {
        let group = stable_group();
        assert_eq!(
            validate_txn_commit(Some(&group), Some(&member_ref(3, "m1", None))),
            Err(GroupError::IllegalGeneration { given: 3, current: 4 })
        );
        assert_eq!(
            validate_txn_commit(Some(&group), Some(&member_ref(-1, "m1", None))),
            Err(GroupError::IllegalGeneration { given: -1, current: 4 }),
            "a member id without a generation is checked too"
        );
    }

    #[test]
    fn a_fenced_static_instance_is_refused_before_anything_else() {
        let group = stable_group();
        assert_eq!(
            validate_txn_commit(Some(&group), Some(&member_ref(4, "m1", Some("i2")))),
            Err(GroupError::FencedInstanceId)
        );
        assert_eq!(
            validate_txn_commit(Some(&group), Some(&member_ref(1, "old-m2", Some("i2")))),
            Err(GroupError::FencedInstanceId),
            "fencing comes before membership and generation"
        );
    }

    #[test]
    fn requests_without_a_member_are_not_checked() {
        let group = stable_group();
        assert_eq!(
            validate_txn_commit(Some(&group), Some(&member_ref(-1, "", None))),
            Ok(()),
            "v3 without consumer metadata"
        );
        assert_eq!(validate_txn_commit(Some(&group), None), Ok(()), "before v3 nothing is checked");
    }

    #[test]
    fn groups_without_members_are_not_checked() {
        let group = Group::new("g".into(), 0);
        assert_eq!(validate_txn_commit(Some(&group), Some(&member_ref(7, "m-before-restart", None))), Ok(()));
        assert_eq!(validate_txn_commit(None, Some(&member_ref(7, "m-before-restart", None))), Ok(()));
    }
}
