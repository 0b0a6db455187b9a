//! The raw baseline: append buffers of one batch size to a file and `fdatasync` after each write,
//! from one thread. That is the ceiling of a design that pays one fsync per batch on this disk; a
//! broker with group commit can beat it per batch, because several batches share one fsync.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one run of the raw baseline measured.
#[derive(Debug, Clone)]
pub struct RawOutcome {
    /// Size of each write, in bytes.
    pub batch_bytes: usize,
    /// Writes done, each followed by an fdatasync.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// From the first write to the end of the last fdatasync.
    pub elapsed: Duration,
    /// Latency of each fdatasync alone, in microseconds, sorted.
    pub fdatasync_latencies_us: Vec<u32>,
}

/// Appends `batch_bytes` buffers with an fdatasync after each until `total_bytes` are written or
/// `time_max` has passed, in a temporary file in `dir` that is removed afterwards.
pub fn run(dir: &Path, batch_bytes: usize, total_bytes: u64, time_max: Duration) -> anyhow::Result<RawOutcome> {
    assert!(batch_bytes > 0, "a raw write needs at least one byte");
    let file =
        tempfile::Builder::new().prefix("once-bench-raw-").tempfile_in(dir).context("creating the baseline file")?;
    let mut file: &File = file.as_file();
    // Not zeros, in case the filesystem treats those specially.
    let buffer: Vec<u8> = (0..batch_bytes).map(|index| (index % 251) as u8).collect();
    let mut outcome =
        RawOutcome { batch_bytes, writes: 0, bytes: 0, elapsed: Duration::ZERO, fdatasync_latencies_us: Vec::new() };
    let started = Instant::now();
    while outcome.bytes < total_bytes && started.elapsed() < time_max {
        file.write_all(&buffer).context("write")?;
        let before_sync = Instant::now();
        // `sync_data` is fdatasync(2) on Linux: the data and the file size, not the timestamps,
        // which is what the log's commit path calls too.
        file.sync_data().context("fdatasync")?;
        let latency_us = before_sync.elapsed().as_micros();
        outcome.fdatasync_latencies_us.push(u32::try_from(latency_us).unwrap_or(u32::MAX));
        outcome.writes += 1;
        outcome.bytes += batch_bytes as u64;
    }
    outcome.elapsed = started.elapsed();
    outcome.fdatasync_latencies_us.sort_unstable();
    Ok(outcome)
}
