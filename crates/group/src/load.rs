//! Loading the coordinator's state at open: stream the offsets log into [`Groups`], then compact the
//! log if it is mostly dead records.
//!
//! Compaction keeps exactly what memory holds after replay minus the offsets the timer would expire
//! on its first run (every group is empty after a start, so that is every offset past retention);
//! those are dropped from memory too once the compacted log is in place, so memory and log agree.
//!
//! Transactional records become pending offsets of their producer and markers commit or abort them
//! (`crate::transactions`); a transaction still open at the end of the log stays pending, for the
//! transaction coordinator to complete after the restart, and postpones compaction.

use std::collections::{BTreeSet, HashMap};

use crate::compaction::{self, CompactionDecision};
use crate::config::GroupConfig;
use crate::coordinator::{apply_record, offset_expired, Groups};
use crate::error::GroupError;
use crate::group::Group;
use crate::records::{GroupRecord, LogEntry, OffsetKey, OffsetRecord};
use crate::store::{Compacted, OffsetStore};
use crate::transactions::{self, PendingState};

/// What [`load`] did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// Records and markers replayed, live or not.
    pub(crate) records: u64,
    /// Producers whose transaction is still open at the end of the log (each counted once per group).
    pub(crate) pending_producers: usize,
    pub(crate) decision: CompactionDecision,
    /// `None` when no compaction was attempted.
    pub(crate) compacted: Option<Compacted>,
}

/// Repairs, replays and (if worth it) compacts the offsets log, then starts its writer. Blocking file
/// I/O; needs a tokio runtime.
pub(crate) fn load(config: &GroupConfig, now_ms: i64) -> Result<(OffsetStore, Groups, Loaded), GroupError> {
    let (recovered, repair) = OffsetStore::recover(&config.offsets_dir, config.unsafe_skip_fsync)?;
    let mut groups = Groups {
        groups: HashMap::new(),
        commit_sequence: 0,
        transactions: HashMap::new(),
        unrecorded_drops: BTreeSet::new(),
    };
    let records = recovered.replay(|entry| replay_entry(&mut groups, entry, now_ms))?;
    groups.groups.retain(|_, group| !group.is_disposable());
    let pending_producers: usize = groups.groups.values().map(|group| group.pending_offsets.producers().len()).sum();
    let retention_ms = retention_ms(config);
    let live_count = (live_records(&groups, now_ms, retention_ms).count()
        + group_records(&groups, now_ms, retention_ms).len()) as u64;
    let decision = compaction::decide(
        recovered.size_bytes(),
        records,
        live_count,
        config.offsets_compaction_forced,
        pending_producers > 0,
    );
    tracing::info!(
        ?repair,
        records,
        live = live_count,
        pending_producers,
        log_bytes = recovered.size_bytes(),
        ?decision,
        "offsets log read"
    );
    let (store, compacted) = match decision {
        CompactionDecision::Keep | CompactionDecision::Postponed => (recovered.start()?, None),
        CompactionDecision::Compact | CompactionDecision::Forced => {
            let mut live: Vec<OffsetRecord> = live_records(&groups, now_ms, retention_ms).collect();
            live.sort_by(|left, right| left.key.cmp(&right.key));
            let (store, compacted) = recovered.compact(&live, &group_records(&groups, now_ms, retention_ms), now_ms)?;
            if matches!(compacted, Compacted::Swapped { .. }) {
                drop_expired(&mut groups, now_ms, retention_ms);
            }
            (store, Some(compacted))
        }
    };
    Ok((store, groups, Loaded { records, pending_producers, decision, compacted }))
}

