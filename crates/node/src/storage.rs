//! What the machine allows the node: free space on the data directory's filesystem, and open files.
//!
//! **The free-space floor.** Below `--min-free-bytes` of free space, produce requests are refused
//! with a retriable error before anything is appended, so clients retry and the broker never reaches
//! ENOSPC through them. Everything else keeps writing into the space below the floor — consumer
//! offsets, transaction state and markers (so an open transaction can still commit or abort), dedup
//! index chunks — and retention keeps deleting. Nothing latches: the next produce after space returns
//! (retention, an operator) is accepted. A real ENOSPC despite the floor still latches the log that
//! met it, as every failed write does (docs/design/storage.md).
//!
//! **Open files.** Each segment of a partition keeps its file open, and each dedup chunk on disk
//! too. [`raise_open_file_limit`] lifts the soft limit to the hard one at start; topic creation
//! counts the descriptors open now ([`open_files_now`]) and refuses partitions that would leave
//! fewer than [`file_reserve`] free.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default floor's cap: 1 GiB, or 5 % of the filesystem when that is smaller.
pub const MIN_FREE_BYTES_CAP: u64 = 1 << 30;
/// Descriptors kept for everything but partitions: connections, directory syncs, segment rolls,
/// dedup chunk files, the HTTP server, the process's own.
pub const FILE_RESERVE: u64 = 512;
/// How often a refusal is logged at most (with the count of refusals since the last line).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Space on a filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Free to an unprivileged writer (`f_bavail`).
    pub free: u64,
    pub total: u64,
}

/// `statvfs` of `path`'s filesystem.
pub fn space(path: &Path) -> std::io::Result<Space> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(Space { free: stat.f_bavail.saturating_mul(stat.f_frsize), total: stat.f_blocks.saturating_mul(stat.f_frsize) })
}

/// The floor when none is configured: 1 GiB or 5 % of the filesystem, whichever is smaller.
pub fn default_min_free_bytes(total: u64) -> u64 {
    (total / 20).min(MIN_FREE_BYTES_CAP)
}

/// A produce refused for want of space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("free space on the data directory's filesystem is {free} bytes, below the floor of {floor} bytes (--min-free-bytes): writes are refused until space is freed (retention, or an operator); retry")]
pub struct BelowFloor {
    pub free: u64,
    pub floor: u64,
}

/// The floor and what it has refused.
pub struct FreeSpaceFloor {
    dir: PathBuf,
    floor: u64,
    /// Produce requests refused since start.
    refused: AtomicU64,
    /// Bytes of the last request refused; 0 once one is admitted.
    refused_bytes: AtomicU64,
    /// Bytes admitted and not yet written (each [`Admitted`] until it is dropped): they count
    /// against the free space, so requests admitted together cannot overshoot the floor.
    in_flight: AtomicU64,
    /// Refusals are logged every few seconds at most.
    logged: EveryFewSeconds,
    /// The last `statvfs`, reused by [`FreeSpaceFloor::admit`] while it is recent and far from the
    /// floor.
    reading: Mutex<Reading>,
}

/// A `statvfs` and what was admitted since it.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// Free bytes then; `None` before the first reading.
    free: Option<u64>,
    at: Instant,
    /// Bytes admitted since (written or not: those not yet written also count in `in_flight`, so
    /// they are counted twice, which only errs toward asking the filesystem again).
    admitted_since: u64,
}

/// A reading this old is not reused: what others write (dedup chunk files, offsets, other
/// processes) is not counted in it.
const READING_REUSE_MAX: Duration = Duration::from_millis(50);
/// A reading is reused only while the free space it leaves, less everything admitted since and in
/// flight, is at least this far above the floor; nearer, every request asks the filesystem.
const READING_REUSE_HEADROOM_MIN: u64 = 256 << 20;

