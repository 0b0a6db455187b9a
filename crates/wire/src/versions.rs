//! The APIs and versions Once speaks.
//!
//! Two ranges per API: what is *advertised* in ApiVersions and what is *served*. They differ only for
//! Produce: Kafka 4 serves Produce v3+ yet advertises v0–v2 too, because librdkafka disables
//! compression when it does not see them (librdkafka issue 4956). A real v0–v2 Produce is answered
//! with UNSUPPORTED_VERSION for every partition, in the request's own response layout, and the
//! connection stays open (`request::LEGACY_PRODUCE_VERSIONS`); Kafka 4 advertises and refuses them too.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

/// One API of the table.
#[derive(Debug, Clone, Copy)]
pub struct ApiSupport {
    pub api_key: ApiKey,
    pub advertised: VersionRange,
    pub served: VersionRange,
}

const fn range(min: i16, max: i16) -> VersionRange {
    VersionRange { min, max }
}

const fn same(api_key: ApiKey, min: i16, max: i16) -> ApiSupport {
    ApiSupport { api_key, advertised: range(min, max), served: range(min, max) }
}

/// Every API Once serves. Upper bounds stop below versions whose semantics Once does not implement yet
/// (Produce v12 is KIP-890 transactions v2; Fetch v13 and Metadata-by-topic-id need topic ids in fetch
/// sessions), so clients pick a version whose meaning Once honours completely.
pub const SUPPORTED_APIS: &[ApiSupport] = &[
    ApiSupport { api_key: ApiKey::Produce, advertised: range(0, 11), served: range(3, 11) },
    same(ApiKey::Fetch, 4, 12),
    same(ApiKey::ListOffsets, 1, 7),
    same(ApiKey::Metadata, 0, 12),
    same(ApiKey::ApiVersions, 0, 4),
    same(ApiKey::CreateTopics, 2, 7),
    same(ApiKey::DeleteTopics, 1, 5),
    same(ApiKey::CreatePartitions, 0, 3),
    same(ApiKey::DescribeConfigs, 1, 4),
    // AlterConfigs is deprecated in Kafka but still served (every version, KIP-896 removed none):
    // kafkajs and aiokafka have no incremental variant.
    same(ApiKey::AlterConfigs, 0, 2),
    same(ApiKey::IncrementalAlterConfigs, 0, 1),
    same(ApiKey::DescribeCluster, 0, 1),
    // Idempotent and transactional producers; v3+ carries KIP-360's epoch bump. v5+ signals
    // transactions v2 (KIP-890 part 2), which Once does not implement.
    same(ApiKey::InitProducerId, 0, 4),
    // Transactions (KIP-98). AddPartitionsToTxn v4+ is the brokers' verify-only form; the v4 of
    // AddOffsetsToTxn/EndTxn only adds TRANSACTION_ABORTABLE (never sent by Once); EndTxn v5 is TV2.
    same(ApiKey::AddPartitionsToTxn, 0, 3),
    same(ApiKey::AddOffsetsToTxn, 0, 4),
    same(ApiKey::EndTxn, 0, 4),
    same(ApiKey::TxnOffsetCommit, 0, 3),
    // Kafka 4 accepts only v1; it is what `kafka-transactions.sh abort` sends.
    same(ApiKey::WriteTxnMarkers, 1, 1),
    same(ApiKey::DescribeProducers, 0, 0),
    same(ApiKey::DescribeTransactions, 0, 0),
    // v2 adds a transactional-id regex filter (KIP-1152), not served.
    same(ApiKey::ListTransactions, 0, 1),
    // Consumer groups, classic protocol only (KIP-848's ConsumerGroupHeartbeat is not served).
    // FindCoordinator stops at v4: v5 and v6 carry KIP-890 and share-group semantics.
    // DescribeGroups stops at v5: v6 reports unknown groups with GROUP_ID_NOT_FOUND (KIP-1043).
    same(ApiKey::FindCoordinator, 0, 4),
    same(ApiKey::JoinGroup, 0, 9),
    same(ApiKey::SyncGroup, 0, 5),
    same(ApiKey::Heartbeat, 0, 4),
    same(ApiKey::LeaveGroup, 0, 5),
    same(ApiKey::OffsetCommit, 2, 9),
    same(ApiKey::OffsetFetch, 1, 9),
    same(ApiKey::OffsetDelete, 0, 0),
    same(ApiKey::ListGroups, 0, 5),
    same(ApiKey::DescribeGroups, 0, 5),
    same(ApiKey::DeleteGroups, 0, 2),
    // SASL (KIP-43, KIP-152). SaslHandshake v0 is advertised because librdkafka looks for it before
    // it uses SASL at all, but Once then expects the tokens in SaslAuthenticate (a client that sends
    // them raw after a v0 handshake, outside Kafka's framing, is disconnected). SaslAuthenticate v2
    // is KIP-368's.
    same(ApiKey::SaslHandshake, 0, 1),
    same(ApiKey::SaslAuthenticate, 0, 2),
    // ACLs (KIP-11; v1 adds KIP-290's pattern types, v2+ are flexible). Kafka 4 removed v0
    // (KIP-896), whose filters could not say LITERAL or PREFIXED.
    same(ApiKey::DescribeAcls, 1, 3),
    same(ApiKey::CreateAcls, 1, 3),
    same(ApiKey::DeleteAcls, 1, 3),
    // Users' SCRAM credentials (KIP-554); v0 only in Kafka.
    same(ApiKey::DescribeUserScramCredentials, 0, 0),
    same(ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The entry for `api_key`, if Once serves that API at all.
pub fn support(api_key: ApiKey) -> Option<&'static ApiSupport> {
    SUPPORTED_APIS.iter().find(|entry| entry.api_key == api_key)
}

/// Whether a request of this key and version can be decoded and answered.
pub fn is_served(api_key: ApiKey, version: i16) -> bool {
    support(api_key).is_some_and(|entry| entry.served.min <= version && version <= entry.served.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_within_codec_ranges() {
        for entry in SUPPORTED_APIS {
            let codec = entry.api_key.valid_versions();
            assert!(entry.served.min >= codec.min, "{:?} served below what the codec decodes", entry.api_key);
            assert!(entry.served.max <= codec.max, "{:?} served above what the codec decodes", entry.api_key);
            assert!(entry.advertised.min <= entry.served.min, "{:?} advertised range must cover served", entry.api_key);
            assert!(
                entry.advertised.max == entry.served.max,
                "{:?} advertised max must equal served max",
                entry.api_key
            );
        }
    }

    #[test]
    fn only_the_classic_group_protocol_is_advertised() {
        assert!(support(ApiKey::JoinGroup).is_some());
        assert!(support(ApiKey::ConsumerGroupHeartbeat).is_none(), "KIP-848 must not be advertised");
        assert!(support(ApiKey::ConsumerGroupDescribe).is_none(), "KIP-848 must not be advertised");
    }

    #[test]
    fn produce_v0_to_v2_advertised_not_served() {
        assert!(!is_served(ApiKey::Produce, 2));
        assert!(is_served(ApiKey::Produce, 3));
        assert_eq!(support(ApiKey::Produce).map(|entry| entry.advertised.min), Some(0));
    }
}
