//! DescribeCluster; translation only: the node's identity and endpoint as the Kafka response.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind};
use once_node::Node;

use super::str_bytes;

pub fn describe(node: &Node, _request: &DescribeClusterRequest) -> ResponseKind {
    let described = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(node.config.node_id))
        .with_host(str_bytes(&node.endpoint.host))
        .with_port(node.endpoint.port);
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(&node.identity.cluster_id))
            .with_controller_id(BrokerId(node.config.node_id))
            .with_endpoint_type(1)
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(vec![described]),
    )
}
