//! The `dedup-processor` workload: `once dedup`, message-id deduplication as a stream processor,
//! checked output against input. Producer processes ([`crate::producer_process`], as the `dedup`
//! workload's: fresh producers, each a new producer id, resending ids sent before — acknowledged,
//! failed and unanswered ones — and killed mid-send by `client-kill`) write to `<run>-in`, every send
//! of an id to the same partition (`once dedup` needs an id's records in one partition), the id in
//! the header `once-check-id` and the send's own value as the payload. `--processors` processes of
//! `once dedup --source header:once-check-id` in one consumer group ([`processes`]) pass each id's
//! first record on to `<run>-out` and drop the rest, while the nemesis kills them, pauses them into
//! zombies and starts new ones, and kills, pauses or cuts the power of the broker. After the
//! faults: pauses run their length, zombies act for a while, the producers stop, one more fresh producer resends every id never
//! acknowledged (and a sample of the others), the processors are stopped, and final processors
//! (`--exit-when-idle-ms`) run until the group's committed offsets reach the end of the input; then
//! the input and the output are read whole, read_committed.

pub(crate) mod checker;
pub(crate) mod history;
pub(crate) mod processes;
pub(crate) mod report;
mod run;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;

use crate::dedup::{final_resends, DedupIds};
use crate::dedup_processor::history::{ProcessorEnd, Record, TopicRecords};
use crate::dedup_processor::processes::Processors;
use crate::history::{Send, Value};
use crate::producer_process::{Ids, Payload, PoolSettings, ProducerPool};
use crate::progress::Stats;
use crate::queue::{client, high_watermarks, partitions_of, QueueConfig, Recorder};
use crate::rng::Rng;
use crate::txn::{read_whole, ReadExtent};

/// The header that carries each record's id (the `dedup` workload's).
pub const ID_HEADER: &str = crate::dedup::ID_HEADER;
/// An input producer process retires after this many sends (a uniform draw per process).
const SENDS_PER_PRODUCER: (u64, u64) = (50, 600);
/// How long resumed zombies act on live input before the producers stop.
const ZOMBIE_TIME: Duration = Duration::from_secs(2);
/// A final processor exits once caught up and idle this long.
const FINAL_IDLE_MS: u64 = 3_000;
/// How long final processors get to bring the group's offsets to the end of the input.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

