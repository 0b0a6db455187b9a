//! Transactions end to end, with real processes: `once copy` copies exactly once through deliberate
//! aborts, broker kill -9s and a fenced zombie copier; read_committed never sees aborted or open
//! records while read_uncommitted does; a hung transaction is aborted after its timeout and the last
//! stable offset moves on; a commit whose broker died between PrepareCommit and the markers is
//! completed after the restart.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;
use support::txn::{
    committed_offsets, copier_summary, end_offsets, eventually, produce_numbered, read_to_end, send,
    transactional_producer, try_end_offsets, values_by_partition, Isolation, OnceProcess, Record,
};
use support::{once, BrokerProcess};

fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    once(&["topic", "create", name, "--partitions", &partitions.to_string(), "--bootstrap", bootstrap]);
}

/// Output must hold, per partition and in order, exactly the input's records (key, value, headers).
fn assert_copied_exactly_once(input: &[Record], output: &[Record]) {
    // Offsets differ (output offsets include aborted records and markers): compare everything else.
    let contents = |records: &[Record]| -> Vec<Record> {
        records.iter().map(|record| Record { offset: 0, ..record.clone() }).collect()
    };
    let (expected, found) = (contents(input), contents(output));
    if expected != found {
        let first_difference = expected
            .iter()
            .zip(&found)
            .position(|(left, right)| left != right)
            .unwrap_or(expected.len().min(found.len()));
        let mut seen = std::collections::HashMap::new();
        for record in &found {
            *seen.entry(record.value.clone()).or_insert(0) += 1;
        }
        let duplicated = seen.values().filter(|count| **count > 1).count();
        let missing = expected.iter().filter(|record| !seen.contains_key(&record.value)).count();
        panic!(
            "output differs from input: {} input records, {} output records, {missing} input values missing, \
             {duplicated} values duplicated; first difference at index {first_difference}: {:?} vs {:?}",
            expected.len(),
            found.len(),
            expected.get(first_difference),
            found.get(first_difference),
        );
    }
}

#[test]
fn copier_copies_100k_records_exactly_once_through_deliberate_aborts() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "copy-in", 3);
    create_topic(&bootstrap, "copy-out", 3);
    produce_numbered(&bootstrap, "copy-in", 3, 0..100_000, None);

    // Seed 3 aborts the very first transaction (see copy.rs's tests), so aborted records surely exist.
    let mut copier = OnceProcess::copier(
        &bootstrap,
        "copy-in",
        "copy-out",
        "copiers",
        "copier-1",
        &["--commit-interval-ms", "100", "--abort-probability", "0.33", "--seed", "3", "--exit-when-idle-ms", "2000"],
    );
    let status = copier.wait(Duration::from_secs(240));
    assert!(status.success(), "the copier exits 0 when idle; log:\n{}", copier.log());
    let (copied, committed, aborted) = copier_summary(&copier.log());
    assert_eq!(copied, 100_000, "every record copied once in committed transactions: {}", copier.log());
    assert!(committed >= 1 && aborted >= 1, "both commits and aborts happened: {committed} / {aborted}");

    let input = read_to_end(&bootstrap, "copy-in", 3, Isolation::ReadCommitted);
    assert_eq!(input.len(), 100_000);
    let output = read_to_end(&bootstrap, "copy-out", 3, Isolation::ReadCommitted);
    assert_copied_exactly_once(&input, &output);
    let uncommitted = read_to_end(&bootstrap, "copy-out", 3, Isolation::ReadUncommitted);
    assert!(
        uncommitted.len() > output.len(),
        "aborted transactions did write records ({} in the log), read_committed hid them ({} visible)",
        uncommitted.len(),
        output.len()
    );
    let input_ends = end_offsets(&bootstrap, "copy-in", 3, Isolation::ReadUncommitted);
    assert_eq!(
        committed_offsets(&bootstrap, "copiers", "copy-in", 3).expect("committed offsets"),
        input_ends,
        "the group's offsets, committed in the transactions, reach the end of the input"
    );
    let output_ends = end_offsets(&bootstrap, "copy-out", 3, Isolation::ReadUncommitted);
    assert_eq!(
        end_offsets(&bootstrap, "copy-out", 3, Isolation::ReadCommitted),
        output_ends,
        "no transaction is left open: the last stable offset is the high watermark"
    );
}

