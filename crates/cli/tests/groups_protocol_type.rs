//! A consumer group keeps its protocol type when its last member leaves, and across a crash of the
//! broker, as Kafka's does: tools tell consumer groups from "simple" ones (offsets only, protocol type
//! empty) by it.

mod groups_support;
mod support;

use std::process::Command;

use groups_support::produce;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use support::{once, BrokerProcess};

/// A confluent-kafka consumer reads `count` records in `group`, committing each, then leaves.
fn consume_in_group(bootstrap: &str, topic: &str, group: &str, count: usize) {
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
}

/// The protocol type librdkafka's list-groups reports (ListGroups, then DescribeGroups).
fn librdkafka_protocol_type(bootstrap: &str, group: &str) -> String {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("metadata.recovery.strategy", "none")
        .create()
        .expect("rdkafka client");
    let list = consumer.fetch_group_list(Some(group), std::time::Duration::from_secs(10)).expect("list groups");
    let found = list.groups().iter().find(|info| info.name() == group).expect("the group is listed");
    found.protocol_type().to_string()
}

fn group_line(bootstrap: &str, group: &str) -> String {
    let listed = once(&["group", "list", "--bootstrap", bootstrap]);
    listed.lines().find(|line| line.starts_with(&format!("{group}\t"))).unwrap_or_default().to_string()
}

#[test]
fn an_emptied_consumer_group_keeps_its_protocol_type_across_a_crash() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "typed", "--partitions", "2", "--bootstrap", &bootstrap]);
    produce(&bootstrap, "typed", &[(0, "a".to_string()), (1, "b".to_string())]);
    consume_in_group(&bootstrap, "typed", "typed-members", 2);

    let expected_list = "typed-members\tstate=Empty\tprotocol-type=consumer";
    let expected_describe = "group typed-members: state=Empty protocol-type=consumer";
    assert_eq!(group_line(&bootstrap, "typed-members"), expected_list, "after the last member left");
    let described = once(&["group", "describe", "typed-members", "--bootstrap", &bootstrap]);
    assert!(described.starts_with(expected_describe), "{described}");

    broker.kill9();
    broker.restart();
    assert_eq!(group_line(&bootstrap, "typed-members"), expected_list, "after a crash and restart");
    let described = once(&["group", "describe", "typed-members", "--bootstrap", &bootstrap]);
    assert!(described.starts_with(expected_describe), "{described}");
    assert!(described.contains("typed\t0\t1"), "the committed offsets are kept too: {described}");
    assert_eq!(librdkafka_protocol_type(&bootstrap, "typed-members"), "consumer");
}
