//! Transactional offsets through the coordinator's public API: TxnOffsetCommit holds offsets pending,
//! OffsetFetch serves the last committed ones (RequireStable answers UNSTABLE_OFFSET_COMMIT), the
//! producer's marker commits or aborts them, and a restart replays all of it from the offsets log.
//!
//! Tests that complete a transaction go through `Partition::write_marker`; until the partition crate
//! implements it they panic at that call (`not yet implemented: write_marker`).

use std::path::Path;
use std::time::Duration;

use once_group::{
    CommitMember, CoordinatorNode, GroupConfig, GroupCoordinator, GroupError, JoinRequest, OffsetCommit,
    PartitionOffset, RequestContext, TopicOffsets, TopicOutcomes, TxnOffsetCommit,
};
use once_partition::TxnMarker;

const PRODUCER: i64 = 4000;
const EPOCH: i16 = 0;
const TOPIC: &str = "t";

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

/// A TxnOffsetCommit of `offsets` (partition, offset) without consumer group metadata (a v3 request
/// that names no member).
fn txn_request(group: &str, producer_id: i64, offsets: &[(i32, i64)]) -> TxnOffsetCommit {
    let partitions = offsets
        .iter()
        .map(|(partition, offset)| PartitionOffset {
            partition: *partition,
            offset: *offset,
            leader_epoch: -1,
            metadata: Some(format!("txn-{offset}")),
        })
        .collect();
    TxnOffsetCommit {
        group_id: group.into(),
        producer_id,
        producer_epoch: EPOCH,
        member: Some(CommitMember { generation_id: -1, ..CommitMember::default() }),
        topics: vec![TopicOffsets { topic: TOPIC.into(), partitions }],
    }
}

/// Outcomes of a TxnOffsetCommit, by partition.
fn codes(outcomes: &TopicOutcomes) -> Vec<(i32, Result<(), GroupError>)> {
    outcomes.iter().flat_map(|(_, partitions)| partitions.iter().cloned()).collect()
}

async fn txn_commit(coordinator: &GroupCoordinator, group: &str, producer_id: i64, offsets: &[(i32, i64)]) {
    let outcomes = coordinator.txn_offset_commit(txn_request(group, producer_id, offsets)).await;
    let wanted: Vec<(i32, Result<(), GroupError>)> = offsets.iter().map(|(partition, _)| (*partition, OK)).collect();
    assert_eq!(codes(&outcomes), wanted, "transactional offsets acknowledged");
}

async fn plain_commit(coordinator: &GroupCoordinator, group: &str, partition: i32, offset: i64) {
    let commit = OffsetCommit {
        group_id: group.into(),
        member: CommitMember { generation_id: -1, ..CommitMember::default() },
        topics: vec![TopicOffsets {
            topic: TOPIC.into(),
            partitions: vec![PartitionOffset { partition, offset, leader_epoch: -1, metadata: None }],
        }],
    };
    let outcomes = coordinator.commit_offsets(commit, &context()).await;
    assert_eq!(outcomes[0].1[0].1, OK, "plain commit acknowledged");
}

/// (offset, outcome) of one partition from OffsetFetch, with or without RequireStable.
async fn fetch(
    coordinator: &GroupCoordinator,
    group: &str,
    partition: i32,
    stable: bool,
) -> (i64, Result<(), GroupError>) {
    let wanted = vec![(group.to_string(), Some(vec![(TOPIC.to_string(), vec![partition])]))];
    let fetched = coordinator.fetch_offsets(wanted, stable);
    let partition = &fetched[0][0].1[0];
    (partition.offset, partition.outcome.clone())
}

/// The committed offset as a plain OffsetFetch sees it.
async fn committed(coordinator: &GroupCoordinator, group: &str, partition: i32) -> i64 {
    let (offset, outcome) = fetch(coordinator, group, partition, false).await;
    assert_eq!(outcome, OK, "a plain fetch never fails for pending offsets");
    offset
}

fn marker(producer_id: i64, commit: bool) -> TxnMarker {
    TxnMarker { producer_id, producer_epoch: EPOCH, coordinator_epoch: 0, commit }
}

const OK: Result<(), GroupError> = Ok(());
const UNSTABLE: Result<(), GroupError> = Err(GroupError::UnstableOffsetCommit);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_offsets_are_invisible_and_unstable() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    assert_eq!(committed(&coordinator, "g", 0).await, 5, "the last committed offset, not the pending one");
    assert_eq!(committed(&coordinator, "g", 1).await, -1, "no committed offset yet");
    assert_eq!(fetch(&coordinator, "g", 0, true).await, (-1, UNSTABLE), "RequireStable");
    assert_eq!(fetch(&coordinator, "g", 1, true).await, (-1, UNSTABLE), "RequireStable, another partition");
    assert_eq!(fetch(&coordinator, "g", 0, false).await, (5, OK), "without RequireStable: committed");
    assert_eq!(fetch(&coordinator, "g", 2, true).await, (-1, OK), "a partition without pending offsets");
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
    assert_eq!(fetch(&coordinator, "g", 0, true).await, (-1, UNSTABLE), "still pending after the restart");
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
    let outcomes = coordinator.txn_offset_commit(txn_request("", PRODUCER, &[(0, 1)])).await;
    assert_eq!(codes(&outcomes), vec![(0, Err(GroupError::InvalidGroupId))]);
    let mut request = txn_request("g", PRODUCER, &[(0, 1), (1, 2)]);
    request.topics[0].partitions[1].metadata = Some("m".repeat(5000));
    let outcomes = coordinator.txn_offset_commit(request).await;
    assert_eq!(
        codes(&outcomes),
        vec![(0, OK), (1, Err(GroupError::OffsetMetadataTooLarge(5000)))],
        "only the partition with too much metadata is refused"
    );
    assert_eq!(fetch(&coordinator, "g", 0, true).await.1, UNSTABLE, "the accepted partition is pending");
    assert_eq!(fetch(&coordinator, "g", 1, true).await, (-1, OK), "the refused partition is not");
    coordinator.close().await;
    let outcomes = coordinator.txn_offset_commit(txn_request("g", PRODUCER, &[(0, 1)])).await;
    assert_eq!(codes(&outcomes), vec![(0, Err(GroupError::CoordinatorNotAvailable))], "after close");
}