/// Applies one entry of the log to memory; `groups.commit_sequence` numbers entries in log order.
fn replay_entry(groups: &mut Groups, entry: LogEntry, now_ms: i64) {
    groups.commit_sequence += 1;
    let sequence = groups.commit_sequence;
    match entry {
        LogEntry::Offset(record) => {
            let deleted_group = record.value.is_none().then(|| record.key.group.clone());
            apply_record(groups, record, sequence, now_ms, true);
            // Drop a group as soon as nothing is left of it, so replay memory follows live offsets
            // rather than every group the log ever named. Not a group with a recorded protocol type:
            // memory may still hold it with members (OffsetDelete of its last offset, then commits
            // elsewhere, with no new group record); its own tombstone or the end of replay drops it.
            if let Some(group_id) = deleted_group {
                if groups
                    .groups
                    .get(&group_id)
                    .is_some_and(|group| group.is_disposable() && group.durable_protocol_type.is_none())
                {
                    groups.groups.remove(&group_id);
                }
            }
        }
        LogEntry::Transactional { producer, record } => {
            let records = [record];
            transactions::add_pending(groups, producer.producer_id, &records, sequence, PendingState::Durable, now_ms);
        }
        LogEntry::Marker { producer, commit } => {
            transactions::complete(groups, producer.producer_id, sequence, commit, true);
        }
        LogEntry::Group(GroupRecord { group: group_id, protocol_type: None, .. }) => {
            // A tombstone: memory dropped or deleted the group here.
            if let Some(group) = groups.groups.get_mut(&group_id) {
                group.protocol_type = None;
                group.durable_protocol_type = None;
                if group.is_disposable() {
                    groups.groups.remove(&group_id);
                }
            }
        }
        LogEntry::Group(GroupRecord { group: group_id, protocol_type: Some(protocol_type), .. }) => {
            // The group exists from its record on; with no offsets after it, it is dropped at the end
            // of replay as disposable, as it was in memory once it emptied.
            let group = groups.groups.entry(group_id.clone()).or_insert_with(|| Group::new(group_id, now_ms));
            let protocol_type = (!protocol_type.is_empty()).then_some(protocol_type);
            group.protocol_type = protocol_type.clone();
            group.durable_protocol_type = protocol_type;
        }
    }
}

/// The metadata record of every group with a protocol type that outlives the expiry of its offsets
/// (the compaction drops the others from memory, [`drop_expired`]), sorted by group: what compaction
/// keeps.
fn group_records(groups: &Groups, now_ms: i64, retention_ms: i64) -> Vec<GroupRecord> {
    let mut records: Vec<GroupRecord> = groups
        .groups
        .values()
        .filter(|group| !disposable_after_expiry(group, now_ms, retention_ms))
        .filter_map(|group| {
            group.durable_protocol_type.as_ref().map(|protocol_type| GroupRecord {
                group: group.id.clone(),
                protocol_type: Some(protocol_type.clone()),
                generation_id: group.generation_id,
            })
        })
        .collect();
    records.sort_by(|left, right| left.group.cmp(&right.group));
    records
}

fn retention_ms(config: &GroupConfig) -> i64 {
    i64::try_from(config.offsets_retention_ms()).unwrap_or(i64::MAX)
}

/// The latest record of every offset in memory that the timer would not expire now.
fn live_records(groups: &Groups, now_ms: i64, retention_ms: i64) -> impl Iterator<Item = OffsetRecord> + '_ {
    groups.groups.values().flat_map(move |group| {
        group
            .offsets
            .iter()
            .filter(move |((topic, partition), stored)| {
                !offset_expired(group, topic, *partition, stored, now_ms, retention_ms)
            })
            .map(move |((topic, partition), stored)| OffsetRecord {
                key: OffsetKey { group: group.id.clone(), topic: topic.clone(), partition: *partition },
                value: Some(stored.committed.clone()),
            })
    })
}

/// Whether [`drop_expired`] drops `group`: disposable once its expired offsets are gone.
fn disposable_after_expiry(group: &Group, now_ms: i64, retention_ms: i64) -> bool {
    group.state == crate::group::GroupState::Empty
        && group.members.is_empty()
        && group.pending_offsets.is_empty()
        && group.pending_members.is_empty()
        && group
            .offsets
            .iter()
            .all(|((topic, partition), stored)| offset_expired(group, topic, *partition, stored, now_ms, retention_ms))
}

