//! Every served API at every served version produces a response the codec can encode. The codec refuses
//! fields a version does not carry, so a handler that sets one would close client connections; this
//! walks the whole version table to catch that.

use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_broker::dispatch::dispatch;
use once_node::{Node, NodeConfig};
use once_wire::versions::SUPPORTED_APIS;
use once_wire::{encode_response, DecodedRequest};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

/// A JoinGroup that completes at once (a member alone in a group of its own), so the response carries
/// a leader, members and protocol fields at every version.
fn group_join(version: i16) -> JoinGroupRequest {
    let request = JoinGroupRequest::default()
        .with_group_id(group_id(&format!("encodes-{version}")))
        .with_session_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(vec![0, 1, 2].into())]);
    let request = if version >= 1 { request.with_rebalance_timeout_ms(10_000) } else { request };
    if version >= 5 {
        request.with_group_instance_id(Some(StrBytes::from_string(format!("instance-{version}"))))
    } else {
        request
    }
}

fn request_for(api_key: ApiKey, version: i16, round: usize) -> RequestKind {
    let topic = || topic_name("table");
    match api_key {
        ApiKey::Produce => {
            RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![
                TopicProduceData::default().with_name(topic()).with_partition_data(
                    vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(once_log::testing::make_batch(2, 10, 1_700_000_000_000).into()))],
                ),
            ]))
        }
        ApiKey::Fetch => {
            RequestKind::Fetch(FetchRequest::default().with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![FetchPartition::default().with_partition_max_bytes(1 << 20)])]))
        }
        ApiKey::ListOffsets => {
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]))
        }
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic()))])),
        ),
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::CreateTopics => {
            RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(&format!("created-{version}-{round}")))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("dedup.source"))
                    .with_value(Some(StrBytes::from_static_str("header:msg-id"))),
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("dedup.window.ms"))
                    .with_value(Some(StrBytes::from_static_str("60000"))),
            ])]))
        }
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default().with_topic_names(vec![topic_name(&format!("created-{version}-{round}"))]),
        ),
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(CreatePartitionsRequest::default()),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("table")),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("0")),
            ]))
        }
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(vec![
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("table"))
                    .with_configs(vec![AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("dedup.window.ms"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(format!("{}", 60_000 + round))))]),
            ]))
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
            // The topic deduplicates by content: a replacing set must name dedup.source to keep it.
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("table"))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("dedup.source"))
                        .with_value(Some(StrBytes::from_static_str("content"))),
                    alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("dedup.window.ms"))
                        .with_value(Some(StrBytes::from_string(format!("{}", 60_000 + round)))),
                ]),
            // Refused: a broker config, named with an error message in the answer.
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("0"))
                .with_configs(vec![alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("num.partitions"))
                    .with_value(Some(StrBytes::from_static_str("3")))]),
        ])),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(DescribeClusterRequest::default()),
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![StrBytes::from_static_str("group")])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("group"))
        }),
        ApiKey::JoinGroup => RequestKind::JoinGroup(group_join(version)),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(group_id("absent"))
                .with_member_id(StrBytes::from_static_str("nobody")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(group_id("absent"))),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group_id("encodes"))
                .with_members(vec![MemberIdentity::default().with_member_id(StrBytes::from_static_str("nobody"))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id("encodes"))
                .with_member_id(StrBytes::from_static_str("nobody"))
        }),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(group_id("offsets"))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![OffsetCommitRequestPartition::default().with_committed_offset(5)])]),
        ),
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(if version >= 8 {
            OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(group_id("offsets"))
                .with_topics(None)])
        } else {
            OffsetFetchRequest::default().with_group_id(group_id("offsets")).with_topics(if version >= 2 {
                None
            } else {
                Some(vec![OffsetFetchRequestTopic::default().with_name(topic()).with_partition_indexes(vec![0])])
            })
        }),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default().with_group_id(group_id("offsets")).with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![OffsetDeleteRequestPartition::default()]),
            ]),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![group_id("encodes-5"), group_id("absent")]),
        ),
        ApiKey::DeleteGroups => {
            RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![group_id("absent")]))
        }
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(
                    (version % 2 == 1).then(|| TransactionalId(StrBytes::from_static_str("encodes"))),
                )
                .with_transaction_timeout_ms(60_000),
        ),
        ApiKey::AddPartitionsToTxn => RequestKind::AddPartitionsToTxn(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_static_str("encodes")))
                .with_v3_and_below_producer_id(ProducerId(0))
                .with_v3_and_below_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic_name("table"))
                        .with_partitions(vec![0]),
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(topic_name("absent"))
                        .with_partitions(vec![0]),
                ]),
        ),
        ApiKey::AddOffsetsToTxn => RequestKind::AddOffsetsToTxn(
            AddOffsetsToTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("encodes")))
                .with_group_id(group_id("encodes")),
        ),
        ApiKey::EndTxn => RequestKind::EndTxn(
            EndTxnRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("encodes")))
                .with_committed(true),
        ),
        ApiKey::TxnOffsetCommit => RequestKind::TxnOffsetCommit(
            TxnOffsetCommitRequest::default()
                .with_transactional_id(TransactionalId(StrBytes::from_static_str("encodes")))
                .with_group_id(group_id("encodes"))
                .with_topics(vec![txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(topic_name("table"))
                    .with_partitions(vec![txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]),
        ),
        ApiKey::WriteTxnMarkers => RequestKind::WriteTxnMarkers(WriteTxnMarkersRequest::default().with_markers(vec![
            write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(ProducerId(424_242))
                .with_producer_epoch(0)
                .with_topics(vec![write_txn_markers_request::WritableTxnMarkerTopic::default()
                    .with_name(topic_name("table"))
                    .with_partition_indexes(vec![0, 7])]),
        ])),
        ApiKey::DescribeProducers => {
            RequestKind::DescribeProducers(DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic_name("table"))
                    .with_partition_indexes(vec![0, 7]),
            ]))
        }
        ApiKey::DescribeTransactions => {
            RequestKind::DescribeTransactions(DescribeTransactionsRequest::default().with_transactional_ids(vec![
                TransactionalId(StrBytes::from_static_str("encodes")),
                TransactionalId(StrBytes::from_static_str("absent")),
            ]))
        }
        ApiKey::ListTransactions => RequestKind::ListTransactions(
            ListTransactionsRequest::default()
                .with_state_filters(vec![StrBytes::from_static_str("Ongoing"), StrBytes::from_static_str("Bogus")]),
        ),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(
            kafka_protocol::messages::SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("PLAIN")),
        ),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(
            kafka_protocol::messages::SaslAuthenticateRequest::default()
                .with_auth_bytes(bytes::Bytes::from_static(b"\0a\0b")),
        ),
        ApiKey::CreateAcls => RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(vec![
            create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("table"))
                .with_resource_pattern_type(3)
                .with_principal(StrBytes::from_static_str("User:alice"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(3)
                .with_permission_type(3),
            // Invalid: a cluster named otherwise.
            create_acls_request::AclCreation::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("elsewhere"))
                .with_resource_pattern_type(3)
                .with_principal(StrBytes::from_static_str("User:alice"))
                .with_host(StrBytes::from_static_str("*"))
                .with_operation(7)
                .with_permission_type(3),
        ])),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_resource_type_filter(1)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ),
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_resource_name_filter(Some(StrBytes::from_static_str("table")))
                .with_pattern_type_filter(2)
                .with_operation(1)
                .with_permission_type(1),
        ])),
        ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsRequest::default()
                .with_users(Some(vec![describe_user_scram_credentials_request::UserName::default()
                    .with_name(StrBytes::from_static_str("absent"))])),
        ),
        ApiKey::AlterUserScramCredentials => {
            RequestKind::AlterUserScramCredentials(AlterUserScramCredentialsRequest::default().with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_static_str("absent"))
                    .with_mechanism(1),
            ]))
        }
        other => panic!("add a request for {other:?} to this test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_version_encodes() {
    every_version_encodes(false).await;
}

