//! Clients that stop reading their sockets, against a real `once serve` (a small fetch memory budget,
//! `--queued-request-bytes-max` 64 MiB, and `--connections-max-idle-ms` 30 s): six raw TCP clients
//! each send thirty-two Fetch requests (two of 50 MiB, then 1 MiB) for a 64 MiB backlog and read nothing.
//!
//! - **Bounded.** The record bytes their responses hold (`once_fetch_held_bytes`) stay near the budget
//!   — one response being written and one waiting per connection, the later ones shrunk to about 1 MiB
//!   — and so does the broker's resident memory; unbounded they would hold gigabytes.
//! - **Everyone else is served.** Meanwhile a librdkafka consumer reads the whole backlog and a
//!   producer's records are acknowledged and stored.
//! - **Served once they read.** Three of the clients read again after seconds of silence: every
//!   response arrives, in order, with records.
//! - **Given up.** The three that never read are closed once they have taken no byte for the idle
//!   time: the open connections and the bytes held fall to nothing, and their sockets end before the
//!   last response.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{free_port, wait_until, BrokerProcess};

const TOPIC: &str = "backlog";
const RECORDS: usize = 64 * 1024;
const RECORD_BYTES: usize = 1000;
const BUDGET: usize = 64 << 20;
const FETCH_BYTES: i32 = 50 << 20;
const CLIENTS: usize = 6;
const REQUESTS: i32 = 32;
const IDLE: Duration = Duration::from_secs(30);
const FETCH_VERSION: i16 = 12;

fn metrics(address: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut response = agent.get(&format!("http://{address}/metrics")).call().expect("GET /metrics");
    assert_eq!(response.status().as_u16(), 200);
    response.body_mut().read_to_string().expect("body")
}

/// The value of the sample named exactly `sample` (no labels).
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
}

/// The broker's resident memory, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).expect("a figure").parse().expect("a number");
    kib * 1024
}

/// A size-prefixed Fetch v12 request for partition 0 from offset 0, answered at once: the first two up to
/// `FETCH_BYTES` (one is written while the next waits), the rest up to 1 MiB (the clients that read
/// again then read less).
fn fetch_frame(correlation_id: i32) -> Vec<u8> {
    let max_bytes = if correlation_id < 2 { FETCH_BYTES } else { 1 << 20 };
    let partition =
        FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(max_bytes);
    let body =
        FetchRequest::default().with_max_wait_ms(0).with_min_bytes(1).with_max_bytes(max_bytes).with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![partition]),
        ]);
    let client_id = Some(StrBytes::from_static_str("stuck-client"));
    once_wire::encode_request(&body, FETCH_VERSION, correlation_id, client_id).expect("encodes").to_vec()
}

/// A client with a 4 KiB receive buffer that sends `REQUESTS` fetches at once and reads nothing yet.
fn stuck_client(address: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&address.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    let requests: Vec<u8> = (0..REQUESTS).flat_map(fetch_frame).collect();
    stream.write_all(&requests).expect("the requests are sent (the broker's receive buffer takes them)");
    stream
}

/// Reads responses until the stream ends or `REQUESTS` have come: their (correlation id, size).
fn read_responses(stream: &mut TcpStream) -> Vec<(i32, usize)> {
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
    let mut responses = Vec::new();
    while responses.len() < REQUESTS as usize {
        let mut size = [0u8; 4];
        if stream.read_exact(&mut size).is_err() {
            break;
        }
        let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
        if stream.read_exact(&mut body).is_err() {
            break;
        }
        responses.push((i32::from_be_bytes(body[..4].try_into().expect("4 bytes")), body.len()));
    }
    responses
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap).set("metadata.recovery.strategy", "none");
    config
}

/// Writes `count` records of `RECORD_BYTES` to partition 0 and waits until the broker holds them all.
#[allow(clippy::result_large_err)] // rdkafka hands a refused record back in its error
fn produce(bootstrap: &str, count: usize, high_before: i64) {
    let producer: BaseProducer = client_config(bootstrap)
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .expect("producer");
    let value = vec![b'x'; RECORD_BYTES];
    for _ in 0..count {
        let record = BaseRecord::<(), [u8]>::to(TOPIC).partition(0).payload(&value);
        support::queue(
            record,
            |record| producer.send(record),
            || {
                producer.poll(Duration::from_millis(50));
            },
        )
        .unwrap_or_else(|error| panic!("queueing a record: {error}"));
    }
    producer.flush(Duration::from_secs(60)).expect("every record acknowledged");
    let consumer: BaseConsumer = client_config(bootstrap).create().expect("consumer");
    let (_, high) = consumer.fetch_watermarks(TOPIC, 0, Duration::from_secs(10)).expect("watermarks");
    assert_eq!(high, high_before + count as i64, "every record stored once");
}

