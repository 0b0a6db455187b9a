//! The broker state shared by every connection, and dispatch of decoded requests to handlers.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use once_group::GroupError;
use once_group::{CoordinatorNode, GroupConfig, GroupCoordinator, RequestContext};
use once_partition::{PartitionError, TxnMarker};
use once_txn::{BoxFuture, MarkerError, MarkerWriter, TxnConfig, TxnCoordinator};
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
    pub producer_ids: Arc<ProducerIdAllocator>,
    /// Coordinator of every consumer group; its offsets log lives under `<data>/groups`.
    pub groups: Arc<GroupCoordinator>,
    /// Coordinator of every transactional id; its log lives under `<data>/transactions`.
    pub txns: Arc<TxnCoordinator>,
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
        let broker = Arc::new(Broker { config, identity, endpoint, topics, groups, producer_ids, txns });
        broker.txns.start(Arc::new(Markers(Arc::downgrade(&broker))));
        Ok(broker)
    }

    /// Closes the coordinators' internal logs cleanly. The server calls it at shutdown, after the
    /// connections have drained and before (or after) `topics.close_all()`.
    pub async fn close_coordinators(&self) {
        self.txns.close().await;
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
            RequestKind::AlterConfigs(body) => {
                in_order(async move { handlers::configs::alter_replacing(&broker, body).await })
            }
            RequestKind::IncrementalAlterConfigs(body) => {
                in_order(async move { handlers::configs::alter(&broker, body).await })
            }
            RequestKind::DescribeCluster(body) => in_order(async move { handlers::cluster::describe(&broker, &body) }),
            RequestKind::InitProducerId(body) if body.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty()) => {
                in_order(async move { handlers::txn::init_producer_id(&broker, &body, version).await })
            }
            RequestKind::InitProducerId(_) => in_order(async move { handlers::producer::init_producer_id(&broker) }),
            RequestKind::AddPartitionsToTxn(body) => {
                in_order(async move { handlers::txn::add_partitions(&broker, body, version).await })
            }
            RequestKind::AddOffsetsToTxn(body) => {
                in_order(async move { handlers::txn::add_offsets(&broker, body, version).await })
            }
            RequestKind::EndTxn(body) => in_order(async move { handlers::txn::end_txn(&broker, body, version).await }),
            RequestKind::TxnOffsetCommit(body) => {
                in_order(async move { handlers::txn::txn_offset_commit(&broker, body, version).await })
            }
            RequestKind::WriteTxnMarkers(body) => {
                in_order(async move { handlers::txn::write_txn_markers(&broker, body).await })
            }
            RequestKind::DescribeTransactions(body) => {
                in_order(async move { handlers::txn::describe_transactions(&broker, body) })
            }
            RequestKind::ListTransactions(body) => {
                in_order(async move { handlers::txn::list_transactions(&broker, body, version) })
            }
            RequestKind::DescribeProducers(body) => {
                in_order(async move { handlers::txn::describe_producers(&broker, body) })
            }
            RequestKind::FindCoordinator(body) => in_order(async move {
                ResponseKind::FindCoordinator(handlers::group::membership::find_coordinator(
                    broker.groups.node(),
                    body,
                    version,
                ))
            }),
            RequestKind::JoinGroup(body) => in_order(async move {
                let client_id = header.client_id.as_deref().unwrap_or("");
                let joined = handlers::group::membership::join_group(&broker.groups, body, version, client_id, "");
                ResponseKind::JoinGroup(joined.await)
            }),
            RequestKind::SyncGroup(body) => in_order(async move {
                ResponseKind::SyncGroup(handlers::group::membership::sync_group(&broker.groups, body, version).await)
            }),
            RequestKind::Heartbeat(body) => in_order(async move {
                ResponseKind::Heartbeat(handlers::group::membership::heartbeat(&broker.groups, body))
            }),
            RequestKind::LeaveGroup(body) => in_order(async move {
                ResponseKind::LeaveGroup(handlers::group::membership::leave_group(&broker.groups, body, version))
            }),
            RequestKind::OffsetCommit(body) => in_order(async move {
                let client_id = header.client_id.as_deref().unwrap_or("").to_string();
                let partition_exists = |topic: &str, partition: i32| {
                    broker.topics.get(topic).is_some_and(|found| found.partition(partition).is_some())
                };
                let context =
                    RequestContext { client_id: &client_id, client_host: "", partition_exists: &partition_exists };
                ResponseKind::OffsetCommit(
                    handlers::group::offsets::offset_commit(&broker.groups, body, &context).await,
                )
            }),
            RequestKind::OffsetFetch(body) => in_order(async move {
                ResponseKind::OffsetFetch(handlers::group::offsets::offset_fetch(&broker.groups, body, version))
            }),
            RequestKind::OffsetDelete(body) => in_order(async move {
                ResponseKind::OffsetDelete(handlers::group::offsets::offset_delete(&broker.groups, body).await)
            }),
            RequestKind::ListGroups(body) => in_order(async move {
                ResponseKind::ListGroups(handlers::group::admin::list_groups(&broker.groups, body, version))
            }),
            RequestKind::DescribeGroups(body) => in_order(async move {
                ResponseKind::DescribeGroups(handlers::group::admin::describe_groups(&broker.groups, body, version))
            }),
            RequestKind::DeleteGroups(body) => in_order(async move {
                ResponseKind::DeleteGroups(handlers::group::admin::delete_groups(&broker.groups, body).await)
            }),
            other => {
                // The version table and this match must agree; a request that passed the table but has
                // no handler is a bug. Close rather than answer wrongly.
                tracing::error!(api = ?std::mem::discriminant(&other), client = ?header.client_id, "no handler for a served API");
                Dispatch::InOrder(Box::pin(async { None }))
            }
        }
    }
}

