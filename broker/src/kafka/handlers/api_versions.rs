//! ApiVersions, versions 0–4: the APIs and version ranges this broker serves, derived from the
//! handlers' own declarations (`kafka::SUPPORTED`).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::{Ctx, SUPPORTED};

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 4 };

/// The finalized features' epoch (Kafka's is the metadata offset of the last feature change).
/// Clients re-read the features only when it grows past what they saw (from -1), and Spool's
/// features never change, so one positive constant serves every broker alike.
const FINALIZED_FEATURES_EPOCH: i64 = 1;

pub async fn handle(ctx: &Ctx, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    let level = crate::txn::coordinator::CLUSTER_TRANSACTION_VERSION;
    let mut response = ApiVersionsResponse::default()
        .with_api_keys(api_keys())
        .with_finalized_features_epoch(FINALIZED_FEATURES_EPOCH)
        .with_finalized_features(vec![FinalizedFeatureKey::default()
            .with_name(StrBytes::from_static_str("transaction.version"))
            .with_min_version_level(level)
            .with_max_version_level(level)]);
    // KIP-890's `transaction.version` (transactions version 2 from Produce v12, EndTxn v5 and
    // TxnOffsetCommit v5). v3 leaves out supported features whose minimum is 0, as Kafka's
    // v3 answers do (v4 fixed that).
    if ctx.version() >= 4 {
        response = response.with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(StrBytes::from_static_str("transaction.version"))
            .with_min_version(0)
            .with_max_version(2)]);
    }
    response
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
