//! Names starting with `__` belong to Kafka's internal topics (`__consumer_offsets`,
//! `__transaction_state`, ...), which Once keeps in its own internal logs and does not serve as topics.
//! Creating one, by CreateTopics or by Metadata auto-creation, is refused with INVALID_TOPIC_EXCEPTION
//! rather than making an empty ordinary topic that tools would read as the real thing. A topic with
//! such a name already on disk (made by an older Once) still loads, keeps its records and can be
//! deleted.

mod support;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use support::{once, produce_lines, BrokerProcess};

const INVALID_TOPIC_EXCEPTION: i16 = 17;

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
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
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
    for topic in ["__consumer_offsets", "__transaction_state", "__anything"] {
        let (code, message) = create(&mut client, topic);
        assert_eq!(code, INVALID_TOPIC_EXCEPTION, "CreateTopics {topic}: {message}");
        assert!(message.contains(topic) && message.contains("__"), "the message says why: {message}");
        assert_eq!(metadata(&mut client, topic), (INVALID_TOPIC_EXCEPTION, 0), "Metadata auto-creating {topic}");
    }
    // One underscore, or two later in the name, is an ordinary name.
    assert_eq!(create(&mut client, "_private").0, 0);
    assert_eq!(metadata(&mut client, "auto__created"), (0, 1));
    let topics = listed(&bootstrap);
    assert!(!topics.lines().any(|line| line.starts_with("__")), "no internal name was made a topic: {topics}");
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
    once(&["topic", "delete", "__consumer_offsets", "--bootstrap", &bootstrap]);
    assert!(!listed(&bootstrap).contains("__consumer_offsets"));
}
