//! CreateTopics, DeleteTopics, CreatePartitions; translation only: the requests become the node's
//! topic registry operations (`once_node::topics`) and their `TopicError`s Kafka codes
//! (`errors::topic_error_code`). What the request itself must hold (a topic named twice, a manual
//! replica assignment) is checked here, as part of reading it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use once_node::topic_config::{TopicConfig, CONFIG_KEYS};
use once_node::topics::TopicError;
use once_node::Node;

use super::str_bytes;
use crate::errors::topic_error_code;

/// Config source DYNAMIC_TOPIC_CONFIG and DEFAULT_CONFIG, as Kafka reports them.
pub(crate) const SOURCE_TOPIC: i8 = 1;
pub(crate) const SOURCE_DEFAULT: i8 = 5;

pub async fn create_topics(node: &Arc<Node>, request: CreateTopicsRequest, version: i16) -> ResponseKind {
    let mut results = Vec::with_capacity(request.topics.len());
    let duplicated = duplicates(request.topics.iter().map(|topic| topic.name.0.as_str()));
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = if topic.num_partitions == -1 { node.config.default_partitions } else { topic.num_partitions };
        let configs: BTreeMap<String, String> = topic
            .configs
            .iter()
            .filter_map(|config| config.value.as_ref().map(|value| (config.name.to_string(), value.to_string())))
            .collect();
        // Kafka refuses every entry of a name given twice, rather than acting on one of them.
        let outcome = if duplicated.contains(&name) {
            Err(TopicError::DuplicateInRequest(name.clone()))
        } else if !topic.assignments.is_empty() {
            Err(TopicError::InvalidPartitions("manual replica assignment is not supported on a single broker".into()))
        } else if request.validate_only {
            node.topics.check_create(&name, partitions, topic.replication_factor, &configs)
        } else {
            match node.topics.check_create(&name, partitions, topic.replication_factor, &configs) {
                Ok(()) => node.topics.create(&name, partitions, configs.clone()).await.map(|_| ()),
                Err(error) => Err(error),
            }
        };
        let result = CreatableTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => {
                let id = node.topics.get(&name).map(|topic| topic.id).unwrap_or_default();
                let config = TopicConfig::new(configs, node.topics.defaults().clone());
                let result = result.with_topic_id(id);
                // Partition count, replication factor and configs are in the response from v5.
                if version >= 5 {
                    result
                        .with_num_partitions(partitions)
                        .with_replication_factor(1)
                        .with_configs(Some(describe_for_create(&config)))
                } else {
                    result
                }
            }
            Err(error) => result
                .with_error_code(topic_error_code(&error).code())
                .with_error_message(Some(str_bytes(&error.to_string())))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(results))
}

fn describe_for_create(config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    CONFIG_KEYS
        .iter()
        .filter_map(|key| {
            let (value, overridden) = config.value_of(key.name)?;
            Some(
                CreatableTopicConfigs::default()
                    .with_name(StrBytes::from_static_str(key.name))
                    .with_value(Some(str_bytes(&value)))
                    .with_config_source(if overridden { SOURCE_TOPIC } else { SOURCE_DEFAULT }),
            )
        })
        .collect()
}

pub async fn delete_topics(node: &Arc<Node>, request: DeleteTopicsRequest, version: i16) -> ResponseKind {
    // v0-5 name topics in `topic_names`; v6+ in `topics` (Once serves up to v5).
    let names: Vec<_> = if version >= 6 {
        request.topics.into_iter().filter_map(|topic| topic.name).collect()
    } else {
        request.topic_names
    };
    let mut responses = Vec::with_capacity(names.len());
    let duplicated = duplicates(names.iter().map(|name| name.0.as_str()));
    for name in names {
        let outcome = match duplicated.contains(name.0.as_str()) {
            true => Err(TopicError::DuplicateInRequest(name.0.to_string())),
            false => node.topics.delete(&name.0).await,
        };
        let result = DeletableTopicResult::default().with_name(Some(name));
        responses.push(match outcome {
            Ok(id) => result.with_topic_id(id),
            Err(error) => result
                .with_error_code(topic_error_code(&error).code())
                .with_error_message(Some(str_bytes(&error.to_string()))),
        });
    }
    ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(responses))
}

pub async fn create_partitions(node: &Arc<Node>, request: CreatePartitionsRequest) -> ResponseKind {
    let mut results = Vec::with_capacity(request.topics.len());
    let duplicated = duplicates(request.topics.iter().map(|topic| topic.name.0.as_str()));
    for topic in request.topics {
        let outcome = if duplicated.contains(topic.name.0.as_str()) {
            Err(TopicError::DuplicateInRequest(topic.name.0.to_string()))
        } else if topic.assignments.is_some() {
            Err(TopicError::InvalidPartitions("manual replica assignment is not supported on a single broker".into()))
        } else if request.validate_only {
            node.topics.check_add_partitions(&topic.name.0, topic.count).map(|_| ())
        } else {
            node.topics.add_partitions(&topic.name.0, topic.count).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name);
        results.push(match outcome {
            Ok(()) => result,
            Err(error) => result
                .with_error_code(topic_error_code(&error).code())
                .with_error_message(Some(str_bytes(&error.to_string()))),
        });
    }
    ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(results))
}

/// Names that occur more than once.
pub(crate) fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    names.filter(|name| !seen.insert(*name)).map(str::to_string).collect()
}
