//! A small Kafka producer of the benchmark's own, on the repository's wire crate (`once-wire`, over
//! `kafka-protocol`) and the log's v2 batch encoder (`once_log::batch::BatchEncoder`): one
//! connection to the partition's leader, acks=-1, uncompressed v2 batches, and several Produce
//! requests in flight on that connection — also when idempotent, where librdkafka 2.12 keeps one
//! (docs/benchmarks.md, "Profiles"). It exists to measure the broker's cost of idempotence without
//! that client's limit, so it does only what that needs: one partition, no retries (any error code
//! ends the run), no compression, blocking I/O from one thread.
//!
//! Idempotent: an InitProducerId (no transactional id) before the first batch; each batch carries the
//! producer id, epoch and the base sequence of its first record, the sequences of one partition
//! running on from 0 without gaps, as Kafka's idempotent producer numbers them; at most 5 requests in
//! flight, the bound Kafka's producer-state check keeps batches for.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::{Buf, Bytes};
use once_log::batch::BatchEncoder;
use once_wire::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use once_wire::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use once_wire::kafka_protocol::messages::{
    InitProducerIdRequest, MetadataRequest, ProduceRequest, ProduceResponse, ResponseHeader, TopicName,
};
use once_wire::kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use once_wire::ResponseError;

/// Produce v9: the newest before topic ids (v13) that Once serves, flexible (compact) encoding.
const PRODUCE_VERSION: i16 = 9;
/// InitProducerId v4, flexible.
const INIT_PRODUCER_ID_VERSION: i16 = 4;
/// Metadata v9, flexible, topics by name.
const METADATA_VERSION: i16 = 9;
/// Kafka keeps the last 5 batches of each producer for duplicate checks, so an idempotent producer
/// may have at most 5 requests in flight per partition (KIP-98; `max.in.flight.requests.per.connection`).
pub const IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX: usize = 5;
/// Largest response frame accepted.
const RESPONSE_BYTES_MAX: usize = 16 << 20;
/// The broker's produce timeout for acks=-1.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;

/// The producer id and epoch InitProducerId assigned, and the next sequence of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the next record this producer sends to its partition.
    pub next_sequence: i32,
}

/// A Produce request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    correlation_id: i32,
    records: usize,
    base_sequence: i32,
}

/// The answer to one Produce request, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledged {
    /// Records of the batch.
    pub records: usize,
    /// Offset the broker gave the batch's first record.
    pub base_offset: i64,
    /// The batch's base sequence (-1 for a plain producer).
    pub base_sequence: i32,
}

/// One connection to the leader of `topic`/`partition`, producing with acks=-1.
pub struct WireProducer {
    stream: TcpStream,
    topic: TopicName,
    partition: i32,
    client_id: StrBytes,
    correlation_id: i32,
    /// `Some` for an idempotent producer.
    identity: Option<ProducerIdentity>,
    /// Requests in flight, in the order sent; answers come in this order on one connection.
    pending: VecDeque<Pending>,
    requests_in_flight_max: usize,
}

impl WireProducer {
    /// Connects to the leader of `topic`/`partition` (found through `bootstrap`), and with
    /// `idempotent` gets a producer id. At most `requests_in_flight_max` Produce requests are sent
    /// before the oldest is answered; idempotent producers may not have more than 5.
    pub fn connect(
        bootstrap: &str,
        topic: &str,
        partition: i32,
        idempotent: bool,
        requests_in_flight_max: usize,
    ) -> anyhow::Result<WireProducer> {
        anyhow::ensure!(requests_in_flight_max > 0, "at least one request must be allowed in flight");
        anyhow::ensure!(
            !idempotent || requests_in_flight_max <= IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX,
            "an idempotent producer may have at most {IDEMPOTENT_REQUESTS_IN_FLIGHT_MAX} requests in flight"
        );
        let mut producer = WireProducer {
            stream: open(bootstrap)?,
            topic: TopicName(StrBytes::from_string(topic.to_string())),
            partition,
            client_id: StrBytes::from_static_str("once-bench-wire"),
            correlation_id: 0,
            identity: None,
            pending: VecDeque::new(),
            requests_in_flight_max,
        };
        let leader = producer.leader_address(bootstrap)?;
        if leader != bootstrap {
            producer.stream = open(&leader)?;
        }
        if idempotent {
            producer.init_producer_id()?;
        }
        Ok(producer)
    }