impl FreeSpaceFloor {
    /// `floor`: `None` for the default (from the filesystem's size now), `Some(0)` for none.
    pub fn new(dir: &Path, floor: Option<u64>) -> std::io::Result<FreeSpaceFloor> {
        let floor = match floor {
            Some(floor) => floor,
            None => default_min_free_bytes(space(dir)?.total),
        };
        Ok(FreeSpaceFloor {
            dir: dir.to_path_buf(),
            floor,
            refused: AtomicU64::new(0),
            refused_bytes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            logged: EveryFewSeconds::new(),
            reading: Mutex::new(Reading { free: None, at: Instant::now(), admitted_since: 0 }),
        })
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more of produced data may be written: free space, less them and the bytes
    /// admitted before but not yet written, stays at or above the floor. The free space is read
    /// (one `statvfs`) for a request that comes near the floor, and otherwise at least every
    /// [`READING_REUSE_MAX`]; in between, the last reading less what was admitted since serves (a
    /// `statvfs` per produce request was one of the broker's syscalls per request). A request is
    /// never refused on a reused reading, so space freed by retention or an operator is seen by the
    /// next request. Hold the [`Admitted`] until the bytes are written.
    pub fn admit(self: &Arc<Self>, bytes: u64) -> Result<Admitted, BelowFloor> {
        let uncounted = || Admitted { floor: Arc::clone(self), bytes: 0 };
        if self.floor == 0 {
            return Ok(uncounted());
        }
        if self.admit_on_last_reading(bytes) {
            self.refused_bytes.store(0, Ordering::Relaxed);
            return Ok(Admitted { floor: Arc::clone(self), bytes });
        }
        // A filesystem that cannot be asked is not refused for: the write itself will tell.
        let read_at = Instant::now();
        let Ok(space) = space(&self.dir) else { return Ok(uncounted()) };
        let in_flight = self.in_flight.fetch_add(bytes, Ordering::SeqCst);
        let admitted = Admitted { floor: Arc::clone(self), bytes };
        let fits = space.free.saturating_sub(in_flight).saturating_sub(bytes) >= self.floor;
        self.keep_reading(space.free, read_at, if fits { bytes } else { 0 });
        if fits {
            self.refused_bytes.store(0, Ordering::Relaxed);
            return Ok(admitted);
        }
        drop(admitted);
        let refusal = BelowFloor { free: space.free, floor: self.floor };
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_bytes.store(bytes.max(1), Ordering::Relaxed);
        self.log(&refusal);
        Err(refusal)
    }

    /// Admits `bytes` (counting them in flight) if the last reading is recent and leaves at least
    /// [`READING_REUSE_HEADROOM_MIN`] above the floor after them, everything admitted since it and
    /// everything in flight; `false` (nothing counted) when the filesystem must be asked.
    fn admit_on_last_reading(&self, bytes: u64) -> bool {
        let mut reading = self.lock_reading();
        let Some(free) = reading.free else { return false };
        if reading.at.elapsed() > READING_REUSE_MAX {
            return false;
        }
        let admitted_since = reading.admitted_since.saturating_add(bytes);
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        let left = free.saturating_sub(admitted_since).saturating_sub(in_flight).saturating_sub(bytes);
        if left < self.floor.saturating_add(READING_REUSE_HEADROOM_MIN) {
            return false;
        }
        // Under the reading's lock, so two requests cannot both take the same headroom.
        self.in_flight.fetch_add(bytes, Ordering::SeqCst);
        reading.admitted_since = admitted_since;
        true
    }

    /// Keeps a reading taken at `read_at` unless a newer one is kept already (a thread descheduled
    /// between its `statvfs` and here must not bring back an older free space, with a new age).
    fn keep_reading(&self, free: u64, read_at: Instant, admitted_since: u64) {
        let mut reading = self.lock_reading();
        if reading.free.is_none() || read_at >= reading.at {
            *reading = Reading { free: Some(free), at: read_at, admitted_since };
        }
    }

    fn lock_reading(&self) -> std::sync::MutexGuard<'_, Reading> {
        self.reading.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// At most one line per [`LOG_EVERY`], with the refusals since the last.
    fn log(&self, refusal: &BelowFloor) {
        let Some(suppressed) = self.logged.due() else { return };
        tracing::warn!(
            dir = %self.dir.display(),
            free_bytes = refusal.free,
            min_free_bytes = refusal.floor,
            refused_since_last_line = suppressed + 1,
            "refusing produce: free space below the floor (KAFKA_STORAGE_ERROR, retriable); resumes by itself when space is freed"
        );
    }

    /// Whether produce is being refused now: the last request was, and it would still be (the
    /// free space has not grown by its size since). A request just above the floor counts too.
    pub fn refusing(&self) -> bool {
        let pending = self.refused_bytes.load(Ordering::Relaxed);
        pending > 0 && self.space().is_some_and(|space| space.free.saturating_sub(pending) < self.floor)
    }

    /// Free and total bytes now, for metrics; `None` when the filesystem cannot be asked.
    pub fn space(&self) -> Option<Space> {
        space(&self.dir).ok()
    }
}

/// A log line's rate limit: [`EveryFewSeconds::due`] says when the next may be written.
pub struct EveryFewSeconds {
    /// (when last due, events since).
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for EveryFewSeconds {
    fn default() -> Self {
        Self::new()
    }
}

impl EveryFewSeconds {
    pub const fn new() -> EveryFewSeconds {
        EveryFewSeconds { state: Mutex::new((None, 0)) }
    }

