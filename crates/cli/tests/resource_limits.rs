//! Resource exhaustion (issue 22) against a real `once serve`: a data directory on a small tmpfs the
//! test mounts, filled to the free-space floor, and brokers started under low open-file limits.
//!
//! - **The floor.** Produce is refused retriably below `--min-free-bytes` (the producer keeps
//!   retrying), while a consumer group commits offsets and an open transaction commits; when space
//!   is freed the producer's records go through by themselves — no restart — and every record is
//!   stored once, in order.
//! - **Open files.** Under `ulimit -S -n 1024` (hard limit higher) the broker raises its soft limit
//!   and 2,000 partitions are created and written; under a hard limit too low, CreateTopics is
//!   refused with POLICY_VIOLATION naming the limit, and the partitions the broker has keep serving.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use support::txn::{committed_offsets, read_to_end, send, transactional_producer, Isolation};
use support::{free_port, once, wait_until, BrokerProcess, Deliveries};

/// A tmpfs of `megabytes` mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn free(&self) -> u64 {
        once_node::storage::space(self.path()).expect("statvfs").free
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// `GET PATH` from the broker's HTTP listener: the body.
fn get(address: &str, path: &str) -> String {
    let mut response = agent().get(&format!("http://{address}{path}")).call().expect("GET");
    response.body_mut().read_to_string().expect("body")
}

fn metrics(address: &str) -> String {
    get(address, "/metrics")
}

fn metric_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|line| line.starts_with(prefix))
}

const FLOOR: u64 = 16 << 20;
const RECORDS: usize = 6_000;
const RECORD_BYTES: usize = 1024;

