//! Transactions driven through the node without sockets: what `crates/cli/tests/transactions.rs`,
//! `txn_fencing.rs` and `txn_cli.rs` show through the binary, checked here on the node's own
//! operations (the coordinator, transactional appends, markers, read_committed reads, group offsets).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_group::{GroupError, PartitionOffset, TopicOffsets, TxnOffsetCommit};
use once_log::testing::make_batch_with;
use once_log::{BatchHeader, ValidBatch};
use once_node::{Node, NodeConfig};
use once_partition::{AbortedTxn, Partition, PartitionError};
use once_txn::{TxnError, TxnState};

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const TIMEOUT_MS: i32 = 60_000;
const READ_BYTES_MAX: usize = 1 << 20;

fn config(dir: &Path) -> NodeConfig {
    NodeConfig { data_dir: dir.to_path_buf(), ..NodeConfig::default() }
}

fn txn_batch(producer_id: i64, epoch: i16, first_sequence: i32, records: u32) -> Vec<u8> {
    make_batch_with(producer_id, epoch, first_sequence, TRANSACTIONAL, records, 8, TIMESTAMP_MS)
}

/// Appends a transactional batch through the node's verification and waits until it is durable;
/// returns its base offset.
async fn append(node: &Node, transactional_id: &str, partition: &Partition, batch: Vec<u8>) -> u64 {
    let batch = ValidBatch::validate(batch).expect("a valid batch");
    let queued = node
        .append_transactional(Some(transactional_id), partition, batch)
        .unwrap_or_else(|error| panic!("the transactional append is accepted: {error}"));
    queued.await.expect("durable").base_offset
}

/// What a read_committed consumer reading `partition` from 0 gets: the offsets of the data records
/// below the last stable offset that no aborted transaction covers, and the aborted transactions the
/// partition returned with the read (`Partition::read_committed`, which makes the two agree).
fn read_committed(partition: &Partition) -> (Vec<u64>, Vec<AbortedTxn>) {
    let upper = partition.last_stable_offset();
    let (records, aborted) = partition.read_committed(0, READ_BYTES_MAX, upper).expect("read_committed");
    let mut visible = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = BatchHeader::parse(&records[position..]).expect("whole batches");
        position += header.total_len();
        let base = u64::try_from(header.base_offset).expect("assigned offsets");
        let is_aborted = aborted
            .iter()
            .any(|txn| txn.producer_id == header.producer_id && txn.first_offset <= base && base < txn.last_offset);
        if header.is_control() || is_aborted {
            continue;
        }
        visible.extend(base..=u64::try_from(header.last_offset()).expect("assigned offsets"));
    }
    (visible, aborted)
}

