//! Message-id deduplication end to end, with real `once serve` processes and librdkafka clients:
//! two producer processes sending overlapping ids through a broker kill -9 and a resend leave each id
//! once; ids expire with the window; an aborted transaction's ids can be sent again; an open
//! transaction's ids are refused retriably until it ends, and either outcome leaves each id once;
//! every `dedup.source` mode works and `none` stores duplicates; the configs, the produce answers and
//! the metrics endpoint.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use support::txn::{end_offsets, eventually, read_to_end, transactional_producer, Isolation, Record};
use support::{free_port, once, BrokerProcess, Deliveries};

/// The header the tests put message ids in.
const ID_HEADER: &str = "msg-id";
/// Environment variable that turns the ignored test `producer_process` into a producer process.
const PRODUCER_SPEC: &str = "ONCE_DEDUP_TEST_PRODUCER";

fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[&str]) {
    let partitions = partitions.to_string();
    let mut args = vec!["topic", "create", name, "--partitions", &partitions, "--bootstrap", bootstrap];
    for config in configs {
        args.extend(["--config", config]);
    }
    once(&args);
}

/// An idempotent producer whose delivery reports are kept.
fn producer(bootstrap: &str, batch_records: usize) -> ThreadedProducer<Deliveries> {
    once_cli::clients::client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", batch_records.to_string())
        .set("message.timeout.ms", "180000")
        .set("retry.backoff.ms", "20")
        .set("retry.backoff.max.ms", "500")
        .set("reconnect.backoff.max.ms", "500")
        .create_with_context(Deliveries::default())
        .expect("producer")
}

/// Queues a record with a null key (librdkafka spreads those over partitions), `value`, and the
/// message id `id` in the header, retrying while the local queue is full.
#[allow(clippy::result_large_err)] // rdkafka hands a refused record back in its error
fn send_with_id(producer: &ThreadedProducer<Deliveries>, topic: &str, number: usize, id: &str, value: &str) {
    let headers = OwnedHeaders::new().insert(Header { key: ID_HEADER, value: Some(id) });
    let record = BaseRecord::<(), str, Box<usize>>::with_opaque_to(topic, Box::new(number))
        .payload(value)
        .headers(headers.clone());
    support::queue(record, |record| producer.send(record), || producer.poll(Duration::from_millis(10)))
        .unwrap_or_else(|error| panic!("queueing record {number}: {error}"));
}

/// Flushes and asserts every record was acknowledged; returns the delivery reports.
fn flush_all(producer: &ThreadedProducer<Deliveries>, expected: usize) -> Vec<support::Delivery> {
    producer.flush(Duration::from_secs(180)).expect("every record acknowledged");
    let reports = producer.context().0.lock().expect("lock").clone();
    let failed: Vec<_> = reports.iter().filter(|(_, _, outcome)| outcome.is_err()).take(3).collect();
    assert!(failed.is_empty(), "deliveries failed: {failed:?}");
    assert_eq!(reports.len(), expected, "one report per record");
    reports
}

/// How many times each message id (header) is stored.
fn id_counts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        let id = record.headers.iter().find(|(key, _)| key == ID_HEADER).map(|(_, value)| value.clone());
        *counts.entry(id.unwrap_or_default()).or_insert(0) += 1;
    }
    counts
}

fn assert_each_id_once(records: &[Record], ids: impl Iterator<Item = String>) {
    let counts = id_counts(records);
    let expected: Vec<String> = ids.collect();
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).take(5).collect();
    assert!(twice.is_empty(), "ids stored more than once: {twice:?}");
    let missing: Vec<_> = expected.iter().filter(|id| !counts.contains_key(*id)).take(5).collect();
    assert!(missing.is_empty(), "ids never stored: {missing:?}");
    assert_eq!(counts.len(), expected.len(), "no other ids");
    assert_eq!(records.len(), expected.len());
}

