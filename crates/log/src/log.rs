//! The `Log`: the append path, rolling, syncing (group commit without holding a lock), clean
//! shutdown and the latch. Reads live in `read.rs`, deletion in `retention.rs`, open in
//! `recovery.rs`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{BatchHeader, ValidBatch, BATCH_HEADER_LEN};
use crate::config::LogConfig;
use crate::error::{IoContext, LogError};
use crate::meta::{self, MetaKind};
use crate::segment::{Checkpoint, Segment};

/// A durable, segmented partition log. One writer (`&mut self`); reads take `&self`.
#[derive(Debug)]
pub struct Log {
    /// The partition directory; every file of the log lives directly in it.
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    /// Sorted by base offset, contiguous (each starts at the previous one's `next_offset`),
    /// never empty; the last one is the active segment, the only one appended to.
    pub(crate) segments: Vec<Segment>,
    /// First readable offset; at or after the first segment's base offset.
    pub(crate) log_start_offset: u64,
    /// Everything below is fsynced. Monotonic; never above the log end offset.
    pub(crate) durable_end_offset: u64,
    /// Sync plans prepared and not yet completed. While one is out, a roll's own fdatasync is not
    /// trusted on its own: the plan's fdatasync of the same file description may have failed and
    /// consumed the write-back error the roll's would otherwise have reported.
    pub(crate) syncs_outstanding: u32,
    /// The recovery point (and durable end) of a roll made while syncs were outstanding, applied
    /// when the last of them completes successfully; never if one fails.
    pub(crate) roll_unconfirmed: Option<u64>,
    /// Latched by any failed write or fsync; cleared only by reopening.
    pub(crate) failed: bool,
    pub(crate) recovery_stats: RecoveryStats,
    /// Batch bytes appended since the last sync plan was prepared: what the next plan makes durable.
    pub(crate) unplanned_bytes: u64,
    /// Where each outstanding sync plan ends: the active segment, its length and the log end offset
    /// when the plan was made.
    pub(crate) planned_ends: Vec<Checkpoint>,
    /// The furthest end of the plans completed while others were outstanding: durable once the last
    /// of those completes successfully (as `roll_unconfirmed`), never if one fails.
    pub(crate) synced_unconfirmed: Option<Checkpoint>,
    /// The furthest end in the active segment known durable: what a recovery checkpoint may record.
    pub(crate) synced_end: Option<Checkpoint>,
    /// The recovery checkpoint last written (by this process).
    pub(crate) checkpoint_written: Option<Checkpoint>,
    /// Batch bytes per sync plan, a moving average (each plan weighs 1/8): zeros are written ahead of
    /// the appends only while it is below [`ZERO_AHEAD_SYNC_BYTES_MAX`].
    pub(crate) sync_bytes_average: u64,
    /// The file system of the log's directory if zeros written ahead do not pay there (copy-on-write,
    /// or in memory: `crate::file_system`): then none are, whatever `LogConfig::zero_ahead_bytes` says.
    pub(crate) zeros_unsuited: Option<&'static str>,
}

/// Zeros are written ahead of the active segment's end (`LogConfig::zero_ahead_bytes`) while the
/// syncs make fewer bytes than this durable on average. Each sync of an append that grows the file
/// journals its new size, 35–80 µs here (docs/benchmarks.md, session 30), whatever the bytes; the
/// zeros are written once more for each byte, about 1.2 ns (the disk's write rate here): they pay
/// below about 30–60 KB per sync, and cost throughput above.
pub(crate) const ZERO_AHEAD_SYNC_BYTES_MAX: u64 = 32 * 1024;

/// A recovery checkpoint to write ([`Log::recovery_checkpoint_due`]): outside the caller's lock, then
/// [`Log::recovery_checkpoint_written`].
#[derive(Clone, Debug)]
#[must_use = "a checkpoint due is written, or the next one is due as soon"]
pub struct RecoveryCheckpoint {
    dir: PathBuf,
    checkpoint: Checkpoint,
}