#[test]
fn copier_without_transactions_copies_everything_and_commits_offsets() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "plain-in", 3);
    create_topic(&bootstrap, "plain-out", 3);
    produce_numbered(&bootstrap, "plain-in", 3, 0..20_000, None);
    let args: Vec<String> = [
        "copy",
        "--bootstrap",
        &bootstrap,
        "--from",
        "plain-in",
        "--to",
        "plain-out",
        "--group",
        "plain-copiers",
        "--no-transactions",
        "--exit-when-idle-ms",
        "1000",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    let mut copier = OnceProcess::spawn(&args, &[]);
    let status = copier.wait(Duration::from_secs(120));
    assert!(status.success(), "log:\n{}", copier.log());
    assert!(copier.log().contains("20000 records copied (at least once)"), "{}", copier.log());
    // No fault, so at-least-once delivered exactly once: same records, same partitions, same order.
    let input = read_to_end(&bootstrap, "plain-in", 3, Isolation::ReadUncommitted);
    let output = read_to_end(&bootstrap, "plain-out", 3, Isolation::ReadUncommitted);
    assert_copied_exactly_once(&input, &output);
    assert_eq!(
        committed_offsets(&bootstrap, "plain-copiers", "plain-in", 3).expect("committed offsets"),
        end_offsets(&bootstrap, "plain-in", 3, Isolation::ReadUncommitted),
        "offsets committed up to the end of the input"
    );
}

fn restart_after_kill9(broker: &mut BrokerProcess) {
    broker.kill9();
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
}

#[test]
fn copier_stays_exactly_once_through_broker_kills_and_a_fenced_zombie() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "chaos-in", 3);
    create_topic(&bootstrap, "chaos-out", 3);
    let records = 60_000;
    // The input arrives over ~20 s while the faults land, so every fault hits a copy in progress.
    let producer = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || {
            produce_numbered(&bootstrap, "chaos-in", 3, 0..records, Some((600, Duration::from_millis(200))))
        })
    };
    let copier = |seed: &str| {
        OnceProcess::copier(
            &bootstrap,
            "chaos-in",
            "chaos-out",
            "chaos-copiers",
            "chaos-copier",
            &["--commit-interval-ms", "100", "--abort-probability", "0.33", "--seed", seed],
        )
    };
    let mut first = copier("11");
    std::thread::sleep(Duration::from_secs(3));
    restart_after_kill9(&mut broker);
    std::thread::sleep(Duration::from_secs(3));
    assert!(first.exit_status().is_none(), "the first copier survived the broker's kill -9; log:\n{}", first.log());
    first.kill9();
    let mut second = copier("12");
    std::thread::sleep(Duration::from_secs(3));
    restart_after_kill9(&mut broker);
    std::thread::sleep(Duration::from_secs(3));
    // A zombie: the second copier freezes, a third takes over (fencing it), then the second wakes up.
    second.signal("STOP");
    let mut third = copier("13");
    std::thread::sleep(Duration::from_secs(4));
    second.signal("CONT");
    std::thread::sleep(Duration::from_secs(2));
    restart_after_kill9(&mut broker);
    producer.join().expect("input producer");

    let zombie = second.wait(Duration::from_secs(180));
    assert!(!zombie.success(), "the fenced zombie exits non-zero; log:\n{}", second.log());
    assert!(second.log().contains("fenced"), "the zombie says it was fenced; log:\n{}", second.log());
    let input_ends = end_offsets(&bootstrap, "chaos-in", 3, Isolation::ReadUncommitted);
    assert_eq!(input_ends.iter().sum::<i64>(), records as i64, "the input holds every record once");
    eventually(Duration::from_secs(180), "the third copier commits offsets up to the end of the input", || {
        committed_offsets(&bootstrap, "chaos-copiers", "chaos-in", 3).is_ok_and(|offsets| offsets == input_ends)
    });
    assert!(third.exit_status().is_none(), "the third copier is still running; log:\n{}", third.log());
    // Caught up, so no transaction is open: killing it now leaves nothing to abort.
    third.kill9();

    let input = read_to_end(&bootstrap, "chaos-in", 3, Isolation::ReadCommitted);
    let output = read_to_end(&bootstrap, "chaos-out", 3, Isolation::ReadCommitted);
    assert_copied_exactly_once(&input, &output);
}

