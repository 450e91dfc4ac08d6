//! OffsetFetch, versions 1–9: committed offsets from the group's shard; `topics` null = every
//! committed partition (v2+); several groups per request from v8; v9's member id and epoch are
//! checked for consumer (KIP-848) groups (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH). With
//! `require_stable` (v7+) a partition whose transactional commit waits for its marker answers
//! UNSTABLE_OFFSET_COMMIT (the client retries).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use crate::group::{self, FetchedOffsets, GroupCall, GroupReply};
use crate::kafka::Ctx;

pub const VERSIONS: VersionRange = VersionRange { min: 1, max: 9 };

pub async fn handle(ctx: &Ctx, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let version = ctx.version();
    if version >= 8 {
        let calls = request.groups.into_iter().map(|g| async move {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect()
            });
            let member =
                (version >= 9).then(|| (g.member_id.map(|m| m.to_string()), g.member_epoch));
            let require_stable = request.require_stable;
            let fetched = fetch(
                ctx,
                g.group_id.0.to_string(),
                topics,
                member,
                require_stable,
            )
            .await;
            OffsetFetchResponseGroup::default()
                .with_group_id(g.group_id)
                .with_error_code(fetched.error_code)
                .with_topics(
                    fetched
                        .topics
                        .into_iter()
                        .map(|(name, parts)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(StrBytes::from_string(name)))
                                .with_partitions(
                                    parts
                                        .into_iter()
                                        .map(|p| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p.partition)
                                                .with_committed_offset(p.offset)
                                                .with_committed_leader_epoch(p.leader_epoch)
                                                .with_metadata(
                                                    p.metadata.map(StrBytes::from_string),
                                                )
                                                .with_error_code(p.error_code)
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                )
        });
        let groups = futures::future::join_all(calls).await;
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group_id: GroupId = request.group_id;
    let topics = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    let require_stable = version >= 7 && request.require_stable;
    let fetched = fetch(
        ctx,
        group_id.0.to_string(),
        topics.clone(),
        None,
        require_stable,
    )
    .await;
    let mut fetched_topics = fetched.topics;
    if fetched.error_code != 0 && version < 2 {
        // v1 has no top-level error: report it on every requested partition.
        fetched_topics = topics
            .unwrap_or_default()
            .into_iter()
            .map(|(name, parts)| {
                let offsets = parts
                    .into_iter()
                    .map(|p| group::FetchedOffset {
                        partition: p,
                        offset: -1,
                        leader_epoch: -1,
                        metadata: Some(String::new()),
                        error_code: fetched.error_code,
                    })
                    .collect();
                (name, offsets)
            })
            .collect();
    }
    let topics = fetched_topics
        .into_iter()
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
                                .with_committed_leader_epoch(if version >= 5 {
                                    p.leader_epoch
                                } else {
                                    -1
                                })
                                .with_metadata(p.metadata.map(StrBytes::from_string))
                                .with_error_code(p.error_code)
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(fetched.error_code)
    } else {
        response
    }
}

async fn fetch(
    ctx: &Ctx,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(Option<String>, i32)>,
    require_stable: bool,
) -> FetchedOffsets {
    match group::call(
        &ctx.shard,
        &group.clone(),
        GroupCall::OffsetFetch {
            group,
            topics,
            member,
            require_stable,
        },
    )
    .await
    {
        Some(GroupReply::OffsetFetch(fetched)) => fetched,
        _ => FetchedOffsets {
            error_code: ResponseError::CoordinatorNotAvailable.code(),
            topics: Vec::new(),
        },
    }
}
