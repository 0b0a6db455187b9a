//! Message-id deduplication at the partition writers (`docs/design/dedup.md`).
//!
//! A topic whose `dedup.source` is not `none` has one [`TopicDedup`]: the topic's [`DedupIndex`]
//! behind a mutex, shared by the writers of all its partitions, so an id stored in one partition
//! deduplicates a record sent to another. A writer handles a data batch in three steps, the
//! `once-dedup` write protocol:
//!
//! 1. [`TopicDedup::prepare`], in the round, before the append: extract the ids, look them up in the
//!    sealed chunks without the index's lock (a `SealedView`), and reserve them under it. The first
//!    two are most often done already, as the batch was queued ([`TopicDedup::look_ahead`]).
//!    If any is held by another producer's open transaction or a write not yet durable, the
//!    reservation is released and the batch refused with a retriable error. Otherwise the
//!    duplicates are dropped from the batch (offsets kept, down to a header-only batch) and the
//!    result is appended.
//! 2. The round's fdatasync.
//! 3. [`TopicDedup::apply`] of the round's [`Effect`]s, in log order: `confirm` (the ids become
//!    live, or held by their transaction until its marker) and `end_transaction` for markers. If
//!    the append or the sync failed, the reservations stay held until a restart (see
//!    [`TopicDedup::abandon`]).
//!
//! At open, [`TopicDedup::rebuild`] replays each partition's log from the index's covered offset
//! (submodule `replay`): every stored batch goes through `reserve` and then the same [`Effect`] as
//! on the live path. A replay error other than a full index fails the rebuild: the topic then
//! refuses produces with a storage error until a restart replays the whole logs.
//!
//! The index keeps at most its memory budget in RAM: past it, sealed chunks move to checksummed
//! files in `<topic>/dedup-chunks/` (`once-dedup`'s `spill`), oldest first. The writer whose round
//! crossed the budget moves them after answering ([`TopicDedup::after_round`]), and the
//! broker's upkeep compacts and merges the files ([`TopicDedup::maintain_disk`]); either way the
//! file I/O runs without the index's lock, which is taken only to pick the work and to swap the
//! new chunk in.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use once_dedup::{
    chunk_dir, extract_valid_record_ids, filter_valid_batch, Decision, DedupError, DedupIndex, DedupSource,
    DedupWindow, ExpireStats, Id, IdScheme, IndexConfig, LookedUp, RecordId, Reservation, SnapshotStats,
    MAX_IDS_ON_DISK_DEFAULT,
};
use once_log::{LogError, ValidBatch};

use crate::error::PartitionError;
use crate::partition::{OffsetAnswer, Partition};

mod replay;

use self::replay::replay_partition;

/// A snapshot is due once this many ids changed since the last one (and enough more for the ids it
/// writes: see [`snapshot_due`]), so a restart replays a bounded tail while a large index is not
/// rewritten often.
const SNAPSHOT_CHANGES_MIN: u64 = 100_000;
/// With chunk files, a snapshot is due once this many ids changed, however many it writes: the tail a
/// restart replays stays about this long (plus what changes while the snapshot is written), about
/// half a second of replay on the 2-core machine of docs/benchmarks.md. (Without chunk files every
/// snapshot writes every id, so it waits for changes in proportion.)
const SNAPSHOT_CHANGES_MAX: u64 = 250_000;
/// With chunk files: ids a snapshot writes (those without a file: the active chunk's, which every
/// snapshot writes whole, and those sealed since the last one) per id changed since the last one, at
/// most, up to `SNAPSHOT_CHANGES_MAX`. The active chunk holds on average half of its 458,752 ids at
/// 10 M ids and beyond; with 2, a snapshot waits for about as many changes, so each changed id is
/// written about once inline and once to its sealed chunk's file.
const SNAPSHOT_WRITTEN_PER_CHANGE_MAX: u64 = 2;
/// Without chunk files (an index kept in RAM only): every snapshot writes every stored id, and is
/// due once a quarter as many changed.
const SNAPSHOT_WRITTEN_PER_CHANGE_INLINE_MAX: u64 = 4;
/// A snapshot is also due this long after the last one if anything changed or a retired chunk file
/// waits for it (only a snapshot that no longer refers to a retired file deletes it).
const SNAPSHOT_INTERVAL_MAX: Duration = Duration::from_secs(600);
/// A snapshot is due at once when this many retired chunk files wait (each up to about 270 MB)...
const SNAPSHOT_RETIRED_FILES_MIN: usize = 4;
/// ... holding at least 1 / this of the ids the index stores.
const SNAPSHOT_RETIRED_SHARE: u64 = 4;
/// After a failed snapshot write, the next waits this long, doubling with each failure in a row...
const SNAPSHOT_RETRY_MIN: Duration = Duration::from_secs(1);
/// ... up to this.
const SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(60);
/// After this many ids were inserted, chunks are merged once the round that crosses it is answered
/// (`TopicDedup::after_round`), so a lookup keeps probing about 16 to 32 resident chunks at any insert rate.
const MERGE_EVERY_IDS: u64 = 1 << 16;
/// Most passes of seal-and-merge one background task makes (`TopicDedup::after_round`).
const BACKGROUND_PASSES_MAX: usize = 4;

/// Wait after a failed rebuild of a topic filter, doubled per failure in a row up to the most.
const FILTER_RETRY_MIN: Duration = Duration::from_secs(60);
const FILTER_RETRY_MAX: Duration = Duration::from_secs(3600);
/// Ids a merge in RAM may rewrite per id inserted since the last one: merging to 1/16 of the stored
/// ids rewrites each id a few times over its life.
const MERGE_WORK_PER_ID: u64 = 8;
/// Default bytes of RAM one topic's index may hold before sealed chunks move to disk
/// (`once serve --dedup-memory-bytes`): about 37 M ids in RAM.
pub const DEDUP_MEMORY_BYTES_DEFAULT: usize = 1 << 30;

/// A topic's message-id index and what maintains it; shared by the topic's partitions.
pub struct TopicDedup {
    topic: String,
    source: DedupSource,
    /// How ids are hashed: the index's [`IdScheme`], fixed at open (an index that replaces it takes
    /// its config, so its scheme), so batches can be hashed without the lock.
    ids: IdScheme,
    snapshot_path: PathBuf,
    /// Bytes of RAM the index may hold before sealed chunks move to disk.
    memory_bytes: usize,
    state: Mutex<State>,
    /// Held while a snapshot is written (outside `state`), so two never interleave and a deleted
    /// topic's directory never receives one: `close` waits for it.
    snapshot_writer: Mutex<()>,
    /// Held while disk steps run (their file I/O is outside `state`), so a deleted topic's directory
    /// never receives a chunk file from a step that was running: `close` waits for it. Writers and
    /// the upkeep only try it (one step is out at a time anyway).
    disk_worker: Mutex<()>,
    /// Held while a thread rewrites chunks in RAM ([`TopicDedup::rewrite`]): one at a time (the
    /// index hands out one rewrite at a time anyway). A seal-and-merge task waits for it; the
    /// upkeep only tries it, and when it is taken drops only whole dead chunks.
    rewriter: Mutex<()>,
    /// A seal or merge task of [`TopicDedup::after_round`] is out.
    background: AtomicBool,
    /// Records of the batches looked up ahead and not yet staged ([`TopicDedup::look_ahead`]), at
    /// most [`LOOK_AHEAD_RECORDS_MAX`].
    ahead_records: Arc<AtomicUsize>,
}

struct State {
    index: DedupIndex,
    /// Set when the topic is deleted: its directory goes, so no snapshot may be written into it.
    closed: bool,
    /// Ids confirmed or resolved by markers since the last snapshot.
    changes_since_snapshot: u64,
    /// Ids confirmed or resolved since the last merge (`expire`) the writers ran.
    changes_since_merge: u64,
    /// The index was loaded from a snapshot at open.
    from_snapshot: bool,
    /// Topic filter rebuilds that failed in a row, and when the next may start: each failure doubles
    /// the wait (1 min to 1 h), so a chunk file that cannot be read is not read in full every second.
    filter_failures: u32,
    filter_retry_at: Option<Instant>,
    /// The rebuild at open failed (a chunk page unreadable or damaged, say): the index does not
    /// reflect the logs, so every batch is refused with a storage error and no snapshot is written
    /// until a restart rebuilds it from the whole logs (the snapshot was deleted).
    failed: Option<String>,
    /// The snapshot file was not used (unloadable) and could not be deleted at open: kept, a later
    /// start could load it, so [`TopicDedup::rebuild`] fails the topic's open with this.
    undeletable_snapshot: Option<String>,
    /// How long loading the snapshot took at open.
    load_time: Duration,
    last_snapshot: Instant,
    /// Snapshot writes that failed in a row, and when the next may start: each failure doubles the
    /// wait (1 s to 1 min), so a full or failing disk is not rewritten to ten times a second.
    snapshot_failures: u32,
    snapshot_retry_at: Option<Instant>,
}