impl RecoveryCheckpoint {
    /// Writes the checkpoint file atomically and durably. A failure leaves the last one in place
    /// (still true: a checkpoint only ever describes fsynced batches) and is the caller's to log.
    pub fn write(&self) -> Result<(), LogError> {
        let Checkpoint { base_offset, position, next_offset } = self.checkpoint;
        let values = [base_offset, position, next_offset];
        // Never with `unsafe_skip_fsync`: no checkpoint is due then.
        meta::write_meta_values(&self.dir, MetaKind::RecoveryCheckpoint, &values, false)
    }

    /// Bytes of the active segment the checkpoint covers.
    pub fn position(&self) -> u64 {
        self.checkpoint.position
    }
}

/// What `append` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
    /// The batch's max timestamp field.
    pub max_timestamp: i64,
    /// Number of records in the batch.
    pub records: u32,
    /// The batch header as stored (base offset rewritten).
    pub header: BatchHeader,
}

/// What the last `open` had to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Segment bytes read and checked batch by batch.
    pub scanned_bytes: u64,
    /// Segment bytes a recovery checkpoint covered: batch headers walked, contents not read.
    pub walked_bytes: u64,
    /// Bytes dropped: torn or corrupt tails and segments after them.
    pub truncated_bytes: u64,
    /// Zeros cut after the last batch of a segment (written ahead of the appends; where a power loss
    /// took unsynced batches that overwrote them, those read back as zeros and are counted here).
    pub zero_tail_bytes: u64,
    /// True if a valid clean-shutdown marker let open skip scanning.
    pub clean: bool,
    /// Segments scanned (the active one(s) after the recovery point, plus any whose index
    /// files were unusable).
    pub segments_scanned: usize,
}

/// Files to fdatasync outside the log's lock, and the offset they make durable.
#[derive(Debug)]
pub struct SyncPlan {
    /// The open files of every segment holding data not yet known durable.
    pub files: Vec<Arc<File>>,
    /// Log end offset when the plan was made; durable once `execute` succeeds.
    pub end_offset: u64,
    skip_fsync: bool,
    /// Each file's path and the length the sync makes durable (for the power-loss test hook).
    durable_lengths: Vec<(std::path::PathBuf, u64)>,
    /// Batch bytes appended since the previous plan: what this one makes durable that no earlier
    /// plan covered (`once_fsync_bytes`).
    pub bytes: u64,
}

impl SyncPlan {
    /// fdatasyncs each file (skipped with `unsafe_skip_fsync`). Pass the result, success or
    /// not, to `Log::complete_sync`: never retry a failed fsync.
    pub fn execute(&self) -> io::Result<()> {
        if self.skip_fsync {
            return Ok(());
        }
        self.files.iter().try_for_each(|file| crate::stats::timed(|| file.sync_data()))?;
        crate::stats::SYNC_BYTES.record(self.bytes);
        crate::power_loss::synced(&self.durable_lengths);
        Ok(())
    }
}

