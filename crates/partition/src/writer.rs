//! The one writer of a partition: group commit over the log.
//!
//! Each round takes every command queued so far, appends the batches under the log lock, releases the
//! lock, fdatasyncs once, and only then answers. A failed write or fsync latches the log (the log
//! refuses every later append), and every request of the round gets the error: nothing is acknowledged
//! that is not durable.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use once_log::AppendInfo;
use tokio::sync::{mpsc, oneshot};

use crate::error::PartitionError;
use crate::partition::Shared;

/// Most commands one round takes, so one fsync never waits behind an unbounded queue.
const ROUND_COMMANDS_MAX: usize = 1024;

pub(crate) type AppendReply = oneshot::Sender<Result<AppendInfo, PartitionError>>;

pub(crate) enum Command {
    Append { batch: Vec<u8>, reply: AppendReply },
    /// Finish what is queued before it, close (or delete) the log, stop the writer.
    Stop { delete: bool, reply: oneshot::Sender<Result<(), PartitionError>> },
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
                tracing::error!(partition = %shared.id, %error, "writer round panicked");
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

/// Appends a round's batches, syncs once, answers each request. Runs on a blocking thread.
fn commit_round(shared: &Shared, appends: Vec<(Vec<u8>, AppendReply)>) {
    let now_ms = now_ms();
    let mut appended = Vec::with_capacity(appends.len());
    let plan = {
        let mut guard = shared.lock_log();
        let Some(log) = guard.as_mut() else {
            for (_, reply) in appends {
                let _ = reply.send(Err(PartitionError::Closed(shared.id.to_string())));
            }
            return;
        };
        for (mut batch, reply) in appends {
            match log.append(&mut batch, now_ms) {
                Ok(info) => appended.push((info, reply)),
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            }
        }
        if appended.is_empty() {
            return;
        }
        log.prepare_sync().map_err(PartitionError::from)
    };
    let synced = plan.and_then(|plan| {
        let result = plan.execute();
        shared.with_log(|log| Ok(log.complete_sync(plan.end_offset, result)?))
    });
    match synced {
        Ok(durable_end_offset) => {
            shared.high_watermark.send_if_modified(|high_watermark| {
                let moved = durable_end_offset > *high_watermark;
                *high_watermark = (*high_watermark).max(durable_end_offset);
                moved
            });
            for (info, reply) in appended {
                assert!(info.last_offset < durable_end_offset, "acknowledging offset {} above durable end {durable_end_offset}", info.last_offset);
                let _ = reply.send(Ok(info));
            }
        }
        Err(error) => {
            tracing::error!(partition = %shared.id, %error, "sync failed; partition latched");
            for (_, reply) in appended {
                let _ = reply.send(Err(PartitionError::Storage(error.to_string())));
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}
