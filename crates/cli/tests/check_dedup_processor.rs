//! The `dedup-processor` workload of `once check` end to end against a real `once serve` that the
//! checker starts, kills with SIGKILL and restarts, with real `once dedup` processes that it kills
//! with SIGKILL, pauses into zombies and replaces, fed by real producer processes
//! (`once check-producer`) that resend message ids and are killed mid-send: every id in the output
//! exactly once, as its first record; and the duplicates caught when the processors look for the id
//! where the producers do not put it. Every assertion message carries the seed.

mod check_support;

use std::path::Path;

use check_support::{count, once_serve, report};
use once_check::{CheckArgs, Fault, ProcessorSource, Workload};

fn args(data: &Path, duration: u64, seed: u64) -> CheckArgs {
    let mut args = check_support::args(data, Workload::DedupProcessor, once_serve(data), duration, seed);
    args.faults.extend([Fault::ClientKill, Fault::ClientPause]);
    args
}

/// Seed 33's schedule in 8 s: a processor paused at about 2.9 s for 7.5 s (past its session and
/// transaction timeouts: it wakes a zombie), the broker paused at about 3.7 s for 1 s, a processor
/// killed at about 5.7 s, producer processes killed every 1–3 s, proxy fault windows. The broker
/// aborts timed-out transactions every 500 ms, so that a dead processor's transaction ends before
/// its session does; broker crashes are left out: with them (or with the broker's default 10-s abort
/// check) `once dedup` passes ids twice (docs/reliability.md, the `dedup-processor` workload).
#[test]
fn processors_killed_paused_and_replaced_under_proxy_faults_and_broker_pauses_pass_each_id_on_once() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 33);
    let mut args = args(temp.path(), 8, seed);
    args.broker_cmd = Some(format!("{} --transaction-abort-check-interval-ms 500", once_serve(temp.path())));
    args.faults.retain(|fault| !matches!(fault, Fault::Kill | Fault::PowerLoss));
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert_eq!(report["source"], "header:once-check-id", "seed {seed}");
    assert!(count(&report, "/acked") > 1000, "seed {seed}: too few acknowledged sends");
    assert!(count(&report, "/faults/broker_pause") >= 1, "seed {seed}: the broker was paused");
    assert!(count(&report, "/faults/reset") >= 1, "seed {seed}: connections were reset");
    assert!(count(&report, "/faults/client_kill") >= 1, "seed {seed}: processors were killed");
    assert!(count(&report, "/faults/client_pause") >= 1, "seed {seed}: processors were paused");
    assert!(count(&report, "/faults/producer_kill") >= 1, "seed {seed}: producers were killed mid-send");
    assert!(count(&report, "/resends/of_acked") > 100, "seed {seed}: acknowledged ids were resent");
    assert!(count(&report, "/processors/restores") >= 1, "seed {seed}: an index was restored from the changelog");
    assert_eq!(report["drain"]["complete"], true, "seed {seed}");
    assert_eq!(report["output_read_complete"], true, "seed {seed}");
    assert!(count(&report, "/input_records") > count(&report, "/ids/input"), "seed {seed}: the input holds resends");
    assert_eq!(count(&report, "/ids/output"), count(&report, "/ids/input"), "seed {seed}: every id passed on");
    assert_eq!(count(&report, "/output_records"), count(&report, "/ids/output"), "seed {seed}: once each");
    assert!(count(&report, "/ids/output") >= count(&report, "/ids/acked"), "seed {seed}");
    assert!(report["anomalies"].as_object().expect("counts").values().all(|count| count == 0));
    let page = std::fs::read_to_string(temp.path().join("report.html")).expect("the HTML report");
    assert!(page.contains("processor kill -9 ("), "seed {seed}: a lane for the processor kills");
}

#[test]
fn processors_reading_the_id_from_a_key_the_producers_do_not_send_are_caught_passing_duplicates() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 4);
    let mut args = args(temp.path(), 3, seed);
    args.faults = vec![Fault::ClientKill];
    args.processor_source = ProcessorSource::Key;
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: resent ids passed on again must be caught");
    assert_eq!(report["source"], "key", "seed {seed}");
    assert!(count(&report, "/anomalies/duplicate") > 0, "seed {seed}: {}", report["anomalies"]);
    let detail = &report["anomaly_details"][0];
    assert_eq!(detail["class"], "duplicate", "seed {seed}");
    assert!(detail["records"].as_array().expect("records").len() >= 2, "the evidence names every record");
    assert!(detail["sends"].as_u64().expect("sends") >= 2, "the evidence counts the id's sends");
    for class in ["lost", "unexpected", "not-first"] {
        assert_eq!(count(&report, &format!("/anomalies/{class}")), 0, "seed {seed}: no {class}");
    }
}
