//! The upkeep the topic registry owns, as mini-redis's `Db` owns its purge task: retention (segments
//! past retention deleted, idle producers forgotten), dedup index upkeep (expired ids freed, chunks
//! maintained on disk, snapshots written when due, counters logged) and the logs' recovery
//! checkpoints.
//!
//! The tasks hold the registry, not the node, and stop when [`Upkeep::stop`] is called or the
//! [`Upkeep`] is dropped. Each round runs on the blocking pool holding the upkeep's round lock, which
//! the round's blocking closure owns: aborting a loop cannot release it early, so
//! [`Upkeep::finished`] returns only when no round is running — closing the partitions never races a
//! retention pass or a dedup snapshot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::stats::log_dedup_counters;
use crate::topics::TopicRegistry;

/// How often each dedup index frees expired ids and is snapshotted when due.
const DEDUP_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Ids one upkeep may rewrite per index while compacting or merging chunks (about 20 ms of work;
/// the topic's writers wait meanwhile), so freeing memory never stalls appends for long.
const DEDUP_EXPIRE_BUDGET: usize = 1 << 18;
/// Steps of disk work (spill, compaction or merge of chunk files, each bounded) per index per upkeep.
const DEDUP_DISK_STEPS: usize = 4;
/// How often each dedup index is checked for a due snapshot between upkeep rounds: a snapshot is due
/// after about 100,000 changed ids, which a busy topic writes in a fraction of a second, and the ids
/// since the last snapshot are what a restart replays.
const DEDUP_SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// How often each partition's log is checked for a due recovery checkpoint.
const RECOVERY_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Durable bytes of an active segment after which its log writes a new recovery checkpoint, by default
/// (`--recovery-checkpoint-bytes`): an unclean open checks at most this much of it batch by batch,
/// plus what was written in the last interval (without a checkpoint, the whole active segment: up to
/// `segment.bytes`, 1 GiB by default). One small file written and fsynced per busy partition and
/// interval.
pub const RECOVERY_CHECKPOINT_BYTES: u64 = 16 << 20;
/// How often the dedup counters that moved are logged.
const DEDUP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The running upkeep tasks.
pub struct Upkeep {
    retention: JoinHandle<()>,
    dedup: JoinHandle<()>,
    snapshots: JoinHandle<()>,
    checkpoints: JoinHandle<()>,
    /// Held by the round running on the blocking pool, if any (the retention and dedup loops share
    /// it: one round at a time).
    round: Arc<Mutex<()>>,
    /// Held by the snapshot loop's round on the blocking pool, if any: its own, so a long upkeep
    /// round does not hold back a due snapshot (snapshots of one topic never overlap: each index
    /// has its snapshot writer lock).
    snapshot_round: Arc<Mutex<()>>,
    /// Held by the recovery checkpoint loop's round on the blocking pool, if any.
    checkpoint_round: Arc<Mutex<()>>,
}

impl Upkeep {
    /// Starts the loops. Needs a tokio runtime.
    pub fn start(topics: Arc<TopicRegistry>, config: &NodeConfig) -> Upkeep {
        let interval = Duration::from_millis(config.retention_check_interval_ms.max(10));
        let round = Arc::new(Mutex::new(()));
        let expiration_ms = config.producer_id_expiration_ms;
        let retention = tokio::spawn(retention_loop(topics.clone(), interval, expiration_ms, round.clone()));
        let dedup = tokio::spawn(dedup_loop(topics.clone(), round.clone()));
        let snapshot_round = Arc::new(Mutex::new(()));
        let snapshots = tokio::spawn(snapshot_loop(topics.clone(), snapshot_round.clone()));
        let checkpoint_round = Arc::new(Mutex::new(()));
        let checkpoint_bytes = config.recovery_checkpoint_bytes.max(1);
        let checkpoints = tokio::spawn(recovery_checkpoint_loop(topics, checkpoint_bytes, checkpoint_round.clone()));
        Upkeep { retention, dedup, snapshots, checkpoints, round, snapshot_round, checkpoint_round }
    }

    /// Stops every loop; a round already on the blocking pool finishes on its own (see
    /// [`Upkeep::finished`]).
    pub fn stop(&self) {
        self.retention.abort();
        self.dedup.abort();
        self.snapshots.abort();
        self.checkpoints.abort();
    }

    /// Stops every loop and waits until no round is running.
    pub async fn finished(&self) {
        self.stop();
        // A loop aborted while waiting for the lock never runs its round; one holding it owns the
        // guard inside its blocking closure, which returns it when the round ends.
        drop(self.round.lock().await);
        drop(self.snapshot_round.lock().await);
        drop(self.checkpoint_round.lock().await);
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

async fn retention_loop(
    topics: Arc<TopicRegistry>,
    interval: Duration,
    producer_id_expiration_ms: i64,
    round: Arc<Mutex<()>>,
) {
    loop {
        tokio::time::sleep(interval).await;
        let topics = topics.clone();
        let held = round.clone().lock_owned().await;
        let _ = tokio::task::spawn_blocking(move || {
            let _held = held;
            let now_ms = now_ms();
            for topic in topics.list() {
                for partition in topic.partitions() {
                    let expired = partition.expire_producers(now_ms, producer_id_expiration_ms);
                    if expired > 0 {
                        tracing::info!(partition = %partition.id(), expired, "forgot idle producers");
                    }
                    match partition.apply_retention(now_ms) {
                        Ok(0) => {}
                        Ok(deleted) => tracing::info!(partition = %partition.id(), deleted, log_start_offset = partition.log_start_offset(), "retention deleted segments"),
                        Err(error) => tracing::error!(partition = %partition.id(), %error, "retention failed"),
                    }
                }
            }
        })
        .await;
    }
}

/// Upkeep of every dedup index: frees expired ids a bounded amount at a time, writes a snapshot when
/// one is due, and logs the counters that moved.
async fn dedup_loop(topics: Arc<TopicRegistry>, round: Arc<Mutex<()>>) {
    let mut logged = std::collections::BTreeMap::new();
    let mut last_log = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(DEDUP_UPKEEP_INTERVAL).await;
        let upkeep = topics.clone();
        let held = round.clone().lock_owned().await;
        let _ = tokio::task::spawn_blocking(move || {
            let _held = held;
            let now_ms = now_ms();
            for topic in upkeep.list() {
                let Some(dedup) = topic.dedup() else { continue };
                let expired = dedup.expire(now_ms, DEDUP_EXPIRE_BUDGET);
                // Spills past the budget, compactions and merges of chunk files (I/O outside the lock).
                dedup.maintain_disk(DEDUP_DISK_STEPS);
                // The one filter over every sealed chunk, rebuilt outside the lock when due.
                dedup.maintain_filter();
                if expired.entries_dropped > 0 {
                    tracing::debug!(topic = %topic.name, freed = expired.entries_dropped, rewritten = expired.entries_rewritten, "dedup ids freed");
                }
                if let Err(error) = dedup.snapshot_if_due() {
                    tracing::warn!(topic = %topic.name, %error, "dedup snapshot failed; a restart replays more of the log");
                }
            }
        })
        .await;
        if last_log.elapsed() >= DEDUP_LOG_INTERVAL {
            last_log = tokio::time::Instant::now();
            log_dedup_counters(&topics, &mut logged);
        }
    }
}

/// Writes each dedup index's snapshot as soon as one is due (checked every
/// `DEDUP_SNAPSHOT_CHECK_INTERVAL`), not only at the end of an upkeep round: a round can take a
/// second or more (a topic filter rebuild, disk steps) on top of its interval.
/// The round runs on the blocking pool: the check takes each index's lock, which writers hold for
/// their merges (tens of milliseconds), so it is not taken on an async worker.
async fn snapshot_loop(topics: Arc<TopicRegistry>, round: Arc<Mutex<()>>) {
    loop {
        tokio::time::sleep(DEDUP_SNAPSHOT_CHECK_INTERVAL).await;
        let topics = topics.clone();
        let held = round.clone().lock_owned().await;
        let _ = tokio::task::spawn_blocking(move || {
            let _held = held;
            for topic in topics.list() {
                let Some(dedup) = topic.dedup() else { continue };
                if let Err(error) = dedup.snapshot_if_due() {
                    tracing::warn!(topic = %topic.name, %error, "dedup snapshot failed; a restart replays more of the log");
                }
            }
        })
        .await;
    }
}

/// Writes each partition's recovery checkpoint when due (see [`RECOVERY_CHECKPOINT_BYTES`]); on the
/// blocking pool (a checkpoint is a small file written and fsynced).
async fn recovery_checkpoint_loop(topics: Arc<TopicRegistry>, min_bytes: u64, round: Arc<Mutex<()>>) {
    // A full disk fails every partition's checkpoint every second: one line every few seconds.
    let failures = Arc::new(crate::storage::EveryFewSeconds::new());
    loop {
        tokio::time::sleep(RECOVERY_CHECKPOINT_INTERVAL).await;
        let (topics, failures) = (topics.clone(), failures.clone());
        let held = round.clone().lock_owned().await;
        let _ = tokio::task::spawn_blocking(move || {
            let _held = held;
            for topic in topics.list() {
                for partition in topic.partitions() {
                    match partition.write_recovery_checkpoint(min_bytes) {
                        Ok(_) | Err(once_partition::PartitionError::Closed(_)) => {}
                        Err(error) => {
                            if let Some(suppressed) = failures.due() {
                                tracing::warn!(partition = %partition.id(), %error, failures_since_last_line = suppressed + 1,
                                    "recovery checkpoint not written; an unclean restart checks more of the log");
                            }
                        }
                    }
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closing waits for a round in progress: the guard lives in the blocking closure, so aborting
    /// the loop that started the round does not release it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_waits_for_the_round_on_the_blocking_pool() {
        let round = Arc::new(Mutex::new(()));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let loop_round = round.clone();
        let retention = tokio::spawn(async move {
            let held = loop_round.lock_owned().await;
            let _ = tokio::task::spawn_blocking(move || {
                let _held = held;
                let _ = started_tx.send(());
                std::thread::sleep(Duration::from_millis(300));
            })
            .await;
        });
        let upkeep = Upkeep {
            retention,
            dedup: tokio::spawn(async {}),
            snapshots: tokio::spawn(async {}),
            checkpoints: tokio::spawn(async {}),
            round,
            snapshot_round: Arc::new(Mutex::new(())),
            checkpoint_round: Arc::new(Mutex::new(())),
        };
        started_rx.await.expect("the round started");
        let begun = std::time::Instant::now();
        upkeep.finished().await;
        assert!(begun.elapsed() >= Duration::from_millis(200), "finished returned while the round ran");
        assert!(upkeep.round.try_lock().is_ok(), "no round holds the lock afterwards");
    }
}
