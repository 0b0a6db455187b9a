//! Deleting old data: retention by time and size (whole segments), and explicit log start
//! offset advances (DeleteRecords).

use std::time::UNIX_EPOCH;

use crate::error::LogError;
use crate::log::Log;
use crate::meta::{self, MetaKind};
use crate::segment;

impl Log {
    /// Deletes whole non-active segments past retention, oldest first: by time when the
    /// segment's largest timestamp is older than `now_ms - retention_ms`, by size while the log
    /// would still hold at least `retention_bytes` without the segment. Advances the log start
    /// offset to the next segment's base offset. Returns the number of segments deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let mut deleted = 0;
        let mut total = self.size_bytes();
        while self.segments.len() > 1 && self.segments[1].base_offset <= self.durable_end_offset {
            let oldest = &self.segments[0];
            let by_size = self.config.retention_bytes.is_some_and(|limit| total - oldest.size >= limit);
            let by_time = match self.config.retention_ms {
                Some(limit) => {
                    now_ms.saturating_sub(segment_largest_timestamp(oldest)) > i64::try_from(limit).unwrap_or(i64::MAX)
                }
                None => false,
            };
            if !by_size && !by_time {
                break;
            }
            tracing::info!(dir = %self.dir.display(), base_offset = oldest.base_offset, bytes = oldest.size, by_size, by_time, "deleting segment past retention");
            total -= oldest.size;
            self.delete_oldest_segment()?;
            deleted += 1;
        }
        if deleted > 0 {
            let synced = meta::fsync_dir(&self.dir, self.config.unsafe_skip_fsync);
            self.latch_on_error(synced)?;
        }
        Ok(deleted)
    }

    /// Advances the log start offset (DeleteRecords), persisting it, then deletes every whole
    /// segment below it. Offsets above the log end offset are out of range; lower ones than the
    /// current start are a no-op.
    pub fn advance_log_start_offset(&mut self, offset: u64) -> Result<(), LogError> {
        self.check_not_failed()?;
        if offset > self.log_end_offset() {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        if offset <= self.log_start_offset {
            return Ok(());
        }
        let skip_fsync = self.config.unsafe_skip_fsync;
        let persisted = meta::write_meta(&self.dir, MetaKind::LogStartOffset, offset, skip_fsync);
        self.latch_on_error(persisted)?;
        self.log_start_offset = offset;
        let mut deleted = 0;
        while self.segments.len() > 1
            && self.segments[1].base_offset <= offset
            && self.segments[1].base_offset <= self.durable_end_offset
        {
            self.delete_oldest_segment()?;
            deleted += 1;
        }
        if deleted > 0 {
            let synced = meta::fsync_dir(&self.dir, skip_fsync);
            self.latch_on_error(synced)?;
        }
        Ok(())
    }

    /// Removes the oldest (non-active) segment's files and forgets it; the log start offset
    /// moves to the next segment if it was below it. The caller fsyncs the directory.
    fn delete_oldest_segment(&mut self) -> Result<(), LogError> {
        assert!(self.segments.len() > 1, "the active segment is never deleted");
        let base_offset = self.segments[0].base_offset;
        assert!(self.segments[1].base_offset <= self.durable_end_offset, "only durable segments are deleted");
        segment::remove_files(&self.dir, base_offset)?;
        self.segments.remove(0);
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
        Ok(())
    }
}

/// The segment's largest batch timestamp, or its file's modification time if no batch carries
/// one (Kafka's fallback), or "now-ish never" if even that is unknown.
fn segment_largest_timestamp(segment: &segment::Segment) -> i64 {
    if let Some((timestamp, _)) = segment.index.max_timestamp {
        if timestamp >= 0 {
            return timestamp;
        }
    }
    let modified = segment.file.metadata().and_then(|metadata| metadata.modified());
    match modified.ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok()) {
        Some(since_epoch) => i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX),
        None => i64::MAX,
    }
}