#[test]
fn read_committed_never_sees_aborted_or_open_records_and_read_uncommitted_does() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "iso", 3);
    let producer = transactional_producer(&bootstrap, "iso-producer", 60_000);
    let batch = |tag: &str| -> Vec<String> {
        producer.begin_transaction().expect("begin");
        let values: Vec<String> = (0..30).map(|number| format!("{tag}-{number}")).collect();
        for (number, value) in values.iter().enumerate() {
            send(&producer, "iso", (number % 3) as i32, value);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        values
    };
    let first = batch("committed-1");
    producer.commit_transaction(Duration::from_secs(30)).expect("commit");
    let aborted = batch("aborted");
    producer.abort_transaction(Duration::from_secs(30)).expect("abort");
    let second = batch("committed-2");
    producer.commit_transaction(Duration::from_secs(30)).expect("commit");
    let open = batch("open");
    let sorted = |values: Vec<String>| {
        let mut values = values;
        values.sort();
        values
    };

    let committed_view = read_to_end(&bootstrap, "iso", 3, Isolation::ReadCommitted);
    let committed_values = sorted(committed_view.iter().map(|record| record.value.clone()).collect());
    assert_eq!(committed_values, sorted([first.clone(), second.clone()].concat()), "read_committed: commits only");
    let uncommitted_values = sorted(
        read_to_end(&bootstrap, "iso", 3, Isolation::ReadUncommitted)
            .iter()
            .map(|record| record.value.clone())
            .collect(),
    );
    assert_eq!(
        uncommitted_values,
        sorted([first.clone(), aborted, second.clone(), open.clone()].concat()),
        "read_uncommitted: aborted and open records too"
    );
    let stable = end_offsets(&bootstrap, "iso", 3, Isolation::ReadCommitted);
    let high = end_offsets(&bootstrap, "iso", 3, Isolation::ReadUncommitted);
    for partition in 0..3 {
        // Per partition: 10 + marker, 10 + marker, 10 + marker, then the open transaction's 10.
        assert_eq!(stable[partition], 33, "partition {partition}: the LSO is the open transaction's first offset");
        assert_eq!(high[partition], 43, "partition {partition}: the high watermark is past the open records");
    }

    producer.commit_transaction(Duration::from_secs(30)).expect("commit the open transaction");
    eventually(Duration::from_secs(30), "the last stable offset reaches the high watermark", || {
        try_end_offsets(&bootstrap, "iso", 3, Isolation::ReadCommitted).is_ok_and(|stable| stable == vec![44; 3])
    });
    let after = read_to_end(&bootstrap, "iso", 3, Isolation::ReadCommitted);
    let after_values = sorted(after.iter().map(|record| record.value.clone()).collect());
    assert_eq!(after_values, sorted([first, second, open].concat()), "the committed open transaction appears");
    for (partition, values) in values_by_partition(&after) {
        assert!(values.iter().all(|value| !value.starts_with("aborted")), "partition {partition}: {values:?}");
    }
}

#[test]
fn hung_transaction_is_aborted_after_its_timeout_and_the_last_stable_offset_moves_on() {
    let broker = BrokerProcess::start(&["--transaction-abort-check-interval-ms", "500"]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "hang", 1);
    let hung = transactional_producer(&bootstrap, "hung-producer", 3000);
    hung.begin_transaction().expect("begin");
    let began = Instant::now();
    for number in 0..5 {
        send(&hung, "hang", 0, &format!("hung-{number}"));
    }
    hung.flush(Duration::from_secs(30)).expect("the hung transaction's records are written");
    // From here the hung producer calls nothing: only the broker's timeout can end its transaction.
    let other = transactional_producer(&bootstrap, "other-producer", 60_000);
    other.begin_transaction().expect("begin");
    for number in 0..5 {
        send(&other, "hang", 0, &format!("other-{number}"));
    }
    other.commit_transaction(Duration::from_secs(30)).expect("commit");
    let stable = end_offsets(&bootstrap, "hang", 1, Isolation::ReadCommitted)[0];
    let high = end_offsets(&bootstrap, "hang", 1, Isolation::ReadUncommitted)[0];
    let visible = read_to_end(&bootstrap, "hang", 1, Isolation::ReadCommitted);
    // The timeout runs from the hung transaction's first AddPartitionsToTxn, after `began`: readings
    // finished within 2.9 s of it were taken while the transaction was surely still open.
    if began.elapsed() < Duration::from_millis(2900) {
        assert_eq!(stable, 0, "the hung transaction pins the last stable offset at its first record");
        assert!(high >= 11, "five hung, five committed records and a marker: {high}");
        assert!(visible.is_empty(), "nothing past the open transaction is visible yet: {visible:?}");
    } else {
        eprintln!("slow machine: the readings before the timeout came too late to check");
    }

    eventually(Duration::from_secs(30), "the broker aborts the hung transaction after its 3 s timeout", || {
        let stable = try_end_offsets(&bootstrap, "hang", 1, Isolation::ReadCommitted);
        let high = try_end_offsets(&bootstrap, "hang", 1, Isolation::ReadUncommitted);
        matches!((stable, high), (Ok(stable), Ok(high)) if stable == high && high[0] >= 12)
    });
    assert!(began.elapsed() >= Duration::from_millis(2900), "not aborted before its timeout: {:?}", began.elapsed());
    let visible: Vec<String> =
        read_to_end(&bootstrap, "hang", 1, Isolation::ReadCommitted).into_iter().map(|record| record.value).collect();
    assert_eq!(visible, (0..5).map(|number| format!("other-{number}")).collect::<Vec<_>>(), "only the committed");
    assert!(
        hung.commit_transaction(Duration::from_secs(10)).is_err(),
        "the timed-out transaction can no longer commit: its producer was fenced"
    );
    let visible = read_to_end(&bootstrap, "hang", 1, Isolation::ReadCommitted);
    assert!(visible.iter().all(|record| !record.value.starts_with("hung")), "hung records never appear");
}

