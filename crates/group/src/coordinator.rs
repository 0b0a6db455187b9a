//! [`GroupCoordinator`]: every group of this broker behind one lock, the durable offsets log, and the
//! timer that expires sessions, rebalances and offsets.
//!
//! The lock is never held across an await: a join or sync that must wait parks a oneshot sender in
//! the member and awaits its receiver outside the lock, so one connection waiting for a rebalance
//! never blocks another's requests.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use once_partition::TxnMarker;

use crate::config::GroupConfig;
use crate::error::GroupError;
use crate::group::{Group, StoredOffset};
use crate::records::{CommittedOffset, GroupRecord, OffsetKey, OffsetRecord, TransactionalProducer};
use crate::store::OffsetStore;
use crate::transactions::{self, PendingState};

/// How often sessions and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// What the server knows about a request beyond its body (protocol-free: the edge fills it).
pub struct RequestContext<'a> {
    pub client_id: &'a str,
    /// The client's address as DescribeGroups reports it (empty when unknown).
    pub client_host: &'a str,
    /// Whether a topic partition exists: offsets are committed only for partitions that do.
    pub partition_exists: &'a (dyn Fn(&str, i32) -> bool + Sync),
}

/// Every group's in-memory state.
pub(crate) struct Groups {
    pub(crate) groups: HashMap<String, Group>,
    /// Orders commits: a commit applies over a stored offset only if it was queued to the log later.
    /// Every record and every transaction marker takes one, in the order they are queued to the log.
    pub(crate) commit_sequence: u64,
    /// Producer id → the groups that may hold its pending transactional offsets, so that a marker
    /// finds them without visiting every group. A superset: a group is dropped from it when the
    /// producer's marker is applied.
    pub(crate) transactions: HashMap<i64, BTreeSet<String>>,
    /// Groups dropped from memory whose group tombstone the log refused (its queue full: `Busy`,
    /// which writes nothing and does not latch the log); the next tick writes it again.
    pub(crate) unrecorded_drops: BTreeSet<String>,
}

impl Groups {
    pub(crate) fn offsets_total(&self) -> usize {
        self.groups.values().map(|group| group.offsets.len()).sum()
    }
}

pub struct GroupCoordinator {
    pub(crate) config: GroupConfig,
    /// Shared with the tasks that apply a write to memory once it is durable (see `apply_when_durable`).
    pub(crate) state: Arc<Mutex<Groups>>,
    pub(crate) store: OffsetStore,
    /// Set by [`GroupCoordinator::close`]: requests then get COORDINATOR_NOT_AVAILABLE.
    pub(crate) closed: AtomicBool,
}

/// Locks the groups. Group state is only changed by whole steps under the lock; a panic mid-step is
/// a bug but the maps stay structurally sound, so keep serving.
fn lock_groups(state: &Mutex<Groups>) -> MutexGuard<'_, Groups> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

