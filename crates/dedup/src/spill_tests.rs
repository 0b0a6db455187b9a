//! Tests of chunks on disk: snapshots that refer to chunk files, orphans, retired files, and torn
//! or corrupt files found at start or by a lookup.

use std::fs;
use std::path::{Path, PathBuf};

use crate::chunk::Location;
use crate::config::DedupWindow;
use crate::disk::{chunk_path, list_chunk_files, ENTRIES_PER_PAGE, PAGE_LEN};
use crate::id::Id;
use crate::index::{DedupIndex, IndexConfig};
use crate::spill::{chunk_dir, disk_chunks_calm};

/// [`DedupIndex::with_tiny_chunks`] whose merges in RAM build chunks of up to 1/8 of the stored ids
/// (not `RESIDENT_MERGE_FRACTION`'s 1/16), for the cases that merge in RAM and whose sizes were chosen
/// for merges at 1/8 (at 1/16, two of their full chunks would not fit in one). A loaded index merges
/// at 1/16 again.
fn tiny_chunks_merging_at_an_eighth(config: IndexConfig, bits_min: u32) -> DedupIndex {
    let mut index = DedupIndex::with_tiny_chunks(config, bits_min);
    index.merge_fraction = crate::index::MERGE_FRACTION;
    index
}

fn id(n: u32) -> Id {
    Id::of(&n.to_be_bytes())
}

/// Stores ids `range` in partition 0 at offset = number, one batch of 100 at a time, running disk
/// work after each batch.
fn store(index: &mut DedupIndex, range: std::ops::Range<u32>) {
    let numbers: Vec<u32> = range.collect();
    for batch in numbers.chunks(100) {
        let ids: Vec<Option<Id>> = batch.iter().map(|number| Some(id(*number))).collect();
        let reservation = index.reserve(0, &ids, None, 0).expect("reserve");
        let offsets: Vec<i64> = batch.iter().map(|number| i64::from(*number)).collect();
        index.confirm(reservation, &offsets, 1_000);
        index.disk_work_here(0, 64).expect("disk work");
    }
}

/// An index whose snapshot lives in `dir`, with 20,000 ids of which most are on disk (tiny chunks,
/// a 64 KiB budget).
fn spilled(dir: &Path) -> (DedupIndex, PathBuf) {
    let snapshot = dir.join("dedup.snapshot");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 10);
    index.use_disk(chunk_dir(&snapshot), 64 << 10).expect("use disk");
    store(&mut index, 0..20_000);
    assert!(index.disk_chunks() >= 2, "{} chunks on disk", index.disk_chunks());
    assert!(index.disk_ids() >= 15_000, "{} ids on disk", index.disk_ids());
    assert!(index.approx_bytes() <= (64 << 10) + 40_000, "{} bytes resident", index.approx_bytes());
    (index, snapshot)
}

fn assert_answers(index: &DedupIndex, count: u32) {
    for number in (0..count).step_by(7) {
        let expected = Location { partition: 0, offset: i64::from(number) };
        assert_eq!(index.lookup(&id(number), 0).expect("lookup"), Some(expected), "id {number}");
    }
    for number in count..count + 2_000 {
        assert_eq!(index.lookup(&id(number), 0).expect("lookup"), None, "id {number} was never stored");
    }
}

fn chunk_files(dir: &Path) -> Vec<PathBuf> {
    list_chunk_files(dir).expect("list").into_iter().map(|(path, _)| path).collect()
}

#[test]
fn a_chunk_on_disk_keeps_under_1_5_bytes_of_ram_per_id() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 17);
    index.use_disk(directory.path().join("chunks"), 0).expect("use disk");
    store(&mut index, 0..300_000);
    assert!(index.disk_ids() >= 200_000, "{} ids on disk", index.disk_ids());
    let per_id = index.disk_chunk_bytes() as f64 / index.disk_ids() as f64;
    assert!(per_id <= 1.5, "{per_id:.2} bytes of RAM per id on disk");
    assert!(per_id >= 1.25, "{per_id:.2} bytes per id: the filter alone takes 1.25, the account is wrong");
    assert_answers(&index, 300_000);
}

#[test]
fn a_snapshot_refers_to_chunk_files_and_loads_them() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = spilled(directory.path());
    let stats = index.snapshot(&snapshot).expect("snapshot");
    assert_eq!(stats.entries, 20_000);
    let inline = (index.stored_ids() - index.disk_ids()) as u64;
    assert!(stats.bytes < inline * 33 + 4_096, "{} bytes: chunks on disk are referred to, not copied", stats.bytes);
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.stored_ids(), 20_000);
    assert_eq!(loaded.disk_chunks(), index.disk_chunks());
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0, "every file is referred to");
    assert_answers(&loaded, 20_000);
}

