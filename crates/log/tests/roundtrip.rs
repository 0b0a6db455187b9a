//! Append and read across segment rolls, validation on append, timestamps, roll by age, sync.

mod common;

use common::{append, expected_read, headers, small_config, Stored};
use once_log::testing::{make_batch, make_batch_with};
use once_log::{verify_crc, BatchHeader, Log, LogConfig, LogError, ValidBatch};

fn filled_log(dir: &std::path::Path, batches: usize) -> (Log, Vec<Stored>) {
    let mut log = Log::open(dir, small_config(600)).expect("open");
    let stored = (0..batches)
        .map(|index| append(&mut log, 1 + (index % 4) as u32, 10 + (index * 7) % 50, 1_000 + index as i64))
        .collect();
    (log, stored)
}

#[test]
fn reads_from_every_offset_across_rolls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, stored) = filled_log(dir.path(), 40);
    let end = log.log_end_offset();
    assert!(log.segment_count() > 4, "small segments rolled: {}", log.segment_count());
    assert_eq!(end, stored.last().expect("batches").last_offset + 1);
    for offset in 0..end {
        let one = log.read(offset, 1, end).expect("read one");
        let containing = stored.iter().find(|batch| batch.last_offset >= offset).expect("containing");
        assert_eq!(one, containing.bytes, "read({offset}) starts with the batch containing it");
        for max_bytes in [0, 150, 700, usize::MAX] {
            let got = log.read(offset, max_bytes, end).expect("read");
            assert_eq!(got, expected_read(&stored, offset, max_bytes, end), "read({offset}, {max_bytes})");
        }
        let bound = stored[stored.len() / 2].base_offset;
        assert_eq!(
            log.read(offset, usize::MAX, bound).expect("bounded"),
            expected_read(&stored, offset, usize::MAX, bound)
        );
    }
    assert!(log.read(end, 1000, end).expect("at end").is_empty());
    assert!(matches!(log.read(end + 1, 1000, end), Err(LogError::OffsetOutOfRange { .. })));
    let all = log.read(0, usize::MAX, end).expect("all");
    let offsets: Vec<i64> = headers(&all).iter().map(|header| header.base_offset).collect();
    let expected: Vec<i64> = stored.iter().map(|batch| batch.base_offset as i64).collect();
    assert_eq!(offsets, expected);
    assert!(headers(&all).iter().all(|header| header.magic == 2));
}

#[test]
fn append_rewrites_base_offset_and_keeps_crc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(10_000)).expect("open");
    append(&mut log, 3, 5, 10);
    let mut bytes = make_batch(2, 5, 20);
    bytes[0..8].copy_from_slice(&12345i64.to_be_bytes());
    let info = log.append(&mut bytes, 20).expect("append");
    assert_eq!((info.base_offset, info.last_offset, info.records, info.max_timestamp), (3, 4, 2, 20));
    assert_eq!(BatchHeader::parse(&bytes).expect("parse").base_offset, 3);
    assert_eq!(info.header.base_offset, 3);
    assert!(verify_crc(&bytes));
    assert_eq!(log.read(3, 1, 5).expect("read"), bytes);
}

/// A batch validated from a slice in the middle of a larger buffer (the produce path's request
/// frame), its leader epoch and base offset rewritten in its own header, is written as the rewritten
/// header and the slice's records: what the log reads back, before and after a reopen, is exactly that,
/// and the buffer it shares is left as it was.
#[test]
fn a_shared_batch_is_written_with_its_rewritten_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(10_000)).expect("open");
    append(&mut log, 3, 5, 10);
    let sent = make_batch(2, 40, 20);
    let frame = bytes::Bytes::from([&[0xEEu8; 37][..], &sent, &[0xDDu8; 11][..]].concat());
    let mut batch = ValidBatch::validate(frame.slice(37..37 + sent.len())).expect("valid");
    batch.set_partition_leader_epoch(7);
    let info = log.append_valid(&mut batch, 20).expect("append");
    assert_eq!((info.base_offset, info.last_offset), (3, 4));
    let mut expected = sent.clone();
    expected[0..8].copy_from_slice(&3i64.to_be_bytes());
    expected[12..16].copy_from_slice(&7i32.to_be_bytes());
    assert!(verify_crc(&expected), "the rewritten fields are outside the CRC");
    assert_eq!(log.read(3, 1, 5).expect("read"), expected, "the rewritten header and the records as sent");
    assert_eq!(&frame[37..37 + sent.len()], &sent[..], "the shared buffer is left as it came");
    append(&mut log, 1, 5, 30);
    log.sync().expect("sync");
    drop(log);
    let log = Log::open(dir.path(), small_config(10_000)).expect("reopen");
    assert_eq!(log.read(3, 1, 6).expect("read after reopen"), expected);
    assert_eq!(log.log_end_offset(), 6, "the batch after it is where it should be");
}

