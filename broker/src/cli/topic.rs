//! `spool topic create|list|describe|delete`: topic administration over the Kafka protocol.
//!
//! Output follows `kafka-topics.sh` so scripts and eyes used to Kafka read it unchanged:
//! `Created topic NAME.`, one name per line for `list`, and the `Topic: ... PartitionCount: ...`
//! layout for `describe`.

use std::io::Write;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest};

use super::client::{str_bytes, topic_name, Client};
use super::error::{error_name, CliError};
use super::{parse_key_value, TopicCommand};

/// How long the broker may take to create or delete topics before answering REQUEST_TIMED_OUT.
const ADMIN_TIMEOUT_MS: i32 = 30_000;
/// DescribeConfigs resource type of a topic (Kafka's `ConfigResource.Type.TOPIC`).
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// Config source of a per-topic override (Kafka's `DYNAMIC_TOPIC_CONFIG`).
const CONFIG_SOURCE_TOPIC: i8 = 1;

pub fn run(
    client: &mut Client,
    command: TopicCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            config,
        } => create(client, &name, partitions, replication_factor, &config, out),
        TopicCommand::List => list(client, out),
        TopicCommand::Describe { name } => describe(client, &name, out),
        TopicCommand::Delete { name } => delete(client, &name, out),
    }
}

fn create(
    client: &mut Client,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut creatable = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor);
    for pair in configs {
        let (k, v) = parse_key_value("--config", pair)?;
        creatable.configs.push(
            CreatableTopicConfig::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v))),
        );
    }
    let req = CreateTopicsRequest::default()
        .with_topics(vec![creatable])
        .with_timeout_ms(ADMIN_TIMEOUT_MS);
    let (resp, _) = client.bootstrap().send(&req)?;
    let result = resp.topics.iter().find(|t| t.name.as_str() == name);
    let Some(result) = result else {
        return Err(CliError::kafka(
            format!("CreateTopics {name}"),
            -1,
            Some("topic missing from the response"),
        ));
    };
    if result.error_code != 0 {
        return Err(CliError::kafka(
            format!("cannot create topic {name}"),
            result.error_code,
            result.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    writeln!(out, "Created topic {name}.").map_err(stdout_err)
}

fn list(client: &mut Client, out: &mut dyn Write) -> Result<(), CliError> {
    let resp = client.metadata(None)?;
    let mut names: Vec<&str> = resp
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.as_str()))
        .collect();
    names.sort_unstable();
    for name in names {
        writeln!(out, "{name}").map_err(stdout_err)?;
    }
    Ok(())
}

fn describe(client: &mut Client, name: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let resp = client.metadata(Some(&[name.to_string()]))?;
    let topic = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name))
        .ok_or_else(|| CliError::UnknownTopic {
            topic: name.to_string(),
        })?;
    if topic.error_code != 0 {
        return Err(CliError::kafka(
            format!("cannot describe topic {name}"),
            topic.error_code,
            None,
        ));
    }
    let configs = match topic_overrides(client, name) {
        Ok(c) => c,
        // Partition layout is still worth printing when the broker cannot describe configs.
        Err(e) => {
            eprintln!("warning: cannot read configs of {name}: {e}");
            Vec::new()
        }
    };
    write_description(topic, &configs, out).map_err(stdout_err)
}

fn write_description(
    topic: &MetadataResponseTopic,
    configs: &[(String, String)],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = topic.name.as_ref().map(|n| n.as_str()).unwrap_or("");
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition_index);
    let replication = partitions.first().map_or(0, |p| p.replica_nodes.len());
    let configs: Vec<String> = configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(
        out,
        "Topic: {name}\tTopicId: {}\tPartitionCount: {}\tReplicationFactor: {replication}\tConfigs: {}",
        kafka_uuid(&topic.topic_id),
        partitions.len(),
        configs.join(",")
    )?;
    for p in partitions {
        let nodes = |ids: &[kafka_protocol::messages::BrokerId]| {
            ids.iter()
                .map(|id| id.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            out,
            "\tTopic: {name}\tPartition: {}\tLeader: {}\tReplicas: {}\tIsr: {}",
            p.partition_index,
            if p.leader_id.0 < 0 {
                "none".to_string()
            } else {
                p.leader_id.0.to_string()
            },
            nodes(&p.replica_nodes),
            nodes(&p.isr_nodes)
        )?;
        if p.error_code != 0 {
            write!(out, "\tError: {}", error_name(p.error_code))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Per-topic config overrides (not broker defaults), sorted by name.
fn topic_overrides(client: &mut Client, name: &str) -> Result<Vec<(String, String)>, CliError> {
    let resource = DescribeConfigsResource::default()
        .with_resource_type(RESOURCE_TYPE_TOPIC)
        .with_resource_name(str_bytes(name))
        .with_configuration_keys(None);
    let req = DescribeConfigsRequest::default().with_resources(vec![resource]);
    let (resp, _) = client.bootstrap().send(&req)?;
    let mut configs = Vec::new();
    for result in &resp.results {
        if result.error_code != 0 {
            let message = result.error_message.as_ref().map(|m| m.as_str());
            return Err(CliError::kafka(
                "DescribeConfigs",
                result.error_code,
                message,
            ));
        }
        for c in result
            .configs
            .iter()
            .filter(|c| c.config_source == CONFIG_SOURCE_TOPIC)
        {
            let value = match (&c.value, c.is_sensitive) {
                (_, true) => "(sensitive)".to_string(),
                (Some(v), false) => v.as_str().to_string(),
                (None, false) => "null".to_string(),
            };
            configs.push((c.name.as_str().to_string(), value));
        }
    }
    configs.sort();
    Ok(configs)
}

fn delete(client: &mut Client, name: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
    // v0-5 name topics in `topic_names`, v6+ in `topics`; the encoder ignores the other field.
    req.topic_names = vec![topic_name(name)];
    req.topics = vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
    let (resp, _) = client.bootstrap().send(&req)?;
    let result = resp
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == name));
    let Some(result) = result else {
        return Err(CliError::kafka(
            format!("DeleteTopics {name}"),
            -1,
            Some("topic missing from the response"),
        ));
    };
    if result.error_code != 0 {
        return Err(CliError::kafka(
            format!("cannot delete topic {name}"),
            result.error_code,
            result.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    writeln!(out, "Deleted topic {name}.").map_err(stdout_err)
}

/// Kafka prints topic ids in URL-safe base64 without padding (`Uuid.toString()`).
fn kafka_uuid(id: &uuid::Uuid) -> String {
    base64_url_nopad(id.as_bytes())
}

fn base64_url_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

pub fn stdout_err(source: std::io::Error) -> CliError {
    CliError::Local {
        what: "cannot write to stdout",
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_print_like_kafka() {
        // RFC 4648 §10 vectors, URL-safe alphabet, no padding.
        assert_eq!(base64_url_nopad(b""), "");
        assert_eq!(base64_url_nopad(b"f"), "Zg");
        assert_eq!(base64_url_nopad(b"fo"), "Zm8");
        assert_eq!(base64_url_nopad(b"foo"), "Zm9v");
        assert_eq!(base64_url_nopad(b"foob"), "Zm9vYg");
        assert_eq!(base64_url_nopad(&[0xfb, 0xff]), "-_8");
        assert_eq!(kafka_uuid(&uuid::Uuid::nil()), "AAAAAAAAAAAAAAAAAAAAAA");
    }
}
