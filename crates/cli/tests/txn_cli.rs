//! `once txn` against a real broker: an open transaction is listed as Ongoing and described; aborting
//! it by transactional id fences its producer and lets read_committed consumers move past it; a
//! partition-level abort (WriteTxnMarkers) ends a transaction at one partition.

mod support;

use std::time::Duration;

use rdkafka::producer::Producer;
use support::txn::{end_offsets, eventually, read_to_end, send, transactional_producer, try_end_offsets, Isolation};
use support::{once, BrokerProcess};

/// The row of `once txn list` for `transactional_id`, split at tabs.
fn listed(bootstrap: &str, transactional_id: &str, states: &[&str]) -> Option<Vec<String>> {
    let mut args = vec!["txn", "list", "--bootstrap", bootstrap];
    for state in states {
        args.extend(["--state", state]);
    }
    let output = once(&args);
    assert!(output.starts_with("TRANSACTIONAL ID\tPRODUCER ID\tSTATE"), "a header line first: {output}");
    output
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect::<Vec<_>>())
        .find(|row| row.first().is_some_and(|id| id == transactional_id))
}

/// The value of `name: value` in `once txn describe` output.
fn field(described: &str, name: &str) -> String {
    described
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no '{name}' in:\n{described}"))
        .to_string()
}

#[test]
fn txn_list_shows_an_open_transaction_and_abort_by_transactional_id_ends_it() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "cli-txn", "--partitions", "1", "--bootstrap", &bootstrap]);
    let stuck = transactional_producer(&bootstrap, "stuck-producer", 600_000);
    stuck.begin_transaction().expect("begin");
    for number in 0..3 {
        send(&stuck, "cli-txn", 0, &format!("stuck-{number}"));
    }
    stuck.flush(Duration::from_secs(30)).expect("flush");
    let other = transactional_producer(&bootstrap, "other-producer", 60_000);
    other.begin_transaction().expect("begin");
    send(&other, "cli-txn", 0, "after-the-stuck-one");
    other.commit_transaction(Duration::from_secs(30)).expect("commit");

    let row = listed(&bootstrap, "stuck-producer", &[]).expect("the open transaction is listed");
    assert_eq!(row[2], "Ongoing", "{row:?}");
    assert!(row[1].parse::<i64>().is_ok_and(|id| id >= 0), "a producer id: {row:?}");
    assert!(listed(&bootstrap, "stuck-producer", &["Ongoing"]).is_some(), "the state filter keeps it");
    assert!(listed(&bootstrap, "stuck-producer", &["CompleteCommit"]).is_none(), "the state filter drops it");
    let described = once(&["txn", "describe", "--transactional-id", "stuck-producer", "--bootstrap", &bootstrap]);
    assert_eq!(field(&described, "state"), "Ongoing");
    assert_eq!(field(&described, "producer id"), row[1]);
    assert_eq!(field(&described, "transaction timeout ms"), "600000");
    assert_eq!(field(&described, "partitions"), "cli-txn-0");
    assert_ne!(field(&described, "transaction start time"), "-");
    let producers =
        once(&["txn", "describe-producers", "--topic", "cli-txn", "--partition", "0", "--bootstrap", &bootstrap]);
    let stuck_row = producers
        .lines()
        .find(|line| line.starts_with(&format!("{}\t", row[1])))
        .unwrap_or_else(|| panic!("the stuck producer has state on the partition:\n{producers}"));
    assert!(stuck_row.ends_with("\t0"), "its open transaction starts at offset 0: {stuck_row}");
    assert_eq!(end_offsets(&bootstrap, "cli-txn", 1, Isolation::ReadCommitted), vec![0], "it pins the LSO");

    let aborted = once(&["txn", "abort", "--transactional-id", "stuck-producer", "--bootstrap", &bootstrap]);
    assert!(aborted.contains("Ongoing transaction"), "says what it aborted: {aborted}");
    let row = listed(&bootstrap, "stuck-producer", &[]).expect("still listed");
    assert_ne!(row[2], "Ongoing", "no longer open: {row:?}");
    let described = once(&["txn", "describe", "--transactional-id", "stuck-producer", "--bootstrap", &bootstrap]);
    assert_ne!(field(&described, "state"), "Ongoing");
    eventually(Duration::from_secs(30), "the last stable offset reaches the high watermark", || {
        let stable = try_end_offsets(&bootstrap, "cli-txn", 1, Isolation::ReadCommitted);
        let high = try_end_offsets(&bootstrap, "cli-txn", 1, Isolation::ReadUncommitted);
        matches!((stable, high), (Ok(stable), Ok(high)) if stable == high)
    });
    let visible: Vec<String> = read_to_end(&bootstrap, "cli-txn", 1, Isolation::ReadCommitted)
        .into_iter()
        .map(|record| record.value)
        .collect();
    assert_eq!(visible, vec!["after-the-stuck-one".to_string()], "read_committed moves past the aborted records");
    assert!(stuck.commit_transaction(Duration::from_secs(10)).is_err(), "the fenced producer cannot commit");
}

#[test]
fn partition_level_abort_ends_a_hanging_transaction() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "hanging", "--partitions", "1", "--bootstrap", &bootstrap]);
    let hanging = transactional_producer(&bootstrap, "hanging-producer", 600_000);
    hanging.begin_transaction().expect("begin");
    for number in 0..3 {
        send(&hanging, "hanging", 0, &format!("hanging-{number}"));
    }
    hanging.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(end_offsets(&bootstrap, "hanging", 1, Isolation::ReadCommitted), vec![0]);

    let producers =
        once(&["txn", "describe-producers", "--topic", "hanging", "--partition", "0", "--bootstrap", &bootstrap]);
    let row: Vec<&str> = producers
        .lines()
        .skip(2)
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|row| row.last() == Some(&"0"))
        .unwrap_or_else(|| panic!("a producer with an open transaction at offset 0:\n{producers}"));
    let (producer_id, producer_epoch) = (row[0], row[1]);
    let output = once(&[
        "txn",
        "abort",
        "--topic",
        "hanging",
        "--partition",
        "0",
        "--producer-id",
        producer_id,
        "--producer-epoch",
        producer_epoch,
        "--bootstrap",
        &bootstrap,
    ]);
    assert!(output.contains("aborted the transaction"), "{output}");
    assert_eq!(
        end_offsets(&bootstrap, "hanging", 1, Isolation::ReadCommitted),
        vec![4],
        "the abort marker (offset 3) ends the transaction at the partition: the LSO is the high watermark"
    );
    assert!(read_to_end(&bootstrap, "hanging", 1, Isolation::ReadCommitted).is_empty(), "the records stay hidden");
    assert_eq!(read_to_end(&bootstrap, "hanging", 1, Isolation::ReadUncommitted).len(), 3, "but are in the log");
}
