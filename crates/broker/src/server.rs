//! The TCP server: a bounded number of connections, one task pair per connection, responses in request
//! order, graceful shutdown.
//!
//! Each connection has a reader that decodes requests and dispatches them, and a writer that awaits
//! responses in the order the requests came and writes them. Produce requests are queued to their
//! partitions as they are read, so one connection's pipelined produces share fsyncs; every other request
//! is finished before the next one is read, as Kafka does.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ResponseKind;
use once_wire::frame::request_frame_length;
use once_wire::{decode_request, encode_response, RequestError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::broker::{Broker, Dispatch, PendingResponse};
use crate::handlers::api_versions;

/// Responses a connection may have outstanding before its reader stops reading (backpressure).
const PIPELINE_DEPTH_MAX: usize = 32;
/// How long shutdown waits for connections to finish what they were doing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A connection with no request for this long is closed (Kafka's connections.max.idle.ms default),
/// so idle sockets cannot hold every connection slot.
const CONNECTION_IDLE_MAX: Duration = Duration::from_secs(600);
/// How often each dedup index frees expired ids and is snapshotted when due.
const DEDUP_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Ids one upkeep may rewrite per index while compacting or merging chunks (about 20 ms of work;
/// the topic's writers wait meanwhile), so freeing memory never stalls appends for long.
const DEDUP_EXPIRE_BUDGET: usize = 1 << 18;
/// Steps of disk work (spill, compaction or merge of chunk files, each bounded) per index per upkeep.
const DEDUP_DISK_STEPS: usize = 4;
/// How often the dedup counters that moved are logged.
const DEDUP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A response in the making, with what is needed to frame it.
struct Outgoing {
    correlation_id: i32,
    api_version: i16,
    response: PendingResponse,
    /// The request's share of the broker-wide request memory, returned once the response is written.
    _budget: OwnedSemaphorePermit,
}

pub struct Server {
    broker: Arc<Broker>,
    listener: TcpListener,
    /// The Prometheus endpoint's listener, if `--metrics-listen` is set.
    metrics: Option<TcpListener>,
}

impl Server {
    pub async fn bind(broker: Arc<Broker>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(&broker.config.listen).await?;
        let metrics = match &broker.config.metrics_listen {
            Some(address) => Some(TcpListener::bind(address).await?),
            None => None,
        };
        Ok(Server { broker, listener, metrics })
    }

    /// Where the metrics endpoint listens, if it does.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains connections and closes every log cleanly.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server { broker, listener, metrics } = self;
        let (stop, stopping) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(broker.config.connections_max));
        // Bytes of requests read but not yet answered, across all connections (queued.max.request.bytes).
        let request_budget = Arc::new(Semaphore::new(broker.config.queued_request_bytes_max));
        let retention = tokio::spawn(retention_loop(broker.clone(), stopping.clone()));
        let dedup = tokio::spawn(dedup_loop(broker.clone(), stopping.clone()));
        let metrics =
            metrics.map(|metrics| tokio::spawn(crate::metrics::serve(broker.clone(), metrics, stopping.clone())));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let Ok(permit) = connections.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, limit = broker.config.connections_max, "connection limit reached; closing new connection");
                            drop(socket);
                            continue;
                        };
                        let _ = socket.set_nodelay(true);
                        let broker = broker.clone();
                        let stopping = stopping.clone();
                        let request_budget = request_budget.clone();
                        tokio::spawn(async move {
                            serve_connection(broker, socket, stopping, request_budget).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        tracing::info!("shutting down: no new connections; draining");
        drop(listener);
        let _ = stop.send(true);
        let all = u32::try_from(broker.config.connections_max).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await.is_err() {
            tracing::warn!("connections still busy after the grace period; closing logs anyway");
        }
        retention.abort();
        dedup.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        broker.topics.close_all().await;
        broker.close_coordinators().await;
        tracing::info!("shutdown complete; logs closed cleanly");
    }
}

async fn retention_loop(broker: Arc<Broker>, mut stopping: watch::Receiver<bool>) {
    let interval = Duration::from_millis(broker.config.retention_check_interval_ms.max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopping.changed() => return,
        }
        let broker = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0);
            for topic in broker.topics.list() {
                for partition in topic.partitions() {
                    let expired = partition.expire_producers(now_ms, broker.config.producer_id_expiration_ms);
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
async fn dedup_loop(broker: Arc<Broker>, mut stopping: watch::Receiver<bool>) {
    let mut logged = std::collections::BTreeMap::new();
    let mut last_log = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DEDUP_UPKEEP_INTERVAL) => {}
            _ = stopping.changed() => return,
        }
        let upkeep = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis() as i64)
                .unwrap_or(0);
            for topic in upkeep.topics.list() {
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
            crate::metrics::log_dedup_counters(&broker, &mut logged);
        }
    }
}