#[test]
fn clients_that_stop_reading_hold_a_bounded_memory_and_are_given_up_while_others_are_served() {
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let broker = BrokerProcess::start(&[
        "--queued-request-bytes-max",
        &BUDGET.to_string(),
        "--request-bytes-max",
        &(16 << 20).to_string(),
        "--connections-max-idle-ms",
        &IDLE.as_millis().to_string(),
        "--metrics-listen",
        &metrics_address,
    ]);
    let bootstrap = broker.bootstrap();
    produce(&bootstrap, RECORDS, 0);
    let address: SocketAddr = bootstrap.parse().expect("an address");
    let silent_since = Instant::now();
    let mut stuck: Vec<TcpStream> = (0..CLIENTS).map(|_| stuck_client(address)).collect();

    // Bounded: each connection holds the response being written and one waiting; the first reads
    // took the budget, the rest about 1 MiB (one batch may add up to a megabyte to each).
    let mut last = -1.0;
    wait_until("the stuck clients' reads to settle", Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(500));
        let held = value(&metrics(&metrics_address), "once_fetch_held_bytes");
        std::mem::replace(&mut last, held) == held && held > 0.0
    });
    let text = metrics(&metrics_address);
    let held = value(&text, "once_fetch_held_bytes");
    let bound = BUDGET + 2 * CLIENTS * (2 << 20);
    assert!(held <= bound as f64, "{held} record bytes held by {CLIENTS} clients that read nothing (bound {bound})");
    assert!(held >= (BUDGET / 2) as f64, "{held} record bytes held: the stuck clients' fetches were read");
    assert_eq!(value(&text, "once_connections"), CLIENTS as f64, "every stuck client is still connected");
    // Resident memory: the responses held, the pooled read buffers (up to twice a read, 64 MiB more
    // kept free) and the broker's own. Without the bounds it would be 600 MiB or gigabytes.
    let resident = resident_bytes(broker.pid());
    eprintln!(
        "{CLIENTS} stuck clients: {} MiB of records held, the broker resident in {} MiB",
        held as u64 >> 20,
        resident >> 20
    );
    assert!(resident < 300 << 20, "the broker holds {} MiB with {CLIENTS} stuck clients", resident >> 20);

    // Everyone else is served meanwhile: a consumer asking for 50 MiB at a time reads the whole backlog
    // (a megabyte or a batch at a time while the budget is spent), a producer is acknowledged.
    let consumer: BaseConsumer = client_config(&bootstrap)
        .set("group.id", "served")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", FETCH_BYTES.to_string())
        .set("max.partition.fetch.bytes", FETCH_BYTES.to_string())
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(TOPIC, 0, Offset::Beginning).expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let mut read = 0usize;
    // Before the silent clients' idle time runs out, with room for the checks after it.
    let deadline = silent_since + IDLE - Duration::from_secs(8);
    while read < RECORDS && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.expect("a record, not an error");
            assert_eq!(message.offset(), read as i64, "records in order, none skipped");
            assert_eq!(message.payload().map(<[u8]>::len), Some(RECORD_BYTES));
            read += 1;
        }
    }
    assert_eq!(read, RECORDS, "the consumer read the whole backlog while {CLIENTS} clients were stuck");
    drop(consumer);
    produce(&bootstrap, 100, RECORDS as i64);
    assert!(silent_since.elapsed() < IDLE - Duration::from_secs(5), "the checks above ran into the idle time");

    // Served once they read: half of the clients read again, after seconds without taking a byte.
    let resuming: Vec<TcpStream> = stuck.drain(..CLIENTS / 2).collect();
    let readers: Vec<_> =
        resuming.into_iter().map(|mut stream| std::thread::spawn(move || read_responses(&mut stream))).collect();
    for reader in readers {
        let responses = reader.join().expect("reader thread");
        let ids: Vec<i32> = responses.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (0..REQUESTS).collect::<Vec<_>>(), "every response, in order");
        assert!(responses.iter().all(|(_, size)| *size > RECORD_BYTES), "each with records: {responses:?}");
    }

    // Given up: the clients that never read are closed after the idle time, and what they held is back.
    wait_until("the silent clients are closed", IDLE + Duration::from_secs(30), || {
        let text = metrics(&metrics_address);
        value(&text, "once_connections") == 0.0 && value(&text, "once_fetch_held_bytes") == 0.0
    });
    assert!(silent_since.elapsed() >= IDLE, "closed only after the idle time: {:?}", silent_since.elapsed());
    for mut stream in stuck {
        let responses = read_responses(&mut stream);
        assert!(responses.len() < REQUESTS as usize, "the connection ended: {} responses", responses.len());
    }
}
