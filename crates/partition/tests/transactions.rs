//! Transactions at the partition: transactional batches open a transaction, markers close it, the last
//! stable offset stays at the earliest open transaction while the high watermark moves on, aborts are
//! listed for read_committed fetches — across clean and unclean restarts, expiry and retention.

use std::path::Path;
use std::time::Duration;

use once_log::testing::{make_batch, make_batch_with};
use once_partition::{AbortedTxn, LogConfig, Partition, PartitionError, PartitionId, TxnMarker};

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const A: i64 = 1000;
const B: i64 = 2000;

fn id() -> PartitionId {
    PartitionId { topic: "t".into(), partition: 0 }
}

fn open(dir: &Path) -> Partition {
    Partition::open(id(), dir, LogConfig::default()).expect("open")
}

fn txn_batch(producer_id: i64, epoch: i16, first_sequence: i32, records: u32) -> Vec<u8> {
    make_batch_with(producer_id, epoch, first_sequence, TRANSACTIONAL, records, 8, TIMESTAMP_MS)
}

fn idempotent_batch(producer_id: i64, epoch: i16, first_sequence: i32, records: u32) -> Vec<u8> {
    make_batch_with(producer_id, epoch, first_sequence, 0, records, 8, TIMESTAMP_MS)
}

fn marker(producer_id: i64, producer_epoch: i16, coordinator_epoch: i32, commit: bool) -> TxnMarker {
    TxnMarker { producer_id, producer_epoch, coordinator_epoch, commit }
}

fn aborted(producer_id: i64, first_offset: u64, last_offset: u64) -> AbortedTxn {
    AbortedTxn { producer_id, first_offset, last_offset }
}

