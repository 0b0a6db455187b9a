//! The message-id deduplication counters of every partition: read by the metrics endpoint of an edge
//! and logged periodically by the dedup upkeep.

use std::collections::BTreeMap;

use crate::topics::TopicRegistry;

/// The dedup counters of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionDedupCounters {
    /// Records not stored because their message id was a duplicate.
    pub duplicates_dropped: u64,
    /// Batches refused (retriably) because an id was held by an open transaction or a write in flight.
    pub refused_batches: u64,
}

/// Every dedup partition's counters, by (topic, partition).
pub fn dedup_counters(topics: &TopicRegistry) -> BTreeMap<(String, i32), PartitionDedupCounters> {
    let mut counters = BTreeMap::new();
    for topic in topics.list() {
        if topic.dedup().is_none() {
            continue;
        }
        for partition in topic.partitions() {
            let counter = PartitionDedupCounters {
                duplicates_dropped: partition.duplicates_dropped(),
                refused_batches: partition.dedup_refusals(),
            };
            counters.insert((topic.name.clone(), partition.id().partition), counter);
        }
    }
    counters
}

/// Logs, at INFO, every partition whose counters moved since `previous` (which it then updates).
pub fn log_dedup_counters(topics: &TopicRegistry, previous: &mut BTreeMap<(String, i32), PartitionDedupCounters>) {
    for ((topic, partition), now) in dedup_counters(topics) {
        let before = previous.get(&(topic.clone(), partition)).copied().unwrap_or_default();
        if now != before {
            tracing::info!(
                topic = %topic,
                partition,
                duplicates_dropped_total = now.duplicates_dropped,
                duplicates_dropped = now.duplicates_dropped.saturating_sub(before.duplicates_dropped),
                refused_batches_total = now.refused_batches,
                "dedup"
            );
        }
        previous.insert((topic, partition), now);
    }
}

/// Per partition, high watermark − last stable offset: how far read_committed consumers are held
/// back by open transactions (0 when none is open on it). By (topic, partition).
pub fn lso_lags(topics: &TopicRegistry) -> BTreeMap<(String, i32), u64> {
    let mut lags = BTreeMap::new();
    for topic in topics.list() {
        for partition in topic.partitions() {
            let (high_watermark, stable) = (partition.high_watermark(), partition.last_stable_offset());
            assert!(stable <= high_watermark, "the last stable offset never passes the high watermark");
            lags.insert((topic.name.clone(), partition.id().partition), high_watermark - stable);
        }
    }
    lags
}

/// Transactions open now (Ongoing, or decided and their markers not all written), and the age in
/// ms of the oldest one's start (0 when none is open).
pub fn open_transactions(txns: &once_txn::TxnCoordinator, now_ms: i64) -> (u64, i64) {
    let open: Vec<i64> = txns
        .list()
        .into_iter()
        .filter(|txn| !txn.metadata.state.is_settled())
        // A start of -1 means none recorded yet.
        .map(|txn| if txn.metadata.start_ms < 0 { 0 } else { now_ms.saturating_sub(txn.metadata.start_ms).max(0) })
        .collect();
    (open.len() as u64, open.into_iter().max().unwrap_or(0))
}

/// Per consumer group and partition with a committed offset, high watermark − committed offset
/// (0 when the group is at or past the end; partitions of deleted topics are left out). By
/// (group, topic, partition).
pub fn consumer_group_lags(
    groups: &once_group::GroupCoordinator,
    topics: &TopicRegistry,
) -> BTreeMap<(String, String, i32), u64> {
    let listed = groups.list_groups(&[], &[]);
    let wanted = listed.iter().map(|group| (group.group_id.clone(), None)).collect();
    let mut lags = BTreeMap::new();
    for (group, offsets) in listed.iter().zip(groups.fetch_offsets(wanted, false)) {
        for (topic_name, partitions) in offsets {
            let Some(topic) = topics.get(&topic_name) else { continue };
            for fetched in partitions {
                let (Ok(()), Some(partition)) = (&fetched.outcome, topic.partition(fetched.partition)) else {
                    continue;
                };
                let Ok(committed) = u64::try_from(fetched.offset) else { continue };
                let lag = partition.high_watermark().saturating_sub(committed);
                lags.insert((group.group_id.clone(), topic_name.clone(), fetched.partition), lag);
            }
        }
    }
    lags
}

/// Requests answered by an edge, per API: how many and how long each took from its frame being read
/// to its response being ready (a Produce's includes its fsync). Indexed by the API's number; the
/// edge names each API the first time it records one (the node knows no protocol).
pub struct RequestStats {
    apis: [ApiStats; API_KEYS_MAX],
}

/// API numbers recorded: Kafka's are below 100.
pub const API_KEYS_MAX: usize = 128;

struct ApiStats {
    name: std::sync::OnceLock<&'static str>,
    latency: once_log::stats::LatencyHistogram,
}

impl Default for RequestStats {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestStats {
    pub const fn new() -> RequestStats {
        RequestStats {
            apis: [const { ApiStats { name: std::sync::OnceLock::new(), latency: once_log::stats::LatencyHistogram::new() } };
                API_KEYS_MAX],
        }
    }

    /// Records one request of API `key`, named by `name` (called once per API).
    pub fn record(&self, key: i16, name: impl FnOnce() -> String, elapsed: std::time::Duration) {
        let Some(api) = usize::try_from(key).ok().and_then(|index| self.apis.get(index)) else { return };
        api.name.get_or_init(|| Box::leak(name().into_boxed_str()));
        api.latency.record(elapsed);
    }

    /// Each API recorded at least once: its name and latency histogram.
    pub fn snapshot(&self) -> Vec<(&'static str, once_log::stats::HistogramSnapshot)> {
        self.apis.iter().filter_map(|api| api.name.get().map(|name| (*name, api.latency.snapshot()))).collect()
    }
}

/// Client connections of every listener.
#[derive(Default)]
pub struct ConnectionStats {
    /// Open now.
    pub open: std::sync::atomic::AtomicU64,
    /// Accepted since start.
    pub accepted: std::sync::atomic::AtomicU64,
    /// Closed at once because `--connections-max` were open.
    pub refused: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod request_tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_api_under_their_first_name() {
        let stats = RequestStats::new();
        assert!(stats.snapshot().is_empty());
        stats.record(0, || "Produce".into(), std::time::Duration::from_millis(2));
        stats.record(0, || panic!("named once"), std::time::Duration::from_micros(80));
        stats.record(1, || "Fetch".into(), std::time::Duration::from_millis(500));
        stats.record(-1, || "nothing".into(), std::time::Duration::ZERO);
        stats.record(4000, || "nothing".into(), std::time::Duration::ZERO);
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot.iter().map(|(name, histogram)| (*name, histogram.count)).collect::<Vec<_>>(),
            [("Produce", 2), ("Fetch", 1)]
        );
    }
}
