//! `once sink` against a real broker and a SQLite file: killed with SIGKILL mid-run and
//! restarted, every record is applied exactly once and the stored positions count them; a poison
//! record stops its partition (naming topic, partition, offset and the SQL error) while the others
//! go on, or goes to the dead-letter table with `--dead-letter`; `--status` shows positions and
//! lag; SIGTERM exits 0.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{once, produce_keyed_lines, wait_until, BrokerProcess};

const INSERT: &str = "INSERT INTO charges(order_id, amount, part, off) VALUES (:key, json_extract(:value_text, '$.amount'), :partition, :offset)";

fn spawn_sink(broker: &BrokerProcess, database: &Path, topic: &str, batch_records: &str, log: &Path) -> Child {
    spawn_sink_with(broker, database, &["--topic", topic, "--batch-records", batch_records], log)
}

fn spawn_sink_with(broker: &BrokerProcess, database: &Path, args: &[&str], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open sink log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["sink", "--bootstrap", &broker.bootstrap(), "--group", "billing"])
        .args(args)
        .arg("--database")
        .arg(format!("sqlite://{}", database.display()))
        .args(["--sql", INSERT])
        .env("ONCE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once sink")
}

fn create_charges(database: &Path) {
    let connection = rusqlite::Connection::open(database).expect("open database");
    connection
        .execute_batch(
            "CREATE TABLE charges(order_id BLOB, amount INTEGER CHECK (amount >= 0), part INTEGER, off INTEGER)",
        )
        .expect("create charges");
}

/// (rows, distinct (partition, offset) pairs, sum of amounts, sum of the stored positions).
fn tally(database: &Path) -> (i64, i64, i64, i64) {
    let connection = rusqlite::Connection::open(database).expect("open database");
    connection.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let positions: i64 = connection
        .query_row("SELECT COALESCE(SUM(next_offset), 0) FROM once_sink_offsets WHERE sink = 'billing'", [], |row| {
            row.get(0)
        })
        .unwrap_or(0);
    connection
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT part || '/' || off), COALESCE(SUM(amount), 0) FROM charges",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, positions)),
        )
        .expect("tally")
}

fn orders(range: std::ops::Range<u64>) -> String {
    range.map(|id| format!("order-{id},{{\"amount\": {id}}}\n")).collect()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("once sink did not exit within 60 s of SIGTERM");
}

#[test]
fn killed_mid_run_and_restarted_every_record_applies_exactly_once() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "orders", "--partitions", "3", "--bootstrap", &bootstrap]);
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("billing.db");
    let log = dir.path().join("sink.log");
    create_charges(&database);
    produce_keyed_lines(&broker, "orders", &orders(0..3000));

    let mut sink = spawn_sink(&broker, &database, "orders", "7", &log);
    wait_until("the first sink to apply some records", Duration::from_secs(60), || tally(&database).0 >= 300);
    sink.kill().expect("SIGKILL the sink");
    sink.wait().expect("reap the sink");
    let (rows, distinct, _, positions) = tally(&database);
    eprintln!("killed the first sink after {rows} of 3000 records");
    assert_eq!(rows, distinct, "no record applied twice before the kill");
    assert_eq!(rows, positions, "the stored positions count exactly the records applied");

    produce_keyed_lines(&broker, "orders", &orders(3000..4000));
    let mut sink = spawn_sink(&broker, &database, "orders", "500", &log);
    let expected_sum: i64 = (0..4000).sum();
    wait_until("the restarted sink to catch up", Duration::from_secs(120), || tally(&database).0 >= 4000);
    let status = terminate(&mut sink);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "SIGTERM ends the sink with 0; log:\n{log_text}");
    assert_eq!(
        tally(&database),
        (4000, 4000, expected_sum, 4000),
        "every record once, positions at the end; log:\n{log_text}"
    );
    // Group offsets follow the database, for lag only: none left once it is caught up and stopped.
    let described = once(&["group", "describe", "billing", "--bootstrap", &bootstrap]);
    let rows: Vec<&str> = described.lines().filter(|line| line.starts_with("orders\t")).collect();
    assert_eq!(rows.len(), 3, "{described}");
    assert!(rows.iter().all(|row| row.ends_with("\t0")), "lag 0 on every partition:\n{described}");
}

