//! DescribeCluster; translation only: the node's identity and endpoint as the Kafka response.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind};
use once_node::Node;

use super::str_bytes;

/// `advertised`: the address of the listener the request came in on.
pub fn describe(node: &Node, _request: &DescribeClusterRequest, advertised: &once_node::Endpoint) -> ResponseKind {
    let described = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(node.config.node_id))
        .with_host(str_bytes(&advertised.host))
        .with_port(advertised.port);
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(&node.identity.cluster_id))
            .with_controller_id(BrokerId(node.config.node_id))
            .with_endpoint_type(1)
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(vec![described]),
    )
}
