//! `once topic …`, over a small blocking Kafka client built on the `kafka-protocol` codecs.
//!
//! librdkafka's admin API has no IncrementalAlterConfigs binding in the Rust crate, and topic listing
//! needs Metadata, DescribeConfigs and ListOffsets together, so these commands speak the protocol
//! directly: one request at a time on one connection.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Buf;
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};
use once_auth::ScramClient;
use once_wire::ResponseError;

use crate::admin_transport::{self, Transport};
use crate::client_settings::{AdminSecurity, ClientSettings, ClientSettingsArgs, SaslLogin};

#[derive(Args)]
pub struct TopicArgs {
    /// Broker to talk to, HOST:PORT.
    #[arg(long, global = true, env = "ONCE_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[command(flatten)]
    client_settings: ClientSettingsArgs,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (-1: the broker's default).
        #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
        partitions: i32,
        /// Topic config, KEY=VALUE (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// List topics with their partition counts.
    List,
    /// Show a topic's partitions, offsets and configs.
    Describe { name: String },
    /// Delete a topic and its data.
    Delete { name: String },
    /// Change topic configs.
    AlterConfig {
        name: String,
        /// Set KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove an override, returning KEY to its default (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

/// How the admin client reaches brokers: TLS and SASL from the client settings, shared by every
/// connection a command opens (bootstrap, then a coordinator).
pub struct Connector {
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslLogin>,
    client_id: StrBytes,
}

impl Connector {
    /// A connector for `security`; reads the certificate files now, so a bad one is reported before
    /// any connection.
    pub fn new(security: &AdminSecurity) -> anyhow::Result<Arc<Connector>> {
        let tls = security.tls.as_ref().map(admin_transport::tls_config).transpose()?;
        Ok(Arc::new(Connector { tls, sasl: security.sasl.clone(), client_id: text(&security.client_id) }))
    }

    /// A connector from a command's `--command-config`/`-X` settings.
    pub fn from_args(args: &ClientSettingsArgs) -> anyhow::Result<Arc<Connector>> {
        Connector::new(&ClientSettings::load(args)?.admin()?)
    }

    /// Connects to `address` (HOST:PORT), with TLS and a SASL login as configured.
    pub fn connect(self: &Arc<Self>, address: &str) -> anyhow::Result<AdminClient> {
        let transport = admin_transport::connect(address, self.tls.as_ref())?;
        let mut client = AdminClient { transport, correlation_id: 0, connector: self.clone() };
        if let Some(login) = &self.sasl {
            client.authenticate(login).with_context(|| {
                format!("SASL authentication as '{}' with {} at {address}", login.username, login.mechanism.name())
            })?;
        }
        Ok(client)
    }
}

/// A blocking connection that sends one request and reads its response.
pub struct AdminClient {
    transport: Transport,
    correlation_id: i32,
    connector: Arc<Connector>,
}

impl AdminClient {
    /// Connects in plaintext, without SASL.
    pub fn connect(bootstrap: &str) -> anyhow::Result<AdminClient> {
        Connector::new(&AdminSecurity { client_id: "once-cli".into(), ..AdminSecurity::default() })?.connect(bootstrap)
    }

    /// Wraps an already connected stream (plaintext, no SASL).
    pub fn from_stream(stream: std::net::TcpStream) -> AdminClient {
        let connector = Arc::new(Connector { tls: None, sasl: None, client_id: StrBytes::from_static_str("once-cli") });
        AdminClient { transport: Transport::Plain(stream), correlation_id: 0, connector }
    }

    /// Connects to `bootstrap` with a command's client settings.
    pub fn connect_with(bootstrap: &str, settings: &ClientSettingsArgs) -> anyhow::Result<AdminClient> {
        Connector::from_args(settings)?.connect(bootstrap)
    }

    /// Another connection, to `address`, with this one's security settings (a coordinator).
    pub fn connect_to(&self, address: &str) -> anyhow::Result<AdminClient> {
        self.connector.connect(address)
    }

    /// SaslHandshake v1, then the mechanism's exchange in SaslAuthenticate requests (KIP-152).
    fn authenticate(&mut self, login: &SaslLogin) -> anyhow::Result<()> {
        let mechanism = login.mechanism.name();
        let handshake = self.call(&SaslHandshakeRequest::default().with_mechanism(text(mechanism)), 1)?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|name| name.as_str()).collect();
            let detail = format!("the broker offers {}", offered.join(", "));
            check(handshake.error_code, Some(&text(&detail)), "SaslHandshake")?;
        }
        match login.scram() {
            None => {
                // PLAIN (RFC 4616): authorization id (empty), user, password.
                let message = format!("\0{}\0{}", login.username, login.password);
                self.sasl_authenticate(message.into_bytes())?;
            }
            Some(scram) => {
                let mut exchange = ScramClient::new(scram, &login.username, &login.password)?;
                let server_first = self.sasl_authenticate(exchange.client_first())?;
                let client_final = exchange.server_first(&server_first)?;
                let server_final = self.sasl_authenticate(client_final)?;
                exchange.server_final(&server_final)?;
            }
        }
        Ok(())
    }

    fn sasl_authenticate(&mut self, auth_bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let request = SaslAuthenticateRequest::default().with_auth_bytes(auth_bytes.into());
        let response = self.call(&request, 1)?;
        check(response.error_code, response.error_message.as_ref(), "authentication failed")?;
        Ok(response.auth_bytes.to_vec())
    }

    /// Sends `request` at `version` and decodes the response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> anyhow::Result<R::Response> {
        self.correlation_id += 1;
        let client_id = Some(self.connector.client_id.clone());
        let frame = once_wire::encode_request(request, version, self.correlation_id, client_id)?;
        // One write and a flush: TLS sends a record per write.
        self.transport.write_all(&frame)?;
        self.transport.flush()?;
        let mut prefix = [0u8; 4];
        self.transport
            .read_exact(&mut prefix)
            .context("reading the response (did the broker close the connection?)")?;
        let length = usize::try_from(i32::from_be_bytes(prefix)).context("negative response length")?;
        let mut frame = vec![0u8; length];
        self.transport.read_exact(&mut frame)?;
        let mut frame = bytes::Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))?;
        anyhow::ensure!(header.correlation_id == self.correlation_id, "response correlation id mismatch");
        let response = R::Response::decode(&mut frame, version)?;
        anyhow::ensure!(!frame.has_remaining(), "{} bytes left after the response", frame.remaining());
        Ok(response)
    }
}

