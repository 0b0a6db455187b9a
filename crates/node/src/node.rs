//! [`Node`]: the broker's state, opened from its data directory, and the operations every edge calls.

use std::path::Path;
use std::sync::Arc;

use once_group::{CoordinatorNode, GroupConfig, GroupCoordinator};
use once_txn::{TxnConfig, TxnCoordinator};
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::markers::Markers;
use crate::producer_ids::ProducerIdAllocator;
use crate::storage::FreeSpaceFloor;
use crate::topics::{write_atomically, TopicError, TopicRegistry};
use crate::upkeep::Upkeep;

/// Identity of this broker and cluster, created once and kept in `<data>/broker.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrokerIdentity {
    pub cluster_id: String,
}

/// Where clients reach this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
}

/// The state every connection of every edge shares. Opening it recovers every log and starts the
/// upkeep it owns (retention, dedup index upkeep) and the transaction coordinator's marker delivery;
/// [`Node::close`] stops them and closes every log cleanly.
pub struct Node {
    pub config: NodeConfig,
    pub identity: BrokerIdentity,
    /// The first listener's advertised address (the group coordinator's, the HTTP edge's).
    pub endpoint: Endpoint,
    /// Every listener, with its protocol and advertised address.
    pub listeners: Vec<crate::listeners::Listener>,
    /// Shared with the upkeep tasks and the marker writer, which need the topics but not the node.
    pub topics: Arc<TopicRegistry>,
    /// Producer ids for InitProducerId, unique across restarts.
    pub producer_ids: Arc<ProducerIdAllocator>,
    /// Coordinator of every consumer group; its offsets log lives under `<data>/groups`.
    pub groups: Arc<GroupCoordinator>,
    /// Coordinator of every transactional id; its log lives under `<data>/transactions`.
    pub txns: Arc<TxnCoordinator>,
    /// SCRAM verifiers of the users SASL listeners and the HTTP edge authenticate
    /// (`<data>/credentials.json`); opened only when a SASL listener, an HTTP listener or
    /// `--scram-user` needs it (the store locks its file while open).
    pub credentials: Option<Arc<once_auth::CredentialStore>>,
    /// The access policy every edge consults before it calls an operation (`<data>/acls.json`).
    pub authorizer: Arc<crate::acls::Authorizer>,
    /// Requests answered, per API (the Kafka edge records them).
    pub requests: crate::stats::RequestStats,
    /// Client connections of the Kafka edge.
    pub connections: crate::stats::ConnectionStats,
    /// Record bytes Fetch responses hold until written, against `queued_request_bytes_max`: new fetches
    /// read less once it is spent.
    pub fetch_memory: Arc<crate::fetch_memory::FetchMemory>,
    /// The free-space floor produce is admitted by.
    pub floor: Arc<FreeSpaceFloor>,
    /// The background tasks of the registry, stopped by [`Node::close`] (or when the node is dropped).
    upkeep: Upkeep,
}

