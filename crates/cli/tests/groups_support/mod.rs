//! Consumer-group test helpers: rdkafka consumer *processes* (the test binary re-run in worker mode),
//! a producer, and raw group requests over the admin client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use crate::support::Deliveries;

const WORKER_ENV: &str = "ONCE_TEST_GROUP_WORKER";

/// How a worker process consumes.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub bootstrap: String,
    pub topic: String,
    pub group: String,
    pub strategy: String,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
}

struct PrintRebalance;
impl ClientContext for PrintRebalance {}
impl ConsumerContext for PrintRebalance {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions: Vec<String> =
                list.elements().iter().map(|element| element.partition().to_string()).collect();
            println!("REVOKE {}", partitions.join(","));
        }
    }
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        let mut partitions: Vec<i32> = consumer
            .assignment()
            .map(|list| list.elements().iter().map(|element| element.partition()).collect())
            .unwrap_or_default();
        partitions.sort();
        let partitions: Vec<String> = partitions.iter().map(|partition| partition.to_string()).collect();
        println!("ASSIGNED {}", partitions.join(","));
    }
}

/// Called by a `#[test]` in each file that spawns workers: in worker mode it consumes until stdin
/// closes, printing `ASSIGNED`, `REVOKE` and `RECORD partition offset value` lines, committing each
/// record after printing it (commit after processing). Otherwise it returns at once.
pub fn run_worker_if_requested() {
    if std::env::var(WORKER_ENV).is_err() {
        return;
    }
    // libtest has printed "test consumer_worker ... " without a newline: end that line first.
    println!();
    let get = |name: &str| std::env::var(name).unwrap_or_default();
    let mut config = once_cli::clients::client_config(&get("ONCE_TEST_BOOTSTRAP"));
    config
        .set("group.id", get("ONCE_TEST_GROUP"))
        .set("partition.assignment.strategy", get("ONCE_TEST_STRATEGY"))
        .set("session.timeout.ms", get("ONCE_TEST_SESSION_MS"))
        .set("heartbeat.interval.ms", "300")
        // The rebalance timeout; librdkafka wants it no shorter than the session timeout.
        .set("max.poll.interval.ms", get("ONCE_TEST_SESSION_MS").parse::<u32>().unwrap_or(0).max(8000).to_string())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if let Ok(instance) = std::env::var("ONCE_TEST_INSTANCE") {
        config.set("group.instance.id", instance);
    }
    let consumer: BaseConsumer<PrintRebalance> = config.create_with_context(PrintRebalance).expect("worker consumer");
    consumer.subscribe(&[&get("ONCE_TEST_TOPIC")]).expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_reader = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stop_reader.store(true, Ordering::Relaxed);
    });
    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let Ok(message) = message else { continue };
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        println!("RECORD {} {} {value}", message.partition(), message.offset());
        if let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
            println!("COMMIT-FAILED {error}");
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    println!("STOPPED");
}

/// A consumer process and everything it printed.
pub struct Worker {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    /// Runs `test_name` of the current test binary in worker mode.
    pub fn spawn(test_name: &str, config: &WorkerConfig) -> Worker {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, "1")
            .env("ONCE_TEST_BOOTSTRAP", &config.bootstrap)
            .env("ONCE_TEST_TOPIC", &config.topic)
            .env("ONCE_TEST_GROUP", &config.group)
            .env("ONCE_TEST_STRATEGY", &config.strategy)
            .env("ONCE_TEST_SESSION_MS", config.session_timeout_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(instance) = &config.instance_id {
            command.env("ONCE_TEST_INSTANCE", instance);
        }
        let mut child = command.spawn().expect("spawn worker");
        let stdout = child.stdout.take().expect("worker stdout");
        let stdin = child.stdin.take();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                collected.lock().expect("lines").push(line);
            }
        });
        Worker { child: Some(child), stdin, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// (partition, offset, value) of every record the worker processed.
    pub fn records(&self) -> Vec<(i32, i64, String)> {
        self.lines()
            .iter()
            .filter_map(|line| line.strip_prefix("RECORD "))
            .filter_map(|rest| {
                let mut fields = rest.splitn(3, ' ');
                Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?, fields.next()?.to_string()))
            })
            .collect()
    }

    /// Every full assignment the worker reported, in order.
    pub fn assignments(&self) -> Vec<Vec<i32>> {
        self.lines()
            .iter()
            .filter_map(|line| line.strip_prefix("ASSIGNED"))
            .map(|rest| {
                rest.trim().split(',').filter(|part| !part.is_empty()).filter_map(|part| part.parse().ok()).collect()
            })
            .collect()
    }

    pub fn current_assignment(&self) -> Vec<i32> {
        self.assignments().last().cloned().unwrap_or_default()
    }

    /// Lines saying partitions were revoked, each as its partition list.
    pub fn revocations(&self) -> Vec<Vec<i32>> {
        self.lines()
            .iter()
            .filter_map(|line| line.strip_prefix("REVOKE"))
            .map(|rest| {
                rest.trim().split(',').filter(|part| !part.is_empty()).filter_map(|part| part.parse().ok()).collect()
            })
            .collect()
    }

    /// SIGKILL: no LeaveGroup, no final commit.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Closes stdin: the worker leaves the group and exits.
    pub fn stop(&mut self) {
        self.stdin.take();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `condition` holds, or panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Produces `values` with acks=all, value i to partition `partition_of(i)`; panics unless all are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, values: &[(i32, String)]) {
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(bootstrap)
        .set("acks", "all")
        .set("linger.ms", "1")
        .create_with_context(Deliveries::default())
        .expect("producer");
    for (number, (partition, value)) in values.iter().enumerate() {
        producer
            .send::<(), _>(BaseRecord::with_opaque_to(topic, Box::new(number)).partition(*partition).payload(value))
            .map_err(|(error, _)| error)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let reports = producer.context().0.lock().expect("reports").clone();
    assert_eq!(reports.len(), values.len(), "every record gets a report");
    assert!(reports.iter().all(|(_, _, outcome)| outcome.is_ok()), "all records acknowledged");
}

/// Committed offsets of `group` for partitions 0..partitions of `topic` (-1 for none), by OffsetFetch v7.
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let mut client = AdminClient::connect(bootstrap).expect("admin connect");
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes((0..partitions).collect())]))
        .with_require_stable(true);
    let response = client.call(&request, 7).expect("offset fetch");
    assert_eq!(response.error_code, 0, "offset fetch error");
    let mut offsets = vec![-1; partitions as usize];
    for topic in &response.topics {
        for partition in &topic.partitions {
            assert_eq!(partition.error_code, 0, "offset fetch partition error");
            offsets[partition.partition_index as usize] = partition.committed_offset;
        }
    }
    offsets
}