/// What the index holds, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupStats {
    /// Ids stored: live, or expired and not yet freed.
    pub stored_ids: u64,
    /// Ids reserved by writes in flight or held by open transactions.
    pub pending_ids: u64,
    /// Heap bytes of the index.
    pub index_bytes: u64,
    /// Sealed chunks a lookup may probe.
    pub sealed_chunks: u64,
    /// Sealed chunks whose entries are on disk (their filters stay in RAM).
    pub disk_chunks: u64,
    /// Ids stored in chunks on disk.
    pub disk_ids: u64,
    /// Bytes of RAM the chunks on disk hold (their filters and fences), part of `index_bytes`.
    pub disk_chunk_bytes: u64,
    /// The memory budget past which sealed chunks move to disk (0 if the index cannot use the disk).
    pub memory_budget_bytes: u64,
}

/// What replaying the logs into the index did at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildStats {
    /// The snapshot was loaded (otherwise the index was rebuilt from the whole retained logs).
    pub from_snapshot: bool,
    /// Batches read from the logs.
    pub batches: u64,
    /// Records with an id among them.
    pub ids: u64,
    /// The replay failed: the topic refuses writes until a restart (see the log for why).
    pub failed: bool,
}

/// A data batch's reservation, from `prepare` until its round is durable.
pub(crate) struct Reserved {
    reservation: Reservation,
    /// Offset delta of every record given to `reserve`, dropped ones included.
    offset_deltas: Vec<i32>,
    /// The batch's max timestamp: the window is measured from it.
    timestamp_ms: i64,
}

/// What a prepared batch becomes.
pub(crate) struct Prepared {
    pub(crate) reserved: Reserved,
    /// The batch without its duplicates, if any were dropped (the original is appended otherwise).
    pub(crate) filtered: Option<ValidBatch>,
    /// What the produce answer will report as base offset.
    pub(crate) answer: OffsetAnswer,
    /// Records dropped as duplicates.
    pub(crate) dropped: u32,
}

/// Largest batch whose ids are looked up before the writer ([`TopicDedup::look_ahead`]): the work runs
/// on an async task, so a batch that could take long to hash is left to the writer's round, which
/// runs on a blocking thread.
const LOOK_AHEAD_BYTES_MAX: usize = 1 << 20;

/// A batch is looked up ahead only if at most one id in this many passes the topic filter (see
/// [`TopicDedup::look_ahead`]): most often a batch of new ids, where none or a few pass.
const LOOK_AHEAD_PASSING_SHARE: usize = 8;

/// A data batch's ids, extracted as it was queued and, unless many were likely stored already,
/// looked up in the sealed chunks ([`TopicDedup::look_ahead`]), for its round's
/// [`TopicDedup::prepare`].
pub(crate) struct LookedAhead {
    ids: Vec<Option<Id>>,
    /// Offset delta of every record.
    offset_deltas: Vec<i32>,
    looked_up: Option<LookedUp>,
    /// Counts the batch's records among those looked up ahead until it is staged or dropped.
    _counted: AheadCount,
}

/// Records looked up ahead and not yet staged, at most: about 60 bytes each (ids, offset deltas and
/// lookup slots), so about 16 MB per topic, whatever waits in its partitions' queues (bounded in
/// commands, not bytes) while a disk stalls. Past it, batches are left to their rounds.
const LOOK_AHEAD_RECORDS_MAX: usize = if cfg!(test) { 1_000 } else { 1 << 18 };

/// A batch's share of [`LOOK_AHEAD_RECORDS_MAX`], given back when it is dropped.
struct AheadCount {
    records: usize,
    total: Arc<AtomicUsize>,
}

impl AheadCount {
    /// Counts `records` more among those looked up ahead, unless that would pass the bound.
    fn take(total: &Arc<AtomicUsize>, records: usize) -> Option<AheadCount> {
        let counted = total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            now.checked_add(records).filter(|after| *after <= LOOK_AHEAD_RECORDS_MAX)
        });
        counted.ok().map(|_| AheadCount { records, total: Arc::clone(total) })
    }
}

impl Drop for AheadCount {
    fn drop(&mut self) {
        let before = self.total.fetch_sub(self.records, Ordering::AcqRel);
        assert!(before >= self.records, "records looked up ahead are given back once");
    }
}

/// A batch's extracted records as the index takes them, in record order: each record's id (`None`
/// for one without) and its offset delta. Live (ahead or in the round) and in replay alike.
fn ids_and_deltas(records: &[RecordId]) -> (Vec<Option<Id>>, Vec<i32>) {
    records.iter().map(|record| (record.id, record.offset_delta)).unzip()
}

/// What the index learns from one write, once the write is durable (live) or read back (replay).
pub(crate) enum Effect {
    /// A data batch stored at `base_offset..=last_offset` (its header's span).
    Write { reserved: Reserved, base_offset: u64, last_offset: u64 },
    /// A transaction marker (or another control batch, `end` `None`) at `offset`.
    Control { end: Option<(i64, bool)>, offset: u64 },
}

