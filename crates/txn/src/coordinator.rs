//! The transaction coordinator: one lock per transactional id, the two-phase commit, timeouts,
//! recovery of transactions a crash left prepared.
//!
//! Every change is written to the transaction log (fsynced) before it is installed in memory or
//! answered. A decision to commit or abort (Prepare*) is durable before any marker is written; after
//! the markers, Complete* is written. A crash in between leaves Prepare* in the log, and the
//! coordinator finishes the markers when it opens again. Markers are idempotent at the partitions
//! (a repeated commit marker closes nothing), so finishing twice is harmless.
//!
//! A transactional id's lock is held across its whole change, so requests of one producer are
//! serialised: a Produce verified against the transaction queues its append while holding the lock,
//! which puts it ahead of any marker EndTxn writes afterwards (KIP-890 part 1 verification — a late
//! write can never land after its transaction's marker and hang the partition).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use once_partition::TxnMarker;
use tokio::sync::OwnedMutexGuard;

use crate::error::TxnError;
use crate::state::{EndDecision, InitDecision, TopicPartition, TxnMetadata, TxnState};
use crate::store::TxnStore;

/// This coordinator's epoch, written in every marker. Once has one coordinator, so it never changes;
/// partitions still refuse markers of an older epoch than they have seen, and the broker refuses
/// WriteTxnMarkers naming a higher one (stored, it would fence every later marker of this coordinator).
pub const COORDINATOR_EPOCH: i32 = 0;

/// The crash point tests use: the process dies after PrepareCommit is durable, before any marker.
/// Only a build with the `test-hooks` feature has crash points ([`CRASH_POINTS_COMPILED`]).
pub const CRASH_AFTER_PREPARE_COMMIT: &str = "txn-after-prepare-commit";

/// Whether this build has the crash points at all (the `test-hooks` feature); without it
/// [`TxnConfig::crash_point`] is ignored.
pub const CRASH_POINTS_COMPILED: bool = cfg!(feature = "test-hooks");

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a marker was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// Refused for good, and nothing is left for the marker to end: the target has seen a newer
    /// producer epoch for the producer (INVALID_PRODUCER_EPOCH) and holds no open transaction of it.
    /// The coordinator abandons the marker and completes the transaction. This is Once's choice, not
    /// Kafka's (Kafka stops sending and leaves the transaction Prepare* for a newer coordinator); see
    /// docs/design/transactions.md, *Abandoned markers*. The writer must return it only when the
    /// target says nothing of the producer's transaction is open there.
    #[error("marker fenced: {0}")]
    Fenced(String),
    /// Anything else (storage, a closed partition, a full queue, a refusal while the producer still
    /// has a transaction open at the target): the coordinator retries.
    #[error("{0}")]
    Failed(String),
}

/// Where markers go. The broker implements it: topic partitions and consumer groups' offsets.
/// `Ok` also when the target no longer exists (a deleted topic has nothing left to end).
pub trait MarkerWriter: Send + Sync + 'static {
    fn write_partition_marker(
        &self,
        topic: &str,
        partition: i32,
        marker: TxnMarker,
    ) -> BoxFuture<Result<(), MarkerError>>;
    fn write_group_marker(&self, group: &str, marker: TxnMarker) -> BoxFuture<Result<(), MarkerError>>;
}

/// Hands out producer ids never used before.
pub type ProducerIdSource = Arc<dyn Fn() -> Result<i64, String> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// The transaction log's directory.
    pub dir: PathBuf,
    pub unsafe_skip_fsync: bool,
    /// transaction.max.timeout.ms: the largest transaction.timeout.ms a client may ask for.
    pub max_timeout_ms: i32,
    /// How often timed-out transactions are looked for (and failed markers retried).
    pub abort_check_interval: Duration,
    /// transactional.id.expiration.ms: an id idle (no transaction open) this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// A test hook: the crash point to die at (see [`CRASH_AFTER_PREPARE_COMMIT`]). Ignored unless
    /// built with the `test-hooks` feature.
    pub crash_point: Option<String>,
    /// Checkpoint the transaction log once it is larger than this and holds more than
    /// [`CHECKPOINT_RECORDS_PER_LIVE`] times the bytes of the live records.
    pub checkpoint_log_bytes_min: u64,
    /// Segment size of the transaction log; a checkpoint frees whole segments, so they are small.
    pub segment_bytes: u64,
}

