//! `POST /v3/clusters/{cluster_id}/topics/{topic}/records`: one record, stored and fsynced before
//! the answer, with `Idempotency-Key` semantics (crate::idempotency, docs/design/http.md).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use once_acl::{Operation, ResourceType};
use once_dedup::DedupSource;
use once_log::batch::{uncompressed_records, BatchEncoder, NewRecord as EncodedRecord};
use once_log::{BatchHeader, LogError, BATCH_HEADER_LEN};
use once_partition::{Isolation, OffsetAnswer, Partition, PartitionError};

use crate::auth::Caller;
use crate::idempotency::{self, Verdict, FINGERPRINT_HEADER};
use crate::partitioner::partition_for;
use crate::problem::Problem;
use crate::record::{self, Data, NewRecord};
use crate::HttpState;

/// The leader epoch a single broker stamps (as the Kafka edge does).
const LEADER_EPOCH: i32 = 0;

pub async fn handle(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Path((cluster_id, topic)) = match path {
        Ok(path) => path,
        Err(rejection) => return Problem::bad_request(format!("the path: {rejection}")).into_response(),
    };
    match produce(&state, &caller, &cluster_id, &topic, &headers, body).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn produce(
    state: &Arc<HttpState>,
    caller: &Caller,
    cluster_id: &str,
    topic_name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    state.check_cluster(cluster_id)?;
    // WRITE on the topic, as a Kafka Produce; checked before the topic is looked up, so a caller
    // without it learns nothing of which topics exist. The record is written without a producer id,
    // so no IDEMPOTENT_WRITE or transactional-id right is involved.
    caller.require(state, Operation::Write, ResourceType::Topic, topic_name)?;
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            too_large(format!("the request body exceeds {} bytes", crate::REQUEST_BYTES_MAX))
        }
        other => Problem::bad_request(format!("reading the body: {other}")),
    })?;
    let topic = state
        .node
        .topics
        .get(topic_name)
        .ok_or_else(|| Problem::not_found(format!("topic '{topic_name}' does not exist")))?;
    let key = idempotency::key_of(headers)?;
    if key.is_none() && topic.config().idempotency_key_required() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "idempotency-key-missing",
            "This topic requires an Idempotency-Key",
            format!("topic '{topic_name}' has http.idempotency.key.required=true: send an Idempotency-Key header"),
        ));
    }
    let record = record::parse(&body)?;
    let id_header = match (&key, topic.config().dedup_source()) {
        (None, _) => None,
        (Some(_), DedupSource::Header(name)) => Some(name),
        (Some(_), other) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency-not-enabled",
                "The topic does not store Idempotency-Keys",
                format!(
                    "topic '{topic_name}' has dedup.source={other}; Idempotency-Key needs dedup.source=header:NAME \
                     (e.g. `once topic alter-config {topic_name} --set dedup.source=header:id`)"
                ),
            ))
        }
    };
    for (name, _) in &record.headers {
        if Some(name) == id_header.as_ref() || name == FINGERPRINT_HEADER {
            return Err(Problem::bad_request(format!(
                "header '{name}' is set by the broker from the Idempotency-Key; do not send it in the body"
            )));
        }
    }
    let count = topic.partition_count();
    let index = match (record.partition, &record.key, &key) {
        (Some(index), _, _) => index,
        (None, Some(data), _) => partition_for(&data.bytes, count),
        // A retry must reach the partition of its original: the key decides when the record has none.
        (None, None, Some(key)) => partition_for(key.as_bytes(), count),
        (None, None, None) => (state.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1) as u32) as i32,
    };
    let partition = topic
        .partition(index)
        .ok_or_else(|| Problem::not_found(format!("topic '{topic_name}' has no partition {index}")))?;
    let _held = key.as_deref().map(|key| state.in_flight.hold(topic_name, key)).transpose()?;
    let path = format!("/v3/clusters/{cluster_id}/topics/{topic_name}/records");
    let fingerprint = idempotency::fingerprint("POST", &path, &body);
    let now = now_ms();
    let timestamp_ms = record.timestamp_ms.unwrap_or(now);
    if key.is_some() {
        check_key_timestamp(&topic.config(), timestamp_ms, now)?;
    }
    let batch = encode(&record, key.as_deref().zip(id_header.as_deref()), &fingerprint, timestamp_ms);
    let max = topic.config().max_message_bytes();
    if batch.len() > max {
        return Err(too_large(format!(
            "the record is {} bytes, above the topic's max.message.bytes {max}",
            batch.len()
        )));
    }
    // Below the free-space floor: refused before anything is written, retriable (as the Kafka edge's
    // KAFKA_STORAGE_ERROR); 507's condition is temporary by definition (RFC 4918).
    let admitted = state.node.floor.admit(batch.len() as u64).map_err(|refusal| {
        Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage-below-floor",
            "The broker is low on disk space",
            refusal.to_string(),
        )
        .retry_after(5)
    })?;
    let batch_bytes = batch.len();
    let appended = partition.append_valid(batch).await.map_err(|error| storage_problem(&partition, &error));
    drop(admitted);
    let appended = appended?;
    // Counted as the Kafka edge counts a produced batch (before deduplication).
    topic.traffic.produced(batch_bytes, 1);
    if appended.duplicates_dropped == 0 {
        assert_eq!(appended.base_offset, appended.last_offset, "one record, one offset");
        let stored = Stored { state, topic: topic_name, partition: index, record: &record };
        return Ok(stored.answer(appended.base_offset as i64, timestamp_ms, false));
    }
    // The id was already stored: where?
    let (original_index, offset) = match appended.answer {
        OffsetAnswer::Originals { base_offset } => (index, base_offset),
        OffsetAnswer::Elsewhere { partition, offset } => (partition, offset),
        OffsetAnswer::Stored | OffsetAnswer::Unknown => {
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "A dropped record without its original's place",
                format!("the broker dropped the record as a duplicate but answered {:?}", appended.answer),
            ))
        }
    };
    let original = topic.partition(original_index).ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "original-unreadable",
            "The original record cannot be read",
            format!("the original is in partition {original_index}, which is gone"),
        )
    })?;
    let read = {
        let original = Arc::clone(&original);
        // A read of the log is blocking file I/O: off the async workers.
        tokio::task::spawn_blocking(move || read_original(&original, offset)).await
    };
    let found = match read {
        Ok(Ok(found)) => found,
        Ok(Err(PartitionError::Log(LogError::OffsetOutOfRange { .. }))) => {
            // Retention removed the original between the answer and this read: the id expires
            // with it, and the next retry is stored afresh.
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "original-expired",
                "The original record has just expired",
                format!("the original at {original_index}/{offset} was removed by retention; retry"),
            )
            .retry_after(1));
        }
        Ok(Err(error)) => return Err(storage_problem(&original, &error)),
        Err(error) => {
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Reading the original failed",
                error.to_string(),
            ))
        }
    };
    let Some((original_timestamp, stored_fingerprint)) = found else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "original-unreadable",
            "The original record cannot be read",
            format!("no record at {original_index}/{offset}"),
        )
        .retry_after(1));
    };
    if let Some(key) = key.as_deref() {
        if idempotency::judge(stored_fingerprint.as_deref(), &fingerprint) == Verdict::Reused {
            let why = match stored_fingerprint {
                Some(_) => "was used for a different request",
                None => "is the message id of a record not produced with it over HTTP",
            };
            return Err(idempotency::reused(key, topic_name, why));
        }
    }
    let stored = Stored { state, topic: topic_name, partition: original_index, record: &record };
    Ok(stored.answer(offset as i64, original_timestamp, true))
}

