//! Zeros written ahead of the active segment's end (`LogConfig::zero_ahead_bytes`): where they are
//! written and when not, that rolls and clean closes cut them, and that recovery takes an all-zero
//! tail for the end of the batches (cut, nothing counted as lost) wherever it finds one.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{append, base_of, expected_read, file_lengths, segment_files, small_config, Stored};
use once_log::{Log, LogConfig};

fn batches_len(stored: &[Stored]) -> u64 {
    stored.iter().map(|batch| batch.bytes.len() as u64).sum()
}

fn assert_serves(log: &Log, stored: &[Stored], what: &str) {
    let end = stored.last().map_or(0, |batch| batch.last_offset + 1);
    assert_eq!(log.log_end_offset(), end, "{what}: log end offset");
    assert_eq!(log.read(0, usize::MAX, end).expect("read"), expected_read(stored, 0, usize::MAX, end), "{what}");
}

/// Small syncs: the file runs ahead of the batches to the next multiple of the step, in zeros; the
/// appends that follow overwrite them (the file grows only when they run out); a clean close cuts
/// them, and the next open is clean.
#[test]
fn zeros_run_ahead_of_small_appends_and_a_clean_close_cuts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { zero_ahead_bytes: 4096, ..small_config(1 << 20) };
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let mut stored = Vec::new();
    let mut grew = 0;
    let mut last_len = 0;
    for index in 0..100 {
        stored.push(append(&mut log, 2, 30, index));
        log.sync().expect("sync");
        let len = file_lengths(dir.path())[0];
        let end = batches_len(&stored);
        assert!(len > end, "batch {index}: zeros ahead of the batches ({len} > {end})");
        assert!(len.is_multiple_of(4096), "batch {index}: to a multiple of the step");
        assert!(len - end <= 4096, "batch {index}: at most a step ahead");
        grew += usize::from(len != last_len);
        last_len = len;
    }
    let end = batches_len(&stored);
    assert!(end > 3 * 4096, "the batches ran past several steps");
    assert_eq!(grew as u64, end / 4096 + 1, "the file grew once per step, not per append");
    let file = fs::read(&segment_files(dir.path())[0]).expect("read");
    assert!(file[end as usize..].iter().all(|byte| *byte == 0), "zeros past the batches");
    assert_serves(&log, &stored, "while open");
    log.close().expect("close");
    assert_eq!(file_lengths(dir.path()), vec![end], "a clean close cuts the zeros");
    let log = Log::open(dir.path(), config).expect("reopen");
    assert!(log.recovery_stats().clean, "the index files describe the cut file");
    assert_eq!(log.recovery_stats().scanned_bytes, 0);
    assert_serves(&log, &stored, "after a clean close");
}

/// Syncs of more than 32 KiB each on average: no zeros written ahead (they would double the bytes
/// written, for one journalled size per sync saved); small syncs again bring them back.
#[test]
fn no_zeros_ahead_of_large_syncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { zero_ahead_bytes: 4096, ..small_config(1 << 30) };
    let mut log = Log::open(dir.path(), config).expect("open");
    let mut stored = Vec::new();
    for index in 0..12 {
        stored.push(append(&mut log, 1, 64 * 1024, index));
        log.sync().expect("sync");
    }
    // The average has passed 32 KiB after the first few syncs: the zeros those left are long used up.
    assert_eq!(file_lengths(dir.path()), vec![batches_len(&stored)], "the file ends with the batches");
    for index in 12..40 {
        stored.push(append(&mut log, 1, 100, index));
        log.sync().expect("sync");
    }
    let len = file_lengths(dir.path())[0];
    assert!(len > batches_len(&stored) && len.is_multiple_of(4096), "small syncs: zeros ahead again ({len})");
    assert_serves(&log, &stored, "after both");
}

/// On a file system in memory (tmpfs: `/dev/shm`), as on a copy-on-write one, zeros ahead do not
/// pay: none are written, whatever the step, and the file grows with each append — unless
/// `zero_ahead_any_file_system` (as the other tests here set, to check zeros wherever they run).
#[test]
fn no_zeros_ahead_on_a_file_system_in_memory() {
    let shm = Path::new("/dev/shm");
    assert_eq!(once_log::zeros_ahead_unsuited(shm), Some("tmpfs"), "/dev/shm is a tmpfs where this runs");
    let forced = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
    let mut log =
        Log::open(forced.path(), LogConfig { zero_ahead_bytes: 4096, ..small_config(1 << 30) }).expect("open");
    let first = append(&mut log, 2, 30, 0);
    assert_eq!(file_lengths(forced.path()), vec![4096], "forced: zeros to the step after {} B", first.bytes.len());
    drop(log);

    let dir = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
    let config = LogConfig { zero_ahead_bytes: 4096, zero_ahead_any_file_system: false, ..small_config(1 << 30) };
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let mut stored = Vec::new();
    for index in 0..40 {
        stored.push(append(&mut log, 2, 30, index));
        log.sync().expect("sync");
        assert_eq!(file_lengths(dir.path()), vec![batches_len(&stored)], "batch {index}: no zeros ahead");
    }
    assert!(batches_len(&stored) > 4096, "the batches ran past a step");
    assert_serves(&log, &stored, "in memory");
    // The configuration replaced (a topic's settings changed) does not bring them back.
    log.set_config(config);
    stored.push(append(&mut log, 2, 30, 40));
    assert_eq!(file_lengths(dir.path()), vec![batches_len(&stored)], "after a new configuration");
}

