//! [`IdRows`]: rows in a vector, in the order their ids first came, found by id through a hash table
//! of their positions — the structure of the active chunk and of the in-flight holds.
//!
//! A table of whole rows (32 bytes or more a slot) takes a cache miss per insert once it outgrows
//! the cache; a table of 4-byte positions (plus hashbrown's control byte) is a sixth or less of that and
//! stays in cache for hundreds of thousands of ids. A new id's insert reads no row (only a slot
//! whose 7-bit tag matches sends a probe to one, or the table's growth, which rehashes every row)
//! and appends its row where the last one ended.

use std::hash::BuildHasher;
use std::mem::size_of;

use hashbrown::hash_table::Entry;
use hashbrown::HashTable;

use crate::chunk::hash_map_bytes;
use crate::id::{Id, IdHashBuilder};

/// A row kept in [`IdRows`]: it names its id, which no other row of the same [`IdRows`] has.
pub(crate) trait Keyed {
    fn id(&self) -> &Id;
}

/// The hash of an id in a table of positions: its low 64 bits, as `Id`'s `Hash` writes them (an id
/// is uniform already).
fn slot_hash(id: &Id) -> u64 {
    IdHashBuilder.hash_one(id)
}

/// What [`IdRows::find_or_push`] found.
pub(crate) enum Found<'a, R> {
    /// The id had a row: here it is, unchanged.
    Existing(&'a mut R),
    /// The id had none: the new row was appended.
    Added,
}

/// Rows with distinct ids, in the order first pushed, behind a table of their positions (see the
/// module docs).
pub(crate) struct IdRows<R> {
    rows: Vec<R>,
    /// Indexes into `rows`, by the row's id: one slot per row.
    slots: HashTable<u32>,
}

impl<R> Default for IdRows<R> {
    fn default() -> Self {
        IdRows { rows: Vec::new(), slots: HashTable::new() }
    }
}

