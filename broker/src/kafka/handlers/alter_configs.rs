//! AlterConfigs, versions 0–2: Kafka's original, non-incremental config API. The configs a
//! request names become a topic's whole set of overrides: every override it does not name is
//! removed. That replacement is computed by the active controller against its own image
//! (`replace`), never from this broker's copy, which may be behind a change just committed
//! elsewhere. The preliminary checks are IncrementalAlterConfigs' (`incremental_alter_configs`),
//! with Kafka's legacy differences: every null value is refused and BROKER_LOGGER is an
//! unknown resource type.

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::VersionRange;

use crate::cluster::rpc::{ConfigChange, ConfigOp};
use crate::kafka::handlers::incremental_alter_configs::{
    check_resource, duplicate_resources, each_resource_once, refuse_duplicate_keys,
    refuse_null_values, response_error, submit, Refusal,
};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 2 };

pub async fn handle(ctx: &Ctx, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let duplicates = duplicate_resources(
        request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.as_str())),
    );
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in &request.resources {
        let key = (resource.resource_type, resource.resource_name.to_string());
        let outcome = if duplicates.contains(&key) {
            Err(each_resource_once())
        } else {
            replace(ctx, resource, request.validate_only).await
        };
        let (code, message) = response_error(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone())
                .with_error_code(code)
                .with_error_message(message),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

async fn replace(
    ctx: &Ctx,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    refuse_duplicate_keys(resource.configs.iter().map(|c| c.name.as_str()))?;
    refuse_null_values(
        resource
            .configs
            .iter()
            .filter(|c| c.value.is_none())
            .map(|c| c.name.as_str()),
    )?;
    let name = resource.resource_name.as_str();
    check_resource(resource.resource_type, name, true)?;
    let changes = resource
        .configs
        .iter()
        .map(|c| ConfigChange {
            name: c.name.to_string(),
            op: ConfigOp::Set,
            value: c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
        })
        .collect();
    if resource.resource_type == super::incremental_alter_configs::RESOURCE_BROKER {
        let broker = super::incremental_alter_configs::broker_id(name)?;
        return super::incremental_alter_configs::submit_broker(
            ctx,
            broker,
            changes,
            true,
            validate_only,
        )
        .await;
    }
    submit(ctx, name, changes, true, validate_only).await
}
