//! The record browser: `GET /console/api/topics/{topic}/partitions/{partition}/records` reads a
//! partition from an offset (or a timestamp) as a consumer of either isolation level would see it,
//! and answers each record decoded: key, value and headers as base64 and, when UTF-8, as text;
//! producer id, epoch and sequence; transaction markers as such; records of aborted transactions
//! flagged (read_uncommitted) or left out (read_committed), from the same aborted-transaction list
//! a read_committed Fetch gets, read under the same hold of the log lock as the records.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use once_acl::{Operation, ResourceType};
use once_log::batch::{parse_control_record, ControlRecord, Record};
use once_log::{BatchHeader, BATCH_HEADER_LEN};
use once_partition::{AbortedTxn, Isolation, Partition};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json, require};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::HttpState;

/// Records answered when the query does not say.
pub const LIMIT_DEFAULT: usize = 50;
/// The most records one page holds.
pub const LIMIT_MAX: usize = 500;
/// Bytes of a key, value or header value shown; the rest is cut (`truncated`, `size` tell).
pub const FIELD_BYTES_MAX: usize = 64 * 1024;
/// Batch bytes read per step of a page; a page stops reading after [`PAGE_BYTES_MAX`].
const READ_STEP_BYTES: usize = 1024 * 1024;
const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize)]
pub struct RecordsQuery {
    offset: Option<u64>,
    timestamp: Option<i64>,
    limit: Option<usize>,
    isolation: Option<String>,
}

fn isolation(query: &RecordsQuery) -> Result<Isolation, Problem> {
    match query.isolation.as_deref() {
        None | Some("read_uncommitted") => Ok(Isolation::ReadUncommitted),
        Some("read_committed") => Ok(Isolation::ReadCommitted),
        Some(other) => {
            Err(Problem::bad_request(format!("isolation must be read_committed or read_uncommitted, not '{other}'")))
        }
    }
}

pub async fn handle(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<(String, i32)>, PathRejection>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
) -> Response {
    let (topic_name, index) = match path {
        Ok(Path(path)) => path,
        Err(rejection) => return Problem::bad_request(format!("the path: {rejection}")).into_response(),
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return Problem::bad_request(format!("the query: {rejection}")).into_response(),
    };
    if let Err(problem) = require(&caller, &state, Operation::Read, ResourceType::Topic, &topic_name) {
        return problem.into_response();
    }
    let (isolation, limit) = match (isolation(&query), query.limit.unwrap_or(LIMIT_DEFAULT)) {
        (Err(problem), _) => return problem.into_response(),
        (Ok(_), limit) if !(1..=LIMIT_MAX).contains(&limit) => {
            return Problem::bad_request(format!("limit must be 1 to {LIMIT_MAX}, not {limit}")).into_response()
        }
        (Ok(isolation), limit) => (isolation, limit),
    };
    let Some(partition) = state.node.topics.get(&topic_name).and_then(|topic| topic.partition(index)) else {
        return Problem::not_found(format!("no partition {index} of topic '{topic_name}'")).into_response();
    };
    let read = tokio::task::spawn_blocking(move || page(&partition, &query, isolation, limit)).await;
    match read {
        Ok(Ok(mut page)) => {
            page["topic"] = json!(topic_name);
            page["partition"] = json!(index);
            json(page)
        }
        Ok(Err(problem)) => problem.into_response(),
        Err(error) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "read", "Reading failed", error.to_string()).into_response()
        }
    }
}

/// Where the page starts: the offset asked, the first at or after the timestamp, or the log start.
fn start_offset(
    partition: &Partition,
    query: &RecordsQuery,
    log_start: u64,
    high_watermark: u64,
) -> Result<u64, Problem> {
    match (query.offset, query.timestamp) {
        (Some(_), Some(_)) => Err(Problem::bad_request("give offset or timestamp, not both")),
        (Some(offset), None) if offset < log_start || offset > high_watermark => Err(Problem::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "offset-out-of-range",
            "Offset out of range",
            format!("offset {offset} is outside the partition's {log_start}..={high_watermark}"),
        )),
        (Some(offset), None) => Ok(offset),
        (None, Some(timestamp)) => {
            let found = partition.offset_for_timestamp(timestamp).map_err(|error| storage(error.to_string()))?;
            Ok(found.map_or(high_watermark, |(offset, _)| offset.max(log_start)))
        }
        (None, None) => Ok(log_start),
    }
}

