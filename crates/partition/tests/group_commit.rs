//! The partition writer: many concurrent appends are all acknowledged, at dense offsets, only once
//! durable; a closed partition refuses appends; a reopened one has everything that was acknowledged.

use once_log::testing::make_batch;
use once_partition::{LogConfig, Partition, PartitionError, PartitionId};

fn id() -> PartitionId {
    PartitionId { topic: "t".into(), partition: 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_acknowledged_at_dense_offsets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = std::sync::Arc::new(Partition::open(id(), dir.path(), LogConfig::default()).expect("open"));
    let mut tasks = Vec::new();
    for task in 0..16 {
        let partition = partition.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..50 {
                let records = 1 + (task + round) % 3;
                let info = partition.append(make_batch(records as u32, 20, 1_700_000_000_000)).await.expect("append");
                assert!(partition.high_watermark() > info.last_offset, "acknowledged only below the high watermark");
                acknowledged.push((info.base_offset, info.last_offset));
            }
            acknowledged
        }));
    }
    let mut ranges = Vec::new();
    for task in tasks {
        ranges.extend(task.await.expect("task"));
    }
    ranges.sort();
    let mut next = 0;
    for (base, last) in &ranges {
        assert_eq!(*base, next, "no gap and no overlap between acknowledged batches");
        next = last + 1;
    }
    assert_eq!(partition.high_watermark(), next);
    partition.close().await.expect("close");
    assert!(
        matches!(partition.append(make_batch(1, 1, 0)).await, Err(PartitionError::Closed(_))),
        "closed partitions refuse appends"
    );

    let reopened = Partition::open(id(), dir.path(), LogConfig::default()).expect("reopen");
    assert_eq!(reopened.high_watermark(), next, "everything acknowledged is there after a clean close");
    let first = reopened.read(0, 1 << 20).expect("read");
    assert!(!first.is_empty());
    reopened.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_batches_fail_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let partition = Partition::open(id(), dir.path(), LogConfig::default()).expect("open");
    let mut corrupt = make_batch(2, 10, 0);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let good = partition.append(make_batch(1, 10, 0));
    let bad = partition.append(corrupt);
    let after = partition.append(make_batch(1, 10, 0));
    assert_eq!(good.await.expect("good batch").base_offset, 0);
    assert!(bad.await.is_err(), "a corrupt batch is refused");
    assert_eq!(after.await.expect("later batch").base_offset, 1, "the refused batch took no offsets and did not latch");
    assert!(!partition.is_failed());
    partition.delete().await.expect("delete");
    assert!(!dir.path().join("00000000000000000000.log").exists(), "delete removes the files");
}
