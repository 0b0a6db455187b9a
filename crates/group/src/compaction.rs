//! Compaction of the offsets log by rewrite at open, and the repair of an interrupted one.
//!
//! The live records are written to a sibling directory `0.compacting`, closed durably, and swapped
//! in with two renames (`0` → `0.old`, `0.compacting` → `0`), each followed by an fsync of the parent
//! directory. [`repair`] runs before the log is opened and turns any state a crash can leave into
//! exactly one complete log at `0`. The protocol and the crash argument: `docs/design/offsets-log.md`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use once_log::{Log, LogConfig};

use crate::error::GroupError;
use crate::records::{encode_batch, encode_group_batch, GroupRecord, OffsetRecord};

/// Compact only a log larger than this. Replaying 64 MiB takes well under a second; below that a
/// rewrite (and its fsyncs) costs about what it saves, and a small log cannot hurt memory because
/// replay is streaming.
pub const COMPACT_LOG_BYTES_MIN: u64 = 64 * 1024 * 1024;

/// Compact only when the log holds more than this many records per live one. A rewrite then shrinks
/// the log to at most a quarter, and since the next compaction waits for the same ratio, the bytes
/// rewritten stay below a third of the bytes committed: compaction cost is amortised over commits.
pub const COMPACT_RECORDS_PER_LIVE_MIN: u64 = 4;

/// Records per batch of the compacted log: small enough that one batch stays a few MiB even with
/// metadata strings at their limit, large enough that batch headers are a small share of the bytes.
const COMPACTED_BATCH_RECORDS: usize = 1000;

/// What [`decide`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionDecision {
    /// The log is small, or mostly live: keep it.
    Keep,
    /// The log is large and mostly dead: rewrite it.
    Compact,
    /// The configuration asks for a rewrite at every open (tests).
    Forced,
    /// Transactions are open: keep the log as it is, whatever the size or the configuration, until an
    /// open finds none. Their records must stay transactional batches in log order (what a commit
    /// applies over depends on it) and the partition must keep their producers' state, which a
    /// rewrite of only the live offsets would lose. The transaction coordinator completes them soon
    /// after a start, so the next open compacts.
    Postponed,
}

/// Whether a log of `log_bytes` holding `records` records, of which `live_records` are live, is
/// worth rewriting; never while `pending_transactions`.
pub fn decide(
    log_bytes: u64,
    records: u64,
    live_records: u64,
    forced: bool,
    pending_transactions: bool,
) -> CompactionDecision {
    if pending_transactions {
        return CompactionDecision::Postponed;
    }
    if forced {
        return CompactionDecision::Forced;
    }
    let mostly_dead = live_records.saturating_mul(COMPACT_RECORDS_PER_LIVE_MIN) < records;
    if log_bytes > COMPACT_LOG_BYTES_MIN && mostly_dead {
        CompactionDecision::Compact
    } else {
        CompactionDecision::Keep
    }
}

/// The offsets log directory and its two siblings used while compacting.
#[derive(Debug, Clone)]
pub struct LogPaths {
    /// `<groups>/__consumer_offsets/0`: the log.
    pub live: PathBuf,
    /// `0.compacting`: the compacted log being written.
    pub compacting: PathBuf,
    /// `0.old`: the previous log, between the two renames of a swap.
    pub old: PathBuf,
    /// `<groups>/__consumer_offsets`: the directory whose entries the swap changes.
    pub parent: PathBuf,
}

impl LogPaths {
    pub fn new(dir: &Path) -> Result<LogPaths, GroupError> {
        let invalid = || GroupError::Storage(format!("offsets log directory {} has no parent", dir.display()));
        let name = dir.file_name().ok_or_else(invalid)?.to_string_lossy().into_owned();
        let parent = dir.parent().ok_or_else(invalid)?.to_path_buf();
        Ok(LogPaths {
            live: dir.to_path_buf(),
            compacting: parent.join(format!("{name}.compacting")),
            old: parent.join(format!("{name}.old")),
            parent,
        })
    }
}

/// What [`repair`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Only the log (or nothing: a new broker).
    Clean,
    /// The log was there; leftovers of a compaction (`0.compacting`, `0.old`) were deleted.
    RemovedLeftovers,
    /// The log was missing and `0.old` was renamed back: a swap was interrupted between its renames.
    RolledBack,
}

fn storage(what: &str, path: &Path, error: impl std::fmt::Display) -> GroupError {
    GroupError::Storage(format!("{what} {}: {error}", path.display()))
}

fn exists(path: &Path) -> Result<bool, GroupError> {
    path.try_exists().map_err(|error| storage("checking", path, error))
}

pub(crate) fn fsync_dir(dir: &Path, skip_fsync: bool) -> Result<(), GroupError> {
    if skip_fsync {
        return Ok(());
    }
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(|error| storage("fsync directory", dir, error))
}

fn rename(from: &Path, to: &Path) -> Result<(), GroupError> {
    fs::rename(from, to).map_err(|error| storage("renaming", from, format!("to {}: {error}", to.display())))
}

fn remove_dir(path: &Path) -> Result<(), GroupError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(storage("removing", path, error)),
    }
}

