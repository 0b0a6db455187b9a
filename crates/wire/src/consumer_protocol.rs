//! The consumer protocol's embedded formats, which ride inside group requests as opaque bytes: a
//! member's subscription (JoinGroup metadata) and its assignment (SyncGroup). Each starts with an
//! `i16` version; versions newer than the codec knows are read as its newest, as Kafka does (fields
//! are only ever appended). Read by the broker (OffsetDelete asks which topics a member
//! subscribes to), the CLI and the console (who is assigned what).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::Decodable;

/// The newest version of both formats the codec reads.
const NEWEST_VERSION: i16 = 3;

fn split_version(mut bytes: Bytes) -> Option<(Bytes, i16)> {
    if bytes.remaining() < 2 {
        return None;
    }
    let version = bytes.get_i16();
    (version >= 0).then_some((bytes, version.min(NEWEST_VERSION)))
}

/// Topics a consumer subscribes to, from its JoinGroup metadata; `None` if it does not decode.
pub fn subscribed_topics(metadata: Bytes) -> Option<Vec<String>> {
    let (mut bytes, version) = split_version(metadata)?;
    let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version).ok()?;
    Some(subscription.topics.iter().map(|topic| topic.to_string()).collect())
}

/// Topic → partitions of a member's assignment; `None` if it does not decode (another protocol
/// type, or no assignment yet: empty bytes).
pub fn assigned_partitions(assignment: Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    let (mut bytes, version) = split_version(assignment)?;
    let decoded = ConsumerProtocolAssignment::decode(&mut bytes, version).ok()?;
    Some(decoded.assigned_partitions.into_iter().map(|topic| (topic.topic.0.to_string(), topic.partitions)).collect())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn assignment(version: i16) -> Bytes {
        let topic = TopicPartition::default()
            .with_topic(TopicName(StrBytes::from_static_str("payments")))
            .with_partitions(vec![0, 2]);
        let body = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![topic]);
        let mut bytes = bytes::BytesMut::new();
        bytes.extend_from_slice(&version.to_be_bytes());
        body.encode(&mut bytes, version.min(NEWEST_VERSION)).expect("encodes");
        bytes.freeze()
    }

    #[test]
    fn assignments_decode_at_every_version_and_newer_ones_as_the_newest() {
        for version in [0, 1, 2, 3, 7] {
            assert_eq!(
                assigned_partitions(assignment(version)),
                Some(vec![("payments".to_string(), vec![0, 2])]),
                "version {version}"
            );
        }
    }

    #[test]
    fn what_does_not_decode_is_none() {
        assert_eq!(assigned_partitions(Bytes::new()), None, "no assignment yet");
        assert_eq!(assigned_partitions(Bytes::from_static(&[0xff, 0xff, 0, 0])), None, "a negative version");
        assert_eq!(assigned_partitions(Bytes::from_static(&[0, 0, 0, 0, 0, 9])), None, "truncated");
        assert_eq!(subscribed_topics(Bytes::from_static(&[0])), None);
    }
}
