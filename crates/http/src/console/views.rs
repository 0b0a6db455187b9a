//! The console's views of the node: overview, topics, consumer groups, transactions, the counters
//! the live charts difference, and aborting a transaction. Shapes in docs/design/console.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use once_acl::{Operation, Principal, ResourceType, CLUSTER_NAME};
use once_node::topic_config::CONFIG_KEYS;
use once_txn::{OperatorAbort, TxnDescription, TxnError, TxnState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json, require};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::HttpState;

/// A transaction open longer than this is shown as hanging unless the page asks otherwise.
pub const HANGING_AFTER_MS_DEFAULT: i64 = 60_000;

/// How long an abort waits out CONCURRENT_TRANSACTIONS (a commit or abort completing) before giving up.
const ABORT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub struct HangingQuery {
    hanging_after_ms: Option<i64>,
}

impl HangingQuery {
    fn threshold(&self) -> Result<i64, Problem> {
        match self.hanging_after_ms {
            None => Ok(HANGING_AFTER_MS_DEFAULT),
            Some(ms) if ms >= 0 => Ok(ms),
            Some(ms) => Err(Problem::bad_request(format!("hanging_after_ms must be 0 or more, not {ms}"))),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// One transaction as the console shows it, `hanging` judged against `hanging_after_ms` and the
/// transaction's own timeout (past which the coordinator should already have aborted it).
pub fn transaction_view(txn: &TxnDescription, now_ms: i64, hanging_after_ms: i64) -> Value {
    let metadata = &txn.metadata;
    let open = !metadata.state.is_settled();
    let age_ms = (open && metadata.start_ms >= 0).then(|| now_ms.saturating_sub(metadata.start_ms).max(0));
    let hanging = age_ms.is_some_and(|age| age > hanging_after_ms || age > i64::from(metadata.timeout_ms));
    assert!(!hanging || open, "only an open transaction hangs");
    json!({
        "transactional_id": txn.transactional_id,
        "state": metadata.state.name(),
        "producer_id": metadata.producer_id,
        "producer_epoch": metadata.producer_epoch,
        "timeout_ms": metadata.timeout_ms,
        "start_ms": (metadata.start_ms >= 0).then_some(metadata.start_ms),
        "age_ms": age_ms,
        "last_update_ms": metadata.last_update_ms,
        "partitions": metadata.partitions.iter()
            .map(|(topic, partition)| json!({"topic": topic, "partition": partition}))
            .collect::<Vec<_>>(),
        "groups": metadata.groups.iter().collect::<Vec<_>>(),
        "open": open,
        "hanging": hanging,
    })
}

/// The transactions the caller may DESCRIBE, as shown.
fn visible_transactions(state: &HttpState, caller: &Caller, hanging_after_ms: i64) -> Vec<Value> {
    let now = now_ms();
    state
        .node
        .txns
        .list()
        .iter()
        .filter(|txn| caller.permits(state, Operation::Describe, ResourceType::TransactionalId, &txn.transactional_id))
        .map(|txn| {
            let mut view = transaction_view(txn, now, hanging_after_ms);
            // As Kafka's DescribeTransactions: topics and groups the caller may not describe are left out.
            let topics = view["partitions"].as_array().cloned().unwrap_or_default();
            view["partitions"] = topics
                .into_iter()
                .filter(|partition| {
                    let topic = partition["topic"].as_str().unwrap_or_default();
                    caller.permits(state, Operation::Describe, ResourceType::Topic, topic)
                })
                .collect();
            let groups = view["groups"].as_array().cloned().unwrap_or_default();
            view["groups"] = groups
                .into_iter()
                .filter(|group| {
                    caller.permits(state, Operation::Describe, ResourceType::Group, group.as_str().unwrap_or_default())
                })
                .collect();
            let may_write =
                caller.permits(state, Operation::Write, ResourceType::TransactionalId, &txn.transactional_id);
            view["can_abort"] = json!(view["open"] == true && authenticated(caller) && may_write);
            view
        })
        .collect()
}

fn authenticated(caller: &Caller) -> bool {
    caller.session.principal != Principal::anonymous()
}

/// Whether this caller may abort transactions from the console: authenticated (a browser with
/// no login cannot), and allowed WRITE on some transactional id.
fn can_abort(state: &HttpState, caller: &Caller) -> bool {
    authenticated(caller)
        && state.node.authorizer.allows_some(&caller.session, Operation::Write, ResourceType::TransactionalId)
}

/// The query, or a problem document naming what is wrong with it.
fn hanging_query(query: Result<Query<HangingQuery>, QueryRejection>) -> Result<i64, Problem> {
    match query {
        Ok(Query(query)) => query.threshold(),
        Err(rejection) => Err(Problem::bad_request(format!("the query: {rejection}"))),
    }
}

pub async fn overview(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HangingQuery>, QueryRejection>,
) -> Response {
    let checked = require(&caller, &state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME)
        .and_then(|()| hanging_query(query));
    let hanging_after_ms = match checked {
        Ok(threshold) => threshold,
        Err(problem) => return problem.into_response(),
    };
    let node = &state.node;
    let transactions = visible_transactions(&state, &caller, hanging_after_ms);
    let open: Vec<&Value> = transactions.iter().filter(|txn| txn["open"] == true).collect();
    let oldest = open.iter().filter_map(|txn| txn["age_ms"].as_i64()).max().unwrap_or(0);
    let topics = node.topics.list();
    let latched = topics.iter().flat_map(|topic| topic.partitions()).filter(|partition| partition.is_failed()).count();
    let groups = node
        .groups
        .list_groups(&[], &[])
        .iter()
        .filter(|group| caller.permits(&state, Operation::Describe, ResourceType::Group, &group.group_id))
        .count();
    // The filesystem's free space and the reports directory: off the async workers.
    let (reports_dir, floor) = (state.console_reports.clone(), Arc::clone(&node.floor));
    let (reports, free_bytes) = tokio::task::spawn_blocking(move || {
        let reports = reports_dir.as_deref().and_then(|dir| super::list_reports(dir).ok()).map_or(0, |list| list.len());
        (reports, floor.space().map(|space| space.free))
    })
    .await
    .unwrap_or((0, None));
    json(json!({
        "cluster_id": node.identity.cluster_id,
        "node_id": node.config.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "caller": caller.session.principal.to_string(),
        "authorization": node.authorizer.enabled(),
        "can_abort": can_abort(&state, &caller),
        "storage": {
            "free_bytes": free_bytes,
            "min_free_bytes": node.floor.floor(),
            "below_floor": node.floor.refusing(),
            "latched_partitions": latched,
        },
        "topics": topics.iter()
            .filter(|topic| caller.permits(&state, Operation::Describe, ResourceType::Topic, &topic.name))
            .count(),
        "groups": groups,
        "transactions_open": open.len(),
        "transactions_hanging": open.iter().filter(|txn| txn["hanging"] == true).count(),
        "oldest_open_transaction_ms": oldest,
        "hanging_after_ms": hanging_after_ms,
        "reports": reports,
    }))
}

pub async fn topics(State(state): State<Arc<HttpState>>, Extension(caller): Extension<Caller>) -> Response {
    let node = Arc::clone(&state.node);
    let visible: Vec<_> = node
        .topics
        .list()
        .into_iter()
        .filter(|topic| caller.permits(&state, Operation::Describe, ResourceType::Topic, &topic.name))
        .map(|topic| {
            let configs = caller.permits(&state, Operation::DescribeConfigs, ResourceType::Topic, &topic.name);
            (topic, configs)
        })
        .collect();
    // Sizes and dedup stats take the partitions' and indexes' locks: off the async workers.
    let shown = tokio::task::spawn_blocking(move || {
        visible.iter().map(|(topic, configs)| topic_view(topic, *configs)).collect::<Vec<_>>()
    })
    .await;
    match shown {
        Ok(topics) => json(json!({"topics": topics})),
        Err(error) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "topics", "Reading topics failed", error.to_string())
                .into_response()
        }
    }
}

/// One topic, as in the list: 404 if it does not exist and the caller may describe the cluster
/// (else 403, so a caller cannot learn which topics exist), 403 if the caller may not describe it.
pub async fn topic(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let name = match path {
        Ok(Path(name)) => name,
        Err(rejection) => return Problem::bad_request(format!("the path: {rejection}")).into_response(),
    };
    let found = state.node.topics.get(&name);
    if found.is_none() && caller.permits(&state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        return Problem::not_found(format!("no topic '{name}'")).into_response();
    }
    if let Err(problem) = require(&caller, &state, Operation::Describe, ResourceType::Topic, &name) {
        return problem.into_response();
    }
    let Some(topic) = found else { return Problem::not_found(format!("no topic '{name}'")).into_response() };
    let configs = caller.permits(&state, Operation::DescribeConfigs, ResourceType::Topic, &name);
    match tokio::task::spawn_blocking(move || topic_view(&topic, configs)).await {
        Ok(view) => json(view),
        Err(error) => {
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "topic", "Reading the topic failed", error.to_string())
                .into_response()
        }
    }
}