/// Leaves exactly one complete log at `paths.live` (or none, for a new broker). Rules, each argued in
/// the design doc: the log present → it is complete and every sibling is a leftover; the log missing
/// and `0.old` present → a swap stopped between its renames, and `0.old` (never written by
/// compaction) is renamed back; only `0.compacting` → not a state the protocol leaves: refuse.
pub fn repair(paths: &LogPaths, skip_fsync: bool) -> Result<Repair, GroupError> {
    fs::create_dir_all(&paths.parent).map_err(|error| storage("creating", &paths.parent, error))?;
    let mut live = exists(&paths.live)?;
    let old = exists(&paths.old)?;
    let compacting = exists(&paths.compacting)?;
    if !live && !old && compacting {
        return Err(GroupError::Storage(format!(
            "{} exists without {} or {}: compaction never leaves this state; refusing to guess which offsets are current",
            paths.compacting.display(),
            paths.live.display(),
            paths.old.display()
        )));
    }
    let mut outcome = Repair::Clean;
    let mut leftovers = Vec::new();
    if compacting {
        leftovers.push(&paths.compacting);
    }
    if !live && old {
        tracing::warn!(dir = %paths.live.display(), "offsets log compaction was interrupted mid-swap; restoring the previous log");
        rename(&paths.old, &paths.live)?;
        live = true;
        outcome = Repair::RolledBack;
    } else if old {
        leftovers.push(&paths.old);
    }
    assert!(live || leftovers.is_empty(), "repair deletes siblings only next to a log");
    if outcome == Repair::Clean && leftovers.is_empty() {
        return Ok(outcome);
    }
    // Make the state that justifies the deletions durable before deleting anything: the rename that
    // made this `0` (the swap's, or the one just above) may not have been fsynced yet.
    fsync_dir(&paths.parent, skip_fsync)?;
    if leftovers.is_empty() {
        return Ok(outcome);
    }
    for leftover in leftovers {
        tracing::info!(dir = %leftover.display(), "removing leftover of an offsets log compaction");
        remove_dir(leftover)?;
    }
    fsync_dir(&paths.parent, skip_fsync)?;
    Ok(if outcome == Repair::Clean { Repair::RemovedLeftovers } else { outcome })
}

/// Writes `live` offsets and the metadata of `groups` into a new log at `paths.compacting` and closes
/// it cleanly: segments fdatasynced, index files written, directory fsynced, clean-shutdown marker.
/// Returns the new log's size. Step 1 of the swap; the parent directory is fsynced by [`swap`].
pub fn write_compacted(
    paths: &LogPaths,
    config: &LogConfig,
    live: &[OffsetRecord],
    groups: &[GroupRecord],
    now_ms: i64,
) -> Result<u64, GroupError> {
    assert!(!paths.compacting.exists(), "repair removed any earlier 0.compacting before the log was opened");
    let mut log = Log::open(&paths.compacting, config.clone())?;
    for chunk in live.chunks(COMPACTED_BATCH_RECORDS) {
        let mut batch = encode_batch(chunk, now_ms)?;
        log.append(&mut batch, now_ms)?;
    }
    for chunk in groups.chunks(COMPACTED_BATCH_RECORDS) {
        let mut batch = encode_group_batch(chunk, now_ms)?;
        log.append(&mut batch, now_ms)?;
    }
    let expected = (live.len() + groups.len()) as u64;
    assert_eq!(log.log_end_offset(), expected, "the compacted log holds exactly the live records");
    let bytes = log.size_bytes();
    log.close()?;
    Ok(bytes)
}

/// Steps 2 to 5 of the protocol, after [`write_compacted`] and after the old log was closed: fsync the
/// parent (the new directory's entry), rename `0` → `0.old`, fsync, rename `0.compacting` → `0`, fsync,
/// delete `0.old`. Returns once the new log is durably in place; a failed deletion of `0.old` is only
/// logged, since the next [`repair`] finishes it.
pub fn swap(paths: &LogPaths, skip_fsync: bool) -> Result<(), GroupError> {
    fsync_dir(&paths.parent, skip_fsync)?;
    rename(&paths.live, &paths.old)?;
    fsync_dir(&paths.parent, skip_fsync)?;
    rename(&paths.compacting, &paths.live)?;
    fsync_dir(&paths.parent, skip_fsync)?;
    let removed = remove_dir(&paths.old).and_then(|()| fsync_dir(&paths.parent, skip_fsync));
    if let Err(error) = removed {
        tracing::warn!(%error, "removing the old offsets log after compaction failed; the next start removes it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide() {
        let big = COMPACT_LOG_BYTES_MIN + 1;
        assert_eq!(decide(big, 1000, 10, false, false), CompactionDecision::Compact);
        assert_eq!(decide(big, 1000, 250, false, false), CompactionDecision::Keep, "a quarter live is not enough dead");
        assert_eq!(decide(COMPACT_LOG_BYTES_MIN, 1000, 10, false, false), CompactionDecision::Keep, "small logs stay");
        assert_eq!(decide(0, 0, 0, true, false), CompactionDecision::Forced);
        assert_eq!(decide(big, 1000, 10, false, true), CompactionDecision::Postponed, "open transactions");
        assert_eq!(decide(0, 0, 0, true, true), CompactionDecision::Postponed, "even when forced");
    }

    #[test]
    fn a_lone_compacting_directory_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let paths = LogPaths::new(&root.path().join("0")).expect("paths");
        fs::create_dir_all(&paths.compacting).expect("create");
        assert!(repair(&paths, false).is_err(), "neither the log nor the old log: do not guess");
        assert!(paths.compacting.exists(), "nothing is deleted when refusing");
    }

    #[test]
    fn a_new_broker_needs_no_repair() {
        let root = tempfile::tempdir().expect("temp dir");
        let paths = LogPaths::new(&root.path().join("offsets").join("0")).expect("paths");
        assert_eq!(repair(&paths, false).expect("repair"), Repair::Clean);
        assert!(paths.parent.exists(), "the parent is created");
    }
}
