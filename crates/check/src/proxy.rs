//! A seeded TCP fault proxy between Kafka clients and a broker. It reads Kafka frames (a 4-byte
//! length, then the bytes) in both directions and, while faults are on, per request:
//! - closes both connections before forwarding it (a connection reset);
//! - delays it by up to [`DELAY_MS_MAX`];
//! - forwards it and then swallows its response and closes both connections (a lost acknowledgement:
//!   the broker acted, the client must retry);
//! - sends a Produce request twice and swallows the second response (a duplicated request: only an
//!   idempotent producer's sequence numbers can tell the broker it is a copy).
//!
//! Independently of the fault windows, it cuts off crashed clients: every request whose header
//! carries a `client.id` in [`FaultProxy::crashed_clients`] closes its connection unforwarded, so a
//! client dropped to simulate a crash cannot leave its group, commit or heartbeat on its way out.
//!
//! Responses are matched to requests by correlation id, which Kafka puts first in every response.
//! The broker must advertise the proxy's address, or clients bypass it after the first Metadata.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::rng::Rng;

/// Largest frame forwarded; anything bigger closes the connection (the broker's own cap is 100 MiB).
const FRAME_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Longest injected delay.
pub const DELAY_MS_MAX: u64 = 50;

/// Probability of each fault per request while faults are on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProxyFaults {
    pub reset: f64,
    pub delay: f64,
    pub drop_response: f64,
    pub duplicate_produce: f64,
}

/// Faults injected so far.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    pub resets: AtomicU64,
    pub delays: AtomicU64,
    pub dropped_responses: AtomicU64,
    pub duplicated_produces: AtomicU64,
    /// Connections closed because their client had crashed.
    pub crashed_client_cutoffs: AtomicU64,
}

/// Client ids the proxy no longer forwards for.
pub type CrashedClients = Arc<Mutex<HashSet<String>>>;

/// A running proxy. Dropping it stops accepting; open connections live until either side closes.
pub struct FaultProxy {
    /// HOST:PORT clients connect to.
    pub address: String,
    /// Faults are injected only while this is set.
    pub enabled: Arc<AtomicBool>,
    pub counters: Arc<ProxyCounters>,
    /// Requests from these client ids close their connection unforwarded (simulated client crashes).
    pub crashed_clients: CrashedClients,
    stop: Arc<AtomicBool>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What to do with the response carrying a correlation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseAction {
    /// Swallow it and close both connections.
    DropAndClose,
    /// Deliver this one; swallow the next with the same id (the duplicated request's answer).
    DeliverThenSwallow,
    Swallow,
}

/// Everything one proxied connection's two threads share.
struct Connection {
    client: TcpStream,
    broker: TcpStream,
    actions: Mutex<HashMap<i32, ResponseAction>>,
}

impl Connection {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.broker.shutdown(Shutdown::Both);
    }
}