/// A checkpoint rewrites every live record, so it waits until the log holds this many times the
/// live bytes: rewriting then costs at most a quarter of what was appended since the last one.
pub const CHECKPOINT_RECORDS_PER_LIVE: u64 = 4;

/// Bytes of one transaction log record, roughly (header, key, metadata with a few partitions).
const RECORD_BYTES_ESTIMATE: u64 = 200;

impl TxnConfig {
    pub fn new(dir: PathBuf) -> TxnConfig {
        TxnConfig {
            dir,
            unsafe_skip_fsync: false,
            max_timeout_ms: 900_000,
            abort_check_interval: Duration::from_secs(10),
            transactional_id_expiration_ms: 7 * 24 * 3600 * 1000,
            crash_point: None,
            checkpoint_log_bytes_min: 64 * 1024 * 1024,
            segment_bytes: 16 * 1024 * 1024,
        }
    }
}

/// One transactional id. `state` is `None` while the id is being created or after it was forgotten.
/// Changes hold the async `state` lock across their log writes; `view` is a copy of the installed
/// metadata behind a plain mutex, so Produce can verify and queue its appends without waiting on a
/// log write (see [`TxnCoordinator::with_verified`]).
#[derive(Default)]
struct SlotInner {
    state: Arc<tokio::sync::Mutex<Option<TxnMetadata>>>,
    view: Mutex<Option<TxnMetadata>>,
}

type Slot = Arc<SlotInner>;

impl SlotInner {
    fn with_metadata(metadata: TxnMetadata) -> SlotInner {
        SlotInner { state: Arc::new(tokio::sync::Mutex::new(Some(metadata.clone()))), view: Mutex::new(Some(metadata)) }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, Option<TxnMetadata>> {
        self.view.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct TxnCoordinator {
    config: TxnConfig,
    store: TxnStore,
    slots: Mutex<HashMap<String, Slot>>,
    producer_ids: ProducerIdSource,
    markers: OnceLock<Arc<dyn MarkerWriter>>,
    closed: AtomicBool,
    /// Transactions completed since start: committed, aborted (for metrics).
    completed: [AtomicU64; 2],
    /// A test hook: awaited by the next checkpoint right after it lists the ids, so a test can create
    /// an id exactly there.
    #[cfg(test)]
    checkpoint_listed: Mutex<Option<BoxFuture<()>>>,
}

/// A slot's state, locked for a change.
struct Locked<'a> {
    inner: &'a SlotInner,
    state: tokio::sync::MutexGuard<'a, Option<TxnMetadata>>,
}

impl Locked<'_> {
    async fn of(inner: &SlotInner) -> Locked<'_> {
        Locked { inner, state: inner.state.lock().await }
    }

    fn metadata(&self) -> Option<TxnMetadata> {
        self.state.clone()
    }
}

/// A transaction held locked after its producer was verified (see [`TxnCoordinator::lock_verified`]).
pub struct VerifiedTxn {
    guard: OwnedMutexGuard<Option<TxnMetadata>>,
}

impl VerifiedTxn {
    /// Whether the group was added to the ongoing transaction (AddOffsetsToTxn).
    pub fn has_group(&self, group: &str) -> bool {
        self.guard.as_ref().is_some_and(|metadata| metadata.groups.contains(group))
    }
}

/// What [`TxnCoordinator::operator_abort`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAbort {
    /// No such transactional id.
    Unknown,
    /// The id's producer is no longer the one expected: nothing was done.
    Changed { producer_id: i64, producer_epoch: i16 },
    /// Fenced: the state found (an Ongoing or PrepareAbort transaction was aborted, PrepareCommit
    /// completed as a commit), and the new producer id and epoch.
    Fenced { previous_state: TxnState, producer_id: i64, producer_epoch: i16 },
}

/// One transaction as the admin APIs describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub metadata: TxnMetadata,
}