fn topic_view(topic: &once_node::topics::Topic, with_configs: bool) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let partitions: Vec<Value> = topic
        .partitions()
        .iter()
        .map(|partition| {
            let offsets = partition.end_offsets();
            json!({
                "partition": partition.id().partition,
                "log_start_offset": offsets.log_start_offset,
                "high_watermark": offsets.high_watermark,
                "last_stable_offset": offsets.last_stable_offset,
                "lso_lag": offsets.high_watermark - offsets.last_stable_offset,
                "size_bytes": partition.size_bytes(),
                "latched": partition.is_failed(),
            })
        })
        .collect();
    let config = topic.config();
    let configs: Option<BTreeMap<&str, String>> = with_configs
        .then(|| CONFIG_KEYS.iter().filter_map(|key| Some((key.name, config.value_of(key.name)?.0))).collect());
    let dedup = topic.dedup().map(|dedup| {
        let stats = dedup.stats();
        let dropped: u64 = topic.partitions().iter().map(|partition| partition.duplicates_dropped()).sum();
        let window_ms = match dedup.window() {
            once_dedup::DedupWindow::Duration { window_ms } => window_ms,
            _ => -1,
        };
        json!({
            "source": dedup.source().to_string(),
            "window_ms": window_ms,
            "ids": stats.stored_ids,
            "pending_ids": stats.pending_ids,
            "index_bytes": stats.index_bytes,
            "disk_ids": stats.disk_ids,
            "disk_chunks": stats.disk_chunks,
            "duplicates_dropped": dropped,
        })
    });
    json!({
        "name": topic.name,
        "internal": topic.name.starts_with("__"),
        "partitions": partitions,
        "configs": configs,
        "dedup": dedup,
        "produced_bytes": topic.traffic.produced_bytes.load(Relaxed),
        "produced_records": topic.traffic.produced_records.load(Relaxed),
        "fetched_bytes": topic.traffic.fetched_bytes.load(Relaxed),
    })
}

