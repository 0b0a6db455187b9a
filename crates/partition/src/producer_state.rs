//! Producer state of one partition, and the pure checks every producer batch and marker go through.
//!
//! Per producer id the partition keeps the current epoch and the metadata of its last
//! [`BATCHES_CACHED`] batches, as Kafka's `ProducerStateEntry` does: five, because clients cap
//! `max.in.flight` at five with idempotence, so any retry still in flight matches one of them.
//! The check is a pure function returning what it decided ([`Decision`]), epoch before sequence:
//! a batch equal to a cached one (same epoch, same sequence range) is a duplicate and is answered with
//! the original offset; a lower epoch is fenced; a higher epoch must start at sequence 0; the same
//! epoch must continue at last sequence + 1 (wrapping at `i32::MAX`); a producer without state is
//! accepted at any sequence (KIP-360: its state may have expired or been lost with retention).
//!
//! Transactions (Kafka's `ProducerAppendInfo`): a transactional batch opens a transaction at its base
//! offset if its producer has none open; a non-transactional batch while one is open is refused; a
//! marker ([`check_marker`]) closes it, and an abort marker adds an aborted transaction. Every batch
//! in the log changes the state through one function, [`ProducerStates::apply`], on the live path and
//! in replay alike, so the two cannot diverge.

use std::collections::{HashMap, VecDeque};

use crate::txn::{AbortedTxn, ProducerSummary, Transactions, TxnMarker};

/// Batches remembered per producer for duplicate detection (Kafka's `NUM_BATCHES_TO_RETAIN`).
pub const BATCHES_CACHED: usize = 5;

/// What is remembered of one appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub max_timestamp: i64,
    /// Deduplication dropped records from the batch as stored (it holds fewer records than the
    /// offsets it spans): a retry is answered with an unknown base offset (minus the record count),
    /// since no one base offset tells where its records are.
    pub records_dropped: bool,
}

/// The state of one producer id in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`BATCHES_CACHED`].
    pub batches: VecDeque<BatchMetadata>,
    /// Timestamp of the last batch or marker, for expiry.
    pub last_append_ms: i64,
    /// First offset of the producer's open transaction (Kafka's `currentTxnFirstOffset`).
    pub current_txn_first_offset: Option<u64>,
    /// Coordinator epoch of the last marker written for the producer; -1 before any.
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    /// A producer first seen now, at `epoch`, with no batch, transaction or marker yet.
    pub fn new(epoch: i16, last_append_ms: i64) -> Self {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_append_ms,
            current_txn_first_offset: None,
            coordinator_epoch: -1,
        }
    }

    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|batch| batch.last_sequence)
    }

    /// Moves to `epoch`: a new epoch restarts sequences at 0, so the cached batches no longer apply.
    fn set_epoch(&mut self, epoch: i16) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }
}

/// What the check decided for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Append it.
    Append,
    /// Already appended: append nothing, answer with the original's offsets and timestamp.
    Duplicate(BatchMetadata),
    /// An epoch older than the producer's current one: a zombie (INVALID_PRODUCER_EPOCH / PRODUCER_FENCED).
    Fenced { current_epoch: i16 },
    /// A gap or a sequence that does not continue the last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder { expected_first_sequence: i32 },
    /// A non-transactional batch while the producer's transaction is open (INVALID_TXN_STATE).
    TransactionOpen { first_offset: u64 },
    /// A transactional batch without a producer id (INVALID_TXN_STATE).
    TransactionalWithoutProducer,
}

/// What the check decided for a transaction marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerDecision {
    /// Append it.
    Write,
    /// The marker's producer epoch is older than the producer's (PRODUCER_FENCED).
    Fenced { current_epoch: i16 },
    /// The marker's coordinator epoch is older than one seen before (TRANSACTION_COORDINATOR_FENCED).
    CoordinatorFenced { current_coordinator_epoch: i32 },
    /// A marker needs a producer id (INVALID_TXN_STATE).
    WithoutProducer,
}

/// A data batch as producer state sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataBatch {
    /// -1 for a batch without a producer, which producer state ignores.
    pub producer_id: i64,
    pub epoch: i16,
    pub transactional: bool,
    /// Its offsets, timestamp and sequences. Both sequences are -1 for a batch written without
    /// sequences (the group coordinator's transactional offset commits): such a batch is checked
    /// for its epoch and its transaction, never for its sequence, and is not cached.
    pub metadata: BatchMetadata,
}

