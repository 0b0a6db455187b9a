//! Metrics a user can scrape: a Prometheus text endpoint (`--metrics-listen`, off by default) and
//! the message-id deduplication counters, also logged periodically at INFO.
//!
//! The endpoint is deliberately tiny: one HTTP/1.1 `GET /metrics` per connection, handled one at a
//! time with a timeout, so a slow or hostile scraper costs at most one task and a few KiB.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use once_partition::DedupStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::broker::Broker;

/// Largest request head read from a scraper.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long one scrape may take, reading and writing.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The dedup counters of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionDedupCounters {
    /// Records not stored because their message id was a duplicate.
    pub duplicates_dropped: u64,
    /// Batches refused (retriably) because an id was held by an open transaction or a write in flight.
    pub refused_batches: u64,
}

/// Every dedup partition's counters, by (topic, partition).
pub fn dedup_counters(broker: &Broker) -> BTreeMap<(String, i32), PartitionDedupCounters> {
    let mut counters = BTreeMap::new();
    for topic in broker.topics.list() {
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
pub fn log_dedup_counters(broker: &Broker, previous: &mut BTreeMap<(String, i32), PartitionDedupCounters>) {
    for ((topic, partition), now) in dedup_counters(broker) {
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

/// Reads one gauge of an index's stats.
type Gauge = fn(&DedupStats) -> u64;

/// The Prometheus text exposition of the broker's metrics.
pub fn render(broker: &Broker) -> String {
    let mut out = String::new();
    let counters = dedup_counters(broker);
    let mut family = |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = (String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let partition_labels = |(topic, partition): &(String, i32)| format!("topic=\"{topic}\",partition=\"{partition}\"");
    family(
        "once_dedup_duplicates_dropped_total",
        "counter",
        "Records not stored because their message id was already stored within the window.",
        &mut counters.iter().map(|(key, counter)| (partition_labels(key), counter.duplicates_dropped)),
    );
    family(
        "once_dedup_refused_batches_total",
        "counter",
        "Batches refused with a retriable error because a message id was held by an open transaction or a write in flight.",
        &mut counters.iter().map(|(key, counter)| (partition_labels(key), counter.refused_batches)),
    );
    let indexes: Vec<(String, DedupStats)> = broker
        .topics
        .list()
        .iter()
        .filter_map(|topic| topic.dedup().map(|dedup| (format!("topic=\"{}\"", topic.name), dedup.stats())))
        .collect();
    let gauges: [(&str, &str, Gauge); 8] = [
        (
            "once_dedup_index_ids",
            "Message ids the topic's index stores: live, or expired and not yet freed.",
            |stats| stats.stored_ids,
        ),
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
        ("once_dedup_index_disk_chunks", "Sealed chunks on disk (their filters stay in RAM).", |stats| {
            stats.disk_chunks
        }),
        ("once_dedup_index_sealed_chunks", "Sealed chunks of the index (a lookup probes each).", |stats| {
            stats.sealed_chunks
        }),
    ];
    for (name, help, value) in gauges {
        family(name, "gauge", help, &mut indexes.iter().map(|(labels, stats)| (labels.clone(), value(stats))));
    }
    out
}

/// Serves `GET /metrics` on `listener` until `stopping` changes.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, mut stopping: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.changed() => return,
        };
        match accepted {
            Ok((socket, _)) => {
                if tokio::time::timeout(SCRAPE_TIMEOUT, answer(&broker, socket)).await.is_err() {
                    tracing::debug!("metrics scrape timed out");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(broker: &Arc<Broker>, mut socket: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&chunk[..read]),
        }
        if head.len() > REQUEST_BYTES_MAX {
            return;
        }
    }
    let request_line = head.split(|byte| *byte == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|byte| *byte == b' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let (status, body) = match (method, path) {
        (b"GET", b"/metrics") => {
            let broker = broker.clone();
            let body = tokio::task::spawn_blocking(move || render(&broker)).await.unwrap_or_default();
            ("200 OK", body)
        }
        _ => ("404 Not Found", "try GET /metrics\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}
