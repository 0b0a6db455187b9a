//! [`Connection`]: one client connection's frame I/O. A reader decodes requests and dispatches them;
//! a writer task awaits responses in the order the requests came and writes them. Produce requests
//! are queued to their partitions as they are read, so one connection's pipelined produces share
//! fsyncs; every other request is finished before the next one is read, as Kafka does.
//!
//! Every read is bounded: a frame by `request_bytes_max`, the bytes read but not yet answered by the
//! broker-wide request budget, the responses outstanding by `PIPELINE_DEPTH_MAX`, the responses with
//! records to one queued or being written (the next finished one waits: two per connection at most; a
//! client that stops reading its socket stops being read from, as Kafka mutes a channel until its
//! response is sent), their record bytes across connections by the fetch memory budget
//! (`once_node::fetch_memory`: fetches read less once it is spent), and an idle connection by
//! `connections_max_idle_ms` (Kafka's connections.max.idle.ms, 10 minutes by default) — which also
//! bounds how long a response write or flush may take no bytes, so a client that never reads cannot
//! hold its connection and the responses queued on it for good.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ResponseKind;
use kafka_protocol::messages::{ApiKey, RequestKind};
use once_log::buffer_pool::{BufferPool, PoolBounds};
use once_node::fetch_memory::Held;
use once_node::listeners::Listener;
use once_node::Node;
use once_wire::frame::request_frame_length;
use once_wire::{copied_record_bytes, decode_request, encode_response_parts, record_bytes, RequestError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::access::Access;
use crate::dispatch::{dispatch_on, Dispatch, PendingResponse};
use crate::handlers::api_versions;
use crate::sasl::Sasl;
use once_acl::Principal;
use once_node::Session;

/// A connection's byte stream: a TCP socket, or TLS over one.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Requests are read through a buffer: one `recv` takes a small frame's length prefix, its body and
/// any frames pipelined behind it, where unbuffered reads took about three system calls per request (the
/// prefix, the body, and the read that finds the socket empty).
type Reader = BufReader<ReadHalf<Box<dyn Stream>>>;

/// Bytes a connection's read buffer holds at most: a small request arrives whole in one `recv`; a
/// frame larger than the buffer is read into its own allocation directly, past the buffer. Allocated
/// per connection and outside the request budget (`queued.max.request.bytes`): 16 MiB at 1,024
/// connections.
const READ_BUFFER_BYTES: usize = 16 * 1024;
type Writer = WriteHalf<Box<dyn Stream>>;

/// Frames of 64 KiB to 8 MiB are read into buffers used again (`once_log::buffer_pool`); at most 64 MiB of
/// free ones are kept, beyond the request budget.
const FRAME_POOL: PoolBounds = PoolBounds { min: 64 * 1024, max: 8 * 1024 * 1024, keep: 64 * 1024 * 1024 };
static FRAMES: std::sync::LazyLock<Arc<BufferPool>> =
    std::sync::LazyLock::new(|| Arc::new(BufferPool::new(FRAME_POOL)));

/// Closes of unauthenticated connections are logged every few seconds at most (anyone can cause them).
static UNAUTHENTICATED_CLOSES: once_node::storage::EveryFewSeconds = once_node::storage::EveryFewSeconds::new();
/// How long a failed login waits before its answer (Kafka's connection.failed.authentication.delay.ms).
const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

/// How long a connection on a SASL listener has to authenticate.
const SASL_AUTHENTICATION_MAX: Duration = Duration::from_secs(10);

/// Responses a connection may have outstanding before its reader stops reading (backpressure).
const PIPELINE_DEPTH_MAX: usize = 32;

/// A connection's idle time, and when its writer last wrote response bytes to its socket: a client still
/// taking a long response is not idle (Kafka counts any activity on the socket), so the wait for its next
/// request runs from the later of the two. A frame's body must also keep coming (`read_body`).
struct Idle {
    max: Duration,
    since: tokio::time::Instant,
    /// Milliseconds from `since` to the last write that took bytes.
    wrote_at_ms: AtomicU64,
}

impl Idle {
    fn new(max: Duration) -> Idle {
        Idle { max, since: tokio::time::Instant::now(), wrote_at_ms: AtomicU64::new(0) }
    }

    /// The writer handed the client some bytes.
    fn wrote(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wrote_at_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// When the connection is idle for `max` unless something happens before: `max` after the later of
    /// `waiting_since` and the last write.
    fn deadline(&self, waiting_since: tokio::time::Instant) -> tokio::time::Instant {
        let wrote = self.since + Duration::from_millis(self.wrote_at_ms.load(Ordering::Relaxed));
        waiting_since.max(wrote) + self.max
    }
}

/// A response in the making, with what is needed to frame it.
struct Outgoing {
    correlation_id: i32,
    api_version: i16,
    /// The request's API and when its frame was read, for the per-API metrics (none for frames
    /// answered without decoding).
    timed: Option<(ApiKey, Instant)>,
    response: PendingResponse,
    /// The request's share of the broker-wide request memory, returned once the response is written.
    _budget: OwnedSemaphorePermit,
    /// The connection's one slot for a response with records queued or being written (responses queued
    /// before they are ready take none: a Produce answer holds no records).
    _queued: Option<OwnedSemaphorePermit>,
    /// Its record bytes in the broker-wide count that sizes new fetches.
    _held: Option<Held>,
}

/// One client connection, from its first frame to its close.
pub struct Connection {
    /// What requests are dispatched to.
    node: Arc<Node>,
    /// For logs only.
    peer: Option<SocketAddr>,
    /// The listener it came in on: its advertised address, whether SASL is asked for.
    listener: Arc<Listener>,
    reader: Reader,
    writer: Writer,
    /// Bytes of requests read but not yet answered, shared by every connection of the server.
    request_budget: Arc<Semaphore>,
    /// The subject of the client's TLS certificate (mTLS): the principal when SASL names none.
    certificate_subject: Option<String>,
    /// How long the connection may wait for the client's next request, or for it to take a response.
    idle_max: Duration,
}

impl Connection {
    pub fn new(
        node: Arc<Node>,
        stream: Box<dyn Stream>,
        peer: Option<SocketAddr>,
        listener: Arc<Listener>,
        request_budget: Arc<Semaphore>,
    ) -> Connection {
        let (reader, writer) = tokio::io::split(stream);
        let reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
        // Idle sockets cannot hold every connection slot, nor a client that takes no response bytes the
        // connection and the responses queued on it.
        let idle_max = Duration::from_millis(node.config.connections_max_idle_ms.max(1));
        Connection { node, peer, listener, reader, writer, request_budget, certificate_subject: None, idle_max }
    }

    /// The subject of the certificate the client presented, if any.
    pub fn with_certificate_subject(mut self, subject: Option<String>) -> Connection {
        self.certificate_subject = subject;
        self
    }

    /// Serves requests until the client closes, an unanswerable request arrives, or `stopping`
    /// changes; then lets the writer finish the responses already queued.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let Connection { node, peer, listener, mut reader, writer, request_budget, certificate_subject, idle_max } =
            self;
        // Who asks: the SASL user once authenticated, else the certificate's subject, else
        // User:ANONYMOUS (Kafka's principals). Built once the connection may send requests.
        let mut access: Option<Access> = None;
        let mut sasl = Sasl::new(listener.protocol.sasl(), node.credentials.clone());
        // Until a SASL listener's client has authenticated, its frames are small (the SASL
        // messages): a stranger cannot make the broker buffer large requests.
        const UNAUTHENTICATED_FRAME_MAX: usize = 64 * 1024;
        let authenticate_by = tokio::time::Instant::now() + SASL_AUTHENTICATION_MAX;
        let (outgoing, queue) = mpsc::channel::<Outgoing>(PIPELINE_DEPTH_MAX);
        let idle = Arc::new(Idle::new(idle_max));
        let writing = tokio::spawn(write_responses(node.clone(), writer, queue, idle.clone()));
        // One response with records queued or being written; the next finished one waits for it.
        let records_slot = Arc::new(Semaphore::new(1));
        loop {
            let unauthenticated = !sasl.admits_requests();
            let frame = tokio::select! {
                frame = read_frame(
                    &mut reader,
                    if unauthenticated { UNAUTHENTICATED_FRAME_MAX } else { node.config.request_bytes_max },
                    &request_budget,
                    &FRAMES,
                    &idle,
                ) => frame,
                _ = stopping.changed() => break,
                // The writer gave up (the client stopped taking responses): close now, not after
                // another idle time.
                () = outgoing.closed() => break,
                // A SASL connection that has not authenticated in time is closed, however slowly
                // it trickles its bytes in.
                _ = tokio::time::sleep_until(authenticate_by), if unauthenticated => {
                    if let Some(suppressed) = UNAUTHENTICATED_CLOSES.due() {
                        tracing::warn!(?peer, listener = %listener.name, suppressed, "no SASL authentication within {SASL_AUTHENTICATION_MAX:?}; closing connection");
                    }
                    break;
                }
            };
            let (frame, budget) = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(reason) => {
                    tracing::debug!(?peer, %reason, "closing connection");
                    break;
                }
            };
            let mut close_after = false;
            let read_at = Instant::now();
            let mut timed = None;
            let (mut queued, mut held) = (None, None);
            let (correlation_id, api_version, response) = match decode_request(frame) {
                Ok(request) => {
                    timed = Some((request.api_key, read_at));
                    let correlation_id = request.header.correlation_id;
                    let api_version = request.api_version;
                    let sasl_answer = match &request.body {
                        RequestKind::SaslHandshake(body) => Some(sasl.handshake(body)),
                        RequestKind::SaslAuthenticate(body) => Some(sasl.authenticate(body, peer)),
                        RequestKind::ApiVersions(_) => None,
                        _ if !sasl.admits_requests() => {
                            if let Some(suppressed) = UNAUTHENTICATED_CLOSES.due() {
                                tracing::warn!(?peer, api = ?request.api_key, listener = %listener.name, suppressed, "request before SASL authentication; closing connection");
                            }
                            break;
                        }
                        _ => None,
                    };
                    if let Some(answer) = sasl_answer {
                        close_after = answer.close;
                        if answer.failed {
                            // Kafka's connection.failed.authentication.delay.ms: a failed login is
                            // answered late, so guessing is slow.
                            tokio::time::sleep(FAILED_AUTHENTICATION_DELAY).await;
                        }
                        let ready: PendingResponse = Box::pin(async move { Some(answer.response) });
                        if outgoing
                            .send(Outgoing {
                                correlation_id,
                                api_version,
                                timed,
                                response: ready,
                                _budget: budget,
                                _queued: None,
                                _held: None,
                            })
                            .await
                            .is_err()
                            || close_after
                        {
                            break;
                        }
                        continue;
                    }
                    // Kept once it can no longer change: on a SASL listener, after authentication
                    // (ApiVersions comes before it, as User:ANONYMOUS, and needs no permission).
                    let settled = !listener.protocol.sasl() || sasl.principal().is_some();
                    let fresh;
                    let access = match (&access, settled) {
                        (Some(kept), _) => kept,
                        (None, settled) => {
                            let principal = match (sasl.principal(), &certificate_subject) {
                                (Some(user), _) => Principal::user(user),
                                (None, Some(subject)) => Principal::user(subject),
                                (None, None) => Principal::anonymous(),
                            };
                            fresh =
                                Access::new(&node, Session::new(principal, peer.map(|peer| peer.ip().to_canonical())));
                            if settled {
                                access.insert(fresh.clone())
                            } else {
                                &fresh
                            }
                        }
                    };
                    let in_order = match dispatch_on(&node, request, &listener.advertised, access) {
                        Dispatch::Queued(pending) => Err(pending),
                        Dispatch::InOrder(pending) => Ok(tokio::select! {
                            response = pending => (response, None),
                            // Shutdown does not wait for a long poll to run out.
                            _ = stopping.changed() => break,
                        }),
                        Dispatch::Fetch(pending) => Ok(tokio::select! {
                            (response, reserved) = pending => (Some(response), Some(reserved)),
                            _ = stopping.changed() => break,
                        }),
                    };
                    match in_order {
                        Err(queued) => (correlation_id, api_version, queued),
                        Ok((response, reserved)) => {
                            // Counted across connections until written: new fetches read less while
                            // responses hold the broker's budget (`once_node::fetch_memory`). A fetch's
                            // reservation becomes its record bytes in one step.
                            let records = response.as_ref().map_or(0, record_bytes);
                            held = match reserved {
                                Some(reserved) => (records > 0).then(|| reserved.keep(records)),
                                None => {
                                    // Only Fetch responses carry records, and they come with a reservation.
                                    debug_assert_eq!(records, 0, "records in a response without a reservation");
                                    (records > 0).then(|| node.fetch_memory.hold(records))
                                }
                            };
                            // A client that does not take its responses stops being read from: the
                            // reader waits here until the one before is written.
                            if records > 0 {
                                queued = tokio::select! {
                                    permit = records_slot.clone().acquire_owned() => match permit {
                                        Ok(permit) => Some(permit),
                                        Err(_) => break,
                                    },
                                    _ = stopping.changed() => break,
                                };
                            }
                            let ready: PendingResponse = Box::pin(async move { response });
                            (correlation_id, api_version, ready)
                        }
                    }
                }
                Err(RequestError::ApiVersionsUnsupported { correlation_id, api_version }) => {
                    tracing::debug!(?peer, api_version, "ApiVersions version unsupported; answering in v0");
                    let fallback: PendingResponse =
                        Box::pin(async { Some(api_versions::unsupported_version_response()) });
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
            let outgoing_response = Outgoing {
                correlation_id,
                api_version,
                timed,
                response,
                _budget: budget,
                _queued: queued,
                _held: held,
            };
            if outgoing.send(outgoing_response).await.is_err() || close_after {
                break;
            }
        }
        drop(outgoing);
        let _ = writing.await;
    }
}

/// Reads one frame and takes its bytes from the broker-wide request budget. `Ok(None)` is a clean end
/// of stream between frames.
async fn read_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    limit: usize,
    budget: &Arc<Semaphore>,
    frames: &Arc<BufferPool>,
    idle: &Idle,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, String> {
    let mut prefix = [0u8; 4];
    let waiting_since = tokio::time::Instant::now();
    let prefix_read = {
        let read = reader.read_exact(&mut prefix);
        tokio::pin!(read);
        loop {
            let deadline = idle.deadline(waiting_since);
            match tokio::time::timeout_at(deadline, &mut read).await {
                Ok(result) => break result,
                // Responses went out meanwhile: the idle time runs from the last of them.
                Err(_) if idle.deadline(waiting_since) > deadline => continue,
                Err(_) => return Err("idle for longer than connections.max.idle.ms".to_string()),
            }
        }
    };
    match prefix_read {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.to_string()),
    }
    let length = request_frame_length(prefix, limit).map_err(|error| error.to_string())?;
    // Waits while other requests hold the memory: backpressure instead of unbounded buffering.
    let permits = u32::try_from(length.max(1)).map_err(|_| format!("frame of {length} bytes"))?;
    let permit = budget.clone().acquire_many_owned(permits).await.map_err(|error| error.to_string())?;
    // Read into spare capacity (no zeroing of the buffer first: that was 7% of broker CPU under
    // load); `take` stops at the frame's end so the next frame's bytes stay in the read buffer. A
    // large frame is read into a buffer of the pool, which it goes back to once dropped.
    let frame = if frames.pools(length) {
        let mut buffer = frames.take(length);
        read_body(reader, length, &mut buffer, idle.max).await?;
        frames.share(buffer)
    } else {
        let mut buffer = BytesMut::with_capacity(length);
        read_body(reader, length, &mut buffer, idle.max).await?;
        buffer.freeze()
    };
    assert_eq!(frame.len(), length, "a frame is read whole and no further");
    Ok(Some((frame, permit)))
}

/// Reads a frame's `length` bytes of body into `frame` (empty; with room for them, so that reading
/// never grows it: a pooled buffer stays the one taken).
async fn read_body(
    reader: &mut (impl AsyncReadExt + Unpin),
    length: usize,
    frame: &mut (impl BufMut + AsRef<[u8]>),
    idle_max: Duration,
) -> Result<(), String> {
    assert!(frame.as_ref().is_empty(), "a frame is read into an empty buffer");
    let mut body = (&mut *reader).take(length as u64);
    let mut filled = 0;
    while filled < length {
        // A client that stops part-way through a frame is idle too: it would otherwise hold the frame's
        // share of the request budget for good.
        let read = match tokio::time::timeout(idle_max, body.read_buf(frame)).await {
            Ok(read) => read.map_err(|error| format!("reading a {length}-byte frame: {error}"))?,
            Err(_) => return Err(format!("no byte for {idle_max:?} {filled} bytes into a {length}-byte frame")),
        };
        if read == 0 {
            return Err(format!("connection closed {filled} bytes into a {length}-byte frame"));
        }
        filled += read;
    }
    assert_eq!(frame.as_ref().len(), length, "the body read whole and no further");
    Ok(())
}

/// Writes the responses in the order of their requests. Each write must take some bytes, and each
/// flush and the final shutdown (at most a buffer's worth) finish, within `idle_max`, else the
/// connection is given up: its queue is dropped with every
/// response in it, which returns their memory and ends the reader's wait for room.
async fn write_responses(node: Arc<Node>, writer: Writer, mut queue: mpsc::Receiver<Outgoing>, idle: Arc<Idle>) {
    let idle_max = idle.max;
    let mut writer = BufWriter::new(writer);
    while let Some(outgoing) = queue.recv().await {
        let response = outgoing.response.await;
        if let Some((api_key, read_at)) = outgoing.timed {
            node.requests.record(api_key as i16, || format!("{api_key:?}"), read_at.elapsed());
        }
        let Some(response) = response else { continue };
        let written = write_one(&mut writer, outgoing.correlation_id, outgoing.api_version, response, &idle).await;
        if let Err(error) = written {
            tracing::debug!(%error, "writing response failed; closing connection");
            return;
        }
        // Flush when nothing else is ready, so pipelined responses share a write.
        if queue.is_empty() {
            if !matches!(tokio::time::timeout(idle_max, writer.flush()).await, Ok(Ok(()))) {
                tracing::debug!("flushing responses failed or stalled; closing connection");
                return;
            }
            idle.wrote();
        }
    }
    let _ = tokio::time::timeout(idle_max, writer.shutdown()).await;
}

/// Responses whose encoding copies more record bytes than this are encoded on a blocking thread: tens of
/// milliseconds of copying on a runtime worker would stall the other connections' tasks queued on it,
/// producers waiting for their acks among them. Only record sets under `SHARED_RECORDS_MIN` are copied
/// (`encode_response_parts`): a catch-up fetch's large sets (up to `fetch_bytes_max`, 55 MiB by
/// default) are written from the buffers they were read into, so its encoding is its headers.
const ENCODE_INLINE_BYTES_MAX: usize = 1024 * 1024;

async fn write_one(
    writer: &mut BufWriter<Writer>,
    correlation_id: i32,
    api_version: i16,
    response: ResponseKind,
    idle: &Idle,
) -> Result<(), String> {
    let idle_max = idle.max;
    let large = copied_record_bytes(&response) > ENCODE_INLINE_BYTES_MAX;
    let encode = move || {
        encode_response_parts(api_version, correlation_id, &response).map_err(|error| {
            tracing::error!(%error, "response encoding failed");
            error.to_string()
        })
    };
    let parts = if large {
        tokio::task::spawn_blocking(encode).await.map_err(|error| format!("response encoding task: {error}"))??
    } else {
        encode()?
    };
    // A part of a record set larger than the writer's buffer goes to the socket directly, after what
    // the buffer holds; the small ones between are gathered in it.
    // Each write must take some bytes within `idle_max`: a client reading slowly but steadily is
    // served however long a large part takes, one that stops is given up.
    for part in parts {
        let mut written = 0;
        while written < part.len() {
            match tokio::time::timeout(idle_max, writer.write(&part[written..])).await {
                Ok(Ok(0)) => return Err("the connection took no more bytes".to_string()),
                Ok(Ok(taken)) => {
                    written += taken;
                    idle.wrote();
                }
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err(format!("the client took no response bytes in {idle_max:?}")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames large enough for the pool and small ones are read whole, back to back from one stream,
    /// each holding exactly its own bytes (a shorter frame read into the buffer a longer one left
    /// shows none of the longer one's bytes); a frame cut short is an error.
    #[tokio::test]
    async fn frames_are_read_whole_whether_pooled_or_not() {
        let (budget, frames) = (Arc::new(Semaphore::new(64 << 20)), Arc::new(BufferPool::new(FRAME_POOL)));
        let bodies: Vec<Vec<u8>> = vec![
            (0..200_000u32).map(|at| (at % 251) as u8).collect(),
            vec![5u8; 100],
            vec![9u8; 190_000],
            (0..160_000u32).map(|at| (at % 13) as u8).collect(),
        ];
        assert!(frames.pools(bodies[0].len()) && !frames.pools(bodies[1].len()), "both paths are read");
        let mut stream = Vec::new();
        for body in &bodies {
            stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
            stream.extend_from_slice(body);
        }
        stream.extend_from_slice(&100_000u32.to_be_bytes());
        stream.extend_from_slice(&[1u8; 5_000]);
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, &stream[..]);
        let mut addresses = Vec::new();
        for body in &bodies {
            let (frame, _permit) =
                read_frame(&mut reader, 1 << 20, &budget, &frames, &Idle::new(Duration::from_secs(600)))
                    .await
                    .expect("read")
                    .expect("a frame");
            assert_eq!(&frame[..], &body[..], "a frame of {} bytes", body.len());
            addresses.push(frame.as_ptr() as usize);
        }
        assert_eq!(addresses[2], addresses[0], "the third frame was read into the first one's buffer");
        assert_eq!(addresses[3], addresses[0], "and so was the fourth");
        let cut = read_frame(&mut reader, 1 << 20, &budget, &frames, &Idle::new(Duration::from_secs(600))).await;
        assert!(cut.is_err_and(|error| error.contains("5000 bytes into a 100000-byte frame")), "cut short");
    }

    /// A client that sends part of a frame and then nothing (its connection open) is given up after the
    /// idle time, and the frame's share of the request budget comes back; waiting for the rest of the
    /// prefix, or of the body, alike.
    #[tokio::test]
    async fn a_frame_that_stops_coming_is_given_up_after_the_idle_time() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let frames = Arc::new(BufferPool::new(FRAME_POOL));
        let idle = Idle::new(Duration::from_millis(200));
        for sent in [&100_000u32.to_be_bytes()[..2], &[&100_000u32.to_be_bytes()[..], &[7u8; 5000][..]].concat()] {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            client.write_all(sent).await.expect("part of a frame");
            let mut reader = BufReader::new(server);
            let started = tokio::time::Instant::now();
            let read = tokio::time::timeout(
                Duration::from_secs(10),
                read_frame(&mut reader, 1 << 20, &budget, &frames, &idle),
            )
            .await
            .expect("given up, not waiting for good");
            let error = read.expect_err("no frame");
            assert!(error.contains("idle") || error.contains("no byte for"), "{error}");
            assert!(started.elapsed() >= Duration::from_millis(190), "after the idle time: {:?}", started.elapsed());
            assert_eq!(budget.available_permits(), 1 << 20, "the frame's budget is back");
            drop(client);
        }
    }

    /// The node's configuration default for `request_bytes_max` is the frame reader's own default
    /// (the node cannot name the wire crate's constant).
    #[test]
    fn request_bytes_max_default_is_the_frame_default() {
        assert_eq!(once_node::config::REQUEST_BYTES_MAX_DEFAULT, once_wire::frame::FRAME_BYTES_MAX_DEFAULT);
        assert_eq!(once_node::NodeConfig::default().request_bytes_max, once_wire::frame::FRAME_BYTES_MAX_DEFAULT);
    }
}
