//! The durable offsets log: one internal partition under the data directory, appended with group
//! commit (an append resolves after the fdatasync that covers it), replayed record by record at open
//! and, when mostly dead, compacted by rewrite before the partition starts.
//!
//! Opening is three steps: [`OffsetStore::recover`] repairs an interrupted compaction and opens the
//! log for reading; [`RecoveredLog::replay`] streams its records to the caller; then either
//! [`RecoveredLog::start`] or [`RecoveredLog::compact`] hands the directory to the partition writer.

use std::path::Path;

use once_log::Log;
use once_partition::{LogConfig, Partition, PartitionId, TxnMarker};

use crate::compaction::{self, LogPaths, Repair};
use crate::error::GroupError;
use crate::records::{
    decode_batches, encode_batch, encode_group_batch, encode_transactional_batch, GroupRecord, LogEntry, OffsetRecord,
    TransactionalProducer,
};

/// The internal topic's name, as Kafka calls it. It is not in the topic registry: clients cannot
/// produce to or fetch from it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Bytes read per step while replaying the log: replay memory is this plus the live offsets.
const REPLAY_READ_BYTES: usize = 1 << 20;

pub struct OffsetStore {
    partition: Partition,
}

/// The offsets log opened for replay, before its writer starts. Blocking file I/O throughout.
pub struct RecoveredLog {
    log: Log,
    paths: LogPaths,
    config: LogConfig,
}

/// How a compaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compacted {
    /// The compacted log is durably in place of the old one.
    Swapped { log_bytes: u64 },
    /// Writing the compacted log failed before the swap began: the old log is kept, unchanged.
    Abandoned,
}

fn log_config(unsafe_skip_fsync: bool) -> LogConfig {
    // Time and size retention would delete live commits; compaction at open bounds the log instead.
    LogConfig {
        retention_ms: None,
        retention_bytes: None,
        segment_ms_max: None,
        unsafe_skip_fsync,
        ..LogConfig::default()
    }
}

impl OffsetStore {
    /// Repairs what an interrupted compaction left, then opens (recovering) the log in `dir` for
    /// replay. Blocking: call at start-up.
    pub fn recover(dir: &Path, unsafe_skip_fsync: bool) -> Result<(RecoveredLog, Repair), GroupError> {
        let paths = LogPaths::new(dir)?;
        let repair = compaction::repair(&paths, unsafe_skip_fsync)?;
        let config = log_config(unsafe_skip_fsync);
        let log = Log::open(&paths.live, config.clone())?;
        Ok((RecoveredLog { log, paths, config }, repair))
    }

    /// Starts the partition writer on the log in `dir`. Needs a tokio runtime.
    fn start(paths: &LogPaths, config: LogConfig) -> Result<OffsetStore, GroupError> {
        let id = PartitionId { topic: OFFSETS_TOPIC.to_string(), partition: 0 };
        let partition = Partition::open(id, &paths.live, config)?;
        Ok(OffsetStore { partition })
    }

    /// Queues `records` as one batch now (so batches reach the log in call order) and resolves once
    /// they are durable.
    pub fn append(
        &self,
        records: &[OffsetRecord],
        timestamp_ms: i64,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let appended = encode_batch(records, timestamp_ms).map(|batch| self.partition.append(batch));
        async move {
            appended?.await?;
            Ok(())
        }
    }

    /// Queues group metadata `records` as one batch now and resolves once they are durable.
    pub fn append_groups(
        &self,
        records: &[GroupRecord],
        timestamp_ms: i64,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let appended = encode_group_batch(records, timestamp_ms).map(|batch| self.partition.append(batch));
        async move {
            appended?.await?;
            Ok(())
        }
    }

    /// Queues `records` as one transactional batch of `producer` now and resolves once it is durable.
    /// The partition opens a transaction for the producer (or refuses the batch, e.g. an older epoch).
    pub fn append_transactional(
        &self,
        records: &[OffsetRecord],
        timestamp_ms: i64,
        producer: TransactionalProducer,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let appended =
            encode_transactional_batch(records, timestamp_ms, producer).map(|batch| self.partition.append(batch));
        async move {
            appended?.await?;
            Ok(())
        }
    }

    /// Queues `marker` now, behind every batch queued before it, and resolves once it is durable.
    pub fn write_marker(
        &self,
        marker: TxnMarker,
    ) -> impl std::future::Future<Output = Result<(), GroupError>> + Send + 'static {
        let written = self.partition.write_marker(marker);
        async move {
            written.await?;
            Ok(())
        }
    }

    /// Flushes and closes the log cleanly.
    pub async fn close(&self) -> Result<(), GroupError> {
        Ok(self.partition.close().await?)
    }

    pub fn size_bytes(&self) -> u64 {
        self.partition.size_bytes()
    }
}

