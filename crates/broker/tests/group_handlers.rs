//! The group APIs at the Kafka edge (`handlers::group`) against a group coordinator, without sockets:
//! what the translation decides by version, the error codes it answers, and the consumer protocol's
//! subscription it reads for OffsetDelete.

use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use once_broker::handlers::group::{admin, membership, offsets, txn_offsets};
use once_group::{CoordinatorNode, GroupConfig, GroupCoordinator, RequestContext};
use once_wire::ResponseError;

const TOPIC: &str = "t";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn open(data: &Path) -> Arc<GroupCoordinator> {
    let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
    GroupCoordinator::open(GroupConfig::new(data, node)).expect("open the coordinator")
}

fn context() -> RequestContext<'static> {
    RequestContext { client_id: "test", client_host: "", partition_exists: &|_, _| true }
}

async fn plain_commit(groups: &GroupCoordinator, group: &str, partition: i32, offset: i64) {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(text(TOPIC))).with_partitions(
            vec![OffsetCommitRequestPartition::default().with_partition_index(partition).with_committed_offset(offset)],
        )]);
    let response = offsets::offset_commit(groups, request, &context()).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0, "plain commit acknowledged");
}

/// A TxnOffsetCommit of one partition naming `member_id` at `generation_id` (read from v3 on).
fn txn_request(group: &str, member_id: &str, generation_id: i32) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(text("tx")))
        .with_group_id(GroupId(text(group)))
        .with_producer_id(ProducerId(4000))
        .with_producer_epoch(0)
        .with_member_id(text(member_id))
        .with_generation_id(generation_id)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default().with_name(TopicName(text(TOPIC))).with_partitions(
            vec![TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(10)],
        )])
}

/// The group coordinator's answer to a TxnOffsetCommit at `version`, translated both ways as the edge
/// does (the node's transaction check, which comes first at the edge, is tested in once-node).
async fn txn_commit(
    groups: &GroupCoordinator,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    txn_offsets::response(groups.txn_offset_commit(txn_offsets::commit(request, version)).await)
}

/// (offset, error code) of partition 0 from OffsetFetch `version` with RequireStable set.
fn fetch_stable(groups: &GroupCoordinator, group: &str, version: i16) -> (i64, i16) {
    let request = if version >= 8 {
        OffsetFetchRequest::default().with_require_stable(true).with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partition_indexes(vec![0])]))])
    } else {
        OffsetFetchRequest::default().with_group_id(GroupId(text(group))).with_require_stable(true).with_topics(Some(
            vec![OffsetFetchRequestTopic::default().with_name(TopicName(text(TOPIC))).with_partition_indexes(vec![0])],
        ))
    };
    let response = offsets::offset_fetch(groups, request, version);
    if version >= 8 {
        let partition = &response.groups[0].topics[0].partitions[0];
        (partition.committed_offset, partition.error_code)
    } else {
        let partition = &response.topics[0].partitions[0];
        (partition.committed_offset, partition.error_code)
    }
}

/// Joins `group` as its only member with JoinGroup v5 (MEMBER_ID_REQUIRED first); returns
/// (member id, generation).
async fn join(groups: &GroupCoordinator, group: &str, metadata: Bytes) -> (String, i32) {
    let mut member_id = String::new();
    for _ in 0..2 {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(&member_id))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(text("range"))
                .with_metadata(metadata.clone())]);
        let response = membership::join_group(groups, request, 5, "test", "").await;
        if response.error_code == ResponseError::MemberIdRequired.code() {
            member_id = response.member_id.to_string();
            continue;
        }
        assert_eq!(response.error_code, 0, "joined");
        return (response.member_id.to_string(), response.generation_id);
    }
    panic!("no join after MEMBER_ID_REQUIRED");
}