struct Stored<'a> {
    state: &'a HttpState,
    topic: &'a str,
    partition: i32,
    record: &'a NewRecord,
}

impl Stored<'_> {
    /// The REST Proxy's `ProduceResponse`; `replayed` adds `Idempotent-Replayed: true`.
    fn answer(&self, offset: i64, timestamp_ms: i64, replayed: bool) -> Response {
        let data = |data: &Option<Data>| match data {
            None => serde_json::Value::Null,
            Some(data) => serde_json::json!({"type": data.kind, "size": data.bytes.len()}),
        };
        let body = serde_json::json!({
            "error_code": 200,
            "cluster_id": self.state.node.identity.cluster_id,
            "topic_name": self.topic,
            "partition_id": self.partition,
            "offset": offset,
            "timestamp": record::rfc3339(timestamp_ms),
            "key": data(&self.record.key),
            "value": data(&self.record.value),
        });
        let mut response = axum::Json(body).into_response();
        if replayed {
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

fn encode(record: &NewRecord, id: Option<(&str, &str)>, fingerprint: &str, timestamp_ms: i64) -> once_log::ValidBatch {
    let mut headers: Vec<(&[u8], Option<&[u8]>)> =
        record.headers.iter().map(|(name, value)| (name.as_bytes(), value.as_deref())).collect();
    if let Some((key, header)) = id {
        headers.push((header.as_bytes(), Some(key.as_bytes())));
        headers.push((FINGERPRINT_HEADER.as_bytes(), Some(fingerprint.as_bytes())));
    }
    let mut encoder = BatchEncoder::new(timestamp_ms);
    encoder.push(&EncodedRecord {
        offset_delta: 0,
        timestamp_delta: 0,
        key: record.key.as_ref().map(|data| data.bytes.as_slice()),
        value: record.value.as_ref().map(|data| data.bytes.as_slice()),
        headers: &headers,
    });
    let mut batch = encoder.finish();
    batch.set_partition_leader_epoch(LEADER_EPOCH);
    batch
}

/// A stored original: its timestamp and its fingerprint header, if it has one.
type Original = (i64, Option<Vec<u8>>);

/// The record at `offset`: its timestamp and fingerprint header. A compressed batch was not written
/// by this endpoint (it writes uncompressed batches), so its record has no fingerprint: the batch's
/// largest timestamp and `None`. `None` if the offset was not found.
fn read_original(partition: &Partition, offset: u64) -> Result<Option<Original>, PartitionError> {
    let read = partition.read_fetch(offset, 1 << 20, Isolation::ReadUncommitted)?;
    let mut rest = &read.records[..];
    while rest.len() >= BATCH_HEADER_LEN {
        let header = BatchHeader::parse(rest)?;
        let Some(batch) = rest.get(..header.total_len()) else { break };
        rest = &rest[header.total_len()..];
        let (base, last) = (header.base_offset, header.last_offset());
        if !(base..=last).contains(&(offset as i64)) {
            continue;
        }
        let Ok(records) = uncompressed_records(&header, batch) else { return Ok(Some((header.max_timestamp, None))) };
        for found in records {
            if base + i64::from(found.offset_delta) == offset as i64 {
                let fingerprint = found
                    .headers()
                    .find(|(name, _)| *name == FINGERPRINT_HEADER.as_bytes())
                    .and_then(|(_, value)| value.map(<[u8]>::to_vec));
                return Ok(Some((header.base_timestamp + found.timestamp_delta, fingerprint)));
            }
        }
        return Ok(None);
    }
    Ok(None)
}

/// A keyed record's id deduplicates for a window measured from the record's timestamp (and time
/// retention deletes by it too): a timestamp older than the window would make the key expire at
/// once, so a retry could store it again. Refused instead.
fn check_key_timestamp(
    config: &once_node::topic_config::TopicConfig,
    timestamp_ms: i64,
    now_ms: i64,
) -> Result<(), Problem> {
    let window = match config.dedup_window() {
        once_dedup::DedupWindow::Duration { window_ms } => Some(window_ms),
        once_dedup::DedupWindow::Retention => None,
    };
    let retention =
        config.value_of("retention.ms").and_then(|(value, _)| value.parse::<i64>().ok()).filter(|ms| *ms >= 0);
    let horizon = match (window, retention) {
        (Some(window), Some(retention)) => Some(window.min(retention)),
        (one, other) => one.or(other),
    };
    if let Some(horizon) = horizon {
        if timestamp_ms < now_ms.saturating_sub(horizon) {
            return Err(Problem::bad_request(format!(
                "timestamp {} is older than the topic's dedup window or retention ({horizon} ms): its Idempotency-Key \
                 would expire at once; send a recent timestamp or none",
                record::rfc3339(timestamp_ms)
            )));
        }
    }
    Ok(())
}

fn too_large(detail: String) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "The request is too large", detail)
}

