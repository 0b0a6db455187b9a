//! The Kafka edge of Once: translation only. Requests are decoded (once-wire), turned into calls on
//! the node (once-node, which owns every piece of state), and the node's answers and typed errors
//! turned back into Kafka responses and error codes.
//!
//! # Layout
//! - [`server`] — [`Server`]: the listeners (plaintext or TLS), the connection limit, graceful shutdown.
//! - [`tls`] — the TLS acceptor from PEM files (rustls).
//! - [`sasl`] — one connection's SASL handshake and authentication (once-auth's exchanges).
//! - [`connection`] — [`connection::Connection`]: one connection's frame I/O, in-order responses.
//! - [`dispatch`] — which handler answers each request, and how a connection treats it.
//! - [`handlers`] — one module per family of Kafka APIs, each turning a request into a response.
//! - [`errors`] — the one place where typed errors become Kafka error codes.

#![forbid(unsafe_code)]

pub mod access;
pub mod authorize;
mod authorize_group;
pub mod connection;
pub mod dispatch;
pub mod errors;
pub mod handlers;
pub mod sasl;
pub mod server;
pub mod tls;

pub use server::Server;
