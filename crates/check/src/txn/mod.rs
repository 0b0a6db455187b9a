//! The `txn` workload: transactional consume-transform-produce copiers, checked input against output.
//! Idempotent producer processes ([`crate::producer_process`], killed mid-send by `client-kill`)
//! write unique values to `<run>-in`; `once copy` processes (one active at a
//! time, one transactional id) copy it to `<run>-out` in transactions of 100 ms, aborting a fifth of
//! them on purpose, while the nemesis kills and pauses them ([`crate::txn::copier`]). A read_committed
//! and a read_uncommitted consumer read the output the whole time. After the faults: zombies are
//! resumed and given time to exit fenced, the producers stop, a final copier copies whatever is left
//! and exits when idle, and both topics are read whole.

pub(crate) mod checker;
pub(crate) mod copier;
pub(crate) mod history;
pub(crate) mod report;
mod run;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::history::{FaultEvent, Send, Value};
use crate::nemesis::elapsed_ms;
use crate::producer_process::{Ids, Payload, PoolSettings, ProducerPool, ProducerRun};
use crate::progress::Stats;
use crate::queue::FINAL_READER;
use crate::queue::{client, high_watermarks, partitions_of, ConsumerSpec, Consumers, QueueConfig, Reads, Recorder};
use crate::rng::Rng;
use crate::txn::copier::Copiers;
use crate::txn::history::{CopierEnd, CopierId, TopicRead, COMMITTED_CONSUMER, UNCOMMITTED_CONSUMER};

/// The live consumers of the output, by [`crate::history::Poll::consumer`].
pub const CONSUMERS: [&str; 2] = ["output-read-committed", "output-read-uncommitted"];
/// How long resumed zombies get to notice they were fenced and exit.
const ZOMBIE_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The final copier exits once caught up and idle this long.
const FINAL_COPY_IDLE_MS: u64 = 2_000;
/// How long the final copier may take.
const FINAL_COPY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the live consumers keep reading after the final copier is done.
const DRAIN: Duration = Duration::from_secs(2);
/// How long a final read may take, the wait for open transactions to end included.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a final read waits for the last stable offset to reach the high watermark.
const STABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// An input producer process retires after this many sends (a uniform draw per process).
const SENDS_PER_PRODUCER: (u64, u64) = (200, 2000);

/// Fresh values only, to the partitions in turn: every input value is unique (the `sink`
/// workload's input too).
pub(crate) struct FreshValues {
    pub(crate) sent: Value,
    pub(crate) partitions: i32,
}

impl Ids for FreshValues {
    fn next(&mut self, _: &mut Rng, _: &[Send], _: u32) -> (Value, i32) {
        self.sent += 1;
        (self.sent, i32::try_from(self.sent % self.partitions.max(1) as u64).unwrap_or(0))
    }
}

/// What the workload needs to know.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// The producers' settings; `topic` is the input topic.
    pub queue: QueueConfig,
    pub output: String,
    /// `isolation.level` of the live consumer that must see committed records only: `read_committed`
    /// unless the run is broken on purpose.
    pub committed_isolation: &'static str,
}

impl TxnConfig {
    /// The settings the live consumers read the output with.
    fn output_config(&self) -> QueueConfig {
        QueueConfig { topic: self.output.clone(), ..self.queue.clone() }
    }
}

/// The running workload: producers to the input and live consumers of the output.
pub struct Running {
    /// The input producers.
    pub pool: ProducerPool,
    consumers: Consumers,
}

