//! The one writer of a partition: group commit over the log, pipelined.
//!
//! Commands are staged as they arrive: under the log lock, in queue order, each batch is checked
//! against producer state and appended, each transaction marker written. One fdatasync is in flight
//! at a time; it covers everything staged when it started, and while it runs the next commands are
//! staged behind it, so the disk's sync and the next round's writes overlap. When a sync returns, the
//! writer publishes the last stable offset and then the high watermark as of that sync's cut, and
//! only then answers the requests it covers; the next sync starts at once with whatever was staged
//! meanwhile. Syncs complete in log order, so answers do too. A small round that finds nothing in
//! flight (a latency-bound sender's) is staged and synced on the writer's own thread instead, with
//! nothing staged behind it (`INLINE_ROUND_BYTES_MAX`).
//!
//! A failed write or fsync latches the log (the log refuses every later append), and every request
//! not yet answered gets the error: nothing is acknowledged that is not durable. On a topic that
//! deduplicates, each batch's message ids are reserved while it is staged and confirmed in the topic's
//! index after the sync that covers it, before the answers (`dedup`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use once_log::ValidBatch;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::dedup::{Effect, LookedAhead};
use crate::error::PartitionError;
use crate::partition::{Appended, OffsetAnswer, Shared};
use crate::producer_state::{check_data, check_marker, Decision, LoggedBatch, MarkerDecision, ProducerStates};
use crate::txn::{self, TxnMarker};
use crate::{replay, snapshot};

/// Most commands staged at once, so one staging pass stays short.
const ROUND_COMMANDS_MAX: usize = 1024;

/// A sync in flight this long lets the writer stage the next requests behind it. A faster sync is
/// waited for, so that its successor takes everything queued meanwhile in one round: where the disk
/// syncs fast, fewer and larger rounds cost less CPU than staging each arrival behind the sync
/// (measured: about 15 % of throughput on a 2-vCPU machine with 0.5 ms fdatasyncs); where it syncs
/// slowly, the overlap hides the wait.
#[cfg(not(test))]
const STAGE_BEHIND_SYNC_AFTER: Duration = Duration::from_millis(2);
/// The unit tests stage behind every sync, to exercise the overlap whatever the disk's speed.
#[cfg(test)]
const STAGE_BEHIND_SYNC_AFTER: Duration = Duration::ZERO;

/// A round of at most this many bytes that finds the writer idle is staged and synced on the writer's
/// own thread instead of a blocking-pool thread: a latency-bound sender's request then goes through
/// one thread fewer each way (measured with 32 senders, one connection and one request in flight
/// each: about 1.2× the records/s and a tenth off the ack p99; `once bench --workload latency`,
/// docs/benchmarks.md, which also has the cells that did not move). The writer stages nothing else
/// while it syncs such a round, which costs only a small round's staging time; larger rounds (a
/// pipelining producer's) keep staging the next behind their sync.
const INLINE_ROUND_BYTES_MAX: usize = 64 * 1024;

/// Most requests staged and waiting for a sync; past it the writer stops taking commands until the
/// sync in flight returns (the queue's bound then pushes back on producers).
const WAITING_MAX: usize = 4 * ROUND_COMMANDS_MAX;

pub(crate) type AppendReply = oneshot::Sender<Result<Appended, PartitionError>>;

pub(crate) enum Command {
    Append {
        batch: ValidBatch,
        /// On a topic that deduplicates: the batch's ids, looked up as it was queued.
        ahead: Option<Box<LookedAhead>>,
        reply: AppendReply,
    },
    /// Write a transaction marker, in order with the appends around it.
    Marker { marker: TxnMarker, reply: AppendReply },
    /// Finish what is queued before it, close (or delete) the log, stop the writer.
    Stop { delete: bool, reply: oneshot::Sender<Result<(), PartitionError>> },
}

/// One write of a round: a producer's batch or a transaction marker.
pub(crate) enum Write {
    /// A batch, with its message ids already looked up if it was queued to a topic that deduplicates
    /// (`TopicDedup::look_ahead`).
    Batch(ValidBatch, Option<Box<LookedAhead>>),
    Marker(TxnMarker),
}

/// Requests staged (appended, not yet durable) that the next sync will cover.
#[derive(Default)]
struct Waiting {
    staged: Vec<Staged>,
    /// A segment rolled while staging them: the sync that covers them also snapshots producer state.
    rolled: bool,
}

pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Command>) {
    let mut commands = Vec::new();
    let mut waiting = Waiting::default();
    let mut syncing: Option<JoinHandle<()>> = None;
    let mut sync_started = Instant::now();
    let mut stop = None;
    let mut queue_open = true;
    loop {
        let stage_behind_at = sync_started + STAGE_BEHIND_SYNC_AFTER;
        let may_stage = syncing.is_none() || Instant::now() >= stage_behind_at;
        let take_commands = queue_open && stop.is_none() && waiting.staged.len() < WAITING_MAX && may_stage;
        tokio::select! {
            // A finished sync first: the next one starts as soon as possible.
            biased;
            outcome = async { syncing.as_mut().expect("guarded by is_some").await }, if syncing.is_some() => {
                syncing = None;
                if let Err(error) = outcome {
                    latch_after_panic(&shared, &error);
                }
            }
            received = queue.recv_many(&mut commands, ROUND_COMMANDS_MAX), if take_commands => {
                if received == 0 {
                    queue_open = false;
                } else {
                    let writes = split_round(&shared, &mut commands, &mut stop);
                    let idle = syncing.is_none() && waiting.staged.is_empty();
                    if idle && runs_inline(&shared, &writes) {
                        // Nothing in flight and a small round (a latency-bound sender's): stage and
                        // sync it on this thread, with no hop to another and back.
                        stage_and_sync_here(&shared, writes);
                    } else if idle && !writes.is_empty() {
                        // Nothing in flight: stage and sync on one blocking thread (one hop, not two),
                        // staging what comes next only once this round is staged.
                        sync_started = Instant::now();
                        syncing = Some(stage_and_sync(&shared, writes).await);
                    } else if !writes.is_empty() {
                        stage_on_blocking_thread(&shared, writes, &mut waiting).await;
                    }
                }
            }
            // A slow sync: from now on, stage behind it.
            () = tokio::time::sleep_until(stage_behind_at), if !may_stage => {}
        }
        if syncing.is_none() && !waiting.staged.is_empty() {
            let (shared, round) = (shared.clone(), std::mem::take(&mut waiting));
            sync_started = Instant::now();
            syncing = Some(tokio::task::spawn_blocking(move || sync_round(&shared, round)));
        }
        if syncing.is_none() && waiting.staged.is_empty() {
            if let Some((delete, reply)) = stop.take() {
                stop_writer(&shared, &mut queue, delete, reply).await;
                return;
            }
            if !queue_open {
                return;
            }
        }
    }
}

/// Takes a received batch of commands apart: the writes before a stop, the stop itself (the first
/// one), and refusals for everything after it.
fn split_round(
    shared: &Shared,
    commands: &mut Vec<Command>,
    stop: &mut Option<(bool, oneshot::Sender<Result<(), PartitionError>>)>,
) -> Vec<(Write, AppendReply)> {
    let mut writes = Vec::new();
    for command in commands.drain(..) {
        match command {
            Command::Append { batch, ahead, reply } if stop.is_none() => {
                writes.push((Write::Batch(batch, ahead), reply))
            }
            Command::Marker { marker, reply } if stop.is_none() => writes.push((Write::Marker(marker), reply)),
            Command::Stop { delete, reply } if stop.is_none() => *stop = Some((delete, reply)),
            command => reject(shared, command),
        }
    }
    writes
}

/// Stages `writes` and then syncs them on one blocking thread; returns once they are staged, with
/// the handle of the sync that follows.
async fn stage_and_sync(shared: &Arc<Shared>, writes: Vec<(Write, AppendReply)>) -> JoinHandle<()> {
    let (staged_tx, staged_rx) = oneshot::channel();
    let shared_for_round = shared.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let (staged, rolled) = stage_round(&shared_for_round, writes);
        let _ = staged_tx.send(());
        sync_round(&shared_for_round, Waiting { staged, rolled });
    });
    // An error means the task panicked while staging: the handle reports it.
    let _ = staged_rx.await;
    handle
}

