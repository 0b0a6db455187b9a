//! `once sink` into a real PostgreSQL (a throw-away cluster the test starts): the issue's
//! statement with its `::jsonb` and `::numeric` casts, two topics carrying the same message ids
//! absorbed by the inbox (`--dedup key`), a SIGKILL mid-run and a restart; at the end every
//! charge is in the table exactly once and the stored positions count every record read.

mod support;

#[path = "../../sink/tests/support/pg.rs"]
mod pg;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pg::PgCluster;
use support::{once, BrokerProcess};

const CHARGE: &str = "INSERT INTO charges(order_id, amount) VALUES (:key, (:value::jsonb->>'amount')::numeric)";

fn spawn_sink(broker: &BrokerProcess, cluster: &PgCluster, batch_records: &str, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open sink log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .args([
            "sink",
            "--bootstrap",
            &broker.bootstrap(),
            "--group",
            "billing",
            "--topic",
            "orders",
            "--topic",
            "retries",
        ])
        .args(["--database", &cluster.url(), "--sql", CHARGE, "--dedup", "key", "--batch-records", batch_records])
        .env("ONCE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once sink")
}

fn produce(broker: &BrokerProcess, topic: &str, ids: std::ops::Range<u64>) {
    use std::io::Write;
    let lines: String = ids.map(|id| format!("order-{id},{{\"amount\": {id}}}\n")).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["produce", topic, "--bootstrap", &broker.bootstrap(), "--key-separator", ","])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn once produce");
    child.stdin.take().expect("stdin").write_all(lines.as_bytes()).expect("write lines");
    assert!(child.wait().expect("wait").success(), "once produce failed");
}

fn number(cluster: &PgCluster, sql: &str) -> i64 {
    cluster.psql(sql).parse().unwrap_or(0)
}

fn positions(cluster: &PgCluster) -> i64 {
    number(cluster, "SELECT COALESCE(sum(next_offset), 0) FROM once_sink_offsets WHERE sink = 'billing'")
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn killed_mid_run_with_repeats_on_two_topics_every_charge_applies_once() {
    let cluster = PgCluster::start();
    cluster.psql("CREATE TABLE charges(order_id TEXT, amount NUMERIC)");
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "orders", "--partitions", "3", "--bootstrap", &bootstrap]);
    once(&["topic", "create", "retries", "--partitions", "1", "--bootstrap", &bootstrap]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("sink.log");
    produce(&broker, "orders", 0..2000);

    let mut sink = spawn_sink(&broker, &cluster, "10", &log);
    wait_until("the first sink to apply some charges", Duration::from_secs(60), || {
        number(&cluster, "SELECT count(*) FROM charges") >= 300
    });
    sink.kill().expect("SIGKILL the sink");
    sink.wait().expect("reap the sink");
    let applied = number(&cluster, "SELECT count(*) FROM charges");
    eprintln!("killed the first sink after {applied} of 2000 charges");
    assert_eq!(applied, positions(&cluster), "positions count exactly the charges applied (no repeats yet)");

    // The same orders again, on a second topic: an at-least-once upstream's retries.
    produce(&broker, "retries", 1000..2500);
    let mut sink = spawn_sink(&broker, &cluster, "500", &log);
    wait_until("the restarted sink to read everything", Duration::from_secs(120), || positions(&cluster) >= 3500);
    let status = Command::new("kill").arg("-TERM").arg(sink.id().to_string()).status().expect("kill -TERM");
    assert!(status.success());
    let status = sink.wait().expect("wait for the sink");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "SIGTERM ends the sink with 0; log:\n{log_text}");

    let expected_sum: i64 = (0..2500).sum();
    assert_eq!(
        cluster.psql("SELECT count(*), count(DISTINCT order_id), sum(amount) FROM charges"),
        format!("2500|2500|{expected_sum}"),
        "every charge once; log:\n{log_text}"
    );
    assert_eq!(number(&cluster, "SELECT count(*) FROM once_sink_inbox"), 2500);
    assert_eq!(positions(&cluster), 3500, "positions pass the 1000 repeats the inbox skipped");
}
