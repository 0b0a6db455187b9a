//! Transaction test helpers: transactional and numbered producers, reading a topic to its end under
//! either isolation level, end offsets and committed offsets over the admin client, `once` processes
//! (copiers, a broker with a crash hook) that can be killed, stopped and resumed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{BrokerId, GroupId, ListOffsetsRequest, OffsetFetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{BrokerProcess, Deliveries};

pub type TxnProducer = ThreadedProducer<DefaultProducerContext>;

/// A transactional producer with `init_transactions` done.
pub fn transactional_producer(bootstrap: &str, transactional_id: &str, timeout_ms: u32) -> TxnProducer {
    let producer: TxnProducer = once_cli::clients::client_config(bootstrap)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("linger.ms", "1")
        .create()
        .expect("transactional producer");
    producer.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    producer
}

/// Queues one record (retrying while the local queue is full).
pub fn send(producer: &TxnProducer, topic: &str, partition: i32, value: &str) {
    let record = BaseRecord::<str, str>::to(topic).partition(partition).key(value).payload(value);
    super::queue(record, |record| producer.send(record), || std::thread::sleep(Duration::from_millis(5)))
        .unwrap_or_else(|error| panic!("sending {value} to {topic}-{partition}: {error}"));
}

/// Sends record `n` for every n in `numbers` to partition `n % partitions`, key `k-n`, value `v-n`
/// and a header `n`, with an idempotent producer; `pace` = (records, pause) between groups of sends.
/// Panics unless every record is acknowledged.
pub fn produce_numbered(
    bootstrap: &str,
    topic: &str,
    partitions: usize,
    numbers: std::ops::Range<usize>,
    pace: Option<(usize, Duration)>,
) {
    let deliveries = Deliveries::default();
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "180000")
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(deliveries.clone())
        .expect("input producer");
    let count = numbers.len();
    for number in numbers {
        let (key, value) = (format!("k-{number}"), format!("v-{number}"));
        let headers = OwnedHeaders::new().insert(Header { key: "n", value: Some(number.to_string().as_str()) });
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(number))
            .partition((number % partitions) as i32)
            .key(&key)
            .payload(&value)
            .headers(headers);
        loop {
            match producer.send::<String, String>(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        if let Some((every, pause)) = pace {
            if number % every == every - 1 {
                std::thread::sleep(pause);
            }
        }
    }
    producer.flush(Duration::from_secs(180)).expect("every input record acknowledged");
    let reports = deliveries.0.lock().expect("deliveries").clone();
    let failed: Vec<_> = reports.iter().filter(|(_, _, outcome)| outcome.is_err()).take(3).collect();
    assert!(failed.is_empty(), "input deliveries failed: {failed:?}");
    assert_eq!(reports.len(), count, "a delivery report for every input record");
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    fn config(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }

    fn wire(self) -> i8 {
        match self {
            Isolation::ReadCommitted => 1,
            Isolation::ReadUncommitted => 0,
        }
    }
}

/// One consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