/// Starts the producers (`producer_command`, logs in `log_dir`) and the live consumers; the copiers
/// are the nemesis's to start.
pub fn start(
    config: &TxnConfig,
    stats: &Arc<Stats>,
    start: Instant,
    producer_command: String,
    seed: u64,
    log_dir: std::path::PathBuf,
) -> Running {
    let settings = PoolSettings {
        command: producer_command,
        bootstrap: config.queue.bootstrap.clone(),
        topic: config.queue.topic.clone(),
        id_header: None,
        payload: Payload::Id,
        idempotence: config.queue.idempotence,
        slots: config.queue.producers,
        rate: config.queue.rate,
        sends_per_producer: SENDS_PER_PRODUCER,
        seed,
        log_dir,
    };
    let ids = FreshValues { sent: 0, partitions: config.queue.partitions };
    let pool = ProducerPool::start(settings, Recorder::new(start, stats.clone()), Box::new(ids));
    let specs = [
        ConsumerSpec { number: COMMITTED_CONSUMER, name: CONSUMERS[0], isolation: config.committed_isolation },
        ConsumerSpec { number: UNCOMMITTED_CONSUMER, name: CONSUMERS[1], isolation: "read_uncommitted" },
    ];
    let consumers = Consumers::start(&config.output_config(), &specs, stats, start);
    Running { pool, consumers }
}

/// What the run recorded before the final reads.
pub struct Recorded {
    pub sends: Vec<Send>,
    pub reads: Reads,
    /// Copiers still running side by side after the resumed zombies' time to exit.
    pub concurrent_copiers: Vec<CopierId>,
    /// The final copier exited by itself within [`FINAL_COPY_TIMEOUT`].
    pub final_copy_finished: bool,
    /// Every input producer process, and their kills.
    pub producers: Vec<ProducerRun>,
    pub producer_events: Vec<FaultEvent>,
}

impl Running {
    /// After the faults: resumes paused copiers and waits for all but one to exit (fenced), with the
    /// producers still writing so that a resumed zombie has something to try; stops the producers;
    /// replaces the active copier by a final one that exits when idle; lets the consumers drain.
    pub fn finish(mut self, copiers: &mut Copiers) -> anyhow::Result<Recorded> {
        copiers.resume_all()?;
        let deadline = Instant::now() + ZOMBIE_EXIT_TIMEOUT;
        while copiers.running().len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            copiers.reap();
        }
        let concurrent_copiers = copiers.running();
        self.pool.stop()?;
        copiers.stop_all();
        let last = copiers.spawn(Some(FINAL_COPY_IDLE_MS))?;
        let final_copy_finished = copiers.wait_for(last, FINAL_COPY_TIMEOUT);
        if !final_copy_finished {
            eprintln!("once check: the final copier did not finish in {FINAL_COPY_TIMEOUT:?}; stopping it");
            copiers.kill(last, CopierEnd::Stopped);
        }
        std::thread::sleep(DRAIN);
        let reads = self.consumers.stop()?;
        let sends = self.pool.take_sends();
        let (producers, producer_events) = self.pool.into_history()?;
        Ok(Recorded { sends, reads, concurrent_copiers, final_copy_finished, producers, producer_events })
    }
}

/// The wall clock (ms since the Unix epoch) at `start`, the origin of the run's times: relates what the
/// copiers trace on the host's wall clock to what the checker records on its monotonic clock. Taken
/// again at the end, it shows whether the wall clock was stepped meanwhile.
pub fn wall_clock_origin_ms(start: Instant) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX).saturating_sub(elapsed_ms(start))
}

/// The final reads of both topics, and the records of each that did not parse.
#[derive(Default)]
pub struct FinalReads {
    pub input: TopicRead,
    pub output: TopicRead,
    pub input_unparseable: Vec<(i32, i64)>,
    pub output_unparseable: Vec<(i32, i64)>,
}

/// Reads the input, then the output, whole ([`read_topic`]).
pub fn final_reads(config: &TxnConfig, start: Instant) -> anyhow::Result<FinalReads> {
    let (bootstrap, partitions) = (&config.queue.bootstrap, config.queue.partitions);
    let (input, input_unparseable) = read_topic(bootstrap, &config.queue.topic, partitions, start)?;
    let (output, output_unparseable) = read_topic(bootstrap, &config.output, partitions, start)?;
    Ok(FinalReads { input, output, input_unparseable, output_unparseable })
}