/// A consumer's JoinGroup metadata subscribing to `topics` (ConsumerProtocolSubscription v1).
fn subscription(topics: &[&str]) -> Bytes {
    let subscription =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|topic| text(topic)).collect());
    let mut bytes = BytesMut::new();
    bytes.put_i16(1);
    subscription.encode(&mut bytes, 1).expect("encode the subscription");
    bytes.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_stable_is_read_from_offset_fetch_v7_on() {
    assert_eq!(ResponseError::UnstableOffsetCommit.code(), 88);
    let data = tempfile::tempdir().expect("temp dir");
    let groups = open(data.path());
    plain_commit(&groups, "g", 0, 5).await;
    let response = txn_commit(&groups, txn_request("g", "", -1), 3).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0, "transactional offset pending");
    assert_eq!(fetch_stable(&groups, "g", 6), (5, 0), "v6 has no RequireStable: the committed offset");
    assert_eq!(fetch_stable(&groups, "g", 7), (-1, 88), "v7: UNSTABLE_OFFSET_COMMIT");
    assert_eq!(fetch_stable(&groups, "g", 8), (-1, 88), "v8 batched: UNSTABLE_OFFSET_COMMIT");
    groups.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_names_a_member_from_v3_on() {
    let data = tempfile::tempdir().expect("temp dir");
    let groups = open(data.path());
    let (member_id, generation) = join(&groups, "g", Bytes::new()).await;
    let code = |response: TxnOffsetCommitResponse| response.topics[0].partitions[0].error_code;
    let zombie = txn_commit(&groups, txn_request("g", "zombie", generation), 3).await;
    assert_eq!(code(zombie), ResponseError::UnknownMemberId.code());
    let old = txn_commit(&groups, txn_request("g", &member_id, generation - 1), 3).await;
    assert_eq!(code(old), ResponseError::IllegalGeneration.code());
    let before_v3 = txn_commit(&groups, txn_request("g", "zombie", generation - 1), 2).await;
    assert_eq!(code(before_v3), 0, "before v3 there is no member to check");
    let empty = txn_commit(&groups, txn_request("", "", -1), 3).await;
    assert_eq!(code(empty), ResponseError::InvalidGroupId.code());
    groups.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_delete_refuses_the_topics_a_consumer_group_subscribes_to() {
    let data = tempfile::tempdir().expect("temp dir");
    let groups = open(data.path());
    let metadata = subscription(&[TOPIC]);
    join(&groups, "g", metadata.clone()).await;
    let request = OffsetDeleteRequest::default().with_group_id(GroupId(text("g"))).with_topics(
        [TOPIC, "other"]
            .into_iter()
            .map(|topic| {
                OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)])
            })
            .collect(),
    );
    let response = offsets::offset_delete(&groups, request).await;
    assert_eq!(response.error_code, 0);
    let codes: Vec<(String, i16)> =
        response.topics.iter().map(|topic| (topic.name.0.to_string(), topic.partitions[0].error_code)).collect();
    assert_eq!(
        codes,
        vec![(TOPIC.to_string(), ResponseError::GroupSubscribedToTopic.code()), ("other".to_string(), 0)],
        "the subscribed topic is refused, the other deleted"
    );
    let unknown = OffsetDeleteRequest::default().with_group_id(GroupId(text("nobody")));
    assert_eq!(offsets::offset_delete(&groups, unknown).await.error_code, ResponseError::GroupIdNotFound.code());

    let described = admin::describe_groups(
        &groups,
        DescribeGroupsRequest::default().with_groups(vec![GroupId(text("g")), GroupId(text("nobody"))]),
        5,
    );
    let group = &described.groups[0];
    assert_eq!(group.protocol_type.as_str(), "consumer");
    assert_eq!(group.protocol_data.as_str(), "range");
    assert_eq!(group.members.len(), 1);
    assert_eq!(group.members[0].member_metadata, metadata, "the member's subscription as it sent it");
    assert_eq!(group.members[0].client_id.as_str(), "test");
    let unknown = &described.groups[1];
    assert_eq!((unknown.group_state.as_str(), unknown.members.len()), ("Dead", 0), "an unknown group is Dead");
    assert_eq!(unknown.protocol_type.as_str(), "");
    groups.close().await;
}