    /// The producer id, epoch and next sequence, for an idempotent producer.
    pub fn identity(&self) -> Option<ProducerIdentity> {
        self.identity
    }

    /// Produce requests sent and not yet answered.
    pub fn requests_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether another request may be sent before the oldest is answered.
    pub fn can_send(&self) -> bool {
        self.pending.len() < self.requests_in_flight_max
    }

    /// Sends `values` as one batch in one Produce request, without waiting for its answer.
    pub fn send(&mut self, values: &[&[u8]]) -> anyhow::Result<()> {
        assert!(!values.is_empty(), "a batch holds at least one record");
        assert!(self.can_send(), "send only while fewer than the maximum of requests are in flight");
        let mut encoder = BatchEncoder::new(now_ms());
        let base_sequence = match &mut self.identity {
            Some(identity) => {
                let base_sequence = identity.next_sequence;
                let count = i32::try_from(values.len()).context("too many records in one batch")?;
                // Kafka wraps sequences at i32::MAX; a benchmark run never gets there.
                identity.next_sequence = base_sequence.checked_add(count).context("sequence past i32::MAX")?;
                encoder = encoder.producer(identity.producer_id, identity.producer_epoch, base_sequence);
                base_sequence
            }
            None => -1,
        };
        for value in values {
            encoder.push_key_value(None, Some(value));
        }
        let batch = Bytes::from(encoder.finish_bytes());
        let request =
            ProduceRequest::default().with_acks(-1).with_timeout_ms(PRODUCE_TIMEOUT_MS).with_topic_data(vec![
                TopicProduceData::default().with_name(self.topic.clone()).with_partition_data(vec![
                    PartitionProduceData::default().with_index(self.partition).with_records(Some(batch)),
                ]),
            ]);
        let correlation_id = self.write_request(&request, PRODUCE_VERSION)?;
        self.pending.push_back(Pending { correlation_id, records: values.len(), base_sequence });
        Ok(())
    }

    /// Waits for the answer to the oldest request in flight; an error code in it is an error.
    pub fn receive(&mut self) -> anyhow::Result<Acknowledged> {
        let pending = self.pending.pop_front().context("no Produce request in flight")?;
        let response: ProduceResponse = self.read_response(pending.correlation_id, PRODUCE_VERSION)?;
        let partition = response
            .responses
            .iter()
            .filter(|topic| topic.name == self.topic)
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|answer| answer.index == self.partition)
            .context("the Produce response does not answer the partition")?;
        if let Some(error) = ResponseError::try_from_code(partition.error_code) {
            let message = partition.error_message.as_ref().map(|message| message.to_string()).unwrap_or_default();
            bail!("Produce of sequence {} failed: {error:?} {message}", pending.base_sequence);
        }
        Ok(Acknowledged {
            records: pending.records,
            base_offset: partition.base_offset,
            base_sequence: pending.base_sequence,
        })
    }

    fn init_producer_id(&mut self) -> anyhow::Result<()> {
        let request = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(-1);
        let response = self.call(&request, INIT_PRODUCER_ID_VERSION)?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            bail!("InitProducerId: {error:?}");
        }
        self.identity = Some(ProducerIdentity {
            producer_id: response.producer_id.0,
            producer_epoch: response.producer_epoch,
            next_sequence: 0,
        });
        Ok(())
    }

    /// HOST:PORT of the partition's leader, from Metadata.
    fn leader_address(&mut self, bootstrap: &str) -> anyhow::Result<String> {
        let topics = vec![MetadataRequestTopic::default().with_name(Some(self.topic.clone()))];
        let request = MetadataRequest::default().with_topics(Some(topics)).with_allow_auto_topic_creation(false);
        let response = self.call(&request, METADATA_VERSION)?;
        let topic = response.topics.first().context("Metadata answered no topic")?;
        if let Some(error) = ResponseError::try_from_code(topic.error_code) {
            bail!("Metadata for the topic: {error:?}");
        }
        let partition = topic
            .partitions
            .iter()
            .find(|partition| partition.partition_index == self.partition)
            .context("the topic has no such partition")?;
        let Some(broker) = response.brokers.iter().find(|broker| broker.node_id == partition.leader_id) else {
            // A broker that names no leader address: stay on the bootstrap connection.
            return Ok(bootstrap.to_string());
        };
        Ok(format!("{}:{}", broker.host, broker.port))
    }

    /// Sends `request` and waits for its response (nothing else may be in flight).
    fn call<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        assert!(self.pending.is_empty(), "a setup request is not sent behind Produce requests");
        let correlation_id = self.write_request(request, version)?;
        self.read_response(correlation_id, version)
    }

    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<i32> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let frame = once_wire::encode_request(request, version, self.correlation_id, Some(self.client_id.clone()))?;
        self.stream.write_all(&frame).context("sending a request")?;
        Ok(self.correlation_id)
    }

    fn read_response<R: Decodable + HeaderVersion>(&mut self, correlation_id: i32, version: i16) -> anyhow::Result<R> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).context("reading a response (did the broker close the connection?)")?;
        let length = usize::try_from(i32::from_be_bytes(prefix)).context("a negative response length")?;
        anyhow::ensure!(length <= RESPONSE_BYTES_MAX, "a response of {length} bytes, above the bound");
        let mut frame = vec![0u8; length];
        self.stream.read_exact(&mut frame).context("reading a response")?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, R::header_version(version))?;
        anyhow::ensure!(
            header.correlation_id == correlation_id,
            "response to correlation id {} where {correlation_id} was the oldest in flight",
            header.correlation_id
        );
        let response = R::decode(&mut frame, version)?;
        anyhow::ensure!(!frame.has_remaining(), "{} bytes left after the response", frame.remaining());
        Ok(response)
    }
}

