//! Metrics a user can scrape: a Prometheus text endpoint (`--metrics-listen`, off by default) serving
//! the message-id deduplication counters (`once_node::stats`, also logged periodically at INFO).
//!
//! The endpoint is deliberately tiny: one HTTP/1.1 `GET /metrics` per connection, handled one at a
//! time with a timeout, so a slow or hostile scraper costs at most one task and a few KiB.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use once_node::stats::dedup_counters;
use once_node::Node;
use once_partition::DedupStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest request head read from a scraper.
const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long one scrape may take, reading and writing.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads one gauge of an index's stats.
type Gauge = fn(&DedupStats) -> u64;

/// The Prometheus text exposition of the node's metrics.
pub fn render(node: &Node) -> String {
    let mut out = String::new();
    let counters = dedup_counters(&node.topics);
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
    let indexes: Vec<(String, DedupStats)> = node
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
pub async fn serve(node: Arc<Node>, listener: TcpListener, mut stopping: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.changed() => return,
        };
        match accepted {
            Ok((socket, _)) => {
                if tokio::time::timeout(SCRAPE_TIMEOUT, answer(&node, socket)).await.is_err() {
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

async fn answer(node: &Arc<Node>, mut socket: TcpStream) {
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
            let node = node.clone();
            let body = tokio::task::spawn_blocking(move || render(&node)).await.unwrap_or_default();
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
