//! Metadata, with topic auto-creation (never of one of Kafka's internal topics' names, see
//! [`once_node::topics::validate_new_topic_name`]); translation only: the node's topic registry,
//! identity and endpoint as the Kafka response.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, ResponseKind, TopicName};
use once_node::topics::{validate_new_topic_name, Topic, TopicError};
use once_node::Node;
use once_wire::ResponseError;

use super::str_bytes;
use crate::errors::topic_error_code;

/// `advertised`: the address of the listener the request came in on.
pub async fn handle(
    node: &Arc<Node>,
    request: MetadataRequest,
    version: i16,
    advertised: &once_node::Endpoint,
) -> ResponseKind {
    let topics = match request.topics {
        // v0 sends an empty array for "all topics"; v1+ sends null.
        None => all_topics(node),
        Some(ref requested) if requested.is_empty() && version == 0 => all_topics(node),
        Some(requested) => {
            // Before v4 the request cannot say, and Kafka auto-creates.
            let allow_create = node.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
            let mut topics = Vec::with_capacity(requested.len());
            for topic in requested {
                let Some(name) = topic.name else {
                    topics.push(
                        MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_topic_id(topic.topic_id),
                    );
                    continue;
                };
                topics.push(requested_topic(node, &name.0, allow_create).await);
            }
            topics
        }
    };
    let described = MetadataResponseBroker::default()
        .with_node_id(BrokerId(node.config.node_id))
        .with_host(str_bytes(&advertised.host))
        .with_port(advertised.port);
    ResponseKind::Metadata(
        MetadataResponse::default()
            .with_brokers(vec![described])
            .with_cluster_id(Some(str_bytes(&node.identity.cluster_id)))
            .with_controller_id(BrokerId(node.config.node_id))
            .with_cluster_authorized_operations(i32::MIN)
            .with_topics(topics),
    )
}

fn all_topics(node: &Node) -> Vec<MetadataResponseTopic> {
    node.topics.list().iter().map(|topic| describe(node, topic)).collect()
}

async fn requested_topic(node: &Node, name: &str, allow_create: bool) -> MetadataResponseTopic {
    if let Some(topic) = node.topics.get(name) {
        return describe(node, &topic);
    }
    let unknown = |error: ResponseError| {
        MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(name)))).with_error_code(error.code())
    };
    // As Kafka's Topic.validate: a name no topic may be created with (bad characters or length, or one
    // of Kafka's internal topics, which Once does not serve) is INVALID_TOPIC_EXCEPTION, whether or
    // not the request may auto-create; a legal absent name is UNKNOWN_TOPIC_OR_PARTITION below.
    if let Err(error) = validate_new_topic_name(name) {
        return unknown(topic_error_code(&error));
    }
    if !allow_create {
        return unknown(ResponseError::UnknownTopicOrPartition);
    }
    match node.topics.create(name, node.config.default_partitions, BTreeMap::new()).await {
        Ok(topic) => describe(node, &topic),
        // Another request created it between our look-up and our create.
        Err(TopicError::AlreadyExists(_)) => match node.topics.get(name) {
            Some(topic) => describe(node, &topic),
            None => unknown(ResponseError::UnknownTopicOrPartition),
        },
        Err(error) => unknown(topic_error_code(&error)),
    }
}

fn describe(node: &Node, topic: &Topic) -> MetadataResponseTopic {
    let node_id = BrokerId(node.config.node_id);
    let partitions = (0..topic.partition_count())
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node_id)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node_id])
                .with_isr_nodes(vec![node_id])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&topic.name))))
        .with_topic_id(topic.id)
        .with_topic_authorized_operations(i32::MIN)
        .with_partitions(partitions)
}
