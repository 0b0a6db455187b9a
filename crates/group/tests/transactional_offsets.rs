//! Transactional offsets through the coordinator's public API: TxnOffsetCommit holds offsets pending,
//! OffsetFetch serves the last committed ones (RequireStable answers UNSTABLE_OFFSET_COMMIT), the
//! producer's marker commits or aborts them, and a restart replays all of it from the offsets log.
//!
//! Tests that complete a transaction go through `Partition::write_marker`; until the partition crate
//! implements it they panic at that call (`not yet implemented: write_marker`).

use std::path::Path;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_group::{CoordinatorNode, GroupConfig, GroupCoordinator, RequestContext};
use once_partition::TxnMarker;

const PRODUCER: i64 = 4000;
const EPOCH: i16 = 0;
const TOPIC: &str = "t";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn config(data: &Path) -> GroupConfig {
    let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
    GroupConfig::new(data, node)
}

fn context() -> RequestContext<'static> {
    RequestContext { client_id: "test", client_host: "", partition_exists: &|_, _| true }
}

fn open(config: GroupConfig) -> std::sync::Arc<GroupCoordinator> {
    GroupCoordinator::open(config).expect("open the coordinator")
}

async fn reopen(
    coordinator: std::sync::Arc<GroupCoordinator>,
    config: GroupConfig,
) -> std::sync::Arc<GroupCoordinator> {
    coordinator.close().await;
    drop(coordinator);
    open(config)
}

/// A TxnOffsetCommit of `offsets` (partition, offset) without consumer group metadata.
fn txn_request(group: &str, producer_id: i64, offsets: &[(i32, i64)]) -> TxnOffsetCommitRequest {
    let partitions = offsets
        .iter()
        .map(|(partition, offset)| {
            TxnOffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_metadata(Some(text(&format!("txn-{offset}"))))
        })
        .collect();
    TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(text("tx")))
        .with_group_id(GroupId(text(group)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(EPOCH)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(text(TOPIC)))
            .with_partitions(partitions)])
}

/// Error codes of a TxnOffsetCommit response, by partition.
fn codes(response: &TxnOffsetCommitResponse) -> Vec<(i32, i16)> {
    response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(|partition| (partition.partition_index, partition.error_code)))
        .collect()
}

async fn txn_commit(coordinator: &GroupCoordinator, group: &str, producer_id: i64, offsets: &[(i32, i64)]) {
    let response = coordinator.txn_offset_commit(txn_request(group, producer_id, offsets), 3).await;
    let wanted: Vec<(i32, i16)> = offsets.iter().map(|(partition, _)| (*partition, 0)).collect();
    assert_eq!(codes(&response), wanted, "transactional offsets acknowledged");
}

async fn plain_commit(coordinator: &GroupCoordinator, group: &str, partition: i32, offset: i64) {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(text(TOPIC))).with_partitions(
            vec![OffsetCommitRequestPartition::default().with_partition_index(partition).with_committed_offset(offset)],
        )]);
    let Some(ResponseKind::OffsetCommit(response)) =
        coordinator.handle(RequestKind::OffsetCommit(request), 8, &context()).await
    else {
        panic!("an OffsetCommit response");
    };
    assert_eq!(response.topics[0].partitions[0].error_code, 0, "plain commit acknowledged");
}

/// (offset, error code) of one partition from OffsetFetch `version` (v8+ uses the batched form).
async fn fetch(coordinator: &GroupCoordinator, group: &str, partition: i32, version: i16, stable: bool) -> (i64, i16) {
    let request = if version >= 8 {
        OffsetFetchRequest::default().with_require_stable(stable).with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partition_indexes(vec![partition])]))])
    } else {
        OffsetFetchRequest::default().with_group_id(GroupId(text(group))).with_require_stable(stable).with_topics(Some(
            vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(text(TOPIC)))
                .with_partition_indexes(vec![partition])],
        ))
    };
    let Some(ResponseKind::OffsetFetch(response)) =
        coordinator.handle(RequestKind::OffsetFetch(request), version, &context()).await
    else {
        panic!("an OffsetFetch response");
    };
    if version >= 8 {
        let partition = &response.groups[0].topics[0].partitions[0];
        (partition.committed_offset, partition.error_code)
    } else {
        let partition = &response.topics[0].partitions[0];
        (partition.committed_offset, partition.error_code)
    }
}

