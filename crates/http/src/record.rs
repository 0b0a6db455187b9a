//! The REST Proxy v3 produce body (`ProduceRequest`): what one POST asks to store, decoded into
//! bytes — key and value as JSON, STRING or BINARY (base64), headers with base64 values, an
//! optional partition and timestamp. Schema-registry formats are refused.

use base64::Engine as _;
use serde::Deserialize;

use crate::problem::Problem;

#[derive(Debug, Deserialize)]
pub struct ProduceBody {
    pub partition_id: Option<i32>,
    #[serde(default)]
    pub headers: Vec<HeaderBody>,
    pub key: Option<DataBody>,
    pub value: Option<DataBody>,
    /// RFC 3339; the broker's clock when absent.
    pub timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct HeaderBody {
    pub name: String,
    /// Base64 of the header's bytes; null for a null value.
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct DataBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    pub schema_id: Option<serde_json::Value>,
    pub schema_version: Option<serde_json::Value>,
    pub subject: Option<serde_json::Value>,
}

/// A decoded key or value: its bytes and the type it was given as (for the response's `size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

/// A POST's record, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub partition: Option<i32>,
    pub key: Option<Data>,
    pub value: Option<Data>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
}

fn base64(text: &str, what: &str) -> Result<Vec<u8>, Problem> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|error| Problem::bad_request(format!("{what} is not valid base64: {error}")))
}

fn decode_data(body: DataBody, what: &str) -> Result<Data, Problem> {
    if body.schema_id.is_some() || body.schema_version.is_some() || body.subject.is_some() {
        return Err(Problem::bad_request(format!("{what}: schema registry formats are not supported")));
    }
    let kind = body.kind.as_deref().unwrap_or("JSON");
    match kind {
        "BINARY" => match &body.data {
            serde_json::Value::String(text) => Ok(Data { kind: "BINARY", bytes: base64(text, what)? }),
            _ => Err(Problem::bad_request(format!("{what}: BINARY data must be a base64 string"))),
        },
        "STRING" => match body.data {
            serde_json::Value::String(text) => Ok(Data { kind: "STRING", bytes: text.into_bytes() }),
            _ => Err(Problem::bad_request(format!("{what}: STRING data must be a string"))),
        },
        "JSON" => Ok(Data { kind: "JSON", bytes: body.data.to_string().into_bytes() }),
        other => Err(Problem::bad_request(format!(
            "{what}: type '{other}' is not supported (BINARY, STRING or JSON; schema registry formats are not)"
        ))),
    }
}

/// Parses and decodes a POST body.
pub fn parse(body: &[u8]) -> Result<NewRecord, Problem> {
    let body: ProduceBody = serde_json::from_slice(body)
        .map_err(|error| Problem::bad_request(format!("the body is not a valid produce request: {error}")))?;
    if let Some(partition) = body.partition_id {
        if partition < 0 {
            return Err(Problem::bad_request(format!("partition_id {partition} is negative")));
        }
    }
    let mut headers = Vec::with_capacity(body.headers.len());
    for header in body.headers {
        let value = match &header.value {
            None => None,
            Some(text) => Some(base64(text, &format!("header '{}'", header.name))?),
        };
        headers.push((header.name, value));
    }
    let timestamp_ms = match &body.timestamp {
        None => None,
        Some(text) => Some(parse_timestamp(text)?),
    };
    Ok(NewRecord {
        partition: body.partition_id,
        key: body.key.map(|key| decode_data(key, "key")).transpose()?,
        value: body.value.map(|value| decode_data(value, "value")).transpose()?,
        headers,
        timestamp_ms,
    })
}

