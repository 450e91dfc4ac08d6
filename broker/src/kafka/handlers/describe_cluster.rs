//! DescribeCluster, versions 0–2: this broker, the cluster id, and this broker as controller.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// DescribeCluster endpoint types (v1+).
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub async fn handle(ctx: &Ctx, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let config = &ctx.shard.config;
    let endpoint_type = if ctx.version() >= 1 {
        request.endpoint_type
    } else {
        ENDPOINT_TYPE_BROKERS
    };
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(endpoint_type)
        .with_cluster_id(StrBytes::from_string(ctx.shard.cluster_id.clone()))
        .with_controller_id(BrokerId(config.node_id));
    if ctx.version() >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "Only brokers endpoints are served.",
            )));
    }
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(config.node_id))
        .with_host(StrBytes::from_string(config.advertised_host.clone()))
        .with_port(i32::from(config.advertised_port));
    response.with_brokers(vec![broker])
}
