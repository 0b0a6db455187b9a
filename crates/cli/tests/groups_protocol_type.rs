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

/// A consumer joins and leaves without committing: the group is dropped. The same id then only holds
/// offsets (set by `once group reset-offsets`, a commit outside any membership): it has no protocol
/// type, before and after a crash, rather than the dropped group's.
#[test]
fn a_dropped_group_does_not_pass_its_protocol_type_to_the_next_of_its_name() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "reused", "--bootstrap", &bootstrap]);
    {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "reused-members")
            .set("metadata.recovery.strategy", "none")
            .set("session.timeout.ms", "6000")
            .create()
            .expect("rdkafka consumer");
        consumer.subscribe(&["reused"]).expect("subscribe");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while consumer.assignment().map(|list| list.count()).unwrap_or(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "no assignment within 30 s");
            let _ = consumer.poll(std::time::Duration::from_millis(100));
        }
        assert_eq!(group_line(&bootstrap, "reused-members"), "reused-members\tstate=Stable\tprotocol-type=consumer");
    }
    // The consumer left (closed on drop); the empty group without offsets is dropped within a tick.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !group_line(&bootstrap, "reused-members").is_empty() {
        assert!(std::time::Instant::now() < deadline, "the emptied group was not dropped");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    once(&[
        "group",
        "reset-offsets",
        "reused-members",
        "--topic",
        "reused",
        "--to-earliest",
        "--bootstrap",
        &bootstrap,
    ]);
    let offsets_only = "reused-members\tstate=Empty\tprotocol-type=";
    assert_eq!(group_line(&bootstrap, "reused-members"), offsets_only);
    broker.kill9();
    broker.restart();
    assert_eq!(group_line(&bootstrap, "reused-members"), offsets_only, "after a crash and restart");
}
