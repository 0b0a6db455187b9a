//! The transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn (client versions
//! 0–3), AddOffsetsToTxn, EndTxn, TxnOffsetCommit, WriteTxnMarkers, and the admin APIs
//! DescribeTransactions, ListTransactions and DescribeProducers; translation only: requests become
//! calls on the transaction coordinator (once-txn), the node (TxnOffsetCommit) or partitions
//! (WriteTxnMarkers), and their typed errors Kafka codes in `errors`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, ResponseKind, TopicName, TransactionalId, TxnOffsetCommitRequest,
    WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use once_node::Node;
use once_partition::TxnMarker;
use once_txn::{TxnState, COORDINATOR_EPOCH};
use once_wire::ResponseError;

use super::group::txn_offsets;
use super::str_bytes;
use crate::errors::{partition_error_code, txn_error_code, txn_offset_commit_error_code, TxnApi};

/// The internal topic under which DescribeTransactions reports the groups of a transaction.
const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// InitProducerId with a transactional id.
pub async fn init_producer_id(node: &Arc<Node>, request: &InitProducerIdRequest, version: i16) -> ResponseKind {
    let transactional_id = request.transactional_id.as_ref().map(|id| id.0.to_string()).unwrap_or_default();
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if transactional_id.is_empty() {
        return ResponseKind::InitProducerId(response.with_error_code(ResponseError::InvalidRequest.code()));
    }
    let expected = (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    match node.txns.init_producer_id(&transactional_id, request.transaction_timeout_ms, expected).await {
        Ok((producer_id, epoch)) => {
            ResponseKind::InitProducerId(response.with_producer_id(ProducerId(producer_id)).with_producer_epoch(epoch))
        }
        Err(error) => {
            tracing::debug!(transactional_id, %error, "InitProducerId refused");
            ResponseKind::InitProducerId(
                response.with_error_code(txn_error_code(&error, TxnApi::InitProducerId, version).code()),
            )
        }
    }
}

/// AddPartitionsToTxn v0–3 (the client's form; v4+ is between brokers).
pub async fn add_partitions(node: &Arc<Node>, request: AddPartitionsToTxnRequest, version: i16) -> ResponseKind {
    let transactional_id = request.v3_and_below_transactional_id.0.to_string();
    let requested: Vec<(TopicName, Vec<i32>)> =
        request.v3_and_below_topics.into_iter().map(|topic| (topic.name, topic.partitions)).collect();
    let unknown = |name: &TopicName, partition: i32| {
        node.topics.get(&name.0).and_then(|topic| topic.partition(partition)).is_none()
    };
    let any_unknown = requested.iter().any(|(name, partitions)| partitions.iter().any(|p| unknown(name, *p)));
    let outcome = if any_unknown {
        None
    } else {
        let partitions: Vec<(String, i32)> = requested
            .iter()
            .flat_map(|(name, partitions)| partitions.iter().map(|partition| (name.0.to_string(), *partition)))
            .collect();
        Some(
            node.txns
                .add(
                    &transactional_id,
                    request.v3_and_below_producer_id.0,
                    request.v3_and_below_producer_epoch,
                    &partitions,
                    &[],
                )
                .await,
        )
    };
    let results = requested
        .into_iter()
        .map(|(name, partitions)| {
            let results = partitions
                .into_iter()
                .map(|partition| {
                    let error = match &outcome {
                        // Kafka adds nothing when any partition is unknown: that one is named, the rest
                        // were not attempted.
                        None if unknown(&name, partition) => ResponseError::UnknownTopicOrPartition.code(),
                        None => ResponseError::OperationNotAttempted.code(),
                        Some(Ok(())) => 0,
                        Some(Err(error)) => txn_error_code(error, TxnApi::AddPartitionsToTxn, version).code(),
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(partition)
                        .with_partition_error_code(error)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(name).with_results_by_partition(results)
        })
        .collect();
    ResponseKind::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
}

pub async fn add_offsets(node: &Arc<Node>, request: AddOffsetsToTxnRequest, version: i16) -> ResponseKind {
    let group = request.group_id.0.to_string();
    let error = if group.is_empty() {
        ResponseError::InvalidGroupId.code()
    } else {
        let transactional_id = request.transactional_id.0.to_string();
        match node.txns.add(&transactional_id, request.producer_id.0, request.producer_epoch, &[], &[group]).await {
            Ok(()) => 0,
            Err(error) => txn_error_code(&error, TxnApi::AddOffsetsToTxn, version).code(),
        }
    };
    ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(error))
}

pub async fn end_txn(node: &Arc<Node>, request: EndTxnRequest, version: i16) -> ResponseKind {
    let transactional_id = request.transactional_id.0.to_string();
    let outcome =
        node.txns.end(&transactional_id, request.producer_id.0, request.producer_epoch, request.committed).await;
    let error = match outcome {
        Ok(()) => 0,
        Err(error) => {
            tracing::debug!(transactional_id, %error, "EndTxn refused");
            txn_error_code(&error, TxnApi::EndTxn, version).code()
        }
    };
    ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(error))
}

/// TxnOffsetCommit: one node operation, which verifies the transaction (the group must have been
/// added with AddOffsetsToTxn) and has the group coordinator write the offsets under it. A refused
/// verification answers every partition with its code.
pub async fn txn_offset_commit(node: &Arc<Node>, request: TxnOffsetCommitRequest, version: i16) -> ResponseKind {
    let transactional_id = request.transactional_id.0.to_string();
    // The partitions named, kept for a refusal: the commit itself moves into the node.
    let requested = txn_offsets::requested(&request);
    let commit = txn_offsets::commit(request, version);
    let response = match node.txn_offset_commit(&transactional_id, commit).await {
        Ok(outcomes) => txn_offsets::response(outcomes),
        Err(refused) => {
            tracing::debug!(transactional_id, %refused, "TxnOffsetCommit refused");
            txn_offsets::refused(requested, txn_offset_commit_error_code(&refused, version).code())
        }
    };
    ResponseKind::TxnOffsetCommit(response)
}

/// WriteTxnMarkers (v1): markers written straight to partitions, as `kafka-transactions.sh abort`
/// does for a hanging transaction the coordinator no longer knows.
///
/// A marker naming a coordinator epoch above Once's own ([`COORDINATOR_EPOCH`]) is refused at every
/// partition with TRANSACTION_COORDINATOR_FENCED (Kafka's AbortTransaction reports it as "the
/// provided coordinator epoch has been fenced by the active coordinator"). No coordinator of this
/// cluster has that epoch; stored at a partition, it would make the partition refuse every later
/// marker of Once's coordinator for the producer, and the producer's next transaction there would
/// hold the last stable offset forever.
pub async fn write_txn_markers(node: &Arc<Node>, request: WriteTxnMarkersRequest) -> ResponseKind {
    let mut results = Vec::with_capacity(request.markers.len());
    for requested in request.markers {
        if requested.coordinator_epoch > COORDINATOR_EPOCH {
            tracing::info!(
                producer_id = requested.producer_id.0,
                coordinator_epoch = requested.coordinator_epoch,
                "WriteTxnMarkers refused: coordinator epoch above this coordinator's {COORDINATOR_EPOCH}"
            );
        }
        let marker = TxnMarker {
            producer_id: requested.producer_id.0,
            producer_epoch: requested.producer_epoch,
            coordinator_epoch: requested.coordinator_epoch,
            commit: requested.transaction_result,
        };
        let mut topics = Vec::with_capacity(requested.topics.len());
        for topic in requested.topics {
            let found = node.topics.get(&topic.name.0);
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for index in topic.partition_indexes {
                let error = match found.as_ref().and_then(|found| found.partition(index)) {
                    _ if marker.coordinator_epoch > COORDINATOR_EPOCH => {
                        ResponseError::TransactionCoordinatorFenced.code()
                    }
                    None => ResponseError::UnknownTopicOrPartition.code(),
                    Some(partition) => match partition.write_marker(marker).await {
                        Ok(_) => 0,
                        Err(error) => partition_error_code(&error).code(),
                    },
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default().with_partition_index(index).with_error_code(error),
                );
            }
            topics.push(WritableTxnMarkerTopicResult::default().with_name(topic.name).with_partitions(partitions));
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(requested.producer_id).with_topics(topics));
    }
    ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default().with_markers(results))
}

pub fn describe_transactions(node: &Node, request: DescribeTransactionsRequest) -> ResponseKind {
    let states = request
        .transactional_ids
        .into_iter()
        .map(|id| {
            let state = TransactionState::default().with_transactional_id(id.clone());
            let Some(metadata) = node.txns.describe(&id.0) else {
                return state
                    .with_error_code(ResponseError::TransactionalIdNotFound.code())
                    .with_transaction_state(str_bytes(""))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1);
            };
            let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, partition) in &metadata.partitions {
                topics.entry(topic.clone()).or_default().push(*partition);
            }
            if !metadata.groups.is_empty() {
                topics.entry(OFFSETS_TOPIC.to_string()).or_default().push(0);
            }
            let topics = topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicData::default().with_topic(TopicName(str_bytes(&topic))).with_partitions(partitions)
                })
                .collect();
            state
                .with_transaction_state(str_bytes(metadata.state.name()))
                .with_transaction_timeout_ms(metadata.timeout_ms)
                .with_transaction_start_time_ms(metadata.start_ms)
                .with_producer_id(ProducerId(metadata.producer_id))
                .with_producer_epoch(metadata.producer_epoch)
                .with_topics(topics)
        })
        .collect();
    ResponseKind::DescribeTransactions(DescribeTransactionsResponse::default().with_transaction_states(states))
}

