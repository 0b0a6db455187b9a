//! Produce; translation only: each partition's batch is checked as Kafka checks a request's batch,
//! appended by the partition's writer (a transactional one through the node's verified append), and
//! answered only once it is durable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};
use once_log::{BatchHeader, ValidBatch};
use once_node::Node;
use once_partition::{Appended, PartitionError};
use once_wire::ResponseError;

use super::str_bytes;

use crate::dispatch::PendingResponse;
use crate::errors::{log_error_code, partition_error_code, txn_append_error_code};

/// A latched partition fails every produce: one log line every few seconds says so.
static STORAGE_ERRORS_LOGGED: once_node::storage::EveryFewSeconds = once_node::storage::EveryFewSeconds::new();

/// The only leader epoch a single broker has (also what Metadata reports).
const LEADER_EPOCH: i32 = 0;

type Outcome = Pin<Box<dyn Future<Output = PartitionProduceResponse> + Send>>;
type PendingAppend = Pin<Box<dyn Future<Output = Result<Appended, PartitionError>> + Send>>;

fn failed(index: i32, error: ResponseError, message: impl Into<String>) -> Outcome {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error.code())
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(Some(str_bytes(&message.into())));
    Box::pin(async move { response })
}

/// Validates and enqueues every partition's batch now (keeping request order per partition) and returns
/// the future that waits for their durability.
pub fn handle(node: &Arc<Node>, request: ProduceRequest, _version: i16) -> PendingResponse {
    let acks = request.acks;
    let transactional_id = request.transactional_id.as_ref().map(|id| id.0.to_string());
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic_data in request.topic_data {
        let name = topic_data.name;
        let topic = node.topics.get(&name.0);
        let outcomes: Vec<Outcome> = topic_data
            .partition_data
            .into_iter()
            .map(|data| {
                let index = data.index;
                if !matches!(acks, -1..=1) {
                    return failed(
                        index,
                        ResponseError::InvalidRequiredAcks,
                        format!("acks must be -1, 0 or 1, not {acks}"),
                    );
                }
                let Some(partition) = topic.as_ref().and_then(|topic| topic.partition(index)) else {
                    return failed(index, ResponseError::UnknownTopicOrPartition, "unknown topic or partition");
                };
                let max_message_bytes = topic.as_ref().map(|topic| topic.config().max_message_bytes()).unwrap_or(0);
                let records = data.records.unwrap_or_default();
                let mut batch = match check_batch(&records, max_message_bytes) {
                    Ok(batch) => batch,
                    Err((error, message)) => return failed(index, error, message),
                };
                // Below the free-space floor nothing is appended: KAFKA_STORAGE_ERROR, which clients
                // retry (Kafka's KafkaStorageException is retriable); the next request after space
                // returns is admitted. POLICY_VIOLATION would not be retried.
                let admitted = match node.floor.admit(records.len() as u64) {
                    Ok(admitted) => admitted,
                    Err(refusal) => return failed(index, ResponseError::KafkaStorageError, refusal.to_string()),
                };
                // The broker stamps its partition leader epoch (outside the CRC), as Kafka does.
                batch.set_partition_leader_epoch(LEADER_EPOCH);
                let header = *batch.header();
                let append: PendingAppend = if header.is_transactional() {
                    match node.append_transactional(transactional_id.as_deref(), &partition, batch) {
                        Ok(append) => Box::pin(append),
                        Err(error) => return failed(index, txn_append_error_code(&error), error.to_string()),
                    }
                } else {
                    Box::pin(partition.append_valid(batch))
                };
                let traffic = topic.clone();
                let (bytes, records) = (records.len(), u32::try_from(header.records_count).unwrap_or(0));
                Box::pin(async move {
                    let outcome = append.await;
                    // Written (or refused): no longer counted as on its way to the disk.
                    drop(admitted);
                    if let (Ok(_), Some(topic)) = (&outcome, &traffic) {
                        topic.traffic.produced(bytes, records);
                    }
                    answer(index, &partition, outcome)
                })
            })
            .collect();
        topics.push((name, outcomes));
    }
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, outcomes) in topics {
            let mut partition_responses = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                partition_responses.push(outcome.await);
            }
            responses
                .push(TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses));
        }
        // acks=0: the client expects no response at all.
        (acks != 0).then(|| ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
    })
}

