//! [`Access`]: the question every handler asks before it acts — may this connection's principal do
//! this operation on this resource — answered by the node's one policy (`once_node::Authorizer`).
//! With authorization off every answer is yes.

use std::sync::Arc;

use once_acl::{Operation, ResourceType, CLUSTER_NAME};
use once_node::{Authorizer, Node, Session};

/// A connection's principal and address, with the policy that judges them. Cheap to clone into a
/// handler's future.
#[derive(Clone)]
pub struct Access {
    authorizer: Arc<Authorizer>,
    session: Arc<Session>,
}

impl Access {
    pub fn new(node: &Node, session: Session) -> Access {
        Access { authorizer: node.authorizer.clone(), session: Arc::new(session) }
    }

    /// Whether requests are checked at all (some answers differ, e.g. Metadata's hidden topics).
    pub fn enabled(&self) -> bool {
        self.authorizer.enabled()
    }

    /// The session asking.
    pub fn session(&self) -> &Session {
        &self.session
    }

    pub fn topic(&self, operation: Operation, name: &str) -> bool {
        self.authorizer.allows(&self.session, operation, ResourceType::Topic, name)
    }

    pub fn group(&self, operation: Operation, name: &str) -> bool {
        self.authorizer.allows(&self.session, operation, ResourceType::Group, name)
    }

    pub fn transactional_id(&self, operation: Operation, id: &str) -> bool {
        self.authorizer.allows(&self.session, operation, ResourceType::TransactionalId, id)
    }

    pub fn cluster(&self, operation: Operation) -> bool {
        self.authorizer.allows(&self.session, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// [`Access::cluster`], not logged when denied: a probe another check follows.
    pub fn cluster_quietly(&self, operation: Operation) -> bool {
        self.authorizer.permits(&self.session, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// [`Access::topic`], not logged when denied: filtering what is shown.
    pub fn topic_quietly(&self, operation: Operation, name: &str) -> bool {
        self.authorizer.permits(&self.session, operation, ResourceType::Topic, name)
    }

    /// Filtering groups, not logged.
    pub fn group_quietly(&self, operation: Operation, name: &str) -> bool {
        self.authorizer.permits(&self.session, operation, ResourceType::Group, name)
    }

    /// Filtering transactional ids, not logged.
    pub fn transactional_id_quietly(&self, operation: Operation, id: &str) -> bool {
        self.authorizer.permits(&self.session, operation, ResourceType::TransactionalId, id)
    }

    /// Whether the principal may do `operation` on at least one resource of `resource_type` (Kafka's
    /// "authorize by resource type", KIP-679: an idempotent producer needs WRITE on some topic).
    pub fn any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        self.authorizer.allows_some(&self.session, operation, resource_type)
    }
}
