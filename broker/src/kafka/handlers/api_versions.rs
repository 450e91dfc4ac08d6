//! ApiVersions, versions 0–4: the APIs and version ranges this broker serves, derived from the
//! handlers' own declarations (`kafka::SUPPORTED`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::kafka::{Ctx, SUPPORTED};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

pub async fn handle(_ctx: &Ctx, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The v0 answer to an ApiVersions request of a version we do not serve.
pub fn unsupported_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys())
}

fn api_keys() -> Vec<ApiVersion> {
    let mut keys: Vec<ApiVersion> = SUPPORTED
        .iter()
        .map(|(api, _, advertised)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(advertised.min)
                .with_max_version(advertised.max)
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    keys
}
