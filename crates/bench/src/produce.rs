//! The produce workload: N librdkafka producers send acks=all records to a fresh topic, plain or
//! idempotent; every record's ack latency is kept, and the batch sizes librdkafka sent are read
//! from its statistics.

use std::future::Future;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};

use crate::process::ProcessCost;
use crate::rows::Measurement;
use crate::Plan;

/// Which producer the workload runs. Everything else in the client configuration is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `enable.idempotence=false`. librdkafka's default `max.in.flight.requests.per.connection`
    /// (1,000,000) applies.
    Plain,
    /// `enable.idempotence=true`: an InitProducerId before the first send, a producer id, epoch and
    /// sequence on every batch. librdkafka then caps `max.in.flight.requests.per.connection` at 5,
    /// as Kafka requires, so this differs from [`Workload::Plain`] in that too.
    Idempotent,
}

impl Workload {
    /// Name in progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Plain => "plain",
            Workload::Idempotent => "idempotent",
        }
    }
}

/// The librdkafka idempotent producer state once it holds a producer id (`rd_kafka_idemp_state`).
const PRODUCER_ID_ASSIGNED: &str = "Assigned";

/// What one run of the produce workload measured.
#[derive(Debug, Clone)]
pub struct ProduceOutcome {
    /// Records acknowledged.
    pub records: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// Every record's latency from enqueue in the client to its delivery callback, in microseconds,
    /// sorted.
    pub ack_latencies_us: Vec<u32>,
    /// Average bytes per record batch librdkafka sent (batch header included).
    pub batch_bytes_average: f64,
    /// Record batches sent, as counted by librdkafka.
    pub batches: u64,
    /// Produce requests sent (one request carries one batch per partition it writes).
    pub produce_requests: u64,
}

impl ProduceOutcome {
    /// The common table's figures of this run, whose records carried `record_bytes` of value each.
    pub(crate) fn into_measurement(self, record_bytes: usize, cost: Option<ProcessCost>) -> Measurement {
        Measurement {
            records: self.records,
            value_bytes: self.records * record_bytes as u64,
            elapsed: self.elapsed,
            latencies_us: self.ack_latencies_us,
            cost,
        }
    }
}

/// Counters from librdkafka's statistics, summed over every emit.
#[derive(Debug, Default, Clone, Copy)]
struct BatchCounters {
    /// Sum of batch sizes; librdkafka resets its windows at each emit, so the sums add up.
    batch_bytes: i64,
    batches: i64,
    /// Cumulative in librdkafka, so the latest emit's value is the total.
    produce_requests: i64,
    emits: u64,
    /// The idempotent producer holds a producer id (always false for a plain producer).
    producer_id_assigned: bool,
}

/// What the delivery callback and the sending thread share; one lock because both sides touch it
/// once per record and the sender only waits on it when its window is full.
#[derive(Debug, Default)]
struct Shared {
    in_flight: usize,
    ack_latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    last_ack: Option<Instant>,
    counters: BatchCounters,
}

/// The librdkafka context of one producer client.
struct BenchContext {
    topic: String,
    shared: Mutex<Shared>,
    /// Signalled when a delivery frees a place in the window or a statistics emit arrives.
    changed: Condvar,
}

impl BenchContext {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic in a callback poisons the lock; the numbers are still readable and the panic is
        // reported on its own.
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for BenchContext {
    fn stats(&self, statistics: Statistics) {
        let mut shared = self.lock();
        if let Some(topic) = statistics.topics.get(&self.topic) {
            shared.counters.batch_bytes += topic.batchsize.sum;
            shared.counters.batches += topic.batchsize.cnt;
        }
        let produce_requests = statistics.brokers.values().filter_map(|broker| broker.req.get("Produce")).sum();
        shared.counters.produce_requests = produce_requests;
        shared.counters.emits += 1;
        shared.counters.producer_id_assigned =
            statistics.eos.as_ref().is_some_and(|eos| eos.idemp_state == PRODUCER_ID_ASSIGNED);
        self.changed.notify_all();
    }
}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at: Box<Instant>) {
        let now = Instant::now();
        let latency_us = u32::try_from(now.duration_since(*sent_at).as_micros()).unwrap_or(u32::MAX);
        let mut shared = self.lock();
        shared.in_flight -= 1;
        match result {
            Ok(_) => shared.ack_latencies_us.push(latency_us),
            Err((error, _)) => {
                shared.errors += 1;
                if shared.first_error.is_none() {
                    shared.first_error = Some(error.to_string());
                }
            }
        }
        shared.last_ack = Some(now);
        self.changed.notify_all();
    }
}

