//! Message-id deduplication at the partition writers: duplicates dropped across a topic's partitions
//! and answered by the offset rule, transactions holding their ids until the marker, expiry by window
//! and retention, and an index that agrees with the logs after clean and unclean restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use once_dedup::{extract_record_ids, DedupSource, DedupWindow, Id, IdScheme};
use once_log::testing::make_keyed_batch;
use once_partition::{LogConfig, OffsetAnswer, Partition, PartitionError, PartitionId, TopicDedup, TxnMarker};

const TRANSACTIONAL: i16 = 0x10;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

/// A topic of `count` partitions deduplicating by key, opened (and rebuilt) from `dir`.
struct Topic {
    dedup: Arc<TopicDedup>,
    partitions: Vec<Arc<Partition>>,
}

fn open_topic(dir: &Path, count: i32, window: DedupWindow, config: LogConfig) -> Topic {
    let dedup = Arc::new(TopicDedup::open("t", DedupSource::Key, window, dir.join("dedup.snapshot"), usize::MAX));
    let partitions: Vec<Arc<Partition>> = (0..count)
        .map(|partition| {
            let id = PartitionId { topic: "t".into(), partition };
            let opened =
                Partition::open_with_dedup(id, &dir.join(partition.to_string()), config.clone(), Some(dedup.clone()));
            Arc::new(opened.expect("open"))
        })
        .collect();
    dedup.rebuild(&partitions).expect("rebuild");
    Topic { dedup, partitions }
}

fn open(dir: &Path, count: i32) -> Topic {
    open_topic(dir, count, DedupWindow::Retention, LogConfig::default())
}

/// A plain batch (no producer id) of records keyed by `keys`, timestamped now.
fn keyed(keys: &[&str]) -> Vec<u8> {
    keyed_at(keys, now_ms())
}

fn keyed_at(keys: &[&str], timestamp_ms: i64) -> Vec<u8> {
    let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
    make_keyed_batch(-1, -1, -1, 0, &keys, timestamp_ms)
}

fn idempotent(producer_id: i64, sequence: i32, keys: &[&str]) -> Vec<u8> {
    let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
    make_keyed_batch(producer_id, 0, sequence, 0, &keys, now_ms())
}

fn transactional(producer_id: i64, sequence: i32, keys: &[&str]) -> Vec<u8> {
    let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
    make_keyed_batch(producer_id, 0, sequence, TRANSACTIONAL, &keys, now_ms())
}

fn marker(producer_id: i64, commit: bool) -> TxnMarker {
    TxnMarker { producer_id, producer_epoch: 0, coordinator_epoch: 0, commit }
}

/// Every stored record's (offset, key), in log order.
fn stored(partition: &Partition) -> Vec<(u64, Id)> {
    stored_where(partition, false)
}

/// Like `stored`, leaving out records of aborted transactions if `committed_only`.
fn stored_where(partition: &Partition, committed_only: bool) -> Vec<(u64, Id)> {
    let bytes = partition.read(partition.log_start_offset(), usize::MAX).expect("read");
    let aborted = partition.aborted_transactions(0, u64::MAX);
    let mut records = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = once_log::BatchHeader::parse(&bytes[position..]).expect("header");
        let batch = &bytes[position..position + header.total_len()];
        let offset = header.base_offset as u64;
        let in_aborted = header.is_transactional()
            && aborted.iter().any(|txn| {
                txn.producer_id == header.producer_id && txn.first_offset <= offset && offset < txn.last_offset
            });
        let skipped = committed_only && in_aborted;
        if !header.is_control() && !skipped {
            for record in extract_record_ids(batch, &DedupSource::Key, &IdScheme::Blake3).expect("records") {
                let offset = header.base_offset as u64 + record.offset_delta as u64;
                records.push((offset, record.id.expect("every test record has a key")));
            }
        }
        position += header.total_len();
    }
    records
}

fn id(key: &str) -> Id {
    Id::of(key.as_bytes())
}

/// How often each key is stored across the topic's partitions.
fn copies(topic: &Topic) -> BTreeMap<Id, usize> {
    copies_where(topic, false)
}

fn copies_where(topic: &Topic, committed_only: bool) -> BTreeMap<Id, usize> {
    let mut copies = BTreeMap::new();
    for partition in &topic.partitions {
        for (_, id) in stored_where(partition, committed_only) {
            *copies.entry(id).or_insert(0) += 1;
        }
    }
    copies
}