fn storage(detail: String) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "storage", "The partition cannot be read", detail)
}

/// Reads one page: up to `limit` records from the start offset, below the high watermark
/// (read_uncommitted) or the last stable offset (read_committed). Blocking.
fn page(partition: &Partition, query: &RecordsQuery, isolation: Isolation, limit: usize) -> Result<Value, Problem> {
    let end_offsets = partition.end_offsets();
    let start = start_offset(partition, query, end_offsets.log_start_offset, end_offsets.high_watermark)?;
    let bound = end_offsets.upper_bound(isolation);
    let mut records: Vec<Value> = Vec::new();
    let mut next = start;
    let mut read_bytes = 0;
    while records.len() < limit && next < bound && read_bytes < PAGE_BYTES_MAX {
        // A read_committed read also returns the aborted transactions overlapping its batches: used
        // for both levels, to flag (uncommitted) or leave out (committed) their records.
        let (batches, aborted) =
            partition.read_committed(next, READ_STEP_BYTES, bound).map_err(|error| storage(error.to_string()))?;
        if batches.is_empty() {
            break;
        }
        read_bytes += batches.len();
        let before = next;
        next = decode_batches(&batches, &aborted, isolation, next, limit, &mut records)?;
        assert!(next > before, "every read step moves past at least one batch or record");
    }
    assert!(records.len() <= limit, "a page holds at most its limit");
    Ok(json!({
        "isolation": match isolation { Isolation::ReadCommitted => "read_committed", Isolation::ReadUncommitted => "read_uncommitted" },
        "log_start_offset": end_offsets.log_start_offset,
        "high_watermark": end_offsets.high_watermark,
        "last_stable_offset": end_offsets.last_stable_offset,
        "start_offset": start,
        "next_offset": next.min(bound).max(start),
        "records": records,
    }))
}

/// Whether a transactional batch of `producer_id` at `base_offset` belongs to an aborted
/// transaction: one of that producer's aborted ranges holds it.
fn is_aborted(aborted: &[AbortedTxn], producer_id: i64, base_offset: u64) -> bool {
    aborted
        .iter()
        .any(|txn| txn.producer_id == producer_id && txn.first_offset <= base_offset && base_offset <= txn.last_offset)
}

/// Decodes the whole batches in `bytes` into `out` (records at or after `from`, until `limit`),
/// returning the offset the next read starts at.
fn decode_batches(
    bytes: &[u8],
    aborted: &[AbortedTxn],
    isolation: Isolation,
    from: u64,
    limit: usize,
    out: &mut Vec<Value>,
) -> Result<u64, Problem> {
    let mut next = from;
    let mut rest = bytes;
    while rest.len() >= BATCH_HEADER_LEN && out.len() < limit {
        let header = BatchHeader::parse(rest).map_err(|error| storage(format!("a stored batch: {error}")))?;
        let length = header.total_len();
        let batch = rest.get(..length).ok_or_else(|| storage("a stored batch runs past the read".into()))?;
        rest = &rest[length..];
        let base = u64::try_from(header.base_offset).map_err(|_| storage("a negative base offset".into()))?;
        let last = base + u64::try_from(header.last_offset_delta).unwrap_or(0);
        if last < from {
            continue;
        }
        let aborted_batch = header.is_transactional() && is_aborted(aborted, header.producer_id, base);
        if header.is_control() {
            let control = match parse_control_record(batch) {
                Ok(ControlRecord::EndTxn { commit: true, .. }) => "commit",
                Ok(ControlRecord::EndTxn { commit: false, .. }) => "abort",
                Ok(ControlRecord::Other { .. }) | Err(_) => "control",
            };
            out.push(control_view(&header, base, control));
            next = last + 1;
            continue;
        }
        if aborted_batch && isolation == Isolation::ReadCommitted {
            next = last + 1;
            continue;
        }
        let complete = once_dedup::with_records(batch, |header, records| {
            for record in records {
                let offset = base + u64::try_from(record.offset_delta).unwrap_or(0);
                if offset < from {
                    continue;
                }
                if out.len() == limit {
                    next = offset;
                    return false;
                }
                out.push(record_view(header, record, offset, aborted_batch));
            }
            true
        })
        .map_err(|error| storage(format!("a stored batch at offset {base}: {error}")))?;
        if !complete {
            return Ok(next);
        }
        next = last + 1;
    }
    Ok(next)
}

