//! IncrementalAlterConfigs, versions 0–1: SET, DELETE, APPEND and SUBTRACT of topic configs
//! and of dynamic broker configs (`dynamic_config.rs`: one broker's, or with an empty name the
//! cluster-wide default).
//!
//! As in Kafka, the work is split in two. This broker first refuses what never reaches the
//! controller (Kafka's `ConfigAdminManager.preprocess`): a resource named twice, a config named
//! twice in one resource, a null value for anything but DELETE, an unknown operation, a
//! resource type whose configs Spool cannot change. Each remaining topic goes to the active
//! controller (through shard 0), which applies the operations to its own image, validates the
//! resulting set and proposes the change (`cluster::controller::plan`); the answer comes once
//! this broker has applied it, so its DescribeConfigs already shows the new value.
//!
//! The helpers here are shared with AlterConfigs (`alter_configs.rs`), Kafka's older API.

use std::collections::HashSet;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::cluster::rpc::{ConfigChange, ConfigOp};
use crate::kafka::Ctx;
use crate::metadata::topic_name_valid;
use crate::shard::mesh::AdminRequest;

pub const VERSIONS: VersionRange = VersionRange { min: 0, max: 1 };

/// Kafka's `ConfigResource.Type` codes.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
pub const RESOURCE_CLIENT_METRICS: i8 = 16;
pub const RESOURCE_GROUP: i8 = 32;

/// Why one resource of the request is refused: its Kafka error and message.
pub type Refusal = (ResponseError, String);

pub async fn handle(
    ctx: &Ctx,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
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
            alter(ctx, resource, request.validate_only).await
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
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

async fn alter(
    ctx: &Ctx,
    resource: &kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), Refusal> {
    refuse_duplicate_keys(resource.configs.iter().map(|c| c.name.as_str()))?;
    refuse_null_values(
        resource
            .configs
            .iter()
            .filter(|c| {
                ConfigOp::from_code(c.config_operation) != Some(ConfigOp::Delete)
                    && c.value.is_none()
            })
            .map(|c| c.name.as_str()),
    )?;
    let name = resource.resource_name.as_str();
    check_resource(resource.resource_type, name, false)?;
    let mut changes = Vec::with_capacity(resource.configs.len());
    for config in &resource.configs {
        // Kafka has no answer of its own for an unknown operation on a topic (its controller
        // fails on it); this is the refusal its broker gives for one on a broker resource.
        let op = ConfigOp::from_code(config.config_operation).ok_or_else(|| {
            (
                ResponseError::InvalidRequest,
                format!("Unknown operations type {}", config.config_operation),
            )
        })?;
        changes.push(ConfigChange {
            name: config.name.to_string(),
            op,
            value: config
                .value
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        });
    }
    if resource.resource_type == RESOURCE_BROKER {
        return submit_broker(ctx, broker_id(name)?, changes, false, validate_only).await;
    }
    submit(ctx, name, changes, false, validate_only).await
}

/// The broker a BROKER resource names: its id, or -1 for the empty name (the cluster-wide
/// default, `kafka-configs --entity-default`), with Kafka's refusals of other names.
pub fn broker_id(name: &str) -> Result<i32, Refusal> {
    if name.is_empty() {
        return Ok(crate::dynamic_config::DEFAULT_BROKER);
    }
    let id: i32 = name.parse().map_err(|_| {
        (
            ResponseError::InvalidRequest,
            "Unable to parse broker name as a base 10 number.".to_string(),
        )
    })?;
    if id < 0 {
        return Err((
            ResponseError::InvalidRequest,
            "Invalid negative broker ID.".into(),
        ));
    }
    Ok(id)
}

/// The resources named more than once: Kafka refuses every copy.
pub fn duplicate_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> HashSet<(i8, String)> {
    let mut seen = HashSet::new();
    resources
        .filter(|(t, n)| !seen.insert((*t, *n)))
        .map(|(t, n)| (t, n.to_string()))
        .collect()
}

pub fn each_resource_once() -> Refusal {
    (
        ResponseError::InvalidRequest,
        "Each resource must appear at most once.".into(),
    )
}

pub fn refuse_duplicate_keys<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let mut seen = HashSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err((
                ResponseError::InvalidRequest,
                "Error due to duplicate config keys".into(),
            ));
        }
    }
    Ok(())
}

pub fn refuse_null_values<'a>(nulls: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let nulls: Vec<&str> = nulls.collect();
    if nulls.is_empty() {
        return Ok(());
    }
    // Kafka's message, spacing included.
    Err((
        ResponseError::InvalidRequest,
        format!("Null value not supported for : {}", nulls.join(", ")),
    ))
}