async fn crash(topic: Topic) {
    drop(topic);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn close(topic: Topic) {
    for partition in &topic.partitions {
        partition.close().await.expect("close");
    }
    topic.dedup.snapshot().expect("snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_dropped_and_answered_by_the_offset_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 2);
    let (p0, p1) = (&topic.partitions[0], &topic.partitions[1]);

    let first = p0.append(keyed(&["a", "b", "c"])).await.expect("new ids");
    assert_eq!((first.base_offset, first.answer_base_offset(), first.duplicates_dropped), (0, 0, 0));
    let again = p0.append(keyed(&["a", "b", "c"])).await.expect("all duplicates");
    assert_eq!(again.answer, OffsetAnswer::Originals { base_offset: 0 }, "the originals, consecutive, in order");
    assert_eq!((again.base_offset, again.answer_base_offset(), again.duplicates_dropped), (3, 0, 3));
    assert_eq!(p0.log_end_offset(), 6, "a header-only batch keeps the offsets of its dropped records");

    let reordered = p0.append(keyed(&["b", "a"])).await.expect("duplicates out of order");
    // Unknown: minus the record count, so that every offset derived from it is negative.
    assert_eq!((reordered.answer, reordered.answer_base_offset()), (OffsetAnswer::Unknown, -2));
    let elsewhere = p1.append(keyed(&["a", "b"])).await.expect("duplicates through another partition");
    assert_eq!(elsewhere.answer_base_offset(), -2, "originals in another partition are no offset here");
    let mixed = p0.append(keyed(&["d", "a", "e"])).await.expect("mixed");
    assert_eq!((mixed.answer_base_offset(), mixed.duplicates_dropped), (-3, 1), "records were dropped: unknown");
    let repeated = p1.append(keyed(&["f", "f"])).await.expect("a repeat inside the batch");
    assert_eq!((repeated.answer_base_offset(), repeated.duplicates_dropped), (-2, 1));

    assert_eq!(stored(p0), vec![(0, id("a")), (1, id("b")), (2, id("c")), (8, id("d")), (10, id("e"))]);
    assert_eq!(stored(p1), vec![(2, id("f"))], "f at its own offset; the dropped copies leave gaps");
    assert_eq!((p0.duplicates_dropped(), p1.duplicates_dropped()), (3 + 2 + 1, 2 + 1));
    assert!(copies(&topic).values().all(|count| *count == 1));
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_of_a_filtered_batch_is_answered_unknown_also_after_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 1);
    let partition = &topic.partitions[0];
    partition.append(keyed(&["x"])).await.expect("x");
    let filtered = partition.append(idempotent(7, 0, &["y", "x"])).await.expect("mixed");
    assert_eq!((filtered.base_offset, filtered.answer_base_offset()), (1, -2));
    let whole = partition.append(idempotent(7, 2, &["z"])).await.expect("new");
    assert_eq!(whole.answer_base_offset(), 3);
    let retry = partition.append(idempotent(7, 0, &["y", "x"])).await.expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.answer_base_offset(), -2, "unknown, not the filtered batch's base offset");
    assert_eq!(partition.append(idempotent(7, 2, &["z"])).await.expect("retry").answer_base_offset(), 3);
    crash(topic).await;

    let topic = open(dir.path(), 1);
    let partition = &topic.partitions[0];
    let retry = partition.append(idempotent(7, 0, &["y", "x"])).await.expect("retry after a crash");
    assert_eq!((retry.duplicate, retry.answer_base_offset()), (true, -2));
    close(topic).await;
    let topic = open(dir.path(), 1);
    let retry = topic.partitions[0].append(idempotent(7, 0, &["y", "x"])).await.expect("retry after a clean restart");
    assert_eq!((retry.duplicate, retry.answer_base_offset()), (true, -2), "the snapshot keeps the flag");
    assert_eq!(topic.partitions[0].log_end_offset(), 4);
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_holds_its_ids_until_its_marker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 2);
    let (p0, p1) = (&topic.partitions[0], &topic.partitions[1]);
    for (producer_id, commit, key) in [(100, true, "committed"), (101, false, "aborted")] {
        p0.append(transactional(producer_id, 0, &[key])).await.expect("transactional write");
        let own = p0.append(transactional(producer_id, 1, &[key])).await.expect("the same transaction again");
        assert_eq!((own.duplicates_dropped, own.answer_base_offset()), (1, own.base_offset as i64 - 1));
        for partition in [p0, p1] {
            let blocked = partition.append(keyed(&[key])).await;
            assert!(matches!(blocked, Err(PartitionError::DedupPending(_))), "held by the transaction: {blocked:?}");
        }
        assert_eq!(p1.dedup_refusals(), if commit { 1 } else { 2 });
        p0.write_marker(marker(producer_id, commit)).await.expect("marker");
        let retried = p1.append(keyed(&[key])).await.expect("after the marker");
        let expected = if commit { 1 } else { 0 };
        assert_eq!(retried.duplicates_dropped, expected, "{key}: a duplicate after a commit, stored after an abort");
    }
    let copies = copies(&topic);
    assert_eq!(copies[&id("committed")], 1);
    assert_eq!(copies[&id("aborted")], 2, "the aborted copy stays in the log, skipped by read_committed");
    crash(topic).await;

    let topic = open(dir.path(), 2);
    for key in ["committed", "aborted"] {
        let resent = topic.partitions[0].append(keyed(&[key])).await.expect("resend");
        assert_eq!(resent.duplicates_dropped, 1, "{key} is live after the restart");
    }
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_replayed_after_a_resend_elsewhere_is_right() {
    // The transaction's hold is in the snapshot's past; its abort and the resend through partition 0
    // are in the logs' tails. Whatever order the partitions are replayed in, the resend is live.
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 2);
    topic.partitions[1].append(transactional(200, 0, &["k", "j"])).await.expect("open transaction");
    topic.dedup.snapshot().expect("snapshot").expect("written");
    topic.partitions[1].write_marker(marker(200, false)).await.expect("abort");
    let resent = topic.partitions[0].append(keyed(&["k"])).await.expect("resend");
    assert_eq!(resent.duplicates_dropped, 0);
    crash(topic).await;

    let topic = open(dir.path(), 2);
    assert_eq!(topic.partitions[0].append(keyed(&["k"])).await.expect("again").duplicates_dropped, 1);
    assert_eq!(topic.partitions[1].append(keyed(&["j"])).await.expect("j").duplicates_dropped, 0, "j was aborted");
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_expire_with_the_window_and_with_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let window = DedupWindow::from_ms(5_000).expect("window");
    let topic = open_topic(dir.path(), 1, window, LogConfig::default());
    let partition = &topic.partitions[0];
    let old = now_ms() - 10_000;
    partition.append(keyed_at(&["old"], old)).await.expect("old");
    assert_eq!(partition.append(keyed_at(&["old"], old)).await.expect("again").duplicates_dropped, 0, "expired");
    partition.append(keyed(&["recent"])).await.expect("recent");
    assert_eq!(partition.append(keyed(&["recent"])).await.expect("again").duplicates_dropped, 1, "in the window");
    let freed = topic.dedup.expire(now_ms(), 1 << 20);
    assert!(freed.entries_dropped <= 2);
    close(topic).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig { segment_bytes_max: 200, ..LogConfig::default() };
    let topic = open_topic(dir.path(), 1, DedupWindow::Retention, config.clone());
    let partition = &topic.partitions[0];
    for key in ["r1", "r2", "r3", "r4"] {
        partition.append(keyed(&[key])).await.expect("append");
    }
    partition.set_config(LogConfig { retention_bytes: Some(100), ..config.clone() });
    assert!(partition.apply_retention(now_ms()).expect("retention") > 0);
    let start = partition.log_start_offset();
    assert!(start >= 1, "r1 went with its segment");
    assert_eq!(partition.append(keyed(&["r1"])).await.expect("r1").duplicates_dropped, 0, "a deleted id is free");
    assert_eq!(partition.append(keyed(&["r4"])).await.expect("r4").duplicates_dropped, 1, "a retained id is not");
    crash(topic).await;
    let topic = open_topic(dir.path(), 1, DedupWindow::Retention, config);
    assert_eq!(topic.partitions[0].append(keyed(&["r1"])).await.expect("r1").duplicates_dropped, 1);
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_use_the_snapshot_and_survive_a_corrupt_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 2);
    for batch in 0..50 {
        let keys: Vec<String> = (0..10).map(|record| format!("k{batch}-{record}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        topic.partitions[batch % 2].append(keyed(&keys)).await.expect("append");
    }
    close(topic).await;
    let topic = open(dir.path(), 2);
    assert_eq!(topic.dedup.stats().stored_ids, 500, "loaded from the snapshot");
    topic.partitions[0].append(keyed(&["tail"])).await.expect("after the snapshot");
    crash(topic).await;

    let topic = open(dir.path(), 2);
    assert_eq!(topic.dedup.stats().stored_ids, 501, "the snapshot, then the log's tail");
    crash(topic).await;
    std::fs::write(dir.path().join("dedup.snapshot"), b"garbage").expect("corrupt the snapshot");
    let topic = open(dir.path(), 2);
    assert_eq!(topic.dedup.stats().stored_ids, 501, "rebuilt from the whole logs");
    for (key, partition) in [("k7-3", 0), ("tail", 1)] {
        let resent = topic.partitions[partition].append(keyed(&[key])).await.expect("resend");
        assert_eq!(resent.duplicates_dropped, 1, "{key}");
    }
    close(topic).await;
}

/// Copies `from` into `to`, recursively (a crash image of a topic directory).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_beyond_the_recovered_logs_is_not_trusted() {
    // As if a disk had lied about an fsync: the snapshot covers records the logs no longer hold.
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 2);
    topic.partitions[0].append(keyed(&["a", "b"])).await.expect("a, b");
    close(topic).await;
    let older = tempfile::tempdir().expect("temp dir");
    copy_tree(dir.path(), older.path());
    let topic = open(dir.path(), 2);
    topic.partitions[0].append(keyed(&["c", "d"])).await.expect("c, d");
    close(topic).await;
    for partition in ["0", "1"] {
        std::fs::remove_dir_all(dir.path().join(partition)).expect("remove");
        copy_tree(&older.path().join(partition), &dir.path().join(partition));
    }

    let topic = open(dir.path(), 2);
    assert_eq!(topic.dedup.stats().stored_ids, 2, "rebuilt from the logs, which hold a and b only");
    assert_eq!(topic.partitions[1].append(keyed(&["c"])).await.expect("c").duplicates_dropped, 0);
    assert_eq!(topic.partitions[1].append(keyed(&["a"])).await.expect("a").duplicates_dropped, 1);
    close(topic).await;
}