    /// Counts an event; `Some(events not logged since the last line)` when one may be logged now.
    pub fn due(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.0.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            state.1 += 1;
            return None;
        }
        let suppressed = state.1;
        *state = (Some(Instant::now()), 0);
        Some(suppressed)
    }
}

/// Bytes admitted by [`FreeSpaceFloor::admit`]; they stop counting when this is dropped.
#[must_use = "the admitted bytes count against the free space until dropped"]
pub struct Admitted {
    floor: Arc<FreeSpaceFloor>,
    bytes: u64,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("bytes", &self.bytes).finish()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let before = self.floor.in_flight.fetch_sub(self.bytes, Ordering::SeqCst);
        assert!(before >= self.bytes, "admitted bytes are released once");
    }
}

/// The open-file limit: (soft, hard); unlimited as `u64::MAX`.
pub fn open_file_limit() -> std::io::Result<(u64, u64)> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Ok((limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX)))
}

/// Raises the soft open-file limit to the hard one, as servers do; returns (before, after, hard).
/// Where the hard limit is unlimited and the system refuses that for open files (macOS), the soft
/// limit is raised to [`OPEN_MAX_FALLBACK`] instead.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64, u64)> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_err() {
            let cap = limit.maximum.unwrap_or(u64::MAX).min(OPEN_MAX_FALLBACK);
            if cap > before {
                setrlimit(Resource::Nofile, Rlimit { current: Some(cap), maximum: limit.maximum })?;
            }
        }
    }
    let (after, hard) = open_file_limit()?;
    Ok((before, after, hard))
}

/// The soft limit tried when the hard one cannot be had (macOS's OPEN_MAX).
pub const OPEN_MAX_FALLBACK: u64 = 10_240;

/// Descriptors open in this process now (`/proc/self/fd`, or `/dev/fd`); `None` if neither lists.
pub fn open_files_now() -> Option<u64> {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|dir| std::fs::read_dir(dir).ok().map(|entries| entries.count() as u64))
}

