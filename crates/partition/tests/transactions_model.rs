//! The partition's transactions against a model: random transactional and plain batches, markers, and
//! clean and unclean restarts; after every step the last stable offset, the aborted transactions and
//! each producer's open transaction are what the model says.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use once_log::testing::{make_batch, make_batch_with};
use once_partition::{AbortedTxn, LogConfig, Partition, PartitionError, PartitionId, TxnMarker};
use proptest::prelude::*;

const TIMESTAMP_MS: i64 = 1_700_000_000_000;
const PRODUCERS: i64 = 3;

#[derive(Debug, Clone)]
enum Step {
    /// A producer's next batch, in its transaction or not.
    Batch {
        producer: i64,
        transactional: bool,
        records: u32,
    },
    /// A batch without a producer.
    Plain {
        records: u32,
    },
    Marker {
        producer: i64,
        commit: bool,
    },
    Restart {
        clean: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..PRODUCERS, any::<bool>(), 1..4u32)
            .prop_map(|(producer, transactional, records)| Step::Batch { producer, transactional, records }),
        2 => (1..4u32).prop_map(|records| Step::Plain { records }),
        3 => (0..PRODUCERS, any::<bool>()).prop_map(|(producer, commit)| Step::Marker { producer, commit }),
        1 => any::<bool>().prop_map(|clean| Step::Restart { clean }),
    ]
}

#[derive(Debug, Default)]
struct Model {
    end: u64,
    next_sequence: BTreeMap<i64, i32>,
    open: BTreeMap<i64, u64>,
    aborted: Vec<AbortedTxn>,
}

impl Model {
    fn last_stable_offset(&self) -> u64 {
        self.open.values().copied().min().unwrap_or(self.end)
    }

    fn aborted_in_first_offset_order(&self) -> Vec<AbortedTxn> {
        let mut aborted = self.aborted.clone();
        aborted.sort_by_key(|aborted| (aborted.first_offset, aborted.producer_id));
        aborted
    }
}

fn open(dir: &Path) -> Partition {
    // Small segments, so rolls write snapshots mid-run; no fsync, as a crash here is only a drop.
    let config = LogConfig { segment_bytes_max: 400, unsafe_skip_fsync: true, ..LogConfig::default() };
    Partition::open(PartitionId { topic: "t".into(), partition: 0 }, dir, config).expect("open")
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut partition = open(dir.path());
    let mut model = Model::default();
    for step in steps {
        match step {
            Step::Batch { producer, transactional, records } => {
                let sequence = model.next_sequence.get(&producer).copied().unwrap_or(0);
                let attributes = if transactional { 0x10 } else { 0 };
                let batch = make_batch_with(producer, 0, sequence, attributes, records, 8, TIMESTAMP_MS);
                let outcome = partition.append(batch).await;
                if !transactional && model.open.contains_key(&producer) {
                    prop_assert!(matches!(outcome, Err(PartitionError::InvalidTxnState(_))), "{:?}", outcome);
                    continue;
                }
                let appended = outcome.expect("append");
                prop_assert_eq!(appended.base_offset, model.end);
                if transactional {
                    model.open.entry(producer).or_insert(model.end);
                }
                model.next_sequence.insert(producer, sequence + records as i32);
                model.end += u64::from(records);
            }
            Step::Plain { records } => {
                let appended = partition.append(make_batch(records, 8, TIMESTAMP_MS)).await.expect("append");
                prop_assert_eq!(appended.base_offset, model.end);
                model.end += u64::from(records);
            }
            Step::Marker { producer, commit } => {
                let marker = TxnMarker { producer_id: producer, producer_epoch: 0, coordinator_epoch: 0, commit };
                let written = partition.write_marker(marker).await.expect("marker");
                prop_assert_eq!(written.base_offset, model.end);
                let first_offset = model.open.remove(&producer);
                if !commit {
                    let first_offset = first_offset.unwrap_or(model.end);
                    model.aborted.push(AbortedTxn { producer_id: producer, first_offset, last_offset: model.end });
                }
                model.end += 1;
            }
            Step::Restart { clean } => {
                if clean {
                    partition.close().await.expect("close");
                }
                drop(partition);
                tokio::time::sleep(Duration::from_millis(if clean { 0 } else { 20 })).await;
                partition = open(dir.path());
            }
        }
        prop_assert_eq!(partition.high_watermark(), model.end);
        prop_assert_eq!(partition.last_stable_offset(), model.last_stable_offset());
        prop_assert_eq!(partition.aborted_transactions(0, u64::MAX), model.aborted_in_first_offset_order());
        for summary in partition.producers() {
            prop_assert_eq!(summary.current_txn_start_offset, model.open.get(&summary.producer_id).copied());
        }
    }
    partition.close().await.expect("close");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn transactions_match_the_model_across_restarts(steps in proptest::collection::vec(step(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        runtime.expect("runtime").block_on(run(steps))?;
    }
}