/// Turns a Kafka error code into an error naming what was being done (and the broker's message).
pub(crate) fn check(code: i16, message: Option<&StrBytes>, what: &str) -> anyhow::Result<()> {
    if let Some(error) = ResponseError::try_from_code(code) {
        let detail = message.map(|message| format!(": {}", message.as_str())).unwrap_or_default();
        bail!("{what}: {error:?}{detail}");
    }
    Ok(())
}

fn key_value(pair: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = pair.split_once('=').with_context(|| format!("'{pair}' is not KEY=VALUE"))?;
    Ok((key.trim().to_string(), value.to_string()))
}

pub(crate) fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    let mut client = AdminClient::connect_with(&args.bootstrap, &args.client_settings)?;
    match args.command {
        TopicCommand::Create { name, partitions, configs } => create(&mut client, &name, partitions, &configs),
        TopicCommand::List => list(&mut client),
        TopicCommand::Describe { name } => describe(&mut client, &name),
        TopicCommand::Delete { name } => delete(&mut client, &name),
        TopicCommand::AlterConfig { name, set, delete } => alter(&mut client, &name, &set, &delete),
    }
}

fn create(client: &mut AdminClient, name: &str, partitions: i32, configs: &[String]) -> anyhow::Result<()> {
    let configs = configs
        .iter()
        .map(|pair| {
            key_value(pair).map(|(key, value)| {
                CreatableTopicConfig::default().with_name(text(&key)).with_value(Some(text(&value)))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let topic = CreatableTopic::default()
        .with_name(TopicName(text(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(configs);
    let request = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(30_000);
    let response = client.call(&request, 5)?;
    for result in &response.topics {
        check(result.error_code, result.error_message.as_ref(), &format!("creating topic '{name}'"))?;
        println!("created topic {name} with {} partitions", result.num_partitions);
    }
    Ok(())
}

/// Topic names and partition counts, from Metadata.
pub fn metadata(client: &mut AdminClient, topic: Option<&str>) -> anyhow::Result<Vec<(String, i32, i16)>> {
    let topics = topic.map(|name| vec![MetadataRequestTopic::default().with_name(Some(TopicName(text(name))))]);
    let request = MetadataRequest::default().with_topics(topics).with_allow_auto_topic_creation(false);
    let response = client.call(&request, 9)?;
    Ok(response
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.as_ref().map(|name| name.0.to_string()).unwrap_or_default();
            (name, topic.partitions.len() as i32, topic.error_code)
        })
        .collect())
}

fn list(client: &mut AdminClient) -> anyhow::Result<()> {
    for (name, partitions, _) in metadata(client, None)? {
        println!("{name}\tpartitions={partitions}");
    }
    Ok(())
}

/// The advertised address (`host:port`) of each partition's leader, from Metadata: requests that a
/// partition's leader must answer (ListOffsets, DescribeProducers, WriteTxnMarkers) go there, not to
/// the bootstrap broker, which on a cluster may not lead it.
pub fn leaders(client: &mut AdminClient, topic: &str) -> anyhow::Result<BTreeMap<i32, String>> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(text(topic))))]))
        .with_allow_auto_topic_creation(false);
    let response = client.call(&request, 9)?;
    let brokers: BTreeMap<i32, String> =
        response.brokers.iter().map(|broker| (broker.node_id.0, format!("{}:{}", broker.host, broker.port))).collect();
    let found = response.topics.first().with_context(|| format!("'{topic}' missing from the metadata"))?;
    check(found.error_code, None, &format!("metadata of '{topic}'"))?;
    found
        .partitions
        .iter()
        .map(|partition| {
            let leader = partition.leader_id.0;
            let address = brokers.get(&leader).with_context(|| {
                format!("{topic}-{}: leader {leader} is not among the brokers", partition.partition_index)
            })?;
            Ok((partition.partition_index, address.clone()))
        })
        .collect()
}

