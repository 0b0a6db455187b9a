//! Workloads on a large log: W5, a consumer catching up from the beginning of a multi-GB backlog,
//! and W6, the time until a broker serves again after `kill -9` with that backlog on disk.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, TopicPartitionList};

use crate::broker::Server;
use crate::process::{self, ProcessProbe};
use crate::produce;
use crate::rows::{Measurement, Row};
use crate::Plan;

/// The plan for filling a backlog of `--backlog-bytes` in records of `--record-bytes`.
pub(crate) fn backlog_plan(plan: &Plan) -> Plan {
    let mut fill = plan.clone();
    fill.records = (plan.backlog_bytes / plan.args.record_bytes as u64).max(1);
    fill.delivery_timeout = fill.delivery_timeout.max(Duration::from_secs(120));
    fill
}

fn setting(plan: &Plan, records: u64, extra: &str) -> String {
    let megabytes = records as f64 * plan.args.record_bytes as f64 / 1e6;
    format!("{megabytes:.0} MB backlog, {} partition(s){extra}", plan.args.partitions)
}

/// Empties the page cache so that a read comes from the disk (root only): `sync`, then
/// `drop_caches`. This machine's other work loses its cache too, which costs it only time.
pub(crate) fn drop_page_cache() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    anyhow::ensure!(status.success(), "sync failed");
    std::fs::write("/proc/sys/vm/drop_caches", "1").context("writing /proc/sys/vm/drop_caches (needs root)")
}

/// W5: fills a topic once, then reads it all from the beginning `plan.runs` times.
pub fn catch_up(plan: &Plan, run_id: u128) -> anyhow::Result<Vec<Row>> {
    let fill = backlog_plan(plan);
    let topic = format!("{}-{run_id}-w5", plan.args.topic_prefix);
    eprintln!("filling {topic} with {} records of {} B", fill.records, plan.args.record_bytes);
    let (filled, fill_cost) = process::measure(&plan.args.broker_pid, || produce::fill(&fill, &topic))?;
    let reads = read_runs(plan, &topic, filled.records);
    if let Err(error) = produce::delete_topic(plan, &topic) {
        eprintln!("once-bench: could not delete topic {topic}: {error:#}");
    }
    let reads = reads?;
    let cache = if plan.args.drop_caches { ", cold page cache" } else { ", warm page cache" };
    let records = filled.records;
    Ok(vec![
        Row {
            workload: "W5 backlog fill (acks=all produce)".to_string(),
            system: plan.args.system.clone(),
            durability: plan.args.durability.clone(),
            record_bytes: plan.args.record_bytes,
            setting: setting(plan, records, ", 1 run"),
            runs: vec![filled.into_measurement(plan.args.record_bytes, fill_cost)],
        },
        Row {
            workload: "W5 consumer catch-up".to_string(),
            system: plan.args.system.clone(),
            durability: "reads what was acknowledged".to_string(),
            record_bytes: plan.args.record_bytes,
            setting: setting(plan, records, cache),
            runs: reads,
        },
    ])
}

fn read_runs(plan: &Plan, topic: &str, records: u64) -> anyhow::Result<Vec<Measurement>> {
    let mut runs = Vec::with_capacity(plan.runs);
    for index in 0..plan.runs {
        if plan.args.drop_caches {
            drop_page_cache()?;
        }
        eprintln!("run {}/{}: reading {records} records of {topic} from the beginning", index + 1, plan.runs);
        let (mut measurement, cost) = process::measure(&plan.args.broker_pid, || read_all(plan, topic, records))?;
        measurement.cost = cost;
        eprintln!("  read in {:.2} s", measurement.elapsed.as_secs_f64());
        runs.push(measurement);
    }
    Ok(runs)
}

