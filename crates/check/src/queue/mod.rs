//! The `queue` workload: idempotent producers send unique values to every partition of a fresh
//! topic while assign-based (read_committed and read_uncommitted) and subscribe-based (a group of
//! two) consumers poll; after the faults stop, a final read of every partition from the start.

pub(crate) mod checker;
pub(crate) mod report;
mod run;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::history::{value_of, Poll, Send, SendOutcome, Value};
use crate::nemesis::elapsed_ms;
use crate::progress::Stats;

/// How long the final read may take.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the producers get to have their last records acknowledged once the faults stop.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Consumer index used for the final read's polls.
pub const FINAL_READER: u16 = u16::MAX;

/// What the workload needs to know.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Where clients connect: the proxy when there is one.
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub producers: u32,
    /// Records per second over all producers.
    pub rate: u32,
    pub idempotence: bool,
}

/// The consumers every run has, by name; the last two share a group.
pub const CONSUMERS: [&str; 4] = ["assign-read-committed", "assign-read-uncommitted", "group-a", "group-b"];

/// Settings every client of the checker shares: quick reconnects, so faults cost little time, and no
/// re-bootstrap: librdkafka >= 2.10's default (`metadata.recovery.strategy=rebootstrap`) can leave a
/// client waiting forever for a coordinator after the only broker restarts (librdkafka issues 5456
/// and 5511; docs/clients.md).
pub(crate) fn client(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("metadata.recovery.strategy", "none")
        .set("socket.connection.setup.timeout.ms", "5000")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "500")
        .set("retry.backoff.ms", "20")
        .set("retry.backoff.max.ms", "500");
    config
}

/// Remembers every send; delivery reports fill in the outcome by slot.
#[derive(Clone)]
pub(crate) struct Recorder {
    pub(crate) sends: Arc<Mutex<Vec<Send>>>,
    pub(crate) start: Instant,
    pub(crate) stats: Arc<Stats>,
}

impl Recorder {
    pub(crate) fn new(start: Instant, stats: Arc<Stats>) -> Recorder {
        Recorder { sends: Arc::default(), start, stats }
    }

    /// Every send recorded so far, taken out of the recorder.
    pub(crate) fn take_sends(&self) -> Vec<Send> {
        std::mem::take(&mut *self.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub(crate) fn push(&self, send: Send) -> usize {
        let mut sends = self.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sends.push(send);
        sends.len() - 1
    }

    pub(crate) fn finish(&self, slot: usize, outcome: SendOutcome) {
        let counter = if matches!(outcome, SendOutcome::Acked { .. }) { &self.stats.acked } else { &self.stats.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut sends = self.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(send) = sends.get_mut(slot) {
            send.outcome = outcome;
            send.done_ms = elapsed_ms(self.start);
        }
    }
}

impl ClientContext for Recorder {}
impl ProducerContext for Recorder {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, slot: Box<usize>) {
        let outcome = match result {
            Ok(message) => SendOutcome::Acked { offset: message.offset() },
            Err((error, _)) => SendOutcome::Failed { error: error.to_string() },
        };
        self.finish(*slot, outcome);
    }
}

/// Sends values at the producer's share of the rate until `stop`, then flushes for up to `flush_ms`
/// (read when it stops).
pub(crate) fn produce(
    config: &QueueConfig,
    number: u32,
    recorder: Recorder,
    stop: &AtomicBool,
    flush_ms: &AtomicU64,
) -> anyhow::Result<()> {
    let producer: BaseProducer<Recorder> = client(&config.bootstrap)
        .set("enable.idempotence", config.idempotence.to_string())
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "5000")
        .create_with_context(recorder.clone())
        .context("creating a producer")?;
    let interval = Duration::from_secs_f64(f64::from(config.producers) / f64::from(config.rate.max(1)));
    let mut next = Instant::now();
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            producer.poll((next - now).min(Duration::from_millis(10)));
            continue;
        }
        let value = value_of(number, index);
        let partition = i32::try_from(index % config.partitions.max(1) as u64).unwrap_or(0);
        let sent_ms = elapsed_ms(recorder.start);
        let send = Send {
            producer: number,
            index,
            value,
            partition,
            outcome: SendOutcome::Unknown,
            sent_ms,
            done_ms: sent_ms,
        };
        let slot = recorder.push(send);
        let payload = value.to_string();
        let record = BaseRecord::with_opaque_to(&config.topic, Box::new(slot)).partition(partition).payload(&payload);
        if let Err((error, _)) = producer.send::<(), _>(record) {
            recorder.finish(slot, SendOutcome::Failed { error: error.to_string() });
        }
        index += 1;
        next += interval;
    }
    // Records not acknowledged by now stay unknown, or fail when dropping the producer purges them.
    let _ = producer.flush(Duration::from_millis(flush_ms.load(Ordering::Relaxed)));
    Ok(())
}

