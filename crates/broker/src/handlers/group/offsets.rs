//! OffsetCommit, OffsetFetch and OffsetDelete; translation only: Kafka requests to the group
//! coordinator's offset operations and back.

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use once_group::{CommitMember, FetchedOffset, GroupCoordinator, GroupOffsets, OffsetCommit, RequestContext};

use super::{code_of, topic_offsets};
use crate::errors::group_error_code;
use crate::handlers::str_bytes as text;
use once_wire::consumer_protocol::subscribed_topics;

pub async fn offset_commit(
    groups: &GroupCoordinator,
    request: OffsetCommitRequest,
    context: &RequestContext<'_>,
) -> OffsetCommitResponse {
    let commit = OffsetCommit {
        group_id: request.group_id.0.to_string(),
        member: CommitMember {
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
        },
        topics: request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic.partitions.into_iter().map(|partition| {
                    (
                        partition.partition_index,
                        partition.committed_offset,
                        partition.committed_leader_epoch,
                        partition.committed_metadata.map(|metadata| metadata.to_string()),
                    )
                });
                topic_offsets(topic.name.0.to_string(), partitions)
            })
            .collect(),
    };
    let topics = groups
        .commit_offsets(commit, context)
        .await
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, outcome)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code_of(&outcome))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// The metadata of a fetched offset as the response carries it.
fn metadata(fetched: &FetchedOffset) -> Option<StrBytes> {
    fetched.metadata.as_deref().map(text)
}

/// OffsetFetch v8+: several groups per request.
fn offset_fetch_batched(groups: &GroupCoordinator, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let wanted = request
        .groups
        .iter()
        .map(|wanted| {
            let topics = wanted.topics.as_ref().map(|topics| {
                topics.iter().map(|topic| (topic.name.0.to_string(), topic.partition_indexes.clone())).collect()
            });
            (wanted.group_id.0.to_string(), topics)
        })
        .collect();
    let fetched = groups.fetch_offsets(wanted, request.require_stable);
    let results = request
        .groups
        .into_iter()
        .zip(fetched)
        .map(|(wanted, offsets)| {
            let topics = offsets
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .iter()
                        .map(|fetched| {
                            OffsetFetchResponsePartitions::default()
                                .with_partition_index(fetched.partition)
                                .with_committed_offset(fetched.offset)
                                .with_committed_leader_epoch(fetched.leader_epoch)
                                .with_metadata(metadata(fetched))
                                .with_error_code(code_of(&fetched.outcome))
                        })
                        .collect();
                    OffsetFetchResponseTopics::default().with_name(TopicName(text(&name))).with_partitions(partitions)
                })
                .collect();
            OffsetFetchResponseGroup::default().with_group_id(wanted.group_id).with_topics(topics)
        })
        .collect();
    OffsetFetchResponse::default().with_groups(results)
}

pub fn offset_fetch(groups: &GroupCoordinator, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        return offset_fetch_batched(groups, request);
    }
    let topics = request
        .topics
        .map(|topics| topics.into_iter().map(|topic| (topic.name.0.to_string(), topic.partition_indexes)).collect());
    // RequireStable arrived with v7.
    let require_stable = version >= 7 && request.require_stable;
    let fetched: GroupOffsets = groups
        .fetch_offsets(vec![(request.group_id.0.to_string(), topics)], require_stable)
        .into_iter()
        .next()
        .unwrap_or_default();
    let topics = fetched
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .iter()
                .map(|fetched| {
                    let partition = OffsetFetchResponsePartition::default()
                        .with_partition_index(fetched.partition)
                        .with_committed_offset(fetched.offset)
                        .with_metadata(metadata(fetched))
                        .with_error_code(code_of(&fetched.outcome));
                    if version >= 5 {
                        partition.with_committed_leader_epoch(fetched.leader_epoch)
                    } else {
                        partition
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

pub async fn offset_delete(groups: &GroupCoordinator, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic.partitions.iter().map(|partition| partition.partition_index).collect();
            (topic.name.0.to_string(), partitions)
        })
        .collect();
    match groups.delete_offsets(&request.group_id.0, topics, &subscribed_topics).await {
        Err(error) => OffsetDeleteResponse::default().with_error_code(group_error_code(&error).code()),
        Ok(outcomes) => {
            let topics = outcomes
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|(index, outcome)| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(index)
                                .with_error_code(code_of(&outcome))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(partitions)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}
