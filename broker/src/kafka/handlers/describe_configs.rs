//! DescribeConfigs, versions 1–4: topic configs (override, else the broker synonym's dynamic,
//! static or default value) and broker configs (dynamic for this broker, dynamic cluster
//! default, static, default; an empty broker name: the cluster default's dynamic values only),
//! with sources, synonyms and, when asked, documentation.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::config::{ConfigSource, SETTINGS};
use crate::dynamic_config::{DynamicConfigs, SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER};
use crate::kafka::Ctx;
use crate::topic_config::{self, SOURCE_DEFAULT, SOURCE_STATIC_BROKER, TYPE_STRING};

pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 4 };

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

pub async fn handle(ctx: &Ctx, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted = |name: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
            };
            match r.resource_type {
                RESOURCE_TOPIC => match ctx.shard.topics.borrow().get(r.resource_name.as_str()) {
                    None => base
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "Topic {} does not exist.",
                            r.resource_name.as_str()
                        )))),
                    Some(meta) => base.with_configs(
                        topic_config::TOPIC_CONFIGS
                            .iter()
                            .filter(|s| wanted(s.name))
                            .map(|spec| {
                                let dynamic = ctx.shard.dynamic.borrow();
                                let (value, source) = topic_config::resolve(
                                    spec,
                                    &meta.configs,
                                    &ctx.shard.config,
                                    &dynamic,
                                );
                                let mut synonyms = Vec::new();
                                if request.include_synonyms {
                                    synonyms.push(synonym(spec.name, &value, source));
                                    if let Some(broker_name) = spec.synonym {
                                        synonyms.extend(broker_synonyms(
                                            ctx,
                                            &dynamic,
                                            broker_name,
                                        ));
                                    }
                                }
                                let doc = if spec.enforced {
                                    ""
                                } else {
                                    "Accepted for compatibility; Spool does not enforce it yet."
                                };
                                entry(
                                    spec.name,
                                    value,
                                    source,
                                    spec.config_type,
                                    synonyms,
                                    request.include_documentation.then_some(doc),
                                    ctx.version(),
                                )
                            })
                            .collect(),
                    ),
                },
                RESOURCE_BROKER if r.resource_name.is_empty() => {
                    // The cluster-wide default: only what is set there (Kafka's answer).
                    let dynamic = ctx.shard.dynamic.borrow();
                    base.with_configs(
                        dynamic
                            .default
                            .iter()
                            .filter(|(name, _)| wanted(name))
                            .map(|(name, value)| {
                                let synonyms = if request.include_synonyms {
                                    vec![synonym(name, value, SOURCE_DYNAMIC_DEFAULT_BROKER)]
                                } else {
                                    Vec::new()
                                };
                                entry(
                                    name,
                                    value.clone(),
                                    SOURCE_DYNAMIC_DEFAULT_BROKER,
                                    TYPE_STRING,
                                    synonyms,
                                    request.include_documentation.then_some(""),
                                    ctx.version(),
                                )
                            })
                            .collect(),
                    )
                }
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if name != ctx.shard.config.node_id.to_string() {
                        return base
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Unexpected broker id, expected {} but received {name}",
                                ctx.shard.config.node_id
                            ))));
                    }
                    let dynamic = ctx.shard.dynamic.borrow();
                    let ignored = crate::dynamic_config::DYNAMIC_IGNORED
                        .iter()
                        .filter(|(name, _)| dynamic.get(name).is_some())
                        .map(|(name, reason)| (*name, "", *reason));
                    let settings = SETTINGS
                        .iter()
                        .map(|s| (s.name, s.default, s.doc))
                        .chain(ignored);
                    base.with_configs(
                        settings
                            .filter(|(name, _, _)| wanted(name))
                            .map(|(name, default, doc)| {
                                let synonyms = broker_synonyms(ctx, &dynamic, name);
                                let (value, source) = synonyms
                                    .first()
                                    .map(|s| (s.value.clone().map(|v| v.to_string()), s.source))
                                    .unwrap_or((Some(default.to_string()), SOURCE_DEFAULT));
                                let value = value.unwrap_or_default();
                                let synonyms = if request.include_synonyms {
                                    synonyms
                                } else {
                                    Vec::new()
                                };
                                entry(
                                    name,
                                    value,
                                    source,
                                    TYPE_STRING,
                                    synonyms,
                                    request.include_documentation.then_some(doc),
                                    ctx.version(),
                                )
                            })
                            .collect(),
                    )
                }
                _ => base
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Unsupported resource type.",
                    ))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// A broker setting's values in Kafka's order of precedence, each with its source: this
/// broker's dynamic value, the cluster default's, the static config, the built-in default.
/// The first is the effective one.
fn broker_synonyms(ctx: &Ctx, dynamic: &DynamicConfigs, name: &str) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    if let Some(v) = dynamic.broker.get(name) {
        out.push(synonym(name, v, SOURCE_DYNAMIC_BROKER));
    }
    if let Some(v) = dynamic.default.get(name) {
        out.push(synonym(name, v, SOURCE_DYNAMIC_DEFAULT_BROKER));
    }
    if let Some((v, ConfigSource::Static)) = ctx.shard.config.values.get(name) {
        out.push(synonym(name, v, SOURCE_STATIC_BROKER));
    }
    if let Some(spec) = SETTINGS.iter().find(|s| s.name == name) {
        out.push(synonym(name, spec.default, SOURCE_DEFAULT));
    }
    out
}

fn synonym(name: &str, value: &str, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value.to_string())))
        .with_source(source)
}

fn entry(
    name: &str,
    value: String,
    source: i8,
    config_type: i8,
    synonyms: Vec<DescribeConfigsSynonym>,
    documentation: Option<&str>,
    version: i16,
) -> DescribeConfigsResourceResult {
    let (config_type, documentation) = if version >= 3 {
        (config_type, documentation)
    } else {
        (0, None)
    };
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(name.to_string()))
        .with_value(Some(StrBytes::from_string(value)))
        .with_read_only(false)
        .with_config_source(source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(config_type)
        .with_documentation(documentation.map(|d| StrBytes::from_string(d.to_string())))
}
