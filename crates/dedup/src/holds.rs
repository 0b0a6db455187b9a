//! [`Holds`]: the ids an index holds pending — reserved by writes in flight, or written by open
//! transactions — which no other write may take.
//!
//! A write's ids are held from its reserve to its confirm or release. Removing each id from a map
//! at the confirm cost a cache miss per id (the map is written at random, and most of it has left
//! the cache by the time the write's fsync returns): 12 % of the broker's CPU with dedup on. So an
//! in-flight entry is tagged with its write's *token*, and a write that ends only closes its token:
//! an entry whose token is closed is *stale* and reads as absent. Stale entries are overwritten by the
//! next reserve of their id, and swept in one pass (sequential, so cheap per entry) when they
//! outnumber the live ones, or all at once when no write is open.
//!
//! The in-flight entries are rows in the order reserved, behind a hash table of their positions
//! ([`IdRows`], as the active chunk's): with three or four writes of thousands of ids open at once, a
//! map of whole entries (33 bytes a slot, 4.3 MB at 131,072 slots) took a cache miss per reserve; the
//! table of positions is about a seventh of that.

use std::collections::{BTreeMap, HashMap};
use std::mem::size_of;

use crate::chunk::{hash_map_bytes, Location};
use crate::id::{Id, IdHashBuilder};
use crate::id_rows::{Found, IdRows, Keyed};

/// Stale in-flight entries tolerated beyond the live ones before a sweep (a few in tests, so that the
/// model tests sweep between their steps).
const STALE_SLACK: usize = if cfg!(test) { 2 } else { 4_096 };

/// Why an id is pending (reserved, not yet live).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hold {
    /// Reserved by a write not yet confirmed.
    InFlight { token: u64, record_index: usize },
    /// Written (durable) by a transaction that has not ended.
    Transaction { producer_id: i64, location: Location, time_s: u32 },
}

/// A transaction's hold on an id: (producer id, location, time_s).
type TransactionHold = (i64, Location, u32);

/// An id reserved by a write: the write's token and the record's index in its batch.
#[derive(Clone, Copy)]
struct InFlight {
    id: Id,
    token: u64,
    record_index: usize,
}

impl Keyed for InFlight {
    fn id(&self) -> &Id {
        &self.id
    }
}

/// The pending ids of an index (see the module docs).
#[derive(Default)]
pub(crate) struct Holds {
    /// Ids reserved by writes, each once, in the order first reserved; an entry whose token is not
    /// in `open` is stale.
    in_flight: IdRows<InFlight>,
    /// The writes reserved and not yet confirmed or released: token → ids reserved.
    open: BTreeMap<u64, usize>,
    /// Ids reserved by the open writes (the live entries of `in_flight`).
    in_flight_live: usize,
    /// Ids written by open transactions.
    transactions: HashMap<Id, TransactionHold, IdHashBuilder>,
}

impl Holds {
    /// The hold on `id`, if it is pending.
    pub(crate) fn get(&self, id: &Id) -> Option<Hold> {
        let in_flight = self.in_flight.get(id).filter(|row| self.open.contains_key(&row.token));
        match in_flight {
            Some(row) => Some(Hold::InFlight { token: row.token, record_index: row.record_index }),
            None => self.transaction_hold(id),
        }
    }

    /// The hold of an open transaction on `id`, if one has it.
    fn transaction_hold(&self, id: &Id) -> Option<Hold> {
        let (producer_id, location, time_s) = *self.transactions.get(id)?;
        Some(Hold::Transaction { producer_id, location, time_s })
    }

    /// Opens a write's token (before its first [`Holds::reserve_if_free`]).
    pub(crate) fn open(&mut self, token: u64) {
        assert!(self.open.insert(token, 0).is_none(), "write token {token} is opened once");
    }

    /// Holds `id` for the open write `token`, as record `record_index` of its batch, and counts it;
    /// panics if it is pending. (The index reserves a batch's ids with [`Holds::reserve_if_free`] and
    /// counts them once.)
    #[cfg(test)]
    pub(crate) fn reserve(&mut self, id: Id, token: u64, record_index: usize) {
        let hold = self.reserve_if_free(id, token, record_index);
        assert!(hold.is_none(), "a reserve never takes an id another open write holds (or a transaction): {hold:?}");
        self.count_reserved(token, 1);
    }