pub async fn groups(State(state): State<Arc<HttpState>>, Extension(caller): Extension<Caller>) -> Response {
    let node = &state.node;
    let listed: Vec<String> = node
        .groups
        .list_groups(&[], &[])
        .into_iter()
        .map(|group| group.group_id)
        .filter(|group| caller.permits(&state, Operation::Describe, ResourceType::Group, group))
        .collect();
    let described = node.groups.describe_groups(listed.clone());
    let offsets = node.groups.fetch_offsets(listed.iter().map(|group| (group.clone(), None)).collect(), false);
    assert_eq!(described.len(), listed.len(), "one description per group asked");
    assert_eq!(offsets.len(), listed.len(), "one offset list per group asked");
    let may_describe = |topic: &str| caller.permits(&state, Operation::Describe, ResourceType::Topic, topic);
    let groups: Vec<Value> = described
        .into_iter()
        .zip(offsets)
        .map(|(group, offsets)| {
            let members: Vec<Value> = group
                .members
                .iter()
                .map(|member| {
                    let assignment: Vec<Value> = if group.protocol_type == "consumer" {
                        once_wire::consumer_protocol::assigned_partitions(member.assignment.clone())
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|(topic, _)| may_describe(topic))
                            .flat_map(|(topic, partitions)| {
                                partitions
                                    .into_iter()
                                    .map(move |partition| json!({"topic": topic, "partition": partition}))
                            })
                            .collect()
                    } else {
                        Vec::new()
                    };
                    json!({
                        "member_id": member.member_id,
                        "group_instance_id": member.group_instance_id,
                        "client_id": member.client_id,
                        "client_host": member.client_host,
                        "assignment": assignment,
                    })
                })
                .collect();
            let committed: Vec<Value> = offsets
                .into_iter()
                .filter(|(topic, _)| may_describe(topic))
                .flat_map(|(topic, partitions)| {
                    let end = node.topics.get(&topic);
                    partitions.into_iter().filter(|fetched| fetched.outcome.is_ok() && fetched.offset >= 0).map(
                        move |fetched| {
                            let high_watermark = end
                                .as_ref()
                                .and_then(|topic| topic.partition(fetched.partition))
                                .map(|partition| partition.high_watermark());
                            let lag = high_watermark.map(|end| end.saturating_sub(fetched.offset as u64));
                            json!({
                                "topic": topic,
                                "partition": fetched.partition,
                                "committed_offset": fetched.offset,
                                "high_watermark": high_watermark,
                                "lag": lag,
                                "metadata": fetched.metadata,
                            })
                        },
                    )
                })
                .collect();
            json!({
                "group": group.group_id,
                "state": group.state.name(),
                "protocol_type": group.protocol_type,
                "protocol": group.protocol,
                "members": members,
                "offsets": committed,
            })
        })
        .collect();
    json(json!({"groups": groups}))
}

