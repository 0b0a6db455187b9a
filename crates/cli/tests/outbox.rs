//! `once outbox` end to end, against a real broker and a real database (a throw-away PostgreSQL,
//! and SQLite): two application threads bump aggregates in transactions — each transaction
//! updates its aggregate's row (the application's lock on it) and inserts one outbox row per new
//! version; some roll back; on PostgreSQL some hold their transaction open for a while, so later
//! rows commit first — while the relay is killed with SIGKILL over and over and restarted, and the
//! broker is killed with SIGKILL once and restarted. At the end every topic holds each committed
//! row exactly once, each aggregate's versions 1, 2, 3, … in order, and no rolled-back row.
//!
//! A resend is made certain first: the relay aborts (test hook) after its first batch is
//! acknowledged and before it retires the rows, so the next run sends those rows again and only
//! the topic's `dedup.source=header:id` keeps them single.
//!
//! The workload comes from a seed, printed at the start; `ONCE_OUTBOX_SEED=N` replays it.

mod support;

#[path = "../../sink/tests/support/pg.rs"]
mod pg;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pg::PgCluster;
use support::{once, wait_until, BrokerProcess};

/// (aggregateid, aggregatetype): three aggregates per topic.
const AGGREGATES: [(&str, &str); 6] =
    [("a0", "order"), ("a1", "order"), ("a2", "order"), ("a3", "customer"), ("a4", "customer"), ("a5", "customer")];
const TOPICS: [&str; 2] = ["outbox.event.order", "outbox.event.customer"];
const TRANSACTIONS: usize = 260;
/// Transactions committed before the first relay (the one that aborts after its acks) starts.
const BEFORE_RELAY: usize = 20;

/// xorshift64*: the workload and the kill timing, replayable from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn seed(default: u64) -> u64 {
    let seed = std::env::var("ONCE_OUTBOX_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or(default);
    eprintln!("outbox test seed {seed} (ONCE_OUTBOX_SEED={seed} replays the workload)");
    seed
}

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Postgres,
    Sqlite,
}

/// One application transaction's SQL: `events` new versions of one aggregate, each with its
/// outbox row; rolled back ones write rows of type `Doomed`, which must never be seen.
fn transaction_sql(rng: &mut Rng, dialect: Dialect) -> String {
    let (aggregate, _) = AGGREGATES[rng.below(AGGREGATES.len() as u64) as usize];
    let rollback = rng.below(5) == 0;
    let hold = dialect == Dialect::Postgres && rng.below(4) == 0;
    let (begin, new_id, payload) = match dialect {
        Dialect::Postgres => ("BEGIN", "gen_random_uuid()", "jsonb_build_object('v', version)"),
        Dialect::Sqlite => ("BEGIN IMMEDIATE", "lower(hex(randomblob(16)))", "json_object('v', version)"),
    };
    let event_type = if rollback { "Doomed" } else { "Bumped" };
    let mut sql = format!("{begin};");
    for event in 0..1 + rng.below(3) {
        sql += &format!(
            "UPDATE aggregates SET version = version + 1 WHERE name = '{aggregate}';\
             INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) \
             SELECT {new_id}, kind, name, '{event_type}', {payload} FROM aggregates WHERE name = '{aggregate}';"
        );
        if hold && event == 0 {
            sql += "SELECT pg_sleep(0.15);";
        }
    }
    sql + if rollback { "ROLLBACK;" } else { "COMMIT;" }
}

/// The application's database, as the test sees it.
trait Database: Sync {
    fn execute(&self, sql: &str);
    fn query(&self, sql: &str) -> String;
    fn url(&self) -> String;
    /// The relay's flags beyond --bootstrap and --database.
    fn relay_args(&self) -> Vec<&'static str>;
    /// Rows not yet retired.
    fn unsent(&self) -> i64;
}

/// A PostgreSQL database and the relay's flags for it (which mode, which order column).
struct Postgres {
    cluster: PgCluster,
    args: Vec<&'static str>,
}

impl Database for Postgres {
    fn execute(&self, sql: &str) {
        self.cluster.psql(sql);
    }
    fn query(&self, sql: &str) -> String {
        self.cluster.psql(sql)
    }
    fn url(&self) -> String {
        self.cluster.url()
    }
    fn relay_args(&self) -> Vec<&'static str> {
        self.args.clone()
    }
    fn unsent(&self) -> i64 {
        self.query("SELECT count(*) FROM outbox").parse().expect("a count")
    }
}

