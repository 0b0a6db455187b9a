//! `once sink` into a real PostgreSQL (a throw-away cluster the test starts): the issue's
//! statement with its `::jsonb` and `::numeric` casts, two topics carrying the same message ids
//! absorbed by the inbox (`--dedup key`), a SIGKILL mid-run and a restart; at the end every
//! charge is in the table exactly once and the stored positions count every record read.

mod support;

#[path = "../../sink/tests/support/pg.rs"]
mod pg;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pg::PgCluster;
use support::{once, produce_keyed_lines, wait_until, BrokerProcess};

const CHARGE: &str = "INSERT INTO charges(order_id, amount) VALUES (:key, (:value::jsonb->>'amount')::numeric)";

fn spawn_sink(broker: &BrokerProcess, cluster: &PgCluster, batch_records: &str, log: &std::path::Path) -> Child {
    spawn_sink_on(broker, cluster, &["--topic", "orders", "--topic", "retries", "--dedup", "key"], batch_records, log)
}

fn spawn_sink_on(
    broker: &BrokerProcess,
    cluster: &PgCluster,
    topics: &[&str],
    batch_records: &str,
    log: &std::path::Path,
) -> Child {
    spawn_sink_env(broker, cluster, topics, batch_records, log, &[])
}

fn spawn_sink_env(
    broker: &BrokerProcess,
    cluster: &PgCluster,
    topics: &[&str],
    batch_records: &str,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open sink log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .envs(env.iter().copied())
        .args(["sink", "--bootstrap", &broker.bootstrap(), "--group", "billing"])
        .args(topics)
        .args(["--database", &cluster.url(), "--sql", CHARGE, "--batch-records", batch_records])
        .env("ONCE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once sink")
}

fn produce(broker: &BrokerProcess, topic: &str, ids: std::ops::Range<u64>) {
    let lines: String = ids.map(|id| format!("order-{id},{{\"amount\": {id}}}\n")).collect();
    produce_keyed_lines(broker, topic, &lines);
}

fn number(cluster: &PgCluster, sql: &str) -> i64 {
    cluster.psql(sql).parse().unwrap_or(0)
}

fn positions(cluster: &PgCluster) -> i64 {
    number(cluster, "SELECT COALESCE(sum(next_offset), 0) FROM once_sink_offsets WHERE sink = 'billing'")
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

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name}");
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn stopped(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
}

/// Three sinks over six partitions; one stops itself (SIGSTOP, the test hook) inside its third
/// batch's transaction — a batch in hand, its position rows locked — and stays stopped past its
/// session timeout while the others take its partitions (after the server ends its idle
/// transaction) and more records arrive; resumed, it is a zombie whose late batch is refused.
/// Another sink is killed with SIGKILL and restarted; the broker is killed with SIGKILL and
/// restarted. Every charge ends in the table exactly once and the positions count every record.
#[test]
fn three_sinks_a_zombie_and_kills_apply_every_charge_once() {
    const TOTAL: i64 = 6000;
    let cluster = PgCluster::start();
    cluster.psql("CREATE TABLE charges(order_id TEXT, amount NUMERIC)");
    let mut broker = BrokerProcess::start(&[]);
    once(&["topic", "create", "orders", "--partitions", "6", "--bootstrap", &broker.bootstrap()]);
    let dir = tempfile::tempdir().expect("temp dir");
    let logs: Vec<_> = (0..3).map(|index| dir.path().join(format!("sink-{index}.log"))).collect();
    let topics = ["--topic", "orders"];
    produce(&broker, "orders", 0..3000);
    let zombie_hook = [(once_sink::hooks::STOP_IN_BATCH_ENV, "3")];
    let mut sinks: Vec<Child> = vec![spawn_sink_env(&broker, &cluster, &topics, "20", &logs[0], &zombie_hook)];
    sinks.extend(logs[1..].iter().map(|log| spawn_sink_on(&broker, &cluster, &topics, "20", log)));
    let applied = || number(&cluster, "SELECT count(*) FROM charges");
    wait_until("each sink to be assigned partitions", Duration::from_secs(60), || {
        logs.iter().all(|log| std::fs::read_to_string(log).unwrap_or_default().contains("assigned; seeking"))
    });
    wait_until("the sinks to apply some charges", Duration::from_secs(60), || applied() >= 500);

    // Stopped inside a batch's transaction past its session timeout: its partitions move to the
    // others, which can only reach the end of what was produced by taking them over (the server
    // aborts the stopped sink's transaction after 30 s idle, releasing its rows).
    // (More records first: the first sink may have joined after the others had applied its
    // partitions' share, and it stops only inside a batch of its own.)
    produce(&broker, "orders", 3000..5000);
    wait_until("the first sink to stop itself inside a batch", Duration::from_secs(60), || stopped(sinks[0].id()));
    wait_until("the others to take over the paused sink's partitions", Duration::from_secs(120), || {
        positions(&cluster) >= 5000
    });
    // Resumed: a zombie whose batch in hand is stale. Its transaction is gone; the retry is refused.
    signal(&sinks[0], "CONT");
    wait_until("the zombie's late batch to be refused", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
        log.split_once("test hook: stopping").is_some_and(|(_, after)| after.contains("batch refused"))
    });
    produce(&broker, "orders", 5000..TOTAL as u64);

    sinks[1].kill().expect("SIGKILL a sink");
    sinks[1].wait().expect("reap it");
    sinks[1] = spawn_sink_on(&broker, &cluster, &topics, "20", &logs[1]);
    broker.kill9();
    broker.restart();

    wait_until("every record to be applied", Duration::from_secs(180), || positions(&cluster) >= TOTAL);
    for sink in &mut sinks {
        signal(sink, "TERM");
    }
    let logs_text: String =
        logs.iter().map(|log| std::fs::read_to_string(log).unwrap_or_default()).collect::<Vec<_>>().join("\n----\n");
    for sink in &mut sinks {
        let status = sink.wait().expect("wait for a sink");
        assert!(status.success(), "every sink exits 0 on SIGTERM; logs:\n{logs_text}");
    }
    for line in logs_text.lines().filter(|line| line.contains("batch refused") || line.contains("transient")) {
        eprintln!("{line}");
    }
    let expected_sum: i64 = (0..TOTAL).sum();
    assert_eq!(
        cluster.psql("SELECT count(*), count(DISTINCT order_id), sum(amount) FROM charges"),
        format!("{TOTAL}|{TOTAL}|{expected_sum}"),
        "every charge exactly once; logs:\n{logs_text}"
    );
    assert_eq!(positions(&cluster), TOTAL, "positions equal the records applied");
}
