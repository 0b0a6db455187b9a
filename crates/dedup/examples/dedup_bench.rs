//! Figures for the dedup index: bytes per live id, insert and lookup throughput, snapshot write
//! and load (rebuild) time, and record parsing speed.
//!
//! `cargo run --release -p once-dedup --example dedup_bench -- [ids, default 10000000] [broker]`
//!
//! With `broker`, only the broker's write path is measured instead ([`broker_path`]): the steps the
//! partition writer and the node's upkeep run, on one thread, so each id's whole cost is the time it
//! took. With `in-flight`, the same path in the shape of `dedup_broker_bench`'s producers: batches of
//! 7,500 ids (about librdkafka's 1 MB batches of 100-byte records) and up to three writes reserved
//! and not yet confirmed at a time (a topic's partitions writing at once), so the ids held in flight
//! number in the tens of thousands instead of one batch's.

use std::time::Instant;

use once_dedup::{extract_ids, filter_batch, DedupIndex, DedupSource, DedupWindow, Id, IdScheme, IndexConfig};

const PARTITIONS: usize = 8;
const BATCH: u64 = 100;

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A fixed key: these ids are hashed as a broker's index hashes them (a new index takes a random one).
const IDS: IdScheme = IdScheme::SipHash24 { key: [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210] };

fn id(number: u64) -> Id {
    IDS.id_of(format!("order-{number:012}").as_bytes())
}

fn rate(count: u64, seconds: f64) -> String {
    format!("{:.0} k/s", count as f64 / seconds / 1_000.0)
}

/// Nanoseconds per id of each [`IdScheme`], the id bytes formatted beforehand, at a few lengths.
fn hash_costs() {
    for length in [15, 36, 100, 1024] {
        let inputs: Vec<Vec<u8>> = (0..200_000u64)
            .map(|number| {
                let mut bytes = format!("order-{number:09}").into_bytes();
                bytes.resize(length, b'x');
                bytes
            })
            .collect();
        let mut line = format!("hash {length}-byte ids:");
        for (name, scheme) in [("SipHash-2-4", IDS), ("BLAKE3", IdScheme::Blake3)] {
            let started = Instant::now();
            let mut fold = 0u8;
            for input in &inputs {
                fold ^= scheme.id_of(std::hint::black_box(input)).0[0];
            }
            let nanos = started.elapsed().as_nanos() as f64 / inputs.len() as f64;
            line.push_str(&format!(" {name} {nanos:.1} ns"));
            std::hint::black_box(fold);
        }
        println!("{line}");
    }
}

/// What a writer does: a batch's new ids (hashed first) looked up in a sealed view.
fn lookup_misses(index: &DedupIndex, count: u64) -> String {
    let probes = count.min(2_000_000);
    let new_ids: Vec<Option<Id>> = (0..probes).map(|number| Some(id(count + number))).collect();
    let started = Instant::now();
    for batch in new_ids.chunks(BATCH as usize) {
        let looked_up = index.sealed_view().lookup_many(batch, 0).expect("lookup_many");
        drop(looked_up);
    }
    rate(probes, started.elapsed().as_secs_f64())
}

/// Ids changed between the partition writer's merges (`MERGE_EVERY_IDS` in crates/partition), and
/// the merge budget per id changed (`MERGE_WORK_PER_ID`).
const MERGE_EVERY_IDS: u64 = 1 << 16;
const MERGE_WORK_PER_ID: usize = 8;
/// Ids changed between snapshots under steady writes (`SNAPSHOT_CHANGES_MAX` in crates/partition; the
/// broker's are due after 100,000 to 250,000 changes, as many as half the chunk-file bytes written
/// since the last one: 250,000 here, once the index is large, so early snapshots are fewer here).
const SNAPSHOT_EVERY_IDS: u64 = 250_000;
/// How often the node's upkeep runs (about once a second), here once per this many ids (about a
/// second of the broker's dedup-on writes): the writers' seal, a rewrite pass with the upkeep's
/// budget (`DEDUP_EXPIRE_BUDGET` in crates/node), and the topic filter rebuilt when due.
const UPKEEP_EVERY_IDS: u64 = 500_000;
const UPKEEP_REWRITE_BUDGET: usize = 1 << 18;

/// Nanoseconds per id of each step of the broker's path.
#[derive(Default)]
struct Steps {
    view: f64,
    reserve: f64,
    confirm: f64,
    seal: f64,
    merge: f64,
    filter: f64,
    snapshot: f64,
}

