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
