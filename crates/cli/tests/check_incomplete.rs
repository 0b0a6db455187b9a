//! `once check` as a user runs it (the `once` binary, its exit code and `--json`) when the broker
//! loses data it cannot give back: a topic deleted mid-run and re-created by auto-creation with fewer
//! partitions is a run that completes and reports every acknowledged record of the lost partitions
//! as a lost write (exit 1), and under `dedup`, `txn` and `group` as lost (`lost`, `lost-input`); a broker that does not come back after a kill is a run that cannot
//! complete, and still writes its JSON report, saying why (exit 2) — also when it cannot even start
//! (a managed broker that exits, a topic the broker refuses) — and a report that fails after the
//! JSON was written (the HTML) keeps the full JSON report.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{once, BrokerProcess};

/// Runs `once check` with `args` in the background, its output in `dir/check.log`.
fn spawn_check(dir: &Path, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join("check.log")).expect("check log");
    Command::new(env!("CARGO_BIN_EXE_once"))
        .arg("check")
        .args(args)
        .env_remove("ONCE_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("spawn once check")
}

/// The exit code of `once check`, which must end within `timeout`.
fn exit_code(child: &mut Child, dir: &Path, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for once check") {
            return status.code().expect("an exit code");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("once check still running after {timeout:?}; its log:\n{}", check_log(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("check.log")).unwrap_or_default()
}

fn report(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("report.json"))
        .unwrap_or_else(|error| panic!("no JSON report ({error}); once check said:\n{}", check_log(dir)));
    serde_json::from_str(&text).expect("the report is JSON")
}

/// The run's topic (its name starts with `prefix`), once `once check` has created it.
fn run_topic(bootstrap: &str, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = once(&["topic", "list", "--bootstrap", bootstrap]);
        if let Some(line) = listed.lines().find(|line| line.starts_with(prefix)) {
            return line.split('\t').next().expect("a name").to_string();
        }
        assert!(Instant::now() < deadline, "once check did not create its topic");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn partitions_of(bootstrap: &str, topic: &str) -> Option<u64> {
    let output = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["topic", "describe", topic, "--bootstrap", bootstrap])
        .output()
        .expect("run once topic describe");
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next()?;
    first.rsplit(": ").next()?.split(' ').next()?.parse().ok()
}

