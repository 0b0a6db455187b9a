//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and a read-only view of the
//! broker); translation only: the requests become the node's topic configuration operations
//! (`once_node::topic_config`, validation and defaults there) and their outcomes Kafka answers.
//!
//! The two alter APIs differ only in how they say what the new overrides are: IncrementalAlterConfigs
//! applies operations (set, delete, append, subtract) to the current overrides; AlterConfigs, the older
//! API that kafkajs and aiokafka use, names the complete new set, so a key it does not name returns to
//! its default. Both are turned into one `ResourceChange` and checked, validated and applied by the
//! same code, with Kafka's answers: a resource or key named twice, or a null value, is INVALID_REQUEST;
//! an unknown key or a value Once does not support is INVALID_CONFIG; an unknown topic is
//! UNKNOWN_TOPIC_OR_PARTITION; `validate_only` changes nothing. Broker configs are static in Once (set
//! by `once serve`'s options): a change to one is refused as Kafka refuses a change to a broker config
//! that is not dynamic (INVALID_REQUEST, "cannot be updated dynamically"), while a request naming no
//! broker config succeeds, since the broker has no dynamic configs to replace.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use once_node::topic_config::{self, ConfigType, TopicConfig, CONFIG_KEYS};
use once_node::topics::TopicError;
use once_node::Node;
use once_wire::ResponseError;

use super::admin::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::str_bytes;
use crate::errors::topic_error_code;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's STATIC_BROKER_CONFIG source.
const SOURCE_STATIC_BROKER: i8 = 4;

const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
const OPERATION_APPEND: i8 = 2;
const OPERATION_SUBTRACT: i8 = 3;

pub fn describe(node: &Node, request: DescribeConfigsRequest, version: i16) -> ResponseKind {
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
                RESOURCE_TOPIC => match node.topics.get(resource.resource_name.as_str()) {
                    Some(topic) => result.with_configs(describe_topic(&topic.config(), &wanted, version)),
                    None => result.with_error_code(ResponseError::UnknownTopicOrPartition.code()).with_error_message(
                        Some(str_bytes(&format!("topic '{}' does not exist", resource.resource_name))),
                    ),
                },
                RESOURCE_BROKER => result.with_configs(describe_broker(node, &wanted)),
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

fn describe_broker(node: &Node, wanted: &dyn Fn(&str) -> bool) -> Vec<DescribeConfigsResourceResult> {
    let config = &node.config;
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

/// One resource's change, from either alter API.
struct ResourceChange {
    resource_type: i8,
    resource_name: String,
    how: ChangeKind,
    /// (key, value) pairs; for IncrementalAlterConfigs each with its operation.
    entries: Vec<ConfigEntry>,
}

struct ConfigEntry {
    name: String,
    value: Option<String>,
    /// Incremental operation (SET, DELETE, APPEND, SUBTRACT); `None` for AlterConfigs.
    operation: Option<i8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    /// IncrementalAlterConfigs: apply the entries to the current overrides.
    Incremental,
    /// AlterConfigs: the entries are the complete new set of overrides.
    Replace,
}

type AlterOutcome = Result<(), (ResponseError, String)>;

/// AlterConfigs (API 33): replaces each named topic's overrides with the request's.
pub async fn alter_replacing(node: &Arc<Node>, request: AlterConfigsRequest) -> ResponseKind {
    let changes = request
        .resources
        .iter()
        .map(|resource| ResourceChange {
            resource_type: resource.resource_type,
            resource_name: resource.resource_name.to_string(),
            how: ChangeKind::Replace,
            entries: resource
                .configs
                .iter()
                .map(|config| ConfigEntry {
                    name: config.name.to_string(),
                    value: config.value.as_ref().map(|value| value.to_string()),
                    operation: None,
                })
                .collect(),
        })
        .collect();
    let outcomes = alter_resources(node, changes, request.validate_only).await;
    let responses = request
        .resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let response = alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(()) => response,
                Err((code, message)) => {
                    response.with_error_code(code.code()).with_error_message(Some(str_bytes(&message)))
                }
            }
        })
        .collect();
    ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(responses))
}