/// The committed offset as a plain (v6) OffsetFetch sees it.
async fn committed(coordinator: &GroupCoordinator, group: &str, partition: i32) -> i64 {
    let (offset, code) = fetch(coordinator, group, partition, 6, false).await;
    assert_eq!(code, 0, "a plain fetch never fails for pending offsets");
    offset
}

fn marker(producer_id: i64, commit: bool) -> TxnMarker {
    TxnMarker { producer_id, producer_epoch: EPOCH, coordinator_epoch: 0, commit }
}

const UNSTABLE: i16 = 88;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_offsets_are_invisible_and_unstable() {
    assert_eq!(ResponseError::UnstableOffsetCommit.code(), UNSTABLE);
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 5, "the last committed offset, not the pending one");
    assert_eq!(committed(&coordinator, "g", 1).await, -1, "no committed offset yet");
    assert_eq!(fetch(&coordinator, "g", 0, 7, true).await, (-1, UNSTABLE), "RequireStable, v7");
    assert_eq!(fetch(&coordinator, "g", 1, 8, true).await, (-1, UNSTABLE), "RequireStable, v8 batched");
    assert_eq!(fetch(&coordinator, "g", 0, 7, false).await, (5, 0), "without RequireStable: committed");
    assert_eq!(fetch(&coordinator, "g", 2, 7, true).await, (-1, 0), "a partition without pending offsets");
    assert_eq!(coordinator.pending_transactional_producers("g"), vec![PRODUCER]);
    assert!(coordinator.pending_transactional_producers("other").is_empty());
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_stays_pending_across_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10)]).await;
    txn_commit(&coordinator, "only-pending", PRODUCER, &[(0, 1)]).await;
    // Forced compaction must wait: a rewrite would lose the open transaction.
    let forced = GroupConfig { offsets_compaction_forced: true, ..config(data.path()) };
    let coordinator = reopen(coordinator, forced.clone()).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 5);
    assert_eq!(fetch(&coordinator, "g", 0, 7, true).await, (-1, UNSTABLE), "still pending after the restart");
    assert_eq!(coordinator.pending_transactional_producers("g"), vec![PRODUCER]);
    assert_eq!(coordinator.pending_transactional_producers("only-pending"), vec![PRODUCER]);
    let coordinator = reopen(coordinator, forced).await;
    assert_eq!(coordinator.pending_transactional_producers("g"), vec![PRODUCER], "and after a second one");
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_offset_commit_validates_like_kafka() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    let response = coordinator.txn_offset_commit(txn_request("", PRODUCER, &[(0, 1)]), 3).await;
    assert_eq!(codes(&response), vec![(0, ResponseError::InvalidGroupId.code())]);
    let mut request = txn_request("g", PRODUCER, &[(0, 1), (1, 2)]);
    request.topics[0].partitions[1].committed_metadata = Some(text(&"m".repeat(5000)));
    let response = coordinator.txn_offset_commit(request, 3).await;
    assert_eq!(
        codes(&response),
        vec![(0, 0), (1, ResponseError::OffsetMetadataTooLarge.code())],
        "only the partition with too much metadata is refused"
    );
    assert_eq!(fetch(&coordinator, "g", 0, 7, true).await.1, UNSTABLE, "the accepted partition is pending");
    assert_eq!(fetch(&coordinator, "g", 1, 7, true).await, (-1, 0), "the refused partition is not");
    coordinator.close().await;
    let response = coordinator.txn_offset_commit(txn_request("g", PRODUCER, &[(0, 1)]), 3).await;
    assert_eq!(codes(&response), vec![(0, ResponseError::CoordinatorNotAvailable.code())], "after close");
}