/// One consumer, every partition from the beginning, until `records` records have arrived.
fn read_all(plan: &Plan, topic: &str, records: u64) -> anyhow::Result<Measurement> {
    let consumer: BaseConsumer = crate::client_config(&plan.args.bootstrap)
        .set("group.id", format!("{topic}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the catch-up consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..plan.args.partitions {
        assignment.add_partition_offset(topic, partition, rdkafka::Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let deadline = started + Duration::from_secs(600);
    let (mut seen, mut value_bytes) = (0u64, 0u64);
    while seen < records {
        anyhow::ensure!(Instant::now() < deadline, "read {seen} of {records} records in 600 s");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                seen += 1;
                value_bytes += message.payload().map_or(0, <[u8]>::len) as u64;
            }
            Some(Err(error)) => eprintln!("once-bench: catch-up read: {error}"),
            None => {}
        }
    }
    Ok(Measurement { records: seen, value_bytes, elapsed: started.elapsed(), latencies_us: Vec::new(), cost: None })
}

fn producer(plan: &Plan) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    crate::client_config(&plan.args.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("retry.backoff.ms", "10")
        .set("reconnect.backoff.ms", "10")
        .set("reconnect.backoff.max.ms", "50")
        .set("message.timeout.ms", "120000")
        .create()
        .context("creating a producer")
}

/// Waits for the broker to accept a connection, then for one acks=all record to be acknowledged;
/// returns both times since `started`.
fn wait_until_serving(plan: &Plan, topic: &str, started: Instant) -> anyhow::Result<(Duration, Duration)> {
    let deadline = started + Duration::from_secs(300);
    while std::net::TcpStream::connect(&plan.args.bootstrap).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the broker did not accept a connection within 300 s");
        thread::sleep(Duration::from_millis(2));
    }
    let accepted = started.elapsed();
    let producer = producer(plan)?;
    producer
        .send(BaseRecord::<(), [u8]>::to(topic).partition(0).payload(b"restart probe"))
        .map_err(|(error, _)| error)
        .context("enqueueing the probe record")?;
    producer.flush(Duration::from_secs(120)).context("the probe record was not acknowledged in 120 s")?;
    Ok((accepted, started.elapsed()))
}

/// Produces acks=all records to `topic` until `stop`, so that the kill lands mid-write.
fn trickle(plan: &Plan, topic: &str, stop: Arc<AtomicBool>) -> anyhow::Result<thread::JoinHandle<()>> {
    let producer = producer(plan)?;
    let (topic, payload) = (topic.to_string(), vec![7u8; plan.args.record_bytes]);
    Ok(thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = producer.send(BaseRecord::<(), [u8]>::to(&topic).payload(&payload));
            thread::sleep(Duration::from_micros(200));
        }
        // Records in flight at the kill fail or time out; they are not what is measured.
        drop(producer);
    }))
}

/// W6: starts a broker on a fresh data directory, fills a backlog, then `plan.runs` times kills it
/// with SIGKILL while a producer is writing and times the restart.
pub fn restart(plan: &Plan, data_parent: &Path, run_id: u128) -> anyhow::Result<Vec<Row>> {
    let work = tempfile::Builder::new().prefix("once-bench-restart-").tempdir_in(data_parent)?;
    let (data_dir, log) = (work.path().join("data"), work.path().join("broker.log"));
    let topic = format!("{}-{run_id}-w6", plan.args.topic_prefix);
    let mut server = Server::start(plan, &plan.args.bootstrap, &data_dir, &log)?;
    server.wait_until_accepting(&plan.args.bootstrap)?;
    let fill = backlog_plan(plan);
    eprintln!("filling {topic} with {} records of {} B", fill.records, plan.args.record_bytes);
    let filled = produce::fill(&fill, &topic)?;
    let mut runs = Vec::with_capacity(plan.runs);
    for index in 0..plan.runs {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = trickle(plan, &topic, Arc::clone(&stop))?;
        thread::sleep(Duration::from_millis(300));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let _ = writer.join();
        let started = Instant::now();
        server = Server::start(plan, &plan.args.bootstrap, &data_dir, &log)?;
        let probe = ProcessProbe::start(&[server.id()])?;
        let (accepted, served) = wait_until_serving(plan, &topic, started)
            .with_context(|| format!("restart {}; broker log {}", index + 1, log.display()))?;
        let cost = probe.finish()?;
        eprintln!(
            "run {}/{}: after kill -9, accepting in {:.3} s, first ack in {:.3} s",
            index + 1,
            plan.runs,
            accepted.as_secs_f64(),
            served.as_secs_f64()
        );
        runs.push(Measurement {
            // Not a count of records: the rows show "—" for records/s.
            records: 0,
            value_bytes: filled.records * plan.args.record_bytes as u64,
            elapsed: served,
            latencies_us: vec![u32::try_from(served.as_micros()).unwrap_or(u32::MAX)],
            cost: Some(cost),
        });
    }
    drop(server);
    Ok(vec![Row {
        workload: "W6 restart after kill -9".to_string(),
        system: plan.args.system.clone(),
        durability: plan.args.durability.clone(),
        record_bytes: plan.args.record_bytes,
        setting: setting(plan, filled.records, "; ack columns = time to first acked produce; MB/s = backlog ÷ it"),
        runs,
    }])
}