/// IncrementalAlterConfigs (API 44): applies each resource's operations to its current overrides.
pub async fn alter(node: &Arc<Node>, request: IncrementalAlterConfigsRequest) -> ResponseKind {
    let changes = request
        .resources
        .iter()
        .map(|resource| ResourceChange {
            resource_type: resource.resource_type,
            resource_name: resource.resource_name.to_string(),
            how: ChangeKind::Incremental,
            entries: resource
                .configs
                .iter()
                .map(|config| ConfigEntry {
                    name: config.name.to_string(),
                    value: config.value.as_ref().map(|value| value.to_string()),
                    operation: Some(config.config_operation),
                })
                .collect(),
        })
        .collect();
    let outcomes = alter_resources(node, changes, request.validate_only).await;
    let responses = request
        .resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let response = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            match outcome {
                Ok(()) => response,
                Err((code, message)) => {
                    response.with_error_code(code.code()).with_error_message(Some(str_bytes(&message)))
                }
            }
        })
        .collect();
    ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

/// Checks and applies every resource's change, one outcome per resource in request order.
async fn alter_resources(node: &Node, changes: Vec<ResourceChange>, validate_only: bool) -> Vec<AlterOutcome> {
    let keys: Vec<String> =
        changes.iter().map(|change| format!("{}/{}", change.resource_type, change.resource_name)).collect();
    let duplicated = super::admin::duplicates(keys.iter().map(String::as_str));
    let mut outcomes = Vec::with_capacity(changes.len());
    for (change, key) in changes.iter().zip(&keys) {
        // A resource named twice is refused, as Kafka does, rather than applied in some order.
        outcomes.push(match duplicated.contains(key) {
            true => Err((
                ResponseError::InvalidRequest,
                format!("resource {} appears more than once", change.resource_name),
            )),
            false => alter_one(node, change, validate_only).await,
        });
    }
    outcomes
}

async fn alter_one(node: &Node, change: &ResourceChange, validate_only: bool) -> AlterOutcome {
    check_entries(change)?;
    match change.resource_type {
        RESOURCE_TOPIC => {
            let outcome = node
                .topics
                .update_config(&change.resource_name, validate_only, |config| {
                    new_overrides(config, change).map_err(TopicError::InvalidConfig)
                })
                .await;
            outcome.map_err(|error| (topic_error_code(&error), error.to_string()))
        }
        RESOURCE_BROKER => check_broker_change(node, change),
        other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
    }
}

/// The request-shape checks Kafka makes before looking at the resource: each key at most once, and a
/// value for every key (except an incremental DELETE).
fn check_entries(change: &ResourceChange) -> AlterOutcome {
    let duplicated = super::admin::duplicates(change.entries.iter().map(|entry| entry.name.as_str()));
    if let Some(name) = duplicated.iter().next() {
        return Err((ResponseError::InvalidRequest, format!("config {name} appears more than once")));
    }
    let without_value: Vec<&str> = change
        .entries
        .iter()
        .filter(|entry| entry.value.is_none() && entry.operation != Some(OPERATION_DELETE))
        .map(|entry| entry.name.as_str())
        .collect();
    if !without_value.is_empty() {
        return Err((ResponseError::InvalidRequest, format!("null value for {}", without_value.join(", "))));
    }
    Ok(())
}

/// Once has no dynamic broker configs: naming one is refused; naming none changes nothing.
fn check_broker_change(node: &Node, change: &ResourceChange) -> AlterOutcome {
    let node_id = node.config.node_id.to_string();
    if !change.resource_name.is_empty() && change.resource_name != node_id {
        return Err((
            ResponseError::InvalidRequest,
            format!("unexpected broker id {}: this broker is {node_id}", change.resource_name),
        ));
    }
    if change.entries.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = change.entries.iter().map(|entry| entry.name.as_str()).collect();
    Err((
        ResponseError::InvalidRequest,
        format!(
            "cannot update these broker configs dynamically: {}; Once's broker configs are set when it starts \
             (`once serve` options or its config file)",
            names.join(", ")
        ),
    ))
}

/// A topic's new overrides: each entry validated, then applied to the current overrides
/// (incremental) or taken as the complete set (replace).
fn new_overrides(config: &TopicConfig, change: &ResourceChange) -> Result<BTreeMap<String, String>, String> {
    let mut overrides = match change.how {
        ChangeKind::Incremental => config.overrides.clone(),
        ChangeKind::Replace => BTreeMap::new(),
    };
    for entry in &change.entries {
        let value = entry.value.as_deref();
        match entry.operation {
            Some(operation) => apply(&mut overrides, config, &entry.name, operation, value)?,
            None => {
                // check_entries refused null values already.
                let value = value.ok_or_else(|| format!("{} needs a value", entry.name))?;
                topic_config::validate(&entry.name, value)?;
                overrides.insert(entry.name.clone(), value.to_string());
            }
        }
    }
    Ok(overrides)
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