    /// Holds `id` for the open write `token`, as record `record_index` of its batch, unless it is
    /// pending: then its hold is returned and nothing changes. One probe of the in-flight table for
    /// both (a stale entry is overwritten). The caller opened `token`; the write's count is its to add
    /// ([`Holds::count_reserved`], once per write, which checks the token).
    pub(crate) fn reserve_if_free(&mut self, id: Id, token: u64, record_index: usize) -> Option<Hold> {
        if let Some(hold) = self.transaction_hold(&id) {
            return Some(hold);
        }
        if let Found::Existing(row) = self.in_flight.find_or_push(InFlight { id, token, record_index }) {
            if self.open.contains_key(&row.token) {
                return Some(Hold::InFlight { token: row.token, record_index: row.record_index });
            }
            // Stale: taken over in place.
            (row.token, row.record_index) = (token, record_index);
        }
        None
    }

    /// The open write `token` took `reserved` more ids ([`Holds::reserve_if_free`] returned `None`
    /// for each).
    pub(crate) fn count_reserved(&mut self, token: u64, reserved: usize) {
        let count = self.open.get_mut(&token).expect("a write reserves under its open token");
        *count += reserved;
        self.in_flight_live += reserved;
    }

    /// The write `token` was confirmed or released: its ids are no longer held by it (its entries
    /// go stale), and `reserved` says how many it reserved.
    pub(crate) fn close(&mut self, token: u64, reserved: usize) {
        let held = self.open.remove(&token).expect("a write is closed once, after it was opened");
        assert_eq!(held, reserved, "a write closes with the ids it reserved");
        self.in_flight_live -= held;
        if self.open.is_empty() {
            if !self.in_flight.is_empty() {
                self.in_flight.clear();
            }
        } else if self.in_flight.len() > 2 * self.in_flight_live + STALE_SLACK {
            let open = &self.open;
            self.in_flight.retain(|row| open.contains_key(&row.token));
            assert_eq!(self.in_flight.len(), self.in_flight_live, "a sweep keeps exactly the live entries");
        }
        assert!(self.in_flight.len() >= self.in_flight_live, "every live hold has its row");
    }

    /// Holds `id` for an open transaction (after its write is durable, or restored from a snapshot).
    /// False, changing nothing, if it is already pending.
    pub(crate) fn hold_for_transaction(&mut self, id: Id, producer_id: i64, location: Location, time_s: u32) -> bool {
        if self.get(&id).is_some() {
            return false;
        }
        self.transactions.insert(id, (producer_id, location, time_s));
        true
    }

    /// Ends a transaction's hold on `id`: its hold, if it had one.
    pub(crate) fn end_transaction_hold(&mut self, id: &Id) -> Option<TransactionHold> {
        self.transactions.remove(id)
    }

