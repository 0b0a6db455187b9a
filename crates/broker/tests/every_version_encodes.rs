//! Every served API at every served version produces a response the codec can encode. The codec refuses
//! fields a version does not carry, so a handler that sets one would close client connections; this
//! walks the whole version table to catch that.

use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_broker::broker::Dispatch;
use once_broker::{Broker, BrokerConfig};
use once_wire::versions::SUPPORTED_APIS;
use once_wire::{encode_response, DecodedRequest};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn request_for(api_key: ApiKey, version: i16, round: usize) -> RequestKind {
    let topic = || topic_name("table");
    match api_key {
        ApiKey::Produce => RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic()).with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(once_log::testing::make_batch(2, 10, 1_700_000_000_000).into()))]),
        ])),
        ApiKey::Fetch => RequestKind::Fetch(FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1 << 20)])])),
        ApiKey::ListOffsets => RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])])),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic()))])),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(&format!("created-{version}-{round}")))
            .with_num_partitions(1)
            .with_replication_factor(1)])),
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&format!("created-{version}-{round}"))])),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(CreatePartitionsRequest::default()),
        ApiKey::DescribeConfigs => RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default().with_resource_type(2).with_resource_name(StrBytes::from_static_str("table")),
            DescribeConfigsResource::default().with_resource_type(4).with_resource_name(StrBytes::from_static_str("0")),
        ])),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default()),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        other => panic!("add a request for {other:?} to this test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_version_encodes() {
    let data = tempfile::tempdir().expect("temp dir");
    let config = BrokerConfig { data_dir: data.path().to_path_buf(), listen: "127.0.0.1:0".into(), advertised_listener: Some("127.0.0.1:9092".into()), ..BrokerConfig::default() };
    let broker: Arc<Broker> = Broker::open(config).expect("open broker");
    broker.topics.create("table", 1, Default::default()).await.expect("create topic");
    for (round, entry) in SUPPORTED_APIS.iter().enumerate() {
        for version in entry.served.min..=entry.served.max {
            let header = RequestHeader::default().with_request_api_key(entry.api_key as i16).with_request_api_version(version).with_correlation_id(1);
            let request = DecodedRequest { api_key: entry.api_key, api_version: version, header, body: request_for(entry.api_key, version, round) };
            let pending = match broker.dispatch(request) {
                Dispatch::Queued(pending) | Dispatch::InOrder(pending) => pending,
            };
            let response = pending.await.unwrap_or_else(|| panic!("{:?} v{version} produced no response", entry.api_key));
            encode_response(version, 1, &response).unwrap_or_else(|error| panic!("{:?} v{version}: {error}", entry.api_key));
        }
    }
    broker.topics.close_all().await;
}
