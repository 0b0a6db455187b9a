//! Opening a log: list the directory, then either trust a clean shutdown (load index files, no
//! scan) or recover: trust segments below the recovery point, scan the rest batch by batch and
//! cut the log at the first torn or corrupt batch.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::Path;

use crate::config::LogConfig;
use crate::error::{IoContext, LogError};
use crate::index::{self, LoadedIndex};
use crate::log::{Log, RecoveryStats};
use crate::meta::{self, MetaKind, INDEX_EXTENSION, LOG_EXTENSION, TEMP_SUFFIX, TIME_INDEX_EXTENSION};
use crate::segment::{self, Checkpoint, Segment};

/// A segment file found at open, before anything is known of its contents.
struct RawSegment {
    base_offset: u64,
    file: File,
    length: u64,
}

/// Opens and recovers the log in `dir`. See the module doc.
pub(crate) fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
    let skip_fsync = config.unsafe_skip_fsync;
    if !dir.exists() {
        fs::create_dir_all(dir).context(|| format!("create log directory {}", dir.display()))?;
        if let Some(parent) = dir.parent() {
            meta::fsync_dir(parent, skip_fsync)?;
        }
    }
    let bases = list_segments(dir, skip_fsync)?;
    let persisted_start = meta::read_meta(dir, MetaKind::LogStartOffset)?;
    let recovery_point = meta::read_meta(dir, MetaKind::RecoveryPoint)?.unwrap_or(0);
    let clean_end_offset = meta::read_meta(dir, MetaKind::CleanShutdown)?;
    let checkpoint = meta::read_meta_values::<3>(dir, MetaKind::RecoveryCheckpoint)?
        .map(|[base_offset, position, next_offset]| Checkpoint { base_offset, position, next_offset });
    let mut raws = Vec::with_capacity(bases.len());
    for base_offset in bases {
        let (file, length) = segment::open_file(dir, base_offset)?;
        raws.push(RawSegment { base_offset, file, length });
    }
    let mut stats = RecoveryStats::default();
    let mut segments = if raws.is_empty() {
        let segment = Segment::create(dir, persisted_start.unwrap_or(0))?;
        meta::fsync_dir(dir, skip_fsync)?;
        vec![segment]
    } else {
        let loaded = match clean_end_offset {
            Some(end_offset) => load_clean(dir, &raws, end_offset)?,
            None => None,
        };
        match loaded {
            Some(loaded) => {
                stats.clean = true;
                build_clean(raws, loaded)
            }
            None => recover(dir, raws, recovery_point, checkpoint, &config, &mut stats)?,
        }
    };
    note_first_batch_time(&mut segments)?;
    // The recovery checkpoint outlives this open only if it names the active segment, which still
    // holds all it covers, and this open found it true (walked it, or the log was closed cleanly with
    // it in place). One dropped as false here, or naming a segment this open cut or discarded, could
    // later fit batches that fill the segment again to the same boundaries and vouch for them
    // unsynced: it is removed, and a new one is written once this process has synced enough.
    let active = segments.last().expect("a log always has an active segment");
    let kept = checkpoint.filter(|checkpoint| {
        let names_active = checkpoint.base_offset == active.base_offset
            && checkpoint.position <= active.size
            && checkpoint.next_offset <= active.next_offset;
        let found_true = stats.clean || stats.walked_bytes == checkpoint.position;
        names_active && found_true && !skip_fsync
    });
    // Before any new append: a stale marker would let the next open skip recovery of data
    // written after it.
    let removed_marker = meta::remove_meta(dir, MetaKind::CleanShutdown)?;
    let removed_checkpoint = kept.is_none() && meta::remove_meta(dir, MetaKind::RecoveryCheckpoint)?;
    if removed_marker || removed_checkpoint {
        meta::fsync_dir(dir, skip_fsync)?;
    }
    let log_start_offset = settle_log_start(dir, &mut segments, persisted_start, skip_fsync)?;
    let end_offset = segments.last().map_or(0, |segment| segment.next_offset);
    let zeros_unsuited = crate::file_system::zeros_ahead_unsuited(dir);
    if let (Some(file_system), true, false) =
        (zeros_unsuited, config.zero_ahead_bytes > 0, config.zero_ahead_any_file_system)
    {
        tracing::debug!(dir = %dir.display(), file_system, "no zeros written ahead of the appends on this file system");
    }
    tracing::info!(dir = %dir.display(), log_start_offset, log_end_offset = end_offset, clean = stats.clean,
        scanned_bytes = stats.scanned_bytes, walked_bytes = stats.walked_bytes, truncated_bytes = stats.truncated_bytes, zero_tail_bytes = stats.zero_tail_bytes, "opened log");
    // What an open finds is durable: recovery fsynced it, and a clean close synced before its marker.
    let active = segments.last().expect("a log always has an active segment");
    let synced_end =
        Checkpoint { base_offset: active.base_offset, position: active.size, next_offset: active.next_offset };
    Ok(Log {
        dir: dir.to_path_buf(),
        config,
        segments,
        log_start_offset,
        durable_end_offset: end_offset,
        syncs_outstanding: 0,
        roll_unconfirmed: None,
        failed: false,
        recovery_stats: stats,
        unplanned_bytes: 0,
        planned_ends: Vec::new(),
        synced_unconfirmed: None,
        synced_end: Some(synced_end),
        checkpoint_written: kept,
        sync_bytes_average: 0,
        zeros_unsuited,
    })
}