pub fn list_transactions(node: &Node, request: ListTransactionsRequest, version: i16) -> ResponseKind {
    let mut unknown_states = Vec::new();
    let mut states = Vec::new();
    for filter in &request.state_filters {
        match TxnState::from_name(filter) {
            Some(state) => states.push(state),
            None => unknown_states.push(filter.clone()),
        }
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0);
    // v1 (KIP-994): only transactions running longer than the duration filter (-1: no filter).
    let min_duration_ms = if version >= 1 { request.duration_filter } else { -1 };
    let listed = node
        .txns
        .list()
        .into_iter()
        .filter(|txn| states.is_empty() || states.contains(&txn.metadata.state))
        .filter(|txn| {
            request.producer_id_filters.is_empty()
                || request.producer_id_filters.contains(&ProducerId(txn.metadata.producer_id))
        })
        .filter(|txn| {
            min_duration_ms < 0
                || (txn.metadata.start_ms >= 0 && now_ms.saturating_sub(txn.metadata.start_ms) > min_duration_ms)
        })
        .map(|txn| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(str_bytes(&txn.transactional_id)))
                .with_producer_id(ProducerId(txn.metadata.producer_id))
                .with_transaction_state(str_bytes(txn.metadata.state.name()))
        })
        .collect();
    ResponseKind::ListTransactions(
        ListTransactionsResponse::default().with_unknown_state_filters(unknown_states).with_transaction_states(listed),
    )
}

pub fn describe_producers(node: &Node, request: DescribeProducersRequest) -> ResponseKind {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = node.topics.get(&topic.name.0);
            let partitions = topic
                .partition_indexes
                .into_iter()
                .map(|index| {
                    let response = PartitionResponse::default().with_partition_index(index);
                    let Some(partition) = found.as_ref().and_then(|found| found.partition(index)) else {
                        return response.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let producers = partition
                        .producers()
                        .into_iter()
                        .map(|producer| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(producer.producer_id))
                                .with_producer_epoch(i32::from(producer.producer_epoch))
                                .with_last_sequence(producer.last_sequence)
                                .with_last_timestamp(producer.last_timestamp)
                                .with_coordinator_epoch(producer.coordinator_epoch)
                                .with_current_txn_start_offset(
                                    producer.current_txn_start_offset.map_or(-1, |offset| offset as i64),
                                )
                        })
                        .collect();
                    response.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    ResponseKind::DescribeProducers(DescribeProducersResponse::default().with_topics(topics))
}
