//! The Kafka edge's translation, driven through `dispatch` on a node without sockets: the codes and
//! offsets Produce answers an idempotent or transactional producer, a transaction read back by a
//! read_committed Fetch, the fencing codes by InitProducerId version, and topic configs altered and
//! described — what `crates/cli/tests/idempotence.rs`, `transactions.rs`, `txn_fencing.rs` and
//! `alter_configs.rs` show through the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_broker::dispatch::dispatch;
use once_log::testing::make_batch_with;
use once_node::{Node, NodeConfig};
use once_wire::{DecodedRequest, ResponseError};

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const TRANSACTIONAL: i16 = 0x10;
const READ_COMMITTED: i8 = 1;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn open(dir: &Path) -> Arc<Node> {
    Node::open(NodeConfig { data_dir: dir.to_path_buf(), ..NodeConfig::default() }).expect("open the node")
}

/// Dispatches one request as a connection would and waits for its response.
async fn call(node: &Arc<Node>, api_key: ApiKey, api_version: i16, body: RequestKind) -> ResponseKind {
    let header = RequestHeader::default().with_request_api_key(api_key as i16).with_request_api_version(api_version);
    let request = DecodedRequest { api_key, api_version, header, body };
    let pending = dispatch(node, request).response();
    pending.await.expect("a response (acks are not 0)")
}

/// Produce v9 of one batch to partition 0 of `topic`: (error code, base offset).
async fn produce(node: &Arc<Node>, topic: &str, transactional_id: Option<&str>, batch: Vec<u8>) -> (i16, i64) {
    let data = TopicProduceData::default()
        .with_name(TopicName(text(topic)))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch.into()))]);
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_transactional_id(transactional_id.map(|id| TransactionalId(text(id))))
        .with_topic_data(vec![data]);
    let ResponseKind::Produce(response) = call(node, ApiKey::Produce, 9, RequestKind::Produce(request)).await else {
        panic!("a Produce response");
    };
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn batch(producer_id: i64, epoch: i16, first_sequence: i32, attributes: i16, records: u32) -> Vec<u8> {
    make_batch_with(producer_id, epoch, first_sequence, attributes, records, 16, TIMESTAMP_MS)
}

/// InitProducerId at `version`: (error code, producer id, epoch).
async fn init_producer_id(
    node: &Arc<Node>,
    transactional_id: Option<&str>,
    expected: Option<(i64, i16)>,
    version: i16,
) -> (i16, i64, i16) {
    let (producer_id, epoch) = expected.unwrap_or((-1, -1));
    let request = InitProducerIdRequest::default()
        .with_transactional_id(transactional_id.map(|id| TransactionalId(text(id))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch);
    let body = RequestKind::InitProducerId(request);
    let ResponseKind::InitProducerId(response) = call(node, ApiKey::InitProducerId, version, body).await else {
        panic!("an InitProducerId response");
    };
    (response.error_code, response.producer_id.0, response.producer_epoch)
}

/// AddPartitionsToTxn v3 of partition 0 of `topic`: the partition's error code.
async fn add_partition(node: &Arc<Node>, transactional_id: &str, producer: (i64, i16), topic: &str) -> i16 {
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(text(transactional_id)))
        .with_v3_and_below_producer_id(ProducerId(producer.0))
        .with_v3_and_below_producer_epoch(producer.1)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(text(topic)))
            .with_partitions(vec![0])]);
    let body = RequestKind::AddPartitionsToTxn(request);
    let ResponseKind::AddPartitionsToTxn(response) = call(node, ApiKey::AddPartitionsToTxn, 3, body).await else {
        panic!("an AddPartitionsToTxn response");
    };
    response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

/// EndTxn v3: its error code.
async fn end_txn(node: &Arc<Node>, transactional_id: &str, producer: (i64, i16), commit: bool) -> i16 {
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(text(transactional_id)))
        .with_producer_id(ProducerId(producer.0))
        .with_producer_epoch(producer.1)
        .with_committed(commit);
    let ResponseKind::EndTxn(response) = call(node, ApiKey::EndTxn, 3, RequestKind::EndTxn(request)).await else {
        panic!("an EndTxn response");
    };
    response.error_code
}

