//! DescribeConfigs, versions 1–4: topic configs (override, else broker synonym, else default)
//! and broker configs, with sources, synonyms and, when asked, documentation.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::config::{ConfigSource, SETTINGS};
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
                                let (value, source) =
                                    topic_config::resolve(spec, &meta.configs, &ctx.shard.config);
                                let mut synonyms = Vec::new();
                                if request.include_synonyms {
                                    synonyms.push(synonym(spec.name, &value, source));
                                    if let Some(broker_name) = spec.synonym {
                                        if let Some((v, s)) =
                                            ctx.shard.config.values.get(broker_name)
                                        {
                                            synonyms.push(synonym(
                                                broker_name,
                                                v,
                                                broker_source(*s),
                                            ));
                                        }
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
                RESOURCE_BROKER => {
                    let name = r.resource_name.as_str();
                    if !name.is_empty() && name != ctx.shard.config.node_id.to_string() {
                        return base
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Unexpected broker id, expected {} but received {name}",
                                ctx.shard.config.node_id
                            ))));
                    }
                    base.with_configs(
                        SETTINGS
                            .iter()
                            .filter(|s| wanted(s.name))
                            .map(|s| {
                                let (value, source) = ctx
                                    .shard
                                    .config
                                    .values
                                    .get(s.name)
                                    .cloned()
                                    .unwrap_or((s.default.to_string(), ConfigSource::Default));
                                let source = broker_source(source);
                                let synonyms = if request.include_synonyms {
                                    vec![synonym(s.name, &value, source)]
                                } else {
                                    Vec::new()
                                };
                                entry(
                                    s.name,
                                    value,
                                    source,
                                    TYPE_STRING,
                                    synonyms,
                                    request.include_documentation.then_some(s.doc),
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

fn broker_source(source: ConfigSource) -> i8 {
    match source {
        ConfigSource::Default => SOURCE_DEFAULT,
        ConfigSource::Static => SOURCE_STATIC_BROKER,
    }
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