#[test]
fn below_the_floor_produce_waits_and_resumes_by_itself_while_offsets_and_transactions_go_on() {
    let tmpfs = Tmpfs::mount(64);
    let http = format!("127.0.0.1:{}", free_port());
    let floor = FLOOR.to_string();
    let args = ["--min-free-bytes", &floor, "--http-listen", &http, "--segment-bytes", "1048576"];
    let broker = BrokerProcess::start_with(&args, Some(tmpfs.path().join("data")), None);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "filling", "--partitions", "1", "--bootstrap", &bootstrap]);
    once(&["topic", "create", "paid", "--partitions", "1", "--bootstrap", &bootstrap]);

    // An open transaction, its records stored before the disk fills.
    let txn = transactional_producer(&bootstrap, "floor-txn", 60_000);
    txn.begin_transaction().expect("begin");
    for value in ["t1", "t2", "t3"] {
        send(&txn, "paid", 0, value);
    }
    txn.flush(Duration::from_secs(30)).expect("the transaction's records are stored");

    // Leave 3 MiB above the floor: about 3,000 of the 6,000 records fit before it.
    let filler = tmpfs.path().join("filler");
    let headroom = 3 << 20;
    let filler_bytes = tmpfs.free() - FLOOR - headroom;
    std::fs::write(&filler, vec![0u8; filler_bytes as usize]).expect("fill the tmpfs");
    let deliveries = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .create_with_context(deliveries.clone())
        .expect("producer");
    for number in 0..RECORDS {
        let value = format!("{number:06}:{}", "x".repeat(RECORD_BYTES - 7));
        let mut record = BaseRecord::<(), String, Box<usize>>::with_opaque_to("filling", Box::new(number))
            .partition(0)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    std::thread::sleep(Duration::from_millis(5));
                    record = returned;
                }
            }
        }
    }
    let delivered = || deliveries.0.lock().expect("deliveries").len();
    // Refused at the floor: deliveries stop short, the broker says why, nothing failed.
    let mut last = (usize::MAX, Instant::now());
    wait_until("deliveries to stall at the floor", Duration::from_secs(60), || {
        let now = delivered();
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() > Duration::from_secs(5)
    });
    let stalled = delivered();
    assert!(stalled > 1_000 && stalled < RECORDS, "the floor stops the producer part-way: {stalled} delivered");
    assert!(deliveries.0.lock().expect("deliveries").iter().all(|(_, _, result)| result.is_ok()), "no delivery failed");
    assert!(tmpfs.free() >= FLOOR / 2, "the disk never filled: {} bytes free", tmpfs.free());
    let log = broker.log();
    assert!(log.contains("refusing produce: free space below the floor"), "the broker says why:\n{log}");
    let refusal_lines = log.lines().filter(|line| line.contains("refusing produce")).count();
    let text = metrics(&http);
    let refused: usize = metric_line(&text, "once_storage_refused_produce_total")
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .expect("the refusal counter");
    assert!(
        refused > refusal_lines && refusal_lines <= 1 + refused / 2,
        "one line every few seconds, not one per refusal: {refusal_lines} lines for {refused} refusals"
    );
    let refusing = metric_line(&text, "once_storage_refusing_writes{reason=\"disk_below_floor\"}");
    assert_eq!(refusing, Some("once_storage_refusing_writes{reason=\"disk_below_floor\"} 1"), "{text}");

    // Well below the floor now (half of it left), the internal logs go on: a group commits
    // offsets, the transaction commits.
    let more = tmpfs.free() - FLOOR / 2;
    let mut file = std::fs::OpenOptions::new().append(true).open(&filler).expect("filler");
    std::io::Write::write_all(&mut file, &vec![0u8; more as usize]).expect("fill below the floor");
    file.sync_all().expect("sync");
    drop(file);
    assert!(tmpfs.free() < FLOOR / 2 + (1 << 20), "below the floor: {} bytes free", tmpfs.free());
    // HTTP produce, even one small record, is refused the same way: 507, retry later.
    let clusters: serde_json::Value = serde_json::from_str(&get(&http, "/v3/clusters")).expect("JSON");
    let cluster = clusters["data"][0]["cluster_id"].as_str().expect("a cluster id").to_string();
    let mut response = agent()
        .post(&format!("http://{http}/v3/clusters/{cluster}/topics/filling/records"))
        .header("content-type", "application/json")
        .send(r#"{"value": {"type": "STRING", "data": "over the floor"}}"#)
        .expect("POST");
    assert_eq!(response.status().as_u16(), 507);
    assert_eq!(response.headers().get("retry-after").map(|value| value.to_str().unwrap_or("")), Some("5"));
    let problem = response.body_mut().read_to_string().expect("body");
    assert!(problem.contains("storage-below-floor"), "{problem}");
    // Reads go on.
    assert_eq!(read_to_end(&bootstrap, "paid", 1, Isolation::ReadUncommitted).len(), 3, "reads below the floor");

    let consumer: BaseConsumer = once_cli::clients::client_config(&bootstrap)
        .set("group.id", "floor-readers")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("filling", 0, Offset::Offset(100)).expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("offsets commit below the floor");
    let committed = committed_offsets(&bootstrap, "floor-readers", "filling", 1).expect("fetch committed offsets");
    assert_eq!(committed, [100], "the group's commit is stored");
    txn.commit_transaction(Duration::from_secs(30)).expect("an open transaction commits below the floor");

    // Space returns (an operator deletes a file): the producer's retries go through, no restart.
    std::fs::remove_file(&filler).expect("free the space");
    wait_until("every record to be delivered", Duration::from_secs(120), || delivered() == RECORDS);
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert!(deliveries.0.lock().expect("deliveries").iter().all(|(_, _, result)| result.is_ok()), "no delivery failed");
    let text = metrics(&http);
    let refusing = metric_line(&text, "once_storage_refusing_writes{reason=\"disk_below_floor\"}");
    assert_eq!(refusing, Some("once_storage_refusing_writes{reason=\"disk_below_floor\"} 0"), "{text}");

    // Every record once, in order; the transaction's records readable committed.
    let stored = read_to_end(&bootstrap, "filling", 1, Isolation::ReadUncommitted);
    let numbers: Vec<usize> = stored.iter().map(|record| record.value[..6].parse().expect("a number")).collect();
    assert_eq!(numbers, (0..RECORDS).collect::<Vec<_>>(), "every acknowledged record once, in order");
    let paid = read_to_end(&bootstrap, "paid", 1, Isolation::ReadCommitted);
    let values: Vec<&str> = paid.iter().map(|record| record.value.as_str()).collect();
    assert_eq!(values, ["t1", "t2", "t3"], "the transaction committed");
}

