//! Decoding one request frame into a header and a typed body; and, for Once's own clients and tests,
//! encoding one.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::response::{finish_frame, EncodeError};
use crate::versions;

/// Encodes `[size][header][body]` of `request` at `version`, as a client sends it: the header in the
/// layout the API and version call for.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<StrBytes>,
) -> Result<BytesMut, EncodeError> {
    let api_key = ApiKey::try_from(R::KEY).map_err(|_| EncodeError::new(format!("unknown API key {}", R::KEY)))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id);
    let mut frame = BytesMut::with_capacity(128);
    frame.put_i32(0);
    let encoded = header.encode(&mut frame, api_key.request_header_version(version));
    encoded.and_then(|()| request.encode(&mut frame, version)).map_err(|error| EncodeError::new(error.to_string()))?;
    finish_frame(frame, "request")
}

/// A request Once can answer.
#[derive(Debug)]
pub struct DecodedRequest {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// Why a frame could not be turned into a request. Each case tells the server what Kafka does next.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Fewer than the 8 bytes every request header starts with; nothing can be answered.
    #[error("request of {length} bytes is too short for a header")]
    TooShort { length: usize },
    /// Kafka closes the connection: there is no response format for an unknown key.
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    /// ApiVersions at a version Once does not speak: answered in the v0 format with UNSUPPORTED_VERSION
    /// and the supported ranges (KIP-511), and the connection stays open.
    #[error("ApiVersions v{api_version} is not supported")]
    ApiVersionsUnsupported { api_version: i16, correlation_id: i32 },
    /// Produce v0–v2, advertised for librdkafka's sake but not served: Kafka 4 answers every partition
    /// with UNSUPPORTED_VERSION and keeps the connection. The request is decoded (v0–v2 bodies are v3's
    /// without the transactional id) so the answer can name the partitions; the answer is encoded in
    /// the request's own layout ([`crate::encode_response`] writes v0 and v1 by hand).
    #[error("Produce v{api_version} is advertised but not served (correlation id {correlation_id})")]
    LegacyProduce { request: Box<kafka_protocol::messages::ProduceRequest>, api_version: i16, correlation_id: i32 },
    /// Any other API at a version Once does not serve: Kafka closes the connection.
    #[error("{api_key:?} v{api_version} is not supported (correlation id {correlation_id})")]
    UnsupportedVersion { api_key: ApiKey, api_version: i16, correlation_id: i32 },
    /// The header or body does not decode at its declared version: the connection is closed.
    #[error("malformed {api_key:?} v{api_version} request (correlation id {correlation_id}): {reason}")]
    Malformed { api_key: ApiKey, api_version: i16, correlation_id: i32, reason: String },
}

impl RequestError {
    /// The correlation id, when the frame was long enough to carry one.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            RequestError::TooShort { .. } => None,
            RequestError::UnknownApiKey { correlation_id, .. }
            | RequestError::ApiVersionsUnsupported { correlation_id, .. }
            | RequestError::LegacyProduce { correlation_id, .. }
            | RequestError::UnsupportedVersion { correlation_id, .. }
            | RequestError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// Decodes a whole request frame (without its length prefix).
pub fn decode_request(mut frame: Bytes) -> Result<DecodedRequest, RequestError> {
    if frame.len() < 8 {
        return Err(RequestError::TooShort { length: frame.len() });
    }
    let mut prefix = &frame[..8];
    let raw_api_key = prefix.get_i16();
    let api_version = prefix.get_i16();
    let correlation_id = prefix.get_i32();
    let Ok(api_key) = ApiKey::try_from(raw_api_key) else {
        return Err(RequestError::UnknownApiKey { api_key: raw_api_key, correlation_id });
    };
    if !versions::is_served(api_key, api_version) {
        if api_key == ApiKey::ApiVersions {
            return Err(RequestError::ApiVersionsUnsupported { api_version, correlation_id });
        }
        if api_key == ApiKey::Produce && LEGACY_PRODUCE_VERSIONS.contains(&api_version) {
            return Err(decode_legacy_produce(frame, api_version, correlation_id));
        }
        return Err(RequestError::UnsupportedVersion { api_key, api_version, correlation_id });
    }
    let malformed = |reason: String| RequestError::Malformed { api_key, api_version, correlation_id, reason };
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|error| malformed(error.to_string()))?;
    let body = RequestKind::decode(api_key, &mut frame, api_version).map_err(|error| malformed(error.to_string()))?;
    Ok(DecodedRequest { api_key, api_version, header, body })
}