/// Creates `topic`, produces `plan.records` records to it from `--producers` clients, deletes it.
pub fn run(plan: &Plan, topic: &str, workload: Workload) -> anyhow::Result<ProduceOutcome> {
    create_topic(plan, topic)?;
    let outcome = produce_all(plan, topic, workload);
    if let Err(error) = delete_topic(plan, topic) {
        eprintln!("once-bench: could not delete topic {topic}: {error:#}");
    }
    outcome
}

/// Creates `topic` and fills it with `plan.records` records (plain producers); the topic is kept, as
/// the input of the copier benchmark.
pub(crate) fn fill(plan: &Plan, topic: &str) -> anyhow::Result<ProduceOutcome> {
    create_topic(plan, topic)?;
    produce_all(plan, topic, Workload::Plain)
}

fn produce_all(plan: &Plan, topic: &str, workload: Workload) -> anyhow::Result<ProduceOutcome> {
    let producers = plan.args.producers;
    let start_line = Arc::new(Barrier::new(producers + 1));
    let mut handles = Vec::with_capacity(producers);
    for index in 0..producers {
        // Spread the records so that the counts add up to exactly `records`.
        let records = plan.records / producers as u64 + u64::from((index as u64) < plan.records % producers as u64);
        let (plan, topic, start_line) = (plan.clone(), topic.to_string(), Arc::clone(&start_line));
        let handle = thread::Builder::new()
            .name(format!("bench-producer-{index}"))
            .spawn(move || produce_one(&plan, &topic, workload, records, &start_line))?;
        handles.push(handle);
    }
    start_line.wait();
    let started = Instant::now();
    let mut outcome = ProduceOutcome {
        records: 0,
        elapsed: Duration::ZERO,
        ack_latencies_us: Vec::with_capacity(plan.records as usize),
        batch_bytes_average: 0.0,
        batches: 0,
        produce_requests: 0,
    };
    let mut counters = BatchCounters::default();
    for handle in handles {
        let shared = handle.join().map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        if let Some(last_ack) = shared.last_ack {
            outcome.elapsed = outcome.elapsed.max(last_ack.saturating_duration_since(started));
        }
        outcome.records += shared.ack_latencies_us.len() as u64;
        outcome.ack_latencies_us.extend_from_slice(&shared.ack_latencies_us);
        counters.batch_bytes += shared.counters.batch_bytes;
        counters.batches += shared.counters.batches;
        counters.produce_requests += shared.counters.produce_requests;
    }
    outcome.ack_latencies_us.sort_unstable();
    outcome.batches = u64::try_from(counters.batches).unwrap_or_default();
    outcome.produce_requests = u64::try_from(counters.produce_requests).unwrap_or_default();
    outcome.batch_bytes_average = if counters.batches > 0 {
        counters.batch_bytes as f64 / counters.batches as f64
    } else {
        anyhow::bail!("librdkafka reported no batches for {topic}; cannot size the raw baseline")
    };
    Ok(outcome)
}

/// One producer client: connects, fetches metadata and (idempotent) waits for its producer id
/// before the start line, so the measurement is of producing, not of setting up; then sends
/// `records` records keeping at most `--in-flight` unacknowledged, and waits for every
/// acknowledgement.
fn produce_one(
    plan: &Plan,
    topic: &str,
    workload: Workload,
    records: u64,
    start_line: &Barrier,
) -> anyhow::Result<Shared> {
    let context = BenchContext { topic: topic.to_string(), shared: Mutex::default(), changed: Condvar::new() };
    let producer: anyhow::Result<ThreadedProducer<BenchContext>> =
        producer_config(plan, workload).create_with_context(context).context("creating a producer");
    let warmed_up = producer.and_then(|producer| {
        producer.client().fetch_metadata(Some(topic), Duration::from_secs(10)).context("fetching metadata")?;
        if workload == Workload::Idempotent {
            wait_for_producer_id(producer.context(), Duration::from_secs(10))?;
        }
        Ok(producer)
    });
    // Wait at the start line even after a failure, or the other threads would wait forever.
    start_line.wait();
    let producer = warmed_up?;
    let payload: Vec<u8> = (0..plan.args.record_bytes).map(|index| (index % 251) as u8).collect();
    for _ in 0..records {
        wait_for_window(producer.context(), plan.args.in_flight);
        send(&producer, topic, &payload)?;
    }
    producer.flush(plan.delivery_timeout + Duration::from_secs(5)).context("waiting for acknowledgements")?;
    wait_for_final_statistics(producer.context(), plan.statistics_interval);
    let shared = std::mem::take(&mut *producer.context().lock());
    if let Some(error) = &shared.first_error {
        anyhow::bail!("{} of {records} records failed; the first: {error}", shared.errors);
    }
    Ok(shared)
}