/// Joins `group` as its only member (JoinGroup v5: a dynamic member first gets MEMBER_ID_REQUIRED
/// and rejoins with that id; a static one joins at once); returns (member id, generation).
async fn join(coordinator: &GroupCoordinator, group: &str, instance: Option<&str>) -> (String, i32) {
    let mut member_id = String::new();
    for _ in 0..2 {
        let request = JoinGroupRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(30_000)
            .with_member_id(text(&member_id))
            .with_group_instance_id(instance.map(text))
            .with_protocol_type(text("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(text("range"))]);
        let Some(ResponseKind::JoinGroup(response)) =
            coordinator.handle(RequestKind::JoinGroup(request), 5, &context()).await
        else {
            panic!("a JoinGroup response");
        };
        if response.error_code == ResponseError::MemberIdRequired.code() {
            member_id = response.member_id.to_string();
            continue;
        }
        assert_eq!(response.error_code, 0, "joined");
        return (response.member_id.to_string(), response.generation_id);
    }
    panic!("no join after MEMBER_ID_REQUIRED");
}

fn with_member(
    request: TxnOffsetCommitRequest,
    member_id: &str,
    generation_id: i32,
    instance: Option<&str>,
) -> TxnOffsetCommitRequest {
    request.with_member_id(text(member_id)).with_generation_id(generation_id).with_group_instance_id(instance.map(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_447_fences_zombie_members_and_generations() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    let (member_id, generation) = join(&coordinator, "g", None).await;
    assert!(generation >= 1, "a first generation");
    let attempt = |member: &str, generation: i32, instance: Option<&str>, version: i16| {
        let request = with_member(txn_request("g", PRODUCER, &[(0, 1)]), member, generation, instance);
        let coordinator = coordinator.clone();
        async move { codes(&coordinator.txn_offset_commit(request, version).await)[0].1 }
    };
    assert_eq!(attempt("zombie", generation, None, 3).await, ResponseError::UnknownMemberId.code());
    assert_eq!(attempt(&member_id, generation - 1, None, 3).await, ResponseError::IllegalGeneration.code());
    assert_eq!(attempt(&member_id, generation, None, 3).await, 0, "the current member and generation");
    assert_eq!(attempt("", -1, None, 3).await, 0, "no consumer metadata: not checked");
    assert_eq!(attempt("zombie", generation - 1, None, 2).await, 0, "before v3 there is no member to check");

    let (static_member, static_generation) = join(&coordinator, "s", Some("instance-1")).await;
    let request =
        with_member(txn_request("s", PRODUCER, &[(0, 1)]), "old-member", static_generation, Some("instance-1"));
    assert_eq!(
        codes(&coordinator.txn_offset_commit(request, 3).await)[0].1,
        ResponseError::FencedInstanceId.code(),
        "another member holds the instance id"
    );
    let request =
        with_member(txn_request("s", PRODUCER, &[(0, 1)]), &static_member, static_generation, Some("instance-1"));
    assert_eq!(codes(&coordinator.txn_offset_commit(request, 3).await)[0].1, 0, "the instance's current member");
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_keeps_offsets_a_transaction_holds() {
    let data = tempfile::tempdir().expect("temp dir");
    let config =
        GroupConfig { offsets_retention_minutes: 0, offsets_retention_check_interval_ms: 50, ..config(data.path()) };
    let coordinator = open(config);
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10)]).await;
    plain_commit(&coordinator, "g", 0, 5).await;
    plain_commit(&coordinator, "g", 1, 6).await;
    let mut expired = false;
    for _ in 0..100 {
        if committed(&coordinator, "g", 1).await == -1 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(expired, "an offset without a pending transaction expires");
    assert_eq!(committed(&coordinator, "g", 0).await, 5, "an offset with a pending transaction does not");
    assert_eq!(coordinator.pending_transactional_producers("g"), vec![PRODUCER], "pending offsets never expire");
    coordinator.close().await;
}

async fn delete_group(coordinator: &GroupCoordinator, group: &str) -> i16 {
    let request = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text(group))]);
    let Some(ResponseKind::DeleteGroups(response)) =
        coordinator.handle(RequestKind::DeleteGroups(request), 2, &context()).await
    else {
        panic!("a DeleteGroups response");
    };
    response.results[0].error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_discards_its_pending_offsets_for_good() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    assert_eq!(delete_group(&coordinator, "g").await, 0, "an empty group is deleted, open transaction or not");
    assert!(coordinator.pending_transactional_producers("g").is_empty());
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert!(coordinator.pending_transactional_producers("g").is_empty(), "the tombstones discard them at replay too");
    assert_eq!(fetch(&coordinator, "g", 1, 7, true).await, (-1, 0));
    assert_eq!(committed(&coordinator, "g", 0).await, -1);
    coordinator.close().await;
}