/// Bytes as the console shows them: base64 (cut at [`FIELD_BYTES_MAX`]), and the text when UTF-8.
pub fn bytes_view(bytes: Option<&[u8]>) -> Value {
    let Some(bytes) = bytes else { return Value::Null };
    let shown = &bytes[..bytes.len().min(FIELD_BYTES_MAX)];
    // A cut may split a character: the text is what decodes up to it.
    let text = match std::str::from_utf8(shown) {
        Ok(text) => Some(text),
        Err(error) if shown.len() < bytes.len() && error.error_len().is_none() => {
            std::str::from_utf8(&shown[..error.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    json!({
        "base64": base64::engine::general_purpose::STANDARD.encode(shown),
        "text": text,
        "size": bytes.len(),
        "truncated": shown.len() < bytes.len(),
    })
}

fn timestamp_type(header: &BatchHeader) -> &'static str {
    if header.attributes & 0x08 != 0 {
        "log_append"
    } else {
        "create"
    }
}

fn record_view(header: &BatchHeader, record: &Record<'_>, offset: u64, aborted: bool) -> Value {
    let headers: Vec<Value> = record
        .headers()
        .map(|(key, value)| json!({"key": String::from_utf8_lossy(key), "value": bytes_view(value)}))
        .collect();
    let timestamp = if header.attributes & 0x08 != 0 {
        header.max_timestamp
    } else {
        header.base_timestamp.saturating_add(record.timestamp_delta)
    };
    let sequence = (header.base_sequence >= 0).then(|| header.base_sequence.wrapping_add(record.offset_delta));
    json!({
        "offset": offset,
        "timestamp": timestamp,
        "timestamp_type": timestamp_type(header),
        "key": bytes_view(record.key),
        "value": bytes_view(record.value),
        "headers": headers,
        "producer_id": header.producer_id,
        "producer_epoch": header.producer_epoch,
        "sequence": sequence,
        "transactional": header.is_transactional(),
        "aborted": aborted,
        "control": null,
    })
}

fn control_view(header: &BatchHeader, offset: u64, control: &str) -> Value {
    json!({
        "offset": offset,
        "timestamp": header.max_timestamp,
        "timestamp_type": timestamp_type(header),
        "key": null,
        "value": null,
        "headers": [],
        "producer_id": header.producer_id,
        "producer_epoch": header.producer_epoch,
        "sequence": null,
        "transactional": header.is_transactional(),
        "aborted": false,
        "control": control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_base64_and_text_when_utf8() {
        assert_eq!(bytes_view(None), Value::Null);
        let view = bytes_view(Some(b"{\"amount\":50}"));
        assert_eq!(view["text"], "{\"amount\":50}");
        assert_eq!(view["base64"], "eyJhbW91bnQiOjUwfQ==");
        assert_eq!((view["size"].clone(), view["truncated"].clone()), (json!(13), json!(false)));
        let binary = bytes_view(Some(&[0xff, 0x00, 0x10]));
        assert_eq!(binary["text"], Value::Null, "not UTF-8");
        assert_eq!(binary["base64"], "/wAQ");
    }

    #[test]
    fn long_fields_are_cut_and_a_split_character_does_not_lose_the_text() {
        let mut long = vec![b'a'; FIELD_BYTES_MAX - 1];
        long.extend_from_slice("é and more".as_bytes());
        let view = bytes_view(Some(&long));
        assert_eq!(view["truncated"], true);
        assert_eq!(view["size"], long.len());
        let text = view["text"].as_str().expect("the text up to the cut");
        assert_eq!(text.len(), FIELD_BYTES_MAX - 1, "the split é is left out, the rest kept");
    }

    #[test]
    fn aborted_ranges_are_per_producer() {
        let aborted = [AbortedTxn { producer_id: 5, first_offset: 10, last_offset: 20 }];
        assert!(is_aborted(&aborted, 5, 10));
        assert!(is_aborted(&aborted, 5, 19));
        assert!(!is_aborted(&aborted, 5, 21), "after its marker");
        assert!(!is_aborted(&aborted, 6, 12), "another producer's batch in the range");
    }
}
