//! `spool txn list|describe|abort`: transaction administration over the Kafka protocol, as
//! `kafka-transactions.sh` does it (same requests, same layout).
//!
//! Routing: ListTransactions goes to every broker (each lists the transactional ids it
//! coordinates); DescribeTransactions to the id's coordinator (FindCoordinator key type 1);
//! DescribeProducers and WriteTxnMarkers to the partition's leader. `abort` is the operator's
//! last resort for a hanging transaction (one whose coordinator no longer knows it, so its
//! records hold the partition's last stable offset forever): it writes an ABORT marker for the
//! producer straight to the partition, as Kafka's tool does.

use std::collections::BTreeMap;
use std::io::Write;

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest,
    ProducerId, TransactionalId, WriteTxnMarkersRequest,
};

use super::client::{str_bytes, topic_name, Client};
use super::error::CliError;
use super::group::Coordinator;
use super::group_wire::write_table;
use super::topic::stdout_err;
use super::{TxnAbortArgs, TxnCommand};

/// FindCoordinator key type of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;
/// Kafka's TRANSACTIONAL_ID_NOT_FOUND.
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

pub fn run(client: &mut Client, command: TxnCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        TxnCommand::List {
            states,
            producer_ids,
        } => list(client, &states, &producer_ids, out),
        TxnCommand::Describe { transactional_id } => describe(client, &transactional_id, out),
        TxnCommand::Abort(args) => abort(client, &args, out),
    }
}

fn list(
    client: &mut Client,
    states: &[String],
    producer_ids: &[i64],
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let metadata = client.metadata(None)?;
    let mut nodes: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    nodes.sort_unstable();
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in nodes {
        let conn = client.node(node)?;
        conn.version_for(ApiKey::ListTransactions)?;
        let req = ListTransactionsRequest::default()
            .with_state_filters(states.iter().map(|s| str_bytes(s)).collect())
            .with_producer_id_filters(producer_ids.iter().map(|&p| ProducerId(p)).collect());
        let (resp, _) = conn.send(&req)?;
        if resp.error_code != 0 {
            return Err(CliError::kafka(
                format!("ListTransactions on broker {node}"),
                resp.error_code,
                None,
            ));
        }
        for t in resp.transaction_states {
            let id = t.transactional_id.0.to_string();
            rows.insert(
                id.clone(),
                vec![
                    id,
                    node.to_string(),
                    t.producer_id.0.to_string(),
                    t.transaction_state.to_string(),
                ],
            );
        }
    }
    let rows: Vec<Vec<String>> = rows.into_values().collect();
    write_table(
        out,
        &[
            "TransactionalId",
            "Coordinator",
            "ProducerId",
            "TransactionState",
        ],
        &rows,
    )
    .map_err(stdout_err)
}

fn describe(client: &mut Client, id: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let mut coordinator = Coordinator::find_key(client, KEY_TYPE_TRANSACTION, id)?;
    let node = coordinator.node_id;
    let state = coordinator.call(client, |conn| {
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(str_bytes(id))]);
        let (resp, _) = conn.send(&req)?;
        let state = resp
            .transaction_states
            .into_iter()
            .find(|t| t.transactional_id.0.as_str() == id)
            .ok_or_else(|| {
                CliError::kafka(
                    format!("DescribeTransactions for {id}"),
                    -1,
                    Some("the id is missing from the response"),
                )
            })?;
        Ok(if state.error_code == 0 {
            Ok(state)
        } else {
            Err(state.error_code)
        })
    })?;
    let state = match state {
        Ok(state) => state,
        Err(code) => {
            let message =
                (code == TRANSACTIONAL_ID_NOT_FOUND).then_some("no such transactional id");
            return Err(CliError::kafka(
                format!("DescribeTransactions for {id}"),
                code,
                message,
            ));
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (start, duration) = if state.transaction_start_time_ms >= 0 {
        (
            state.transaction_start_time_ms.to_string(),
            (now - state.transaction_start_time_ms).max(0).to_string(),
        )
    } else {
        ("None".to_string(), "None".to_string())
    };
    let partitions: Vec<String> = state
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| format!("{}-{p}", t.topic.0.as_str()))
        })
        .collect();
    let row = vec![
        node.to_string(),
        id.to_string(),
        state.producer_id.0.to_string(),
        state.producer_epoch.to_string(),
        state.transaction_state.to_string(),
        state.transaction_timeout_ms.to_string(),
        start,
        duration,
        partitions.join(","),
    ];
    write_table(
        out,
        &[
            "CoordinatorId",
            "TransactionalId",
            "ProducerId",
            "ProducerEpoch",
            "TransactionState",
            "TransactionTimeoutMs",
            "CurrentTransactionStartTimeMs",
            "TransactionDurationMs",
            "TopicPartitions",
        ],
        &[row],
    )
    .map_err(stdout_err)
}

