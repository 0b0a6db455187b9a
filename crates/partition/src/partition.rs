//! The partition handle: one writer task, many readers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use once_log::{AppendInfo, Log, LogConfig, ValidBatch};
use tokio::sync::{mpsc, oneshot, watch};

use crate::dedup::TopicDedup;
use crate::error::PartitionError;
use crate::producer_state::ProducerStates;
use crate::read::Isolation;
use crate::replay;
use crate::txn::{AbortedTxn, ProducerSummary, TxnMarker};
use crate::writer::{self, Command};

/// Bound on append requests waiting for the writer: past it, produce gets a retriable error.
const QUEUED_APPENDS_MAX: usize = 4096;

/// Longest a transaction marker waits for room in a full queue. Markers are not refused for room
/// (the coordinator has decided; a refused marker holds the last stable offset until its timer), but
/// the wait is bounded: past it the marker fails with [`PartitionError::MarkerQueueTimeout`].
#[cfg(not(test))]
const MARKER_QUEUE_WAIT_MAX: Duration = Duration::from_secs(10);
/// The unit tests reach the bound quickly.
#[cfg(test)]
const MARKER_QUEUE_WAIT_MAX: Duration = Duration::from_millis(300);

/// Topic name and partition index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub partition: i32,
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// State shared by the writer and the readers.
pub(crate) struct Shared {
    pub(crate) id: PartitionId,
    /// Readers lock it only to read; the writer holds it to append, never across an fsync.
    /// `None` once the partition is closed or deleted.
    pub(crate) log: Mutex<Option<Log>>,
    /// Held while a recovery checkpoint is written (outside the log lock), and by a stop before it
    /// takes the log: no checkpoint lands in the directory after the log is closed or deleted.
    pub(crate) checkpoint_writer: Mutex<()>,
    /// End of the durable log: what consumers may read. Long polls wait on it.
    pub(crate) high_watermark: watch::Sender<u64>,
    /// What read_committed consumers may read: below the earliest open transaction and the high
    /// watermark. Published before the high watermark moves, so a fetch woken by the high watermark
    /// sees the matching value; only ever raised.
    pub(crate) last_stable_offset: AtomicU64,
    /// Producer state and transactions. Only the writer changes it, always together with the log
    /// (and retention, which prunes aborted transactions it deleted).
    pub(crate) producers: Mutex<ProducerStates>,
    /// The log directory, where the producer-state snapshot lives too.
    pub(crate) dir: PathBuf,
    /// The log start offset, published so that answering a request never waits on the log lock.
    pub(crate) log_start_offset: AtomicU64,
    /// Set when a writer round panicked: what it appended is in an unknown state, so the partition
    /// refuses appends (KAFKA_STORAGE_ERROR) until a restart recovers it, like a latched log.
    pub(crate) failed: AtomicBool,
    /// The topic's message-id index, shared with its other partitions; `None` without dedup.
    pub(crate) dedup: Option<Arc<TopicDedup>>,
    /// Records not stored because their message id was a duplicate (counted once durable).
    pub(crate) duplicates_dropped: AtomicU64,
    /// Batches refused because an id was held by an open transaction or a write in flight.
    pub(crate) dedup_refusals: AtomicU64,
}

impl Shared {
    pub(crate) fn lock_log(&self) -> MutexGuard<'_, Option<Log>> {
        // A panic while holding the lock would be a bug; the log's own state is still consistent
        // (every mutation is written before the in-memory state moves), so keep serving.
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn lock_producers(&self) -> MutexGuard<'_, ProducerStates> {
        self.producers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes the last stable offset for `earliest_open`, the first offset of the earliest open
    /// transaction, capped at `bound` (what is durable and at most the high watermark). Returns the
    /// value now published: never lower than before, since a transaction opens only at the log end.
    pub(crate) fn publish_last_stable_offset(&self, earliest_open: Option<u64>, bound: u64) -> u64 {
        let log_start_offset = self.log_start_offset.load(Ordering::Acquire);
        let stable = stable_offset(earliest_open, log_start_offset, bound);
        assert!(stable <= bound, "the last stable offset {stable} is at most its bound {bound}");
        self.last_stable_offset.fetch_max(stable, Ordering::AcqRel).max(stable)
    }

    /// Runs `f` on the open log, or fails with [`PartitionError::Closed`].
    pub(crate) fn with_log<T>(
        &self,
        f: impl FnOnce(&mut Log) -> Result<T, PartitionError>,
    ) -> Result<T, PartitionError> {
        match self.lock_log().as_mut() {
            Some(log) => f(log),
            None => Err(PartitionError::Closed(self.id.to_string())),
        }
    }
}