fn answer(
    index: i32,
    partition: &once_partition::Partition,
    outcome: Result<Appended, PartitionError>,
) -> PartitionProduceResponse {
    match outcome {
        // Negative when deduplication dropped records and no base offset locates the batch's records.
        Ok(info) => PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(info.answer_base_offset())
            .with_log_append_time_ms(-1)
            .with_log_start_offset(partition.log_start_offset() as i64),
        Err(error) => {
            let code = partition_error_code(&error);
            if code == ResponseError::KafkaStorageError {
                if let Some(suppressed) = STORAGE_ERRORS_LOGGED.due() {
                    tracing::error!(partition = %partition.id(), %error, suppressed, "produce failed (latched partitions refuse writes until the broker restarts)");
                }
            }
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(code.code())
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
                .with_error_message(Some(str_bytes(&error.to_string())))
        }
    }
}

/// What Kafka checks of a produced batch before it reaches the log, then the log's own validation
/// (structure, CRC) on the same parsed header: the one parse of the batch on the produce path.
///
/// The batch keeps sharing the request's buffer (`records` is a slice of the frame): no copy of the
/// records is made on the produce path before the log writes them.
fn check_batch(records: &Bytes, max_message_bytes: usize) -> Result<ValidBatch, (ResponseError, String)> {
    if records.is_empty() {
        return Err((ResponseError::InvalidRecord, "produce request carries no record batch".into()));
    }
    if records.len() > max_message_bytes {
        return Err((
            ResponseError::MessageTooLarge,
            format!("batch of {} bytes exceeds max.message.bytes {max_message_bytes}", records.len()),
        ));
    }
    let header = BatchHeader::parse(records).map_err(|error| (ResponseError::CorruptMessage, error.to_string()))?;
    if header.magic != 2 {
        return Err((
            ResponseError::UnsupportedForMessageFormat,
            format!("record batch magic {} (Once stores v2 only)", header.magic),
        ));
    }
    if header.total_len() != records.len() {
        return Err((
            ResponseError::InvalidRecord,
            "a produce request must carry exactly one record batch per partition".into(),
        ));
    }
    if header.records_count < 1 || !header.holds_every_offset() {
        // The log stores compaction-shaped batches (deduplication writes them); clients may not.
        return Err((
            ResponseError::InvalidRecord,
            format!(
                "a produced batch holds one record per offset: records count {} with last offset delta {}",
                header.records_count, header.last_offset_delta
            ),
        ));
    }
    if header.is_control() {
        return Err((ResponseError::InvalidRecord, "clients may not write control batches".into()));
    }
    if header.is_transactional() && header.producer_id < 0 {
        return Err((ResponseError::InvalidRecord, "a transactional batch needs a producer id".into()));
    }
    if header.producer_id >= 0 && header.base_sequence < 0 {
        return Err((
            ResponseError::InvalidRecord,
            format!("idempotent batch with negative base sequence {}", header.base_sequence),
        ));
    }
    ValidBatch::validate_parsed(header, records.clone()).map_err(|error| (log_error_code(&error), error.to_string()))
}

/// The answer to an advertised-but-unserved Produce version: UNSUPPORTED_VERSION for every partition
/// (none for acks=0, which expects no response).
pub fn unsupported_version(request: ProduceRequest) -> Option<ResponseKind> {
    if request.acks == 0 {
        return None;
    }
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|data| {
                    PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(ResponseError::UnsupportedVersion.code())
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1)
                })
                .collect();
            TopicProduceResponse::default().with_name(topic.name).with_partition_responses(partitions)
        })
        .collect();
    Some(ResponseKind::Produce(ProduceResponse::default().with_responses(responses)))
}
