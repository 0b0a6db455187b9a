//! One batch, one database transaction: the compare-and-set fence (docs/design/sink.md).
//!
//! [`apply_batch`] is the whole protocol over a [`Backend`]: begin; lock the partition's position
//! row; refuse unless the stored `next_offset` is the batch's `from`; apply each record (through
//! the inbox with `--dedup`); advance `from → to`; commit. Any error rolls back, so a batch is
//! either wholly applied with its position or not at all.
//!
//! [`apply_unfenced`] is the at-least-once baseline (`--at-least-once`): the same effects in one
//! transaction, no position, no fence. It exists so that `once bench` and `once check` can show
//! what the fence costs and what it prevents; it is never the default.

use crate::record::{Dedup, Record};

/// Identifies a position row: `(sink, topic, partition)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub sink: String,
    pub topic: String,
    pub partition: i32,
}

/// A database error, sorted by what the sink does about it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DbError {
    /// Connection lost, lock contention, serialisation failure: roll back, back off, retry.
    #[error("transient database error: {0}")]
    Transient(String),
    /// A `--sql` statement failed on a record for a reason retrying will not fix.
    #[error("{0}")]
    Statement(String),
    /// Anything else (the position table cannot be created or read): stop.
    #[error("database error: {0}")]
    Fatal(String),
}

/// The database operations of one batch, in the order [`apply_batch`] calls them.
pub trait Backend {
    /// Starts a transaction. After [`Backend::lock_position`], no other transaction can change the
    /// partition's row until this one ends.
    fn begin(&mut self) -> Result<(), DbError>;
    /// Creates the row at `from` if the partition has none, locks it, and returns its `next_offset`.
    fn lock_position(&mut self, key: &PartitionKey, from: i64) -> Result<i64, DbError>;
    /// Inserts `message_id` into the inbox; `false` if it was already there (skip the record).
    fn remember(&mut self, sink: &str, message_id: &str, record: &Record) -> Result<bool, DbError>;
    /// Runs the effects of `effects`, the batch's records left after the inbox and the dead
    /// letters, in offset order, inside the open transaction.
    fn apply(&mut self, effects: &[Effect<'_>]) -> Result<(), EffectError>;
    /// Writes `record` to the dead-letter table `once_sink_dead_letters` with the error that made
    /// it poison, instead of applying it (`--dead-letter`).
    fn dead_letter(&mut self, sink: &str, record: &Record, error: &str) -> Result<(), DbError>;
    /// `next_offset = to WHERE next_offset = from`; returns the number of rows changed.
    fn advance(&mut self, key: &PartitionKey, from: i64, to: i64) -> Result<u64, DbError>;
    fn commit(&mut self) -> Result<(), DbError>;
    fn rollback(&mut self) -> Result<(), DbError>;
    /// The stored position outside any batch (to seek to on assignment); `None` if never applied.
    fn stored_position(&mut self, key: &PartitionKey) -> Result<Option<i64>, DbError>;
    /// Every position row of `sink`, with its partition's dead-letter count (`once sink --status`).
    fn positions(&mut self, sink: &str) -> Result<Vec<PositionRow>, DbError>;
}

/// A row of `once_sink_offsets`, as `once sink --status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionRow {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// Wall-clock milliseconds of the last advance.
    pub updated_at_ms: i64,
    /// Records of this partition in `once_sink_dead_letters`.
    pub dead_letters: i64,
}

/// The query behind [`Backend::positions`], the same on both databases (`$1` / `?1` is the sink).
pub(crate) fn positions_sql(placeholder: &str) -> String {
    format!(
        r#"SELECT o.topic, o."partition", o.next_offset, o.updated_at,
                  (SELECT count(*) FROM once_sink_dead_letters d
                    WHERE d.sink = o.sink AND d.topic = o.topic AND d."partition" = o."partition")
           FROM once_sink_offsets o WHERE o.sink = {placeholder} ORDER BY o.topic, o."partition""#
    )
}

/// A record about to be applied, with the key to hand to an effect outside the database (a
/// payment provider's idempotency key): the record's message id where `--dedup` names one, else
/// `topic/partition/offset` ([`Record::idempotency_key`]).
#[derive(Debug)]
pub struct Effect<'a> {
    pub record: &'a Record,
    pub idempotency_key: String,
}