/// The test crash: SIGKILL to ourselves, like `kill -9` (nothing flushed, no destructors); abort if
/// that is impossible.
#[cfg(feature = "test-hooks")]
fn crash_now() -> ! {
    let _ = std::process::Command::new("kill").arg("-9").arg(std::process::id().to_string()).status();
    std::process::abort()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

impl TxnCoordinator {
    /// Opens and replays the transaction log. Needs a tokio runtime; blocking file reads. Markers
    /// flow only after [`TxnCoordinator::start`].
    pub fn open(config: TxnConfig, producer_ids: ProducerIdSource) -> Result<Arc<TxnCoordinator>, TxnError> {
        let (store, entries) = TxnStore::open(&config.dir, config.unsafe_skip_fsync, config.segment_bytes)?;
        let slots =
            entries.into_iter().map(|(id, metadata)| (id, Arc::new(SlotInner::with_metadata(metadata)))).collect();
        Ok(Arc::new(TxnCoordinator {
            config,
            store,
            slots: Mutex::new(slots),
            producer_ids,
            markers: OnceLock::new(),
            closed: AtomicBool::new(false),
            completed: [AtomicU64::new(0), AtomicU64::new(0)],
            #[cfg(test)]
            checkpoint_listed: Mutex::new(None),
        }))
    }

    /// Connects the marker writer, finishes the transactions a crash left prepared, and starts the
    /// timer that aborts timed-out transactions.
    pub fn start(self: &Arc<Self>, markers: Arc<dyn MarkerWriter>) {
        if self.markers.set(markers).is_err() {
            panic!("the transaction coordinator is started once");
        }
        let coordinator = Arc::downgrade(self);
        let interval = self.config.abort_check_interval;
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(interval).await;
                }
                first = false;
                let Some(coordinator) = coordinator.upgrade() else { return };
                if coordinator.closed.load(Ordering::Acquire) {
                    return;
                }
                coordinator.tick().await;
            }
        });
    }

    /// Bytes of the transaction log's segments.
    pub fn log_bytes(&self) -> u64 {
        self.store.size_bytes()
    }

    pub fn max_timeout_ms(&self) -> i32 {
        self.config.max_timeout_ms
    }

    fn slot(&self, transactional_id: &str) -> Option<Slot> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(transactional_id).cloned()
    }

    fn slot_or_insert(&self, transactional_id: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(transactional_id.to_string())
            .or_default()
            .clone()
    }

    /// Whether `inner` is the id's slot in the map. Asked holding `inner`'s lock: only
    /// [`TxnCoordinator::forget`] removes a slot, and it holds the slot's lock, so the answer stays
    /// true until the lock is released. A caller that took the slot before `forget` and got the lock
    /// after must not create the id there: outside the map a checkpoint would not list it (its first
    /// record could fall below the checkpoint's start, and the id be lost at the next open), and a
    /// second caller would create the id again in a new slot, under another lock.
    fn is_mapped(&self, transactional_id: &str, inner: &Slot) -> bool {
        self.slot(transactional_id).is_some_and(|current| Arc::ptr_eq(&current, inner))
    }

    fn all_slots(&self) -> Vec<(String, Slot)> {
        let slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.iter().map(|(id, slot)| (id.clone(), slot.clone())).collect()
    }

    fn check_open(&self) -> Result<(), TxnError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TxnError::NotAvailable);
        }
        Ok(())
    }

    /// Persists `next` for `transactional_id`, then installs it (state and view).
    async fn persist(&self, transactional_id: &str, slot: &mut Locked<'_>, next: TxnMetadata) -> Result<(), TxnError> {
        self.check_open()?;
        self.store.write(transactional_id, Some(&next), next.last_update_ms).await?;
        *slot.inner.view() = Some(next.clone());
        *slot.state = Some(next);
        Ok(())
    }

    /// InitProducerId with a transactional id: the producer id and the new epoch. An ongoing
    /// transaction of an earlier incarnation is aborted first (fenced with a bumped epoch).
    /// `expected` is the (producer id, epoch) a KIP-360 client names, `None` for a new incarnation
    /// (see [`TxnMetadata::init_decision`] for who is fenced).
    pub async fn init_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        self.check_open()?;
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(TxnError::InvalidTransactionTimeout {
                requested_ms: timeout_ms,
                max_ms: self.config.max_timeout_ms,
            });
        }
        loop {
            let inner = self.slot_or_insert(transactional_id);
            let mut slot = Locked::of(&inner).await;
            // Only `forget` removes a slot, holding its lock: checked under the lock, the slot stays
            // in the map until this call ends (see `is_mapped`).
            if self.is_mapped(transactional_id, &inner) {
                return self.init_locked(transactional_id, &mut slot, timeout_ms, expected).await;
            }
        }
    }

    /// An operator's abort (`once txn abort --transactional-id`, the console): fences the id's
    /// producer with a new epoch, aborting its open transaction (a PrepareCommit one is completed as
    /// the commit it was decided to be) — InitProducerId as a new incarnation, under the id's lock.
    /// With `expected`, only if the producer id and epoch are still those (the transaction the
    /// operator saw); the state found is decided under the same lock, so the answer says what
    /// happened. An unknown id is left unknown.
    pub async fn operator_abort(
        &self,
        transactional_id: &str,
        expected: Option<(i64, i16)>,
    ) -> Result<OperatorAbort, TxnError> {
        self.check_open()?;
        loop {
            let Some(inner) = self.slot(transactional_id) else { return Ok(OperatorAbort::Unknown) };
            let mut slot = Locked::of(&inner).await;
            if !self.is_mapped(transactional_id, &inner) {
                continue; // forgotten meanwhile: look again
            }
            let Some(current) = slot.metadata() else { return Ok(OperatorAbort::Unknown) };
            let found = (current.producer_id, current.producer_epoch);
            if expected.is_some_and(|expected| expected != found) {
                return Ok(OperatorAbort::Changed { producer_id: found.0, producer_epoch: found.1 });
            }
            let (producer_id, producer_epoch) =
                self.init_locked(transactional_id, &mut slot, current.timeout_ms, None).await?;
            assert!(
                (producer_id, producer_epoch) != found,
                "fencing gives the id a new producer epoch (or a new producer id)"
            );
            return Ok(OperatorAbort::Fenced { previous_state: current.state, producer_id, producer_epoch });
        }
    }

    /// InitProducerId on the id's slot, locked and in the map.
    async fn init_locked(
        &self,
        transactional_id: &str,
        slot: &mut Locked<'_>,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        let Some(current) = slot.metadata() else {
            if expected.is_some() {
                return Err(TxnError::InvalidProducerIdMapping);
            }
            let producer_id = (self.producer_ids)().map_err(TxnError::Storage)?;
            let metadata = TxnMetadata::new(producer_id, timeout_ms, now_ms());
            self.persist(transactional_id, slot, metadata).await?;
            return Ok((producer_id, 0));
        };
        let requester = match current.init_decision(expected)? {
            InitDecision::Retry => return Ok((current.producer_id, current.producer_epoch)),
            InitDecision::Bump(requester) => requester,
        };
        if current.state.is_prepared() {
            self.complete(transactional_id, slot).await?;
        }
        if slot.metadata().is_some_and(|metadata| metadata.state == TxnState::Ongoing) {
            self.abort_fenced(transactional_id, slot).await?;
        }
        let settled = slot.metadata().expect("metadata stays while locked");
        if !settled.state.is_settled() {
            return Err(TxnError::ConcurrentTransactions);
        }
        let producer_ids = self.producer_ids.clone();
        let bumped = settled.bumped(requester, timeout_ms, now_ms(), || producer_ids().map_err(TxnError::Storage))?;
        let answer = (bumped.producer_id, bumped.producer_epoch);
        self.persist(transactional_id, slot, bumped).await?;
        Ok(answer)
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: adds the partitions and groups to the ongoing
    /// transaction (starting one if none is open).
    pub async fn add(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TopicPartition],
        groups: &[String],
    ) -> Result<(), TxnError> {
        self.check_open()?;
        let inner = self.slot(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
        let mut slot = Locked::of(&inner).await;
        let current = slot.metadata().ok_or(TxnError::InvalidProducerIdMapping)?;
        if let Some(next) = current.add(producer_id, producer_epoch, partitions, groups, now_ms())? {
            self.persist(transactional_id, &mut slot, next).await?;
        }
        Ok(())
    }

    /// EndTxn: commits or aborts. Answers once the decision is durable; by then the markers are
    /// normally written too (if one failed, the timer keeps retrying and the producer's next
    /// transaction waits with CONCURRENT_TRANSACTIONS).
    pub async fn end(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        self.check_open()?;
        let inner = self.slot(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
        let mut slot = Locked::of(&inner).await;
        let current = slot.metadata().ok_or(TxnError::InvalidProducerIdMapping)?;
        match current.end(producer_id, producer_epoch, commit, now_ms())? {
            EndDecision::AlreadyDone => Ok(()),
            EndDecision::Prepare(prepared) => {
                self.persist(transactional_id, &mut slot, prepared).await?;
                // Only with the `test-hooks` feature: a release binary has no crash points.
                #[cfg(feature = "test-hooks")]
                if commit && self.config.crash_point.as_deref() == Some(CRASH_AFTER_PREPARE_COMMIT) {
                    tracing::error!(transactional_id, "test crash point {CRASH_AFTER_PREPARE_COMMIT} reached");
                    crash_now();
                }
                if let Err(error) = self.complete(transactional_id, &mut slot).await {
                    tracing::warn!(transactional_id, %error, "transaction decided but not completed; retrying later");
                }
                Ok(())
            }
        }
    }

    /// Checks that `producer_id`/`producer_epoch` own the ongoing transaction of `transactional_id` and
    /// runs `queue` with its metadata while no change can be installed (Produce queues its appends
    /// there, so they reach each partition before any marker of this transaction: KIP-890 part 1).
    /// `queue` must not block: it runs under a plain mutex.
    pub fn with_verified<R>(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        queue: impl FnOnce(&TxnMetadata) -> R,
    ) -> Result<R, TxnError> {
        self.check_open()?;
        let inner = self.slot(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
        let view = inner.view();
        let current = view.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        current.check_producer(producer_id, producer_epoch)?;
        if current.state != TxnState::Ongoing {
            return Err(TxnError::InvalidTxnState(format!("the transaction is {}, not Ongoing", current.state.name())));
        }
        Ok(queue(current))
    }

    /// Locks the ongoing transaction of `transactional_id` after checking its producer, for a change
    /// that must complete before any marker (TxnOffsetCommit): hold the result until it is done.
    pub async fn lock_verified(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<VerifiedTxn, TxnError> {
        self.check_open()?;
        let inner = self.slot(transactional_id).ok_or(TxnError::InvalidProducerIdMapping)?;
        let guard = inner.state.clone().lock_owned().await;
        let current = guard.as_ref().ok_or(TxnError::InvalidProducerIdMapping)?;
        current.check_producer(producer_id, producer_epoch)?;
        if current.state != TxnState::Ongoing {
            return Err(TxnError::InvalidTxnState(format!("the transaction is {}, not Ongoing", current.state.name())));
        }
        Ok(VerifiedTxn { guard })
    }

    /// Fences the ongoing transaction: bump the epoch, abort with it. The lock is held.
    async fn abort_fenced(&self, transactional_id: &str, slot: &mut Locked<'_>) -> Result<(), TxnError> {
        let current = slot.metadata().expect("metadata stays while locked");
        let fenced = current.fenced_abort(now_ms());
        tracing::info!(
            transactional_id,
            producer_id = fenced.producer_id,
            epoch = fenced.producer_epoch,
            "aborting a fenced or timed-out transaction"
        );
        self.persist(transactional_id, slot, fenced).await?;
        self.complete(transactional_id, slot).await
    }

    /// Writes the markers of a prepared transaction, then Complete*. The lock is held. A marker
    /// refused as [`MarkerError::Fenced`] is abandoned (logged, also when others failed); any other
    /// failure leaves the transaction prepared for the timer to retry.
    async fn complete(&self, transactional_id: &str, slot: &mut Locked<'_>) -> Result<(), TxnError> {
        let prepared = slot.metadata().expect("metadata stays while locked");
        assert!(prepared.state.is_prepared(), "only prepared transactions complete");
        let markers = self.markers.get().ok_or(TxnError::NotAvailable)?.clone();
        let marker = TxnMarker {
            producer_id: prepared.producer_id,
            producer_epoch: prepared.producer_epoch,
            coordinator_epoch: COORDINATOR_EPOCH,
            commit: prepared.state == TxnState::PrepareCommit,
        };
        let mut writes = tokio::task::JoinSet::new();
        for (topic, partition) in &prepared.partitions {
            writes.spawn(markers.write_partition_marker(topic, *partition, marker));
        }
        for group in &prepared.groups {
            writes.spawn(markers.write_group_marker(group, marker));
        }
        let mut failures = Vec::new();
        let mut abandoned = Vec::new();
        while let Some(outcome) = writes.join_next().await {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(MarkerError::Fenced(reason))) => abandoned.push(reason),
                Ok(Err(MarkerError::Failed(error))) => failures.push(error),
                Err(error) => failures.push(error.to_string()),
            }
        }
        if !abandoned.is_empty() {
            tracing::warn!(
                transactional_id,
                producer_id = marker.producer_id,
                epoch = marker.producer_epoch,
                commit = marker.commit,
                refused = %abandoned.join("; "),
                "markers refused as fenced are abandoned: a newer producer epoch reached the target and \
                 nothing of this transaction is open there"
            );
        }
        if !failures.is_empty() {
            return Err(TxnError::Storage(format!("writing markers: {}", failures.join("; "))));
        }
        self.persist(transactional_id, slot, prepared.completed(now_ms())).await?;
        self.completed[usize::from(!marker.commit)].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Transactions completed since start, (committed, aborted): their markers written and
    /// Complete* durable.
    pub fn completed(&self) -> (u64, u64) {
        (self.completed[0].load(Ordering::Relaxed), self.completed[1].load(Ordering::Relaxed))
    }

    /// One run of the timer: complete prepared transactions (after a restart or a failed marker),
    /// abort timed-out ones, forget long-idle ids.
    async fn tick(&self) {
        let now = now_ms();
        for (transactional_id, inner) in self.all_slots() {
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let mut slot = Locked::of(&inner).await;
            let Some(metadata) = slot.metadata() else { continue };
            let outcome = if metadata.state.is_prepared() {
                self.complete(&transactional_id, &mut slot).await
            } else if metadata.is_expired(now) {
                self.abort_fenced(&transactional_id, &mut slot).await
            } else if metadata.state.is_settled()
                && now.saturating_sub(metadata.last_update_ms) > self.config.transactional_id_expiration_ms
            {
                self.forget(&transactional_id, &mut slot).await
            } else {
                Ok(())
            };
            if let Err(error) = outcome {
                tracing::warn!(transactional_id, %error, "transaction timer step failed; retrying next tick");
            }
        }
        if let Err(error) = self.checkpoint_if_needed().await {
            tracing::warn!(%error, "checkpointing the transaction log failed; retrying next tick");
        }
    }

    /// Bounds the transaction log: when it is large and mostly superseded records, appends every
    /// live id's current record again (each queued under its id's lock, so a later change of that id
    /// still comes after it) and, once they are durable, drops the segments below the first. A crash
    /// in between leaves old segments that replay overrides with the checkpoint: nothing is lost.
    async fn checkpoint_if_needed(&self) -> Result<bool, TxnError> {
        let size = self.store.size_bytes();
        // The start is read before the ids are listed: an id missing from the list was created after
        // it, so its records lie at or above the start and survive `drop_below(start)`. Listed first,
        // an id created in between could have its only record below the start, never replayed again.
        let start = self.store.log_end_offset();
        let slots = self.all_slots();
        #[cfg(test)]
        {
            let pause = self.checkpoint_listed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(pause) = pause {
                pause.await;
            }
        }
        let live_bytes = slots.len() as u64 * RECORD_BYTES_ESTIMATE;
        if size <= self.config.checkpoint_log_bytes_min || size <= live_bytes * CHECKPOINT_RECORDS_PER_LIVE {
            return Ok(false);
        }
        let mut pending = Vec::with_capacity(slots.len());
        for (transactional_id, inner) in slots {
            self.check_open()?;
            let slot = Locked::of(&inner).await;
            if let Some(metadata) = slot.metadata() {
                pending.push(self.store.queue(&transactional_id, Some(&metadata), now_ms())?);
            }
        }
        for written in pending {
            let offset = written.await?;
            assert!(offset >= start, "checkpoint records follow the checkpoint start");
        }
        self.store.drop_below(start).await?;
        tracing::info!(
            log_bytes_before = size,
            log_bytes_after = self.store.size_bytes(),
            log_start_offset = self.store.log_start_offset(),
            "transaction log checkpointed"
        );
        Ok(true)
    }

    async fn forget(&self, transactional_id: &str, slot: &mut Locked<'_>) -> Result<(), TxnError> {
        self.check_open()?;
        self.store.write(transactional_id, None, now_ms()).await?;
        *slot.inner.view() = None;
        *slot.state = None;
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slots.get(transactional_id).is_some_and(|current| std::ptr::eq(Arc::as_ptr(current), slot.inner)) {
            slots.remove(transactional_id);
        }
        tracing::info!(transactional_id, "transactional id expired");
        Ok(())
    }

    /// Every known transaction (ListTransactions), by transactional id.
    pub fn list(&self) -> Vec<TxnDescription> {
        let mut described: Vec<TxnDescription> = self
            .all_slots()
            .into_iter()
            .filter_map(|(transactional_id, inner)| {
                let metadata = inner.view().clone()?;
                Some(TxnDescription { transactional_id, metadata })
            })
            .collect();
        described.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        described
    }

    /// One transaction (DescribeTransactions), `None` if the id is unknown.
    pub fn describe(&self, transactional_id: &str) -> Option<TxnMetadata> {
        self.slot(transactional_id)?.view().clone()
    }

    /// Stops the timer and closes the log cleanly. Requests after this get COORDINATOR_NOT_AVAILABLE.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Err(error) = self.store.close().await {
            tracing::warn!(%error, "closing the transaction log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use super::*;

    fn open(dir: &std::path::Path, ids: &Arc<AtomicI64>) -> Arc<TxnCoordinator> {
        let mut config = TxnConfig::new(dir.to_path_buf());
        config.checkpoint_log_bytes_min = 0;
        let ids = ids.clone();
        TxnCoordinator::open(config, Arc::new(move || Ok(ids.fetch_add(1, Ordering::SeqCst)))).expect("opens")
    }

    /// Issue 13 item 5: an id created while a checkpoint begins (after it listed the ids) must not
    /// end up below the checkpoint's start, where the next open would never read it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_created_while_a_checkpoint_begins_survives_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = Arc::new(AtomicI64::new(1));
        let coordinator = open(dir.path(), &ids);
        for _ in 0..20 {
            coordinator.init_producer_id("busy", 10_000, None).await.expect("init");
        }
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        *coordinator.checkpoint_listed.lock().unwrap() = Some(Box::pin(async move {
            let _ = listed_tx.send(());
            let _ = go_rx.await;
        }));
        let checkpointing = coordinator.clone();
        let checkpoint = tokio::spawn(async move { checkpointing.checkpoint_if_needed().await });
        listed_rx.await.expect("the checkpoint listed the ids");
        let late = coordinator.init_producer_id("late", 10_000, None).await.expect("init while checkpointing");
        go_tx.send(()).expect("the checkpoint waits");
        assert_eq!(checkpoint.await.expect("joins"), Ok(true), "a checkpoint ran");
        assert!(coordinator.store.log_start_offset() > 0, "the checkpoint moved the log start");
        coordinator.close().await;
        drop(coordinator);

        let reopened = open(dir.path(), &ids);
        let found = reopened.describe("late").map(|metadata| (metadata.producer_id, metadata.producer_epoch));
        assert_eq!(found, Some(late), "the id created during the checkpoint is known after the next open");
        assert_eq!(reopened.describe("busy").map(|metadata| metadata.producer_epoch), Some(19));
    }

    /// Review of issue 13 item 5: an InitProducerId that took an id's slot just before the id expired
    /// (`forget` removes the slot) must not create the id in a slot outside the map. There its record
    /// could fall below a checkpoint's start while the checkpoint lists no such id; and a second
    /// InitProducerId, finding no slot, would create the same id again under a lock of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_init_racing_the_expiry_of_its_id_creates_it_once_in_the_map() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = Arc::new(AtomicI64::new(1));
        let coordinator = open(dir.path(), &ids);
        coordinator.init_producer_id("t", 10_000, None).await.expect("init");
        let old = coordinator.slot("t").expect("a slot");
        let mut expiring = Locked::of(&old).await;
        // The first init takes the old slot and waits for its lock, held by the expiry.
        let first = {
            let coordinator = coordinator.clone();
            tokio::spawn(async move { coordinator.init_producer_id("t", 10_000, None).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&old) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "the first init never took the slot");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        coordinator.forget("t", &mut expiring).await.expect("forgets");
        // A second init arrives after the expiry and completes while the first still waits.
        let second = coordinator.init_producer_id("t", 10_000, None).await.expect("second init");
        drop(expiring);
        let first = first.await.expect("joins").expect("first init");
        assert_eq!(first.0, second.0, "one producer id for the id, not one per racing init");
        assert_eq!(first.1, second.1 + 1, "the later init bumps the epoch of the earlier one");
        let installed = coordinator.describe("t").map(|metadata| (metadata.producer_id, metadata.producer_epoch));
        assert_eq!(installed, Some(first), "the map holds what the last init answered");
        coordinator.close().await;
        drop(coordinator);
        let reopened = open(dir.path(), &ids);
        let replayed = reopened.describe("t").map(|metadata| (metadata.producer_id, metadata.producer_epoch));
        assert_eq!(replayed, Some(first), "the log holds what memory held");
    }
}