/// The last stable offset: the first offset of the earliest open transaction, but not below the log
/// start (what retention deleted cannot be read anyway, as in Kafka), and at most `bound`.
fn stable_offset(earliest_open: Option<u64>, log_start_offset: u64, bound: u64) -> u64 {
    earliest_open.map_or(bound, |first_offset| first_offset.max(log_start_offset).min(bound))
}

/// The offset after the last batch of `records` (whole batches as the log returns them), at least `from`.
pub(crate) fn end_of_batches(from: u64, records: &[u8]) -> Result<u64, PartitionError> {
    let mut end = from;
    let mut position = 0;
    while position < records.len() {
        let header = once_log::BatchHeader::parse(&records[position..])?;
        end = end.max(u64::try_from(header.last_offset()).unwrap_or(0) + 1);
        position += header.total_len();
    }
    Ok(end)
}

/// Where an appended batch is, once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// The batch was a retry of one already in the log: nothing was appended, and the offsets are the
    /// original's.
    pub duplicate: bool,
    /// What the produce answer reports as the base offset (deduplication may have dropped records).
    pub answer: OffsetAnswer,
    /// Records of this batch not stored because their message id was a duplicate.
    pub duplicates_dropped: u32,
}

/// The base offset a produce answer reports, so that the offsets a client derives from it (record `i`
/// at base offset + `i`) are never wrong (`docs/design/dedup.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetAnswer {
    /// Every record is where the batch's base offset says: report it.
    Stored,
    /// Every record was a duplicate, and the originals lie at consecutive offsets of this partition
    /// in record order, from `base_offset`: report that.
    Originals { base_offset: u64 },
    /// A one-record batch whose record was a duplicate of one stored in another partition of the
    /// topic (the partitions were added to, or the producer chose another): no offset of this
    /// partition locates it, so a Kafka answer reports it unknown as below; the HTTP edge reads the
    /// original there.
    Elsewhere { partition: i32, offset: u64 },
    /// Records were dropped and no base offset locates the batch's records: report one that makes
    /// every derived offset negative (see [`Appended::answer_base_offset`]).
    Unknown,
}

impl Appended {
    /// The base offset for the produce response. When it is unknown: minus the batch's record
    /// count, so that base + `i` is negative for every record `i`. (-1 alone is not enough: only
    /// the Java client reads -1 as "unknown" for the whole batch; librdkafka, franz-go and sarama
    /// number the records -1, 0, 1, … — real offsets of other records.)
    pub fn answer_base_offset(&self) -> i64 {
        match self.answer {
            OffsetAnswer::Stored => self.base_offset as i64,
            OffsetAnswer::Originals { base_offset } => base_offset as i64,
            OffsetAnswer::Unknown | OffsetAnswer::Elsewhere { .. } => {
                -((self.last_offset - self.base_offset + 1) as i64)
            }
        }
    }
}

impl From<&AppendInfo> for Appended {
    fn from(info: &AppendInfo) -> Self {
        Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            max_timestamp: info.max_timestamp,
            duplicate: false,
            answer: OffsetAnswer::Stored,
            duplicates_dropped: 0,
        }
    }
}

/// A partition of a topic, as the broker sees it.
pub struct Partition {
    pub(crate) shared: Arc<Shared>,
    appends: mpsc::Sender<Command>,
}

impl Partition {
    /// Opens (and recovers) the log in `dir` and starts its writer. Must run inside a tokio runtime.
    pub fn open(id: PartitionId, dir: &Path, config: LogConfig) -> Result<Partition, PartitionError> {
        Partition::open_with_dedup(id, dir, config, None)
    }