impl Log {
    /// Opens (creating the directory if needed) and recovers the log in `dir`.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        let log = crate::recovery::open(dir, config)?;
        // What an open finds is what survived: the power-loss hook starts from it.
        let lengths: Vec<_> = log.segments.iter().map(|segment| (segment.path(&log.dir), segment.size)).collect();
        crate::power_loss::found(&lengths);
        Ok(log)
    }

    /// Replaces the configuration; takes effect from the next append / retention pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Validates one v2 batch as received and appends it ([`Log::append_valid`]), writing the
    /// assigned base offset back into `batch`. For callers holding raw bytes (tests, tools); the
    /// produce path validates once at its edge and calls `append_valid`.
    pub fn append(&mut self, batch: &mut [u8], now_ms: i64) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        self.check_size(batch.len())?;
        let mut valid = ValidBatch::validate(batch.to_vec())?;
        let info = self.append_valid(&mut valid, now_ms)?;
        // Only the header's rewritten fields differ from what was given.
        batch[..BATCH_HEADER_LEN].copy_from_slice(valid.head());
        Ok(info)
    }

    /// Assigns a validated batch offsets from the log end offset (rewriting its base offset field),
    /// rolls if needed, and writes it. Does not fsync: call `sync` (or `prepare_sync`/`complete_sync`)
    /// before acknowledging.
    pub fn append_valid(&mut self, batch: &mut ValidBatch, now_ms: i64) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        self.check_size(batch.len())?;
        let base_offset = self.log_end_offset();
        let delta = u64::try_from(batch.header().last_offset_delta).expect("validated: delta >= 0");
        let last_offset = base_offset + delta;
        assert!(last_offset < i64::MAX as u64, "offsets stay within Kafka's i64 range");
        batch.set_base_offset(base_offset);
        let header = *batch.header();
        if self.should_roll(batch.len() as u64, last_offset, now_ms) {
            let rolled = self.roll();
            self.latch_on_error(rolled)?;
        }
        let interval = self.config.index_interval_bytes;
        let suited = self.zeros_unsuited.is_none() || self.config.zero_ahead_any_file_system;
        let zero_ahead = match self.sync_bytes_average < ZERO_AHEAD_SYNC_BYTES_MAX && suited {
            true => self.config.zero_ahead_bytes,
            false => 0,
        };
        let limit = self.config.segment_bytes_effective();
        let written = self.active_mut().append(batch.parts(), &header, now_ms, interval, zero_ahead, limit);
        self.latch_on_error(written)?;
        self.unplanned_bytes += batch.len() as u64;
        debug_assert_eq!(batch.crc(), header.crc, "rewriting the base offset keeps the CRC valid");
        assert_eq!(self.log_end_offset(), last_offset + 1, "the log end offset moved past the batch");
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: header.max_timestamp,
            records: u32::try_from(header.records_count).expect("validated: records count >= 0"),
            header,
        })
    }

    fn check_size(&self, size: usize) -> Result<(), LogError> {
        let max = self.config.segment_bytes_effective();
        if size as u64 > max {
            return Err(LogError::BatchTooLarge { size, max });
        }
        Ok(())
    }

    fn should_roll(&self, batch_bytes: u64, last_offset: u64, now_ms: i64) -> bool {
        let active = self.active();
        if active.size == 0 {
            return false;
        }
        let too_big = active.size + batch_bytes > self.config.segment_bytes_effective();
        let too_old = match (self.config.segment_ms_max, active.first_batch_time_ms) {
            (Some(max), Some(first)) => now_ms.saturating_sub(first) > i64::try_from(max).unwrap_or(i64::MAX),
            _ => false,
        };
        let offsets_overflow = last_offset - active.base_offset > u64::from(u32::MAX);
        too_big || too_old || offsets_overflow
    }

    /// Seals the active segment (fdatasync, index files) and starts a new one at the log end
    /// offset, then advances the recovery point to it.
    fn roll(&mut self) -> Result<(), LogError> {
        let skip_fsync = self.config.unsafe_skip_fsync;
        let new_base = self.log_end_offset();
        let durable_end_offset = self.durable_end_offset;
        let dir = self.dir.clone();
        let sealed_end = self.roll_unconfirmed.unwrap_or(0).max(durable_end_offset);
        let old = self.active_mut();
        assert!(old.size > 0, "only a non-empty segment is rolled");
        assert!(sealed_end >= old.base_offset, "segments before the active one were synced when they were rolled");
        // A segment no longer appended to ends with its batches: its zeros written ahead go, and the
        // fsync below makes the new length durable with the batches (an fsync, not an fdatasync:
        // whether the latter covers a file that shrank is the file system's to decide).
        let trimmed = old.trim_zeros_ahead()?;
        if !skip_fsync {
            let base = old.base_offset;
            let file = &old.file;
            crate::stats::timed(|| if trimmed { file.sync_all() } else { file.sync_data() })
                .context(|| format!("sync segment {base} at roll"))?;
            crate::power_loss::synced(&[(old.path(&dir), old.size)]);
        }
        old.persist_index(&dir, skip_fsync)?;
        let segment = Segment::create(&dir, new_base)?;
        meta::fsync_dir(&dir, skip_fsync)?;
        crate::power_loss::found(&[(segment.path(&dir), 0)]);
        self.segments.push(segment);
        if self.syncs_outstanding > 0 {
            self.roll_unconfirmed = Some(new_base);
        } else {
            self.advance_recovery_point(new_base)?;
        }
        tracing::debug!(dir = %dir.display(), base_offset = new_base, "rolled to a new segment");
        Ok(())
    }

    /// Persists `point` (the base of a segment whose predecessors are all synced) as the recovery point,
    /// then counts everything below it durable.
    fn advance_recovery_point(&mut self, point: u64) -> Result<(), LogError> {
        meta::write_meta(&self.dir, MetaKind::RecoveryPoint, point, self.config.unsafe_skip_fsync)?;
        self.durable_end_offset = self.durable_end_offset.max(point);
        Ok(())
    }

    /// Makes everything appended so far durable. Returns the durable end offset.
    pub fn sync(&mut self) -> Result<u64, LogError> {
        let plan = self.prepare_sync()?;
        let result = plan.execute();
        self.complete_sync(plan.end_offset, result)
    }

    /// First half of a sync done outside the caller's lock: the files to fdatasync.
    pub fn prepare_sync(&mut self) -> Result<SyncPlan, LogError> {
        self.check_not_failed()?;
        let durable = self.durable_end_offset;
        let unsynced = || self.segments.iter().filter(|segment| segment.next_offset > durable);
        let files = unsynced().map(|segment| Arc::clone(&segment.file)).collect();
        let durable_lengths = if crate::power_loss::enabled() {
            unsynced().map(|segment| (segment.path(&self.dir), segment.size)).collect()
        } else {
            Vec::new()
        };
        self.syncs_outstanding += 1;
        let active = self.active();
        self.planned_ends.push(Checkpoint {
            base_offset: active.base_offset,
            position: active.size,
            next_offset: active.next_offset,
        });
        let bytes = std::mem::take(&mut self.unplanned_bytes);
        self.sync_bytes_average = (self.sync_bytes_average * 7 + bytes) / 8;
        Ok(SyncPlan {
            files,
            end_offset: self.log_end_offset(),
            skip_fsync: self.config.unsafe_skip_fsync,
            durable_lengths,
            bytes,
        })
    }

    /// Second half: records the outcome of `SyncPlan::execute`. A failure latches the log.
    pub fn complete_sync(&mut self, plan_end_offset: u64, result: io::Result<()>) -> Result<u64, LogError> {
        self.check_not_failed()?;
        assert!(self.syncs_outstanding > 0, "complete_sync follows a prepare_sync");
        self.syncs_outstanding -= 1;
        let planned = self.planned_ends.iter().position(|end| end.next_offset == plan_end_offset);
        let planned = self.planned_ends.swap_remove(planned.expect("every completed plan was prepared"));
        if let Err(source) = result {
            self.failed = true;
            tracing::error!(dir = %self.dir.display(), error = %source, "fdatasync failed; log latched");
            return Err(LogError::io(format!("fdatasync segments of {}", self.dir.display()), source));
        }
        assert!(plan_end_offset <= self.log_end_offset(), "a sync plan never covers offsets not yet appended");
        self.durable_end_offset = self.durable_end_offset.max(plan_end_offset);
        let furthest = self.synced_unconfirmed.filter(|end| end.next_offset > planned.next_offset).unwrap_or(planned);
        self.synced_unconfirmed = Some(furthest);
        if self.syncs_outstanding == 0 {
            // Every plan out when these completed has succeeded: their ends are durable.
            self.synced_end = self.synced_unconfirmed.take();
            if let Some(recovery_point) = self.roll_unconfirmed.take() {
                // Every sync that could have consumed a write-back error before the roll's own
                // fdatasync has now succeeded: the rolled segments are durable.
                let advanced = self.advance_recovery_point(recovery_point);
                self.latch_on_error(advanced)?;
            }
        }
        Ok(self.durable_end_offset)
    }

    /// A recovery checkpoint to write, if the durable part of the active segment has grown by at least
    /// `min_bytes` since the last one written: the segment's base offset, the length fsynced and the
    /// offset after it. An unclean open then checks batches from there on only (it walks the headers
    /// before it, for the indexes), so a crash costs a scan of what was written since, not of the whole
    /// active segment (up to `segment.bytes`). Only ever true: it is taken from completed syncs, after
    /// every sync out with them succeeded, and the batches before it were checked when appended.
    pub fn recovery_checkpoint_due(&self, min_bytes: u64) -> Option<RecoveryCheckpoint> {
        let end = self.synced_end?;
        let active = self.active();
        // Without fsync nothing is known durable: a checkpoint would vouch for bytes a power loss
        // may have torn, which the whole scan would have cut.
        if self.failed || self.config.unsafe_skip_fsync || end.base_offset != active.base_offset {
            return None;
        }
        assert!(
            end.position <= active.size && end.next_offset <= active.next_offset,
            "a synced end lies in the segment"
        );
        let written = self.checkpoint_written.filter(|written| written.base_offset == end.base_offset);
        if end.position < written.map_or(0, |written| written.position).saturating_add(min_bytes) {
            return None;
        }
        Some(RecoveryCheckpoint { dir: self.dir.clone(), checkpoint: end })
    }

    /// Records that `checkpoint` was written (the next one is due `min_bytes` after it).
    pub fn recovery_checkpoint_written(&mut self, checkpoint: &RecoveryCheckpoint) {
        assert!(checkpoint.dir == self.dir, "a log's checkpoint is written to its own directory");
        self.checkpoint_written = Some(checkpoint.checkpoint);
    }

    /// First offset still in the log.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Everything below this offset is fsynced.
    pub fn durable_end_offset(&self) -> u64 {
        self.durable_end_offset
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.size).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// What the last open did.
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.recovery_stats
    }

    /// True once a write or fsync has failed; the log then refuses writes until reopened.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Clean shutdown: sync, persist indexes, write the clean-shutdown marker (next open skips
    /// recovery). A failed log is not marked clean.
    pub fn close(mut self) -> Result<(), LogError> {
        self.sync()?;
        let skip_fsync = self.config.unsafe_skip_fsync;
        let dir = self.dir.clone();
        // The next open checks the index files against the files' lengths: the zeros written ahead
        // go first, durably.
        let active = self.active_mut();
        let trimmed = active.trim_zeros_ahead().and_then(|trimmed| match trimmed && !skip_fsync {
            true => active.file.sync_all().context(|| format!("fsync segment {} at close", active.base_offset)),
            false => Ok(()),
        });
        self.latch_on_error(trimmed)?;
        for segment in &mut self.segments {
            let persisted = segment.persist_index(&dir, skip_fsync);
            self.failed |= persisted.is_err();
            persisted?;
        }
        let marked = meta::fsync_dir(&dir, skip_fsync)
            .and_then(|()| meta::write_meta(&dir, MetaKind::CleanShutdown, self.log_end_offset(), skip_fsync));
        self.latch_on_error(marked)
    }

    /// Deletes the whole log directory (topic deletion).
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        let skip_fsync = self.config.unsafe_skip_fsync;
        drop(self);
        std::fs::remove_dir_all(&dir).context(|| format!("remove log directory {}", dir.display()))?;
        match dir.parent() {
            Some(parent) => meta::fsync_dir(parent, skip_fsync),
            None => Ok(()),
        }
    }

    pub(crate) fn check_not_failed(&self) -> Result<(), LogError> {
        if self.failed {
            return Err(LogError::Failed);
        }
        Ok(())
    }

    /// Latches on any error: after a failed write or fsync the file state is unknown.
    pub(crate) fn latch_on_error<T>(&mut self, result: Result<T, LogError>) -> Result<T, LogError> {
        if let Err(error) = &result {
            self.failed = true;
            tracing::error!(dir = %self.dir.display(), %error, "log write failed; log latched until reopened");
        }
        result
    }

    pub(crate) fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a log always has an active segment")
    }
}