async fn serve_connection(
    broker: Arc<Broker>,
    socket: TcpStream,
    mut stopping: watch::Receiver<bool>,
    request_budget: Arc<Semaphore>,
) {
    let peer = socket.peer_addr().ok();
    let (mut reader, writer) = socket.into_split();
    let (outgoing, queue) = mpsc::channel::<Outgoing>(PIPELINE_DEPTH_MAX);
    let writing = tokio::spawn(write_responses(writer, queue));
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, broker.config.request_bytes_max, &request_budget) => frame,
            _ = stopping.changed() => break,
        };
        let (frame, budget) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(reason) => {
                tracing::debug!(?peer, %reason, "closing connection");
                break;
            }
        };
        let (correlation_id, api_version, response) = match decode_request(frame) {
            Ok(request) => {
                let correlation_id = request.header.correlation_id;
                let api_version = request.api_version;
                match broker.dispatch(request) {
                    Dispatch::Queued(pending) => (correlation_id, api_version, pending),
                    Dispatch::InOrder(pending) => {
                        // Shutdown does not wait for a long poll to run out.
                        let response = tokio::select! {
                            response = pending => response,
                            _ = stopping.changed() => break,
                        };
                        let ready: PendingResponse = Box::pin(async move { response });
                        (correlation_id, api_version, ready)
                    }
                }
            }
            Err(RequestError::ApiVersionsUnsupported { correlation_id, api_version }) => {
                tracing::debug!(?peer, api_version, "ApiVersions version unsupported; answering in v0");
                let fallback: PendingResponse = Box::pin(async { Some(api_versions::unsupported_version_response()) });
                (correlation_id, 0, fallback)
            }
            Err(RequestError::LegacyProduce { request, api_version, correlation_id }) => {
                tracing::debug!(?peer, api_version, "legacy Produce is not served; answering UNSUPPORTED_VERSION");
                let answer = crate::handlers::produce::unsupported_version(*request);
                let answer: PendingResponse = Box::pin(async move { answer });
                // Encoded in the request's own layout (the wire crate writes v0–v2 by hand).
                (correlation_id, api_version, answer)
            }
            Err(error) => {
                tracing::warn!(?peer, %error, "closing connection after an unanswerable request");
                break;
            }
        };
        if outgoing.send(Outgoing { correlation_id, api_version, response, _budget: budget }).await.is_err() {
            break;
        }
    }
    drop(outgoing);
    let _ = writing.await;
}

/// Reads one frame and takes its bytes from the broker-wide request budget. `Ok(None)` is a clean end
/// of stream between frames.
async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
    budget: &Arc<Semaphore>,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, String> {
    let mut prefix = [0u8; 4];
    match tokio::time::timeout(CONNECTION_IDLE_MAX, reader.read_exact(&mut prefix)).await {
        Err(_) => return Err("idle for longer than connections.max.idle.ms".to_string()),
        Ok(Ok(_)) => {}
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(error)) => return Err(error.to_string()),
    }
    let length = request_frame_length(prefix, limit).map_err(|error| error.to_string())?;
    // Waits while other requests hold the memory: backpressure instead of unbounded buffering.
    let permits = u32::try_from(length.max(1)).map_err(|_| format!("frame of {length} bytes"))?;
    let permit = budget.clone().acquire_many_owned(permits).await.map_err(|error| error.to_string())?;
    // Read into spare capacity (no zeroing of the buffer first: that was 7% of broker CPU under
    // load); `take` stops at the frame's end so the next frame's bytes stay in the socket.
    let mut frame = BytesMut::with_capacity(length);
    let mut body = (&mut *reader).take(length as u64);
    while frame.len() < length {
        let read =
            body.read_buf(&mut frame).await.map_err(|error| format!("reading a {length}-byte frame: {error}"))?;
        if read == 0 {
            return Err(format!("connection closed {} bytes into a {length}-byte frame", frame.len()));
        }
    }
    assert_eq!(frame.len(), length, "a frame is read whole and no further");
    Ok(Some((frame.freeze(), permit)))
}

async fn write_responses(writer: tokio::net::tcp::OwnedWriteHalf, mut queue: mpsc::Receiver<Outgoing>) {
    let mut writer = BufWriter::new(writer);
    while let Some(outgoing) = queue.recv().await {
        let Some(response) = outgoing.response.await else { continue };
        if let Err(error) = write_one(&mut writer, outgoing.correlation_id, outgoing.api_version, &response).await {
            tracing::debug!(%error, "writing response failed; closing connection");
            return;
        }
        // Flush when nothing else is ready, so pipelined responses share a write.
        if queue.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_one(
    writer: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    correlation_id: i32,
    api_version: i16,
    response: &ResponseKind,
) -> Result<(), String> {
    let bytes = encode_response(api_version, correlation_id, response).map_err(|error| {
        tracing::error!(%error, "response encoding failed");
        error.to_string()
    })?;
    writer.write_all(&bytes).await.map_err(|error| error.to_string())
}