impl TopicDedup {
    /// The index of `topic`: loaded from the snapshot at `snapshot_path` if it is usable (with the
    /// chunk files it refers to), else empty (then [`TopicDedup::rebuild`] replays the whole
    /// retained logs). Chunk files no snapshot refers to are deleted. Past `memory_bytes` of RAM,
    /// sealed chunks move to disk.
    pub fn open(
        topic: &str,
        source: DedupSource,
        window: DedupWindow,
        snapshot_path: PathBuf,
        memory_bytes: usize,
    ) -> TopicDedup {
        assert!(source.is_enabled(), "only a topic that deduplicates has an index");
        let config = IndexConfig { max_ids: MAX_IDS_ON_DISK_DEFAULT, ..IndexConfig::new(window) };
        let started = Instant::now();
        let (index, from_snapshot) = match DedupIndex::load(&snapshot_path, config) {
            Ok(index) => (index, true),
            Err(error) => {
                if snapshot_path.exists() {
                    tracing::warn!(topic, %error, "ignoring the dedup snapshot; rebuilding the index from the logs");
                }
                (DedupIndex::new(config), false)
            }
        };
        let (index, from_snapshot, undeletable_snapshot) = match with_disk(
            topic,
            index,
            from_snapshot,
            &snapshot_path,
            memory_bytes,
        ) {
            Ok((index, from_snapshot)) => (index, from_snapshot, None),
            Err(error) => {
                let problem = undeletable_snapshot(topic, &snapshot_path, &error);
                tracing::error!(topic, %error, "the unused dedup snapshot cannot be deleted; the topic's open fails");
                (DedupIndex::new(config), false, Some(problem))
            }
        };
        let (last_snapshot, load_time) = (Instant::now(), started.elapsed());
        let state = State {
            index,
            closed: false,
            changes_since_snapshot: 0,
            changes_since_merge: 0,
            from_snapshot,
            filter_failures: 0,
            filter_retry_at: None,
            // Refuses writes and snapshots too, should the index be used despite the failed open.
            failed: undeletable_snapshot.clone(),
            undeletable_snapshot,
            load_time,
            last_snapshot,
            snapshot_failures: 0,
            snapshot_retry_at: None,
        };
        let snapshot_writer = Mutex::new(());
        let ids = state.index.config().ids;
        TopicDedup {
            topic: topic.to_string(),
            source,
            ids,
            snapshot_path,
            memory_bytes,
            state: Mutex::new(state),
            snapshot_writer,
            disk_worker: Mutex::new(()),
            rewriter: Mutex::new(()),
            background: AtomicBool::new(false),
            ahead_records: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in an assertion of the index; the partition
        // whose round panicked latches, the others keep a consistent index (every change is whole).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The id source (`dedup.source`).
    pub fn source(&self) -> &DedupSource {
        &self.source
    }

    /// Changes the window (`dedup.window.ms`); it applies to every stored id at once.
    pub fn set_window(&self, window: DedupWindow) {
        self.lock().index.set_window(window);
    }

    /// The window in force.
    pub fn window(&self) -> DedupWindow {
        self.lock().index.config().window
    }

    /// Retention moved `partition`'s log start offset: ids below it are dead.
    pub(crate) fn set_log_start_offset(&self, partition: i32, log_start_offset: u64) {
        self.lock().index.set_log_start_offset(partition, log_start_offset as i64);
    }

    /// Step 1, begun before the writer: when a data batch is queued (on the caller's thread, an async
    /// task), its ids are extracted, hashed and looked up in the sealed chunks, so that the writer's
    /// round, which stages the partition's batches one after another, only reserves them under the
    /// index's lock. Only extracted ahead (the round looks them up, on a blocking thread) while the
    /// index's lock is held (an async task never waits for it), if a chunk is on disk (a lookup could
    /// read its file), or if more than one id in [`LOOK_AHEAD_PASSING_SHARE`] passes the topic filter
    /// (a resend of stored ids, each looked for in up to every chunk). `None` (the round does it all)
    /// for a control batch, a compressed one or one over [`LOOK_AHEAD_BYTES_MAX`] (decompressing or
    /// hashing it could hold the async task long), one whose ids cannot be extracted (the round
    /// refuses it with the reason), or while the topic's queued batches hold
    /// [`LOOK_AHEAD_RECORDS_MAX`] records looked up ahead.
    pub(crate) fn look_ahead(&self, batch: &ValidBatch) -> Option<LookedAhead> {
        let header = batch.header();
        if header.is_control() || header.compression() != 0 || batch.len() > LOOK_AHEAD_BYTES_MAX {
            return None;
        }
        let counted = AheadCount::take(&self.ahead_records, usize::try_from(header.records_count).ok()?)?;
        let records = extract_valid_record_ids(batch, &self.source, &self.ids).ok()?;
        let (ids, offset_deltas) = ids_and_deltas(&records);
        // No view while a chunk is on disk: its lookup could read the file.
        let state = self.state.try_lock().ok().filter(|state| state.index.disk_chunks() == 0);
        let view = state.map(|state| state.index.sealed_view());
        let most_wanted = ids.len() / LOOK_AHEAD_PASSING_SHARE;
        let looked_up = view.and_then(|view| view.lookup_many_within(&ids, now_ms(), most_wanted).ok().flatten());
        Some(LookedAhead { ids, offset_deltas, looked_up, _counted: counted })
    }

    /// Step 1 for a data batch of `partition`: extracts and reserves its ids (what [`LookedAhead`]
    /// holds was done when it was queued; the reserve is at `now_ms`, the round's time, all the
    /// same). Refuses the batch if an id is pending elsewhere (retriable) or the index is full;
    /// otherwise says what to append.
    pub(crate) fn prepare(
        &self,
        partition: i32,
        batch: &ValidBatch,
        now_ms: i64,
        ahead: Option<Box<LookedAhead>>,
    ) -> Result<Prepared, PartitionError> {
        let header = batch.header();
        let transactional_producer_id = header.is_transactional().then_some(header.producer_id);
        let (ids, offset_deltas, looked_up) = match ahead.map(|ahead| *ahead) {
            Some(LookedAhead { ids, offset_deltas, looked_up, .. }) => (ids, offset_deltas, looked_up),
            None => {
                let records = extract_valid_record_ids(batch, &self.source, &self.ids).map_err(refused_batch)?;
                let (ids, offset_deltas) = ids_and_deltas(&records);
                (ids, offset_deltas, None)
            }
        };
        let looked_up = match looked_up {
            Some(looked_up) => looked_up,
            None => {
                // The sealed chunks are probed without the lock (most of a new id's cost at millions
                // of ids), so the topic's other partitions reserve meanwhile; under it, only what
                // changed since.
                let view = self.lock().index.sealed_view();
                view.lookup_many(&ids, now_ms).map_err(|error| index_full(&self.topic, error))?
            }
        };
        let reservation = {
            let mut state = self.lock();
            if let Some(reason) = &state.failed {
                return Err(PartitionError::Storage(format!(
                    "topic {}: the dedup index could not be rebuilt at open ({reason}); restart the broker to \
                     rebuild it from the logs",
                    self.topic
                )));
            }
            // Ids hashed another way would never match the stored ones.
            assert_eq!(state.index.config().ids, self.ids, "the index hashes ids as its topic does");
            // A lookup made ahead is decided at the round's time, as a lookup under the lock would
            // decide it now. One made before the index was replaced (a partition added to a serving
            // topic whose snapshot had to go), or on a clock that has gone back since, is of no use:
            // the ids are looked up in full.
            let reservation = match looked_up.is_of(&state.index) && looked_up.now_ms() <= now_ms {
                true => state.index.reserve_looked_up(partition, &ids, transactional_producer_id, now_ms, looked_up),
                false => state.index.reserve(partition, &ids, transactional_producer_id, now_ms),
            };
            let reservation = reservation.map_err(|error| index_full(&self.topic, error))?;
            if reservation.is_blocked() {
                state.index.release(reservation);
                return Err(PartitionError::DedupPending(format!(
                    "a message id of this batch is held by an open transaction or a write not yet durable on topic \
                     {}; retry once it ends",
                    self.topic
                )));
            }
            reservation
        };
        let keep = reservation.keep_mask();
        let dropped = reservation.duplicate_count() as u32;
        let answer = answer_for(partition, reservation.decisions());
        let reserved = Reserved { reservation, offset_deltas, timestamp_ms: header.max_timestamp };
        let filtered = match dropped {
            0 => None,
            _ => match filter_valid_batch(batch, &keep) {
                Ok(filtered) => Some(filtered),
                Err(error) => {
                    self.release(reserved);
                    return Err(refused_batch(error));
                }
            },
        };
        Ok(Prepared { reserved, filtered, answer, dropped })
    }

    /// A prepared batch was not appended (the log refused it without latching): its ids are free.
    pub(crate) fn release(&self, reserved: Reserved) {
        self.lock().index.release(reserved.reservation);
    }

    /// The append or the sync failed, so the log latched: whether these records are on disk is
    /// unknown until recovery. Their ids stay reserved, so every write of them anywhere in the topic
    /// is refused (retriably) until a restart rebuilds the index from what the disk holds; releasing
    /// them could let another partition store an id that recovery then finds here too.
    pub(crate) fn abandon(&self, effects: Vec<Effect>) {
        let held: usize = effects
            .iter()
            .map(|effect| match effect {
                Effect::Write { reserved, .. } => reserved.reservation.decisions().len(),
                Effect::Control { .. } => 0,
            })
            .sum();
        if held > 0 {
            tracing::error!(topic = %self.topic, held, "a failed write keeps its message ids reserved until restart");
        }
        // Dropping a reservation without confirm or release leaves its ids pending: what we want.
        drop(effects);
    }

    /// Step 3: what a round made durable, in log order. Merging chunks is left to
    /// [`TopicDedup::after_round`], after the answers: it changes no decision, so a
    /// producer need not wait for it.
    pub(crate) fn apply(&self, partition: i32, effects: Vec<Effect>) {
        let mut state = self.lock();
        for effect in effects {
            let changes = apply_effect(&mut state.index, partition, effect);
            state.changes_since_snapshot += changes;
            state.changes_since_merge += changes;
        }
    }

    /// Replays the partitions' logs into the index, after the snapshot it was loaded from. Runs at
    /// open, before the partitions take appends (and for partitions added later, empty ones).
    ///
    /// Fails (a storage error naming the file) if the snapshot is not used — it could not be loaded,
    /// or it covers offsets beyond a recovered log — and cannot be deleted: the open must fail rather
    /// than go on with a file a later start could load.
    pub fn rebuild(&self, partitions: &[Arc<Partition>]) -> Result<RebuildStats, PartitionError> {
        let started = Instant::now();
        let now_ms = now_ms();
        let mut stats = RebuildStats::default();
        let load_time = self.lock().load_time;
        // Read before taking the index lock: the lock order is log, then index.
        let offsets: Vec<(i32, u64, u64)> = partitions
            .iter()
            .map(|partition| (partition.id().partition, partition.log_start_offset(), partition.log_end_offset()))
            .collect();
        {
            // No snapshot write or disk step is out while the index may be replaced below (a
            // partition added to a serving topic): theirs would finish into the new index, with file
            // ids it hands out again. The lock order is snapshot writer, disk worker, index.
            let _writer = self.snapshot_writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _worker = self.disk_worker.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut state = self.lock();
            if let Some(problem) = &state.undeletable_snapshot {
                return Err(PartitionError::Storage(problem.clone()));
            }
            stats.from_snapshot = state.from_snapshot;
            let beyond = offsets.iter().find(|(partition, _, end)| {
                state.index.covered_offset(*partition).is_some_and(|covered| covered > *end as i64)
            });
            if let Some((partition, _, _)) = beyond {
                // Only if a disk lied about an fsync: the snapshot covers records recovery did not keep.
                tracing::warn!(topic = %self.topic, partition, "dedup snapshot covers offsets beyond the recovered log; rebuilding from the logs");
                let config = state.index.config();
                let empty = DedupIndex::new(config);
                match with_disk(&self.topic, empty, false, &self.snapshot_path, self.memory_bytes) {
                    Ok((index, _)) => state.index = index,
                    Err(error) => {
                        let problem = undeletable_snapshot(&self.topic, &self.snapshot_path, &error);
                        state.failed = Some(problem.clone());
                        return Err(PartitionError::Storage(problem));
                    }
                }
                state.from_snapshot = false;
                stats.from_snapshot = false;
            }
            // Before any replay: a partition replayed first must already see the others' log starts.
            for (partition, start, _) in &offsets {
                state.index.set_log_start_offset(*partition, *start as i64);
            }
        }
        for partition in partitions {
            let index = partition.id().partition;
            let replayed = partition.shared.with_log(|log| {
                let mut state = self.lock();
                if state.failed.is_some() {
                    return Ok(Ok(()));
                }
                let replayed = replay_partition(&mut state.index, &self.source, index, log, now_ms, &mut stats)?;
                Ok(replayed.map(|changes| state.changes_since_snapshot += changes))
            })?;
            if let Err(error) = replayed {
                self.fail_rebuild(index, error);
            }
        }
        stats.failed = self.lock().failed.is_some();
        let index_stats = self.stats();
        tracing::info!(
            topic = %self.topic,
            from_snapshot = stats.from_snapshot,
            replayed_batches = stats.batches,
            replayed_ids = stats.ids,
            stored_ids = index_stats.stored_ids,
            id_hash = self.ids.name(),
            snapshot_load_ms = load_time.as_millis() as u64,
            replay_ms = started.elapsed().as_millis() as u64,
            "dedup index rebuilt"
        );
        Ok(stats)
    }

    /// The replay met an error other than a full index: the index would miss stored records (and
    /// store their duplicates later), so it must not serve nor be snapshotted. The snapshot is
    /// deleted, so the next start replays the whole logs; until then every batch is refused.
    fn fail_rebuild(&self, partition: i32, error: DedupError) {
        tracing::error!(topic = %self.topic, partition, %error, "dedup index rebuild failed; the topic refuses writes until a restart rebuilds it from the logs");
        if let Err(removed) = once_dedup::remove_snapshot(&self.snapshot_path) {
            tracing::error!(topic = %self.topic, error = %removed, "removing the dedup snapshot failed");
        }
        self.lock().failed = Some(error.to_string());
    }

    /// Upkeep: seals a frozen chunk the writers left (a topic that went idle right after a fill),
    /// frees expired ids (window passed, or below a log start), rewriting about `budget` ids at most.
    /// The seal and the rewrites copy chunks without the lock (see [`TopicDedup::rewrite`]); if
    /// another thread is rewriting, only whole dead chunks are dropped.
    pub fn expire(&self, now_ms: i64, budget: usize) -> ExpireStats {
        self.seal();
        self.rewrite(now_ms, budget, false).unwrap_or_default()
    }

    /// [`DedupIndex::expire`] with each rewrite run without the index's lock (a merge at 10 M ids
    /// copies millions of ids: tens of milliseconds in which every partition's writer waited): the
    /// lock is taken to hand one out and to install it. One thread rewrites at a time: with `wait`
    /// the caller waits for the other; without, it only drops whole dead chunks and returns `None`.
    fn rewrite(&self, now_ms: i64, budget: usize, wait: bool) -> Option<ExpireStats> {
        let mut stats = {
            let mut state = self.lock();
            if state.closed || state.failed.is_some() {
                return Some(ExpireStats::default());
            }
            // Safe beside another thread's rewrite: its inputs are kept (`DedupIndex::rewriting`).
            state.index.drop_dead_chunks(now_ms)
        };
        let _rewriter = match wait {
            true => self.rewriter.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
            false => match self.rewriter.try_lock() {
                Ok(rewriter) => rewriter,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            },
        };
        let mut from = 0;
        loop {
            let work = {
                let mut state = self.lock();
                if state.closed || state.failed.is_some() {
                    break;
                }
                state.index.next_rewrite_work(from, now_ms, budget, &mut stats)
            };
            let Some(work) = work else { break };
            // Should `run` panic (an index assertion), the work is given up, so that later rewrites
            // are handed out and spills take its inputs again.
            let abandon = Abandon(self);
            let done = work.run();
            std::mem::forget(abandon);
            let rewritten = self.lock().index.finish_rewrite_work(done);
            stats.entries_dropped += rewritten.dropped;
            // Not installed: the index changed under the work; the next round starts again.
            let installed = rewritten.installed;
            from = rewritten.next_from;
            rewritten.free();
            if !installed {
                break;
            }
        }
        Some(stats)
    }

    /// Seals the frozen active chunk, if one waits, without the index's lock: the sort of up to
    /// 458,752 ids took tens of milliseconds in which every partition's writer waited.
    fn seal(&self) {
        let work = self.lock().index.next_seal_work();
        let Some(work) = work else { return };
        let done = work.run();
        let freed = self.lock().index.finish_seal_work(done);
        drop(freed);
    }

    /// After a round (its answers sent): seals a frozen active chunk and, every `MERGE_EVERY_IDS`
    /// ids, merges chunks (a bounded amount of work, without the lock) — on a blocking task of its
    /// own, so that the writer's next round does not wait for tens of milliseconds of sorting and
    /// copying (a librdkafka idempotent producer has one request in flight per partition, so such a
    /// wait stalls its sender) — then, while the index is over its memory budget, moves its oldest
    /// resident chunks to disk, the file I/O without the lock. Over the budget the seal and merges run
    /// here, before the spill that needs them. A failed spill is logged; the index then refuses new
    /// ids while over the budget (KAFKA_STORAGE_ERROR) until a spill works.
    pub(crate) fn after_round(self: &Arc<Self>) {
        let (due, over) = {
            let state = self.lock();
            (state.seal_or_merge_due(), over_budget(&state.index))
        };
        if over {
            self.seal_and_merge();
        } else if due && !self.background.swap(true, Ordering::AcqRel) {
            // Cleared however the task ends: run, panicked (an index assertion: later rounds go on)
            // or dropped unrun (a runtime shutting down).
            let done = Background(Arc::clone(self));
            let work = move || {
                // Until nothing is due: a chunk frozen, or the merge mark crossed, while this task
                // ran was seen as taken by that round's writer, which went on without it. Bounded:
                // a seal the upkeep has out makes a frozen chunk stay due for a while.
                for _ in 0..BACKGROUND_PASSES_MAX {
                    if !done.0.due() {
                        break;
                    }
                    done.0.seal_and_merge();
                }
                drop(done);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(work)),
                Err(_) => work(),
            }
        }
        self.disk_steps(true, usize::MAX);
    }

    /// Whether the index is over its memory budget, when [`TopicDedup::after_round`] seals, merges
    /// and moves chunks to disk before it returns.
    pub(crate) fn over_memory_budget(&self) -> bool {
        over_budget(&self.lock().index)
    }

    /// Whether a seal or a merge is due: a frozen chunk, or `MERGE_EVERY_IDS` ids changed since
    /// the last merge.
    fn due(&self) -> bool {
        self.lock().seal_or_merge_due()
    }

    /// Seals the frozen chunk, then merges if `MERGE_EVERY_IDS` ids changed since the last merge
    /// (waiting for the upkeep's rewrite, if one runs, rather than losing the budget).
    fn seal_and_merge(&self) {
        self.seal();
        let budget = merge_budget(&mut self.lock().changes_since_merge);
        if let Some(budget) = budget {
            self.rewrite(now_ms(), budget, true);
        }
    }

    /// Upkeep: spills, then compacts and merges chunk files, at most `steps` steps (each bounded by
    /// `once_dedup::DISK_CHUNK_IDS_MAX` ids). The file I/O runs without the index's lock.
    pub fn maintain_disk(&self, steps: usize) -> usize {
        self.disk_steps(false, steps)
    }

    fn disk_steps(&self, spill_only: bool, steps: usize) -> usize {
        let mut changed = 0;
        // Busy: another thread's step is out (no second one would be handed out anyway).
        let _worker = match self.disk_worker.try_lock() {
            Ok(worker) => worker,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return 0,
        };
        for _ in 0..steps {
            let work = {
                let mut state = self.lock();
                if state.closed || state.failed.is_some() || (spill_only && !state.index.over_memory_budget()) {
                    break;
                }
                state.index.next_disk_work(now_ms())
            };
            // None: nothing to do, or another thread's step is out (it goes on until done).
            let Some(work) = work else { break };
            let done = work.run();
            match self.lock().index.finish_disk_work(done) {
                Ok(installed) => changed += usize::from(installed),
                Err(error) => {
                    tracing::error!(topic = %self.topic, %error, "moving dedup index chunks to disk failed");
                    break;
                }
            }
        }
        changed
    }

    /// Upkeep: rebuilds the topic filter the lookups probe before the sealed chunks, if one is due
    /// (no filter yet, or more ids sealed than it was sized for). The rebuild reads the sealed chunks
    /// without the index's lock (chunk files page by page); the lock is taken to start and to install
    /// it. Returns true if a filter was installed.
    pub fn maintain_filter(&self) -> bool {
        let work = {
            let mut state = self.lock();
            let backing_off = state.filter_retry_at.is_some_and(|at| Instant::now() < at);
            if state.closed || state.failed.is_some() || backing_off {
                return false;
            }
            state.index.next_filter_work()
        };
        let Some(work) = work else { return false };
        let built = work.run();
        let mut state = self.lock();
        match state.index.finish_filter_work(built) {
            Ok(installed) => {
                state.filter_failures = 0;
                state.filter_retry_at = None;
                installed
            }
            Err(error) => {
                state.filter_failures = state.filter_failures.saturating_add(1);
                let wait =
                    FILTER_RETRY_MIN.saturating_mul(1 << (state.filter_failures - 1).min(6)).min(FILTER_RETRY_MAX);
                state.filter_retry_at = Some(Instant::now() + wait);
                tracing::warn!(topic = %self.topic, %error, retry_in = ?wait, "rebuilding the dedup index's topic filter failed; lookups probe every chunk until a rebuild works");
                false
            }
        }
    }

    /// Whether [`TopicDedup::snapshot_if_due`] would write a snapshot now (cheap: counters only).
    pub fn snapshot_due(&self) -> bool {
        let state = self.lock();
        !state.closed && state.failed.is_none() && state.snapshot_due()
    }

    /// Writes a snapshot if enough changed since the last one (see the constants). `Ok(None)` when
    /// none was due.
    pub fn snapshot_if_due(&self) -> Result<Option<SnapshotStats>, DedupError> {
        self.write_snapshot(false)
    }

    /// Writes a snapshot now (clean shutdown). `Ok(None)` once the topic is deleted.
    pub fn snapshot(&self) -> Result<Option<SnapshotStats>, DedupError> {
        self.write_snapshot(true)
    }

    /// Takes a view of the index under the lock (the sealed chunks are shared, only the active
    /// chunk is copied: milliseconds), then writes it without the lock while the writers go on.
    fn write_snapshot(&self, always: bool) -> Result<Option<SnapshotStats>, DedupError> {
        let _writer = self.snapshot_writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let (view, changes) = {
            let mut state = self.lock();
            let changes = state.changes_since_snapshot;
            if state.closed || state.failed.is_some() || !(always || state.snapshot_due()) {
                return Ok(None);
            }
            state.changes_since_snapshot = 0;
            state.last_snapshot = Instant::now();
            (state.index.snapshot_view(), changes)
        };
        let viewed = started.elapsed();
        match view.write(&self.snapshot_path) {
            Ok(stats) => {
                let mut state = self.lock();
                state.index.finish_snapshot(&view);
                state.snapshot_failures = 0;
                state.snapshot_retry_at = None;
                drop(state);
                tracing::debug!(topic = %self.topic, entries = stats.entries, bytes = stats.bytes, files_written = stats.files_written, file_entries = stats.file_entries, view_ms = viewed.as_millis() as u64, elapsed_ms = started.elapsed().as_millis() as u64, "dedup snapshot written");
                Ok(Some(stats))
            }
            Err(error) => {
                // The changes are still in no snapshot: due again once the back-off has passed.
                let mut state = self.lock();
                state.index.abandon_snapshot(&view);
                state.changes_since_snapshot += changes;
                state.snapshot_failures = state.snapshot_failures.saturating_add(1);
                let wait = SNAPSHOT_RETRY_MIN.saturating_mul(1 << (state.snapshot_failures - 1).min(6));
                state.snapshot_retry_at = Some(Instant::now() + wait.min(SNAPSHOT_RETRY_MAX));
                Err(error)
            }
        }
    }

    /// The topic is being deleted: no snapshot and no chunk file is written from now on (a snapshot
    /// being written and a disk step running finish first, so none lands in the directory after
    /// this returns, nor in a new topic's directory of the same name).
    pub fn close(&self) {
        let _writer = self.snapshot_writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _worker = self.disk_worker.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.lock().closed = true;
    }

    /// What the index holds now.
    pub fn stats(&self) -> DedupStats {
        let state = self.lock();
        DedupStats {
            stored_ids: state.index.stored_ids() as u64,
            pending_ids: state.index.pending_ids() as u64,
            index_bytes: state.index.approx_bytes() as u64,
            sealed_chunks: state.index.sealed_chunks() as u64,
            disk_chunks: state.index.disk_chunks() as u64,
            disk_ids: state.index.disk_ids() as u64,
            disk_chunk_bytes: state.index.disk_chunk_bytes() as u64,
            memory_budget_bytes: state.index.memory_budget().unwrap_or(0) as u64,
        }
    }
}

/// The index with its chunk files in `dedup-chunks/` beside the snapshot, files it does not refer
/// to deleted (written after the last snapshot, or retired before it). An index that was not loaded
/// from the snapshot starts empty: then the snapshot file, which cannot be trusted, is deleted
/// durably first, so that it can never be loaded again — by a later start that would find the logs
/// grown past what it covers, nor with chunk files written after it under the names it refers to. A
/// failed deletion is returned: the caller fails the open. If the chunk directory cannot be used, the
/// index starts empty in RAM (and within `MAX_IDS_DEFAULT`), which is logged. Returns the index and
/// whether it is still the one loaded from the snapshot.
fn with_disk(
    topic: &str,
    mut index: DedupIndex,
    mut loaded: bool,
    snapshot_path: &std::path::Path,
    memory_bytes: usize,
) -> Result<(DedupIndex, bool), DedupError> {
    if !loaded {
        once_dedup::remove_snapshot(snapshot_path)?;
    }
    let dir = chunk_dir(snapshot_path);
    let used = index.use_disk(dir, memory_bytes).and_then(|()| index.remove_orphan_chunk_files());
    match used {
        Ok(removed) if removed > 0 => tracing::info!(topic, removed, "removed dedup chunk files no snapshot refers to"),
        Ok(_) => {}
        Err(error) => {
            tracing::error!(topic, %error, "dedup index cannot use its chunk directory; keeping it in RAM");
            let config = IndexConfig { max_ids: once_dedup::MAX_IDS_DEFAULT, ..index.config() };
            index = DedupIndex::new(config);
            loaded = false;
        }
    }
    // The writers seal full active chunks after their rounds, without the lock (`TopicDedup::seal`).
    index.defer_seals();
    Ok((index, loaded))
}

/// Clears [`TopicDedup::background`] when dropped.
struct Background(Arc<TopicDedup>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.background.store(false, Ordering::Release);
    }
}

