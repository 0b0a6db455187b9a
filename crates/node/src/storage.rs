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
//! **Open files.** Each partition keeps its active segment open (one descriptor; a roll or a
//! directory sync briefly needs another). [`raise_open_file_limit`] lifts the soft limit to the hard
//! one at start, and [`partitions_allowed`] is what topic creation may not exceed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
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
    /// Refusals are logged every few seconds at most.
    logged: EveryFewSeconds,
}

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
            logged: EveryFewSeconds::new(),
        })
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more of produced data may be written: free space, less them, stays at or
    /// above the floor. Read fresh on every call (one `statvfs`, about a microsecond), so space
    /// freed by retention or an operator is seen by the next request.
    pub fn admit(&self, bytes: u64) -> Result<(), BelowFloor> {
        if self.floor == 0 {
            return Ok(());
        }
        // A filesystem that cannot be asked is not refused for: the write itself will tell.
        let Ok(space) = space(&self.dir) else { return Ok(()) };
        if space.free.saturating_sub(bytes) >= self.floor {
            self.refused_bytes.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let refusal = BelowFloor { free: space.free, floor: self.floor };
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_bytes.store(bytes.max(1), Ordering::Relaxed);
        self.log(&refusal);
        Err(refusal)
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

/// The open-file limit: (soft, hard); unlimited as `u64::MAX`.
pub fn open_file_limit() -> std::io::Result<(u64, u64)> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    Ok((limit.current.unwrap_or(u64::MAX), limit.maximum.unwrap_or(u64::MAX)))
}

/// Raises the soft open-file limit to the hard one, as servers do; returns (before, after, hard).
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64, u64)> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, raised)?;
    }
    let (after, hard) = open_file_limit()?;
    Ok((before, after, hard))
}

/// Partitions the open-file limit allows in all: one descriptor each, [`FILE_RESERVE`] kept.
pub fn partitions_allowed() -> u64 {
    match open_file_limit() {
        Ok((soft, _)) => soft.saturating_sub(FILE_RESERVE),
        Err(_) => u64::MAX,
    }
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
        let refusing = FreeSpaceFloor::new(dir.path(), Some(free.saturating_add(1 << 40))).expect("floor");
        let refusal = refusing.admit(1).expect_err("below the floor");
        assert!(refusal.free <= free.saturating_add(1 << 30) && refusal.floor > refusal.free, "{refusal:?}");
        assert_eq!(refusing.refused(), 1);
        assert!(refusing.refusing(), "refusing until a request is admitted");
        let none = FreeSpaceFloor::new(dir.path(), Some(0)).expect("floor");
        assert_eq!(none.admit(u64::MAX), Ok(()), "a zero floor admits everything");
        let low = FreeSpaceFloor::new(dir.path(), Some(1)).expect("floor");
        assert_eq!(low.admit(0), Ok(()));
        assert!(!low.refusing());
        assert!(low.admit(u64::MAX).is_err(), "the bytes to be written count against the free space");
        assert!(low.refusing());
        assert_eq!(low.admit(0), Ok(()));
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
        assert_eq!(partitions_allowed(), hard.saturating_sub(FILE_RESERVE));
    }
}
