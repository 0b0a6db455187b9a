//! AlterConfigs (API 33, the non-incremental one kafkajs and aiokafka use) against a real broker: with
//! aiokafka from PyPI, and over the raw protocol for the edges a client library will not send.
//!
//! Kafka's semantics: the request replaces a topic's whole set of overrides (keys not named return to
//! their defaults), unknown keys and unsupported values are INVALID_CONFIG, validate_only changes
//! nothing, and the result is durable.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{AlterConfigsRequest, ApiKey, ApiVersionsRequest, DescribeConfigsRequest};
use kafka_protocol::protocol::StrBytes;
use once_cli::admin::AdminClient;
use serde_json::Value;
use support::{once, BrokerProcess};

const NONE: i64 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i64 = 3;
const INVALID_CONFIG: i64 = 40;
const INVALID_REQUEST: i64 = 42;

fn aiokafka_alter_configs(bootstrap: &str, topic: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/aiokafka_alter_configs.py");
    let output = Command::new("python3").args([script, bootstrap, topic]).output().expect("run python3");
    assert!(
        output.status.success(),
        "the aiokafka script failed (is aiokafka installed? `python3 -m pip install aiokafka`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints one JSON object")
}

/// `[value, is_default]` of `key` in a described config map.
fn entry<'a>(seen: &'a Value, step: &str, key: &str) -> (&'a str, bool) {
    let entry = &seen[step][key];
    let value = entry[0].as_str().unwrap_or_else(|| panic!("{step}: no {key} in {}", seen[step]));
    (value, entry[1].as_bool().expect("is_default is a boolean"))
}

/// The single `[error_code, error_message, name]` of an alter step.
fn outcome<'a>(seen: &'a Value, step: &str) -> (i64, &'a str) {
    let results = seen[step].as_array().unwrap_or_else(|| panic!("{step}: {}", seen[step]));
    assert_eq!(results.len(), 1, "{step}: one resource, one result: {results:?}");
    (results[0][0].as_i64().expect("error code"), results[0][1].as_str().unwrap_or(""))
}

#[test]
fn aiokafka_alter_configs_replaces_validates_and_refuses() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let seen = aiokafka_alter_configs(&bootstrap, "altered");

    assert_eq!(entry(&seen, "created", "retention.ms"), ("60000", false), "{seen}");
    assert_eq!(entry(&seen, "created", "segment.bytes"), ("1048576", false), "{seen}");

    // Replace: the two keys named are the overrides; retention.ms and segment.bytes return to defaults.
    assert_eq!(outcome(&seen, "replace").0, NONE, "{seen}");
    assert_eq!(entry(&seen, "after_replace", "retention.bytes"), ("1048576", false), "{seen}");
    assert_eq!(entry(&seen, "after_replace", "max.message.bytes"), ("2000", false), "{seen}");
    assert_eq!(entry(&seen, "after_replace", "retention.ms"), ("604800000", true), "{seen}");
    assert_eq!(entry(&seen, "after_replace", "segment.bytes"), ("1073741824", true), "{seen}");

    // validate_only: accepted, nothing changed (retention.ms still the default, the overrides kept).
    assert_eq!(outcome(&seen, "validate_only").0, NONE, "{seen}");
    assert_eq!(seen["after_validate_only"], seen["after_replace"], "validate_only changed the topic: {seen}");

    // Refused changes name the key and change nothing, not even the valid key beside the unknown one.
    let (code, message) = outcome(&seen, "unknown_key");
    assert_eq!(code, INVALID_CONFIG, "{seen}");
    assert!(message.contains("no.such.key"), "the message names the key: {message}");
    let (code, message) = outcome(&seen, "bad_value");
    assert_eq!(code, INVALID_CONFIG, "{seen}");
    assert!(message.contains("compact"), "the message names the value: {message}");
    assert_eq!(seen["after_refused"], seen["after_replace"], "a refused change altered the topic: {seen}");

    assert_eq!(outcome(&seen, "unknown_topic").0, UNKNOWN_TOPIC_OR_PARTITION, "{seen}");
    // Broker configs are static in Once: a change is refused as Kafka refuses a non-dynamic one; an
    // empty set of dynamic broker configs is what the broker already has.
    let (code, message) = outcome(&seen, "broker");
    assert_eq!(code, INVALID_REQUEST, "{seen}");
    assert!(message.contains("num.partitions"), "the message names the key: {message}");
    assert_eq!(outcome(&seen, "broker_empty").0, NONE, "{seen}");

    // Durable: after a SIGKILL the replaced overrides are still the topic's.
    broker.kill9();
    broker.restart();
    let described = once(&["topic", "describe", "altered", "--bootstrap", &bootstrap]);
    assert!(described.contains("retention.bytes=1048576 (override)"), "{described}");
    assert!(described.contains("max.message.bytes=2000 (override)"), "{described}");
    assert!(described.contains("retention.ms=604800000\n"), "{described}");
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// (resource type, resource name, [(key, value)]).
type Resource<'a> = (i8, &'a str, Vec<(&'a str, Option<&'a str>)>);