impl GroupCoordinator {
    /// Opens the offsets log, replays it (compacting it if mostly dead), and starts the timer. Needs a
    /// tokio runtime; blocking file I/O.
    pub fn open(config: GroupConfig) -> Result<Arc<GroupCoordinator>, GroupError> {
        let (store, groups, _) = crate::load::load(&config, now_ms())?;
        tracing::info!(
            groups = groups.groups.len(),
            offsets = groups.offsets_total(),
            log_bytes = store.size_bytes(),
            "group coordinator loaded"
        );
        let state = Arc::new(Mutex::new(groups));
        let coordinator = Arc::new(GroupCoordinator { config, state, store, closed: AtomicBool::new(false) });
        tokio::spawn(run_timer(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Groups> {
        lock_groups(&self.state)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// TxnOffsetCommit (KIP-447 member checks when `commit.member` is given): appends the offsets as
    /// one transactional batch of the commit's producer and, once durable, holds them as pending
    /// offsets of (group, producer) until [`GroupCoordinator::complete_transaction`]. The broker calls
    /// it after the transaction coordinator confirmed that the group's offsets are part of the
    /// producer's ongoing transaction. A refused request answers every partition with its error.
    pub async fn txn_offset_commit(
        &self,
        commit: crate::api_transactions::TxnOffsetCommit,
    ) -> crate::api_offsets::TopicOutcomes {
        crate::api_transactions::txn_offset_commit(self, commit).await
    }

    /// Writes `marker` to the offsets log and, once it is durable, commits (applies) or aborts
    /// (discards) the producer's pending offsets queued before it. The marker ends the producer's
    /// transaction in the whole offsets log, so it completes the producer's pending offsets of every
    /// group, not only `group_id` (which names the group for the logs): memory then agrees with what
    /// replay makes of the log. Idempotent: without pending offsets the marker is still written.
    pub async fn complete_transaction(&self, group_id: &str, marker: TxnMarker) -> Result<(), GroupError> {
        crate::api_transactions::complete_transaction(self, group_id, marker).await
    }

    /// Producers with pending transactional offsets in the group, ascending (tooling).
    pub fn pending_transactional_producers(&self, group_id: &str) -> Vec<i64> {
        self.lock().groups.get(group_id).map(|group| group.pending_offsets.producers()).unwrap_or_default()
    }

    /// Appends `records` (queued now, in call order) and, once durable, applies them to memory.
    pub(crate) fn write(
        &self,
        groups: &mut Groups,
        records: Vec<OffsetRecord>,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let first_sequence = groups.commit_sequence + 1;
        groups.commit_sequence += records.len() as u64;
        let appended = (!records.is_empty()).then(|| self.store.append(&records, now_ms()));
        self.apply_when_durable(appended, move |groups, durable| {
            if !durable {
                return;
            }
            let now_ms = now_ms();
            for (index, record) in records.into_iter().enumerate() {
                apply_record(groups, record, first_sequence + index as u64, now_ms, false);
            }
        })
    }

    /// Appends transactional `records` of `producer` as one batch (queued now) and holds them as pending
    /// offsets from this moment: RequireStable fetches see them as unstable, and a tombstone queued
    /// later discards them. Once the append ends they are durable pending offsets, or gone if it failed.
    pub(crate) fn write_transactional(
        &self,
        groups: &mut Groups,
        producer: TransactionalProducer,
        records: Vec<OffsetRecord>,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let first_sequence = groups.commit_sequence + 1;
        groups.commit_sequence += records.len() as u64;
        let producer_id = producer.producer_id;
        let appended = (!records.is_empty()).then(|| {
            let now_ms = now_ms();
            transactions::add_pending(groups, producer_id, &records, first_sequence, PendingState::Queued, now_ms);
            self.store.append_transactional(&records, now_ms, producer)
        });
        self.apply_when_durable(appended, move |groups, durable| {
            transactions::resolve_append(groups, producer_id, &records, first_sequence, durable);
        })
    }

    /// Queues `marker` now (taking its place in log order) and, once it is durable, commits or aborts
    /// the producer's pending offsets queued before it.
    pub(crate) fn write_marker(
        &self,
        groups: &mut Groups,
        marker: TxnMarker,
        group_id: String,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        groups.commit_sequence += 1;
        let sequence = groups.commit_sequence;
        let written = self.store.write_marker(marker);
        self.apply_when_durable(Some(written), move |groups, durable| {
            if !durable {
                return;
            }
            let completed = transactions::complete(groups, marker.producer_id, sequence, marker.commit, false);
            tracing::info!(
                group = %group_id,
                producer_id = marker.producer_id,
                producer_epoch = marker.producer_epoch,
                commit = marker.commit,
                applied = completed.applied,
                discarded = completed.discarded,
                awaiting_append = completed.awaiting_append,
                "transaction completed in the offsets log"
            );
        })
    }

    /// Awaits `appended` (if any) and runs `apply` with whether it is durable, under the lock, in a task
    /// of its own: the request's future may be dropped mid-wait (its connection closed), and memory
    /// must still follow the log. Resolves with the append's outcome.
    fn apply_when_durable(
        &self,
        appended: Option<impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static>,
        apply: impl FnOnce(&mut Groups, bool) + Send + 'static,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let task = appended.map(|appended| {
            let state = self.state.clone();
            tokio::spawn(async move {
                let outcome = appended.await;
                apply(&mut lock_groups(&state), outcome.is_ok());
                outcome
            })
        });
        async move {
            match task {
                None => Ok(()),
                Some(task) => task
                    .await
                    .unwrap_or_else(|error| Err(GroupError::Storage(format!("applying an offsets write: {error}")))),
            }
        }
    }

    /// Stops answering, fails every waiting join and sync, and closes the offsets log cleanly.
    /// The server calls this after the connections have drained.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        {
            let mut groups = self.lock();
            for group in groups.groups.values_mut() {
                let member_ids: Vec<String> = group.members.keys().cloned().collect();
                for member_id in member_ids {
                    group.remove_member(&member_id);
                }
            }
        }
        if let Err(error) = self.store.close().await {
            tracing::error!(%error, "closing the offsets log failed");
        }
    }

