//! [`GroupCoordinator`]: every group of this broker behind one lock, the durable offsets log, and the
//! timer that expires sessions, rebalances and offsets.
//!
//! The lock is never held across an await: a join or sync that must wait parks a oneshot sender in
//! the member and awaits its receiver outside the lock, so one connection waiting for a rebalance
//! never blocks another's requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::config::GroupConfig;
use crate::error::GroupError;
use crate::group::{Group, StoredOffset};
use crate::records::{OffsetKey, OffsetRecord};
use crate::store::OffsetStore;

/// How often sessions and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// What the server knows about a request beyond its body.
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
    pub(crate) commit_sequence: u64,
}

impl Groups {
    pub(crate) fn offsets_total(&self) -> usize {
        self.groups.values().map(|group| group.offsets.len()).sum()
    }
}

pub struct GroupCoordinator {
    pub(crate) config: GroupConfig,
    pub(crate) state: Mutex<Groups>,
    pub(crate) store: OffsetStore,
    /// Set by [`GroupCoordinator::close`]: requests then get COORDINATOR_NOT_AVAILABLE.
    pub(crate) closed: AtomicBool,
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
        let coordinator =
            Arc::new(GroupCoordinator { config, state: Mutex::new(groups), store, closed: AtomicBool::new(false) });
        tokio::spawn(run_timer(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Groups> {
        // Group state is only changed by whole steps under the lock; a panic mid-step is a bug but the
        // maps stay structurally sound, so keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Answers a group API request; `None` for a request that is not a group API (a routing bug).
    pub async fn handle(
        &self,
        request: RequestKind,
        version: i16,
        context: &RequestContext<'_>,
    ) -> Option<ResponseKind> {
        use crate::{api_admin, api_membership, api_offsets};
        Some(match request {
            RequestKind::FindCoordinator(body) => {
                ResponseKind::FindCoordinator(api_membership::find_coordinator(&self.config.node, body, version))
            }
            RequestKind::JoinGroup(body) => {
                ResponseKind::JoinGroup(api_membership::join_group(self, body, version, context).await)
            }
            RequestKind::SyncGroup(body) => {
                ResponseKind::SyncGroup(api_membership::sync_group(self, body, version).await)
            }
            RequestKind::Heartbeat(body) => ResponseKind::Heartbeat(api_membership::heartbeat(self, body)),
            RequestKind::LeaveGroup(body) => ResponseKind::LeaveGroup(api_membership::leave_group(self, body, version)),
            RequestKind::OffsetCommit(body) => {
                ResponseKind::OffsetCommit(api_offsets::offset_commit(self, body, context).await)
            }
            RequestKind::OffsetFetch(body) => ResponseKind::OffsetFetch(api_offsets::offset_fetch(self, body, version)),
            RequestKind::OffsetDelete(body) => ResponseKind::OffsetDelete(api_offsets::offset_delete(self, body).await),
            RequestKind::ListGroups(body) => ResponseKind::ListGroups(api_admin::list_groups(self, body, version)),
            RequestKind::DescribeGroups(body) => {
                ResponseKind::DescribeGroups(api_admin::describe_groups(self, body, version))
            }
            RequestKind::DeleteGroups(body) => ResponseKind::DeleteGroups(api_admin::delete_groups(self, body).await),
            _ => return None,
        })
    }

    /// Appends `records` (queued now, in call order) and, once durable, applies them to memory.
    pub(crate) fn write(
        &self,
        groups: &mut Groups,
        records: Vec<OffsetRecord>,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + '_ {
        let first_sequence = groups.commit_sequence + 1;
        groups.commit_sequence += records.len() as u64;
        let appended = if records.is_empty() { None } else { Some(self.store.append(&records, now_ms())) };
        async move {
            if let Some(appended) = appended {
                appended.await?;
            }
            let mut groups = self.lock();
            let now_ms = now_ms();
            for (index, record) in records.into_iter().enumerate() {
                apply_record(&mut groups, record, first_sequence + index as u64, now_ms, false);
            }
            Ok(())
        }
    }

    /// Stops answering, fails every waiting join and sync, and closes the offsets log cleanly.
    /// The server calls this after the connections have drained.
    // TEMPORARY STUB (wt-txn only; replaced by wip-group at merge).
    pub async fn txn_offset_commit(
        &self,
        _request: kafka_protocol::messages::TxnOffsetCommitRequest,
        _version: i16,
    ) -> kafka_protocol::messages::TxnOffsetCommitResponse {
        todo!()
    }

    // TEMPORARY STUB (wt-txn only; replaced by wip-group at merge).
    pub async fn complete_transaction(
        &self,
        _group: &str,
        _marker: once_partition::TxnMarker,
    ) -> Result<(), GroupError> {
        todo!()
    }

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
        groups.groups.retain(|_, group| !group.is_disposable());
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
                    if offset_expired(group, stored, now_ms, retention_ms) {
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
/// becoming empty and the commit. Shared by the timer and by compaction at open.
pub(crate) fn offset_expired(group: &Group, stored: &StoredOffset, now_ms: i64, retention_ms: i64) -> bool {
    let since = group.empty_since_ms.max(stored.committed.commit_timestamp_ms);
    now_ms.saturating_sub(since) >= retention_ms
}

/// Applies one record to memory, only over an offset written earlier (lower sequence). Known gap: a
/// commit to an empty group racing DeleteGroups of it can re-create the offset in memory while the
/// log ends with its tombstone; a restart then shows the log's (deleted) state.
pub(crate) fn apply_record(groups: &mut Groups, record: OffsetRecord, sequence: u64, now_ms: i64, replay: bool) {
    let OffsetRecord { key, value } = record;
    if !replay && value.is_none() && !groups.groups.contains_key(&key.group) {
        return;
    }
    // A commit re-creates its group if the timer dropped it as empty between validation and now.
    let group = groups.groups.entry(key.group.clone()).or_insert_with(|| Group::new(key.group.clone(), now_ms));
    let slot = (key.topic, key.partition);
    if group.offsets.get(&slot).is_some_and(|stored| stored.sequence > sequence) {
        return;
    }
    match value {
        Some(committed) => {
            if replay {
                group.empty_since_ms = group.empty_since_ms.min(committed.commit_timestamp_ms).max(0);
            }
            group.offsets.insert(slot, StoredOffset { committed, sequence });
        }
        None => {
            group.offsets.remove(&slot);
        }
    }
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
