//! The broker state shared by every connection, and dispatch of decoded requests to handlers.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use once_group::{CoordinatorNode, GroupConfig, GroupCoordinator, RequestContext};
use once_wire::DecodedRequest;
use serde::{Deserialize, Serialize};

use crate::config::BrokerConfig;
use crate::handlers;
use crate::producer_ids::ProducerIdAllocator;
use crate::topics::{write_atomically, TopicError, TopicRegistry};

/// A response still being produced. `None` means no response is sent (Produce with acks=0).
pub type PendingResponse = Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>;

/// How a connection treats a request.
pub enum Dispatch {
    /// The work was queued in request order (Produce): the next request may be read at once, and the
    /// response is written when this resolves, still in order.
    Queued(PendingResponse),
    /// The connection finishes this request before it reads the next one (what Kafka does for all).
    InOrder(PendingResponse),
}

/// Identity of this broker and cluster, created once and kept in `<data>/broker.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerIdentity {
    pub cluster_id: String,
}

/// Where clients reach this broker.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

pub struct Broker {
    pub config: BrokerConfig,
    pub identity: BrokerIdentity,
    pub endpoint: Endpoint,
    pub topics: TopicRegistry,
    /// Producer ids for InitProducerId, unique across restarts.
    pub producer_ids: ProducerIdAllocator,
    /// Coordinator of every consumer group; its offsets log lives under `<data>/groups`.
    pub groups: Arc<GroupCoordinator>,
}

impl Broker {
    /// Opens the data directory (recovering every log). Needs a tokio runtime.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, TopicError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| TopicError::Io { path: config.data_dir.clone(), source })?;
        let identity = load_identity(&config.data_dir)?;
        let advertised = config.advertised_listener.clone().unwrap_or_else(|| config.listen.clone());
        let endpoint = parse_endpoint(&advertised)
            .ok_or_else(|| TopicError::InvalidConfig(format!("advertised listener '{advertised}' is not HOST:PORT")))?;
        let topics = TopicRegistry::open(&config.data_dir, config.topic_defaults.clone())?;
        let node = CoordinatorNode { node_id: config.node_id, host: endpoint.host.clone(), port: endpoint.port };
        let mut group_config = GroupConfig::new(&config.data_dir, node);
        group_config.unsafe_skip_fsync = config.topic_defaults.unsafe_skip_fsync;
        let groups_dir = group_config.offsets_dir.clone();
        let groups = GroupCoordinator::open(group_config)
            .map_err(|error| TopicError::Io { path: groups_dir, source: std::io::Error::other(error.to_string()) })?;
        let producer_ids = ProducerIdAllocator::open(&config.data_dir)?;
        Ok(Arc::new(Broker { config, identity, endpoint, topics, groups, producer_ids }))
    }

    /// Closes the coordinators' internal logs cleanly. The server calls it at shutdown, after the
    /// connections have drained and before (or after) `topics.close_all()`.
    pub async fn close_coordinators(&self) {
        self.groups.close().await;
    }

    /// Routes one request. Produce enqueues its appends before this returns, so appends of one
    /// connection reach each partition in the order they were sent.
    pub fn dispatch(self: &Arc<Self>, request: DecodedRequest) -> Dispatch {
        let broker = self.clone();
        let version = request.api_version;
        let header = request.header;
        match request.body {
            RequestKind::Produce(body) => Dispatch::Queued(handlers::produce::handle(&broker, body, version)),
            RequestKind::ApiVersions(body) => in_order(async move { handlers::api_versions::handle(&body, version) }),
            RequestKind::Metadata(body) => {
                in_order(async move { handlers::metadata::handle(&broker, body, version).await })
            }
            RequestKind::Fetch(body) => in_order(async move { handlers::fetch::handle(&broker, body, version).await }),
            RequestKind::ListOffsets(body) => {
                in_order(async move { handlers::list_offsets::handle(&broker, body, version).await })
            }
            RequestKind::CreateTopics(body) => {
                in_order(async move { handlers::admin::create_topics(&broker, body, version).await })
            }
            RequestKind::DeleteTopics(body) => {
                in_order(async move { handlers::admin::delete_topics(&broker, body, version).await })
            }
            RequestKind::CreatePartitions(body) => {
                in_order(async move { handlers::admin::create_partitions(&broker, body).await })
            }
            RequestKind::DescribeConfigs(body) => {
                in_order(async move { handlers::configs::describe(&broker, body, version) })
            }
            RequestKind::IncrementalAlterConfigs(body) => {
                in_order(async move { handlers::configs::alter(&broker, body).await })
            }
            RequestKind::DescribeCluster(body) => in_order(async move { handlers::cluster::describe(&broker, &body) }),
            RequestKind::InitProducerId(body) => {
                in_order(async move { handlers::producer::init_producer_id(&broker, &body) })
            }
            body @ (RequestKind::FindCoordinator(_)
            | RequestKind::JoinGroup(_)
            | RequestKind::SyncGroup(_)
            | RequestKind::Heartbeat(_)
            | RequestKind::LeaveGroup(_)
            | RequestKind::OffsetCommit(_)
            | RequestKind::OffsetFetch(_)
            | RequestKind::OffsetDelete(_)
            | RequestKind::ListGroups(_)
            | RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)) => Dispatch::InOrder(Box::pin(async move {
                let client_id = header.client_id.as_deref().unwrap_or("").to_string();
                let partition_exists = |topic: &str, partition: i32| {
                    broker.topics.get(topic).is_some_and(|found| found.partition(partition).is_some())
                };
                let context =
                    RequestContext { client_id: &client_id, client_host: "", partition_exists: &partition_exists };
                broker.groups.handle(body, version, &context).await
            })),
            other => {
                // The version table and this match must agree; a request that passed the table but has
                // no handler is a bug. Close rather than answer wrongly.
                tracing::error!(api = ?std::mem::discriminant(&other), client = ?header.client_id, "no handler for a served API");
                Dispatch::InOrder(Box::pin(async { None }))
            }
        }
    }
}