/// xorshift64*: the random steps of the crash test, reproducible from the seed it prints.
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// Random writes over three partitions from 24 keys — plain, transactional (committed, aborted, or
/// left open across restarts and ended later), snapshots — with a crash or a clean restart between
/// rounds. After each restart the
/// logs hold each key at most once outside aborted transactions, and every key the logs hold live is
/// deduplicated while every other key is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_and_logs_agree_across_random_crashes() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut live: BTreeSet<String> = BTreeSet::new();
        let mut next_producer = 1_000i64;
        // Transactions left open, possibly across restarts: (partition, producer id, keys, commit).
        let mut open_transactions: Vec<(usize, i64, Vec<String>, bool)> = Vec::new();
        for round in 0..4 {
            let topic = open(dir.path(), 3);
            for step in 0..30 {
                let index = random.below(3) as usize;
                let partition = &topic.partitions[index];
                let keys: Vec<String> = (0..1 + random.below(4)).map(|_| format!("k{}", random.below(24))).collect();
                let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                match random.below(12) {
                    0 => {
                        topic.dedup.snapshot().expect("snapshot");
                    }
                    1 if !open_transactions.is_empty() => {
                        let (index, producer_id, keys, commit) = open_transactions.remove(0);
                        topic.partitions[index].write_marker(marker(producer_id, commit)).await.expect("marker");
                        if commit {
                            live.extend(keys);
                        }
                    }
                    1..=3 => {
                        let producer_id = next_producer;
                        next_producer += 1;
                        let commit = random.below(2) == 0;
                        match partition.append(transactional(producer_id, 0, &key_refs)).await {
                            Ok(_) if random.below(3) == 0 => open_transactions.push((index, producer_id, keys, commit)),
                            Ok(_) => {
                                partition.write_marker(marker(producer_id, commit)).await.expect("marker");
                                if commit {
                                    live.extend(keys);
                                }
                            }
                            Err(PartitionError::DedupPending(_)) => {}
                            Err(error) => panic!("seed {seed} round {round} step {step}: {error}"),
                        }
                    }
                    _ => match partition.append(keyed(&key_refs)).await {
                        Ok(_) => live.extend(keys),
                        Err(PartitionError::DedupPending(_)) => {}
                        Err(error) => panic!("seed {seed} round {round} step {step}: {error}"),
                    },
                }
            }
            match random.below(2) {
                0 => crash(topic).await,
                _ => close(topic).await,
            }
        }
        let topic = open(dir.path(), 3);
        for (index, producer_id, keys, commit) in open_transactions.drain(..) {
            topic.partitions[index].write_marker(marker(producer_id, commit)).await.expect("marker");
            if commit {
                live.extend(keys);
            }
        }
        crash(topic).await;
        let topic = open(dir.path(), 3);
        let copies = copies_where(&topic, true);
        assert!(copies.values().all(|count| *count == 1), "seed {seed}: a key stored twice outside aborts");
        assert_eq!(copies.len(), live.len(), "seed {seed}: every live key is stored");
        for key in (0..24).map(|key| format!("k{key}")) {
            let partition = &topic.partitions[random.below(3) as usize];
            let resent = partition.append(keyed(&[&key])).await.expect("resend");
            let expected = u32::from(live.contains(&key));
            assert_eq!(resent.duplicates_dropped, expected, "seed {seed}: {key} live = {}", live.contains(&key));
        }
        close(topic).await;
    }
}