/// Fetch v12 of partition 0 of `topic` from offset 0, without waiting.
async fn fetch(node: &Arc<Node>, topic: &str, isolation_level: i8) -> PartitionData {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation_level)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(text(topic))).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
        ])]);
    let ResponseKind::Fetch(mut response) = call(node, ApiKey::Fetch, 12, RequestKind::Fetch(request)).await else {
        panic!("a Fetch response");
    };
    response.responses.remove(0).partitions.remove(0)
}

/// The base offsets of the data batches in a fetched partition's records.
fn data_batches(partition: &PartitionData) -> Vec<i64> {
    let records = partition.records.as_ref().map(|records| records.to_vec()).unwrap_or_default();
    let mut bases = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = once_log::BatchHeader::parse(&records[position..]).expect("whole batches");
        position += header.total_len();
        if !header.is_control() {
            bases.push(header.base_offset);
        }
    }
    bases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_answers_retries_gaps_and_old_epochs_with_kafka_codes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create("pay", 1, BTreeMap::new()).await.expect("create");
    let (error, producer_id, epoch) = init_producer_id(&node, None, None, 4).await;
    assert_eq!((error, epoch), (0, 0), "an idempotent producer id");
    assert!(producer_id >= 0);

    assert_eq!(produce(&node, "pay", None, batch(producer_id, 0, 0, 0, 3)).await, (0, 0));
    assert_eq!(produce(&node, "pay", None, batch(producer_id, 0, 3, 0, 2)).await, (0, 3));
    assert_eq!(produce(&node, "pay", None, batch(producer_id, 0, 0, 0, 3)).await, (0, 0), "a retry: NONE, offset 0");
    let gap = produce(&node, "pay", None, batch(producer_id, 0, 9, 0, 1)).await;
    assert_eq!(gap.0, ResponseError::OutOfOrderSequenceNumber.code(), "a gap");
    assert_eq!(produce(&node, "pay", None, batch(producer_id, 1, 0, 0, 1)).await, (0, 5), "a bumped epoch");
    let old = produce(&node, "pay", None, batch(producer_id, 0, 5, 0, 1)).await;
    assert_eq!(old.0, ResponseError::InvalidProducerEpoch.code(), "the old epoch");
    let unknown = produce(&node, "absent", None, batch(-1, -1, -1, 0, 1)).await;
    assert_eq!(unknown.0, ResponseError::UnknownTopicOrPartition.code());
    let stray = produce(&node, "pay", Some("nobody"), batch(producer_id, 1, 1, TRANSACTIONAL, 1)).await;
    assert_eq!(stray.0, ResponseError::InvalidProducerIdMapping.code(), "a transactional batch of an unknown id");
    assert_eq!(node.topics.get("pay").and_then(|topic| topic.partition(0)).expect("p0").high_watermark(), 6);
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_committed_fetch_skips_an_aborted_transaction_and_waits_for_an_open_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create("orders", 1, BTreeMap::new()).await.expect("create");
    node.topics.create("other", 1, BTreeMap::new()).await.expect("create");
    let (error, producer_id, epoch) = init_producer_id(&node, Some("copier"), None, 4).await;
    assert_eq!(error, 0);
    let producer = (producer_id, epoch);
    let txn_batch =
        |first_sequence: i32, records: u32| batch(producer_id, epoch, first_sequence, TRANSACTIONAL, records);

    assert_eq!(add_partition(&node, "copier", producer, "orders").await, 0);
    assert_eq!(produce(&node, "orders", Some("copier"), txn_batch(0, 2)).await, (0, 0));
    let not_added = produce(&node, "other", Some("copier"), txn_batch(0, 1)).await;
    assert_eq!(not_added.0, ResponseError::InvalidTxnState.code(), "a partition not added to the transaction");
    let open = fetch(&node, "orders", READ_COMMITTED).await;
    assert_eq!((open.high_watermark, open.last_stable_offset), (2, 0), "the open transaction holds the LSO");
    assert!(data_batches(&open).is_empty(), "read_committed reads nothing of it");
    let uncommitted = fetch(&node, "orders", 0).await;
    assert_eq!(data_batches(&uncommitted), vec![0], "read_uncommitted does");
    assert_eq!(end_txn(&node, "copier", producer, false).await, 0, "abort");

    assert_eq!(add_partition(&node, "copier", producer, "orders").await, 0);
    assert_eq!(produce(&node, "orders", Some("copier"), txn_batch(2, 3)).await, (0, 3), "after the abort marker");
    assert_eq!(end_txn(&node, "copier", producer, true).await, 0, "commit");

    let read = fetch(&node, "orders", READ_COMMITTED).await;
    assert_eq!(read.error_code, 0);
    assert_eq!((read.high_watermark, read.last_stable_offset), (7, 7), "both markers written");
    let aborted = read.aborted_transactions.clone().expect("read_committed lists aborted transactions");
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (producer_id, 0), "the first transaction");
    assert_eq!(data_batches(&read), vec![0, 3], "both batches come back; the client drops the aborted one");
    let uncommitted = fetch(&node, "orders", 0).await;
    let listed = uncommitted.aborted_transactions.unwrap_or_default();
    assert!(listed.is_empty(), "read_uncommitted lists no aborted transaction: {listed:?}");
    node.close().await;
}

