//! What an fdatasync after a small write costs when the write grows the file (an append), when it
//! overwrites zeros the file already has (`LogConfig::zero_ahead_bytes`), and when it writes into
//! blocks `fallocate` gave the file (unwritten until written), measured on the disk of a directory, the
//! three alternated round by round. The figures behind the zeros ahead (docs/benchmarks.md, session 30).
//!
//! `cargo run --release -p once-log --example fdatasync_cost -- [DIR] [WRITE_BYTES] [WRITES] [ROUNDS]`
//! (defaults: the system's temp dir, 1024, 2000, 3).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;

#[derive(Clone, Copy)]
enum Mode {
    /// Each write grows the file.
    Append,
    /// Over zeros written and synced first.
    Zeroed,
    /// Over blocks allocated (`fallocate`, unwritten extents) and synced first.
    Allocated,
}

/// Writes `writes` buffers of `bytes` one after the other, an fdatasync after each, into a new file
/// in `dir`, as `mode` says.
/// Returns each fdatasync's time in microseconds, sorted.
fn run(dir: &std::path::Path, bytes: usize, writes: usize, mode: Mode) -> std::io::Result<Vec<f64>> {
    let file: File = tempfile::tempfile_in(dir)?;
    match mode {
        Mode::Append => {}
        Mode::Zeroed => file.write_all_at(&vec![0u8; bytes * writes], 0)?,
        Mode::Allocated => {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, (bytes * writes) as u64)?
        }
    }
    file.sync_all()?;
    let buffer: Vec<u8> = (0..bytes).map(|at| (at % 251) as u8).collect();
    let mut times = Vec::with_capacity(writes);
    for write in 0..writes {
        file.write_all_at(&buffer, (write * bytes) as u64)?;
        let started = Instant::now();
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let number = |at: usize, default: usize| args.get(at).map_or(default, |value| value.parse().expect("a number"));
    let (bytes, writes, rounds) = (number(1, 1024), number(2, 2000), number(3, 3));
    assert!(bytes > 0 && writes > 0, "at least one write of at least one byte");
    println!("fdatasync after a {bytes}-byte write, {writes} writes per cell, in {}", dir.display());
    println!("| round | append: p50 / p99 µs | over zeros: p50 / p99 µs | over fallocated blocks: p50 / p99 µs | over zeros ÷ append, p50 |");
    println!("|---:|---:|---:|---:|---:|");
    for round in 1..=rounds {
        let append = run(&dir, bytes, writes, Mode::Append)?;
        let zeroed = run(&dir, bytes, writes, Mode::Zeroed)?;
        let allocated = run(&dir, bytes, writes, Mode::Allocated)?;
        let at = |times: &[f64], quantile: f64| times[((times.len() - 1) as f64 * quantile) as usize];
        println!(
            "| {round} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} |",
            at(&append, 0.5),
            at(&append, 0.99),
            at(&zeroed, 0.5),
            at(&zeroed, 0.99),
            at(&allocated, 0.5),
            at(&allocated, 0.99),
            at(&zeroed, 0.5) / at(&append, 0.5)
        );
    }
    Ok(())
}
