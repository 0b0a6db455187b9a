//! DescribeConfigs and IncrementalAlterConfigs for topics (and a read-only view of the broker).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use once_wire::ResponseError;

use super::admin::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::str_bytes;
use crate::broker::Broker;
use crate::errors::topic_error_code;
use crate::topic_config::{self, ConfigType, TopicConfig, CONFIG_KEYS};
use crate::topics::TopicError;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's STATIC_BROKER_CONFIG source.
const SOURCE_STATIC_BROKER: i8 = 4;

const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
const OPERATION_APPEND: i8 = 2;
const OPERATION_SUBTRACT: i8 = 3;

pub fn describe(broker: &Broker, request: DescribeConfigsRequest, version: i16) -> ResponseKind {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |name: &str| {
                // Null or empty asks for every key, as in Kafka.
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.is_empty() || keys.iter().any(|key| key.as_str() == name))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                RESOURCE_TOPIC => match broker.topics.get(resource.resource_name.as_str()) {
                    Some(topic) => result.with_configs(describe_topic(&topic.config(), &wanted, version)),
                    None => result.with_error_code(ResponseError::UnknownTopicOrPartition.code()).with_error_message(
                        Some(str_bytes(&format!("topic '{}' does not exist", resource.resource_name))),
                    ),
                },
                RESOURCE_BROKER => result.with_configs(describe_broker(broker, &wanted)),
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(str_bytes(&format!("resource type {other} is not supported")))),
            }
        })
        .collect();
    ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(results))
}

fn describe_topic(
    config: &TopicConfig,
    wanted: &dyn Fn(&str) -> bool,
    version: i16,
) -> Vec<DescribeConfigsResourceResult> {
    CONFIG_KEYS
        .iter()
        .filter(|key| wanted(key.name))
        .filter_map(|key| {
            let (value, overridden) = config.value_of(key.name)?;
            let mut entry = DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(key.name))
                .with_value(Some(str_bytes(&value)))
                .with_config_source(if overridden { SOURCE_TOPIC } else { SOURCE_DEFAULT })
                .with_config_type(key.config_type as i8);
            if version >= 3 {
                entry = entry.with_documentation(Some(StrBytes::from_static_str(key.documentation)));
            }
            Some(entry)
        })
        .collect()
}

fn describe_broker(broker: &Broker, wanted: &dyn Fn(&str) -> bool) -> Vec<DescribeConfigsResourceResult> {
    let config = &broker.config;
    let entries = [
        ("auto.create.topics.enable", config.auto_create_topics.to_string(), ConfigType::String),
        ("num.partitions", config.default_partitions.to_string(), ConfigType::Int),
        ("socket.request.max.bytes", config.request_bytes_max.to_string(), ConfigType::Int),
        ("log.retention.check.interval.ms", config.retention_check_interval_ms.to_string(), ConfigType::Long),
        ("broker.id", config.node_id.to_string(), ConfigType::Int),
    ];
    entries
        .into_iter()
        .filter(|(name, _, _)| wanted(name))
        .map(|(name, value, config_type)| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(str_bytes(&value)))
                .with_read_only(true)
                .with_config_source(SOURCE_STATIC_BROKER)
                .with_config_type(config_type as i8)
        })
        .collect()
}

pub async fn alter(broker: &Arc<Broker>, request: IncrementalAlterConfigsRequest) -> ResponseKind {
    let mut responses = Vec::with_capacity(request.resources.len());
    let keys: Vec<String> = request
        .resources
        .iter()
        .map(|resource| format!("{}/{}", resource.resource_type, resource.resource_name))
        .collect();
    let duplicated = super::admin::duplicates(keys.iter().map(String::as_str));
    for (resource, key) in request.resources.into_iter().zip(&keys) {
        // A resource named twice is refused, as Kafka does, rather than applied in some order.
        let outcome = match duplicated.contains(key) {
            true => Err((
                ResponseError::InvalidRequest,
                format!("resource {} appears more than once", resource.resource_name),
            )),
            false => alter_one(broker, &resource, request.validate_only).await,
        };
        let response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        responses.push(match outcome {
            Ok(()) => response,
            Err((code, message)) => response.with_error_code(code.code()).with_error_message(Some(str_bytes(&message))),
        });
    }
    ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

async fn alter_one(
    broker: &Broker,
    resource: &AlterConfigsResource,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if resource.resource_type != RESOURCE_TOPIC {
        return Err((ResponseError::InvalidRequest, "only topic configs can be altered".into()));
    }
    let name = resource.resource_name.as_str();
    let outcome = broker
        .topics
        .update_config(name, validate_only, |config| {
            let mut overrides = config.overrides.clone();
            for change in &resource.configs {
                let value = change.value.as_ref().map(|value| value.as_str());
                apply(&mut overrides, config, change.name.as_str(), change.config_operation, value)
                    .map_err(TopicError::InvalidConfig)?;
            }
            Ok(overrides)
        })
        .await;
    outcome.map_err(|error| (topic_error_code(&error), error.to_string()))
}

/// Applies one incremental change to a topic's overrides.
fn apply(
    overrides: &mut BTreeMap<String, String>,
    config: &TopicConfig,
    name: &str,
    operation: i8,
    value: Option<&str>,
) -> Result<(), String> {
    let key = topic_config::key(name).ok_or_else(|| format!("unknown topic config '{name}'"))?;
    let is_list = key.config_type == ConfigType::List;
    match operation {
        OPERATION_SET => {
            let value = value.ok_or_else(|| format!("SET of {name} needs a value"))?;
            topic_config::validate(name, value)?;
            overrides.insert(name.to_string(), value.to_string());
        }
        OPERATION_DELETE => {
            overrides.remove(name);
        }
        OPERATION_APPEND | OPERATION_SUBTRACT if is_list => {
            let value = value.ok_or_else(|| format!("APPEND/SUBTRACT of {name} needs a value"))?;
            let current = config.value_of(name).map(|(value, _)| value).unwrap_or_default();
            let mut items: Vec<String> =
                current.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect();
            for item in value.split(',').map(str::trim).filter(|item| !item.is_empty()) {
                if operation == OPERATION_APPEND && !items.iter().any(|existing| existing == item) {
                    items.push(item.to_string());
                } else if operation == OPERATION_SUBTRACT {
                    items.retain(|existing| existing != item);
                }
            }
            let joined = items.join(",");
            topic_config::validate(name, &joined)?;
            overrides.insert(name.to_string(), joined);
        }
        OPERATION_APPEND | OPERATION_SUBTRACT => {
            return Err(format!("{name} is not a list; APPEND and SUBTRACT apply to lists only"))
        }
        other => return Err(format!("unknown config operation {other}")),
    }
    Ok(())
}
