//! Recovery checkpoints: an unclean open checks the active segment's batches only from the last
//! checkpoint on (walking the headers before it), recovers the same log as a whole scan, and drops a
//! checkpoint that does not describe the segment.

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::{append, copy_dir, expected_read, file_lengths, segment_files, small_config, Stored};
use once_log::{Log, LogConfig};

/// Big segments (one, the active) and a dense index, so the walk rebuilds many index entries.
/// No zeros written ahead: these tests count the bytes an open walks and scans against the file's
/// length. (The model test in model.rs reopens checkpointed logs with zeros ahead too.)
fn config() -> LogConfig {
    LogConfig { zero_ahead_bytes: 0, ..small_config(1 << 30) }
}

fn fill(log: &mut Log, stored: &mut Vec<Stored>, batches: usize) {
    for index in 0..batches {
        let number = stored.len() + index;
        stored.push(append(log, 1 + (number % 5) as u32, 20 + (number * 13) % 300, 1_000 + number as i64));
    }
}

/// Writes the checkpoint due now (any growth is enough) and returns its position.
fn checkpoint(log: &mut Log) -> u64 {
    let due = log.recovery_checkpoint_due(0).expect("a checkpoint is due after a sync");
    due.write().expect("write checkpoint");
    log.recovery_checkpoint_written(&due);
    due.position()
}

/// Every read and timestamp lookup of `log` agrees with the batches stored below `end`.
fn assert_serves(log: &Log, stored: &[Stored], end: u64) {
    let kept: Vec<Stored> = stored.iter().filter(|batch| batch.last_offset < end).cloned().collect();
    assert_eq!(log.log_end_offset(), end);
    for offset in 0..end {
        for max_bytes in [1, 700, usize::MAX] {
            assert_eq!(log.read(offset, max_bytes, end).expect("read"), expected_read(&kept, offset, max_bytes, end));
        }
    }
}

/// `log` answers timestamp lookups as `reference` (the same files checked whole) does.
fn assert_same_lookups(log: &Log, reference: &Log) {
    for timestamp in 900..1_200 {
        assert_eq!(
            log.offset_for_timestamp(timestamp).expect("lookup"),
            reference.offset_for_timestamp(timestamp).expect("lookup"),
            "timestamp {timestamp}"
        );
    }
    assert_eq!(log.max_timestamp(), reference.max_timestamp());
}

/// A log in `dir` of `batches` batches, synced, and the checkpoint written at their end.
fn checkpointed(dir: &Path, batches: usize) -> (Log, Vec<Stored>, u64) {
    let mut log = Log::open(dir, config()).expect("open");
    let mut stored = Vec::new();
    fill(&mut log, &mut stored, batches);
    log.sync().expect("sync");
    let position = checkpoint(&mut log);
    (log, stored, position)
}

#[test]
fn an_unclean_open_checks_only_what_follows_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut stored, position) = checkpointed(dir.path(), 60);
    fill(&mut log, &mut stored, 25);
    log.sync().expect("sync");
    // Not synced: the last batch is torn by the crash.
    fill(&mut log, &mut stored, 1);
    let end_before_crash = log.log_end_offset();
    drop(log);
    let len = file_lengths(dir.path())[0];
    OpenOptions::new().write(true).open(&segment_files(dir.path())[0]).unwrap().set_len(len - 7).unwrap();
    let image = tempfile::tempdir().expect("tempdir");
    copy_dir(dir.path(), image.path());

    let log = Log::open(dir.path(), config()).expect("reopen");
    let stats = log.recovery_stats();
    assert!(!stats.clean);
    assert_eq!(stats.walked_bytes, position, "the checkpointed part is walked, not checked");
    assert_eq!(stats.scanned_bytes, len - 7 - position, "only what follows is checked");
    let end = stored.last().expect("stored").base_offset;
    assert!(end < end_before_crash, "the torn batch is cut");
    assert_serves(&log, &stored, end);

    // The same crash image opened without the checkpoint: a whole scan finds the same log.
    std::fs::remove_file(image.path().join("recovery-checkpoint")).expect("forget the checkpoint");
    let whole = Log::open(image.path(), config()).expect("reopen without checkpoint");
    assert_eq!(whole.recovery_stats().walked_bytes, 0);
    assert_eq!(whole.recovery_stats().scanned_bytes, len - 7);
    assert_serves(&whole, &stored, end);
    assert_same_lookups(&log, &whole);
}

#[test]
fn corruption_after_the_checkpoint_is_still_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut stored, position) = checkpointed(dir.path(), 30);
    fill(&mut log, &mut stored, 10);
    log.sync().expect("sync");
    drop(log);
    // A bit flipped in the value of the fourth batch after the checkpoint.
    let damaged = &stored[33];
    let at = position + stored[30..33].iter().map(|batch| batch.bytes.len() as u64).sum::<u64>() + 70;
    let path = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).expect("write");

    let log = Log::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.recovery_stats().walked_bytes, position);
    assert!(log.recovery_stats().truncated_bytes > 0, "the damaged batch and what follows are cut");
    assert_serves(&log, &stored, damaged.base_offset);
}

