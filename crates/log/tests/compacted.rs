//! Compaction-shaped batches, as deduplication stores them: records dropped from the offsets a batch
//! spans (offset gaps), down to header-only batches with no record. The log appends, indexes,
//! reads, recovers and deletes them like any batch; offsets advance by the span, not the count.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::{copy_dir, expected_read, headers, segment_files, small_config, Stored};
use once_log::testing::{make_batch, make_compacted_batch};
use once_log::{BatchHeader, Log, LogConfig, LogError};

fn config() -> LogConfig {
    small_config(600)
}

/// The batches of the tests: whole, with gaps, header-only, in a repeating pattern.
fn batch_for(index: usize) -> Vec<u8> {
    let timestamp = 1_000 + index as i64;
    match index % 4 {
        0 => make_batch(3, 12, timestamp),
        1 => make_compacted_batch(&[0, 2, 5], 6, 12, timestamp),
        2 => make_compacted_batch(&[], 4, 12, timestamp),
        _ => make_compacted_batch(&[3], 3, 12, timestamp),
    }
}

fn append_all(log: &mut Log, count: usize) -> Vec<Stored> {
    (0..count)
        .map(|index| {
            let mut bytes = batch_for(index);
            let header = BatchHeader::parse(&bytes).expect("header");
            let info = log.append(&mut bytes, 1_000 + index as i64).expect("a compaction-shaped batch is appended");
            assert_eq!(info.records, header.records_count as u32, "the record count is the batch's own");
            assert_eq!(info.last_offset - info.base_offset, header.last_offset_delta as u64, "offsets span the delta");
            Stored { base_offset: info.base_offset, last_offset: info.last_offset, bytes }
        })
        .collect()
}

/// Every offset, gaps included, reads from the batch that spans it, as for whole batches.
fn check_reads(log: &Log, stored: &[Stored], what: &str) {
    let end = stored.last().map_or(0, |batch| batch.last_offset + 1);
    assert_eq!(log.log_end_offset(), end, "{what}: log end offset");
    for offset in 0..end {
        let containing = stored.iter().find(|batch| batch.last_offset >= offset).expect("containing");
        assert_eq!(log.read(offset, 1, end).expect("read one"), containing.bytes, "{what}: read({offset})");
        for max_bytes in [0, 200, usize::MAX] {
            assert_eq!(
                log.read(offset, max_bytes, end).expect("read"),
                expected_read(stored, offset, max_bytes, end),
                "{what}: read({offset}, {max_bytes})"
            );
        }
    }
    let all = headers(&log.read(0, usize::MAX, end).expect("read all"));
    assert!(all.iter().any(|header| header.records_count == 0), "{what}: header-only batches are served");
    assert!(all.iter().any(|header| !header.holds_every_offset()), "{what}: batches with gaps are served");
}

#[test]
fn compacted_and_header_only_batches_append_read_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config()).expect("open");
    let stored = append_all(&mut log, 24);
    assert!(log.segment_count() >= 3, "small segments rolled: {}", log.segment_count());
    assert_eq!(log.log_end_offset(), 6 * (3 + 7 + 5 + 4), "offsets advance by the span of each batch");
    check_reads(&log, &stored, "live");
    // Timestamp lookups see every batch, header-only ones too (they keep their max timestamp).
    for (index, batch) in stored.iter().enumerate() {
        let found = log.offset_for_timestamp(1_000 + index as i64).expect("lookup");
        assert_eq!(found, Some((batch.base_offset, 1_000 + index as i64)), "timestamp of batch {index}");
    }
    log.sync().expect("sync");

    let crash = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), crash.path());
    log.close().expect("close");
    let reopened = Log::open(dir.path(), config()).expect("clean reopen");
    assert!(reopened.recovery_stats().clean);
    check_reads(&reopened, &stored, "after a clean close");

    let recovered = Log::open(crash.path(), config()).expect("unclean open");
    assert!(!recovered.recovery_stats().clean);
    assert_eq!(recovered.recovery_stats().truncated_bytes, 0, "nothing of a valid log is cut");
    check_reads(&recovered, &stored, "after a crash");
}

#[test]
fn a_torn_header_only_batch_is_cut_like_any_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(100_000)).expect("open");
    let mut stored = append_all(&mut log, 3);
    let mut last = make_compacted_batch(&[], 9, 12, 5_000);
    let info = log.append(&mut last, 5_000).expect("append");
    assert_eq!((info.base_offset, info.last_offset, info.records), (15, 24, 0));
    log.sync().expect("sync");
    // The batches' end (zeros written ahead follow it in the file).
    let full = log.size_bytes();
    drop(log);
    let segment = segment_files(dir.path()).pop().expect("segment");
    assert!(fs::metadata(&segment).expect("stat").len() > full, "zeros were written ahead");
    for cut in (full - last.len() as u64)..full {
        let image = tempfile::tempdir().expect("tempdir");
        copy_dir(dir.path(), image.path());
        let file = OpenOptions::new().write(true).open(image.path().join(segment.file_name().expect("name")));
        file.expect("open segment").set_len(cut).expect("cut");
        let recovered = Log::open(image.path(), small_config(100_000)).expect("recover");
        assert_eq!(recovered.log_end_offset(), 15, "a header-only batch cut at byte {cut} is dropped whole");
        check_reads(&recovered, &stored, "after a torn header-only batch");
    }
    stored.push(Stored { base_offset: 15, last_offset: 24, bytes: last });
    let whole = Log::open(dir.path(), small_config(100_000)).expect("reopen");
    check_reads(&whole, &stored, "intact");
    assert_eq!(whole.read(20, 1, 25).expect("read a gap"), stored[3].bytes, "an offset in the gap reads its batch");
}

#[test]
fn batches_claiming_more_records_than_offsets_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config()).expect("open");
    let mut too_many = make_batch(3, 5, 10);
    too_many[23..27].copy_from_slice(&1i32.to_be_bytes()); // three records in two offsets
    let crc = once_log::batch::crc_of(&too_many);
    too_many[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(log.append(&mut too_many, 0), Err(LogError::InvalidBatch(_))));
    let mut negative = make_compacted_batch(&[], 0, 5, 10);
    negative[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    let crc = once_log::batch::crc_of(&negative);
    negative[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(log.append(&mut negative, 0), Err(LogError::InvalidBatch(_))));
    assert!(!log.is_failed() && log.log_end_offset() == 0, "refusals change nothing");
}

#[test]
fn retention_deletes_segments_of_compacted_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config();
    config.retention_bytes = Some(1_200);
    let mut log = Log::open(dir.path(), config).expect("open");
    let stored = append_all(&mut log, 24);
    log.sync().expect("sync");
    let deleted = log.apply_retention(10_000).expect("retention");
    assert!(deleted > 0, "old segments went");
    let start = log.log_start_offset();
    assert!(stored.iter().any(|batch| batch.base_offset == start), "the log starts at a batch boundary");
    let end = log.log_end_offset();
    assert_eq!(log.read(start, usize::MAX, end).expect("read"), expected_read(&stored, start, usize::MAX, end));
    assert!(Path::new(dir.path()).exists());
}