/// Producer threads that record into one [`Recorder`].
pub(crate) struct Producers {
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    stop: Arc<AtomicBool>,
    /// How long each producer flushes once stopped: [`FLUSH_TIMEOUT`], or less for a run that has
    /// already failed.
    flush_ms: Arc<AtomicU64>,
}

impl Producers {
    /// Starts one thread per producer number in `numbers`, each sending its share of `config.rate`.
    pub(crate) fn start(config: &QueueConfig, numbers: Range<u32>, recorder: &Recorder) -> Producers {
        let stop = Arc::new(AtomicBool::new(false));
        let flush_ms = Arc::new(AtomicU64::new(FLUSH_TIMEOUT.as_millis() as u64));
        let threads = numbers
            .map(|number| {
                let (config, recorder, stop, flush_ms) =
                    (config.clone(), recorder.clone(), stop.clone(), flush_ms.clone());
                std::thread::spawn(move || produce(&config, number, recorder, &stop, &flush_ms))
            })
            .collect();
        Producers { threads, stop, flush_ms }
    }

    /// Stops every producer and waits for it; each first flushes for up to [`FLUSH_TIMEOUT`].
    pub(crate) fn stop(self) -> anyhow::Result<()> {
        self.stop_within(FLUSH_TIMEOUT)
    }

    /// Stops every producer and waits for it; each first flushes for up to `flush`.
    pub(crate) fn stop_within(self, flush: Duration) -> anyhow::Result<()> {
        self.flush_ms.store(flush.as_millis() as u64, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        for producer in self.threads {
            producer.join().map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        }
        Ok(())
    }
}

/// Bumps its epoch on every rebalance, so the checker allows offsets to jump between epochs.
pub(crate) struct EpochContext {
    pub(crate) epoch: Arc<AtomicU32>,
}

impl ClientContext for EpochContext {}
impl ConsumerContext for EpochContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one consumer read: its polls and the records it could not parse.
#[derive(Debug, Default)]
pub struct Reads {
    pub polls: Vec<Poll>,
    pub unparseable: Vec<(i32, i64)>,
}

impl Reads {
    pub(crate) fn record(&mut self, consumer: u16, epoch: u32, message: &impl Message, time_ms: u64) {
        let (partition, offset) = (message.partition(), message.offset());
        let value = message
            .payload()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<Value>().ok());
        match value {
            Some(value) => self.polls.push(Poll { consumer, epoch, partition, offset, value, time_ms }),
            None => self.unparseable.push((partition, offset)),
        }
    }
}

/// One consumer of a run: its index in the history's consumer list, its name (also its `client.id`:
/// names starting with `group` subscribe in one group, the others assign every partition from the
/// beginning) and its `isolation.level`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerSpec {
    pub(crate) number: u16,
    pub(crate) name: &'static str,
    pub(crate) isolation: &'static str,
}

impl ConsumerSpec {
    /// The `queue` workload's consumer `number` (the final read's for [`FINAL_READER`]).
    fn queue(number: u16) -> ConsumerSpec {
        let name = CONSUMERS.get(usize::from(number)).copied().unwrap_or("final-read");
        let isolation = if name == "assign-read-uncommitted" { "read_uncommitted" } else { "read_committed" };
        ConsumerSpec { number, name, isolation }
    }
}

