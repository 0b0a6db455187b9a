//! How long fdatasync takes: a process-wide latency histogram of every data sync the logs do (a
//! sync plan's files, a roll's sealed segment), read by the metrics edge (`once_fsync_seconds`);
//! and how much each sync plan made durable (`once_fsync_bytes`), with [`CountHistogram`], which
//! the partition writer also uses for its group-commit sizes. Plain atomics, fixed buckets:
//! recording costs a few nanoseconds beside a sync's tens of microseconds, and this crate stays
//! free of any metrics library.

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

/// Buckets of a [`CountHistogram`]: upper bounds `first · factorⁱ` for i in 0..BUCKETS, and one
/// above them all.
const COUNT_BUCKETS: usize = 12;

/// A histogram of counts (bytes, batches) in exponential buckets.
pub struct CountHistogram {
    first: u64,
    factor: u64,
    buckets: [AtomicU64; COUNT_BUCKETS + 1],
    sum: AtomicU64,
}

impl CountHistogram {
    /// Buckets ≤ first, ≤ first·factor, … (12 of them), and above.
    pub const fn new(first: u64, factor: u64) -> CountHistogram {
        assert!(first > 0 && factor > 1, "exponential buckets need a positive start and a factor above one");
        CountHistogram {
            first,
            factor,
            buckets: [const { AtomicU64::new(0) }; COUNT_BUCKETS + 1],
            sum: AtomicU64::new(0),
        }
    }

    fn bounds(&self) -> impl Iterator<Item = u64> + '_ {
        (0..COUNT_BUCKETS as u32).map(|i| self.first.saturating_mul(self.factor.saturating_pow(i)))
    }

    pub fn record(&self, value: u64) {
        let index = self.bounds().position(|bound| value <= bound).unwrap_or(COUNT_BUCKETS);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// As a [`HistogramSnapshot`] (bounds as f64, the last infinite; `sum_seconds` holds the sum of
    /// the values).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = self.bounds().map(|bound| bound as f64).chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> =
            bounds.zip(&self.buckets).map(|(bound, count)| (bound, count.load(Ordering::Relaxed))).collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        HistogramSnapshot { buckets, sum_seconds: self.sum.load(Ordering::Relaxed) as f64, count }
    }
}

/// Batch bytes each sync plan of any log made durable (appended since the plan before): 512 B to
/// 2 GiB in powers of four.
pub static SYNC_BYTES: CountHistogram = CountHistogram::new(512, 4);

/// Runs `sync` (one fdatasync) and records how long it took, failed or not.
pub(crate) fn timed<T>(sync: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = crate::give_way::syncing(sync);
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

    #[test]
    fn counts_land_in_exponential_buckets() {
        let histogram = CountHistogram::new(1, 2);
        for value in [0, 1, 2, 3, 1024, 2048, 5000] {
            histogram.record(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 7);
        assert_eq!(snapshot.buckets.len(), COUNT_BUCKETS + 1);
        assert_eq!(snapshot.buckets[0], (1.0, 2), "0 and 1: a bound is inclusive");
        assert_eq!(snapshot.buckets[1], (2.0, 1));
        assert_eq!(snapshot.buckets[2], (4.0, 1));
        assert_eq!(snapshot.buckets[10], (1024.0, 1));
        assert_eq!(snapshot.buckets[11], (2048.0, 1), "the largest bound is 2^11");
        assert_eq!(snapshot.buckets[COUNT_BUCKETS], (f64::INFINITY, 1), "5000 is above every bound");
        assert_eq!(snapshot.sum_seconds, 8078.0, "the sum of the values");
    }
}
