//! Transactions as a partition sees them: markers that end a producer's transaction, the aborted
//! transactions a read_committed consumer must skip, and what DescribeProducers reports.
//!
//! A transactional batch opens a transaction for its producer at its base offset (if none is open);
//! a marker (a control batch of one record) closes it. The last stable offset (LSO) is the first
//! offset of the earliest open transaction, capped at the high watermark.
//!
//! The bytes of a marker are `once_log::batch`'s: [`marker_batch`] builds the control batch the writer
//! appends, and `once_log::batch::parse_control_record` reads it back (the live path and replay both
//! learn what a control batch means from its stored bytes, so they cannot disagree).

use std::collections::BTreeSet;

use once_log::batch;
use once_log::ValidBatch;

/// A transaction marker: the control batch the coordinator writes to end a producer's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Markers from an older coordinator epoch than one already seen for the producer are refused.
    pub coordinator_epoch: i32,
    /// Commit (true) or abort (false).
    pub commit: bool,
}

/// An aborted transaction: read_committed consumers drop the producer's batches from
/// `first_offset` up to the abort marker at `last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: u64,
    /// Offset of the abort marker.
    pub last_offset: u64,
}

/// One producer's state, as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 when no data batch is remembered.
    pub last_sequence: i32,
    /// -1 when unknown.
    pub last_timestamp: i64,
    /// -1 when no marker was seen.
    pub coordinator_epoch: i32,
    /// First offset of the producer's open transaction.
    pub current_txn_start_offset: Option<u64>,
}

/// The transactions of one partition: those open (for the LSO) and those aborted (for fetches).
///
/// Aborted transactions are kept here and in the producer-state snapshot rather than in per-segment
/// `.txnindex` files as Kafka does: 24 bytes each, and retention drops those wholly below the log start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transactions {
    /// (first offset, producer id) of every open transaction; the first is the earliest.
    open: BTreeSet<(u64, i64)>,
    /// In marker order, which is also `last_offset` order (markers take increasing offsets).
    aborted: Vec<AbortedTxn>,
}

impl Transactions {
    /// First offset of the earliest open transaction.
    pub fn earliest_open_offset(&self) -> Option<u64> {
        self.open.first().map(|(first_offset, _)| *first_offset)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn open(&mut self, producer_id: i64, first_offset: u64) {
        let opened = self.try_open(producer_id, first_offset);
        assert!(opened, "producer {producer_id} opens the only transaction starting at offset {first_offset}");
    }

    /// Opens a transaction unless one already starts at `first_offset` (only a bad snapshot has that).
    pub(crate) fn try_open(&mut self, producer_id: i64, first_offset: u64) -> bool {
        let taken = self.open.range((first_offset, i64::MIN)..=(first_offset, i64::MAX)).next().is_some();
        !taken && self.open.insert((first_offset, producer_id))
    }

    pub(crate) fn close(&mut self, producer_id: i64, first_offset: u64) {
        let removed = self.open.remove(&(first_offset, producer_id));
        assert!(removed, "producer {producer_id} closes the transaction it opened at offset {first_offset}");
    }

    pub(crate) fn push_aborted(&mut self, aborted: AbortedTxn) {
        assert!(aborted.first_offset <= aborted.last_offset, "a transaction starts before its abort marker");
        if let Some(previous) = self.aborted.last() {
            assert!(
                previous.last_offset < aborted.last_offset,
                "abort markers take increasing offsets: {} then {}",
                previous.last_offset,
                aborted.last_offset
            );
        }
        self.aborted.push(aborted);
    }

    /// Every aborted transaction, in marker order.
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Aborted transactions whose marker is at or after `from` and whose first offset is below
    /// `upper`, in first-offset order.
    pub fn aborted_overlapping(&self, from: u64, upper: u64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|aborted| aborted.last_offset < from);
        let mut found: Vec<AbortedTxn> =
            self.aborted[start..].iter().filter(|aborted| aborted.first_offset < upper).copied().collect();
        found.sort_by_key(|aborted| (aborted.first_offset, aborted.producer_id));
        found
    }

