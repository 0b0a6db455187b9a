//! A failed write or fsync latches the log: no later write is accepted until it is reopened.

mod common;

use common::{append, small_config};
use once_log::testing::make_batch;
use once_log::{Log, LogError};

#[test]
fn a_failed_write_latches_until_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The active segment is /dev/full: every write fails with ENOSPC, a real I/O error.
    std::os::unix::fs::symlink("/dev/full", dir.path().join(format!("{:020}.log", 0))).expect("symlink");
    // fdatasync of a character device is EINVAL, so open without the post-recovery fsync,
    // then switch fsync back on.
    let skip = once_log::LogConfig { unsafe_skip_fsync: true, ..small_config(10_000) };
    let mut log = Log::open(dir.path(), skip).expect("open");
    log.set_config(small_config(10_000));
    let result = log.append(&mut make_batch(1, 10, 0), 0);
    assert!(matches!(result, Err(LogError::Io { .. })), "the write fails: {result:?}");
    assert!(log.is_failed());
    assert_eq!(log.log_end_offset(), 0, "nothing was acknowledged");
    assert!(matches!(log.append(&mut make_batch(1, 10, 0), 0), Err(LogError::Failed)));
    assert!(matches!(log.sync(), Err(LogError::Failed)));
    assert!(matches!(log.prepare_sync(), Err(LogError::Failed)));
    assert!(matches!(log.advance_log_start_offset(0), Err(LogError::Failed)));
    assert!(log.read(0, 100, 0).expect("reads still work").is_empty());
    assert!(matches!(log.close(), Err(LogError::Failed)), "a failed log is not closed cleanly");
    assert!(!dir.path().join("clean-shutdown").exists());
}

#[test]
fn a_failed_fsync_latches_and_is_never_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(10_000)).expect("open");
    append(&mut log, 1, 10, 0);
    let plan = log.prepare_sync().expect("plan");
    append(&mut log, 1, 10, 0);
    let result = log.complete_sync(plan.end_offset, Err(std::io::Error::other("injected EIO")));
    assert!(matches!(result, Err(LogError::Io { .. })));
    assert!(log.is_failed());
    assert_eq!(log.durable_end_offset(), 0, "nothing became durable");
    assert!(matches!(log.sync(), Err(LogError::Failed)), "no retried fsync can succeed");
    assert!(matches!(log.append(&mut make_batch(1, 10, 0), 0), Err(LogError::Failed)));
    assert!(matches!(log.complete_sync(plan.end_offset, Ok(())), Err(LogError::Failed)));
    assert!(matches!(log.close(), Err(LogError::Failed)));
    assert!(!dir.path().join("clean-shutdown").exists(), "not marked clean");
    let mut log = Log::open(dir.path(), small_config(10_000)).expect("reopen clears the latch");
    assert!(!log.is_failed());
    assert!(!log.recovery_stats().clean);
    assert_eq!(log.log_end_offset(), 2, "recovery re-read what the page cache holds");
    append(&mut log, 1, 10, 0);
    assert_eq!(log.sync().expect("sync"), 3);
}

/// Appends batches until the log rolls to a new segment; returns the new segment's base offset.
fn append_until_roll(log: &mut Log) -> u64 {
    let segments = log.segment_count();
    while log.segment_count() == segments {
        append(log, 1, 10, 0);
    }
    let rolled_at = log.log_end_offset() - 1;
    assert!(rolled_at > 0);
    rolled_at
}

/// A roll while a sync plan is out fdatasyncs the sealed segment, but that alone does not make it
/// durable: the plan's fdatasync of the same file may have failed first and consumed the write-back
/// error the roll's would have reported. If the plan fails, the recovery point stays where it was,
/// and the next open scans the sealed segment instead of trusting it.
#[test]
fn a_roll_behind_a_failed_sync_is_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(400)).expect("open");
    append(&mut log, 1, 10, 0);
    let plan = log.prepare_sync().expect("plan");
    append_until_roll(&mut log);
    assert_eq!(log.durable_end_offset(), 0, "the roll waits for the plan out before it");
    let result = log.complete_sync(plan.end_offset, Err(std::io::Error::other("injected EIO")));
    assert!(matches!(result, Err(LogError::Io { .. })));
    assert_eq!(log.durable_end_offset(), 0, "nothing became durable");
    drop(log);
    let log = Log::open(dir.path(), small_config(400)).expect("reopen");
    assert_eq!(log.recovery_stats().segments_scanned, 2, "the sealed segment is scanned, not trusted");
}

/// The same roll behind a plan that succeeds: the sealed segment is durable once the plan completes,
/// and the next open trusts it.
#[test]
fn a_roll_behind_a_successful_sync_is_durable_when_the_sync_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(400)).expect("open");
    append(&mut log, 1, 10, 0);
    let plan = log.prepare_sync().expect("plan");
    let new_base = append_until_roll(&mut log);
    assert_eq!(log.durable_end_offset(), 0, "the roll waits for the plan out before it");
    let durable = log.complete_sync(plan.end_offset, plan.execute()).expect("sync");
    assert_eq!(durable, new_base, "the sealed segment counts once the plan succeeded");
    append(&mut log, 1, 10, 0);
    drop(log); // a crash: no clean shutdown
    let log = Log::open(dir.path(), small_config(400)).expect("reopen");
    assert_eq!(log.recovery_stats().segments_scanned, 1, "only the active segment is scanned");
    assert_eq!(log.log_end_offset(), new_base + 2, "both batches after the roll were recovered");
}
