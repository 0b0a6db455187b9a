//! Rebuilding producer state when a partition opens: the snapshot, then every batch after it.

use std::path::Path;

use once_log::{BatchHeader, Log, LogError};

use crate::producer_state::{add_to_sequence, BatchMetadata, ProducerStates};
use crate::snapshot;

/// Bytes read from the log per step of the replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// What a producer batch contributes to producer state, or `None` for a batch without a producer.
pub(crate) fn batch_metadata(header: &BatchHeader) -> Option<(i64, i16, BatchMetadata)> {
    if header.producer_id < 0 || header.is_control() || header.base_sequence < 0 {
        return None;
    }
    let metadata = BatchMetadata {
        first_sequence: header.base_sequence,
        last_sequence: add_to_sequence(header.base_sequence, header.last_offset_delta),
        base_offset: header.base_offset as u64,
        last_offset: header.last_offset() as u64,
        max_timestamp: header.max_timestamp,
    };
    Some((header.producer_id, header.producer_epoch, metadata))
}

/// The producer state as of the log end: the snapshot if it is usable, then a replay of the log after it.
pub(crate) fn rebuild(dir: &Path, log: &Log) -> Result<ProducerStates, LogError> {
    let end = log.log_end_offset();
    let (mut offset, mut states) = match snapshot::read(dir) {
        Some((offset, states)) if offset <= end => (offset.max(log.log_start_offset()), states),
        Some((offset, _)) => {
            tracing::warn!(dir = %dir.display(), snapshot_offset = offset, log_end_offset = end, "producer snapshot is beyond the recovered log; replaying everything");
            (log.log_start_offset(), ProducerStates::default())
        }
        None => (log.log_start_offset(), ProducerStates::default()),
    };
    let replay_from = offset;
    while offset < end {
        let bytes = log.read(offset, REPLAY_READ_BYTES, end)?;
        if bytes.is_empty() {
            break;
        }
        let mut position = 0;
        while position < bytes.len() {
            let header = BatchHeader::parse(&bytes[position..])?;
            if let Some((producer_id, epoch, metadata)) = batch_metadata(&header) {
                states.record(producer_id, epoch, metadata, metadata.max_timestamp);
            }
            position += header.total_len();
            offset = header.last_offset() as u64 + 1;
        }
    }
    tracing::debug!(dir = %dir.display(), replay_from, producers = states.len(), "producer state rebuilt");
    Ok(states)
}
