//! `spool group list|describe|delete|reset-offsets`: consumer-group administration over the
//! Kafka protocol, with output in the layout of `kafka-consumer-groups.sh`.
//!
//! Routing: ListGroups goes to every broker (each lists the groups it coordinates); everything
//! about one group goes to its coordinator, found with FindCoordinator (key type 0; batched
//! `coordinator_keys` from v4). Coordinator errors (loading, not available, moved) are retried a
//! bounded number of times with a fresh FindCoordinator. ListOffsets goes to partition leaders.
//!
//! `reset-offsets` only touches a group with no active members (state Empty, or no group at
//! all): it commits with generation -1 and an empty member id, which Kafka accepts only then.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListGroupsRequest, ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetFetchResponse,
};

use super::client::{str_bytes, topic_name, Client};
use super::conn::Connection;
use super::error::{error_name, CliError};
use super::group_wire::{
    decode_assignment, format_assignment, parse_iso8601_ms, write_table, Assignment,
};
use super::topic::stdout_err;
use super::{GroupCommand, ResetOffsetsArgs, ResetTarget};

/// FindCoordinator key type of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// Rounds of (FindCoordinator, request) while the coordinator is loading, not yet available
/// (Kafka creates `__consumer_offsets` on the first lookup) or has moved.
const COORDINATOR_ATTEMPTS_MAX: u32 = 30;
const COORDINATOR_RETRY_BACKOFF_MS: u64 = 200;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const NOT_COORDINATOR: i16 = 16;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
/// First versions with a field: ListGroups' states filter, FindCoordinator's batched keys,
/// OffsetFetch's groups array.
const LIST_GROUPS_STATES_VERSION_MIN: i16 = 4;
const FIND_COORDINATOR_BATCH_VERSION_MIN: i16 = 4;
const OFFSET_FETCH_GROUPS_VERSION_MIN: i16 = 8;
/// ListOffsets timestamps meaning "log start" and "log end".
const EARLIEST_TIMESTAMP: i64 = -2;
const LATEST_TIMESTAMP: i64 = -1;
/// Protocol type of groups whose assignments use the consumer protocol.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

pub fn run(
    client: &mut Client,
    command: GroupCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        GroupCommand::List { states } => list(client, &states, out),
        GroupCommand::Describe { group } => describe(client, &group, out),
        GroupCommand::Delete { groups } => delete(client, &groups, out),
        GroupCommand::ResetOffsets(args) => reset_offsets(client, args, out),
    }
}

// ---------------------------------------------------------------------------------------------
// list

fn list(client: &mut Client, states: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    let metadata = client.metadata(None)?;
    let mut nodes: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id.0).collect();
    nodes.sort_unstable();
    let mut groups: BTreeMap<String, (String, String)> = BTreeMap::new();
    for node in nodes {
        let conn = client.node(node)?;
        let version = conn.version_for(ApiKey::ListGroups)?;
        let mut req = ListGroupsRequest::default();
        if version >= LIST_GROUPS_STATES_VERSION_MIN {
            req.states_filter = states.iter().map(|s| str_bytes(s)).collect();
        }
        let (resp, version) = conn.send(&req)?;
        if resp.error_code != 0 {
            return Err(CliError::kafka(
                format!("ListGroups on broker {node}"),
                resp.error_code,
                None,
            ));
        }
        for g in resp.groups {
            let state = if version >= LIST_GROUPS_STATES_VERSION_MIN {
                g.group_state.to_string()
            } else {
                String::new()
            };
            groups.insert(
                g.group_id.0.to_string(),
                (state, g.protocol_type.to_string()),
            );
        }
    }
    // Filter here too: a broker below ListGroups v4 ignores the filter and reports no state.
    let rows: Vec<Vec<String>> = groups
        .into_iter()
        .filter(|(_, (state, _))| {
            states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state))
        })
        .map(|(id, (state, protocol_type))| vec![id, state, protocol_type])
        .collect();
    write_table(out, &["GROUP", "STATE", "PROTOCOL-TYPE"], &rows).map_err(stdout_err)
}

// ---------------------------------------------------------------------------------------------
// coordinator routing

/// A group's (or a transactional id's) coordinator, connected.
pub(super) struct Coordinator {
    /// The group id (or transactional id) it coordinates.
    pub(super) group: String,
    key_type: i8,
    pub(super) node_id: i32,
    pub(super) conn: Connection,
}