/// An RFC 3339 date-time (`Z` or a `±HH:MM` offset) as milliseconds since the epoch.
fn parse_timestamp(text: &str) -> Result<i64, Problem> {
    let bad = |why: String| Problem::bad_request(format!("timestamp '{text}': {why}"));
    // humantime reads UTC (`Z`); an offset is applied here.
    let (utc, offset_ms) = match text.len().checked_sub(6).map(|at| text.split_at(at)) {
        Some((rest, offset)) if !rest.is_empty() && (offset.starts_with('+') || offset.starts_with('-')) => {
            let (hours, minutes) = offset[1..].split_once(':').ok_or_else(|| bad("offset is not ±HH:MM".into()))?;
            let hours: i64 = hours.parse().map_err(|_| bad("offset hours".into()))?;
            let minutes: i64 = minutes.parse().map_err(|_| bad("offset minutes".into()))?;
            if hours > 23 || minutes > 59 {
                return Err(bad("offset out of range".into()));
            }
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            (format!("{rest}Z"), sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (text.to_string(), 0),
    };
    let time = humantime::parse_rfc3339_weak(&utc).map_err(|error| bad(error.to_string()))?;
    let since = time.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad("before 1970".into()))?;
    let local = i64::try_from(since.as_millis()).map_err(|_| bad("out of range".into()))?;
    // 12:00+02:00 is 10:00Z.
    local.checked_sub(offset_ms).filter(|ms| *ms >= 0).ok_or_else(|| bad("before 1970".into()))
}

/// A timestamp as the REST Proxy writes it: RFC 3339 with milliseconds, UTC.
pub fn rfc3339(timestamp_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(timestamp_ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_data_type_headers_partition_and_timestamp() {
        let record = parse(
            br#"{"partition_id": 2, "headers": [{"name": "h", "value": "AAE="}, {"name": "n", "value": null}],
                 "key": {"type": "STRING", "data": "order-1"}, "value": {"type": "JSON", "data": {"amount": 50}},
                 "timestamp": "2026-12-04T10:00:00.250Z"}"#,
        )
        .expect("valid");
        assert_eq!(record.partition, Some(2));
        assert_eq!(record.key, Some(Data { kind: "STRING", bytes: b"order-1".to_vec() }));
        assert_eq!(record.value, Some(Data { kind: "JSON", bytes: br#"{"amount":50}"#.to_vec() }));
        assert_eq!(record.headers, vec![("h".into(), Some(vec![0, 1])), ("n".into(), None)]);
        assert_eq!(record.timestamp_ms, Some(1_796_378_400_250));
        assert_eq!(rfc3339(1_796_378_400_250), "2026-12-04T10:00:00.250Z");
        assert_eq!(parse_timestamp("2026-12-04T12:00:00.250+02:00"), Ok(1_796_378_400_250), "an offset");
        assert_eq!(parse_timestamp("2026-12-04T09:30:00.250-00:30"), Ok(1_796_378_400_250));
        assert!(parse_timestamp("2026-12-04T12:00:00+25:00").is_err());
        let binary = parse(br#"{"value": {"type": "BINARY", "data": "/w=="}}"#).expect("valid");
        assert_eq!(binary.value, Some(Data { kind: "BINARY", bytes: vec![0xff] }));
        assert_eq!(binary.key, None);
        let untyped = parse(br#"{"value": {"data": [1, 2]}}"#).expect("valid");
        assert_eq!(untyped.value, Some(Data { kind: "JSON", bytes: b"[1,2]".to_vec() }), "no type: JSON");
    }

    #[test]
    fn refuses_what_it_cannot_store_faithfully() {
        for body in [
            &b"{"[..],
            br#"{"value": {"type": "BINARY", "data": "not base64!"}}"#,
            br#"{"value": {"type": "BINARY", "data": 5}}"#,
            br#"{"value": {"type": "STRING", "data": {"a": 1}}}"#,
            br#"{"value": {"type": "AVRO", "data": "x"}}"#,
            br#"{"value": {"schema_id": 3, "data": "x"}}"#,
            br#"{"partition_id": -1}"#,
            br#"{"timestamp": "yesterday"}"#,
            br#"{"headers": [{"name": "h", "value": "%%"}]}"#,
            br#"[]"#,
        ] {
            let problem = parse(body).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(problem.status, axum::http::StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        }
    }
}
