//! The `group` workload of `once check` end to end against a real `once serve` that the checker
//! starts, kills with SIGKILL and restarts: no anomaly while members crash under proxy faults and
//! kill -9, and anomalies found when members commit a batch before processing it. Every assertion
//! message carries the seed.

use std::path::Path;

use once_check::{CheckArgs, Fault, Workload};

fn args(data: &Path, duration: u64, seed: u64) -> CheckArgs {
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("free port");
    CheckArgs {
        bootstrap: port.to_string(),
        workload: Workload::Group,
        duration,
        seed: Some(seed),
        json: Some(data.join("report.json")),
        broker_cmd: Some(format!("{} serve --data-dir {}", env!("CARGO_BIN_EXE_once"), data.join("data").display())),
        broker_log: Some(data.join("broker.log")),
        proxy: None,
        faults: vec![Fault::Reset, Fault::Delay, Fault::LostResponse, Fault::Duplicate, Fault::Kill, Fault::Crash],
        fault_probability: 0.01,
        partitions: 3,
        producers: 2,
        rate: 400,
        producer_idempotence: true,
        members: 3,
        commit_before_process: false,
    }
}

fn report(data: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(data.join("report.json")).expect("read the JSON report");
    serde_json::from_str(&text).expect("the report is JSON")
}

fn count(report: &serde_json::Value, pointer: &str) -> u64 {
    report.pointer(pointer).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("{pointer} in {report}"))
}

#[test]
fn group_members_crashing_under_proxy_faults_and_kill_9_have_no_anomaly() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 5);
    let passed = once_check::run(args(temp.path(), 8, seed)).expect("the check runs");
    let report = report(temp.path());
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert!(count(&report, "/acked") > 1000, "seed {seed}: too few acknowledged sends");
    assert!(count(&report, "/faults/crash") >= 1, "seed {seed}: members crashed");
    assert!(count(&report, "/faults/crashed_client_cutoff") >= 1, "seed {seed}: the proxy cut crashed clients off");
    assert!(count(&report, "/faults/kill") >= 1, "seed {seed}: the broker was killed");
    assert!(count(&report, "/commits/acked") > 10, "seed {seed}: offsets were committed");
    assert_eq!(report["final_read_complete"], true, "seed {seed}");
    for resume in report["resume"].as_array().expect("resume") {
        assert_eq!(resume["first_polled"], resume["committed"], "seed {seed}: the fresh consumer resumed there");
    }
    assert!(report["anomalies"].as_object().expect("counts").values().all(|count| count == 0));
}

#[test]
fn committing_before_processing_and_crashing_between_is_caught() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 9);
    let mut args = args(temp.path(), 6, seed);
    args.commit_before_process = true;
    args.faults = vec![Fault::Crash];
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: records committed but never processed must be caught");
    assert!(count(&report, "/faults/crash") >= 1, "seed {seed}: members crashed");
    assert!(count(&report, "/anomalies/committed-beyond-processed") > 0, "seed {seed}: {}", report["anomalies"]);
    assert!(count(&report, "/anomalies/lost") > 0, "seed {seed}: {}", report["anomalies"]);
    let detail = &report["anomaly_details"][0];
    assert_eq!(detail["class"], "committed-beyond-processed", "seed {seed}");
    assert!(!detail["unprocessed"].as_array().expect("offsets").is_empty(), "the evidence names the offsets");
}