/// Like `open`, with a memory budget for the index; also says whether the snapshot was used.
fn open_with_budget(dir: &Path, count: i32, memory_bytes: usize) -> (Topic, bool) {
    let dedup = Arc::new(TopicDedup::open(
        "t",
        DedupSource::Key,
        DedupWindow::Retention,
        dir.join("dedup.snapshot"),
        memory_bytes,
    ));
    let partitions: Vec<Arc<Partition>> = (0..count)
        .map(|partition| {
            let id = PartitionId { topic: "t".into(), partition };
            let opened = Partition::open_with_dedup(
                id,
                &dir.join(partition.to_string()),
                LogConfig::default(),
                Some(dedup.clone()),
            );
            Arc::new(opened.expect("open"))
        })
        .collect();
    let stats = dedup.rebuild(&partitions).expect("rebuild");
    (Topic { dedup, partitions }, stats.from_snapshot)
}

/// Sends keys `k{first}..k{last}` in batches of 1,000 over the partitions; returns records dropped.
async fn send_range(topic: &Topic, first: usize, last: usize) -> u64 {
    let mut dropped = 0;
    for (batch, start) in (first..last).step_by(1_000).enumerate() {
        let keys: Vec<String> = (start..(start + 1_000).min(last)).map(|number| format!("k{number}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let partition = &topic.partitions[batch % topic.partitions.len()];
        dropped += u64::from(partition.append(keyed(&keys)).await.expect("append").duplicates_dropped);
    }
    dropped
}

fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("dedup-chunks"))
        .map(|entries| entries.map(|entry| entry.expect("entry").path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_on_disk_survive_crashes_and_a_damaged_one_means_replaying_the_logs() {
    const IDS: usize = 200_000;
    let dir = tempfile::tempdir().expect("temp dir");
    // A budget of one byte: every sealed chunk (57,344 ids and up) goes to disk as soon as it seals.
    let (topic, _) = open_with_budget(dir.path(), 2, 1);
    assert_eq!(send_range(&topic, 0, IDS / 2).await, 0);
    topic.dedup.snapshot().expect("snapshot");
    let snapshot_bytes = std::fs::metadata(dir.path().join("dedup.snapshot")).expect("snapshot").len();
    assert_eq!(send_range(&topic, IDS / 2, IDS).await, 0, "all new");
    let stats = topic.dedup.stats();
    assert!(stats.disk_ids >= IDS as u64 / 2, "{} of {} ids on disk", stats.disk_ids, stats.stored_ids);
    assert!(snapshot_bytes < 60_000 * 33, "{snapshot_bytes} bytes: chunks on disk are referred to, not copied");
    crash(topic).await;

    // The snapshot, its chunk files and the log's tail; files written after it are orphans.
    let (topic, from_snapshot) = open_with_budget(dir.path(), 2, 1);
    assert!(from_snapshot, "the snapshot and its chunk files were loaded");
    assert_eq!(topic.dedup.stats().stored_ids, IDS as u64);
    assert_eq!(send_range(&topic, 0, IDS).await, IDS as u64, "every id again: all duplicates");
    assert!(copies(&topic).values().all(|count| *count == 1));
    topic.dedup.snapshot().expect("snapshot");
    crash(topic).await;

    // A chunk file the snapshot refers to, damaged: detected at start, the logs replayed.
    let files = chunk_files(dir.path());
    assert!(!files.is_empty(), "chunk files on disk");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(&files[0], &bytes).expect("damage a chunk file");
    let (topic, from_snapshot) = open_with_budget(dir.path(), 2, 1);
    assert!(!from_snapshot, "a damaged chunk file means the snapshot is not used");
    assert_eq!(topic.dedup.stats().stored_ids, IDS as u64, "rebuilt from the whole logs");
    assert!(topic.dedup.stats().disk_ids >= IDS as u64 / 2, "and spilled again during the replay");
    crash(topic).await;

    // A crash before any new snapshot: the untrusted snapshot must not come back with the chunk files
    // the replay wrote since (they may bear the names it referred to).
    let (topic, from_snapshot) = open_with_budget(dir.path(), 2, 1);
    assert!(!from_snapshot, "the untrusted snapshot was removed before new chunk files were written");
    assert_eq!(topic.dedup.stats().stored_ids, IDS as u64);
    assert_eq!(send_range(&topic, 0, IDS + 1_000).await, IDS as u64, "old ids dropped, the new thousand stored");
    let copies = copies(&topic);
    assert_eq!(copies.len(), IDS + 1_000);
    assert!(copies.values().all(|count| *count == 1), "each id stored once");
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_snapshot_never_comes_back_with_chunk_files_written_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 60,000 ids: one sealed chunk (57,344) on disk, the rest in the snapshot itself.
    let (topic, _) = open_with_budget(dir.path(), 2, 1);
    send_range(&topic, 0, 60_000).await;
    assert_eq!(topic.dedup.stats().disk_chunks, 1);
    close(topic).await;
    let files = chunk_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[100] ^= 0x01;
    std::fs::write(&files[0], &bytes).expect("damage the chunk file");
    // The replay writes a chunk of the same size again (in another order: partition by partition).
    let (topic, from_snapshot) = open_with_budget(dir.path(), 2, 1);
    assert!(!from_snapshot);
    assert_eq!(topic.dedup.stats().disk_chunks, 1);
    crash(topic).await;
    let (topic, from_snapshot) = open_with_budget(dir.path(), 2, 1);
    assert!(!from_snapshot, "the untrusted snapshot is gone, so it cannot refer to the new file");
    assert_eq!(send_range(&topic, 0, 60_000).await, 60_000, "every id is a duplicate");
    assert!(copies(&topic).values().all(|count| *count == 1));
    close(topic).await;
}

/// Opens the topic's index (loading its snapshot and chunk files), lets `between` act on the
/// directory, then opens the partitions and replays their logs.
fn open_with_budget_and(dir: &Path, count: i32, memory_bytes: usize, between: impl FnOnce(&Path)) -> Topic {
    let snapshot = dir.join("dedup.snapshot");
    let dedup = Arc::new(TopicDedup::open("t", DedupSource::Key, DedupWindow::Retention, snapshot, memory_bytes));
    between(dir);
    let partitions: Vec<Arc<Partition>> = (0..count)
        .map(|partition| {
            let id = PartitionId { topic: "t".into(), partition };
            let opened = Partition::open_with_dedup(
                id,
                &dir.join(partition.to_string()),
                LogConfig::default(),
                Some(dedup.clone()),
            );
            Arc::new(opened.expect("open"))
        })
        .collect();
    dedup.rebuild(&partitions).expect("rebuild");
    Topic { dedup, partitions }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_past_the_budget_indexes_every_record_when_spilling_fails() {
    const IDS: usize = 130_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let (topic, _) = open_with_budget(dir.path(), 2, usize::MAX);
    assert_eq!(send_range(&topic, 0, IDS).await, 0);
    crash(topic).await;
    // A restart on a full disk: the replay passes the budget and every spill fails.
    let chunks = dir.path().join("dedup-chunks");
    let topic = open_with_budget_and(dir.path(), 2, 1, |_| {
        std::fs::remove_dir_all(&chunks).expect("remove the chunk directory");
        std::fs::write(&chunks, b"not a directory").expect("a file in its place");
    });
    assert_eq!(topic.dedup.stats().stored_ids, IDS as u64, "every stored record is indexed, over the budget");
    // Space comes back: the spill works, and every id is a duplicate.
    std::fs::remove_file(&chunks).expect("remove");
    std::fs::create_dir(&chunks).expect("mkdir");
    topic.dedup.maintain_disk(64);
    assert!(topic.dedup.stats().disk_chunks > 0, "spilled once the disk had room");
    assert_eq!(send_range(&topic, 0, IDS).await, IDS as u64, "all duplicates");
    assert!(copies(&topic).values().all(|count| *count == 1), "each id stored once");
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_met_by_the_replay_refuses_writes_until_a_full_rebuild() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (topic, _) = open_with_budget(dir.path(), 2, 1);
    send_range(&topic, 0, 60_000).await;
    assert_eq!(topic.dedup.stats().disk_chunks, 1);
    topic.dedup.snapshot().expect("snapshot");
    send_range(&topic, 60_000, 90_000).await;
    crash(topic).await;
    // The chunk file passes its checks at load, then every page is damaged before the replay reads it.
    let topic = open_with_budget_and(dir.path(), 2, 1, |dir| {
        let file = chunk_files(dir).into_iter().find(|path| path.extension().is_some_and(|ext| ext == "dedup"));
        let file = file.expect("the snapshot's chunk file");
        let mut bytes = std::fs::read(&file).expect("read");
        for page in 0..bytes.len() / 4096 {
            bytes[page * 4096 + 5] ^= 0x20;
        }
        std::fs::write(&file, &bytes).expect("damage it in place");
    });
    let refused = topic.partitions[0].append(keyed(&["k1", "new"])).await;
    assert!(matches!(refused, Err(PartitionError::Storage(_))), "a storage error, not a wrong index: {refused:?}");
    assert_eq!(topic.dedup.snapshot().expect("snapshot"), None, "an index that missed records is never saved");
    assert!(!dir.path().join("dedup.snapshot").exists(), "the next start replays the whole logs");
    crash(topic).await;
    let (topic, from_snapshot) = open_with_budget(dir.path(), 2, 1);
    assert!(!from_snapshot);
    assert_eq!(send_range(&topic, 0, 90_000).await, 90_000, "every id is a duplicate");
    assert!(copies(&topic).values().all(|count| *count == 1));
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_cannot_use_its_chunk_directory_is_not_reported_as_loaded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (topic, _) = open_with_budget(dir.path(), 1, usize::MAX);
    send_range(&topic, 0, 1_000).await;
    close(topic).await;
    let chunks = dir.path().join("dedup-chunks");
    std::fs::remove_dir_all(&chunks).expect("remove");
    std::fs::write(&chunks, b"not a directory").expect("a file in its place");
    let (topic, from_snapshot) = open_with_budget(dir.path(), 1, usize::MAX);
    assert!(!from_snapshot, "the loaded index was replaced by an empty one, rebuilt from the log");
    assert_eq!(send_range(&topic, 0, 1_000).await, 1_000);
    crash(topic).await;
}

/// Opens `count` partitions of `dir` on `dedup` and rebuilds it: the rebuild's outcome.
fn rebuild_topic(dir: &Path, count: i32, dedup: &Arc<TopicDedup>) -> Result<(), PartitionError> {
    let partitions: Vec<Arc<Partition>> = (0..count)
        .map(|partition| {
            let id = PartitionId { topic: "t".into(), partition };
            let opened = Partition::open_with_dedup(
                id,
                &dir.join(partition.to_string()),
                LogConfig::default(),
                Some(dedup.clone()),
            );
            Arc::new(opened.expect("open"))
        })
        .collect();
    dedup.rebuild(&partitions).map(|_| ())
}

/// Puts a non-empty directory where the snapshot file is: reading and removing it then fail, for
/// root too (which no permission bit stops from unlinking a file).
fn make_snapshot_undeletable(snapshot: &Path) {
    if snapshot.exists() {
        std::fs::remove_file(snapshot).expect("remove the snapshot file");
    }
    std::fs::create_dir(snapshot).expect("a directory in its place");
    std::fs::write(snapshot.join("inside"), b"x").expect("not empty");
}

/// A snapshot found beyond the recovered logs must be deleted before the topic takes writes (kept, a
/// later start could load it once the logs grew past it again). If the deletion fails, the open
/// fails, as for the producer-state snapshot, rather than going on with the file on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_beyond_the_recovered_logs_that_cannot_be_deleted_fails_the_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 1);
    topic.partitions[0].append(keyed(&["a", "b"])).await.expect("a, b");
    close(topic).await;
    let older = tempfile::tempdir().expect("temp dir");
    copy_tree(dir.path(), older.path());
    let topic = open(dir.path(), 1);
    topic.partitions[0].append(keyed(&["c", "d"])).await.expect("c, d");
    close(topic).await;
    std::fs::remove_dir_all(dir.path().join("0")).expect("remove");
    copy_tree(&older.path().join("0"), &dir.path().join("0"));

    let snapshot = dir.path().join("dedup.snapshot");
    let dedup = Arc::new(TopicDedup::open("t", DedupSource::Key, DedupWindow::Retention, snapshot.clone(), usize::MAX));
    // Loaded; from now on it cannot be deleted.
    make_snapshot_undeletable(&snapshot);
    let rebuilt = rebuild_topic(dir.path(), 1, &dedup);
    let error = rebuilt.expect_err("the open fails");
    assert!(error.to_string().contains("dedup.snapshot"), "the error names the snapshot: {error}");
}

/// The same for a snapshot that cannot be loaded at all: it is not used, so it must go before the
/// index takes writes, and if it cannot be deleted the open fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_snapshot_that_cannot_be_deleted_fails_the_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 1);
    topic.partitions[0].append(keyed(&["a", "b"])).await.expect("a, b");
    close(topic).await;
    let snapshot = dir.path().join("dedup.snapshot");
    make_snapshot_undeletable(&snapshot);
    let dedup = Arc::new(TopicDedup::open("t", DedupSource::Key, DedupWindow::Retention, snapshot.clone(), usize::MAX));
    let error = rebuild_topic(dir.path(), 1, &dedup).expect_err("the open fails");
    assert!(error.to_string().contains("dedup.snapshot"), "the error names the snapshot: {error}");
    // Once the file can be deleted, the next open does so and rebuilds the index from the log.
    std::fs::remove_dir_all(&snapshot).expect("clear");
    let topic = open(dir.path(), 1);
    assert_eq!(topic.partitions[0].append(keyed(&["a"])).await.expect("a").duplicates_dropped, 1);
    close(topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_due_after_enough_changes_and_no_longer_once_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = open(dir.path(), 2);
    assert!(!topic.dedup.snapshot_due(), "nothing changed");
    assert_eq!(topic.dedup.snapshot_if_due().expect("check"), None, "and none is written");
    // 100,000 new ids (the least a snapshot waits for), in batches of 1,000.
    for batch in 0..100 {
        let keys: Vec<String> = (0..1_000).map(|record| format!("k{batch}-{record}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        if batch == 99 {
            assert!(!topic.dedup.snapshot_due(), "not due before 100,000 changes");
        }
        topic.partitions[batch % 2].append(keyed(&keys)).await.expect("append");
    }
    assert!(topic.dedup.snapshot_due(), "due after 100,000 changes");
    // A write that fails (the temporary file's name is taken by a directory): its chunk files are
    // removed, and the next attempt waits for the back-off instead of coming at the next check.
    let blocker = dir.path().join("dedup.snapshot.tmp");
    std::fs::create_dir(&blocker).expect("block the temporary file");
    assert!(topic.dedup.snapshot_if_due().is_err(), "the write fails");
    assert!(chunk_files(dir.path()).is_empty(), "no chunk file is left by the failed write");
    assert!(!topic.dedup.snapshot_due(), "backing off after a failure");
    std::fs::remove_dir(&blocker).expect("unblock");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert!(topic.dedup.snapshot_due(), "due again after the back-off");
    let written = topic.dedup.snapshot_if_due().expect("snapshot").expect("written");
    assert_eq!(written.entries, 100_000);
    assert_eq!(chunk_files(dir.path()).len(), written.files_written, "the chunk files of the snapshot that worked");
    assert!(written.files_written > 0);
    assert!(!topic.dedup.snapshot_due(), "no longer due once written");
    // The next snapshot refers to the chunk files the first one wrote: it writes only the active chunk.
    let again = topic.dedup.snapshot().expect("snapshot").expect("written");
    assert_eq!((again.entries, again.files_written), (100_000, 0));
    crash(topic).await;
    let topic = open(dir.path(), 2);
    assert_eq!(topic.dedup.stats().stored_ids, 100_000, "loaded from the snapshot and its chunk files");
    let resent = topic.partitions[0].append(keyed(&["k0-5", "new"])).await.expect("resend");
    assert_eq!(resent.duplicates_dropped, 1);
    close(topic).await;
}
