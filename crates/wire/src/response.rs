//! Encoding a response body behind the response header its request version calls for.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// A response that could not be encoded: a bug in a handler (the server logs it and closes the connection).
#[derive(Debug, thiserror::Error)]
#[error("response encoding failed: {0}")]
pub struct EncodeError(String);

/// Encodes `[size][header][body]` ready for the socket.
pub fn encode_response(api_version: i16, correlation_id: i32, body: &ResponseKind) -> Result<BytesMut, EncodeError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let header_version = body.header_version(api_version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, header_version).map_err(|error| EncodeError(error.to_string()))?;
    body.encode(&mut buf, api_version).map_err(|error| EncodeError(error.to_string()))?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| EncodeError("response exceeds 2 GiB".into()))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}
