//! The processor's message-id index for one input partition: which ids it has passed on, with the
//! timestamp of the record that passed each (so a window can expire it). Pure: the processor's loop
//! writes every change to the changelog in the same transaction as the output and the offsets, and
//! keeps an undo log so an aborted transaction leaves the index as the changelog has it.
//!
//! Invariant (checked by [`PartitionIndex::check`] in tests and debug builds): the index equals the
//! changelog partition's committed entries replayed in order, plus the changes of the open
//! transaction, which [`PartitionIndex::undo`] takes back.

use std::collections::{HashMap, VecDeque};

use once_dedup::Id;

/// What the index says of a record's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen within the window: pass the record on and store the id.
    New,
    /// Passed on before, within the window: drop the record.
    Duplicate,
}

/// One change the open transaction made, with what it replaced.
#[derive(Debug, Clone, Copy)]
enum Undo {
    /// `id` was set; before, it held `previous` (None: absent).
    Set { id: Id, previous: Option<i64> },
    /// `id` (stored at `timestamp`) was expired: taken from the map and the expiry queue.
    Expired { id: Id, timestamp: i64 },
    /// The stream time was `previous` before the transaction moved it.
    StreamTime { previous: i64 },
}

/// One input partition's index.
#[derive(Debug, Default)]
pub struct PartitionIndex {
    ids: HashMap<Id, i64>,
    /// With a window: ids in the order they were stored, with the timestamp they were stored at
    /// (an entry whose id has since been stored again at another time is stale and skipped).
    expiry: VecDeque<(i64, Id)>,
    /// The largest record timestamp seen: windows are measured against it (event time), so a
    /// processor that falls behind does not expire ids its input still holds duplicates of.
    stream_time: i64,
    /// The input offset this index is current up to (the next offset to process), as committed.
    pub committed_offset: i64,
    /// `--window-ms`: how long a stored id deduplicates; `None`: for as long as it is stored.
    window_ms: Option<i64>,
    undo: Vec<Undo>,
}

