//! Through the coordinator's public API: offsets committed many times over are still served by
//! OffsetFetch after a restart that compacted the offsets log, and after the restart after that.

use std::path::Path;

use once_group::{
    CommitMember, CoordinatorNode, GroupConfig, GroupCoordinator, OffsetCommit, PartitionOffset, RequestContext,
    TopicOffsets,
};

const PARTITIONS: i32 = 3;

fn config(data: &Path, forced: bool) -> GroupConfig {
    let node = CoordinatorNode { node_id: 0, host: "localhost".into(), port: 9092 };
    GroupConfig { offsets_compaction_forced: forced, ..GroupConfig::new(data, node) }
}

fn context() -> RequestContext<'static> {
    RequestContext { client_id: "test", client_host: "", partition_exists: &|_, _| true }
}

async fn commit(coordinator: &GroupCoordinator, group: &str, round: i64) {
    let partitions = (0..PARTITIONS)
        .map(|partition| PartitionOffset {
            partition,
            offset: round * 10 + i64::from(partition),
            leader_epoch: -1,
            metadata: Some(format!("round-{round}")),
        })
        .collect();
    let commit = OffsetCommit {
        group_id: group.into(),
        member: CommitMember { generation_id: -1, ..CommitMember::default() },
        topics: vec![TopicOffsets { topic: "t".into(), partitions }],
    };
    let outcomes = coordinator.commit_offsets(commit, &context()).await;
    for (_, outcome) in &outcomes[0].1 {
        assert_eq!(*outcome, Ok(()), "commit round {round} acknowledged");
    }
}

async fn fetch(coordinator: &GroupCoordinator, group: &str) -> Vec<(i64, Option<String>)> {
    let wanted = vec![(group.to_string(), Some(vec![("t".to_string(), (0..PARTITIONS).collect())]))];
    let fetched = coordinator.fetch_offsets(wanted, false);
    fetched[0][0].1.iter().map(|partition| (partition.offset, partition.metadata.clone())).collect()
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list the offsets log")
        .map(|entry| entry.expect("entry"))
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().expect("metadata").len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_fetch_after_a_compacting_restart_serves_the_last_commits() {
    let data = tempfile::tempdir().expect("temp dir");
    let coordinator = GroupCoordinator::open(config(data.path(), false)).expect("open");
    for round in 0..100 {
        commit(&coordinator, "g", round).await;
    }
    commit(&coordinator, "other", 7).await;
    let wanted: Vec<(i64, Option<String>)> =
        (0..PARTITIONS).map(|partition| (990 + i64::from(partition), Some("round-99".to_string()))).collect();
    assert_eq!(fetch(&coordinator, "g").await, wanted);
    coordinator.close().await;
    drop(coordinator);
    let offsets_dir = config(data.path(), false).offsets_dir;
    let bytes_before = log_bytes(&offsets_dir);

    let coordinator = GroupCoordinator::open(config(data.path(), true)).expect("open and compact");
    assert_eq!(fetch(&coordinator, "g").await, wanted, "served after the compacting restart");
    let bytes_after = log_bytes(&offsets_dir);
    assert!(bytes_after * 10 < bytes_before, "the log shrank from {bytes_before} to {bytes_after} bytes");
    commit(&coordinator, "g", 100).await;
    coordinator.close().await;
    drop(coordinator);

    let coordinator = GroupCoordinator::open(config(data.path(), false)).expect("reopen");
    let wanted: Vec<(i64, Option<String>)> =
        (0..PARTITIONS).map(|partition| (1000 + i64::from(partition), Some("round-100".to_string()))).collect();
    assert_eq!(fetch(&coordinator, "g").await, wanted, "a commit after compaction wins over compacted ones");
    assert_eq!(fetch(&coordinator, "other").await[0], (70, Some("round-7".to_string())));
    coordinator.close().await;
}
