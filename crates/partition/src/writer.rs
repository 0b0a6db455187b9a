//! The one writer of a partition: group commit over the log.
//!
//! Each round takes every command queued so far, appends the batches and transaction markers under the
//! log lock in queue order, releases the lock, fdatasyncs once, publishes the last stable offset and
//! then the high watermark, and only then answers. A failed write or fsync latches the log (the log
//! refuses every later append), and every request of the round gets the error: nothing is acknowledged
//! that is not durable. On a topic that deduplicates, each batch's message ids are reserved while it
//! is staged and confirmed in the topic's index after the sync, before the answers (`dedup`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use once_log::BatchHeader;
use tokio::sync::{mpsc, oneshot};

use crate::dedup::Effect;
use crate::error::PartitionError;
use crate::partition::{Appended, OffsetAnswer, Shared};
use crate::producer_state::{check_data, check_marker, Decision, LoggedBatch, MarkerDecision, ProducerStates};
use crate::txn::{self, TxnMarker};
use crate::{replay, snapshot};

/// Most commands one round takes, so one fsync never waits behind an unbounded queue.
const ROUND_COMMANDS_MAX: usize = 1024;

pub(crate) type AppendReply = oneshot::Sender<Result<Appended, PartitionError>>;

pub(crate) enum Command {
    Append {
        batch: Vec<u8>,
        reply: AppendReply,
    },
    /// Write a transaction marker, in order with the appends around it.
    Marker {
        marker: TxnMarker,
        reply: AppendReply,
    },
    /// Finish what is queued before it, close (or delete) the log, stop the writer.
    Stop {
        delete: bool,
        reply: oneshot::Sender<Result<(), PartitionError>>,
    },
}

