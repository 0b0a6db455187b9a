//! The `group` workload: consumer groups committing offsets while members die. Idempotent producers
//! write unique values to every partition; `--members` consumers subscribe in one group with
//! auto-commit off, process each polled batch and then commit it synchronously. Each member crashes
//! every few seconds (seeded): its client is dropped without committing or leaving the group, and
//! the proxy cuts its connections, so the broker sees what a dead process looks like. A new
//! incarnation takes its place. After the faults stop and the group has committed everything, a
//! fresh consumer joins the same group and must resume exactly at the committed offsets.

pub(crate) mod checker;
pub(crate) mod history;
pub(crate) mod report;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::group::history::{Commit, CommittedRead, Incarnation, IncarnationId, Processed, Resume, FINAL_MEMBER};
use crate::history::{FaultEvent, Send, TimeMs, Value};
use crate::nemesis::elapsed_ms;
use crate::progress::Stats;
use crate::proxy::CrashedClients;
use crate::queue::{client, high_watermarks, partitions_of, EpochContext, Producers, QueueConfig, Recorder};
use crate::rng::Rng;

/// Most records processed and committed as one batch.
const BATCH_MAX: usize = 200;
/// Members crash every this many milliseconds (a uniform draw per crash).
const CRASH_INTERVAL_MS: (u64, u64) = (1500, 5000);
/// How long the members get, after the producers stop, to commit every acknowledged record.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the fresh consumer may take to get its assignment and read to the high watermarks.
const RESUME_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one more producer writes after the members have stopped: records the fresh consumer at
/// the end must find right at the committed offsets.
const TAIL: Duration = Duration::from_millis(500);
/// Timeout of one OffsetFetch or OffsetCommit.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(10);

/// What the workload needs to know beyond the producers' settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub queue: QueueConfig,
    pub members: u16,
    /// Broken on purpose: commit a batch before processing it (a crash between loses the batch).
    pub commit_before_process: bool,
    /// Crash members until this instant (no crashes if `None`).
    pub crashes_until: Option<Instant>,
    /// The proxy's cut-off list; without a proxy a crash is only a drop without commit.
    pub crashed_clients: Option<CrashedClients>,
    pub seed: u64,
}

impl GroupConfig {
    fn group_id(&self) -> String {
        format!("{}-group", self.queue.topic)
    }
}

/// Everything the members and the fresh consumer record, shared between their threads.
#[derive(Debug, Default)]
pub struct Log {
    pub incarnations: Vec<Incarnation>,
    pub processed: Vec<Processed>,
    pub commits: Vec<Commit>,
    pub committed_reads: Vec<CommittedRead>,
    pub unparseable: Vec<(i32, i64)>,
    pub crashes: Vec<FaultEvent>,
}

type SharedLog = Arc<Mutex<Log>>;

fn lock(log: &SharedLog) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One polled record: its place and its value, if it parsed.
type Polled = (i32, i64, Option<Value>);

/// How an incarnation ended.
enum Ended {
    Crashed,
    Stopped,
}

/// What one member thread shares with the run.
#[derive(Clone)]
struct Member {
    config: GroupConfig,
    number: u16,
    log: SharedLog,
    stats: Arc<Stats>,
    start: Instant,
    stop: Arc<AtomicBool>,
}

impl Member {
    fn register(&self, member: u16, client_id: String) -> IncarnationId {
        let started_ms = elapsed_ms(self.start);
        let mut log = lock(&self.log);
        log.incarnations.push(Incarnation { member, client_id, started_ms, ended_ms: started_ms, crashed: false });
        u32::try_from(log.incarnations.len() - 1).unwrap_or(u32::MAX)
    }

