//! The `dedup` workload: message-id resends from fresh producers. Producer processes
//! ([`crate::producer_process`]), each a new producer id, send values that each carry a unique
//! message id in a header, to a topic created with `dedup.source=header:NAME`; a seeded share of the
//! sends are resends of ids sent before — acknowledged ones, failed ones, and ones whose answer never
//! came because the proxy dropped it or the producer was killed — to a random partition, in another
//! batching and order. Producers retire after a seeded number of sends and `client-kill` kills them
//! mid-send. After the faults, one more fresh producer resends every id never acknowledged and a
//! sample of the acknowledged ones; a live read_committed consumer reads the whole run, and the whole
//! topic is read at the end.

pub(crate) mod checker;
pub(crate) mod report;
mod run;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::history::{Send, SendOutcome, Value};
use crate::producer_process::{Ids, Payload, PoolSettings, ProducerPool};
use crate::progress::Stats;
use crate::queue::{ConsumerSpec, Consumers, QueueConfig, Reads, Recorder};
use crate::rng::Rng;

/// The header that carries the message id.
pub const ID_HEADER: &str = "once-check-id";
/// The live consumers, by [`crate::history::Poll::consumer`].
pub const CONSUMERS: [&str; 1] = ["assign-read-committed"];
/// A producer process resends ids sent before with one of these probabilities per send: some send
/// fresh ids only (their batches keep every record, so their answers name offsets), some mix, some
/// mostly resend.
const RESEND_SHARES: [f64; 3] = [0.0, 0.3, 0.9];
/// Of those, the share that goes looking for an id never acknowledged.
const UNACKED_PREFERENCE: f64 = 0.5;
/// Tries at finding an id never acknowledged before settling for any.
const UNACKED_TRIES: usize = 8;
/// A producer process retires after this many sends (a uniform draw per process).
const SENDS_PER_PRODUCER: (u64, u64) = (50, 600);
/// Share of acknowledged ids the final producer resends (all unacknowledged ones are).
const FINAL_ACKED_SHARE: f64 = 0.1;
/// How long the live consumer keeps reading after the last resend.
const DRAIN: Duration = Duration::from_secs(2);

/// Seed stream of the final resends' order and partitions.
const FINAL_STREAM: u64 = 6_000;

/// Fresh ids and seeded resends (the `dedup-processor` workload's too, partitioned by id there).
pub(crate) struct DedupIds {
    /// The highest id sent so far: ids are 1, 2, 3, ….
    last_id: Value,
    partitions: i32,
    /// Each producer process's share of resends, drawn from [`RESEND_SHARES`] when it first sends.
    resend_share: HashMap<u32, f64>,
}

impl DedupIds {
    /// Ids from 1, sent to `partitions` partitions.
    pub(crate) fn new(partitions: i32) -> DedupIds {
        DedupIds { last_id: 0, partitions, resend_share: HashMap::new() }
    }
}

impl Ids for DedupIds {
    fn next(&mut self, rng: &mut Rng, sends: &[Send], producer: u32) -> (Value, i32) {
        let share = *self
            .resend_share
            .entry(producer)
            .or_insert_with(|| RESEND_SHARES[rng.between(0, RESEND_SHARES.len() as u64 - 1) as usize]);
        // Every draw is made every time, so one decision does not shift the ones after it.
        let (resend, prefer_unacked) = (rng.chance(share), rng.chance(UNACKED_PREFERENCE));
        let picks: Vec<u64> = (0..UNACKED_TRIES).map(|_| rng.next_u64()).collect();
        let any_id = rng.between(1, self.last_id.max(1));
        let partition = i32::try_from(rng.between(0, self.partitions.max(1) as u64 - 1)).unwrap_or(0);
        if !resend || self.last_id == 0 {
            self.last_id += 1;
            return (self.last_id, partition);
        }
        let unacked = (!sends.is_empty() && prefer_unacked)
            .then(|| {
                let pick = |draw: u64| &sends[(draw % sends.len() as u64) as usize];
                picks.iter().map(|&draw| pick(draw)).find(|send| send.acked_offset().is_none())
            })
            .flatten();
        (unacked.map_or(any_id, |send| send.value), partition)
    }
}

/// What the workload needs to know.
pub struct DedupConfig {
    pub queue: QueueConfig,
    /// `--producer-cmd`.
    pub producer_command: String,
    pub seed: u64,
    /// Where the producers' logs go.
    pub log_dir: std::path::PathBuf,
}

/// The running workload.
pub struct Running {
    pub pool: ProducerPool,
    consumers: Consumers,
    seed: u64,
    partitions: i32,
}