/// Gives up the rewrite that is out when dropped (only on a panic: it is forgotten otherwise).
struct Abandon<'a>(&'a TopicDedup);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        self.0.lock().index.abandon_rewrite_work();
    }
}

/// The open's error when the snapshot at `path` is not used and deleting it failed.
fn undeletable_snapshot(topic: &str, path: &std::path::Path, error: &DedupError) -> String {
    format!(
        "topic {topic}: the dedup snapshot {} is not used and cannot be deleted ({error}); it must go before the \
         topic takes writes, or a later start could load it",
        path.display()
    )
}

impl State {
    /// Whether a seal or a merge is due: a frozen chunk, or `MERGE_EVERY_IDS` ids changed since the
    /// last merge (on a topic not being deleted).
    fn seal_or_merge_due(&self) -> bool {
        !self.closed && (self.index.frozen_len() > 0 || self.changes_since_merge >= MERGE_EVERY_IDS)
    }

    /// Whether a snapshot is due (see [`snapshot_due`]). Chunks with a file (on disk, or resident
    /// with the copy an earlier snapshot wrote or a merge took over) are referred to, not written:
    /// only the ids without one make a snapshot big.
    fn snapshot_due(&self) -> bool {
        let written = self.index.ids_without_file() as u64;
        let retired = Retired {
            files: self.index.retired_file_count(),
            ids: self.index.retired_ids() as u64,
            stored_ids: self.index.stored_ids() as u64,
        };
        let waiting = self.snapshot_retry_at.is_some_and(|retry_at| Instant::now() < retry_at);
        let written = Written { ids: written, chunk_files: self.index.memory_budget().is_some() };
        !waiting && snapshot_due(self.changes_since_snapshot, written, retired, self.last_snapshot.elapsed())
    }
}

