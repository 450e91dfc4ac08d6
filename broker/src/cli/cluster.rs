//! `spool cluster status`: the brokers (live and fenced, with racks), the active controller,
//! the metadata quorum's leader, epoch and high watermark, and every voter's and observer's
//! lag, from DescribeCluster and DescribeQuorum (so it works against Apache Kafka too).

use std::io::Write;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeClusterRequest, DescribeQuorumRequest};

use super::client::{topic_name, Client};
use super::error::CliError;

const METADATA_TOPIC: &str = "__cluster_metadata";

/// Every broker, fenced ones included, and the active controller (DescribeCluster).
pub(super) fn describe_cluster(
    client: &mut Client,
) -> Result<kafka_protocol::messages::DescribeClusterResponse, CliError> {
    let cluster = client
        .bootstrap()
        .send(&DescribeClusterRequest::default().with_include_fenced_brokers(true))?
        .0;
    if cluster.error_code != 0 {
        return Err(CliError::kafka(
            "DescribeCluster",
            cluster.error_code,
            cluster.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    Ok(cluster)
}

pub fn status(client: &mut Client, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let local = |source| CliError::Local {
        what: "cannot write the output",
        source,
    };
    let cluster = describe_cluster(client)?;
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(topic_name(METADATA_TOPIC))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let quorum = client.bootstrap().send(&request)?.0;
    if quorum.error_code != 0 {
        return Err(CliError::kafka(
            "DescribeQuorum",
            quorum.error_code,
            quorum.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    let Some(partition) = quorum.topics.first().and_then(|t| t.partitions.first()) else {
        return Err(CliError::kafka(
            "DescribeQuorum",
            -1,
            Some("no quorum partition in the answer"),
        ));
    };
    if partition.error_code != 0 {
        return Err(CliError::kafka(
            "DescribeQuorum",
            partition.error_code,
            None,
        ));
    }
    let leader_end = partition
        .current_voters
        .iter()
        .find(|v| v.replica_id == partition.leader_id)
        .map_or(-1, |v| v.log_end_offset);
    let lag = |end: i64| {
        if end < 0 || leader_end < 0 {
            -1
        } else {
            leader_end - end
        }
    };
    if json {
        let brokers: Vec<String> = cluster
            .brokers
            .iter()
            .map(|b| {
                format!(
                    r#"{{"id":{},"host":"{}","port":{},"rack":{},"fenced":{}}}"#,
                    b.broker_id.0,
                    b.host.as_str(),
                    b.port,
                    b.rack
                        .as_ref()
                        .map_or("null".to_string(), |r| format!("\"{}\"", r.as_str())),
                    b.is_fenced
                )
            })
            .collect();
        let replicas =
            |list: &[kafka_protocol::messages::describe_quorum_response::ReplicaState]| {
                list.iter()
                    .map(|r| {
                        format!(
                            r#"{{"id":{},"log_end_offset":{},"lag":{}}}"#,
                            r.replica_id.0,
                            r.log_end_offset,
                            lag(r.log_end_offset)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
        writeln!(
            out,
            r#"{{"cluster_id":"{}","controller":{},"leader":{},"epoch":{},"high_watermark":{},"brokers":[{}],"voters":[{}],"observers":[{}]}}"#,
            cluster.cluster_id.as_str(),
            cluster.controller_id.0,
            partition.leader_id.0,
            partition.leader_epoch,
            partition.high_watermark,
            brokers.join(","),
            replicas(&partition.current_voters),
            replicas(&partition.observers),
        )
        .map_err(local)?;
        return Ok(());
    }
    writeln!(out, "ClusterId:     {}", cluster.cluster_id.as_str()).map_err(local)?;
    writeln!(out, "Controller:    {}", cluster.controller_id.0).map_err(local)?;
    writeln!(
        out,
        "Quorum:        leader {} epoch {} high watermark {}",
        partition.leader_id.0, partition.leader_epoch, partition.high_watermark
    )
    .map_err(local)?;
    writeln!(out, "Brokers:").map_err(local)?;
    for b in &cluster.brokers {
        writeln!(
            out,
            "  {:>4}  {}:{}  rack {}  {}",
            b.broker_id.0,
            b.host.as_str(),
            b.port,
            b.rack.as_ref().map_or("-", |r| r.as_str()),
            if b.is_fenced { "FENCED" } else { "live" }
        )
        .map_err(local)?;
    }
    writeln!(out, "Metadata log replicas:").map_err(local)?;
    for (role, list) in [
        ("voter", &partition.current_voters),
        ("observer", &partition.observers),
    ] {
        for r in list.iter() {
            let role = if r.replica_id == partition.leader_id {
                "leader"
            } else {
                role
            };
            writeln!(
                out,
                "  {:>4}  {:<8}  log end {:>8}  lag {}",
                r.replica_id.0,
                role,
                r.log_end_offset,
                lag(r.log_end_offset)
            )
            .map_err(local)?;
        }
    }
    Ok(())
}