/// The legacy Produce versions answered with an error rather than a closed connection: every version
/// below the v3 Once serves (Kafka 4.0's floor, KIP-896).
pub const LEGACY_PRODUCE_VERSIONS: std::ops::RangeInclusive<i16> = 0..=2;

fn decode_legacy_produce(mut frame: Bytes, api_version: i16, correlation_id: i32) -> RequestError {
    let api_key = ApiKey::Produce;
    let malformed = |reason: String| RequestError::Malformed { api_key, api_version, correlation_id, reason };
    // v0–v2 use request header v1, as v3 does.
    if let Err(error) = RequestHeader::decode(&mut frame, api_key.request_header_version(3)) {
        return malformed(error.to_string());
    }
    // v0-v2 bodies are v3's without the leading nullable transactional id: prepend a null one.
    let mut body = bytes::BytesMut::with_capacity(frame.len() + 2);
    body.extend_from_slice(&(-1i16).to_be_bytes());
    body.extend_from_slice(&frame);
    match kafka_protocol::messages::ProduceRequest::decode(&mut body.freeze(), 3) {
        Ok(request) => RequestError::LegacyProduce { request: Box::new(request), api_version, correlation_id },
        Err(error) => malformed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    /// A request's frame without its size prefix, as the server hands it to `decode_request`.
    fn frame_of<T: Request>(api_key: ApiKey, version: i16, body: &T) -> Bytes {
        assert_eq!(api_key as i16, T::KEY, "the body is of the API named");
        let mut frame = encode_request(body, version, 7, Some(StrBytes::from_static_str("test"))).expect("encodes");
        let size = frame.get_i32();
        assert_eq!(usize::try_from(size), Ok(frame.len()), "the size prefix counts the rest");
        frame.freeze()
    }

    #[test]
    fn decodes_a_metadata_request() {
        let frame = frame_of(ApiKey::Metadata, 9, &MetadataRequest::default());
        let request = decode_request(frame).expect("decodes");
        assert_eq!(request.api_key, ApiKey::Metadata);
        assert_eq!(request.header.correlation_id, 7);
        assert!(matches!(request.body, RequestKind::Metadata(_)));
    }

    #[test]
    fn api_versions_above_range_gets_fallback() {
        let frame = frame_of(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut raw = BytesMut::from(&frame[..]);
        raw[2..4].copy_from_slice(&99i16.to_be_bytes());
        let error = decode_request(raw.freeze()).expect_err("v99 is unsupported");
        assert!(matches!(error, RequestError::ApiVersionsUnsupported { api_version: 99, correlation_id: 7 }));
    }

    #[test]
    fn produce_v0_to_v2_decode_as_legacy_produce() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, TopicName};
        let request = ProduceRequest::default().with_acks(1).with_timeout_ms(100).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default().with_index(2).with_records(None)]),
        ]);
        let v3 = frame_of(ApiKey::Produce, 3, &request);
        for version in 0..=2i16 {
            // The same header, then v3's body without its 2-byte null transactional id.
            let header_length = 8 + 2 + 4;
            let mut raw = BytesMut::from(&v3[..header_length]);
            raw[2..4].copy_from_slice(&version.to_be_bytes());
            raw.extend_from_slice(&v3[header_length + 2..]);
            match decode_request(raw.freeze()) {
                Err(RequestError::LegacyProduce { request, api_version, correlation_id: 7 }) => {
                    assert_eq!(api_version, version);
                    assert_eq!(request.topic_data[0].partition_data[0].index, 2, "v{version} names its partition");
                }
                other => panic!("Produce v{version} must be a legacy produce, not {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_key_and_short_frames() {
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 9, 0, 0]);
        assert!(matches!(decode_request(frame), Err(RequestError::UnknownApiKey { correlation_id: 9, .. })));
        assert!(matches!(decode_request(Bytes::from_static(&[0, 3])), Err(RequestError::TooShort { .. })));
    }

    #[test]
    fn truncated_body_is_malformed() {
        let mut request = MetadataRequest::default();
        request.topics = None;
        request.allow_auto_topic_creation = true;
        let frame = frame_of(ApiKey::Metadata, 12, &request);
        for cut in 8..frame.len() {
            assert!(decode_request(frame.slice(..cut)).is_err(), "cut at {cut} must not decode");
        }
    }
}
