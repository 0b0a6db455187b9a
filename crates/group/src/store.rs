//! The durable offsets log: one internal partition under the data directory, appended with group
//! commit (an append resolves after the fdatasync that covers it) and replayed on open.

use std::path::Path;

use once_partition::{LogConfig, Partition, PartitionId};

use crate::error::GroupError;
use crate::records::{decode_batches, encode_batch, OffsetRecord};

/// The internal topic's name, as Kafka calls it. It is not in the topic registry: clients cannot
/// produce to or fetch from it.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Bytes read per step while replaying the log.
const REPLAY_READ_BYTES: usize = 1 << 20;

pub struct OffsetStore {
    partition: Partition,
}

impl OffsetStore {
    /// Opens (recovering) the log in `dir` and returns it with every record in log order.
    /// Blocking file reads: call at start-up. Needs a tokio runtime (the partition's writer task).
    pub fn open(dir: &Path, unsafe_skip_fsync: bool) -> Result<(OffsetStore, Vec<OffsetRecord>), GroupError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| GroupError::Storage(format!("creating {}: {error}", dir.display())))?;
        // Time and size retention would delete live commits: the log is kept whole (see the crate docs
        // on compaction).
        let config = LogConfig {
            retention_ms: None,
            retention_bytes: None,
            segment_ms_max: None,
            unsafe_skip_fsync,
            ..LogConfig::default()
        };
        let id = PartitionId { topic: OFFSETS_TOPIC.to_string(), partition: 0 };
        let partition = Partition::open(id, dir, config)?;
        let records = replay(&partition)?;
        Ok((OffsetStore { partition }, records))
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

    /// Flushes and closes the log cleanly.
    pub async fn close(&self) -> Result<(), GroupError> {
        Ok(self.partition.close().await?)
    }

    pub fn size_bytes(&self) -> u64 {
        self.partition.size_bytes()
    }
}

fn replay(partition: &Partition) -> Result<Vec<OffsetRecord>, GroupError> {
    let high_watermark = partition.high_watermark();
    let mut offset = partition.log_start_offset();
    let mut all = Vec::new();
    while offset < high_watermark {
        let bytes = partition.read(offset, REPLAY_READ_BYTES)?;
        if bytes.is_empty() {
            break;
        }
        let (records, next_offset) = decode_batches(bytes)?;
        let next_offset = next_offset.and_then(|next| u64::try_from(next).ok()).unwrap_or(high_watermark);
        assert!(next_offset > offset, "replay of the offsets log must move forward (at {offset}, next {next_offset})");
        all.extend(records);
        offset = next_offset;
    }
    tracing::info!(records = all.len(), end_offset = offset, "offsets log replayed");
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CommittedOffset, OffsetKey};

    fn record(partition: i32, offset: i64) -> OffsetRecord {
        let key = OffsetKey { group: "g".into(), topic: "t".into(), partition };
        OffsetRecord {
            key,
            value: Some(CommittedOffset { offset, leader_epoch: -1, metadata: None, commit_timestamp_ms: 1 }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appended_records_are_replayed_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, replayed) = OffsetStore::open(dir.path(), false).expect("open");
        assert!(replayed.is_empty());
        store.append(&[record(0, 1), record(1, 2)], 10).await.expect("first append");
        store.append(&[record(0, 3)], 11).await.expect("second append");
        store.close().await.expect("close");
        let (_store, replayed) = OffsetStore::open(dir.path(), false).expect("reopen");
        assert_eq!(replayed, vec![record(0, 1), record(1, 2), record(0, 3)]);
    }
}
