//! `once-http`: Once's HTTP edge (`once serve --http-listen [https://]HOST:PORT`). Translation only,
//! like the Kafka edge: the node does the work.
//!
//! # Layout
//! - [`listen`]: plain HTTP or HTTPS (rustls, the broker's certificate, through once-tls), the peer
//!   address of each request, [`serve`].
//! - [`auth`]: Basic credentials checked against the SASL users, `User:ANONYMOUS` without; the ACL
//!   check each handler makes (403 problems). docs/design/http.md, "Authentication and ACLs".
//! - [`logins`]: logins already verified, so a caller's every request does not pay PBKDF2.
//!
//! - `POST /v3/clusters/{cluster_id}/topics/{topic}/records`: the REST Proxy v3 produce, with
//!   `Idempotency-Key` ([`idempotency`], [`produce`]; docs/design/http.md).
//! - `GET /v3/clusters`, `GET /v3/clusters/{cluster_id}`, `GET /v3/clusters/{cluster_id}/topics`:
//!   discovery, in the REST Proxy's shapes.
//! - `GET /metrics`: the node's metrics, OpenMetrics text ([`metrics`]); also alone on
//!   `--metrics-listen` ([`metrics_router`]).
//! - `GET /openapi.json`: the OpenAPI 3 document of these endpoints (checked in, `openapi.json`).
//! - `GET /` and `/console/…`: the web console and the JSON it reads ([`console`];
//!   docs/design/console.md).
//!
//! Errors are problem documents ([`problem`]).

pub mod auth;
pub mod console;
pub mod idempotency;
pub mod listen;
pub mod logins;
pub mod metrics;
pub mod partitioner;
pub mod problem;
pub mod produce;
pub mod record;

use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use once_acl::{Operation, ResourceType, CLUSTER_NAME};
use once_node::Node;

use crate::auth::Caller;
use crate::idempotency::InFlight;
pub use crate::listen::serve;
use crate::listen::Scheme;
use crate::problem::Problem;

/// Largest request body read; a record is further bounded by its topic's `max.message.bytes`.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The OpenAPI document, as checked in.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub struct HttpState {
    pub node: Arc<Node>,
    /// Whether the listener is HTTPS: Basic credentials over plain HTTP are taken only from this host.
    scheme: Scheme,
    /// Basic logins already verified (`None`: no randomness for its key; every login is derived).
    logins: Option<logins::VerifiedLogins>,
    in_flight: Arc<InFlight>,
    round_robin: AtomicU32,
    /// `--console-reports DIR`: the `once check` reports the console lists.
    console_reports: Option<PathBuf>,
}

impl HttpState {
    fn new(node: Arc<Node>, scheme: Scheme, console_reports: Option<PathBuf>) -> Arc<HttpState> {
        let logins = logins::VerifiedLogins::new();
        Arc::new(HttpState {
            node,
            scheme,
            logins,
            in_flight: Arc::default(),
            round_robin: AtomicU32::new(0),
            console_reports,
        })
    }

    fn check_cluster(&self, cluster_id: &str) -> Result<(), Problem> {
        if cluster_id != self.node.identity.cluster_id {
            return Err(Problem::not_found(format!(
                "cluster '{cluster_id}' is not this one ('{}'; see GET /v3/clusters)",
                self.node.identity.cluster_id
            )));
        }
        Ok(())
    }

    /// Requests with an Idempotency-Key in progress.
    pub fn keys_in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// The router over `node`, for a listener of `scheme`, the console listing the reports in
/// `console_reports`. Every request is authenticated first ([`auth::authenticate`]).
pub fn router(node: Arc<Node>, scheme: Scheme, console_reports: Option<PathBuf>) -> Router {
    let state = HttpState::new(node, scheme, console_reports);
    Router::new()
        .merge(console::routes())
        .route("/v3/clusters", get(clusters))
        .route("/v3/clusters/{cluster_id}", get(cluster))
        .route("/v3/clusters/{cluster_id}/topics", get(topics))
        .route("/v3/clusters/{cluster_id}/topics/{topic}/records", post(produce::handle))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { Problem::not_found("no such endpoint (see GET /openapi.json)") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this endpoint does not answer that method (see GET /openapi.json)",
            )
        })
        .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state)
}