/// Drops the partition without closing it: no final snapshot, no clean-shutdown marker, so the next
/// open recovers the log and replays it after the last snapshot, as after kill -9.
async fn crash(partition: Partition) {
    drop(partition);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_stable_offset_waits_for_the_earliest_open_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    assert_eq!(partition.last_stable_offset(), 0);
    partition.append(make_batch(2, 8, TIMESTAMP_MS)).await.expect("plain");
    assert_eq!(partition.last_stable_offset(), 2, "no transaction: the high watermark");
    let first = partition.append(txn_batch(A, 0, 0, 2)).await.expect("transactional");
    assert_eq!(first.base_offset, 2);
    partition.append(make_batch(3, 8, TIMESTAMP_MS)).await.expect("plain");
    partition.append(idempotent_batch(B, 0, 0, 1)).await.expect("another producer");
    partition.append(txn_batch(A, 0, 2, 1)).await.expect("the same transaction");
    assert_eq!(partition.high_watermark(), 9, "other producers' data moves the high watermark");
    assert_eq!(partition.last_stable_offset(), 2, "the stable offset stays at the transaction's first offset");

    let committed = partition.write_marker(marker(A, 0, 0, true)).await.expect("commit");
    assert_eq!(committed.base_offset, 9, "the marker takes an offset");
    assert_eq!(partition.high_watermark(), 10);
    assert_eq!(partition.last_stable_offset(), 10, "nothing open: the high watermark");
    assert!(partition.aborted_transactions(0, 10).is_empty(), "a commit aborts nothing");
    let summary = partition.producers().into_iter().find(|summary| summary.producer_id == A).expect("producer A");
    assert_eq!((summary.current_txn_start_offset, summary.coordinator_epoch), (None, 0));
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_is_listed_with_its_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(txn_batch(A, 0, 0, 2)).await.expect("transactional");
    partition.append(make_batch(3, 8, TIMESTAMP_MS)).await.expect("plain");
    partition.append(txn_batch(A, 0, 2, 1)).await.expect("transactional");
    let abort = partition.write_marker(marker(A, 0, 3, false)).await.expect("abort");
    assert_eq!(abort.base_offset, 6);
    assert_eq!(partition.last_stable_offset(), 7);
    assert_eq!(partition.aborted_transactions(0, 7), vec![aborted(A, 0, 6)]);
    assert_eq!(partition.aborted_transactions(6, 7), vec![aborted(A, 0, 6)], "the marker is at `from`");
    assert_eq!(partition.aborted_transactions(0, 1), vec![aborted(A, 0, 6)], "the first offset is below `upper`");
    assert!(partition.aborted_transactions(7, 8).is_empty(), "the marker is before `from`");
    assert!(partition.aborted_transactions(0, 0).is_empty(), "the first offset is not below `upper`");

    // A retried abort with nothing open is still written, and only lists itself.
    let retried = partition.write_marker(marker(A, 0, 3, false)).await.expect("retried abort");
    assert_eq!(retried.base_offset, 7);
    assert_eq!(partition.aborted_transactions(7, 8), vec![aborted(A, 7, 7)]);
    assert_eq!(partition.last_stable_offset(), 8);
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_transactions_of_two_producers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(txn_batch(A, 0, 0, 1)).await.expect("A opens at 0");
    partition.append(txn_batch(B, 0, 0, 1)).await.expect("B opens at 1");
    partition.append(txn_batch(A, 0, 1, 1)).await.expect("A at 2");
    partition.append(txn_batch(B, 0, 1, 1)).await.expect("B at 3");
    assert_eq!(partition.last_stable_offset(), 0);
    partition.write_marker(marker(B, 0, 0, true)).await.expect("B commits at 4");
    assert_eq!(partition.last_stable_offset(), 0, "A's transaction, opened first, is still open");
    partition.write_marker(marker(A, 0, 0, false)).await.expect("A aborts at 5");
    assert_eq!(partition.last_stable_offset(), 6);
    partition.append(txn_batch(B, 0, 2, 2)).await.expect("B opens again at 6");
    partition.append(txn_batch(A, 0, 2, 1)).await.expect("A opens again at 8");
    assert_eq!(partition.last_stable_offset(), 6);
    partition.write_marker(marker(A, 0, 0, false)).await.expect("A aborts at 9");
    assert_eq!(partition.last_stable_offset(), 6, "B's transaction at 6 is still open");
    partition.write_marker(marker(B, 0, 0, false)).await.expect("B aborts at 10");
    assert_eq!(partition.last_stable_offset(), 11);
    assert_eq!(
        partition.aborted_transactions(0, 11),
        vec![aborted(A, 0, 5), aborted(B, 6, 10), aborted(A, 8, 9)],
        "in first-offset order"
    );
    assert_eq!(partition.aborted_transactions(6, 11), vec![aborted(B, 6, 10), aborted(A, 8, 9)]);
    let producers = partition.producers();
    assert_eq!(producers.iter().map(|summary| summary.producer_id).collect::<Vec<_>>(), vec![A, B]);
    assert!(producers.iter().all(|summary| summary.current_txn_start_offset.is_none()));
    assert_eq!(producers[0].last_sequence, 2);
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_break_a_transaction_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(txn_batch(A, 0, 0, 2)).await.expect("transactional");
    let interleaved = partition.append(idempotent_batch(A, 0, 2, 1)).await;
    assert!(
        matches!(interleaved, Err(PartitionError::InvalidTxnState(_))),
        "a non-transactional batch during the transaction: {interleaved:?}"
    );
    let anonymous = partition.append(make_batch_with(-1, -1, -1, TRANSACTIONAL, 1, 8, TIMESTAMP_MS)).await;
    assert!(matches!(anonymous, Err(PartitionError::InvalidTxnState(_))), "no producer id: {anonymous:?}");
    let control = make_batch_with(A, 0, -1, 0x30, 1, 8, TIMESTAMP_MS);
    let forged = partition.append(control).await;
    assert!(matches!(forged, Err(PartitionError::Log(_))), "control batches only come as markers: {forged:?}");
    assert_eq!(partition.log_end_offset(), 2, "nothing refused was appended");
    assert_eq!(partition.last_stable_offset(), 0);

    partition.write_marker(marker(A, 0, 0, true)).await.expect("commit");
    let after = partition.append(idempotent_batch(A, 0, 2, 1)).await.expect("after the commit");
    assert_eq!(after.base_offset, 3, "the sequence goes on after the marker");
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_are_fenced_by_producer_and_coordinator_epochs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(txn_batch(A, 2, 0, 1)).await.expect("transactional at epoch 2");
    let zombie = partition.write_marker(marker(A, 1, 0, true)).await;
    assert!(matches!(zombie, Err(PartitionError::ProducerFenced { current_epoch: 2 })), "{zombie:?}");
    partition.write_marker(marker(A, 2, 5, false)).await.expect("abort at coordinator epoch 5");
    partition.append(txn_batch(A, 2, 1, 1)).await.expect("the next transaction");
    let stale = partition.write_marker(marker(A, 2, 4, true)).await;
    assert!(matches!(stale, Err(PartitionError::CoordinatorFenced { marker: 4, current: 5 })), "{stale:?}");
    assert_eq!(partition.log_end_offset(), 3, "refused markers take no offset");
    assert_eq!(partition.last_stable_offset(), 2, "and close nothing");
    partition.write_marker(marker(A, 3, 6, true)).await.expect("a newer epoch from a newer coordinator");
    assert_eq!(partition.last_stable_offset(), 4);
    let summary = &partition.producers()[0];
    assert_eq!((summary.producer_epoch, summary.coordinator_epoch, summary.last_sequence), (3, 6, -1));
    let old_epoch = partition.append(txn_batch(A, 2, 2, 1)).await;
    assert!(matches!(old_epoch, Err(PartitionError::ProducerFenced { current_epoch: 3 })), "{old_epoch:?}");
    partition.append(txn_batch(A, 3, 0, 1)).await.expect("the new epoch starts at sequence 0");
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_coordinators_unsequenced_batches_open_transactions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(make_batch(1, 8, TIMESTAMP_MS)).await.expect("plain");
    partition.append(txn_batch(A, 3, -1, 2)).await.expect("an offset commit without sequence");
    assert_eq!(partition.last_stable_offset(), 1);
    let fenced = partition.append(txn_batch(A, 2, -1, 1)).await;
    assert!(matches!(fenced, Err(PartitionError::ProducerFenced { current_epoch: 3 })), "{fenced:?}");
    partition.append(txn_batch(A, 3, -1, 1)).await.expect("another, no sequence to continue");
    partition.write_marker(marker(A, 3, 0, true)).await.expect("commit");
    assert_eq!(partition.last_stable_offset(), 5);
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_waits_behind_appends_queued_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    // Queued without awaiting: they may share a group-commit round with the marker.
    let before: Vec<_> = (0..5).map(|sequence| partition.append(txn_batch(A, 0, sequence * 2, 2))).collect();
    let commit = partition.write_marker(marker(A, 0, 0, true));
    let after = partition.append(txn_batch(A, 0, 10, 1));
    let mut last_before = 0;
    for appended in before {
        last_before = appended.await.expect("queued before").last_offset;
    }
    let commit = commit.await.expect("commit");
    assert_eq!(commit.base_offset, last_before + 1, "the marker lands after every append queued before it");
    assert!(partition.high_watermark() > commit.base_offset, "answered once durable");
    let after = after.await.expect("queued after");
    assert_eq!(after.base_offset, commit.base_offset + 1);
    assert_eq!(partition.last_stable_offset(), after.base_offset, "a new transaction opened after the marker");
    partition.close().await.expect("close");
}