/// Over the memory budget, counting a frozen chunk (which `DedupIndex::over_memory_budget` cannot
/// spill yet).
fn over_budget(index: &DedupIndex) -> bool {
    index.memory_budget().is_some_and(|budget| index.approx_bytes() > budget)
}

/// Chunk files waiting for a snapshot that no longer refers to them.
#[derive(Clone, Copy, Debug)]
struct Retired {
    files: usize,
    /// Ids those files hold.
    ids: u64,
    /// Ids the index stores.
    stored_ids: u64,
}

/// What a snapshot due now would write.
#[derive(Clone, Copy, Debug)]
struct Written {
    /// Ids without a chunk file (with chunk files: the active and frozen chunks' and those sealed,
    /// or rewritten without taking their inputs' files over, since the last snapshot; without: every
    /// stored id).
    ids: u64,
    /// Whether the index keeps chunk files (a chunk directory): sealed chunks are then written once
    /// and referred to by later snapshots.
    chunk_files: bool,
}

/// Whether a snapshot is due: enough ids changed (at least `SNAPSHOT_CHANGES_MIN`, and half the ids
/// it would write up to `SNAPSHOT_CHANGES_MAX` with chunk files, a quarter of them without), or the
/// interval passed with anything changed or a retired chunk file waiting, or several retired files
/// holding many ids wait (each is deleted only by a snapshot that no longer refers to it; on a topic
/// without writes, expiry and compaction retire files while no id changes). Merges and compactions
/// in RAM that cannot take their inputs' files over retire them: those alone, a small share of the
/// index, wait for the changes or the interval.
fn snapshot_due(changes: u64, written: Written, retired: Retired, since_last: Duration) -> bool {
    let enough = match written.chunk_files {
        true => (written.ids / SNAPSHOT_WRITTEN_PER_CHANGE_MAX).min(SNAPSHOT_CHANGES_MAX),
        false => written.ids / SNAPSHOT_WRITTEN_PER_CHANGE_INLINE_MAX,
    };
    changes >= SNAPSHOT_CHANGES_MIN.max(enough)
        || (retired.files >= SNAPSHOT_RETIRED_FILES_MIN
            && retired.ids.saturating_mul(SNAPSHOT_RETIRED_SHARE) >= retired.stored_ids)
        || ((changes > 0 || retired.files > 0) && since_last >= SNAPSHOT_INTERVAL_MAX)
}

