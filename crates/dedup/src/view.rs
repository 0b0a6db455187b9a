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
///
/// It names the chunks probed by their serial numbers and keeps none of them alive: a lookup done
/// ahead may wait in a partition's queue, and chunks that a merge or a spill replaced meanwhile are
/// freed (or leave RAM) as they would without it, not later under the index's lock.
#[must_use = "a lookup is for reserve_looked_up"]
pub struct LookedUp {
    pub(crate) instance: u64,
    /// The serial numbers of the chunks probed, sorted: `has` is asked once per sealed chunk under
    /// the lock, so it is a binary search, not a scan (about 120 chunks with most ids on disk).
    serials: Vec<u64>,
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

    /// Looks up every id of a batch in the view's chunks, newest first, chunk by chunk (as the
    /// index does under its lock). Fails only if a chunk on disk cannot be read or a page of it does
    /// not match its checksum.
    pub fn lookup_many(self, ids: &[Option<Id>], now_ms: i64) -> Result<LookedUp, DedupError> {
        let looked_up = self.lookup_many_within(ids, now_ms, usize::MAX)?;
        Ok(looked_up.expect("no bound on the ids looked for"))
    }

    /// [`SealedView::lookup_many`], unless more than `most_wanted` of the ids pass the topic filter
    /// (all of them without one, if there is a chunk): then `None`, after one filter probe per id
    /// and no chunk probed. A caller that must not take long, an async task, leaves a batch of
    /// stored ids (a resend, each looked for in up to every chunk) to a blocking thread this way.
    pub fn lookup_many_within(
        self,
        ids: &[Option<Id>],
        now_ms: i64,
        most_wanted: usize,
    ) -> Result<Option<LookedUp>, DedupError> {
        let SealedView { instance, chunks, filter, window, log_starts } = self;
        let live = |copy: (Location, u32)| is_live(copy.0, copy.1, window, now_ms, &log_starts).then_some(copy);
        let mut found: Vec<Option<(Location, u32)>> = vec![None; ids.len()];
        if !probe_chunks(chunks.iter().rev(), filter.as_deref(), ids, &mut found, live, most_wanted)? {
            return Ok(None);
        }
        let mut serials: Vec<u64> = chunks.iter().map(|chunk| chunk.serial()).collect();
        serials.sort_unstable();
        Ok(Some(LookedUp { instance, serials, window, now_ms, found }))
    }
}

impl LookedUp {
    /// True if `chunk` was probed (the same chunk, not an equal one).
    pub(crate) fn has(&self, chunk: &SealedChunk) -> bool {
        self.serials.binary_search(&chunk.serial()).is_ok()
    }

    /// True if this lookup was made in a view of `index` (not of an index that has since replaced
    /// it): only then may [`crate::DedupIndex::reserve_looked_up`] take it.
    pub fn is_of(&self, index: &crate::DedupIndex) -> bool {
        self.instance == index.instance
    }

    /// True if the lookup found a live copy of the id at `index` of the batch.
    pub fn found_at(&self, index: usize) -> bool {
        self.found[index].is_some()
    }

    /// The time the lookup was made at: a reserve that takes it runs at this time or later.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// Looks `ids` up in `chunks` (newest first), filling each empty slot of `found` with the first copy
/// found that `live` keeps. Chunk by chunk rather than id by id: the probes of one chunk's filter
/// for all the ids are independent loads the processor overlaps, where probing every chunk for one
/// id before the next would wait on each cache miss in turn. With a topic filter (which covers every
/// id of `chunks`), only the ids that pass it are looked for in the chunks: most new ids then cost
/// one probe instead of one per chunk. False, with no chunk probed, if more than `most_wanted` ids
/// are to be looked for in the chunks.
pub(crate) fn probe_chunks<'a, T>(
    chunks: impl Iterator<Item = &'a Arc<SealedChunk>>,
    filter: Option<&TopicFilter>,
    ids: &[Option<Id>],
    found: &mut [Option<T>],
    live: impl Fn((Location, u32)) -> Option<T>,
    most_wanted: usize,
) -> Result<bool, DedupError> {
    assert_eq!(found.len(), ids.len(), "a slot per id");
    // No chunk to probe (under the index's lock, most often: a view probed them all): the filter
    // has nothing to answer for.
    let mut chunks = chunks.peekable();
    if chunks.peek().is_none() {
        return Ok(true);
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
    if wanted.len() > most_wanted {
        return Ok(false);
    }
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
    Ok(true)
}