/// A roll cuts the zeros off the segment it leaves (before the fsync that makes it durable), and the
/// zeros never run past the segment's size limit.
#[test]
fn a_roll_cuts_the_zeros_and_they_stay_within_the_segment_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { zero_ahead_bytes: 4096, ..small_config(3_000) };
    let mut log = Log::open(dir.path(), config.clone()).expect("open");
    let mut stored = Vec::new();
    for index in 0..60 {
        stored.push(append(&mut log, 1, 40, index));
        log.sync().expect("sync");
        let lengths = file_lengths(dir.path());
        assert!(lengths.iter().all(|len| *len <= 3_000), "within the segment limit: {lengths:?}");
    }
    let lengths = file_lengths(dir.path());
    assert!(lengths.len() >= 3, "rolled: {lengths:?}");
    let bases: Vec<u64> = segment_files(dir.path()).iter().map(|segment| base_of(segment)).collect();
    for (at, len) in lengths.iter().enumerate() {
        let next = bases.get(at + 1).copied().unwrap_or(u64::MAX);
        let in_segment: u64 = stored
            .iter()
            .filter(|batch| batch.base_offset >= bases[at] && batch.base_offset < next)
            .map(|batch| batch.bytes.len() as u64)
            .sum();
        match at + 1 == lengths.len() {
            true => assert!(*len > in_segment, "the active segment has zeros ahead ({len} > {in_segment})"),
            false => assert_eq!(*len, in_segment, "rolled segment {at} ends with its last batch"),
        }
    }
    drop(log);
    let log = Log::open(dir.path(), config).expect("unclean open");
    assert_eq!(log.recovery_stats().truncated_bytes, 0, "no batch lost: the zeros are not a torn tail");
    assert_eq!(log.recovery_stats().segments_scanned, 1, "the rolled segments' index files describe them");
    assert_serves(&log, &stored, "after an unclean open");
    assert_eq!(file_lengths(dir.path()).iter().sum::<u64>(), batches_len(&stored), "zeros cut at open");
}

/// After a crash, an all-zero tail ends the batches wherever it is: cut without counting anything
/// lost, also on a segment before the active one (which a roll leaves cut, but a file system may
/// not have kept the cut), whose successors are kept. Zeros followed by anything else are a
/// corrupt tail, cut as before.
#[test]
fn recovery_cuts_an_all_zero_tail_on_any_segment_and_keeps_what_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, stored) = crashed_without_zeros(dir.path());
    let segments = segment_files(dir.path());
    let lengths = file_lengths(dir.path());
    for (segment, len) in segments.iter().zip(&lengths) {
        let file = OpenOptions::new().write(true).open(segment).expect("open segment");
        file.write_all_at(&[0u8; 1000], *len).expect("zeros after the batches");
    }
    // Every segment scanned (no recovery point), each with zeros after its batches.
    fs::remove_file(dir.path().join("recovery-point")).expect("remove the recovery point");
    let log = Log::open(dir.path(), config.clone()).expect("open");
    let stats = log.recovery_stats();
    assert_eq!((stats.truncated_bytes, stats.zero_tail_bytes), (0, 1000 * segments.len() as u64), "nothing lost");
    assert_eq!(stats.segments_scanned, segments.len(), "every segment checked");
    assert_serves(&log, &stored, "zeros after every segment");
    assert_eq!(file_lengths(dir.path()), lengths, "every file cut to its batches");
    drop(log);
    // Zeros, then one byte that is not: a corrupt tail (the log ends at the last whole batch).
    let active = segments.last().expect("active");
    let len = *lengths.last().expect("active");
    let file = OpenOptions::new().write(true).open(active).expect("open segment");
    file.write_all_at(&[0u8; 500], len).expect("zeros");
    file.write_all_at(&[7u8], len + 500).expect("and a byte that is not");
    let log = Log::open(dir.path(), config).expect("open");
    assert_eq!(log.recovery_stats().truncated_bytes, 501, "the tail counted as cut");
    assert_serves(&log, &stored, "zeros then a byte");
}

