//! Kafka's internal topics (`__consumer_offsets`, `__transaction_state`, `__share_group_state`, and
//! KRaft's `__cluster_metadata`) are kept by Once in its own internal logs, not served as topics.
//! Creating one, by CreateTopics or by Metadata auto-creation, is refused with INVALID_TOPIC_EXCEPTION
//! rather than making an empty ordinary topic that tools would read as the real thing. Other names
//! starting with `__` are ordinary (Debezium's `__debezium-heartbeat.<prefix>`, Strimzi's
//! `__strimzi...`). A topic with a reserved name already on disk (made by an older Once) still loads,
//! is served for produce and fetch, answers TOPIC_ALREADY_EXISTS to a create, and can be deleted.

mod support;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use support::{once, produce_lines, BrokerProcess};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const RESERVED: [&str; 4] = ["__consumer_offsets", "__transaction_state", "__share_group_state", "__cluster_metadata"];

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn create(client: &mut AdminClient, topic: &str) -> (i16, String) {
    let request = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let response = client.call(&request, 7).expect("CreateTopics");
    let result = &response.topics[0];
    (result.error_code, result.error_message.as_ref().map(|message| message.to_string()).unwrap_or_default())
}

/// The error code and partition count Metadata answers for `topic`, asking for auto-creation.
fn metadata(client: &mut AdminClient, topic: &str) -> (i16, usize) {
    metadata_with(client, topic, true)
}

fn metadata_with(client: &mut AdminClient, topic: &str, allow_auto_topic_creation: bool) -> (i16, usize) {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(allow_auto_topic_creation)
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(topic)))]));
    let response = client.call(&request, 12).expect("Metadata");
    (response.topics[0].error_code, response.topics[0].partitions.len())
}

fn listed(bootstrap: &str) -> String {
    once(&["topic", "list", "--bootstrap", bootstrap])
}

#[test]
fn internal_topic_names_cannot_be_created() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    for topic in RESERVED {
        let (code, message) = create(&mut client, topic);
        assert_eq!(code, INVALID_TOPIC_EXCEPTION, "CreateTopics {topic}: {message}");
        assert!(message.contains(topic) && message.contains("internal topic"), "the message says why: {message}");
        assert_eq!(metadata(&mut client, topic), (INVALID_TOPIC_EXCEPTION, 0), "Metadata auto-creating {topic}");
        assert_eq!(metadata_with(&mut client, topic, false), (INVALID_TOPIC_EXCEPTION, 0), "Metadata of {topic}");
    }
    // Without auto-creation a legal absent name is UNKNOWN_TOPIC_OR_PARTITION (clients wait for it),
    // an illegal one INVALID_TOPIC_EXCEPTION, as Kafka's Topic.validate.
    assert_eq!(metadata_with(&mut client, "__absent", false), (UNKNOWN_TOPIC_OR_PARTITION, 0));
    assert_eq!(metadata_with(&mut client, "absent", false), (UNKNOWN_TOPIC_OR_PARTITION, 0));
    assert_eq!(metadata_with(&mut client, "a:b", false), (INVALID_TOPIC_EXCEPTION, 0));
    // Other `__` names, one underscore, or two later in the name, are ordinary names.
    assert_eq!(create(&mut client, "_private").0, 0);
    assert_eq!(metadata(&mut client, "auto__created"), (0, 1));
    assert_eq!(metadata(&mut client, "__strimzi_store_topic"), (0, 1), "auto-created");
    let heartbeat = "__debezium-heartbeat.inventory";
    let (code, message) = create(&mut client, heartbeat);
    assert_eq!(code, 0, "CreateTopics {heartbeat}: {message}");
    produce_lines(&broker, heartbeat, "beat-1\nbeat-2\n");
    let read = once(&["consume", heartbeat, "--from-beginning", "--bootstrap", &bootstrap]);
    assert_eq!(read.lines().collect::<Vec<_>>(), ["beat-1", "beat-2"]);
    let topics = listed(&bootstrap);
    assert!(topics.contains(heartbeat) && topics.contains("__strimzi_store_topic"), "{topics}");
    assert!(!RESERVED.iter().any(|reserved| topics.contains(reserved)), "no internal name was made a topic: {topics}");
    assert!(!broker.data_dir().join("topics").join("__consumer_offsets").exists());
}

#[test]
fn a_topic_with_an_internal_name_already_on_disk_still_loads() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "legacy", "--bootstrap", &bootstrap]);
    produce_lines(&broker, "legacy", "kept-1\nkept-2\n");
    assert!(broker.terminate(), "clean stop");
    // What an older Once, which accepted the name, left on disk.
    let topics = broker.data_dir().join("topics");
    std::fs::rename(topics.join("legacy"), topics.join("__consumer_offsets")).expect("rename the topic directory");
    let file = topics.join("__consumer_offsets").join("topic.json");
    let text = std::fs::read_to_string(&file).expect("read topic.json");
    std::fs::write(&file, text.replace("\"legacy\"", "\"__consumer_offsets\"")).expect("write topic.json");

    broker.restart();
    let described = once(&["topic", "describe", "__consumer_offsets", "--bootstrap", &bootstrap]);
    assert!(described.contains("partition 0\tlog-start-offset=0\thigh-watermark=2"), "{described}");
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    assert_eq!(metadata(&mut client, "__consumer_offsets"), (0, 1), "an existing topic is served");
    // "Create if absent" callers (Connect's TopicAdmin) need TOPIC_ALREADY_EXISTS, not a name error.
    let (code, message) = create(&mut client, "__consumer_offsets");
    assert_eq!(code, TOPIC_ALREADY_EXISTS, "CreateTopics of the existing topic: {message}");
    produce_lines(&broker, "__consumer_offsets", "added\n");
    let read = once(&["consume", "__consumer_offsets", "--from-beginning", "--bootstrap", &bootstrap]);
    assert_eq!(read.lines().collect::<Vec<_>>(), ["kept-1", "kept-2", "added"]);
    once(&["topic", "delete", "__consumer_offsets", "--bootstrap", &bootstrap]);
    assert!(!listed(&bootstrap).contains("__consumer_offsets"));
}
