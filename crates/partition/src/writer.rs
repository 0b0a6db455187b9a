//! The one writer of a partition: group commit over the log.
//!
//! Each round takes every command queued so far, appends the batches under the log lock, releases the
//! lock, fdatasyncs once, and only then answers. A failed write or fsync latches the log (the log
//! refuses every later append), and every request of the round gets the error: nothing is acknowledged
//! that is not durable.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use once_log::BatchHeader;
use tokio::sync::{mpsc, oneshot};

use crate::error::PartitionError;
use crate::partition::{Appended, Shared};
use crate::producer_state::{check, Decision, ProducerStates};
use crate::{replay, snapshot};

/// Most commands one round takes, so one fsync never waits behind an unbounded queue.
const ROUND_COMMANDS_MAX: usize = 1024;

pub(crate) type AppendReply = oneshot::Sender<Result<Appended, PartitionError>>;

pub(crate) enum Command {
    Append {
        batch: Vec<u8>,
        reply: AppendReply,
    },
    /// Finish what is queued before it, close (or delete) the log, stop the writer.
    Stop {
        delete: bool,
        reply: oneshot::Sender<Result<(), PartitionError>>,
    },
}

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Command>) {
    let mut round = Vec::new();
    while queue.recv_many(&mut round, ROUND_COMMANDS_MAX).await > 0 {
        let stop_at = round.iter().position(|command| matches!(command, Command::Stop { .. }));
        let mut appends = Vec::new();
        let mut stop = None;
        for (index, command) in round.drain(..).enumerate() {
            match command {
                Command::Append { batch, reply } if stop_at.is_none_or(|at| index < at) => appends.push((batch, reply)),
                Command::Append { reply, .. } => {
                    let _ = reply.send(Err(PartitionError::Closed(shared.id.to_string())));
                }
                Command::Stop { delete, reply } => stop = stop.or(Some((delete, reply))),
            }
        }
        if !appends.is_empty() {
            let shared_for_round = shared.clone();
            let outcome = tokio::task::spawn_blocking(move || commit_round(&shared_for_round, appends)).await;
            if let Err(error) = outcome {
                shared.failed.store(true, std::sync::atomic::Ordering::Release);
                tracing::error!(partition = %shared.id, %error, "writer round panicked; partition refuses appends until restarted");
            }
        }
        if let Some((delete, reply)) = stop {
            queue.close();
            while let Ok(command) = queue.try_recv() {
                reject(&shared, command);
            }
            let shared_for_stop = shared.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let closed = || PartitionError::Closed(shared_for_stop.id.to_string());
                if !delete {
                    // Snapshot only what a sync has made durable; a failed log writes none (recovery replays).
                    let end =
                        shared_for_stop.with_log(|log| Ok(if log.is_failed() { None } else { Some(log.sync()?) }))?;
                    if let Some(end) = end {
                        snapshot_producers(&shared_for_stop, end);
                    }
                }
                let log = shared_for_stop.lock_log().take().ok_or_else(closed)?;
                if delete { log.delete() } else { log.close() }.map_err(PartitionError::from)
            })
            .await
            .unwrap_or_else(|error| Err(PartitionError::Closed(format!("{}: {error}", shared.id))));
            let _ = reply.send(outcome);
            return;
        }
    }
}