/// With the default step (256 KiB), a segment runs ahead by a step that grows with it: a page while it
/// is small, its size rounded up to a power of two after, so a little-used partition keeps little
/// disk in zeros.
#[test]
fn the_zeros_ahead_grow_with_the_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { zero_ahead_bytes: LogConfig::default().zero_ahead_bytes, ..small_config(1 << 30) };
    assert_eq!(config.zero_ahead_bytes, 256 << 10, "the default step");
    let mut log = Log::open(dir.path(), config).expect("open");
    let mut stored = Vec::new();
    while batches_len(&stored) < 3 << 20 {
        stored.push(append(&mut log, 1, 2_000 + stored.len() % 700, stored.len() as i64));
        log.sync().expect("sync");
        let (len, end) = (file_lengths(dir.path())[0], batches_len(&stored));
        let step = end.next_power_of_two().clamp(4096, 256 << 10);
        assert!(
            len > end && len - end <= step && len.is_multiple_of(step),
            "{end} bytes of batches, {len} in the file"
        );
    }
    assert_serves(&log, &stored, "3 MiB in");
}

/// A segment below the recovery point with zeros after its batches (a roll's cut the file system did
/// not keep): its index files no longer describe the file, so it is scanned and cut, not trusted; and
/// a tail of zeros longer than a read window is read to its end before it counts as zeros.
#[test]
fn a_trusted_segment_with_zeros_after_it_is_scanned_and_long_tails_are_read_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, stored) = crashed_without_zeros(dir.path());
    let segments = segment_files(dir.path());
    let lengths = file_lengths(dir.path());
    assert!(segments.len() >= 3);
    let file = OpenOptions::new().write(true).open(&segments[0]).expect("open segment");
    file.write_all_at(&vec![0u8; (5 << 20) / 2], lengths[0]).expect("2.5 MiB of zeros");
    let log = Log::open(dir.path(), config.clone()).expect("open");
    let stats = log.recovery_stats();
    assert_eq!((stats.truncated_bytes, stats.zero_tail_bytes), (0, (5 << 20) / 2), "zeros cut, nothing lost");
    assert_eq!(stats.segments_scanned, 2, "the first segment (its index files disagree) and the active one");
    assert_serves(&log, &stored, "a trusted segment with zeros after it");
    assert_eq!(file_lengths(dir.path()), lengths);
    drop(log);
    // The same long tail with one byte that is not zero at its very end: a corrupt tail, and the
    // segments after it are deleted (they no longer follow a log that ends in a corrupt batch).
    let file = OpenOptions::new().write(true).open(&segments[0]).expect("open segment");
    file.write_all_at(&vec![0u8; (5 << 20) / 2], lengths[0]).expect("zeros");
    file.write_all_at(&[1u8], lengths[0] + (5 << 20) / 2).expect("a byte");
    let log = Log::open(dir.path(), config).expect("open");
    let first_segment_end = stored.iter().filter(|batch| batch.base_offset < base_of(&segments[1])).count();
    assert_serves(&log, &stored[..first_segment_end], "zeros and a byte after the first segment");
    assert_eq!(segment_files(dir.path()).len(), 1, "later segments deleted");
}

/// Zeros after a segment's batches whose successor does not continue the log (batches lost, then
/// zeros where they were): the successor and everything after it is deleted, as after any cut.
#[test]
fn zeros_where_batches_were_lost_end_the_log_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, stored) = crashed_without_zeros(dir.path());
    let segments = segment_files(dir.path());
    let next_base = base_of(&segments[1]);
    let in_first: Vec<&Stored> = stored.iter().filter(|batch| batch.base_offset < next_base).collect();
    assert!(in_first.len() >= 2);
    // The first segment's last batch reads back as zeros.
    let last = in_first.last().expect("batches");
    let position: u64 = in_first.iter().rev().skip(1).map(|batch| batch.bytes.len() as u64).sum();
    let file = OpenOptions::new().write(true).open(&segments[0]).expect("open segment");
    file.write_all_at(&vec![0u8; last.bytes.len()], position).expect("zeros over the last batch");
    fs::remove_file(dir.path().join("recovery-point")).expect("scan every segment");
    let log = Log::open(dir.path(), config).expect("open");
    assert_serves(&log, &stored[..in_first.len() - 1], "the log ends before the zeroed batch");
    assert_eq!(segment_files(dir.path()).len(), 1, "the segments that no longer follow it are deleted");
    assert!(log.recovery_stats().truncated_bytes > 0, "the deleted segments are counted as dropped");
}

/// A log of 20 small batches in several segments, synced and left without `close`, written with no
/// zeros ahead (the tests put zeros where they want them); its config.
fn crashed_without_zeros(dir: &Path) -> (LogConfig, Vec<Stored>) {
    let config = LogConfig { zero_ahead_bytes: 0, ..small_config(700) };
    let mut log = Log::open(dir, config.clone()).expect("open");
    let stored: Vec<Stored> = (0..20).map(|index| append(&mut log, 1, 30, index)).collect();
    log.sync().expect("sync");
    assert!(log.segment_count() >= 3, "several segments");
    drop(log);
    (config, stored)
}
