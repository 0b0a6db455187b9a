//! [`TopicFilter`]: one Bloom filter over the ids of **every** sealed chunk of an index, probed once
//! per id before the chunks' own filters. A new id, most of a topic's traffic, then costs one cache
//! line instead of one per sealed chunk (16 to 32 resident, about 120 with most ids on disk).
//!
//! **The invariant**: while an index has a topic filter, every id of every one of its sealed chunks is
//! in it. Ids enter sealed chunks only when the active chunk is sealed or a snapshot is loaded, both
//! through [`DedupIndex::push_sealed`], which inserts a resident chunk's ids and drops the filter
//! for a chunk on disk (only a snapshot load pushes one, into a new index that has no filter yet).
//! Merges, compactions and spills, in RAM or on disk, only keep subsets of ids already sealed. Ids
//! are never removed: ids that died stay as false positives until the filter is rebuilt.
//!
//! **Rebuilds** size the filter to the ids sealed now and run without the index's lock, as disk
//! work does: [`DedupIndex::next_filter_work`] takes the sealed chunks (shared, not copied) and starts
//! a journal of the ids sealed from then on; [`FilterWork::run`] inserts every id of those chunks
//! (reading chunk files page by page); [`DedupIndex::finish_filter_work`] adds the journal and
//! installs the new filter. Every sealed chunk then is either one the rebuild read or holds only ids
//! of chunks it read or sealed since (journalled). A rebuild is due when there is no filter (a new or
//! loaded index) or more ids went in than it was sized for (the false-positive rate has risen).
//!
//! The filter is shared with [`crate::SealedView`]s, which probe it without the lock while a seal may
//! be inserting: its words are atomics. A view is taken under the lock after the inserts of every
//! chunk it holds, so it sees their bits; later inserts only add false positives to its answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::chunk::{Filter, SealedChunk};
use crate::error::DedupError;
use crate::id::Id;
use crate::index::DedupIndex;

/// Bits per id the filter is sized for. Sized for twice the ids sealed at a rebuild and rebuilt
/// when full, it holds 16 to 8 bits per id: about 0.1 % to 3 % of new ids pass it and go on to the
/// chunks' own filters. RAM: 1 to 2 bytes per sealed id, counted in [`DedupIndex::approx_bytes`].
const BITS_PER_ID: usize = 8;
/// Fewest bits per id of a filter capped by the memory budget (a quarter of it) before it is
/// dropped: at 8 to 4 bits per id about 2.5 % to 25 % of new ids pass it, still far fewer probes
/// than one per chunk.
const BITS_PER_ID_MIN: usize = 4;
/// A capped filter is built only for at most this share of the ids it can take (4 / 5): a rebuild
/// reads every sealed id (from chunk files, under a budget), so one is due only after a quarter as
/// many new ids again, never after every seal of an index that holds steady near the cap.
const CAPPED_FILL_NUMERATOR: usize = 4;
const CAPPED_FILL_DENOMINATOR: usize = 5;

/// Fewest ids a filter is sized for: a small index's filter stays small but is not rebuilt at every
/// seal.
pub(crate) const CAPACITY_MIN: usize = 1 << 16;

/// One cache line of the filter.
#[repr(align(64))]
struct Block([AtomicU64; 8]);

/// A blocked Bloom filter with atomic words (the same block and bit choice as a chunk's [`Filter`]).
pub(crate) struct TopicFilter {
    blocks: Box<[Block]>,
    /// Ids it takes before a rebuild is due: those it was sized for at `BITS_PER_ID`, or, capped
    /// by the memory budget, at `BITS_PER_ID_MIN`.
    capacity: usize,
}

impl TopicFilter {
    /// Bytes of the blocks of a filter sized for `capacity` ids.
    fn bytes_for(capacity: usize) -> usize {
        TopicFilter::blocks_for(capacity).saturating_mul(size_of::<Block>())
    }

    fn blocks_for(capacity: usize) -> usize {
        capacity.saturating_mul(BITS_PER_ID).div_ceil(512).max(1)
    }

    fn with_capacity(capacity: usize) -> TopicFilter {
        TopicFilter::with_blocks(TopicFilter::blocks_for(capacity), capacity)
    }