/// The outcome of one request to a coordinator: a value, or a group-level error code.
pub(super) type Attempt<T> = Result<Result<T, i16>, CliError>;

impl Coordinator {
    fn find(client: &mut Client, group: &str) -> Result<Coordinator, CliError> {
        Coordinator::find_key(client, KEY_TYPE_GROUP, group)
    }

    /// The coordinator of `key` of FindCoordinator key type `key_type` (0 group, 1
    /// transactional id), retrying (bounded) while it is loading, unavailable or moving.
    pub(super) fn find_key(
        client: &mut Client,
        key_type: i8,
        group: &str,
    ) -> Result<Coordinator, CliError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (node_id, addr, code, message) =
                find_coordinator(client.bootstrap(), key_type, group)?;
            if code == 0 {
                let conn = Connection::open(&addr)?;
                return Ok(Coordinator {
                    group: group.to_string(),
                    key_type,
                    node_id,
                    conn,
                });
            }
            if !is_coordinator_error(code) || attempt >= COORDINATOR_ATTEMPTS_MAX {
                let context = format!("FindCoordinator for {group}");
                return Err(CliError::kafka(context, code, message.as_deref()));
            }
            std::thread::sleep(Duration::from_millis(COORDINATOR_RETRY_BACKOFF_MS));
        }
    }

    /// Runs `request` against the coordinator, looking the coordinator up again (bounded) while
    /// it answers with a coordinator error. Other group-level errors are returned as codes.
    pub(super) fn call<T>(
        &mut self,
        client: &mut Client,
        mut request: impl FnMut(&mut Connection) -> Attempt<T>,
    ) -> Result<Result<T, i16>, CliError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match request(&mut self.conn)? {
                Err(code) if is_coordinator_error(code) && attempt < COORDINATOR_ATTEMPTS_MAX => {
                    std::thread::sleep(Duration::from_millis(COORDINATOR_RETRY_BACKOFF_MS));
                    *self = Coordinator::find_key(client, self.key_type, &self.group)?;
                }
                result => return Ok(result),
            }
        }
    }
}

pub(super) fn is_coordinator_error(code: i16) -> bool {
    matches!(
        code,
        COORDINATOR_LOAD_IN_PROGRESS | COORDINATOR_NOT_AVAILABLE | NOT_COORDINATOR
    )
}

/// (node id, "host:port", error code, error message) of the group's coordinator.
fn find_coordinator(
    conn: &mut Connection,
    key_type: i8,
    group: &str,
) -> Result<(i32, String, i16, Option<String>), CliError> {
    let version = conn.version_for(ApiKey::FindCoordinator)?;
    let mut req = FindCoordinatorRequest::default().with_key_type(key_type);
    if version >= FIND_COORDINATOR_BATCH_VERSION_MIN {
        req.coordinator_keys = vec![str_bytes(group)];
    } else {
        req.key = str_bytes(group);
    }
    let (resp, version) = conn.send(&req)?;
    let message =
        |m: &Option<kafka_protocol::protocol::StrBytes>| m.as_ref().map(|m| m.to_string());
    if version < FIND_COORDINATOR_BATCH_VERSION_MIN {
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        return Ok((
            resp.node_id.0,
            addr,
            resp.error_code,
            message(&resp.error_message),
        ));
    }
    let c = resp
        .coordinators
        .iter()
        .find(|c| c.key.as_str() == group)
        .ok_or_else(|| {
            CliError::kafka(
                format!("FindCoordinator for {group}"),
                -1,
                Some("group missing from the response"),
            )
        })?;
    let addr = format!("{}:{}", c.host.as_str(), c.port);
    Ok((c.node_id.0, addr, c.error_code, message(&c.error_message)))
}

fn group_id(group: &str) -> GroupId {
    GroupId(str_bytes(group))
}

/// DescribeGroups for one group. A missing group is `Err(GROUP_ID_NOT_FOUND)` whether the
/// broker says so with that code (Kafka 4's coordinator) or with state `Dead` (older ones).
fn describe_group(coordinator: &mut Coordinator, client: &mut Client) -> Attempt<DescribedGroup> {
    let group = coordinator.group.clone();
    coordinator.call(client, |conn| {
        let req = DescribeGroupsRequest::default().with_groups(vec![group_id(&group)]);
        let (resp, _) = conn.send(&req)?;
        let Some(g) = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
        else {
            return Err(CliError::kafka(
                format!("DescribeGroups {group}"),
                -1,
                Some("group missing from the response"),
            ));
        };
        Ok(match (g.error_code, g.group_state.as_str()) {
            (0, "Dead") => Err(GROUP_ID_NOT_FOUND),
            (0, _) => Ok(g),
            (code, _) => Err(code),
        })
    })
}