/// Descriptors kept free for everything that is not a new partition: `connections_max` Kafka
/// connections, and [`FILE_RESERVE`] for HTTP connections, segment rolls, directory syncs, dedup
/// chunk files and the process's own.
pub fn file_reserve(connections_max: usize) -> u64 {
    connections_max as u64 + FILE_RESERVE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_floor_is_the_smaller_of_a_gib_and_five_percent() {
        assert_eq!(default_min_free_bytes(30 << 20), (30 << 20) / 20);
        assert_eq!(default_min_free_bytes(1 << 40), 1 << 30);
        assert_eq!(default_min_free_bytes(0), 0);
    }

    #[test]
    fn a_floor_above_the_free_space_refuses_and_none_admits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = space(dir.path()).expect("statvfs").free;
        let refusing = Arc::new(FreeSpaceFloor::new(dir.path(), Some(free.saturating_add(1 << 40))).expect("floor"));
        let refusal = refusing.admit(1).expect_err("below the floor");
        assert!(refusal.free <= free.saturating_add(1 << 30) && refusal.floor > refusal.free, "{refusal:?}");
        assert_eq!(refusing.refused(), 1);
        assert!(refusing.refusing(), "refusing until a request is admitted");
        let none = Arc::new(FreeSpaceFloor::new(dir.path(), Some(0)).expect("floor"));
        assert!(none.admit(u64::MAX).is_ok(), "a zero floor admits everything");
        let low = Arc::new(FreeSpaceFloor::new(dir.path(), Some(1)).expect("floor"));
        assert!(low.admit(0).is_ok());
        assert!(!low.refusing());
        assert!(low.admit(u64::MAX).is_err(), "the bytes to be written count against the free space");
        assert!(low.refusing());
        assert!(low.admit(0).is_ok());
        assert!(!low.refusing(), "an admitted request ends the refusal");
    }

    #[test]
    fn a_rate_limited_line_counts_what_it_did_not_log() {
        let limit = EveryFewSeconds::new();
        assert_eq!(limit.due(), Some(0), "the first event is logged");
        assert_eq!(limit.due(), None);
        assert_eq!(limit.due(), None);
        *limit.state.lock().unwrap() = (Some(Instant::now() - LOG_EVERY), 2);
        assert_eq!(limit.due(), Some(2), "the next line counts the two not logged");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (before, after, hard) = raise_open_file_limit().expect("rlimit");
        assert!(before <= after && after == hard, "{before} {after} {hard}");
        let open = open_files_now().expect("this process's descriptors are listed");
        let files: Vec<std::fs::File> = (0..50).map(|_| std::fs::File::open("/dev/null").expect("open")).collect();
        // Other tests of this process may open or close a few meanwhile.
        let counted = open_files_now().expect("listed") as i64 - open as i64;
        assert!((40..=60).contains(&counted), "50 more descriptors counted as {counted}");
        drop(files);
        assert_eq!(file_reserve(1024), 1024 + FILE_RESERVE);
    }

    #[test]
    fn a_recent_reading_far_from_the_floor_is_reused_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = space(dir.path()).expect("statvfs").free;
        // A floor above the free space: every request the filesystem is asked about is refused.
        let floor = Arc::new(FreeSpaceFloor::new(dir.path(), Some(free.saturating_add(1 << 40))).expect("floor"));
        let plenty = floor.floor() + READING_REUSE_HEADROOM_MIN + (1 << 30);
        let set = |free: u64, age: Duration| {
            *floor.lock_reading() = Reading { free: Some(free), at: Instant::now() - age, admitted_since: 0 };
        };
        set(plenty, Duration::ZERO);
        let first = floor.admit(1 << 29).expect("a recent reading far above the floor is reused");
        assert_eq!(floor.in_flight.load(Ordering::SeqCst), 1 << 29, "admitted on a reading, the bytes count in flight");
        assert_eq!(floor.lock_reading().admitted_since, 1 << 29);
        // Half a GiB admitted since and in flight (counted twice) leaves less than the headroom.
        assert!(floor.admit(1).is_err(), "near the floor the filesystem is asked");
        drop(first);
        set(plenty, Duration::ZERO);
        assert!(floor.admit(1).is_ok());
        set(plenty, READING_REUSE_MAX + Duration::from_millis(1));
        assert!(floor.admit(1).is_err(), "an old reading is not reused");
        set(floor.floor() + READING_REUSE_HEADROOM_MIN - 1, Duration::ZERO);
        assert!(floor.admit(0).is_err(), "a reading within the headroom of the floor is not reused");
        assert_eq!(floor.in_flight.load(Ordering::SeqCst), 0, "refused and dropped requests count nothing");
        assert_eq!(floor.refused(), 3);
        // A refusal keeps its fresh reading: the next request is not admitted on an older one.
        let refused_on = *floor.lock_reading();
        assert!(refused_on.free.is_some_and(|kept| kept < floor.floor()), "{refused_on:?}");
        assert!(floor.admit(0).is_err(), "refused again, not admitted on the reading before the refusal");
        // An older reading never replaces a newer one.
        let newest = *floor.lock_reading();
        floor.keep_reading(u64::MAX, newest.at - Duration::from_millis(1), 0);
        assert_eq!(floor.lock_reading().free, newest.free, "a reading taken before the kept one is dropped");
        // A fresh reading that admits is kept for the next requests.
        let low = Arc::new(FreeSpaceFloor::new(dir.path(), Some(1)).expect("floor"));
        assert!(low.lock_reading().free.is_none());
        assert!(low.admit(7).is_ok());
        let kept = *low.lock_reading();
        assert!(kept.free.is_some_and(|kept| kept <= free.saturating_add(1 << 30)), "{kept:?}");
        assert_eq!(kept.admitted_since, 7);
    }

    #[test]
    fn admitted_bytes_count_until_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = space(dir.path()).expect("statvfs").free;
        // Room for one request of half the headroom: a second, admitted meanwhile, would overshoot.
        let floor = Arc::new(FreeSpaceFloor::new(dir.path(), Some(free / 2)).expect("floor"));
        let half = free / 4 + (free / 16);
        let first = floor.admit(half).expect("the first fits");
        assert!(floor.admit(half).is_err(), "the first's bytes, not yet written, count");
        drop(first);
        assert!(floor.admit(half).is_ok(), "written (or dropped), they no longer count");
    }
}
