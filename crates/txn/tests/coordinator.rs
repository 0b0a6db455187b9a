//! The coordinator against a recording marker writer: two-phase commit, fencing, timeouts, failed
//! markers retried, and prepared transactions finished after a restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use once_partition::TxnMarker;
use once_txn::{BoxFuture, MarkerError, MarkerWriter, TxnConfig, TxnCoordinator, TxnError, TxnState};

/// Records every marker; fails them all while `failing` is set; refuses those to the targets in
/// `fenced` as a partition does that has seen a newer producer epoch (and records the refusal).
#[derive(Default)]
struct Recorder {
    written: Mutex<Vec<(String, TxnMarker)>>,
    failing: AtomicBool,
    fenced: Mutex<BTreeSet<String>>,
    refused: Mutex<Vec<(String, TxnMarker)>>,
}

impl Recorder {
    fn record(&self, target: String, marker: TxnMarker) -> BoxFuture<Result<(), MarkerError>> {
        let outcome = if self.failing.load(Ordering::SeqCst) {
            Err(MarkerError::Failed(format!("{target}: disk on fire")))
        } else if self.fenced.lock().unwrap().contains(&target) {
            self.refused.lock().unwrap().push((target.clone(), marker));
            Err(MarkerError::Fenced(format!("{target}: producer fenced: epoch is older than the current epoch")))
        } else {
            self.written.lock().unwrap().push((target, marker));
            Ok(())
        };
        Box::pin(async move { outcome })
    }

    fn take(&self) -> Vec<(String, TxnMarker)> {
        let mut written = std::mem::take(&mut *self.written.lock().unwrap());
        written.sort_by(|a, b| a.0.cmp(&b.0));
        written
    }
}

struct Shared(Arc<Recorder>);

impl MarkerWriter for Shared {
    fn write_partition_marker(
        &self,
        topic: &str,
        partition: i32,
        marker: TxnMarker,
    ) -> BoxFuture<Result<(), MarkerError>> {
        self.0.record(format!("{topic}-{partition}"), marker)
    }

    fn write_group_marker(&self, group: &str, marker: TxnMarker) -> BoxFuture<Result<(), MarkerError>> {
        self.0.record(format!("group:{group}"), marker)
    }
}

fn open(dir: &Path, interval_ms: u64, recorder: &Arc<Recorder>) -> Arc<TxnCoordinator> {
    let mut config = TxnConfig::new(dir.to_path_buf());
    config.abort_check_interval = Duration::from_millis(interval_ms);
    config.max_timeout_ms = 60_000;
    let next = Arc::new(AtomicI64::new(1000));
    // Ids continue across reopenings of the same directory in these tests (the broker's allocator
    // guarantees that for real).
    let ids = next.clone();
    let coordinator =
        TxnCoordinator::open(config, Arc::new(move || Ok(ids.fetch_add(1, Ordering::SeqCst)))).expect("opens");
    coordinator.start(Arc::new(Shared(recorder.clone())));
    coordinator
}

fn tp(topic: &str, partition: i32) -> (String, i32) {
    (topic.to_string(), partition)
}