pub async fn transactions(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<HangingQuery>, QueryRejection>,
) -> Response {
    match hanging_query(query) {
        Ok(hanging_after_ms) => json(json!({
            "hanging_after_ms": hanging_after_ms,
            "transactions": visible_transactions(&state, &caller, hanging_after_ms),
        })),
        Err(problem) => problem.into_response(),
    }
}

/// What the console's confirmation dialog saw: the transaction to abort is still that one.
#[derive(Debug, Default, Deserialize)]
pub struct AbortBody {
    producer_id: Option<i64>,
    producer_epoch: Option<i16>,
}

/// Fences the transactional id and aborts its open transaction, as `once txn abort
/// --transactional-id` does (InitProducerId as a new incarnation), only if its producer id and
/// epoch are still those the body names (when it names them).
pub async fn abort(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Response {
    let transactional_id = match path {
        Ok(Path(id)) => id,
        Err(rejection) => return Problem::bad_request(format!("the path: {rejection}")).into_response(),
    };
    // An HTML form cannot send this content type, and a cross-site fetch that does needs a
    // preflight nothing here answers: another site cannot make a logged-in browser abort.
    let header_text = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let json_body = header_text(header::CONTENT_TYPE)
        .and_then(|value| value.split(';').next())
        .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Content-Type must be application/json",
            "send the abort with Content-Type: application/json",
        )
        .into_response();
    }
    // Browsers say where a request comes from: only this origin's page may abort.
    if header_text(header::HeaderName::from_static("sec-fetch-site"))
        .is_some_and(|site| site != "same-origin" && site != "none")
    {
        return Problem::new(
            StatusCode::FORBIDDEN,
            "cross-site",
            "Cross-site request refused",
            "abort from the console's own page",
        )
        .into_response();
    }
    let body: AbortBody = if body.iter().all(u8::is_ascii_whitespace) {
        AbortBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(error) => return Problem::bad_request(format!("the body: {error}")).into_response(),
        }
    };
    let expected = match (body.producer_id, body.producer_epoch) {
        (Some(id), Some(epoch)) => Some((id, epoch)),
        (None, None) => None,
        _ => return Problem::bad_request("give producer_id and producer_epoch together").into_response(),
    };
    if !authenticated(&caller) {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "authentication-required",
            "Authentication required",
            "aborting a transaction from the console needs a login (Authorization: Basic); anonymous callers may only look",
        )
        .into_response();
    }
    if let Err(problem) = caller.require(&state, Operation::Write, ResourceType::TransactionalId, &transactional_id) {
        return problem.into_response();
    }
    let txns = &state.node.txns;
    let deadline = tokio::time::Instant::now() + ABORT_WAIT;
    let outcome = loop {
        match txns.operator_abort(&transactional_id, expected).await {
            Err(TxnError::ConcurrentTransactions) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outcome => break outcome,
        }
    };
    match outcome {
        Ok(OperatorAbort::Fenced { previous_state, producer_id, producer_epoch }) => {
            let state_name = txns.describe(&transactional_id).map(|metadata| metadata.state.name());
            // An Ongoing (or already aborting) transaction was aborted; a PrepareCommit one had been
            // decided before the abort came and was completed as a commit.
            let aborted = matches!(previous_state, TxnState::Ongoing | TxnState::PrepareAbort);
            tracing::warn!(
                transactional_id = %transactional_id,
                principal = %caller.session.principal,
                previous_state = previous_state.name(),
                producer_id,
                producer_epoch,
                "transaction aborted from the console: the producer is fenced"
            );
            json(json!({
                "transactional_id": transactional_id,
                "previous_state": previous_state.name(),
                "aborted": aborted,
                "state": state_name,
                "producer_id": producer_id,
                "producer_epoch": producer_epoch,
            }))
        }
        Ok(OperatorAbort::Unknown) => Problem::not_found(format!("no transactional id '{transactional_id}'")).into_response(),
        Ok(OperatorAbort::Changed { producer_id, producer_epoch }) => Problem::new(
            StatusCode::CONFLICT,
            "transaction-changed",
            "The transaction changed",
            format!(
                "'{transactional_id}' is now producer {producer_id} epoch {producer_epoch}, not the one confirmed: nothing was aborted; look again"
            ),
        )
        .into_response(),
        Err(TxnError::ConcurrentTransactions) => Problem::new(
            StatusCode::CONFLICT,
            "concurrent-transactions",
            "The transaction is completing",
            "the transaction kept completing for 10 s; try again",
        )
        .retry_after(1)
        .into_response(),
        Err(error) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "abort-failed",
            "The transaction could not be aborted",
            error.to_string(),
        )
        .into_response(),
    }
}

