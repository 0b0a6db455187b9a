//! Retention by size and time, and explicit log start offset advances, across reopens.

mod common;

use common::{append, base_of, expected_read, segment_files, small_config, Stored};
use once_log::{Log, LogConfig, LogError};

fn filled(dir: &std::path::Path, config: &LogConfig) -> (Log, Vec<Stored>) {
    let mut log = Log::open(dir, config.clone()).expect("open");
    let stored: Vec<Stored> = (0..30).map(|index| append(&mut log, 2, 40, 1_000 * index as i64)).collect();
    (log, stored)
}

fn assert_out_of_range(log: &Log, offset: u64) {
    let result = log.read(offset, 100, log.log_end_offset());
    assert!(matches!(result, Err(LogError::OffsetOutOfRange { .. })), "read({offset}) below the start: {result:?}");
}

#[test]
fn retention_by_size_deletes_oldest_whole_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(600);
    let (mut log, stored) = filled(dir.path(), &config);
    let segments = log.segment_count();
    assert_eq!(log.apply_retention(0).expect("no limits"), 0);
    let limit = 1_000;
    log.set_config(LogConfig { retention_bytes: Some(limit), ..config.clone() });
    let deleted = log.apply_retention(0).expect("retention");
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), segments - deleted);
    assert_eq!(segment_files(dir.path()).len(), log.segment_count(), "files deleted too");
    assert!(log.size_bytes() >= limit, "never below the limit");
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(start, base_of(&segment_files(dir.path())[0]));
    assert_out_of_range(&log, start - 1);
    let end = log.log_end_offset();
    assert_eq!(log.read(start, usize::MAX, end).expect("read"), expected_read(&stored, start, usize::MAX, end));
    assert_eq!(log.apply_retention(0).expect("again"), 0, "idempotent");
    log.close().expect("close");
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_eq!(log.log_start_offset(), start);
    assert_out_of_range(&log, start - 1);
}

#[test]
fn retention_by_time_deletes_segments_whose_newest_batch_is_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { retention_ms: Some(10_000), ..small_config(600) };
    let (mut log, stored) = filled(dir.path(), &config);
    assert_eq!(log.apply_retention(0).expect("nothing old yet"), 0);
    let now = 25_000;
    let deleted = log.apply_retention(now).expect("retention");
    assert!(deleted > 0);
    let start = log.log_start_offset();
    let timestamp_of = |batch: &Stored| (batch.base_offset / 2) as i64 * 1_000;
    let previous = stored.iter().rfind(|batch| batch.last_offset < start).expect("something deleted");
    assert!(now - timestamp_of(previous) > 10_000, "the newest deleted batch was past retention");
    let bases: Vec<u64> = segment_files(dir.path()).iter().map(|path| base_of(path)).collect();
    assert_eq!(bases[0], start, "the log starts at the first kept segment");
    let first_kept_max = stored
        .iter()
        .filter(|batch| batch.base_offset >= bases[0] && batch.base_offset < bases[1])
        .map(timestamp_of)
        .max();
    assert!(now - first_kept_max.expect("batches") <= 10_000, "the first kept segment is within retention");
    assert_out_of_range(&log, start - 1);
    drop(log);
    let log = Log::open(dir.path(), config).expect("unclean reopen");
    assert_eq!(log.log_start_offset(), start, "deleted segments stay deleted");
}

#[test]
fn retention_keeps_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { retention_ms: Some(1), retention_bytes: Some(0), ..small_config(600) };
    let (mut log, _) = filled(dir.path(), &config);
    log.apply_retention(i64::MAX).expect("retention");
    assert_eq!(log.segment_count(), 1);
    let end = log.log_end_offset();
    append(&mut log, 1, 5, 0);
    assert_eq!(log.log_end_offset(), end + 1);
}

#[test]
fn advancing_the_log_start_offset_persists_mid_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(600);
    let (mut log, stored) = filled(dir.path(), &config);
    let segments = log.segment_count();
    let target = stored[12].base_offset + 1; // inside a batch, inside a segment
    log.advance_log_start_offset(target).expect("advance");
    assert_eq!(log.log_start_offset(), target);
    assert!(log.segment_count() < segments, "whole segments below it deleted");
    assert_out_of_range(&log, target - 1);
    let end = log.log_end_offset();
    assert_eq!(log.read(target, 1, end).expect("read"), stored[12].bytes, "the batch containing it is still served");
    log.advance_log_start_offset(target - 1).expect("lower is a no-op");
    assert_eq!(log.log_start_offset(), target);
    assert!(matches!(log.advance_log_start_offset(end + 1), Err(LogError::OffsetOutOfRange { .. })));
    drop(log);
    let log = Log::open(dir.path(), config.clone()).expect("unclean reopen");
    assert_eq!(log.log_start_offset(), target, "persisted across an unclean reopen");
    log.close().expect("close");
    let mut log = Log::open(dir.path(), config.clone()).expect("clean reopen");
    assert_eq!(log.log_start_offset(), target, "persisted across a clean reopen");
    log.advance_log_start_offset(end).expect("advance to the end");
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(end, 100, end).expect("read at end").is_empty());
    let appended = append(&mut log, 1, 5, 0);
    assert_eq!(appended.base_offset, end);
}