/// Appends a partition queues for its writer (ARCHITECTURE.md, "Bounded everything").
const QUEUED_APPENDS_MAX: usize = 4096;

/// A full queue refuses an ordinary append (retriable, the producer retries), but a marker waits for
/// room: the coordinator has already answered EndTxn, so a marker refused here would leave the
/// transaction open, holding the last stable offset, until the coordinator's timer retried it.
/// One thread: nothing below runs the writer until the test awaits, so the queue fills exactly.
#[tokio::test(flavor = "current_thread")]
async fn a_marker_waits_for_room_in_a_full_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(txn_batch(A, 0, 0, 1)).await.expect("A opens at 0");
    let queued: Vec<_> = (0..QUEUED_APPENDS_MAX).map(|_| partition.append(make_batch(1, 8, TIMESTAMP_MS))).collect();
    let refused = partition.append(make_batch(1, 8, TIMESTAMP_MS)).await;
    assert!(matches!(refused, Err(PartitionError::Busy(_))), "an append finds the queue full: {refused:?}");
    let commit = partition.write_marker(marker(A, 0, 0, true)).await.expect("the marker waits for room");
    assert_eq!(commit.base_offset, 1 + QUEUED_APPENDS_MAX as u64, "behind every append queued before it");
    for append in queued {
        append.await.expect("queued append");
    }
    assert_eq!(partition.last_stable_offset(), commit.base_offset + 1, "the commit ended the transaction");
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_woken_by_the_high_watermark_sees_the_new_stable_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = std::sync::Arc::new(open(dir.path()));
    partition.append(txn_batch(A, 0, 0, 2)).await.expect("transactional");
    for round in 0..20 {
        let mut watch = partition.watch_high_watermark();
        watch.borrow_and_update();
        let waiter = {
            let partition = partition.clone();
            tokio::spawn(async move {
                watch.changed().await.expect("the high watermark moves");
                (*watch.borrow(), partition.last_stable_offset())
            })
        };
        let commit = round % 2 == 0;
        let written = partition.write_marker(marker(A, 0, 0, commit)).await.expect("marker");
        let (high_watermark, last_stable_offset) = waiter.await.expect("waiter");
        assert_eq!(high_watermark, written.base_offset + 1);
        assert_eq!(
            last_stable_offset, high_watermark,
            "round {round}: the marker's stable offset is already published"
        );
        partition.append(txn_batch(A, 0, 2 + round, 1)).await.expect("the next transaction");
    }
    partition.close().await.expect("close");
}