/// `crates/cli/tests/txn_fencing.rs` at the edge: the zombie's KIP-360 bump after a new incarnation
/// is fenced, in the code each InitProducerId version knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_is_fenced_in_the_code_its_version_knows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    node.topics.create("payments", 1, BTreeMap::new()).await.expect("create");
    let (error, producer_id, zombie_epoch) = init_producer_id(&node, Some("payments"), None, 4).await;
    assert_eq!((error, zombie_epoch), (0, 0), "incarnation A");
    let (error, same_id, epoch) = init_producer_id(&node, Some("payments"), None, 4).await;
    assert_eq!((error, same_id, epoch), (0, producer_id, 1), "incarnation B");

    let zombie = Some((producer_id, zombie_epoch));
    let v3 = init_producer_id(&node, Some("payments"), zombie, 3).await;
    assert_eq!(v3, (ResponseError::InvalidProducerEpoch.code(), -1, -1), "v3 knows no PRODUCER_FENCED");
    let v4 = init_producer_id(&node, Some("payments"), zombie, 4).await;
    assert_eq!(v4, (ResponseError::ProducerFenced.code(), -1, -1));
    let add = add_partition(&node, "payments", (producer_id, zombie_epoch), "payments").await;
    assert_eq!(add, ResponseError::ProducerFenced.code(), "the zombie cannot add partitions");

    assert_eq!(add_partition(&node, "payments", (producer_id, epoch), "payments").await, 0, "B can");
    let legit = batch(producer_id, epoch, 0, TRANSACTIONAL, 1);
    assert_eq!(produce(&node, "payments", Some("payments"), legit).await, (0, 0));
    let stale = batch(producer_id, zombie_epoch, 0, TRANSACTIONAL, 1);
    let refused = produce(&node, "payments", Some("payments"), stale).await;
    assert_eq!(refused.0, ResponseError::InvalidProducerEpoch.code(), "the zombie's batch");
    assert_eq!(end_txn(&node, "payments", (producer_id, epoch), true).await, 0);
    let read = fetch(&node, "payments", READ_COMMITTED).await;
    assert_eq!(data_batches(&read), vec![0], "only B's record");
    node.close().await;
}

const TOPIC_RESOURCE: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;

/// IncrementalAlterConfigs v1 of one topic: its error code.
async fn alter_incrementally(node: &Arc<Node>, topic: &str, operations: &[(&str, i8, Option<&str>)]) -> i16 {
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = operations
        .iter()
        .map(|(name, operation, value)| {
            AlterableConfig::default()
                .with_name(text(name))
                .with_config_operation(*operation)
                .with_value(value.map(text))
        })
        .collect();
    let resource = AlterConfigsResource::default()
        .with_resource_type(TOPIC_RESOURCE)
        .with_resource_name(text(topic))
        .with_configs(configs);
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
    let body = RequestKind::IncrementalAlterConfigs(request);
    let ResponseKind::IncrementalAlterConfigs(response) = call(node, ApiKey::IncrementalAlterConfigs, 1, body).await
    else {
        panic!("an IncrementalAlterConfigs response");
    };
    response.responses[0].error_code
}

/// AlterConfigs v1 (replacing every override) of one topic: its error code.
async fn alter_replacing(node: &Arc<Node>, topic: &str, configs: &[(&str, Option<&str>)]) -> i16 {
    use alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let configs = configs
        .iter()
        .map(|(name, value)| AlterableConfig::default().with_name(text(name)).with_value(value.map(text)))
        .collect();
    let resource = AlterConfigsResource::default()
        .with_resource_type(TOPIC_RESOURCE)
        .with_resource_name(text(topic))
        .with_configs(configs);
    let body = RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![resource]));
    let ResponseKind::AlterConfigs(response) = call(node, ApiKey::AlterConfigs, 1, body).await else {
        panic!("an AlterConfigs response");
    };
    response.responses[0].error_code
}

