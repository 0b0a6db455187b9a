//! examples/billing/README.md, step by step, against a Once broker and a throw-away PostgreSQL: the
//! payment service (examples/billing/payment_service.py) loses acknowledgements and resends, crashes
//! and resends again; billing (`once sink`) is killed with SIGKILL and restarted. Every customer
//! ends up charged exactly the count and sum the service intended (its intended.csv), and the
//! walk-through's compare.sql says so.

mod support;

#[path = "../../sink/tests/support/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use pg::PgCluster;
use support::{once, wait_until, BrokerProcess};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/billing");

/// The walk-through's table and statement, word for word.
const TABLE: &str = "CREATE TABLE charges (message_id TEXT NOT NULL, customer TEXT NOT NULL,
               amount NUMERIC(12,2) NOT NULL, charged_at TIMESTAMPTZ NOT NULL DEFAULT now())";
const SQL: &str =
    "INSERT INTO charges (message_id, customer, amount) VALUES (:header.id, :key, (:value::jsonb->>'amount')::numeric)";

const CHARGES: usize = 600;

fn spawn_billing(broker: &BrokerProcess, cluster: &PgCluster, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open the billing log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["sink", "--bootstrap", &broker.bootstrap(), "--group", "billing", "--topic", "charges"])
        .args(["--database", &cluster.url(), "--sql", SQL])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once sink")
}

/// Runs the payment service in `dir` (where it keeps its progress and writes intended.csv).
fn payment_service(broker: &BrokerProcess, dir: &Path, extra: &[&str]) -> Output {
    Command::new("python3")
        .arg(format!("{EXAMPLE}/payment_service.py"))
        .args(["--bootstrap", &broker.bootstrap(), "--charges", &CHARGES.to_string()])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("run python3 (.ci/run installs confluent-kafka)")
}

/// "… N messages sent …" from the service's last line.
fn messages_sent(output: &Output) -> usize {
    let text = String::from_utf8_lossy(&output.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.iter().position(|word| *word == "messages").unwrap_or_else(|| panic!("no count in: {text}"));
    words[at - 1].parse().unwrap_or_else(|_| panic!("no count in: {text}"))
}

fn number(cluster: &PgCluster, sql: &str) -> i64 {
    cluster.psql(sql).parse().unwrap_or(0)
}

/// The sum of the partitions' high watermarks, from `once topic describe`.
fn high_watermarks(broker: &BrokerProcess) -> i64 {
    let described = once(&["topic", "describe", "charges", "--bootstrap", &broker.bootstrap()]);
    described
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("high-watermark="))
        .map(|value| value.parse::<i64>().expect("a high watermark"))
        .sum()
}

/// psql of the throw-away cluster's installation (`-f` runs compare.sql's `\copy`).
fn psql_program() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed")
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin/psql"))))
        .filter(|(_, psql)| psql.exists())
        .collect();
    found.sort();
    found.pop().expect("a psql").1
}

#[test]
fn every_customer_is_charged_once_although_the_service_resends_and_both_crash() {
    let cluster = PgCluster::start();
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("billing.log");

    // 1. The topic that stores each charge id once.
    let dedup = ["--config", "dedup.source=header:id", "--config", "dedup.window.ms=604800000"];
    once(&[&["topic", "create", "charges", "--partitions", "3", "--bootstrap", &bootstrap][..], &dedup].concat());
    // 2. The table, and billing.
    cluster.psql(TABLE);
    let mut billing = spawn_billing(&broker, &cluster, &log);
    // 3. The service, lossy, crashing after 360 of its 600 charges.
    let crashed = payment_service(&broker, dir.path(), &["--crash-after", "360"]);
    assert_eq!(crashed.status.code(), Some(3), "the simulated crash: {crashed:?}");
    // 4. Billing killed wherever it was, and restarted.
    billing.kill().expect("SIGKILL billing");
    billing.wait().expect("reap billing");
    let mut billing = spawn_billing(&broker, &cluster, &log);
    // 5. The service restarted: it resends what it had not saved as done, then the rest.
    let finished = payment_service(&broker, dir.path(), &[]);
    assert!(finished.status.success(), "the service's second run: {finished:?}");
    let sent = messages_sent(&crashed) + messages_sent(&finished);
    assert!(sent > CHARGES + 50, "acknowledgements were lost and charges resent: {sent} messages");

    assert_eq!(high_watermarks(&broker) as usize, sent, "every message sent took an offset (the resends as gaps)");
    wait_until("billing to apply every charge", Duration::from_secs(120), || {
        number(&cluster, "SELECT count(*) FROM charges") >= CHARGES as i64
    });
    // SIGTERM: billing finishes the batch in hand, copies its positions to the group, exits 0.
    let status = Command::new("kill").arg("-TERM").arg(billing.id().to_string()).status().expect("kill -TERM");
    assert!(status.success());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(billing.wait().expect("wait for billing").success(), "SIGTERM stops billing with 0:\n{}", log_text());
    assert_eq!(
        cluster.psql("SELECT count(*), count(DISTINCT message_id) FROM charges"),
        format!("{CHARGES}|{CHARGES}"),
        "each charge once, none twice; billing log:\n{}",
        log_text()
    );

    // Per customer: the count and the sum the service intended.
    let intended = std::fs::read_to_string(dir.path().join("intended.csv")).expect("the service wrote intended.csv");
    let mut customers = 0;
    for line in intended.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (customer, count, amount) = (fields[0], fields[1], fields[2]);
        let charged = cluster.psql(&format!("SELECT count(*), sum(amount) FROM charges WHERE customer = '{customer}'"));
        assert_eq!(charged, format!("{count}|{amount}"), "{customer} is charged what was intended");
        customers += 1;
    }
    assert_eq!(customers, 5, "intended.csv has every customer:\n{intended}");

    // The walk-through's own check says the same.
    let compared = Command::new(psql_program())
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-f", &format!("{EXAMPLE}/compare.sql")])
        .current_dir(dir.path())
        .output()
        .expect("run psql -f compare.sql");
    let table = String::from_utf8_lossy(&compared.stdout);
    assert!(compared.status.success(), "compare.sql: {compared:?}");
    assert_eq!(table.matches("| ok").count(), 5, "every customer ok:\n{table}");
    assert!(!table.contains("MISMATCH"), "{table}");

    // The group's committed offsets are copies of billing's positions.
    let positions = cluster.psql(
        "SELECT string_agg(partition || '=' || next_offset, ' ' ORDER BY partition) FROM once_sink_offsets WHERE sink = 'billing'",
    );
    let described = once(&["group", "describe", "billing", "--bootstrap", &bootstrap]);
    let committed: Vec<String> = described
        .lines()
        .filter(|line| line.starts_with("charges\t"))
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .map(|fields| format!("{}={}", fields[1], fields[2]))
        .collect();
    assert_eq!(committed.join(" "), positions, "the group shows billing's positions:\n{described}");
}
