//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::path::{Path, PathBuf};

use once_log::testing::make_batch;
use once_log::{BatchHeader, Log, LogConfig};

/// Small segments and a dense index so a few batches exercise rolls and index lookups; zeros written
/// ahead a few batches at a time, so that appends both overwrite them and grow the file, on whatever
/// file system the test's directory is.
pub fn small_config(segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        segment_bytes_max,
        segment_ms_max: None,
        retention_bytes: None,
        retention_ms: None,
        index_interval_bytes: 100,
        unsafe_skip_fsync: false,
        zero_ahead_bytes: 256,
        zero_ahead_any_file_system: true,
    }
}

/// One batch as stored: its offsets and bytes (with the assigned base offset).
#[derive(Clone, Debug)]
pub struct Stored {
    pub base_offset: u64,
    pub last_offset: u64,
    pub bytes: Vec<u8>,
}

/// Appends a `make_batch` and returns it as stored.
pub fn append(log: &mut Log, records: u32, payload_len: usize, timestamp_ms: i64) -> Stored {
    let mut bytes = make_batch(records, payload_len, timestamp_ms);
    let info = log.append(&mut bytes, timestamp_ms).expect("append");
    assert_eq!(info.records, records);
    Stored { base_offset: info.base_offset, last_offset: info.last_offset, bytes }
}

/// What `read(offset, max_bytes, upper_bound)` must return given the stored batches.
pub fn expected_read(stored: &[Stored], offset: u64, max_bytes: usize, upper_bound: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(first) = stored.iter().position(|batch| batch.last_offset >= offset) else {
        return out;
    };
    for batch in &stored[first..] {
        if batch.base_offset >= upper_bound {
            break;
        }
        if !out.is_empty() && out.len() + batch.bytes.len() > max_bytes {
            break;
        }
        out.extend_from_slice(&batch.bytes);
    }
    out
}

/// Splits concatenated batches into their headers.
pub fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    let mut out = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).expect("header");
        position += header.total_len();
        out.push(header);
    }
    out
}

/// Segment `.log` files in the directory, sorted.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    files.sort();
    files
}

/// The length of each segment file in `dir`, by base offset (zeros written ahead included).
pub fn file_lengths(dir: &Path) -> Vec<u64> {
    segment_files(dir).iter().map(|path| fs::metadata(path).expect("stat").len()).collect()
}
/// The base offset a segment file is named for.
pub fn base_of(segment: &Path) -> u64 {
    segment.file_stem().and_then(|stem| stem.to_str()).and_then(|stem| stem.parse().ok()).expect("base")
}

/// Copies every regular file of `from` into `to` (a "crash image" of the directory).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create");
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}