fn open(address: &str) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    Ok(stream)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|since| since.as_millis() as i64).unwrap_or_default()
}

/// What [`produce_windowed`] measured.
#[derive(Debug, Clone)]
pub struct WindowOutcome {
    /// Records acknowledged.
    pub records: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// Each record's latency from being handed to the producer to its acknowledgement, µs, sorted.
    pub latencies_us: Vec<u32>,
    /// Produce requests (= batches) sent.
    pub requests: u64,
}

/// Produces `records` records of `payload` keeping `window` records handed over and not yet
/// acknowledged, as an application with that many sends outstanding would: each acknowledgement
/// hands over as many new records. Whenever a request may be sent, everything handed over and not
/// yet sent goes in one batch (at most `batch_records_max`) — librdkafka's behaviour with
/// `linger.ms=0`.
pub fn produce_windowed(
    producer: &mut WireProducer,
    records: u64,
    window: usize,
    batch_records_max: usize,
    payload: &[u8],
) -> anyhow::Result<WindowOutcome> {
    assert!(window > 0, "a window of at least one record");
    assert!(batch_records_max > 0, "a batch holds at least one record");
    let started = Instant::now();
    // Hand-over times of records not yet sent, then of records sent and not yet acknowledged.
    let mut unsent: VecDeque<Instant> = VecDeque::new();
    let mut unacknowledged: VecDeque<Instant> = VecDeque::new();
    let mut handed_over = window.min(records as usize) as u64;
    unsent.extend(std::iter::repeat_n(started, handed_over as usize));
    let mut outcome = WindowOutcome { records: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), requests: 0 };
    let values: Vec<&[u8]> = vec![payload; batch_records_max.min(window)];
    while outcome.records < records {
        while producer.can_send() && !unsent.is_empty() {
            let count = unsent.len().min(batch_records_max);
            producer.send(&values[..count])?;
            unacknowledged.extend(unsent.drain(..count));
            outcome.requests += 1;
        }
        let acknowledged = producer.receive()?;
        let now = Instant::now();
        for sent_at in unacknowledged.drain(..acknowledged.records) {
            outcome.latencies_us.push(u32::try_from(now.duration_since(sent_at).as_micros()).unwrap_or(u32::MAX));
        }
        outcome.records += acknowledged.records as u64;
        let more = (acknowledged.records as u64).min(records - handed_over);
        unsent.extend(std::iter::repeat_n(now, more as usize));
        handed_over += more;
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies_us.sort_unstable();
    Ok(outcome)
}