fn drop_expired(groups: &mut Groups, now_ms: i64, retention_ms: i64) {
    for group in groups.groups.values_mut() {
        let expired: Vec<(String, i32)> = group
            .offsets
            .iter()
            .filter(|((topic, partition), stored)| {
                offset_expired(group, topic, *partition, stored, now_ms, retention_ms)
            })
            .map(|(slot, _)| slot.clone())
            .collect();
        for slot in expired {
            group.offsets.remove(&slot);
        }
    }
    groups.groups.retain(|_, group| !group.is_disposable());
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::compaction::{write_compacted, LogPaths};
    use crate::config::CoordinatorNode;
    use crate::records::TransactionalProducer;
    use crate::records::{encode_batch, encode_marker_batch, encode_transactional_batch, CommittedOffset};
    use crate::store::tests::{read_all, read_entries};

    const NOW_MS: i64 = 1_700_000_000_000;
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;

    fn config(data: &Path, forced: bool) -> GroupConfig {
        let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
        GroupConfig { offsets_compaction_forced: forced, ..GroupConfig::new(data, node) }
    }

    fn commit(group: &str, partition: i32, offset: i64, commit_timestamp_ms: i64) -> OffsetRecord {
        let key = OffsetKey { group: group.into(), topic: "t".into(), partition };
        let metadata = Some(format!("m{offset}"));
        OffsetRecord { key, value: Some(CommittedOffset { offset, leader_epoch: 3, metadata, commit_timestamp_ms }) }
    }

    fn tombstone(group: &str, partition: i32) -> OffsetRecord {
        OffsetRecord { key: OffsetKey { group: group.into(), topic: "t".into(), partition }, value: None }
    }

    /// 200 overwrites of four offsets of group `a`, one of them deleted, one committed to `b` and
    /// deleted with its group: 4 live records out of 203 (none expired).
    fn history() -> Vec<OffsetRecord> {
        let mut records = Vec::new();
        for round in 0..50 {
            for partition in 0..4 {
                records.push(commit("a", partition, round * 10 + i64::from(partition), NOW_MS - DAY_MS + round));
            }
        }
        records.push(tombstone("a", 3));
        records.push(commit("b", 0, 5, NOW_MS - DAY_MS));
        records.push(tombstone("b", 0));
        records
    }

    /// What memory must hold after any open of `history()`.
    fn expected() -> BTreeMap<OffsetKey, CommittedOffset> {
        (0..3)
            .map(|partition| commit("a", partition, 490 + i64::from(partition), NOW_MS - DAY_MS + 49))
            .map(|record| (record.key, record.value.expect("a commit")))
            .collect()
    }

    fn state(groups: &Groups) -> BTreeMap<OffsetKey, CommittedOffset> {
        let mut state = BTreeMap::new();
        for group in groups.groups.values() {
            for ((topic, partition), stored) in &group.offsets {
                let key = OffsetKey { group: group.id.clone(), topic: topic.clone(), partition: *partition };
                state.insert(key, stored.committed.clone());
            }
        }
        state
    }

    /// Writes `records` through the partition writer (ten per batch) into the log at `dir`.
    async fn write_log(dir: &Path, records: &[OffsetRecord]) {
        let (recovered, _) = OffsetStore::recover(dir, false).expect("recover");
        recovered.replay(|_| ()).expect("replay");
        let store = recovered.start().expect("start");
        for chunk in records.chunks(10) {
            store.append(chunk, NOW_MS).await.expect("append");
        }
        store.close().await.expect("close");
    }

    fn entries(parent: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(parent)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Opens like the coordinator does (not forced) and checks the state and the directory.
    async fn open_and_check(data: &Path) -> Loaded {
        let config = config(data, false);
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load");
        assert_eq!(state(&groups), expected(), "the offsets after open");
        store.close().await.expect("close");
        let parent = config.offsets_dir.parent().expect("parent").to_path_buf();
        assert_eq!(entries(&parent), vec!["0".to_string()], "only the log is left");
        loaded
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overwrites_compact_to_live_records_and_replay_to_the_same_state() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), true);
        write_log(&config.offsets_dir, &history()).await;
        let before = {
            let (store, groups, loaded) =
                load(&GroupConfig { offsets_compaction_forced: false, ..config.clone() }, NOW_MS)
                    .expect("load without compaction");
            assert_eq!(loaded.decision, CompactionDecision::Keep, "a small log is kept");
            store.close().await.expect("close");
            state(&groups)
        };
        assert_eq!(before, expected());
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load with compaction");
        assert_eq!(loaded.records, history().len() as u64);
        assert!(matches!(loaded.compacted, Some(Compacted::Swapped { .. })), "compacted: {loaded:?}");
        assert_eq!(state(&groups), before, "compaction does not change memory");
        store.close().await.expect("close");
        let live: Vec<OffsetRecord> =
            expected().into_iter().map(|(key, value)| OffsetRecord { key, value: Some(value) }).collect();
        assert_eq!(read_all(&config.offsets_dir), live, "the log holds the live records only, in key order");
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, 3, "the next open replays only the live records");
    }

    fn protocol_types(groups: &Groups) -> BTreeMap<String, Option<String>> {
        groups.groups.values().map(|group| (group.id.clone(), group.protocol_type.clone())).collect()
    }

    /// Group `a` (offsets) and `c` (no offsets) were consumer groups; `b` was deleted. After replay
    /// and after a forced compaction, `a` is still a consumer group, `c` is gone as in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn protocol_types_survive_replay_and_compaction() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), true);
        {
            let (recovered, _) = OffsetStore::recover(&config.offsets_dir, false).expect("recover");
            recovered.replay(|_| ()).expect("replay");
            let store = recovered.start().expect("start");
            let group = |name: &str| GroupRecord {
                group: name.into(),
                protocol_type: Some("consumer".into()),
                generation_id: 1,
            };
            store.append_groups(&[group("a"), group("b"), group("c")], NOW_MS).await.expect("append groups");
            store.append(&history(), NOW_MS).await.expect("append offsets");
            store.close().await.expect("close");
        }
        let expected_types = BTreeMap::from([("a".to_string(), Some("consumer".to_string()))]);
        let (store, groups, loaded) =
            load(&GroupConfig { offsets_compaction_forced: false, ..config.clone() }, NOW_MS).expect("load");
        assert_eq!(loaded.decision, CompactionDecision::Keep);
        assert_eq!(protocol_types(&groups), expected_types, "after replay");
        store.close().await.expect("close");
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load with compaction");
        assert!(matches!(loaded.compacted, Some(Compacted::Swapped { .. })), "compacted: {loaded:?}");
        assert_eq!(protocol_types(&groups), expected_types, "after compaction");
        store.close().await.expect("close");
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load the compacted log");
        assert_eq!(loaded.records, 4, "three offsets and the group record of `a`");
        assert_eq!(protocol_types(&groups), expected_types, "after replaying the compacted log");
        assert_eq!(state(&groups), expected());
        store.close().await.expect("close");
    }

    /// A group dropped (tombstone) and later used only to commit offsets has no protocol type after
    /// replay, as in memory; without the tombstone it would inherit the dropped group's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_tombstone_ends_the_protocol_type() {
        for (tombstoned, expected) in [(true, None), (false, Some("consumer".to_string()))] {
            let data = tempfile::tempdir().expect("temp dir");
            let config = config(data.path(), false);
            let (recovered, _) = OffsetStore::recover(&config.offsets_dir, false).expect("recover");
            recovered.replay(|_| ()).expect("replay");
            let store = recovered.start().expect("start");
            let record = GroupRecord { group: "c".into(), protocol_type: Some("consumer".into()), generation_id: 1 };
            store.append_groups(&[record], NOW_MS).await.expect("append group");
            if tombstoned {
                let tombstone = GroupRecord { group: "c".into(), protocol_type: None, generation_id: 1 };
                store.append_groups(&[tombstone], NOW_MS).await.expect("append tombstone");
            }
            store.append(&[commit("c", 0, 5, NOW_MS)], NOW_MS).await.expect("append offset");
            store.close().await.expect("close");
            let (store, groups, _) = load(&config, NOW_MS).expect("load");
            assert_eq!(
                protocol_types(&groups),
                BTreeMap::from([("c".to_string(), expected)]),
                "tombstoned: {tombstoned}"
            );
            store.close().await.expect("close");
        }
    }

    /// Appends `groups` then `offsets` to the log of `config` through the partition writer.
    async fn append(config: &GroupConfig, groups: &[GroupRecord], offsets: &[OffsetRecord]) {
        let (recovered, _) = OffsetStore::recover(&config.offsets_dir, false).expect("recover");
        recovered.replay(|_| ()).expect("replay");
        let store = recovered.start().expect("start");
        if !groups.is_empty() {
            store.append_groups(groups, NOW_MS).await.expect("append groups");
        }
        for record in offsets {
            store.append(std::slice::from_ref(record), NOW_MS).await.expect("append offset");
        }
        store.close().await.expect("close");
    }

    fn consumer_group(group: &str) -> GroupRecord {
        GroupRecord { group: group.into(), protocol_type: Some("consumer".into()), generation_id: 1 }
    }

    /// A consumer group whose offsets all expired is dropped by the compaction that expires them, and
    /// its group record must go with it: otherwise a later group of the same id that only commits
    /// offsets inherits "consumer" after a restart, which memory never gave it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_drops_the_record_of_a_group_whose_offsets_expired() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), true);
        let retention_ms = retention_ms(&config);
        append(&config, &[consumer_group("g")], &[commit("g", 0, 9, NOW_MS - retention_ms - 1)]).await;
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load with compaction");
        assert!(matches!(loaded.compacted, Some(Compacted::Swapped { .. })), "compacted: {loaded:?}");
        assert!(protocol_types(&groups).is_empty(), "the expired group left memory");
        store.close().await.expect("close");
        // The same id, now used only to commit offsets.
        append(&config, &[], &[commit("g", 1, 5, NOW_MS)]).await;
        let (store, groups, _) =
            load(&GroupConfig { offsets_compaction_forced: false, ..config }, NOW_MS).expect("load");
        assert_eq!(protocol_types(&groups), BTreeMap::from([("g".to_string(), None)]), "no inherited type");
        store.close().await.expect("close");
    }

    /// OffsetDelete of the last offset of a live consumer group, then commits on other partitions: in
    /// memory the group (with members) kept its type, and no new group record was written. Replay
    /// must not drop the group, type included, at the tombstone that briefly leaves it without
    /// offsets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offset_tombstone_does_not_drop_a_typed_group_mid_replay() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), false);
        let offsets = [commit("c", 0, 1, NOW_MS), tombstone("c", 0), commit("c", 1, 2, NOW_MS)];
        append(&config, &[consumer_group("c")], &offsets).await;
        let (store, groups, _) = load(&config, NOW_MS).expect("load");
        assert_eq!(protocol_types(&groups), BTreeMap::from([("c".to_string(), Some("consumer".to_string()))]));
        assert_eq!(offset_of(&groups, "c", 1), Some(2));
        store.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_drops_tombstones_and_expired_offsets() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), true);
        let retention_ms = retention_ms(&config);
        let mut records = history();
        records.push(commit("old", 0, 9, NOW_MS - retention_ms));
        records.push(commit("a", 7, 9, NOW_MS - retention_ms - 1));
        write_log(&config.offsets_dir, &records).await;
        let (store, groups, _) = load(&config, NOW_MS).expect("load with compaction");
        assert_eq!(state(&groups), expected(), "expired offsets left memory with the compaction");
        store.close().await.expect("close");
        let stored = read_all(&config.offsets_dir);
        assert!(stored.iter().all(|record| record.value.is_some()), "no tombstones survive");
        assert_eq!(stored.len(), 3, "no expired offsets survive: {stored:?}");
    }

    /// The old log at `0` and a complete compacted copy in `0.compacting`: the state between steps 1
    /// and 2 of the swap.
    async fn prepare(data: &Path) -> LogPaths {
        let config = config(data, false);
        write_log(&config.offsets_dir, &history()).await;
        let paths = LogPaths::new(&config.offsets_dir).expect("paths");
        let live: Vec<OffsetRecord> =
            expected().into_iter().map(|(key, value)| OffsetRecord { key, value: Some(value) }).collect();
        write_compacted(&paths, &log_config_for_tests(), &live, &[], NOW_MS).expect("write compacted");
        paths
    }

    fn log_config_for_tests() -> once_log::LogConfig {
        once_log::LogConfig { retention_ms: None, segment_ms_max: None, ..once_log::LogConfig::default() }
    }

    fn rename(from: &Path, to: &Path) {
        std::fs::rename(from, to).expect("rename");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_while_writing_the_compacted_log_keeps_the_old_log() {
        let data = tempfile::tempdir().expect("temp dir");
        let paths = prepare(data.path()).await;
        // Torn: the marker never written and the segment cut mid-batch.
        std::fs::remove_file(paths.compacting.join("clean-shutdown")).expect("remove marker");
        let segment = paths.compacting.join(format!("{:020}.log", 0));
        let length = std::fs::metadata(&segment).expect("segment").len();
        std::fs::OpenOptions::new().write(true).open(&segment).expect("open").set_len(length / 2).expect("cut");
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, history().len() as u64, "the old log is the one kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_before_the_first_rename_keeps_the_old_log() {
        let data = tempfile::tempdir().expect("temp dir");
        prepare(data.path()).await;
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, history().len() as u64, "the old log is the one kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_between_the_renames_rolls_back() {
        let data = tempfile::tempdir().expect("temp dir");
        let paths = prepare(data.path()).await;
        rename(&paths.live, &paths.old);
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, history().len() as u64, "the old log is renamed back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_log_alone_is_renamed_back() {
        let data = tempfile::tempdir().expect("temp dir");
        let paths = prepare(data.path()).await;
        rename(&paths.live, &paths.old);
        std::fs::remove_dir_all(&paths.compacting).expect("lose the new directory");
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, history().len() as u64, "the old log is renamed back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_after_the_second_rename_keeps_the_new_log() {
        let data = tempfile::tempdir().expect("temp dir");
        let paths = prepare(data.path()).await;
        rename(&paths.live, &paths.old);
        rename(&paths.compacting, &paths.live);
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, 3, "the compacted log is the one kept");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_while_deleting_the_old_log_keeps_the_new_log() {
        let data = tempfile::tempdir().expect("temp dir");
        let paths = prepare(data.path()).await;
        rename(&paths.live, &paths.old);
        rename(&paths.compacting, &paths.live);
        std::fs::remove_file(paths.old.join(format!("{:020}.log", 0))).expect("delete part of the old log");
        let loaded = open_and_check(data.path()).await;
        assert_eq!(loaded.records, 3, "the compacted log is the one kept");
    }

    /// One batch of a log written without the partition writer (which cannot write markers by itself
    /// in these tests): the records and markers a transaction leaves.
    enum Written {
        Plain(OffsetRecord),
        Transactional(i64, Vec<OffsetRecord>),
        Marker(i64, bool),
    }

    fn producer(producer_id: i64) -> TransactionalProducer {
        TransactionalProducer { producer_id, producer_epoch: 0 }
    }

    fn write_raw_log(dir: &Path, written: Vec<Written>) {
        let mut log = once_log::Log::open(dir, log_config_for_tests()).expect("open the log");
        for batch in written {
            let mut bytes = match batch {
                Written::Plain(record) => encode_batch(&[record], NOW_MS).expect("encode"),
                Written::Transactional(producer_id, records) => {
                    encode_transactional_batch(&records, NOW_MS, producer(producer_id)).expect("encode")
                }
                Written::Marker(producer_id, commit) => encode_marker_batch(producer(producer_id), commit, NOW_MS),
            };
            log.append(&mut bytes, NOW_MS).expect("append");
        }
        log.close().expect("close");
    }

    fn offset_of(groups: &Groups, group: &str, partition: i32) -> Option<i64> {
        groups.groups.get(group)?.offsets.get(&("t".to_string(), partition)).map(|stored| stored.committed.offset)
    }

    /// Every transaction outcome in one log: producer 1 commits, 2 aborts, 3 stays open (in two
    /// groups), 4 commits under a later plain commit, 5 commits under a later tombstone.
    fn transactions_log() -> Vec<Written> {
        use Written::*;
        let at = |group: &str, partition: i32, offset: i64| commit(group, partition, offset, NOW_MS);
        vec![
            Plain(at("g", 0, 5)),
            Plain(at("g", 1, 6)),
            Plain(at("g", 2, 7)),
            Transactional(1, vec![at("g", 0, 10)]),
            Transactional(2, vec![at("g", 1, 11)]),
            Transactional(3, vec![at("g", 2, 12), at("h", 0, 1)]),
            Transactional(4, vec![at("g", 3, 30)]),
            Plain(at("g", 3, 40)),
            Transactional(5, vec![at("g", 4, 50)]),
            Plain(tombstone("g", 4)),
            Marker(1, true),
            Marker(2, false),
            Marker(4, true),
            Marker(5, true),
            Transactional(1, vec![at("g", 5, 60)]),
        ]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_commits_aborts_and_keeps_open_transactions_pending() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), false);
        write_raw_log(&config.offsets_dir, transactions_log());
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load");
        store.close().await.expect("close");
        assert_eq!(offset_of(&groups, "g", 0), Some(10), "committed by its marker");
        assert_eq!(offset_of(&groups, "g", 1), Some(6), "aborted: the earlier commit stays");
        assert_eq!(offset_of(&groups, "g", 2), Some(7), "open: the earlier commit stays");
        assert_eq!(offset_of(&groups, "g", 3), Some(40), "the plain commit after the transactional record wins");
        assert_eq!(offset_of(&groups, "g", 4), None, "the tombstone after the transactional record wins");
        assert_eq!(offset_of(&groups, "g", 5), None, "producer 1's next transaction is open");
        let g = &groups.groups["g"];
        assert_eq!(g.pending_offsets.producers(), vec![1, 3], "open transactions stay pending");
        assert!(g.pending_offsets.contains_slot("t", 2));
        assert!(g.pending_offsets.contains_slot("t", 5));
        assert!(!g.pending_offsets.contains_slot("t", 0), "completed transactions leave nothing pending");
        let h = groups.groups.get("h").expect("a group with only pending offsets is kept");
        assert!(h.offsets.is_empty());
        assert_eq!(h.pending_offsets.producers(), vec![3]);
        assert_eq!(loaded.pending_producers, 3, "producer 3 in g and h, producer 1 in g");
        assert_eq!(groups.transactions[&3].len(), 2, "producer 3 is indexed in both groups for its marker");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_transactions_postpone_even_a_forced_compaction() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), true);
        write_raw_log(&config.offsets_dir, transactions_log());
        let before = read_entries(&config.offsets_dir);
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load");
        store.close().await.expect("close");
        assert_eq!(loaded.decision, CompactionDecision::Postponed);
        assert_eq!(loaded.compacted, None, "nothing rewritten");
        assert_eq!(read_entries(&config.offsets_dir), before, "the log is as it was");
        assert_eq!(groups.groups["g"].pending_offsets.producers(), vec![1, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn completed_transactions_compact_into_plain_commits() {
        let data = tempfile::tempdir().expect("temp dir");
        let config = config(data.path(), true);
        let mut written = transactions_log();
        written.push(Written::Marker(1, false));
        written.push(Written::Marker(3, true));
        write_raw_log(&config.offsets_dir, written);
        let (store, groups, loaded) = load(&config, NOW_MS).expect("load");
        store.close().await.expect("close");
        assert_eq!(loaded.decision, CompactionDecision::Forced);
        assert!(groups.groups.values().all(|group| group.pending_offsets.is_empty()));
        let entries = read_entries(&config.offsets_dir);
        assert!(entries.iter().all(|entry| matches!(entry, LogEntry::Offset(_))), "only plain records: {entries:?}");
        let (store, reopened, _) = load(&config, NOW_MS).expect("reopen");
        store.close().await.expect("close");
        assert_eq!(state(&reopened), state(&groups), "the compacted log replays to the same offsets");
        assert_eq!(offset_of(&reopened, "g", 2), Some(12), "producer 3 committed");
        assert_eq!(offset_of(&reopened, "h", 0), Some(1));
        assert_eq!(offset_of(&reopened, "g", 5), None, "producer 1's second transaction aborted");
    }
}
