//! The client-side tools against a broker that is not node 0 and advertises another address than
//! its bootstrap one (`--node-id 7`, listening on 127.0.0.1:PORT, advertising localhost:PORT), as a
//! node of a Kafka cluster would be: `once copy`, `once sink`, `once outbox`, `once bench` and
//! `once check` (which manages its broker with `--broker-cmd … --node-id 7` behind its own proxy)
//! must find partitions, coordinators and leaders from metadata, not assume node 0 or the address
//! they were given. (`once dedup` has its own tests against such a broker: dedup_processor.rs.)

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::txn::{read_to_end, Isolation};
use support::{free_port, once, produce_keyed_lines, wait_until, BrokerProcess};

/// Kills a child process on drop.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_once"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn once"),
    )
}

#[test]
fn metadata_names_node_7_at_its_advertised_address() {
    let broker = BrokerProcess::start_node_seven();
    let described = once(&["topic", "create", "t", "--partitions", "2", "--bootstrap", &broker.bootstrap()]);
    assert!(described.contains("created"), "{described}");
    let output = Command::new("kcat").args(["-L", "-b", &broker.bootstrap()]).output().expect("kcat");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("broker 7 at localhost:"), "the metadata a client sees: {text}");
    assert!(text.contains("leader 7"), "{text}");
    // Requests a partition's leader answers (ListOffsets, DescribeProducers) go to it by its
    // advertised address: here the same broker under another name.
    produce_keyed_lines(&broker, "t", "a,1\nb,2\nc,3\n");
    let topic = once(&["topic", "describe", "t", "--bootstrap", &broker.bootstrap()]);
    let ends: u32 =
        topic.lines().filter_map(|line| line.split("high-watermark=").nth(1)?.trim().parse::<u32>().ok()).sum();
    assert_eq!(ends, 3, "{topic}");
    let producers =
        once(&["txn", "describe-producers", "--topic", "t", "--partition", "0", "--bootstrap", &broker.bootstrap()]);
    assert!(producers.contains("producers of t-0"), "{producers}");
}

#[test]
fn copy_sink_and_outbox_work_against_node_7() {
    let broker = BrokerProcess::start_node_seven();
    let bootstrap = broker.bootstrap();
    for topic in ["charges", "charges-copy"] {
        once(&["topic", "create", topic, "--partitions", "2", "--bootstrap", &bootstrap]);
    }
    let lines: String = (0..40).map(|n| format!("c{n},{{\"amount\":{n}}}\n")).collect();
    produce_keyed_lines(&broker, "charges", &lines);

    // once copy: a transactional copy, through the group and transaction coordinators on node 7.
    once(&[
        "copy",
        "--bootstrap",
        &bootstrap,
        "--from",
        "charges",
        "--to",
        "charges-copy",
        "--group",
        "copier",
        "--transactional-id",
        "copier-7",
        "--exit-when-idle-ms",
        "1500",
    ]);
    assert_eq!(read_to_end(&bootstrap, "charges-copy", 2, Isolation::ReadCommitted).len(), 40);

    // once sink into SQLite: each record's statement once.
    let dir = tempfile::tempdir().expect("temp dir");
    let sink_db = dir.path().join("billing.db");
    let sink_url = format!("sqlite://{}", sink_db.display());
    {
        let connection = rusqlite::Connection::open(&sink_db).expect("sqlite");
        connection.execute_batch("CREATE TABLE charges (id TEXT PRIMARY KEY, body TEXT)").expect("ddl");
    }
    let _sink = spawn(&[
        "sink",
        "--bootstrap",
        &bootstrap,
        "--group",
        "billing",
        "--topic",
        "charges-copy",
        "--database",
        &sink_url,
        "--sql",
        "INSERT INTO charges (id, body) VALUES (:key, :value_text)",
    ]);
    let count = || -> i64 {
        rusqlite::Connection::open(&sink_db)
            .and_then(|connection| connection.query_row("SELECT count(*) FROM charges", [], |row| row.get(0)))
            .unwrap_or(0)
    };
    wait_until("the sink to apply every record", Duration::from_secs(60), || count() == 40);

    // once outbox from SQLite: each row once.
    let app_db = dir.path().join("app.db");
    {
        let connection = rusqlite::Connection::open(&app_db).expect("sqlite");
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE outbox (id TEXT NOT NULL UNIQUE, aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL,
                                      type TEXT NOT NULL, payload TEXT, sent_at TEXT);",
            )
            .expect("ddl");
        for n in 0..10 {
            connection
                .execute(
                    "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (?1, 'order', ?2, 'Placed', '{}')",
                    [format!("e{n}"), format!("o{n}")],
                )
                .expect("insert");
        }
    }
    let app_url = format!("sqlite://{}", app_db.display());
    once(&["topic", "create", "outbox.event.order", "--partitions", "1", "--bootstrap", &bootstrap]);
    let _relay = spawn(&["outbox", "--bootstrap", &bootstrap, "--database", &app_url, "--after-send", "mark"]);
    wait_until("the outbox topic to hold every row", Duration::from_secs(60), || {
        read_to_end(&bootstrap, "outbox.event.order", 1, Isolation::ReadCommitted).len() == 10
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_to_end(&bootstrap, "outbox.event.order", 1, Isolation::ReadCommitted).len(), 10, "each row once");
}

#[test]
fn bench_and_check_run_against_node_7() {
    let broker = BrokerProcess::start_node_seven();
    let bootstrap = broker.bootstrap();
    let bench = once(&["bench", "--smoke", "--workload", "catch-up", "--bootstrap", &bootstrap]);
    assert!(bench.contains('|'), "a table: {bench}");

    // once check manages its own broker: node 7, listening on {listen}, advertising the check's proxy.
    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let broker_cmd = format!(
        "{} serve --node-id 7 --data-dir {} --listen {{listen}} --advertised-listener {{advertised}}",
        env!("CARGO_BIN_EXE_once"),
        data.path().join("data").display()
    );
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["check", "--workload", "queue", "--bootstrap", &format!("127.0.0.1:{port}"), "--duration", "6"])
        .args(["--seed", "7", "--broker-cmd", &broker_cmd])
        .output()
        .expect("run once check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "once check against node 7: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