/// Whether a round at an idle writer is staged and synced on the writer's own thread
/// ([`stage_and_sync_here`]): one of at most [`INLINE_ROUND_BYTES_MAX`] bytes, on a multi-thread
/// runtime (where a worker may block; elsewhere the blocking pool serves), and not while the topic's
/// dedup index is over its memory budget (its round then moves chunks to disk before it ends, and the
/// writer keeps staging meanwhile only on the blocking pool's path).
fn runs_inline(shared: &Shared, writes: &[(Write, AppendReply)]) -> bool {
    let bytes: usize = writes
        .iter()
        .map(|(write, _)| match write {
            Write::Batch(batch, _) => batch.len(),
            Write::Marker(_) => 0,
        })
        .sum();
    !writes.is_empty()
        && bytes <= INLINE_ROUND_BYTES_MAX
        && tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        && shared.dedup.as_ref().is_none_or(|dedup| !dedup.over_memory_budget())
}

/// Stages and syncs a round on the writer task's thread, which the runtime treats as blocked
/// meanwhile (`block_in_place`: its other tasks move to another worker). The requests are answered
/// when this returns. A panic latches the partition, as one on a blocking thread does.
fn stage_and_sync_here(shared: &Arc<Shared>, writes: Vec<(Write, AppendReply)>) {
    let outcome = tokio::task::block_in_place(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (staged, rolled) = stage_round(shared, writes);
            sync_round(shared, Waiting { staged, rolled });
        }))
    });
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        latch_after_panic(shared, &message);
    }
}

async fn stage_on_blocking_thread(shared: &Arc<Shared>, writes: Vec<(Write, AppendReply)>, waiting: &mut Waiting) {
    let shared_for_round = shared.clone();
    match tokio::task::spawn_blocking(move || stage_round(&shared_for_round, writes)).await {
        Ok((staged, rolled)) => {
            waiting.staged.extend(staged);
            waiting.rolled |= rolled;
        }
        Err(error) => latch_after_panic(shared, &error),
    }
}

/// Latches the partition when dropped by a panic's unwind. Declared right after a log-lock guard,
/// it is dropped before that guard, so the partition is latched before the lock is released: whoever
/// takes the lock next (a sync's cut, the next round) sees `failed` and never the panicked holder's
/// half-done appends and producer state as if they were whole. The writer loop latches too, when
/// it sees the task's `JoinError`, but only later.
struct LatchOnPanic<'a>(&'a Shared);

impl Drop for LatchOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.failed.store(true, Ordering::Release);
        }
    }
}

/// A writer task panicked: the partition refuses appends until it is reopened.
fn latch_after_panic(shared: &Shared, error: &dyn std::fmt::Display) {
    shared.failed.store(true, Ordering::Release);
    tracing::error!(partition = %shared.id, %error, "writer round panicked; partition refuses appends until restarted");
}

/// Closes (or deletes) the log once everything before the stop is answered, refusing what came after.
async fn stop_writer(
    shared: &Arc<Shared>,
    queue: &mut mpsc::Receiver<Command>,
    delete: bool,
    reply: oneshot::Sender<Result<(), PartitionError>>,
) {
    queue.close();
    while let Ok(command) = queue.try_recv() {
        reject(shared, command);
    }
    let shared_for_stop = shared.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let closed = || PartitionError::Closed(shared_for_stop.id.to_string());
        if !delete && shared_for_stop.failed.load(Ordering::Acquire) {
            // A round panicked: what it appended, and the producer state, are in an unknown state.
            // No snapshot and no clean-shutdown marker (the log is dropped, not closed), so the next
            // open recovers the log and rebuilds producer state from what is really on disk.
            drop(shared_for_stop.lock_log().take().ok_or_else(closed)?);
            let problem = "a writer round panicked; closed without a clean shutdown, the next open recovers";
            return Err(PartitionError::Storage(format!("{}: {problem}", shared_for_stop.id)));
        }
        if !delete {
            // Snapshot only what a sync has made durable; a failed log writes none (recovery replays).
            let end = shared_for_stop.with_log(|log| Ok(if log.is_failed() { None } else { Some(log.sync()?) }))?;
            if let Some(end) = end {
                let states = shared_for_stop.lock_producers().clone();
                write_producer_snapshot(&shared_for_stop, &states, end);
            }
        }
        let _no_checkpoint = shared_for_stop.checkpoint_writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let log = shared_for_stop.lock_log().take().ok_or_else(closed)?;
        if delete { log.delete() } else { log.close() }.map_err(PartitionError::from)
    })
    .await
    .unwrap_or_else(|error| Err(PartitionError::Closed(format!("{}: {error}", shared.id))));
    let _ = reply.send(outcome);
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
/// a retry of a batch already in the log (perhaps appended earlier in this round, or in one whose sync
/// is still running), answered with the original's offsets after a sync that makes the original durable.
struct Staged {
    appended: Appended,
    reply: AppendReply,
    /// What the topic's dedup index learns once the round is durable.
    effect: Option<Effect>,
}