/// A producer process: sends ids `first..last` in the given order to a topic, paced, then flushes.
/// Spec: "BOOTSTRAP TOPIC FIRST LAST ORDER BATCH_RECORDS NAME", ORDER one of asc, desc, shuffle:SEED.
#[test]
#[ignore = "run as a child process by the tests of this file"]
fn producer_process() {
    let Ok(spec) = std::env::var(PRODUCER_SPEC) else { return };
    let fields: Vec<&str> = spec.split(' ').collect();
    let [bootstrap, topic, first, last, order, batch, name] = fields[..] else { panic!("bad spec {spec}") };
    let (first, last): (usize, usize) = (first.parse().expect("first"), last.parse().expect("last"));
    let mut ids: Vec<usize> = (first..last).collect();
    match order {
        "asc" => {}
        "desc" => ids.reverse(),
        shuffle => {
            let mut state: u64 = shuffle.trim_start_matches("shuffle:").parse().expect("seed");
            for index in (1..ids.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ids.swap(index, (state >> 33) as usize % (index + 1));
            }
        }
    }
    let producer = producer(bootstrap, batch.parse().expect("batch"));
    for (number, id) in ids.iter().enumerate() {
        send_with_id(&producer, topic, number, &format!("id-{id}"), &format!("{name}-{id}"));
        if number % 200 == 199 {
            // Paced, so a broker kill lands while both producers are still sending.
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    flush_all(&producer, ids.len());
}

/// Starts a producer process (this test binary, running `producer_process`).
fn spawn_producer(spec: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["producer_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(PRODUCER_SPEC, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn a producer process")
}

fn wait_success(mut child: std::process::Child, what: &str) {
    let status = child.wait().expect("wait");
    assert!(status.success(), "{what} failed: {status}");
}

#[test]
fn two_producer_processes_through_a_kill_9_and_a_resend_store_each_id_once() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "orders", 3, &["dedup.source=header:msg-id"]);
    // Overlapping ranges, opposite orders, different batchings, different producer ids.
    let mut first = spawn_producer(&format!("{bootstrap} orders 0 15000 asc 500 a"));
    let mut second = spawn_producer(&format!("{bootstrap} orders 5000 20000 desc 37 b"));
    eventually(Duration::from_secs(60), "a quarter of the records stored", || {
        end_offsets(&bootstrap, "orders", 3, Isolation::ReadUncommitted).iter().sum::<i64>() >= 7_500
    });
    broker.kill9();
    // Every record sent takes an offset, dropped ones too (as gaps): fewer than 30,000 means mid-stream.
    let running = [first.try_wait().expect("wait"), second.try_wait().expect("wait")];
    assert_eq!(running, [None, None], "both producers were still sending at the kill");
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
    let stored_at_kill: i64 = end_offsets(&bootstrap, "orders", 3, Isolation::ReadUncommitted).iter().sum();
    assert!(stored_at_kill < 30_000, "the kill landed mid-stream: {stored_at_kill} offsets");
    wait_success(first, "producer a");
    wait_success(second, "producer b");
    assert!(broker.log().contains("dedup index rebuilt"), "the restart rebuilt the index");
    // One more process resends every id, shuffled, after the crash.
    wait_success(spawn_producer(&format!("{bootstrap} orders 0 20000 shuffle:7 100 c")), "producer c");

    let records = read_to_end(&bootstrap, "orders", 3, Isolation::ReadUncommitted);
    assert_each_id_once(&records, (0..20_000).map(|id| format!("id-{id}")));
    let by_partition = records.iter().fold([0usize; 3], |mut counts, record| {
        counts[record.partition as usize] += 1;
        counts
    });
    assert!(by_partition.iter().all(|count| *count > 1_000), "null keys spread over partitions: {by_partition:?}");

    // A clean restart (the index from its shutdown snapshot), with the metrics endpoint: a fourth
    // process resends everything; all of it is dropped and counted.
    assert!(broker.terminate(), "clean shutdown");
    let port = free_port();
    broker.extra_args = vec!["--metrics-listen".into(), format!("127.0.0.1:{port}")];
    broker.restart();
    // From the snapshot, under the key it keeps: a new topic's ids are hashed with keyed SipHash.
    let log = broker.log();
    let rebuilt = log.lines().rfind(|line| line.contains("dedup index rebuilt")).expect("a rebuild line");
    assert!(
        rebuilt.contains("from_snapshot=true") && rebuilt.contains("id_hash=\"siphash-2-4\""),
        "loaded from its snapshot with its keyed hash: {rebuilt}"
    );
    wait_success(spawn_producer(&format!("{bootstrap} orders 0 20000 asc 1000 d")), "producer d");
    let dropped: u64 = scrape(port)
        .lines()
        .filter(|line| line.starts_with("once_dedup_duplicates_dropped_total{topic=\"orders\""))
        .map(|line| line.rsplit(' ').next().and_then(|value| value.parse::<u64>().ok()).expect("a counter value"))
        .sum();
    assert_eq!(dropped, 20_000, "every resent record dropped and counted since the restart");
    let records = read_to_end(&bootstrap, "orders", 3, Isolation::ReadUncommitted);
    assert_each_id_once(&records, (0..20_000).map(|id| format!("id-{id}")));
}