/// Whether configs of this resource can be changed here: topics and brokers (dynamic broker
/// configs); log levels, client-metrics and group configs are not built yet. `legacy`:
/// AlterConfigs, which never served BROKER_LOGGER (Kafka treats it as an unknown type there).
pub fn check_resource(resource_type: i8, name: &str, legacy: bool) -> Result<(), Refusal> {
    let not_yet = |what: &str| {
        Err((
            ResponseError::InvalidRequest,
            format!("{what} cannot be altered in Spool yet"),
        ))
    };
    match resource_type {
        RESOURCE_TOPIC if name.is_empty() => Err((
            ResponseError::InvalidRequest,
            "Default topic resources are not allowed.".into(),
        )),
        RESOURCE_TOPIC if !topic_name_valid(name) => Err((
            ResponseError::InvalidTopicException,
            format!("Topic name \"{name}\" is illegal."),
        )),
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => broker_id(name).map(|_| ()),
        RESOURCE_BROKER_LOGGER if !legacy => not_yet("Broker logger levels"),
        RESOURCE_CLIENT_METRICS => not_yet("Client metrics configs"),
        RESOURCE_GROUP => not_yet("Group configs"),
        other => Err((
            ResponseError::InvalidRequest,
            format!("Unknown resource type {other}"),
        )),
    }
}

/// Sends one topic's changes to the active controller and waits for them to apply here.
pub async fn submit(
    ctx: &Ctx,
    name: &str,
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refusal> {
    submit_admin(
        ctx,
        AdminRequest::AlterTopicConfigs {
            name: name.to_string(),
            changes,
            replace,
            validate_only,
        },
    )
    .await
}

/// Sends a broker resource's changes (`broker` -1: the cluster default) to the active
/// controller and waits for them to apply here.
pub async fn submit_broker(
    ctx: &Ctx,
    broker: i32,
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> Result<(), Refusal> {
    submit_admin(
        ctx,
        AdminRequest::AlterBrokerConfigs {
            broker,
            changes,
            replace,
            validate_only,
        },
    )
    .await
}

/// One config change through the controller; its error as a refusal.
async fn submit_admin(ctx: &Ctx, request: AdminRequest) -> Result<(), Refusal> {
    let (code, message, _) = ctx.shard.admin_call(request).await;
    if code == 0 {
        return Ok(());
    }
    let e = ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError);
    Err((e, message.unwrap_or_default()))
}

/// A resource's error code and message (none on success, as Kafka's `ApiError.NONE`).
pub fn response_error(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((e, message)) => (e.code(), Some(StrBytes::from_string(message))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_keys() {
        let dups =
            duplicate_resources([(2, "a"), (2, "b"), (4, "a"), (2, "a"), (2, "a")].into_iter());
        assert_eq!(dups, HashSet::from([(2, "a".to_string())]));
        assert!(refuse_duplicate_keys(["x", "y"].into_iter()).is_ok());
        assert_eq!(
            refuse_duplicate_keys(["x", "y", "x"].into_iter())
                .expect_err("dup")
                .0,
            ResponseError::InvalidRequest
        );
        assert_eq!(
            refuse_null_values(["a", "b"].into_iter())
                .expect_err("null")
                .1,
            "Null value not supported for : a, b"
        );
        let cases = [
            (RESOURCE_TOPIC, "t", false, None),
            (
                RESOURCE_TOPIC,
                "",
                false,
                Some(ResponseError::InvalidRequest),
            ),
            (
                RESOURCE_TOPIC,
                "bad name",
                false,
                Some(ResponseError::InvalidTopicException),
            ),
            (RESOURCE_BROKER, "1", false, None),
            (
                RESOURCE_BROKER,
                "-3",
                false,
                Some(ResponseError::InvalidRequest),
            ),
            (
                RESOURCE_BROKER_LOGGER,
                "1",
                false,
                Some(ResponseError::InvalidRequest),
            ),
            (
                RESOURCE_BROKER_LOGGER,
                "1",
                true,
                Some(ResponseError::InvalidRequest),
            ),
            (0, "x", false, Some(ResponseError::InvalidRequest)),
        ];
        for (t, name, legacy, want) in cases {
            assert_eq!(
                check_resource(t, name, legacy).err().map(|r| r.0),
                want,
                "{t} {name}"
            );
        }
        assert!(check_resource(RESOURCE_BROKER, "1", false).is_ok());
        assert!(check_resource(RESOURCE_BROKER, "", false).is_ok());
        assert_eq!(broker_id(""), Ok(-1));
        assert_eq!(broker_id("3"), Ok(3));
        assert_eq!(
            broker_id("x").expect_err("name").1,
            "Unable to parse broker name as a base 10 number."
        );
        assert_eq!(
            broker_id("-1").expect_err("negative").1,
            "Invalid negative broker ID."
        );
        assert_eq!(
            check_resource(RESOURCE_BROKER_LOGGER, "1", true)
                .expect_err("legacy logger")
                .1,
            "Unknown resource type 8"
        );
    }
}
