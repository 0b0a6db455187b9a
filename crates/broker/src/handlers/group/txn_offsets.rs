//! TxnOffsetCommit's translation, nothing else: the Kafka request to the node's transactional commit
//! ([`once_node::Node::txn_offset_commit`], which verifies the transaction and calls the group
//! coordinator under it) and its outcome back. The handler is `handlers::txn::txn_offset_commit`.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use once_group::{CommitMember, TopicOutcomes, TxnOffsetCommit};

use super::{code_of, topic_offsets};
use crate::handlers::str_bytes as text;

/// The coordinator's form of a TxnOffsetCommit request; v3+ names the consumer's member (KIP-447),
/// which the group checks.
pub fn commit(request: TxnOffsetCommitRequest, version: i16) -> TxnOffsetCommit {
    let member = (version >= 3).then(|| CommitMember {
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|id| id.to_string()),
    });
    TxnOffsetCommit {
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
    }
}

/// The response to a commit the group coordinator answered: each partition's own outcome.
pub fn response(outcomes: TopicOutcomes) -> TxnOffsetCommitResponse {
    let topics = outcomes
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

/// The partitions a request names, per topic: what a refusal answers.
pub fn requested(request: &TxnOffsetCommitRequest) -> Vec<(TopicName, Vec<i32>)> {
    request
        .topics
        .iter()
        .map(|topic| (topic.name.clone(), topic.partitions.iter().map(|partition| partition.partition_index).collect()))
        .collect()
}

/// The response to a commit refused as a whole: `error_code` at every partition of the request.
pub fn refused(requested: Vec<(TopicName, Vec<i32>)>, error_code: i16) -> TxnOffsetCommitResponse {
    let topics = requested
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    TxnOffsetCommitResponsePartition::default().with_partition_index(index).with_error_code(error_code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
