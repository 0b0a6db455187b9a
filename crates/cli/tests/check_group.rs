//! The `group` workload of `once check` end to end against a real `once serve` that the checker
//! starts, kills with SIGKILL and restarts: no anomaly while members crash under proxy faults and
//! kill -9, and anomalies found when members commit a batch before processing it. Every assertion
//! message carries the seed.

mod check_support;

use std::path::Path;

use check_support::{count, once_serve, report};
use once_check::{CheckArgs, Fault, Workload};

fn args(data: &Path, duration: u64, seed: u64) -> CheckArgs {
    let mut args = check_support::args(data, Workload::Group, once_serve(data), duration, seed);
    args.faults.push(Fault::Crash);
    args
}

#[test]
fn group_members_crashing_under_proxy_faults_and_kill_9_have_no_anomaly() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 3);
    let passed = once_check::run(args(temp.path(), 6, seed)).expect("the check runs");
    let report = report(temp.path());
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert!(count(&report, "/acked") > 1000, "seed {seed}: too few acknowledged sends");
    assert!(count(&report, "/faults/crash") >= 1, "seed {seed}: members crashed");
    assert!(count(&report, "/faults/crashed_client_cutoff") >= 1, "seed {seed}: the proxy cut crashed clients off");
    assert!(count(&report, "/faults/kill") >= 1, "seed {seed}: the broker was killed with SIGKILL");
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
    let mut args = args(temp.path(), 5, seed);
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