    fn with_blocks(blocks: usize, capacity: usize) -> TopicFilter {
        assert!(blocks > 0 && capacity > 0, "a filter has a block and takes an id");
        assert!(blocks * 512 >= capacity * BITS_PER_ID_MIN, "a filter holds at least the fewest bits per id");
        let blocks = (0..blocks).map(|_| Block(std::array::from_fn(|_| AtomicU64::new(0)))).collect();
        TopicFilter { blocks, capacity }
    }

    /// Inserts into a filter views may be reading. Not an atomic read-modify-write (a locked
    /// instruction per bit, which made seals and rebuilds several times dearer): a load and a store,
    /// correct because a shared filter has one writer at a time — [`FilterState::add`], which takes
    /// the index (and so its lock) mutably. A reader sees each word before or after a store, both
    /// of which hold every bit set before the view was taken.
    fn insert_shared(&self, id: u128) {
        let block = &self.blocks[Filter::block_of(id, self.blocks.len())].0;
        for (word, mask) in Filter::bits_of(id) {
            let bits = block[word].load(Ordering::Relaxed);
            if bits & mask == 0 {
                block[word].store(bits | mask, Ordering::Relaxed);
            }
        }
    }

    /// Inserts into a filter no one else holds yet (a rebuild's): plain memory operations.
    fn insert(&mut self, id: u128) {
        let count = self.blocks.len();
        let block = &mut self.blocks[Filter::block_of(id, count)].0;
        for (word, mask) in Filter::bits_of(id) {
            *block[word].get_mut() |= mask;
        }
    }

    /// Reads one word of each id's block, without a branch on a filter bit: the loads are
    /// independent, so their cache misses overlap, and the probes of [`TopicFilter::may_contain`] that
    /// follow find the blocks in the cache (probed one by one, each waited on its miss: a branch on a
    /// bit mispredicts often).
    pub(crate) fn warm<'a>(&self, ids: impl Iterator<Item = &'a Id>) {
        let count = self.blocks.len();
        let touched = ids.fold(0u64, |acc, id| {
            acc ^ self.blocks[Filter::block_of(id.to_u128(), count)].0[0].load(Ordering::Relaxed)
        });
        std::hint::black_box(touched);
    }

    /// False only if `id` is in none of the sealed chunks the filter covers.
    pub(crate) fn may_contain(&self, id: u128) -> bool {
        let block = &self.blocks[Filter::block_of(id, self.blocks.len())].0;
        Filter::bits_of(id).all(|(word, mask)| block[word].load(Ordering::Relaxed) & mask != 0)
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        size_of::<TopicFilter>() + self.blocks.len() * size_of::<Block>()
    }

    /// Ids it was sized for (for tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The filter state of an index (see the module docs).
#[derive(Default)]
pub(crate) struct FilterState {
    pub(crate) filter: Option<Arc<TopicFilter>>,
    /// Ids inserted into `filter` since it was built, its build included.
    inserted: usize,
    /// A rebuild is out: the ids sealed since it took its chunks.
    journal: Option<Vec<u128>>,
    /// Numbers the rebuilds handed out; a finish whose number is not the last one's is dropped.
    work_id: u64,
    /// Fewest ids a filter is sized for ([`CAPACITY_MIN`]; tiny in tests, to rebuild often).
    pub(crate) capacity_min: usize,
}

impl FilterState {
    pub(crate) fn new() -> FilterState {
        FilterState { capacity_min: CAPACITY_MIN, ..FilterState::default() }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        self.filter.as_ref().map_or(0, |filter| filter.approx_bytes())
            + self.journal.as_ref().map_or(0, |journal| journal.capacity() * size_of::<u128>())
    }

    /// Starts an empty filter for an index loaded from a snapshot, sized for twice the ids of its
    /// chunks, all resident (the load starts none if any is on disk: the upkeep builds that one), so
    /// the chunks go into it as they join the index (in RAM already, which costs far less than the
    /// chunk-by-chunk probes of the log tail replayed next would).
    pub(crate) fn start_for_load(&mut self, ids_at_most: usize) {
        assert!(self.filter.is_none() && self.journal.is_none(), "a filter is started on a new index");
        let capacity = ids_at_most.saturating_mul(2).max(self.capacity_min);
        self.filter = Some(Arc::new(TopicFilter::with_capacity(capacity)));
        self.inserted = 0;
    }