#[test]
fn files_not_in_the_snapshot_are_removed_at_start_and_retired_ones_after_the_next_snapshot() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = spilled(directory.path());
    index.snapshot(&snapshot).expect("snapshot");
    let referred = chunk_files(&chunk_dir(&snapshot));
    // After the snapshot: more ids, more spills and merges (files written and retired).
    store(&mut index, 20_000..40_000);
    let retired = index.retired_files();
    assert!(!retired.is_empty(), "merges on disk retire files");
    assert!(retired.iter().all(|path| path.exists()), "a retired file stays until a snapshot no longer needs it");
    // A crash now: the old snapshot and its files are what counts.
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load the older snapshot");
    let removed = loaded.remove_orphan_chunk_files().expect("orphans");
    assert!(removed > 0, "files written after the snapshot are orphans");
    assert_eq!(chunk_files(&chunk_dir(&snapshot)).len(), referred.len());
    assert_answers(&loaded, 20_000);
    assert_eq!(loaded.lookup(&id(30_000), 0).expect("lookup"), None, "replay would bring the rest back");
    drop(loaded);
    // Without the crash: the next snapshot deletes the retired files.
    let directory_two = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = spilled(directory_two.path());
    index.snapshot(&snapshot).expect("snapshot");
    store(&mut index, 20_000..40_000);
    let retired = index.retired_files();
    assert!(!retired.is_empty());
    index.snapshot(&snapshot).expect("second snapshot");
    assert!(retired.iter().all(|path| !path.exists()), "retired files are deleted once the snapshot is durable");
    assert!(index.retired_files().is_empty());
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_answers(&loaded, 40_000);
}

#[test]
fn a_torn_or_corrupt_chunk_file_at_start_means_rebuild() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = spilled(directory.path());
    index.snapshot(&snapshot).expect("snapshot");
    let file = chunk_files(&chunk_dir(&snapshot)).into_iter().next().expect("a chunk file");
    let good = fs::read(&file).expect("read");
    let mut damaged: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [0, 1, PAGE_LEN - 1, PAGE_LEN, good.len() / 2, good.len() - 13, good.len() - 1] {
        damaged.push((format!("cut at {cut}"), good[..cut].to_vec()));
    }
    for position in [0, 17, PAGE_LEN - 2, PAGE_LEN + 100, good.len() - 40, good.len() - 20, good.len() - 2] {
        let mut bytes = good.clone();
        bytes[position] ^= 0x10;
        damaged.push((format!("bit flipped at {position}"), bytes));
    }
    for (what, bytes) in damaged {
        fs::write(&file, &bytes).expect("write");
        let error = DedupIndex::load(&snapshot, index.config()).err();
        let error = error.unwrap_or_else(|| panic!("a chunk file {what} went unnoticed"));
        assert!(error.means_rebuild(), "{what}: {error}");
    }
    fs::remove_file(&file).expect("remove");
    let error = DedupIndex::load(&snapshot, index.config()).err().expect("a missing chunk file is noticed");
    assert!(error.means_rebuild(), "{error}");
    // What the caller then does: an empty index, every chunk file an orphan, the log replayed.
    let mut rebuilt = DedupIndex::new(index.config());
    rebuilt.use_disk(chunk_dir(&snapshot), 64 << 10).expect("use disk");
    assert!(rebuilt.remove_orphan_chunk_files().expect("orphans") > 0);
    assert!(chunk_files(&chunk_dir(&snapshot)).is_empty());
    store(&mut rebuilt, 0..20_000);
    assert_answers(&rebuilt, 20_000);
}

#[test]
fn a_page_damaged_after_start_is_an_error_never_a_wrong_answer() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (index, _) = spilled(directory.path());
    let path = index.sealed.iter().find_map(|chunk| chunk.disk().map(|disk| disk.path.clone())).expect("a file");
    let mut bytes = fs::read(&path).expect("read");
    for page in 0..bytes.len() / PAGE_LEN {
        bytes[page * PAGE_LEN + 3] ^= 0x40;
    }
    fs::write(&path, &bytes).expect("write");
    let (mut errors, mut found) = (0, 0);
    for number in 0..20_000u32 {
        match index.lookup(&id(number), 0) {
            Ok(Some(location)) => {
                assert_eq!(location, Location { partition: 0, offset: i64::from(number) }, "id {number}");
                found += 1;
            }
            Ok(None) => panic!("id {number} is stored: a damaged page must not make it new"),
            Err(error) => {
                assert!(error.to_string().contains("checksum"), "{error}");
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "the damaged file was read");
    assert!(found > 0, "the other chunks still answer");
}

/// A merge or compaction on disk reads its inputs whole: a damaged page ends the read with an error,
/// before any entry of its own.
#[test]
fn reading_a_chunk_file_whole_stops_at_a_damaged_page() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (index, _) = spilled(directory.path());
    let chunk = index
        .sealed
        .iter()
        .find(|chunk| chunk.disk().is_some() && chunk.len() > 3 * ENTRIES_PER_PAGE)
        .expect("a chunk on disk of more than three pages");
    let path = chunk.disk().expect("on disk").path.clone();
    let whole: Vec<_> = chunk.entries().map(|entry| entry.expect("intact")).collect();
    assert_eq!(whole.len(), chunk.len(), "an intact file yields every entry");
    assert!(whole.windows(2).all(|pair| pair[0].id < pair[1].id), "in id order");
    let damaged = 2;
    let mut bytes = fs::read(&path).expect("read");
    bytes[damaged * PAGE_LEN + 100] ^= 0x40;
    fs::write(&path, &bytes).expect("write");
    let read: Vec<_> = chunk.entries().collect();
    let intact = read.iter().take_while(|entry| entry.is_ok()).count();
    assert!(intact <= damaged * ENTRIES_PER_PAGE, "no entry of the damaged page or after it");
    let before: Vec<_> = read[..intact].iter().map(|entry| *entry.as_ref().expect("ok")).collect();
    assert_eq!(before, whole[..intact], "what comes before the error is the file's first entries");
    let error = read[intact].as_ref().expect_err("then the damaged page's error");
    assert!(error.to_string().contains("checksum"), "{error}");
    assert_eq!(read.len(), intact + 1, "nothing after the error");
}

