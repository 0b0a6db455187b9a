//! TxnOffsetCommit's translation: the Kafka request to the group coordinator's transactional commit
//! and back. `handlers::txn` checks the transaction first and calls this with the transaction locked.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use once_group::{CommitMember, GroupCoordinator, TxnOffsetCommit};

use super::{code_of, topic_offsets};
use crate::handlers::str_bytes as text;

/// The coordinator's TxnOffsetCommit of a verified request; v3+ names the consumer's member
/// (KIP-447), checked against the group.
pub async fn txn_offset_commit(
    groups: &GroupCoordinator,
    request: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let member = (version >= 3).then(|| CommitMember {
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
    });
    let commit = TxnOffsetCommit {
        group_id: request.group_id.0.to_string(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        member,
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
        .txn_offset_commit(commit)
        .await
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, outcome)| {
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(code_of(&outcome))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(TopicName(text(&name))).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