/// `GET /metrics` from the broker's metrics endpoint.
fn scrape(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    response
}

#[test]
fn ids_expire_with_a_short_window() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "short", 1, &["dedup.source=header:msg-id", "dedup.window.ms=1500"]);
    let producer = producer(&bootstrap, 100);
    for (number, value) in ["first", "inside-the-window"].iter().enumerate() {
        send_with_id(&producer, "short", number, "the-id", value);
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
    // The window runs from the batch's timestamp, rounded up to the second: at most 2.5 s here.
    std::thread::sleep(Duration::from_millis(3_000));
    send_with_id(&producer, "short", 2, "the-id", "after-the-window");
    flush_all(&producer, 3);
    let values: Vec<String> = read_to_end(&bootstrap, "short", 1, Isolation::ReadUncommitted)
        .into_iter()
        .map(|record| record.value)
        .collect();
    assert_eq!(values, vec!["first", "after-the-window"], "a resend after the window is stored again");
}

#[test]
fn an_aborted_transactions_ids_can_be_sent_again() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "txn-dedup", 2, &["dedup.source=key"]);
    let transactional = transactional_producer(&bootstrap, "dedup-aborter", 60_000);
    transactional.begin_transaction().expect("begin");
    for number in 0..50 {
        support::txn::send(&transactional, "txn-dedup", number % 2, &format!("key-{number}"));
    }
    transactional.flush(Duration::from_secs(30)).expect("flush");
    transactional.abort_transaction(Duration::from_secs(30)).expect("abort");
    // The same ids again, through the other partition, in a committed transaction.
    transactional.begin_transaction().expect("begin");
    for number in 0..50 {
        support::txn::send(&transactional, "txn-dedup", (number + 1) % 2, &format!("key-{number}"));
    }
    transactional.commit_transaction(Duration::from_secs(30)).expect("commit");
    let committed = read_to_end(&bootstrap, "txn-dedup", 2, Isolation::ReadCommitted);
    let keys: Vec<String> = committed.iter().filter_map(|record| record.key.clone()).collect();
    assert_eq!(keys.len(), 50, "every aborted id is stored again, once");
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), 50);
    let uncommitted = read_to_end(&bootstrap, "txn-dedup", 2, Isolation::ReadUncommitted);
    assert_eq!(uncommitted.len(), 100, "the aborted records stay in the log, skipped by read_committed");
}

/// While a transaction holds ids, an idempotent producer sending the same ids is refused retriably
/// (and retries); once the transaction ends its records are duplicates (commit) or stored (abort).
#[test]
fn an_open_transaction_holds_its_ids_until_it_commits_or_aborts() {
    let port = free_port();
    let metrics_listen = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::start(&["--metrics-listen", &metrics_listen]);
    let bootstrap = broker.bootstrap();
    for (topic, commit) in [("held-commit", true), ("held-abort", false)] {
        create_topic(&bootstrap, topic, 2, &["dedup.source=key"]);
        let transactional = transactional_producer(&bootstrap, &format!("holder-{topic}"), 60_000);
        transactional.begin_transaction().expect("begin");
        for number in 0..20 {
            support::txn::send(&transactional, topic, number % 2, &format!("key-{number}"));
        }
        transactional.flush(Duration::from_secs(30)).expect("the transaction's records are written");
        let racing = {
            let bootstrap = bootstrap.clone();
            let topic = topic.to_string();
            std::thread::spawn(move || {
                let producer = producer(&bootstrap, 100);
                for number in 0..20usize {
                    let key = format!("key-{number}");
                    let mut record = BaseRecord::with_opaque_to(&topic, Box::new(number)).key(&key).payload("racer");
                    record = record.partition(((number + 1) % 2) as i32);
                    producer.send(record).map_err(|(error, _)| error).expect("queue");
                }
                flush_all(&producer, 20)
            })
        };
        eventually(Duration::from_secs(30), "the racing producer's batches are refused while held", || {
            scrape(port).lines().any(|line| {
                line.starts_with(&format!("once_dedup_refused_batches_total{{topic=\"{topic}\""))
                    && !line.ends_with(" 0")
            })
        });
        assert!(!racing.is_finished(), "the racer waits for the transaction");
        match commit {
            true => transactional.commit_transaction(Duration::from_secs(30)).expect("commit"),
            false => transactional.abort_transaction(Duration::from_secs(30)).expect("abort"),
        }
        let reports = racing.join().expect("racer");
        assert_eq!(reports.len(), 20, "every racing record acknowledged once the transaction ended");
        let committed = read_to_end(&bootstrap, topic, 2, Isolation::ReadCommitted);
        let values: Vec<&str> = committed.iter().map(|record| record.value.as_str()).collect();
        let keys: std::collections::BTreeSet<_> = committed.iter().filter_map(|record| record.key.clone()).collect();
        assert_eq!((committed.len(), keys.len()), (20, 20), "{topic}: each id once, no duplicate, no loss");
        let expected = if commit { "key-" } else { "racer" };
        assert!(values.iter().all(|value| value.starts_with(expected)), "{topic}: {values:?}");
    }
}

