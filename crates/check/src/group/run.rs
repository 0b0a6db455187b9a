//! Starting and stopping the `group` workload, the fresh consumer that resumes from the group's
//! committed offsets at the end, and the workload's run: under the nemesis, the check, the report.

use std::thread::JoinHandle;

use super::*;
use crate::group::checker::{check_group, reprocessing};
use crate::group::history::GroupHistory;
use crate::group::report as group_report;
use crate::run::{Run, SetUp};
use crate::{group, progress, Fault};

/// The running workload: producer and member threads.
pub struct Running {
    producers: Producers,
    members: Vec<JoinHandle<anyhow::Result<()>>>,
    stop_members: Arc<AtomicBool>,
    recorder: Recorder,
    config: QueueConfig,
    log: SharedLog,
}

/// Starts every producer and member thread.
pub fn start(config: &GroupConfig, stats: &Arc<Stats>, start: Instant) -> Running {
    let stop_members = Arc::new(AtomicBool::new(false));
    let recorder = Recorder::new(start, stats.clone());
    let producers = Producers::start(&config.queue, 0..config.queue.producers, &recorder);
    let log = SharedLog::default();
    let members = (0..config.members)
        .map(|number| {
            let member = Member {
                config: config.clone(),
                number,
                log: log.clone(),
                stats: stats.clone(),
                start,
                stop: stop_members.clone(),
            };
            std::thread::spawn(move || member.run())
        })
        .collect();
    Running { producers, members, stop_members, recorder, config: config.queue.clone(), log }
}

impl Running {
    /// Stops the producers (after their flush), lets the members run until the group has committed
    /// past every acknowledged record (at most [`DRAIN_TIMEOUT`]), then stops them; each closes
    /// cleanly, leaving the group. Then one more producer writes for [`TAIL`], so that the fresh
    /// consumer has records to resume at. Only the partitions the broker still has ([`partitions_of`])
    /// are waited for: a lost one can never be drained.
    pub fn stop(self) -> anyhow::Result<(Vec<Send>, SharedLog)> {
        self.producers.stop()?;
        let sends = self.recorder.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let config = &self.config;
        // No settled answer (the broker down): wait for every partition, as if none were lost.
        let present =
            partitions_of(&config.bootstrap, &config.topic, config.partitions, deadline).unwrap_or(config.partitions);
        while !drained(&sends, &lock(&self.log), present) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop_members.store(true, Ordering::Relaxed);
        for member in self.members {
            member.join().map_err(|_| anyhow::anyhow!("a member thread panicked"))??;
        }
        let tail = self.config.producers;
        let tail = Producers::start(&self.config, tail..tail + 1, &self.recorder);
        std::thread::sleep(TAIL);
        tail.stop()?;
        Ok((self.recorder.take_sends(), self.log))
    }
}

/// Whether every partition below `present` has acknowledged commits past its last acknowledged send.
fn drained(sends: &[Send], log: &Log, present: i32) -> bool {
    let mut committed: HashMap<i32, i64> = HashMap::new();
    for commit in log.commits.iter().filter(|commit| commit.acked) {
        let entry = committed.entry(commit.partition).or_insert(commit.offset);
        *entry = (*entry).max(commit.offset);
    }
    sends.iter().filter(|send| send.partition < present).all(|send| {
        send.acked_offset().is_none_or(|offset| committed.get(&send.partition).is_some_and(|&next| next > offset))
    })
}

/// Where the fresh consumer at the end resumed.
pub struct Resumed {
    /// One entry per partition the broker still had.
    pub resume: Vec<Resume>,
    /// Whether it read every partition the broker still had up to its high watermark.
    pub complete: bool,
    /// How many partitions the broker's metadata listed (queue's rule: two agreeing answers).
    pub partitions_found: i32,
}