/// Why effects failed, as the handler of a batch reports it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EffectError {
    /// Retrying may succeed (a lock, a lost connection): the batch is rolled back and retried.
    #[error("transient: {0}")]
    Transient(String),
    /// The record at `offset` cannot be applied, and retrying will not change that: the partition
    /// stops there (or, with `--dead-letter`, the record goes to the dead-letter table).
    #[error("record at offset {offset}: {message}")]
    Poison { offset: i64, message: String },
    /// Anything else: the sink stops.
    #[error("{0}")]
    Fatal(String),
}

impl From<DbError> for EffectError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Transient(message) => EffectError::Transient(message),
            DbError::Statement(message) | DbError::Fatal(message) => EffectError::Fatal(message),
        }
    }
}

/// Records of one partition read from `from` on: the consumer was at `from` and delivered
/// `records` in offset order (with gaps where control records or aborted data were skipped).
#[derive(Debug)]
pub struct Batch<'a> {
    pub key: &'a PartitionKey,
    pub from: i64,
    pub records: &'a [Record],
}

impl Batch<'_> {
    /// The position after the batch.
    pub fn to(&self) -> i64 {
        self.records.last().map_or(self.from, |record| record.offset + 1)
    }
}

/// What [`apply_batch`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: the position is now `to`; `duplicates` records were skipped by the inbox.
    Applied { to: i64, applied: usize, duplicates: usize },
    /// The stored position was `stored`, not the batch's `from`: another sink moved it (this one
    /// is a zombie, or the commit of an earlier attempt of this batch did succeed). Nothing applied.
    Refused { stored: i64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error(transparent)]
    Database(DbError),
    /// A record's statement failed: the partition stops here.
    #[error("poison record at {topic}/{partition} offset {offset}: {message}")]
    Poison { topic: String, partition: i32, offset: i64, message: String },
}

/// Applies `batch` in one transaction, fenced by the stored position.
pub fn apply_batch(
    backend: &mut (impl Backend + ?Sized),
    dedup: Option<&Dedup>,
    batch: &Batch<'_>,
) -> Result<Outcome, BatchError> {
    apply_batch_dead_lettering(backend, dedup, batch, &[])
}

/// [`apply_batch`], with the records at the offsets of `dead_letters` written to the dead-letter
/// table with their error instead of applied (the same transaction, the same fence).
pub fn apply_batch_dead_lettering(
    backend: &mut (impl Backend + ?Sized),
    dedup: Option<&Dedup>,
    batch: &Batch<'_>,
    dead_letters: &[(i64, String)],
) -> Result<Outcome, BatchError> {
    check_shape(batch);
    for (offset, _) in dead_letters {
        assert!(
            batch.records.iter().any(|record| record.offset == *offset),
            "a dead letter is one of the batch's records"
        );
    }
    backend.begin().map_err(BatchError::Database)?;
    let result = inside(backend, dedup, batch, dead_letters);
    finish(backend, result)
}

/// The at-least-once baseline: `records` applied in one transaction with no position and no
/// fence — a zombie's batch, or a batch replayed after a crash, is applied again. For `once
/// bench` and `once check` only (docs/design/sink.md, "The baseline").
pub fn apply_unfenced(
    backend: &mut (impl Backend + ?Sized),
    dedup: Option<&Dedup>,
    batch: &Batch<'_>,
) -> Result<Outcome, BatchError> {
    check_shape(batch);
    backend.begin().map_err(BatchError::Database)?;
    let effects = effects_of(batch.records.iter(), dedup);
    let result = run_effects(backend, batch, &effects).map(|()| {
        crate::hooks::inside_transaction();
        Outcome::Applied { to: batch.to(), applied: effects.len(), duplicates: 0 }
    });
    finish(backend, result)
}

fn effects_of<'a>(records: impl Iterator<Item = &'a Record>, dedup: Option<&Dedup>) -> Vec<Effect<'a>> {
    records.map(|record| Effect { record, idempotency_key: record.idempotency_key(dedup) }).collect()
}

