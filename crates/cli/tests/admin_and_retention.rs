//! Topic administration through `once topic`, ListOffsets by timestamp, retention, and graceful
//! shutdown, against a real broker process.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use support::{once, produce_lines as produce, BrokerProcess};

fn list_offset(client: &mut AdminClient, topic: &str, timestamp: i64) -> (i16, i64, i64) {
    let request =
        ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp)])]);
    let response = client.call(&request, 5).expect("ListOffsets");
    let partition = &response.topics[0].partitions[0];
    (partition.error_code, partition.offset, partition.timestamp)
}

fn fetch_error(client: &mut AdminClient, topic: &str, offset: i64) -> i16 {
    let request =
        FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(
            vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])],
        );
    let response = client.call(&request, 11).expect("Fetch");
    response.responses[0].partitions[0].error_code
}

#[test]
fn topic_commands_work_end_to_end() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let created = once(&[
        "topic",
        "create",
        "orders",
        "--partitions",
        "4",
        "--config",
        "retention.ms=3600000",
        "--bootstrap",
        &bootstrap,
    ]);
    assert!(created.contains("4 partitions"), "{created}");
    let listed = once(&["topic", "list", "--bootstrap", &bootstrap]);
    assert!(listed.contains("orders\tpartitions=4"), "{listed}");
    let described = once(&["topic", "describe", "orders", "--bootstrap", &bootstrap]);
    assert!(described.contains("retention.ms=3600000 (override)"), "{described}");
    assert!(described.contains("partition 3"), "{described}");
    once(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "retention.bytes=1000000",
        "--delete",
        "retention.ms",
        "--bootstrap",
        &bootstrap,
    ]);
    let described = once(&["topic", "describe", "orders", "--bootstrap", &bootstrap]);
    assert!(described.contains("retention.bytes=1000000 (override)"), "{described}");
    assert!(described.contains("retention.ms=604800000\n"), "back to the default: {described}");
    // Refusals are clear errors, not silent.
    let bad = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["topic", "alter-config", "orders", "--set", "cleanup.policy=compact", "--bootstrap", &bootstrap])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidConfig"), "{}", String::from_utf8_lossy(&bad.stderr));
    let duplicate = Command::new(env!("CARGO_BIN_EXE_once"))
        .args(["topic", "create", "orders", "--bootstrap", &bootstrap])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("TopicAlreadyExists"));
    once(&["topic", "delete", "orders", "--bootstrap", &bootstrap]);
    let listed = once(&["topic", "list", "--bootstrap", &bootstrap]);
    assert!(!listed.contains("orders"), "{listed}");
    once(&["topic", "create", "orders", "--partitions", "1", "--bootstrap", &bootstrap]);
}

#[test]
fn list_offsets_by_timestamp() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "times", "--partitions", "1", "--bootstrap", &bootstrap]);
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    produce(&broker, "times", "a\nb\nc\n");
    std::thread::sleep(Duration::from_millis(20));
    let middle = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    produce(&broker, "times", "d\ne\n");
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    assert_eq!(list_offset(&mut client, "times", -2), (0, 0, -1), "earliest");
    assert_eq!(list_offset(&mut client, "times", -1), (0, 5, -1), "latest");
    let (error, offset, timestamp) = list_offset(&mut client, "times", before - 1000);
    assert_eq!((error, offset), (0, 0), "a timestamp before everything finds offset 0");
    assert!(timestamp >= before);
    let (_, offset, _) = list_offset(&mut client, "times", middle);
    assert_eq!(offset, 3, "the first record at or after the middle timestamp");
    let (_, offset, timestamp) = list_offset(&mut client, "times", middle + 3_600_000);
    assert_eq!((offset, timestamp), (-1, -1), "nothing that late");
    let (_, offset, _) = list_offset(&mut client, "times", -3);
    assert!((3..5).contains(&offset), "max timestamp lies in the second batch: {offset}");
}