/// Every `MERGE_EVERY_IDS` changes, the budget of ids to merge, proportional to them (so a lookup
/// probes few chunks whatever the insert rate).
fn merge_budget(changes_since_merge: &mut u64) -> Option<usize> {
    if *changes_since_merge < MERGE_EVERY_IDS {
        return None;
    }
    let budget = changes_since_merge.saturating_mul(MERGE_WORK_PER_ID);
    *changes_since_merge = 0;
    Some(usize::try_from(budget).unwrap_or(usize::MAX))
}

/// The one function by which a write changes the index, live (after its round's sync) and in replay
/// (after reading it back). Returns how many ids it resolved, for the snapshot schedule.
fn apply_effect(index: &mut DedupIndex, partition: i32, effect: Effect) -> u64 {
    match effect {
        Effect::Write { reserved, base_offset, last_offset } => {
            let new = reserved.reservation.decisions().iter().filter(|decision| **decision == Decision::New).count();
            let offsets: Vec<i64> =
                reserved.offset_deltas.iter().map(|delta| base_offset as i64 + i64::from(*delta)).collect();
            assert!(
                offsets.iter().all(|offset| (base_offset as i64..=last_offset as i64).contains(offset)),
                "records lie within their batch's offsets"
            );
            index.confirm(reserved.reservation, &offsets, reserved.timestamp_ms);
            // A header-only or id-less batch still moves the covered offset past its whole span.
            index.advance_covered(partition, last_offset as i64 + 1);
            new as u64
        }
        Effect::Control { end, offset } => {
            let resolved = match end {
                Some((producer_id, commit)) => index.end_transaction(partition, producer_id, commit),
                None => 0,
            };
            index.advance_covered(partition, offset as i64 + 1);
            resolved as u64
        }
    }
}

/// The answer for a batch given its decisions (see [`OffsetAnswer`]).
fn answer_for(partition: i32, decisions: &[Decision]) -> OffsetAnswer {
    let dropped =
        decisions.iter().any(|decision| matches!(decision, Decision::Duplicate(_) | Decision::DuplicateInBatch { .. }));
    if !dropped {
        return OffsetAnswer::Stored;
    }
    if let [Decision::Duplicate(location)] = decisions {
        if location.partition != partition {
            assert!(location.offset >= 0, "a stored id's offset is an offset");
            return OffsetAnswer::Elsewhere { partition: location.partition, offset: location.offset as u64 };
        }
    }
    let mut originals = decisions.iter().map(|decision| match decision {
        Decision::Duplicate(location) if location.partition == partition => Some(location.offset),
        _ => None,
    });
    let Some(Some(first)) = originals.next() else { return OffsetAnswer::Unknown };
    let consecutive = originals.zip(first + 1..).all(|(offset, expected)| offset == Some(expected));
    match consecutive {
        true => OffsetAnswer::Originals { base_offset: first as u64 },
        false => OffsetAnswer::Unknown,
    }
}

/// A batch whose records cannot be read: refused as the log refuses a bad batch.
fn refused_batch(error: DedupError) -> PartitionError {
    let log_error = match error {
        DedupError::InvalidBatch(problem) => LogError::CorruptBatch(problem),
        other => LogError::InvalidBatch(other.to_string()),
    };
    PartitionError::Log(log_error)
}

