//! The record browser: `GET /console/api/topics/{topic}/partitions/{partition}/records` reads a
//! partition from an offset (or a timestamp) as a consumer of either isolation level would see it,
//! and answers each record decoded: key, value and headers as base64 and, when UTF-8, as text;
//! producer id, epoch and sequence; transaction markers as such; records of aborted transactions
//! flagged (read_uncommitted) or left out (read_committed), from the same aborted-transaction list
//! a read_committed Fetch gets, taken with the records so that the two agree (`Partition::read_fetch`).

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
/// Bytes of a key or value shown; the rest is cut (`truncated`, `size` tell).
pub const FIELD_BYTES_MAX: usize = 64 * 1024;
/// Bytes of a header value shown, bytes of a header key, headers shown per record (the record's
/// `headers_total` counts them all).
pub const HEADER_VALUE_BYTES_MAX: usize = 4 * 1024;
pub const HEADER_KEY_BYTES_MAX: usize = 256;
pub const HEADERS_MAX: usize = 64;
/// Bytes of JSON one page answers at most: it ends after the record that crosses it (so at least
/// one record is always shown; one record is at most about 3 MiB of JSON).
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Batch bytes read per step of a page; a page stops reading after [`PAGE_BYTES_MAX`].
const READ_STEP_BYTES: usize = 1024 * 1024;
const PAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Record pages read at once: each may decompress a batch of up to 256 MiB
/// (`once_dedup::RECORDS_BYTES_MAX`); more wait their turn.
const PAGES_AT_ONCE: usize = 2;
static PAGES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(PAGES_AT_ONCE);

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
    let permit = match tokio::time::timeout(std::time::Duration::from_secs(10), PAGES.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Other pages are being read", "try again")
                .retry_after(1)
                .into_response()
        }
    };
    let read = tokio::task::spawn_blocking(move || page(&partition, &query, isolation, limit)).await;
    drop(permit);
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
    let mut records = Page { records: Vec::new(), limit, bytes: 0 };
    let mut next = start;
    let mut read_bytes = 0;
    while !records.full() && next < bound && read_bytes < PAGE_BYTES_MAX {
        // A read_committed read also returns the aborted transactions overlapping its batches: used
        // for both levels, to flag (uncommitted) or leave out (committed) their records.
        let (batches, aborted) =
            partition.read_committed(next, READ_STEP_BYTES, bound).map_err(|error| storage(error.to_string()))?;
        if batches.is_empty() {
            break;
        }
        read_bytes += batches.len();
        let before = next;
        next = decode_batches(&batches, &aborted, isolation, next, &mut records)?;
        assert!(next > before, "every read step moves past at least one batch or record");
    }
    assert!(records.records.len() <= limit, "a page holds at most its limit");
    let records = records.records;
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

/// A page being filled: its records, and the JSON bytes they make.
struct Page {
    records: Vec<Value>,
    limit: usize,
    bytes: usize,
}

impl Page {
    /// The limit reached, or the JSON budget spent.
    fn full(&self) -> bool {
        self.records.len() >= self.limit || self.bytes >= RESPONSE_BYTES_MAX
    }

    fn push(&mut self, record: Value) {
        assert!(!self.full(), "a full page takes no more records");
        self.bytes += serde_json::to_vec(&record).map_or(0, |bytes| bytes.len());
        self.records.push(record);
    }
}

/// Decodes the whole batches in `bytes` into `out` (records at or after `from`, until it is full),
/// returning the offset the next read starts at.
fn decode_batches(
    bytes: &[u8],
    aborted: &[AbortedTxn],
    isolation: Isolation,
    from: u64,
    out: &mut Page,
) -> Result<u64, Problem> {
    let mut next = from;
    let mut rest = bytes;
    while rest.len() >= BATCH_HEADER_LEN && !out.full() {
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
        let mut stopped_at = None;
        once_dedup::visit_records(batch, |header, record| {
            let offset = base + u64::try_from(record.offset_delta).unwrap_or(0);
            if offset < from {
                return true;
            }
            if out.full() {
                stopped_at = Some(offset);
                return false;
            }
            out.push(record_view(header, record, offset, aborted_batch));
            true
        })
        .map_err(|error| storage(format!("a stored batch at offset {base}: {error}")))?;
        if let Some(offset) = stopped_at {
            return Ok(offset);
        }
        next = last + 1;
    }
    Ok(next)
}