#[test]
fn commit_interrupted_between_prepare_commit_and_markers_completes_after_restart() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    assert!(broker.terminate(), "clean stop before the restart with the crash hook");
    let mut hooked = OnceProcess::broker(&broker, &[("ONCE_TEST_CRASH_POINT", "txn-after-prepare-commit")]);
    create_topic(&bootstrap, "crash", 3);
    let producer = transactional_producer(&bootstrap, "crash-producer", 60_000);
    producer.begin_transaction().expect("begin");
    let values: Vec<String> = (0..30).map(|number| format!("crash-{number}")).collect();
    for (number, value) in values.iter().enumerate() {
        send(&producer, "crash", (number % 3) as i32, value);
    }
    producer.flush(Duration::from_secs(30)).expect("the transaction's records are written");
    // The broker dies once PrepareCommit is durable: the commit may fail or time out; either is fine.
    let _ = producer.commit_transaction(Duration::from_secs(5));
    let status = hooked.wait(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(9), "the crash hook killed the broker with SIGKILL; log:\n{}", hooked.log());
    // The client gives up; only the broker can finish the commit.
    drop(producer);

    broker.restart();
    eventually(Duration::from_secs(30), "the restarted broker writes the commit markers", || {
        let stable = try_end_offsets(&bootstrap, "crash", 3, Isolation::ReadCommitted);
        let high = try_end_offsets(&bootstrap, "crash", 3, Isolation::ReadUncommitted);
        matches!((stable, high), (Ok(stable), Ok(high)) if stable == high && high == vec![11; 3])
    });
    let visible = read_to_end(&bootstrap, "crash", 3, Isolation::ReadCommitted);
    for (partition, found) in values_by_partition(&visible) {
        let expected: Vec<String> = values
            .iter()
            .enumerate()
            .filter(|(number, _)| number % 3 == partition as usize)
            .map(|(_, value)| value.clone())
            .collect();
        assert_eq!(found, expected, "partition {partition} holds the committed transaction's records");
    }
    assert_eq!(visible.len(), values.len(), "every record of the transaction, on every partition");
}

// The copier's handling of librdkafka's transaction errors, checked today against librdkafka's own
// mock cluster (in this process; the copier is a real process talking to it over TCP). The mock has
// no read_committed semantics, so these check the copier's decisions, not exactly-once output.

fn mock_with_input(
    records: usize,
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    mock.create_topic("mock-in", 3, 1).expect("create input");
    mock.create_topic("mock-out", 3, 1).expect("create output");
    produce_numbered(&mock.bootstrap_servers(), "mock-in", 3, 0..records, None);
    mock
}

#[test]
fn copier_aborts_and_rewinds_after_an_abortable_error() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = mock_with_input(20_000);
    // ILLEGAL_GENERATION on TxnOffsetCommit makes librdkafka's transaction abortable; a
    // COORDINATOR_NOT_AVAILABLE on EndTxn is retried.
    mock.request_errors(RDKafkaApiKey::TxnOffsetCommit, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION]);
    mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE]);
    let mut copier = OnceProcess::copier(
        &mock.bootstrap_servers(),
        "mock-in",
        "mock-out",
        "mock-copiers",
        "mock-copier",
        &["--exit-when-idle-ms", "2000"],
    );
    let status = copier.wait(Duration::from_secs(120));
    assert!(status.success(), "an abortable error is not fatal; log:\n{}", copier.log());
    let (copied, committed, aborted) = copier_summary(&copier.log());
    assert_eq!(aborted, 1, "one transaction aborted, after the error; log:\n{}", copier.log());
    assert!(committed >= 1);
    assert_eq!(copied, 20_000, "the aborted records were read again and copied once; log:\n{}", copier.log());
    assert!(copier.log().contains("1 after errors"), "{}", copier.log());
}

#[test]
fn copier_exits_non_zero_when_fenced() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = mock_with_input(1_000);
    mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let mut copier = OnceProcess::copier(
        &mock.bootstrap_servers(),
        "mock-in",
        "mock-out",
        "mock-copiers",
        "mock-copier",
        &["--exit-when-idle-ms", "2000"],
    );
    let status = copier.wait(Duration::from_secs(120));
    assert!(!status.success(), "fenced is fatal; log:\n{}", copier.log());
    assert!(copier.log().contains("once: fenced: a newer producer"), "says why; log:\n{}", copier.log());
    let (copied, committed, _) = copier_summary(&copier.log());
    assert_eq!((copied, committed), (0, 0), "nothing was committed");
}