// ---------------------------------------------------------------------------------------------
// describe

/// One row of the offsets table: a partition the group has a committed offset for or owns.
struct PartitionRow {
    committed: Option<i64>,
    log_end: Option<i64>,
    owner: Option<usize>,
}

fn describe(client: &mut Client, group: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let mut coordinator = Coordinator::find(client, group)?;
    let described = match describe_group(&mut coordinator, client)? {
        Ok(g) => g,
        Err(code) => {
            let message = format!("consumer group '{group}' does not exist");
            let message = (code == GROUP_ID_NOT_FOUND).then_some(message.as_str());
            return Err(CliError::kafka(
                format!("cannot describe group {group}"),
                code,
                message,
            ));
        }
    };
    let consumer = described.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE;
    let assignments: Vec<Assignment> = described
        .members
        .iter()
        .map(|m| match consumer {
            true => decode_assignment(&m.member_assignment).unwrap_or_else(|e| {
                eprintln!(
                    "warning: member {}: undecodable assignment: {e}",
                    m.member_id.as_str()
                );
                Vec::new()
            }),
            false => Vec::new(),
        })
        .collect();
    let committed = fetch_offsets(&mut coordinator, client, None)?;
    let mut rows: BTreeMap<(String, i32), PartitionRow> = BTreeMap::new();
    for (tp, offset) in committed {
        rows.insert(
            tp,
            PartitionRow {
                committed: Some(offset),
                log_end: None,
                owner: None,
            },
        );
    }
    for (member, assignment) in assignments.iter().enumerate() {
        for (topic, partitions) in assignment {
            for p in partitions {
                let row = rows.entry((topic.clone(), *p)).or_insert(PartitionRow {
                    committed: None,
                    log_end: None,
                    owner: None,
                });
                row.owner = Some(member);
            }
        }
    }
    let wanted: BTreeSet<(String, i32)> = rows.keys().cloned().collect();
    for (tp, offset) in log_end_offsets(client, &wanted) {
        if let Some(row) = rows.get_mut(&tp) {
            row.log_end = Some(offset);
        }
    }
    write_description(group, &coordinator, &described, &assignments, &rows, out).map_err(stdout_err)
}

fn write_description(
    group: &str,
    coordinator: &Coordinator,
    g: &DescribedGroup,
    assignments: &[Assignment],
    rows: &BTreeMap<(String, i32), PartitionRow>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let summary = vec![vec![
        group.to_string(),
        g.group_state.to_string(),
        g.protocol_type.to_string(),
        g.protocol_data.to_string(),
        g.members.len().to_string(),
        format!("{} ({})", coordinator.conn.addr(), coordinator.node_id),
    ]];
    let header = [
        "GROUP",
        "STATE",
        "PROTOCOL-TYPE",
        "PROTOCOL",
        "MEMBERS",
        "COORDINATOR",
    ];
    write_table(out, &header, &summary)?;
    writeln!(out)?;
    let members: Vec<Vec<String>> = g
        .members
        .iter()
        .zip(assignments)
        .map(|(m, a)| {
            vec![
                m.member_id.to_string(),
                m.client_id.to_string(),
                m.client_host.to_string(),
                format_assignment(a),
            ]
        })
        .collect();
    if members.is_empty() {
        writeln!(out, "Consumer group '{group}' has no active members.")?;
    } else {
        write_table(
            out,
            &["CONSUMER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"],
            &members,
        )?;
    }
    writeln!(out)?;
    let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let offsets: Vec<Vec<String>> = rows
        .iter()
        .map(|((topic, partition), row)| {
            let lag = match (row.committed, row.log_end) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            let member = row.owner.map(|i| &g.members[i]);
            vec![
                group.to_string(),
                topic.clone(),
                partition.to_string(),
                show(row.committed),
                show(row.log_end),
                show(lag),
                member.map_or(String::new(), |m| m.member_id.to_string()),
                member.map_or(String::new(), |m| m.client_host.to_string()),
                member.map_or(String::new(), |m| m.client_id.to_string()),
            ]
        })
        .collect();
    let header = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ];
    write_table(out, &header, &offsets)
}