impl Node {
    /// Opens the data directory (recovering every log). Needs a tokio runtime.
    pub fn open(config: NodeConfig) -> Result<Arc<Node>, TopicError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| TopicError::Io { path: config.data_dir.clone(), source })?;
        let identity = load_identity(&config.data_dir)?;
        let fetch_memory = Arc::new(crate::fetch_memory::FetchMemory::new(config.queued_request_bytes_max.max(1)));
        let floor = Arc::new(
            FreeSpaceFloor::new(&config.data_dir, config.min_free_bytes)
                .map_err(|source| TopicError::Io { path: config.data_dir.clone(), source })?,
        );
        let advertised: Vec<String> =
            config.advertised_listener.iter().cloned().chain(config.advertised_listeners.iter().cloned()).collect();
        let listeners = crate::listeners::resolve(&config.listen, &config.listeners, &advertised)
            .map_err(TopicError::InvalidConfig)?;
        let endpoint = listeners[0].advertised.clone();
        // After the listeners are known good: a bad flag writes nothing.
        let needs_credentials = config.http_users
            || !config.scram_users.is_empty()
            || listeners.iter().any(|listener| listener.protocol.sasl());
        let credentials = if needs_credentials { Some(open_credentials(&config)?) } else { None };
        let authorizer = Arc::new(
            crate::acls::Authorizer::open(&config.data_dir, config.authorization, config.super_users.clone())
                .map_err(TopicError::InvalidConfig)?,
        );
        let topics = Arc::new(TopicRegistry::open(&config.data_dir, config.topic_defaults.clone())?);
        topics.set_file_reserve(crate::storage::file_reserve(config.connections_max));
        let node = CoordinatorNode { node_id: config.node_id, host: endpoint.host.clone(), port: endpoint.port };
        let mut group_config = GroupConfig::new(&config.data_dir, node);
        group_config.unsafe_skip_fsync = config.topic_defaults.unsafe_skip_fsync;
        let groups_dir = group_config.offsets_dir.clone();
        let groups = GroupCoordinator::open(group_config)
            .map_err(|error| TopicError::Io { path: groups_dir, source: std::io::Error::other(error.to_string()) })?;
        let producer_ids = Arc::new(ProducerIdAllocator::open(&config.data_dir)?);
        let txn_dir = config.data_dir.join("transactions").join("__transaction_state-0");
        let mut txn_config = TxnConfig::new(txn_dir.clone());
        txn_config.unsafe_skip_fsync = config.topic_defaults.unsafe_skip_fsync;
        txn_config.max_timeout_ms = config.transaction_max_timeout_ms;
        txn_config.abort_check_interval = std::time::Duration::from_millis(config.transaction_abort_check_interval_ms);
        txn_config.transactional_id_expiration_ms = config.transactional_id_expiration_ms;
        txn_config.crash_point = config.test_crash_point.clone();
        let ids = producer_ids.clone();
        let txns =
            TxnCoordinator::open(txn_config, Arc::new(move || ids.allocate().map_err(|error| error.to_string())))
                .map_err(|error| TopicError::Io { path: txn_dir, source: std::io::Error::other(error.to_string()) })?;
        txns.start(Arc::new(Markers::new(topics.clone(), groups.clone())));
        let upkeep = Upkeep::start(topics.clone(), &config);
        Ok(Arc::new(Node {
            config,
            identity,
            endpoint,
            listeners,
            topics,
            groups,
            producer_ids,
            txns,
            credentials,
            authorizer,
            requests: crate::stats::RequestStats::new(),
            connections: crate::stats::ConnectionStats::default(),
            fetch_memory,
            floor,
            upkeep,
        }))
    }

    /// Stops the upkeep tasks (retention, dedup upkeep): an edge calls it as soon as it starts shutting
    /// down, before it drains its connections. Idempotent.
    pub fn stop_upkeep(&self) {
        self.upkeep.stop();
    }

    /// Stops the upkeep and waits for a round in progress, then closes every partition (snapshotting dedup indexes) and the
    /// coordinators' internal logs cleanly. Edges call it once they have drained their connections.
    pub async fn close(&self) {
        // A retention pass or dedup snapshot still running would race the partitions' close.
        self.upkeep.finished().await;
        self.topics.close_all().await;
        self.close_coordinators().await;
    }

    /// Closes the coordinators' internal logs cleanly ([`Node::close`] does it after the topics).
    pub async fn close_coordinators(&self) {
        self.txns.close().await;
        self.groups.close().await;
    }
}

/// Opens the credential store and creates each `--scram-user` that has no verifier yet, with both
/// SCRAM mechanisms (an existing user keeps its password: the flag bootstraps, it does not reset).
fn open_credentials(config: &NodeConfig) -> Result<Arc<once_auth::CredentialStore>, TopicError> {
    let path = config.data_dir.join("credentials.json");
    let auth_error = |error: once_auth::AuthError| TopicError::InvalidConfig(format!("credentials: {error}"));
    let store = once_auth::CredentialStore::open(&path).map_err(auth_error)?;
    for (user, password) in &config.scram_users {
        for mechanism in once_auth::ScramMechanism::ALL {
            if store.get(user, mechanism).is_none() {
                let credential = once_auth::ScramCredential::new(password, mechanism, once_auth::ITERATIONS_DEFAULT)
                    .map_err(auth_error)?;
                store.upsert(user, mechanism, credential).map_err(auth_error)?;
                tracing::info!(user = %user, mechanism = mechanism.name(), "SCRAM user created");
            }
        }
    }
    Ok(Arc::new(store))
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