#[test]
fn a_failed_spill_refuses_new_ids_over_the_budget() {
    let directory = tempfile::tempdir().expect("tempdir");
    let dir = directory.path().join("chunks");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 10);
    index.use_disk(dir.clone(), 16 << 10).expect("use disk");
    // The directory becomes a file: every chunk write fails, as on a full disk.
    fs::remove_dir(&dir).expect("remove");
    fs::write(&dir, b"not a directory").expect("write");
    let mut refused = None;
    for number in (0..50_000u32).step_by(100) {
        let ids: Vec<Option<Id>> = (number..number + 100).map(|n| Some(id(n))).collect();
        match index.reserve(0, &ids, None, 0) {
            Ok(reservation) => {
                let offsets: Vec<i64> = (number..number + 100).map(i64::from).collect();
                index.confirm(reservation, &offsets, 1_000);
            }
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
        if let Some(work) = index.next_disk_work(0) {
            assert!(index.finish_disk_work(work.run()).is_err(), "the spill fails");
        }
    }
    let error = refused.expect("new ids are refused once over the budget with a failed spill");
    assert!(matches!(error, crate::DedupError::SpillFailed { .. }), "{error}");
    assert!(index.approx_bytes() < (16 << 10) + 60_000, "memory stayed near the budget");
    assert_eq!(index.lookup(&id(0), 0).expect("lookup"), Some(Location { partition: 0, offset: 0 }));
    // Space comes back: the spill works and ids are accepted again.
    fs::remove_file(&dir).expect("remove");
    fs::create_dir(&dir).expect("mkdir");
    index.disk_work_here(0, 100).expect("disk work");
    assert!(!index.over_memory_budget());
    assert!(index.reserve(0, &[Some(id(1_000_000))], None, 0).is_ok());
    assert!(!chunk_path(&dir, 0).with_extension("dedup.tmp").exists());
}

/// Stores ids `range` in partition 0 (offset = number) without running disk work.
fn store_in_ram(index: &mut DedupIndex, range: std::ops::Range<u32>) {
    let numbers: Vec<u32> = range.collect();
    for batch in numbers.chunks(100) {
        let ids: Vec<Option<Id>> = batch.iter().map(|number| Some(id(*number))).collect();
        let reservation = index.reserve(0, &ids, None, 0).expect("reserve");
        let offsets: Vec<i64> = batch.iter().map(|number| i64::from(*number)).collect();
        index.confirm(reservation, &offsets, 1_000);
    }
}

#[test]
fn a_replayed_record_is_indexed_over_the_budget_when_spilling_fails() {
    let directory = tempfile::tempdir().expect("tempdir");
    let dir = directory.path().join("chunks");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 10);
    index.use_disk(dir.clone(), 16 << 10).expect("use disk");
    fs::remove_dir(&dir).expect("remove: every chunk write fails, as on a full disk");
    store_in_ram(&mut index, 0..5_000);
    assert!(index.over_memory_budget());
    assert!(index.disk_work_here(0, 4).is_err(), "the spill fails");
    let error = index.reserve(0, &[Some(id(9_000))], None, 0).expect_err("the live path refuses new ids");
    assert!(matches!(error, crate::DedupError::SpillFailed { .. }), "{error}");
    // A record already in the log: indexed whatever the budget.
    let replayed = index.reserve_replayed(0, &[Some(id(9_000)), Some(id(1))], None, 0).expect("replay reserves");
    assert_eq!(replayed.decisions()[0], crate::Decision::New);
    assert_eq!(replayed.decisions()[1], crate::Decision::Duplicate(Location { partition: 0, offset: 1 }));
    index.confirm(replayed, &[9_000, 9_001], 1_000);
    assert_eq!(index.lookup(&id(9_000), 0).expect("lookup"), Some(Location { partition: 0, offset: 9_000 }));
}

#[test]
fn a_chunk_file_another_index_wrote_under_a_referred_name_is_refused_at_load() {
    let directory = tempfile::tempdir().expect("tempdir");
    let snapshot = directory.path().join("dedup.snapshot");
    let dir = chunk_dir(&snapshot);
    // A deleted topic's index, with a spill picked (file id 0) but not yet run.
    let mut deleted = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 10);
    deleted.use_disk(dir.clone(), 0).expect("use disk");
    store_in_ram(&mut deleted, 100_000..102_000);
    let late = deleted.next_disk_work(0).expect("a spill");
    // The topic created again under the same name: its index spills its own file 0 and snapshots it.
    let mut created = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 10);
    created.use_disk(dir.clone(), 0).expect("use disk");
    store(&mut created, 0..2_000);
    assert!(created.disk_chunks() > 0);
    created.snapshot(&snapshot).expect("snapshot");
    // The deleted topic's step finishes late, renaming its file 0 over the new one.
    assert!(deleted.finish_disk_work(late.run()).expect("the late step"), "its file 0 replaced the new one");
    let error = DedupIndex::load(&snapshot, created.config()).err().expect("another index's file is refused");
    assert!(error.means_rebuild(), "{error}");
    assert!(error.to_string().contains("not this index"), "{error}");
}

#[test]
fn a_temporary_chunk_file_that_exists_is_never_truncated() {
    let directory = tempfile::tempdir().expect("tempdir");
    let dir = directory.path().join("chunks");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 10);
    index.use_disk(dir.clone(), 0).expect("use disk");
    store_in_ram(&mut index, 0..2_000);
    let temp = chunk_path(&dir, 0).with_extension("dedup.tmp");
    fs::write(&temp, b"another writer's").expect("write");
    let work = index.next_disk_work(0).expect("a spill");
    assert!(index.finish_disk_work(work.run()).is_err(), "the step fails rather than truncate it");
    assert_eq!(fs::read(&temp).expect("read"), b"another writer's");
    // At start, a stale one is removed, and the next step works.
    assert_eq!(index.remove_orphan_chunk_files().expect("orphans"), 1);
    assert_eq!(index.disk_work_here(0, 1).expect("disk work"), 1);
}

