//! Other clients in consumer groups: kcat's balanced consumer (`-G`, librdkafka 2.0.2) and a
//! confluent-kafka Python consumer each read a topic, and a second run of the same group resumes
//! after the records the first one committed.

mod groups_support;
mod support;

use std::process::Command;

use groups_support::produce;
use support::{once, BrokerProcess};

fn values(range: std::ops::Range<usize>) -> Vec<(i32, String)> {
    range.map(|number| ((number % 3) as i32, format!("v-{number}"))).collect()
}

fn sorted_lines(output: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> =
        String::from_utf8_lossy(output).lines().filter(|line| !line.is_empty()).map(str::to_string).collect();
    lines.sort_by_key(|line| line.trim_start_matches("v-").parse::<usize>().unwrap_or(usize::MAX));
    lines
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|number| format!("v-{number}")).collect()
}

fn kcat_group(bootstrap: &str, topic: &str, group: &str, count: usize) -> Vec<String> {
    let output = Command::new("kcat")
        .args(["-b", bootstrap, "-G", group, topic, "-c", &count.to_string(), "-q", "-f", "%s\n"])
        .args(["-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000"])
        .output()
        .expect("run kcat (.ci/run installs it)");
    assert!(output.status.success(), "kcat -G failed: {}", String::from_utf8_lossy(&output.stderr));
    sorted_lines(&output.stdout)
}

#[test]
fn kcat_balanced_consumer_resumes_from_committed_offsets() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "kcat-group", "--partitions", "3", "--bootstrap", &bootstrap]);
    produce(&bootstrap, "kcat-group", &values(0..30));
    assert_eq!(kcat_group(&bootstrap, "kcat-group", "kcat-members", 30), expected(0..30));
    produce(&bootstrap, "kcat-group", &values(30..50));
    assert_eq!(
        kcat_group(&bootstrap, "kcat-group", "kcat-members", 20),
        expected(30..50),
        "the group resumes after its committed offsets"
    );
}

fn python_group(bootstrap: &str, topic: &str, group: &str, count: usize) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/group_consumer.py");
    let output = Command::new("python3")
        .args([script, bootstrap, topic, group, &count.to_string()])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "the confluent-kafka consumer failed (is confluent-kafka installed?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    sorted_lines(&output.stdout)
}

#[test]
fn confluent_kafka_python_group_resumes_from_committed_offsets() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "python-group", "--partitions", "3", "--bootstrap", &bootstrap]);
    produce(&bootstrap, "python-group", &values(0..30));
    assert_eq!(python_group(&bootstrap, "python-group", "python-members", 30), expected(0..30));
    produce(&bootstrap, "python-group", &values(30..50));
    assert_eq!(
        python_group(&bootstrap, "python-group", "python-members", 20),
        expected(30..50),
        "the group resumes after its committed offsets"
    );
}