/// DescribeConfigs v4 of one topic: its overrides (config source DYNAMIC_TOPIC_CONFIG).
async fn described_overrides(node: &Arc<Node>, topic: &str) -> BTreeMap<String, String> {
    let resource = describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(TOPIC_RESOURCE)
        .with_resource_name(text(topic));
    let body = RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![resource]));
    let ResponseKind::DescribeConfigs(response) = call(node, ApiKey::DescribeConfigs, 4, body).await else {
        panic!("a DescribeConfigs response");
    };
    assert_eq!(response.results[0].error_code, 0, "describe {topic}");
    response.results[0]
        .configs
        .iter()
        .filter(|config| config.config_source == 1)
        .map(|config| (config.name.to_string(), config.value.as_ref().map(|v| v.to_string()).unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_configs_altered_at_the_edge_are_described_after_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let configs = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    node.topics.create("edges", 1, configs).await.expect("create");
    let dedup = BTreeMap::from([("dedup.source".to_string(), "key".to_string())]);
    node.topics.create("deduplicated", 1, dedup).await.expect("create");

    let set = [("segment.bytes", SET, Some("4096")), ("retention.ms", DELETE, None)];
    assert_eq!(alter_incrementally(&node, "edges", &set).await, 0);
    let too_small = alter_incrementally(&node, "edges", &[("segment.bytes", SET, Some("100"))]).await;
    assert_eq!(too_small, ResponseError::InvalidConfig.code(), "a segment below 1 KiB");
    let unknown = alter_incrementally(&node, "edges", &[("no.such.key", SET, Some("1"))]).await;
    assert_eq!(unknown, ResponseError::InvalidConfig.code(), "an unknown key");
    assert_eq!(alter_incrementally(&node, "absent", &set).await, ResponseError::UnknownTopicOrPartition.code());
    assert_eq!(described_overrides(&node, "edges").await, BTreeMap::from([("segment.bytes".into(), "4096".into())]));

    let null = alter_replacing(&node, "edges", &[("retention.ms", None)]).await;
    let twice = alter_replacing(&node, "edges", &[("retention.ms", Some("5")), ("retention.ms", Some("6"))]).await;
    assert_eq!((null, twice), (ResponseError::InvalidRequest.code(), ResponseError::InvalidRequest.code()));
    let source_dropped = alter_replacing(&node, "deduplicated", &[("retention.ms", Some("5000"))]).await;
    assert_eq!(source_dropped, ResponseError::InvalidConfig.code(), "replacing would turn deduplication off");
    let kept = [("dedup.source", Some("key")), ("retention.ms", Some("5000"))];
    assert_eq!(alter_replacing(&node, "deduplicated", &kept).await, 0);

    node.close().await;
    drop(node);
    let node = open(dir.path());
    assert_eq!(
        described_overrides(&node, "edges").await,
        BTreeMap::from([("segment.bytes".into(), "4096".into())]),
        "the incremental change, and nothing of the refused ones"
    );
    assert_eq!(
        described_overrides(&node, "deduplicated").await,
        BTreeMap::from([("dedup.source".into(), "key".into()), ("retention.ms".into(), "5000".into())])
    );
    node.close().await;
}

/// DescribeConfigs of the broker names its id `broker.id`, the key Kafka's tools ask for
/// (`kafka-configs --describe --entity-type brokers`); a rename would hide it from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_describes_its_id_as_broker_id() {
    const BROKER_RESOURCE: i8 = 4;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = open(dir.path());
    let resource = describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(BROKER_RESOURCE)
        .with_resource_name(text(&node.config.node_id.to_string()));
    let body = RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![resource]));
    let ResponseKind::DescribeConfigs(response) = call(&node, ApiKey::DescribeConfigs, 4, body).await else {
        panic!("a DescribeConfigs response");
    };
    assert_eq!(response.results[0].error_code, 0, "the broker resource is described");
    let id = response.results[0].configs.iter().find(|config| config.name.as_str() == "broker.id");
    let value = id.and_then(|config| config.value.as_ref()).map(|value| value.to_string());
    assert_eq!(value, Some(node.config.node_id.to_string()), "broker.id holds the node id");
}