#[test]
fn a_spill_is_not_discarded_because_a_merge_in_ram_rewrote_its_chunk() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut index = tiny_chunks_merging_at_an_eighth(IndexConfig::new(DedupWindow::Retention), 10);
    // 128 KiB: over it with 15,000 ids, and merges in RAM up to 2,048 ids allowed.
    index.use_disk(directory.path().join("chunks"), 128 << 10).expect("use disk");
    store_in_ram(&mut index, 0..15_000);
    assert!(index.sealed_chunks() >= 4, "{} sealed chunks", index.sealed_chunks());
    let work = index.next_disk_work(0).expect("a spill of the oldest chunk");
    let rewritten = index.expire(0, usize::MAX).entries_rewritten;
    assert!(rewritten > 0, "the merge in RAM ran");
    assert!(index.finish_disk_work(work.run()).expect("spill"), "the spill was installed");
    assert_eq!(index.disk_chunks(), 1);
    assert_answers(&index, 15_000);
}

/// Copies page `from` of a chunk file over page `to`, in place (the open file sees it).
fn copy_page(path: &Path, from: usize, to: usize) -> Vec<Id> {
    let mut bytes = fs::read(path).expect("read");
    let ids = (0..crate::disk::ENTRIES_PER_PAGE)
        .map(|slot| {
            let at = to * PAGE_LEN + slot * 32;
            Id(bytes[at..at + 16].try_into().expect("16 bytes"))
        })
        .collect();
    let page = bytes[from * PAGE_LEN..(from + 1) * PAGE_LEN].to_vec();
    bytes[to * PAGE_LEN..(to + 1) * PAGE_LEN].copy_from_slice(&page);
    fs::write(path, &bytes).expect("write");
    ids
}

#[test]
fn an_intact_page_read_in_place_of_another_is_an_error_never_a_miss() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (index, _) = spilled(directory.path());
    let path = index
        .sealed
        .iter()
        .find_map(|chunk| chunk.disk().filter(|disk| disk.len() > 2 * 127).map(|disk| disk.path.clone()))
        .expect("a file of three pages or more");
    let moved = copy_page(&path, 0, 1);
    for id in &moved {
        let error = index.lookup(id, 0).expect_err("the misdirected page is noticed");
        assert!(matches!(error, crate::DedupError::ChunkCorrupt { .. }), "{error}");
    }
}

#[test]
fn a_forged_entry_count_that_wraps_the_page_arithmetic_is_refused() {
    let directory = tempfile::tempdir().expect("tempdir");
    let dir = directory.path().join("chunks");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 3);
    index.use_disk(dir.clone(), 0).expect("use disk");
    store(&mut index, 0..100);
    let (path, file_id) = list_chunk_files(&dir).expect("list").into_iter().next().expect("a chunk file");
    let file_id = file_id.expect("a chunk file id");
    let mut bytes = fs::read(&path).expect("read");
    assert_eq!(bytes.len() / PAGE_LEN, 1, "one page");
    let trailer_len = u32::from_be_bytes(bytes[bytes.len() - 12..bytes.len() - 8].try_into().expect("4")) as usize;
    let start = bytes.len() - 12 - trailer_len;
    // (2^52 + 1) pages of 4096 bytes wrap around to one page.
    let count = ((1u64 << 52) + 1) * crate::disk::ENTRIES_PER_PAGE as u64;
    bytes[start + 28..start + 36].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[start..start + trailer_len - 4]);
    bytes[start + trailer_len - 4..start + trailer_len].copy_from_slice(&crc.to_be_bytes());
    fs::write(&path, &bytes).expect("write");
    let error = crate::disk::open_chunk(&dir, file_id, index.nonce).err().expect("refused");
    assert!(matches!(error, crate::DedupError::ChunkCorrupt { .. }), "{error}");
}

/// A resident index (no budget to speak of) whose snapshot lives in `dir`, with `count` ids in
/// several sealed chunks (tiny chunks, no disk work: nothing is spilled).
fn resident(dir: &Path, count: u32) -> (DedupIndex, PathBuf) {
    let snapshot = dir.join("dedup.snapshot");
    let mut index = tiny_chunks_merging_at_an_eighth(IndexConfig::new(DedupWindow::Retention), 8);
    index.use_disk(chunk_dir(&snapshot), usize::MAX).expect("use disk");
    store(&mut index, 0..count);
    assert!(index.sealed_chunks() >= 3, "{} sealed chunks", index.sealed_chunks());
    assert_eq!(index.disk_ids(), 0, "nothing spilled");
    (index, snapshot)
}