pub(crate) fn consumer(
    config: &QueueConfig,
    spec: ConsumerSpec,
    epoch: Arc<AtomicU32>,
) -> anyhow::Result<BaseConsumer<EpochContext>> {
    let name = spec.name;
    let in_group = name.starts_with("group");
    let group = if in_group { format!("{}-group", config.topic) } else { format!("{}-{name}", config.topic) };
    let consumer: BaseConsumer<EpochContext> = client(&config.bootstrap)
        .set("group.id", group)
        .set("client.id", name)
        .set("isolation.level", spec.isolation)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", in_group.to_string())
        .set("auto.commit.interval.ms", "500")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(EpochContext { epoch })
        .with_context(|| format!("creating consumer {name}"))?;
    if in_group {
        consumer.subscribe(&[&config.topic]).context("subscribing")?;
    } else {
        let mut assignment = TopicPartitionList::new();
        for partition in 0..config.partitions {
            assignment.add_partition_offset(&config.topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment).context("assigning")?;
    }
    Ok(consumer)
}

/// Polls until `stop`, recording every record with the consumer's epoch at the time.
pub(crate) fn consume(
    config: &QueueConfig,
    spec: ConsumerSpec,
    stats: &Stats,
    start: Instant,
    stop: &AtomicBool,
) -> anyhow::Result<Reads> {
    let epoch = Arc::new(AtomicU32::new(0));
    let consumer = consumer(config, spec, epoch.clone())?;
    let mut reads = Reads::default();
    while !stop.load(Ordering::Relaxed) {
        // Errors (a broker gone, a reset connection) are librdkafka's to retry; the checker judges
        // only what was read.
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        reads.record(spec.number, epoch.load(Ordering::Relaxed), &message, elapsed_ms(start));
        stats.polled.fetch_add(1, Ordering::Relaxed);
    }
    Ok(reads)
}

/// Consumer threads that poll until stopped.
pub(crate) struct Consumers {
    threads: Vec<JoinHandle<anyhow::Result<Reads>>>,
    stop: Arc<AtomicBool>,
}

impl Consumers {
    pub(crate) fn start(config: &QueueConfig, specs: &[ConsumerSpec], stats: &Arc<Stats>, start: Instant) -> Consumers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = specs
            .iter()
            .map(|&spec| {
                let (config, stats, stop) = (config.clone(), stats.clone(), stop.clone());
                std::thread::spawn(move || consume(&config, spec, &stats, start, &stop))
            })
            .collect();
        Consumers { threads, stop }
    }

    /// Stops every consumer; their reads, merged.
    pub(crate) fn stop(self) -> anyhow::Result<Reads> {
        self.stop.store(true, Ordering::Relaxed);
        let mut reads = Reads::default();
        for consumer in self.threads {
            let mut one = consumer.join().map_err(|_| anyhow::anyhow!("a consumer thread panicked"))??;
            reads.polls.append(&mut one.polls);
            reads.unparseable.append(&mut one.unparseable);
        }
        Ok(reads)
    }
}

/// The running workload: producer and consumer threads.
pub struct Running {
    producers: Producers,
    consumers: Consumers,
    recorder: Recorder,
}

/// Starts every producer and consumer thread.
pub fn start(config: &QueueConfig, stats: &Arc<Stats>, start: Instant) -> Running {
    let recorder = Recorder::new(start, stats.clone());
    let producers = Producers::start(config, 0..config.producers, &recorder);
    let specs: Vec<ConsumerSpec> = (0..CONSUMERS.len() as u16).map(ConsumerSpec::queue).collect();
    let consumers = Consumers::start(config, &specs, stats, start);
    Running { producers, consumers, recorder }
}

/// Everything the workload recorded.
pub struct Recorded {
    pub sends: Vec<Send>,
    pub reads: Reads,
}

impl Running {
    /// Stops the producers (after a flush of up to `flush`), lets the consumers catch up for `drain`,
    /// stops them.
    pub fn stop(self, flush: Duration, drain: Duration) -> anyhow::Result<Recorded> {
        self.producers.stop_within(flush)?;
        std::thread::sleep(drain);
        let reads = self.consumers.stop()?;
        Ok(Recorded { sends: self.recorder.take_sends(), reads })
    }
}

/// What the final read found.
pub struct FinalRead {
    pub reads: Reads,
    /// Whether every partition the broker still has was read to its end.
    pub complete: bool,
    /// How many partitions the broker's metadata listed for the topic (0: the topic is gone).
    pub partitions_found: i32,
}

