//! W8: does a reader slow the writers? A synchronous acks=all producer (one 100-byte record at a time,
//! each waiting for its ack, `linger.ms=0`) writes to a partition, alone and then while one consumer
//! catches up on a backlog of the same partition from a cold page cache with large fetches (as kcat
//! does: 50 MiB per fetch). Each run measures both phases, so every "with a reader" figure stands
//! beside an "alone" figure of the same minutes; the goal is p99.9 with the reader ≤ 2 × alone.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, TopicPartitionList};

use crate::backlog;
use crate::produce;
use crate::summary::{percentile, Spread};
use crate::Plan;

/// Bytes of each synchronous record: small, so the ack time is the broker's path and the sync.
const SYNC_RECORD_BYTES: usize = 100;
/// The catch-up consumer's fetch sizes (librdkafka's `fetch.max.bytes` default, per partition too).
const READER_FETCH_BYTES: &str = "52428800";
/// The longest a reading phase may last.
const READ_PHASE_MAX: Duration = Duration::from_secs(300);

/// One phase of one run: the synchronous producer's ack latencies, sorted.
struct Phase {
    latencies_us: Vec<u32>,
    elapsed: Duration,
    /// Bytes the reader read in the phase, and in how long (the reading phase only).
    read: Option<(u64, Duration)>,
}

impl Phase {
    fn latency_ms(&self, quantile: f64) -> f64 {
        f64::from(percentile(&self.latencies_us, quantile)) / 1000.0
    }

    fn max_ms(&self) -> f64 {
        f64::from(self.latencies_us.last().copied().unwrap_or_default()) / 1000.0
    }
}

/// Hands the one delivery a synchronous send waits for from the producer's polling thread to the
/// sender. (`BaseProducer::poll` returns only at its timeout, so the sender cannot poll for itself.)
#[derive(Default)]
struct Delivery {
    outcome: Mutex<Option<Result<(), String>>>,
    arrived: Condvar,
}

impl Delivery {
    fn wait(&self) -> Result<(), String> {
        let mut outcome = self.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(outcome) = outcome.take() {
                return outcome;
            }
            outcome = self.arrived.wait(outcome).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(error, _)| error.to_string());
        *self.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(outcome);
        self.arrived.notify_one();
    }
}

/// W8: fills a backlog into a one-partition topic, then `plan.runs` times: the synchronous producer
/// alone for `--latency-seconds`, then again while a consumer reads the backlog from a cold cache.
pub fn run(plan: &Plan, run_id: u128) -> anyhow::Result<String> {
    anyhow::ensure!(plan.args.partitions == 1, "the reader-latency workload uses one partition (--partitions 1)");
    let topic = format!("{}-{run_id}-w8", plan.args.topic_prefix);
    let fill = backlog::backlog_plan(plan);
    eprintln!("filling {topic} with {} records of {} B", fill.records, plan.args.record_bytes);
    let filled = produce::fill(&fill, &topic)?;
    let outcome = runs(plan, &topic, filled.records);
    if let Err(error) = produce::delete_topic(plan, &topic) {
        eprintln!("once-bench: could not delete topic {topic}: {error:#}");
    }
    let backlog_bytes = filled.records * plan.args.record_bytes as u64;
    Ok(report(plan, backlog_bytes, &outcome?))
}

fn runs(plan: &Plan, topic: &str, backlog_records: u64) -> anyhow::Result<Vec<(Phase, Phase)>> {
    let alone_for = if plan.args.smoke { Duration::from_secs(1) } else { plan.args.latency_seconds };
    let mut runs = Vec::with_capacity(plan.runs);
    for index in 0..plan.runs {
        let number = index + 1;
        eprintln!("run {number}/{}: synchronous producer alone for {:.0} s", plan.runs, alone_for.as_secs_f64());
        let alone = sync_produce(plan, topic, || false, alone_for).with_context(|| format!("run {number}: alone"))?;
        empty_page_cache(plan)?;
        eprintln!("run {number}/{}: synchronous producer beside a cold catch-up reader", plan.runs);
        let with_reader =
            beside_reader(plan, topic, backlog_records).with_context(|| format!("run {number}: reader"))?;
        eprintln!(
            "run {number}/{}: p99.9 alone {:.2} ms, beside the reader {:.2} ms",
            plan.runs,
            alone.latency_ms(0.999),
            with_reader.latency_ms(0.999)
        );
        runs.push((alone, with_reader));
    }
    Ok(runs)
}

/// Empties the page cache before a reading phase, so the backlog comes from the disk. Not in a smoke
/// run (a check of the command, not a measurement): emptying the cache is machine-wide and would slow
/// everything else running there, tests and benchmarks among them.
fn empty_page_cache(plan: &Plan) -> anyhow::Result<()> {
    if plan.args.smoke {
        return Ok(());
    }
    backlog::drop_page_cache().context("the reader-latency workload reads from a cold page cache")
}