/// With authorization on and no ACLs, the (anonymous) test session is refused everything: every
/// refusal answer, built by the authorization gate rather than the handlers, must encode too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_version_encodes_its_refusal() {
    every_version_encodes(true).await;
}

async fn every_version_encodes(authorization: bool) {
    let data = tempfile::tempdir().expect("temp dir");
    let config = NodeConfig {
        data_dir: data.path().to_path_buf(),
        listen: "127.0.0.1:0".into(),
        advertised_listener: Some("127.0.0.1:9092".into()),
        authorization,
        ..NodeConfig::default()
    };
    let broker: Arc<Node> = Node::open(config).expect("open broker");
    // Deduplicating by content: every Produce after the first is all duplicates (answered with the
    // original offset), so the dedup path and its answers are encoded at every version too.
    let configs = [("dedup.source", "content")].map(|(key, value)| (key.to_string(), value.to_string())).into();
    broker.topics.create("table", 1, configs).await.expect("create topic");
    for (round, entry) in SUPPORTED_APIS.iter().enumerate() {
        for version in entry.served.min..=entry.served.max {
            let header = RequestHeader::default()
                .with_request_api_key(entry.api_key as i16)
                .with_request_api_version(version)
                .with_correlation_id(1);
            let request = DecodedRequest {
                api_key: entry.api_key,
                api_version: version,
                header,
                body: request_for(entry.api_key, version, round),
            };
            let pending = dispatch(&broker, request).response();
            let response =
                pending.await.unwrap_or_else(|| panic!("{:?} v{version} produced no response", entry.api_key));
            encode_response(version, 1, &response)
                .unwrap_or_else(|error| panic!("{:?} v{version}: {error}", entry.api_key));
        }
    }
    broker.close_coordinators().await;
    broker.topics.close_all().await;
}
