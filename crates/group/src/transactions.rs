//! Transactional offsets (TxnOffsetCommit): pending per producer until the producer's transaction
//! marker, then applied (commit) or discarded (abort), as Kafka's `GroupMetadata` keeps
//! `pendingTransactionalOffsetCommits`.
//!
//! Every record and marker of the offsets log has a commit sequence: its position in the order the
//! log holds them (sequences are taken under the coordinator lock, in the order batches are queued to
//! the partition). The rules below compare sequences only, so the live path (which learns of
//! durability out of order) and replay at open (which reads the log in order) reach the same state:
//!
//! - A marker completes the producer's pending offsets queued before it (a lower sequence), in every
//!   group: in the log it closes the producer's transaction for the whole offsets partition. Offsets
//!   queued after it wait for the next marker.
//! - A committed pending offset replaces the stored offset only if that one was written earlier in
//!   the log (Kafka's `olderThan` on batch offsets): a plain OffsetCommit appended after the
//!   transactional record wins, whichever is applied to memory first.
//! - A tombstone (OffsetDelete, DeleteGroups, expiry) discards the pending offsets of its partition
//!   queued before it, so a later commit marker cannot bring a deleted offset back. (Kafka drops them
//!   in memory but not on replay; here both agree.)
//!
//! These are pure state functions on [`Groups`]; the coordinator calls them around its writes.

use std::collections::{BTreeMap, HashMap};

use crate::coordinator::{store_offset, Groups};
use crate::group::Group;
use crate::records::{CommittedOffset, OffsetRecord};

/// A partition of a topic, as group offsets are keyed.
pub type Slot = (String, i32);

/// Where a pending offset's record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    /// Queued to the offsets log; whether it is durable is not known yet.
    Queued,
    /// Durable in the offsets log, waiting for its producer's marker.
    Durable,
    /// Still queued, but a commit marker queued after it is already durable: it applies as soon as its
    /// own append turns out durable, and is dropped if that append failed. (Only a transaction
    /// coordinator that sends EndTxn before TxnOffsetCommit was answered can cause this.)
    QueuedCommitted,
}

/// One transactional offset of one producer, not yet committed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffset {
    pub committed: CommittedOffset,
    /// Commit sequence of its record: its position in the offsets log.
    pub sequence: u64,
    pub state: PendingState,
}

/// One group's pending transactional offsets: producer id → partition → records, oldest first. A
/// partition holds more than one record only while appends are in flight: once one is durable, the
/// durable ones before it can no longer matter (a commit applies the last) and are dropped.
#[derive(Debug, Clone, Default)]
pub struct PendingOffsets {
    producers: BTreeMap<i64, HashMap<Slot, Vec<PendingOffset>>>,
    /// Records held, for the per-group bound.
    records: usize,
}

/// What a marker did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completed {
    /// Pending offsets that became the committed offset.
    pub applied: usize,
    /// Pending offsets dropped: aborted, or committed over an offset written later in the log.
    pub discarded: usize,
    /// Pending offsets committed by this marker whose own append is still in flight.
    pub awaiting_append: usize,
}

impl PendingOffsets {
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Pending records held (every producer, every partition).
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether any producer has a pending offset for the partition (OffsetFetch RequireStable).
    pub fn contains_slot(&self, topic: &str, partition: i32) -> bool {
        let slot = (topic.to_string(), partition);
        self.producers.values().any(|slots| slots.contains_key(&slot))
    }

    /// Whether `producer_id` already has a pending offset for the partition.
    pub fn producer_has_slot(&self, producer_id: i64, slot: &Slot) -> bool {
        self.producers.get(&producer_id).is_some_and(|slots| slots.contains_key(slot))
    }

    /// Producers with pending offsets, ascending.
    pub fn producers(&self) -> Vec<i64> {
        self.producers.keys().copied().collect()
    }