fn recrc(bytes: &mut [u8]) {
    let crc = once_log::batch::crc_of(bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn invalid_batches_are_rejected_without_harm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(2_000)).expect("open");
    append(&mut log, 1, 5, 10);
    let mut bad_crc = make_batch(2, 5, 10);
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert!(matches!(log.append(&mut bad_crc, 0), Err(LogError::CorruptBatch(_))));
    let mut bad_magic = make_batch(2, 5, 10);
    bad_magic[16] = 1;
    assert!(matches!(log.append(&mut bad_magic, 0), Err(LogError::InvalidBatch(_))));
    let mut no_records = make_batch_with(-1, -1, -1, 0, 0, 5, 10);
    assert!(matches!(log.append(&mut no_records, 0), Err(LogError::InvalidBatch(_))));
    // More records than the offsets the batch spans (fewer are fine: compaction-shaped batches).
    let mut bad_delta = make_batch(3, 5, 10);
    bad_delta[23..27].copy_from_slice(&1i32.to_be_bytes());
    recrc(&mut bad_delta);
    assert!(matches!(log.append(&mut bad_delta, 0), Err(LogError::InvalidBatch(_))));
    let mut extra_byte = make_batch(1, 5, 10);
    extra_byte.push(0);
    assert!(matches!(log.append(&mut extra_byte, 0), Err(LogError::CorruptBatch(_))));
    let mut short_length = make_batch(1, 5, 10);
    short_length[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert!(matches!(log.append(&mut short_length, 0), Err(LogError::CorruptBatch(_))));
    let mut too_short = vec![0u8; 30];
    assert!(matches!(log.append(&mut too_short, 0), Err(LogError::InvalidBatch(_))));
    let mut too_large = make_batch(1, 3_000, 10);
    assert!(matches!(log.append(&mut too_large, 0), Err(LogError::BatchTooLarge { .. })));
    assert!(!log.is_failed(), "rejecting input does not latch");
    assert_eq!(log.log_end_offset(), 1);
    append(&mut log, 2, 5, 10);
    assert_eq!(log.log_end_offset(), 3);
}

/// First batch (in log order) whose max timestamp is >= `timestamp`.
fn model_offset_for_timestamp(stored: &[(Stored, i64)], timestamp: i64) -> Option<(u64, i64)> {
    stored.iter().find(|(_, max)| *max >= timestamp).map(|(batch, max)| (batch.base_offset, *max))
}

#[test]
fn timestamp_lookups_match_a_linear_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(500);
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    assert_eq!(log.max_timestamp(), None);
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), None);
    let timestamps = [100, 50, 300, 300, 200, 700, 10, 900, 650, 905, 904, 1000, 20, 1500, 1400];
    let mut stored = Vec::new();
    for (index, &timestamp) in timestamps.iter().enumerate() {
        stored.push((append(&mut log, 1 + index as u32 % 3, 40, timestamp), timestamp));
    }
    assert!(log.segment_count() > 2);
    let check = |log: &Log| {
        for probe in [-5, 0, 10, 50, 51, 100, 101, 300, 301, 650, 700, 701, 904, 905, 906, 1000, 1001, 1450, 1500, 1501]
        {
            assert_eq!(
                log.offset_for_timestamp(probe).expect("lookup"),
                model_offset_for_timestamp(&stored, probe),
                "probe {probe}"
            );
        }
        let max_batch = &stored[13].0;
        assert_eq!(log.max_timestamp(), Some((max_batch.last_offset, 1500)));
    };
    check(&log);
    log.close().expect("close");
    let log = Log::open(dir.path(), config.clone()).expect("reopen clean");
    assert!(log.recovery_stats().clean);
    check(&log);
    drop(log);
    std::fs::remove_file(dir.path().join("recovery-point")).expect("forget recovery point");
    let log = Log::open(dir.path(), config).expect("reopen unclean");
    assert!(!log.recovery_stats().clean);
    check(&log);
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { segment_ms_max: Some(1_000), ..small_config(1 << 20) };
    let mut log = Log::open(dir.path(), config).expect("open");
    log.append(&mut make_batch(1, 10, 0), 10_000).expect("append");
    log.append(&mut make_batch(1, 10, 0), 10_500).expect("append");
    log.append(&mut make_batch(1, 10, 0), 11_000).expect("append");
    assert_eq!(log.segment_count(), 1, "not older than segment_ms_max yet");
    log.append(&mut make_batch(1, 10, 0), 11_001).expect("append");
    assert_eq!(log.segment_count(), 2, "first batch older than segment_ms_max");
    log.append(&mut make_batch(1, 10, 0), 11_500).expect("append");
    assert_eq!(log.segment_count(), 2, "age counts from the new segment's first batch");
}

#[test]
fn sync_advances_the_durable_end_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(400)).expect("open");
    assert_eq!(log.durable_end_offset(), 0);
    append(&mut log, 2, 10, 0);
    assert_eq!(log.durable_end_offset(), 0, "append does not fsync");
    assert_eq!(log.sync().expect("sync"), 2);
    let plan = log.prepare_sync().expect("plan");
    assert!(plan.files.is_empty(), "nothing unsynced");
    assert_eq!(log.complete_sync(plan.end_offset, plan.execute()).expect("complete"), 2, "every plan is completed");
    for _ in 0..10 {
        append(&mut log, 1, 50, 0);
    }
    assert!(log.segment_count() > 1);
    assert!(log.durable_end_offset() > 2, "a roll syncs the sealed segment");
    let plan = log.prepare_sync().expect("plan");
    assert_eq!(plan.end_offset, 12);
    assert_eq!(plan.files.len(), 1, "only the active segment is unsynced");
    append(&mut log, 1, 10, 0);
    let result = plan.execute();
    assert_eq!(log.complete_sync(plan.end_offset, result).expect("complete"), 12);
    assert_eq!(log.sync().expect("sync"), 13);
    let reopened = {
        log.close().expect("close");
        Log::open(dir.path(), small_config(400)).expect("reopen")
    };
    assert_eq!(reopened.durable_end_offset(), 13);
}
