//! The consumer protocol's embedded formats (subscription and assignment), read for OffsetDelete and
//! DescribeGroups tooling. Each starts with an `i16` version; newer versions than the codec knows are
//! read as its newest, as Kafka does (fields are only ever appended).

use std::collections::HashSet;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::Decodable;

use crate::group::Group;

const NEWEST_VERSION: i16 = 3;

fn split_version(mut bytes: Bytes) -> Option<(Bytes, i16)> {
    if bytes.remaining() < 2 {
        return None;
    }
    let version = bytes.get_i16();
    (version >= 0).then_some((bytes, version.min(NEWEST_VERSION)))
}

/// Topics a consumer subscribes to, from its JoinGroup metadata; `None` if it does not decode.
pub fn decode_subscription(metadata: Bytes) -> Option<Vec<String>> {
    let (mut bytes, version) = split_version(metadata)?;
    let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version).ok()?;
    Some(subscription.topics.iter().map(|topic| topic.to_string()).collect())
}

/// (topic, partitions) a consumer was assigned, from its SyncGroup assignment.
pub fn decode_assignment(assignment: Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if assignment.is_empty() {
        return Some(Vec::new());
    }
    let (mut bytes, version) = split_version(assignment)?;
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version).ok()?;
    Some(
        assignment.assigned_partitions.into_iter().map(|topic| (topic.topic.0.to_string(), topic.partitions)).collect(),
    )
}

/// Every topic some member of a consumer group subscribes to (metadata of the chosen protocol).
pub fn subscribed_topics(group: &Group) -> HashSet<String> {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    group.members.values().filter_map(|member| decode_subscription(member.metadata_for(&protocol))).flatten().collect()
}
