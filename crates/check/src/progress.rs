//! Counters the workload bumps and the one-line progress indicator on stderr that shows them.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::ProxyCounters;

/// Live counts, shared by every thread of a run.
#[derive(Debug, Default)]
pub struct Stats {
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    pub polled: AtomicU64,
    pub kills: AtomicU64,
    pub power_losses: AtomicU64,
    pub broker_pauses: AtomicU64,
    /// Consumer incarnations crashed (the `group` workload).
    pub crashes: AtomicU64,
    /// Copier processes killed and paused by client faults, and copiers that exited fenced (`txn`).
    pub copier_kills: AtomicU64,
    pub copier_pauses: AtomicU64,
    pub fenced: AtomicU64,
    /// Producer processes killed by client faults (`dedup`, and the `txn` workload's input producers).
    pub producer_kills: AtomicU64,
    /// Sink processes killed and paused by client faults (`sink`).
    pub sink_kills: AtomicU64,
    pub sink_pauses: AtomicU64,
    /// Processor processes killed and paused by client faults (`dedup-processor`).
    pub processor_kills: AtomicU64,
    pub processor_pauses: AtomicU64,
}

/// The progress line's thread; dropping it stops the line and ends it with a newline.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Shows `phase`, elapsed/total seconds and the counters: rewritten in place twice a second on a
/// terminal, one line every 10 s otherwise (CI logs).
pub fn start(stats: Arc<Stats>, proxy: Option<Arc<ProxyCounters>>, duration: Duration) -> Progress {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_for_thread = stop.clone();
    let terminal = std::io::stderr().is_terminal();
    let thread = std::thread::spawn(move || {
        let start = Instant::now();
        let every = if terminal { Duration::from_millis(500) } else { Duration::from_secs(10) };
        let mut last = Instant::now();
        while !stop_for_thread.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() < every {
                continue;
            }
            last = Instant::now();
            let line = line(&stats, proxy.as_deref(), start.elapsed(), duration);
            let mut stderr = std::io::stderr().lock();
            let _ = if terminal { write!(stderr, "\r{line}\x1b[K") } else { writeln!(stderr, "{line}") };
            let _ = stderr.flush();
        }
        if terminal {
            let _ = writeln!(std::io::stderr());
        }
    });
    Progress { stop, thread: Some(thread) }
}

fn line(stats: &Stats, proxy: Option<&ProxyCounters>, elapsed: Duration, duration: Duration) -> String {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let phase = if elapsed < duration { "faults" } else { "healing, final read" };
    let mut line = format!(
        "once check {:>4}/{}s [{phase}] acked {} failed {} polled {} kills {}",
        elapsed.as_secs(),
        duration.as_secs(),
        load(&stats.acked),
        load(&stats.failed),
        load(&stats.polled),
        load(&stats.kills),
    );
    if load(&stats.power_losses) + load(&stats.broker_pauses) > 0 {
        line.push_str(&format!(" power-losses {} pauses {}", load(&stats.power_losses), load(&stats.broker_pauses)));
    }
    if load(&stats.crashes) > 0 {
        line.push_str(&format!(" crashes {}", load(&stats.crashes)));
    }
    if load(&stats.copier_kills) + load(&stats.copier_pauses) > 0 {
        line.push_str(&format!(
            " copier-kills {} copier-pauses {} fenced {}",
            load(&stats.copier_kills),
            load(&stats.copier_pauses),
            load(&stats.fenced)
        ));
    }
    if load(&stats.sink_kills) + load(&stats.sink_pauses) > 0 {
        line.push_str(&format!(" sink-kills {} sink-pauses {}", load(&stats.sink_kills), load(&stats.sink_pauses)));
    }
    if load(&stats.processor_kills) + load(&stats.processor_pauses) > 0 {
        line.push_str(&format!(
            " processor-kills {} processor-pauses {}",
            load(&stats.processor_kills),
            load(&stats.processor_pauses)
        ));
    }
    if load(&stats.producer_kills) > 0 {
        line.push_str(&format!(" producer-kills {}", load(&stats.producer_kills)));
    }
    if let Some(proxy) = proxy {
        line.push_str(&format!(
            " resets {} delays {} lost-responses {} dup-produces {}",
            load(&proxy.resets),
            load(&proxy.delays),
            load(&proxy.dropped_responses),
            load(&proxy.duplicated_produces)
        ));
    }
    line
}