/// Reads every partition the broker still has from the start up to its high watermark as of now.
/// Partitions it no longer has (the topic deleted, or re-created with fewer) are not waited for: the
/// checker reports what was acknowledged on them as lost.
pub fn final_read(config: &QueueConfig, start: Instant) -> anyhow::Result<FinalRead> {
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
    let partitions_found = partitions_of(&config.bootstrap, &config.topic, config.partitions, deadline)?;
    let present = QueueConfig { partitions: partitions_found.min(config.partitions), ..config.clone() };
    if present.partitions == 0 {
        return Ok(FinalRead { reads: Reads::default(), complete: true, partitions_found });
    }
    let consumer = consumer(&present, ConsumerSpec::queue(FINAL_READER), Arc::new(AtomicU32::new(0)))?;
    let high = high_watermarks(&consumer, &present.topic, present.partitions, deadline)?;
    let mut next: HashMap<i32, i64> = HashMap::new();
    let done = |next: &HashMap<i32, i64>| high.iter().all(|(p, high)| next.get(p).copied().unwrap_or(0) >= *high);
    let mut reads = Reads::default();
    while !done(&next) && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else { continue };
        next.insert(message.partition(), message.offset() + 1);
        reads.record(FINAL_READER, 0, &message, elapsed_ms(start));
    }
    Ok(FinalRead { complete: done(&next), reads, partitions_found })
}

/// How many partitions the broker's metadata lists for `topic`, created with `created` (0 when it
/// answers that the topic does not exist), asked until `deadline` through a broker restart. The
/// consumer asking does not auto-create topics. A loss is believed only when [`PartitionCount`] has
/// seen it twice. Every workload's final read starts here.
pub(crate) fn partitions_of(bootstrap: &str, topic: &str, created: i32, deadline: Instant) -> anyhow::Result<i32> {
    use rdkafka::error::RDKafkaErrorCode;
    let consumer: BaseConsumer =
        client(bootstrap).set("allow.auto.create.topics", "false").create().context("creating the metadata client")?;
    let mut count = PartitionCount::new(created);
    loop {
        let answer = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => match metadata.topics().iter().find(|listed| listed.name() == topic) {
                Some(listed) => match listed.error().map(RDKafkaErrorCode::from) {
                    None => MetadataAnswer::Partitions(i32::try_from(listed.partitions().len()).unwrap_or(i32::MAX)),
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition) => MetadataAnswer::Partitions(0),
                    Some(code) => MetadataAnswer::NoAnswer(format!("the topic's metadata error {code}")),
                },
                None => MetadataAnswer::NoAnswer("the metadata left the topic out".to_string()),
            },
            Err(error) => MetadataAnswer::NoAnswer(error.to_string()),
        };
        let last_error = match count.decide(answer, Instant::now()) {
            Decision::Count(partitions) => return Ok(partitions),
            Decision::AskAgain(why) => why,
        };
        if Instant::now() > deadline {
            anyhow::bail!("no settled metadata for {topic} by the final read's deadline: {last_error}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How long apart two metadata answers that agree on a loss must be for the final read to believe it.
const LOSS_CONFIRMATION: Duration = Duration::from_secs(3);

/// One metadata answer about the run's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MetadataAnswer {
    /// The topic with this many partitions (0: UNKNOWN_TOPIC_OR_PARTITION).
    Partitions(i32),
    /// No usable answer: an error, or the topic left out of the response.
    NoAnswer(String),
}

/// What [`PartitionCount::decide`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// The broker has this many partitions of the topic.
    Count(i32),
    /// Not settled yet, for this reason.
    AskAgain(String),
}

/// Settles how many partitions the broker still has. Every partition the run created is believed at
/// once; fewer (or none) make every acknowledged record of the missing partitions a lost write, so
/// that answer must come twice, [`LOSS_CONFIRMATION`] apart, before it is believed: one broker of a
/// cluster with a stale metadata cache, or one answer during a restart, must not fabricate a loss.
struct PartitionCount {
    created: i32,
    /// The first answer of fewer partitions than created, and when it came.
    loss_seen: Option<(i32, Instant)>,
}

impl PartitionCount {
    fn new(created: i32) -> PartitionCount {
        PartitionCount { created, loss_seen: None }
    }

