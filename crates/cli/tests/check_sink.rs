//! The `sink` workload of `once check` end to end: real `once sink` processes into a real SQLite file
//! and a real PostgreSQL (a throw-away cluster), against a real `once serve` that the checker
//! starts, kills with SIGKILL, cuts the power of and restarts; sinks killed mid-batch and paused past
//! their session timeout into zombies. No anomaly with the exactly-once sink; duplicated effects
//! caught, and the exit code 1, with the at-least-once sink that commits group offsets after its
//! database commit. Every assertion message carries the seed.

mod check_support;

#[path = "../../sink/tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::process::Command;

use check_support::{count, once_serve, report};
use once_check::{CheckArgs, Fault, Workload};

fn args(data: &Path, duration: u64, seed: u64) -> CheckArgs {
    let mut args = check_support::args(data, Workload::Sink, once_serve(data), duration, seed);
    args.faults.extend([Fault::ClientKill, Fault::ClientPause]);
    args.partitions = 6;
    args.rate = 300;
    args
}

/// What every clean run must show: faults of every kind injected, the sinks drained, and each input
/// record applied once with the positions at the end of every partition.
fn assert_clean(report: &serde_json::Value, passed: bool, seed: u64) {
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert_eq!(report["valid"], true, "seed {seed}");
    assert!(count(report, "/acked") > 1000, "seed {seed}: too few acknowledged sends");
    let crashes = count(report, "/faults/kill") + count(report, "/faults/power_loss");
    assert!(crashes >= 1, "seed {seed}: the broker was killed or lost power");
    assert!(count(report, "/faults/client_kill") >= 1, "seed {seed}: sinks were killed");
    assert!(count(report, "/faults/client_pause") >= 1, "seed {seed}: sinks were paused into zombies");
    assert!(count(report, "/faults/database_stall") >= 1, "seed {seed}: faults struck inside a stalled database");
    // Refused batches are reported, not required: a zombie's batch is refused only if the group gave
    // its partitions to another sink that applied something before it woke, and how soon the group
    // settles depends on the broker's crashes and the other sinks' deaths around the pause.
    assert_eq!(report["drain"]["complete"], true, "seed {seed}");
    assert_eq!(report["input_read_complete"], true, "seed {seed}");
    assert_eq!(count(report, "/effects"), count(report, "/input_records"), "seed {seed}: one effect each");
    let positions: Vec<u64> =
        report["positions"].as_array().expect("positions").iter().map(|p| p.as_u64().expect("a row")).collect();
    let ends: Vec<u64> =
        report["input_read_to"].as_array().expect("ends").iter().map(|e| e.as_u64().expect("end")).collect();
    assert_eq!(positions, ends, "seed {seed}: every stored position at the end of its partition");
    assert!(report["anomalies"].as_object().expect("counts").values().all(|count| count == 0));
}

/// libtest starts tests in name order, two at a time here: this one and the at-least-once one start
/// together, the SQLite one when the first of them ends.
#[test]
fn exactly_once_sinks_killed_and_paused_into_postgres_under_broker_and_proxy_faults_apply_every_record_once() {
    let cluster = pg::PgCluster::start();
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 4);
    let mut args = args(temp.path(), 20, seed);
    args.sink_database = Some(cluster.url());
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert_clean(&report, passed, seed);
    let effects = cluster.psql("SELECT count(*) FROM once_check_effects");
    assert_eq!(effects, count(&report, "/effects").to_string(), "seed {seed}: the report counts the table's rows");
}

#[test]
fn exactly_once_sinks_killed_and_paused_into_sqlite_under_broker_and_proxy_faults_apply_every_record_once() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 1);
    let passed = once_check::run(args(temp.path(), 20, seed)).expect("the check runs");
    let report = report(temp.path());
    assert_clean(&report, passed, seed);
    assert!(report["database"].as_str().expect("database").starts_with("sqlite://"), "seed {seed}: the default");
}

/// `once sink --at-least-once after`: positions in the group's committed offsets, committed after
/// each database commit. A sink paused inside its batch (the database stalled around the fault) keeps
/// the batch while the group hands its partitions, at their committed offsets, to another sink; let
/// go, it applies the batch too. Each pause makes such a zombie, so the run fails for certain, and
/// `once check` exits 1.
#[test]
fn an_at_least_once_sink_paused_into_a_zombie_is_caught_duplicating_effects() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 2);
    let data = temp.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("port");
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["check", "--workload", "sink", "--bootstrap", &port.to_string(), "--broker-cmd", &once_serve(data)])
        .arg("--broker-log")
        .arg(data.join("broker.log"))
        .args(["--duration", "15", "--seed", &seed.to_string(), "--partitions", "6", "--rate", "300"])
        .args(["--faults", "client-pause", "--sink-at-least-once", "after"])
        .arg("--json")
        .arg(data.join("report.json"))
        .output()
        .expect("run once check");
    let report = report(data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "seed {seed}: anomalies exit 1\n{stdout}");
    assert!(stdout.contains("AT LEAST ONCE (after)"), "seed {seed}: the table says how the sinks ran\n{stdout}");
    assert_eq!(report["valid"], false, "seed {seed}");
    assert!(count(&report, "/faults/client_pause") >= 1, "seed {seed}: sinks were paused into zombies");
    assert!(count(&report, "/anomalies/duplicate-effect") > 0, "seed {seed}: {}", report["anomalies"]);
    assert_eq!(count(&report, "/anomalies/lost-effect"), 0, "seed {seed}: after the commit, nothing is lost");
    // The zombie applies its batch, and so does the partition's next owner (which may be the zombie
    // itself once it rejoins the group, its own commit having failed): some duplicate names a sink
    // that was paused.
    let paused: Vec<String> = report["sink_runs"]
        .as_array()
        .expect("sink runs")
        .iter()
        .filter(|run| !run["pauses"].as_array().expect("pauses").is_empty())
        .map(|run| run["id"].to_string())
        .collect();
    let details = report["anomaly_details"].as_array().expect("details");
    let duplicates: Vec<&serde_json::Value> =
        details.iter().filter(|detail| detail["class"] == "duplicate-effect").collect();
    let sinks = |detail: &serde_json::Value| -> Vec<String> {
        let effects = detail["effects"].as_array().expect("effects");
        effects.iter().map(|effect| effect["sink"].as_str().expect("sink").to_string()).collect()
    };
    assert!(duplicates.iter().all(|detail| sinks(detail).len() >= 2), "seed {seed}: each names its effects");
    assert!(
        duplicates.iter().any(|detail| sinks(detail).iter().any(|sink| paused.contains(sink))),
        "seed {seed}: a zombie (one of {paused:?}) applied a duplicate: {duplicates:?}"
    );
    // No positions in the database: what it holds does not say what was applied.
    assert!(count(&report, "/anomalies/position-mismatch") > 0, "seed {seed}: {}", report["anomalies"]);
}