#[test]
fn resident_chunks_are_written_to_files_once_and_load_back_resident() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    assert_eq!(index.ids_without_file(), 5_000, "no chunk has a file before the first snapshot");
    let first = index.snapshot(&snapshot).expect("snapshot");
    assert_eq!(first.files_written, index.sealed_chunks(), "a file for every resident sealed chunk");
    assert_eq!(first.entries, 5_000);
    assert!(first.file_entries > 0 && first.file_entries < 5_000, "{} ids in files", first.file_entries);
    assert_eq!(index.ids_without_file(), 5_000 - first.file_entries, "only the active chunk has no file now");
    assert_eq!(chunk_files(&chunk_dir(&snapshot)).len(), first.files_written);
    // Nothing sealed since: the next snapshot refers to the same files and writes none.
    let second = index.snapshot(&snapshot).expect("second snapshot");
    assert_eq!((second.files_written, second.entries), (0, 5_000));
    assert!(second.bytes < 5_000 * 32 / 2, "{} bytes: the sealed ids are referred to, not copied", second.bytes);
    // A start: the chunks come back resident, with their files, and no file is an orphan.
    let mut loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!((loaded.disk_ids(), loaded.stored_ids()), (0, 5_000), "loaded resident");
    assert!(loaded.topic_filter().is_some(), "a resident load starts its topic filter");

    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0, "the files the snapshot refers to stay");
    assert_answers(&loaded, 5_000);
    // After the start: more ids, and merges in RAM that retire the files of the merged chunks. The
    // new files must not take the names of the loaded ones.
    loaded.use_disk(chunk_dir(&snapshot), usize::MAX).expect("use disk");
    store(&mut loaded, 5_000..9_000);
    loaded.expire(0, usize::MAX);
    assert!(loaded.retired_file_count() > 0, "a merged chunk's file is retired");
    let retired = loaded.retired_files();
    let third = loaded.snapshot(&snapshot).expect("third snapshot");
    assert!(third.files_written > 0);
    assert!(retired.iter().all(|path| !path.exists()), "retired files go once the snapshot is durable");
    let reloaded = DedupIndex::load(&snapshot, loaded.config()).expect("reload");
    assert_eq!(reloaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_eq!(reloaded.stored_ids(), 9_000);
    assert_answers(&reloaded, 9_000);
}

#[test]
fn a_merge_in_ram_takes_over_its_inputs_files_and_no_snapshot_writes_them_again() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    let first = index.snapshot(&snapshot).expect("snapshot");
    let files = chunk_files(&chunk_dir(&snapshot));
    assert_eq!(files.len(), first.files_written);
    let chunks = index.sealed_chunks();
    index.expire(0, usize::MAX);
    assert!(index.sealed_chunks() < chunks, "neighbours were merged ({chunks} chunks before)");
    assert_eq!(index.retired_file_count(), 0, "the merged chunks took their inputs' files over");
    assert_eq!(index.ids_without_file(), 5_000 - first.file_entries, "the merged chunks have files");
    let second = index.snapshot(&snapshot).expect("second snapshot");
    assert_eq!((second.files_written, second.entries), (0, 5_000), "the merged ids are referred to, not written");
    assert_eq!(chunk_files(&chunk_dir(&snapshot)), files, "no file written, none deleted");
    // A start loads each file as a chunk of its own, with the answers of the merged index.
    let mut loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0, "every file is referred to");
    // A chunk per file, and one of the active chunk's ids (written inline).
    assert_eq!((loaded.sealed_chunks(), loaded.stored_ids()), (chunks + 1, 5_000), "a chunk per file");
    assert_answers(&loaded, 5_000);
    // Over a tiny budget, a chunk whose copy spans several files is spilled to a file of its own,
    // and its files are retired, then deleted by the next snapshot.
    index.use_disk(chunk_dir(&snapshot), 1).expect("use disk");
    let sealed = index.sealed_chunks();
    assert_eq!(index.disk_work_here(0, sealed).expect("disk work"), sealed);
    assert_eq!(index.disk_ids(), first.file_entries, "every sealed chunk is on disk");
    assert!(index.retired_file_count() > 0, "the files of merged chunks are retired by their spill");
    let retired = index.retired_files();
    assert_answers(&index, 5_000);
    index.snapshot(&snapshot).expect("snapshot after the spills");
    assert!(retired.iter().all(|path| !path.exists()), "deleted once no snapshot refers to them");
    loaded = DedupIndex::load(&snapshot, index.config()).expect("load after the spills");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_answers(&loaded, 5_000);
}

#[test]
fn a_chunk_with_a_file_merges_with_a_newer_one_only_once_that_one_has_a_file_too() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    index.snapshot(&snapshot).expect("snapshot");
    // Two more chunks sealed after the snapshot: no file yet.
    store(&mut index, 5_000..5_500);
    let unfiled = index.ids_without_file();
    assert!(unfiled >= 448, "{unfiled} ids without a file");
    index.expire(0, usize::MAX);
    assert_eq!(index.retired_file_count(), 0, "no chunk with a file was merged with one without");
    assert_eq!(index.ids_without_file(), unfiled, "the chunks without files merged among themselves");
    // Once the next snapshot gave the new chunks their file, they merge with their older neighbour.
    let chunks = index.sealed_chunks();
    let written = index.snapshot(&snapshot).expect("second snapshot");
    assert_eq!(written.files_written, 1, "the two new chunks, merged into one");
    index.expire(0, usize::MAX);
    assert!(index.sealed_chunks() < chunks, "merged across the old boundary ({chunks} chunks before)");
    assert_eq!(index.retired_file_count(), 0, "every merge took its inputs' files over");
    assert_answers(&index, 5_500);
}