/// Log end offsets of `partitions`; partitions whose topic or leader cannot be resolved are
/// left out (and warned about), so describe still prints what it knows.
fn log_end_offsets(
    client: &mut Client,
    partitions: &BTreeSet<(String, i32)>,
) -> BTreeMap<(String, i32), i64> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let mut offsets = BTreeMap::new();
    for (topic, parts) in by_topic {
        match list_offsets(client, topic, &parts, LATEST_TIMESTAMP) {
            Ok(found) => {
                offsets.extend(found.into_iter().map(|(p, o)| ((topic.to_string(), p), o)));
            }
            Err(e) => eprintln!("warning: no log end offsets for {topic}: {e}"),
        }
    }
    offsets
}

// ---------------------------------------------------------------------------------------------
// offsets

/// The group's committed offsets (`topic` alone, or every topic when `None`), without the
/// partitions that have none. A group-level error fails the command.
fn fetch_offsets(
    coordinator: &mut Coordinator,
    client: &mut Client,
    topic: Option<(&str, &[i32])>,
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let group = coordinator.group.clone();
    let result = coordinator.call(client, |conn| {
        let version = conn.version_for(ApiKey::OffsetFetch)?;
        let req = offset_fetch_request(&group, topic, version);
        let (resp, version) = conn.send(&req)?;
        Ok(offset_fetch_result(&group, resp, version))
    })?;
    match result {
        Ok(Ok(offsets)) => Ok(offsets),
        Ok(Err((topic, partition, code))) => Err(CliError::kafka(
            format!("OffsetFetch {group} {topic}-{partition}"),
            code,
            None,
        )),
        Err(code) => Err(CliError::kafka(format!("OffsetFetch {group}"), code, None)),
    }
}

fn offset_fetch_request(
    group: &str,
    topic: Option<(&str, &[i32])>,
    version: i16,
) -> OffsetFetchRequest {
    let mut req = OffsetFetchRequest::default();
    if version >= OFFSET_FETCH_GROUPS_VERSION_MIN {
        let topics = topic.map(|(t, parts)| {
            vec![OffsetFetchRequestTopics::default()
                .with_name(topic_name(t))
                .with_partition_indexes(parts.to_vec())]
        });
        req.groups = vec![OffsetFetchRequestGroup::default()
            .with_group_id(group_id(group))
            .with_member_epoch(-1)
            .with_topics(topics)];
    } else {
        req.group_id = group_id(group);
        req.topics = topic.map(|(t, parts)| {
            vec![OffsetFetchRequestTopic::default()
                .with_name(topic_name(t))
                .with_partition_indexes(parts.to_vec())]
        });
    }
    req
}

/// Committed offsets, a partition-level error (topic, partition, code), or a group-level code.
type OffsetFetchResult = Result<Result<BTreeMap<(String, i32), i64>, (String, i32, i16)>, i16>;

/// Flattens both response layouts (v8+ nests topics under groups).
fn offset_fetch_result(group: &str, resp: OffsetFetchResponse, version: i16) -> OffsetFetchResult {
    let mut entries: Vec<(String, i32, i64, i16)> = Vec::new();
    if version >= OFFSET_FETCH_GROUPS_VERSION_MIN {
        let Some(g) = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
        else {
            return Err(-1);
        };
        if g.error_code != 0 {
            return Err(g.error_code);
        }
        for t in g.topics {
            for p in t.partitions {
                entries.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.error_code,
                ));
            }
        }
    } else {
        if resp.error_code != 0 {
            return Err(resp.error_code);
        }
        for t in resp.topics {
            for p in t.partitions {
                entries.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.error_code,
                ));
            }
        }
    }
    let mut offsets = BTreeMap::new();
    for (topic, partition, offset, code) in entries {
        if code != 0 {
            return Ok(Err((topic, partition, code)));
        }
        if offset >= 0 {
            offsets.insert((topic, partition), offset);
        }
    }
    Ok(Ok(offsets))
}

