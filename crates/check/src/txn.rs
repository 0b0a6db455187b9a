//! The `txn` workload: transactional consume-transform-produce copiers, checked input against output.
//! Idempotent producers write unique values to `<run>-in`; `once copy` processes (one active at a
//! time, one transactional id) copy it to `<run>-out` in transactions of 100 ms, aborting a fifth of
//! them on purpose, while the nemesis kills and pauses them ([`crate::txn_copier`]). A read_committed
//! and a read_uncommitted consumer read the output the whole time. After the faults: zombies are
//! resumed and given time to exit fenced, the producers stop, a final copier copies whatever is left
//! and exits when idle, and both topics are read whole.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::history::Send;
use crate::nemesis::elapsed_ms;
use crate::progress::Stats;
use crate::queue::FINAL_READER;
use crate::queue::{client, high_watermarks, ConsumerSpec, Consumers, Producers, QueueConfig, Reads, Recorder};
use crate::txn_copier::Copiers;
use crate::txn_history::{CopierEnd, CopierId, TopicRead, COMMITTED_CONSUMER, UNCOMMITTED_CONSUMER};

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
    producers: Producers,
    consumers: Consumers,
    recorder: Recorder,
}

/// Starts the producers and the live consumers; the copiers are the nemesis's to start.
pub fn start(config: &TxnConfig, stats: &Arc<Stats>, start: Instant) -> Running {
    let recorder = Recorder::new(start, stats.clone());
    let producers = Producers::start(&config.queue, 0..config.queue.producers, &recorder);
    let specs = [
        ConsumerSpec { number: COMMITTED_CONSUMER, name: CONSUMERS[0], isolation: config.committed_isolation },
        ConsumerSpec { number: UNCOMMITTED_CONSUMER, name: CONSUMERS[1], isolation: "read_uncommitted" },
    ];
    let consumers = Consumers::start(&config.output_config(), &specs, stats, start);
    Running { producers, consumers, recorder }
}

/// What the run recorded before the final reads.
pub struct Recorded {
    pub sends: Vec<Send>,
    pub reads: Reads,
    /// Copiers still running side by side after the resumed zombies' time to exit.
    pub concurrent_copiers: Vec<CopierId>,
    /// The final copier exited by itself within [`FINAL_COPY_TIMEOUT`].
    pub final_copy_finished: bool,
}

impl Running {
    /// After the faults: resumes paused copiers and waits for all but one to exit (fenced), with the
    /// producers still writing so that a resumed zombie has something to try; stops the producers;
    /// replaces the active copier by a final one that exits when idle; lets the consumers drain.
    pub fn finish(self, copiers: &mut Copiers) -> anyhow::Result<Recorded> {
        copiers.resume_all()?;
        let deadline = Instant::now() + ZOMBIE_EXIT_TIMEOUT;
        while copiers.running().len() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            copiers.reap();
        }
        let concurrent_copiers = copiers.running();
        self.producers.stop()?;
        copiers.stop_all();
        let last = copiers.spawn(Some(FINAL_COPY_IDLE_MS))?;
        let final_copy_finished = copiers.wait_for(last, FINAL_COPY_TIMEOUT);
        if !final_copy_finished {
            eprintln!("once check: the final copier did not finish in {FINAL_COPY_TIMEOUT:?}; stopping it");
            copiers.kill(last, CopierEnd::Stopped);
        }
        std::thread::sleep(DRAIN);
        let reads = self.consumers.stop()?;
        Ok(Recorded { sends: self.recorder.take_sends(), reads, concurrent_copiers, final_copy_finished })
    }
}

/// Reads every partition of `topic` read_committed from the start to its end, once no transaction
/// is open (the last stable offset has reached the high watermark, waited for up to
/// [`STABLE_TIMEOUT`]). An end of partition is librdkafka's: the fetch position reached the last
/// stable offset, transaction markers included. Returns the read and the records that did not parse.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    start: Instant,
) -> anyhow::Result<(TopicRead, Vec<(i32, i64)>)> {
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
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
    let (stable, last_stable) = loop {
        let last_stable = high_watermarks(&consumer, topic, partitions, deadline)?;
        if last_stable == high || Instant::now() > stable_deadline {
            break (last_stable == high, last_stable);
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
    let (mut reads, mut at_end, mut next) = (Reads::default(), HashSet::new(), HashMap::new());
    while at_end.len() < partitions as usize && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                reads.record(FINAL_READER, 0, &message, elapsed_ms(start));
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            // A reconnect or the like: librdkafka retries, and the deadline bounds it.
            Some(Err(_)) | None => {}
        }
    }
    let read_to = (0..partitions)
        .map(|partition| match at_end.contains(&partition) {
            true => last_stable[&partition],
            false => next.get(&partition).copied().unwrap_or(0),
        })
        .collect();
    let complete = stable && at_end.len() == partitions as usize;
    Ok((TopicRead { records: reads.polls, read_to, complete }, reads.unparseable))
}