    /// Ids pending: reserved by open writes, or held by open transactions.
    pub(crate) fn len(&self) -> usize {
        self.in_flight_live + self.transactions.len()
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        self.in_flight.approx_bytes()
            + hash_map_bytes(self.transactions.capacity(), size_of::<(Id, TransactionHold)>())
            + self.open.len() * 2 * size_of::<(u64, usize)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(number: u32) -> Id {
        Id::of(&number.to_be_bytes())
    }

    #[test]
    fn a_closed_writes_ids_are_free_and_swept() {
        let mut holds = Holds::default();
        holds.open(1);
        holds.open(2);
        (0..10_000).for_each(|number| holds.reserve(id(number), 1, number as usize));
        holds.reserve(id(20_000), 2, 0);
        assert!(matches!(holds.get(&id(7)), Some(Hold::InFlight { token: 1, record_index: 7 })));
        holds.close(1, 10_000);
        assert!(holds.get(&id(7)).is_none(), "a closed write holds nothing");
        assert_eq!(holds.len(), 1, "only the open write's id is pending");
        // Stale entries outnumbered the live one beyond the slack: swept, the open write's kept.
        assert_eq!(holds.in_flight.len(), 1, "swept");
        assert!(matches!(holds.get(&id(20_000)), Some(Hold::InFlight { token: 2, .. })));
        holds.close(2, 1);
        assert!(holds.in_flight.is_empty() && holds.len() == 0, "no write open: nothing kept");
    }

    /// A sweep among several live writes, one of whose ids took a stale entry over: every live hold
    /// keeps its token and record index, the swept ids are free, and the rows and the table agree.
    #[test]
    fn a_sweep_among_live_writes_keeps_each_hold_where_it_was() {
        let mut holds = Holds::default();
        (1..=3).for_each(|token| holds.open(token));
        // Interleaved: id n is reserved by write 1 + n % 3, as record n / 3 of its batch.
        for number in 0..30u32 {
            let token = 1 + u64::from(number % 3);
            assert!(holds.reserve_if_free(id(number), token, number as usize / 3).is_none());
        }
        (1..=3).for_each(|token| holds.count_reserved(token, 10));
        holds.close(1, 10);
        // Write 3 takes over a stale entry of write 1 (id 0), in place.
        assert!(holds.reserve_if_free(id(0), 3, 10).is_none(), "a stale entry is free");
        holds.count_reserved(3, 1);
        // Closing write 2 leaves 30 rows for 11 live holds: a sweep (the slack is 2 in tests).
        holds.close(2, 10);
        assert_eq!(holds.in_flight.len(), 11, "swept to the live rows");
        for number in 0..30u32 {
            let hold = holds.get(&id(number));
            match number % 3 {
                2 => {
                    let expected = number as usize / 3;
                    let kept =
                        matches!(hold, Some(Hold::InFlight { token: 3, record_index }) if record_index == expected);
                    assert!(kept, "id {number}: {hold:?}");
                }
                _ if number == 0 => {
                    assert!(matches!(hold, Some(Hold::InFlight { token: 3, record_index: 10 })), "taken over: {hold:?}")
                }
                _ => assert!(hold.is_none(), "id {number} was swept: {hold:?}"),
            }
        }
        // A swept id is reserved again at the end of the rows.
        holds.open(4);
        assert!(holds.reserve_if_free(id(1), 4, 0).is_none());
        holds.count_reserved(4, 1);
        assert!(matches!(holds.get(&id(1)), Some(Hold::InFlight { token: 4, record_index: 0 })));
        assert_eq!(holds.in_flight.rows().last().map(|row| row.id), Some(id(1)), "appended");
        assert_eq!(holds.len(), 12);
    }

    #[test]
    fn a_stale_entry_is_taken_by_the_next_reserve() {
        let mut holds = Holds::default();
        holds.open(1);
        holds.open(2);
        holds.reserve(id(5), 1, 0);
        holds.close(1, 1);
        holds.open(3);
        holds.reserve(id(5), 3, 4);
        assert!(matches!(holds.get(&id(5)), Some(Hold::InFlight { token: 3, record_index: 4 })));
        assert_eq!(holds.len(), 1);
    }

    #[test]
    fn reserve_if_free_holds_a_free_or_stale_id_and_otherwise_answers_the_hold() {
        let mut holds = Holds::default();
        holds.open(1);
        holds.open(2);
        assert!(holds.reserve_if_free(id(1), 1, 0).is_none(), "free: held now");
        assert!(matches!(holds.reserve_if_free(id(1), 1, 3), Some(Hold::InFlight { token: 1, record_index: 0 })));
        assert!(matches!(holds.reserve_if_free(id(1), 2, 0), Some(Hold::InFlight { token: 1, record_index: 0 })));
        let location = Location { partition: 0, offset: 9 };
        assert!(holds.hold_for_transaction(id(2), 77, location, 5));
        assert!(matches!(holds.reserve_if_free(id(2), 2, 1), Some(Hold::Transaction { producer_id: 77, .. })));
        assert_eq!(holds.in_flight.len(), 1, "an id a transaction holds is not taken in flight");
        holds.count_reserved(1, 1);
        assert_eq!(holds.len(), 2, "one in flight, one in a transaction");
        holds.close(1, 1);
        assert!(holds.get(&id(1)).is_none(), "stale once its write closed");
        assert!(holds.reserve_if_free(id(1), 2, 4).is_none(), "a stale entry is taken over");
        holds.count_reserved(2, 1);
        assert!(matches!(holds.get(&id(1)), Some(Hold::InFlight { token: 2, record_index: 4 })));
        assert_eq!(holds.len(), 2);
    }

    #[test]
    #[should_panic(expected = "another open write holds")]
    fn a_reserve_of_a_held_id_is_refused() {
        let mut holds = Holds::default();
        holds.open(1);
        holds.open(2);
        holds.reserve(id(5), 1, 0);
        holds.reserve(id(5), 2, 0);
    }
}