/// Starts the producer processes and the live consumer.
pub fn start(config: &DedupConfig, stats: &Arc<Stats>, start: Instant) -> Running {
    let recorder = Recorder::new(start, stats.clone());
    let settings = PoolSettings {
        command: config.producer_command.clone(),
        bootstrap: config.queue.bootstrap.clone(),
        topic: config.queue.topic.clone(),
        id_header: Some(ID_HEADER.to_string()),
        payload: Payload::Id,
        idempotence: config.queue.idempotence,
        slots: config.queue.producers,
        rate: config.queue.rate,
        sends_per_producer: SENDS_PER_PRODUCER,
        seed: config.seed,
        log_dir: config.log_dir.clone(),
    };
    let ids = DedupIds::new(config.queue.partitions);
    let pool = ProducerPool::start(settings, recorder, Box::new(ids));
    let spec = ConsumerSpec { number: 0, name: CONSUMERS[0], isolation: "read_committed" };
    let consumers = Consumers::start(&config.queue, &[spec], stats, start);
    Running { pool, consumers, seed: config.seed, partitions: config.queue.partitions }
}

impl Running {
    /// After the faults: the producers flush and exit; one fresh producer resends every id never
    /// acknowledged and a seeded sample of the acknowledged ones, in a seeded order to random
    /// partitions; the live consumer drains. Returns the pool (for its history) and the live reads.
    pub fn finish(mut self) -> anyhow::Result<(ProducerPool, Reads)> {
        self.pool.stop()?;
        let lines = final_resends(&self.pool.sends(), self.partitions, self.seed);
        self.pool.send_all(&lines)?;
        std::thread::sleep(DRAIN);
        let reads = self.consumers.stop()?;
        Ok((self.pool, reads))
    }
}

/// Every id no send of which was acknowledged, and a share of the others, shuffled, each to a
/// random partition.
pub(crate) fn final_resends(sends: &[Send], partitions: i32, seed: u64) -> Vec<(Value, i32)> {
    let mut rng = Rng::new(seed).fork(FINAL_STREAM);
    let mut acked = std::collections::HashSet::new();
    for send in sends.iter().filter(|send| matches!(send.outcome, SendOutcome::Acked { .. })) {
        acked.insert(send.value);
    }
    let mut ids: Vec<Value> = sends.iter().map(|send| send.value).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut lines = Vec::new();
    for id in ids {
        let (sample, partition) = (rng.chance(FINAL_ACKED_SHARE), rng.between(0, partitions.max(1) as u64 - 1));
        if !acked.contains(&id) || sample {
            lines.push((id, i32::try_from(partition).unwrap_or(0)));
        }
    }
    for index in (1..lines.len()).rev() {
        let other = rng.between(0, index as u64) as usize;
        lines.swap(index, other);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(id: Value, outcome: SendOutcome) -> Send {
        Send { producer: 0, index: 0, value: id, partition: 0, outcome, sent_ms: 0, done_ms: 0 }
    }

    #[test]
    fn the_final_resends_cover_every_unacknowledged_id_and_replay_from_the_seed() {
        let mut sends: Vec<Send> = (1..=1000).map(|id| send(id, SendOutcome::Acked { offset: id as i64 })).collect();
        sends.push(send(2000, SendOutcome::Unknown));
        sends.push(send(2001, SendOutcome::Failed { error: "timed out".into() }));
        // Acknowledged on its second send: not owed a resend.
        sends.push(send(2002, SendOutcome::Unknown));
        sends.push(send(2002, SendOutcome::Acked { offset: 5 }));
        let lines = final_resends(&sends, 3, 7);
        let ids: Vec<Value> = lines.iter().map(|(id, _)| *id).collect();
        assert!(ids.contains(&2000) && ids.contains(&2001), "every id never acknowledged is resent");
        assert!((50..200).contains(&lines.len()), "about a tenth of the acknowledged ids: {}", lines.len());
        assert!(lines.iter().all(|(_, partition)| (0..3).contains(partition)));
        assert!(ids.windows(2).any(|pair| pair[0] > pair[1]), "shuffled");
        assert_eq!(final_resends(&sends, 3, 7), lines, "the seed fixes them");
    }

    #[test]
    fn a_producer_resends_its_share_and_fresh_ids_count_up() {
        let mut ids = DedupIds { last_id: 0, partitions: 4, resend_share: HashMap::new() };
        let mut rng = Rng::new(11);
        let mut sends = Vec::new();
        for producer in 0..30 {
            for _ in 0..20 {
                let (id, partition) = ids.next(&mut rng, &sends, producer);
                assert!((0..4).contains(&partition));
                sends.push(send(id, SendOutcome::Unknown));
            }
        }
        let distinct: std::collections::HashSet<Value> = sends.iter().map(|send| send.value).collect();
        assert_eq!(distinct.len() as Value, ids.last_id, "fresh ids are 1, 2, 3, …");
        assert!(distinct.len() < sends.len() * 9 / 10, "some sends are resends: {} of {}", distinct.len(), sends.len());
        assert!(ids.resend_share.values().any(|share| *share == 0.0), "some producers send fresh ids only");
    }
}