/// Serves `listener`, forwarding to `upstream`, with faults drawn from `seed`.
pub fn start(listener: TcpListener, upstream: String, faults: ProxyFaults, seed: u64) -> anyhow::Result<FaultProxy> {
    let address = listener.local_addr()?.to_string();
    listener.set_nonblocking(true)?;
    let proxy = FaultProxy {
        address,
        enabled: Arc::new(AtomicBool::new(false)),
        counters: Arc::new(ProxyCounters::default()),
        crashed_clients: CrashedClients::default(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (enabled, counters, stop) = (proxy.enabled.clone(), proxy.counters.clone(), proxy.stop.clone());
    let crashed = proxy.crashed_clients.clone();
    std::thread::spawn(move || {
        let rng = Rng::new(seed);
        let mut number = 0;
        while !stop.load(Ordering::Relaxed) {
            let client = match listener.accept() {
                Ok((client, _)) => client,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            number += 1;
            let _ = client.set_nonblocking(false);
            // A refused upstream (the broker is down) closes the client: what a dead broker looks like.
            let Ok(broker) = TcpStream::connect(&upstream) else { continue };
            let shared = Shared { enabled: enabled.clone(), counters: counters.clone(), crashed: crashed.clone() };
            let _ = spawn_connection(client, broker, faults, rng.fork(number), shared);
        }
    });
    Ok(proxy)
}

/// What every connection of one proxy shares.
struct Shared {
    enabled: Arc<AtomicBool>,
    counters: Arc<ProxyCounters>,
    crashed: CrashedClients,
}

fn spawn_connection(
    client: TcpStream,
    broker: TcpStream,
    faults: ProxyFaults,
    rng: Rng,
    Shared { enabled, counters, crashed }: Shared,
) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let connection = Arc::new(Connection { client, broker, actions: Mutex::new(HashMap::new()) });
    let requests =
        RequestPump { connection: connection.clone(), faults, rng, enabled, counters: counters.clone(), crashed };
    let (client_reader, broker_reader) = (connection.client.try_clone()?, connection.broker.try_clone()?);
    std::thread::spawn(move || requests.run(client_reader));
    std::thread::spawn(move || pump_responses(&connection, &counters, broker_reader));
    Ok(())
}

/// Reads one frame; `None` at end of stream, on an error or on an absurd length.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let length = usize::try_from(i32::from_be_bytes(prefix)).ok().filter(|length| *length <= FRAME_BYTES_MAX)?;
    let mut frame = vec![0u8; 4 + length];
    frame[..4].copy_from_slice(&prefix);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// The client-to-broker direction, where the faults are decided.
struct RequestPump {
    connection: Arc<Connection>,
    faults: ProxyFaults,
    rng: Rng,
    enabled: Arc<AtomicBool>,
    counters: Arc<ProxyCounters>,
    crashed: CrashedClients,
}

impl RequestPump {
    fn run(mut self, mut client: TcpStream) {
        while let Some(frame) = read_frame(&mut client) {
            if !self.forward(&frame) {
                break;
            }
        }
        self.connection.close();
    }

    /// Forwards one request, perhaps with a fault; false once the connection is closed.
    fn forward(&mut self, frame: &[u8]) -> bool {
        let body = &frame[4..];
        let correlation_id = body.get(4..8).and_then(|bytes| bytes.try_into().ok()).map(i32::from_be_bytes);
        if let Some(client_id) = client_id(body) {
            let crashed = self.crashed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if crashed.contains(client_id) {
                self.counters.crashed_client_cutoffs.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let (faults, on) = (self.faults, self.enabled.load(Ordering::Relaxed));
        // Draw every decision each time so the stream of draws does not depend on the toggle.
        let (reset, delay, drop, duplicate) = (
            self.rng.chance(faults.reset),
            self.rng.chance(faults.delay),
            self.rng.chance(faults.drop_response),
            self.rng.chance(faults.duplicate_produce),
        );
        let delay_ms = self.rng.between(1, DELAY_MS_MAX);
        if on && reset {
            self.counters.resets.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if on && delay {
            self.counters.delays.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let duplicate = on && duplicate && produce_acks(body).is_some_and(|acks| acks != 0);
        let action = match (on && drop, duplicate) {
            (true, _) => Some(ResponseAction::DropAndClose),
            (false, true) => Some(ResponseAction::DeliverThenSwallow),
            (false, false) => None,
        };
        if let (Some(action), Some(correlation_id)) = (action, correlation_id) {
            let mut actions = self.connection.actions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            actions.insert(correlation_id, action);
        }
        let mut broker = &self.connection.broker;
        if broker.write_all(frame).is_err() {
            return false;
        }
        if correlation_id.is_some() && action == Some(ResponseAction::DeliverThenSwallow) {
            self.counters.duplicated_produces.fetch_add(1, Ordering::Relaxed);
            return broker.write_all(frame).is_ok();
        }
        true
    }
}

/// The broker-to-client direction: forwards responses unless their request's fault says otherwise.
fn pump_responses(connection: &Connection, counters: &ProxyCounters, mut broker: TcpStream) {
    while let Some(frame) = read_frame(&mut broker) {
        let correlation_id = frame.get(4..8).and_then(|bytes| bytes.try_into().ok()).map(i32::from_be_bytes);
        let action = correlation_id.and_then(|id| {
            let mut actions = connection.actions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let action = actions.remove(&id);
            if action == Some(ResponseAction::DeliverThenSwallow) {
                actions.insert(id, ResponseAction::Swallow);
            }
            action
        });
        match action {
            Some(ResponseAction::DropAndClose) => {
                counters.dropped_responses.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Some(ResponseAction::Swallow) => continue,
            Some(ResponseAction::DeliverThenSwallow) | None => {
                let mut client = &connection.client;
                if client.write_all(&frame).is_err() {
                    break;
                }
            }
        }
    }
    connection.close();
}

/// The `client.id` of a request (request header v1 and v2 put it at the same place), if it has one.
pub fn client_id(body: &[u8]) -> Option<&str> {
    let length = body.get(8..10).and_then(|bytes| bytes.try_into().ok()).map(i16::from_be_bytes)?;
    let length = usize::try_from(length).ok()?;
    std::str::from_utf8(body.get(10..10 + length)?).ok()
}

/// The acks of a Produce request (request header v1/v2, body v3+), or `None` for other requests and
/// for anything that does not parse.
pub fn produce_acks(body: &[u8]) -> Option<i16> {
    let read_i16 = |at: usize| body.get(at..at + 2).and_then(|bytes| bytes.try_into().ok()).map(i16::from_be_bytes);
    if read_i16(0)? != 0 {
        return None;
    }
    let version = read_i16(2)?;
    let client_id_bytes = usize::try_from(read_i16(8)?).unwrap_or(0);
    let mut at = 10 + client_id_bytes;
    if version >= 9 {
        at = skip_tagged_fields(body, at)?;
        // transactional_id: COMPACT_NULLABLE_STRING, length + 1 with 0 for null.
        let (length_plus_one, next) = unsigned_varint(body, at)?;
        at = next + usize::try_from(length_plus_one.saturating_sub(1)).ok()?;
    } else {
        at += 2 + usize::try_from(read_i16(at)?).unwrap_or(0);
    }
    read_i16(at)
}

fn unsigned_varint(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

fn skip_tagged_fields(bytes: &[u8], at: usize) -> Option<usize> {
    let (count, mut at) = unsigned_varint(bytes, at)?;
    for _ in 0..count {
        let (_tag, next) = unsigned_varint(bytes, at)?;
        let (size, next) = unsigned_varint(bytes, next)?;
        at = next.checked_add(usize::try_from(size).ok()?)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::{client_id, produce_acks};

    fn header(api_key: i16, version: i16, client_id: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(api_key.to_be_bytes());
        body.extend(version.to_be_bytes());
        body.extend(7i32.to_be_bytes());
        body.extend((client_id.len() as i16).to_be_bytes());
        body.extend(client_id);
        body
    }

    #[test]
    fn acks_are_found_in_old_and_flexible_produce_requests() {
        let mut v3 = header(0, 3, b"rdkafka");
        v3.extend((-1i16).to_be_bytes());
        v3.extend((-1i16).to_be_bytes());
        assert_eq!(produce_acks(&v3), Some(-1));
        let mut v9 = header(0, 9, b"rdkafka");
        v9.extend([1, 0x05, 0x02, 0xAA, 0xBB]); // one tagged field: tag 5, two bytes
        v9.extend([4, b't', b'x', b'n']); // transactional id "txn"
        v9.extend(1i16.to_be_bytes());
        assert_eq!(produce_acks(&v9), Some(1));
        let mut null_id = header(0, 11, b"");
        null_id.extend([0, 0]);
        null_id.extend(0i16.to_be_bytes());
        assert_eq!(produce_acks(&null_id), Some(0));
    }

    #[test]
    fn the_client_id_is_read_from_any_request_header() {
        assert_eq!(client_id(&header(12, 4, b"member-1-2")), Some("member-1-2"));
        assert_eq!(client_id(&header(0, 9, b"")), Some(""));
        let mut null_id = header(12, 4, b"");
        null_id[8..10].copy_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(client_id(&null_id), None);
        assert_eq!(client_id(&header(12, 4, b"member")[..12]), None);
    }

    #[test]
    fn other_requests_and_garbage_have_no_acks() {
        assert_eq!(produce_acks(&header(1, 11, b"rdkafka")), None);
        assert_eq!(produce_acks(&[0, 0, 0]), None);
        assert_eq!(produce_acks(&header(0, 9, b"x")[..9]), None);
    }
}