fn in_order<F>(future: F) -> Dispatch
where
    F: Future<Output = ResponseKind> + Send + 'static,
{
    Dispatch::InOrder(Box::pin(async move { Some(future.await) }))
}

fn load_identity(data_dir: &Path) -> Result<BrokerIdentity, TopicError> {
    let path = data_dir.join("broker.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|error| TopicError::Io {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity = BrokerIdentity { cluster_id: cluster_id_from(uuid::Uuid::new_v4()) };
            let text =
                serde_json::to_vec_pretty(&identity).map_err(|error| TopicError::InvalidConfig(error.to_string()))?;
            write_atomically(&path, &text)?;
            Ok(identity)
        }
        Err(source) => Err(TopicError::Io { path, source }),
    }
}

/// Kafka cluster ids are 22-character URL-safe base64 of 16 random bytes.
fn cluster_id_from(id: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = id.as_u128();
    (0..22).map(|index| ALPHABET[((value >> (index * 6)) & 63) as usize] as char).collect()
}

/// Splits `HOST:PORT` (IPv6 in brackets allowed).
pub fn parse_endpoint(address: &str) -> Option<Endpoint> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some(Endpoint { host: host.to_string(), port: i32::from(port) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let endpoint = parse_endpoint("127.0.0.1:9092").expect("parses");
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", 9092));
        assert_eq!(parse_endpoint("[::1]:19092").map(|endpoint| endpoint.host), Some("::1".to_string()));
        assert!(parse_endpoint("nohost").is_none());
        assert!(parse_endpoint(":9092").is_none());
        assert!(parse_endpoint("host:99999").is_none());
        assert_eq!(cluster_id_from(uuid::Uuid::nil()).len(), 22);
    }
}