impl<R: Keyed> IdRows<R> {
    /// Empty, with the table and rows allocated for `capacity` rows at once: growing them rehashes
    /// every id at each doubling of the table, and copies the rows.
    pub(crate) fn with_capacity(capacity: usize) -> IdRows<R> {
        assert!(u32::try_from(capacity).is_ok(), "positions fit in 32 bits");
        let mut rows = IdRows { rows: Vec::with_capacity(capacity), slots: HashTable::new() };
        rows.slots.reserve(capacity, |_| unreachable!("an empty table has nothing to rehash"));
        rows
    }

    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.rows.len(), self.slots.len(), "one slot per row");
        self.rows.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of `id`'s row, if it has one.
    pub(crate) fn position(&self, id: &Id) -> Option<usize> {
        let rows = &self.rows;
        self.slots.find(slot_hash(id), |at| rows[*at as usize].id() == id).map(|at| *at as usize)
    }

    /// `id`'s row, if it has one.
    pub(crate) fn get(&self, id: &Id) -> Option<&R> {
        self.position(id).map(|at| &self.rows[at])
    }

    /// The row at `position` (from [`IdRows::position`]), to change in place; its id must stay.
    pub(crate) fn at_mut(&mut self, position: usize) -> &mut R {
        &mut self.rows[position]
    }

    /// `row`'s id's row if it has one (untouched, `row` dropped), else `row` appended. One probe of
    /// the table for both.
    pub(crate) fn find_or_push(&mut self, row: R) -> Found<'_, R> {
        let IdRows { rows, slots } = self;
        let id = *row.id();
        match slots.entry(slot_hash(&id), |at| *rows[*at as usize].id() == id, |at| slot_hash(rows[*at as usize].id()))
        {
            Entry::Occupied(occupied) => Found::Existing(&mut rows[*occupied.get() as usize]),
            Entry::Vacant(vacant) => {
                let at = u32::try_from(rows.len()).expect("fewer than 2^32 rows");
                vacant.insert(at);
                rows.push(row);
                debug_assert_eq!(rows.len(), slots.len(), "one slot per row");
                Found::Added
            }
        }
    }

    /// Keeps the rows `keep` is true for, in their order, and puts their new positions in the table.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&R) -> bool) {
        self.rows.retain(keep);
        // The rows moved: their positions are put in the table again (ids are distinct), before
        // anything is asserted, so that the table and rows agree even if an assertion fails.
        self.slots.clear();
        let rows = &self.rows;
        for (at, row) in rows.iter().enumerate() {
            self.slots.insert_unique(slot_hash(row.id()), at as u32, |at| slot_hash(rows[*at as usize].id()));
        }
        assert_eq!(self.rows.len(), self.slots.len(), "one slot per row after a retain");
    }

    /// Removes every row, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.slots.clear();
    }

    /// The rows, in the order first pushed.
    pub(crate) fn rows(&self) -> &[R] {
        &self.rows
    }

    /// Heap bytes of the table and rows of an [`IdRows`] allocated for `capacity` rows.
    pub(crate) fn bytes_for(capacity: usize) -> usize {
        hash_map_bytes(capacity, size_of::<u32>()) + capacity * size_of::<R>()
    }

    /// Heap bytes of the table and rows as allocated now.
    pub(crate) fn approx_bytes(&self) -> usize {
        hash_map_bytes(self.slots.capacity(), size_of::<u32>()) + self.rows.capacity() * size_of::<R>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Row {
        id: Id,
        value: u32,
    }

    impl Keyed for Row {
        fn id(&self) -> &Id {
            &self.id
        }
    }

    fn id(number: u32) -> Id {
        Id::of(&number.to_be_bytes())
    }

    #[test]
    fn a_row_is_appended_once_and_found_by_its_id() {
        let mut rows = IdRows::default();
        for number in 0..1_000 {
            assert!(matches!(rows.find_or_push(Row { id: id(number), value: number }), Found::Added));
        }
        // A second push of an id finds the first row, and changes nothing.
        match rows.find_or_push(Row { id: id(7), value: 99 }) {
            Found::Existing(row) => assert_eq!(row.value, 7, "the first row, untouched"),
            Found::Added => panic!("id 7 has a row"),
        }
        assert_eq!(rows.len(), 1_000);
        for number in 0..1_000 {
            assert_eq!(rows.position(&id(number)), Some(number as usize), "rows in the order pushed");
            assert_eq!(rows.get(&id(number)).map(|row| row.value), Some(number));
        }
        assert!(rows.get(&id(1_000)).is_none(), "no row for an id never pushed");
        let at = rows.position(&id(3)).expect("pushed");
        rows.at_mut(at).value = 33;
        assert_eq!(rows.get(&id(3)).map(|row| row.value), Some(33), "changed in place");
    }

    /// Rows allocated for a capacity take that many without growing (a growth rehashes every id,
    /// milliseconds under the index's lock for a full active chunk), and count what they hold.
    #[test]
    fn rows_allocated_for_a_capacity_take_it_without_growing() {
        for capacity in [0usize, 1, 3, 7, 8, 57_344, 458_752] {
            let mut rows = IdRows::with_capacity(capacity);
            let allocated = rows.approx_bytes();
            assert_eq!(allocated, IdRows::<Row>::bytes_for(capacity), "capacity {capacity}");
            for number in 0..capacity as u32 {
                assert!(matches!(rows.find_or_push(Row { id: id(number), value: number }), Found::Added));
            }
            assert_eq!(rows.approx_bytes(), allocated, "capacity {capacity}: filled without growing");
            assert_eq!(rows.len(), capacity);
        }
    }

    #[test]
    fn a_retain_keeps_the_rows_in_order_and_finds_each_at_its_new_place() {
        let mut rows = IdRows::with_capacity(64);
        for number in 0..64 {
            rows.find_or_push(Row { id: id(number), value: number });
        }
        rows.retain(|row| row.value % 3 == 0);
        assert_eq!(rows.len(), 22);
        assert!(rows.rows().windows(2).all(|pair| pair[0].value < pair[1].value), "in their order");
        for number in 0..64 {
            let found = rows.get(&id(number)).map(|row| row.value);
            assert_eq!(found, (number % 3 == 0).then_some(number), "id {number}");
            if let Some(at) = rows.position(&id(number)) {
                assert_eq!(rows.rows()[at].id, id(number), "the table points at the id's row");
            }
        }
        // A removed id is appended again at the end.
        assert!(matches!(rows.find_or_push(Row { id: id(1), value: 1 }), Found::Added));
        assert_eq!(rows.rows().last().map(|row| row.value), Some(1));
        rows.clear();
        assert!(rows.is_empty() && rows.get(&id(0)).is_none());
    }
}
