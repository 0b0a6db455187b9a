//! Rebuilding producer state when a partition opens: the snapshot, then every batch after it.
//!
//! What a stored batch means to producer state is decided here, by [`classify`], for replay and for
//! the writer's live path alike: both then hand the result to [`ProducerStates::apply`].

use std::path::Path;

use once_log::{BatchHeader, Log, LogError, BATCH_HEADER_LEN};

use crate::producer_state::{add_to_sequence, BatchMetadata, DataBatch, LoggedBatch, MarkerBatch, ProducerStates};
use crate::snapshot::{self, Stored};
use once_log::batch::{parse_control_record, ControlRecord};

/// Bytes read from the log per step of the replay.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// What a data batch contributes to producer state, or `None` for a control batch or a batch with
/// neither a producer nor the transactional attribute. Offsets are the header's (0 before append).
pub(crate) fn data_batch(header: &BatchHeader) -> Option<DataBatch> {
    if header.is_control() || (header.producer_id < 0 && !header.is_transactional()) {
        return None;
    }
    let (first_sequence, last_sequence) = match header.base_sequence {
        base_sequence if base_sequence >= 0 => {
            (base_sequence, add_to_sequence(base_sequence, header.last_offset_delta.max(0)))
        }
        _ => (-1, -1),
    };
    Some(DataBatch {
        producer_id: header.producer_id,
        epoch: header.producer_epoch,
        transactional: header.is_transactional(),
        metadata: BatchMetadata {
            first_sequence,
            last_sequence,
            base_offset: u64::try_from(header.base_offset).unwrap_or(0),
            last_offset: u64::try_from(header.last_offset()).unwrap_or(0),
            max_timestamp: header.max_timestamp,
            records_dropped: !header.holds_every_offset(),
        },
    })
}

/// What a batch as stored (`batch` is the whole batch, its base offset assigned) means to producer
/// state. A control batch is read down to its record, to learn commit or abort and the coordinator
/// epoch; one that cannot be read changes nothing and is logged.
pub(crate) fn classify(header: &BatchHeader, batch: &[u8]) -> Option<LoggedBatch> {
    if !header.is_control() {
        return data_batch(header).map(LoggedBatch::Data);
    }
    if header.producer_id < 0 {
        return None;
    }
    match parse_control_record(batch) {
        Ok(ControlRecord::EndTxn { commit, coordinator_epoch }) => Some(LoggedBatch::Marker(MarkerBatch {
            producer_id: header.producer_id,
            epoch: header.producer_epoch,
            coordinator_epoch,
            commit,
            offset: u64::try_from(header.base_offset).unwrap_or(0),
            timestamp_ms: header.max_timestamp,
        })),
        Ok(ControlRecord::Other { .. }) => None,
        Err(problem) => {
            tracing::warn!(offset = header.base_offset, %problem, "ignoring an unreadable control batch");
            None
        }
    }
}

/// The producer state as of the log end: the snapshot if it is usable, then a replay of the log after it.
///
/// A snapshot file that is there but not used (undecodable, or beyond the recovered log end) is
/// deleted durably before this returns, so before the partition accepts a write: kept, it could be
/// loaded by a later start (one beyond the end once the log grew past its offset again, skipping
/// the batches between the recovered end and its offset; `docs/design/producer-state.md`, "The
/// snapshot rule"). Failing to delete it fails the open. So does a snapshot that cannot be read at
/// all (an I/O error other than not-found): what it says is unknown, so it can be neither used nor
/// judged stale, and a read error on the partition's own directory is one the operator must see
/// (the log's reads are suspect too) rather than a replay that silently leaves the file behind.
pub(crate) fn rebuild(dir: &Path, log: &Log) -> Result<ProducerStates, LogError> {
    let end = log.log_end_offset();
    let unused = |reason: &str| -> Result<(u64, ProducerStates), LogError> {
        tracing::warn!(dir = %dir.display(), reason, "deleting the producer snapshot and replaying the whole log");
        snapshot::remove(dir, log.config().unsafe_skip_fsync).map_err(|source| LogError::Io {
            context: format!("delete the unused producer snapshot {}", dir.join(snapshot::FILE_NAME).display()),
            source,
        })?;
        Ok((log.log_start_offset(), ProducerStates::default()))
    };
    let stored = snapshot::read(dir).map_err(|source| LogError::Io {
        context: format!("read the producer snapshot {}", dir.join(snapshot::FILE_NAME).display()),
        source,
    })?;
    let (offset, mut states) = match stored {
        Stored::Valid { offset, states } if offset <= end => (offset.max(log.log_start_offset()), states),
        Stored::Valid { offset, .. } => unused(&format!("its offset {offset} is beyond the recovered log end {end}"))?,
        Stored::Undecodable => unused("it is corrupt, torn or of another version")?,
        Stored::Missing => (log.log_start_offset(), ProducerStates::default()),
    };
    let replay_from = offset;
    for_each_stored_batch(log, offset, end, |header, batch| {
        if let Some(logged) = classify(header, batch) {
            states.apply(&logged);
        }
    })?;
    // The snapshot may predate a retention pass that dropped these.
    states.prune_aborted(log.log_start_offset());
    let (producers, open_transactions) = (states.len(), states.transactions().open_count());
    tracing::debug!(dir = %dir.display(), replay_from, producers, open_transactions, "producer state rebuilt");
    Ok(states)
}

/// Calls `visit` with every stored batch from the one holding `from` up to `end`, in log order: the
/// header and the whole batch as stored (base offset assigned).
pub(crate) fn for_each_stored_batch(
    log: &Log,
    from: u64,
    end: u64,
    mut visit: impl FnMut(&BatchHeader, &[u8]),
) -> Result<(), LogError> {
    let mut offset = from;
    while offset < end {
        let bytes = log.read(offset, REPLAY_READ_BYTES, end)?;
        if bytes.is_empty() {
            break;
        }
        let mut position = 0;
        while position < bytes.len() {
            let header = BatchHeader::parse(&bytes[position..])?;
            let batch = bytes
                .get(position..position + header.total_len())
                .filter(|batch| batch.len() >= BATCH_HEADER_LEN)
                .ok_or_else(|| {
                    LogError::CorruptBatch(format!("batch at offset {} is cut short", header.base_offset))
                })?;
            visit(&header, batch);
            position += header.total_len();
            offset = header.last_offset() as u64 + 1;
        }
    }
    Ok(())
}