    /// Forgets aborted transactions whose marker is below `log_start_offset`: no fetch can reach them.
    pub(crate) fn prune_aborted(&mut self, log_start_offset: u64) -> usize {
        let below = self.aborted.partition_point(|aborted| aborted.last_offset < log_start_offset);
        self.aborted.drain(..below);
        below
    }
}

/// The control batch of `marker`, base offset 0 (the log assigns it), timestamped `timestamp_ms`.
pub(crate) fn marker_batch(marker: &TxnMarker, timestamp_ms: i64) -> ValidBatch {
    let TxnMarker { producer_id, producer_epoch, coordinator_epoch, commit } = *marker;
    batch::end_txn_marker(producer_id, producer_epoch, commit, coordinator_epoch, timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::{
        check, check_data, check_marker, BatchMetadata, DataBatch, Decision, LoggedBatch, MarkerBatch, MarkerDecision,
        ProducerEntry, ProducerStates,
    };
    use once_log::batch::{parse_control_record, ControlRecord};
    use once_log::{verify_crc, BatchHeader, BATCH_HEADER_LEN};
    use proptest::prelude::*;

    fn marker_of_77(commit: bool) -> TxnMarker {
        TxnMarker { producer_id: 77, producer_epoch: 3, coordinator_epoch: 9, commit }
    }

    fn batch(first_sequence: i32, count: i32, base_offset: u64) -> BatchMetadata {
        BatchMetadata {
            first_sequence,
            last_sequence: first_sequence + count - 1,
            base_offset,
            last_offset: base_offset + count as u64 - 1,
            max_timestamp: 7,
            records_dropped: false,
        }
    }

    #[test]
    fn a_marker_batch_is_a_valid_control_batch_that_reads_back() {
        for commit in [false, true] {
            let batch = marker_batch(&marker_of_77(commit), 1_234).into_bytes();
            let header = BatchHeader::parse(&batch).expect("header");
            assert!(verify_crc(&batch), "the checksum covers the batch");
            assert_eq!(header.total_len(), batch.len());
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(header.compression(), 0);
            assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (77, 3, -1));
            assert_eq!((header.records_count, header.last_offset_delta), (1, 0));
            assert_eq!((header.base_timestamp, header.max_timestamp), (1_234, 1_234));
            assert_eq!(parse_control_record(&batch), Ok(ControlRecord::EndTxn { commit, coordinator_epoch: 9 }));
        }
    }

    #[test]
    fn control_record_bytes_match_kafka() {
        // Key: version 0, type 1 (commit); value: version 0, coordinator epoch 9 (Kafka's
        // ControlRecordType and EndTransactionMarker). Record: length 16 (zigzag 32), attributes 0, timestamp
        // delta 0, offset delta 0, key length 4 (zigzag 8), value length 6 (zigzag 12), no headers.
        let batch = marker_batch(&marker_of_77(true), 0).into_bytes();
        let expected_record = [32, 0, 0, 0, 8, 0, 0, 0, 1, 12, 0, 0, 0, 0, 0, 9, 0];
        assert_eq!(&batch[BATCH_HEADER_LEN..], &expected_record);
    }

    #[test]
    fn malformed_control_records_are_errors_not_panics() {
        let batch = marker_batch(&marker_of_77(false), 0).into_bytes();
        for cut in 0..batch.len() {
            let parsed = parse_control_record(&batch[..cut]);
            assert!(parsed.is_err(), "a batch cut at {cut} is refused: {parsed:?}");
        }
        let mut other = batch.clone();
        other[BATCH_HEADER_LEN + 8] = 2; // leader change
        assert_eq!(parse_control_record(&other), Ok(ControlRecord::Other { control_type: 2 }));
        let mut compressed = batch;
        compressed[22] |= 0x01;
        assert!(parse_control_record(&compressed).is_err(), "a compressed control batch is not read");
    }

    #[test]
    fn aborted_transactions_overlapping_a_range() {
        let mut transactions = Transactions::default();
        transactions.push_aborted(AbortedTxn { producer_id: 1, first_offset: 10, last_offset: 20 });
        transactions.push_aborted(AbortedTxn { producer_id: 2, first_offset: 5, last_offset: 30 });
        transactions.push_aborted(AbortedTxn { producer_id: 3, first_offset: 40, last_offset: 41 });
        let ids = |found: Vec<AbortedTxn>| found.iter().map(|aborted| aborted.producer_id).collect::<Vec<_>>();
        assert_eq!(ids(transactions.aborted_overlapping(0, 100)), vec![2, 1, 3], "first-offset order");
        assert_eq!(ids(transactions.aborted_overlapping(21, 100)), vec![2, 3], "markers before `from` are out");
        assert_eq!(ids(transactions.aborted_overlapping(20, 40)), vec![2, 1], "first offsets at `upper` are out");
        assert_eq!(ids(transactions.aborted_overlapping(31, 40)), Vec::<i64>::new());
        assert_eq!(transactions.prune_aborted(21), 1, "the marker at 20 is below the new log start");
        assert_eq!(ids(transactions.aborted_overlapping(0, 100)), vec![2, 3]);
    }

    #[test]
    fn the_earliest_open_transaction_sets_the_stable_offset() {
        let mut transactions = Transactions::default();
        assert_eq!(transactions.earliest_open_offset(), None);
        transactions.open(1, 8);
        transactions.open(2, 3);
        assert_eq!(transactions.earliest_open_offset(), Some(3));
        transactions.close(2, 3);
        assert_eq!(transactions.earliest_open_offset(), Some(8));
        transactions.close(1, 8);
        assert_eq!((transactions.earliest_open_offset(), transactions.open_count()), (None, 0));
    }

    fn data(
        producer_id: i64,
        epoch: i16,
        transactional: bool,
        first_sequence: i32,
        count: i32,
        base: u64,
    ) -> DataBatch {
        let metadata = batch(first_sequence, count, base);
        DataBatch { producer_id, epoch, transactional, metadata }
    }

    fn marker(producer_id: i64, epoch: i16, coordinator_epoch: i32, commit: bool, offset: u64) -> LoggedBatch {
        LoggedBatch::Marker(MarkerBatch { producer_id, epoch, coordinator_epoch, commit, offset, timestamp_ms: 50 })
    }

    fn txn_marker(producer_id: i64, producer_epoch: i16, coordinator_epoch: i32) -> TxnMarker {
        TxnMarker { producer_id, producer_epoch, coordinator_epoch, commit: true }
    }

    #[test]
    fn transactional_batches_open_and_markers_close() {
        let mut states = ProducerStates::default();
        states.apply(&LoggedBatch::Data(data(1, 0, true, 0, 2, 0)));
        states.apply(&LoggedBatch::Data(data(2, 0, true, 0, 3, 2)));
        states.apply(&LoggedBatch::Data(data(1, 0, true, 2, 1, 5)));
        assert_eq!(
            states.get(1).and_then(|entry| entry.current_txn_first_offset),
            Some(0),
            "opened by its first batch"
        );
        assert_eq!(states.get(2).and_then(|entry| entry.current_txn_first_offset), Some(2));
        assert_eq!(states.transactions().earliest_open_offset(), Some(0));
        states.apply(&marker(1, 0, 3, true, 6));
        assert_eq!(states.get(1).and_then(|entry| entry.current_txn_first_offset), None, "the commit closed it");
        assert_eq!(states.get(1).map(|entry| entry.coordinator_epoch), Some(3));
        assert_eq!(states.get(1).and_then(ProducerEntry::last_sequence), Some(2), "same epoch: sequences go on");
        assert_eq!(states.transactions().earliest_open_offset(), Some(2));
        assert!(states.transactions().aborted().is_empty(), "a commit aborts nothing");
        states.apply(&marker(2, 0, 3, false, 7));
        assert_eq!(states.transactions().earliest_open_offset(), None);
        assert_eq!(states.transactions().aborted(), &[AbortedTxn { producer_id: 2, first_offset: 2, last_offset: 7 }]);
        states.apply(&LoggedBatch::Data(data(2, 0, true, 3, 1, 8)));
        assert_eq!(states.transactions().earliest_open_offset(), Some(8), "the next transaction opens anew");
    }

    #[test]
    fn a_marker_without_an_open_transaction_is_harmless() {
        let mut states = ProducerStates::default();
        states.apply(&marker(9, 2, 1, false, 4));
        let entry = states.get(9).expect("a marker creates the producer's entry");
        assert_eq!((entry.epoch, entry.coordinator_epoch, entry.current_txn_first_offset), (2, 1, None));
        assert_eq!(states.transactions().aborted(), &[AbortedTxn { producer_id: 9, first_offset: 4, last_offset: 4 }]);
        states.apply(&marker(9, 2, 1, true, 5));
        assert_eq!(states.transactions().aborted().len(), 1, "a commit adds nothing");
        assert_eq!(states.transactions().earliest_open_offset(), None);
    }

    #[test]
    fn a_marker_with_a_new_epoch_restarts_sequences() {
        let mut states = ProducerStates::default();
        states.apply(&LoggedBatch::Data(data(1, 0, true, 0, 4, 0)));
        states.apply(&marker(1, 1, 0, false, 4));
        let entry = states.get(1);
        assert_eq!(entry.map(|entry| (entry.epoch, entry.batches.len())), Some((1, 0)), "cached batches go");
        assert_eq!(check(entry, 1, 0, 0), Decision::Append, "the new epoch starts at 0");
        assert_eq!(check(entry, 0, 4, 4), Decision::Fenced { current_epoch: 1 }, "the old epoch is fenced");
    }

    #[test]
    fn the_checks_of_transactional_batches() {
        let mut states = ProducerStates::default();
        assert_eq!(check_data(None, &data(-1, -1, true, 0, 1, 0)), Decision::TransactionalWithoutProducer);
        assert_eq!(check_data(None, &data(-1, -1, false, -1, 1, 0)), Decision::Append, "no producer: no check");
        let unsequenced = |epoch| DataBatch {
            producer_id: 5,
            epoch,
            transactional: true,
            metadata: BatchMetadata { first_sequence: -1, last_sequence: -1, ..batch(0, 1, 0) },
        };
        assert_eq!(check_data(None, &unsequenced(3)), Decision::Append);
        states.apply(&LoggedBatch::Data(unsequenced(3)));
        let entry = states.get(5);
        assert_eq!(entry.and_then(|entry| entry.current_txn_first_offset), Some(0), "an unsequenced batch opens too");
        assert!(entry.is_some_and(|entry| entry.batches.is_empty()), "an unsequenced batch is not cached");
        assert_eq!(check_data(entry, &unsequenced(2)), Decision::Fenced { current_epoch: 3 }, "older epoch fenced");
        assert_eq!(check_data(entry, &unsequenced(3)), Decision::Append, "no sequence to check");
        let plain = DataBatch { transactional: false, ..unsequenced(3) };
        assert_eq!(check_data(entry, &plain), Decision::TransactionOpen { first_offset: 0 });
        assert_eq!(check_data(entry, &data(5, 3, false, 0, 1, 0)), Decision::TransactionOpen { first_offset: 0 });
        assert_eq!(check_data(entry, &data(5, 3, true, 0, 1, 0)), Decision::Append, "sequences may start anywhere");
        assert_eq!(
            check_data(entry, &data(5, 2, false, 0, 1, 0)),
            Decision::Fenced { current_epoch: 3 },
            "epoch before transaction state"
        );
    }

    #[test]
    fn the_checks_of_markers() {
        let mut states = ProducerStates::default();
        assert_eq!(check_marker(None, &txn_marker(1, 0, 0)), MarkerDecision::Write, "no state: written");
        assert_eq!(check_marker(None, &txn_marker(-1, 0, 0)), MarkerDecision::WithoutProducer);
        states.apply(&LoggedBatch::Data(data(1, 2, true, 0, 1, 0)));
        states.apply(&marker(1, 2, 5, true, 1));
        let entry = states.get(1);
        assert_eq!(check_marker(entry, &txn_marker(1, 1, 9)), MarkerDecision::Fenced { current_epoch: 2 });
        assert_eq!(
            check_marker(entry, &txn_marker(1, 2, 4)),
            MarkerDecision::CoordinatorFenced { current_coordinator_epoch: 5 }
        );
        assert_eq!(check_marker(entry, &txn_marker(1, 2, 5)), MarkerDecision::Write, "the same coordinator epoch");
        assert_eq!(check_marker(entry, &txn_marker(1, 3, 6)), MarkerDecision::Write, "newer epochs");
    }

    #[test]
    fn expiry_and_eviction_skip_open_transactions() {
        let mut states = ProducerStates::with_capacity(2);
        states.apply(&LoggedBatch::Data(data(1, 0, true, 0, 1, 0))); // idle since 7, open transaction
        states.record(2, 0, batch(0, 1, 1), 100);
        assert_eq!(states.expire(10_000, 1_000), 1, "only the producer without a transaction expires");
        assert!(states.get(1).is_some() && states.get(2).is_none());
        states.record(2, 0, batch(0, 1, 1), 100);
        assert!(states.has_room_for(3), "producer 2 may make room");
        states.record(3, 0, batch(0, 1, 2), 200);
        assert!(states.get(2).is_none(), "the longest idle without a transaction is evicted");
        assert!(states.get(1).is_some(), "the idlest producer has an open transaction: kept");
        states.apply(&LoggedBatch::Data(data(3, 0, true, 1, 1, 3)));
        assert!(!states.has_room_for(4), "every producer has an open transaction");
        assert!(states.has_room_for(3), "known producers always have room");
        states.apply(&marker(4, 0, 0, false, 4));
        assert_eq!(states.len(), 3, "a marker is never refused: one past the cap");
        assert_eq!(states.transactions().open_count(), 2);
        states.apply(&marker(1, 0, 0, true, 5));
        assert!(states.has_room_for(5), "a closed transaction makes its producer evictable");
    }

    /// One step of the transaction model: a producer's batch in or out of a transaction, or a marker.
    #[derive(Debug, Clone)]
    enum TxnStep {
        Data { producer: usize, transactional: bool, count: i32 },
        Marker { producer: usize, commit: bool, bump_epoch: bool, coordinator_epoch: i32 },
        Snapshot,
    }

    fn txn_step() -> impl Strategy<Value = TxnStep> {
        prop_oneof![
            6 => (0..3usize, any::<bool>(), 1..4i32)
                .prop_map(|(producer, transactional, count)| TxnStep::Data { producer, transactional, count }),
            3 => (0..3usize, any::<bool>(), proptest::bool::weighted(0.2), 0..4i32)
                .prop_map(|(producer, commit, bump_epoch, coordinator_epoch)| {
                    TxnStep::Marker { producer, commit, bump_epoch, coordinator_epoch }
                }),
            1 => Just(TxnStep::Snapshot),
        ]
    }

    /// What the model remembers of a producer.
    #[derive(Debug, Clone, Copy, Default)]
    struct ModelProducer {
        epoch: i16,
        next_sequence: i32,
        coordinator_epoch: i32,
        open: Option<u64>,
    }

    /// Against a model that just remembers each producer's open transaction and every abort: the checks
    /// refuse exactly what the model refuses, the earliest open transaction and the aborted list match it
    /// after every step, and a snapshot taken at any point changes nothing.
    fn run_model(steps: Vec<TxnStep>) -> Result<(), TestCaseError> {
        let mut states = ProducerStates::default();
        let mut model = [ModelProducer { coordinator_epoch: -1, ..Default::default() }; 3];
        let mut aborted = Vec::new();
        let mut next_offset = 0u64;
        for step in steps {
            match step {
                TxnStep::Data { producer, transactional, count } => {
                    let state = &mut model[producer];
                    let producer_id = producer as i64;
                    let candidate =
                        data(producer_id, state.epoch, transactional, state.next_sequence, count, next_offset);
                    let decision = check_data(states.get(producer_id), &candidate);
                    if let (false, Some(first_offset)) = (transactional, state.open) {
                        prop_assert_eq!(decision, Decision::TransactionOpen { first_offset });
                        continue;
                    }
                    prop_assert_eq!(decision, Decision::Append);
                    states.apply(&LoggedBatch::Data(candidate));
                    state.open = state.open.or(transactional.then_some(next_offset));
                    state.next_sequence += count;
                    next_offset += count as u64;
                }
                TxnStep::Marker { producer, commit, bump_epoch, coordinator_epoch } => {
                    let state = &mut model[producer];
                    let (producer_id, producer_epoch) = (producer as i64, state.epoch + i16::from(bump_epoch));
                    let request = TxnMarker { producer_id, producer_epoch, coordinator_epoch, commit };
                    let decision = check_marker(states.get(producer_id), &request);
                    if coordinator_epoch < state.coordinator_epoch {
                        let current_coordinator_epoch = state.coordinator_epoch;
                        prop_assert_eq!(decision, MarkerDecision::CoordinatorFenced { current_coordinator_epoch });
                        continue;
                    }
                    prop_assert_eq!(decision, MarkerDecision::Write);
                    states.apply(&marker(producer_id, producer_epoch, coordinator_epoch, commit, next_offset));
                    if !commit {
                        let first_offset = state.open.unwrap_or(next_offset);
                        aborted.push(AbortedTxn { producer_id, first_offset, last_offset: next_offset });
                    }
                    let next_sequence = if bump_epoch { 0 } else { state.next_sequence };
                    *state = ModelProducer { epoch: producer_epoch, next_sequence, coordinator_epoch, open: None };
                    next_offset += 1;
                }
                TxnStep::Snapshot => {
                    let snapshot = crate::snapshot::encode(&states, next_offset);
                    let (offset, decoded) = crate::snapshot::decode(&snapshot).expect("a snapshot decodes");
                    prop_assert_eq!(offset, next_offset);
                    prop_assert_eq!(decoded.transactions(), states.transactions());
                    states = decoded;
                }
            }
            let earliest = model.iter().filter_map(|state| state.open).min();
            prop_assert_eq!(states.transactions().earliest_open_offset(), earliest);
            prop_assert_eq!(states.transactions().aborted(), aborted.as_slice());
            for (producer, state) in model.iter().enumerate() {
                let open = states.get(producer as i64).and_then(|entry| entry.current_txn_first_offset);
                prop_assert_eq!(open, state.open);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn transactions_match_a_model(steps in proptest::collection::vec(txn_step(), 1..120)) {
            run_model(steps)?;
        }
    }

    /// On-disk compatibility: a marker is the bytes the partition wrote before the batch format moved
    /// to `once_log::batch` (recorded from the previous hand-written encoder).
    #[test]
    fn markers_are_written_as_before_the_batch_module() {
        const OLD_ABORT_MARKER: &str = "000000000000000000000042ffffffff02104f409500300000000000000000000004d200000000000004d2000000000000004d0003ffffffff000000012000000008000000000c00000000000900";
        let old: Vec<u8> = (0..OLD_ABORT_MARKER.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&OLD_ABORT_MARKER[at..at + 2], 16).expect("hex"))
            .collect();
        let marker = TxnMarker { producer_id: 77, producer_epoch: 3, coordinator_epoch: 9, commit: false };
        assert_eq!(marker_batch(&marker, 1_234).into_bytes(), old);
        assert_eq!(parse_control_record(&old), Ok(ControlRecord::EndTxn { commit: false, coordinator_epoch: 9 }));
    }
}
