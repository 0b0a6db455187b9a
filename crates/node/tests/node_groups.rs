//! Consumer groups driven through the node's group coordinator without sockets: membership, offsets
//! and the admin operations, and what survives a reopen of the data directory — what
//! `crates/cli/tests/groups_protocol.rs` and `groups_cli.rs` show through the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use once_group::{
    CommitMember, GroupError, GroupState, JoinRequest, OffsetCommit, PartitionOffset, RequestContext, SyncRequest,
    TopicOffsets,
};
use once_node::{Node, NodeConfig};

const GROUP: &str = "billing";
const TOPIC: &str = "invoices";

fn config(dir: &Path) -> NodeConfig {
    NodeConfig { data_dir: dir.to_path_buf(), ..NodeConfig::default() }
}

fn join_request(member_id: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: None,
        client_id: "node-test".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".to_string(),
        protocols: vec![("range".to_string(), b"subscription".to_vec().into())],
        require_known_member_id: false,
    }
}

fn commit(member: CommitMember, offsets: &[(i32, i64)]) -> OffsetCommit {
    let partitions = offsets
        .iter()
        .map(|&(partition, offset)| PartitionOffset { partition, offset, leader_epoch: -1, metadata: None })
        .collect();
    OffsetCommit {
        group_id: GROUP.to_string(),
        member,
        topics: vec![TopicOffsets { topic: TOPIC.to_string(), partitions }],
    }
}

/// Commits through the node's group coordinator, with the node's topics deciding which partitions
/// exist (as the Kafka edge does); the outcome of each partition.
async fn commit_offsets(node: &Arc<Node>, commit: OffsetCommit) -> Vec<(i32, Result<(), GroupError>)> {
    let topics = node.topics.clone();
    let exists = move |topic: &str, partition: i32| topics.get(topic).is_some_and(|t| t.partition(partition).is_some());
    let context = RequestContext { client_id: "node-test", client_host: "", partition_exists: &exists };
    let mut outcomes = node.groups.commit_offsets(commit, &context).await;
    assert_eq!(outcomes.len(), 1, "one topic");
    outcomes.remove(0).1
}