    fn consumer(&self, client_id: &str, epoch: Arc<AtomicU32>) -> anyhow::Result<BaseConsumer<EpochContext>> {
        let consumer: BaseConsumer<EpochContext> = client(&self.config.queue.bootstrap)
            .set("group.id", self.config.group_id())
            .set("client.id", client_id)
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "3000")
            .set("heartbeat.interval.ms", "300")
            // Also the rebalance timeout: how long a join waits for members that do not rejoin.
            .set("max.poll.interval.ms", "10000")
            .set("socket.timeout.ms", "10000")
            .create_with_context(EpochContext { epoch })
            .with_context(|| format!("creating consumer {client_id}"))?;
        consumer.subscribe(&[&self.config.queue.topic]).context("subscribing")?;
        Ok(consumer)
    }

    /// Incarnation after incarnation until `stop`; each one lives until its crash is due.
    fn run(self) -> anyhow::Result<()> {
        let mut rng = Rng::new(self.config.seed).fork(1_000 + u64::from(self.number));
        let mut next_crash =
            Instant::now() + Duration::from_millis(rng.between(CRASH_INTERVAL_MS.0, CRASH_INTERVAL_MS.1));
        let mut life = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let client_id = format!("{}-member-{}-{life}", self.config.seed, self.number);
            life += 1;
            let incarnation = self.register(self.number, client_id.clone());
            let epoch = Arc::new(AtomicU32::new(0));
            let consumer = self.consumer(&client_id, epoch.clone())?;
            let ended = self.live(&consumer, &epoch, incarnation, &mut next_crash)?;
            let ended_ms = elapsed_ms(self.start);
            let crashed = matches!(ended, Ended::Crashed);
            if crashed {
                self.crash(consumer, &client_id, ended_ms);
                next_crash =
                    Instant::now() + Duration::from_millis(rng.between(CRASH_INTERVAL_MS.0, CRASH_INTERVAL_MS.1));
            } else {
                drop(consumer);
            }
            let mut log = lock(&self.log);
            if let Some(entry) = log.incarnations.get_mut(incarnation as usize) {
                entry.ended_ms = ended_ms;
                entry.crashed = crashed;
            }
        }
        Ok(())
    }

    /// Cuts the client off at the proxy, then drops it on another thread: its close can only fail
    /// (no LeaveGroup, no commit reaches the broker), and may take a while doing so.
    fn crash(&self, consumer: BaseConsumer<EpochContext>, client_id: &str, time_ms: TimeMs) {
        if let Some(crashed) = &self.config.crashed_clients {
            crashed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(client_id.to_string());
        }
        std::thread::spawn(move || drop(consumer));
        self.stats.crashes.fetch_add(1, Ordering::Relaxed);
        lock(&self.log).crashes.push(FaultEvent { time_ms, kind: format!("crash {client_id}") });
    }

    /// One incarnation's life: poll a batch, process it, commit it (or, broken on purpose, commit
    /// then process); a due crash strikes between the two steps.
    fn live(
        &self,
        consumer: &BaseConsumer<EpochContext>,
        epoch: &AtomicU32,
        incarnation: IncarnationId,
        next_crash: &mut Instant,
    ) -> anyhow::Result<Ended> {
        let mut read_epoch = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(Ended::Stopped);
            }
            let (batch_epoch, batch) = poll_batch(consumer, epoch);
            if read_epoch != Some(batch_epoch) && self.read_committed(consumer, incarnation) {
                read_epoch = Some(batch_epoch);
            }
            let now = Instant::now();
            // A crash strikes between the two steps of a batch, so it waits for a batch.
            let crash_due =
                self.config.crashes_until.is_some_and(|until| now < until) && now >= *next_crash && !batch.is_empty();
            if self.config.commit_before_process {
                self.commit(consumer, incarnation, &batch);
                if crash_due {
                    return Ok(Ended::Crashed);
                }
                self.process(incarnation, &batch);
            } else {
                self.process(incarnation, &batch);
                if crash_due {
                    return Ok(Ended::Crashed);
                }
                self.commit(consumer, incarnation, &batch);
            }
        }
    }

    /// Records the group's committed offsets of the current assignment, as read back now. False if
    /// there is no assignment yet or the read failed (then it is tried again after the next poll).
    fn read_committed(&self, consumer: &BaseConsumer<EpochContext>, incarnation: IncarnationId) -> bool {
        let Ok(assignment) = consumer.assignment() else { return false };
        if assignment.count() == 0 {
            return false;
        }
        let sent_ms = elapsed_ms(self.start);
        let Ok(committed) = consumer.committed_offsets(assignment, COORDINATOR_TIMEOUT) else { return false };
        let done_ms = elapsed_ms(self.start);
        let mut log = lock(&self.log);
        for element in committed.elements() {
            if element.error().is_err() {
                continue;
            }
            let offset = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            let partition = element.partition();
            log.committed_reads.push(CommittedRead { incarnation, partition, offset, sent_ms, done_ms });
        }
        true
    }

    fn process(&self, incarnation: IncarnationId, batch: &[Polled]) {
        let time_ms = elapsed_ms(self.start);
        let mut log = lock(&self.log);
        for &(partition, offset, value) in batch {
            match value {
                Some(value) => log.processed.push(Processed { incarnation, partition, offset, value, time_ms }),
                None => log.unparseable.push((partition, offset)),
            }
        }
        self.stats.polled.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    /// Commits, synchronously, the offset after the batch's last record of each partition.
    fn commit(&self, consumer: &BaseConsumer<EpochContext>, incarnation: IncarnationId, batch: &[Polled]) {
        let mut next: HashMap<i32, i64> = HashMap::new();
        for &(partition, offset, _) in batch {
            let entry = next.entry(partition).or_insert(offset + 1);
            *entry = (*entry).max(offset + 1);
        }
        if next.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in &next {
            if offsets.add_partition_offset(&self.config.queue.topic, partition, Offset::Offset(offset)).is_err() {
                return;
            }
        }
        let sent_ms = elapsed_ms(self.start);
        let acked = consumer.commit(&offsets, CommitMode::Sync).is_ok();
        let done_ms = elapsed_ms(self.start);
        let mut log = lock(&self.log);
        for (partition, offset) in next {
            log.commits.push(Commit { incarnation, partition, offset, sent_ms, done_ms, acked });
        }
    }
}

/// Polls up to [`BATCH_MAX`] records, stopping at the first empty poll. Records polled before a
/// rebalance are dropped (neither processed nor committed): their partitions may be someone else's
/// now, and their committed offsets have been fetched again.
fn poll_batch(consumer: &BaseConsumer<EpochContext>, epoch: &AtomicU32) -> (u32, Vec<Polled>) {
    let mut current = epoch.load(Ordering::Relaxed);
    let mut batch = Vec::new();
    while batch.len() < BATCH_MAX {
        let polled = consumer.poll(Duration::from_millis(if batch.is_empty() { 100 } else { 5 }));
        let now = epoch.load(Ordering::Relaxed);
        if now != current {
            batch.clear();
            current = now;
        }
        let Some(Ok(message)) = polled else { break };
        let value = message
            .payload()
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<Value>().ok());
        batch.push((message.partition(), message.offset(), value));
    }
    (current, batch)
}

mod run;
pub use run::{resume, start};
