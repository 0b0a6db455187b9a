//! Crash consistency: cut the active segment at every byte of its last batches, flip every
//! byte of the last batch, and check recovery keeps exactly the whole, valid prefix.
//! Also: clean shutdown skips the scan; an unclean open scans only after the recovery point.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::{append, base_of, copy_dir, expected_read, file_lengths, segment_files, small_config, Stored};
use once_log::{Log, LogConfig};

fn config() -> LogConfig {
    small_config(700)
}

/// A log of small batches, several segments, left without `close` (a crash image: the page
/// cache holds everything written, as after a process crash).
fn crashed_log(dir: &Path) -> Vec<Stored> {
    let mut log = Log::open(dir, config()).expect("open");
    let stored: Vec<Stored> =
        (0..16).map(|index| append(&mut log, 1 + index % 3, 20 + index as usize, index as i64)).collect();
    log.sync().expect("sync");
    assert!(log.segment_count() >= 3, "several segments");
    drop(log);
    stored
}

/// Opens the image and checks it holds exactly `survivors`, then appends and reopens.
fn check_recovered(dir: &Path, survivors: &[Stored], what: &str) {
    let mut log = Log::open(dir, config()).unwrap_or_else(|error| panic!("{what}: open: {error}"));
    let end = survivors.last().map_or(0, |batch| batch.last_offset + 1);
    assert_eq!(log.log_end_offset(), end, "{what}: log end offset");
    assert_eq!(log.durable_end_offset(), end, "{what}: durable after open");
    let on_disk: u64 = file_lengths(dir).iter().sum();
    let survivor_bytes: u64 = survivors.iter().map(|batch| batch.bytes.len() as u64).sum();
    assert_eq!(on_disk, survivor_bytes, "{what}: the torn or corrupt tail was cut from the file");
    for batch in survivors {
        assert_eq!(
            log.read(batch.base_offset, 1, end).expect("read"),
            batch.bytes,
            "{what}: batch {}",
            batch.base_offset
        );
    }
    assert_eq!(
        log.read(0, usize::MAX, end).expect("read all"),
        expected_read(survivors, 0, usize::MAX, end),
        "{what}: whole log"
    );
    let appended = append(&mut log, 2, 5, 99);
    assert_eq!(appended.base_offset, end, "{what}: appends continue at the end");
    drop(log);
    let log = Log::open(dir, config()).expect("reopen");
    assert_eq!(log.log_end_offset(), end + 2, "{what}: append survived reopen");
    assert_eq!(log.read(end, 1, end + 2).expect("read new"), appended.bytes, "{what}: appended batch");
}

#[test]
fn truncation_at_every_byte_of_the_last_batches_recovers_the_prefix() {
    let source = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(source.path());
    let active = segment_files(source.path()).pop().expect("active segment");
    let active_base = base_of(&active);
    let in_active: Vec<&Stored> = stored.iter().filter(|batch| batch.base_offset >= active_base).collect();
    assert!(in_active.len() >= 2, "the active segment holds a few batches");
    let batches_end: u64 = in_active.iter().map(|batch| batch.bytes.len() as u64).sum();
    let file_len = fs::metadata(&active).expect("stat").len();
    assert!(file_len > batches_end, "zeros were written ahead of the batches");
    let first_cut = batches_end - in_active.iter().rev().take(3).map(|batch| batch.bytes.len() as u64).sum::<u64>();
    // Two images of each torn write: the file cut there (an append that grew it, or zeros ahead that
    // were not yet durable), and the bytes from there to the batches' end zeros again (an overwrite
    // of zeros written ahead that did not reach the disk), the file as long as it was.
    for (cut, zeroed) in (first_cut..file_len).flat_map(|cut| [(cut, false), (cut, true)]) {
        if zeroed && cut >= batches_end {
            continue;
        }
        let image = tempfile::tempdir().expect("tempdir");
        copy_dir(source.path(), image.path());
        let path = image.path().join(active.file_name().expect("name"));
        if zeroed {
            let mut bytes = fs::read(&path).expect("read");
            bytes[cut as usize..batches_end as usize].fill(0);
            fs::write(&path, &bytes).expect("write");
        } else {
            OpenOptions::new().write(true).open(&path).expect("open copy").set_len(cut).expect("truncate");
        }
        // The batches that survive are the whole ones before the cut, and, where zeros were put back,
        // a batch whose bytes from the cut on were zeros already (its records' last bytes can be).
        let mut position = 0;
        let survivors: Vec<Stored> = stored
            .iter()
            .take_while(|batch| {
                if batch.base_offset < active_base {
                    return true;
                }
                let start = position;
                position += batch.bytes.len() as u64;
                let from = cut.max(start).min(position) - start;
                position <= cut || (zeroed && batch.bytes[from as usize..].iter().all(|byte| *byte == 0))
            })
            .cloned()
            .collect();
        check_recovered(image.path(), &survivors, &format!("cut at {cut} (zeroed: {zeroed})"));
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_drops_it_and_only_it() {
    let source = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(source.path());
    let active = segment_files(source.path()).pop().expect("active segment");
    let active_base = base_of(&active);
    let batches_end: usize =
        stored.iter().filter(|batch| batch.base_offset >= active_base).map(|batch| batch.bytes.len()).sum();
    let last = stored.last().expect("batches");
    let start = batches_end - last.bytes.len();
    let survivors = &stored[..stored.len() - 1];
    for byte in 0..last.bytes.len() {
        // The partition leader epoch (bytes 12..16) is outside Kafka's CRC by design: a flip
        // there is undetectable, and harmless to offsets and payload.
        if (12..16).contains(&byte) {
            continue;
        }
        let image = tempfile::tempdir().expect("tempdir");
        copy_dir(source.path(), image.path());
        let path = image.path().join(active.file_name().expect("name"));
        let mut bytes = fs::read(&path).expect("read");
        bytes[start + byte] ^= 0x40;
        fs::write(&path, &bytes).expect("write");
        check_recovered(image.path(), survivors, &format!("flip at byte {byte} of the last batch"));
    }
}

#[test]
fn clean_shutdown_skips_the_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    crashed_log(dir.path());
    Log::open(dir.path(), config()).expect("recover").close().expect("close");
    assert!(dir.path().join("clean-shutdown").exists());
    let log = Log::open(dir.path(), config()).expect("open");
    let stats = log.recovery_stats();
    assert!(stats.clean, "clean shutdown recognised");
    assert_eq!(stats.scanned_bytes, 0, "nothing scanned");
    assert_eq!(stats.truncated_bytes, 0);
    assert!(!dir.path().join("clean-shutdown").exists(), "marker removed at open");
    drop(log);
    let log = Log::open(dir.path(), config()).expect("open after crash");
    assert!(!log.recovery_stats().clean, "a crash after a clean open is not clean");
}

#[test]
fn unclean_open_scans_only_after_the_recovery_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path());
    let active_len = fs::metadata(segment_files(dir.path()).pop().expect("active")).expect("stat").len();
    let log = Log::open(dir.path(), config()).expect("open");
    let stats = log.recovery_stats();
    assert!(!stats.clean);
    assert_eq!(stats.segments_scanned, 1, "only the active segment");
    assert_eq!(stats.scanned_bytes, active_len, "only the active segment's bytes");
    assert_eq!(stats.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), stored.last().expect("batches").last_offset + 1);
}

