//! Idempotent-producer state of one partition, and the pure check every producer batch goes through.
//!
//! Per producer id the partition keeps the current epoch and the metadata of its last
//! [`BATCHES_CACHED`] batches, as Kafka's `ProducerStateEntry` does: five, because clients cap
//! `max.in.flight` at five with idempotence, so any retry still in flight matches one of them.
//! The check is a pure function returning what it decided ([`Decision`]), epoch before sequence:
//! a batch equal to a cached one (same epoch, same sequence range) is a duplicate and is answered with
//! the original offset; a lower epoch is fenced; a higher epoch must start at sequence 0; the same
//! epoch must continue at last sequence + 1 (wrapping at `i32::MAX`); a producer without state is
//! accepted at any sequence (KIP-360: its state may have expired or been lost with retention).

use std::collections::{HashMap, VecDeque};

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
}

/// The state of one producer id in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`BATCHES_CACHED`].
    pub batches: VecDeque<BatchMetadata>,
    /// Wall clock of the last append, for expiry.
    pub last_append_ms: i64,
}

impl ProducerEntry {
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|batch| batch.last_sequence)
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

/// Producers remembered per partition at most. About 250 bytes each (the map entry plus five cached
/// batches of 32 bytes), so the cap bounds one partition's producer state near 25 MiB.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;

/// The producers of one partition.
#[derive(Debug, Clone)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    capacity: usize,
}

impl Default for ProducerStates {
    fn default() -> Self {
        ProducerStates::with_capacity(PRODUCERS_PER_PARTITION_MAX)
    }
}

impl ProducerStates {
    /// State for at most `capacity` producers. When a new producer arrives at the cap, the one whose
    /// last batch is oldest is forgotten, exactly as if it had expired. Should that producer still
    /// retry a batch, the retry would be appended again (KIP-360: no state, no check) — the price of
    /// bounded memory, paid only by the longest-idle producer, and logged as a warning.
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "producer state needs room for one producer");
        ProducerStates { producers: HashMap::new(), capacity }
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(producer_id, entry)| (*producer_id, entry))
    }

    pub(crate) fn insert(&mut self, producer_id: i64, entry: ProducerEntry) {
        self.producers.insert(producer_id, entry);
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Records an appended batch (after [`check`] said [`Decision::Append`], or while replaying the log).
    /// `last_append_ms` is the batch's max timestamp, as in Kafka, so expiry replays identically.
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: BatchMetadata, now_ms: i64) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= self.capacity {
            let oldest = self.producers.iter().min_by_key(|(_, entry)| entry.last_append_ms).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.producers.remove(&oldest);
                tracing::warn!(
                    evicted_producer_id = oldest,
                    capacity = self.capacity,
                    "producer state full; forgot the longest-idle producer"
                );
            }
        }
        let entry = self.producers.entry(producer_id).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_append_ms: now_ms,
        });
        // The live path records only what `check` accepted (never a lower epoch); a replayed log may
        // hold a lower epoch after the producer's state had expired, and the log is the truth.
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_CACHED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_append_ms = now_ms;
        assert!(entry.batches.len() <= BATCHES_CACHED, "at most {BATCHES_CACHED} batches are cached");
        assert!(self.producers.len() <= self.capacity, "at most {} producers are remembered", self.capacity);
    }

    /// Forgets producers idle for longer than `expiration_ms` (Kafka's producer.id.expiration.ms).
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| now_ms.saturating_sub(entry.last_append_ms) <= expiration_ms);
        before - self.producers.len()
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