/// Appends a round's batches and markers under the log lock, answering at once the requests refused.
/// Returns the staged requests (to be answered after a sync) and whether a segment rolled. Runs on a
/// blocking thread.
fn stage_round(shared: &Shared, writes: Vec<(Write, AppendReply)>) -> (Vec<Staged>, bool) {
    let now_ms = now_ms();
    let mut staged = Vec::with_capacity(writes.len());
    let mut guard = shared.lock_log();
    // Dropped before `guard`: a panic below latches the partition before the lock is released.
    let _latch = LatchOnPanic(shared);
    // Checked under the lock: a round or a sync that panicked holding it latched before releasing it.
    if shared.failed.load(Ordering::Acquire) {
        for (_, reply) in writes {
            let _ = reply.send(Err(PartitionError::Storage("an earlier write round failed".into())));
        }
        return (Vec::new(), false);
    }
    let Some(log) = guard.as_mut() else {
        for (_, reply) in writes {
            let _ = reply.send(Err(PartitionError::Closed(shared.id.to_string())));
        }
        return (Vec::new(), false);
    };
    if log.is_failed() {
        // Refused before any message id is reserved: nothing of these reaches the disk.
        for (_, reply) in writes {
            let _ = reply.send(Err(once_log::LogError::Failed.into()));
        }
        return (Vec::new(), false);
    }
    let mut producers = shared.lock_producers();
    let segments_before = log.segment_count();
    #[cfg(test)]
    let inject_panic = writes.iter().find_map(|(write, _)| tests::injected_panic(write));
    for (write, reply) in writes {
        let outcome = match write {
            Write::Batch(mut batch, ahead) => stage(shared, log, &mut producers, &mut batch, ahead, now_ms),
            Write::Marker(marker) => stage_marker(shared, log, &mut producers, &marker, now_ms),
        };
        match outcome {
            Ok((appended, effect)) => staged.push(Staged { appended, reply, effect }),
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }
    #[cfg(test)]
    if let Some(delay) = inject_panic {
        std::thread::sleep(delay);
        panic!("injected by a test: a writer round panics after staging its writes");
    }
    (staged, log.segment_count() != segments_before)
}

/// The cut a sync makes: taken under the log and producer locks at once, so the producer state and the
/// earliest open transaction are those of the log up to `plan.end_offset`, whatever is staged after.
struct Cut {
    plan: once_log::SyncPlan,
    earliest_open: Option<u64>,
    /// Producer state as of the cut, to snapshot once it is durable (after a segment rolled).
    producers: Option<ProducerStates>,
}

/// Writes (batches and markers) answered by one sync round of a partition writer: the group-commit
/// size (`once_group_commit_batches`), 1 to 2048 in powers of two.
pub static GROUP_COMMIT: once_log::stats::CountHistogram = once_log::stats::CountHistogram::new(1, 2);

/// Syncs everything staged so far and answers `round`'s requests. Runs on a blocking thread, one at
/// a time per partition, while the writer stages the next requests.
fn sync_round(shared: &Shared, round: Waiting) {
    let Waiting { staged, rolled } = round;
    let cut = || -> Result<Cut, PartitionError> {
        let mut guard = shared.lock_log();
        let _latch = LatchOnPanic(shared);
        // Under the lock: a staging round that panicked holding it latched before releasing it, so
        // its partial appends and producer state are never cut, made visible or snapshotted.
        if shared.failed.load(Ordering::Acquire) {
            return Err(PartitionError::Storage("an earlier write round failed".into()));
        }
        let log = guard.as_mut().ok_or_else(|| PartitionError::Closed(shared.id.to_string()))?;
        let plan = log.prepare_sync()?;
        let producers = shared.lock_producers();
        let earliest_open = producers.transactions().earliest_open_offset();
        Ok(Cut { plan, earliest_open, producers: rolled.then(|| producers.clone()) })
    };
    let synced = cut().and_then(|cut| {
        let result = cut.plan.execute();
        let durable = shared.with_log(|log| Ok(log.complete_sync(cut.plan.end_offset, result)?))?;
        assert!(durable >= cut.plan.end_offset, "a completed sync makes its cut durable");
        if let Some(producers) = &cut.producers {
            write_producer_snapshot(shared, producers, cut.plan.end_offset);
        }
        Ok((cut.plan.end_offset, cut.earliest_open))
    });
    answer_round(shared, staged, synced);
}

/// Checks a batch against producer state (and, on a topic that deduplicates, its message ids) and
/// appends it if it is new.
fn stage(
    shared: &Shared,
    log: &mut once_log::Log,
    producers: &mut ProducerStates,
    batch: &mut ValidBatch,
    ahead: Option<Box<LookedAhead>>,
    now_ms: i64,
) -> Result<(Appended, Option<Effect>), PartitionError> {
    let header = *batch.header();
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
            let prepared = dedup.prepare(shared.id.partition, batch, now_ms, ahead);
            if let Err(PartitionError::DedupPending(_)) = &prepared {
                shared.dedup_refusals.fetch_add(1, Ordering::Relaxed);
            }
            Some(prepared?)
        }
        None => None,
    };
    let mut prepared = prepared;
    if let Some(filtered) = prepared.as_mut().and_then(|prepared| prepared.filtered.take()) {
        *batch = filtered;
    }
    let info = match log.append_valid(batch, now_ms) {
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
    // A data batch (control batches were refused above): classified by its header alone.
    assert!(!info.header.is_control(), "only markers write control batches");
    if let Some(data) = replay::data_batch(&info.header) {
        producers.apply(&LoggedBatch::Data(data));
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
    let info = log.append_valid(&mut batch, now_ms)?;
    // A marker is a few dozen bytes: read back from one buffer.
    let logged = replay::classify(&info.header, &batch.to_vec());
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

fn answer_round(shared: &Shared, mut staged: Vec<Staged>, synced: Result<(u64, Option<u64>), PartitionError>) {
    let effects: Vec<Effect> = staged.iter_mut().filter_map(|staged| staged.effect.take()).collect();
    match synced {
        Ok((durable_end_offset, earliest_open)) => {
            GROUP_COMMIT.record(staged.len() as u64);
            if let Some(dedup) = &shared.dedup {
                // Before the answers: a producer told its batch is stored finds its ids live.
                dedup.apply(shared.id.partition, effects);
                let dropped: u64 = staged.iter().map(|staged| u64::from(staged.appended.duplicates_dropped)).sum();
                shared.duplicates_dropped.fetch_add(dropped, Ordering::Relaxed);
            }
            // Before the high watermark moves: a fetch woken by it must see the new last stable offset.
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
                // disk before its next sync starts (the file I/O without the index's lock; the next
                // requests are staged meanwhile, except behind a round run on the writer's thread,
                // which only the round that crosses the budget is: `runs_inline`).
                dedup.after_round();
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

/// Saves producer state `states`, which is that of the log below `offset` (everything below it
/// durable), so a restart replays only what follows. A failure only costs a longer replay, so it is
/// logged, not returned.
fn write_producer_snapshot(shared: &Shared, states: &ProducerStates, offset: u64) {
    let skip_fsync = shared.with_log(|log| Ok(log.config().unsafe_skip_fsync)).unwrap_or(false);
    if let Err(error) = snapshot::write(&shared.dir, states, offset, skip_fsync) {
        tracing::warn!(partition = %shared.id, %error, "writing the producer-state snapshot failed");
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    use once_log::testing::make_batch_with;

    use super::*;
    use crate::partition::{Partition, PartitionId};
    use crate::producer_state::ProducerEntry;
    use crate::txn::AbortedTxn;

    type Comparable = (BTreeMap<i64, ProducerEntry>, Vec<AbortedTxn>);

    /// A batch of this producer makes its writer round panic once staged (test-only hook in
    /// `stage_round`): what the round appended is then in an unknown state.
    const PANICKING_PRODUCER: i64 = 7_011_000;

    /// Like `PANICKING_PRODUCER`, but the round first holds the log lock for `SLOW_PANIC_DELAY`.
    const SLOWLY_PANICKING_PRODUCER: i64 = 7_011_001;
    const SLOW_PANIC_DELAY: Duration = Duration::from_millis(300);

    /// Whether a write makes its round panic once staged, and after how long (the lock held).
    pub(super) fn injected_panic(write: &Write) -> Option<Duration> {
        let Write::Batch(batch, _) = write else { return None };
        match batch.header().producer_id {
            PANICKING_PRODUCER => Some(Duration::ZERO),
            SLOWLY_PANICKING_PRODUCER => Some(SLOW_PANIC_DELAY),
            _ => None,
        }
    }

    /// A round that panicked latches the partition; stopping it then must not claim a clean shutdown
    /// (the next open would skip recovery) nor snapshot producer state that includes the round.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_latched_by_a_panic_is_never_closed_cleanly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = PartitionId { topic: "t".into(), partition: 0 };
        let partition = Partition::open(id.clone(), dir.path(), once_log::LogConfig::default()).expect("open");
        let first = partition.append(make_batch_with(7, 0, 0, 0, 1, 8, 1_700_000_000_000)).await.expect("append");
        assert_eq!(first.base_offset, 0);
        let panicked = partition.append(make_batch_with(PANICKING_PRODUCER, 0, 0, 0, 1, 8, 1_700_000_000_000)).await;
        assert!(matches!(panicked, Err(PartitionError::Closed(_))), "the panicked round answers nothing: {panicked:?}");
        let latched = partition.append(make_batch_with(7, 0, 1, 0, 1, 8, 1_700_000_000_000)).await;
        assert!(matches!(latched, Err(PartitionError::Storage(_))), "the partition refuses appends: {latched:?}");
        assert!(partition.is_failed());
        let closed = partition.close().await;
        assert!(!dir.path().join("clean-shutdown").exists(), "a latched partition claims no clean shutdown");
        assert!(!dir.path().join(snapshot::FILE_NAME).exists(), "nor snapshots producer state");
        assert!(matches!(closed, Err(PartitionError::Storage(_))), "closing says it was not clean: {closed:?}");

        // The next open recovers the log; the acknowledged batch is there.
        let partition = Partition::open(id, dir.path(), once_log::LogConfig::default()).expect("reopen");
        assert!(partition.log_end_offset() >= 1);
        let retry = partition.append(make_batch_with(7, 0, 0, 0, 1, 8, 1_700_000_000_000)).await.expect("retry");
        assert_eq!((retry.base_offset, retry.duplicate), (0, true), "producer state was rebuilt from the log");
        partition.close().await.expect("a healthy partition closes cleanly");
        assert!(dir.path().join("clean-shutdown").exists());
    }

    /// The same on the blocking pool's path: a round too large to run on the writer's thread
    /// (`INLINE_ROUND_BYTES_MAX`) that panics latches the partition, and its request gets no answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_round_panicking_on_a_blocking_thread_latches_the_partition() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = PartitionId { topic: "t".into(), partition: 0 };
        let partition = Partition::open(id, dir.path(), once_log::LogConfig::default()).expect("open");
        let large = make_batch_with(PANICKING_PRODUCER, 0, 0, 0, 80, 1024, 1_700_000_000_000);
        assert!(large.len() > INLINE_ROUND_BYTES_MAX, "{} bytes", large.len());
        let panicked = partition.append(large).await;
        assert!(matches!(panicked, Err(PartitionError::Closed(_))), "the panicked round answers nothing: {panicked:?}");
        let latched = partition.append(make_batch_with(7, 0, 0, 0, 1, 8, 1_700_000_000_000)).await;
        assert!(matches!(latched, Err(PartitionError::Storage(_))), "the partition refuses appends: {latched:?}");
        assert!(partition.is_failed());
    }

    /// A sync whose cut passed its `failed` check and then waited for the log lock while a staging
    /// round held it must not, once the round panics, make the round's appends durable and visible
    /// (its producer state is partial and its requests were never answered). Here the writer loop
    /// never learns of the panic (the round is staged directly), as when the sync's cut takes the
    /// lock before the loop sees the round's `JoinError`: only the round itself can latch in time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_waiting_on_a_panicking_round_exposes_nothing_of_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let id = PartitionId { topic: "t".into(), partition: 0 };
        let partition = Partition::open(id, dir.path(), once_log::LogConfig::default()).expect("open");
        partition.append(make_batch_with(7, 0, 0, 0, 1, 8, 1_700_000_000_000)).await.expect("append");
        assert_eq!(partition.high_watermark(), 1);
        let shared = partition.shared.clone();
        let (reply, _unanswered) = oneshot::channel();
        let batch = make_batch_with(SLOWLY_PANICKING_PRODUCER, 0, 0, 0, 1, 8, 1_700_000_000_000);
        let round = {
            let shared = shared.clone();
            let batch = ValidBatch::validate(batch).expect("a valid batch");
            std::thread::spawn(move || stage_round(&shared, vec![(Write::Batch(batch, None), reply)]))
        };
        // Until the round holds the log lock (it keeps it for SLOW_PANIC_DELAY, then panics).
        while shared.log.try_lock().is_ok() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let sync = {
            let shared = shared.clone();
            std::thread::spawn(move || sync_round(&shared, Waiting::default()))
        };
        assert!(round.join().is_err(), "the round panicked");
        sync.join().expect("the sync returns");
        assert_eq!(partition.high_watermark(), 1, "nothing of the panicked round became visible");
        assert_eq!(partition.last_stable_offset(), 1);
        assert!(shared.failed.load(Ordering::Acquire), "the panicking round latched the partition itself");
        let refused = partition.append(make_batch_with(7, 0, 1, 0, 1, 8, 1_700_000_000_000)).await;
        assert!(matches!(refused, Err(PartitionError::Storage(_))), "the partition refuses appends: {refused:?}");
    }

    fn comparable(states: &ProducerStates) -> Comparable {
        let producers = states.iter().map(|(id, entry)| (id, entry.clone())).collect();
        (producers, states.transactions().aborted().to_vec())
    }

    /// Every producer-state snapshot the writer leaves is the state of the log below its offset, also
    /// when later requests were staged while the sync that wrote it ran (a snapshot holding a staged
    /// batch's sequence would answer that batch's retry as a duplicate after a crash that lost it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_snapshot_is_the_state_of_the_log_below_its_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = once_log::LogConfig { segment_bytes_max: 2048, ..once_log::LogConfig::default() };
        let id = PartitionId { topic: "t".into(), partition: 0 };
        let partition = Arc::new(Partition::open(id, dir.path(), config).expect("open"));
        let done = Arc::new(AtomicBool::new(false));
        let checker = {
            let (partition, done, dir) = (partition.clone(), done.clone(), dir.path().to_path_buf());
            tokio::task::spawn_blocking(move || {
                let mut compared = 0;
                let mut last_offset = None;
                while !done.load(Ordering::Acquire) {
                    let Ok(snapshot::Stored::Valid { offset, states }) = snapshot::read(&dir) else { continue };
                    if last_offset == Some(offset) {
                        continue;
                    }
                    last_offset = Some(offset);
                    let mut replayed = ProducerStates::default();
                    partition
                        .shared
                        .with_log(|log| {
                            assert!(offset <= log.durable_end_offset(), "snapshot at {offset} beyond the durable end");
                            Ok(replay::for_each_stored_batch(log, 0, offset, |header, batch| {
                                if let Some(logged) = replay::classify(header, batch) {
                                    replayed.apply(&logged);
                                }
                            })?)
                        })
                        .expect("replay");
                    assert_eq!(comparable(&states), comparable(&replayed), "snapshot at {offset} vs the log below it");
                    compared += 1;
                }
                compared
            })
        };
        let producers: Vec<_> = (0..8i64)
            .map(|producer_id| {
                let partition = partition.clone();
                tokio::spawn(async move {
                    // All queued at once, in sequence order: rounds are staged behind syncs in flight.
                    let appends: Vec<_> = (0..250)
                        .map(|batch| {
                            let sequence = batch * 4;
                            partition.append(make_batch_with(producer_id, 0, sequence, 0, 4, 64, 1_700_000_000_000))
                        })
                        .collect();
                    for append in appends {
                        assert!(!append.await.expect("append").duplicate);
                    }
                })
            })
            .collect();
        for producer in producers {
            producer.await.expect("producer");
        }
        done.store(true, Ordering::Release);
        let compared = checker.await.expect("checker");
        assert!(compared > 0, "the checker saw snapshots");
        assert_eq!(partition.log_end_offset(), 8 * 250 * 4);
    }
}