fn producer_config(plan: &Plan, workload: Workload) -> ClientConfig {
    let mut config = crate::client_config(&plan.args.bootstrap);
    config
        .set("client.id", "once-bench")
        .set("acks", "all")
        // The only difference between the workloads. max.in.flight.requests.per.connection is left
        // unset: librdkafka lowers its default to 5 with idempotence and would refuse a higher one.
        .set("enable.idempotence", (workload == Workload::Idempotent).to_string())
        .set("linger.ms", plan.args.linger_ms.to_string())
        .set("compression.type", "none")
        .set("message.timeout.ms", plan.delivery_timeout.as_millis().to_string())
        .set("statistics.interval.ms", plan.statistics_interval.as_millis().to_string())
        .set("queue.buffering.max.messages", (plan.args.in_flight * 2).max(100_000).to_string());
    if let Some(requests) = plan.args.max_in_flight_requests {
        config.set("max.in.flight.requests.per.connection", requests.to_string());
    }
    config
}

fn wait_for_window(context: &BenchContext, in_flight_max: usize) {
    let mut shared = context.lock();
    while shared.in_flight >= in_flight_max {
        shared = context.changed.wait(shared).unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    shared.in_flight += 1;
}

fn send(producer: &ThreadedProducer<BenchContext>, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut record =
        BaseRecord::<(), [u8], Box<Instant>>::with_opaque_to(topic, Box::new(Instant::now())).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            // The window keeps the queue below its bound; this is only a safety net.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => {
                producer.context().lock().in_flight -= 1;
                return Err(error).context("enqueueing a record");
            }
        }
    }
}

/// librdkafka asks for a producer id (InitProducerId) as soon as the client starts and reports its
/// state only in statistics, so wait for an emit that shows it assigned.
fn wait_for_producer_id(context: &BenchContext, time_max: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + time_max;
    let mut shared = context.lock();
    while !shared.counters.producer_id_assigned {
        let wait = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(!wait.is_zero(), "no producer id assigned within {time_max:?} (InitProducerId)");
        shared = context.changed.wait_timeout(shared, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
    }
    Ok(())
}

/// librdkafka emits statistics on a timer; wait for one emitted after the last acknowledgement so
/// that the batch counters include the final batches.
fn wait_for_final_statistics(context: &BenchContext, interval: Duration) {
    let deadline = Instant::now() + interval * 3 + Duration::from_secs(1);
    let mut shared = context.lock();
    let emits_before = shared.counters.emits;
    while shared.counters.emits < emits_before + 2 && Instant::now() < deadline {
        let wait = deadline.saturating_duration_since(Instant::now());
        shared = context.changed.wait_timeout(shared, wait).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
    }
}

pub(crate) fn admin(plan: &Plan) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    crate::client_config(&plan.args.bootstrap).create().context("creating an admin client")
}

pub(crate) fn create_topic(plan: &Plan, topic: &str) -> anyhow::Result<()> {
    // -1: the broker's default replication factor (KIP-464), so a cluster benchmarks its own.
    let new_topic = NewTopic::new(topic, plan.args.partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let admin = admin(plan)?;
    for result in block_on(admin.create_topics([&new_topic], &options)).context("CreateTopics")? {
        result.map_err(|(name, code)| anyhow::anyhow!("creating topic {name}: {code}"))?;
    }
    Ok(())
}

pub(crate) fn delete_topic(plan: &Plan, topic: &str) -> anyhow::Result<()> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let admin = admin(plan)?;
    for result in block_on(admin.delete_topics(&[topic], &options)).context("DeleteTopics")? {
        result.map_err(|(name, code)| anyhow::anyhow!("deleting topic {name}: {code}"))?;
    }
    Ok(())
}

/// Wakes the thread blocked in [`block_on`].
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread. The admin futures are resolved by librdkafka's own
/// threads, so parking until woken is all an executor needs to do, and `run` stays callable from
/// inside or outside an async runtime's blocking context without bringing one in.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut context = TaskContext::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
