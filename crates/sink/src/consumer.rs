//! The consumer loop: a group member that seeks from the database and applies batches.
//!
//! Partitions come from the consumer group; positions come from the database. The rebalance
//! callback ([`SinkContext::rebalance`]) assigns each partition at its stored `next_offset` (the
//! earliest offset when it has none), ignoring the group's committed offsets. The loop polls up to
//! `batch_records` records, applies each partition's share as one fenced batch, and only then
//! commits the group's offsets — asynchronously, so `once group describe` shows the lag; nothing
//! reads them back.
//!
//! The loop is single-threaded: the rebalance callback runs inside `poll`, on this thread, so the
//! backend behind its mutex is never contended.
//!
//! A poison record stops its partition only: the records before it are applied, the partition is
//! paused at the poison record's offset (its stored position), the error is logged naming
//! topic/partition/offset, and the other partitions go on. With `dead_letter`, the record goes to
//! the dead-letter table in its batch's transaction instead and the partition goes on.
//!
//! [`Delivery::AtLeastOnce`] is the baseline `once bench` and `once check` compare against: the
//! group's committed offsets are the positions, committed before or after the database commit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::batch::{
    apply_batch_dead_lettering, apply_unfenced, Backend, Batch, BatchError, DbError, Outcome, PartitionKey,
};
use crate::record::{Dedup, Record};

/// What the sink reads and how it groups records.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// The consumer group, also the `sink` column of the position rows.
    pub group: String,
    pub topics: Vec<String>,
    /// Most records polled into one round of batches (one batch per partition).
    pub batch_records: usize,
    /// How long a round waits for more records after its first before it is applied: the longest
    /// a record waits for its transaction, when fewer than `batch_records` arrive.
    pub commit_interval: Duration,
    pub dedup: Option<Dedup>,
    /// A poison record goes to `once_sink_dead_letters` (in its batch's transaction) instead of
    /// stopping its partition.
    pub dead_letter: bool,
    pub delivery: Delivery,
}

impl SinkOptions {
    /// Exactly-once delivery, 500-record rounds, no inbox, poison stops the partition.
    pub fn new(group: impl Into<String>, topics: Vec<String>) -> SinkOptions {
        SinkOptions {
            group: group.into(),
            topics,
            batch_records: 500,
            commit_interval: Duration::from_millis(100),
            dedup: None,
            dead_letter: false,
            delivery: Delivery::ExactlyOnce,
        }
    }
}

/// Where positions live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Delivery {
    /// In the database, advanced in each batch's transaction and compared first (the fence).
    #[default]
    ExactlyOnce,
    /// The baseline, never for data: in the group's committed offsets, committed synchronously in
    /// the given order around each batch's database transaction. A crash between the two applies a
    /// batch twice (`AfterDb`) or never (`BeforeDb`), and a zombie's batch is applied.
    AtLeastOnce(CommitOrder),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOrder {
    AfterDb,
    BeforeDb,
}

/// A partition stopped at a poison record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
}

impl std::fmt::Display for StoppedPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} at offset {}: {}", self.topic, self.partition, self.offset, self.error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("reading positions on assignment: {0}")]
    Assignment(DbError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The stored position is not readable (below the log start, or above the log end after the
    /// topic was re-created or truncated): skipping to another offset would lose or mis-place
    /// effects, so the sink stops and says where it stood.
    #[error(
        "a stored position cannot be read ({0}); the sink does not skip records: check the topic \
             (retention, re-creation) against its rows in once_sink_offsets"
    )]
    PositionOutOfRange(KafkaError),
    /// The consumer could not be moved to the stored position of a partition it still holds: going
    /// on would read from another offset than the batch's first.
    #[error("seeking {topic}-{partition} to its stored position {position}: {error}")]
    Seek { topic: String, partition: i32, position: i64, error: KafkaError },
}