/// Reads every partition of `topic` (created with `created` partitions) that the broker still has,
/// read_committed from the start to its end ([`read_whole`]). Returns the read and the records that
/// did not parse.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    created: i32,
    start: Instant,
) -> anyhow::Result<(TopicRead, Vec<(i32, i64)>)> {
    let mut reads = Reads::default();
    let extent = read_whole(bootstrap, topic, created, &mut |message| {
        reads.record(FINAL_READER, 0, message, elapsed_ms(start));
    })?;
    let ReadExtent { read_to, complete, partitions_found } = extent;
    Ok((TopicRead { records: reads.polls, read_to, complete, partitions_found }, reads.unparseable))
}

/// How far a [`read_whole`] got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadExtent {
    /// [`TopicRead::read_to`].
    pub read_to: Vec<i64>,
    /// [`TopicRead::complete`].
    pub complete: bool,
    /// [`TopicRead::partitions_found`].
    pub partitions_found: Option<i32>,
}

/// Reads every partition of `topic` (created with `created` partitions) that the broker still has,
/// read_committed from the start to its end, once no transaction is open (the last stable offset has
/// reached the high watermark, waited for up to [`STABLE_TIMEOUT`]), handing each record to
/// `on_record` in read order. An end of partition is librdkafka's: the fetch position reached the
/// last stable offset, transaction markers included. Partitions the broker no longer has
/// ([`partitions_of`], the rule `queue` uses) are not waited for: the checkers report what was
/// acknowledged or committed on them as lost.
pub fn read_whole(
    bootstrap: &str,
    topic: &str,
    created: i32,
    on_record: &mut dyn FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<ReadExtent> {
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
    let partitions_found = partitions_of(bootstrap, topic, created, deadline)?;
    let partitions = partitions_found.min(created);
    if partitions == 0 {
        let read_to = vec![0; usize::try_from(created).unwrap_or(0)];
        return Ok(ReadExtent { read_to, complete: true, partitions_found: Some(partitions_found) });
    }
    let group = format!("{topic}-final-read");
    let uncommitted: BaseConsumer = client(bootstrap)
        .set("group.id", &group)
        .set("isolation.level", "read_uncommitted")
        .create()
        .context("creating the final reader's watermark client")?;
    let high = high_watermarks(&uncommitted, topic, partitions, deadline)?;
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", &group)
        .set("client.id", "final-read")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .context("creating the final reader")?;
    let stable_deadline = Instant::now() + STABLE_TIMEOUT;
    // librdkafka asks for offsets at the consumer's isolation level: read_committed gives the LSO.
    // Everything below the high watermark is decided once the LSO reaches it; a transaction marker
    // written since (a killed client's transaction aborted by the broker) may take it past.
    let (stable, last_stable) = loop {
        let last_stable = high_watermarks(&consumer, topic, partitions, deadline)?;
        let stable = high.iter().all(|(partition, end)| last_stable.get(partition).is_some_and(|lso| lso >= end));
        if stable || Instant::now() > stable_deadline {
            break (stable, last_stable);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !stable {
        eprintln!("once check: {topic}: a transaction is still open after {STABLE_TIMEOUT:?} (LSO {last_stable:?}, HW {high:?})");
    }
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment).context("assigning the final reader")?;
    let (mut at_end, mut next) = (HashSet::new(), HashMap::new());
    while at_end.len() < partitions as usize && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                on_record(&message);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            // A reconnect or the like: librdkafka retries, and the deadline bounds it.
            Some(Err(_)) | None => {}
        }
    }
    // A partition the broker no longer has was read up to nothing.
    let read_to = (0..created)
        .map(|partition| match at_end.contains(&partition) {
            true => last_stable[&partition],
            false => next.get(&partition).copied().unwrap_or(0),
        })
        .collect();
    let complete = stable && at_end.len() == partitions as usize;
    Ok(ReadExtent { read_to, complete, partitions_found: Some(partitions_found) })
}
