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

/// A gauge family: name, help, samples.
type GaugeFamily = (&'static str, &'static str, Vec<(Labels, i64)>);

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
        self.encode_storage(&mut encoder)?;
        self.encode_exactly_once(&mut encoder)?;
        self.encode_requests(&mut encoder)?;
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

/// A latency histogram's buckets as prometheus-client encodes them: it writes le="+Inf" for an
/// upper bound of f64::MAX (its own histograms' last bucket), not for f64::INFINITY.
fn prometheus_buckets(snapshot: &once_log::stats::HistogramSnapshot) -> Vec<(f64, u64)> {
    snapshot.buckets.iter().map(|&(bound, count)| (if bound.is_infinite() { f64::MAX } else { bound }, count)).collect()
}

impl NodeCollector {
    /// The Kafka edge's requests per API, its connections, and authorization refusals.
    fn encode_requests(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "once_request_seconds",
            "Kafka requests by API: time from the request read to its response ready (a Produce's includes its fsync; a Fetch's its long poll), seconds.",
            None,
            MetricType::Histogram,
        )?;
        for (api, latency) in self.node.requests.snapshot() {
            let labels: Labels = vec![("api".to_string(), api.to_string())];
            family.encode_family(&labels)?.encode_histogram::<Labels>(
                latency.sum_seconds,
                latency.count,
                &prometheus_buckets(&latency),
                None,
            )?;
        }
        let load = |value: &std::sync::atomic::AtomicU64| value.load(std::sync::atomic::Ordering::Relaxed);
        let connections = &self.node.connections;
        let family = encoder.encode_descriptor(
            "once_connections",
            "Kafka client connections open now.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(load(&connections.open)).unwrap_or(i64::MAX)).encode(family)?;
        let family = encoder.encode_descriptor(
            "once_fetch_held_bytes",
            "Record bytes of Kafka Fetch responses read (or being read) and not yet written to their clients; past the fetch memory budget (the size of --queued-request-bytes-max) new fetches read less.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(self.node.fetch_memory.held()).unwrap_or(i64::MAX)).encode(family)?;
        let counters = [
            (
                "once_connections_accepted",
                "Kafka client connections accepted since start.",
                load(&connections.accepted),
            ),
            (
                "once_connections_refused",
                "Connections closed at once because --connections-max were open.",
                load(&connections.refused),
            ),
            (
                "once_authorization_denials",
                "Requests, or parts of them, refused by the ACLs since start (--authorization true).",
                self.node.authorizer.denials(),
            ),
        ];
        let (committed, aborted) = self.node.txns.completed();
        let transactions = [
            (
                "once_transactions_committed",
                "Transactions committed since start (markers written, CompleteCommit durable).",
                committed,
            ),
            (
                "once_transactions_aborted",
                "Transactions aborted since start (markers written, CompleteAbort durable).",
                aborted,
            ),
        ];
        for (name, help, value) in counters.into_iter().chain(transactions) {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(family)?;
        }
        let topics = self.node.topics.list();
        type Read = fn(&once_node::topics::TopicTraffic) -> u64;
        let traffic: [(&str, &str, Read); 3] = [
            ("once_topic_produced_bytes", "Bytes of record batches stored by Produce, per topic.", |traffic| {
                traffic.produced_bytes.load(std::sync::atomic::Ordering::Relaxed)
            }),
            (
                "once_topic_produced_records",
                "Records stored by Produce (before deduplication), per topic.",
                |traffic| traffic.produced_records.load(std::sync::atomic::Ordering::Relaxed),
            ),
            ("once_topic_fetched_bytes", "Bytes of record batches answered to Fetch, per topic.", |traffic| {
                traffic.fetched_bytes.load(std::sync::atomic::Ordering::Relaxed)
            }),
        ];
        for (name, help, read) in traffic {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for topic in &topics {
                let labels: Labels = vec![("topic".to_string(), topic.name.clone())];
                ConstCounter::new(read(&topic.traffic)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// The fixed names operators' dashboards rely on (issue 20): fsync latency, LSO lag, open
    /// transactions, consumer-group lag computed on the broker.
    fn encode_exactly_once(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let fsync = once_log::stats::FSYNC.snapshot();
        let mut family = encoder.encode_descriptor(
            "once_fsync_seconds",
            "fdatasync latency of segment data (every log: partitions, offsets, transactions), seconds.",
            None,
            MetricType::Histogram,
        )?;
        family.encode_histogram::<Labels>(fsync.sum_seconds, fsync.count, &prometheus_buckets(&fsync), None)?;
        let sizes = [
            (
                "once_fsync_bytes",
                "Batch bytes one sync of a log (partition, offsets, transactions) made durable: appended since the sync before.",
                once_log::stats::SYNC_BYTES.snapshot(),
            ),
            (
                "once_group_commit_batches",
                "Writes (batches, transaction markers) a partition writer answered after one sync: the group-commit size.",
                once_partition::GROUP_COMMIT.snapshot(),
            ),
        ];
        for (name, help, snapshot) in sizes {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            family.encode_histogram::<Labels>(
                snapshot.sum_seconds,
                snapshot.count,
                &prometheus_buckets(&snapshot),
                None,
            )?;
        }

        let partition = |topic: &str, partition: i32| {
            vec![("topic".to_string(), topic.to_string()), ("partition".to_string(), partition.to_string())]
        };
        let mut family = encoder.encode_descriptor(
            "once_partition_lso_lag",
            "High watermark minus last stable offset: records read_committed consumers cannot read yet because a transaction is open.",
            None,
            MetricType::Gauge,
        )?;
        for ((topic, index), lag) in once_node::stats::lso_lags(&self.node.topics) {
            ConstGauge::new(i64::try_from(lag).unwrap_or(i64::MAX))
                .encode(family.encode_family(&partition(&topic, index))?)?;
        }
        let (open, oldest_ms) = once_node::stats::open_transactions(&self.node.txns, now_ms());
        let gauges = [
            ("once_transactions_open", "Transactions open now: ongoing, or decided with markers still to write.", open as i64),
            (
                "once_transactions_oldest_open_seconds",
                "Age of the oldest open transaction (0 when none is open): a hanging one holds back read_committed consumers.",
                oldest_ms / 1000,
            ),
        ];
        for (name, help, value) in gauges {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "once_consumer_group_lag",
            "High watermark minus the group's committed offset, per partition with a committed offset.",
            None,
            MetricType::Gauge,
        )?;
        for ((group, topic, index), lag) in once_node::stats::consumer_group_lags(&self.node.groups, &self.node.topics)
        {
            let mut labels = vec![("group".to_string(), group)];
            labels.extend(partition(&topic, index));
            ConstGauge::new(i64::try_from(lag).unwrap_or(i64::MAX)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Where writes stand: the free-space floor, free space, refusals, latched partitions.
    fn encode_storage(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let floor = &self.node.floor;
        let space = floor.space();
        let below = floor.refusing();
        let latched: Vec<Labels> = self
            .node
            .topics
            .list()
            .iter()
            .flat_map(|topic| topic.partitions().into_iter().map(move |partition| (topic.name.clone(), partition)))
            .filter(|(_, partition)| partition.is_failed())
            .map(|(topic, partition)| {
                vec![("topic".to_string(), topic), ("partition".to_string(), partition.id().partition.to_string())]
            })
            .collect();
        let gauges: [GaugeFamily; 4] = [
            (
                "once_storage_free_bytes",
                "Free bytes on the data directory's filesystem (to an unprivileged writer).",
                space.map(|space| (vec![], space.free as i64)).into_iter().collect(),
            ),
            (
                "once_storage_min_free_bytes",
                "The free-space floor (--min-free-bytes): below it produce is refused, retriably.",
                vec![(vec![], floor.floor() as i64)],
            ),
            (
                "once_storage_refusing_writes",
                "1 where writes are refused: reason=\"disk_below_floor\" (resumes by itself when space is freed) or reason=\"latched\" per partition (after an I/O error, until the broker restarts).",
                std::iter::once((vec![("reason".to_string(), "disk_below_floor".to_string())], i64::from(below)))
                    .chain(latched.into_iter().map(|mut labels| {
                        labels.push(("reason".to_string(), "latched".to_string()));
                        (labels, 1)
                    }))
                    .collect(),
            ),
            (
                "once_storage_open_file_limit",
                "The soft open-file limit (raised to the hard one at start); one file per partition.",
                once_node::storage::open_file_limit()
                    .map(|(soft, _)| (vec![], i64::try_from(soft).unwrap_or(i64::MAX)))
                    .into_iter()
                    .collect(),
            ),
        ];
        for (name, help, samples) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, value) in samples {
                if labels.is_empty() {
                    // One sample, no labels: written `name value`, not `name{} value`.
                    ConstGauge::new(value).encode(family)?;
                    break;
                }
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "once_storage_refused_produce",
            "Produce requests (and HTTP records) refused because free space was below the floor.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(floor.refused()).encode(family)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
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