/// A failed append as HTTP: every variant decided here, none acknowledged.
/// A latched partition fails every request: one log line every few seconds says so.
static STORAGE_ERRORS_LOGGED: once_node::storage::EveryFewSeconds = once_node::storage::EveryFewSeconds::new();

fn storage_problem(partition: &Partition, error: &PartitionError) -> Problem {
    let unavailable = |kind, title, retry| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, kind, title, format!("partition {}: {error}", partition.id()))
            .retry_after(retry)
    };
    match error {
        PartitionError::Log(_) | PartitionError::Storage(_) => {
            if let Some(suppressed) = STORAGE_ERRORS_LOGGED.due() {
                tracing::error!(partition = %partition.id(), %error, suppressed, "HTTP produce failed");
            }
            unavailable("storage-error", "The broker cannot store the record now", 5)
        }
        PartitionError::Closed(_) => unavailable("partition-closed", "The partition is closed", 1),
        PartitionError::Busy(_) | PartitionError::MarkerQueueTimeout { .. } => {
            unavailable("busy", "The partition is busy", 1)
        }
        // Lasting until retention or the window frees ids (the Kafka edge answers POLICY_VIOLATION).
        PartitionError::DedupIndexFull(_) => Problem::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "dedup-index-full",
            "The topic's message-id index is full",
            format!("partition {}: {error}", partition.id()),
        ),
        PartitionError::DedupPending(_) => Problem::new(
            StatusCode::CONFLICT,
            "message-id-pending",
            "A write with this message id is in progress",
            format!("{error}; retry when it has ended"),
        )
        .retry_after(1),
        // A batch without a producer id meets none of the producer-state checks.
        PartitionError::OutOfOrderSequence { .. }
        | PartitionError::ProducerFenced { .. }
        | PartitionError::InvalidTxnState(_)
        | PartitionError::CoordinatorFenced { .. } => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Unexpected producer-state error",
            error.to_string(),
        ),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}