/// What a run did, for the caller's last log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub applied: u64,
    pub duplicates: u64,
    pub refused_batches: u64,
    pub dead_lettered: u64,
    /// Partitions stopped at a poison record, in the order they stopped.
    pub stopped: Vec<StoppedPartition>,
}

type SharedBackend = Arc<Mutex<Box<dyn Backend + Send>>>;

/// The partitions this member owns and the position it believes stored for each: `None` until
/// the first batch of a partition that has no row (its first batch starts at its first record).
type Owned = BTreeMap<(String, i32), Option<i64>>;

struct SinkContext {
    sink: String,
    delivery: Delivery,
    backend: SharedBackend,
    owned: Mutex<Owned>,
    /// A failure inside the callback, for the loop to stop on.
    failed: Mutex<Option<DbError>>,
    /// The last stable offset of each partition, from the client's statistics: the lag's end.
    stable_ends: Mutex<BTreeMap<(String, i32), i64>>,
    /// Partitions stopped at a poison record, and where: paused until revoked. librdkafka keeps an
    /// application's pause across unassign and assign, so the revocation resumes them.
    stopped: Mutex<BTreeMap<(String, i32), i64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for SinkContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut ends = lock(&self.stable_ends);
        for (topic, stats) in statistics.topics {
            for (partition, stats) in stats.partitions {
                if partition >= 0 && stats.ls_offset >= 0 {
                    ends.insert((topic.clone(), partition), stats.ls_offset);
                }
            }
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, error: RDKafkaRespErr, partitions: &mut TopicPartitionList) {
        match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                lock(&self.owned).clear();
                // A stopped partition assigned again (here or elsewhere) starts at its stored
                // position, which is its poison record: it meets it again and stops again.
                let mut resumed = TopicPartitionList::new();
                for (topic, partition) in std::mem::take(&mut *lock(&self.stopped)).into_keys() {
                    resumed.add_partition(&topic, partition);
                }
                if resumed.count() > 0 {
                    if let Err(error) = consumer.resume(&resumed) {
                        tracing::warn!(%error, "resuming stopped partitions before they are revoked");
                    }
                }
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassign");
                }
                tracing::info!("partitions revoked");
            }
            other => tracing::warn!(?other, "rebalance error"),
        }
    }
}

impl SinkContext {
    /// Assigns `partitions` at the positions the database holds. If it cannot read them, it
    /// assigns nothing and records the failure: better to stop than to read from a guess.
    fn assign(&self, consumer: &BaseConsumer<Self>, partitions: &mut TopicPartitionList) {
        if let Delivery::AtLeastOnce(_) = self.delivery {
            // The baseline reads from the group's committed offsets, as librdkafka does by default.
            let mut owned = lock(&self.owned);
            for element in partitions.elements() {
                owned.insert((element.topic().to_string(), element.partition()), None);
            }
            if let Err(error) = consumer.assign(partitions) {
                *lock(&self.failed) = Some(DbError::Fatal(format!("assigning partitions: {error}")));
            }
            return;
        }
        let mut positions = Vec::new();
        for element in partitions.elements() {
            let key = PartitionKey {
                sink: self.sink.clone(),
                topic: element.topic().to_string(),
                partition: element.partition(),
            };
            // Inside the rebalance callback: a minute, then the sink stops rather than hang here.
            let deadline = Instant::now() + Duration::from_secs(60);
            match with_retries(|| lock(&self.backend).stored_position(&key), || Instant::now() >= deadline) {
                Ok(position) => positions.push((key, position)),
                Err(error) => {
                    *lock(&self.failed) = Some(error);
                    return;
                }
            }
        }
        let mut owned = lock(&self.owned);
        for (key, position) in positions {
            let offset = position.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = partitions.set_partition_offset(&key.topic, key.partition, offset) {
                tracing::warn!(%error, "setting an assigned partition's offset");
            }
            tracing::info!(topic = %key.topic, partition = key.partition, ?position, "assigned; seeking to the database's position");
            owned.insert((key.topic, key.partition), position);
        }
        if let Err(error) = consumer.assign(partitions) {
            *lock(&self.failed) = Some(DbError::Fatal(format!("assigning partitions: {error}")));
        }
    }
}

