//! DescribeCluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, ResponseKind};
use once_node::Node;

use super::str_bytes;

pub fn describe(broker: &Node, _request: &DescribeClusterRequest) -> ResponseKind {
    let node = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(broker.config.node_id))
        .with_host(str_bytes(&broker.endpoint.host))
        .with_port(broker.endpoint.port);
    ResponseKind::DescribeCluster(
        DescribeClusterResponse::default()
            .with_cluster_id(str_bytes(&broker.identity.cluster_id))
            .with_controller_id(BrokerId(broker.config.node_id))
            .with_endpoint_type(1)
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(vec![node]),
    )
}