/// (rows, sum of amounts) of one topic's charges.
fn topic_tally(database: &Path, topic: &str) -> (i64, i64) {
    let connection = rusqlite::Connection::open(database).expect("open database");
    connection.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    connection
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM charges WHERE order_id LIKE ?1",
            [format!("{topic}-%")],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("tally")
}

fn stored_position(database: &Path, topic: &str) -> Option<i64> {
    let connection = rusqlite::Connection::open(database).expect("open database");
    connection.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    connection
        .query_row(
            "SELECT next_offset FROM once_sink_offsets WHERE sink = 'billing' AND topic = ?1 AND \"partition\" = 0",
            [topic],
            |row| row.get(0),
        )
        .ok()
}

/// Payments 5, -1 (poison: the CHECK refuses it), 7; refunds 1, 2 — each keyed `topic-N`.
fn produce_poison_and_good(broker: &BrokerProcess, bootstrap: &str) {
    once(&["topic", "create", "payments", "--partitions", "1", "--bootstrap", bootstrap]);
    once(&["topic", "create", "refunds", "--partitions", "1", "--bootstrap", bootstrap]);
    produce_keyed_lines(
        broker,
        "payments",
        "payments-a,{\"amount\": 5}\npayments-b,{\"amount\": -1}\npayments-c,{\"amount\": 7}\n",
    );
    produce_keyed_lines(broker, "refunds", "refunds-a,{\"amount\": 1}\nrefunds-b,{\"amount\": 2}\n");
}