fn reject(shared: &Shared, command: Command) {
    let closed = PartitionError::Closed(shared.id.to_string());
    match command {
        Command::Append { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Command::Stop { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
    }
}

/// What a round did with one request, before the sync decides the answer.
enum Staged {
    /// Appended in this round: acknowledged if the sync succeeds.
    Appended(Appended, AppendReply),
    /// A retry of a batch already in the log (perhaps appended earlier in this round): answered with
    /// the original's offsets, after the same sync that makes the original durable.
    Duplicate(Appended, AppendReply),
}

/// Appends a round's batches, syncs once, answers each request. Runs on a blocking thread.
fn commit_round(shared: &Shared, appends: Vec<(Vec<u8>, AppendReply)>) {
    if shared.failed.load(std::sync::atomic::Ordering::Acquire) {
        for (_, reply) in appends {
            let _ = reply.send(Err(PartitionError::Storage("an earlier write round failed".into())));
        }
        return;
    }
    let now_ms = now_ms();
    let mut staged = Vec::with_capacity(appends.len());
    let plan = {
        let mut guard = shared.lock_log();
        let Some(log) = guard.as_mut() else {
            for (_, reply) in appends {
                let _ = reply.send(Err(PartitionError::Closed(shared.id.to_string())));
            }
            return;
        };
        let mut producers = shared.lock_producers();
        let segments_before = log.segment_count();
        for (mut batch, reply) in appends {
            match stage(log, &mut producers, &mut batch, now_ms) {
                Ok(appended) => staged.push(Staged::Appended(appended, reply)),
                Err(Staging::Duplicate(original)) => staged.push(Staged::Duplicate(original, reply)),
                Err(Staging::Refused(error)) => {
                    let _ = reply.send(Err(error));
                }
            }
        }
        if staged.is_empty() {
            return;
        }
        let rolled = log.segment_count() != segments_before;
        log.prepare_sync().map_err(PartitionError::from).map(|plan| (plan, rolled))
    };
    let synced = plan.and_then(|(plan, rolled)| {
        let result = plan.execute();
        let durable = shared.with_log(|log| Ok(log.complete_sync(plan.end_offset, result)?))?;
        if rolled {
            snapshot_producers(shared, durable);
        }
        Ok(durable)
    });
    answer_round(shared, staged, synced);
}

/// Why a batch is not appended.
enum Staging {
    Duplicate(Appended),
    Refused(PartitionError),
}

/// Checks a batch against producer state and appends it if it is new.
fn stage(
    log: &mut once_log::Log,
    producers: &mut ProducerStates,
    batch: &mut [u8],
    now_ms: i64,
) -> Result<Appended, Staging> {
    let header = BatchHeader::parse(batch).map_err(|error| Staging::Refused(error.into()))?;
    let producer = replay::batch_metadata(&header);
    if let Some((producer_id, epoch, metadata)) = producer {
        match check(producers.get(producer_id), epoch, metadata.first_sequence, metadata.last_sequence) {
            Decision::Append => {}
            Decision::Duplicate(original) => {
                return Err(Staging::Duplicate(Appended {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    max_timestamp: original.max_timestamp,
                    duplicate: true,
                }))
            }
            Decision::Fenced { current_epoch } => {
                return Err(Staging::Refused(PartitionError::ProducerFenced { current_epoch }))
            }
            Decision::OutOfOrder { expected_first_sequence } => {
                return Err(Staging::Refused(PartitionError::OutOfOrderSequence { expected_first_sequence }))
            }
        }
    }
    let info = log.append(batch, now_ms).map_err(|error| Staging::Refused(error.into()))?;
    if let Some((producer_id, epoch, _)) = producer {
        let appended = replay::batch_metadata(&info.header).map(|(_, _, metadata)| metadata);
        let metadata = appended.expect("an appended producer batch keeps its producer fields");
        producers.record(producer_id, epoch, metadata, metadata.max_timestamp);
    }
    Ok(Appended::from(&info))
}

fn answer_round(shared: &Shared, staged: Vec<Staged>, synced: Result<u64, PartitionError>) {
    match synced {
        Ok(durable_end_offset) => {
            shared.high_watermark.send_if_modified(|high_watermark| {
                let moved = durable_end_offset > *high_watermark;
                *high_watermark = (*high_watermark).max(durable_end_offset);
                moved
            });
            for staged in staged {
                let (appended, reply) = match staged {
                    Staged::Appended(appended, reply) | Staged::Duplicate(appended, reply) => (appended, reply),
                };
                assert!(
                    appended.last_offset < durable_end_offset,
                    "acknowledging offset {} above durable end {durable_end_offset}",
                    appended.last_offset
                );
                let _ = reply.send(Ok(appended));
            }
        }
        Err(error) => {
            tracing::error!(partition = %shared.id, %error, "sync failed; partition latched");
            for staged in staged {
                let (Staged::Appended(_, reply) | Staged::Duplicate(_, reply)) = staged;
                let _ = reply.send(Err(PartitionError::Storage(error.to_string())));
            }
        }
    }
}

/// Saves producer state as of `offset` (everything below it durable), so a restart replays only what
/// follows. A failure only costs a longer replay, so it is logged, not returned.
pub(crate) fn snapshot_producers(shared: &Shared, offset: u64) {
    let skip_fsync = shared.with_log(|log| Ok(log.config().unsafe_skip_fsync)).unwrap_or(false);
    let states = shared.lock_producers().clone();
    if let Err(error) = snapshot::write(&shared.dir, &states, offset, skip_fsync) {
        tracing::warn!(partition = %shared.id, %error, "writing the producer-state snapshot failed");
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}
