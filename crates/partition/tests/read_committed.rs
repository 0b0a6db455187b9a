//! A read_committed read returns batches and the aborted transactions among them together: retention
//! moving the log start between the two would prune the entries of batches already read, and a
//! consumer would take aborted records for committed ones.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use once_log::testing::make_batch_with;
use once_log::BatchHeader;
use once_partition::{AbortedTxn, LogConfig, Partition, PartitionError, PartitionId, TxnMarker};

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const PRODUCER: i64 = 1000;
/// Aborted transactions written, each a one-record batch and its abort marker (2 offsets).
const TRANSACTIONS: u64 = 1000;

/// Every aborted batch in `records` (all of `PRODUCER`'s data batches are aborted) lies in one of
/// `aborted`; returns how many batches were checked.
fn check_covered(records: &[u8], aborted: &[AbortedTxn]) -> usize {
    let mut position = 0;
    let mut checked = 0;
    while position < records.len() {
        let header = BatchHeader::parse(&records[position..]).expect("whole batches");
        position += header.total_len();
        if header.is_control() || !header.is_transactional() {
            continue;
        }
        let offset = header.base_offset as u64;
        let covered = aborted.iter().any(|entry| {
            entry.producer_id == header.producer_id && entry.first_offset <= offset && offset < entry.last_offset
        });
        assert!(covered, "aborted batch at {offset} is read without its aborted transaction (listed: {aborted:?})");
        checked += 1;
    }
    checked
}

/// A reader at the log start, where retention deletes next, against retention moving it in small
/// steps: every aborted batch read comes with its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_batches_are_read_with_their_entries_while_retention_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    // About five transactions per segment, so the log start moves within segments and across them.
    let config =
        LogConfig { segment_bytes_max: 800, retention_ms: None, unsafe_skip_fsync: true, ..LogConfig::default() };
    let id = PartitionId { topic: "t".into(), partition: 0 };
    let partition = Arc::new(Partition::open(id, dir.path(), config).expect("open"));
    // All queued at once, each abort behind its batch.
    let (mut batches, mut aborts) = (Vec::new(), Vec::new());
    for sequence in 0..TRANSACTIONS as i32 {
        batches.push(partition.append(make_batch_with(PRODUCER, 0, sequence, TRANSACTIONAL, 1, 8, TIMESTAMP_MS)));
        let abort = TxnMarker { producer_id: PRODUCER, producer_epoch: 0, coordinator_epoch: 0, commit: false };
        aborts.push(partition.write_marker(abort));
    }
    for batch in batches {
        batch.await.expect("transactional batch");
    }
    for abort in aborts {
        abort.await.expect("abort");
    }
    let end = 2 * TRANSACTIONS;
    assert_eq!(partition.last_stable_offset(), end, "every transaction ended");

    let done = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicBool::new(false));
    // Reads finished: retention moves the log start once per read finished, so each step lands at
    // some point of the read that follows (before it, during it, or after it) and the reader is never
    // simply outrun (reads no longer hold the log lock, so nothing else paces retention against them).
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (partition, done, reading, reads) = (partition.clone(), done.clone(), reading.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut checked = 0;
            while !done.load(Ordering::Acquire) {
                reading.store(true, Ordering::Release);
                let offset = partition.log_start_offset();
                match partition.read_committed(offset, 1, partition.last_stable_offset()) {
                    Ok((records, aborted)) => checked += check_covered(&records, &aborted),
                    // Retention passed the offset before the read: nothing was read.
                    Err(PartitionError::Log(once_log::LogError::OffsetOutOfRange { .. })) => {}
                    Err(error) => panic!("read at {offset}: {error}"),
                }
                reads.fetch_add(1, Ordering::AcqRel);
            }
            checked
        })
    };
    let retention = {
        let partition = partition.clone();
        std::thread::spawn(move || {
            while !reading.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            for log_start_offset in 1..=end {
                let finished = reads.load(Ordering::Acquire);
                while reads.load(Ordering::Acquire) == finished {
                    std::thread::yield_now();
                }
                partition.advance_log_start_offset(log_start_offset).expect("advance the log start");
            }
        })
    };
    let retention = retention.join();
    done.store(true, Ordering::Release);
    let checked = reader.join().expect("reader");
    retention.expect("retention");
    assert!(checked > 0, "the reader read aborted batches");
    assert_eq!(partition.aborted_transactions(0, end), Vec::new(), "retention pruned every aborted transaction");
    partition.close().await.expect("close");
}