/// Polls `done` every 20 ms until it holds, failing after `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_becomes_visible_once_its_markers_are_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    let topic = node.topics.create("orders", 2, BTreeMap::new()).await.expect("create");
    let (first, second) = (topic.partition(0).expect("p0"), topic.partition(1).expect("p1"));
    let (producer_id, epoch) = node.txns.init_producer_id("copier", TIMEOUT_MS, None).await.expect("init");
    let both = [("orders".to_string(), 0), ("orders".to_string(), 1)];
    node.txns.add("copier", producer_id, epoch, &both, &[]).await.expect("add partitions");

    assert_eq!(append(&node, "copier", &first, txn_batch(producer_id, epoch, 0, 3)).await, 0);
    assert_eq!(append(&node, "copier", &second, txn_batch(producer_id, epoch, 0, 2)).await, 0);
    assert_eq!((first.high_watermark(), first.last_stable_offset()), (3, 0), "written, not yet stable");
    assert_eq!(read_committed(&first), (vec![], vec![]), "read_committed sees nothing of an open transaction");
    let ongoing = node.txns.describe("copier").expect("described");
    assert_eq!(ongoing.state, TxnState::Ongoing);
    assert_eq!(ongoing.partitions.len(), 2, "both partitions are in the transaction");

    node.txns.end("copier", producer_id, epoch, true).await.expect("commit");
    assert_eq!((first.high_watermark(), first.last_stable_offset()), (4, 4), "the commit marker at offset 3");
    assert_eq!((second.high_watermark(), second.last_stable_offset()), (3, 3), "the commit marker at offset 2");
    assert_eq!(read_committed(&first), (vec![0, 1, 2], vec![]), "every record is visible, nothing aborted");
    assert_eq!(read_committed(&second), (vec![0, 1], vec![]));
    let committed = node.txns.describe("copier").expect("described");
    assert_eq!(committed.state, TxnState::CompleteCommit);
    assert!(committed.partitions.is_empty(), "a completed transaction holds no partitions");
    let retried = node.txns.end("copier", producer_id, epoch, true).await;
    assert_eq!(retried, Ok(()), "a retried commit gets the same answer");
    let opposite = node.txns.end("copier", producer_id, epoch, false).await;
    assert!(matches!(opposite, Err(TxnError::InvalidTxnState(_))), "aborting a committed one: {opposite:?}");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_transaction_is_returned_with_the_read_that_covers_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    let topic = node.topics.create("ledger", 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("p0");
    let (producer_id, epoch) = node.txns.init_producer_id("ledger-tx", TIMEOUT_MS, None).await.expect("init");
    let ledger = [("ledger".to_string(), 0)];

    node.txns.add("ledger-tx", producer_id, epoch, &ledger, &[]).await.expect("add");
    append(&node, "ledger-tx", &partition, txn_batch(producer_id, epoch, 0, 3)).await;
    node.txns.end("ledger-tx", producer_id, epoch, true).await.expect("commit offsets 0..3");
    node.txns.add("ledger-tx", producer_id, epoch, &ledger, &[]).await.expect("add again");
    assert_eq!(append(&node, "ledger-tx", &partition, txn_batch(producer_id, epoch, 3, 2)).await, 4);
    node.txns.end("ledger-tx", producer_id, epoch, false).await.expect("abort offsets 4..6");

    assert_eq!((partition.high_watermark(), partition.last_stable_offset()), (7, 7), "the abort marker at 6");
    let (visible, aborted) = read_committed(&partition);
    assert_eq!(visible, vec![0, 1, 2], "the aborted records are not visible");
    assert_eq!(aborted, vec![AbortedTxn { producer_id, first_offset: 4, last_offset: 6 }], "listed for the consumer");
    let (records, before) = partition.read_committed(0, READ_BYTES_MAX, 4).expect("a read of the commit only");
    assert!(!records.is_empty(), "the committed transaction is read");
    assert!(before.is_empty(), "a read ending before the aborted transaction does not list it: {before:?}");
    assert_eq!(node.txns.describe("ledger-tx").map(|txn| txn.state), Some(TxnState::CompleteAbort));

    // The abort survives a reopen: the list comes back from the partition's recovered state.
    node.close().await;
    drop((node, topic, partition));
    let node = Node::open(config(dir.path())).expect("reopen");
    let partition = node.topics.get("ledger").and_then(|topic| topic.partition(0)).expect("p0");
    let (visible, aborted) = read_committed(&partition);
    assert_eq!(visible, vec![0, 1, 2]);
    assert_eq!(aborted, vec![AbortedTxn { producer_id, first_offset: 4, last_offset: 6 }]);
    node.close().await;
}