#[test]
fn retention_deletes_old_segments_and_fetch_below_start_is_out_of_range() {
    let broker = BrokerProcess::start(&["--retention-check-interval-ms", "100"]);
    let bootstrap = broker.bootstrap();
    once(&[
        "topic",
        "create",
        "short",
        "--partitions",
        "1",
        "--config",
        "segment.bytes=1024",
        "--config",
        "retention.bytes=2048",
        "--bootstrap",
        &bootstrap,
    ]);
    for round in 0..12 {
        let lines: String = (0..5).map(|line| format!("round-{round}-line-{line}-{}\n", "p".repeat(100))).collect();
        produce(&broker, "short", &lines);
    }
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    let deadline = Instant::now() + Duration::from_secs(20);
    let start = loop {
        let (_, start, _) = list_offset(&mut client, "short", -2);
        // Settled: passes every 100 ms may still have been catching up with the last rounds.
        std::thread::sleep(Duration::from_millis(300));
        if start > 0 && list_offset(&mut client, "short", -2).1 == start {
            break start;
        }
        assert!(Instant::now() < deadline, "retention never advanced the log start offset; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, end, _) = list_offset(&mut client, "short", -1);
    assert_eq!(end, 60, "retention does not touch the end");
    assert_eq!(fetch_error(&mut client, "short", 0), 1, "fetching below the log start offset is OFFSET_OUT_OF_RANGE");
    assert_eq!(fetch_error(&mut client, "short", start), 0, "fetching at the log start offset works");
    assert_eq!(fetch_error(&mut client, "short", end + 10), 1, "fetching past the end is OFFSET_OUT_OF_RANGE");
    let remaining = once(&["consume", "short", "--from-beginning", "--bootstrap", &bootstrap]);
    assert_eq!(remaining.lines().count() as i64, end - start, "everything from the log start offset is readable");

    // Time-based retention: everything but the active segment goes.
    once(&[
        "topic",
        "alter-config",
        "short",
        "--set",
        "retention.ms=1",
        "--delete",
        "retention.bytes",
        "--bootstrap",
        &bootstrap,
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, later_start, _) = list_offset(&mut client, "short", -2);
        if later_start > start {
            break;
        }
        assert!(Instant::now() < deadline, "time retention never advanced the log start offset");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "kept", "--partitions", "2", "--bootstrap", &bootstrap]);
    produce(&broker, "kept", "x\ny\nz\n");
    assert!(broker.terminate(), "SIGTERM exits with success; log:\n{}", broker.log());
    assert!(broker.log().contains("shutdown complete"), "log:\n{}", broker.log());
    broker.restart();
    let log = broker.log();
    let after_restart = &log[log.find("shutdown complete").expect("first run shut down")..];
    let reopened: Vec<&str> =
        after_restart.lines().filter(|line| line.contains("opened log") && line.contains("topics/kept/")).collect();
    assert_eq!(reopened.len(), 2, "both partitions reopened; log:\n{log}");
    assert!(
        reopened.iter().all(|line| line.contains("clean=true")),
        "both partitions open without recovery after SIGTERM; log:\n{log}"
    );
    assert!(!after_restart.contains("clean=false"), "no partition needed recovery; log:\n{log}");
    let output = once(&["consume", "kept", "--from-beginning", "--bootstrap", &bootstrap]);
    let mut lines: Vec<&str> = output.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["x", "y", "z"]);
    let described = once(&["topic", "describe", "kept", "--bootstrap", &bootstrap]);
    assert!(described.contains("2 partitions"));
}

#[test]
fn a_topic_named_twice_in_one_create_request_is_refused() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::CreateTopicsRequest;
    let broker = BrokerProcess::start(&[]);
    let mut client = AdminClient::connect(&broker.bootstrap()).expect("connect");
    let topic = |name: &str| {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(1)
            .with_replication_factor(-1)
    };
    let request = CreateTopicsRequest::default().with_topics(vec![topic("twice"), topic("once"), topic("twice")]);
    let response = client.call(&request, 5).expect("CreateTopics");
    let codes: Vec<(String, i16)> =
        response.topics.iter().map(|result| (result.name.0.to_string(), result.error_code)).collect();
    assert_eq!(codes, vec![("twice".into(), 42), ("once".into(), 0), ("twice".into(), 42)], "INVALID_REQUEST for both");
    let listed = once(&["topic", "list", "--bootstrap", &broker.bootstrap()]);
    assert!(listed.contains("once\t") && !listed.contains("twice"), "{listed}");

    // The same for a config resource named twice: neither change is applied.
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    let change = |value: &str| {
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("once"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.ms"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.to_string())))])
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![change("1000"), change("2000")]);
    let response = client.call(&request, 1).expect("IncrementalAlterConfigs");
    assert!(response.responses.iter().all(|result| result.error_code == 42), "INVALID_REQUEST for both");
    let described = once(&["topic", "describe", "once", "--bootstrap", &broker.bootstrap()]);
    assert!(described.contains("retention.ms=604800000\n"), "unchanged: {described}");
}
