//! Translation only: the consumer protocol's embedded subscription format (in a member's JoinGroup
//! metadata), read for OffsetDelete: the group coordinator asks which topics a member subscribes to and
//! leaves the format to the edge. It starts with an `i16` version; newer versions than the codec knows are read as its
//! newest, as Kafka does (fields are only ever appended).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;

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