#[test]
fn every_source_mode_works_and_none_stores_duplicates() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let modes = [("mode-none", "none"), ("mode-key", "key"), ("mode-content", "content"), ("mode-header", "header:id")];
    for (topic, source) in modes {
        create_topic(&bootstrap, topic, 2, &[&format!("dedup.source={source}")]);
    }
    let producer = producer(&bootstrap, 10);
    // Two rounds of 30 records; in round 2 only the field a mode reads repeats round 1's, the rest
    // differs. Record 29 has no id in any mode (null key, null value, no header): never dropped.
    let mut sent = 0;
    for round in 0..2 {
        for (topic, source) in modes {
            for number in 0..30usize {
                let repeated = format!("same-{number}");
                let fresh = format!("round-{round}-{number}");
                let pick = |field: &str| if source.starts_with(field) { repeated.clone() } else { fresh.clone() };
                let (key, value, header) = (pick("key"), pick("content"), pick("header"));
                let mut record = BaseRecord::with_opaque_to(topic, Box::new(sent)).partition((number % 2) as i32);
                if number < 29 {
                    record = record
                        .key(&key)
                        .payload(&value)
                        .headers(OwnedHeaders::new().insert(Header { key: "id", value: Some(header.as_str()) }));
                }
                producer.send::<String, String>(record).map_err(|(error, _)| error).expect("queue");
                sent += 1;
            }
        }
    }
    flush_all(&producer, sent);
    for (topic, source) in modes {
        let stored = read_to_end(&bootstrap, topic, 2, Isolation::ReadUncommitted);
        let expected = if source == "none" { 60 } else { 31 };
        assert_eq!(stored.len(), expected, "{topic} ({source})");
    }
}

/// Sends `keys` (key = value) as one batch to partition 0 and returns librdkafka's delivery offsets.
fn send_batch(producer: &ThreadedProducer<Deliveries>, topic: &str, keys: &[&str]) -> Vec<i64> {
    producer.context().0.lock().expect("lock").clear();
    for (number, key) in keys.iter().enumerate() {
        let record = BaseRecord::with_opaque_to(topic, Box::new(number)).partition(0).key(*key).payload(*key);
        producer.send::<str, str>(record).map_err(|(error, _)| error).expect("queue");
    }
    let mut reports = flush_all(producer, keys.len());
    reports.sort_by_key(|(number, _, _)| *number);
    reports.into_iter().map(|(_, _, offset)| offset.expect("delivered")).collect()
}

