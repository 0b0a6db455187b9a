//! The group protocol spoken directly: an acknowledged OffsetCommit survives kill -9 of the broker,
//! deleted offsets stay deleted, and commits from a stale generation or an unknown member are refused.

mod support;

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use once_wire::ResponseError;
use support::{once, BrokerProcess};

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn commit(
    client: &mut AdminClient,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let partitions = offsets
        .iter()
        .map(|(partition, offset)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_metadata(Some(text(&format!("meta-{offset}"))))
        })
        .collect();
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(text(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(partitions)]);
    let response = client.call(&request, 8).expect("offset commit");
    response.topics.iter().flat_map(|topic| topic.partitions.iter().map(|partition| partition.error_code)).collect()
}

fn fetch(client: &mut AdminClient, group: &str, topic: &str, partitions: i32) -> Vec<(i64, Option<String>)> {
    let request = OffsetFetchRequest::default().with_group_id(GroupId(text(group))).with_topics(Some(vec![
        OffsetFetchRequestTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partition_indexes((0..partitions).collect()),
    ]));
    let response = client.call(&request, 6).expect("offset fetch");
    response.topics[0]
        .partitions
        .iter()
        .map(|partition| (partition.committed_offset, partition.metadata.as_ref().map(|metadata| metadata.to_string())))
        .collect()
}

#[test]
fn acknowledged_offset_commit_survives_kill_9() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "durable", "--partitions", "3", "--bootstrap", &bootstrap]);
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    for round in 0..50i64 {
        let codes =
            commit(&mut client, "durable-group", -1, "", "durable", &[(0, round), (1, round * 2), (2, round * 3)]);
        assert_eq!(codes, vec![0, 0, 0], "commit round {round} acknowledged");
    }
    let codes = commit(&mut client, "deleted-group", -1, "", "durable", &[(0, 7)]);
    assert_eq!(codes, vec![0]);
    let response = client
        .call(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text("deleted-group"))]), 2)
        .expect("delete groups");
    assert_eq!(response.results[0].error_code, 0, "empty group deleted");
    // Kill right after the last acknowledgement: nothing had a chance to flush at shutdown.
    broker.kill9();
    broker.restart();
    let mut client = AdminClient::connect(&bootstrap).expect("reconnect");
    let offsets = fetch(&mut client, "durable-group", "durable", 3);
    assert_eq!(
        offsets,
        vec![(49, Some("meta-49".into())), (98, Some("meta-98".into())), (147, Some("meta-147".into()))],
        "the last acknowledged commit survives"
    );
    assert_eq!(fetch(&mut client, "deleted-group", "durable", 1)[0].0, -1, "a deleted group's offsets stay deleted");
    let codes = commit(&mut client, "durable-group", -1, "", "missing-topic", &[(0, 1)]);
    assert_eq!(codes, vec![ResponseError::UnknownTopicOrPartition.code()], "commits for unknown topics are refused");
}

fn join(client: &mut AdminClient, group: &str, member: &str, metadata: &[u8]) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(text(member))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(text("range"))
            .with_metadata(metadata.to_vec().into())]);
    client.call(&request, 5).expect("join group")
}

fn sync(client: &mut AdminClient, group: &str, member: &str, generation: i32) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id(generation)
        .with_member_id(text(member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(text(member))
            .with_assignment(vec![9, 9].into())]);
    client.call(&request, 3).expect("sync group")
}

#[test]
fn stale_generation_commit_is_rejected() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "fenced", "--partitions", "1", "--bootstrap", &bootstrap]);
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    // v4+: the first join hands out a member id.
    let first = join(&mut client, "fence-group", "", b"one");
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let member = first.member_id.to_string();
    let joined = join(&mut client, "fence-group", &member, b"one");
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id, "the only member leads");
    let old_generation = joined.generation_id;
    let synced = sync(&mut client, "fence-group", &member, old_generation);
    assert_eq!((synced.error_code, synced.assignment.to_vec()), (0, vec![9, 9]));
    assert_eq!(
        commit(&mut client, "fence-group", old_generation, &member, "fenced", &[(0, 5)]),
        vec![0],
        "the current generation commits"
    );

    // The member rejoins with new metadata: a new generation.
    let rejoined = join(&mut client, "fence-group", &member, b"two");
    assert_eq!(rejoined.error_code, 0);
    assert!(rejoined.generation_id > old_generation, "a new generation");
    let stale = commit(&mut client, "fence-group", old_generation, &member, "fenced", &[(0, 6)]);
    assert_eq!(stale, vec![ResponseError::IllegalGeneration.code()], "a commit with a stale generation is rejected");
    let heartbeat = client
        .call(
            &HeartbeatRequest::default()
                .with_group_id(GroupId(text("fence-group")))
                .with_generation_id(old_generation)
                .with_member_id(text(&member)),
            3,
        )
        .expect("heartbeat");
    assert_eq!(
        heartbeat.error_code,
        ResponseError::IllegalGeneration.code(),
        "a heartbeat with a stale generation is rejected"
    );
    let stranger = commit(&mut client, "fence-group", rejoined.generation_id, "stranger", "fenced", &[(0, 6)]);
    assert_eq!(stranger, vec![ResponseError::UnknownMemberId.code()], "an unknown member cannot commit");
    let synced = sync(&mut client, "fence-group", &member, rejoined.generation_id);
    assert_eq!(synced.error_code, 0);
    assert_eq!(commit(&mut client, "fence-group", rejoined.generation_id, &member, "fenced", &[(0, 6)]), vec![0]);
    assert_eq!(fetch(&mut client, "fence-group", "fenced", 1)[0].0, 6, "only accepted commits are stored");
    let deleted = client
        .call(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text("fence-group"))]), 2)
        .expect("delete");
    assert_eq!(
        deleted.results[0].error_code,
        ResponseError::NonEmptyGroup.code(),
        "a group with members cannot be deleted"
    );
}
