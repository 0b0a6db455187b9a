//! InitProducerId for idempotent producers; translation only: the node's producer-id allocation as
//! the Kafka response.
//!
//! Without a transactional id Kafka hands out a fresh producer id at epoch 0 on every call, including
//! KIP-360 calls that name the current id and epoch: the new id starts new sequences, and the old id's
//! state in each partition stays until it expires. A request with a transactional id goes to the
//! transaction coordinator instead (`handlers::txn::init_producer_id`).

use kafka_protocol::messages::{InitProducerIdResponse, ProducerId, ResponseKind};
use once_node::Node;

use crate::errors::topic_error_code;

pub fn init_producer_id(node: &Node) -> ResponseKind {
    let response = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    match node.producer_ids.allocate() {
        Ok(producer_id) => {
            ResponseKind::InitProducerId(response.with_producer_id(ProducerId(producer_id)).with_producer_epoch(0))
        }
        Err(error) => ResponseKind::InitProducerId(response.with_error_code(topic_error_code(&error).code())),
    }
}