/// A client connected to the leader of `topic`-`partition`.
pub fn leader_client(client: &mut AdminClient, topic: &str, partition: i32) -> anyhow::Result<AdminClient> {
    let leaders = leaders(client, topic)?;
    let address = leaders.get(&partition).with_context(|| format!("'{topic}' has no partition {partition}"))?;
    client.connect_to(address).with_context(|| format!("connecting to the leader of {topic}-{partition} at {address}"))
}

/// Offsets of partitions 0..count of `topic` at `timestamp` (-1 latest, -2 earliest), each asked
/// of its partition's leader.
pub fn partition_offsets(
    client: &mut AdminClient,
    topic: &str,
    count: i32,
    timestamp: i64,
) -> anyhow::Result<Vec<i64>> {
    let leaders = leaders(client, topic)?;
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for index in 0..count {
        let leader = leaders.get(&index).with_context(|| format!("'{topic}' has no partition {index}"))?;
        by_leader.entry(leader.as_str()).or_default().push(index);
    }
    let mut found = vec![-1; count.max(0) as usize];
    for (address, indexes) in by_leader {
        let wanted = indexes
            .iter()
            .map(|&index| ListOffsetsPartition::default().with_partition_index(index).with_timestamp(timestamp))
            .collect();
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default().with_name(TopicName(text(topic))).with_partitions(wanted)]);
        let mut leader =
            client.connect_to(address).with_context(|| format!("connecting to the leader at {address}"))?;
        let response = leader.call(&request, 5)?;
        for partition in response.topics.iter().flat_map(|topic| topic.partitions.iter()) {
            check(partition.error_code, None, &format!("offsets of {topic}-{}", partition.partition_index))?;
            if let Some(slot) = found.get_mut(partition.partition_index as usize) {
                *slot = partition.offset;
            }
        }
    }
    Ok(found)
}

fn describe(client: &mut AdminClient, name: &str) -> anyhow::Result<()> {
    let (_, partitions, error_code) =
        metadata(client, Some(name))?.into_iter().next().context("empty metadata response")?;
    check(error_code, None, &format!("describing topic '{name}'"))?;
    let earliest = partition_offsets(client, name, partitions, -2)?;
    let latest = partition_offsets(client, name, partitions, -1)?;
    println!("topic {name}: {partitions} partitions");
    for index in 0..partitions as usize {
        println!("  partition {index}\tlog-start-offset={}\thigh-watermark={}", earliest[index], latest[index]);
    }
    let request = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(text(name))
        .with_configuration_keys(None)]);
    let response = client.call(&request, 4)?;
    println!("configs:");
    for result in &response.results {
        check(result.error_code, result.error_message.as_ref(), "describing configs")?;
        for config in &result.configs {
            let source = if config.config_source == 1 { " (override)" } else { "" };
            let value = config.value.as_ref().map(|value| value.as_str()).unwrap_or("");
            println!("  {}={value}{source}", config.name.as_str());
        }
    }
    Ok(())
}

fn delete(client: &mut AdminClient, name: &str) -> anyhow::Result<()> {
    let request = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(text(name))]).with_timeout_ms(30_000);
    let response = client.call(&request, 4)?;
    for result in &response.responses {
        check(result.error_code, result.error_message.as_ref(), &format!("deleting topic '{name}'"))?;
    }
    println!("deleted topic {name}");
    Ok(())
}

fn alter(client: &mut AdminClient, name: &str, set: &[String], delete: &[String]) -> anyhow::Result<()> {
    anyhow::ensure!(!set.is_empty() || !delete.is_empty(), "nothing to change: give --set KEY=VALUE or --delete KEY");
    let mut changes: BTreeMap<String, AlterableConfig> = BTreeMap::new();
    for pair in set {
        let (key, value) = key_value(pair)?;
        changes.insert(
            key.clone(),
            AlterableConfig::default().with_name(text(&key)).with_config_operation(0).with_value(Some(text(&value))),
        );
    }
    for key in delete {
        changes.insert(key.clone(), AlterableConfig::default().with_name(text(key)).with_config_operation(1));
    }
    let resource = AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(text(name))
        .with_configs(changes.into_values().collect());
    let response = client.call(&IncrementalAlterConfigsRequest::default().with_resources(vec![resource]), 1)?;
    for result in &response.responses {
        check(result.error_code, result.error_message.as_ref(), &format!("altering configs of '{name}'"))?;
    }
    println!("altered configs of {name}");
    Ok(())
}
