//! The `sink` workload: `once sink` processes applying a topic to a database, checked effect by
//! effect. Idempotent producer processes ([`crate::producer_process`]) write unique values to the
//! run's topic, each also in a `once-check-id` header; `--sinks` sink processes in one consumer group
//! ([`processes`]) run, per record, `INSERT INTO once_check_effects (id, topic, "partition",
//! "offset", sink) VALUES (:header.once-check-id, :topic, :partition, :offset, 'ID')` into
//! `--sink-database` (a table without a unique constraint: a duplicate stays visible), while the
//! nemesis kills them mid-batch, pauses them past their session timeout and lets them go as zombies,
//! and kills or cuts the power of the broker. After the faults: zombies are resumed, the producers
//! stop, a healthy set of sinks drains the topic (the stored positions reach the end of every
//! partition), they are stopped with SIGTERM, and the input (read_committed) and the database are
//! read whole.

pub(crate) mod checker;
pub(crate) mod database;
pub(crate) mod history;
pub(crate) mod processes;
pub(crate) mod report;
mod run;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::producer_process::{Payload, PoolSettings, ProducerPool};
use crate::progress::Stats;
use crate::queue::{client, high_watermarks, partitions_of, QueueConfig, Recorder};
use crate::sink::database::Database;
use crate::sink::processes::Sinks;
use crate::txn::FreshValues;

/// The header that carries each record's id (the `dedup` workload's).
pub const ID_HEADER: &str = crate::dedup::ID_HEADER;
/// `--batch-records` of every sink: most records in one round of batches.
pub const BATCH_RECORDS: u32 = 100;
/// An input producer process retires after this many sends (a uniform draw per process).
const SENDS_PER_PRODUCER: (u64, u64) = (200, 2000);
/// How long resumed zombies act on live input before the producers stop.
const ZOMBIE_TIME: Duration = Duration::from_secs(3);
/// How long the healthy sinks get to drain the input after the producers stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Timeout of one OffsetFetch of the sinks' group.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(10);

/// What the workload needs to know.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The producers' settings; `topic` is the input topic.
    pub queue: QueueConfig,
    /// The sinks' consumer group, also the `sink` of their position rows.
    pub group: String,
    /// The sinks run `--at-least-once`: their positions are the group's committed offsets.
    pub at_least_once: bool,
}

/// Starts the input producers (`producer_command`, logs in `log_dir`).
pub fn start_producers(
    config: &SinkConfig,
    stats: &Arc<Stats>,
    start: Instant,
    producer_command: String,
    seed: u64,
    log_dir: std::path::PathBuf,
) -> ProducerPool {
    let queue = &config.queue;
    let settings = PoolSettings {
        command: producer_command,
        bootstrap: queue.bootstrap.clone(),
        topic: queue.topic.clone(),
        id_header: Some(ID_HEADER.to_string()),
        payload: Payload::Id,
        idempotence: queue.idempotence,
        slots: queue.producers,
        rate: queue.rate,
        sends_per_producer: SENDS_PER_PRODUCER,
        seed,
        log_dir,
    };
    let ids = FreshValues { sent: 0, partitions: queue.partitions };
    ProducerPool::start(settings, Recorder::new(start, stats.clone()), Box::new(ids))
}

/// How the drain went.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// Every partition's position reached its end within [`DRAIN_TIMEOUT`].
    pub complete: bool,
    /// The end of each partition the broker still had once the producers stopped.
    pub ends: Vec<i64>,
    /// How long it took, in ms.
    pub took_ms: u64,
}

/// After the faults: resumes the zombies and gives them [`ZOMBIE_TIME`] with the producers still
/// writing, stops the producers, and waits for the sinks (replaced as they die) to drain the topic:
/// every partition's position — the database's, or the group's committed offset for an
/// at-least-once sink — at the end of the partition.
pub fn drain(
    config: &SinkConfig,
    pool: &mut ProducerPool,
    sinks: &mut Sinks,
    database: &mut Database,
) -> anyhow::Result<Drained> {
    sinks.resume_all()?;
    let until = Instant::now() + ZOMBIE_TIME;
    while Instant::now() < until {
        sinks.keep_running()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.stop()?;
    let started = Instant::now();
    let deadline = started + DRAIN_TIMEOUT;
    let queue = &config.queue;
    let partitions = partitions_of(&queue.bootstrap, &queue.topic, queue.partitions, deadline)?.min(queue.partitions);
    let reader: BaseConsumer = client(&queue.bootstrap)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the drain's watermark and offset reader")?;
    let high = high_watermarks(&reader, &queue.topic, partitions, deadline)?;
    let ends: Vec<i64> = (0..partitions).map(|partition| high[&partition]).collect();
    loop {
        sinks.keep_running()?;
        let positions = match config.at_least_once {
            true => committed_offsets(&reader, &queue.topic, partitions).unwrap_or_default(),
            false => database.positions(&config.group, &queue.topic, partitions)?.into_iter().enumerate().collect(),
        };
        let at = |partition: usize| positions.get(&partition).copied().flatten().unwrap_or(0);
        let complete = ends.iter().enumerate().all(|(partition, end)| at(partition) >= *end);
        if complete || Instant::now() >= deadline {
            let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Ok(Drained { complete, ends, took_ms });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The sinks' group's committed offset of each partition (OffsetFetch), by partition index.
pub(crate) fn committed_offsets(
    reader: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<usize, Option<i64>>> {
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = reader.committed_offsets(list, COORDINATOR_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .map(|element| {
            let offset = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            (usize::try_from(element.partition()).unwrap_or(usize::MAX), offset)
        })
        .collect())
}
