//! Dispatch of decoded requests to their handlers, and how a connection treats each.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use once_group::RequestContext;
use once_node::fetch_memory::Held;
use once_node::Node;
use once_wire::DecodedRequest;

use crate::access::Access;
use crate::authorize::{self, Gate};
use crate::handlers;

/// A response still being produced. `None` means no response is sent (Produce with acks=0).
pub type PendingResponse = Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>;

/// A Fetch still being answered, and the fetch memory its read reserved (`once_node::fetch_memory`).
pub type PendingFetch = Pin<Box<dyn Future<Output = (ResponseKind, Held)> + Send>>;

/// How a connection treats a request.
pub enum Dispatch {
    /// The work was queued in request order (Produce): the next request may be read at once, and the
    /// response is written when this resolves, still in order.
    Queued(PendingResponse),
    /// The connection finishes this request before it reads the next one (what Kafka does for all).
    InOrder(PendingResponse),
    /// In order too (Fetch); the connection keeps the reservation, as the response's record bytes,
    /// until the response is written, so no other read can take those bytes in between.
    Fetch(PendingFetch),
}

impl Dispatch {
    /// The response alone, its fetch memory given back once it is ready (the edge's tests).
    pub fn response(self) -> PendingResponse {
        match self {
            Dispatch::Queued(pending) | Dispatch::InOrder(pending) => pending,
            Dispatch::Fetch(pending) => Box::pin(async move { Some(pending.await.0) }),
        }
    }
}

/// Routes one request to its handler. Produce enqueues its appends before this returns, so appends
/// of one connection reach each partition in the order they were sent.
/// (The edge's own tests use it: an unauthenticated session from an unknown address.)
pub fn dispatch(node: &Arc<Node>, request: DecodedRequest) -> Dispatch {
    let access = Access::new(node, once_node::Session::anonymous(None));
    dispatch_on(node, request, &node.endpoint, &access)
}

/// [`dispatch`] for a request that came in on the listener advertised as `advertised`: Metadata,
/// DescribeCluster and FindCoordinator answer with that address. `access` is who is asking: each
/// request is checked against the node's policy before it acts ([`authorize`]).
pub fn dispatch_on(
    node: &Arc<Node>,
    request: DecodedRequest,
    advertised: &once_node::Endpoint,
    access: &Access,
) -> Dispatch {
    let node = node.clone();
    let advertised = advertised.clone();
    let version = request.api_version;
    let header = request.header;
    let body = if access.enabled() {
        let would_auto_create = |name: &str| node.config.auto_create_topics && node.topics.get(name).is_none();
        match authorize::gate(access, request.body, version, &would_auto_create) {
            Gate::Go(body, patch) => {
                return patched(dispatch_body(node, body, version, header, advertised, access), patch)
            }
            Gate::Answer(answer) => return in_order(async move { answer }),
        }
    } else {
        request.body
    };
    dispatch_body(node, body, version, header, advertised, access)
}

/// Applies `patch` to the response when there is one (the denied parts of a request, answered).
fn patched(dispatch: Dispatch, patch: authorize::Patch) -> Dispatch {
    let wrap = |pending: PendingResponse, patch: authorize::Patch| -> PendingResponse {
        Box::pin(async move { pending.await.map(patch) })
    };
    match dispatch {
        Dispatch::Queued(pending) => Dispatch::Queued(wrap(pending, patch)),
        Dispatch::InOrder(pending) => Dispatch::InOrder(wrap(pending, patch)),
        Dispatch::Fetch(pending) => Dispatch::Fetch(Box::pin(async move {
            let (response, reserved) = pending.await;
            (patch(response), reserved)
        })),
    }
}

