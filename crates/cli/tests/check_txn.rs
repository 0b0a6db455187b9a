//! The `txn` workload of `once check` end to end against a real `once serve` that the checker starts,
//! kills with SIGKILL and restarts, with real `once copy` processes that it kills and pauses: no
//! anomaly under every fault, and anomalies found in set-ups that are broken on purpose (the
//! "committed" consumer reading uncommitted records: aborted and precommitted reads; an
//! at-least-once copier killed mid-copy). Every
//! assertion message carries the seed.

mod check_support;

use std::path::Path;

use check_support::{count, once_serve, report};
use once_check::{CheckArgs, Fault, Isolation, Workload};

fn args(data: &Path, duration: u64, seed: u64) -> CheckArgs {
    let mut args = check_support::args(data, Workload::Txn, once_serve(data), duration, seed);
    args.faults.extend([Fault::ClientKill, Fault::ClientPause]);
    args
}

/// The longest test of this file, so named that it sorts (and so starts) first: libtest starts tests
/// in name order, two at a time here, and the two short ones then run beside it rather than before it.
///
/// Seed 10's schedules in 8 s: a copier killed, a copier paused, the broker killed with SIGKILL,
/// input producers killed every 1–3 s, proxy fault windows.
#[test]
fn copiers_killed_and_paused_under_proxy_faults_and_kill_9_copy_exactly_once() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 10);
    let passed = once_check::run(args(temp.path(), 8, seed)).expect("the check runs");
    let report = report(temp.path());
    assert!(passed, "seed {seed}: anomalies {}", report["anomaly_details"]);
    assert!(count(&report, "/acked") > 1000, "seed {seed}: too few acknowledged sends");
    assert!(count(&report, "/faults/kill") >= 1, "seed {seed}: the broker was killed with SIGKILL");
    assert!(count(&report, "/faults/reset") >= 1, "seed {seed}: connections were reset");
    assert!(count(&report, "/faults/client_kill") >= 1, "seed {seed}: copiers were killed");
    assert!(count(&report, "/faults/producer_kill") >= 1, "seed {seed}: input producers were killed mid-send");
    assert!(count(&report, "/faults/client_pause") >= 1, "seed {seed}: copiers were paused");
    assert!(count(&report, "/faults/fenced_zombie") >= 1, "seed {seed}: a resumed zombie exited fenced");
    assert!(count(&report, "/uncommitted_reads") > 0, "seed {seed}: aborted records existed to be hidden");
    assert!(count(&report, "/traced_commits") >= 5, "seed {seed}: commit times to check reads against");
    assert_eq!(report["copiers"]["final_copy_finished"], true, "seed {seed}");
    assert_eq!(report["input_read_complete"], true, "seed {seed}");
    assert_eq!(report["output_read_complete"], true, "seed {seed}");
    assert_eq!(count(&report, "/output_records"), count(&report, "/input_records"), "seed {seed}: one copy each");
    assert!(report["anomalies"].as_object().expect("counts").values().all(|count| count == 0));
}

/// The uncommitted consumer sees each record as soon as it is written, up to a 100-ms transaction
/// before its copier asks to commit: a record read more than 20 ms before that is a precommitted
/// read, and most transactions have some.
#[test]
fn copy_read_by_an_uncommitted_consumer_in_place_of_the_committed_one_is_caught_reading_aborted_and_precommitted_records(
) {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 3);
    let mut args = args(temp.path(), 3, seed);
    args.faults = vec![];
    args.txn_consumer_isolation = Isolation::ReadUncommitted;
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: reads of aborted records must be caught");
    assert!(count(&report, "/anomalies/aborted-read") > 0, "seed {seed}: {}", report["anomalies"]);
    let detail = &report["anomaly_details"][0];
    assert_eq!(detail["class"], "aborted-read", "seed {seed}");
    assert_ne!(detail["committed_value"], detail["value"], "the evidence shows what was committed there instead");
    assert!(detail["offset"].is_u64() && detail["time_ms"].is_u64(), "the evidence names the offset and the time");
    assert!(count(&report, "/anomalies/precommitted-read") > 0, "seed {seed}: {}", report["anomalies"]);
    let details = report["anomaly_details"].as_array().expect("details");
    let early = details.iter().find(|detail| detail["class"] == "precommitted-read").expect("a precommitted read");
    assert!(count(early, "/commit_ms") > count(early, "/time_ms") + 20, "seed {seed}: {early}");
    assert_eq!(count(early, "/early_ms"), count(early, "/commit_ms") - count(early, "/time_ms"), "seed {seed}");
    assert!(early["copier"].is_u64() && early["transaction"].is_u64(), "seed {seed}: the evidence names the writer");
}

#[test]
fn copy_by_an_at_least_once_copier_killed_mid_copy_is_caught_duplicating() {
    let (temp, seed) = (tempfile::tempdir().expect("temp dir"), 10);
    // `once copy --no-transactions` refuses the transactional flags the checker passes: drop them.
    let script = temp.path().join("copy-at-least-once.sh");
    let text = format!(
        "#!/bin/sh\nskip=0\nfor arg do\n  shift\n  if [ \"$skip\" = 1 ]; then skip=0; continue; fi\n  case \"$arg\" in\n    \
         --transactional-id|--abort-probability) skip=1; continue ;;\n  esac\n  set -- \"$@\" \"$arg\"\ndone\n\
         exec {} --no-transactions \"$@\"\n",
        check_support::once_copy()
    );
    std::fs::write(&script, text).expect("write the wrapper");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut args = args(temp.path(), 4, seed);
    args.faults = vec![Fault::ClientKill];
    args.copier_cmd = Some(script.display().to_string());
    let passed = once_check::run(args).expect("the check runs");
    let report = report(temp.path());
    assert!(!passed, "seed {seed}: records copied again after a kill must be caught");
    assert!(count(&report, "/faults/client_kill") >= 1, "seed {seed}: copiers were killed");
    assert!(count(&report, "/anomalies/duplicate") > 0, "seed {seed}: {}", report["anomalies"]);
    let detail = &report["anomaly_details"][0];
    assert_eq!(detail["class"], "duplicate", "seed {seed}");
    assert!(detail["output"].as_array().expect("places").len() >= 2, "the evidence names both output offsets");
}
