//! A producer-state snapshot that the recovered log no longer reaches (a lying disk, a corrupt tail
//! cut by recovery, a restored backup) must never be loaded again: once the log grows past its offset
//! after a later crash, it would skip the batches between the recovered end and its offset.

use std::path::Path;
use std::time::Duration;

use once_log::testing::make_batch_with;
use once_log::BatchHeader;
use once_partition::{AbortedTxn, LogConfig, Partition, PartitionId, TxnMarker};

const TRANSACTIONAL: i16 = 0x10;
/// The idempotent producer that writes offsets 0..9 before the cut.
const IDEMPOTENT: i64 = 1000;
/// The transactional producer that writes after the cut and crashes with its transaction open.
const TRANSACTIONAL_PRODUCER: i64 = 2000;
const SNAPSHOT_FILE: &str = "producer-state.snapshot";
const SEGMENT_FILE: &str = "00000000000000000000.log";

/// Batches stamped now: an old timestamp would make the recovered segment roll at the first append
/// (`segment.ms`), and the roll's snapshot would replace the stale one by chance.
fn now_ms() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    i64::try_from(elapsed.as_millis()).expect("ms fit in i64")
}

fn id() -> PartitionId {
    PartitionId { topic: "t".into(), partition: 0 }
}

fn open(dir: &Path) -> Partition {
    Partition::open(id(), dir, LogConfig::default()).expect("open")
}

/// Drops the partition without closing it: no snapshot, no clean-shutdown marker (kill -9).
async fn crash(partition: Partition) {
    drop(partition);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Cuts the segment back to its first `batches` batches and removes the clean-shutdown marker: what a
/// disk that lied about an fsync, or a corrupt tail caught by its CRC, leaves after a restart.
fn cut_segment(dir: &Path, batches: usize) {
    let path = dir.join(SEGMENT_FILE);
    let bytes = std::fs::read(&path).expect("read the segment");
    let mut length = 0;
    for _ in 0..batches {
        let header = BatchHeader::parse(&bytes[length..]).expect("a whole batch");
        length += header.total_len();
    }
    assert!(length < bytes.len(), "the cut removes batches");
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open the segment");
    file.set_len(length as u64).expect("cut the segment");
    std::fs::remove_file(dir.join("clean-shutdown")).expect("a clean close left its marker");
}

fn snapshot_offset(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(SNAPSHOT_FILE)).ok()?;
    Some(u64::from_be_bytes(bytes.get(10..18)?.try_into().ok()?))
}

/// The scenario: offsets 0..9 from an idempotent producer, a clean stop (snapshot at 10), the
/// segment cut back to 4 batches; a transaction then writes offsets 4..11 and the broker crashes with
/// it open. After the restart the transaction must still hold the last stable offset at 4 and its
/// abort must cover all of it; the idempotent producer continues at sequence 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_beyond_the_recovered_log_is_never_loaded_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    for sequence in 0..10 {
        let batch = make_batch_with(IDEMPOTENT, 0, sequence, 0, 1, 8, now_ms());
        partition.append(batch).await.expect("idempotent append");
    }
    partition.close().await.expect("clean close");
    assert_eq!(snapshot_offset(dir.path()), Some(10), "the clean close snapshots producer state at 10");
    cut_segment(dir.path(), 4);

    let partition = open(dir.path());
    assert_eq!(partition.log_end_offset(), 4, "recovery kept the 4 batches left");
    for sequence in 0..8 {
        let batch = make_batch_with(TRANSACTIONAL_PRODUCER, 0, sequence, TRANSACTIONAL, 1, 8, now_ms());
        let appended = partition.append(batch).await.expect("transactional append");
        assert_eq!(appended.base_offset, 4 + sequence as u64);
    }
    assert_eq!(partition.last_stable_offset(), 4);
    crash(partition).await;

    let partition = open(dir.path());
    assert_eq!(partition.log_end_offset(), 12);
    assert_eq!(partition.last_stable_offset(), 4, "the open transaction still starts at 4");
    let open_transaction =
        partition.producers().iter().find(|summary| summary.producer_id == TRANSACTIONAL_PRODUCER).cloned();
    assert_eq!(open_transaction.and_then(|summary| summary.current_txn_start_offset), Some(4));
    let marker =
        TxnMarker { producer_id: TRANSACTIONAL_PRODUCER, producer_epoch: 0, coordinator_epoch: 0, commit: false };
    let abort = partition.write_marker(marker).await.expect("abort");
    assert_eq!(abort.base_offset, 12);
    assert_eq!(partition.last_stable_offset(), 13);
    let whole = AbortedTxn { producer_id: TRANSACTIONAL_PRODUCER, first_offset: 4, last_offset: 12 };
    assert_eq!(partition.aborted_transactions(0, 13), vec![whole], "every uncommitted batch is aborted");
    // The idempotent producer's state is that of the log: its batches 4..9 are gone, 4 comes next
    // (a stale state would refuse it as out of order, or answer a retry of 5 with another's offset).
    let next = make_batch_with(IDEMPOTENT, 0, 4, 0, 1, 8, now_ms());
    let appended = partition.append(next).await.expect("the idempotent producer continues at its log");
    assert_eq!((appended.base_offset, appended.duplicate), (13, false));
    assert_eq!(snapshot_offset(dir.path()), None, "the snapshot beyond the log end was deleted at the first open");
    partition.close().await.expect("close");
}

