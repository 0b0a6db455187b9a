//! [`SealedView`]: an index's sealed chunks as of one moment, in which a batch's ids are looked up
//! without the caller's lock; [`LookedUp`], what it found, handed to
//! [`crate::DedupIndex::reserve_looked_up`] under the lock.
//!
//! Sealed chunks are immutable and shared (`Arc`), so a view costs one reference per chunk. A new id
//! is looked up in every chunk (a filter probe each, a cache miss at millions of ids; a page read
//! for a chunk on disk whose filter passes): doing that outside the lock lets the topic's other
//! partitions reserve meanwhile, where before they waited for every probe of every batch.

use std::sync::Arc;

use crate::chunk::{is_live, Location, LogStarts, SealedChunk};
use crate::config::DedupWindow;
use crate::error::DedupError;
use crate::id::Id;
use crate::topic_filter::TopicFilter;

/// The sealed chunks of an index, oldest first, with the window and log starts they were taken with.
pub struct SealedView {
    instance: u64,
    chunks: Vec<Arc<SealedChunk>>,
    /// The index's topic filter when the view was taken, covering every id of `chunks`.
    filter: Option<Arc<TopicFilter>>,
    window: DedupWindow,
    log_starts: Arc<LogStarts>,
}

/// What [`SealedView::lookup_many`] found: per id, the newest copy live in the view's chunks.
#[must_use = "a lookup is for reserve_looked_up"]
pub struct LookedUp {
    pub(crate) instance: u64,
    /// The chunks probed, kept so that none of their addresses is reused while this lives (the
    /// index tells the chunks it must still probe by address).
    chunks: Vec<Arc<SealedChunk>>,
    /// Their addresses, sorted: `has` is asked once per sealed chunk under the lock, so it is a
    /// binary search, not a scan (about 120 chunks with most ids on disk).
    addresses: Vec<usize>,
    pub(crate) window: DedupWindow,
    pub(crate) now_ms: i64,
    pub(crate) found: Vec<Option<(Location, u32)>>,
}

impl SealedView {
    pub(crate) fn new(
        instance: u64,
        chunks: Vec<Arc<SealedChunk>>,
        filter: Option<Arc<TopicFilter>>,
        window: DedupWindow,
        log_starts: Arc<LogStarts>,
    ) -> SealedView {
        SealedView { instance, chunks, filter, window, log_starts }
    }

    /// True if every chunk of the view is held in RAM: a lookup then reads no file (a caller that
    /// must not block, an async task, looks up only in such a view).
    pub fn is_resident(&self) -> bool {
        self.chunks.iter().all(|chunk| chunk.disk().is_none())
    }

    /// How many of `ids` a lookup would look for in the chunks: those the topic filter may hold (all
    /// of them without a filter; none without a chunk). One filter probe per id, the first step of a
    /// lookup: a caller can tell a batch of new ids (few pass) from one of duplicates, whose lookup
    /// probes up to every chunk per id.
    pub fn passing_filter(&self, ids: &[Option<Id>]) -> usize {
        if self.chunks.is_empty() {
            return 0;
        }
        let ids = ids.iter().flatten();
        match &self.filter {
            Some(filter) => ids.filter(|id| filter.may_contain(id.to_u128())).count(),
            None => ids.count(),
        }
    }

    /// Looks up every id of a batch in the view's chunks, newest first, chunk by chunk (as the
    /// index does under its lock). Fails only if a chunk on disk cannot be read or a page of it does
    /// not match its checksum.
    pub fn lookup_many(self, ids: &[Option<Id>], now_ms: i64) -> Result<LookedUp, DedupError> {
        let SealedView { instance, chunks, filter, window, log_starts } = self;
        let live = |copy: (Location, u32)| is_live(copy.0, copy.1, window, now_ms, &log_starts).then_some(copy);
        let mut found: Vec<Option<(Location, u32)>> = vec![None; ids.len()];
        probe_chunks(chunks.iter().rev(), filter.as_deref(), ids, &mut found, live)?;
        let mut addresses: Vec<usize> = chunks.iter().map(|chunk| Arc::as_ptr(chunk) as usize).collect();
        addresses.sort_unstable();
        Ok(LookedUp { instance, chunks, addresses, window, now_ms, found })
    }
}

impl LookedUp {
    /// True if this lookup was made in a view of `index` (not of an index that has since replaced
    /// it): only then may [`crate::DedupIndex::reserve_looked_up`] take it.
    pub fn is_of(&self, index: &crate::DedupIndex) -> bool {
        self.instance == index.instance
    }

    /// The time the lookup was made at, which the reserve that takes it must use.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// True if `chunk` was probed (the same chunk, not an equal one).
    pub(crate) fn has(&self, chunk: &Arc<SealedChunk>) -> bool {
        let found = self.addresses.binary_search(&(Arc::as_ptr(chunk) as usize)).is_ok();
        debug_assert_eq!(
            found,
            self.chunks.iter().any(|probed| Arc::ptr_eq(probed, chunk)),
            "addresses match the chunks"
        );
        found
    }
}

/// Looks `ids` up in `chunks` (newest first), filling each empty slot of `found` with the first copy
/// found that `live` keeps. Chunk by chunk rather than id by id: the probes of one chunk's filter
/// for all the ids are independent loads the processor overlaps, where probing every chunk for one
/// id before the next would wait on each cache miss in turn. With a topic filter (which covers every
/// id of `chunks`), only the ids that pass it are looked for in the chunks: most new ids then cost
/// one probe instead of one per chunk.
pub(crate) fn probe_chunks<'a, T>(
    chunks: impl Iterator<Item = &'a Arc<SealedChunk>>,
    filter: Option<&TopicFilter>,
    ids: &[Option<Id>],
    found: &mut [Option<T>],
    live: impl Fn((Location, u32)) -> Option<T>,
) -> Result<(), DedupError> {
    assert_eq!(found.len(), ids.len(), "a slot per id");
    // No chunk to probe (under the index's lock, most often: a view probed them all): the filter
    // has nothing to answer for.
    let mut chunks = chunks.peekable();
    if chunks.peek().is_none() {
        return Ok(());
    }
    if let Some(filter) = filter {
        filter.warm(ids.iter().zip(found.iter()).filter(|(_, slot)| slot.is_none()).filter_map(|(id, _)| id.as_ref()));
    }
    // The ids to look for, by their place in `ids`: each chunk is probed for these alone (most often
    // a few of thousands, or none), and one found live is looked for no further.
    let mut wanted: Vec<(usize, &Id)> = ids
        .iter()
        .zip(found.iter())
        .enumerate()
        .filter_map(|(at, (id, slot))| match (id, slot) {
            (Some(id), None) if filter.is_none_or(|filter| filter.may_contain(id.to_u128())) => Some((at, id)),
            _ => None,
        })
        .collect();
    for chunk in chunks {
        if wanted.is_empty() {
            break;
        }
        for (at, id) in &wanted {
            debug_assert!(found[*at].is_none(), "an id found live is looked for no further");
            found[*at] = chunk.get(id)?.and_then(&live);
        }
        wanted.retain(|(at, _)| found[*at].is_none());
    }
    Ok(())
}
