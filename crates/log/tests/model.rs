//! Property test: the log against a simple in-memory model (a list of stored batches and a log
//! start offset), with random appends, reads, timestamp lookups, retention, log start advances,
//! recovery checkpoints and clean / unclean reopens in between.

mod common;

use common::{expected_read, Stored};
use once_log::testing::make_batch;
use once_log::{Log, LogConfig, LogError};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append {
        records: u32,
        payload_len: usize,
        timestamp_ms: i64,
    },
    Read {
        offset_pick: u64,
        max_bytes: usize,
        bound_pick: u64,
    },
    Timestamp {
        timestamp_ms: i64,
    },
    Sync,
    ReopenClean,
    ReopenUnclean,
    AdvanceStart {
        pick: u64,
    },
    RetainBytes {
        retention_bytes: u64,
    },
    /// Writes the recovery checkpoint if one is due (only with fsync on).
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u32..5, 0usize..150, 0i64..1_000).prop_map(|(records, payload_len, timestamp_ms)| Op::Append { records, payload_len, timestamp_ms }),
        6 => (any::<u64>(), 0usize..900, any::<u64>()).prop_map(|(offset_pick, max_bytes, bound_pick)| Op::Read { offset_pick, max_bytes, bound_pick }),
        2 => (-10i64..1_100).prop_map(|timestamp_ms| Op::Timestamp { timestamp_ms }),
        1 => Just(Op::Sync),
        1 => Just(Op::ReopenClean),
        1 => Just(Op::ReopenUnclean),
        1 => any::<u64>().prop_map(|pick| Op::AdvanceStart { pick }),
        1 => (0u64..4_000).prop_map(|retention_bytes| Op::RetainBytes { retention_bytes }),
        1 => Just(Op::Checkpoint),
    ]
}

struct Model {
    stored: Vec<Stored>,
    timestamps: Vec<i64>,
    log_start_offset: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.stored.last().map_or(0, |batch| batch.last_offset + 1)
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Option<(u64, i64)> {
        self.stored
            .iter()
            .zip(&self.timestamps)
            .find(|(batch, &max)| batch.last_offset >= self.log_start_offset && max >= timestamp_ms)
            .map(|(batch, &max)| (batch.base_offset.max(self.log_start_offset), max))
    }
}

fn apply(log: &mut Log, model: &mut Model, op: &Op, dir: &std::path::Path, config: &LogConfig) {
    match *op {
        Op::Append { records, payload_len, timestamp_ms } => {
            let mut bytes = make_batch(records, payload_len, timestamp_ms);
            let info = log.append(&mut bytes, 0).expect("append");
            assert_eq!(info.base_offset, model.end());
            model.stored.push(Stored { base_offset: info.base_offset, last_offset: info.last_offset, bytes });
            model.timestamps.push(timestamp_ms);
        }
        Op::Read { offset_pick, max_bytes, bound_pick } => {
            let (start, end) = (model.log_start_offset, model.end());
            let offset = start + offset_pick % (end - start + 1);
            let bound = bound_pick % (end + 2);
            let got = log.read(offset, max_bytes, bound).expect("read");
            assert_eq!(
                got,
                expected_read(&model.stored, offset, max_bytes, bound),
                "read({offset}, {max_bytes}, {bound})"
            );
            if start > 0 {
                assert!(matches!(log.read(start - 1, max_bytes, bound), Err(LogError::OffsetOutOfRange { .. })));
            }
            assert!(matches!(log.read(end + 1, max_bytes, bound), Err(LogError::OffsetOutOfRange { .. })));
        }
        Op::Timestamp { timestamp_ms } => {
            assert_eq!(
                log.offset_for_timestamp(timestamp_ms).expect("lookup"),
                model.offset_for_timestamp(timestamp_ms),
                "timestamp {timestamp_ms}"
            );
        }
        Op::Sync => assert_eq!(log.sync().expect("sync"), model.end()),
        Op::ReopenClean => {
            let closing = std::mem::replace(log, Log::open(&dir.join("scratch"), config.clone()).expect("scratch"));
            closing.close().expect("close");
            *log = Log::open(dir, config.clone()).expect("reopen");
            assert!(log.recovery_stats().clean);
        }
        Op::ReopenUnclean => {
            let crashed = std::mem::replace(log, Log::open(&dir.join("scratch"), config.clone()).expect("scratch"));
            drop(crashed);
            *log = Log::open(dir, config.clone()).expect("reopen");
            assert!(!log.recovery_stats().clean);
            assert_eq!(log.recovery_stats().truncated_bytes, 0, "nothing lost without a torn write");
        }
        Op::AdvanceStart { pick } => {
            let (start, end) = (model.log_start_offset, model.end());
            let target = start + pick % (end - start + 1);
            log.advance_log_start_offset(target).expect("advance");
            model.log_start_offset = target;
        }
        Op::Checkpoint => {
            if let Some(due) = log.recovery_checkpoint_due(0) {
                due.write().expect("checkpoint");
                log.recovery_checkpoint_written(&due);
            }
        }
        Op::RetainBytes { retention_bytes } => {
            log.set_config(LogConfig { retention_bytes: Some(retention_bytes), ..config.clone() });
            log.apply_retention(0).expect("retention");
            log.set_config(config.clone());
            let start = log.log_start_offset();
            assert!(start >= model.log_start_offset, "retention never moves the start back");
            assert!(
                start == model.log_start_offset || model.stored.iter().any(|batch| batch.base_offset == start),
                "retention cuts at batch boundaries"
            );
            model.log_start_offset = start;
        }
    }
    assert_eq!(log.log_end_offset(), model.end(), "after {op:?}");
    assert_eq!(log.log_start_offset(), model.log_start_offset, "after {op:?}");
}

/// No zeros written ahead, or zeros a few bytes to a few batches at a time (the batches are 60–400
/// bytes), or past any segment's limit.
fn zero_ahead() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1u64..600, Just(1 << 20)]
}

/// Applies `ops` to a new log (in a temporary directory) and to the model, comparing after each.
fn run(config: LogConfig, ops: &[Op]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(&dir.path().join("log"), config.clone()).expect("open");
    let mut model = Model { stored: Vec::new(), timestamps: Vec::new(), log_start_offset: 0 };
    for op in ops {
        apply(&mut log, &mut model, op, &dir.path().join("log"), &config);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(segment_bytes_max in 800u64..2_500, index_interval_bytes in 0u32..300, zero_ahead_bytes in zero_ahead(), ops in proptest::collection::vec(op(), 1..80)) {
        // Fsync off for speed only: nothing here simulates a power loss (crash.rs does).
        run(LogConfig { segment_bytes_max, segment_ms_max: None, retention_bytes: None, retention_ms: None, index_interval_bytes, unsafe_skip_fsync: true, zero_ahead_bytes, zero_ahead_any_file_system: true }, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// With fsync on, so that recovery checkpoints are written: an unclean reopen that walks the
    /// checkpointed part of a segment (the active one, or the first of several after a roll)
    /// answers every read and lookup as the model does.
    #[test]
    fn log_with_recovery_checkpoints_matches_model(segment_bytes_max in 800u64..2_500, index_interval_bytes in 0u32..300, zero_ahead_bytes in zero_ahead(), ops in proptest::collection::vec(op(), 1..50)) {
        run(LogConfig { segment_bytes_max, segment_ms_max: None, retention_bytes: None, retention_ms: None, index_interval_bytes, unsafe_skip_fsync: false, zero_ahead_bytes, zero_ahead_any_file_system: true }, &ops);
    }
}