    /// A chunk joins the sealed chunks: its ids go into the filter and the journal of a rebuild
    /// that is out. A chunk on disk (read at load) would have to be read again: the filter is
    /// dropped instead, and a rebuild that is out abandoned, until the next rebuild.
    fn add(&mut self, chunk: &SealedChunk) {
        let Some(ids) = chunk.resident_ids() else {
            *self = FilterState { work_id: self.work_id, capacity_min: self.capacity_min, ..FilterState::default() };
            return;
        };
        if let Some(filter) = &mut self.filter {
            match Arc::get_mut(filter) {
                // No view holds it (an index being loaded): plain stores.
                Some(filter) => ids.iter().for_each(|id| filter.insert(*id)),
                None => ids.iter().for_each(|id| filter.insert_shared(*id)),
            }
            self.inserted += ids.len();
        }
        if let Some(journal) = &mut self.journal {
            journal.extend_from_slice(ids);
        }
    }
}

/// A rebuild of an index's topic filter, taken under the index's lock and run without it.
#[must_use = "a rebuild that is out holds a journal until it is finished"]
pub struct FilterWork {
    instance: u64,
    work_id: u64,
    chunks: Vec<Arc<SealedChunk>>,
    blocks: usize,
    capacity: usize,
}

/// A [`FilterWork`] that ran: for [`DedupIndex::finish_filter_work`].
pub struct FilterDone {
    instance: u64,
    work_id: u64,
    /// The new filter and the ids inserted, or why a chunk file could not be read.
    built: Result<(TopicFilter, usize), DedupError>,
}

impl FilterWork {
    /// Inserts every id of the chunks taken (a page read per 127 ids of a chunk on disk).
    pub fn run(self) -> FilterDone {
        let FilterWork { instance, work_id, chunks, blocks, capacity } = self;
        let build = || {
            let mut filter = TopicFilter::with_blocks(blocks, capacity);
            let mut inserted = 0;
            for chunk in &chunks {
                match chunk.resident_ids() {
                    Some(ids) => ids.iter().for_each(|id| filter.insert(*id)),
                    None => {
                        for entry in chunk.entries() {
                            filter.insert(entry?.id.to_u128());
                        }
                    }
                }
                inserted += chunk.len();
            }
            Ok((filter, inserted))
        };
        FilterDone { instance, work_id, built: build() }
    }
}

impl DedupIndex {
    /// Adds a chunk to the sealed chunks (the newest), keeping the topic filter's invariant.
    pub(crate) fn push_sealed(&mut self, chunk: SealedChunk) {
        self.filter.add(&chunk);
        self.sealed.push_back(Arc::new(chunk));
    }

    /// The topic filter, if there is one (the view and lookups probe it before the chunks).
    pub(crate) fn topic_filter(&self) -> Option<&Arc<TopicFilter>> {
        self.filter.filter.as_ref()
    }

    /// Whether a build of the filter is due: there is none and something is sealed, or more ids went
    /// in than it was sized for.
    pub(crate) fn filter_due(&self) -> bool {
        match &self.filter.filter {
            None => !self.sealed.is_empty(),
            Some(filter) => self.filter.inserted > filter.capacity,
        }
    }

    /// Builds or rebuilds the filter in the caller's thread, holding the index, when one is due and every
    /// sealed chunk is resident (so it reads no file): for a replay at open, where nothing else runs and
    /// the upkeep has not started. (Partitions added to a serving topic are replayed too, beside the
    /// upkeep, but their logs are empty: no batch, no call. Were one out, the upkeep's rebuild would
    /// make this a no-op: one rebuild is out at a time.) Without a filter every replayed id is looked for
    /// in every sealed chunk; with chunks on disk the replay leaves the build to the upkeep, which reads
    /// their files without the lock once the topic serves. Returns whether a filter was installed (a
    /// filter the budget has no room for any more is dropped, and false returned, as the upkeep does).
    pub fn filter_work_here(&mut self) -> Result<bool, DedupError> {
        if !self.filter_due() || self.sealed.iter().any(|chunk| chunk.disk().is_some()) {
            return Ok(false);
        }
        let Some(work) = self.next_filter_work() else { return Ok(false) };
        self.finish_filter_work(work.run())
    }