    /// Like [`Partition::open`], for a partition of a topic with message-id deduplication: its
    /// writer drops records whose id `dedup` already stores. The caller then replays the partitions'
    /// logs into the index ([`TopicDedup::rebuild`]) before any append.
    pub fn open_with_dedup(
        id: PartitionId,
        dir: &Path,
        config: LogConfig,
        dedup: Option<Arc<TopicDedup>>,
    ) -> Result<Partition, PartitionError> {
        let log = Log::open(dir, config)?;
        let producers = replay::rebuild(dir, &log)?;
        let high_watermark = log.durable_end_offset();
        let earliest_open = producers.transactions().earliest_open_offset();
        let last_stable_offset = stable_offset(earliest_open, log.log_start_offset(), high_watermark);
        let log_start_offset = AtomicU64::new(log.log_start_offset());
        let (high_watermark, _) = watch::channel(high_watermark);
        let shared = Arc::new(Shared {
            id,
            log: Mutex::new(Some(log)),
            high_watermark,
            last_stable_offset: AtomicU64::new(last_stable_offset),
            producers: Mutex::new(producers),
            dir: dir.to_path_buf(),
            log_start_offset,
            failed: AtomicBool::new(false),
            checkpoint_writer: Mutex::new(()),
            dedup,
            duplicates_dropped: AtomicU64::new(0),
            dedup_refusals: AtomicU64::new(0),
        });
        let (appends, queue) = mpsc::channel(QUEUED_APPENDS_MAX);
        tokio::spawn(writer::run(shared.clone(), queue));
        Ok(Partition { shared, appends })
    }

    pub fn id(&self) -> &PartitionId {
        &self.shared.id
    }

    /// Validates one record batch (`once_log::ValidBatch::validate`) and appends it
    /// ([`Partition::append_valid`]); a batch the log's validation refuses fails at once, queueing
    /// nothing. For callers holding bytes; the produce path validates at its edge instead.
    pub fn append(
        &self,
        batch: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Appended, PartitionError>> + Send + 'static {
        let queued = ValidBatch::validate(batch).map(|batch| self.append_valid(batch));
        async move { queued?.await }
    }

