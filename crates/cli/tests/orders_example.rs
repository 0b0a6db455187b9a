//! examples/orders/README.md, database → Once → database, against a Once broker and a throw-away
//! PostgreSQL (wal_level=logical) holding two databases: the shop places orders, each with an
//! `OrderPlaced` outbox row in the same transaction (a fifth roll back); `once outbox` relays the
//! outbox by logical decoding into `outbox.event.order`; billing is `once sink`, which inserts one
//! invoice per event in its own database. The relay and billing are killed with SIGKILL over and
//! over and restarted, the broker once. In the end billing holds exactly one invoice per committed
//! order, with its customer and amount, and none for a rolled-back one.

mod support;

#[path = "../../sink/tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pg::PgCluster;
use support::{once, wait_until, BrokerProcess};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/orders");

/// The billing statement of the walk-through, word for word.
const BILLING_SQL: &str = "INSERT INTO invoices (order_id, customer, amount) VALUES \
((:value::jsonb->>'order_id')::bigint, :value::jsonb->>'customer', (:value::jsonb->>'amount')::numeric)";

const ORDERS: u64 = 300;

fn example(file: &str) -> String {
    std::fs::read_to_string(format!("{EXAMPLE}/{file}")).unwrap_or_else(|error| panic!("{file}: {error}"))
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open a log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .args(args)
        .env("ONCE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once")
}

fn relay(broker: &BrokerProcess, cluster: &PgCluster, log: &Path) -> Child {
    let url = cluster.url_of("shop");
    spawn(&["outbox", "--bootstrap", &broker.bootstrap(), "--database", &url, "--mode", "logical"], log)
}

fn billing(broker: &BrokerProcess, cluster: &PgCluster, log: &Path) -> Child {
    let (bootstrap, url) = (broker.bootstrap(), cluster.url_of("billing"));
    let topic = ["--group", "billing", "--topic", "outbox.event.order"];
    spawn(
        &[&["sink", "--bootstrap", &bootstrap][..], &topic, &["--database", &url, "--sql", BILLING_SQL]].concat(),
        log,
    )
}

fn restart(child: &mut Child, start: impl FnOnce() -> Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    *child = start();
}

#[test]
fn every_committed_order_is_invoiced_once_although_relay_billing_and_broker_crash() {
    let cluster = PgCluster::start_logical();
    cluster.psql("CREATE DATABASE shop");
    cluster.psql("CREATE DATABASE billing");
    cluster.psql_in("shop", &example("shop.sql"));
    cluster.psql_in("billing", &example("billing.sql"));
    let place_order = example("place_order.sql");
    let mut broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let (relay_log, billing_log) = (dir.path().join("relay.log"), dir.path().join("billing.log"));

    // The relay first: its slot sees every order placed from now on.
    let mut relay_process = relay(&broker, &cluster, &relay_log);
    let read = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
    wait_until("the relay to follow its slot", Duration::from_secs(30), || read(&relay_log).contains("decoding"));

    let placed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for order in 0..ORDERS {
                // Customers c0..c6; amounts in cents; every fifth order rolled back.
                let fill = |text: &str| {
                    text.replace(":'customer'", &format!("'c{}'", order % 7))
                        .replace(":amount", &format!("{}.{:02}", 1 + order % 90, order % 100))
                };
                let end = if order % 5 == 4 { "ROLLBACK;" } else { "COMMIT;" };
                cluster.psql_in("shop", &format!("BEGIN; {} {end}", fill(&place_order)));
                std::thread::sleep(Duration::from_millis(15));
            }
            placed.store(true, Ordering::SeqCst);
        });
        wait_until("the relay to create the topic", Duration::from_secs(30), || {
            once(&["topic", "list", "--bootstrap", &broker.bootstrap()]).contains("outbox.event.order")
        });
        let mut billing_process = billing(&broker, &cluster, &billing_log);
        let mut round = 0;
        while !placed.load(Ordering::SeqCst) || round < 6 {
            std::thread::sleep(Duration::from_millis(300 + 97 * (round % 5)));
            if round % 2 == 0 {
                restart(&mut relay_process, || relay(&broker, &cluster, &relay_log));
            } else {
                restart(&mut billing_process, || billing(&broker, &cluster, &billing_log));
            }
            if round == 3 {
                broker.kill9();
                std::thread::sleep(Duration::from_millis(300));
                broker.restart();
            }
            round += 1;
        }
        let committed: i64 = cluster.psql_in("shop", "SELECT count(*) FROM orders").parse().expect("a count");
        assert_eq!(committed as u64, ORDERS - ORDERS / 5, "four in five orders committed");
        wait_until("billing to invoice every committed order", Duration::from_secs(120), || {
            cluster.psql_in("billing", "SELECT count(*) FROM invoices").parse::<i64>().unwrap_or(0) >= committed
        });
        for (mut child, log) in [(relay_process, &relay_log), (billing_process, &billing_log)] {
            Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
            assert!(child.wait().expect("wait").success(), "SIGTERM ends it with 0:\n{}", read(log));
        }
    });

    let orders = cluster
        .psql_in("shop", "SELECT string_agg(id || ' ' || customer || ' ' || amount, ',' ORDER BY id) FROM orders");
    let invoices = cluster.psql_in(
        "billing",
        "SELECT string_agg(order_id || ' ' || customer || ' ' || amount, ',' ORDER BY order_id) FROM invoices",
    );
    assert_eq!(invoices, orders, "one invoice per committed order, none twice, none for a rolled-back one");
    assert_eq!(cluster.psql_in("shop", "SELECT count(*) FROM outbox"), "0", "every outbox row retired");
}