#[test]
fn a_merge_takes_over_the_files_a_snapshot_gave_its_inputs_while_it_ran() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    let mut stats = crate::index::ExpireStats::default();
    let work = index.next_rewrite_work(0, 0, usize::MAX, &mut stats).expect("a merge of two chunks without files");
    let done = work.run();
    // While the merge ran, a snapshot gave every sealed chunk, its inputs among them, a file.
    index.snapshot(&snapshot).expect("snapshot");
    let rewritten = index.finish_rewrite_work(done);
    assert!(rewritten.installed);
    rewritten.free();
    assert_eq!(index.retired_file_count(), 0, "the merge took over the files its inputs got meanwhile");
    let second = index.snapshot(&snapshot).expect("second snapshot");
    assert_eq!(second.files_written, 0, "the merged chunk's files are its inputs'");
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_answers(&loaded, 5_000);
}

#[test]
fn a_merge_whose_newer_input_got_no_file_meanwhile_leaves_its_output_to_the_next_snapshot() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    // A view taken before the newest chunk is sealed: its write gives files to the older ones only.
    let view = index.snapshot_view();
    store(&mut index, 5_000..5_300);
    let mut stats = crate::index::ExpireStats::default();
    let from = index.sealed_chunks() - 2;
    let work = index.next_rewrite_work(from, 0, usize::MAX, &mut stats).expect("the newest two merge");
    let done = work.run();
    view.write(&snapshot).expect("write the view");
    index.finish_snapshot(&view);
    let rewritten = index.finish_rewrite_work(done);
    assert!(rewritten.installed);
    rewritten.free();
    assert_eq!(index.retired_file_count(), 1, "the older input's new file is retired: the newer one has none");
    let next = index.snapshot(&snapshot).expect("next snapshot");
    assert_eq!(next.files_written, 1, "the merged chunk's own file");
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_answers(&loaded, 5_300);
}

#[test]
fn ids_a_merge_dropped_never_come_back_at_a_start_even_under_a_wider_window() {
    let directory = tempfile::tempdir().expect("tempdir");
    let snapshot = directory.path().join("dedup.snapshot");
    let window = DedupWindow::Duration { window_ms: 10_000 };
    let mut index = tiny_chunks_merging_at_an_eighth(IndexConfig::new(window), 8);
    index.use_disk(chunk_dir(&snapshot), usize::MAX).expect("use disk");
    let put = |index: &mut DedupIndex, numbers: &[u32], timestamp_ms: i64| {
        let ids: Vec<Option<Id>> = numbers.iter().map(|number| Some(id(*number))).collect();
        let reservation = index.reserve(0, &ids, None, timestamp_ms).expect("reserve");
        let offsets: Vec<i64> = numbers.iter().map(|number| i64::from(*number)).collect();
        index.confirm(reservation, &offsets, timestamp_ms);
    };
    // The first 60 ids stored at 1 s, the others at 20 s.
    put(&mut index, &(0..60).collect::<Vec<u32>>(), 1_000);
    for batch in (60..5_000).collect::<Vec<u32>>().chunks(100) {
        put(&mut index, batch, 20_000);
    }
    index.snapshot(&snapshot).expect("snapshot");
    // At 15 s the first 60 are past the window: the first chunk's merge drops them, so it does not take
    // its inputs' files over (they hold the 60).
    index.expire(15_000, usize::MAX);
    assert_eq!(index.stored_ids(), 4_940, "the merge dropped the 60");
    assert!(index.retired_file_count() > 0, "the merge that dropped them left its inputs' files");
    // The window widens: the dropped ids are gone from RAM for good, and a start must not bring them
    // back from the files of the chunks they were dropped from.
    index.set_window(DedupWindow::Retention);
    let written = index.snapshot(&snapshot).expect("second snapshot");
    assert!(written.files_written > 0, "the merge's output is written whole");
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_eq!(loaded.stored_ids(), 4_940);
    for number in 0..60 {
        assert_eq!(index.lookup(&id(number), 15_000).expect("lookup"), None, "id {number} in RAM");
        assert_eq!(loaded.lookup(&id(number), 15_000).expect("lookup"), None, "id {number} after a start");
    }
    for number in (60..5_000).step_by(7) {
        let expected = Some(Location { partition: 0, offset: i64::from(number) });
        assert_eq!(loaded.lookup(&id(number), 15_000).expect("lookup"), expected, "id {number}");
    }
}

#[test]
fn a_chunk_merged_away_while_its_file_is_written_has_the_file_retired() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    let view = index.snapshot_view();
    // Between the view and its write: every sealed chunk merged or rewritten (they leave the index).
    index.set_log_start_offset(0, 1);
    index.expire(0, usize::MAX);
    view.write(&snapshot).expect("write the view");
    index.finish_snapshot(&view);
    let written = chunk_files(&chunk_dir(&snapshot));
    assert!(!written.is_empty());
    assert_eq!(index.retired_file_count(), written.len(), "files of chunks no longer in the index are retired");
    // The snapshot just written refers to them: a crash now loads it.
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load the snapshot");
    assert_answers(&loaded, 5_000);
    drop(loaded);
    index.snapshot(&snapshot).expect("next snapshot");
    assert!(written.iter().all(|path| !path.exists()), "deleted by the next snapshot");
    let reloaded = DedupIndex::load(&snapshot, index.config()).expect("reload");
    assert_eq!(reloaded.remove_orphan_chunk_files().expect("orphans"), 0);
    for number in (1..5_000).step_by(7) {
        let expected = Location { partition: 0, offset: i64::from(number) };
        assert_eq!(reloaded.lookup(&id(number), 0).expect("lookup"), Some(expected), "id {number}");
    }
}