/// The counters the live charts difference: traffic summed over every topic (the caller may describe
/// the cluster, and so sees every topic in /metrics too), and the fsync latency histogram (cumulative
/// buckets, as `once_fsync_seconds`).
pub async fn rates(State(state): State<Arc<HttpState>>, Extension(caller): Extension<Caller>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    if let Err(problem) = require(&caller, &state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        return problem.into_response();
    }
    let (mut records, mut bytes, mut fetched) = (0u64, 0u64, 0u64);
    for topic in state.node.topics.list() {
        records += topic.traffic.produced_records.load(Relaxed);
        bytes += topic.traffic.produced_bytes.load(Relaxed);
        fetched += topic.traffic.fetched_bytes.load(Relaxed);
    }
    let fsync = once_log::stats::FSYNC.snapshot();
    let mut cumulative = 0;
    let buckets: Vec<Value> = fsync
        .buckets
        .iter()
        .map(|&(bound, count)| {
            cumulative += count;
            json!([bound.is_finite().then_some(bound), cumulative])
        })
        .collect();
    assert_eq!(cumulative, fsync.count, "the last bucket counts every observation");
    json(json!({
        "now_ms": now_ms(),
        "produced_records": records,
        "produced_bytes": bytes,
        "fetched_bytes": fetched,
        "fsync": {"count": fsync.count, "sum_seconds": fsync.sum_seconds, "buckets": buckets},
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use once_txn::state::TxnMetadata;

    use super::*;

    fn txn(state: TxnState, start_ms: i64, timeout_ms: i32) -> TxnDescription {
        let mut metadata = TxnMetadata::new(7, timeout_ms, 0);
        metadata.state = state;
        metadata.start_ms = start_ms;
        metadata.partitions = BTreeSet::from([("payments".to_string(), 0)]);
        TxnDescription { transactional_id: "pay".into(), metadata }
    }

    #[test]
    fn an_open_transaction_hangs_past_the_threshold_or_its_own_timeout() {
        let now = 100_000;
        let young = transaction_view(&txn(TxnState::Ongoing, now - 500, 60_000), now, 1_000);
        assert_eq!(
            (young["open"].clone(), young["hanging"].clone(), young["age_ms"].clone()),
            (json!(true), json!(false), json!(500))
        );
        let old = transaction_view(&txn(TxnState::Ongoing, now - 1_500, 60_000), now, 1_000);
        assert_eq!(old["hanging"], true, "past the threshold");
        let timed_out = transaction_view(&txn(TxnState::PrepareAbort, now - 5_000, 2_000), now, 60_000);
        assert_eq!(timed_out["hanging"], true, "past its own timeout: the coordinator should have ended it");
        assert_eq!(old["partitions"], json!([{"topic": "payments", "partition": 0}]));
    }

    #[test]
    fn a_settled_transaction_never_hangs() {
        let now = 100_000;
        for state in [TxnState::Empty, TxnState::CompleteCommit, TxnState::CompleteAbort] {
            let view = transaction_view(&txn(state, now - 90_000, 1_000), now, 0);
            assert_eq!((view["open"].clone(), view["hanging"].clone()), (json!(false), json!(false)), "{state:?}");
            assert_eq!(view["age_ms"], Value::Null);
        }
    }
}