/// librdkafka numbers a batch's records from the answered base offset, so an answer of -1 would
/// give the second record offset 0; Once answers minus the record count instead, so no record of a
/// batch with dropped records reports a real offset.
#[test]
fn librdkafka_delivery_reports_never_show_a_wrong_offset() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "reports", 1, &["dedup.source=key"]);
    let producer: ThreadedProducer<Deliveries> = once_cli::clients::client_config(&bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "200")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let keys: Vec<String> = (0..6).map(|key| format!("k{key}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(send_batch(&producer, "reports", &keys), vec![0, 1, 2, 3, 4, 5], "stored: real offsets");
    assert_eq!(send_batch(&producer, "reports", &keys), vec![0, 1, 2, 3, 4, 5], "all duplicates: the originals");
    let mixed = send_batch(&producer, "reports", &["n0", "k3", "n1", "k1"]);
    assert!(mixed.iter().all(|offset| *offset < 0), "a batch with dropped records: no real offset, {mixed:?}");
    let reordered = send_batch(&producer, "reports", &["k5", "k4"]);
    assert!(reordered.iter().all(|offset| *offset < 0), "originals out of order: no real offset, {reordered:?}");
    let stored = read_to_end(&bootstrap, "reports", 1, Isolation::ReadUncommitted);
    let values: Vec<&str> = stored.iter().map(|record| record.value.as_str()).collect();
    assert_eq!(values, vec!["k0", "k1", "k2", "k3", "k4", "k5", "n0", "n1"]);
    assert_eq!((stored[6].offset, stored[7].offset), (12, 14), "kept records keep their offsets in the batch");
}

/// Sends one raw batch to partition 0; returns (error code, base offset).
fn produce_raw(client: &mut AdminClient, topic: &str, batch: Vec<u8>) -> (i16, i64) {
    let data = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.into()))]);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![data]);
    let response = client.call(&request, 9).expect("produce");
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[test]
fn configs_answers_and_refusals() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["topic", "create", "bad", "--config", "dedup.source=value", "--bootstrap", &bootstrap])
        .output()
        .expect("run once");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("InvalidConfig"), "{refused:?}");
    create_topic(&bootstrap, "answers", 1, &["dedup.source=key", "dedup.window.ms=600000"]);
    let described = once(&["topic", "describe", "answers", "--bootstrap", &bootstrap]);
    assert!(described.contains("dedup.source=key") && described.contains("dedup.window.ms=600000"), "{described}");
    once(&["topic", "alter-config", "answers", "--set", "dedup.window.ms=-1", "--bootstrap", &bootstrap]);
    let changed = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["topic", "alter-config", "answers", "--set", "dedup.source=content", "--bootstrap", &bootstrap])
        .output()
        .expect("run once");
    assert!(!changed.status.success(), "the source cannot change");
    assert!(String::from_utf8_lossy(&changed.stderr).contains("cannot change"), "{changed:?}");
    let described = once(&["topic", "describe", "answers", "--bootstrap", &bootstrap]);
    assert!(described.contains("dedup.window.ms=-1") && described.contains("dedup.source=key"), "{described}");

    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    let batch = |keys: &[&str]| {
        let keys: Vec<&[u8]> = keys.iter().map(|key| key.as_bytes()).collect();
        once_log::testing::make_keyed_batch(-1, -1, -1, 0, &keys, 1_700_000_000_000)
    };
    assert_eq!(produce_raw(&mut client, "answers", batch(&["a", "b", "c"])), (0, 0), "new ids: the base offset");
    assert_eq!(produce_raw(&mut client, "answers", batch(&["a", "b", "c"])), (0, 0), "all duplicates: the originals");
    assert_eq!(produce_raw(&mut client, "answers", batch(&["d", "b"])), (0, -2), "records dropped: -(count)");
    assert_eq!(produce_raw(&mut client, "answers", batch(&["c", "b"])), (0, -2), "originals out of order");
    let compacted = once_log::testing::make_compacted_batch(&[0], 2, 8, 1_700_000_000_000);
    assert_eq!(produce_raw(&mut client, "answers", compacted).0, 87, "clients may not send gaps: INVALID_RECORD");
    let started = Instant::now();
    let stored = read_to_end(&bootstrap, "answers", 1, Isolation::ReadUncommitted);
    let keys: Vec<String> = stored.iter().filter_map(|record| record.key.clone()).collect();
    assert_eq!(keys, vec!["a", "b", "c", "d"], "read in {:?}, past header-only batches", started.elapsed());
}

/// `GET /metrics`, or `None` while the broker is down.
fn try_scrape(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of gauge `name` for topic `topic` in a scrape.
fn gauge(scrape: &str, name: &str, topic: &str) -> Option<u64> {
    let prefix = format!("{name}{{topic=\"{topic}\"}} ");
    scrape.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.parse().ok())
}

