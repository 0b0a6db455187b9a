//! The `dedup` workload of `once check` end to end against a real `once serve` that the checker
//! starts, kills with SIGKILL and restarts, with real producer processes (`once check-producer`) that
//! it kills with SIGKILL mid-send: every message id stored exactly once under every fault, and the
//! duplicates caught when the topic does not deduplicate. Every assertion message carries the seed.

mod check_support;

use std::path::Path;

use check_support::{count, once_serve, report};
use once_check::{CheckArgs, DedupSource, Fault, Workload};

fn args(data: &Path, duration: u64, seed: u64) -> CheckArgs {
    let mut args = check_support::args(data, Workload::Dedup, once_serve(data), duration, seed);
    args.faults.push(Fault::ClientKill);
    args
}

/// Seed 83's schedule in 7 s: a power loss, a broker pause, a kill -9, proxy fault windows, and
/// producer processes killed every 1–3 s.
#[test]
fn resends_from_fresh_producers_killed_under_proxy_faults_and_kill_9_are_stored_once() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 83);
    let passed = once_check::run(args(temp.path(), 7, seed)).expect("the check runs");
    let report = report(temp.path());
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert_eq!(report["dedup_source"], "header:once-check-id", "seed {seed}");
    assert!(count(&report, "/acked") > 1000, "seed {seed}: too few acknowledged sends");
    assert!(count(&report, "/faults/kill") >= 1, "seed {seed}: the broker was killed with SIGKILL");
    assert!(count(&report, "/faults/power_loss") >= 1, "seed {seed}: the power was cut");
    assert!(count(&report, "/faults/reset") >= 1, "seed {seed}: connections were reset");
    assert!(count(&report, "/faults/client_kill") >= 1, "seed {seed}: producers were killed mid-send");
    assert!(count(&report, "/resends/of_acked") > 100, "seed {seed}: acknowledged ids were resent");
    assert!(count(&report, "/resends/of_unanswered") >= 1, "seed {seed}: unanswered sends were resent");
    assert!(count(&report, "/answers/offset") > 0, "seed {seed}: some answers named offsets (checked)");
    assert!(count(&report, "/answers/unknown_offset") > 0, "seed {seed}: dropped records were answered unknown");
    assert_eq!(report["final_read_complete"], true, "seed {seed}");
    assert_eq!(count(&report, "/ids/stored"), count(&report, "/final_read_records"), "seed {seed}: once each");
    assert!(count(&report, "/ids/stored") >= count(&report, "/ids/acked"), "seed {seed}");
    assert!(report["anomalies"].as_object().expect("counts").values().all(|count| count == 0));
}

#[test]
fn resends_to_a_topic_that_does_not_deduplicate_are_caught_as_duplicates() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 4);
    let mut args = args(temp.path(), 3, seed);
    args.faults = vec![Fault::ClientKill];
    args.dedup_source = DedupSource::None;
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: resent ids stored again must be caught");
    assert_eq!(report["dedup_source"], serde_json::Value::Null, "seed {seed}");
    assert!(count(&report, "/anomalies/duplicate") > 0, "seed {seed}: {}", report["anomalies"]);
    let detail = &report["anomaly_details"][0];
    assert_eq!(detail["class"], "duplicate", "seed {seed}");
    assert!(detail["places"].as_array().expect("places").len() >= 2, "the evidence names both offsets");
    assert!(detail["sends"].as_u64().expect("sends") >= 2, "the evidence counts the id's sends");
    assert_eq!(count(&report, "/anomalies/lost"), 0, "seed {seed}: nothing acknowledged is missing");
}