// Everything below completes a transaction: it needs `Partition::write_marker`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_marker_makes_pending_offsets_committed() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    coordinator.complete_transaction("g", marker(PRODUCER, true)).await.expect("commit");
    assert_eq!(fetch(&coordinator, "g", 0, 7, true).await, (10, 0), "committed and stable");
    assert_eq!(fetch(&coordinator, "g", 1, 8, true).await, (11, 0));
    assert!(coordinator.pending_transactional_producers("g").is_empty());
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 10, "replayed as committed");
    assert_eq!(committed(&coordinator, "g", 1).await, 11);
    assert!(coordinator.pending_transactional_producers("g").is_empty(), "the marker closed it in the log");
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_marker_discards_pending_offsets() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    coordinator.complete_transaction("g", marker(PRODUCER, false)).await.expect("abort");
    assert_eq!(fetch(&coordinator, "g", 0, 7, true).await, (5, 0), "the earlier commit, stable again");
    assert_eq!(fetch(&coordinator, "g", 1, 7, true).await, (-1, 0));
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 5, "replayed as aborted");
    assert_eq!(committed(&coordinator, "g", 1).await, -1);
    assert!(coordinator.pending_transactional_producers("g").is_empty());
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_commit_after_the_transactional_record_wins_at_commit_and_replay() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    plain_commit(&coordinator, "g", 0, 20).await;
    assert_eq!(fetch(&coordinator, "g", 0, 7, true).await, (-1, UNSTABLE), "unstable until the marker");
    coordinator.complete_transaction("g", marker(PRODUCER, true)).await.expect("commit");
    assert_eq!(committed(&coordinator, "g", 0).await, 20, "the later plain commit wins");
    assert_eq!(committed(&coordinator, "g", 1).await, 11, "the other partition commits");
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 20, "replay follows the same log order");
    assert_eq!(committed(&coordinator, "g", 1).await, 11);
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_without_pending_offsets_writes_the_marker_and_succeeds() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    coordinator.complete_transaction("g", marker(PRODUCER, true)).await.expect("a marker with nothing pending");
    coordinator.complete_transaction("g", marker(PRODUCER, false)).await.expect("and again");
    assert_eq!(committed(&coordinator, "g", 0).await, 5);
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 5);
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_marker_cannot_bring_back_a_deleted_group() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10)]).await;
    assert_eq!(delete_group(&coordinator, "g").await, 0);
    coordinator.complete_transaction("g", marker(PRODUCER, true)).await.expect("commit");
    assert_eq!(committed(&coordinator, "g", 0).await, -1);
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert_eq!(committed(&coordinator, "g", 0).await, -1, "not at replay either");
    coordinator.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_transaction_of_the_producer_after_a_restart() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10)]).await;
    let coordinator = reopen(coordinator, config(data.path())).await;
    // The transaction coordinator completes the transaction left open by the restart.
    coordinator.complete_transaction("g", marker(PRODUCER, true)).await.expect("commit after restart");
    assert_eq!(committed(&coordinator, "g", 0).await, 10);
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 20)]).await;
    coordinator.complete_transaction("g", marker(PRODUCER, false)).await.expect("abort the next one");
    assert_eq!(committed(&coordinator, "g", 0).await, 10);
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 10);
    assert!(coordinator.pending_transactional_producers("g").is_empty());
    coordinator.close().await;
}