#[test]
fn missing_recovery_point_scans_everything_and_bad_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path());
    let total: u64 = file_lengths(dir.path()).iter().sum();
    for entry in fs::read_dir(dir.path()).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension == "index") {
            let mut bytes = fs::read(&path).expect("read");
            bytes[20] ^= 1;
            fs::write(&path, &bytes).expect("write");
        }
    }
    let log = Log::open(dir.path(), config()).expect("open");
    assert_eq!(log.recovery_stats().scanned_bytes, total, "corrupt trusted indexes rebuilt by scanning");
    let end = log.log_end_offset();
    assert_eq!(log.read(0, usize::MAX, end).expect("read"), expected_read(&stored, 0, usize::MAX, end));
    drop(log);
    // That open cut the zeros written ahead off the active segment: the files hold the batches only.
    let total: u64 = file_lengths(dir.path()).iter().sum();
    assert_eq!(total, stored.iter().map(|batch| batch.bytes.len() as u64).sum::<u64>(), "no zeros left");
    let active_len = fs::metadata(segment_files(dir.path()).pop().expect("active")).expect("stat").len();
    let log = Log::open(dir.path(), config()).expect("open");
    assert_eq!(log.recovery_stats().scanned_bytes, active_len, "rebuilt index files were persisted");
    drop(log);
    fs::remove_file(dir.path().join("recovery-point")).expect("remove");
    let log = Log::open(dir.path(), config()).expect("open");
    assert_eq!(log.recovery_stats().scanned_bytes, total, "no recovery point: everything is scanned");
    assert_eq!(log.read(0, usize::MAX, end).expect("read"), expected_read(&stored, 0, usize::MAX, end));
    drop(log);
    let log = Log::open(dir.path(), config()).expect("open");
    assert_eq!(
        log.recovery_stats().scanned_bytes,
        active_len,
        "recovery moved the recovery point to the active segment"
    );
}

#[test]
fn debris_is_cleaned_up_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path());
    let end = stored.last().expect("batches").last_offset + 1;
    fs::write(dir.path().join("recovery-point.tmp"), b"half written").expect("temp");
    fs::write(dir.path().join(format!("{:020}.index", end + 50)), b"orphan").expect("orphan");
    // A crash right after a roll created the next segment: a zero-length trailing file.
    fs::write(dir.path().join(format!("{end:020}.log")), b"").expect("empty segment");
    let mut log = Log::open(dir.path(), config()).expect("open");
    assert_eq!(log.log_end_offset(), end);
    assert!(!dir.path().join("recovery-point.tmp").exists());
    assert!(!dir.path().join(format!("{:020}.index", end + 50)).exists());
    let appended = append(&mut log, 1, 5, 0);
    assert_eq!(log.read(end, 1, end + 1).expect("read"), appended.bytes);
    // A trailing segment that does not continue the log is dropped.
    drop(log);
    fs::write(dir.path().join(format!("{:020}.log", end + 10)), b"").expect("gap segment");
    let log = Log::open(dir.path(), config()).expect("open");
    assert_eq!(log.log_end_offset(), end + 1);
    assert!(!dir.path().join(format!("{:020}.log", end + 10)).exists());
}

#[test]
fn empty_directory_opens_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("topic-0");
    let log = Log::open(&path, config()).expect("open");
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (0, 0, 0));
    assert!(log.read(0, 100, 0).expect("read").is_empty());
    log.delete().expect("delete");
    assert!(!path.exists());
}