/// Runs `effects`, naming a poison record by its place in `batch`.
fn run_effects<B: Backend + ?Sized>(
    backend: &mut B,
    batch: &Batch<'_>,
    effects: &[Effect<'_>],
) -> Result<(), BatchError> {
    if effects.is_empty() {
        return Ok(());
    }
    match backend.apply(effects) {
        Ok(()) => Ok(()),
        Err(EffectError::Transient(message)) => Err(BatchError::Database(DbError::Transient(message))),
        Err(EffectError::Fatal(message)) => Err(BatchError::Database(DbError::Fatal(message))),
        Err(EffectError::Poison { offset, message }) => {
            // A handler that names a record outside what it was given would make the sink stop
            // or dead-letter the wrong record: stop instead.
            if !effects.iter().any(|effect| effect.record.offset == offset) {
                return Err(BatchError::Database(DbError::Fatal(format!(
                    "the effects named offset {offset} as poison, which is not one of the records they were given ({message})"
                ))));
            }
            Err(BatchError::Poison { topic: batch.key.topic.clone(), partition: batch.key.partition, offset, message })
        }
    }
}

/// Commits an applied batch, rolls back anything else.
fn finish<B: Backend + ?Sized>(backend: &mut B, result: Result<Outcome, BatchError>) -> Result<Outcome, BatchError> {
    match result {
        Ok(outcome @ Outcome::Applied { .. }) => {
            // A commit that fails may still have happened (the connection died after the server
            // committed): the retry then finds the position at `to` and is refused, never doubled.
            backend.commit().map_err(BatchError::Database)?;
            Ok(outcome)
        }
        Ok(outcome @ Outcome::Refused { .. }) => {
            backend.rollback().map_err(BatchError::Database)?;
            Ok(outcome)
        }
        Err(error) => {
            if let Err(rollback) = backend.rollback() {
                tracing::warn!(%rollback, "rollback after a failed batch failed; the transaction dies with the connection");
            }
            Err(error)
        }
    }
}

fn check_shape(batch: &Batch<'_>) {
    assert!(!batch.records.is_empty(), "a batch has at least one record");
    assert!(batch.from >= 0, "a position is never negative");
    let mut previous = batch.from - 1;
    for record in batch.records {
        assert!(record.offset > previous, "records are in increasing offset order from the batch's start");
        assert_eq!(record.topic, batch.key.topic, "a batch is one topic's");
        assert_eq!(record.partition, batch.key.partition, "a batch is one partition's");
        previous = record.offset;
    }
}

fn inside<B: Backend + ?Sized>(
    backend: &mut B,
    dedup: Option<&Dedup>,
    batch: &Batch<'_>,
    dead_letters: &[(i64, String)],
) -> Result<Outcome, BatchError> {
    let stored = backend.lock_position(batch.key, batch.from).map_err(BatchError::Database)?;
    if stored != batch.from {
        return Ok(Outcome::Refused { stored });
    }
    crate::hooks::inside_transaction();
    let mut duplicates = 0;
    let mut to_apply = Vec::with_capacity(batch.records.len());
    for record in batch.records {
        let poison = |message: String| BatchError::Poison {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            message,
        };
        let dead = dead_letters.iter().find(|(offset, _)| *offset == record.offset);
        // A record whose id cannot be read is poison like a failing statement (and can be
        // dead-lettered like one).
        let message_id = match (dedup, dead) {
            (Some(dedup), None) => record.message_id(dedup).map_err(poison)?,
            (Some(dedup), Some(_)) => record.message_id(dedup).ok().flatten(),
            (None, _) => None,
        };
        if let Some(id) = message_id {
            if !backend.remember(&batch.key.sink, id, record).map_err(BatchError::Database)? {
                duplicates += 1;
                continue;
            }
        }
        match dead {
            Some((_, error)) => backend.dead_letter(&batch.key.sink, record, error).map_err(BatchError::Database)?,
            None => to_apply.push(record),
        }
    }
    let effects = effects_of(to_apply.into_iter(), dedup);
    run_effects(backend, batch, &effects)?;
    let applied = effects.len();
    let to = batch.to();
    let changed = backend.advance(batch.key, batch.from, to).map_err(BatchError::Database)?;
    // Under the row lock taken above nothing can have moved the position; if it did, the
    // database is not giving the isolation this protocol needs: stop rather than commit.
    if changed != 1 {
        return Err(BatchError::Database(DbError::Fatal(format!(
            "advancing {}/{} from {} changed {changed} rows, not 1: the position row was not locked",
            batch.key.topic, batch.key.partition, batch.from
        ))));
    }
    Ok(Outcome::Applied { to, applied, duplicates })
}