    fn decide(&mut self, answer: MetadataAnswer, now: Instant) -> Decision {
        let partitions = match answer {
            MetadataAnswer::Partitions(partitions) => partitions,
            MetadataAnswer::NoAnswer(why) => return Decision::AskAgain(why),
        };
        if partitions >= self.created {
            return Decision::Count(partitions);
        }
        match self.loss_seen {
            Some((seen, since)) if seen == partitions && now.duration_since(since) >= LOSS_CONFIRMATION => {
                Decision::Count(partitions)
            }
            Some((seen, _)) if seen == partitions => {
                Decision::AskAgain(format!("{partitions} of {} partitions, not yet confirmed", self.created))
            }
            _ => {
                self.loss_seen = Some((partitions, now));
                Decision::AskAgain(format!("{partitions} of {} partitions, to be confirmed", self.created))
            }
        }
    }
}

/// The high watermark of every partition of `topic` (the last stable offset for a read_committed
/// consumer), retried until `deadline` through a broker restart.
pub(crate) fn high_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
    deadline: Instant,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut high = HashMap::new();
    for partition in 0..partitions {
        let watermark = loop {
            match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
                Ok((_, high)) => break high,
                Err(error) if Instant::now() > deadline => {
                    return Err(error).with_context(|| format!("watermarks of {topic} partition {partition}"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        high.insert(partition, watermark);
    }
    Ok(high)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Decision, MetadataAnswer, PartitionCount, LOSS_CONFIRMATION};

    #[test]
    fn a_single_answer_of_a_lost_topic_is_not_believed() {
        let start = Instant::now();
        let mut count = PartitionCount::new(3);
        let first = count.decide(MetadataAnswer::Partitions(0), start);
        assert!(
            matches!(first, Decision::AskAgain(_)),
            "one UNKNOWN_TOPIC_OR_PARTITION may be a stale cache: {first:?}"
        );
        let second = count.decide(MetadataAnswer::Partitions(3), start + Duration::from_millis(200));
        assert_eq!(second, Decision::Count(3), "the next answer has every partition");
    }

    #[test]
    fn a_topic_left_out_of_the_metadata_is_asked_again() {
        let start = Instant::now();
        let mut count = PartitionCount::new(2);
        for later in [0, 5, 10] {
            let decision =
                count.decide(MetadataAnswer::NoAnswer("left out".into()), start + Duration::from_secs(later));
            assert!(matches!(decision, Decision::AskAgain(_)), "a topic left out is no answer: {decision:?}");
        }
    }

    #[test]
    fn a_loss_is_believed_when_two_answers_apart_agree() {
        let start = Instant::now();
        let mut count = PartitionCount::new(3);
        assert!(matches!(count.decide(MetadataAnswer::Partitions(1), start), Decision::AskAgain(_)));
        let soon = count.decide(MetadataAnswer::Partitions(1), start + Duration::from_millis(200));
        assert!(matches!(soon, Decision::AskAgain(_)), "two answers a moment apart are not yet apart: {soon:?}");
        let later = count.decide(MetadataAnswer::Partitions(1), start + LOSS_CONFIRMATION);
        assert_eq!(later, Decision::Count(1), "the same loss seen {LOSS_CONFIRMATION:?} apart is believed");
    }

    #[test]
    fn answers_that_disagree_on_a_loss_start_the_confirmation_over() {
        let start = Instant::now();
        let mut count = PartitionCount::new(3);
        assert!(matches!(count.decide(MetadataAnswer::Partitions(0), start), Decision::AskAgain(_)));
        let other = count.decide(MetadataAnswer::Partitions(1), start + LOSS_CONFIRMATION);
        assert!(matches!(other, Decision::AskAgain(_)), "0 then 1 partitions is no confirmed loss: {other:?}");
        let confirmed = count.decide(MetadataAnswer::Partitions(1), start + LOSS_CONFIRMATION * 2);
        assert_eq!(confirmed, Decision::Count(1));
    }

    #[test]
    fn every_checker_client_turns_re_bootstrap_off() {
        let config = super::client("127.0.0.1:9092");
        assert_eq!(config.get("metadata.recovery.strategy"), Some("none"), "librdkafka 5456/5511: docs/clients.md");
    }
}