impl RecoveredLog {
    /// Hands every entry (record or marker), in log order, to `apply` as it is decoded: memory holds
    /// one read, not the log. Returns the number of entries.
    pub fn replay(&self, mut apply: impl FnMut(LogEntry)) -> Result<u64, GroupError> {
        let end_offset = self.log.durable_end_offset();
        let mut offset = self.log.log_start_offset();
        let mut records = 0u64;
        let mut counted = |entry: LogEntry| {
            records += 1;
            apply(entry);
        };
        while offset < end_offset {
            let bytes = self.log.read(offset, REPLAY_READ_BYTES, end_offset)?;
            if bytes.is_empty() {
                break;
            }
            let next_offset = decode_batches(bytes, &mut counted)?;
            let next_offset = next_offset.and_then(|next| u64::try_from(next).ok()).unwrap_or(end_offset);
            assert!(
                next_offset > offset,
                "replay of the offsets log must move forward (at {offset}, next {next_offset})"
            );
            offset = next_offset;
        }
        tracing::info!(records, end_offset = offset, "offsets log replayed");
        Ok(records)
    }

    /// Bytes of the log's segment files.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Closes the log cleanly and starts its partition writer. Needs a tokio runtime.
    pub fn start(self) -> Result<OffsetStore, GroupError> {
        self.log.close()?;
        OffsetStore::start(&self.paths, self.config)
    }

    /// Replaces the log by one holding exactly `live` (the latest record of each live key) and the
    /// metadata of `groups`, and starts
    /// the partition writer on whichever log is in place. A failure while writing the new log abandons
    /// it and keeps the old one; a failure once the swap began fails the open (the next open's repair
    /// leaves one complete log). Needs a tokio runtime.
    pub fn compact(
        self,
        live: &[OffsetRecord],
        groups: &[GroupRecord],
        now_ms: i64,
    ) -> Result<(OffsetStore, Compacted), GroupError> {
        let RecoveredLog { log, paths, config } = self;
        let bytes_before = log.size_bytes();
        log.close()?;
        let compacted = match compaction::write_compacted(&paths, &config, live, groups, now_ms) {
            Ok(log_bytes) => {
                compaction::swap(&paths, config.unsafe_skip_fsync)?;
                Compacted::Swapped { log_bytes }
            }
            Err(error) => {
                tracing::warn!(%error, "writing the compacted offsets log failed; keeping the old log");
                compaction::repair(&paths, config.unsafe_skip_fsync)?;
                Compacted::Abandoned
            }
        };
        if let Compacted::Swapped { log_bytes } = compacted {
            tracing::info!(bytes_before, bytes_after = log_bytes, records = live.len(), "offsets log compacted");
        }
        Ok((OffsetStore::start(&paths, config)?, compacted))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::records::{CommittedOffset, OffsetKey};

    fn record(partition: i32, offset: i64) -> OffsetRecord {
        let key = OffsetKey { group: "g".into(), topic: "t".into(), partition };
        OffsetRecord {
            key,
            value: Some(CommittedOffset { offset, leader_epoch: -1, metadata: None, commit_timestamp_ms: 1 }),
        }
    }

    /// Every entry of the log in `dir`, in order (closing it cleanly again).
    pub(crate) fn read_entries(dir: &Path) -> Vec<LogEntry> {
        let (recovered, _) = OffsetStore::recover(dir, false).expect("recover");
        let mut all = Vec::new();
        recovered.replay(|entry| all.push(entry)).expect("replay");
        recovered.log.close().expect("close");
        all
    }

    /// Every record of the log in `dir`, in order, all of them non-transactional.
    pub(crate) fn read_all(dir: &Path) -> Vec<OffsetRecord> {
        read_entries(dir)
            .into_iter()
            .map(|entry| match entry {
                LogEntry::Offset(record) => record,
                other => panic!("only non-transactional records expected, found {other:?}"),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_records_are_replayed_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = dir.path().join("0");
        let (recovered, repair) = OffsetStore::recover(&dir, false).expect("open");
        assert_eq!(repair, Repair::Clean);
        assert_eq!(recovered.replay(|_| panic!("a new log is empty")).expect("replay"), 0);
        let store = recovered.start().expect("start");
        store.append(&[record(0, 1), record(1, 2)], 10).await.expect("first append");
        store.append(&[record(0, 3)], 11).await.expect("second append");
        store.close().await.expect("close");
        assert_eq!(read_all(&dir), vec![record(0, 1), record(1, 2), record(0, 3)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactional_batches_are_replayed_with_their_producer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dir = dir.path().join("0");
        let (recovered, _) = OffsetStore::recover(&dir, false).expect("open");
        let store = recovered.start().expect("start");
        let producer = TransactionalProducer { producer_id: 5, producer_epoch: 2 };
        store.append(&[record(0, 1)], 10).await.expect("plain append");
        store.append_transactional(&[record(0, 2), record(1, 3)], 11, producer).await.expect("transactional append");
        store.close().await.expect("close");
        assert_eq!(
            read_entries(&dir),
            vec![
                LogEntry::Offset(record(0, 1)),
                LogEntry::Transactional { producer, record: record(0, 2) },
                LogEntry::Transactional { producer, record: record(1, 3) },
            ]
        );
    }
}