    /// Queues one validated record batch for the writer *now* (so appends keep the order of calls)
    /// and returns a future that resolves once the batch is durable (fdatasync) — or with the reason
    /// it is not. Nothing below parses the batch's header again: the writer, the dedup index and the
    /// log use the header the validation parsed.
    ///
    /// On a topic that deduplicates, the batch's message ids are extracted and looked up here, once
    /// the queue has room for it, while the writer may be busy with earlier rounds: its round then only
    /// reserves them (`TopicDedup::look_ahead`).
    pub fn append_valid(
        &self,
        batch: ValidBatch,
    ) -> impl std::future::Future<Output = Result<Appended, PartitionError>> + Send + 'static {
        self.queue_append(batch, true)
    }

    /// [`Partition::append_valid`] with nothing done ahead: for a caller that holds a lock while it
    /// queues (a transactional append, verified under its transaction's lock), which the work of a
    /// look-ahead would hold up. The round does it all.
    pub fn append_valid_in_round(
        &self,
        batch: ValidBatch,
    ) -> impl std::future::Future<Output = Result<Appended, PartitionError>> + Send + 'static {
        self.queue_append(batch, false)
    }

    fn queue_append(
        &self,
        batch: ValidBatch,
        look_ahead: bool,
    ) -> impl std::future::Future<Output = Result<Appended, PartitionError>> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let queued = self.slot().map(|slot| {
            let dedup = self.shared.dedup.as_ref().filter(|_| look_ahead);
            let ahead = dedup.and_then(|dedup| dedup.look_ahead(&batch)).map(Box::new);
            slot.send(Command::Append { batch, ahead, reply });
        });
        self.outcome(queued, outcome)
    }

    /// Queues a transaction marker (a control batch) behind every append queued before it; resolves
    /// once it is durable. It ends the producer's open transaction (committing or aborting it).
    ///
    /// Unlike an append, a marker is not refused when the queue is full: it waits for room, up to
    /// `MARKER_QUEUE_WAIT_MAX`, and takes the first slot freed: the channel hands freed room to
    /// waiting senders in order, so appends arriving while it waits find the queue full and are
    /// refused (`Busy`), and only markers already waiting land before it. What was queued before it
    /// lands before it; a transaction's own batches were all queued before the coordinator decided.
    pub fn write_marker(
        &self,
        marker: TxnMarker,
    ) -> impl std::future::Future<Output = Result<Appended, PartitionError>> + Send + 'static {
        let (reply, outcome) = oneshot::channel();
        let name = self.shared.id.to_string();
        let waiting = match self.appends.try_send(Command::Marker { marker, reply }) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(command)) => Some(Ok((command, self.appends.clone()))),
            Err(mpsc::error::TrySendError::Closed(_)) => Some(Err(PartitionError::Closed(name.clone()))),
        };
        async move {
            if let Some(waiting) = waiting {
                let (command, appends) = waiting?;
                tracing::debug!(partition = %name, "append queue full; the marker waits for room");
                appends.send_timeout(command, MARKER_QUEUE_WAIT_MAX).await.map_err(|error| match error {
                    mpsc::error::SendTimeoutError::Timeout(_) => {
                        let waited_ms = MARKER_QUEUE_WAIT_MAX.as_millis() as u64;
                        tracing::warn!(partition = %name, waited_ms, "append queue stayed full; marker not written");
                        PartitionError::MarkerQueueTimeout { partition: name.clone(), waited_ms }
                    }
                    mpsc::error::SendTimeoutError::Closed(_) => PartitionError::Closed(name.clone()),
                })?;
            }
            outcome.await.map_err(|_| PartitionError::Closed(name))?
        }
    }

    /// Room in the writer's queue, taken *now*; the command is sent into it before the caller's
    /// append returns (so one caller's appends keep the order of its calls). The command is built
    /// once the room is taken, so a refused append costs nothing more (a look-ahead's work is not done
    /// for nothing). The partition's name is formatted only for an error (once per append, it showed
    /// in the profile of latency-bound senders).
    fn slot(&self) -> Result<mpsc::Permit<'_, Command>, PartitionError> {
        self.appends.try_reserve().map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => PartitionError::Busy(self.shared.id.to_string()),
            mpsc::error::TrySendError::Closed(()) => PartitionError::Closed(self.shared.id.to_string()),
        })
    }

    /// The answer to a command sent in a [`Partition::slot`] with `outcome`'s sender (or the
    /// reason it was not queued).
    fn outcome(
        &self,
        queued: Result<(), PartitionError>,
        outcome: oneshot::Receiver<Result<Appended, PartitionError>>,
    ) -> impl std::future::Future<Output = Result<Appended, PartitionError>> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            queued?;
            outcome.await.map_err(|_| PartitionError::Closed(shared.id.to_string()))?
        }
    }

    /// The last stable offset: the first offset of the earliest open transaction, at most the high
    /// watermark. read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> u64 {
        let published = self.shared.last_stable_offset.load(Ordering::Acquire);
        // The writer publishes the last stable offset just before it raises the high watermark: between
        // the two, the published value may be above the high watermark read here.
        published.min(self.high_watermark())
    }

    /// Aborted transactions overlapping `[from, upper)`: those whose abort marker is at or after
    /// `from` and whose first offset is below `upper`, in first-offset order.
    ///
    /// For inspection and tests only: never combine it with a separate [`Partition::read`] to serve
    /// a read_committed fetch. Retention may delete the batches' segment and prune their entries
    /// between the two calls, and the consumer would take aborted records for committed ones; use
    /// [`Partition::read_committed`], which takes the list only while no entry of its records can have
    /// been pruned (`read.rs`).
    pub fn aborted_transactions(&self, from: u64, upper: u64) -> Vec<AbortedTxn> {
        self.shared.lock_producers().transactions().aborted_overlapping(from, upper)
    }

    /// Every producer this partition remembers (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.shared.lock_producers().summaries()
    }

    pub fn high_watermark(&self) -> u64 {
        *self.shared.high_watermark.borrow()
    }

    /// A receiver that changes whenever the high watermark moves (for long-polling fetches).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.shared.high_watermark.subscribe()
    }

    /// The log start offset (0 once closed: only a deleted topic's stragglers ask then).
    pub fn log_start_offset(&self) -> u64 {
        self.shared.log_start_offset.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> u64 {
        self.shared.with_log(|log| Ok(log.log_end_offset())).unwrap_or(0)
    }

    /// Whole batches from `offset`, at most `max_bytes` (but at least one batch), below the high watermark.
    /// Blocking (file reads): call from a blocking context.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<u8>, PartitionError> {
        self.read_below(offset, max_bytes, self.high_watermark())
    }

    /// Like [`Partition::read`], below an `upper_bound` the caller read earlier (at most the high
    /// watermark), so a response never holds records above the high watermark it reports. The file
    /// reads are made without the log lock (`read.rs`).
    pub fn read_below(&self, offset: u64, max_bytes: usize, upper_bound: u64) -> Result<Vec<u8>, PartitionError> {
        let read = self.read_unlocked(offset, max_bytes, Isolation::ReadUncommitted, false, |_| upper_bound)?;
        Ok(read.records.into())
    }

    /// A read_committed read: whole batches from `offset` below `upper_bound` (the last stable offset
    /// the caller read, at most the high watermark), as [`Partition::read_below`], and the aborted
    /// transactions overlapping them; consistent with each other although the file reads are made
    /// without the log lock (`read.rs`). Blocking (file reads): call from a blocking context.
    pub fn read_committed(
        &self,
        offset: u64,
        max_bytes: usize,
        upper_bound: u64,
    ) -> Result<(Vec<u8>, Vec<AbortedTxn>), PartitionError> {
        let read = self.read_unlocked(offset, max_bytes, Isolation::ReadCommitted, false, |_| upper_bound)?;
        Ok((read.records.into(), read.aborted.expect("read_committed reads take the aborted transactions")))
    }

    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>, PartitionError> {
        // Planned under the lock, the headers read after it (as fetches read: `read.rs`).
        let plan = self.shared.with_log(|log| Ok(log.plan_offset_for_timestamp(timestamp_ms)))?;
        let found = plan.execute()?;
        let high_watermark = self.high_watermark();
        Ok(found.filter(|(offset, _)| *offset < high_watermark))
    }

    pub fn max_timestamp(&self) -> Option<(u64, i64)> {
        let high_watermark = self.high_watermark();
        self.shared
            .with_log(|log| Ok(log.max_timestamp()))
            .ok()
            .flatten()
            .filter(|(offset, _)| *offset < high_watermark)
    }

    pub fn size_bytes(&self) -> u64 {
        self.shared.with_log(|log| Ok(log.size_bytes())).unwrap_or(0)
    }

    pub fn set_config(&self, config: LogConfig) {
        let _ = self.shared.with_log(|log| {
            log.set_config(config);
            Ok(())
        });
    }

    /// Deletes segments past retention, and the aborted transactions whose marker went with them.
    /// Blocking (file deletion).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, PartitionError> {
        self.shared.with_log(|log| {
            let deleted = log.apply_retention(now_ms)?;
            self.after_log_start_moved(log);
            Ok(deleted)
        })
    }

    /// Advances the log start offset to `offset` (at most the log end), deleting every whole segment
    /// below it (DeleteRecords; the internal logs use it to drop what a checkpoint superseded).
    /// Blocking (file deletion).
    pub fn advance_log_start_offset(&self, offset: u64) -> Result<(), PartitionError> {
        self.shared.with_log(|log| {
            log.advance_log_start_offset(offset)?;
            self.after_log_start_moved(log);
            Ok(())
        })
    }

    /// Publishes a moved log start offset and drops the transaction state that went with it.
    fn after_log_start_moved(&self, log: &Log) {
        let log_start_offset = log.log_start_offset();
        self.shared.log_start_offset.store(log_start_offset, Ordering::Release);
        if let Some(dedup) = &self.shared.dedup {
            // Ids of deleted records are dead at once (freed by the index's expiry).
            dedup.set_log_start_offset(self.shared.id.partition, log_start_offset);
        }
        let earliest_open = {
            let mut producers = self.shared.lock_producers();
            producers.prune_aborted(log_start_offset);
            producers.transactions().earliest_open_offset()
        };
        // An open transaction whose start was deleted no longer holds the stable offset below the log
        // start. Only that: producer state may already include staged writes not yet durable (a marker
        // among them must not let the stable offset pass its transaction), so the stable offset moves
        // at most up to the log start here; the writer moves it past that as syncs complete.
        let current = self.shared.last_stable_offset.load(Ordering::Acquire);
        let bound = current.max(log_start_offset).min(self.high_watermark());
        self.shared.publish_last_stable_offset(earliest_open, bound);
    }

    /// Forgets producers idle longer than `expiration_ms` (by their last batch timestamp), except those
    /// with an open transaction.
    pub fn expire_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.shared.lock_producers().expire(now_ms, expiration_ms)
    }

    /// Records not stored since the partition opened because their message id was a duplicate.
    pub fn duplicates_dropped(&self) -> u64 {
        self.shared.duplicates_dropped.load(Ordering::Relaxed)
    }

    /// Batches refused (retriably) since the partition opened because a message id was held by an
    /// open transaction or a write in flight.
    pub fn dedup_refusals(&self) -> u64 {
        self.shared.dedup_refusals.load(Ordering::Relaxed)
    }

    /// The topic's dedup index, if the topic deduplicates.
    pub fn dedup(&self) -> Option<&Arc<TopicDedup>> {
        self.shared.dedup.as_ref()
    }

    /// How many producers this partition remembers.
    pub fn producer_count(&self) -> usize {
        self.shared.lock_producers().len()
    }

    pub fn is_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire) || self.shared.with_log(|log| Ok(log.is_failed())).unwrap_or(false)
    }

    /// Writes the log's recovery checkpoint if the durable part of its active segment grew by at least
    /// `min_bytes` since the last ([`Log::recovery_checkpoint_due`]): the file is written outside the
    /// log lock, so the writer goes on meanwhile. Returns whether one was written. Blocking (fsync).
    pub fn write_recovery_checkpoint(&self, min_bytes: u64) -> Result<bool, PartitionError> {
        let _writing = self.shared.checkpoint_writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(checkpoint) = self.shared.with_log(|log| Ok(log.recovery_checkpoint_due(min_bytes)))? else {
            return Ok(false);
        };
        checkpoint.write()?;
        self.shared.with_log(|log| {
            log.recovery_checkpoint_written(&checkpoint);
            Ok(true)
        })
    }

    /// Answers what is queued, then closes the log cleanly (flush, indexes, clean-shutdown marker).
    /// Appends after this get [`PartitionError::Closed`].
    pub async fn close(&self) -> Result<(), PartitionError> {
        self.stop(false).await
    }

    /// Like [`Partition::close`], then deletes the partition's files.
    pub async fn delete(&self) -> Result<(), PartitionError> {
        self.stop(true).await
    }

    async fn stop(&self, delete: bool) -> Result<(), PartitionError> {
        let (reply, outcome) = oneshot::channel();
        let closed = || PartitionError::Closed(self.shared.id.to_string());
        self.appends.send(Command::Stop { delete, reply }).await.map_err(|_| closed())?;
        let stopped = outcome.await.map_err(|_| closed())?;
        // Wake every long poll waiting on this partition (its value unchanged): its next read finds
        // the partition closed and answers now, instead of at its max wait.
        self.shared.high_watermark.send_modify(|_| ());
        stopped
    }
}