/// A: an open transaction from offset 2. B: an aborted transaction 3..=5. Returns the end offset.
async fn open_and_aborted(partition: &Partition) -> u64 {
    partition.append(make_batch(2, 8, TIMESTAMP_MS)).await.expect("plain");
    partition.append(txn_batch(A, 0, 0, 1)).await.expect("A opens at 2");
    partition.append(txn_batch(B, 4, 0, 2)).await.expect("B opens at 3");
    partition.write_marker(marker(B, 4, 7, false)).await.expect("B aborts at 5");
    partition.append(txn_batch(A, 0, 1, 1)).await.expect("A at 6");
    assert_eq!(partition.last_stable_offset(), 2);
    7
}

fn assert_open_and_aborted(partition: &Partition, end: u64) {
    assert_eq!(partition.high_watermark(), end);
    assert_eq!(partition.last_stable_offset(), 2, "A's transaction is still open");
    assert_eq!(partition.aborted_transactions(0, end), vec![aborted(B, 3, 5)]);
    let producers = partition.producers();
    assert_eq!(producers.len(), 2);
    assert_eq!((producers[0].producer_id, producers[0].current_txn_start_offset), (A, Some(2)));
    assert_eq!((producers[1].producer_id, producers[1].coordinator_epoch, producers[1].producer_epoch), (B, 7, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_a_clean_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    let end = open_and_aborted(&partition).await;
    partition.close().await.expect("close");

    let partition = open(dir.path());
    assert_open_and_aborted(&partition, end);
    let stale = partition.write_marker(marker(B, 4, 6, true)).await;
    assert!(matches!(stale, Err(PartitionError::CoordinatorFenced { .. })), "the coordinator epoch survives");
    let refused = partition.append(idempotent_batch(A, 0, 2, 1)).await;
    assert!(matches!(refused, Err(PartitionError::InvalidTxnState(_))), "A's transaction is still open");
    partition.write_marker(marker(A, 0, 7, true)).await.expect("commit A");
    assert_eq!(partition.last_stable_offset(), end + 1);
    partition.close().await.expect("close");

    let partition = open(dir.path());
    assert_eq!(partition.last_stable_offset(), end + 1, "the commit survives too");
    assert_eq!(partition.aborted_transactions(0, end + 1), vec![aborted(B, 3, 5)]);
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_survive_an_unclean_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    let end = open_and_aborted(&partition).await;
    crash(partition).await;
    assert!(!dir.path().join("producer-state.snapshot").exists(), "no snapshot: everything is replayed");

    let partition = open(dir.path());
    assert_open_and_aborted(&partition, end);
    partition.close().await.expect("close: the snapshot now holds A's open transaction");

    // A crash right after a marker: the snapshot says A is open, the log after it says A aborted.
    let partition = open(dir.path());
    let abort = partition.write_marker(marker(A, 0, 8, false)).await.expect("abort A");
    crash(partition).await;
    let partition = open(dir.path());
    assert_eq!(partition.last_stable_offset(), abort.base_offset + 1, "the marker was replayed");
    assert_eq!(partition.aborted_transactions(0, u64::MAX), vec![aborted(A, 2, abort.base_offset), aborted(B, 3, 5)]);
    assert_eq!(partition.producers()[0].coordinator_epoch, 8);
    let stale = partition.write_marker(marker(A, 0, 7, true)).await;
    assert!(matches!(stale, Err(PartitionError::CoordinatorFenced { marker: 7, current: 8 })), "{stale:?}");
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_at_a_roll_mid_transaction_is_replayed_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Three 76-byte batches per segment: the fourth rolls, the marker and B's batch do not.
    let config = LogConfig { segment_bytes_max: 250, ..LogConfig::default() };
    let partition = Partition::open(id(), dir.path(), config.clone()).expect("open");
    for sequence in 0..4 {
        partition.append(txn_batch(A, 0, sequence, 1)).await.expect("transactional");
    }
    assert!(dir.path().join("producer-state.snapshot").exists(), "rolling wrote a snapshot");
    let abort = partition.write_marker(marker(A, 0, 1, false)).await.expect("abort");
    partition.append(txn_batch(B, 0, 0, 1)).await.expect("B opens");
    crash(partition).await;

    let partition = Partition::open(id(), dir.path(), config).expect("reopen");
    assert_eq!(partition.aborted_transactions(0, u64::MAX), vec![aborted(A, 0, abort.base_offset)]);
    assert_eq!(partition.last_stable_offset(), abort.base_offset + 1, "B's transaction holds the stable offset");
    partition.close().await.expect("close");
}

/// A version-1 snapshot (the layout before transactions), valid but empty, as of `offset`.
fn version_1_snapshot(offset: u64) -> Vec<u8> {
    let mut bytes = b"ONCE-PST".to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_snapshot_is_ignored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    let end = open_and_aborted(&partition).await;
    partition.close().await.expect("close");
    // Were it used, it would say: no producer, nothing to replay.
    std::fs::write(dir.path().join("producer-state.snapshot"), version_1_snapshot(end)).expect("write");

    let partition = open(dir.path());
    assert_open_and_aborted(&partition, end);
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_skips_producers_with_open_transactions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = open(dir.path());
    partition.append(txn_batch(A, 0, 0, 1)).await.expect("transactional");
    partition.append(idempotent_batch(B, 0, 0, 1)).await.expect("idempotent");
    assert_eq!(partition.expire_producers(TIMESTAMP_MS + 60_000, 1_000), 1);
    assert_eq!(partition.producers().iter().map(|summary| summary.producer_id).collect::<Vec<_>>(), vec![A]);
    partition.write_marker(marker(A, 0, 0, true)).await.expect("commit");
    assert_eq!(partition.expire_producers(i64::MAX, 1_000), 1, "expires once its transaction is over");
    partition.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_aborted_transactions() {
    let dir = tempfile::tempdir().expect("temp dir");
    // About two batches per segment: a 1-record batch is 76 bytes, a marker 78.
    let config = LogConfig { segment_bytes_max: 200, retention_ms: None, ..LogConfig::default() };
    let partition = Partition::open(id(), dir.path(), config.clone()).expect("open");
    partition.append(txn_batch(A, 0, 0, 1)).await.expect("A at 0");
    partition.write_marker(marker(A, 0, 0, false)).await.expect("A aborts at 1");
    let first_segment_bytes = partition.size_bytes();
    partition.append(txn_batch(B, 0, 0, 1)).await.expect("B at 2, a new segment");
    partition.write_marker(marker(B, 0, 0, false)).await.expect("B aborts at 3");
    partition.append(txn_batch(A, 0, 1, 1)).await.expect("A opens at 4, a new segment");
    assert_eq!(partition.aborted_transactions(0, 5), vec![aborted(A, 0, 1), aborted(B, 2, 3)]);

    let retention_bytes = partition.size_bytes() - first_segment_bytes;
    partition.set_config(LogConfig { retention_bytes: Some(retention_bytes), ..config.clone() });
    assert_eq!(partition.apply_retention(TIMESTAMP_MS).expect("retention"), 1, "the first segment goes");
    assert_eq!(partition.log_start_offset(), 2);
    assert_eq!(partition.aborted_transactions(0, 5), vec![aborted(B, 2, 3)], "A's abort went with its segment");
    assert_eq!(partition.last_stable_offset(), 4);
    crash(partition).await;

    let partition = Partition::open(id(), dir.path(), config).expect("reopen");
    assert_eq!(partition.aborted_transactions(0, 5), vec![aborted(B, 2, 3)], "and stays gone after a restart");
    assert_eq!(partition.last_stable_offset(), 4);
    partition.close().await.expect("close");
}
