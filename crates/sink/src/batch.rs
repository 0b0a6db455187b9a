//! One batch, one database transaction: the compare-and-set fence (docs/design/sink.md).
//!
//! [`apply_batch`] is the whole protocol over a [`Backend`]: begin; lock the partition's position
//! row; refuse unless the stored `next_offset` is the batch's `from`; apply each record (through
//! the inbox with `--dedup`); advance `from → to`; commit. Any error rolls back, so a batch is
//! either wholly applied with its position or not at all.

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
    /// Runs the effects of one record.
    fn apply(&mut self, record: &Record) -> Result<(), DbError>;
    /// `next_offset = to WHERE next_offset = from`; returns the number of rows changed.
    fn advance(&mut self, key: &PartitionKey, from: i64, to: i64) -> Result<u64, DbError>;
    fn commit(&mut self) -> Result<(), DbError>;
    fn rollback(&mut self) -> Result<(), DbError>;
    /// The stored position outside any batch (to seek to on assignment); `None` if never applied.
    fn stored_position(&mut self, key: &PartitionKey) -> Result<Option<i64>, DbError>;
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
    check_shape(batch);
    backend.begin().map_err(BatchError::Database)?;
    match inside(backend, dedup, batch) {
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
) -> Result<Outcome, BatchError> {
    let stored = backend.lock_position(batch.key, batch.from).map_err(BatchError::Database)?;
    if stored != batch.from {
        return Ok(Outcome::Refused { stored });
    }
    let (mut applied, mut duplicates) = (0, 0);
    for record in batch.records {
        let poison = |message: String| BatchError::Poison {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            message,
        };
        let message_id = match dedup {
            Some(dedup) => record.message_id(dedup).map_err(poison)?,
            None => None,
        };
        if let Some(id) = message_id {
            if !backend.remember(&batch.key.sink, id, record).map_err(BatchError::Database)? {
                duplicates += 1;
                continue;
            }
        }
        match backend.apply(record) {
            Ok(()) => applied += 1,
            Err(DbError::Statement(message)) => return Err(poison(message)),
            Err(error) => return Err(BatchError::Database(error)),
        }
    }
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
