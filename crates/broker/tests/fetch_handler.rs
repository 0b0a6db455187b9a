//! Fetch at the Kafka edge (`handlers::fetch`) against a node, without sockets: the long poll answers
//! at `min_bytes` or at `max_wait_ms`, wakes on new data in any requested partition, and read_committed
//! reads stop at the last stable offset and carry the aborted transactions of the range.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{FetchRequest, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_broker::handlers::fetch;
use once_log::testing::make_batch_with;
use once_node::{Node, NodeConfig};
use once_partition::TxnMarker;

const TOPIC: &str = "events";
const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const FETCH_VERSION: i16 = 12;

fn open(dir: &Path) -> Arc<Node> {
    let config = NodeConfig { data_dir: dir.to_path_buf(), ..NodeConfig::default() };
    Node::open(config).expect("open the node")
}

/// A fetch of every partition in `partitions` from offset 0.
fn request(partitions: i32, min_bytes: i32, max_wait_ms: i32, isolation_level: i8) -> FetchRequest {
    let partitions = (0..partitions)
        .map(|partition| {
            FetchPartition::default().with_partition(partition).with_fetch_offset(0).with_partition_max_bytes(1 << 20)
        })
        .collect();
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(partitions)])
}

async fn fetch(node: &Arc<Node>, request: FetchRequest) -> Vec<PartitionData> {
    match fetch::handle(node, request, FETCH_VERSION).await.0 {
        ResponseKind::Fetch(response) => {
            assert_eq!(response.error_code, 0, "the fetch as a whole succeeds");
            response.responses.into_iter().flat_map(|topic| topic.partitions).collect()
        }
        other => panic!("a fetch answers with a fetch response: {other:?}"),
    }
}

fn record_bytes(data: &PartitionData) -> usize {
    data.records.as_ref().map_or(0, |records| records.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_at_max_wait_without_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create(TOPIC, 3, BTreeMap::new()).await.expect("create");
    let started = Instant::now();
    let partitions = fetch(&node, request(3, 1, 300, 0)).await;
    assert!(started.elapsed() >= Duration::from_millis(250), "waited for max_wait_ms: {:?}", started.elapsed());
    assert_eq!(partitions.len(), 3, "every partition answered");
    assert!(partitions.iter().all(|data| record_bytes(data) == 0 && data.high_watermark == 0), "nothing to read");
    node.close().await;
}

/// Kafka's rule: a fetch with min_bytes 0 is answered at once, even with nothing to read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_bytes_zero_answers_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create(TOPIC, 2, BTreeMap::new()).await.expect("create");
    let started = Instant::now();
    let partitions = fetch(&node, request(2, 0, 10_000, 0)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "did not wait for max_wait_ms: {:?}", started.elapsed());
    assert_eq!(partitions.len(), 2, "every partition answered");
    assert!(partitions.iter().all(|data| record_bytes(data) == 0), "nothing to read");
    node.close().await;
}

/// A long poll on a partition that is deleted meanwhile answers when it goes, not at max wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_when_its_partition_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create(TOPIC, 1, BTreeMap::new()).await.expect("create");
    let waiting = tokio::spawn({
        let node = node.clone();
        async move {
            let started = Instant::now();
            let partitions = fetch(&node, request(1, 1, 10_000, 0)).await;
            (started.elapsed(), partitions)
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.topics.delete(TOPIC).await.expect("delete");
    let (waited, partitions) = waiting.await.expect("the fetch answers");
    assert!(waited < Duration::from_secs(5), "woken by the deletion, not max wait: {waited:?}");
    assert_eq!(partitions.len(), 1, "the partition is answered");
    assert_ne!(partitions[0].error_code, 0, "with an error: the partition is gone");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_wakes_on_data_in_any_partition() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let topic = node.topics.create(TOPIC, 8, BTreeMap::new()).await.expect("create");
    let started = Instant::now();
    let waiting = tokio::spawn({
        let node = node.clone();
        async move { fetch(&node, request(8, 1, 20_000, 0)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "nothing to read yet: the fetch waits");
    let partition = topic.partition(5).expect("partition 5");
    partition.append(make_batch_with(-1, -1, -1, 0, 2, 8, TIMESTAMP_MS)).await.expect("append");
    let partitions = waiting.await.expect("the fetch task");
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the append, not max_wait_ms");
    assert!(record_bytes(&partitions[5]) > 0, "partition 5's records");
    assert_eq!(partitions[5].high_watermark, 2, "with its high watermark");
    let others = partitions.iter().filter(|data| data.partition_index != 5);
    assert!(others.clone().all(|data| record_bytes(data) == 0), "the others have nothing");
    assert_eq!(others.count(), 7, "and are answered too");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_stops_at_the_last_stable_offset_and_lists_aborted_transactions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let topic = node.topics.create(TOPIC, 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("partition 0");
    let (producer_id, epoch) = (7000, 0);
    partition.append(make_batch_with(producer_id, epoch, 0, TRANSACTIONAL, 3, 8, TIMESTAMP_MS)).await.expect("append");

    let open_txn = fetch(&node, request(1, 0, 0, 1)).await;
    assert_eq!(record_bytes(&open_txn[0]), 0, "the open transaction is not read");
    assert_eq!((open_txn[0].last_stable_offset, open_txn[0].high_watermark), (0, 3), "it holds the last stable offset");
    let uncommitted = fetch(&node, request(1, 0, 0, 0)).await;
    assert!(record_bytes(&uncommitted[0]) > 0, "read_uncommitted reads it");
    let listed = uncommitted[0].aborted_transactions.clone().unwrap_or_default();
    assert!(listed.is_empty(), "and is told of no aborted transaction");

    let abort = TxnMarker { producer_id, producer_epoch: epoch, coordinator_epoch: 0, commit: false };
    partition.write_marker(abort).await.expect("abort");
    let aborted = fetch(&node, request(1, 0, 0, 1)).await;
    assert_eq!((aborted[0].last_stable_offset, aborted[0].high_watermark), (4, 4), "records and the marker");
    assert!(record_bytes(&aborted[0]) > 0, "the aborted batch and its marker are read");
    let listed = aborted[0].aborted_transactions.as_ref().expect("read_committed lists aborted transactions");
    assert_eq!(listed.len(), 1, "one aborted transaction");
    assert_eq!((listed[0].producer_id.0, listed[0].first_offset), (producer_id, 0), "from its first offset");
    node.close().await;
}