struct Sqlite(PathBuf);

impl Sqlite {
    fn connect(&self) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open(&self.0).expect("open the SQLite database");
        connection.busy_timeout(Duration::from_secs(30)).expect("busy timeout");
        connection
    }
}

impl Database for Sqlite {
    fn execute(&self, sql: &str) {
        self.connect().execute_batch(sql).unwrap_or_else(|error| panic!("{sql}: {error}"));
    }
    fn query(&self, sql: &str) -> String {
        let connection = self.connect();
        let mut statement = connection.prepare(sql).expect("prepare");
        let rows = statement
            .query_map([], |row| Ok(format!("{}|{}", row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .expect("query");
        rows.map(|row| row.expect("row")).collect::<Vec<_>>().join("\n")
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
    fn relay_args(&self) -> Vec<&'static str> {
        vec!["--after-send", "mark"]
    }
    fn unsent(&self) -> i64 {
        self.connect()
            .query_row("SELECT count(*) FROM outbox WHERE sent_at IS NULL", [], |row| row.get(0))
            .expect("count unsent")
    }
}

fn spawn_relay(
    broker: &BrokerProcess,
    database: &dyn Database,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("open relay log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["outbox", "--bootstrap", &broker.bootstrap(), "--database", &database.url()])
        .args(database.relay_args())
        .args(args)
        .envs(env.iter().copied())
        .env("ONCE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once outbox")
}

/// One record as kcat prints it: (topic, key, id header, type header, payload).
type Stored = (String, String, String, String, String);

fn read_topics(broker: &BrokerProcess) -> Vec<Stored> {
    let listed = once(&["topic", "list", "--bootstrap", &broker.bootstrap()]);
    let mut records = Vec::new();
    for topic in TOPICS {
        if !listed.lines().any(|line| line.split_whitespace().next() == Some(topic)) {
            continue;
        }
        let output = Command::new("kcat")
            .args(["-C", "-b", &broker.bootstrap(), "-t", topic, "-e", "-q", "-f", "%k %h %s\\n"])
            .output()
            .expect("run kcat");
        assert!(output.status.success(), "kcat {topic}: {}", String::from_utf8_lossy(&output.stderr));
        for line in String::from_utf8(output.stdout).expect("utf-8").lines() {
            let mut fields = line.splitn(3, ' ');
            let (key, headers, payload) = (fields.next(), fields.next(), fields.next());
            let headers: BTreeMap<&str, &str> =
                headers.unwrap_or_default().split(',').filter_map(|pair| pair.split_once('=')).collect();
            let header = |name: &str| headers.get(name).copied().unwrap_or_default().to_string();
            let stored = (topic.to_string(), key.unwrap_or_default().to_string(), header("id"), header("type"));
            records.push((stored.0, stored.1, stored.2, stored.3, payload.unwrap_or_default().to_string()));
        }
    }
    records
}

fn version_of(payload: &str) -> i64 {
    let digits: String = payload.chars().filter(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("payload {payload:?} has no version"))
}

/// Every committed row once, each aggregate's versions 1..=final in order, no rolled-back row.
fn check(records: &[Stored], database: &dyn Database, log: &Path) {
    let finals: BTreeMap<String, i64> = database
        .query("SELECT name, version FROM aggregates ORDER BY name")
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(name, version)| (name.to_string(), version.parse().expect("a version")))
        .collect();
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let ids: HashSet<&str> = records.iter().map(|record| record.2.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "an outbox id stored twice; relay log:\n{}", log_text());
    assert!(records.iter().all(|record| record.3 == "Bumped"), "a rolled-back row was relayed");
    for (name, kind) in AGGREGATES {
        let topic = format!("outbox.event.{kind}");
        let versions: Vec<i64> = records
            .iter()
            .filter(|record| record.1 == name)
            .inspect(|record| assert_eq!(record.0, topic, "{name}'s record on the wrong topic"))
            .map(|record| version_of(&record.4))
            .collect();
        let expected: Vec<i64> = (1..=finals[name]).collect();
        assert_eq!(versions, expected, "aggregate {name}: every committed version once, in order");
    }
    assert_eq!(records.len() as i64, finals.values().sum::<i64>(), "nothing but the aggregates' rows");
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name}");
}

/// The relay aborts after its first batch's acknowledgements: its rows are in the topic and still
/// unsent in the table, so the next run resends them. Returns how many.
fn certain_resend(broker: &BrokerProcess, database: &dyn Database, log: &Path) -> i64 {
    let unsent = database.unsent();
    assert!(unsent > 0, "the first transactions committed some rows");
    let hook = [(once_outbox::hooks::ABORT_AFTER_ACKS_ENV, "1")];
    let mut relay = spawn_relay(broker, database, &["--batch-rows", "1000"], &hook, log);
    let status = relay.wait().expect("wait for the relay");
    assert!(!status.success(), "the hook aborts the relay");
    assert_eq!(database.unsent(), unsent, "aborted after the acks, before retiring: nothing retired");
    assert_eq!(read_topics(broker).len() as i64, unsent, "every unsent row's record is stored already");
    unsent
}

/// How many relay starts `log` records.
fn relay_starts(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("relaying the outbox").count()
}

/// Waits up to 60 s for `relay` to log its start (one more than `started_before`); if it ends or
/// does not start, fails saying why: its exit status, its log, and (PostgreSQL) the database's sessions.
fn wait_for_relay_start(which: &str, database: &dyn Database, relay: &mut Child, log: &Path, started_before: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while relay_starts(log) == started_before {
        let ended = relay.try_wait().expect("poll the relay");
        if ended.is_some() || Instant::now() > deadline {
            let log_text = std::fs::read_to_string(log).unwrap_or_default();
            // The relay's log first: should the query fail too, its panic would hide it.
            eprintln!("relay log:\n{log_text}");
            let database_sessions = if database.url().starts_with("sqlite") {
                String::new()
            } else {
                database.query(
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
            };
            let what = match ended {
                Some(status) => format!("{which} ended ({status}) before it started relaying"),
                None => format!("{which} did not start relaying within 60 s"),
            };
            panic!("{what}; sessions:\n{database_sessions}\nrelay log:\n{log_text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn relay_under_kills(database: &dyn Database, seed: u64) {
    let mut rng = Rng(seed.max(1));
    let dialect = if database.url().starts_with("sqlite") { Dialect::Sqlite } else { Dialect::Postgres };
    let transactions: Vec<String> = (0..TRANSACTIONS).map(|_| transaction_sql(&mut rng, dialect)).collect();
    let mut broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("relay.log");
    transactions[..BEFORE_RELAY].iter().for_each(|sql| database.execute(sql));
    let resent = certain_resend(&broker, database, &log);

    let finished = AtomicUsize::new(0);
    let mut kills = 0;
    std::thread::scope(|scope| {
        for part in 0..2 {
            let (transactions, finished) = (&transactions, &finished);
            scope.spawn(move || {
                for sql in transactions[BEFORE_RELAY..].iter().skip(part).step_by(2) {
                    database.execute(sql);
                    // Paced, so the relay's kills fall among the application's transactions.
                    std::thread::sleep(Duration::from_millis(20));
                }
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        while finished.load(Ordering::SeqCst) < 2 || kills < 6 {
            let mut relay = spawn_relay(&broker, database, &["--batch-rows", "20", "--poll-ms", "50"], &[], &log);
            std::thread::sleep(Duration::from_millis(200 + rng.below(700)));
            if kills == 2 {
                broker.kill9();
                std::thread::sleep(Duration::from_millis(300));
                broker.restart();
                std::thread::sleep(Duration::from_millis(500 + rng.below(500)));
            }
            relay.kill().expect("SIGKILL the relay");
            relay.wait().expect("reap the relay");
            kills += 1;
        }
    });

    let started_before = relay_starts(&log);
    let mut relay = spawn_relay(&broker, database, &[], &[], &log);
    // Until it says so, the relay has no SIGTERM handler yet: a signal then would kill it, not stop it.
    wait_for_relay_start("the last relay", database, &mut relay, &log, started_before);
    wait_until("the last relay to send every row", Duration::from_secs(60), || database.unsent() == 0);
    if database.relay_args().contains(&"logical") {
        // The slot moves past every commit: nothing is left for it to decode, nor WAL held back.
        let last: f64 = database.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").parse().expect("an lsn");
        wait_until("the slot to pass the last commit", Duration::from_secs(30), || {
            let slot = database.query("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots");
            slot.parse::<f64>().expect("an lsn") >= last
        });
    }
    signal(&relay, "TERM");
    let status = relay.wait().expect("wait for the relay");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "SIGTERM ends the relay with 0; log:\n{log_text}");
    let fatal: Vec<&str> = log_text.lines().filter(|line| line.starts_with("once: ")).collect();
    eprintln!("relay runs that ended on an error of their own (each resent by the next run): {fatal:?}");
    let records = read_topics(&broker);
    eprintln!("{} records after {kills} relay kills and a broker kill; {resent} rows certainly resent", records.len());
    check(&records, database, &log);
}

/// The application's tables; `seq` adds an insertion-order column beside the uuid id (without
/// it the outbox is Debezium's own shape).
fn postgres_tables(cluster: &PgCluster, seq: bool) {
    let seq = if seq { "seq BIGSERIAL PRIMARY KEY, id UUID NOT NULL UNIQUE" } else { "id UUID PRIMARY KEY" };
    cluster.psql(&format!(
        "CREATE TABLE aggregates (name TEXT PRIMARY KEY, kind TEXT NOT NULL, version BIGINT NOT NULL DEFAULT 0);\
         CREATE TABLE outbox ({seq}, aggregatetype TEXT NOT NULL, \
         aggregateid TEXT NOT NULL, type TEXT NOT NULL, payload JSONB, created_at TIMESTAMPTZ DEFAULT now());"
    ));
    for (name, kind) in AGGREGATES {
        cluster.psql(&format!("INSERT INTO aggregates (name, kind) VALUES ('{name}', '{kind}')"));
    }
}

/// Polling (a server without wal_level=logical; `--mode auto` falls back to it).
#[test]
fn postgres_outbox_under_relay_and_broker_kills_is_relayed_exactly_once_in_order() {
    let cluster = PgCluster::start();
    postgres_tables(&cluster, true);
    let url = cluster.url();
    assert_fails(&["--database", &url, "--table", "missing"], "no table 'missing'");
    assert_fails(&["--database", &url], "--order-column");
    assert_fails(&["--database", &url, "--mode", "logical", "--order-column", "seq"], "wal_level is 'replica'");
    let args = vec!["--order-column", "seq", "--partitions", "3"];
    relay_under_kills(&Postgres { cluster, args }, seed(20261204));
}

/// Logical decoding of Debezium's table (uuid id, no order column): rows in commit order from the
/// slot, which moves only after their records are acknowledged and the rows deleted.
#[test]
fn postgres_logical_outbox_under_relay_and_broker_kills_is_relayed_exactly_once_in_order() {
    let cluster = PgCluster::start_logical();
    postgres_tables(&cluster, false);
    let url = cluster.url();
    // Rows older than the slot cannot be ordered without an order column: refused, slot dropped.
    cluster.psql(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES (gen_random_uuid(), 'order', 'a0', 'Early')",
    );
    assert_fails(&["--database", &url, "--mode", "logical"], "1 unsent rows committed before the slot");
    assert_eq!(cluster.psql("SELECT count(*) FROM pg_replication_slots"), "0", "the refused slot is dropped");
    cluster.psql("DELETE FROM outbox");
    start_decoding(&url, &[]);
    let args = vec!["--mode", "logical", "--partitions", "3"];
    relay_under_kills(&Postgres { cluster, args }, seed(20261208));
}

/// Logical decoding with an order column: rows committed before the slot existed are caught up
/// (in order, from one snapshot) at the first start, and each restart catches up again.
#[test]
fn postgres_logical_outbox_catches_up_and_is_relayed_exactly_once_in_order() {
    let cluster = PgCluster::start_logical();
    postgres_tables(&cluster, true);
    let args = vec!["--mode", "logical", "--order-column", "seq", "--after-send", "delete"];
    relay_under_kills(&Postgres { cluster, args }, seed(20261209));
}

/// Renamed columns (`--column`), a bytea payload and a timestamp column, by polling and by
/// logical decoding: the records carry the payload's bytes and the column's timestamp.
#[test]
fn renamed_columns_and_timestamps_are_relayed_in_both_postgres_modes() {
    let cluster = PgCluster::start_logical();
    let broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("relay.log");
    let columns = ["id=event_id", "aggregatetype=kind", "aggregateid=entity", "type=name", "payload=body"];
    for (table, mode) in [("polled", "poll"), ("decoded", "logical")] {
        cluster.psql(&format!(
            "CREATE TABLE {table} (seq BIGSERIAL, event_id UUID NOT NULL, kind TEXT, entity TEXT, name TEXT, \
             body BYTEA, at TIMESTAMPTZ)"
        ));
        let insert = format!(
            "INSERT INTO {table} (event_id, kind, entity, name, body, at) VALUES \
             (gen_random_uuid(), '{table}', 'e1', 'Created', '\\x00ff41'::bytea, '2025-12-05 00:00:00.123+00'), \
             (gen_random_uuid(), '{table}', 'e1', 'Renamed', NULL, '2025-12-05 02:00:00.5+02')"
        );
        if mode == "poll" {
            cluster.psql(&insert);
        }
        let (bootstrap, url) = (broker.bootstrap(), cluster.url());
        let mut args = vec!["outbox", "--bootstrap", &bootstrap, "--database", &url];
        args.extend(["--table", table, "--mode", mode, "--order-column", "seq", "--column", "timestamp=at"]);
        columns.iter().for_each(|column| args.extend(["--column", column]));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        let mut relay = Command::new(env!("CARGO_BIN_EXE_once"))
            .args(&args)
            .env("ONCE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn once outbox");
        if mode == "logical" {
            let read = || std::fs::read_to_string(&log).unwrap_or_default();
            wait_until("the relay to follow its slot", Duration::from_secs(20), || {
                read().contains("decoding the outbox")
            });
            cluster.psql(&insert);
        }
        let left = || cluster.psql(&format!("SELECT count(*) FROM {table}"));
        wait_until("the relay to send both rows", Duration::from_secs(30), || left() == "0");
        signal(&relay, "TERM");
        assert!(relay.wait().expect("wait").success(), "SIGTERM ends the relay with 0");
        let output = Command::new("kcat")
            .args(["-C", "-b", &broker.bootstrap(), "-t", &format!("outbox.event.{table}"), "-e", "-q"])
            .args(["-f", "%k %T %h %S|%s\\n"])
            .output()
            .expect("run kcat");
        let lines: Vec<&[u8]> = output.stdout.split(|byte| *byte == b'\n').filter(|line| !line.is_empty()).collect();
        let shown: Vec<String> = lines.iter().map(|line| String::from_utf8_lossy(line).into_owned()).collect();
        assert_eq!(lines.len(), 2, "{mode}: two records: {shown:?}");
        assert!(shown[0].starts_with("e1 1764892800123 id="), "{mode}: key and timestamp: {shown:?}");
        assert!(lines[0].ends_with(b",type=Created 3|\x00\xffA"), "{mode}: the bytea's own bytes: {shown:?}");
        assert!(shown[1].starts_with("e1 1764892800500 id="), "{mode}: the +02 time in UTC: {shown:?}");
        assert!(shown[1].ends_with(",type=Renamed -1|"), "{mode}: a NULL payload is a null value: {shown:?}");
    }
}

/// A slot and publication made by hand before the relay's first start: rows committed after the
/// slot are in its stream and relayed; a row committed before it, with no order column to place
/// it, is refused by name (the hand-made slot kept).
#[test]
fn a_slot_made_by_hand_is_checked_for_rows_it_cannot_decode() {
    let cluster = PgCluster::start_logical();
    postgres_tables(&cluster, false);
    let insert = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) \
                  VALUES (gen_random_uuid(), 'order', 'a0', 'Bumped', '{\"v\": 1}')";
    cluster.psql("CREATE PUBLICATION once_outbox_outbox FOR TABLE outbox WITH (publish = 'insert')");
    cluster.psql(insert);
    cluster.psql("SELECT pg_create_logical_replication_slot('once_outbox_outbox', 'pgoutput')");
    cluster.psql(insert);
    cluster.psql(insert);
    let url = cluster.url();
    assert_fails(&["--database", &url, "--mode", "logical"], "1 unsent rows committed before the slot");
    assert_eq!(cluster.psql("SELECT count(*) FROM pg_replication_slots"), "1", "a slot it did not create is kept");
    cluster.psql("DELETE FROM outbox WHERE id = (SELECT id FROM outbox ORDER BY created_at LIMIT 1)");
    let broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("relay.log");
    let database = Postgres { cluster, args: vec!["--mode", "logical", "--poll-ms", "50"] };
    let mut relay = spawn_relay(&broker, &database, &[], &[], &log);
    wait_until("the two later rows to be relayed", Duration::from_secs(20), || database.unsent() == 0);
    signal(&relay, "TERM");
    assert!(relay.wait().expect("wait").success(), "SIGTERM ends the relay with 0");
    assert_eq!(read_topics(&broker).len(), 2, "the rows the slot decodes, once each");
}

/// The relay as a role with REPLICATION that owns the table and may create in the database (not a
/// superuser): it starts, and starts again (its checks read no catalog it may not). After its
/// slot is dropped (as when retiring it, or after an invalidation), rows written meanwhile are
/// older than the new slot: the next start checks again and refuses them by count.
#[test]
fn a_replication_role_restarts_and_a_dropped_slot_is_checked_again() {
    let cluster = PgCluster::start_logical();
    postgres_tables(&cluster, false);
    cluster.psql(
        "CREATE ROLE relay LOGIN REPLICATION; GRANT CREATE ON DATABASE postgres TO relay; \
         ALTER TABLE outbox OWNER TO relay",
    );
    let url = cluster.url().replace("postgres://postgres@", "postgres://relay@");
    start_decoding(&url, &[]);
    start_decoding(&url, &[]);
    let marked = "SELECT obj_description(oid, 'pg_publication') IS NOT NULL FROM pg_publication";
    assert_eq!(cluster.psql(marked), "t", "the check is recorded by the publication's owner");
    cluster.psql("SELECT pg_drop_replication_slot('once_outbox_outbox')");
    for _ in 0..2 {
        cluster.psql(
            "INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES (gen_random_uuid(), 'order', 'a0', 'Lost?')",
        );
    }
    assert_fails(&["--database", &url, "--mode", "logical"], "2 unsent rows committed before the slot");
    assert_eq!(cluster.psql("SELECT count(*) FROM pg_replication_slots"), "0", "the slot it just made is dropped");
}

/// A partitioned outbox: the publication publishes through the partition root, so the inserts
/// arrive under the table's own id (not its partitions') and are relayed.
#[test]
fn a_partitioned_outbox_is_decoded() {
    let cluster = PgCluster::start_logical();
    cluster.psql(
        "CREATE TABLE outbox (id UUID, aggregatetype TEXT, aggregateid TEXT, type TEXT, payload JSONB, \
         PRIMARY KEY (id, aggregatetype)) PARTITION BY LIST (aggregatetype);\
         CREATE TABLE outbox_order PARTITION OF outbox FOR VALUES IN ('order');\
         CREATE TABLE outbox_customer PARTITION OF outbox FOR VALUES IN ('customer');",
    );
    let broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("relay.log");
    let database = Postgres { cluster, args: vec!["--mode", "logical", "--poll-ms", "50"] };
    let mut relay = spawn_relay(&broker, &database, &[], &[], &log);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the relay to follow its slot", Duration::from_secs(20), || read().contains("decoding the outbox"));
    database.execute(
        "INSERT INTO outbox VALUES (gen_random_uuid(), 'order', 'a0', 'Bumped', '{\"v\": 1}'), \
                                   (gen_random_uuid(), 'customer', 'a3', 'Bumped', '{\"v\": 1}')",
    );
    wait_until("both rows to be relayed", Duration::from_secs(20), || database.unsent() == 0);
    signal(&relay, "TERM");
    assert!(relay.wait().expect("wait").success(), "SIGTERM ends the relay with 0:\n{}", read());
    let records = read_topics(&broker);
    assert_eq!(records.len(), 2, "both partitions' rows relayed: {records:?}");
}

/// Runs a relay until it follows its slot (created if missing), then stops it; no broker needed.
fn start_decoding(url: &str, args: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("relay.log");
    let log = std::fs::File::create(&log_path).expect("relay log");
    let mut relay = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["outbox", "--bootstrap", "127.0.0.1:1", "--database", url, "--mode", "logical"])
        .args(args)
        .env("ONCE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn once outbox");
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until("the relay to follow its slot", Duration::from_secs(20), || read().contains("decoding the outbox"));
    signal(&relay, "TERM");
    assert!(relay.wait().expect("wait").success(), "SIGTERM ends the relay with 0; log:\n{}", read());
}

/// An idle outbox's slot still moves with the WAL other tables write (the heartbeat), so it holds
/// none back; a role without REPLICATION gets a clear error, and `--mode auto` says why it polls.
#[test]
fn an_idle_logical_slot_follows_the_wal_and_errors_are_clear() {
    let cluster = PgCluster::start_logical();
    postgres_tables(&cluster, false);
    let url = cluster.url();
    cluster.psql("CREATE ROLE app LOGIN; GRANT ALL ON outbox TO app; CREATE TABLE busy (x BIGINT)");
    let app_url = url.replace("postgres://postgres@", "postgres://app@");
    assert_fails(&["--database", &app_url, "--mode", "logical"], "ALTER ROLE app REPLICATION");
    // --mode auto polls, which this uuid-keyed table cannot do; the error says both why.
    assert_fails(&["--database", &app_url], "ALTER ROLE app REPLICATION");
    assert_fails(&["--database", &app_url], "uuid");

    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("relay.log");
    let broker = BrokerProcess::start(&[]);
    let database = Postgres { cluster, args: vec!["--mode", "logical", "--poll-ms", "50"] };
    let mut relay = spawn_relay(&broker, &database, &[], &[], &log);
    let slot_lsn = || database.query("SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots");
    wait_until("the relay to create its slot", Duration::from_secs(20), || !slot_lsn().is_empty());
    database.execute("INSERT INTO busy SELECT generate_series(1, 100000)");
    let written: f64 = database.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").parse().expect("an lsn");
    wait_until("the idle slot to pass the WAL written since", Duration::from_secs(20), || {
        slot_lsn().parse::<f64>().expect("an lsn") >= written
    });
    database.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES (gen_random_uuid(), 'order', 'a0', 'Bumped')",
    );
    wait_until("the row to be relayed", Duration::from_secs(20), || database.unsent() == 0);
    // One relay per slot: a second one stops at once, naming the first.
    assert_fails(&["--database", &database.url(), "--mode", "logical"], "another once outbox is relaying");
    signal(&relay, "TERM");
    assert!(relay.wait().expect("wait").success(), "SIGTERM ends the relay with 0");
    assert_eq!(read_topics(&broker).len(), 1, "the row relayed once");
}

/// A relay SIGKILLed while its session waits inside a statement (its DELETE behind a lock the
/// application holds) leaves that session, and the slot's advisory lock, to PostgreSQL: the
/// session checks for its client every second and ends, so the next relay takes the lock and
/// starts; the row is relayed once.
#[test]
fn a_relay_killed_inside_a_statement_does_not_keep_the_next_one_out() {
    let cluster = PgCluster::start_logical();
    postgres_tables(&cluster, false);
    let broker = BrokerProcess::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("relay.log");
    let database = Postgres { cluster, args: vec!["--mode", "logical", "--poll-ms", "50"] };
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // A first relay creates the slot and shows no unsent row predates it, then stops.
    let mut first = spawn_relay(&broker, &database, &[], &[], &log);
    wait_until("the first relay to follow its slot", Duration::from_secs(20), || {
        read().contains("relaying the outbox")
    });
    signal(&first, "TERM");
    assert!(first.wait().expect("wait").success(), "SIGTERM ends the relay with 0; log:\n{}", read());
    database.execute(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type) VALUES (gen_random_uuid(), 'order', 'a0', 'Bumped')",
    );
    // A lock the relay's DELETE waits for (the INSERT came before it).
    let mut holder = Command::new("psql")
        .arg(format!("{}?application_name=lock_holder", database.url()))
        .args(["-c", "BEGIN; LOCK TABLE outbox IN SHARE MODE; SELECT pg_sleep(300)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn psql");
    let held = "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid) \
                WHERE application_name = 'lock_holder' AND mode = 'ShareLock' AND granted";
    wait_until("the application to hold its lock", Duration::from_secs(20), || database.query(held) == "1");
    let mut killed = spawn_relay(&broker, &database, &[], &[], &log);
    let waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE%'";
    wait_until("the relay's DELETE to wait for the lock", Duration::from_secs(30), || {
        !database.query(waiting).is_empty()
    });
    let killed_session = database.query(waiting);
    killed.kill().expect("SIGKILL the relay");
    killed.wait().expect("reap the relay");

    let started_before = relay_starts(&log);
    let mut next = spawn_relay(&broker, &database, &[], &[], &log);
    wait_for_relay_start("the next relay", &database, &mut next, &log, started_before);
    let session_left = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {killed_session}");
    assert_eq!(database.query(&session_left), "0", "the killed relay's session has ended");
    database.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lock_holder'");
    holder.wait().expect("reap psql");
    wait_until("the row to be relayed", Duration::from_secs(20), || database.unsent() == 0);
    signal(&next, "TERM");
    assert!(next.wait().expect("wait").success(), "SIGTERM ends the relay with 0; log:\n{}", read());
    assert_eq!(read_topics(&broker).len(), 1, "the row stored once");
}

#[test]
fn sqlite_outbox_under_relay_and_broker_kills_is_relayed_exactly_once_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = Sqlite(dir.path().join("app.db"));
    database.execute(
        "PRAGMA journal_mode = WAL;\
         CREATE TABLE aggregates (name TEXT PRIMARY KEY, kind TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 0);\
         CREATE TABLE outbox (id TEXT NOT NULL UNIQUE, aggregatetype TEXT NOT NULL, aggregateid TEXT NOT NULL, \
         type TEXT NOT NULL, payload TEXT, sent_at TEXT);",
    );
    for (name, kind) in AGGREGATES {
        database.execute(&format!("INSERT INTO aggregates (name, kind) VALUES ('{name}', '{kind}')"));
    }
    relay_under_kills(&database, seed(20261205));
}

/// Runs `once outbox ARGS` (no broker is needed to fail) and checks it fails naming the problem.
fn assert_fails(args: &[&str], expected: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["outbox", "--bootstrap", "127.0.0.1:1"])
        .args(args)
        .output()
        .expect("run once outbox");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?}: exits non-zero");
    assert!(stderr.contains(expected), "{args:?}: stderr names the problem: {stderr}");
}

#[test]
fn a_missing_table_or_a_bad_url_ends_the_relay_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.db");
    rusqlite::Connection::open(&path).expect("create").execute_batch("CREATE TABLE other (x INTEGER)").expect("ddl");
    let sqlite = format!("sqlite://{}", path.display());
    assert_fails(&["--database", &sqlite], "no table 'outbox'");
    assert_fails(&["--database", &sqlite, "--table", "other", "--after-send", "mark"], "has no column 'id'");
    assert_fails(&["--database", "mysql://localhost/db"], "expected sqlite://PATH or postgres://");
    let absent = format!("sqlite://{}", dir.path().join("absent.db").display());
    assert_fails(&["--database", &absent], "unable to open");
    assert_fails(&["--database", &sqlite, "--after-send", "keep"], "expected 'delete' or 'mark'");
}

/// A topic that exists already is used as it is; one without `dedup.source=header:id` is named in
/// a warning (a resend after a crash would be stored twice there), one created by the relay is not.
#[test]
fn an_existing_topic_without_dedup_is_used_and_warned_about() {
    let broker = BrokerProcess::start(&[]);
    once(&["topic", "create", "outbox.event.order", "--partitions", "1", "--bootstrap", &broker.bootstrap()]);
    let dir = tempfile::tempdir().expect("temp dir");
    let database = Sqlite(dir.path().join("app.db"));
    database.execute(
        "CREATE TABLE outbox (id TEXT, aggregatetype TEXT, aggregateid TEXT, type TEXT, payload TEXT, sent_at TEXT);\
         INSERT INTO outbox VALUES ('e1', 'order', 'a0', 'Bumped', '{\"v\":1}', NULL), \
                                   ('e2', 'customer', 'a3', 'Bumped', '{\"v\":1}', NULL);",
    );
    let log = dir.path().join("relay.log");
    let mut relay = spawn_relay(&broker, &database, &[], &[], &log);
    wait_until("the relay to send both rows", Duration::from_secs(30), || database.unsent() == 0);
    signal(&relay, "TERM");
    assert!(relay.wait().expect("wait for the relay").success(), "SIGTERM ends the relay with 0");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let warned = |topic: &str| {
        log_text
            .lines()
            .any(|line| line.contains("does not deduplicate") && line.contains(&format!("topic=\"{topic}\"")))
    };
    assert!(warned("outbox.event.order"), "the pre-made topic is warned about; log:\n{log_text}");
    assert!(!warned("outbox.event.customer"), "the relay's own topic deduplicates; log:\n{log_text}");
    assert_eq!(read_topics(&broker).len(), 2, "both rows relayed");
}