    fn tick(&self, now: Instant) {
        let now_ms = now_ms();
        let mut groups = self.lock();
        for group in groups.groups.values_mut() {
            group.tick(now, now_ms);
        }
        let mut dropped: Vec<GroupRecord> = groups
            .groups
            .values()
            .filter(|group| group.is_disposable() && group.durable_protocol_type.is_some())
            .map(GroupRecord::tombstone)
            .collect();
        groups.groups.retain(|_, group| !group.is_disposable());
        // A refused tombstone again, unless a group of the same id recorded a type since: its record
        // follows the lost tombstone in the log and replaces the dropped group's type anyway.
        let retried = std::mem::take(&mut groups.unrecorded_drops);
        for group_id in retried {
            let superseded = groups.groups.get(&group_id).is_some_and(|group| group.durable_protocol_type.is_some());
            if !superseded && !dropped.iter().any(|record| record.group == group_id) {
                // Replay reads no generation from a group record.
                dropped.push(GroupRecord { group: group_id, protocol_type: None, generation_id: -1 });
            }
        }
        if !dropped.is_empty() {
            // So that replay drops the group's protocol type where memory did, and a later group of the
            // same id does not inherit it. Nothing waits for it: a crash that loses it loses every record
            // queued after it, so replay finds the group without offsets and drops it anyway. A refused
            // write (the log's queue full: `Busy`) loses it alone, without latching the log: the next
            // tick writes it again (an I/O failure latches the log, and every write fails from then on).
            groups.commit_sequence += dropped.len() as u64;
            let written = self.store.append_groups(&dropped, now_ms);
            let state = Arc::clone(&self.state);
            tokio::spawn(async move {
                if let Err(error) = written.await {
                    tracing::warn!(%error, groups = dropped.len(), "recording dropped groups failed; retried");
                    lock_groups(&state).unrecorded_drops.extend(dropped.into_iter().map(|record| record.group));
                }
            });
        }
    }

    /// Writes tombstones for the offsets of groups that have been empty longer than the retention.
    async fn expire_offsets(&self) {
        let retention_ms = i64::try_from(self.config.offsets_retention_ms()).unwrap_or(i64::MAX);
        let now_ms = now_ms();
        let written = {
            let mut groups = self.lock();
            let mut tombstones = Vec::new();
            for group in groups
                .groups
                .values()
                .filter(|group| group.members.is_empty() && group.state == crate::group::GroupState::Empty)
            {
                for ((topic, partition), stored) in &group.offsets {
                    if offset_expired(group, topic, *partition, stored, now_ms, retention_ms) {
                        tombstones.push(OffsetRecord {
                            key: OffsetKey { group: group.id.clone(), topic: topic.clone(), partition: *partition },
                            value: None,
                        });
                    }
                }
            }
            if tombstones.is_empty() {
                return;
            }
            tracing::info!(offsets = tombstones.len(), "expiring offsets of empty groups");
            self.write(&mut groups, tombstones)
        };
        if let Err(error) = written.await {
            tracing::error!(%error, "expiring offsets failed");
        }
    }
}

/// Whether the offset expires now, in an empty group: retention counts from the later of the group
/// becoming empty and the commit. Never while a transaction holds a pending offset of the partition:
/// should it abort, the committed offset is still the consumer's position. Shared by the timer and
/// by compaction at open.
pub(crate) fn offset_expired(
    group: &Group,
    topic: &str,
    partition: i32,
    stored: &StoredOffset,
    now_ms: i64,
    retention_ms: i64,
) -> bool {
    let since = group.empty_since_ms.max(stored.committed.commit_timestamp_ms);
    now_ms.saturating_sub(since) >= retention_ms && !group.pending_offsets.contains_slot(topic, partition)
}

