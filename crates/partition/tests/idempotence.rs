//! The idempotent producer at the partition: retries are answered with the original offsets and never
//! appended twice — in the same group-commit round, in later rounds, and after clean and unclean
//! restarts; zombies are fenced; gaps are refused.

use once_log::testing::make_batch_with;
use once_partition::{LogConfig, Partition, PartitionError, PartitionId};

const PRODUCER: i64 = 4242;

fn id() -> PartitionId {
    PartitionId { topic: "t".into(), partition: 0 }
}

fn batch(epoch: i16, first_sequence: i32, records: u32) -> Vec<u8> {
    make_batch_with(PRODUCER, epoch, first_sequence, 0, records, 8, 1_700_000_000_000)
}

fn open(dir: &std::path::Path) -> Partition {
    Partition::open(id(), dir, LogConfig::default()).expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_get_the_original_offsets_and_are_not_appended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    // Original and retry queued together: they share a round, the retry waits for the original's sync.
    let original = partition.append(batch(0, 0, 3));
    let retry = partition.append(batch(0, 0, 3));
    let original = original.await.expect("original");
    let retry = retry.await.expect("retry");
    assert_eq!((original.base_offset, original.duplicate), (0, false));
    assert_eq!((retry.base_offset, retry.last_offset, retry.duplicate), (0, 2, true));
    let next = partition.append(batch(0, 3, 2)).await.expect("next");
    assert_eq!(next.base_offset, 3);
    // A later retry of the first batch, in another round.
    let late = partition.append(batch(0, 0, 3)).await.expect("late retry");
    assert!(late.duplicate);
    assert_eq!(late.base_offset, 0);
    assert_eq!(partition.log_end_offset(), 5, "nothing was appended twice");
    // A gap and an overlap that matches no batch are refused.
    assert!(matches!(
        partition.append(batch(0, 9, 1)).await,
        Err(PartitionError::OutOfOrderSequence { expected_first_sequence: 5 })
    ));
    assert!(matches!(partition.append(batch(0, 1, 2)).await, Err(PartitionError::OutOfOrderSequence { .. })));
    // A new epoch starts at 0 and fences the old one.
    assert_eq!(partition.append(batch(1, 0, 1)).await.expect("new epoch").base_offset, 5);
    assert!(matches!(partition.append(batch(0, 5, 1)).await, Err(PartitionError::ProducerFenced { current_epoch: 1 })));
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_recognised_after_clean_and_unclean_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    for sequence in 0..4 {
        partition.append(batch(0, sequence * 2, 2)).await.expect("append");
    }
    partition.close().await.expect("clean close");
    assert!(dir.path().join("producer-state.snapshot").exists(), "a clean close leaves a snapshot");

    let partition = open(dir.path());
    let retry = partition.append(batch(0, 6, 2)).await.expect("retry after clean restart");
    assert_eq!((retry.base_offset, retry.duplicate), (6, true));
    partition.append(batch(0, 8, 2)).await.expect("continues");
    // An unclean stop: no close, so no new snapshot; the log after the old snapshot is replayed.
    drop(partition);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let partition = open(dir.path());
    assert_eq!(partition.producer_count(), 1);
    let retry = partition.append(batch(0, 8, 2)).await.expect("retry after unclean restart");
    assert_eq!((retry.base_offset, retry.duplicate), (8, true), "the batch after the snapshot is found by replay");
    assert_eq!(partition.log_end_offset(), 10);
    partition.close().await.expect("close");

    // A corrupt snapshot is ignored: the whole log is replayed.
    std::fs::write(dir.path().join("producer-state.snapshot"), b"garbage").expect("corrupt the snapshot");
    let partition = open(dir.path());
    let retry = partition.append(batch(0, 4, 2)).await.expect("retry");
    assert_eq!((retry.base_offset, retry.duplicate), (4, true));
    partition.close().await.expect("close");
}