/// The scenario of `crates/cli/tests/txn_fencing.rs`: a new incarnation (InitProducerId naming no
/// producer) aborts what the old one left open and fences it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_incarnation_aborts_the_zombies_transaction_and_fences_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    let topic = node.topics.create("payments", 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("p0");
    let payments = [("payments".to_string(), 0)];
    let (producer_id, zombie_epoch) = node.txns.init_producer_id("payments-tx", TIMEOUT_MS, None).await.expect("A");
    node.txns.add("payments-tx", producer_id, zombie_epoch, &payments, &[]).await.expect("A adds");
    append(&node, "payments-tx", &partition, txn_batch(producer_id, zombie_epoch, 0, 2)).await;
    assert_eq!(partition.last_stable_offset(), 0, "A's transaction is open");

    let (new_id, epoch) = node.txns.init_producer_id("payments-tx", TIMEOUT_MS, None).await.expect("B");
    assert_eq!(new_id, producer_id, "the same producer id");
    assert!(epoch > zombie_epoch, "a newer epoch: {epoch}");
    assert_eq!(partition.last_stable_offset(), partition.high_watermark(), "A's transaction was aborted");
    let (visible, aborted) = read_committed(&partition);
    assert!(visible.is_empty(), "nothing of A is visible: {visible:?}");
    assert_eq!(aborted.len(), 1, "A's records are listed as aborted");

    let bump = node.txns.init_producer_id("payments-tx", TIMEOUT_MS, Some((producer_id, zombie_epoch))).await;
    assert_eq!(bump, Err(TxnError::ProducerFenced), "the zombie's KIP-360 bump is fenced");
    let add = node.txns.add("payments-tx", producer_id, zombie_epoch, &payments, &[]).await;
    assert_eq!(add, Err(TxnError::ProducerFenced), "the zombie cannot add partitions");
    let end = node.txns.end("payments-tx", producer_id, zombie_epoch, true).await;
    assert_eq!(end, Err(TxnError::ProducerFenced), "nor commit");
    let stray = partition.append(txn_batch(producer_id, zombie_epoch, 2, 1)).await;
    assert!(
        matches!(stray, Err(PartitionError::ProducerFenced { .. })),
        "the abort marker carried the new epoch: the partition fences the zombie on its own: {stray:?}"
    );

    node.txns.add("payments-tx", producer_id, epoch, &payments, &[]).await.expect("B adds");
    let first = append(&node, "payments-tx", &partition, txn_batch(producer_id, epoch, 0, 1)).await;
    node.txns.end("payments-tx", producer_id, epoch, true).await.expect("B commits");
    assert_eq!(read_committed(&partition).0, vec![first], "only B's record is visible");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_transaction_is_aborted_after_its_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = NodeConfig { transaction_abort_check_interval_ms: 50, ..config(dir.path()) };
    let node = Node::open(config).expect("open");
    let topic = node.topics.create("hung", 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("p0");
    let (producer_id, epoch) = node.txns.init_producer_id("hung-tx", 300, None).await.expect("init");
    node.txns.add("hung-tx", producer_id, epoch, &[("hung".to_string(), 0)], &[]).await.expect("add");
    append(&node, "hung-tx", &partition, txn_batch(producer_id, epoch, 0, 4)).await;
    assert_eq!(partition.last_stable_offset(), 0, "held by the open transaction");

    let settled = || node.txns.describe("hung-tx").is_some_and(|txn| txn.state == TxnState::CompleteAbort);
    wait_until("the coordinator aborts the timed-out transaction", Duration::from_secs(20), settled).await;
    assert_eq!((partition.high_watermark(), partition.last_stable_offset()), (5, 5), "the abort marker at 4");
    let (visible, aborted) = read_committed(&partition);
    assert!(visible.is_empty(), "nothing of the hung transaction is visible");
    assert_eq!(aborted, vec![AbortedTxn { producer_id, first_offset: 0, last_offset: 4 }]);
    let late = node.txns.end("hung-tx", producer_id, epoch, true).await;
    assert_eq!(late, Err(TxnError::ProducerFenced), "the late commit finds its epoch bumped by the abort");
    node.close().await;
}

fn offsets(topic: &str, partition: i32, offset: i64) -> Vec<TopicOffsets> {
    let partitions = vec![PartitionOffset { partition, offset, leader_epoch: -1, metadata: None }];
    vec![TopicOffsets { topic: topic.to_string(), partitions }]
}

/// The group's committed offset of `topic`-0 (-1 when none) and its outcome.
fn committed(node: &Node, group: &str, topic: &str, require_stable: bool) -> (i64, Result<(), GroupError>) {
    let wanted = vec![(group.to_string(), Some(vec![(topic.to_string(), vec![0])]))];
    let fetched = node.groups.fetch_offsets(wanted, require_stable);
    let partition = &fetched[0][0].1[0];
    (partition.offset, partition.outcome.clone())
}