impl PartitionIndex {
    /// An empty index current up to `committed_offset`, with ids kept `window_ms` (or for good).
    pub fn new(committed_offset: i64, window_ms: Option<i64>) -> PartitionIndex {
        assert!(window_ms.is_none_or(|window| window > 0), "a window is positive");
        PartitionIndex { stream_time: i64::MIN, committed_offset, window_ms, ..PartitionIndex::default() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Heap bytes the index holds: the id map's table — hashbrown keeps 8 buckets for each 7 of
    /// capacity, a power of two of them, each a slot and a control byte — and the expiry queue.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(Id, i64)>() + 1;
        let capacity = self.ids.capacity();
        let buckets = if capacity == 0 { 0 } else { (capacity * 8 / 7).next_power_of_two().max(4) };
        buckets * slot + self.expiry.capacity() * std::mem::size_of::<(i64, Id)>()
    }

    /// Replays one changelog entry (restore): `Some(timestamp)` stores, `None` (a tombstone) removes.
    pub fn replay(&mut self, id: Id, timestamp: Option<i64>) {
        assert!(self.undo.is_empty(), "a restore happens outside any transaction");
        match timestamp {
            Some(timestamp) => {
                self.ids.insert(id, timestamp);
                self.stream_time = self.stream_time.max(timestamp);
                if self.window_ms.is_some() {
                    self.expiry.push_back((timestamp, id));
                }
            }
            None => {
                self.ids.remove(&id);
            }
        }
    }

    /// After a restore: the expiry queue in timestamp order.
    pub fn restored(&mut self) {
        self.expiry.make_contiguous().sort_unstable();
        self.expiry.retain(|(timestamp, id)| self.ids.get(id) == Some(timestamp));
    }

    /// Decides a record's fate and, if it is new, stores its id at `timestamp` (undoably).
    pub fn admit(&mut self, id: Id, timestamp: i64) -> Verdict {
        let window_ms = self.window_ms;
        if timestamp > self.stream_time {
            self.undo.push(Undo::StreamTime { previous: self.stream_time });
            self.stream_time = timestamp;
        }
        let previous = self.ids.get(&id).copied();
        // Judged against the stream time, as expiry is: a late record (older than the stream
        // time) gets the same answer whether or not a commit expired the id in between.
        let horizon = |window: i64| self.stream_time.saturating_sub(window);
        let within = |stored: i64| window_ms.is_none_or(|window| stored > horizon(window));
        if previous.is_some_and(within) {
            return Verdict::Duplicate;
        }
        self.ids.insert(id, timestamp);
        self.undo.push(Undo::Set { id, previous });
        if window_ms.is_some() {
            self.expiry.push_back((timestamp, id));
        }
        Verdict::New
    }

    /// Expires (undoably) up to `budget` ids stored at or before `stream time − window`, oldest
    /// first; returns them, for the tombstones the caller writes in the same transaction.
    pub fn expire(&mut self, budget: usize) -> Vec<Id> {
        let Some(window_ms) = self.window_ms else { return Vec::new() };
        let horizon = self.stream_time.saturating_sub(window_ms);
        let mut expired = Vec::new();
        while expired.len() < budget {
            let Some(&(timestamp, id)) = self.expiry.front() else { break };
            if timestamp > horizon {
                break;
            }
            self.expiry.pop_front();
            if self.ids.get(&id) != Some(&timestamp) {
                continue; // stale: stored again later, another entry covers it
            }
            self.ids.remove(&id);
            self.undo.push(Undo::Expired { id, timestamp });
            expired.push(id);
        }
        expired
    }

    /// The open transaction committed: its changes stay; the index is current up to `next_offset`.
    pub fn committed(&mut self, next_offset: Option<i64>) {
        self.undo.clear();
        if let Some(next) = next_offset {
            assert!(next >= self.committed_offset, "committed offsets never go back");
            self.committed_offset = next;
        }
    }

    /// The open transaction aborted: every change it made is taken back, newest first.
    pub fn undo(&mut self) {
        while let Some(change) = self.undo.pop() {
            match change {
                Undo::Set { id, previous: None } => {
                    // Its expiry entry is now stale: skipped when popped.
                    self.ids.remove(&id);
                }
                Undo::Set { id, previous: Some(timestamp) } => {
                    self.ids.insert(id, timestamp);
                    // Its old expiry entry may have been popped as stale meanwhile: queue it again
                    // (at the front, where the oldest are; a second entry for it is skipped later).
                    if self.window_ms.is_some() {
                        self.expiry.push_front((timestamp, id));
                    }
                }
                Undo::Expired { id, timestamp } => {
                    self.ids.insert(id, timestamp);
                    self.expiry.push_front((timestamp, id));
                }
                Undo::StreamTime { previous } => self.stream_time = previous,
            }
        }
    }

    /// Whether a transaction has changes not yet committed.
    pub fn has_open_changes(&self) -> bool {
        !self.undo.is_empty()
    }

    /// The ids as a sorted list, for comparing two indexes in tests.
    #[cfg(test)]
    fn snapshot(&self) -> Vec<(Id, i64)> {
        let mut ids: Vec<(Id, i64)> = self.ids.iter().map(|(id, timestamp)| (*id, *timestamp)).collect();
        ids.sort_unstable();
        ids
    }
}

/// The changelog value of a stored id: its timestamp, 8 bytes big-endian.
pub fn encode_timestamp(timestamp: i64) -> [u8; 8] {
    timestamp.to_be_bytes()
}

/// A changelog entry's key and value, decoded; `None` if it is not one this processor wrote.
pub fn decode_entry(key: Option<&[u8]>, value: Option<&[u8]>) -> Option<(Id, Option<i64>)> {
    let id = Id(key?.try_into().ok()?);
    match value {
        None => Some((id, None)),
        Some(bytes) => Some((id, Some(i64::from_be_bytes(bytes.try_into().ok()?)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> Id {
        Id::of(&n.to_be_bytes())
    }

    #[test]
    fn without_a_window_an_id_passes_once() {
        let mut index = PartitionIndex::new(0, None);
        assert_eq!(index.admit(id(1), 10), Verdict::New);
        assert_eq!(index.admit(id(1), 5_000_000), Verdict::Duplicate);
        assert_eq!(index.admit(id(2), 11), Verdict::New);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn a_window_lets_an_id_through_again_once_it_is_older_than_the_window() {
        let mut index = PartitionIndex::new(0, Some(100));
        assert_eq!(index.admit(id(1), 1_000), Verdict::New);
        assert_eq!(index.admit(id(1), 1_099), Verdict::Duplicate, "within the window");
        assert_eq!(index.admit(id(1), 1_100), Verdict::New, "a window's length later");
        assert_eq!(index.admit(id(1), 1_150), Verdict::Duplicate, "measured from the new pass");
    }

    #[test]
    fn a_late_record_gets_the_same_answer_whether_or_not_its_id_was_expired_first() {
        for expire_between in [false, true] {
            let mut index = PartitionIndex::new(0, Some(100));
            assert_eq!(index.admit(id(1), 1_000), Verdict::New);
            assert_eq!(index.admit(id(2), 1_200), Verdict::New, "stream time 1200: id 1 is past the window");
            if expire_between {
                assert_eq!(index.expire(10), vec![id(1)]);
            }
            assert_eq!(index.admit(id(1), 1_050), Verdict::New, "late, but its id is past the window either way");
        }
    }

    #[test]
    fn expiry_takes_the_oldest_ids_past_the_window_and_skips_stale_entries() {
        let mut index = PartitionIndex::new(0, Some(50));
        index.admit(id(1), 100);
        index.admit(id(2), 120);
        index.admit(id(1), 160); // stored again: its entry at 100 is stale
        index.admit(id(3), 200);
        index.committed(Some(4));
        // Stream time 200, horizon 150: id 2 (120) expires; id 1's stale entry (100) is skipped.
        assert_eq!(index.expire(10), vec![id(2)]);
        assert_eq!(index.snapshot().len(), 2);
        assert_eq!(index.expire(10), Vec::<Id>::new(), "nothing else is past the horizon");
        assert_eq!(index.admit(id(2), 201), Verdict::New, "an expired id passes again");
    }

    #[test]
    fn an_aborted_transaction_leaves_the_index_as_committed() {
        let mut index = PartitionIndex::new(0, Some(50));
        index.admit(id(1), 100);
        index.admit(id(2), 110);
        index.committed(Some(2));
        let before = index.snapshot();
        let stream_time = index.stream_time;
        // A transaction that stores, re-stores after the window, and expires; then aborts.
        index.admit(id(3), 300);
        index.admit(id(1), 301);
        assert_eq!(index.expire(10), vec![id(2)]);
        assert!(index.has_open_changes());
        index.undo();
        assert_eq!(index.snapshot(), before);
        assert_eq!(index.stream_time, stream_time);
        assert_eq!(index.committed_offset, 2, "an abort does not move the committed offset");
        // The restored ids still expire later.
        index.admit(id(9), 400);
        let mut expired = index.expire(10);
        expired.sort_unstable();
        let mut wanted = vec![id(1), id(2)];
        wanted.sort_unstable();
        assert_eq!(expired, wanted);
    }

    #[test]
    fn replaying_the_changelog_rebuilds_what_was_committed() {
        // The processor's changes, as the changelog records them, replayed into a fresh index.
        let mut live = PartitionIndex::new(0, Some(200));
        let mut log: Vec<(Id, Option<i64>)> = Vec::new();
        for n in 0..50u32 {
            let timestamp = i64::from(n) * 10;
            if live.admit(id(n % 20), timestamp) == Verdict::New {
                log.push((id(n % 20), Some(timestamp)));
            }
            for expired in live.expire(3) {
                log.push((expired, None));
            }
            live.committed(Some(i64::from(n) + 1));
        }
        let mut restored = PartitionIndex::new(50, Some(200));
        for (id, timestamp) in &log {
            restored.replay(*id, *timestamp);
        }
        restored.restored();
        assert_eq!(restored.snapshot(), live.snapshot());
        assert_eq!(restored.expire(100), live.expire(100), "the same ids expire next");
    }

    #[test]
    fn changelog_entries_round_trip_and_foreign_ones_are_refused() {
        let stored = decode_entry(Some(&id(7).0), Some(&encode_timestamp(-5)));
        assert_eq!(stored, Some((id(7), Some(-5))));
        assert_eq!(decode_entry(Some(&id(7).0), None).map(|(_, ts)| ts), Some(None), "a tombstone");
        assert!(decode_entry(Some(b"short"), Some(&encode_timestamp(1))).is_none());
        assert!(decode_entry(Some(&id(7).0), Some(b"bad")).is_none());
        assert!(decode_entry(None, None).is_none());
    }
}