fn abort(client: &mut Client, args: &TxnAbortArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let info = client.topic_info(&args.topic)?;
    let leader = info
        .leaders
        .iter()
        .find(|(p, _)| *p == args.partition)
        .map(|(_, leader)| *leader)
        .ok_or_else(|| CliError::InvalidArgument {
            flag: "--partition",
            value: args.partition.to_string(),
            reason: "the topic has no such partition",
        })?;
    let conn = client.node(leader)?;
    // Who to abort: given outright, or the producer whose open transaction starts at
    // --start-offset (DescribeProducers on the leader), as kafka-transactions.sh does.
    let (producer_id, producer_epoch, coordinator_epoch) = match args.start_offset {
        None => (
            args.producer_id.ok_or(CliError::InvalidArgument {
                flag: "--producer-id",
                value: String::new(),
                reason: "needed without --start-offset",
            })?,
            args.producer_epoch.ok_or(CliError::InvalidArgument {
                flag: "--producer-epoch",
                value: String::new(),
                reason: "needed without --start-offset",
            })?,
            args.coordinator_epoch.unwrap_or(-1),
        ),
        Some(start) => {
            let req = DescribeProducersRequest::default()
                .with_topics(vec![TopicRequest::default()
                    .with_name(topic_name(&args.topic))
                    .with_partition_indexes(vec![args.partition])]);
            let (resp, _) = conn.send(&req)?;
            let partition = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == args.partition)
                .ok_or_else(|| {
                    CliError::kafka(
                        "DescribeProducers",
                        -1,
                        Some("the partition is missing from the response"),
                    )
                })?;
            if partition.error_code != 0 {
                return Err(CliError::kafka(
                    format!("DescribeProducers for {}-{}", args.topic, args.partition),
                    partition.error_code,
                    None,
                ));
            }
            let producer = partition
                .active_producers
                .iter()
                .find(|p| p.current_txn_start_offset == start)
                .ok_or(CliError::InvalidArgument {
                    flag: "--start-offset",
                    value: start.to_string(),
                    reason: "no open transaction on the partition starts there",
                })?;
            (
                producer.producer_id.0,
                i16::try_from(producer.producer_epoch).unwrap_or(i16::MAX),
                producer.coordinator_epoch,
            )
        }
    };
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_transaction_result(false)
        .with_coordinator_epoch(coordinator_epoch)
        .with_topics(vec![WritableTxnMarkerTopic::default()
            .with_name(topic_name(&args.topic))
            .with_partition_indexes(vec![args.partition])])]);
    let (resp, _) = conn.send(&req)?;
    let code = resp
        .markers
        .iter()
        .flat_map(|m| m.topics.iter())
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == args.partition)
        .map_or(-1, |p| p.error_code);
    if code != 0 {
        return Err(CliError::kafka(
            format!(
                "WriteTxnMarkers (ABORT) for {}-{}",
                args.topic, args.partition
            ),
            code,
            None,
        ));
    }
    writeln!(
        out,
        "Aborted the transaction of producer {producer_id} (epoch {producer_epoch}) on {}-{}",
        args.topic, args.partition
    )
    .map_err(stdout_err)
}