/// TxnOffsetCommit as the node orchestrates it: verified against the coordinator, written while the
/// transaction is held, pending until the marker, then committed (or discarded by an abort).
async fn txn_commit(node: &Node, transactional_id: &str, producer: (i64, i16), group: &str, offset: i64) {
    let (producer_id, producer_epoch) = producer;
    node.txns.add(transactional_id, producer_id, producer_epoch, &[], &[group.to_string()]).await.expect("add");
    let commit = TxnOffsetCommit {
        group_id: group.to_string(),
        producer_id,
        producer_epoch,
        member: None,
        topics: offsets("source", 0, offset),
    };
    let outcomes = node.txn_offset_commit(transactional_id, commit).await;
    let outcomes = outcomes.unwrap_or_else(|error| panic!("verified: {error}"));
    assert!(outcomes.iter().all(|(_, partitions)| partitions.iter().all(|(_, outcome)| outcome.is_ok())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_offsets_stay_pending_until_the_commit_marker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    node.topics.create("source", 1, BTreeMap::new()).await.expect("create");
    let producer = node.txns.init_producer_id("offsets-tx", TIMEOUT_MS, None).await.expect("init");

    txn_commit(&node, "offsets-tx", producer, "copier-group", 42).await;
    assert_eq!(committed(&node, "copier-group", "source", false), (-1, Ok(())), "pending: the last committed");
    assert_eq!(
        committed(&node, "copier-group", "source", true).1,
        Err(GroupError::UnstableOffsetCommit),
        "RequireStable sees the pending offset"
    );
    assert_eq!(node.groups.pending_transactional_producers("copier-group"), vec![producer.0]);
    node.txns.end("offsets-tx", producer.0, producer.1, true).await.expect("commit");
    assert_eq!(committed(&node, "copier-group", "source", true), (42, Ok(())), "committed by the marker");
    assert!(node.groups.pending_transactional_producers("copier-group").is_empty());

    txn_commit(&node, "offsets-tx", producer, "copier-group", 50).await;
    node.txns.end("offsets-tx", producer.0, producer.1, false).await.expect("abort");
    assert_eq!(committed(&node, "copier-group", "source", true), (42, Ok(())), "an abort discards the offset");

    node.close().await;
    drop(node);
    let node = Node::open(config(dir.path())).expect("reopen");
    assert_eq!(committed(&node, "copier-group", "source", true), (42, Ok(())), "replayed from the offsets log");
    node.close().await;
}

/// A topic deleted while a transaction that wrote to it is open: the commit still completes (a
/// deleted topic has nothing left to end) and the other partitions get their markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_after_one_of_its_topics_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    let doomed = node.topics.create("doomed", 1, BTreeMap::new()).await.expect("create doomed");
    let kept = node.topics.create("kept", 1, BTreeMap::new()).await.expect("create kept");
    let (doomed, kept) = (doomed.partition(0).expect("doomed-0"), kept.partition(0).expect("kept-0"));
    let (producer_id, epoch) = node.txns.init_producer_id("spanning", TIMEOUT_MS, None).await.expect("init");
    let partitions = [("doomed".to_string(), 0), ("kept".to_string(), 0)];
    node.txns.add("spanning", producer_id, epoch, &partitions, &[]).await.expect("add");
    append(&node, "spanning", &doomed, txn_batch(producer_id, epoch, 0, 2)).await;
    append(&node, "spanning", &kept, txn_batch(producer_id, epoch, 0, 2)).await;

    node.topics.delete("doomed").await.expect("delete while the transaction is open");
    drop(doomed);
    node.txns.end("spanning", producer_id, epoch, true).await.expect("commit");
    let done = || node.txns.describe("spanning").is_some_and(|txn| txn.state == TxnState::CompleteCommit);
    wait_until("every marker is delivered", Duration::from_secs(20), done).await;
    assert_eq!((kept.high_watermark(), kept.last_stable_offset()), (3, 3), "the surviving partition's marker");
    assert_eq!(read_committed(&kept).0, vec![0, 1]);

    // The transactional id is free for its next transaction (no CONCURRENT_TRANSACTIONS).
    node.txns.add("spanning", producer_id, epoch, &[("kept".to_string(), 0)], &[]).await.expect("next one");
    let recreated = node.topics.create("doomed", 1, BTreeMap::new()).await.expect("recreate");
    assert_eq!(recreated.partition(0).expect("p0").high_watermark(), 0, "the recreated topic starts empty");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_are_never_reused_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node: Arc<Node> = Node::open(config(dir.path())).expect("open");
    let first = node.producer_ids.allocate().expect("allocate");
    let (transactional, _) = node.txns.init_producer_id("ids", TIMEOUT_MS, None).await.expect("init");
    assert!(transactional > first, "the coordinator allocates from the same source");
    node.close().await;
    drop(node);
    let node = Node::open(config(dir.path())).expect("reopen");
    let after = node.producer_ids.allocate().expect("allocate");
    assert!(after > transactional, "{after} after {transactional}: a reopen never hands out an id again");
    let known = node.txns.describe("ids").expect("the transactional id is replayed");
    assert_eq!(known.producer_id, transactional);
    node.close().await;
}