fn describe_high_watermarks(bootstrap: &str, topic: &str) -> i64 {
    once(&["topic", "describe", topic, "--bootstrap", bootstrap])
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("high-watermark="))
        .map(|value| value.parse::<i64>().expect("a high watermark"))
        .sum()
}

/// The soft limit of 1,024 is raised to the hard one: 20 topics × 100 partitions are created and
/// every partition written.
#[test]
fn a_low_soft_open_file_limit_is_raised_and_two_thousand_partitions_work() {
    let (_, hard) = once_node::storage::open_file_limit().expect("rlimit");
    assert!(hard >= 4_000, "this test needs a hard open-file limit of 4,000 or more, not {hard}");
    let broker = BrokerProcess::start_with(&[], None, Some("-S -n 1024"));
    let log = broker.log();
    assert!(log.contains("open-file limit") && log.contains("raised_from=1024"), "the limits are logged:\n{log}");
    let bootstrap = broker.bootstrap();
    for topic in 0..20 {
        once(&["topic", "create", &format!("many-{topic}"), "--partitions", "100", "--bootstrap", &bootstrap]);
    }
    let deliveries = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(&bootstrap)
        .set("linger.ms", "20")
        .create_with_context(deliveries.clone())
        .expect("producer");
    for topic in 0..20 {
        let name = format!("many-{topic}");
        for partition in 0..100 {
            let record = BaseRecord::<(), str, Box<usize>>::with_opaque_to(&name, Box::new(partition as usize))
                .partition(partition)
                .payload("x");
            producer.send(record).map_err(|(error, _)| error).expect("queue");
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let failed: Vec<_> =
        deliveries.0.lock().expect("deliveries").iter().filter(|(_, _, r)| r.is_err()).cloned().collect();
    assert!(failed.is_empty(), "every partition written: {failed:?}");
    let total: i64 = (0..20).map(|topic| describe_high_watermarks(&bootstrap, &format!("many-{topic}"))).sum();
    assert_eq!(total, 2_000, "one record in each of 2,000 partitions");
}

/// A hard limit of 700 descriptors, 50 connections: 700 − 562 kept free − those open leaves room
/// for a topic of 100 partitions; one of 100 more is refused with POLICY_VIOLATION naming the limit
/// (not a storage error), and the first still serves.
#[test]
fn partitions_beyond_a_low_hard_limit_are_refused_clearly_and_the_rest_keep_serving() {
    let broker = BrokerProcess::start_with(&["--connections-max", "50"], None, Some("-n 700"));
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "fits", "--partitions", "100", "--bootstrap", &bootstrap]);
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["topic", "create", "too-many", "--partitions", "100", "--bootstrap", &bootstrap])
        .output()
        .expect("run once topic create");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "refused: {stderr}");
    assert!(stderr.contains("open-file limit (soft 700, hard 700)"), "names the limit: {stderr}");
    assert!(!stderr.to_lowercase().contains("storage"), "not a storage error: {stderr}");
    let listed = once(&["topic", "list", "--bootstrap", &bootstrap]);
    assert!(!listed.contains("too-many"), "nothing half-created: {listed}");
    assert!(broker.log().contains("refusing partitions: open-file limit"), "the broker logs it too");
    support::produce_lines(&broker, "fits", "still\nserving\n");
    assert_eq!(describe_high_watermarks(&bootstrap, "fits"), 2, "the topic it has still takes writes");
}