fn alter(client: &mut AdminClient, version: i16, resources: Vec<Resource<'_>>) -> Vec<i16> {
    let resources = resources
        .into_iter()
        .map(|(resource_type, name, configs)| {
            AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(text(name))
                .with_configs(
                    configs
                        .into_iter()
                        .map(|(key, value)| AlterableConfig::default().with_name(text(key)).with_value(value.map(text)))
                        .collect(),
                )
        })
        .collect();
    let response =
        client.call(&AlterConfigsRequest::default().with_resources(resources), version).expect("AlterConfigs");
    response.responses.iter().map(|result| result.error_code).collect()
}

fn overrides(client: &mut AdminClient, topic: &str) -> BTreeMap<String, String> {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default().with_resource_type(2).with_resource_name(text(topic))]);
    let response = client.call(&request, 4).expect("DescribeConfigs");
    assert_eq!(response.results[0].error_code, 0, "describe {topic}");
    response.results[0]
        .configs
        .iter()
        .filter(|config| config.config_source == 1)
        .map(|config| {
            (config.name.to_string(), config.value.as_ref().map(|value| value.to_string()).unwrap_or_default())
        })
        .collect()
}

#[test]
fn alter_configs_edges_over_the_raw_protocol() {
    let broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    let mut client = AdminClient::connect(&bootstrap).expect("connect");
    let versions = client.call(&ApiVersionsRequest::default(), 3).expect("ApiVersions");
    let advertised = versions.api_keys.iter().find(|api| api.api_key == ApiKey::AlterConfigs as i16);
    assert_eq!(
        advertised.map(|api| (api.min_version, api.max_version)),
        Some((0, 2)),
        "AlterConfigs is advertised at Kafka 4's versions"
    );
    once(&["topic", "create", "edges", "--config", "retention.ms=1000", "--bootstrap", &bootstrap]);
    let dedup_configs = ["--config", "dedup.source=key", "--config", "dedup.window.ms=60000"];
    once(&[&["topic", "create", "deduplicated"][..], &dedup_configs, &["--bootstrap", &bootstrap]].concat());

    // Every version decodes and replaces (v2 is the flexible encoding).
    for version in 0..=2i16 {
        let value = format!("{}", 2000 + version);
        assert_eq!(alter(&mut client, version, vec![(2, "edges", vec![("retention.ms", Some(&value))])]), vec![0]);
        assert_eq!(overrides(&mut client, "edges"), BTreeMap::from([("retention.ms".to_string(), value)]));
    }
    // An empty set clears every override.
    assert_eq!(alter(&mut client, 1, vec![(2, "edges", vec![])]), vec![0]);
    assert_eq!(overrides(&mut client, "edges"), BTreeMap::new());

    // Kafka refuses a null value, a key named twice and a resource named twice as INVALID_REQUEST.
    let null = alter(&mut client, 1, vec![(2, "edges", vec![("retention.ms", None)])]);
    let twice =
        alter(&mut client, 1, vec![(2, "edges", vec![("retention.ms", Some("5")), ("retention.ms", Some("6"))])]);
    let resource_twice = alter(&mut client, 1, vec![(2, "edges", vec![]), (2, "edges", vec![])]);
    assert_eq!((null, twice, resource_twice), (vec![42], vec![42], vec![42, 42]));
    assert_eq!(overrides(&mut client, "edges"), BTreeMap::new());

    // Replacing without naming dedup.source would turn deduplication off: refused, as every change
    // of the source of an existing topic is. Naming it keeps it; dedup.window.ms, not named, goes back
    // to its default (docs/clients.md says so).
    assert_eq!(
        overrides(&mut client, "deduplicated").get("dedup.window.ms").map(String::as_str),
        Some("60000"),
        "the window is an override before the replace"
    );
    assert_eq!(alter(&mut client, 1, vec![(2, "deduplicated", vec![("retention.ms", Some("5000"))])]), vec![40]);
    let kept = vec![("dedup.source", Some("key")), ("retention.ms", Some("5000"))];
    assert_eq!(alter(&mut client, 1, vec![(2, "deduplicated", kept)]), vec![0]);
    assert_eq!(
        overrides(&mut client, "deduplicated"),
        BTreeMap::from([
            ("dedup.source".to_string(), "key".to_string()),
            ("retention.ms".to_string(), "5000".to_string())
        ])
    );

    // Resource types other than topic and broker; a broker other than this one.
    assert_eq!(alter(&mut client, 1, vec![(32, "group", vec![])]), vec![42]);
    assert_eq!(alter(&mut client, 1, vec![(4, "7", vec![])]), vec![42]);
}