/// The group's committed offsets of partitions 0 and 1 of the topic (-1 when none).
fn committed(node: &Node) -> Vec<i64> {
    let wanted = vec![(GROUP.to_string(), Some(vec![(TOPIC.to_string(), vec![0, 1])]))];
    node.groups.fetch_offsets(wanted, true)[0][0].1.iter().map(|partition| partition.offset).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_joins_syncs_commits_and_its_offsets_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    node.topics.create(TOPIC, 2, BTreeMap::new()).await.expect("create");

    let joined = node.groups.join(GROUP, join_request("")).await.expect("join");
    assert_eq!(joined.generation_id, 1, "the first generation");
    assert_eq!(joined.leader_id, joined.member_id, "the only member leads");
    assert_eq!(joined.protocol_name, "range");
    assert_eq!(joined.members.len(), 1, "the leader gets every member's metadata");
    let member = joined.member_id.clone();
    let sync = SyncRequest {
        member_id: member.clone(),
        group_instance_id: None,
        generation_id: joined.generation_id,
        protocol_type: Some("consumer".to_string()),
        protocol_name: Some("range".to_string()),
        assignments: vec![(member.clone(), b"partitions 0 and 1".to_vec().into())],
    };
    let synced = node.groups.sync(GROUP, sync).await.expect("sync");
    assert_eq!(&synced.assignment[..], b"partitions 0 and 1", "the leader's assignment comes back");
    assert_eq!(node.groups.heartbeat(GROUP, &member, None, 1), Ok(()), "a heartbeat at the current generation");
    let listed = node.groups.list_groups(&[], &[]);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].group_id.as_str(), listed[0].state), (GROUP, GroupState::Stable));

    let current = CommitMember { generation_id: 1, member_id: member.clone(), group_instance_id: None };
    let outcomes = commit_offsets(&node, commit(current.clone(), &[(0, 17), (1, 29), (7, 1)])).await;
    assert_eq!(outcomes[0], (0, Ok(())));
    assert_eq!(outcomes[1], (1, Ok(())));
    assert_eq!(outcomes[2], (7, Err(GroupError::UnknownTopicOrPartition)), "a partition that does not exist");
    assert_eq!(committed(&node), vec![17, 29]);

    let stale = CommitMember { generation_id: 0, ..current.clone() };
    let refused = commit_offsets(&node, commit(stale, &[(0, 99)])).await;
    assert!(matches!(refused[0].1, Err(GroupError::IllegalGeneration { given: 0, current: 1 })), "{refused:?}");
    let stranger = CommitMember { member_id: "stranger".to_string(), ..current.clone() };
    let refused = commit_offsets(&node, commit(stranger, &[(0, 99)])).await;
    assert_eq!(refused[0].1, Err(GroupError::UnknownMemberId));
    assert_eq!(committed(&node), vec![17, 29], "refused commits change nothing");

    let left = node.groups.leave(GROUP, &[(member.clone(), None)]).expect("leave");
    assert_eq!(left, vec![Ok(())]);
    let described = node.groups.describe_groups(vec![GROUP.to_string()]);
    assert_eq!(described[0].state, GroupState::Empty, "no member left");
    let deleted = node.groups.delete_groups(vec!["unknown".to_string()]).await;
    assert_eq!(deleted[0].1, Err(GroupError::GroupIdNotFound));

    node.close().await;
    drop(node);
    let node = Node::open(config(dir.path())).expect("reopen");
    assert_eq!(committed(&node), vec![17, 29], "the offsets were replayed from the offsets log");
    let listed = node.groups.list_groups(&[], &[]);
    assert_eq!(listed.len(), 1, "the group is known again");
    assert_eq!((listed[0].protocol_type.as_str(), listed[0].state), ("consumer", GroupState::Empty));
    assert_eq!(node.groups.heartbeat(GROUP, &member, None, 1), Err(GroupError::UnknownMemberId), "members are not");

    // A client assigning itself (generation -1, no member) commits to an empty group.
    let outcomes =
        commit_offsets(&node, commit(CommitMember { generation_id: -1, ..Default::default() }, &[(0, 18)])).await;
    assert_eq!(outcomes, vec![(0, Ok(()))]);
    let deleted = node.groups.delete_groups(vec![GROUP.to_string()]).await;
    assert_eq!(deleted, vec![(GROUP.to_string(), Ok(()))], "an empty group is deleted");
    assert_eq!(committed(&node), vec![-1, -1], "with its offsets");
    node.close().await;
    drop(node);
    let node = Node::open(config(dir.path())).expect("reopen again");
    assert_eq!(committed(&node), vec![-1, -1], "the deletion is durable");
    assert!(node.groups.list_groups(&[], &[]).is_empty());
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_makes_the_group_rebalance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    let first = node.groups.join(GROUP, join_request("")).await.expect("first join");
    assert_eq!(first.generation_id, 1);

    // The second member's join waits until the first rejoins (its heartbeat says to).
    let groups = node.groups.clone();
    let second = tokio::spawn(async move { groups.join(GROUP, join_request("")).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match node.groups.heartbeat(GROUP, &first.member_id, None, 1) {
            Err(GroupError::RebalanceInProgress) => break,
            Ok(()) => {}
            Err(other) => panic!("unexpected heartbeat answer: {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the second join never started a rebalance");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rejoined = node.groups.join(GROUP, join_request(&first.member_id)).await.expect("rejoin");
    let second = second.await.expect("task").expect("second join");
    assert_eq!((rejoined.generation_id, second.generation_id), (2, 2), "both in the next generation");
    assert_eq!(rejoined.leader_id, second.leader_id, "one leader");
    let leader = if rejoined.member_id == rejoined.leader_id { &rejoined } else { &second };
    assert_eq!(leader.members.len(), 2, "the leader sees both members");
    let stale = node.groups.heartbeat(GROUP, &first.member_id, None, 1);
    assert!(matches!(stale, Err(GroupError::IllegalGeneration { .. })), "generation 1 is over: {stale:?}");
    node.close().await;
}
