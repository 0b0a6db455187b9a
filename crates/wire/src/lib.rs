//! Kafka wire framing, request decoding and the table of API versions Once speaks.
//!
//! This crate does no I/O: it turns bytes into typed requests and typed responses into bytes, on top of
//! the generated codecs of the `kafka-protocol` crate. The one hand-written codec is the Produce v0–v2
//! response (`response`), which `kafka-protocol` no longer encodes: Once answers those advertised
//! versions with UNSUPPORTED_VERSION in their own layout (Kafka 4.0 advertises and refuses them too).
//!
//! The crate's one `unsafe` is in [`parts`]: the buffer the codec writes a Fetch response into, which
//! keeps references to large record sets instead of copying them (a measured win: the broker's CPU per GB
//! read by a catch-up consumer with 50 MiB fetches −40 %, `docs/benchmarks.md`, session 21).
//!
//! # Layout
//! - [`consumer_protocol`] — the consumer protocol's subscription and assignment inside group requests.
//! - [`frame`] — the 4-byte length prefix and its bound.
//! - [`versions`] — which APIs and versions Once advertises in ApiVersions, and which it can decode.
//! - [`request`] — decoding a frame into a request header and a typed body, with typed errors for the
//!   cases Kafka answers specially (unknown key, unsupported version, malformed body).
//! - [`response`] — encoding a response with the header version its request calls for.
//! - [`parts`] — the same as parts, the large record sets of a Fetch response referenced, not copied.

#![deny(unsafe_code)]

pub mod consumer_protocol;
pub mod frame;
pub mod parts;
pub mod request;
pub mod response;
pub mod versions;

pub use kafka_protocol;
pub use kafka_protocol::error::ResponseError;
pub use parts::{copied_record_bytes, encode_response_parts, record_bytes};
pub use request::{decode_request, encode_request, DecodedRequest, RequestError};
pub use response::{encode_response, EncodeError};