/// Scrapes the index's resident bytes every 50 ms until told to stop; returns the largest seen and
/// how many scrapes answered.
fn watch_index_bytes(
    port: u16,
    topic: &'static str,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<(u64, u64)>) {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let watcher = std::thread::spawn(move || {
        let (mut largest, mut scrapes) = (0, 0);
        while stopped.recv_timeout(Duration::from_millis(50)).is_err() {
            if let Some(bytes) = try_scrape(port).and_then(|scrape| gauge(&scrape, "once_dedup_index_bytes", topic)) {
                largest = largest.max(bytes);
                scrapes += 1;
            }
        }
        (largest, scrapes)
    });
    (stop, watcher)
}

#[test]
fn ids_beyond_the_memory_budget_through_a_kill_9_are_stored_once_in_bounded_memory() {
    // 4 MiB holds about 150,000 ids in RAM; the topic gets 600,000 (17 MB at 29 bytes per id).
    const BUDGET: u64 = 4 << 20;
    // What the budget cannot cover: the active chunk (at most 57,344 ids at this size, a 2^16-bucket
    // table of 4-byte positions and 57,344 rows of 32 bytes: 2.2 MB), one sealed chunk waiting for its writer to spill it after the round
    // (1.6 MB), and the filters and fences of the chunks on disk (1.4 bytes per id: 0.85 MB).
    const SLACK: u64 = 5 << 20;
    const IDS: usize = 600_000;
    let metrics_port = free_port();
    let budget = BUDGET.to_string();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut broker = BrokerProcess::start(&["--dedup-memory-bytes", &budget, "--metrics-listen", &metrics]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "big", 2, &["dedup.source=header:msg-id"]);
    let (stop, watcher) = watch_index_bytes(metrics_port, "big");

    // The first 400,000 ids, with a kill -9 when about half are stored; the producer retries through it.
    let first = producer(&bootstrap, 1_000);
    let sender = {
        let first = first.clone();
        std::thread::spawn(move || {
            for number in 0..IDS * 2 / 3 {
                send_with_id(&first, "big", number, &format!("id-{number}"), "v");
            }
        })
    };
    eventually(Duration::from_secs(120), "200,000 records stored", || {
        end_offsets(&bootstrap, "big", 2, Isolation::ReadUncommitted).iter().sum::<i64>() >= 200_000
    });
    broker.kill9();
    let stored_at_kill: i64 = {
        std::thread::sleep(Duration::from_millis(300));
        broker.restart();
        end_offsets(&bootstrap, "big", 2, Isolation::ReadUncommitted).iter().sum()
    };
    assert!(stored_at_kill < (IDS * 2 / 3) as i64, "the kill landed mid-stream: {stored_at_kill} offsets");
    sender.join().expect("sender");
    flush_all(&first, IDS * 2 / 3);
    assert!(broker.log().contains("dedup index rebuilt"), "the restart rebuilt the index");

    // Every id again, the new third included: the old ones are duplicates found on disk.
    let second = producer(&bootstrap, 1_000);
    for number in 0..IDS {
        send_with_id(&second, "big", number, &format!("id-{number}"), "again");
    }
    flush_all(&second, IDS);
    let scrape = try_scrape(metrics_port).expect("metrics");
    stop.send(()).expect("stop the watcher");
    let (largest, scrapes) = watcher.join().expect("watcher");

    let records = read_to_end(&bootstrap, "big", 2, Isolation::ReadUncommitted);
    assert_each_id_once(&records, (0..IDS).map(|number| format!("id-{number}")));
    let stored = gauge(&scrape, "once_dedup_index_ids", "big").expect("ids gauge");
    let on_disk = gauge(&scrape, "once_dedup_index_disk_ids", "big").expect("disk ids gauge");
    let bytes = gauge(&scrape, "once_dedup_index_bytes", "big").expect("bytes gauge");
    println!(
        "index: {stored} ids, {on_disk} on disk, {bytes} bytes now, at most {largest} bytes over {scrapes} scrapes"
    );
    assert_eq!(stored, IDS as u64, "every id stored once in the index");
    assert!(on_disk >= stored * 2 / 3, "{on_disk} of {stored} ids on disk");
    assert!(scrapes > 20, "the index was watched ({scrapes} scrapes)");
    assert!(largest <= BUDGET + SLACK, "the index held {largest} bytes, over {BUDGET} + {SLACK}");
    assert!(bytes <= BUDGET + SLACK, "{bytes} bytes at the end");
    assert!(largest < stored * 29 / 2, "{largest} bytes: far less than all {stored} ids in RAM");
}