/// Everything a consumer with `isolation` can read now, from the beginning of every partition up to
/// its end (the high watermark, or for read_committed the last stable offset), in partition order.
pub fn read_to_end(bootstrap: &str, topic: &str, partitions: i32, isolation: Isolation) -> Vec<Record> {
    let consumer: BaseConsumer = once_cli::clients::client_config(bootstrap)
        .set("group.id", "once-txn-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation.config())
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut at_end = std::collections::BTreeSet::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < partitions as usize {
        assert!(Instant::now() < deadline, "{topic} ({isolation:?}) not read to its end; at the end of {at_end:?}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                let text = |bytes: Option<&[u8]>| bytes.map(|bytes| String::from_utf8_lossy(bytes).to_string());
                let headers = message
                    .headers()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|header| (header.key.to_string(), text(header.value).unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default();
                records.push(Record {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: text(message.key()),
                    value: text(message.payload()).unwrap_or_default(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(_)) | None => {}
        }
    }
    records.sort_by_key(|record| (record.partition, record.offset));
    records
}

/// Values per partition, in offset order.
pub fn values_by_partition(records: &[Record]) -> BTreeMap<i32, Vec<String>> {
    let mut values: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for record in records {
        values.entry(record.partition).or_default().push(record.value.clone());
    }
    values
}

/// Latest offsets of partitions 0..partitions: the high watermark (read_uncommitted) or the last stable
/// offset (read_committed), from ListOffsets v5.
pub fn try_end_offsets(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
) -> anyhow::Result<Vec<i64>> {
    let mut client = AdminClient::connect(bootstrap)?;
    let wanted = (0..partitions)
        .map(|index| ListOffsetsPartition::default().with_partition_index(index).with_timestamp(-1))
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(isolation.wire())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(wanted)]);
    let response = client.call(&request, 5)?;
    let mut offsets = vec![-1; partitions as usize];
    for partition in response.topics.iter().flat_map(|topic| topic.partitions.iter()) {
        anyhow::ensure!(partition.error_code == 0, "ListOffsets error {}", partition.error_code);
        offsets[partition.partition_index as usize] = partition.offset;
    }
    Ok(offsets)
}

pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32, isolation: Isolation) -> Vec<i64> {
    try_end_offsets(bootstrap, topic, partitions, isolation).expect("ListOffsets")
}

/// The group's stable committed offsets (OffsetFetch v7, require_stable), -1 where none; an error while
/// a transaction holding offsets is still being completed (UNSTABLE_OFFSET_COMMIT) or the broker is away.
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<i64>> {
    let mut client = AdminClient::connect(bootstrap)?;
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_require_stable(true)
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_indexes((0..partitions).collect())]));
    let response = client.call(&request, 7)?;
    anyhow::ensure!(response.error_code == 0, "OffsetFetch error {}", response.error_code);
    let mut offsets = vec![-1; partitions as usize];
    for partition in response.topics.iter().flat_map(|topic| topic.partitions.iter()) {
        anyhow::ensure!(partition.error_code == 0, "OffsetFetch partition error {}", partition.error_code);
        offsets[partition.partition_index as usize] = partition.committed_offset;
    }
    Ok(offsets)
}

/// Waits until `condition` holds; panics naming `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `once` process (a copier, or a broker with a crash hook) whose output goes to a log file.
pub struct OnceProcess {
    child: Option<Child>,
    status: Option<ExitStatus>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl OnceProcess {
    pub fn spawn(args: &[String], env: &[(&str, &str)]) -> OnceProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("once.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_once"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("ONCE_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn once");
        OnceProcess { child: Some(child), status: None, log_path, _dir: dir }
    }

    /// `once copy` with the given arguments after --bootstrap/--from/--to/--group/--transactional-id.
    pub fn copier(bootstrap: &str, from: &str, to: &str, group: &str, id: &str, more: &[&str]) -> OnceProcess {
        let mut args: Vec<String> =
            ["copy", "--bootstrap", bootstrap, "--from", from, "--to", to, "--group", group, "--transactional-id", id]
                .iter()
                .map(|arg| arg.to_string())
                .collect();
        args.extend(more.iter().map(|arg| arg.to_string()));
        OnceProcess::spawn(&args, &[])
    }

    /// `once serve` on `broker`'s port and data directory (which must be stopped), with `env` set.
    pub fn broker(broker: &BrokerProcess, env: &[(&str, &str)]) -> OnceProcess {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            broker.bootstrap(),
            "--data-dir".into(),
            broker.data_dir.display().to_string(),
        ];
        args.extend(broker.extra_args.iter().cloned());
        let mut process = OnceProcess::spawn(&args, env);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(broker.bootstrap()).is_err() {
            assert!(process.exit_status().is_none(), "broker exited early; log:\n{}", process.log());
            assert!(Instant::now() < deadline, "broker did not accept connections; log:\n{}", process.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|child| child.id()).expect("process not reaped yet")
    }

    /// The exit status once the process has exited (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().expect("try_wait")) {
                self.status = Some(status);
                self.child = None;
            }
        }
        self.status
    }

    /// Waits for the process to exit; panics with its log after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit within {timeout:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = Some(child.wait().expect("reap"));
        }
    }

    /// Sends a signal by name (STOP, CONT, TERM) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.id().to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for OnceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The numbers in a copier's summary line: (records copied, transactions committed, aborted).
pub fn copier_summary(log: &str) -> (u64, u64, u64) {
    let line = log.lines().rev().find(|line| line.starts_with("once copy: ") && line.contains("records copied"));
    let line = line.unwrap_or_else(|| panic!("no summary line in the copier's output:\n{log}"));
    let number_before = |label: &str| -> u64 {
        let before = &line[..line.find(label).unwrap_or_else(|| panic!("'{label}' missing from: {line}"))];
        before.split_whitespace().last().and_then(|word| word.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    (number_before(" records copied"), number_before(" transactions committed"), number_before(" transactions aborted"))
}