    /// Partitions with a pending offset of any producer.
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.producers.values().flat_map(|slots| slots.keys())
    }

    /// The pending records of `producer_id` for the partition, oldest first.
    pub fn get(&self, producer_id: i64, slot: &Slot) -> &[PendingOffset] {
        self.producers.get(&producer_id).and_then(|slots| slots.get(slot)).map_or(&[], Vec::as_slice)
    }

    fn push(&mut self, producer_id: i64, slot: Slot, pending: PendingOffset) {
        let records = self.producers.entry(producer_id).or_default().entry(slot).or_default();
        assert!(
            records.last().is_none_or(|last| last.sequence < pending.sequence),
            "pending offsets of a partition are added in log order"
        );
        records.push(pending);
        self.records += 1;
    }

    /// Removes what `keep` refuses from one producer's records of one partition, pruning empty maps.
    fn retain(&mut self, producer_id: i64, slot: &Slot, mut keep: impl FnMut(&PendingOffset) -> bool) {
        let Some(slots) = self.producers.get_mut(&producer_id) else { return };
        let Some(records) = slots.get_mut(slot) else { return };
        let before = records.len();
        records.retain(|pending| keep(pending));
        self.records -= before - records.len();
        if records.is_empty() {
            slots.remove(slot);
        }
        if slots.is_empty() {
            self.producers.remove(&producer_id);
        }
    }

    /// A tombstone at `sequence`: every producer's offsets of the partition queued before it go.
    pub fn discard_before(&mut self, slot: &Slot, sequence: u64) {
        for producer_id in self.producers() {
            self.retain(producer_id, slot, |pending| pending.sequence > sequence);
        }
    }

    /// The append of the record at `sequence` ended: durable or not. Returns the offset to apply now
    /// when a commit marker already decided it.
    fn resolve_append(&mut self, producer_id: i64, slot: &Slot, sequence: u64, durable: bool) -> Option<PendingOffset> {
        let found = self.get(producer_id, slot).iter().find(|pending| pending.sequence == sequence).cloned();
        // Gone already: aborted, discarded by a tombstone, or its group was deleted.
        let found = found?;
        match (durable, found.state) {
            (true, PendingState::Queued) => {
                // Earlier durable records of this producer and partition can never apply now.
                self.retain(producer_id, slot, |pending| {
                    pending.sequence >= sequence || pending.state != PendingState::Durable
                });
                let records = self.producers.get_mut(&producer_id).and_then(|slots| slots.get_mut(slot));
                if let Some(pending) =
                    records.and_then(|records| records.iter_mut().find(|pending| pending.sequence == sequence))
                {
                    pending.state = PendingState::Durable;
                }
                None
            }
            (true, PendingState::QueuedCommitted) => {
                self.retain(producer_id, slot, |pending| pending.sequence != sequence);
                Some(found)
            }
            (true, PendingState::Durable) => {
                panic!("the append of the pending offset at sequence {sequence} ended twice")
            }
            (false, _) => {
                self.retain(producer_id, slot, |pending| pending.sequence != sequence);
                None
            }
        }
    }

    /// A marker at `marker_sequence` for `producer_id`: returns, in log order, the offsets it commits
    /// now; aborted ones are dropped, and committed ones still in flight wait for their append.
    fn complete(
        &mut self,
        producer_id: i64,
        marker_sequence: u64,
        commit: bool,
    ) -> (Vec<(Slot, PendingOffset)>, Completed) {
        let mut completed = Completed::default();
        let mut to_apply = Vec::new();
        let Some(slots) = self.producers.get_mut(&producer_id) else {
            return (to_apply, completed);
        };
        let mut removed = 0;
        for (slot, records) in slots.iter_mut() {
            records.retain_mut(|pending| {
                if pending.sequence > marker_sequence {
                    return true; // The producer's next transaction.
                }
                match (pending.state, commit) {
                    (PendingState::QueuedCommitted, _) => true, // Decided by an earlier commit marker.
                    (PendingState::Queued, true) => {
                        pending.state = PendingState::QueuedCommitted;
                        completed.awaiting_append += 1;
                        true
                    }
                    (PendingState::Durable, true) => {
                        to_apply.push((slot.clone(), pending.clone()));
                        removed += 1;
                        false
                    }
                    (PendingState::Queued | PendingState::Durable, false) => {
                        completed.discarded += 1;
                        removed += 1;
                        false
                    }
                }
            });
        }
        slots.retain(|_, records| !records.is_empty());
        if slots.is_empty() {
            self.producers.remove(&producer_id);
        }
        self.records -= removed;
        to_apply.sort_by_key(|(_, pending)| pending.sequence);
        (to_apply, completed)
    }
}