    /// A rebuild of the topic filter, if one is due and none is out (see the module docs). Cheap:
    /// the chunks are shared.
    pub fn next_filter_work(&mut self) -> Option<FilterWork> {
        if !self.filter_due() || self.filter.journal.is_some() {
            return None;
        }
        let state = &mut self.filter;
        let sealed_ids: usize = self.sealed.iter().map(|chunk| chunk.len()).sum();
        let mut capacity = sealed_ids.saturating_mul(2).max(state.capacity_min);
        let mut blocks = TopicFilter::blocks_for(capacity);
        // With a memory budget, the filter takes at most a quarter of it: if the filter for twice the
        // sealed ids at 8 bits each does not fit, the one that fits, while it holds at least 4 bits per
        // id (a 32 MB budget: about 16 M ids). Past that (hundreds of millions of ids, most on disk, at
        // the default 1 GiB) the index has none, and lookups probe chunk by chunk: a filter filling
        // the budget would push every resident chunk to disk.
        let budget = self.disk.as_ref().map(|disk| disk.memory_bytes);
        if let Some(budget) = budget.filter(|budget| TopicFilter::bytes_for(capacity) > budget / 4) {
            blocks = (budget / 4).saturating_sub(size_of::<TopicFilter>()) / size_of::<Block>();
            capacity = blocks * 512 / BITS_PER_ID_MIN;
            let fills = capacity / CAPPED_FILL_DENOMINATOR * CAPPED_FILL_NUMERATOR;
            if blocks == 0 || sealed_ids > fills {
                state.filter = None;
                return None;
            }
        }
        state.work_id += 1;
        state.journal = Some(Vec::new());
        Some(FilterWork {
            instance: self.instance,
            work_id: state.work_id,
            chunks: self.sealed.iter().cloned().collect(),
            blocks,
            capacity,
        })
    }

    /// Installs a rebuilt topic filter, with the ids sealed since its chunks were taken. `Ok(false)`:
    /// it was abandoned meanwhile (or is of an index since replaced), and nothing changed. A chunk
    /// file that could not be read fails it; the old filter (if any) stays, still complete.
    pub fn finish_filter_work(&mut self, done: FilterDone) -> Result<bool, DedupError> {
        let state = &mut self.filter;
        if done.instance != self.instance || done.work_id != state.work_id || state.journal.is_none() {
            return Ok(false);
        }
        let journal = state.journal.take().unwrap_or_default();
        let (mut filter, inserted) = done.built?;
        for id in &journal {
            filter.insert(*id);
        }
        state.inserted = inserted + journal.len();
        state.filter = Some(Arc::new(filter));
        Ok(true)
    }

    /// True if a rebuild of the topic filter is out.
    #[cfg(test)]
    pub(crate) fn filter_work_out(&self) -> bool {
        self.filter.journal.is_some()
    }