/// Runs `operation`, retrying transient errors with backoff (100 ms doubling to 5 s) until it
/// succeeds, fails otherwise, or `give_up()` says so (then the last transient error is returned).
/// The fence makes a retry safe whatever happened to the attempt before it.
fn with_retries<T>(
    mut operation: impl FnMut() -> Result<T, DbError>,
    give_up: impl Fn() -> bool,
) -> Result<T, DbError> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match operation() {
            Err(DbError::Transient(message)) if !give_up() => {
                tracing::warn!(%message, ?backoff, "transient database error; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn to_record(message: &BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers.iter().map(|header| (header.key.to_string(), header.value.map(<[u8]>::to_vec))).collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Reads `options.topics` through the group and applies every record with `backend` until `stop`
/// is set (the batch in hand is finished first) or a fatal error. `config` carries the client
/// settings (bootstrap servers and the like); the sink adds the group, `read_committed` and its
/// own offset handling.
pub fn run(
    mut config: ClientConfig,
    backend: Box<dyn Backend + Send>,
    options: SinkOptions,
    stop: Arc<AtomicBool>,
) -> Result<Summary, SinkError> {
    assert!(options.batch_records > 0, "a batch has at least one record");
    assert!(!options.topics.is_empty(), "a sink reads at least one topic");
    let context = SinkContext {
        sink: options.group.clone(),
        delivery: options.delivery,
        backend: Arc::new(Mutex::new(backend)),
        owned: Mutex::default(),
        failed: Mutex::default(),
        stable_ends: Mutex::default(),
        stopped: Mutex::default(),
    };
    let backend = context.backend.clone();
    // A member killed with SIGKILL holds its partitions until its session times out: 10 s rather
    // than librdkafka's 45 s, so a restarted or surviving sink takes over sooner. A shorter session
    // risks only more rebalances; the fence keeps effects exactly once whatever the group does.
    if config.get("session.timeout.ms").is_none() {
        config.set("session.timeout.ms", "10000");
    }
    // The statistics carry each partition's last stable offset: the lag in the progress lines.
    if config.get("statistics.interval.ms").is_none() {
        config.set("statistics.interval.ms", "5000");
    }
    let reset = match options.delivery {
        // Never skip: a stored position the broker cannot serve stops the sink (see
        // PositionOutOfRange); a partition without a row is sought to its beginning on assignment.
        Delivery::ExactlyOnce => "error",
        Delivery::AtLeastOnce(_) => "earliest",
    };
    let consumer: BaseConsumer<SinkContext> = config
        .set("group.id", &options.group)
        // The eager protocol: SinkContext::rebalance assigns and revokes whole assignments.
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("enable.partition.eof", "false")
        .create_with_context(context)?;
    let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let mut summary = Summary::default();
    let mut last_report = (Instant::now(), 0u64);
    while !stop.load(Ordering::SeqCst) {
        let records = poll_round(&consumer, options.batch_records, options.commit_interval, &stop)?;
        if let Some(error) = lock(&consumer.context().failed).take() {
            return Err(SinkError::Assignment(error));
        }
        apply_round(&consumer, &backend, &options, records, &mut summary, &stop)?;
        if last_report.0.elapsed() >= Duration::from_secs(10) {
            let rate = (summary.applied - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            tracing::info!(
                applied = summary.applied,
                per_second = rate as u64,
                lag = lag(consumer.context()),
                duplicates = summary.duplicates,
                refused = summary.refused_batches,
                dead_lettered = summary.dead_lettered,
                stopped_partitions = summary.stopped.len(),
                "progress"
            );
            last_report = (Instant::now(), summary.applied);
        }
    }
    tracing::info!(?summary, "stopping: the batch in hand is applied");
    // The asynchronous commits may still be in flight; one synchronous commit of where every owned
    // partition stands leaves the group's lag exact for `once group describe`. Best effort: the
    // positions themselves are in the database.
    let mut standing = TopicPartitionList::new();
    for ((topic, partition), position) in lock(&consumer.context().owned).iter() {
        if let Some(position) = position {
            standing.add_partition_offset(topic, *partition, Offset::Offset(*position))?;
        }
    }
    if standing.count() > 0 {
        if let Err(error) = consumer.commit(&standing, CommitMode::Sync) {
            tracing::warn!(%error, "committing group offsets for lag on the way out");
        }
    }
    Ok(summary)
}

/// Offsets not yet applied in the partitions this member holds, stopped ones included: the last
/// stable offset (from the client's latest statistics) minus the position, summed; partitions with
/// no figure yet count 0. Offsets, not records: a transaction's commit marker counts one.
fn lag(context: &SinkContext) -> i64 {
    let ends = lock(&context.stable_ends);
    let behind = |partition: &(String, i32), position: i64| Some((ends.get(partition)? - position).max(0));
    let owned: i64 =
        lock(&context.owned).iter().filter_map(|(partition, position)| behind(partition, (*position)?)).sum();
    let stopped: i64 = lock(&context.stopped).iter().filter_map(|(partition, offset)| behind(partition, *offset)).sum();
    owned + stopped
}

/// Polls until `limit` records, `interval` after the first one, or 500 ms with none. (`poll` also
/// returns nothing after serving a rebalance or commit event: the round goes on until its time.)
fn poll_round(
    consumer: &BaseConsumer<SinkContext>,
    limit: usize,
    interval: Duration,
    stop: &AtomicBool,
) -> Result<Vec<Record>, SinkError> {
    let mut records = Vec::new();
    let started = Instant::now();
    let mut first_at = None;
    while records.len() < limit && !stop.load(Ordering::SeqCst) {
        let remaining = match first_at {
            None => Duration::from_millis(500).checked_sub(started.elapsed()),
            Some(first) => interval.checked_sub(Instant::elapsed(&first)),
        };
        let Some(remaining) = remaining.filter(|left| !left.is_zero()) else { break };
        match consumer.poll(remaining) {
            None => continue,
            Some(Ok(message)) => {
                records.push(to_record(&message));
                first_at.get_or_insert_with(Instant::now);
            }
            Some(Err(error)) => {
                if let Some(stopped) = out_of_range(&error) {
                    return Err(stopped);
                }
                tracing::warn!(%error, "consumer error")
            }
        }
    }
    Ok(records)
}

/// The consumer's report that a partition's position cannot be read (with `auto.offset.reset=error`),
/// as the error that stops the sink; `None` for every other consumer error.
fn out_of_range(error: &KafkaError) -> Option<SinkError> {
    use rdkafka::error::RDKafkaErrorCode;
    let KafkaError::MessageConsumption(code) = error else { return None };
    if !matches!(code, RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange) {
        return None;
    }
    Some(SinkError::PositionOutOfRange(error.clone()))
}

/// Puts one partition's records of a round into the shape a batch needs: offsets strictly
/// increasing, none below the believed position `expected`. A round can hold a record twice (a
/// rebalance inside the round re-assigned the partition at the position it was already read
/// from, and the consumer delivered it again — the same record, the log being immutable), and
/// records older than a position another sink moved to (read before a seek).
fn in_order_from(records: &mut Vec<Record>, expected: Option<i64>) {
    records.retain(|record| expected.is_none_or(|from| record.offset >= from));
    records.sort_by_key(|record| record.offset);
    records.dedup_by_key(|record| record.offset);
}

/// Applies one batch per partition of `records`, then commits the group offsets for lag.
fn apply_round(
    consumer: &BaseConsumer<SinkContext>,
    backend: &SharedBackend,
    options: &SinkOptions,
    records: Vec<Record>,
    summary: &mut Summary,
    stop: &AtomicBool,
) -> Result<(), SinkError> {
    let mut by_partition: BTreeMap<(String, i32), Vec<Record>> = BTreeMap::new();
    for record in records {
        by_partition.entry((record.topic.clone(), record.partition)).or_default().push(record);
    }
    let mut lag_offsets = TopicPartitionList::new();
    for ((topic, partition), mut records) in by_partition {
        // Only partitions still owned (not revoked, not stopped at a poison record).
        let Some(expected) = lock(&consumer.context().owned).get(&(topic.clone(), partition)).copied() else {
            continue;
        };
        in_order_from(&mut records, expected);
        let Some(first) = records.first() else { continue };
        let from = expected.unwrap_or(first.offset);
        let key = PartitionKey { sink: options.group.clone(), topic: topic.clone(), partition };
        let batch = Batch { key: &key, from, records: &records };
        let done = match options.delivery {
            Delivery::ExactlyOnce => apply_fenced(backend, options, &batch, stop)?,
            Delivery::AtLeastOnce(order) => apply_at_least_once(consumer, backend, options, &batch, order, stop)?,
        };
        let Some(done) = done else {
            tracing::warn!(%topic, partition, "stopping with the database unavailable; the batch in hand was not applied");
            return Ok(());
        };
        let position = match done.outcome {
            Outcome::Applied { to, applied, duplicates } => {
                summary.applied += applied as u64;
                summary.duplicates += duplicates as u64;
                summary.dead_lettered += done.dead_letters.len() as u64;
                lag_offsets.add_partition_offset(&topic, partition, Offset::Offset(to))?;
                to
            }
            Outcome::Refused { stored } => {
                summary.refused_batches += 1;
                tracing::warn!(%topic, partition, from, stored, "batch refused: another sink moved this partition; seeking to the stored position");
                if !seek_after_refusal(consumer, &topic, partition, stored)? {
                    continue;
                }
                stored
            }
        };
        if let (Some((offset, error)), Outcome::Applied { .. }) = (done.poison, &done.outcome) {
            stop_partition(consumer, StoppedPartition { topic, partition, offset, error }, summary);
            continue;
        }
        if let Some(owned) = lock(&consumer.context().owned).get_mut(&(topic, partition)) {
            *owned = Some(position);
        }
    }
    if lag_offsets.count() > 0 && options.delivery == Delivery::ExactlyOnce {
        // For lag only; a failure here loses nothing (positions live in the database).
        if let Err(error) = consumer.commit(&lag_offsets, CommitMode::Async) {
            tracing::debug!(%error, "committing group offsets for lag");
        }
    }
    Ok(())
}

/// What became of one partition's share of a round.
struct Applied {
    outcome: Outcome,
    /// Records written to the dead-letter table in the committed batch.
    dead_letters: Vec<(i64, String)>,
    /// The poison record the partition stops at: the batch held only the records before it.
    poison: Option<(i64, String)>,
}

/// Applies `batch` fenced, retrying transient errors until `stop`; `None` if it stopped first. A
/// poison record is dead-lettered (with `options.dead_letter`) and the batch retried, or the
/// batch is cut before it and the partition is to stop there.
fn apply_fenced(
    backend: &SharedBackend,
    options: &SinkOptions,
    batch: &Batch<'_>,
    stop: &AtomicBool,
) -> Result<Option<Applied>, SinkError> {
    let mut dead_letters: Vec<(i64, String)> = Vec::new();
    let mut records = batch.records;
    let mut poison = None;
    loop {
        if records.is_empty() {
            // The first record is poison: nothing to apply, the position stays at `from`.
            let outcome = Outcome::Applied { to: batch.from, applied: 0, duplicates: 0 };
            return Ok(Some(Applied { outcome, dead_letters, poison }));
        }
        let attempt_batch = Batch { key: batch.key, from: batch.from, records };
        // A database that is down is waited for, however long (nothing advances meanwhile), until
        // SIGTERM: then the batch in hand is left unapplied — it is read again next time.
        let attempt = || {
            let mut backend = lock(backend);
            match apply_batch_dead_lettering(backend.as_mut(), options.dedup.as_ref(), &attempt_batch, &dead_letters) {
                Err(BatchError::Database(error @ DbError::Transient(_))) => Err(error),
                other => Ok(other),
            }
        };
        let result = match with_retries(attempt, || stop.load(Ordering::SeqCst)) {
            Ok(result) => result,
            Err(_) => return Ok(None),
        };
        match result {
            Ok(outcome) => return Ok(Some(Applied { outcome, dead_letters, poison })),
            Err(BatchError::Poison { offset, message, .. }) if options.dead_letter => {
                assert!(dead_letters.iter().all(|(dead, _)| *dead != offset), "a dead letter is not applied again");
                tracing::warn!(topic = %batch.key.topic, partition = batch.key.partition, offset, %message, "poison record: to the dead-letter table");
                dead_letters.push((offset, message));
            }
            Err(BatchError::Poison { offset, message, .. }) => {
                let before = records.iter().take_while(|record| record.offset < offset).count();
                assert!(before < records.len(), "the poison record is one of the batch's");
                records = &records[..before];
                poison = Some((offset, message));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// The baseline: commit the group offset before or after the unfenced transaction.
fn apply_at_least_once(
    consumer: &BaseConsumer<SinkContext>,
    backend: &SharedBackend,
    options: &SinkOptions,
    batch: &Batch<'_>,
    order: CommitOrder,
    stop: &AtomicBool,
) -> Result<Option<Applied>, SinkError> {
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&batch.key.topic, batch.key.partition, Offset::Offset(batch.to()))?;
    let commit = || {
        if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
            tracing::warn!(%error, topic = %batch.key.topic, partition = batch.key.partition, "committing the group offset");
        }
    };
    if order == CommitOrder::BeforeDb {
        commit();
    }
    let attempt = || match apply_unfenced(lock(backend).as_mut(), options.dedup.as_ref(), batch) {
        Err(BatchError::Database(error @ DbError::Transient(_))) => Err(error),
        other => Ok(other),
    };
    let outcome = match with_retries(attempt, || stop.load(Ordering::SeqCst)) {
        Ok(result) => result?,
        Err(_) => return Ok(None),
    };
    if order == CommitOrder::AfterDb {
        commit();
    }
    Ok(Some(Applied { outcome, dead_letters: Vec::new(), poison: None }))
}

/// Moves the consumer to `stored` after a refused batch; `false` if the partition was revoked
/// meanwhile (it is then dropped until an assignment positions it from the database again).
fn seek_after_refusal(
    consumer: &BaseConsumer<SinkContext>,
    topic: &str,
    partition: i32,
    stored: i64,
) -> Result<bool, SinkError> {
    // The next batch starts at `stored`, so the consumer must read from there. If the seek fails
    // because the partition is being revoked, the partition is no longer ours. If it is still
    // assigned, going on would build a batch `from = stored` out of records read elsewhere (losing
    // the ones between): stop instead (a restart is safe).
    let Err(error) = consumer.seek(topic, partition, Offset::Offset(stored), Duration::from_secs(10)) else {
        return Ok(true);
    };
    let assigned = consumer.assignment().map(|list| list.find_partition(topic, partition).is_some()).unwrap_or(true);
    if assigned {
        return Err(SinkError::Seek { topic: topic.to_string(), partition, position: stored, error });
    }
    tracing::warn!(%error, %topic, partition, "seek after a refused batch failed: the partition was revoked");
    lock(&consumer.context().owned).remove(&(topic.to_string(), partition));
    Ok(false)
}

/// Stops a partition at a poison record: no longer owned by the loop (its records are ignored) and
/// paused, until it is revoked (the revocation resumes it) and assigned again: then its first batch
/// meets the record again.
fn stop_partition(consumer: &BaseConsumer<SinkContext>, stopped: StoppedPartition, summary: &mut Summary) {
    tracing::error!(
        topic = %stopped.topic,
        partition = stopped.partition,
        offset = stopped.offset,
        error = %stopped.error,
        "poison record: this partition is stopped at its offset (the records before it are applied; the other \
         partitions go on). Fix the statement or the data and restart the sink, or run it with --dead-letter"
    );
    lock(&consumer.context().owned).remove(&(stopped.topic.clone(), stopped.partition));
    lock(&consumer.context().stopped).insert((stopped.topic.clone(), stopped.partition), stopped.offset);
    let mut paused = TopicPartitionList::new();
    if paused.add_partition_offset(&stopped.topic, stopped.partition, Offset::Offset(stopped.offset)).is_ok() {
        if let Err(error) = consumer.pause(&paused) {
            tracing::warn!(%error, "pausing a stopped partition (its records are ignored anyway)");
        }
    }
    summary.stopped.push(stopped);
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn at(offset: i64) -> Record {
        Record { topic: "t".into(), partition: 0, offset, timestamp_ms: None, key: None, value: None, headers: vec![] }
    }

    /// Review of issue 15: a position the broker cannot serve stops the sink (with
    /// `auto.offset.reset=error`) instead of being skipped; other consumer errors are only logged.
    #[test]
    fn an_unreadable_position_stops_the_sink_and_other_consumer_errors_do_not() {
        use rdkafka::error::RDKafkaErrorCode;
        for code in [RDKafkaErrorCode::AutoOffsetReset, RDKafkaErrorCode::OffsetOutOfRange] {
            let stopped = out_of_range(&KafkaError::MessageConsumption(code));
            assert!(matches!(stopped, Some(SinkError::PositionOutOfRange(_))), "{code:?} stops the sink");
        }
        for other in [
            KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition),
        ] {
            assert!(out_of_range(&other).is_none(), "{other} is logged, not fatal");
        }
    }

    #[test]
    fn a_round_redelivered_after_a_rebalance_is_one_increasing_batch() {
        let offsets = |records: &[Record]| records.iter().map(|record| record.offset).collect::<Vec<_>>();
        let mut records: Vec<Record> = [100, 101, 102, 100, 101, 102, 103].into_iter().map(at).collect();
        in_order_from(&mut records, Some(100));
        assert_eq!(offsets(&records), vec![100, 101, 102, 103]);
        let mut records: Vec<Record> = [100, 101, 200, 201].into_iter().map(at).collect();
        in_order_from(&mut records, Some(200));
        assert_eq!(offsets(&records), vec![200, 201], "records from before a seek forward are dropped");
        let mut records: Vec<Record> = [5, 7, 5].into_iter().map(at).collect();
        in_order_from(&mut records, None);
        assert_eq!(offsets(&records), vec![5, 7], "gaps (control records) stay");
    }

    #[test]
    fn transient_errors_are_retried_others_are_not() {
        let calls = Cell::new(0);
        let flaky = || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(DbError::Transient("busy".into()))
            } else {
                Ok(calls.get())
            }
        };
        assert_eq!(with_retries(flaky, || false), Ok(3), "two transient failures, then success");
        calls.set(0);
        let poison = || {
            calls.set(calls.get() + 1);
            Err::<(), _>(DbError::Statement("bad".into()))
        };
        assert_eq!(with_retries(poison, || false), Err(DbError::Statement("bad".into())));
        assert_eq!(calls.get(), 1, "a statement error is not retried");
        assert_eq!(
            with_retries(|| Err::<(), _>(DbError::Transient("down".into())), || true),
            Err(DbError::Transient("down".into())),
            "giving up returns the last error"
        );
    }
}
