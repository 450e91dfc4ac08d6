//! DescribeCluster, versions 0–2: the brokers (fenced ones too when v2 asks), the cluster id,
//! and as controller the metadata quorum's leader when it is a live broker (combined nodes),
//! else this broker, which forwards controller requests to it (Kafka's brokers name a random
//! live broker for the same reason). Only the brokers endpoint type is served: controllers
//! have no Kafka listener.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

/// DescribeCluster endpoint types (v1+).
const ENDPOINT_TYPE_BROKERS: i8 = 1;
const ENDPOINT_TYPE_CONTROLLERS: i8 = 2;

pub async fn handle(ctx: &Ctx, request: DescribeClusterRequest) -> DescribeClusterResponse {
    let version = ctx.version();
    let view = ctx.shard.view.borrow().clone();
    let endpoint_type = if version >= 1 {
        request.endpoint_type
    } else {
        ENDPOINT_TYPE_BROKERS
    };
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_TYPE_BROKERS)
        .with_cluster_id(StrBytes::from_string(view.cluster_id.clone()));
    if endpoint_type != ENDPOINT_TYPE_BROKERS {
        let (code, message) = if endpoint_type == ENDPOINT_TYPE_CONTROLLERS {
            (
                ResponseError::MismatchedEndpointType,
                "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".to_string(),
            )
        } else {
            (
                ResponseError::UnsupportedEndpointType,
                format!("Unsupported endpoint type {endpoint_type}"),
            )
        };
        return response
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message)));
    }
    let include_fenced = version >= 2 && request.include_fenced_brokers;
    let brokers: Vec<DescribeClusterBroker> = view
        .brokers
        .iter()
        .filter(|b| include_fenced || !b.fenced)
        .map(|b| {
            let broker = DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string));
            if version >= 2 {
                broker.with_is_fenced(b.fenced)
            } else {
                broker
            }
        })
        .collect();
    let controller = view
        .controller
        .filter(|c| view.live().any(|b| b.id == *c))
        .unwrap_or(ctx.shard.config.node_id);
    response
        .with_controller_id(BrokerId(controller))
        .with_brokers(brokers)
}
