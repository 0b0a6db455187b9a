//! How long fdatasync takes: a process-wide latency histogram of every data sync the logs do (a
//! sync plan's files, a roll's sealed segment), read by the metrics edge (`once_fsync_seconds`).
//! Plain atomics, fixed buckets: recording costs a few nanoseconds beside a sync's tens of
//! microseconds, and this crate stays free of any metrics library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 50 µs to 2.5 s (fdatasync on NVMe is ~50 µs–1 ms, on
/// cloud disks 1–10 ms, on a struggling disk far more).
pub const FSYNC_BUCKETS: [f64; 15] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Counts per bucket (the last for anything above the largest bound), the sum and the count.
pub struct LatencyHistogram {
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, observations in that bucket — not cumulative); the last bound is
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub const fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: [const { AtomicU64::new(0) }; FSYNC_BUCKETS.len() + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = FSYNC_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(FSYNC_BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = FSYNC_BUCKETS.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> =
            bounds.zip(&self.buckets).map(|(bound, count)| (bound, count.load(Ordering::Relaxed))).collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        HistogramSnapshot { buckets, sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9, count }
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Every fdatasync of segment data in this process.
pub static FSYNC: LatencyHistogram = LatencyHistogram::new();

/// Runs `sync` (one fdatasync) and records how long it took, failed or not.
pub(crate) fn timed<T>(sync: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = sync();
    FSYNC.record(started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let histogram = LatencyHistogram::new();
        histogram.record(Duration::from_micros(30));
        histogram.record(Duration::from_micros(50));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(10));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets.len(), FSYNC_BUCKETS.len() + 1);
        assert_eq!(snapshot.buckets[0], (0.00005, 2), "a bound is inclusive");
        assert_eq!(snapshot.buckets[6], (0.005, 1));
        assert_eq!(snapshot.buckets[FSYNC_BUCKETS.len()], (f64::INFINITY, 1), "above the largest bound");
        assert!((snapshot.sum_seconds - 10.00308).abs() < 1e-9, "{}", snapshot.sum_seconds);
    }
}
