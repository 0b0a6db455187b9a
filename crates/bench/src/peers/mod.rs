//! Peer drivers: the same produce workload as the Kafka one, spoken in each peer's own protocol by a
//! small client of ours over a plain `TcpStream`, so every system is measured the same way — N
//! connections (`--producers`), each with at most `--in-flight` requests unanswered (pipelined),
//! per-record ack latency from just before the write to the parsed reply — and the workspace gains no
//! client library. Each protocol reads its durability settings back from the running server and
//! puts them in its row.
//!
//! - `redis`: Redis streams, `XADD key * v PAYLOAD`.
//! - `postgres`: PostgreSQL, `INSERT … ON CONFLICT (id) DO NOTHING` on a unique message id,
//!   simple-query protocol, one transaction per statement.
//! - `nats`: NATS JetStream publish with a `Nats-Msg-Id` header (deduplicated by the server).

mod nats;
mod postgres;
mod redis;

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::process;
use crate::rows::{Measurement, Row};
use crate::Plan;

pub use nats::Nats;
pub use postgres::Postgres;
pub use redis::Redis;

/// One reply parsed from a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A request succeeded. `sequence` names it where the protocol says which (NATS reply
    /// subjects); `None` means the oldest unanswered request (replies in order). `text` is the
    /// reply's content, for setup requests.
    Ack { sequence: Option<u64>, text: String },
    /// A request failed.
    Failed { sequence: Option<u64>, error: String },
    /// Not an answer to a request (a notice, the server's greeting).
    Ignore,
    /// The server asks for this to be sent back (NATS `PING`).
    Respond(Vec<u8>),
}

/// A peer's request/response protocol over one TCP connection.
pub trait Protocol: Send + Sync {
    /// Name in rows and progress lines, with the server's version where it tells.
    fn system(&self) -> String;
    /// What an acknowledgement means on this server, read back from its settings.
    fn durability(&self) -> anyhow::Result<String>;
    /// Workload label of the rows.
    fn workload(&self) -> String;
    /// Creates what run `run` writes to (stream, table), fresh.
    fn setup(&self, run: usize) -> anyhow::Result<()>;
    /// Removes it again.
    fn teardown(&self, run: usize) -> anyhow::Result<()>;
    /// Opens a connection, ready for requests.
    fn connect(&self, connection: usize) -> anyhow::Result<TcpStream>;
    /// Records each request carries.
    fn records_per_request(&self) -> usize {
        1
    }
    /// Whether replies come in the order of the requests (else each names its request).
    fn replies_in_order(&self) -> bool {
        true
    }
    /// Appends request `sequence` of `connection` in run `run` carrying `payload` to `out`.
    fn encode(&self, run: usize, connection: usize, sequence: u64, payload: &[u8], out: &mut Vec<u8>);
    /// Parses the reply at the front of `buffer`: `None` while it is incomplete, else the bytes it
    /// took and what it said.
    fn parse(&self, buffer: &[u8]) -> anyhow::Result<Option<(usize, Reply)>>;
}

