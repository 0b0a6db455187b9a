//! ApiVersions; translation only: the wire crate's table of supported versions as the Kafka response.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};
use once_wire::versions::SUPPORTED_APIS;
use once_wire::ResponseError;

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|entry| {
            ApiVersion::default()
                .with_api_key(entry.api_key as i16)
                .with_min_version(entry.advertised.min)
                .with_max_version(entry.advertised.max)
        })
        .collect()
}

pub fn handle(_request: &ApiVersionsRequest, _version: i16) -> ResponseKind {
    ResponseKind::ApiVersions(ApiVersionsResponse::default().with_api_keys(api_keys()))
}

/// The KIP-511 answer to an ApiVersions version Once does not know: UNSUPPORTED_VERSION and the ranges,
/// encoded as v0 so that any client can read it and retry with a version it shares with Once.
pub fn unsupported_version_response() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(api_keys()),
    )
}
