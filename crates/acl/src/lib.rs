//! Authorization for Once, as Kafka's clients and admin tools expect it: access control lists
//! (KIP-11, prefixed patterns from KIP-290) and the decision whether a principal may do an
//! operation on a resource. Pure: no I/O, no network, no protocol types. The node keeps the ACLs
//! durable (`once_node::acls`); each protocol edge maps its requests to [`AccessRequest`]s and the
//! [`Decision`]s back to its own error codes.
//!
//! # The decision ([`decide`])
//! 1. A super user may do everything.
//! 2. Any DENY binding that matches (principal or `User:*`, host or `*`, the operation or ALL)
//!    denies, whatever allows.
//! 3. An ALLOW binding that matches allows. DESCRIBE is implied by READ, WRITE, DELETE and ALTER;
//!    DESCRIBE_CONFIGS by ALTER_CONFIGS (Kafka's rule).
//! 4. Otherwise the request is denied: no binding means no access
//!    (`allow.everyone.if.no.acl.found=false`).
//!
//! A binding applies to a resource when its pattern is LITERAL and names it exactly, LITERAL `*`
//! (every resource of the type), or PREFIXED and the resource's name starts with it.
//!
//! # Layout
//! - [`model`] — resource types, pattern types, operations, permissions, principals, bindings and
//!   their Kafka numbers; validation of a binding before it is stored.
//! - [`filter`] — [`AclFilter`], which bindings DescribeAcls and DeleteAcls select.
//! - [`decide`](mod@decide) — [`decide`] and [`Decision`].

#![forbid(unsafe_code)]

pub mod decide;
pub mod filter;
pub mod model;

pub use decide::{decide, AccessRequest, Decision};
pub use filter::{AclFilter, PatternFilter};
pub use model::{
    AclBinding, AclError, Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME, WILDCARD,
};