/// A fresh consumer joins the group, fetches its committed offsets and reads every partition from
/// there up to the high watermark. First it learns how many partitions the broker still has
/// ([`partitions_of`], the rule every workload's final read follows) and resumes on those only: what
/// was acknowledged on the others is for the checker to call lost.
pub fn resume(config: &GroupConfig, log: &SharedLog, start: Instant) -> anyhow::Result<Resumed> {
    let deadline = Instant::now() + RESUME_TIMEOUT;
    let queue = &config.queue;
    let partitions_found = partitions_of(&queue.bootstrap, &queue.topic, queue.partitions, deadline)?;
    let partitions = partitions_found.min(queue.partitions);
    let stop = Arc::new(AtomicBool::new(false));
    let (stats, log) = (Arc::new(Stats::default()), log.clone());
    let member = Member { config: config.clone(), number: FINAL_MEMBER, log, stats, start, stop };
    let client_id = format!("{}-final-resume", config.seed);
    let incarnation = member.register(FINAL_MEMBER, client_id.clone());
    let epoch = Arc::new(AtomicU32::new(0));
    let consumer = member.consumer(&client_id, epoch.clone())?;
    let high = high_watermarks(&consumer, &config.queue.topic, partitions, deadline)?;
    // Records arrive as soon as the assignment does: keep them, the first one of each partition counts.
    let mut polled: Vec<Polled> = Vec::new();
    while consumer.assignment().map_or(0, |assignment| assignment.count()) < partitions as usize {
        anyhow::ensure!(Instant::now() < deadline, "the fresh consumer got no full assignment in {RESUME_TIMEOUT:?}");
        polled.extend(poll_batch(&consumer, &epoch).1);
    }
    // With the whole topic gone there is nothing assigned to fetch committed offsets for.
    let committed = match partitions {
        0 => HashMap::new(),
        _ => committed_offsets(&member, &consumer, incarnation, deadline)?,
    };
    let reached = |polled: &[Polled], partition: i32| {
        let next = polled.iter().filter(|record| record.0 == partition).map(|record| record.1 + 1).max();
        next.or(committed.get(&partition).copied().flatten()).unwrap_or(0) >= high[&partition]
    };
    while !(0..partitions).all(|partition| reached(&polled, partition)) && Instant::now() < deadline {
        polled.extend(poll_batch(&consumer, &epoch).1);
    }
    let complete = (0..partitions).all(|partition| reached(&polled, partition));
    member.process(incarnation, &polled);
    let resume = (0..partitions)
        .map(|partition| Resume {
            partition,
            committed: committed.get(&partition).copied().flatten(),
            first_polled: polled.iter().find(|record| record.0 == partition).map(|record| record.1),
            high_watermark: high[&partition],
        })
        .collect();
    lock(&member.log).incarnations[incarnation as usize].ended_ms = elapsed_ms(start);
    Ok(Resumed { resume, complete, partitions_found })
}

/// The group's committed offset of every partition (OffsetFetch), recorded as a read-back.
fn committed_offsets(
    member: &Member,
    consumer: &BaseConsumer<EpochContext>,
    incarnation: IncarnationId,
    deadline: Instant,
) -> anyhow::Result<HashMap<i32, Option<i64>>> {
    loop {
        let before = lock(&member.log).committed_reads.len();
        if member.read_committed(consumer, incarnation) {
            let log = lock(&member.log);
            let reads = &log.committed_reads[before..];
            return Ok(reads.iter().map(|read| (read.partition, read.offset)).collect());
        }
        anyhow::ensure!(Instant::now() < deadline, "resume: could not fetch the committed offsets");
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Run<'_> {
    pub(crate) fn group(&self, set_up: &mut SetUp, progress: progress::Progress) -> anyhow::Result<bool> {
        let crashes = self.args.faults.contains(&Fault::Crash);
        let config = group::GroupConfig {
            queue: self.config.clone(),
            members: self.args.members,
            commit_before_process: self.args.commit_before_process,
            crashes_until: crashes.then(|| self.start + Duration::from_secs(self.args.duration)),
            crashed_clients: set_up.proxy.as_ref().map(|proxy| proxy.crashed_clients.clone()),
            seed: self.seed,
        };
        let running = group::start(&config, &self.stats, self.start);
        let mut faults = self.nemesis(set_up, Vec::new())?;
        let (sends, log) = running.stop()?;
        let resumed = group::resume(&config, &log, self.start)?;
        drop(progress);
        let log = std::mem::take(&mut *log.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        faults.extend(log.crashes);
        faults.sort_by_key(|event| event.time_ms);
        let mut unparseable = log.unparseable;
        unparseable.sort_unstable();
        unparseable.dedup();
        let history = GroupHistory {
            partitions: self.args.partitions,
            sends,
            incarnations: log.incarnations,
            processed: log.processed,
            commits: log.commits,
            committed_reads: log.committed_reads,
            resume: resumed.resume,
            final_read_complete: resumed.complete,
            partitions_found: Some(resumed.partitions_found),
            unparseable,
            faults,
        };
        let anomalies = check_group(&history);
        let outcome = group_report::GroupOutcome {
            seed: self.seed,
            duration_secs: self.args.duration,
            topic: &self.config.topic,
            client_bootstrap: &self.config.bootstrap,
            history: &history,
            anomalies: &anomalies,
            reprocessing: reprocessing(&history),
            faults: set_up.fault_counts(&self.stats),
            crashed_client_cutoffs: set_up
                .proxy
                .as_ref()
                .map_or(0, |proxy| proxy.counters.crashed_client_cutoffs.load(Ordering::Relaxed)),
        };
        self.publish(&outcome)?;
        Ok(anomalies.is_empty())
    }
}