/// Applies one non-transactional record to memory, only over an offset written earlier (lower
/// sequence). A tombstone also discards the pending transactional offsets of its partition queued
/// before it (`crate::transactions`). Known gap: a commit to an empty group racing DeleteGroups of it
/// can re-create the offset in memory while the log ends with its tombstone; a restart then shows the
/// log's (deleted) state.
pub(crate) fn apply_record(groups: &mut Groups, record: OffsetRecord, sequence: u64, now_ms: i64, replay: bool) {
    let OffsetRecord { key, value } = record;
    if !replay && value.is_none() && !groups.groups.contains_key(&key.group) {
        return;
    }
    // A commit re-creates its group if the timer dropped it as empty between validation and now.
    let group = groups.groups.entry(key.group.clone()).or_insert_with(|| Group::new(key.group.clone(), now_ms));
    let slot = (key.topic, key.partition);
    match value {
        Some(committed) => {
            store_offset(group, slot, committed, sequence, replay);
        }
        None => {
            group.pending_offsets.discard_before(&slot, sequence);
            if group.offsets.get(&slot).is_none_or(|stored| stored.sequence <= sequence) {
                group.offsets.remove(&slot);
            }
        }
    }
}

/// Makes `committed` (written at `sequence`) the group's offset of `slot` unless the stored one was
/// written later in the log. Returns whether it did.
pub(crate) fn store_offset(
    group: &mut Group,
    slot: (String, i32),
    committed: CommittedOffset,
    sequence: u64,
    replay: bool,
) -> bool {
    if group.offsets.get(&slot).is_some_and(|stored| stored.sequence > sequence) {
        return false;
    }
    if replay {
        group.empty_since_ms = group.empty_since_ms.min(committed.commit_timestamp_ms).max(0);
    }
    group.offsets.insert(slot, StoredOffset { committed, sequence });
    true
}

async fn run_timer(coordinator: Weak<GroupCoordinator>) {
    let mut last_expiry = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(coordinator) = coordinator.upgrade() else {
            return;
        };
        if coordinator.is_closed() {
            return;
        }
        let now = Instant::now();
        coordinator.tick(now);
        if now.duration_since(last_expiry)
            >= Duration::from_millis(coordinator.config.offsets_retention_check_interval_ms)
        {
            last_expiry = now;
            coordinator.expire_offsets().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CoordinatorNode;

    /// The timer drops an emptied consumer group without offsets and writes its group tombstone, but
    /// the log's queue is full (`Busy`): nothing is written and the log does not latch. A later tick
    /// must write it, or a later group of the same id that only commits offsets inherits "consumer"
    /// after a restart. A current-thread runtime: the log's writer task cannot drain the queue until
    /// this test yields, so the queue is full exactly when the test says.
    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_drop_tombstone_is_written_by_a_later_tick() {
        let data = tempfile::tempdir().expect("temp dir");
        let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
        let config = GroupConfig { unsafe_skip_fsync: true, ..GroupConfig::new(data.path(), node) };
        let coordinator = GroupCoordinator::open(config.clone()).expect("open");
        let consumer =
            |group: &str| GroupRecord { group: group.into(), protocol_type: Some("consumer".into()), generation_id: 1 };
        coordinator.store.append_groups(&[consumer("g")], now_ms()).await.expect("record the group");
        {
            let mut group = Group::new("g".into(), now_ms());
            group.protocol_type = Some("consumer".into());
            group.durable_protocol_type = Some("consumer".into());
            coordinator.lock().groups.insert("g".into(), group);
        }
        // More appends than the queue holds, all queued before the writer runs; the last are refused.
        let fillers: Vec<_> =
            (0..5000).map(|n| coordinator.store.append_groups(&[consumer(&format!("f{n}"))], now_ms())).collect();
        coordinator.tick(Instant::now());
        assert!(!coordinator.lock().groups.contains_key("g"), "the tick dropped the group");
        let refused = futures_count_errors(fillers).await;
        assert!(refused > 0, "the queue was full");
        // Ticks after the queue drained.
        for _ in 0..5 {
            tokio::time::sleep(TICK).await;
            coordinator.tick(Instant::now());
        }
        let later = OffsetRecord {
            key: OffsetKey { group: "g".into(), topic: "t".into(), partition: 0 },
            value: Some(CommittedOffset { offset: 1, leader_epoch: -1, metadata: None, commit_timestamp_ms: now_ms() }),
        };
        coordinator.store.append(&[later], now_ms()).await.expect("a commit-only group of the same id");
        coordinator.close().await;
        let (store, groups, _) = crate::load::load(&config, now_ms()).expect("load");
        let group = groups.groups.get("g").expect("the commit-only group");
        assert_eq!(group.protocol_type, None, "the dropped group's type is not inherited");
        store.close().await.expect("close");
    }

    async fn futures_count_errors(writes: Vec<impl std::future::Future<Output = Result<(), GroupError>>>) -> usize {
        let mut errors = 0;
        for write in writes {
            if write.await.is_err() {
                errors += 1;
            }
        }
        errors
    }
}
