//! Reads planned under the lock and executed after it (`Log::plan_read`, `ReadPlan::execute`): the
//! plan borrows nothing from the log, and executing it later returns what a read at planning time
//! would have, whatever the log did meanwhile — appends, rolls, retention deleting the files.

mod common;

use common::{append, expected_read, segment_files, small_config, Stored};
use once_log::{Log, LogConfig, ReadPlan};

/// A plan carries no borrow of the log and no lock guard: it can be moved to another thread and
/// executed there while the writer goes on.
#[test]
fn a_plan_owns_what_it_reads() {
    fn owned_and_sendable<T: Send + 'static>() {}
    owned_and_sendable::<ReadPlan>();
}

fn filled(log: &mut Log, batches: usize, from: usize) -> Vec<Stored> {
    (from..from + batches).map(|index| append(log, 2, 40, 1_000 + index as i64)).collect()
}

#[test]
fn appends_and_rolls_after_planning_are_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(600)).expect("open");
    let mut stored = filled(&mut log, 20, 0);
    let end = log.log_end_offset();
    let segments_before = log.segment_count();
    for offset in [0, 7, end / 2, end - 1] {
        for max_bytes in [1, 150, 1_000, usize::MAX] {
            // Planned with an upper bound past the end: only the planned sizes stop the read.
            let plan = log.plan_read(offset, max_bytes, u64::MAX).expect("plan");
            let more = filled(&mut log, 3, 100);
            assert_eq!(
                plan.execute().expect("execute"),
                expected_read(&stored, offset, max_bytes, u64::MAX),
                "read({offset}, {max_bytes}) planned before the appends"
            );
            stored.extend(more);
        }
    }
    assert!(log.segment_count() > segments_before, "the appends rolled segments after the plans");
}

#[test]
fn a_plan_reads_segments_retention_deleted_after_planning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(600);
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let stored = filled(&mut log, 30, 0);
    let end = log.log_end_offset();
    let plan = log.plan_read(0, usize::MAX, end).expect("plan");
    let files_before = segment_files(dir.path()).len();
    log.set_config(LogConfig { retention_bytes: Some(700), ..config });
    let deleted = log.apply_retention(0).expect("retention");
    assert!(deleted > 0 && segment_files(dir.path()).len() < files_before, "retention deleted files");
    assert!(log.log_start_offset() > 0, "the log start moved past the planned offset");
    assert_eq!(plan.execute().expect("execute"), expected_read(&stored, 0, usize::MAX, end));
    assert!(log.plan_read(0, usize::MAX, end).is_err(), "a new plan at the old offset is out of range");
}

#[test]
fn an_empty_plan_reads_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(600)).expect("open");
    let plan = log.plan_read(0, usize::MAX, u64::MAX).expect("plan at the end of an empty log");
    let _stored = filled(&mut log, 3, 0);
    assert!(plan.execute().expect("execute").is_empty(), "planned at the log end: nothing then");
    let bounded = log.plan_read(0, usize::MAX, 0).expect("plan below an upper bound of 0");
    assert!(bounded.execute().expect("execute").is_empty(), "nothing below the upper bound");
}

#[test]
fn a_timestamp_plan_answers_as_at_planning_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(600);
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let _stored = filled(&mut log, 30, 0);
    for timestamp in [0, 1_005, 1_017, 1_029, 5_000] {
        let expected = log.offset_for_timestamp(timestamp).expect("lookup under the lock");
        let plan = log.plan_offset_for_timestamp(timestamp);
        let _more = filled(&mut log, 2, 40);
        assert_eq!(plan.execute().expect("execute"), expected, "timestamp {timestamp}, appends after planning");
    }
    let expected = log.offset_for_timestamp(1_000).expect("lookup");
    assert!(expected.is_some(), "the first batches reach timestamp 1000");
    let plan = log.plan_offset_for_timestamp(1_000);
    log.set_config(LogConfig { retention_bytes: Some(700), ..config });
    assert!(log.apply_retention(0).expect("retention") > 0, "retention deleted the planned segments");
    assert_eq!(plan.execute().expect("execute"), expected, "the deleted files are still read through the plan");
}

/// Drops a synced file's pages from the page cache, and says whether they are gone: a one-byte read
/// that may not wait for the disk finds nothing (it starts the read of one page, without readahead,
/// which is dropped again). The kernel keeps pages it cannot drop at that moment (pages still in a
/// CPU's batch for the LRU lists, or locked by a read in flight), so a busy machine gets a few tries,
/// each a little later, before the precondition fails.
fn evict(path: &std::path::Path) -> bool {
    let file = std::fs::File::open(path).expect("open segment");
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Random).expect("fadvise");
    for attempt in 0..20u64 {
        rustix::fs::fdatasync(&file).expect("fdatasync");
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        let mut first = [0u8; 1];
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        let cached = rustix::io::preadv2(&file, &mut [std::io::IoSliceMut::new(&mut first)], 0, flags);
        std::thread::sleep(std::time::Duration::from_millis(20 + 10 * attempt));
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        if !matches!(cached, Ok(read) if read > 0) {
            return true;
        }
    }
    false
}