/// Deletes `topic`; the run's clients re-create it by auto-creation (the broker's default of one
/// partition) within a moment, or this does.
fn recreate_with_one_partition(bootstrap: &str, topic: &str) {
    once(&["topic", "delete", topic, "--bootstrap", bootstrap]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while partitions_of(bootstrap, topic).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if partitions_of(bootstrap, topic).is_none() {
        let _ = Command::new(env!("CARGO_BIN_EXE_once"))
            .args(["topic", "create", topic, "--partitions", "1", "--bootstrap", bootstrap])
            .output();
    }
    assert_eq!(partitions_of(bootstrap, topic), Some(1), "the topic is back with one partition");
}

/// Runs `workload` on three partitions against a broker that auto-creates topics with one partition;
/// two seconds in, the run's topic (`lost_topic` of the first topic seen) is deleted and comes back with
/// one partition. The run must complete and find anomalies (exit 1); returns its JSON report.
fn run_losing_partitions(
    workload: &str,
    duration_s: &str,
    timeout: Duration,
    lost_topic: impl Fn(String) -> String,
) -> serde_json::Value {
    let broker = BrokerProcess::start(&["--auto-create-topics", "true", "--default-partitions", "1"]);
    let bootstrap = broker.bootstrap();
    let temp = tempfile::tempdir().expect("temp dir");
    let json = temp.path().join("report.json");
    let json = json.to_str().expect("utf-8 path");
    let args = ["--workload", workload, "--bootstrap", &bootstrap, "--duration", duration_s, "--seed", "13"];
    let more = ["--partitions", "3", "--rate", "200", "--faults", "delay", "--fault-probability", "0", "--json", json];
    let mut check = spawn_check(temp.path(), &[&args[..], &more[..]].concat());
    let topic = lost_topic(run_topic(&bootstrap, &format!("once-check-{workload}-")));
    std::thread::sleep(Duration::from_secs(2));
    recreate_with_one_partition(&bootstrap, &topic);

    let code = exit_code(&mut check, temp.path(), timeout);
    assert_eq!(code, 1, "anomalies found, the run complete; once check said:\n{}", check_log(temp.path()));
    report(temp.path())
}

/// Three partitions, two seconds of acknowledged records on each, then the topic is deleted; the
/// producers' metadata requests re-create it with the broker's default of one partition. Partitions
/// 1 and 2 are gone with everything acknowledged on them.
#[test]
fn a_partition_the_broker_lost_is_reported_as_lost_writes() {
    let report = run_losing_partitions("queue", "8", Duration::from_secs(150), |run| run);
    assert_eq!(report["complete"], true);
    assert_eq!(report["valid"], false);
    assert_eq!(report["partitions_at_final_read"], 1);
    let lost = report["anomalies"]["lost-write"].as_u64().expect("a lost-write count");
    let details = report["anomaly_details"].as_array().expect("details");
    let lost_on = |partition: i64| {
        details
            .iter()
            .filter(|detail| detail["class"] == "lost-write" && detail["partition"] == partition)
            .collect::<Vec<_>>()
    };
    for partition in [1, 2] {
        let entries = lost_on(partition);
        assert!(!entries.is_empty(), "lost writes on partition {partition}: {}", report["anomalies"]);
        for entry in entries {
            assert_eq!(entry["evidence"], "partition-gone", "{entry}");
            assert_eq!(entry["partitions_at_final_read"], 1, "{entry}");
            assert!(entry["offset"].as_i64().is_some() && entry["acked_ms"].as_u64().is_some(), "{entry}");
        }
    }
    assert!(lost >= 2, "every acknowledged record of partitions 1 and 2 is a lost write: {lost}");
}

/// The same loss under the `dedup` workload: every id acknowledged only on partitions 1 and 2 is
/// `lost` with evidence `partition-gone`, and the run completes (exit 1) instead of waiting for
/// partitions the broker no longer has.
#[test]
fn ids_on_a_partition_the_broker_lost_are_reported_lost_by_dedup() {
    let report = run_losing_partitions("dedup", "6", Duration::from_secs(120), |run| run);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["valid"], false);
    assert_eq!(report["partitions_at_final_read"], 1);
    let details = report["anomaly_details"].as_array().expect("details");
    let gone: Vec<_> = details.iter().filter(|detail| detail["evidence"] == "partition-gone").collect();
    assert!(!gone.is_empty(), "ids lost with their partitions: {}", report["anomalies"]);
    for entry in gone {
        assert_eq!(entry["class"], "lost", "{entry}");
        assert_eq!(entry["partitions_at_final_read"], 1, "{entry}");
        let acks = entry["acks"].as_array().expect("acks");
        assert!(acks.iter().any(|ack| ack["partition"].as_i64().is_some_and(|p| p >= 1)), "{entry}");
    }
}

/// The same loss under the `group` workload: the members drain and the fresh consumer resumes on the
/// one partition the broker still has, and the run completes (exit 1: partition 0's committed offsets
/// went back with the re-created topic) instead of waiting on partitions 1 and 2 until its deadlines
/// (exit 2). The members usually process everything on partitions 1 and 2 before they are gone, so
/// whether a send there is left unprocessed is not forced here; each one that is must be `lost` with
/// evidence `partition-gone` (the evidence itself: `crates/check/src/group/checker_tests.rs`).
#[test]
fn sends_on_a_partition_the_broker_lost_are_reported_lost_by_group() {
    let report = run_losing_partitions("group", "6", Duration::from_secs(120), |run| run);
    assert_eq!(report["valid"], false);
    assert_eq!(report["final_read_complete"], true, "{report}");
    assert_eq!(report["partitions_at_final_read"], 1);
    assert_eq!(report["resume"].as_array().map(Vec::len), Some(1), "resumed on the partition left: {report}");
    let details = report["anomaly_details"].as_array().expect("details");
    let gone: Vec<_> = details.iter().filter(|detail| detail["evidence"] == "partition-gone").collect();
    for entry in gone {
        assert_eq!(entry["class"], "lost", "{entry}");
        assert_eq!(entry["partitions_at_final_read"], 1, "{entry}");
        assert!(entry["partition"].as_i64().is_some_and(|partition| partition >= 1), "{entry}");
    }
}

