//! The upkeep the topic registry owns, as mini-redis's `Db` owns its purge task: retention (segments
//! past retention deleted, idle producers forgotten) and dedup index upkeep (expired ids freed, chunks
//! maintained on disk, snapshots written when due, counters logged).
//!
//! The tasks hold the registry, not the node, and stop when [`Upkeep::stop`] is called or the
//! [`Upkeep`] is dropped. Each round runs on the blocking pool; stopping does not wait for a round.

use std::sync::Arc;
use std::time::Duration;

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
/// How often the dedup counters that moved are logged.
const DEDUP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The running upkeep tasks.
pub struct Upkeep {
    retention: JoinHandle<()>,
    dedup: JoinHandle<()>,
}

impl Upkeep {
    /// Starts both loops. Needs a tokio runtime.
    pub fn start(topics: Arc<TopicRegistry>, config: &NodeConfig) -> Upkeep {
        let interval = Duration::from_millis(config.retention_check_interval_ms.max(10));
        let retention = tokio::spawn(retention_loop(topics.clone(), interval, config.producer_id_expiration_ms));
        let dedup = tokio::spawn(dedup_loop(topics));
        Upkeep { retention, dedup }
    }

    /// Stops both loops (a round already on the blocking pool finishes on its own).
    pub fn stop(&self) {
        self.retention.abort();
        self.dedup.abort();
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

async fn retention_loop(topics: Arc<TopicRegistry>, interval: Duration, producer_id_expiration_ms: i64) {
    loop {
        tokio::time::sleep(interval).await;
        let topics = topics.clone();
        let _ = tokio::task::spawn_blocking(move || {
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
async fn dedup_loop(topics: Arc<TopicRegistry>) {
    let mut logged = std::collections::BTreeMap::new();
    let mut last_log = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(DEDUP_UPKEEP_INTERVAL).await;
        let upkeep = topics.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now_ms = now_ms();
            for topic in upkeep.list() {
                let Some(dedup) = topic.dedup() else { continue };
                let expired = dedup.expire(now_ms, DEDUP_EXPIRE_BUDGET);
                // Spills past the budget, compactions and merges of chunk files (I/O outside the lock).
                dedup.maintain_disk(DEDUP_DISK_STEPS);
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
