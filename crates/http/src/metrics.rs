//! `GET /metrics`: the node's metrics in the OpenMetrics text format, encoded by the Prometheus
//! project's Rust client (prometheus-client). A collector reads the node's counters and gauges at
//! each scrape, so there is no second copy of them to keep in step: the message-id deduplication
//! counters per partition (`once_node::stats`, also logged periodically) and each deduplicating
//! topic's index gauges.

use std::sync::Arc;

use once_node::stats::dedup_counters;
use once_node::Node;
use once_partition::DedupStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

/// Reads one gauge of an index's stats.
type Gauge = fn(&DedupStats) -> u64;

const GAUGES: [(&str, &str, Gauge); 8] = [
    ("once_dedup_index_ids", "Message ids the topic's index stores: live, or expired and not yet freed.", |stats| {
        stats.stored_ids
    }),
    (
        "once_dedup_index_pending_ids",
        "Message ids reserved by writes in flight or held by open transactions.",
        |stats| stats.pending_ids,
    ),
    ("once_dedup_index_bytes", "Heap bytes (RAM) of the topic's message-id index.", |stats| stats.index_bytes),
    (
        "once_dedup_index_memory_budget_bytes",
        "RAM the index may hold before sealed chunks move to disk (--dedup-memory-bytes).",
        |stats| stats.memory_budget_bytes,
    ),
    ("once_dedup_index_disk_ids", "Message ids stored in chunks on disk.", |stats| stats.disk_ids),
    (
        "once_dedup_index_disk_chunk_bytes",
        "RAM held by the chunks on disk (filters and fences), part of once_dedup_index_bytes.",
        |stats| stats.disk_chunk_bytes,
    ),
    ("once_dedup_index_disk_chunks", "Sealed chunks on disk (their filters stay in RAM).", |stats| stats.disk_chunks),
    ("once_dedup_index_sealed_chunks", "Sealed chunks of the index (a lookup probes each).", |stats| {
        stats.sealed_chunks
    }),
];

struct NodeCollector {
    node: Arc<Node>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn counter_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = dedup_counters(&self.node.topics);
        let partition = |(topic, partition): &(String, i32)| {
            vec![("topic".to_string(), topic.clone()), ("partition".to_string(), partition.to_string())]
        };
        // Counters: OpenMetrics names their samples `<name>_total`.
        counter_family(
            &mut encoder,
            "once_dedup_duplicates_dropped",
            "Records not stored because their message id was already stored within the window.",
            counters.iter().map(|(key, counter)| (partition(key), counter.duplicates_dropped)),
        )?;
        counter_family(
            &mut encoder,
            "once_dedup_refused_batches",
            "Batches refused with a retriable error because a message id was held by an open transaction or a write in flight.",
            counters.iter().map(|(key, counter)| (partition(key), counter.refused_batches)),
        )?;
        let indexes: Vec<(Labels, DedupStats)> = self
            .node
            .topics
            .list()
            .iter()
            .filter_map(|topic| {
                topic.dedup().map(|dedup| (vec![("topic".to_string(), topic.name.clone())], dedup.stats()))
            })
            .collect();
        for (name, help, value) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, stats) in &indexes {
                let gauge = ConstGauge::new(i64::try_from(value(stats)).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// The node's metrics, as text.
pub fn render(node: &Arc<Node>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(NodeCollector { node: Arc::clone(node) }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding into a String cannot fail");
    assert!(text.ends_with("# EOF\n"), "an OpenMetrics exposition ends with # EOF");
    text
}