/// The index refused a reservation or a lookup: full (POLICY_VIOLATION), or unable to read a chunk
/// file or to spill past its budget (a storage error; nothing was decided, so no wrong answer is given).
fn index_full(topic: &str, error: DedupError) -> PartitionError {
    match error {
        DedupError::IndexFull { .. } => PartitionError::DedupIndexFull(format!(
            "topic {topic}: {error}; shorten dedup.window.ms or retention so that ids expire"
        )),
        other => {
            tracing::error!(topic, error = %other, "dedup index refused a batch");
            PartitionError::Storage(format!("topic {topic}: {other}"))
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use once_dedup::Location;

    fn keyed(keys: &[&str]) -> ValidBatch {
        let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
        ValidBatch::validate(once_log::testing::make_keyed_batch(-1, -1, -1, 0, &keys, now_ms())).expect("valid")
    }

    /// Prepares `keys` as one batch of partition 0 (looked up ahead or not), stores it at `offset` if
    /// it is not refused, and returns its decisions.
    fn store(dedup: &TopicDedup, keys: &[&str], offset: u64, ahead: bool) -> Vec<Decision> {
        let batch = keyed(keys);
        let ahead =
            ahead.then(|| Box::new(dedup.look_ahead(&batch).expect("looked up ahead: no lock held, all resident")));
        let prepared = dedup.prepare(0, &batch, now_ms(), ahead).expect("prepared");
        let decisions = prepared.reserved.reservation.decisions().to_vec();
        let last_offset = offset + keys.len() as u64 - 1;
        dedup.apply(0, vec![Effect::Write { reserved: prepared.reserved, base_offset: offset, last_offset }]);
        decisions
    }

    /// A batch looked up as it was queued is decided as one looked up in its round: new, stored and
    /// in-batch duplicates alike, also when ids were stored between the look-ahead and the round, and
    /// when the index was replaced meanwhile (the look-ahead is then not used). None is made while the
    /// index's lock is held.
    #[test]
    fn a_batch_looked_up_ahead_is_decided_as_one_looked_up_in_its_round() {
        let dir = tempfile::tempdir().expect("temp dir");
        let open = |name: &str| {
            let path = dir.path().join(name);
            TopicDedup::open("t", DedupSource::Key, DedupWindow::Retention, path, usize::MAX)
        };
        let (with, without) = (open("with.snapshot"), open("without.snapshot"));
        for (dedup, ahead) in [(&with, true), (&without, false)] {
            assert_eq!(store(dedup, &["a", "b"], 0, ahead), vec![Decision::New, Decision::New]);
        }
        let mut decided = Vec::new();
        for (dedup, ahead) in [(&with, true), (&without, false)] {
            let decisions = store(dedup, &["a", "c", "c", "d"], 2, ahead);
            decided.push(decisions);
        }
        assert_eq!(decided[0], decided[1], "the same decisions with and without the look-ahead");
        let stored_a = Decision::Duplicate(Location { partition: 0, offset: 0 });
        let expected = vec![stored_a, Decision::New, Decision::DuplicateInBatch { first_index: 1 }, Decision::New];
        assert_eq!(decided[0], expected);

        // Stored between the look-ahead and the round: found under the lock.
        let batch = keyed(&["e", "f"]);
        let ahead = with.look_ahead(&batch).expect("looked up ahead");
        assert_eq!(store(&with, &["e"], 6, false), vec![Decision::New]);
        let prepared = with.prepare(0, &batch, now_ms(), Some(Box::new(ahead))).expect("prepared");
        let stored_e = Decision::Duplicate(Location { partition: 0, offset: 6 });
        assert_eq!(prepared.reserved.reservation.decisions(), &[stored_e, Decision::New]);
        with.release(prepared.reserved);

        // Looked up in an index that was replaced since: the round looks the ids up in full.
        let ahead = with.look_ahead(&batch).expect("looked up ahead");
        {
            let mut state = with.lock();
            let mut replaced = DedupIndex::new(state.index.config());
            let ids = [Some(with.ids.id_of(b"f"))];
            let reservation = replaced.reserve(0, &ids, None, now_ms()).expect("reserved");
            replaced.confirm(reservation, &[40], now_ms());
            state.index = replaced;
        }
        let prepared = with.prepare(0, &batch, now_ms(), Some(Box::new(ahead))).expect("prepared");
        let stored_f = Decision::Duplicate(Location { partition: 0, offset: 40 });
        assert_eq!(prepared.reserved.reservation.decisions(), &[Decision::New, stored_f]);
        with.release(prepared.reserved);

        let _held = with.lock();
        let ahead = with.look_ahead(&batch).expect("extracted ahead");
        assert!(ahead.looked_up.is_none(), "an async task never waits for the index's lock");
        let keyed = |key: &[u8]| Some(with.ids.id_of(key));
        assert_eq!(ahead.ids, [keyed(b"e"), keyed(b"f")], "the ids, extracted ahead with the index's scheme");
        assert!(matches!(with.ids, IdScheme::SipHash24 { .. }), "a new topic's index hashes with a key");
        assert_ne!(ahead.ids[0], Some(Id::of(b"e")), "not with BLAKE3");
    }

    /// A topic that stored 70,000 keys (`key-N` at offset N of partition 0) under `window`, most of
    /// them in a sealed chunk behind the topic filter.
    fn stored_and_sealed(dir: &std::path::Path, window: DedupWindow) -> (TopicDedup, Vec<String>) {
        stored_and_sealed_within(dir, window, usize::MAX)
    }

    /// [`stored_and_sealed`] under a memory budget of `memory_bytes`.
    fn stored_and_sealed_within(
        dir: &std::path::Path,
        window: DedupWindow,
        memory_bytes: usize,
    ) -> (TopicDedup, Vec<String>) {
        let dedup = TopicDedup::open("t", DedupSource::Key, window, dir.join("dedup.snapshot"), memory_bytes);
        let keys: Vec<String> = (0..70_000).map(|number| format!("key-{number}")).collect();
        for (at, group) in keys.chunks(7_000).enumerate() {
            let group: Vec<&str> = group.iter().map(String::as_str).collect();
            let decisions = store(&dedup, &group, (at * 7_000) as u64, false);
            assert!(decisions.iter().all(|decision| *decision == Decision::New));
        }
        dedup.seal();
        dedup.maintain_filter();
        assert!(dedup.stats().sealed_chunks > 0, "the first ids are in a sealed chunk");
        (dedup, keys)
    }

    /// A batch of 99 new keys and `key-0`.
    fn fresh_and_key_0() -> ValidBatch {
        let mut keys: Vec<String> = (0..99).map(|number| format!("fresh-{number}")).collect();
        keys.push("key-0".to_string());
        keyed(&keys.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// A batch of new ids is looked up ahead, and a copy the look-ahead found in a sealed chunk
    /// decides its id in the round; one of ids stored in sealed chunks (a resend, whose lookups probe
    /// up to every chunk) is only extracted ahead and looked up in its round, with the same decisions.
    #[test]
    fn a_batch_of_stored_ids_is_looked_up_in_its_round_not_ahead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (dedup, keys) = stored_and_sealed(dir.path(), DedupWindow::Retention);

        let batch = fresh_and_key_0();
        let ahead = dedup.look_ahead(&batch).expect("looked ahead");
        let found = ahead.looked_up.as_ref().expect("new ids: looked up ahead (one passes the topic filter)");
        assert!(found.found_at(99), "key-0 found ahead, in the sealed chunk");
        let prepared = dedup.prepare(0, &batch, now_ms(), Some(Box::new(ahead))).expect("prepared");
        let decisions = prepared.reserved.reservation.decisions();
        assert!(decisions[..99].iter().all(|decision| *decision == Decision::New));
        assert_eq!(decisions[99], Decision::Duplicate(Location { partition: 0, offset: 0 }));
        dedup.release(prepared.reserved);

        let resent: Vec<&str> = keys[..100].iter().map(String::as_str).collect();
        let batch = keyed(&resent);
        let ahead = dedup.look_ahead(&batch).expect("extracted ahead");
        assert!(ahead.looked_up.is_none(), "stored ids: looked up in the round");
        assert_eq!(ahead.ids.len(), 100, "the ids extracted ahead");
        let prepared = dedup.prepare(0, &batch, now_ms(), Some(Box::new(ahead))).expect("prepared");
        let expected: Vec<Decision> =
            (0..100).map(|offset| Decision::Duplicate(Location { partition: 0, offset })).collect();
        assert_eq!(prepared.reserved.reservation.decisions(), expected.as_slice());
        dedup.release(prepared.reserved);
    }

    /// With a chunk on disk, a batch's ids are extracted ahead but looked up in its round (the lookup
    /// could read the file, which an async task must not wait for), with the same decisions.
    #[test]
    fn with_a_chunk_on_disk_only_the_extraction_is_done_ahead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (dedup, _) = stored_and_sealed_within(dir.path(), DedupWindow::Retention, 1 << 20);
        dedup.maintain_disk(100);
        assert!(dedup.stats().disk_chunks > 0, "a 1 MiB budget sends the sealed chunk to disk");
        let batch = fresh_and_key_0();
        let ahead = dedup.look_ahead(&batch).expect("extracted ahead");
        assert!(ahead.looked_up.is_none(), "not looked up ahead: a chunk is on disk");
        assert_eq!(ahead.ids.len(), 100, "the ids extracted ahead");
        let prepared = dedup.prepare(0, &batch, now_ms(), Some(Box::new(ahead))).expect("prepared");
        let decisions = prepared.reserved.reservation.decisions();
        assert!(decisions[..99].iter().all(|decision| *decision == Decision::New));
        assert_eq!(decisions[99], Decision::Duplicate(Location { partition: 0, offset: 0 }), "found on disk");
        dedup.release(prepared.reserved);
    }

    /// A copy found ahead, live then, but dead by the round's clock (the batch waited in the queue
    /// past the window's end) is decided at the round's time: the record is new, not dropped.
    #[test]
    fn a_lookup_done_ahead_is_decided_at_the_rounds_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (dedup, _) = stored_and_sealed(dir.path(), DedupWindow::Duration { window_ms: 60_000 });
        let batch = fresh_and_key_0();
        let ahead = dedup.look_ahead(&batch).expect("looked ahead");
        assert!(ahead.looked_up.as_ref().is_some_and(|looked_up| looked_up.found_at(99)), "live ahead");
        let two_minutes_later = now_ms() + 120_000;
        let prepared = dedup.prepare(0, &batch, two_minutes_later, Some(Box::new(ahead))).expect("prepared");
        let decisions = prepared.reserved.reservation.decisions();
        assert!(decisions.iter().all(|decision| *decision == Decision::New), "{decisions:?}");
        dedup.release(prepared.reserved);
    }

    /// Batches waiting in the queues hold at most `LOOK_AHEAD_RECORDS_MAX` records looked up ahead;
    /// past it a batch is left to its round, and a batch's share comes back when it is dropped.
    #[test]
    fn the_records_looked_up_ahead_are_bounded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dedup = TopicDedup::open("t", DedupSource::Key, DedupWindow::Retention, dir.path().join("s"), usize::MAX);
        let keys: Vec<String> = (0..600).map(|number| format!("key-{number}")).collect();
        let batch = keyed(&keys.iter().map(String::as_str).collect::<Vec<_>>());
        let first = dedup.look_ahead(&batch).expect("within the bound");
        assert_eq!(dedup.ahead_records.load(Ordering::Acquire), 600);
        assert!(dedup.look_ahead(&batch).is_none(), "1,200 records would pass the bound of 1,000");
        drop(first);
        assert_eq!(dedup.ahead_records.load(Ordering::Acquire), 0, "given back when dropped");
        let second = dedup.look_ahead(&batch).expect("within the bound again");
        let prepared = dedup.prepare(0, &batch, now_ms(), Some(Box::new(second))).expect("prepared");
        assert_eq!(dedup.ahead_records.load(Ordering::Acquire), 0, "given back once staged");
        dedup.release(prepared.reserved);
    }

    #[test]
    fn retired_files_make_a_snapshot_due_without_any_change() {
        let hour = Duration::from_secs(3_600);
        let retired = |files: usize, ids: u64| Retired { files, ids, stored_ids: 1_000_000 };
        let none = retired(0, 0);
        let nothing = Written { ids: 0, chunk_files: true };
        assert!(!snapshot_due(0, nothing, none, hour), "nothing changed, nothing waits");
        assert!(
            !snapshot_due(0, nothing, retired(1, 1), Duration::from_secs(1)),
            "one retired file waits for the interval"
        );
        assert!(
            snapshot_due(0, nothing, retired(1, 1), SNAPSHOT_INTERVAL_MAX),
            "and no longer: it is deleted by the next snapshot"
        );
        let many = retired(SNAPSHOT_RETIRED_FILES_MIN, 250_000);
        assert!(
            snapshot_due(0, nothing, many, Duration::ZERO),
            "several holding a quarter of the ids make one due at once"
        );
        let small = retired(SNAPSHOT_RETIRED_FILES_MIN * 10, 249_999);
        assert!(!snapshot_due(0, nothing, small, Duration::ZERO), "many small ones wait for changes or the interval");
        let few = retired(SNAPSHOT_RETIRED_FILES_MIN - 1, 1_000_000);
        assert!(!snapshot_due(0, nothing, few, Duration::ZERO), "fewer than the minimum wait too");
        assert!(snapshot_due(1, nothing, none, SNAPSHOT_INTERVAL_MAX));
    }

    #[test]
    fn a_snapshot_waits_for_changes_in_proportion_to_what_it_writes_up_to_a_bounded_tail() {
        let none = Retired { files: 0, ids: 0, stored_ids: 1_000_000 };
        let due = |changes: u64, ids: u64, chunk_files: bool| {
            snapshot_due(changes, Written { ids, chunk_files }, none, Duration::ZERO)
        };
        assert!(due(SNAPSHOT_CHANGES_MIN, 0, true) && !due(SNAPSHOT_CHANGES_MIN - 1, 0, true));
        // With chunk files: half of what it writes...
        let written = SNAPSHOT_WRITTEN_PER_CHANGE_MAX * (SNAPSHOT_CHANGES_MIN + 1_000);
        assert!(due(SNAPSHOT_CHANGES_MIN + 1_000, written, true));
        assert!(!due(SNAPSHOT_CHANGES_MIN + 999, written, true));
        // ... but however much that is, the tail a restart replays stays bounded.
        assert!(!due(SNAPSHOT_CHANGES_MAX - 1, u64::MAX, true));
        assert!(due(SNAPSHOT_CHANGES_MAX, u64::MAX, true));
        // Without chunk files every snapshot writes every id: it waits for a quarter of them.
        let stored = 10_000_000;
        assert!(!due(SNAPSHOT_CHANGES_MAX, stored, false));
        assert!(!due(stored / SNAPSHOT_WRITTEN_PER_CHANGE_INLINE_MAX - 1, stored, false));
        assert!(due(stored / SNAPSHOT_WRITTEN_PER_CHANGE_INLINE_MAX, stored, false));
    }

    fn duplicate(partition: i32, offset: i64) -> Decision {
        Decision::Duplicate(Location { partition, offset })
    }

    #[test]
    fn answers() {
        assert_eq!(answer_for(0, &[Decision::New, Decision::NoId]), OffsetAnswer::Stored, "nothing dropped");
        assert_eq!(answer_for(0, &[]), OffsetAnswer::Stored);
        assert_eq!(
            answer_for(2, &[duplicate(2, 40), duplicate(2, 41), duplicate(2, 42)]),
            OffsetAnswer::Originals { base_offset: 40 },
            "all duplicates, consecutive, in order, in this partition"
        );
        assert_eq!(answer_for(2, &[duplicate(2, 41), duplicate(2, 40)]), OffsetAnswer::Unknown, "out of order");
        assert_eq!(answer_for(2, &[duplicate(2, 40), duplicate(2, 42)]), OffsetAnswer::Unknown, "a gap");
        assert_eq!(
            answer_for(2, &[duplicate(3, 40)]),
            OffsetAnswer::Elsewhere { partition: 3, offset: 40 },
            "one record, its original in another partition"
        );
        assert_eq!(
            answer_for(2, &[duplicate(3, 40), duplicate(3, 41)]),
            OffsetAnswer::Unknown,
            "several records in another partition"
        );
        assert_eq!(answer_for(2, &[duplicate(2, 40), Decision::New]), OffsetAnswer::Unknown, "mixed");
        assert_eq!(
            answer_for(2, &[Decision::New, Decision::DuplicateInBatch { first_index: 0 }]),
            OffsetAnswer::Unknown,
            "a repeat inside the batch"
        );
        assert_eq!(answer_for(2, &[duplicate(2, 7), Decision::NoId]), OffsetAnswer::Unknown, "an id-less record");
    }
}