/// The same loss of the `txn` workload's input: every value acknowledged on input partitions 1 and 2
/// is `lost-input` with evidence `partition-gone`, and the run completes (exit 1).
#[test]
fn values_on_an_input_partition_the_broker_lost_are_reported_lost_by_txn() {
    // Either of the run's topics may be seen first; the input is the one to lose.
    let input = |run: String| format!("{}-in", run.trim_end_matches("-in").trim_end_matches("-out"));
    let report = run_losing_partitions("txn", "6", Duration::from_secs(150), input);
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["valid"], false);
    assert_eq!(report["input_partitions_at_final_read"], 1);
    assert_eq!(report["output_partitions_at_final_read"], 3);
    let details = report["anomaly_details"].as_array().expect("details");
    let gone: Vec<_> = details.iter().filter(|detail| detail["evidence"] == "partition-gone").collect();
    assert!(!gone.is_empty(), "values lost with their input partitions: {}", report["anomalies"]);
    for entry in gone {
        assert_eq!(entry["class"], "lost-input", "{entry}");
        assert_eq!(entry["partitions_at_final_read"], 1, "{entry}");
        assert!(entry["partition"].as_i64().is_some_and(|partition| partition >= 1), "{entry}");
    }
}

/// A managed broker that refuses to start again after the nemesis kills it: the run stops, and its
/// report says so, with the sends and reads recorded until then.
#[test]
fn a_run_that_cannot_complete_still_writes_its_report() {
    let temp = tempfile::tempdir().expect("temp dir");
    let started = temp.path().join("started");
    let broker_cmd = format!(
        "sh -c 'if [ -e {started} ]; then echo this broker does not come back >&2; exit 3; fi; touch {started}; \
         exec {once} serve --data-dir {data} --listen {{listen}} --advertised-listener {{advertised}}'",
        started = started.display(),
        data = temp.path().join("data").display(),
        once = env!("CARGO_BIN_EXE_once"),
    );
    let port = support::free_port().to_string();
    let bootstrap = format!("127.0.0.1:{port}");
    let json = temp.path().join("report.json");
    let broker_log = temp.path().join("broker.log");
    let (json, broker_log) = (json.to_str().expect("utf-8"), broker_log.to_str().expect("utf-8"));
    let args = ["--workload", "queue", "--bootstrap", &bootstrap, "--broker-cmd", &broker_cmd, "--faults", "kill"];
    let more = ["--duration", "8", "--seed", "4", "--partitions", "2", "--rate", "200"];
    let outputs = ["--json", json, "--broker-log", broker_log];
    let mut check = spawn_check(temp.path(), &[&args[..], &more[..], &outputs[..]].concat());

    let code = exit_code(&mut check, temp.path(), Duration::from_secs(90));
    let report = report(temp.path());
    assert_eq!(code, 2, "the run could not complete; once check said:\n{}", check_log(temp.path()));
    assert_eq!(report["complete"], false, "{report}");
    let reason = report["incomplete_reason"].as_str().expect("a reason");
    assert!(reason.contains("the broker exited"), "the reason names the broker that did not come back: {reason}");
    assert_eq!(report["valid"], serde_json::Value::Null, "an incomplete run is not judged");
    assert!(report["faults"]["kill"].as_u64().expect("kills") >= 1, "{report}");
    assert!(report["acked"].as_u64().expect("acked") > 0, "what was recorded is reported: {report}");
    assert!(report["fault_events"].as_array().expect("events").iter().any(|event| event["kind"] == "kill"));
}

