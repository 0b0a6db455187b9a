//! The server's own cost, read from `/proc`: CPU seconds and peak resident memory of a process and
//! its children (`--broker-pid`). A server that forks a process per connection (PostgreSQL) is
//! counted whole: the root, every live descendant, and the children it has already reaped. Several
//! roots (a broker and the database it stores into) are added up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::Context;

/// `/proc/<pid>/stat` counts CPU time in clock ticks of `USER_HZ`, which Linux fixes at 100 in its
/// user-space ABI whatever the kernel's own tick rate (`sysconf(_SC_CLK_TCK)` returns it).
const TICKS_PER_SECOND: f64 = 100.0;

/// How often the resident memory of a process tree is sampled.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// One process as `/proc/<pid>/stat` reports it.
#[derive(Debug, Clone, Copy)]
struct Stat {
    parent: u32,
    /// utime + stime of the process itself.
    own_ticks: u64,
    /// cutime + cstime: children that have exited and been waited for.
    reaped_children_ticks: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after_name = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields from 3 (state) on, so field n of proc(5) is fields[n - 3].
    let field = |number: usize| fields.get(number - 3).and_then(|value| value.parse::<u64>().ok());
    Some(Stat {
        parent: u32::try_from(field(4)?).ok()?,
        own_ticks: field(14)? + field(15)?,
        reaped_children_ticks: field(16)? + field(17)?,
    })
}

/// `pid` and every live descendant of it.
fn process_tree(pid: u32) -> Vec<(u32, Stat)> {
    let mut parents: HashMap<u32, Vec<(u32, Stat)>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        if let Some(stat) = read_stat(child) {
            parents.entry(stat.parent).or_default().push((child, stat));
        }
    }
    let mut tree = match read_stat(pid) {
        Some(stat) => vec![(pid, stat)],
        None => return Vec::new(),
    };
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next].0;
        if let Some(children) = parents.get(&parent) {
            tree.extend(children.iter().copied());
        }
        next += 1;
    }
    tree
}

/// CPU seconds used so far by `pid`, its live descendants and its reaped children.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let tree = process_tree(pid);
    anyhow::ensure!(!tree.is_empty(), "process {pid} is not running (--broker-pid)");
    // A reaped child's time is in its parent's cutime/cstime and nowhere else while the parent
    // lives, so adding both for every live process counts each tick once.
    let ticks: u64 = tree.iter().map(|(_, stat)| stat.own_ticks + stat.reaped_children_ticks).sum();
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// Resident bytes of a process tree: private and file-backed pages of each process, shared memory
/// once (the largest any one process maps), so PostgreSQL's shared buffers are not counted per
/// backend.
fn tree_resident_bytes(pid: u32) -> u64 {
    let mut private = 0u64;
    let mut shared_max = 0u64;
    for (process, _) in process_tree(pid) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{process}/status")) else { continue };
        private += status_kilobytes(&status, "RssAnon:") + status_kilobytes(&status, "RssFile:");
        shared_max = shared_max.max(status_kilobytes(&status, "RssShmem:"));
    }
    (private + shared_max) * 1024
}

fn status_kilobytes(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kilobytes| kilobytes.parse().ok())
        .unwrap_or(0)
}

/// The root process's own high-water mark (VmHWM), which the kernel keeps between samples.
fn high_water_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|status| status_kilobytes(&status, "VmHWM:") * 1024)
        .unwrap_or(0)
}

/// Resets the root's VmHWM to its current RSS so that the peak is this workload's; needs to own the
/// process or be root, and is skipped (the peak then counts from the process's start) otherwise.
fn reset_high_water(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// What a server spent during one measured interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessCost {
    /// CPU seconds (user + system) of the server's process tree.
    pub cpu_seconds: f64,
    /// The largest resident memory seen, in bytes.
    pub peak_resident_bytes: u64,
    /// CPU seconds of this benchmark process (the clients), which shares the machine's cores.
    pub client_cpu_seconds: f64,
}

/// Measures server process trees from [`ProcessProbe::start`] to [`ProcessProbe::finish`].
pub struct ProcessProbe {
    pids: Vec<u32>,
    cpu_before: f64,
    client_cpu_before: f64,
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<u64>>,
    sampler: Option<JoinHandle<()>>,
}

impl ProcessProbe {
    /// Starts measuring `pids`: reads their CPU time and samples their memory until finished.
    pub fn start(pids: &[u32]) -> anyhow::Result<ProcessProbe> {
        anyhow::ensure!(!pids.is_empty(), "no process to measure");
        let pids = pids.to_vec();
        let cpu_before = total_cpu_seconds(&pids)?;
        let client_cpu_before = cpu_seconds(std::process::id())?;
        for &pid in &pids {
            reset_high_water(pid);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(total_resident_bytes(&pids)));
        let sampler = {
            let (stop, peak, pids) = (Arc::clone(&stop), Arc::clone(&peak), pids.clone());
            thread::Builder::new()
                .name("bench-rss-sampler".to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let resident = total_resident_bytes(&pids);
                        let mut peak = peak.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                        *peak = (*peak).max(resident);
                        drop(peak);
                        thread::sleep(RSS_SAMPLE_INTERVAL);
                    }
                })
                .context("starting the memory sampler")?
        };
        Ok(ProcessProbe { pids, cpu_before, client_cpu_before, stop, peak, sampler: Some(sampler) })
    }

    /// Stops measuring and returns the CPU seconds spent and the peak memory since the start.
    pub fn finish(mut self) -> anyhow::Result<ProcessCost> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        let client_cpu_seconds = cpu_seconds(std::process::id())? - self.client_cpu_before;
        let cpu_seconds = total_cpu_seconds(&self.pids)? - self.cpu_before;
        let sampled = *self.peak.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A lone process's own high-water mark catches peaks between samples.
        let peak_resident_bytes = match self.pids[..] {
            [pid] if process_tree(pid).len() == 1 => sampled.max(high_water_bytes(pid)),
            _ => sampled,
        };
        Ok(ProcessCost { cpu_seconds, peak_resident_bytes, client_cpu_seconds })
    }
}

impl Drop for ProcessProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn total_cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

fn total_resident_bytes(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| tree_resident_bytes(pid)).sum()
}

/// Measures `pids` around `work` when any are given.
pub fn measure<T>(pids: &[u32], work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, Option<ProcessCost>)> {
    let probe = if pids.is_empty() { None } else { Some(ProcessProbe::start(pids)?) };
    let value = work()?;
    let cost = probe.map(ProcessProbe::finish).transpose()?;
    Ok((value, cost))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let probe = ProcessProbe::start(&[pid]).expect("this process is running");
        // Burn a little CPU so that at least one tick is counted.
        let started = std::time::Instant::now();
        let mut sum = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            sum = sum.wrapping_add(std::hint::black_box(sum) ^ 0x9e37);
        }
        let cost = probe.finish().expect("still running");
        assert!(cost.cpu_seconds >= 0.0, "CPU time does not go backwards");
        assert!(cost.peak_resident_bytes > 0, "a running process has resident memory");
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(cpu_seconds(u32::MAX).is_err());
    }

    #[test]
    fn status_lines_are_parsed_in_kilobytes() {
        let status = "Name:\tx\nVmHWM:\t    2192 kB\nRssAnon:\t     160 kB\n";
        assert_eq!(status_kilobytes(status, "VmHWM:"), 2192);
        assert_eq!(status_kilobytes(status, "RssAnon:"), 160);
        assert_eq!(status_kilobytes(status, "RssShmem:"), 0);
    }
}