/// One write of a round: a producer's batch or a transaction marker.
pub(crate) enum Write {
    Batch(Vec<u8>),
    Marker(TxnMarker),
}

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Command>) {
    let mut round = Vec::new();
    while queue.recv_many(&mut round, ROUND_COMMANDS_MAX).await > 0 {
        let stop_at = round.iter().position(|command| matches!(command, Command::Stop { .. }));
        let mut writes = Vec::new();
        let mut stop = None;
        for (index, command) in round.drain(..).enumerate() {
            let before_stop = stop_at.is_none_or(|at| index < at);
            match command {
                Command::Append { batch, reply } if before_stop => writes.push((Write::Batch(batch), reply)),
                Command::Marker { marker, reply } if before_stop => writes.push((Write::Marker(marker), reply)),
                Command::Stop { delete, reply } => stop = stop.or(Some((delete, reply))),
                command => reject(&shared, command),
            }
        }
        if !writes.is_empty() {
            let shared_for_round = shared.clone();
            let outcome = tokio::task::spawn_blocking(move || commit_round(&shared_for_round, writes)).await;
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
        Command::Append { reply, .. } | Command::Marker { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Command::Stop { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
    }
}

/// What a round did with one request, before the sync decides the answer: appended in this round, or
/// a retry of a batch already in the log (perhaps appended earlier in this round), answered with the
/// original's offsets after the same sync that makes the original durable.
struct Staged {
    appended: Appended,
    reply: AppendReply,
    /// What the topic's dedup index learns once the round is durable.
    effect: Option<Effect>,
}

/// Appends a round's batches and markers, syncs once, answers each request. Runs on a blocking thread.
fn commit_round(shared: &Shared, writes: Vec<(Write, AppendReply)>) {
    if shared.failed.load(std::sync::atomic::Ordering::Acquire) {
        for (_, reply) in writes {
            let _ = reply.send(Err(PartitionError::Storage("an earlier write round failed".into())));
        }
        return;
    }
    let now_ms = now_ms();
    let mut staged = Vec::with_capacity(writes.len());
    let plan = {
        let mut guard = shared.lock_log();
        let Some(log) = guard.as_mut() else {
            for (_, reply) in writes {
                let _ = reply.send(Err(PartitionError::Closed(shared.id.to_string())));
            }
            return;
        };
        let mut producers = shared.lock_producers();
        let segments_before = log.segment_count();
        for (write, reply) in writes {
            let outcome = match write {
                Write::Batch(mut batch) => stage(shared, log, &mut producers, &mut batch, now_ms),
                Write::Marker(marker) => stage_marker(shared, log, &mut producers, &marker, now_ms),
            };
            match outcome {
                Ok((appended, effect)) => staged.push(Staged { appended, reply, effect }),
                Err(error) => {
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

/// Checks a batch against producer state (and, on a topic that deduplicates, its message ids) and
/// appends it if it is new.
fn stage(
    shared: &Shared,
    log: &mut once_log::Log,
    producers: &mut ProducerStates,
    batch: &mut Vec<u8>,
    now_ms: i64,
) -> Result<(Appended, Option<Effect>), PartitionError> {
    let header = BatchHeader::parse(batch)?;
    if header.is_control() {
        // Only `write_marker` writes control batches, after its own checks.
        let refused =
            once_log::LogError::InvalidBatch("control batches are written only as transaction markers".into());
        return Err(refused.into());
    }
    if let Some(data) = replay::data_batch(&header) {
        match check_data(producers.get(data.producer_id), &data) {
            Decision::Append => {}
            Decision::Duplicate(original) => {
                let answer = if original.records_dropped { OffsetAnswer::Unknown } else { OffsetAnswer::Stored };
                let appended = Appended {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    max_timestamp: original.max_timestamp,
                    duplicate: true,
                    answer,
                    duplicates_dropped: 0,
                };
                return Ok((appended, None));
            }
            Decision::Fenced { current_epoch } => return Err(PartitionError::ProducerFenced { current_epoch }),
            Decision::OutOfOrder { expected_first_sequence } => {
                return Err(PartitionError::OutOfOrderSequence { expected_first_sequence })
            }
            Decision::TransactionOpen { first_offset } => {
                let (producer_id, at) = (data.producer_id, first_offset);
                let problem = format!("non-transactional batch of producer {producer_id} in its transaction from {at}");
                return Err(PartitionError::InvalidTxnState(problem));
            }
            Decision::TransactionalWithoutProducer => {
                return Err(PartitionError::InvalidTxnState("a transactional batch without a producer id".into()))
            }
        }
        if data.producer_id >= 0 && !producers.has_room_for(data.producer_id) {
            // Retriable: a marker closing any of the open transactions makes room.
            let producer_id = data.producer_id;
            tracing::warn!(partition = %shared.id, producer_id, "producer state full of open transactions; producer refused");
            return Err(PartitionError::Busy(shared.id.to_string()));
        }
    }
    let prepared = match &shared.dedup {
        Some(dedup) => {
            let prepared = dedup.prepare(shared.id.partition, batch, &header, now_ms);
            if let Err(PartitionError::DedupPending(_)) = &prepared {
                shared.dedup_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Some(prepared?)
        }
        None => None,
    };
    let mut prepared = prepared;
    if let Some(filtered) = prepared.as_mut().and_then(|prepared| prepared.filtered.take()) {
        *batch = filtered;
    }
    let info = match log.append(batch, now_ms) {
        Ok(info) => info,
        Err(error) => {
            if let (Some(dedup), Some(prepared)) = (&shared.dedup, prepared) {
                match log.is_failed() {
                    true => dedup.abandon(vec![Effect::Write {
                        reserved: prepared.reserved,
                        base_offset: 0,
                        last_offset: 0,
                    }]),
                    false => dedup.release(prepared.reserved),
                }
            }
            return Err(error.into());
        }
    };
    if let Some(logged) = replay::classify(&info.header, batch) {
        producers.apply(&logged);
    }
    let mut appended = Appended::from(&info);
    let effect = prepared.map(|prepared| {
        appended.answer = prepared.answer;
        appended.duplicates_dropped = prepared.dropped;
        Effect::Write { reserved: prepared.reserved, base_offset: info.base_offset, last_offset: info.last_offset }
    });
    Ok((appended, effect))
}

/// Checks a marker against its producer's state, appends its control batch, and applies it.
fn stage_marker(
    shared: &Shared,
    log: &mut once_log::Log,
    producers: &mut ProducerStates,
    marker: &TxnMarker,
    now_ms: i64,
) -> Result<(Appended, Option<Effect>), PartitionError> {
    match check_marker(producers.get(marker.producer_id), marker) {
        MarkerDecision::Write => {}
        MarkerDecision::Fenced { current_epoch } => return Err(PartitionError::ProducerFenced { current_epoch }),
        MarkerDecision::CoordinatorFenced { current_coordinator_epoch } => {
            return Err(PartitionError::CoordinatorFenced {
                marker: marker.coordinator_epoch,
                current: current_coordinator_epoch,
            })
        }
        MarkerDecision::WithoutProducer => {
            return Err(PartitionError::InvalidTxnState("a marker without a producer id".into()))
        }
    }
    let mut batch = txn::marker_batch(marker, now_ms);
    let info = log.append(&mut batch, now_ms)?;
    let logged = replay::classify(&info.header, &batch);
    let Some(LoggedBatch::Marker(applied)) = logged else {
        panic!("the marker batch just written reads back as a marker, not {logged:?}");
    };
    assert_eq!(applied.offset, info.base_offset, "the marker is read back at the offset it took");
    assert_eq!(
        (applied.producer_id, applied.commit, applied.coordinator_epoch),
        (marker.producer_id, marker.commit, marker.coordinator_epoch),
        "the marker reads back as written"
    );
    producers.apply(&LoggedBatch::Marker(applied));
    // The marker ends the transaction's hold on its message ids here (commit: live; abort: free).
    let effect = shared
        .dedup
        .as_ref()
        .map(|_| Effect::Control { end: Some((marker.producer_id, marker.commit)), offset: info.base_offset });
    Ok((Appended::from(&info), effect))
}

fn answer_round(shared: &Shared, mut staged: Vec<Staged>, synced: Result<u64, PartitionError>) {
    let effects: Vec<Effect> = staged.iter_mut().filter_map(|staged| staged.effect.take()).collect();
    match synced {
        Ok(durable_end_offset) => {
            if let Some(dedup) = &shared.dedup {
                // Before the answers: a producer told its batch is stored finds its ids live.
                dedup.apply(shared.id.partition, effects);
                let dropped: u64 = staged.iter().map(|staged| u64::from(staged.appended.duplicates_dropped)).sum();
                shared.duplicates_dropped.fetch_add(dropped, std::sync::atomic::Ordering::Relaxed);
            }
            // Before the high watermark moves: a fetch woken by it must see the new last stable offset.
            let earliest_open = shared.lock_producers().transactions().earliest_open_offset();
            let last_stable_offset = shared.publish_last_stable_offset(earliest_open, durable_end_offset);
            shared.high_watermark.send_if_modified(|high_watermark| {
                let moved = durable_end_offset > *high_watermark;
                *high_watermark = (*high_watermark).max(durable_end_offset);
                moved
            });
            assert!(
                last_stable_offset <= *shared.high_watermark.borrow(),
                "the last stable offset {last_stable_offset} is at most the high watermark"
            );
            for Staged { appended, reply, .. } in staged {
                assert!(
                    appended.last_offset < durable_end_offset,
                    "acknowledging offset {} above durable end {durable_end_offset}",
                    appended.last_offset
                );
                let _ = reply.send(Ok(appended));
            }
            if let Some(dedup) = &shared.dedup {
                // After the answers: the writer that grew the index past its budget moves chunks to
                // disk before its next round (the file I/O without the index's lock).
                dedup.spill_if_over_budget();
            }
        }
        Err(error) => {
            tracing::error!(partition = %shared.id, %error, "sync failed; partition latched");
            if let Some(dedup) = &shared.dedup {
                dedup.abandon(effects);
            }
            for Staged { reply, .. } in staged {
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