    /// Checks the invariant: every id of every sealed chunk passes the topic filter (tests).
    #[cfg(test)]
    pub(crate) fn assert_filter_covers_sealed(&self) {
        let Some(filter) = self.topic_filter() else { return };
        for chunk in &self.sealed {
            for entry in chunk.entries() {
                let id = entry.expect("chunk entries").id;
                assert!(filter.may_contain(id.to_u128()), "sealed id {id:?} is missing from the topic filter");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(number: u64) -> u128 {
        crate::Id::of(&number.to_be_bytes()).to_u128()
    }

    #[test]
    fn the_topic_filter_never_misses_and_rarely_lies() {
        let mut filter = TopicFilter::with_capacity(100_000);
        (0..100_000).for_each(|number| filter.insert(id(number)));
        assert!((0..100_000).all(|number| filter.may_contain(id(number))), "no inserted id is missed");
        let lies = (100_000..200_000).filter(|number| filter.may_contain(id(*number))).count();
        // Full to its capacity, about 2 to 3 in 100 (16 bits per id: about 1 in 1,000).
        assert!(lies < 4_000, "{lies} false positives in 100,000");
        assert!(lies > 0, "a full filter of 8 bits per id does lie sometimes");
    }

    /// Ids sealed while a rebuild runs are not in the chunks it reads: the journal brings them in.
    #[test]
    fn ids_sealed_while_a_rebuild_runs_are_in_the_filter_it_installs() {
        use crate::{DedupWindow, Id, IndexConfig};
        let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 2);
        let mut offset = 0;
        let mut store = |index: &mut DedupIndex, numbers: std::ops::Range<u64>| {
            for number in numbers {
                let reservation = index.reserve(0, &[Some(Id::of(&number.to_be_bytes()))], None, 0).expect("reserve");
                index.confirm(reservation, &[offset], 0);
                offset += 1;
            }
        };
        store(&mut index, 0..100);
        let work = index.next_filter_work().expect("no filter yet: a rebuild is due");
        assert!(index.filter_work_out() && index.next_filter_work().is_none(), "one rebuild at a time");
        let sealed_before = index.sealed_chunks();
        store(&mut index, 100..200);
        index.expire(0, 1_000);
        assert!(index.sealed_chunks() > 0 && sealed_before > 0, "chunks were sealed before and during");
        assert!(index.finish_filter_work(work.run()).expect("rebuild"), "installed");
        assert!(!index.filter_work_out(), "the journal is gone with the rebuild");
        index.assert_filter_covers_sealed();
        for number in 0..200u64 {
            let id = Id::of(&number.to_be_bytes());
            assert!(index.lookup(&id, 0).expect("lookup").is_some(), "id {number} found through the filter");
            let looked_up = index.sealed_view().lookup_many(&[Some(id)], 0).expect("view");
            let reservation = index.reserve_looked_up(1, &[Some(id)], None, 0, looked_up).expect("reserve");
            assert!(matches!(reservation.decisions()[0], crate::Decision::Duplicate(_)), "id {number} is a duplicate");
            index.release(reservation);
        }
    }

    /// With a memory budget, a filter takes at most a quarter of it: denser (down to 4 bits per id)
    /// if the usual size does not fit, none past that (and one there is dropped): lookups probe chunk
    /// by chunk rather than the filter push chunks to disk.
    #[test]
    fn a_filter_takes_at_most_a_quarter_of_the_memory_budget() {
        use crate::{DedupWindow, Id, IndexConfig};
        // 200 ids: 448 bytes at 8 bits for twice them; 192 bytes (3 blocks, 384 ids at 4 bits) fit in
        // a quarter of 1,000; 128 bytes (2 blocks, 256 ids) in a quarter of 700, for at most 204 sealed
        // ids (4/5: a rebuild due again only after a fifth of it), so for 200 ids but not for 240; 64
        // bytes (1 block) in a quarter of 300: too few.
        for (budget, ids, built) in
            [(100_000, 200u64, true), (1_000, 200, true), (700, 200, true), (700, 240, false), (300, 200, false)]
        {
            let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 2);
            let dir = tempfile::tempdir().expect("tempdir");
            index.use_disk(dir.path().join("chunks"), budget).expect("use disk");
            for number in 0..ids {
                let reservation = index.reserve(0, &[Some(Id::of(&number.to_be_bytes()))], None, 0).expect("reserve");
                index.confirm(reservation, &[number as i64], 0);
            }
            let work = index.next_filter_work();
            assert_eq!(work.is_some(), built, "budget {budget}, {ids} ids");
            if let Some(work) = work {
                assert!(index.finish_filter_work(work.run()).expect("rebuild"));
                index.assert_filter_covers_sealed();
                let bytes = index.topic_filter().expect("installed").approx_bytes();
                assert!(bytes <= budget / 4, "budget {budget}: the filter takes {bytes} bytes");
                assert!(index.next_filter_work().is_none(), "budget {budget}: not rebuilt at once");
            }
            assert_eq!(index.topic_filter().is_some(), built);
        }
    }

    #[test]
    fn a_filter_is_one_to_two_bytes_per_sealed_id() {
        let filter = TopicFilter::with_capacity(2_000_000);
        let per_id = filter.approx_bytes() as f64 / 1_000_000.0;
        assert!((1.9..2.1).contains(&per_id), "{per_id} bytes per id just after a rebuild");
    }
}