/// Where the transaction coordinator's markers go: topic partitions, and the offsets log of groups.
struct Markers(std::sync::Weak<Broker>);

impl MarkerWriter for Markers {
    fn write_partition_marker(
        &self,
        topic: &str,
        partition: i32,
        marker: TxnMarker,
    ) -> BoxFuture<Result<(), MarkerError>> {
        let target =
            self.0.upgrade().and_then(|broker| broker.topics.get(topic)).and_then(|topic| topic.partition(partition));
        let name = format!("{topic}-{partition}");
        Box::pin(async move {
            // A deleted topic has nothing left to end.
            let Some(partition) = target else { return Ok(()) };
            let producer_id = marker.producer_id;
            partition.write_marker(marker).await.map(|_| ()).map_err(|error| {
                partition_marker_error(&name, error, || {
                    partition.producers().iter().any(|producer| {
                        producer.producer_id == producer_id && producer.current_txn_start_offset.is_some()
                    })
                })
            })
        })
    }

    fn write_group_marker(&self, group: &str, marker: TxnMarker) -> BoxFuture<Result<(), MarkerError>> {
        let broker = self.0.upgrade();
        let group = group.to_string();
        Box::pin(async move {
            let Some(broker) = broker else { return Err(MarkerError::Failed("the broker is shutting down".into())) };
            broker.groups.complete_transaction(&group, marker).await.map_err(|error| group_marker_error(&group, error))
        })
    }
}

/// What a partition's refusal of one of the coordinator's markers means to the coordinator.
/// `open_transaction` asks the partition whether the marker's producer has a transaction open there.
///
/// Only a producer-fenced refusal with nothing of the producer open is abandoned
/// ([`MarkerError::Fenced`]): a higher producer epoch at the partition comes from a marker (which
/// closed the producer's transaction there) or from a verified batch at that epoch, impossible while
/// the coordinator holds the transactional id in Prepare*; so nothing is left for this marker to end.
/// With a transaction still open, abandoning would leave it holding the last stable offset forever:
/// retried instead, with a warning. A coordinator-fenced refusal means the partition holds a
/// coordinator epoch above Once's own, which WriteTxnMarkers no longer accepts (only data written
/// before that rule can hold one); abandoning would pin the last stable offset too: retried.
fn partition_marker_error(name: &str, error: PartitionError, open_transaction: impl FnOnce() -> bool) -> MarkerError {
    let reason = format!("{name}: {error}");
    match error {
        PartitionError::ProducerFenced { .. } if !open_transaction() => MarkerError::Fenced(reason),
        PartitionError::ProducerFenced { .. } => {
            tracing::warn!(partition = name, %error, "marker refused as fenced while the producer still has a \
                transaction open there; retrying it");
            MarkerError::Failed(format!("{reason} (the producer's transaction is still open there)"))
        }
        PartitionError::CoordinatorFenced { .. } => {
            tracing::warn!(partition = name, %error, "marker refused: the partition holds a coordinator epoch \
                above this coordinator's, written before such markers were refused; retrying it");
            MarkerError::Failed(reason)
        }
        _ => MarkerError::Failed(reason),
    }
}

/// What a group's refusal of one of the coordinator's markers means to the coordinator: always a
/// failure to retry, never abandoned. An abandoned abort would leave the producer's pending offsets
/// pending in the group, and the producer's next commit marker would commit them
/// (`once_group` applies every pending offset of the producer at a commit marker).
fn group_marker_error(group: &str, error: GroupError) -> MarkerError {
    MarkerError::Failed(format!("group {group}: {error}"))
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

    fn fenced(error: &MarkerError) -> bool {
        matches!(error, MarkerError::Fenced(_))
    }

    /// Issue 13 review, items 1 and 3: a partition's refusal is abandoned (Fenced) only when the
    /// producer is fenced there and has no transaction open there; everything else is retried.
    #[test]
    fn a_partition_refusal_is_abandoned_only_when_nothing_is_left_open() {
        let producer_fenced = || PartitionError::ProducerFenced { current_epoch: 3 };
        let closed = partition_marker_error("t-0", producer_fenced(), || false);
        assert!(fenced(&closed), "a newer epoch and no open transaction: abandoned, got {closed:?}");
        let open = partition_marker_error("t-0", producer_fenced(), || true);
        assert!(!fenced(&open), "the producer still has a transaction open there: retried, got {open:?}");
        assert!(open.to_string().contains("t-0"), "the reason names the partition: {open}");
        let coordinator =
            partition_marker_error("t-0", PartitionError::CoordinatorFenced { marker: 0, current: 7 }, || false);
        assert!(!fenced(&coordinator), "a coordinator epoch above Once's own: retried, got {coordinator:?}");
        let busy = partition_marker_error("t-0", PartitionError::Busy("t-0".into()), || false);
        assert!(!fenced(&busy), "a full queue: retried, got {busy:?}");
    }

    /// Issue 13 review, item 4: a group's refusal is never abandoned. An abandoned abort marker
    /// leaves the producer's pending offsets pending, and a later commit marker would commit them.
    #[test]
    fn a_group_refusal_is_never_abandoned() {
        for error in [
            GroupError::ProducerFenced { current_epoch: 3 },
            GroupError::TransactionCoordinatorFenced { marker: 0, current: 7 },
            GroupError::CoordinatorNotAvailable,
            GroupError::Storage("disk".into()),
        ] {
            let mapped = group_marker_error("billing", error.clone());
            assert!(!fenced(&mapped), "{error:?} is retried, got {mapped:?}");
            assert!(mapped.to_string().contains("group billing"), "the reason names the group: {mapped}");
        }
    }
}
