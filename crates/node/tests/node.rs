//! The node without any protocol edge: opened on a temporary data directory, driven by its own
//! operations, no sockets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use once_group::{PartitionOffset, TopicOffsets, TxnOffsetCommit};
use once_log::testing::make_batch_with;
use once_log::ValidBatch;
use once_node::markers::Markers;
use once_node::{Node, NodeConfig, TopicError, TxnAppendError, TxnOffsetCommitError};
use once_partition::TxnMarker;
use once_txn::{MarkerWriter, TxnError};

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const TIMEOUT_MS: i32 = 60_000;

fn open(dir: &Path) -> Arc<Node> {
    let config = NodeConfig { data_dir: dir.to_path_buf(), ..NodeConfig::default() };
    Node::open(config).expect("open the node")
}

/// A batch as the edge hands it to the node: validated once.
fn valid(batch: Vec<u8>) -> ValidBatch {
    ValidBatch::validate(batch).expect("a valid batch")
}

fn txn_batch(producer_id: i64, epoch: i16, first_sequence: i32, records: u32) -> Vec<u8> {
    make_batch_with(producer_id, epoch, first_sequence, TRANSACTIONAL, records, 8, TIMESTAMP_MS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_identity_persist_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
    let created = node.topics.create("orders", 3, configs).await.expect("create");
    let partition = created.partition(1).expect("partition 1");
    partition.append(make_batch_with(-1, -1, -1, 0, 2, 8, TIMESTAMP_MS)).await.expect("append");
    let cluster_id = node.identity.cluster_id.clone();
    node.close().await;
    drop(node);

    let node = open(dir.path());
    assert_eq!(node.identity.cluster_id, cluster_id, "the cluster id is kept in broker.json");
    let topic = node.topics.get("orders").expect("the topic is still there");
    assert_eq!(topic.id, created.id, "with its id");
    assert_eq!(topic.partition_count(), 3, "and its partitions");
    assert_eq!(topic.config().value_of("retention.ms"), Some(("-1".to_string(), true)), "and its overrides");
    assert_eq!(topic.partition(1).expect("partition 1").high_watermark(), 2, "and its records");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_and_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create("events", 1, BTreeMap::new()).await.expect("create");
    let again = node.topics.create("events", 1, BTreeMap::new()).await;
    assert!(matches!(again, Err(TopicError::AlreadyExists(_))), "a second create is refused");
    let internal = node.topics.create("__consumer_offsets", 1, BTreeMap::new()).await;
    assert!(matches!(internal, Err(TopicError::InvalidName(_))), "Kafka's internal names are refused");
    node.topics.delete("events").await.expect("delete");
    assert!(node.topics.get("events").is_none(), "a deleted topic is gone");
    assert!(!dir.path().join("topics").join("events").exists(), "with its files");
    let missing = node.topics.delete("events").await;
    assert!(matches!(missing, Err(TopicError::Unknown(_))), "deleting it again is refused: {missing:?}");
    node.close().await;
    let node = open(dir.path());
    assert!(node.topics.get("events").is_none(), "and stays gone after a reopen");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_append_needs_the_partition_in_the_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let topic = node.topics.create("payments", 2, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("partition 0");
    let (producer_id, epoch) = node.txns.init_producer_id("tx-1", TIMEOUT_MS, None).await.expect("init");

    let missing = node.append_transactional(None, &partition, valid(txn_batch(producer_id, epoch, 0, 1)));
    assert!(matches!(missing, Err(TxnAppendError::MissingTransactionalId)), "no transactional id");
    let unknown = node.append_transactional(Some("tx-2"), &partition, valid(txn_batch(producer_id, epoch, 0, 1)));
    assert!(
        matches!(unknown, Err(TxnAppendError::Txn(TxnError::InvalidProducerIdMapping))),
        "an unknown transactional id"
    );

    // Partition 1 is in the transaction, partition 0 is not.
    node.txns.add("tx-1", producer_id, epoch, &[("payments".to_string(), 1)], &[]).await.expect("add partition 1");
    let refused = node.append_transactional(Some("tx-1"), &partition, valid(txn_batch(producer_id, epoch, 0, 1)));
    match refused {
        Err(TxnAppendError::PartitionNotInTransaction { topic, partition }) => {
            assert_eq!((topic.as_str(), partition), ("payments", 0), "the refusal names the partition");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a partition not added to the transaction took a transactional batch"),
    }
    assert_eq!(partition.high_watermark(), 0, "nothing was appended");

    node.txns.add("tx-1", producer_id, epoch, &[("payments".to_string(), 0)], &[]).await.expect("add partition 0");
    let append = node
        .append_transactional(Some("tx-1"), &partition, valid(txn_batch(producer_id, epoch, 0, 2)))
        .unwrap_or_else(|error| panic!("accepted once added: {error}"));
    let appended = append.await.expect("durable");
    assert_eq!(appended.base_offset, 0);
    assert_eq!(partition.high_watermark(), 2, "the batch is in the log");
    assert_eq!(partition.last_stable_offset(), 0, "held by the open transaction");

    let fenced = node.append_transactional(Some("tx-1"), &partition, valid(txn_batch(producer_id, epoch - 1, 2, 1)));
    assert!(matches!(fenced, Err(TxnAppendError::Txn(TxnError::ProducerFenced))), "an older epoch is fenced");

    node.txns.end("tx-1", producer_id, epoch, true).await.expect("commit");
    assert_eq!(partition.last_stable_offset(), 3, "the commit marker (offset 2) ended the transaction");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_marker_writer_ends_a_transaction_at_a_partition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let topic = node.topics.create("ledger", 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("partition 0");
    let (producer_id, epoch) = (4242, 0);
    partition.append(txn_batch(producer_id, epoch, 0, 3)).await.expect("a transactional batch");
    assert_eq!(partition.last_stable_offset(), 0, "the open transaction holds the last stable offset");

    let markers = Markers::new(node.topics.clone(), node.groups.clone());
    let abort = TxnMarker { producer_id, producer_epoch: epoch, coordinator_epoch: 0, commit: false };
    markers.write_partition_marker("ledger", 0, abort).await.expect("the marker is written");
    assert_eq!(partition.high_watermark(), 4, "three records and the marker");
    assert_eq!(partition.last_stable_offset(), 4, "the aborted transaction no longer holds it");
    let open = partition.producers().into_iter().any(|producer| producer.current_txn_start_offset.is_some());
    assert!(!open, "no transaction is left open at the partition");

    markers.write_partition_marker("gone", 0, abort).await.expect("a deleted topic has nothing left to end");
    let stale = TxnMarker { producer_epoch: epoch - 1, ..abort };
    let refused = markers.write_partition_marker("ledger", 0, stale).await;
    assert!(
        matches!(refused, Err(once_txn::MarkerError::Fenced(_))),
        "an older epoch with nothing open is abandoned: {refused:?}"
    );
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_offsets_need_the_group_in_the_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let (producer_id, epoch) = node.txns.init_producer_id("tx-offsets", TIMEOUT_MS, None).await.expect("init");
    node.txns.add("tx-offsets", producer_id, epoch, &[], &["other".to_string()]).await.expect("add a group");
    let commit = |group: &str, producer_epoch: i16| TxnOffsetCommit {
        group_id: group.to_string(),
        producer_id,
        producer_epoch,
        member: None,
        topics: vec![TopicOffsets {
            topic: "ledger".to_string(),
            partitions: vec![PartitionOffset { partition: 0, offset: 7, leader_epoch: -1, metadata: None }],
        }],
    };
    let refused = node.txn_offset_commit("tx-offsets", commit("billing", epoch)).await;
    assert!(
        matches!(&refused, Err(TxnOffsetCommitError::GroupNotInTransaction(group)) if group == "billing"),
        "a group not added to the transaction"
    );
    assert!(node.groups.pending_transactional_producers("billing").is_empty(), "a refused commit writes nothing");
    let fenced = node.txn_offset_commit("tx-offsets", commit("other", epoch - 1)).await;
    assert!(matches!(fenced, Err(TxnOffsetCommitError::Txn(TxnError::ProducerFenced))), "an older epoch");
    let committed = node.txn_offset_commit("tx-offsets", commit("other", epoch)).await;
    let outcomes = committed.expect("the group added with AddOffsetsToTxn");
    assert!(
        matches!(outcomes.as_slice(), [(topic, partitions)] if topic == "ledger" && matches!(partitions.as_slice(), [(0, Ok(()))])),
        "every partition written: {outcomes:?}"
    );
    assert_eq!(node.groups.pending_transactional_producers("other"), vec![producer_id], "pending until the marker");
    node.close().await;
}