impl DataBatch {
    pub fn sequenced(&self) -> bool {
        self.metadata.first_sequence >= 0
    }
}

/// A transaction marker as it was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    /// Offset of the marker.
    pub offset: u64,
    pub timestamp_ms: i64,
}

/// What one batch of the log means to producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedBatch {
    Data(DataBatch),
    Marker(MarkerBatch),
}

/// The sequence that follows `sequence`, wrapping at `i32::MAX` to 0 as Kafka does.
pub fn next_sequence(sequence: i32) -> i32 {
    add_to_sequence(sequence, 1)
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0 (Kafka's `incrementSequence`): the last
/// sequence of a batch is `base_sequence + last_offset_delta` in this arithmetic.
pub fn add_to_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(sequence >= 0 && increment >= 0, "sequences and increments are non-negative");
    ((i64::from(sequence) + i64::from(increment)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Decides what to do with a batch of `epoch` carrying sequences `first_sequence..=last_sequence`.
pub fn check(entry: Option<&ProducerEntry>, epoch: i16, first_sequence: i32, last_sequence: i32) -> Decision {
    let Some(entry) = entry else {
        return Decision::Append;
    };
    if epoch == entry.epoch {
        let cached = entry
            .batches
            .iter()
            .find(|batch| batch.first_sequence == first_sequence && batch.last_sequence == last_sequence);
        if let Some(original) = cached {
            return Decision::Duplicate(*original);
        }
    }
    if epoch < entry.epoch {
        return Decision::Fenced { current_epoch: entry.epoch };
    }
    if epoch > entry.epoch {
        return match first_sequence {
            0 => Decision::Append,
            _ => Decision::OutOfOrder { expected_first_sequence: 0 },
        };
    }
    let expected = entry.last_sequence().map_or(first_sequence, next_sequence);
    if first_sequence == expected {
        Decision::Append
    } else {
        Decision::OutOfOrder { expected_first_sequence: expected }
    }
}

/// Decides what to do with a data batch, in Kafka's order: duplicate, epoch, sequence (only for a
/// sequenced batch), then the transaction (a non-transactional batch may not interleave with an open
/// transaction of the same producer).
pub fn check_data(entry: Option<&ProducerEntry>, batch: &DataBatch) -> Decision {
    if batch.producer_id < 0 {
        return if batch.transactional { Decision::TransactionalWithoutProducer } else { Decision::Append };
    }
    let decided = match entry {
        _ if batch.sequenced() => {
            check(entry, batch.epoch, batch.metadata.first_sequence, batch.metadata.last_sequence)
        }
        Some(entry) if batch.epoch < entry.epoch => Decision::Fenced { current_epoch: entry.epoch },
        _ => Decision::Append,
    };
    if decided != Decision::Append {
        return decided;
    }
    match entry.and_then(|entry| entry.current_txn_first_offset) {
        Some(first_offset) if !batch.transactional => Decision::TransactionOpen { first_offset },
        _ => Decision::Append,
    }
}

/// Decides whether a marker may be written: producer epoch first, then coordinator epoch. A marker
/// for a producer without state, or without an open transaction, is written all the same (as in
/// Kafka): that makes a retried marker harmless.
pub fn check_marker(entry: Option<&ProducerEntry>, marker: &TxnMarker) -> MarkerDecision {
    if marker.producer_id < 0 {
        return MarkerDecision::WithoutProducer;
    }
    let Some(entry) = entry else {
        return MarkerDecision::Write;
    };
    if marker.producer_epoch < entry.epoch {
        return MarkerDecision::Fenced { current_epoch: entry.epoch };
    }
    if marker.coordinator_epoch < entry.coordinator_epoch {
        return MarkerDecision::CoordinatorFenced { current_coordinator_epoch: entry.coordinator_epoch };
    }
    MarkerDecision::Write
}

/// Producers remembered per partition at most. About 250 bytes each (the map entry plus five cached
/// batches of 32 bytes), so the cap bounds one partition's producer state near 25 MiB.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;

/// The producers of one partition and their transactions.
#[derive(Debug, Clone)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions (mirroring each entry's `current_txn_first_offset`) and aborted ones.
    transactions: Transactions,
    capacity: usize,
}

impl Default for ProducerStates {
    fn default() -> Self {
        ProducerStates::with_capacity(PRODUCERS_PER_PARTITION_MAX)
    }
}

impl ProducerStates {
    /// State for at most `capacity` producers. When a new producer arrives at the cap, the longest-idle
    /// producer without an open transaction is forgotten, exactly as if it had expired. Should that
    /// producer still retry a batch, the retry would be appended again (KIP-360: no state, no check) —
    /// the price of bounded memory, paid only by the longest-idle producer, and logged as a warning.
    /// If every producer has an open transaction, the writer refuses the new producer's batches
    /// ([`ProducerStates::has_room_for`]) until a marker closes one; only markers and replay, which
    /// must never be refused, then go past the cap.
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "producer state needs room for one producer");
        ProducerStates { producers: HashMap::new(), transactions: Transactions::default(), capacity }
    }

    /// State restored from a snapshot, or `None` if the parts contradict each other (two producers'
    /// transactions at one offset, aborted transactions out of marker order).
    pub(crate) fn restore(producers: Vec<(i64, ProducerEntry)>, aborted: Vec<AbortedTxn>) -> Option<Self> {
        let mut states = ProducerStates::default();
        for (producer_id, entry) in producers {
            let opened = entry
                .current_txn_first_offset
                .is_none_or(|first_offset| states.transactions.try_open(producer_id, first_offset));
            if !opened {
                return None;
            }
            if states.producers.insert(producer_id, entry).is_some() {
                return None;
            }
        }
        let in_order = aborted.windows(2).all(|pair| pair[0].last_offset < pair[1].last_offset);
        if !in_order || aborted.iter().any(|aborted| aborted.first_offset > aborted.last_offset) {
            return None;
        }
        for aborted in aborted {
            states.transactions.push_aborted(aborted);
        }
        Some(states)
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(producer_id, entry)| (*producer_id, entry))
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The open and aborted transactions.
    pub fn transactions(&self) -> &Transactions {
        &self.transactions
    }

    /// One summary per producer, by producer id (DescribeProducers).
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut summaries: Vec<ProducerSummary> = self
            .iter()
            .map(|(producer_id, entry)| ProducerSummary {
                producer_id,
                producer_epoch: entry.epoch,
                last_sequence: entry.last_sequence().unwrap_or(-1),
                last_timestamp: entry.last_append_ms,
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_start_offset: entry.current_txn_first_offset,
            })
            .collect();
        summaries.sort_by_key(|summary| summary.producer_id);
        summaries
    }

    /// False only when `producer_id` is new, the cap is reached and every remembered producer has an
    /// open transaction, so that none may be forgotten to make room.
    pub fn has_room_for(&self, producer_id: i64) -> bool {
        self.producers.len() < self.capacity
            || self.producers.contains_key(&producer_id)
            || self.producers.values().any(|entry| entry.current_txn_first_offset.is_none())
    }

    /// Before a new producer is added at the cap: forgets the longest-idle producer without an open
    /// transaction. If there is none, the state goes past the cap (only markers and replay get here).
    fn make_room(&mut self, producer_id: i64) {
        if self.producers.len() < self.capacity || self.producers.contains_key(&producer_id) {
            return;
        }
        let idlest = self
            .producers
            .iter()
            .filter(|(_, entry)| entry.current_txn_first_offset.is_none())
            .min_by_key(|(_, entry)| entry.last_append_ms)
            .map(|(id, _)| *id);
        match idlest {
            Some(idlest) => {
                self.producers.remove(&idlest);
                tracing::warn!(
                    evicted_producer_id = idlest,
                    capacity = self.capacity,
                    "producer state full; forgot the longest-idle producer"
                );
            }
            None => tracing::warn!(
                producer_id,
                capacity = self.capacity,
                "producer state full of open transactions; remembering one more producer than the cap"
            ),
        }
    }

    /// Changes the state as one appended batch does, after the writer's check accepted it or while
    /// replaying the log. The live path and replay both call this, with the batch as it is stored.
    pub fn apply(&mut self, batch: &LoggedBatch) {
        match batch {
            LoggedBatch::Data(data) => self.apply_data(data, data.metadata.max_timestamp),
            LoggedBatch::Marker(marker) => self.apply_marker(marker),
        }
    }

    /// Records an appended non-transactional idempotent batch at `now_ms` (a shorthand for tests).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMetadata, now_ms: i64) {
        let data = DataBatch { producer_id, epoch, transactional: false, metadata: batch };
        self.apply_data(&data, now_ms);
    }

    /// `last_append_ms` is the batch's max timestamp, as in Kafka, so expiry replays identically.
    fn apply_data(&mut self, batch: &DataBatch, last_append_ms: i64) {
        if batch.producer_id < 0 {
            return;
        }
        self.make_room(batch.producer_id);
        let entry =
            self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry::new(batch.epoch, last_append_ms));
        // The live path applies only what the check accepted (never a lower epoch); a replayed log may
        // hold a lower epoch after the producer's state had expired, and the log is the truth.
        entry.set_epoch(batch.epoch);
        if batch.sequenced() {
            if entry.batches.len() == BATCHES_CACHED {
                entry.batches.pop_front();
            }
            entry.batches.push_back(batch.metadata);
        }
        entry.last_append_ms = last_append_ms;
        if batch.transactional && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(batch.metadata.base_offset);
            self.transactions.open(batch.producer_id, batch.metadata.base_offset);
        }
        assert!(entry.batches.len() <= BATCHES_CACHED, "at most {BATCHES_CACHED} batches are cached");
    }

    /// A marker moves the producer to its epoch and coordinator epoch and ends its open transaction.
    fn apply_marker(&mut self, marker: &MarkerBatch) {
        self.make_room(marker.producer_id);
        let entry = self
            .producers
            .entry(marker.producer_id)
            .or_insert_with(|| ProducerEntry::new(marker.epoch, marker.timestamp_ms));
        entry.set_epoch(marker.epoch);
        entry.coordinator_epoch = marker.coordinator_epoch;
        entry.last_append_ms = marker.timestamp_ms;
        let first_offset = entry.current_txn_first_offset.take();
        if let Some(first_offset) = first_offset {
            assert!(first_offset < marker.offset, "a transaction's marker follows its first batch");
            self.transactions.close(marker.producer_id, first_offset);
        }
        if !marker.commit {
            self.transactions.push_aborted(AbortedTxn {
                producer_id: marker.producer_id,
                first_offset: first_offset.unwrap_or(marker.offset),
                last_offset: marker.offset,
            });
        }
    }

    /// Forgets producers idle for longer than `expiration_ms` (Kafka's producer.id.expiration.ms), but
    /// never one with an open transaction: its marker is still to come.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.current_txn_first_offset.is_some() || now_ms.saturating_sub(entry.last_append_ms) <= expiration_ms
        });
        before - self.producers.len()
    }

    /// Forgets aborted transactions whose marker is below the new log start offset.
    pub fn prune_aborted(&mut self, log_start_offset: u64) -> usize {
        self.transactions.prune_aborted(log_start_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(first_sequence: i32, count: i32, base_offset: u64) -> BatchMetadata {
        BatchMetadata {
            first_sequence,
            last_sequence: first_sequence.wrapping_add(count - 1),
            base_offset,
            last_offset: base_offset + count as u64 - 1,
            max_timestamp: 7,
            records_dropped: false,
        }
    }

    #[test]
    fn rules() {
        assert_eq!(check(None, 3, 42, 50), Decision::Append, "no state: any sequence (KIP-360)");
        let mut states = ProducerStates::default();
        states.record(1, 0, batch(0, 5, 100), 0);
        let entry = states.get(1);
        assert_eq!(check(entry, 0, 5, 9), Decision::Append, "continues");
        assert_eq!(check(entry, 0, 0, 4), Decision::Duplicate(batch(0, 5, 100)), "retry of a cached batch");
        assert_eq!(check(entry, 0, 6, 9), Decision::OutOfOrder { expected_first_sequence: 5 }, "gap");
        assert_eq!(
            check(entry, 0, 1, 4),
            Decision::OutOfOrder { expected_first_sequence: 5 },
            "overlap that is no cached batch"
        );
        assert_eq!(check(entry, 1, 0, 3), Decision::Append, "new epoch starts at 0");
        assert_eq!(
            check(entry, 1, 5, 9),
            Decision::OutOfOrder { expected_first_sequence: 0 },
            "new epoch must start at 0"
        );
        states.record(1, 2, batch(0, 1, 200), 0);
        assert_eq!(
            check(states.get(1), 1, 0, 4),
            Decision::Fenced { current_epoch: 2 },
            "older epoch is fenced, even for a cached range"
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut states = ProducerStates::default();
        states.record(9, 0, batch(i32::MAX - 1, 2, 0), 0);
        assert_eq!(check(states.get(9), 0, 0, 3), Decision::Append, "after i32::MAX comes 0");
        assert_eq!(next_sequence(i32::MAX), 0);
    }

    #[test]
    fn the_longest_idle_producer_makes_room_at_the_cap() {
        let mut states = ProducerStates::with_capacity(2);
        states.record(1, 0, batch(0, 1, 0), 100);
        states.record(2, 0, batch(0, 1, 1), 300);
        states.record(1, 0, batch(1, 1, 2), 500);
        states.record(3, 0, batch(0, 1, 3), 600);
        assert_eq!(states.len(), 2);
        assert!(states.get(2).is_none(), "producer 2 was idle longest");
        assert!(states.get(1).is_some() && states.get(3).is_some());
    }

    #[test]
    fn expiry() {
        let mut states = ProducerStates::default();
        states.record(1, 0, batch(0, 1, 0), 1_000);
        states.record(2, 0, batch(0, 1, 1), 5_000);
        assert_eq!(states.expire(6_000, 2_000), 1);
        assert!(states.get(1).is_none());
        assert!(states.get(2).is_some());
    }

    /// One step a producer can take: send its next batch, or retry one of its earlier batches.
    #[derive(Debug, Clone)]
    enum Step {
        Next { count: i32 },
        Retry { back: usize },
        BumpEpoch,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1..20i32).prop_map(|count| Step::Next { count }),
            3 => (0..8usize).prop_map(|back| Step::Retry { back }),
            1 => Just(Step::BumpEpoch),
        ]
    }

    proptest! {
        /// Against a model that remembers every batch ever appended: a retry is answered as a duplicate
        /// with its original offset exactly when it is among the last five of the current epoch, is
        /// never appended twice, and fresh batches are always appended.
        #[test]
        fn matches_a_model_of_every_batch(steps in proptest::collection::vec(step(), 1..200)) {
            let mut states = ProducerStates::default();
            let mut sent: Vec<(i16, BatchMetadata)> = Vec::new();
            let (mut epoch, mut next_first, mut next_offset) = (0i16, 0i32, 0u64);
            // The partition learns of a new epoch only from the first batch sent with it.
            let mut partition_epoch = 0i16;
            for step in steps {
                match step {
                    Step::Next { count } => {
                        let candidate = batch(next_first, count, next_offset);
                        prop_assert_eq!(check(states.get(7), epoch, candidate.first_sequence, candidate.last_sequence), Decision::Append);
                        states.record(7, epoch, candidate, 0);
                        sent.push((epoch, candidate));
                        partition_epoch = epoch;
                        next_first = next_sequence(candidate.last_sequence);
                        next_offset = candidate.last_offset + 1;
                    }
                    Step::Retry { back } => {
                        let Some(&(sent_epoch, original)) = sent.iter().rev().nth(back) else { continue };
                        let decision = check(states.get(7), sent_epoch, original.first_sequence, original.last_sequence);
                        let same_epoch_position = sent.iter().rev().filter(|(e, _)| *e == sent_epoch).position(|(_, b)| *b == original);
                        let cached = sent_epoch == partition_epoch && same_epoch_position.is_some_and(|position| position < BATCHES_CACHED);
                        if cached {
                            prop_assert_eq!(decision, Decision::Duplicate(original));
                        } else if sent_epoch < partition_epoch {
                            prop_assert_eq!(decision, Decision::Fenced { current_epoch: partition_epoch });
                        } else {
                            prop_assert!(matches!(decision, Decision::OutOfOrder { .. }), "an old uncached batch is never appended again: {decision:?}");
                        }
                    }
                    Step::BumpEpoch => {
                        epoch += 1;
                        next_first = 0;
                    }
                }
            }
        }
    }
}