/// The partition every send of `id` goes to: producers partition by the id, as `once dedup` needs.
pub fn partition_of(id: Value, partitions: i32) -> i32 {
    i32::try_from(id % u64::try_from(partitions.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// The `dedup` workload's fresh ids and resends, each id to [`partition_of`] it.
struct PartitionedIds {
    ids: DedupIds,
    partitions: i32,
}

impl Ids for PartitionedIds {
    fn next(&mut self, rng: &mut Rng, sends: &[Send], producer: u32) -> (Value, i32) {
        let (id, _) = self.ids.next(rng, sends, producer);
        (id, partition_of(id, self.partitions))
    }
}

/// What the workload needs to know.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// The producers' settings; `topic` is the input topic.
    pub queue: QueueConfig,
    pub output: String,
    /// The processors' consumer group (their changelog is `GROUP-dedup-changelog`).
    pub group: String,
}

/// Starts the input producers (`producer_command`, logs in `log_dir`).
pub fn start_producers(
    config: &ProcessorConfig,
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
        payload: Payload::Send,
        idempotence: queue.idempotence,
        slots: queue.producers,
        rate: queue.rate,
        sends_per_producer: SENDS_PER_PRODUCER,
        seed,
        log_dir,
    };
    let ids = PartitionedIds { ids: DedupIds::new(queue.partitions), partitions: queue.partitions };
    ProducerPool::start(settings, Recorder::new(start, stats.clone()), Box::new(ids))
}

/// After the faults (paused processors let go at the end of their pauses): gives the zombies [`ZOMBIE_TIME`] with the
/// producers still writing, stops the producers, and has one fresh producer resend every id never
/// acknowledged and a seeded sample of the others, each to its partition, while the processors run.
pub fn finish(pool: &mut ProducerPool, processors: &mut Processors, partitions: i32, seed: u64) -> anyhow::Result<()> {
    let until = Instant::now() + ZOMBIE_TIME;
    while Instant::now() < until {
        processors.keep_running()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.stop()?;
    let lines: Vec<(Value, i32)> = final_resends(&pool.sends(), partitions, seed)
        .into_iter()
        .map(|(id, _)| (id, partition_of(id, partitions)))
        .collect();
    pool.send_all(&lines)
}

/// How the drain went.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// Every partition's committed offset reached its end within [`DRAIN_TIMEOUT`].
    pub complete: bool,
    /// The end of each input partition once the producers stopped.
    pub ends: Vec<i64>,
    /// The group's committed offset of each input partition at the end (none: no commit).
    pub committed: Vec<Option<i64>>,
    /// Final processors it took.
    pub final_processors: u32,
    pub took_ms: u64,
}

/// Stops every processor (SIGKILL), then runs final processors, one at a time, each until it is
/// idle ([`FINAL_IDLE_MS`]), until the group's committed offset of every input partition is at the
/// partition's end: one that exits early (its group had not yet given it every partition) is
/// followed by another.
pub fn drain(config: &ProcessorConfig, processors: &mut Processors) -> anyhow::Result<Drained> {
    processors.stop_all();
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
    let mut drained = Drained { ends, ..Drained::default() };
    loop {
        let last = processors.spawn(Some(FINAL_IDLE_MS))?;
        drained.final_processors += 1;
        if !processors.wait_for(last, deadline.saturating_duration_since(Instant::now())) {
            eprintln!("once check: final processor {last} did not finish within the drain's {DRAIN_TIMEOUT:?}");
            processors.kill(last, ProcessorEnd::Stopped);
        }
        let committed = crate::sink::committed_offsets(&reader, &queue.topic, partitions).unwrap_or_default();
        drained.committed =
            (0..drained.ends.len()).map(|partition| committed.get(&partition).copied().flatten()).collect();
        let at = |partition: usize| drained.committed[partition].unwrap_or(0);
        drained.complete = drained.ends.iter().enumerate().all(|(partition, end)| at(partition) >= *end);
        if drained.complete || Instant::now() >= deadline {
            drained.took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Ok(drained);
        }
    }
}

/// A record as the run wrote it: the id in its [`ID_HEADER`] (the last one, as `once dedup` takes
/// it) and its payload.
fn record_of(message: &BorrowedMessage<'_>) -> Record {
    let number = |bytes: Option<&[u8]>| {
        bytes.and_then(|bytes| std::str::from_utf8(bytes).ok()).and_then(|text| text.parse::<Value>().ok())
    };
    let header = message.headers().and_then(|headers| headers.iter().filter(|header| header.key == ID_HEADER).last());
    Record {
        partition: message.partition(),
        offset: message.offset(),
        id: header.and_then(|header| number(header.value)),
        payload: number(message.payload()),
    }
}

/// Reads `topic` (created with `created` partitions) whole, read_committed ([`read_whole`]).
pub fn read_records(bootstrap: &str, topic: &str, created: i32) -> anyhow::Result<TopicRecords> {
    let mut records = Vec::new();
    let extent = read_whole(bootstrap, topic, created, &mut |message| records.push(record_of(message)))?;
    let ReadExtent { read_to, complete, partitions_found } = extent;
    Ok(TopicRecords { records, read_to, complete, partitions_found })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::SendOutcome;

    #[test]
    fn every_send_of_an_id_goes_to_one_partition_and_ids_are_resent() {
        let mut ids = PartitionedIds { ids: DedupIds::new(4), partitions: 4 };
        let mut rng = Rng::new(5);
        let mut sends: Vec<Send> = Vec::new();
        for producer in 0..30 {
            for index in 0..20 {
                let (id, partition) = ids.next(&mut rng, &sends, producer);
                let outcome = SendOutcome::Unknown;
                sends.push(Send { producer, index, value: id, partition, outcome, sent_ms: 0, done_ms: 0 });
            }
        }
        assert!(sends.iter().all(|send| send.partition == partition_of(send.value, 4)), "partitioned by id");
        let distinct: std::collections::HashSet<Value> = sends.iter().map(|send| send.value).collect();
        assert!(distinct.len() < sends.len() * 9 / 10, "resends: {} ids in {} sends", distinct.len(), sends.len());
        let used: std::collections::HashSet<i32> = sends.iter().map(|send| send.partition).collect();
        assert_eq!(used.len(), 4, "every partition gets ids");
    }
}