/// ListOffsets for one topic's partitions at `timestamp`, one request per leader; partition →
/// offset (-1 when no record has a timestamp at or after a positive `timestamp`).
fn list_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, i64>, CliError> {
    let info = client.topic_info(topic)?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        let (_, leader) = info.leaders.iter().find(|(i, _)| i == p).ok_or_else(|| {
            CliError::UnknownPartition {
                topic: topic.to_string(),
                partition: *p,
            }
        })?;
        by_leader.entry(*leader).or_default().push(*p);
    }
    let mut offsets = BTreeMap::new();
    for (leader, parts) in by_leader {
        let request_partitions = parts
            .iter()
            .map(|p| {
                ListOffsetsPartition::default()
                    .with_partition_index(*p)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp)
            })
            .collect();
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(request_partitions)]);
        let (resp, _) = client.node(leader)?.send(&req)?;
        for p in resp
            .topics
            .iter()
            .filter(|t| t.name.as_str() == topic)
            .flat_map(|t| &t.partitions)
        {
            if p.error_code != 0 {
                let context = format!("ListOffsets {topic}-{}", p.partition_index);
                return Err(CliError::kafka(context, p.error_code, None));
            }
            offsets.insert(p.partition_index, p.offset);
        }
    }
    if let Some(missing) = partitions.iter().find(|p| !offsets.contains_key(p)) {
        return Err(CliError::UnknownPartition {
            topic: topic.to_string(),
            partition: *missing,
        });
    }
    Ok(offsets)
}

// ---------------------------------------------------------------------------------------------
// delete

fn delete(client: &mut Client, groups: &[String], out: &mut dyn Write) -> Result<(), CliError> {
    let mut failed: Vec<(&str, i16)> = Vec::new();
    for group in groups {
        let code = delete_one(client, group)?;
        if code == 0 {
            writeln!(out, "Group '{group}' deleted.").map_err(stdout_err)?;
        } else {
            writeln!(
                out,
                "Group '{group}' could not be deleted: {}",
                error_name(code)
            )
            .map_err(stdout_err)?;
            failed.push((group, code));
        }
    }
    match failed.first() {
        None => Ok(()),
        Some((group, code)) => {
            let context = format!(
                "{} of {} group(s) not deleted; first: {group}",
                failed.len(),
                groups.len()
            );
            Err(CliError::kafka(context, *code, None))
        }
    }
}

/// DeleteGroups for one group at its coordinator; the group's error code.
fn delete_one(client: &mut Client, group: &str) -> Result<i16, CliError> {
    let mut coordinator = Coordinator::find(client, group)?;
    let result = coordinator.call(client, |conn| {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let (resp, _) = conn.send(&req)?;
        let code = resp
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .map_or(-1, |r| r.error_code);
        Ok(if code == 0 { Ok(()) } else { Err(code) })
    })?;
    Ok(result.err().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// reset-offsets

fn reset_offsets(
    client: &mut Client,
    args: ResetOffsetsArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let group = args.group.as_str();
    let topic = args.topic.as_str();
    let target = Target::from_args(&args.to)?;
    let mut coordinator = Coordinator::find(client, group)?;
    require_inactive(&mut coordinator, client)?;
    let info = client.topic_info(topic)?;
    let partitions: Vec<i32> = if args.partition.is_empty() {
        info.leaders.iter().map(|(p, _)| *p).collect()
    } else {
        args.partition.clone()
    };
    if let Some(p) = partitions
        .iter()
        .find(|p| !info.leaders.iter().any(|(i, _)| i == *p))
    {
        return Err(CliError::UnknownPartition {
            topic: topic.to_string(),
            partition: *p,
        });
    }
    let current = fetch_offsets(&mut coordinator, client, Some((topic, &partitions)))?;
    let targets = target_offsets(client, topic, &partitions, target)?;
    let show = |v: Option<&i64>| v.map_or("-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|(p, new)| {
            let old = current.get(&(topic.to_string(), *p));
            vec![
                group.to_string(),
                topic.to_string(),
                p.to_string(),
                show(old),
                new.to_string(),
            ]
        })
        .collect();
    let header = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "NEW-OFFSET",
    ];
    write_table(out, &header, &rows).map_err(stdout_err)?;
    if !args.execute {
        eprintln!("Dry run: nothing committed; add --execute to commit these offsets.");
        return Ok(());
    }
    commit_offsets(&mut coordinator, client, topic, &targets)?;
    writeln!(
        out,
        "Committed {} offset(s) for group '{group}'.",
        targets.len()
    )
    .map_err(stdout_err)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Earliest,
    Latest,
    Timestamp(i64),
    Offset(i64),
}