/// A managed broker that exits at once: the run never starts, and its report says why (exit 2).
#[test]
fn a_broker_that_does_not_start_still_gets_a_report() {
    let temp = tempfile::tempdir().expect("temp dir");
    let bootstrap = format!("127.0.0.1:{}", support::free_port());
    let json = temp.path().join("report.json");
    let json = json.to_str().expect("utf-8");
    let broker_log = temp.path().join("broker.log");
    let broker_log = broker_log.to_str().expect("utf-8");
    let broker_cmd = "sh -c 'echo this broker does not start >&2; exit 3'";
    let args = ["--workload", "queue", "--bootstrap", &bootstrap, "--broker-cmd", broker_cmd, "--faults", "kill"];
    let more = ["--duration", "5", "--seed", "7", "--json", json, "--broker-log", broker_log];
    let mut check = spawn_check(temp.path(), &[&args[..], &more[..]].concat());

    let code = exit_code(&mut check, temp.path(), Duration::from_secs(60));
    let report = report(temp.path());
    assert_eq!(code, 2, "the run could not start; once check said:\n{}", check_log(temp.path()));
    assert_eq!(report["complete"], false, "{report}");
    assert_eq!(report["valid"], serde_json::Value::Null, "{report}");
    assert_eq!(report["workload"], "queue", "{report}");
    assert_eq!(report["seed"], 7, "{report}");
    let reason = report["incomplete_reason"].as_str().expect("a reason");
    assert!(reason.contains("the broker exited"), "the reason names the broker that did not start: {reason}");
}

/// A broker that refuses the run's topic (zero partitions: INVALID_PARTITIONS): the run stops before
/// its workload, and its report says why (exit 2).
#[test]
fn a_refused_topic_still_gets_a_report() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let temp = tempfile::tempdir().expect("temp dir");
    let json = temp.path().join("report.json");
    let json = json.to_str().expect("utf-8");
    let args = ["--workload", "queue", "--bootstrap", &bootstrap, "--partitions", "0", "--duration", "5"];
    let more = ["--seed", "8", "--faults", "delay", "--fault-probability", "0", "--json", json];
    let mut check = spawn_check(temp.path(), &[&args[..], &more[..]].concat());

    let code = exit_code(&mut check, temp.path(), Duration::from_secs(60));
    let report = report(temp.path());
    assert_eq!(code, 2, "the run could not start; once check said:\n{}", check_log(temp.path()));
    assert_eq!(report["complete"], false, "{report}");
    assert_eq!(report["valid"], serde_json::Value::Null, "{report}");
    let reason = report["incomplete_reason"].as_str().expect("a reason");
    assert!(reason.contains("creating topic"), "the reason names the topic the broker refused: {reason}");
    let topics = report["topics"].as_array().expect("topics");
    assert!(topics[0].as_str().expect("a name").starts_with("once-check-queue-8-"), "{report}");
}

/// A complete run whose HTML report cannot be written (its directory does not exist): the run fails
/// (exit 2), but the full JSON report it wrote first stays.
#[test]
fn a_failed_html_report_keeps_the_full_json_report() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let temp = tempfile::tempdir().expect("temp dir");
    let json = temp.path().join("report.json");
    let html = temp.path().join("no-such-directory").join("report.html");
    let (json, html) = (json.to_str().expect("utf-8"), html.to_str().expect("utf-8"));
    let args = ["--workload", "queue", "--bootstrap", &bootstrap, "--duration", "2", "--seed", "9", "--rate", "100"];
    let more = ["--faults", "delay", "--fault-probability", "0", "--json", json, "--report", html];
    let mut check = spawn_check(temp.path(), &[&args[..], &more[..]].concat());

    let code = exit_code(&mut check, temp.path(), Duration::from_secs(120));
    let report = report(temp.path());
    assert_eq!(code, 2, "the HTML report could not be written; once check said:\n{}", check_log(temp.path()));
    assert_eq!(report["complete"], true, "the full report stays: {report}");
    assert_eq!(report["valid"], true, "{report}");
    assert!(report["acked"].as_u64().expect("acked") > 0, "{report}");
}
