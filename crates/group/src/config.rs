//! Group coordinator configuration.

use std::path::PathBuf;

/// Seven days in minutes: Kafka's default `offsets.retention.minutes`.
const SEVEN_DAYS_MINUTES: u64 = 7 * 24 * 60;

/// Where clients reach the coordinator (this broker), for FindCoordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorNode {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// Everything the coordinator is configured with. Defaults follow Kafka where Kafka's make sense for
/// a single node; where they differ the field says why.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Directory of the internal offsets log (`<data>/groups/__consumer_offsets/0`).
    pub offsets_dir: PathBuf,
    /// This broker, the coordinator of every group and transactional id.
    pub node: CoordinatorNode,
    /// Offsets of a group that has been empty this long are expired (Kafka `offsets.retention.minutes`).
    pub offsets_retention_minutes: u64,
    /// How often expired offsets and dead members are looked for (Kafka `offsets.retention.check.interval.ms`
    /// is 10 minutes; members are checked on every tick regardless).
    pub offsets_retention_check_interval_ms: u64,
    /// Shortest session timeout a member may ask for. Kafka's `group.min.session.timeout.ms` is 6 s;
    /// 1 s here so that tests and small deployments can detect dead consumers quickly.
    pub session_timeout_min_ms: i32,
    /// Longest session timeout a member may ask for (Kafka `group.max.session.timeout.ms`).
    pub session_timeout_max_ms: i32,
    /// Most groups the coordinator keeps in memory; creating one more is refused.
    pub groups_max: usize,
    /// Most members of one group (Kafka `group.max.size`, which is unbounded by default).
    pub members_per_group_max: usize,
    /// Most committed offsets one group may hold.
    pub offsets_per_group_max: usize,
    /// Largest metadata string of a committed offset (Kafka `offset.metadata.max.bytes`).
    pub offset_metadata_bytes_max: usize,
    /// Skip fsync of the offsets log. Benchmarks only.
    pub unsafe_skip_fsync: bool,
    /// Rewrite the offsets log at every open, whatever its size and share of live records. For tests
    /// of compaction; the thresholds otherwise are `compaction::COMPACT_LOG_BYTES_MIN` and
    /// `compaction::COMPACT_RECORDS_PER_LIVE_MIN`.
    pub offsets_compaction_forced: bool,
}

impl GroupConfig {
    /// Defaults for a broker whose data lives in `data_dir`.
    pub fn new(data_dir: &std::path::Path, node: CoordinatorNode) -> GroupConfig {
        GroupConfig {
            offsets_dir: data_dir.join("groups").join("__consumer_offsets").join("0"),
            node,
            offsets_retention_minutes: SEVEN_DAYS_MINUTES,
            offsets_retention_check_interval_ms: 60_000,
            session_timeout_min_ms: 1_000,
            session_timeout_max_ms: 1_800_000,
            groups_max: 100_000,
            members_per_group_max: 1_000,
            offsets_per_group_max: 100_000,
            offset_metadata_bytes_max: 4096,
            unsafe_skip_fsync: false,
            offsets_compaction_forced: false,
        }
    }

    pub(crate) fn offsets_retention_ms(&self) -> u64 {
        self.offsets_retention_minutes.saturating_mul(60_000)
    }
}