/// Joins `group` as its only member (as JoinGroup v5: a dynamic member first gets MEMBER_ID_REQUIRED
/// and rejoins with that id; a static one joins at once); returns (member id, generation).
async fn join(coordinator: &GroupCoordinator, group: &str, instance: Option<&str>) -> (String, i32) {
    let mut member_id = String::new();
    for _ in 0..2 {
        let join = JoinRequest {
            member_id: member_id.clone(),
            group_instance_id: instance.map(str::to_string),
            client_id: "test".into(),
            client_host: String::new(),
            session_timeout_ms: 30_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Default::default())],
            require_known_member_id: true,
        };
        match coordinator.join(group, join).await {
            Err(GroupError::MemberIdRequired(required)) => member_id = required,
            Ok(joined) => return (joined.member_id, joined.generation_id),
            Err(error) => panic!("joined: {error}"),
        }
    }
    panic!("no join after MEMBER_ID_REQUIRED");
}

fn with_member(
    mut request: TxnOffsetCommit,
    member_id: &str,
    generation_id: i32,
    instance: Option<&str>,
) -> TxnOffsetCommit {
    request.member = Some(CommitMember {
        generation_id,
        member_id: member_id.into(),
        group_instance_id: instance.map(str::to_string),
    });
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_447_fences_zombie_members_and_generations() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    let (member_id, generation) = join(&coordinator, "g", None).await;
    assert!(generation >= 1, "a first generation");
    // Version 2 carries no member: the edge passes none.
    let attempt = |member: &str, generation: i32, instance: Option<&str>, version: i16| {
        let mut request = with_member(txn_request("g", PRODUCER, &[(0, 1)]), member, generation, instance);
        if version < 3 {
            request.member = None;
        }
        let coordinator = coordinator.clone();
        async move { codes(&coordinator.txn_offset_commit(request).await)[0].1.clone() }
    };
    assert_eq!(attempt("zombie", generation, None, 3).await, Err(GroupError::UnknownMemberId));
    assert_eq!(
        attempt(&member_id, generation - 1, None, 3).await,
        Err(GroupError::IllegalGeneration { given: generation - 1, current: generation })
    );
    assert_eq!(attempt(&member_id, generation, None, 3).await, OK, "the current member and generation");
    assert_eq!(attempt("", -1, None, 3).await, OK, "no consumer metadata: not checked");
    assert_eq!(attempt("zombie", generation - 1, None, 2).await, OK, "before v3 there is no member to check");

    let (static_member, static_generation) = join(&coordinator, "s", Some("instance-1")).await;
    let request =
        with_member(txn_request("s", PRODUCER, &[(0, 1)]), "old-member", static_generation, Some("instance-1"));
    assert_eq!(
        codes(&coordinator.txn_offset_commit(request).await)[0].1,
        Err(GroupError::FencedInstanceId),
        "another member holds the instance id"
    );
    let request =
        with_member(txn_request("s", PRODUCER, &[(0, 1)]), &static_member, static_generation, Some("instance-1"));
    assert_eq!(codes(&coordinator.txn_offset_commit(request).await)[0].1, OK, "the instance's current member");
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

async fn delete_group(coordinator: &GroupCoordinator, group: &str) -> Result<(), GroupError> {
    let mut outcomes = coordinator.delete_groups(vec![group.to_string()]).await;
    outcomes.remove(0).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_group_discards_its_pending_offsets_for_good() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = open(config(data.path()));
    plain_commit(&coordinator, "g", 0, 5).await;
    txn_commit(&coordinator, "g", PRODUCER, &[(0, 10), (1, 11)]).await;
    assert_eq!(delete_group(&coordinator, "g").await, OK, "an empty group is deleted, open transaction or not");
    assert!(coordinator.pending_transactional_producers("g").is_empty());
    let coordinator = reopen(coordinator, config(data.path())).await;
    assert!(coordinator.pending_transactional_producers("g").is_empty(), "the tombstones discard them at replay too");
    assert_eq!(fetch(&coordinator, "g", 1, true).await, (-1, OK));
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
    assert_eq!(fetch(&coordinator, "g", 0, true).await, (10, OK), "committed and stable");
    assert_eq!(fetch(&coordinator, "g", 1, true).await, (11, OK));
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
    assert_eq!(fetch(&coordinator, "g", 0, true).await, (5, OK), "the earlier commit, stable again");
    assert_eq!(fetch(&coordinator, "g", 1, true).await, (-1, OK));
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
    assert_eq!(fetch(&coordinator, "g", 0, true).await, (-1, UNSTABLE), "unstable until the marker");
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
    assert_eq!(delete_group(&coordinator, "g").await, OK);
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