/// Bytes as the console shows them: base64 (cut at `max` bytes), and the text when UTF-8.
pub fn bytes_view(bytes: Option<&[u8]>, max: usize) -> Value {
    let Some(bytes) = bytes else { return Value::Null };
    let shown = &bytes[..bytes.len().min(max)];
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
        .take(HEADERS_MAX)
        .map(|(key, value)| {
            let key = String::from_utf8_lossy(&key[..key.len().min(HEADER_KEY_BYTES_MAX)]);
            json!({"key": key, "value": bytes_view(value, HEADER_VALUE_BYTES_MAX)})
        })
        .collect();
    let timestamp = if header.attributes & 0x08 != 0 {
        header.max_timestamp
    } else {
        header.base_timestamp.saturating_add(record.timestamp_delta)
    };
    // Sequences wrap from i32::MAX to 0, as Kafka's do.
    let sequence = (header.base_sequence >= 0).then(|| {
        ((i64::from(header.base_sequence) + i64::from(record.offset_delta)) % (i64::from(i32::MAX) + 1)) as i32
    });
    json!({
        "offset": offset,
        "timestamp": timestamp,
        "timestamp_type": timestamp_type(header),
        "key": bytes_view(record.key, FIELD_BYTES_MAX),
        "value": bytes_view(record.value, FIELD_BYTES_MAX),
        "headers": headers,
        "headers_total": record.header_count(),
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
        "headers_total": 0,
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
        assert_eq!(bytes_view(None, FIELD_BYTES_MAX), Value::Null);
        let view = bytes_view(Some(b"{\"amount\":50}"), FIELD_BYTES_MAX);
        assert_eq!(view["text"], "{\"amount\":50}");
        assert_eq!(view["base64"], "eyJhbW91bnQiOjUwfQ==");
        assert_eq!((view["size"].clone(), view["truncated"].clone()), (json!(13), json!(false)));
        let binary = bytes_view(Some(&[0xff, 0x00, 0x10]), FIELD_BYTES_MAX);
        assert_eq!(binary["text"], Value::Null, "not UTF-8");
        assert_eq!(binary["base64"], "/wAQ");
    }

    #[test]
    fn long_fields_are_cut_and_a_split_character_does_not_lose_the_text() {
        let mut long = vec![b'a'; FIELD_BYTES_MAX - 1];
        long.extend_from_slice("é and more".as_bytes());
        let view = bytes_view(Some(&long), FIELD_BYTES_MAX);
        assert_eq!(view["truncated"], true);
        assert_eq!(view["size"], long.len());
        let text = view["text"].as_str().expect("the text up to the cut");
        assert_eq!(text.len(), FIELD_BYTES_MAX - 1, "the split é is left out, the rest kept");
    }

    /// One batch of `count` records, each with a `value_bytes` value of control characters (which
    /// JSON escapes six bytes each) and 100 headers.
    fn hostile_batch(count: i32, value_bytes: usize) -> Vec<u8> {
        let value = vec![1u8; value_bytes];
        let header_value = vec![1u8; 64 * 1024];
        let long_key = vec![b'k'; 10_000];
        let headers: Vec<(&[u8], Option<&[u8]>)> =
            (0..100).map(|_| (long_key.as_slice(), Some(header_value.as_slice()))).collect();
        let mut encoder = once_log::batch::BatchEncoder::new(1_000);
        for offset_delta in 0..count {
            encoder.push(&once_log::batch::NewRecord {
                offset_delta,
                key: Some(b"k"),
                value: Some(&value),
                headers: &headers,
                ..Default::default()
            });
        }
        encoder.finish_bytes()
    }

    #[test]
    fn a_page_stops_at_its_json_budget_and_caps_each_record() {
        let batch = hostile_batch(20, 1024 * 1024);
        let mut page = Page { records: Vec::new(), limit: 500, bytes: 0 };
        let next = decode_batches(&batch, &[], Isolation::ReadUncommitted, 0, &mut page).expect("decoded");
        assert!(!page.records.is_empty() && page.records.len() < 20, "{} records", page.records.len());
        assert_eq!(next, page.records.len() as u64, "the next page starts at the first record not shown");
        let last = serde_json::to_vec(page.records.last().expect("a record")).expect("json").len();
        assert!(page.bytes - last < RESPONSE_BYTES_MAX, "only the last record crosses the budget");
        assert!(last < 4 * 1024 * 1024, "one record is bounded: {last} bytes");
        let record = &page.records[0];
        assert_eq!(record["headers"].as_array().expect("headers").len(), HEADERS_MAX);
        assert_eq!(record["headers_total"], 100);
        assert_eq!(record["headers"][0]["key"].as_str().expect("key").len(), HEADER_KEY_BYTES_MAX);
        assert_eq!(record["headers"][0]["value"]["truncated"], true);
        assert_eq!(
            (record["value"]["size"].clone(), record["value"]["truncated"].clone()),
            (json!(1024 * 1024), json!(true))
        );
    }

    #[test]
    fn a_page_resumes_inside_a_batch_and_skips_what_precedes_the_start() {
        let mut encoder = once_log::batch::BatchEncoder::new(1_000);
        for n in 0..10u8 {
            encoder.push_key_value(Some(&[n]), Some(b"v"));
        }
        let batch = encoder.finish_bytes();
        let mut page = Page { records: Vec::new(), limit: 3, bytes: 0 };
        let next = decode_batches(&batch, &[], Isolation::ReadUncommitted, 4, &mut page).expect("decoded");
        let offsets: Vec<&Value> = page.records.iter().map(|record| &record["offset"]).collect();
        assert_eq!(offsets, [&json!(4), &json!(5), &json!(6)]);
        assert_eq!(next, 7);
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