/// The synchronous producer while one consumer reads `backlog_records` from the beginning.
fn beside_reader(plan: &Plan, topic: &str, backlog_records: u64) -> anyhow::Result<Phase> {
    let done = Arc::new(AtomicBool::new(false));
    let read_bytes = Arc::new(AtomicU64::new(0));
    let reader = {
        let (plan, topic) = (plan.clone(), topic.to_string());
        let (done, read_bytes) = (Arc::clone(&done), Arc::clone(&read_bytes));
        thread::Builder::new().name("bench-w8-reader".to_string()).spawn(move || {
            let result = read_backlog(&plan, &topic, backlog_records, &read_bytes);
            done.store(true, Ordering::Release);
            result
        })?
    };
    let mut phase = sync_produce(plan, topic, || done.load(Ordering::Acquire), READ_PHASE_MAX);
    let read_elapsed = reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    if let Ok(phase) = &mut phase {
        phase.read = Some((read_bytes.load(Ordering::Acquire), read_elapsed));
    }
    phase
}

/// One consumer with large fetches, from the beginning, until `records` records have arrived.
fn read_backlog(plan: &Plan, topic: &str, records: u64, read_bytes: &AtomicU64) -> anyhow::Result<Duration> {
    let consumer: BaseConsumer = crate::client_config(&plan.args.bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", READER_FETCH_BYTES)
        .set("max.partition.fetch.bytes", READER_FETCH_BYTES)
        .create()
        .context("creating the catch-up consumer")?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let mut seen = 0u64;
    while seen < records {
        anyhow::ensure!(started.elapsed() < READ_PHASE_MAX, "read {seen} of {records} records in the phase's time");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                seen += 1;
                read_bytes.fetch_add(message.payload().map_or(0, <[u8]>::len) as u64, Ordering::Relaxed);
            }
            Some(Err(error)) => eprintln!("once-bench: catch-up read: {error}"),
            None => {}
        }
    }
    Ok(started.elapsed())
}

/// Sends one record at a time to partition 0 and waits for its ack, until `stop()` or `longest`.
fn sync_produce(plan: &Plan, topic: &str, stop: impl Fn() -> bool, longest: Duration) -> anyhow::Result<Phase> {
    let producer: ThreadedProducer<Delivery> = crate::client_config(&plan.args.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        .create_with_context(Delivery::default())
        .context("creating the synchronous producer")?;
    let payload = vec![b's'; SYNC_RECORD_BYTES];
    let mut latencies_us = Vec::new();
    let started = Instant::now();
    while !stop() && started.elapsed() < longest {
        let sent = Instant::now();
        producer
            .send(BaseRecord::<(), [u8]>::to(topic).partition(0).payload(&payload))
            .map_err(|(error, _)| error)
            .context("enqueueing a record")?;
        producer.context().wait().map_err(|error| anyhow::anyhow!("a synchronous record failed: {error}"))?;
        latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    let elapsed = started.elapsed();
    producer.flush(Duration::from_secs(10)).context("flushing the synchronous producer")?;
    anyhow::ensure!(!latencies_us.is_empty(), "the synchronous producer sent nothing in its phase");
    latencies_us.sort_unstable();
    Ok(Phase { latencies_us, elapsed, read: None })
}

/// The markdown report: one line per phase of each run, then the medians and the ratio.
fn report(plan: &Plan, backlog_bytes: u64, runs: &[(Phase, Phase)]) -> String {
    assert!(!runs.is_empty(), "at least one run");
    let mut out = String::new();
    let cache = if plan.args.smoke { "warm (a smoke run leaves the page cache alone)" } else { "cold" };
    let _ = writeln!(
        out,
        "## W8: synchronous acks=all producer ({SYNC_RECORD_BYTES} B, linger 0) alone and beside a {cache} \
         catch-up reader ({:.0} MB backlog, {READER_FETCH_BYTES} B fetches), one partition\n",
        backlog_bytes as f64 / 1e6
    );
    out.push_str("| run | phase | records | records/s | ack p50 ms | p99 ms | p99.9 ms | max ms | reader MB/s |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (index, (alone, with_reader)) in runs.iter().enumerate() {
        for (name, phase) in [("alone", alone), ("beside the reader", with_reader)] {
            let reader = phase
                .read
                .map_or("—".to_string(), |(bytes, took)| format!("{:.1}", bytes as f64 / 1e6 / took.as_secs_f64()));
            let _ = writeln!(
                out,
                "| {} | {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {reader} |",
                index + 1,
                phase.latencies_us.len(),
                phase.latencies_us.len() as f64 / phase.elapsed.as_secs_f64(),
                phase.latency_ms(0.5),
                phase.latency_ms(0.99),
                phase.latency_ms(0.999),
                phase.max_ms(),
            );
        }
    }
    let ratio = |quantile: f64| {
        Spread::of(runs.iter().map(|(alone, with)| with.latency_ms(quantile) / alone.latency_ms(quantile))).median
    };
    let _ = writeln!(
        out,
        "\nMedians over {} run(s) of (beside the reader ÷ alone), each run's phases back to back: p50 {:.2}, \
         p99 {:.2}, **p99.9 {:.2}** (goal ≤ 2), max {:.2}.",
        plan.runs,
        ratio(0.5),
        ratio(0.99),
        ratio(0.999),
        Spread::of(runs.iter().map(|(alone, with)| with.max_ms() / alone.max_ms())).median
    );
    let _ = writeln!(out, "\nCommand: `{}`", crate::rows::this_command());
    out
}