#[cfg(test)]
mod tests {
    use once_log::testing::make_batch;

    use super::*;

    /// A marker waits for room in a full queue, but not forever. Here the writer is stuck (this test
    /// holds the log lock it stages under): an append is refused at once, a marker fails with
    /// `MarkerQueueTimeout` after the bound, and a marker still waiting when the writer moves again is
    /// written, behind everything queued before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_marker_waits_for_room_at_most_its_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = PartitionId { topic: "t".into(), partition: 0 };
        let partition = Partition::open(id, dir.path(), LogConfig::default()).expect("open");
        let marker = TxnMarker { producer_id: 7, producer_epoch: 0, coordinator_epoch: 0, commit: false };
        // Another thread holds the log lock until told to let go.
        let (locked_tx, locked) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let shared = partition.shared.clone();
            std::thread::spawn(move || {
                let _stuck = shared.lock_log();
                locked_tx.send(()).expect("the test waits");
                let _ = release_rx.recv();
            })
        };
        locked.recv().expect("the log lock is held");
        let first = partition.append(make_batch(1, 8, 0));
        while partition.appends.capacity() < QUEUED_APPENDS_MAX {
            // The writer has taken the first append and waits for the log lock to stage it.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (0..QUEUED_APPENDS_MAX).map(|_| partition.append(make_batch(1, 8, 0))).collect();
        assert_eq!(partition.appends.capacity(), 0, "the queue is full");
        let refused = partition.append(make_batch(1, 8, 0)).await;
        assert!(matches!(refused, Err(PartitionError::Busy(_))), "an append is refused at once: {refused:?}");

        let started = std::time::Instant::now();
        let timed_out = partition.write_marker(marker).await;
        assert!(
            matches!(&timed_out, Err(PartitionError::MarkerQueueTimeout { waited_ms, .. }) if *waited_ms == 300),
            "the marker gives up at its bound: {timed_out:?}"
        );
        assert!(started.elapsed() >= MARKER_QUEUE_WAIT_MAX, "after waiting the whole bound");

        let waiting = tokio::spawn(partition.write_marker(marker));
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).expect("the holder waits");
        holder.join().expect("holder");
        first.await.expect("the first append");
        for append in queued {
            append.await.expect("a queued append");
        }
        let written = waiting.await.expect("task").expect("the marker that waited is written");
        assert_eq!(written.base_offset, 1 + QUEUED_APPENDS_MAX as u64, "behind every append queued before it");
        assert_eq!(partition.log_end_offset(), written.base_offset + 1, "the timed-out marker was never written");
        partition.close().await.expect("close");
    }
}