/// A router with `GET /metrics` only (`--metrics-listen`), authenticated and checked as on
/// `--http-listen`.
pub fn metrics_router(node: Arc<Node>, scheme: Scheme) -> Router {
    let state = HttpState::new(node, scheme, None);
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::not_found("try GET /metrics") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state)
}

fn cluster_body(state: &HttpState) -> serde_json::Value {
    let id = &state.node.identity.cluster_id;
    serde_json::json!({
        "kind": "KafkaCluster",
        "metadata": {"self": format!("/v3/clusters/{id}")},
        "cluster_id": id,
        "controller": {"related": format!("/v3/clusters/{id}/brokers/{}", state.node.config.node_id)},
        "topics": {"related": format!("/v3/clusters/{id}/topics")},
    })
}

/// Describing the cluster needs DESCRIBE on it (stricter than the Kafka edge's DescribeCluster,
/// which a Kafka broker answers to anyone: over HTTP nothing but operators' tools reads it).
async fn clusters(State(state): State<Arc<HttpState>>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(problem) = caller.require(&state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        return problem.into_response();
    }
    axum::Json(serde_json::json!({
        "kind": "KafkaClusterList",
        "metadata": {"self": "/v3/clusters", "next": null},
        "data": [cluster_body(&state)],
    }))
    .into_response()
}

/// The path's cluster id, or a problem document for a path that cannot be decoded.
fn cluster_id(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    path.map(|Path(id)| id).map_err(|rejection| Problem::bad_request(format!("the path: {rejection}")))
}

async fn cluster(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let cluster_id = match cluster_id(path) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    let checked = caller
        .require(&state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME)
        .and_then(|()| state.check_cluster(&cluster_id));
    match checked {
        Ok(()) => axum::Json(cluster_body(&state)).into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The topics the caller may DESCRIBE (the others are left out, as Kafka's Metadata hides them).
async fn topics(
    State(state): State<Arc<HttpState>>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let cluster_id = match cluster_id(path) {
        Ok(id) => id,
        Err(problem) => return problem.into_response(),
    };
    if let Err(problem) = state.check_cluster(&cluster_id) {
        return problem.into_response();
    }
    let data: Vec<serde_json::Value> = state
        .node
        .topics
        .list()
        .iter()
        .filter(|topic| caller.permits(&state, Operation::Describe, ResourceType::Topic, &topic.name))
        .map(|topic| {
            serde_json::json!({
                "kind": "KafkaTopic",
                "metadata": {"self": format!("/v3/clusters/{cluster_id}/topics/{}", topic.name)},
                "cluster_id": cluster_id,
                "topic_name": topic.name,
                "is_internal": topic.name.starts_with("__"),
                "replication_factor": 1,
                "partitions_count": topic.partition_count(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "kind": "KafkaTopicList",
        "metadata": {"self": format!("/v3/clusters/{cluster_id}/topics"), "next": null},
        "data": data,
    }))
    .into_response()
}

/// The metrics need DESCRIBE on the cluster: with authorization on, a scraper authenticates, or an
/// operator grants `User:ANONYMOUS` DESCRIBE on the cluster.
async fn metrics(State(state): State<Arc<HttpState>>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(problem) = caller.require(&state, Operation::Describe, ResourceType::Cluster, CLUSTER_NAME) {
        return problem.into_response();
    }
    let node = Arc::clone(&state.node);
    // Reading every index's stats takes their locks: off the async workers.
    let text = tokio::task::spawn_blocking(move || metrics::render(&node)).await;
    let mut response = match text {
        Ok(text) => text.into_response(),
        Err(error) => {
            return Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "metrics",
                "The metrics could not be read",
                error.to_string(),
            )
            .into_response()
        }
    };
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
    response
}

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