impl Target {
    fn from_args(to: &ResetTarget) -> Result<Target, CliError> {
        if let Some(s) = &to.to_datetime {
            let ms = parse_iso8601_ms(s).ok_or_else(|| CliError::InvalidArgument {
                flag: "--to-datetime",
                value: s.clone(),
                reason: "expected YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM]",
            })?;
            if ms < 0 {
                return Err(CliError::InvalidArgument {
                    flag: "--to-datetime",
                    value: s.clone(),
                    reason: "must not be before 1970",
                });
            }
            return Ok(Target::Timestamp(ms));
        }
        match (to.to_earliest, to.to_latest, to.to_offset) {
            (true, _, _) => Ok(Target::Earliest),
            (_, true, _) => Ok(Target::Latest),
            (_, _, Some(n)) if n >= 0 => Ok(Target::Offset(n)),
            (_, _, Some(n)) => Err(CliError::InvalidArgument {
                flag: "--to-offset",
                value: n.to_string(),
                reason: "expected a non-negative offset",
            }),
            // clap's argument group requires exactly one target.
            _ => unreachable!("no reset target"),
        }
    }
}

/// Refuses unless the group has no active members: Empty, or no such group yet.
fn require_inactive(coordinator: &mut Coordinator, client: &mut Client) -> Result<(), CliError> {
    let group = coordinator.group.clone();
    let state = match describe_group(coordinator, client)? {
        Ok(g) => g.group_state.to_string(),
        Err(GROUP_ID_NOT_FOUND) => return Ok(()),
        Err(code) => {
            return Err(CliError::kafka(
                format!("DescribeGroups {group}"),
                code,
                None,
            ))
        }
    };
    if state == "Empty" {
        return Ok(());
    }
    let message = format!(
        "group is {state}; offsets can only be reset while it has no active members (Empty)"
    );
    Err(CliError::kafka(
        format!("cannot reset offsets of group {group}"),
        NON_EMPTY_GROUP,
        Some(&message),
    ))
}

/// New offset per partition. `--to-offset` is clamped into [log start, log end] and a time with
/// no record at or after it resolves to the log end, as `kafka-consumer-groups.sh` does.
fn target_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    target: Target,
) -> Result<BTreeMap<i32, i64>, CliError> {
    match target {
        Target::Earliest => list_offsets(client, topic, partitions, EARLIEST_TIMESTAMP),
        Target::Latest => list_offsets(client, topic, partitions, LATEST_TIMESTAMP),
        Target::Timestamp(ms) => {
            let found = list_offsets(client, topic, partitions, ms)?;
            let latest = list_offsets(client, topic, partitions, LATEST_TIMESTAMP)?;
            Ok(found
                .into_iter()
                .map(|(p, o)| (p, if o < 0 { latest[&p] } else { o }))
                .collect())
        }
        Target::Offset(n) => {
            let earliest = list_offsets(client, topic, partitions, EARLIEST_TIMESTAMP)?;
            let latest = list_offsets(client, topic, partitions, LATEST_TIMESTAMP)?;
            Ok(earliest
                .into_iter()
                .map(|(p, lo)| (p, n.clamp(lo, latest[&p].max(lo))))
                .collect())
        }
    }
}

/// OffsetCommit outside any generation (generation -1, empty member id): the form Kafka accepts
/// only for a group with no active members.
fn commit_offsets(
    coordinator: &mut Coordinator,
    client: &mut Client,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<(), CliError> {
    let group = coordinator.group.clone();
    let partitions: Vec<OffsetCommitRequestPartition> = offsets
        .iter()
        .map(|(p, o)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(str_bytes("")))
        })
        .collect();
    let req = OffsetCommitRequest::default()
        .with_group_id(group_id(&group))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(str_bytes(""))
        .with_retention_time_ms(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(partitions)]);
    let result = coordinator.call(client, |conn| {
        let (resp, _) = conn.send(&req)?;
        // Errors are per partition; a coordinator error there makes `call` retry the commit.
        let failed = resp
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .find(|p| p.error_code != 0);
        Ok(failed.map_or(Ok(()), |p| Err(p.error_code)))
    })?;
    result.map_err(|code| {
        CliError::kafka(
            format!("cannot commit offsets of group {group} for {topic}"),
            code,
            None,
        )
    })
}