/// Sorted base offsets of the segment files; removes temp files and orphan index files.
fn list_segments(dir: &Path, skip_fsync: bool) -> Result<Vec<u64>, LogError> {
    let mut logs = BTreeSet::new();
    let mut indexes = BTreeSet::new();
    let mut removed = false;
    let entries = fs::read_dir(dir).context(|| format!("list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("list {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMP_SUFFIX) {
            tracing::info!(dir = %dir.display(), file = name, "removing leftover temp file");
            removed |= meta::remove_if_present(&entry.path())?;
            continue;
        }
        match meta::parse_segment_name(name) {
            Some((base, _)) if base > i64::MAX as u64 => {
                tracing::warn!(dir = %dir.display(), file = name, "ignoring segment file beyond the i64 offset range");
            }
            Some((base, LOG_EXTENSION)) => {
                logs.insert(base);
            }
            Some((base, INDEX_EXTENSION | TIME_INDEX_EXTENSION)) => {
                indexes.insert(base);
            }
            _ => {}
        }
    }
    for orphan in indexes.difference(&logs) {
        tracing::info!(dir = %dir.display(), base_offset = orphan, "removing index files without a segment");
        segment::remove_files(dir, *orphan)?;
        removed = true;
    }
    if removed {
        meta::fsync_dir(dir, skip_fsync)?;
    }
    Ok(logs.into_iter().collect())
}

/// After a clean shutdown: every index file valid and current, segments contiguous, and the
/// last one ending at the marker's offset. `None` if anything disagrees (then recover).
fn load_clean(dir: &Path, raws: &[RawSegment], end_offset: u64) -> Result<Option<Vec<LoadedIndex>>, LogError> {
    let mut loaded: Vec<LoadedIndex> = Vec::with_capacity(raws.len());
    for raw in raws {
        let Some(index) = index::load(dir, raw.base_offset, raw.length)? else {
            return Ok(None);
        };
        if loaded.last().is_some_and(|previous| previous.next_offset != raw.base_offset) {
            tracing::warn!(dir = %dir.display(), base_offset = raw.base_offset, "segments not contiguous; recovering");
            return Ok(None);
        }
        loaded.push(index);
    }
    if loaded.last().map(|last| last.next_offset) != Some(end_offset) {
        tracing::warn!(dir = %dir.display(), end_offset, "clean-shutdown marker disagrees with the indexes; recovering");
        return Ok(None);
    }
    Ok(Some(loaded))
}

fn build_clean(raws: Vec<RawSegment>, loaded: Vec<LoadedIndex>) -> Vec<Segment> {
    assert_eq!(raws.len(), loaded.len(), "one index pair per segment");
    raws.into_iter()
        .zip(loaded)
        .map(|(raw, index)| {
            let mut segment = Segment::from_parts(raw.base_offset, raw.file, raw.length, index, None);
            segment.persisted_size = Some(raw.length);
            segment
        })
        .collect()
}

/// Unclean open. Segments before the one holding the recovery point are trusted (index files
/// loaded, or rebuilt by a scan if unusable); from it on every batch is checked, but for the part of
/// that first segment a recovery checkpoint covers (headers walked only, see `segment::scan`). The
/// log is cut at the first bad batch: the file truncated there, later segments deleted.
fn recover(
    dir: &Path,
    raws: Vec<RawSegment>,
    recovery_point: u64,
    checkpoint: Option<Checkpoint>,
    config: &LogConfig,
    stats: &mut RecoveryStats,
) -> Result<Vec<Segment>, LogError> {
    let first_scanned = raws.iter().rposition(|raw| raw.base_offset <= recovery_point).unwrap_or(0);
    let mut segments: Vec<Segment> = Vec::with_capacity(raws.len());
    let mut rest = raws.into_iter().enumerate();
    for (position, raw) in rest.by_ref() {
        if let Some(previous) = segments.last() {
            if previous.next_offset != raw.base_offset {
                tracing::warn!(dir = %dir.display(), base_offset = raw.base_offset, expected = previous.next_offset,
                    "segment does not continue the log; deleting it and all later segments");
                discard(dir, raw, stats)?;
                break;
            }
        }
        let checkpoint =
            checkpoint.filter(|checkpoint| position == first_scanned && checkpoint.base_offset == raw.base_offset);
        let (segment, complete) = recover_segment(dir, raw, position < first_scanned, checkpoint, config, stats)?;
        segments.push(segment);
        if !complete {
            break;
        }
    }
    let mut discarded = false;
    for (_, raw) in rest {
        discard(dir, raw, stats)?;
        discarded = true;
    }
    if discarded {
        meta::fsync_dir(dir, config.unsafe_skip_fsync)?;
    }
    seal_recovered(dir, &mut segments, recovery_point, config.unsafe_skip_fsync)?;
    Ok(segments)
}

fn discard(dir: &Path, raw: RawSegment, stats: &mut RecoveryStats) -> Result<(), LogError> {
    tracing::warn!(dir = %dir.display(), base_offset = raw.base_offset, bytes = raw.length, "deleting segment after the recovered end of the log");
    stats.truncated_bytes += raw.length;
    drop(raw.file);
    segment::remove_files(dir, raw.base_offset)
}

/// Loads a trusted segment's indexes or scans it. Returns the segment and whether it was
/// whole (false: truncated, the log ends here).
fn recover_segment(
    dir: &Path,
    raw: RawSegment,
    trusted: bool,
    checkpoint: Option<Checkpoint>,
    config: &LogConfig,
    stats: &mut RecoveryStats,
) -> Result<(Segment, bool), LogError> {
    if trusted {
        if let Some(loaded) = index::load(dir, raw.base_offset, raw.length)? {
            let mut segment = Segment::from_parts(raw.base_offset, raw.file, raw.length, loaded, None);
            segment.persisted_size = Some(raw.length);
            return Ok((segment, true));
        }
    }
    let scan = segment::scan(&raw.file, raw.length, raw.base_offset, config.index_interval_bytes, checkpoint)?;
    stats.scanned_bytes += raw.length - scan.walked_bytes;
    stats.walked_bytes += scan.walked_bytes;
    stats.segments_scanned += 1;
    assert!(scan.valid_bytes <= raw.length, "a scan stays inside the file");
    if let Some(problem) = &scan.problem {
        tracing::warn!(dir = %dir.display(), base_offset = raw.base_offset, position = scan.valid_bytes,
            offset = scan.next_offset, dropped_bytes = raw.length - scan.valid_bytes, %problem,
            "torn or corrupt batch; truncating the log here");
        Segment::truncate_file(&raw.file, raw.base_offset, scan.valid_bytes)?;
        stats.truncated_bytes += raw.length - scan.valid_bytes;
    } else if scan.zeros_after > 0 {
        // Zeros written ahead of the appends (`Segment::append`): the batches end there, and the file
        // is cut to them, as a roll or a clean close leaves a segment.
        assert_eq!(scan.valid_bytes + scan.zeros_after, raw.length, "the zeros run to the end of the file");
        tracing::info!(dir = %dir.display(), base_offset = raw.base_offset, position = scan.valid_bytes,
            offset = scan.next_offset, zeros = scan.zeros_after, "batches end here, zeros after them; cutting the zeros");
        Segment::truncate_file(&raw.file, raw.base_offset, scan.valid_bytes)?;
        stats.zero_tail_bytes += scan.zeros_after;
    }
    let loaded = LoadedIndex { index: scan.index, next_offset: scan.next_offset };
    let segment = Segment::from_parts(raw.base_offset, raw.file, scan.valid_bytes, loaded, scan.first_max_timestamp);
    Ok((segment, scan.problem.is_none()))
}

/// Makes the recovered state durable (so `durable_end_offset == log_end_offset` after open)
/// and moves the recovery point to the active segment so the next unclean open scans only it.
fn seal_recovered(dir: &Path, segments: &mut [Segment], recovery_point: u64, skip_fsync: bool) -> Result<(), LogError> {
    let Some((active, sealed)) = segments.split_last_mut() else {
        return Ok(());
    };
    for segment in sealed.iter_mut() {
        if segment.persisted_size.is_none() {
            if !skip_fsync {
                segment.file.sync_data().context(|| format!("fdatasync recovered segment {}", segment.base_offset))?;
            }
            segment.persist_index(dir, skip_fsync)?;
        }
    }
    if !skip_fsync {
        active.file.sync_data().context(|| format!("fdatasync recovered segment {}", active.base_offset))?;
    }
    meta::fsync_dir(dir, skip_fsync)?;
    if active.base_offset > recovery_point {
        meta::write_meta(dir, MetaKind::RecoveryPoint, active.base_offset, skip_fsync)?;
    }
    Ok(())
}

/// Roll-by-age needs the active segment's first batch time; after a reopen we use the first
/// batch's max timestamp (Kafka does the same).
fn note_first_batch_time(segments: &mut [Segment]) -> Result<(), LogError> {
    let Some(active) = segments.last_mut() else {
        return Ok(());
    };
    if active.first_batch_time_ms.is_none() && active.size > 0 {
        active.first_batch_time_ms = Some(active.header_at(0)?.max_timestamp);
    }
    Ok(())
}

/// The log start offset: the persisted one or the first segment's base, whichever is later,
/// but not past the log end (data can be lost by a crash after the start was advanced); whole
/// segments below it are deleted (a crash may have come between persisting it and deleting).
fn settle_log_start(
    dir: &Path,
    segments: &mut Vec<Segment>,
    persisted: Option<u64>,
    skip_fsync: bool,
) -> Result<u64, LogError> {
    let first_base = segments.first().map_or(0, |segment| segment.base_offset);
    let end_offset = segments.last().map_or(0, |segment| segment.next_offset);
    let mut start = persisted.unwrap_or(0).max(first_base);
    if start > end_offset {
        tracing::warn!(dir = %dir.display(), log_start_offset = start, log_end_offset = end_offset, "log start offset beyond the recovered end; lowering it");
        start = end_offset;
        meta::write_meta(dir, MetaKind::LogStartOffset, start, skip_fsync)?;
    }
    let mut deleted = false;
    while segments.len() > 1 && segments[1].base_offset <= start {
        segment::remove_files(dir, segments[0].base_offset)?;
        segments.remove(0);
        deleted = true;
    }
    if deleted {
        meta::fsync_dir(dir, skip_fsync)?;
    }
    Ok(start)
}
