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