#[test]
fn a_checkpoint_that_does_not_describe_the_segment_is_dropped() {
    // A checkpoint past the end of a shorter file (the tail lost), and one whose position falls
    // inside a batch of the file now there (another log's segment of the same base offset).
    for case in ["beyond the end", "inside a batch"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, stored, position) = checkpointed(dir.path(), 40);
        drop(log);
        let other = tempfile::tempdir().expect("tempdir");
        let mut other_log = Log::open(other.path(), config()).expect("open other");
        let mut other_stored = Vec::new();
        match case {
            "beyond the end" => {
                // The same batches but the last few.
                for batch in &stored[..35] {
                    let mut bytes = batch.bytes.clone();
                    other_log.append(&mut bytes, 0).expect("append");
                    other_stored.push(batch.clone());
                }
            }
            _ => {
                // Batches of other sizes: the headers walked from 0 step over the position.
                for _ in 0..60 {
                    other_stored.push(append(&mut other_log, 1, 333, 1_000 + other_stored.len() as i64));
                }
            }
        }
        other_log.sync().expect("sync other");
        drop(other_log);
        std::fs::copy(&segment_files(other.path())[0], &segment_files(dir.path())[0]).expect("replace segment");
        let len = file_lengths(dir.path())[0];
        if case == "inside a batch" {
            assert!(len > position, "the walk has bytes to step over the position in");
        }

        let log = Log::open(dir.path(), config()).expect("reopen");
        let stats = log.recovery_stats();
        assert_eq!(stats.walked_bytes, 0, "{case}: the checkpoint is dropped");
        assert_eq!(stats.scanned_bytes, len, "{case}: the whole segment is checked");
        let end = other_stored.last().expect("stored").last_offset + 1;
        assert_serves(&log, &other_stored, end);
    }
}

/// Writes a checkpoint file naming (base offset, position, next offset) as the log's own would.
fn write_checkpoint_file(dir: &Path, values: [u64; 3]) {
    let mut bytes = b"ONCEMETA".to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.push(4);
    values.iter().for_each(|value| bytes.extend_from_slice(&value.to_be_bytes()));
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.join("recovery-checkpoint"), bytes).expect("write checkpoint file");
}

#[test]
fn a_checkpoint_with_another_offset_or_segment_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, stored, position) = checkpointed(dir.path(), 20);
    let next_offset = log.log_end_offset();
    drop(log);
    let len = file_lengths(dir.path())[0];
    let cases = [
        ("the true one", [0, position, next_offset], position),
        ("another next offset", [0, position, next_offset + 1], 0),
        ("a position inside a batch", [0, position - 1, next_offset], 0),
        ("another segment", [7, position, next_offset], 0),
    ];
    for (case, values, walked) in cases {
        write_checkpoint_file(dir.path(), values);
        let log = Log::open(dir.path(), config()).expect("reopen");
        assert_eq!(log.recovery_stats().walked_bytes, walked, "{case}");
        assert_eq!(log.recovery_stats().scanned_bytes, len - walked, "{case}");
        assert_serves(&log, &stored, next_offset);
    }
}

#[test]
fn a_checkpoint_waits_for_every_sync_out_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config()).expect("open");
    let mut stored = Vec::new();
    let opened = log.recovery_checkpoint_due(0).expect("what an open finds is durable").position();
    assert_eq!(opened, 0);
    fill(&mut log, &mut stored, 5);
    let first = log.prepare_sync().expect("plan");
    fill(&mut log, &mut stored, 5);
    let second = log.prepare_sync().expect("plan");
    let second_end = second.end_offset;
    log.complete_sync(second.end_offset, second.execute()).expect("complete the later plan");
    assert_eq!(
        log.recovery_checkpoint_due(0).expect("due").position(),
        0,
        "the earlier plan is still out: its fdatasync could fail and void the later one's"
    );
    assert!(log.recovery_checkpoint_due(1).is_none(), "nothing durable beyond the open");
    log.complete_sync(first.end_offset, first.execute()).expect("complete the earlier plan");
    let due = log.recovery_checkpoint_due(1).expect("both plans succeeded");
    let len: u64 = stored.iter().map(|batch| batch.bytes.len() as u64).sum();
    assert_eq!(due.position(), len, "the furthest plan's end");
    assert_eq!(log.durable_end_offset(), second_end);

    // A failed sync latches the log: no checkpoint from then on.
    fill(&mut log, &mut stored, 1);
    let failing = log.prepare_sync().expect("plan");
    let _ = log.complete_sync(failing.end_offset, Err(std::io::Error::other("injected EIO")));
    assert!(log.recovery_checkpoint_due(0).is_none(), "a failed log writes no checkpoint");
}