/// Adds transactional `records` (sequences from `first_sequence`, in order) as pending offsets of
/// `producer_id`: `Queued` from TxnOffsetCommit before the append, `Durable` from replay. Creates the
/// group if needed (replay; TxnOffsetCommit created it when validating).
pub(crate) fn add_pending(
    groups: &mut Groups,
    producer_id: i64,
    records: &[OffsetRecord],
    first_sequence: u64,
    state: PendingState,
    now_ms: i64,
) {
    for (index, record) in records.iter().enumerate() {
        let sequence = first_sequence + index as u64;
        let group_id = &record.key.group;
        let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id.clone(), now_ms));
        let slot = (record.key.topic.clone(), record.key.partition);
        match &record.value {
            Some(committed) => {
                if state == PendingState::Durable {
                    // Replay: later durable records of the partition supersede earlier ones.
                    group.pending_offsets.retain(producer_id, &slot, |_| false);
                }
                group.pending_offsets.push(
                    producer_id,
                    slot,
                    PendingOffset { committed: committed.clone(), sequence, state },
                );
            }
            // Once never writes transactional tombstones; Kafka's loader reads one as withdrawing the
            // producer's pending offset of the partition.
            None => group.pending_offsets.retain(producer_id, &slot, |_| false),
        }
        groups.transactions.entry(producer_id).or_default().insert(group_id.clone());
    }
}

/// The append of transactional `records` (sequences from `first_sequence`) ended: they become durable
/// pending offsets, or leave (a failed append), or apply at once if a commit marker already came.
pub(crate) fn resolve_append(
    groups: &mut Groups,
    producer_id: i64,
    records: &[OffsetRecord],
    first_sequence: u64,
    durable: bool,
) {
    for (index, record) in records.iter().enumerate() {
        let sequence = first_sequence + index as u64;
        let Some(group) = groups.groups.get_mut(&record.key.group) else { continue };
        let slot = (record.key.topic.clone(), record.key.partition);
        if let Some(pending) = group.pending_offsets.resolve_append(producer_id, &slot, sequence, durable) {
            store_offset(group, slot, pending.committed, pending.sequence, false);
        }
    }
}