fn marker(producer_id: i64, producer_epoch: i16, commit: bool) -> TxnMarker {
    TxnMarker { producer_id, producer_epoch, coordinator_epoch: 0, commit }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_writes_a_marker_to_every_partition_and_group() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 60_000, &recorder);
    let (producer_id, epoch) = coordinator.init_producer_id("copier", 10_000, None).await.expect("init");
    assert_eq!(epoch, 0);
    coordinator.add("copier", producer_id, epoch, &[tp("out", 0), tp("out", 1)], &[]).await.expect("add");
    coordinator.add("copier", producer_id, epoch, &[], &["billing".into()]).await.expect("add offsets");
    let verified = coordinator.with_verified("copier", producer_id, epoch, |txn| txn.partitions.len());
    assert_eq!(verified, Ok(2));
    coordinator.end("copier", producer_id, epoch, true).await.expect("commit");
    let expected = marker(producer_id, epoch, true);
    assert_eq!(
        recorder.take(),
        vec![("group:billing".into(), expected), ("out-0".into(), expected), ("out-1".into(), expected)]
    );
    let described = coordinator.describe("copier").expect("known");
    assert_eq!((described.state, described.partitions.len()), (TxnState::CompleteCommit, 0));
    assert!(
        matches!(coordinator.with_verified("copier", producer_id, epoch, |_| ()), Err(TxnError::InvalidTxnState(_))),
        "a produce after the commit is refused"
    );
    assert_eq!(coordinator.end("copier", producer_id, epoch, true).await, Ok(()), "a retried commit succeeds");
    assert!(recorder.take().is_empty(), "a retried commit writes no second marker");
    assert!(matches!(coordinator.end("copier", producer_id, epoch, false).await, Err(TxnError::InvalidTxnState(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_incarnation_fences_and_aborts_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 60_000, &recorder);
    let (producer_id, epoch) = coordinator.init_producer_id("copier", 10_000, None).await.unwrap();
    coordinator.add("copier", producer_id, epoch, &[tp("out", 2)], &["g".into()]).await.unwrap();
    let (same_id, new_epoch) = coordinator.init_producer_id("copier", 10_000, None).await.expect("fences");
    assert_eq!((same_id, new_epoch), (producer_id, epoch + 2), "one bump to fence, one for the new incarnation");
    let fence = marker(producer_id, epoch + 1, false);
    assert_eq!(recorder.take(), vec![("group:g".into(), fence), ("out-2".into(), fence)]);
    assert_eq!(
        coordinator.add("copier", producer_id, epoch, &[tp("out", 2)], &[]).await,
        Err(TxnError::ProducerFenced),
        "the zombie cannot add partitions"
    );
    assert_eq!(coordinator.end("copier", producer_id, epoch, true).await, Err(TxnError::ProducerFenced));
    assert_eq!(coordinator.with_verified("copier", producer_id, epoch, |_| ()), Err(TxnError::ProducerFenced));
    assert_eq!(coordinator.describe("copier").unwrap().state, TxnState::Empty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_360_retries_and_stale_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 60_000, &recorder);
    let (producer_id, epoch) = coordinator.init_producer_id("p", 10_000, None).await.unwrap();
    let bumped = coordinator.init_producer_id("p", 10_000, Some((producer_id, epoch))).await.expect("bumps");
    assert_eq!(bumped, (producer_id, epoch + 1));
    let retried = coordinator.init_producer_id("p", 10_000, Some((producer_id, epoch))).await.expect("retry");
    assert_eq!(retried, bumped, "a retried bump gets the same answer");
    assert_eq!(coordinator.init_producer_id("p", 10_000, Some((producer_id, 77))).await, Err(TxnError::ProducerFenced));
    assert!(matches!(
        coordinator.init_producer_id("p", 60_001, None).await,
        Err(TxnError::InvalidTransactionTimeout { .. })
    ));
    assert_eq!(
        coordinator.add("unknown", producer_id, 0, &[tp("a", 0)], &[]).await,
        Err(TxnError::InvalidProducerIdMapping)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_timeout_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 50, &recorder);
    let (producer_id, epoch) = coordinator.init_producer_id("slow", 300, None).await.unwrap();
    coordinator.add("slow", producer_id, epoch, &[tp("out", 0)], &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(coordinator.describe("slow").unwrap().state, TxnState::Ongoing, "not before its timeout");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coordinator.describe("slow").unwrap().state != TxnState::CompleteAbort {
        assert!(tokio::time::Instant::now() < deadline, "the timed-out transaction was not aborted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recorder.take(), vec![("out-0".into(), marker(producer_id, epoch + 1, false))]);
    assert_eq!(coordinator.end("slow", producer_id, epoch, true).await, Err(TxnError::ProducerFenced));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_markers_are_retried_until_the_transaction_completes() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 50, &recorder);
    let (producer_id, epoch) = coordinator.init_producer_id("p", 10_000, None).await.unwrap();
    coordinator.add("p", producer_id, epoch, &[tp("out", 0)], &[]).await.unwrap();
    recorder.failing.store(true, Ordering::SeqCst);
    assert_eq!(coordinator.end("p", producer_id, epoch, true).await, Ok(()), "the decision is durable");
    assert_eq!(coordinator.describe("p").unwrap().state, TxnState::PrepareCommit);
    assert_eq!(
        coordinator.add("p", producer_id, epoch, &[tp("out", 0)], &[]).await,
        Err(TxnError::ConcurrentTransactions),
        "the next transaction waits for the markers"
    );
    recorder.failing.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coordinator.describe("p").unwrap().state != TxnState::CompleteCommit {
        assert!(tokio::time::Instant::now() < deadline, "the markers were not retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recorder.take(), vec![("out-0".into(), marker(producer_id, epoch, true))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_transaction_is_finished_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broken = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 60_000, &broken);
    let (producer_id, epoch) = coordinator.init_producer_id("p", 10_000, None).await.unwrap();
    coordinator.add("p", producer_id, epoch, &[tp("a", 0), tp("b", 3)], &["g".into()]).await.unwrap();
    broken.failing.store(true, Ordering::SeqCst);
    coordinator.end("p", producer_id, epoch, true).await.unwrap();
    coordinator.close().await;
    drop(coordinator);

    let recorder = Arc::new(Recorder::default());
    let reopened = open(dir.path(), 60_000, &recorder);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reopened.describe("p").unwrap().state != TxnState::CompleteCommit {
        assert!(tokio::time::Instant::now() < deadline, "the prepared commit was not finished after the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commit = marker(producer_id, epoch, true);
    assert_eq!(recorder.take(), vec![("a-0".into(), commit), ("b-3".into(), commit), ("group:g".into(), commit)]);
    let listed = reopened.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transactional_id, "p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_bound_the_transaction_log_and_keep_every_id() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut config = TxnConfig::new(dir.path().to_path_buf());
    config.abort_check_interval = Duration::from_millis(100);
    config.segment_bytes = 16 * 1024;
    config.checkpoint_log_bytes_min = 64 * 1024;
    let ids = Arc::new(AtomicI64::new(1));
    let source = ids.clone();
    let coordinator = TxnCoordinator::open(config.clone(), Arc::new(move || Ok(source.fetch_add(1, Ordering::SeqCst))))
        .expect("opens");
    coordinator.start(Arc::new(Shared(recorder.clone())));
    let mut producers = Vec::new();
    for id in 0..3 {
        producers.push(coordinator.init_producer_id(&format!("t{id}"), 10_000, None).await.unwrap());
    }
    // About 150 bytes per record, 3 records per transaction: well past 64 KiB.
    let mut biggest = 0;
    for round in 0..400 {
        let id = round % 3;
        let (producer_id, epoch) = producers[id];
        let name = format!("t{id}");
        coordinator.add(&name, producer_id, epoch, &[tp("out", round as i32 % 4)], &[]).await.unwrap();
        coordinator.end(&name, producer_id, epoch, round % 2 == 0).await.unwrap();
        biggest = biggest.max(coordinator.log_bytes());
    }
    let (producer_id, epoch) = producers[0];
    coordinator.add("t0", producer_id, epoch, &[tp("open", 0)], &[]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while coordinator.log_bytes() >= 64 * 1024 {
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint: log at {} bytes", coordinator.log_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(biggest > 64 * 1024, "the log grew past the threshold before a checkpoint ({biggest} bytes)");
    let before: Vec<_> = coordinator.list();
    coordinator.close().await;
    drop(coordinator);
    let reopened =
        TxnCoordinator::open(config, Arc::new(move || Ok(ids.fetch_add(1, Ordering::SeqCst)))).expect("reopens");
    assert_eq!(reopened.list(), before, "every id and its state survive the checkpoint and a restart");
    assert_eq!(reopened.describe("t0").unwrap().state, TxnState::Ongoing);
}

/// Issue 13 item 1: after a new incarnation (InitProducerId naming no producer id and epoch), the
/// pair it replaced is fenced for good. A zombie of the earlier incarnation asking for a KIP-360 bump
/// with that pair must not be mistaken for a retry and handed the new incarnation's epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_bump_after_a_new_incarnation_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 60_000, &recorder);
    let (producer_id, zombie_epoch) = coordinator.init_producer_id("t", 10_000, None).await.unwrap();
    let incarnation = coordinator.init_producer_id("t", 10_000, None).await.expect("a new incarnation");
    assert_eq!(incarnation, (producer_id, zombie_epoch + 1));
    assert_eq!(
        coordinator.init_producer_id("t", 10_000, Some((producer_id, zombie_epoch))).await,
        Err(TxnError::ProducerFenced),
        "the zombie's bump names the replaced pair: fenced, not a retry"
    );
    assert_eq!(
        coordinator.describe("t").map(|metadata| (metadata.producer_id, metadata.producer_epoch)),
        Some(incarnation),
        "the new incarnation keeps its epoch"
    );
    // The same after a restart: the transaction log carries the rule.
    coordinator.close().await;
    drop(coordinator);
    let reopened = open(dir.path(), 60_000, &recorder);
    assert_eq!(
        reopened.init_producer_id("t", 10_000, Some((producer_id, zombie_epoch))).await,
        Err(TxnError::ProducerFenced),
        "fenced after a restart too"
    );
    // The new incarnation's own KIP-360 bump, and a retry of it, still work.
    let bumped = reopened.init_producer_id("t", 10_000, Some(incarnation)).await.expect("a KIP-360 bump");
    assert_eq!(bumped, (producer_id, incarnation.1 + 1));
    assert_eq!(reopened.init_producer_id("t", 10_000, Some(incarnation)).await, Ok(bumped), "its retry");
}

/// Issue 13 item 7: a marker the writer reports as `MarkerError::Fenced` (a partition that has seen a
/// newer producer epoch and holds nothing open of the producer, see the broker's mapping) would be
/// refused forever. The coordinator abandons it and completes the transaction instead of retrying it
/// forever and wedging the transactional id. Completing is Once's choice: Kafka stops sending and
/// leaves the transaction Prepare* for a newer coordinator, which Once never has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_refused_as_fenced_is_abandoned_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let coordinator = open(dir.path(), 50, &recorder);
    let (producer_id, epoch) = coordinator.init_producer_id("p", 10_000, None).await.unwrap();
    coordinator.add("p", producer_id, epoch, &[tp("out", 0), tp("out", 1)], &["g".into()]).await.unwrap();
    recorder.fenced.lock().unwrap().insert("out-1".into());
    assert_eq!(coordinator.end("p", producer_id, epoch, true).await, Ok(()), "the decision is durable");
    // Give the timer a few rounds: a wedged id would stay PrepareCommit however long one waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        coordinator.describe("p").unwrap().state,
        TxnState::CompleteCommit,
        "the fenced marker was abandoned and the transaction completed"
    );
    let commit = marker(producer_id, epoch, true);
    let written = recorder.take();
    assert_eq!(
        written.iter().filter(|(target, _)| target == "out-0").count(),
        1,
        "the marker the partition took was written once, not retried: {written:?}"
    );
    assert!(written.contains(&("group:g".into(), commit)), "the group's marker is written: {written:?}");
    let refused = recorder.refused.lock().unwrap().clone();
    assert_eq!(refused, vec![("out-1".into(), commit)], "the fenced marker was tried once, then abandoned");
    coordinator.add("p", producer_id, epoch, &[tp("out", 0)], &[]).await.expect("the next transaction starts");
    assert_eq!(
        coordinator.init_producer_id("p", 10_000, None).await.map(|(id, _)| id),
        Ok(producer_id),
        "a new incarnation is not kept waiting with CONCURRENT_TRANSACTIONS"
    );
}