#[test]
fn the_next_checkpoint_is_due_after_min_bytes_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut stored, position) = checkpointed(dir.path(), 10);
    assert!(log.recovery_checkpoint_due(1).is_none(), "nothing new since");
    fill(&mut log, &mut stored, 10);
    assert!(log.recovery_checkpoint_due(1).is_none(), "appended, not synced");
    log.sync().expect("sync");
    let grown = file_lengths(dir.path())[0] - position;
    assert!(log.recovery_checkpoint_due(grown + 1).is_none(), "less than min_bytes more");
    assert_eq!(log.recovery_checkpoint_due(grown).expect("due").position(), position + grown);
}

#[test]
fn a_checkpoint_found_true_is_kept_and_a_false_one_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, stored, position) = checkpointed(dir.path(), 20);
    let next_offset = stored.last().expect("stored").last_offset + 1;
    let file = dir.path().join("recovery-checkpoint");
    drop(log);
    let log = Log::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.recovery_stats().walked_bytes, position);
    assert!(file.exists(), "walked and true: kept, so a crash right after this open walks it again");
    assert!(log.recovery_checkpoint_due(1).is_none(), "the kept one counts as written");
    drop(log);
    let log = Log::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.recovery_stats().walked_bytes, position, "walked again");
    log.close().expect("close");
    let log = Log::open(dir.path(), config()).expect("reopen clean");
    assert!(log.recovery_stats().clean);
    assert!(file.exists(), "a clean open keeps the one in place");
    drop(log);
    // One that does not describe the file (its position inside the last batch, so it still names the
    // active segment and lies within it) is dropped and removed.
    write_checkpoint_file(dir.path(), [0, position - 1, next_offset]);
    let mut log = Log::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.recovery_stats().walked_bytes, 0, "dropped");
    assert!(!file.exists(), "and removed");
    assert_eq!(checkpoint(&mut log), position, "what the open recovered is durable: a new one is due at once");
}

/// A checkpoint dropped as false must not survive its open: batches of one shape refill the cut
/// segment to the same boundaries, and a kept checkpoint would vouch for them unsynced.
#[test]
fn a_checkpoint_dropped_at_open_does_not_vouch_for_what_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), config()).expect("open");
    let same = |log: &mut Log| append(log, 2, 100, 5_000);
    let batches: Vec<Stored> = (0..40).map(|_| same(&mut log)).collect();
    log.sync().expect("sync");
    let position = checkpoint(&mut log);
    drop(log);
    let batch_len = batches[0].bytes.len() as u64;
    assert_eq!(position, 40 * batch_len);
    let path = segment_files(dir.path())[0].clone();
    let mut bytes = std::fs::read(&path).expect("read");
    // Bit rot in the length field of batch 10: the walk fails, the whole scan cuts the log there.
    bytes[(10 * batch_len + 9) as usize] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let mut log = Log::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.recovery_stats().walked_bytes, 0, "the checkpoint does not describe the file");
    assert_eq!(log.log_end_offset(), batches[10].base_offset, "cut at the damaged batch");
    // The same batches again, not synced; then the crash tears batch 20's value.
    for _ in 10..40 {
        same(&mut log);
    }
    drop(log);
    let mut bytes = std::fs::read(&path).expect("read");
    let torn = (20 * batch_len + 80) as usize;
    bytes[torn..torn + 16].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    let log = Log::open(dir.path(), config()).expect("reopen");
    assert_eq!(log.recovery_stats().walked_bytes, 0, "no checkpoint vouches for unsynced batches");
    assert_eq!(log.log_end_offset(), batches[20].base_offset, "the torn batch is found and cut");
}

#[test]
fn no_checkpoint_without_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), LogConfig { unsafe_skip_fsync: true, ..config() }).expect("open");
    let mut stored = Vec::new();
    fill(&mut log, &mut stored, 10);
    log.sync().expect("sync");
    assert!(log.recovery_checkpoint_due(0).is_none(), "nothing is known durable with --unsafe-skip-fsync");
}

#[test]
fn a_sync_planned_before_a_roll_gives_no_checkpoint_of_the_old_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(2_000)).expect("open");
    let mut stored = Vec::new();
    fill(&mut log, &mut stored, 3);
    let plan = log.prepare_sync().expect("plan");
    let segments = log.segment_count();
    while log.segment_count() == segments {
        fill(&mut log, &mut stored, 1);
    }
    log.complete_sync(plan.end_offset, plan.execute()).expect("complete");
    assert!(log.recovery_checkpoint_due(0).is_none(), "the synced end lies in a segment no longer active");
    log.sync().expect("sync");
    let due = log.recovery_checkpoint_due(0).expect("a sync of the new active segment");
    assert!(due.position() > 0 && due.position() < 2_000, "a position in the new segment: {}", due.position());
}
