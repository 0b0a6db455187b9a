//! `once check` end to end against a real `once serve` that the checker starts, kills with SIGKILL and
//! restarts: no anomaly under proxy faults and kill -9, and anomalies found in set-ups that are broken
//! on purpose (a non-idempotent producer whose requests the proxy duplicates; acknowledged data
//! destroyed at a restart). Every assertion message carries the seed.

mod check_support;

use check_support::{count, once_serve, report};
use once_check::{Fault, Workload};

fn args(data: &std::path::Path, broker_cmd: String, duration: u64, seed: u64) -> once_check::CheckArgs {
    check_support::args(data, Workload::Queue, broker_cmd, duration, seed)
}

/// Seed 99's schedule in 7 s: a power loss, a broker pause, a kill -9, proxy fault windows.
#[test]
fn queue_under_proxy_faults_and_kill_9_has_no_anomaly() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 99);
    let args = args(temp.path(), once_serve(temp.path()), 7, seed);
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert_eq!(report["valid"], true);
    assert!(report["acked"].as_u64().expect("acked") > 1000, "seed {seed}: too few acknowledged sends");
    assert!(count(&report, "/faults/kill") >= 1, "seed {seed}: the broker was killed with SIGKILL");
    assert!(count(&report, "/faults/power_loss") >= 1, "seed {seed}: the power was cut");
    assert!(count(&report, "/faults/broker_pause") >= 1, "seed {seed}: the broker was paused");
    let page = std::fs::read_to_string(temp.path().join("report.html")).expect("the HTML report");
    assert!(page.contains("<svg"), "the page has its timeline");
    assert!(page.contains("broker kill -9 ("), "seed {seed}: a lane for the kills");
    assert!(page.contains("killed, restarted after"), "seed {seed}: a kill drawn as a span until its restart");
    assert!(page.contains("ack latency of the sends made then: p50"), "seed {seed}: the latency plot has points");
    let acked_per_second: u64 =
        report["per_second"]["acked"].as_array().expect("per_second").iter().filter_map(|n| n.as_u64()).sum();
    assert_eq!(acked_per_second, count(&report, "/acked"), "seed {seed}: per_second counts every acknowledgement");
    assert!(count(&report, "/ack_latency_ms/p50") <= count(&report, "/ack_latency_ms/max"), "seed {seed}");
    assert!(report["faults"]["reset"].as_u64().expect("resets") >= 1, "seed {seed}: connections were reset");
    assert!(report["faults"]["duplicated_produce"].as_u64().expect("dups") >= 1, "seed {seed}: produces duplicated");
    assert_eq!(report["final_read_complete"], true, "seed {seed}");
    assert!(report["anomalies"].as_object().expect("counts").values().all(|count| count == 0));
}

/// The same power losses against a broker that acknowledges before fsync: lost writes are reported.
#[test]
fn a_broker_acknowledging_before_fsync_is_caught_by_power_loss() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 8);
    let broker_cmd = format!("{} --unsafe-skip-fsync true", once_serve(temp.path()));
    let mut args = args(temp.path(), broker_cmd, 4, seed);
    args.faults = vec![Fault::PowerLoss];
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: acknowledged but unsynced writes must be missed after power loss");
    let anomalies = &report["anomalies"];
    let lost = count(&report, "/anomalies/lost-write") + count(&report, "/anomalies/unseen");
    assert!(lost > 0, "seed {seed}: lost or unseen writes reported: {anomalies}");
}

#[test]
fn a_non_idempotent_producer_behind_a_duplicating_proxy_is_caught() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 11);
    let mut args = args(temp.path(), once_serve(temp.path()), 3, seed);
    args.producer_idempotence = false;
    args.faults = vec![Fault::Duplicate];
    args.fault_probability = 0.2;
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: duplicated requests without idempotence must be caught");
    assert!(report["anomalies"]["duplicate"].as_u64().expect("count") > 0, "seed {seed}: {}", report["anomalies"]);
    let detail = &report["anomaly_details"][0];
    assert_eq!(detail["class"], "duplicate");
    assert!(detail["places"].as_array().expect("places").len() >= 2, "the evidence names both offsets");
}

#[test]
fn acknowledged_data_destroyed_at_a_restart_is_caught() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 8);
    let data = temp.path().join("data");
    let started = temp.path().join("started");
    // A "broker" that empties partition 0's log files whenever it is restarted: acknowledged records
    // vanish, as if the disk had lied about fsync.
    let broker_cmd = format!(
        "sh -c 'if [ -e {started} ]; then for f in {data}/topics/once-check-*/0/*.log; do : > \"$f\"; done; fi; \
         touch {started}; exec {once} serve --data-dir {data} --listen {{listen}} --advertised-listener {{advertised}}'",
        started = started.display(),
        data = data.display(),
        once = env!("CARGO_BIN_EXE_once"),
    );
    let mut args = args(temp.path(), broker_cmd, 4, seed);
    args.faults = vec![Fault::Kill];
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: destroyed acknowledged data must be caught");
    assert!(
        count(&report, "/faults/kill") + count(&report, "/faults/power_loss") >= 1,
        "seed {seed}: the broker was restarted"
    );
    assert!(report["anomalies"]["unseen"].as_u64().expect("count") > 0, "seed {seed}: {}", report["anomalies"]);
}