/// A read the page cache cannot serve goes to the disk in pieces that give way to fdatasyncs
/// (`once_log::give_way`), without readahead: it returns the bytes a cached read returns — across
/// pieces, steps, batches and segments, from any offset, cold and then cached.
#[test]
fn a_cold_read_returns_what_a_cached_read_does() {
    // On the build's disk, not a tmpfs (whose pages cannot be evicted).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let mut config = small_config(3 << 20);
    config.index_interval_bytes = 64 * 1024;
    let mut log = Log::open(dir.path(), config).expect("open");
    // About 7 MB in 3 segments: each read step (1 MiB) is several cold pieces (256 KiB).
    let stored: Vec<Stored> = (0..140).map(|index| append(&mut log, 50, 1_000, 1_000 + index)).collect();
    log.sync().expect("sync");
    let end = log.log_end_offset();
    assert!(log.segment_count() >= 3, "the data spans segments");
    for (offset, max_bytes) in [(0, usize::MAX), (1, 3_000_000), (end / 3, 2_500_000), (end - 1, 1)] {
        for path in segment_files(dir.path()) {
            assert!(evict(&path), "the pages of {} left the page cache", path.display());
        }
        let plan = log.plan_read(offset, max_bytes, end).expect("plan");
        assert_eq!(
            plan.execute().expect("execute"),
            expected_read(&stored, offset, max_bytes, end),
            "cold read({offset}, {max_bytes})"
        );
        // And again, now from the page cache.
        assert_eq!(plan.execute().expect("execute"), expected_read(&stored, offset, max_bytes, end));
    }
}

/// A read that may return 4 MiB or more is made into a pooled buffer (`execute_shared`): the same bytes
/// as `execute`; once its last slice is dropped the next large read is made into it and shows only its
/// own bytes. A read the plan bounds below 4 MiB (a small budget, or little left to read) takes no
/// buffer of the pool, and one the upper bound cuts short gives its buffer back at once. (The only test
/// of this binary that uses the process's pool of reads, so its counts are this test's.)
#[test]
fn large_reads_share_buffers_that_are_used_again() {
    const MAX: usize = 6 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config(3 << 20)).expect("open");
    let stored: Vec<Stored> = (0..180).map(|index| append(&mut log, 4, 16_000, 1_000 + index)).collect();
    let end = log.log_end_offset();
    let read_below = |offset: u64, max_bytes: usize, upper_bound: u64| {
        let shared = log.plan_read(offset, max_bytes, upper_bound).expect("plan").execute_shared().expect("read");
        let expected = expected_read(&stored, offset, max_bytes, upper_bound);
        assert_eq!(&shared[..], &expected[..], "read({offset}, {max_bytes}, {upper_bound})");
        shared
    };
    let read = |offset: u64, max_bytes: usize| read_below(offset, max_bytes, end);
    let taken = ReadPlan::read_buffers_taken;
    assert_eq!(taken(), (0, 0));
    let first = read(0, MAX);
    assert!(first.len() > 4 << 20, "a read of {} bytes, across segments", first.len());
    let held = first.slice(..10);
    drop(first);
    let second = read(stored[50].base_offset, MAX);
    assert_eq!(taken(), (2, 0), "a slice still holds the first buffer: a second one is allocated");
    let addresses = [held.as_ptr() as usize, second.as_ptr() as usize];
    drop((held, second));
    let third = read(stored[17].base_offset, MAX);
    assert_eq!(taken(), (2, 1), "a free buffer is used again");
    assert!(addresses.contains(&(third.as_ptr() as usize)), "one of the two");
    drop(third);
    let small_budget = read(0, 1 << 20);
    let little_left = read(stored[170].base_offset, MAX);
    assert_eq!(taken(), (2, 1), "reads bounded below 4 MiB take no pooled buffer");
    // In segments of 6 MiB, a read bounded by its first segment is planned at 6 MiB; the upper bound
    // then stops it after three batches.
    let wide_dir = tempfile::tempdir().expect("tempdir");
    let mut wide = Log::open(wide_dir.path(), small_config(6 << 20)).expect("open");
    let wide_stored: Vec<Stored> = (0..120).map(|index| append(&mut wide, 4, 16_000, 1_000 + index)).collect();
    let plan = wide.plan_read(0, 16 << 20, wide_stored[3].base_offset).expect("plan");
    let cut_short = plan.execute_shared().expect("read");
    assert_eq!(&cut_short[..], &expected_read(&wide_stored, 0, 16 << 20, wide_stored[3].base_offset)[..]);
    assert_eq!(taken(), (2, 2), "planned at 6 MiB, it took a pooled buffer");
    assert_eq!(cut_short.len(), 3 * wide_stored[0].bytes.len(), "three batches below the upper bound");
    for small in [&small_budget, &little_left, &cut_short] {
        assert!(!addresses.contains(&(small.as_ptr() as usize)), "returned in a buffer of its own");
    }
    let both_free = (read(0, MAX), read(stored[60].base_offset, MAX));
    assert_eq!(taken(), (2, 4), "the cut-short read gave its buffer back at once");
    drop(both_free);
}