/// A snapshot exactly at the recovered log end is the state of the log below it: still used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_at_the_recovered_log_end_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    for sequence in 0..4 {
        let batch = make_batch_with(IDEMPOTENT, 0, sequence, 0, 1, 8, now_ms());
        partition.append(batch).await.expect("idempotent append");
    }
    partition.close().await.expect("clean close");
    std::fs::remove_file(dir.path().join("clean-shutdown")).expect("marker");

    let partition = open(dir.path());
    assert_eq!(partition.log_end_offset(), 4);
    assert_eq!(snapshot_offset(dir.path()), Some(4), "a snapshot the log reaches stays");
    let retry = make_batch_with(IDEMPOTENT, 0, 3, 0, 1, 8, now_ms());
    let appended = partition.append(retry).await.expect("retry");
    assert_eq!((appended.base_offset, appended.duplicate), (3, true));
    partition.close().await.expect("close");
}

/// A snapshot that is there but cannot be decoded (a flipped bit, a torn write the CRC catches) is
/// deleted at the open like one beyond the log end: a file kept but unused is one a later start
/// might read differently. Here it is also beyond the recovered log, the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_snapshot_beyond_the_log_is_deleted_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    for sequence in 0..10 {
        let batch = make_batch_with(IDEMPOTENT, 0, sequence, 0, 1, 8, now_ms());
        partition.append(batch).await.expect("idempotent append");
    }
    partition.close().await.expect("clean close");
    assert_eq!(snapshot_offset(dir.path()), Some(10));
    cut_segment(dir.path(), 4);
    let path = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).expect("read the snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).expect("damage the snapshot's CRC");

    let partition = open(dir.path());
    assert_eq!(partition.log_end_offset(), 4);
    assert!(!path.exists(), "the undecodable snapshot was deleted at the open");
    let next = make_batch_with(IDEMPOTENT, 0, 4, 0, 1, 8, now_ms());
    let appended = partition.append(next).await.expect("producer state replayed from the log");
    assert_eq!((appended.base_offset, appended.duplicate), (4, false));
    partition.close().await.expect("close");
}

/// A snapshot that cannot be read (an I/O error other than not-found: EIO, EMFILE, EACCES; here a
/// directory in its place, which fails the read for root too) fails the open with an error naming
/// it: neither used nor deleted unread, and never silently left behind for a later start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_that_cannot_be_read_fails_the_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(make_batch_with(IDEMPOTENT, 0, 0, 0, 1, 8, now_ms())).await.expect("append");
    partition.close().await.expect("clean close");
    let path = dir.path().join(SNAPSHOT_FILE);
    std::fs::remove_file(&path).expect("remove the snapshot");
    std::fs::create_dir(&path).expect("a directory where the snapshot is");
    std::fs::write(path.join("inside"), b"x").expect("not empty");

    let opened = Partition::open(id(), dir.path(), LogConfig::default());
    let error = opened.err().expect("the open fails");
    assert!(error.to_string().contains(SNAPSHOT_FILE), "the error names the snapshot: {error}");
    std::fs::remove_dir_all(&path).expect("clear the directory");
    let partition = open(dir.path());
    let retry = make_batch_with(IDEMPOTENT, 0, 0, 0, 1, 8, now_ms());
    let appended = partition.append(retry).await.expect("retry");
    assert_eq!((appended.base_offset, appended.duplicate), (0, true), "rebuilt from the log once readable");
    partition.close().await.expect("close");
}
