//! Memory per live id, measured two ways: the index's own account (`approx_bytes`) and the
//! growth of this process's resident set. One test per binary run at a time (the resident set is
//! per process): the 10 M test is ignored by default; run it with
//! `cargo test --release -p once-dedup --test memory -- --ignored --test-threads=1`.

use once_dedup::{DedupIndex, DedupWindow, Id, IndexConfig};

fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Stores `count` ids over 8 partitions in batches of 100, as a writer would.
fn fill(count: u64) -> DedupIndex {
    let mut index = DedupIndex::new(IndexConfig::new(DedupWindow::Retention));
    let mut next_offsets = [0i64; 8];
    let mut ids = Vec::with_capacity(100);
    let mut number = 0u64;
    while number < count {
        ids.clear();
        let batch = 100.min(count - number);
        ids.extend((number..number + batch).map(|n| Some(Id::of(&n.to_le_bytes()))));
        let partition = (number / 100 % 8) as usize;
        let reservation = index.reserve(partition as i32, &ids, None, 0).expect("reserve");
        let offsets: Vec<i64> = (0..batch as i64).map(|delta| next_offsets[partition] + delta).collect();
        next_offsets[partition] += batch as i64;
        index.confirm(reservation, &offsets, 1_700_000_000_000);
        number += batch;
    }
    // The broker's upkeep builds the topic filter (1 to 2 bytes per id): counted at its largest,
    // just built.
    let work = index.next_filter_work().expect("a filter is due over sealed chunks");
    assert!(index.finish_filter_work(work.run()).expect("rebuild"), "the filter is installed");
    index
}

fn measure(count: u64) -> (f64, f64) {
    let before = resident_bytes();
    let index = fill(count);
    let after = resident_bytes();
    assert_eq!(index.stored_ids() as u64, count);
    let by_account = index.approx_bytes() as f64 / count as f64;
    let by_resident = after.saturating_sub(before) as f64 / count as f64;
    println!(
        "{count} ids: {by_account:.1} B/id by approx_bytes, {by_resident:.1} B/id by resident set, {} chunks",
        index.sealed_chunks()
    );
    // Spot check that the index still answers.
    assert!(index.lookup(&Id::of(&(count / 2).to_le_bytes()), 0).expect("lookup").is_some());
    assert!(index.lookup(&Id::of(&count.to_le_bytes()), 0).expect("lookup").is_none());
    (by_account, by_resident)
}

/// 26 bytes of columns + about 1 of directory + 1.25 of chunk filter + at most about 4 of active
/// chunk at this size (a 2^16-bucket table of 4-byte positions and 57,344 rows of 32 bytes over 1 M
/// ids = 2.2 B/id, before it is full) + 2 of topic filter just after it was built.
#[test]
fn one_million_ids_fit_in_32_bytes_each() {
    let (by_account, by_resident) = measure(1_000_000);
    assert!(by_account <= 32.0, "{by_account:.1} bytes per id by the index's own account");
    assert!(by_account >= 26.0, "{by_account:.1} bytes per id: the columns alone take 26, the account is wrong");
    // The resident set also holds allocator slack and pages freed but not returned.
    if by_resident > 0.0 {
        assert!(by_resident <= 40.0, "{by_resident:.1} bytes per id by resident set");
    }
}

#[test]
#[ignore = "10 M ids: about 300 MB and 30 s; run with --ignored --test-threads=1"]
fn ten_million_ids_fit_in_32_bytes_each() {
    let (by_account, by_resident) = measure(10_000_000);
    assert!(by_account <= 32.0, "{by_account:.1} bytes per id by the index's own account");
    if by_resident > 0.0 {
        assert!(by_resident <= 40.0, "{by_resident:.1} bytes per id by resident set");
    }
}