#[test]
fn a_poison_record_stops_its_partition_and_the_others_go_on() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("poison.db");
    let log = dir.path().join("sink.log");
    create_charges(&database);
    produce_poison_and_good(&broker, &bootstrap);
    let mut sink = spawn_sink_with(
        &broker,
        &database,
        &["--topic", "payments", "--topic", "refunds", "--batch-records", "10"],
        &log,
    );
    wait_until("the refunds to be applied", Duration::from_secs(60), || topic_tally(&database, "refunds").0 == 2);
    wait_until("payments to stop at the poison record", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("poison record")
    });
    // The stopped partition does not stop the sink: later records of the other topic are applied.
    produce_keyed_lines(&broker, "refunds", "refunds-c,{\"amount\": 3}\n");
    wait_until("a later refund to be applied", Duration::from_secs(60), || topic_tally(&database, "refunds").0 == 3);
    assert!(sink.try_wait().expect("wait").is_none(), "a poison record stops its partition, not the sink");

    // Review of issue 15: a stopped partition must not stay paused when it comes back after a
    // rebalance (librdkafka keeps an application's pause across unassign and assign): a second
    // member joins and leaves, the first gets every partition back and meets the poison record
    // again — it does not stall silently.
    let count = |text: &str, what: &str| text.matches(what).count();
    let revoked_before = count(&std::fs::read_to_string(&log).unwrap_or_default(), "partitions revoked");
    let second_log = dir.path().join("second.log");
    let mut second = spawn_sink_with(
        &broker,
        &database,
        &["--topic", "payments", "--topic", "refunds", "--batch-records", "10"],
        &second_log,
    );
    wait_until("the first sink's partitions to be revoked for the newcomer", Duration::from_secs(60), || {
        count(&std::fs::read_to_string(&log).unwrap_or_default(), "partitions revoked") > revoked_before
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(terminate(&mut second).success(), "the second sink exits 0");
    let poison_after_leave = count(&std::fs::read_to_string(&log).unwrap_or_default(), "poison record:");
    wait_until("the first sink to meet the poison record again", Duration::from_secs(60), || {
        count(&std::fs::read_to_string(&log).unwrap_or_default(), "poison record:") > poison_after_leave
    });
    produce_keyed_lines(&broker, "refunds", "refunds-d,{\"amount\": 4}\n");
    wait_until("refunds to go on after the rebalances", Duration::from_secs(60), || {
        topic_tally(&database, "refunds").0 == 4
    });
    let status = terminate(&mut sink);
    let stderr = std::fs::read_to_string(&log).expect("sink log");
    assert!(status.success(), "SIGTERM exits 0: {stderr}");
    assert!(
        stderr.contains("partition stopped at a poison record: payments/0 at offset 1: CHECK constraint failed"),
        "names topic, partition, offset and the SQL error: {stderr}"
    );
    assert_eq!(topic_tally(&database, "payments"), (1, 5), "the record before the poison one applied, none after");
    assert_eq!(stored_position(&database, "payments"), Some(1), "the position stops at the poison record");
    assert_eq!(topic_tally(&database, "refunds"), (4, 10));
    assert_eq!(stored_position(&database, "refunds"), Some(4));
}

#[test]
fn dead_letter_keeps_the_poison_record_beside_the_effects_and_status_shows_where_the_sink_stands() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("dead.db");
    let log = dir.path().join("sink.log");
    create_charges(&database);
    produce_poison_and_good(&broker, &bootstrap);
    let args = ["--topic", "payments", "--topic", "refunds", "--batch-records", "10", "--dead-letter"];
    let mut sink = spawn_sink_with(&broker, &database, &args, &log);
    wait_until("every good record to be applied", Duration::from_secs(60), || {
        topic_tally(&database, "payments").0 == 2 && topic_tally(&database, "refunds").0 == 2
    });
    wait_until("the positions to pass the poison record", Duration::from_secs(30), || {
        stored_position(&database, "payments") == Some(3)
    });
    let status = terminate(&mut sink);
    let stderr = std::fs::read_to_string(&log).expect("sink log");
    assert!(status.success(), "SIGTERM exits 0: {stderr}");
    assert!(stderr.contains("1 dead letters"), "the summary counts it: {stderr}");
    assert_eq!(topic_tally(&database, "payments"), (2, 12), "5 and 7 applied; -1 not");
    let connection = rusqlite::Connection::open(&database).expect("open database");
    let (offset, value, error): (i64, Vec<u8>, String) = connection
        .query_row(
            "SELECT \"offset\", value, error FROM once_sink_dead_letters WHERE sink = 'billing' AND topic = 'payments'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("one dead letter");
    assert_eq!((offset, value.as_slice()), (1, b"{\"amount\": -1}".as_slice()));
    assert!(error.contains("CHECK constraint failed"), "the dead letter keeps the SQL error: {error}");

    // --status: positions from the database, ends from the broker, lag 0 once caught up.
    produce_keyed_lines(&broker, "refunds", "refunds-c,{\"amount\": 3}\n");
    let status = once(&[
        "sink",
        "--status",
        "--group",
        "billing",
        "--bootstrap",
        &bootstrap,
        "--database",
        &format!("sqlite://{}", database.display()),
    ]);
    let lines: Vec<&str> = status.lines().collect();
    assert!(lines[0].starts_with("sink billing: 2 partitions, 1 offsets behind"), "{status}");
    assert!(lines[0].ends_with("1 dead letters"), "{status}");
    assert!(lines.iter().any(|line| line.starts_with("payments\t0\t3\t3\t0\t0\t1\t")), "{status}");
    assert!(lines.iter().any(|line| line.starts_with("refunds\t0\t2\t3\t1\t0\t0\t")), "{status}");
}

/// Review of issue 15: a stored position the broker cannot serve (here above the log end, as after
/// the topic was re-created) stops the sink with a clear error; it never skips to another offset
/// (with `auto.offset.reset=earliest` it re-applied from 0 and dropped the records below the row).
#[test]
fn a_stored_position_the_broker_cannot_serve_stops_the_sink() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "refunds", "--partitions", "1", "--bootstrap", &bootstrap]);
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("refunds.db");
    let log = dir.path().join("sink.log");
    create_charges(&database);
    produce_keyed_lines(&broker, "refunds", &orders(0..5));
    let mut sink = spawn_sink(&broker, &database, "refunds", "5", &log);
    wait_until("the sink to apply the records", Duration::from_secs(60), || tally(&database).3 == 5);
    assert!(terminate(&mut sink).success(), "SIGTERM ends the sink with 0");

    // The row claims offset 1000 of a partition that ends at 5.
    let connection = rusqlite::Connection::open(&database).expect("open database");
    let moved = connection
        .execute("UPDATE once_sink_offsets SET next_offset = 1000 WHERE sink = 'billing' AND topic = 'refunds'", [])
        .expect("move the position");
    assert_eq!(moved, 1, "one row for the one partition");
    drop(connection);
    produce_keyed_lines(&broker, "refunds", &orders(5..8));
    let mut sink = spawn_sink(&broker, &database, "refunds", "5", &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = sink.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the sink kept running on an unreadable position");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success(), "an unreadable position is fatal; log:\n{stderr}");
    assert!(stderr.contains("does not skip records"), "says why it stopped: {stderr}");
    assert_eq!(tally(&database).0, 5, "nothing applied from another offset");
}