fn dispatch_body(
    node: Arc<Node>,
    body: RequestKind,
    version: i16,
    header: kafka_protocol::messages::RequestHeader,
    advertised: once_node::Endpoint,
    access: &Access,
) -> Dispatch {
    let access = access.clone();
    match body {
        RequestKind::Produce(body) => Dispatch::Queued(handlers::produce::handle(&node, body, version)),
        RequestKind::ApiVersions(body) => in_order(async move { handlers::api_versions::handle(&body, version) }),
        RequestKind::Metadata(body) => {
            in_order(async move { handlers::metadata::handle(&node, body, version, &advertised).await })
        }
        RequestKind::Fetch(body) => {
            Dispatch::Fetch(Box::pin(async move { handlers::fetch::handle(&node, body, version).await }))
        }
        RequestKind::ListOffsets(body) => {
            in_order(async move { handlers::list_offsets::handle(&node, body, version).await })
        }
        RequestKind::CreateTopics(body) => {
            in_order(async move { handlers::admin::create_topics(&node, body, version).await })
        }
        RequestKind::DeleteTopics(body) => {
            in_order(async move { handlers::admin::delete_topics(&node, body, version).await })
        }
        RequestKind::CreatePartitions(body) => {
            in_order(async move { handlers::admin::create_partitions(&node, body).await })
        }
        RequestKind::DescribeConfigs(body) => {
            in_order(async move { handlers::configs::describe(&node, body, version) })
        }
        RequestKind::AlterConfigs(body) => {
            in_order(async move { handlers::configs::alter_replacing(&node, body).await })
        }
        RequestKind::IncrementalAlterConfigs(body) => {
            in_order(async move { handlers::configs::alter(&node, body).await })
        }
        RequestKind::DescribeCluster(body) => {
            in_order(async move { handlers::cluster::describe(&node, &body, &advertised) })
        }
        RequestKind::InitProducerId(body) if body.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty()) => {
            in_order(async move { handlers::txn::init_producer_id(&node, &body, version).await })
        }
        RequestKind::InitProducerId(_) => in_order(async move { handlers::producer::init_producer_id(&node) }),
        RequestKind::AddPartitionsToTxn(body) => {
            in_order(async move { handlers::txn::add_partitions(&node, body, version).await })
        }
        RequestKind::AddOffsetsToTxn(body) => {
            in_order(async move { handlers::txn::add_offsets(&node, body, version).await })
        }
        RequestKind::EndTxn(body) => in_order(async move { handlers::txn::end_txn(&node, body, version).await }),
        RequestKind::TxnOffsetCommit(body) => {
            in_order(async move { handlers::txn::txn_offset_commit(&node, body, version).await })
        }
        RequestKind::WriteTxnMarkers(body) => {
            in_order(async move { handlers::txn::write_txn_markers(&node, body).await })
        }
        RequestKind::DescribeTransactions(body) => {
            in_order(async move { handlers::txn::describe_transactions(&node, body) })
        }
        RequestKind::ListTransactions(body) => {
            in_order(async move { handlers::txn::list_transactions(&node, body, version) })
        }
        RequestKind::DescribeProducers(body) => in_order(async move { handlers::txn::describe_producers(&node, body) }),
        RequestKind::FindCoordinator(body) => in_order(async move {
            let coordinator = once_group::CoordinatorNode {
                host: advertised.host.clone(),
                port: advertised.port,
                ..node.groups.node().clone()
            };
            ResponseKind::FindCoordinator(handlers::group::membership::find_coordinator(&coordinator, body, version))
        }),
        RequestKind::JoinGroup(body) => in_order(async move {
            let client_id = header.client_id.as_deref().unwrap_or("");
            let joined = handlers::group::membership::join_group(&node.groups, body, version, client_id, "");
            ResponseKind::JoinGroup(joined.await)
        }),
        RequestKind::SyncGroup(body) => in_order(async move {
            ResponseKind::SyncGroup(handlers::group::membership::sync_group(&node.groups, body, version).await)
        }),
        RequestKind::Heartbeat(body) => {
            in_order(async move { ResponseKind::Heartbeat(handlers::group::membership::heartbeat(&node.groups, body)) })
        }
        RequestKind::LeaveGroup(body) => in_order(async move {
            ResponseKind::LeaveGroup(handlers::group::membership::leave_group(&node.groups, body, version))
        }),
        RequestKind::OffsetCommit(body) => in_order(async move {
            let client_id = header.client_id.as_deref().unwrap_or("").to_string();
            let partition_exists = |topic: &str, partition: i32| {
                node.topics.get(topic).is_some_and(|found| found.partition(partition).is_some())
            };
            let context =
                RequestContext { client_id: &client_id, client_host: "", partition_exists: &partition_exists };
            ResponseKind::OffsetCommit(handlers::group::offsets::offset_commit(&node.groups, body, &context).await)
        }),
        RequestKind::OffsetFetch(body) => in_order(async move {
            ResponseKind::OffsetFetch(handlers::group::offsets::offset_fetch(&node.groups, body, version))
        }),
        RequestKind::OffsetDelete(body) => in_order(async move {
            ResponseKind::OffsetDelete(handlers::group::offsets::offset_delete(&node.groups, body).await)
        }),
        RequestKind::ListGroups(body) => in_order(async move {
            ResponseKind::ListGroups(handlers::group::admin::list_groups(&node.groups, body, version))
        }),
        RequestKind::DescribeGroups(body) => in_order(async move {
            ResponseKind::DescribeGroups(handlers::group::admin::describe_groups(&node.groups, body, version))
        }),
        RequestKind::DeleteGroups(body) => in_order(async move {
            ResponseKind::DeleteGroups(handlers::group::admin::delete_groups(&node.groups, body).await)
        }),
        RequestKind::CreateAcls(body) => in_order(async move { handlers::acls::create(&node, &access, body) }),
        RequestKind::DescribeAcls(body) => in_order(async move { handlers::acls::describe(&node, &access, body) }),
        RequestKind::DeleteAcls(body) => in_order(async move { handlers::acls::delete(&node, &access, body) }),
        RequestKind::DescribeUserScramCredentials(body) => {
            in_order(async move { handlers::users::describe(&node, body) })
        }
        RequestKind::AlterUserScramCredentials(body) => in_order(async move { handlers::users::alter(&node, body) }),
        // The connection answers SASL itself (its state is the connection's); a request that reaches
        // here came outside one, and gets ILLEGAL_SASL_STATE.
        RequestKind::SaslHandshake(_) => in_order(async move {
            ResponseKind::SaslHandshake(
                kafka_protocol::messages::SaslHandshakeResponse::default()
                    .with_error_code(once_wire::ResponseError::IllegalSaslState.code()),
            )
        }),
        RequestKind::SaslAuthenticate(_) => in_order(async move {
            ResponseKind::SaslAuthenticate(
                kafka_protocol::messages::SaslAuthenticateResponse::default()
                    .with_error_code(once_wire::ResponseError::IllegalSaslState.code()),
            )
        }),
        other => {
            // The version table and this match must agree; a request that passed the table but has
            // no handler is a bug. Close rather than answer wrongly.
            tracing::error!(api = ?std::mem::discriminant(&other), client = ?header.client_id, "no handler for a served API");
            Dispatch::InOrder(Box::pin(async { None }))
        }
    }
}

fn in_order<F>(future: F) -> Dispatch
where
    F: Future<Output = ResponseKind> + Send + 'static,
{
    Dispatch::InOrder(Box::pin(async move { Some(future.await) }))
}
