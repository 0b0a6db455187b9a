//! Encoding a response body behind the response header its request version calls for.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ProduceResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// A response (or, for Once's own clients, a request) that could not be encoded: a bug in a handler
/// (the server logs it and closes the connection) or in the client.
#[derive(Debug, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(String);

impl EncodeError {
    pub(crate) fn new(reason: String) -> EncodeError {
        EncodeError(reason)
    }
}

/// Encodes `[size][header][body]` ready for the socket.
pub fn encode_response(api_version: i16, correlation_id: i32, body: &ResponseKind) -> Result<BytesMut, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    if let ResponseKind::Produce(produce) = body {
        if (0..3).contains(&api_version) {
            buf.put_i32(correlation_id); // response header v0
            encode_legacy_produce(produce, api_version, &mut buf)?;
            return finish_frame(buf, "response");
        }
    }
    let header_version = body.header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, header_version).map_err(|error| EncodeError(error.to_string()))?;
    body.encode(&mut buf, api_version).map_err(|error| EncodeError(error.to_string()))?;
    finish_frame(buf, "response")
}

/// Fills in the size prefix of a frame begun with four zero bytes; `what` names the frame in the error.
pub(crate) fn finish_frame(mut buf: BytesMut, what: &str) -> Result<BytesMut, EncodeError> {
    debug_assert!(buf.len() >= 4, "a frame begins with its size prefix");
    let size = i32::try_from(buf.len() - 4).map_err(|_| EncodeError(format!("{what} exceeds 2 GiB")))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

/// A Produce v0–v2 response body, the one codec written by hand here: `kafka-protocol` starts at v3
/// (Kafka 4.0 dropped v0–v2 from its schema) while Once must still answer the v0–v2 requests it
/// advertises, with UNSUPPORTED_VERSION, in the layout the client reads. v0: `[topic name,
/// [partition index, error code, base offset]]`; v1 appends the throttle time; v2 adds the log append
/// time after the base offset (v2 is v3's layout).
fn encode_legacy_produce(produce: &ProduceResponse, api_version: i16, buf: &mut BytesMut) -> Result<(), EncodeError> {
    let count = |len: usize, what: &str| i32::try_from(len).map_err(|_| EncodeError(format!("{len} {what}")));
    buf.put_i32(count(produce.responses.len(), "topics")?);
    for topic in &produce.responses {
        let name = topic.name.0.as_bytes();
        let name_len =
            i16::try_from(name.len()).map_err(|_| EncodeError(format!("topic name of {} bytes", name.len())))?;
        buf.put_i16(name_len);
        buf.put_slice(name);
        buf.put_i32(count(topic.partition_responses.len(), "partitions")?);
        for partition in &topic.partition_responses {
            buf.put_i32(partition.index);
            buf.put_i16(partition.error_code);
            buf.put_i64(partition.base_offset);
            if api_version >= 2 {
                buf.put_i64(partition.log_append_time_ms);
            }
        }
    }
    if api_version >= 1 {
        buf.put_i32(produce.throttle_time_ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn unsupported() -> ResponseKind {
        let partition = |index| {
            PartitionProduceResponse::default()
                .with_index(index)
                .with_error_code(35)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
        };
        let topic = TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_responses(vec![partition(0), partition(3)]);
        ResponseKind::Produce(ProduceResponse::default().with_responses(vec![topic]))
    }

    fn expected(correlation_id: i32, api_version: i16) -> Vec<u8> {
        let mut body = correlation_id.to_be_bytes().to_vec();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(b"t");
        body.extend_from_slice(&2i32.to_be_bytes());
        for index in [0i32, 3] {
            body.extend_from_slice(&index.to_be_bytes());
            body.extend_from_slice(&35i16.to_be_bytes());
            body.extend_from_slice(&(-1i64).to_be_bytes());
            if api_version >= 2 {
                body.extend_from_slice(&(-1i64).to_be_bytes());
            }
        }
        if api_version >= 1 {
            body.extend_from_slice(&0i32.to_be_bytes());
        }
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        framed
    }

    #[test]
    fn produce_v0_and_v1_responses_are_laid_out_by_hand() {
        for api_version in [0, 1] {
            let encoded = encode_response(api_version, 9, &unsupported()).expect("encodes");
            assert_eq!(&encoded[..], &expected(9, api_version)[..], "Produce v{api_version} response");
        }
    }

    #[test]
    fn the_hand_written_produce_v2_response_matches_the_codecs_v3() {
        let by_hand = encode_response(2, 4, &unsupported()).expect("v2 encodes");
        let by_codec = encode_response(3, 4, &unsupported()).expect("v3 encodes");
        assert_eq!(&by_hand[..], &expected(4, 2)[..], "Produce v2 response");
        assert_eq!(by_hand, by_codec, "v2 is laid out as v3");
    }
}