#[test]
fn a_failed_chunk_file_write_leaves_the_old_snapshot_and_no_new_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 3_000);
    let first = index.snapshot(&snapshot).expect("snapshot");
    store(&mut index, 3_000..6_000);
    let before = chunk_files(&chunk_dir(&snapshot));
    // The second new file's temporary name is taken: its write fails after the first one's.
    let view = index.snapshot_view();
    let blocker = {
        let mut path = chunk_path(&chunk_dir(&snapshot), before.len() as u64 + 1).into_os_string();
        path.push(".tmp");
        PathBuf::from(path)
    };
    fs::write(&blocker, b"another writer").expect("block");
    assert!(view.write(&snapshot).is_err(), "the write fails");
    let after: Vec<PathBuf> = chunk_files(&chunk_dir(&snapshot)).into_iter().filter(|path| *path != blocker).collect();
    assert_eq!(after, before, "the files written for the failed snapshot are removed");
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("the old snapshot loads");
    assert_eq!(loaded.stored_ids(), first.entries);
    assert_answers(&loaded, 3_000);
}

#[test]
fn a_spill_of_a_chunk_with_a_snapshot_file_reuses_the_file() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    index.snapshot(&snapshot).expect("snapshot");
    let files = chunk_files(&chunk_dir(&snapshot));
    let filed = index.stored_ids() - index.ids_without_file();
    // Now over a tiny budget: the chunks with files are spilled by opening their files.
    index.use_disk(chunk_dir(&snapshot), 1).expect("use disk");
    let sealed = index.sealed_chunks();
    // As many steps as chunks: spills come first while over the budget (merges on disk after them).
    assert_eq!(index.disk_work_here(0, sealed).expect("disk work"), sealed);
    assert_eq!(index.disk_ids(), filed, "every chunk with a file is on disk");
    assert_eq!(chunk_files(&chunk_dir(&snapshot)), files, "no file was written for them");
    assert_eq!(index.retired_file_count(), 0, "their files are theirs still, not retired");
    assert_answers(&index, 5_000);
    index.snapshot(&snapshot).expect("snapshot after the spills");
    let loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert_eq!(loaded.disk_ids(), filed, "loaded on disk");
    assert_eq!(loaded.remove_orphan_chunk_files().expect("orphans"), 0);
    assert_answers(&loaded, 5_000);
}

#[test]
fn a_reused_file_of_a_chunk_dropped_during_its_spill_stays_until_the_next_snapshot() {
    let directory = tempfile::tempdir().expect("tempdir");
    let (mut index, snapshot) = resident(directory.path(), 5_000);
    index.snapshot(&snapshot).expect("snapshot");
    let files = chunk_files(&chunk_dir(&snapshot));
    index.use_disk(chunk_dir(&snapshot), 1).expect("use disk");
    let work = index.next_disk_work(0).expect("a spill is due");
    // While the spill runs, retention passes every id: the chunk is dropped and its file retired.
    index.set_log_start_offset(0, 1_000_000);
    index.expire(0, usize::MAX);
    assert!(!index.finish_disk_work(work.run()).expect("finish"), "the spill's chunk is gone");
    assert!(files.iter().all(|path| path.exists()), "the file the latest snapshot refers to is still there");
    assert!(DedupIndex::load(&snapshot, index.config()).is_ok(), "a crash now loads the latest snapshot");
    index.snapshot(&snapshot).expect("next snapshot");
    assert!(files.iter().all(|path| !path.exists()), "retired, then deleted by the next snapshot");
}

#[test]
fn a_load_from_chunk_files_sizes_the_topic_filter_for_every_id() {
    let directory = tempfile::tempdir().expect("tempdir");
    // More ids than the smallest filter takes, nearly all in chunk files the snapshot refers to.
    let (mut index, snapshot) = resident(directory.path(), 200_000);
    index.snapshot(&snapshot).expect("snapshot");
    let bytes = fs::metadata(&snapshot).expect("snapshot").len();
    assert!(bytes < 200_000 * 32 / 4, "{bytes} bytes: most ids are referred to");
    let mut loaded = DedupIndex::load(&snapshot, index.config()).expect("load");
    assert!(loaded.topic_filter().is_some(), "a resident load starts its topic filter");
    // Sized for every loaded id, not from the snapshot's bytes (a reference is 13 bytes for a
    // chunk's ids): an overfull filter would pass every probe until a rebuild.
    assert!(loaded.next_filter_work().is_none(), "the filter loaded is not overfull");
    loaded.assert_filter_covers_sealed();
}