/// A pass of rewrites (merges, compactions) of at most `budget` ids, as the partition writer's and
/// the upkeep's: returns the ids copied.
fn rewrite(index: &mut DedupIndex, budget: usize) -> u64 {
    let (mut stats, mut from) = (index.drop_dead_chunks(0), 0);
    while let Some(work) = index.next_rewrite_work(from, 0, budget, &mut stats) {
        let rewritten = index.finish_rewrite_work(work.run());
        from = rewritten.next_from;
        let installed = rewritten.installed;
        rewritten.free();
        if !installed {
            break;
        }
    }
    stats.entries_rewritten as u64
}

fn elapsed_into(slot: &mut f64, started: Instant) -> Instant {
    let now = Instant::now();
    *slot += (now - started).as_secs_f64();
    now
}

/// The broker's write path for new ids, on one thread: a sealed view looked up without the lock,
/// `reserve_looked_up` and `confirm` under it (seals deferred), the frozen chunk sealed after the
/// round, merges every `MERGE_EVERY_IDS` ids, the upkeep's rewrites and topic filter rebuild every
/// `UPKEEP_EVERY_IDS`, snapshots with a chunk directory every `SNAPSHOT_EVERY_IDS` ids (the broker's
/// 1 GiB memory budget is not set: it changes nothing below about 30 M ids). Prints nanoseconds per
/// id, step by step.
fn broker_path(ids: &[Id], batch: usize, open_max: usize) {
    assert!(batch > 0 && open_max > 0, "a batch holds ids and a write can be open");
    let directory = std::env::temp_dir().join(format!("dedup-bench-broker-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("dedup.snapshot");
    let mut index = DedupIndex::new(IndexConfig::new(DedupWindow::Retention));
    index.defer_seals();
    index.use_disk(once_dedup::chunk_dir(&path), usize::MAX).expect("use disk");
    let mut steps = Steps::default();
    let mut next_offsets = [0i64; PARTITIONS];
    // Writes reserved and not yet confirmed, oldest first: (reservation, its offsets).
    let mut open = std::collections::VecDeque::new();
    let (mut since_merge, mut since_snapshot, mut since_upkeep) = (0u64, 0u64, 0u64);
    // Ids copied by merges and compactions.
    let mut merged = 0u64;
    let started = Instant::now();
    let batches = ids.len().div_ceil(batch);
    for (batch_number, chunk) in ids.chunks(batch).map(Some).chain(std::iter::repeat_n(None, open_max - 1)).enumerate()
    {
        let mut at = Instant::now();
        if let Some(chunk) = chunk {
            let batch_ids: Vec<Option<Id>> = chunk.iter().map(|id| Some(*id)).collect();
            let partition = batch_number % PARTITIONS;
            let looked_up = index.sealed_view().lookup_many(&batch_ids, 0).expect("lookup_many");
            at = elapsed_into(&mut steps.view, at);
            let reservation =
                index.reserve_looked_up(partition as i32, &batch_ids, None, 0, looked_up).expect("reserve");
            assert!(!reservation.is_blocked(), "new ids are not held");
            at = elapsed_into(&mut steps.reserve, at);
            let offsets: Vec<i64> = (0..chunk.len() as i64).map(|delta| next_offsets[partition] + delta).collect();
            next_offsets[partition] += chunk.len() as i64;
            open.push_back((reservation, offsets));
        }
        // The oldest write confirmed once `open_max` are open (and every one left after the last batch).
        if open.len() == open_max || (batch_number >= batches && !open.is_empty()) {
            let (reservation, offsets) = open.pop_front().expect("a write is open");
            index.confirm(reservation, &offsets, 1_700_000_000_000);
            at = elapsed_into(&mut steps.confirm, at);
        }
        let Some(chunk) = chunk else { continue };
        if let Some(work) = index.next_seal_work() {
            drop(index.finish_seal_work(work.run()));
            at = elapsed_into(&mut steps.seal, at);
        }
        let new = chunk.len() as u64;
        (since_merge, since_snapshot, since_upkeep) = (since_merge + new, since_snapshot + new, since_upkeep + new);
        if since_merge >= MERGE_EVERY_IDS {
            merged += rewrite(&mut index, since_merge as usize * MERGE_WORK_PER_ID);
            since_merge = 0;
            at = elapsed_into(&mut steps.merge, at);
        }
        if since_upkeep >= UPKEEP_EVERY_IDS {
            since_upkeep = 0;
            merged += rewrite(&mut index, UPKEEP_REWRITE_BUDGET);
            at = elapsed_into(&mut steps.merge, at);
            if let Some(work) = index.next_filter_work() {
                index.finish_filter_work(work.run()).expect("filter rebuild");
            }
            at = elapsed_into(&mut steps.filter, at);
        }
        if since_snapshot >= SNAPSHOT_EVERY_IDS {
            since_snapshot = 0;
            index.snapshot(&path).expect("snapshot");
            elapsed_into(&mut steps.snapshot, at);
        }
    }
    assert!(open.is_empty(), "every write was confirmed");
    let seconds = started.elapsed().as_secs_f64();
    let per_id = |seconds: f64| seconds * 1e9 / ids.len() as f64;
    println!(
        "broker path (all new, batches of {batch}, up to {open_max} open): {seconds:.2} s, {}, {:.0} ns per id: view {:.0}, reserve {:.0}, confirm {:.0}, \
         seal {:.0}, merge {:.0}, filter {:.0}, snapshot {:.0}; {} sealed chunks; {:.2} merge copies per id",
        rate(ids.len() as u64, seconds),
        per_id(seconds),
        per_id(steps.view),
        per_id(steps.reserve),
        per_id(steps.confirm),
        per_id(steps.seal),
        per_id(steps.merge),
        per_id(steps.filter),
        per_id(steps.snapshot),
        index.sealed_chunks(),
        merged as f64 / ids.len() as f64
    );
    drop(index);
    std::fs::remove_dir_all(&directory).expect("clean up");
}

fn main() {
    let count: u64 = std::env::args().nth(1).and_then(|arg| arg.parse().ok()).unwrap_or(10_000_000);
    let mode = std::env::args().nth(2);
    let broker_only = mode.as_deref() == Some("broker");
    if mode.as_deref() == Some("in-flight") {
        println!("dedup_bench: {count} ids, {PARTITIONS} partitions, batches of 7500, three writes open");
        let ids: Vec<Id> = (0..count).map(id).collect();
        broker_path(&ids, 7_500, 3);
        return;
    }
    println!("dedup_bench: {count} ids, {PARTITIONS} partitions, batches of {BATCH}");

    let started = Instant::now();
    let ids: Vec<Id> = (0..count).map(id).collect();
    let seconds = started.elapsed().as_secs_f64();
    println!("hash ids (keyed SipHash-2-4-128 of 18-byte ids): {:.2} s, {}", seconds, rate(count, seconds));
    hash_costs();
    // Alone: an index built and freed before the figures below would change their resident set.
    if broker_only {
        broker_path(&ids, BATCH as usize, 1);
        return;
    }

    let before = resident_bytes();
    let mut index = DedupIndex::new(IndexConfig::new(DedupWindow::Retention));
    let mut next_offsets = [0i64; PARTITIONS];
    let mut batch_ids = Vec::with_capacity(BATCH as usize);
    let mut offsets = Vec::with_capacity(BATCH as usize);
    let mut expire_seconds = 0.0;
    // The slowest confirm is one that seals the active chunk (sorts it into columns).
    let mut slowest_confirm = std::time::Duration::ZERO;
    let started = Instant::now();
    for (batch_number, chunk) in ids.chunks(BATCH as usize).enumerate() {
        batch_ids.clear();
        batch_ids.extend(chunk.iter().map(|id| Some(*id)));
        let partition = batch_number % PARTITIONS;
        let reservation = index.reserve(partition as i32, &batch_ids, None, 0).expect("reserve");
        offsets.clear();
        offsets.extend((0..chunk.len() as i64).map(|delta| next_offsets[partition] + delta));
        next_offsets[partition] += chunk.len() as i64;
        let confirm_started = Instant::now();
        index.confirm(reservation, &offsets, 1_700_000_000_000);
        slowest_confirm = slowest_confirm.max(confirm_started.elapsed());
        if batch_number % 1_000 == 999 {
            // The broker's housekeeping: bounded merging and compaction.
            let expire_started = Instant::now();
            index.expire(0, 1 << 20);
            expire_seconds += expire_started.elapsed().as_secs_f64();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "reserve+confirm (all new, lookups included): {seconds:.2} s, {} (of which expire {expire_seconds:.2} s)",
        rate(count, seconds)
    );
    println!("slowest confirm (sealing a chunk): {:.1} ms", slowest_confirm.as_secs_f64() * 1e3);
    while index.expire(0, 1 << 20).more_work {}
    let after = resident_bytes();
    println!(
        "memory: {:.1} B/id by approx_bytes, {:.1} B/id by resident set growth; {} sealed chunks",
        index.approx_bytes() as f64 / count as f64,
        after.saturating_sub(before) as f64 / count as f64,
        index.sealed_chunks()
    );

    // What the broker's upkeep does about once a second: rebuild the topic filter when it is due.
    let lookups_without_filter = lookup_misses(&index, count);
    let started = Instant::now();
    let work = index.next_filter_work().expect("a filter is due");
    let built = work.run();
    let rebuild_seconds = started.elapsed().as_secs_f64();
    assert!(index.finish_filter_work(built).expect("rebuild"), "the filter is installed");
    println!(
        "topic filter rebuild: {rebuild_seconds:.2} s; memory with it: {:.1} B/id by approx_bytes",
        index.approx_bytes() as f64 / count as f64
    );
    println!(
        "sealed view lookup_many, misses in batches of {BATCH}, without the topic filter: {lookups_without_filter}"
    );

    let probes = count.min(2_000_000);
    let started = Instant::now();
    let mut found = 0u64;
    for number in 0..probes {
        let probe = ids[(number.wrapping_mul(2_654_435_761) % count) as usize];
        found += u64::from(index.lookup(&probe, 0).expect("lookup").is_some());
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(found, probes);
    println!("lookup, hits: {}", rate(probes, seconds));
    let started = Instant::now();
    for number in 0..probes {
        assert!(index.lookup(&id(count + number), 0).expect("lookup").is_none());
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("lookup, misses (hashing included): {}", rate(probes, seconds));
    println!(
        "sealed view lookup_many, misses in batches of {BATCH}, with the topic filter: {}",
        lookup_misses(&index, count)
    );

    let directory = std::env::temp_dir().join(format!("dedup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let path = directory.join("dedup.snapshot");
    let started = Instant::now();
    let stats = index.snapshot(&path).expect("snapshot");
    let seconds = started.elapsed().as_secs_f64();
    println!("snapshot write+fsync: {seconds:.2} s, {:.0} MB", stats.bytes as f64 / 1e6);
    drop(index);
    let started = Instant::now();
    let loaded = DedupIndex::load(&path, IndexConfig::new(DedupWindow::Retention)).expect("load");
    let seconds = started.elapsed().as_secs_f64();
    println!("snapshot load (rebuild from snapshot): {seconds:.2} s, {}", rate(count, seconds));
    assert_eq!(loaded.stored_ids() as u64, count);
    // With a chunk directory, resident chunks get files of their own: the first snapshot writes
    // them, the next refers to them, and a load reads them back.
    let mut loaded = loaded;
    loaded.use_disk(once_dedup::chunk_dir(&path), usize::MAX).expect("use disk");
    for which in ["first, writing chunk files", "second, referring to them"] {
        let started = Instant::now();
        let stats = loaded.snapshot(&path).expect("snapshot");
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "snapshot with a chunk directory ({which}): {seconds:.2} s, {:.1} MB snapshot + {} chunk files of {} ids",
            stats.bytes as f64 / 1e6,
            stats.files_written,
            stats.file_entries
        );
    }
    drop(loaded);
    let started = Instant::now();
    let loaded = DedupIndex::load(&path, IndexConfig::new(DedupWindow::Retention)).expect("load");
    let seconds = started.elapsed().as_secs_f64();
    println!("snapshot load from resident chunk files: {seconds:.2} s, {}", rate(count, seconds));
    assert_eq!((loaded.stored_ids() as u64, loaded.disk_ids()), (count, 0));
    std::fs::remove_dir_all(&directory).expect("clean up");

    let batch = once_log::testing::make_batch(100, 64, 1_000);
    let rounds = 20_000u64;
    for (name, ids) in [("SipHash-2-4", IDS), ("BLAKE3", IdScheme::Blake3)] {
        let started = Instant::now();
        for _ in 0..rounds {
            extract_ids(&batch, &DedupSource::Content, &ids).expect("extract");
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "extract_ids (content, 64-byte values, uncompressed, {name}): {} records",
            rate(rounds * 100, seconds)
        );
    }
    let keep: Vec<bool> = (0..100).map(|index| index % 2 == 0).collect();
    let started = Instant::now();
    for _ in 0..rounds {
        filter_batch(&batch, &keep).expect("filter");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("filter_batch (keep half, uncompressed): {} batches of 100", rate(rounds, seconds));
}