/// Applies a durable marker at `marker_sequence`: the producer's pending offsets queued before it, in
/// every group, are committed (each over an offset written earlier in the log only) or discarded.
pub(crate) fn complete(
    groups: &mut Groups,
    producer_id: i64,
    marker_sequence: u64,
    commit: bool,
    replay: bool,
) -> Completed {
    let mut total = Completed::default();
    let Some(group_ids) = groups.transactions.remove(&producer_id) else {
        return total;
    };
    let mut still_pending = Vec::new();
    for group_id in group_ids {
        let Some(group) = groups.groups.get_mut(&group_id) else { continue };
        let (to_apply, completed) = group.pending_offsets.complete(producer_id, marker_sequence, commit);
        total.discarded += completed.discarded;
        total.awaiting_append += completed.awaiting_append;
        for (slot, pending) in to_apply {
            if store_offset(group, slot, pending.committed, pending.sequence, replay) {
                total.applied += 1;
            } else {
                total.discarded += 1;
            }
        }
        if group.pending_offsets.producers.contains_key(&producer_id) {
            still_pending.push(group_id);
        }
    }
    if !still_pending.is_empty() {
        groups.transactions.insert(producer_id, still_pending.into_iter().collect());
    }
    total
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;
    use crate::coordinator::apply_record;
    use crate::records::OffsetKey;

    const PRODUCER: i64 = 7;
    const OTHER_PRODUCER: i64 = 8;

    fn groups() -> Groups {
        Groups {
            groups: HashMap::new(),
            commit_sequence: 0,
            transactions: HashMap::new(),
            unrecorded_drops: BTreeSet::new(),
        }
    }

    fn record(group: &str, partition: i32, offset: i64) -> OffsetRecord {
        let key = OffsetKey { group: group.into(), topic: "t".into(), partition };
        OffsetRecord {
            key,
            value: Some(CommittedOffset { offset, leader_epoch: -1, metadata: None, commit_timestamp_ms: 1 }),
        }
    }

    fn tombstone(group: &str, partition: i32) -> OffsetRecord {
        OffsetRecord { key: OffsetKey { group: group.into(), topic: "t".into(), partition }, value: None }
    }

    /// Takes the next commit sequence, as a write under the lock does.
    fn next(groups: &mut Groups) -> u64 {
        groups.commit_sequence += 1;
        groups.commit_sequence
    }

    fn committed(groups: &Groups, group: &str, partition: i32) -> Option<i64> {
        groups.groups.get(group)?.offsets.get(&("t".to_string(), partition)).map(|stored| stored.committed.offset)
    }

    fn pending(groups: &Groups, group: &str, partition: i32) -> bool {
        groups.groups.get(group).is_some_and(|group| group.pending_offsets.contains_slot("t", partition))
    }

    /// A transactional record queued and made durable, as TxnOffsetCommit does.
    fn txn_commit(groups: &mut Groups, producer_id: i64, record: OffsetRecord) -> u64 {
        let sequence = next(groups);
        let records = [record];
        add_pending(groups, producer_id, &records, sequence, PendingState::Queued, 0);
        resolve_append(groups, producer_id, &records, sequence, true);
        sequence
    }

    fn plain(groups: &mut Groups, record: OffsetRecord) {
        let sequence = next(groups);
        apply_record(groups, record, sequence, 0, false);
    }

    fn marker(groups: &mut Groups, producer_id: i64, commit: bool) -> Completed {
        let sequence = next(groups);
        complete(groups, producer_id, sequence, commit, false)
    }

    #[test]
    fn pending_offsets_are_invisible_until_the_commit_marker() {
        let mut groups = groups();
        plain(&mut groups, record("g", 0, 5));
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        assert_eq!(committed(&groups, "g", 0), Some(5), "the pending offset is not the committed one");
        assert!(pending(&groups, "g", 0), "the partition has a pending offset");
        let completed = marker(&mut groups, PRODUCER, true);
        assert_eq!(completed, Completed { applied: 1, discarded: 0, awaiting_append: 0 });
        assert_eq!(committed(&groups, "g", 0), Some(10), "committed by the marker");
        assert!(!pending(&groups, "g", 0), "nothing pending after the marker");
        assert!(groups.transactions.is_empty(), "the producer index is cleaned");
    }

    #[test]
    fn abort_discards_pending_offsets() {
        let mut groups = groups();
        plain(&mut groups, record("g", 0, 5));
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        txn_commit(&mut groups, PRODUCER, record("g", 1, 11));
        let completed = marker(&mut groups, PRODUCER, false);
        assert_eq!(completed.discarded, 2);
        assert_eq!(committed(&groups, "g", 0), Some(5), "the committed offset stays");
        assert_eq!(committed(&groups, "g", 1), None, "an aborted offset never becomes committed");
        assert!(groups.groups["g"].pending_offsets.is_empty());
    }

    #[test]
    fn a_plain_commit_after_the_transactional_record_wins() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        plain(&mut groups, record("g", 0, 20));
        assert!(pending(&groups, "g", 0), "still pending: RequireStable fetches wait for the marker");
        let completed = marker(&mut groups, PRODUCER, true);
        assert_eq!(completed.applied, 0);
        assert_eq!(completed.discarded, 1, "the transactional offset is older in the log");
        assert_eq!(committed(&groups, "g", 0), Some(20), "log order decides");
    }

    #[test]
    fn a_plain_commit_before_the_transactional_record_loses() {
        let mut groups = groups();
        plain(&mut groups, record("g", 0, 20));
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), Some(10), "the transactional record is later in the log");
    }

    #[test]
    fn a_plain_commit_applied_to_memory_after_the_marker_still_wins_by_log_order() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        // A plain commit queued after the transactional record, applied only after the marker.
        let plain_sequence = next(&mut groups);
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), Some(10));
        apply_record(&mut groups, record("g", 0, 20), plain_sequence, 0, false);
        assert_eq!(committed(&groups, "g", 0), Some(20), "the later record in the log wins");
    }

    #[test]
    fn a_tombstone_after_the_transactional_record_discards_it() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        plain(&mut groups, tombstone("g", 0));
        assert!(!pending(&groups, "g", 0), "the deletion withdrew the pending offset");
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), None, "a commit marker cannot bring back a deleted offset");
    }

    #[test]
    fn offsets_queued_after_the_marker_wait_for_the_next_one() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        let marker_sequence = next(&mut groups);
        txn_commit(&mut groups, PRODUCER, record("g", 1, 11));
        complete(&mut groups, PRODUCER, marker_sequence, true, false);
        assert_eq!(committed(&groups, "g", 0), Some(10));
        assert_eq!(committed(&groups, "g", 1), None, "queued after the marker: the next transaction");
        assert!(pending(&groups, "g", 1));
        assert_eq!(groups.transactions[&PRODUCER].len(), 1, "the group stays indexed for the next marker");
        marker(&mut groups, PRODUCER, false);
        assert_eq!(committed(&groups, "g", 1), None);
        assert!(!pending(&groups, "g", 1));
    }

    #[test]
    fn a_marker_completes_the_producer_in_every_group_and_no_other_producer() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("a", 0, 1));
        txn_commit(&mut groups, PRODUCER, record("b", 0, 2));
        txn_commit(&mut groups, OTHER_PRODUCER, record("a", 1, 3));
        assert_eq!(groups.groups["a"].pending_offsets.producers(), vec![PRODUCER, OTHER_PRODUCER]);
        let completed = marker(&mut groups, PRODUCER, true);
        assert_eq!(completed.applied, 2);
        assert_eq!(committed(&groups, "a", 0), Some(1));
        assert_eq!(committed(&groups, "b", 0), Some(2));
        assert_eq!(committed(&groups, "a", 1), None, "another producer's transaction is still open");
        assert_eq!(groups.groups["a"].pending_offsets.producers(), vec![OTHER_PRODUCER]);
    }

    #[test]
    fn a_marker_without_pending_offsets_changes_nothing() {
        let mut groups = groups();
        plain(&mut groups, record("g", 0, 5));
        assert_eq!(marker(&mut groups, PRODUCER, true), Completed::default());
        assert_eq!(committed(&groups, "g", 0), Some(5));
    }

    #[test]
    fn a_failed_append_leaves_no_pending_offset() {
        let mut groups = groups();
        let sequence = next(&mut groups);
        let records = [record("g", 0, 10)];
        add_pending(&mut groups, PRODUCER, &records, sequence, PendingState::Queued, 0);
        assert!(pending(&groups, "g", 0), "pending from the moment it is queued");
        resolve_append(&mut groups, PRODUCER, &records, sequence, false);
        assert!(!pending(&groups, "g", 0), "a failed append is not pending");
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), None);
    }

    #[test]
    fn a_commit_marker_durable_before_the_record_is_known_durable_applies_it_once_it_is() {
        let mut groups = groups();
        let sequence = next(&mut groups);
        let records = [record("g", 0, 10)];
        add_pending(&mut groups, PRODUCER, &records, sequence, PendingState::Queued, 0);
        let completed = marker(&mut groups, PRODUCER, true);
        assert_eq!(completed.awaiting_append, 1);
        assert_eq!(committed(&groups, "g", 0), None, "not known durable yet");
        resolve_append(&mut groups, PRODUCER, &records, sequence, true);
        assert_eq!(committed(&groups, "g", 0), Some(10), "applied once durable");
        assert!(groups.groups["g"].pending_offsets.is_empty());
    }

    #[test]
    fn an_abort_marker_before_the_append_resolves_discards_it() {
        let mut groups = groups();
        let sequence = next(&mut groups);
        let records = [record("g", 0, 10)];
        add_pending(&mut groups, PRODUCER, &records, sequence, PendingState::Queued, 0);
        marker(&mut groups, PRODUCER, false);
        assert!(groups.groups["g"].pending_offsets.is_empty(), "aborted at once");
        resolve_append(&mut groups, PRODUCER, &records, sequence, true);
        assert_eq!(committed(&groups, "g", 0), None);
        assert!(groups.groups["g"].pending_offsets.is_empty());
    }

    #[test]
    fn a_later_durable_record_of_the_same_partition_replaces_the_earlier_one() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        txn_commit(&mut groups, PRODUCER, record("g", 0, 12));
        assert_eq!(groups.groups["g"].pending_offsets.len(), 1, "one pending record per producer and partition");
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), Some(12));
    }

    #[test]
    fn a_failed_later_append_keeps_the_earlier_durable_record() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        let sequence = next(&mut groups);
        let records = [record("g", 0, 12)];
        add_pending(&mut groups, PRODUCER, &records, sequence, PendingState::Queued, 0);
        resolve_append(&mut groups, PRODUCER, &records, sequence, false);
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), Some(10), "the durable record is the one the log holds");
    }

    #[test]
    fn of_two_producers_the_later_record_in_the_log_wins_whatever_the_marker_order() {
        let mut groups = groups();
        txn_commit(&mut groups, PRODUCER, record("g", 0, 10));
        txn_commit(&mut groups, OTHER_PRODUCER, record("g", 0, 20));
        marker(&mut groups, OTHER_PRODUCER, true);
        marker(&mut groups, PRODUCER, true);
        assert_eq!(committed(&groups, "g", 0), Some(20));
    }
}