#[test]
fn a_chunk_file_as_written_is_checked_for_its_name_index_and_length() {
    use crate::chunk::Entry;
    use crate::disk::{check_written, write_chunk};
    let directory = tempfile::tempdir().expect("tempdir");
    let dir = directory.path();
    let mut entries: Vec<Entry> = (0..1_000u32)
        .map(|n| Entry { id: id(n), location: Location { partition: 0, offset: n.into() }, time_s: 1 })
        .collect();
    entries.sort_by_key(|entry| entry.id);
    let nonce = 0x5eed;
    let count = write_chunk(dir, 7, nonce, entries.iter().copied().map(Ok)).expect("write");
    assert_eq!(count, entries.len());
    check_written(dir, 7, nonce, count).expect("the file as written");
    // Each check can fail: another entry count, another index's file, another id's file under the
    // name, a file cut short.
    let mismatch = |result: Result<(), crate::error::DedupError>| result.expect_err("refused").to_string();
    assert!(mismatch(check_written(dir, 7, nonce, count + 1)).contains("entries in the trailer"));
    assert!(mismatch(check_written(dir, 7, nonce + 1, count)).contains("not this index"));
    fs::copy(chunk_path(dir, 7), chunk_path(dir, 8)).expect("copy");
    assert!(mismatch(check_written(dir, 8, nonce, count)).contains("file id 7"));
    let bytes = fs::read(chunk_path(dir, 7)).expect("read");
    let trailer_len =
        u32::from_be_bytes(bytes[bytes.len() - 12..bytes.len() - 8].try_into().expect("4 bytes")) as usize;
    // Without the last page: the trailer and footer are intact, the pages too short for the count.
    let mut cut = bytes[..bytes.len() - 12 - trailer_len - PAGE_LEN].to_vec();
    cut.extend_from_slice(&bytes[bytes.len() - 12 - trailer_len..]);
    fs::write(chunk_path(dir, 7), &cut).expect("write");
    assert!(mismatch(check_written(dir, 7, nonce, count)).contains("bytes of pages"));
    fs::write(chunk_path(dir, 7), &bytes[..bytes.len() - 1]).expect("write");
    assert!(mismatch(check_written(dir, 7, nonce, count)).contains("footer"));
    // A trailer damaged in place, and a footer whose trailer length does not fit the file.
    let mut damaged = bytes.clone();
    damaged[bytes.len() - 12 - trailer_len + 30] ^= 0x01;
    fs::write(chunk_path(dir, 7), &damaged).expect("write");
    assert!(mismatch(check_written(dir, 7, nonce, count)).contains("trailer checksum"));
    let mut overlong = bytes.clone();
    let at = bytes.len() - 12;
    overlong[at..at + 4].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
    fs::write(chunk_path(dir, 7), &overlong).expect("write");
    assert!(mismatch(check_written(dir, 7, nonce, count)).contains("does not fit"));
    fs::write(chunk_path(dir, 7), &bytes).expect("write");
    check_written(dir, 7, nonce, count).expect("the file as written, again");
}

/// Disk merges join neighbours of about the same size, smallest first: taking the first pair that
/// fits, from the oldest, rewrote a large chunk for every small one it took in. Counted as the ids
/// merges read per id stored.
#[test]
fn disk_merges_rewrite_each_id_about_once_per_doubling() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 6);
    index.use_disk(directory.path().join("chunks"), 0).expect("use disk");
    let mut merged_ids = 0;
    for batch in 0..400u32 {
        let numbers: Vec<u32> = (batch * 100..batch * 100 + 100).collect();
        let ids: Vec<Option<Id>> = numbers.iter().map(|number| Some(id(*number))).collect();
        let reservation = index.reserve(0, &ids, None, 0).expect("reserve");
        let offsets: Vec<i64> = numbers.iter().map(|number| i64::from(*number)).collect();
        index.confirm(reservation, &offsets, 1_000);
        // Upkeep after each batch, as the broker's keeps up with a steady stream of ids.
        for _ in 0..8 {
            let Some(work) = index.next_disk_work(0) else { break };
            merged_ids += work.merge_input_ids().map_or(0, |inputs| inputs.iter().sum::<usize>());
            index.finish_disk_work(work.run()).expect("disk work");
        }
    }
    let stored = index.stored_ids();
    assert_eq!(stored, 40_000);
    let per_id = merged_ids as f64 / stored as f64;
    eprintln!(
        "merges read {merged_ids} ids for {stored} stored ({per_id:.2} per id), {} chunks",
        index.sealed_chunks()
    );
    // About once per doubling from the smallest chunk (56 ids) to the largest a merge builds (an
    // eighth of the stored ids): about 6 here; merging whatever fits read 25 per id.
    assert!(per_id <= 8.0, "merges read {per_id:.2} ids per id stored");
    assert!(index.sealed_chunks() <= 24, "{} chunks: merges must keep lookups' probes few", index.sealed_chunks());
    assert_answers(&index, 40_000);
}

/// Chunks of mixed sizes on disk: a start seals the active chunk as it is, so after many starts a
/// chunk more than twice smaller than both its neighbours is common, and merges of like sizes alone
/// never take it. Once there are more chunks than a lookup should probe, the smallest merges with
/// its smaller neighbour anyway: the chunks stay few.
#[test]
fn chunks_of_mixed_sizes_on_disk_stay_few_across_many_starts() {
    let directory = tempfile::tempdir().expect("tempdir");
    let snapshot = directory.path().join("dedup.snapshot");
    let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 6);
    index.use_disk(chunk_dir(&snapshot), 0).expect("use disk");
    let (mut next, mut state) = (0u32, 0x9e37_79b9u32);
    for _ in 0..80 {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let count = 10 + (state >> 8) % 300;
        store(&mut index, next..next + count);
        next += count;
        index.snapshot(&snapshot).expect("snapshot");
        index = DedupIndex::load(&snapshot, index.config()).expect("load");
        index.use_disk(chunk_dir(&snapshot), 0).expect("use disk");
    }
    index.disk_work_here(0, 10_000).expect("upkeep");
    let stored = index.stored_ids();
    assert_eq!(stored, next as usize);
    let calm = disk_chunks_calm(stored);
    // The bound itself, so that a looser one (which would also loosen the merges) fails here.
    assert!(calm <= 2 * 8 + 14, "calm {calm} for {stored} ids");
    eprintln!("{stored} ids in {} chunks ({} on disk), calm {calm}", index.sealed_chunks(), index.disk_chunks());
    assert!(index.sealed_chunks() <= calm + 1, "{} chunks for {stored} ids", index.sealed_chunks());
    assert_answers(&index, next);
}