/// Reads one reply to a request already written (setup and teardown), skipping `Ignore`s.
pub fn read_reply(protocol: &dyn Protocol, stream: &mut TcpStream, buffer: &mut Vec<u8>) -> anyhow::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    loop {
        while let Some((used, reply)) = protocol.parse(buffer)? {
            buffer.drain(..used);
            match reply {
                Reply::Ignore => {}
                Reply::Respond(bytes) => stream.write_all(&bytes)?,
                other => return Ok(other),
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let read = stream.read(&mut chunk).context("reading a reply")?;
        anyhow::ensure!(read > 0, "the server closed the connection");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Writes `request` and returns the text of its successful reply.
pub fn request(protocol: &dyn Protocol, stream: &mut TcpStream, request: &[u8]) -> anyhow::Result<String> {
    stream.write_all(request)?;
    match read_reply(protocol, stream, &mut Vec::new())? {
        Reply::Ack { text, .. } => Ok(text),
        Reply::Failed { error, .. } => anyhow::bail!("{error}"),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

/// The payload of every record: printable, so that it is also a valid SQL string literal.
fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|index| b'a' + (index % 26) as u8).collect()
}

/// What one connection's reader and writer share.
#[derive(Default)]
struct Window {
    in_flight: usize,
    /// Send times of unanswered requests in order, for protocols whose replies come in order.
    in_order: VecDeque<Instant>,
    /// Send times by sequence, for protocols whose replies name their request.
    by_sequence: HashMap<u64, Instant>,
    answered: u64,
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    last_answer: Option<Instant>,
}

struct Connection {
    window: Mutex<Window>,
    changed: Condvar,
}

impl Connection {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Most requests encoded into one `write`.
const REQUESTS_PER_WRITE_MAX: usize = 256;

/// One connection: a writer (this thread) keeping at most `window_max` requests unanswered and a
/// reader thread matching replies to send times.
fn drive_connection(
    protocol: &Arc<dyn Protocol>,
    run: usize,
    index: usize,
    requests: u64,
    (window_max, record_bytes): (usize, usize),
    start_line: &Barrier,
) -> anyhow::Result<Window> {
    let connected = protocol.connect(index);
    start_line.wait();
    let stream = connected?;
    let mut reader_stream = stream.try_clone()?;
    let writer = Arc::new(Mutex::new(stream));
    let connection = Arc::new(Connection { window: Mutex::default(), changed: Condvar::new() });
    let per_request = protocol.records_per_request();
    let reader = {
        let (protocol, writer, connection) = (Arc::clone(protocol), Arc::clone(&writer), Arc::clone(&connection));
        thread::Builder::new()
            .name(format!("bench-peer-reader-{index}"))
            .spawn(move || read_replies(&*protocol, &mut reader_stream, &writer, &connection, requests, per_request))?
    };
    let payload = payload(record_bytes);
    let in_order = protocol.replies_in_order();
    let mut buffer = Vec::new();
    let mut sent = 0u64;
    while sent < requests {
        let count = {
            let mut window = connection.lock();
            while window.in_flight >= window_max {
                window = connection.changed.wait(window).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            let count = (window_max - window.in_flight).min(REQUESTS_PER_WRITE_MAX).min((requests - sent) as usize);
            let now = Instant::now();
            for offset in 0..count as u64 {
                if in_order {
                    window.in_order.push_back(now);
                } else {
                    window.by_sequence.insert(sent + offset, now);
                }
            }
            window.in_flight += count;
            count
        };
        buffer.clear();
        for offset in 0..count as u64 {
            protocol.encode(run, index, sent + offset, &payload, &mut buffer);
        }
        writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write_all(&buffer).context("sending")?;
        sent += count as u64;
    }
    reader.join().map_err(|_| anyhow::anyhow!("a reader thread panicked"))??;
    let window = std::mem::take(&mut *connection.lock());
    Ok(window)
}

fn read_replies(
    protocol: &dyn Protocol,
    stream: &mut TcpStream,
    writer: &Mutex<TcpStream>,
    connection: &Connection,
    requests: u64,
    per_request: usize,
) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let mut answered = 0u64;
    while answered < requests {
        let read = stream.read(&mut chunk).context("reading replies")?;
        anyhow::ensure!(read > 0, "the server closed the connection after {answered} of {requests} replies");
        buffer.extend_from_slice(&chunk[..read]);
        let mut consumed = 0;
        let now = Instant::now();
        let mut window = connection.lock();
        while let Some((used, reply)) = protocol.parse(&buffer[consumed..])? {
            consumed += used;
            let (sequence, failure) = match reply {
                Reply::Ack { sequence, .. } => (sequence, None),
                Reply::Failed { sequence, error } => (sequence, Some(error)),
                Reply::Ignore => continue,
                Reply::Respond(bytes) => {
                    writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write_all(&bytes)?;
                    continue;
                }
            };
            let sent_at = match sequence {
                Some(sequence) => window.by_sequence.remove(&sequence),
                None => window.in_order.pop_front(),
            };
            let sent_at = sent_at.context("a reply to no request")?;
            match failure {
                None => {
                    let latency_us = u32::try_from(now.duration_since(sent_at).as_micros()).unwrap_or(u32::MAX);
                    let latencies = &mut window.latencies_us;
                    latencies.resize(latencies.len() + per_request, latency_us);
                }
                Some(error) => {
                    window.errors += 1;
                    window.first_error.get_or_insert(error);
                }
            }
            window.in_flight -= 1;
            window.answered += 1;
            answered += 1;
        }
        window.last_answer = Some(now);
        drop(window);
        connection.changed.notify_all();
        buffer.drain(..consumed);
    }
    Ok(())
}

/// One run: `records` records over `--producers` connections.
pub(crate) fn run_once(plan: &Plan, protocol: &Arc<dyn Protocol>, run: usize) -> anyhow::Result<Measurement> {
    let connections = plan.args.producers;
    let per_request = protocol.records_per_request() as u64;
    let requests = plan.records.div_ceil(per_request);
    let start_line = Arc::new(Barrier::new(connections + 1));
    let mut handles = Vec::with_capacity(connections);
    for index in 0..connections {
        let share = requests / connections as u64 + u64::from((index as u64) < requests % connections as u64);
        let (protocol, start_line) = (Arc::clone(protocol), Arc::clone(&start_line));
        let sizes = (plan.args.in_flight, plan.args.record_bytes);
        handles.push(
            thread::Builder::new()
                .name(format!("bench-peer-{index}"))
                .spawn(move || drive_connection(&protocol, run, index, share, sizes, &start_line))?,
        );
    }
    start_line.wait();
    let started = Instant::now();
    let mut measurement =
        Measurement { records: 0, value_bytes: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), cost: None };
    for handle in handles {
        let window = handle.join().map_err(|_| anyhow::anyhow!("a connection thread panicked"))??;
        if let Some(error) = window.first_error {
            anyhow::bail!("{} of {} requests failed; the first: {error}", window.errors, window.answered);
        }
        if let Some(last) = window.last_answer {
            measurement.elapsed = measurement.elapsed.max(last.saturating_duration_since(started));
        }
        measurement.records += window.latencies_us.len() as u64;
        measurement.latencies_us.extend(window.latencies_us);
    }
    measurement.value_bytes = measurement.records * plan.args.record_bytes as u64;
    measurement.latencies_us.sort_unstable();
    Ok(measurement)
}

/// Runs the produce workload against a peer `plan.runs` times and returns its row.
pub fn run(plan: &Plan, protocol: Arc<dyn Protocol>) -> anyhow::Result<Vec<Row>> {
    let durability = protocol.durability().context("reading the peer's durability settings")?;
    let mut runs = Vec::with_capacity(plan.runs);
    for run in 0..plan.runs {
        protocol.setup(run).context("setting up the run")?;
        eprintln!("run {}/{}: {}, {} records", run + 1, plan.runs, protocol.system(), plan.records);
        let measured = process::measure(&plan.args.broker_pid, || run_once(plan, &protocol, run));
        if let Err(error) = protocol.teardown(run) {
            eprintln!("once-bench: teardown of run {}: {error:#}", run + 1);
        }
        let (mut measurement, cost) = measured?;
        measurement.cost = cost;
        eprintln!("  {} records in {:.2} s", measurement.records, measurement.elapsed.as_secs_f64());
        runs.push(measurement);
    }
    Ok(vec![Row {
        workload: protocol.workload(),
        system: protocol.system(),
        durability,
        record_bytes: plan.args.record_bytes,
        setting: format!(
            "{} connections × {} requests in flight, {} record(s) per request",
            plan.args.producers,
            plan.args.in_flight,
            protocol.records_per_request()
        ),
        runs,
    }])
}
