//! [`DedupIndex`]: the per-topic index of live ids, its two-step write protocol
//! (reserve → confirm | release), transactions, and expiry by window and retention.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::{replace, size_of};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::chunk::{hash_map_bytes, is_live, ActiveChunk, Entry, Location, LogStarts, SealedChunk, TooWide};
use crate::config::DedupWindow;
use crate::error::DedupError;
use crate::holds::{Hold, Holds};
use crate::id::{Id, IdScheme};
use crate::spill::DiskStore;
use crate::topic_filter::FilterState;
use crate::view::{probe_chunks, LookedUp, SealedView};

/// Default bound on the ids one index held in RAM stores or reserves (about 3 GB at 29 bytes per
/// id).
pub const MAX_IDS_DEFAULT: u64 = 100_000_000;
/// Default bound for an index that moves sealed chunks to disk ([`DedupIndex::use_disk`]): at the
/// bound, about 1.4 GB of filters and fences in RAM and 32 GB of chunk files.
pub const MAX_IDS_ON_DISK_DEFAULT: u64 = 1_000_000_000;

/// The active chunk holds about 1/32 of the stored ids (so its table and rows add about 1.2 bytes
/// per id), rounded to 7/8 of a power of two (hashbrown's fullest table) between 2^16 and 2^19
/// buckets: 57,344 to 458,752 ids.
const CHUNK_FRACTION: usize = 32;
const CHUNK_BUCKET_BITS_MIN: u32 = 16;
const CHUNK_BUCKET_BITS_MAX: u32 = 19;
/// Under a memory budget the active chunk's map takes at most this fraction of it (a frozen
/// chunk waiting for its seal as much again), down to the smallest chunk: with most ids on disk,
/// a 2^19-bucket chunk (17.3 MB) beside a frozen one would otherwise exceed a small budget alone.
const ACTIVE_BUDGET_FRACTION: usize = 8;
/// Merged chunks on disk grow to about 1/8 of the stored ids.
pub(crate) const MERGE_FRACTION: usize = 8;
/// Merged chunks in RAM grow to about 1/16 of the stored ids: each merged chunk takes in each newly
/// sealed one in turn, copying itself each time, and the target bounds how often an id is copied
/// (2.17 copies per id at 10 M ids with 1/8, 1.31 with 1/16), while the topic filter spares a new id
/// a probe of every chunk (21 chunks at 10 M ids instead of 12).
pub(crate) const RESIDENT_MERGE_FRACTION: usize = 16;

/// Sources of distinct `instance` values, so a reservation is never confirmed on another index.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// Per-topic settings of an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    /// `dedup.window.ms`.
    pub window: DedupWindow,
    /// Bound on ids stored (live or awaiting reclamation) plus ids reserved; past it
    /// [`DedupIndex::reserve`] returns [`DedupError::IndexFull`].
    pub max_ids: u64,
    /// How the index's ids are hashed ([`crate::extract_ids`] takes it): part of the index's state,
    /// kept in its snapshots. [`DedupIndex::load`] replaces it with the snapshot's; an index made
    /// to replace another (a rebuild) must take the one it replaces, as the ids of batches already
    /// extracted were hashed with it.
    pub ids: IdScheme,
}

impl IndexConfig {
    /// A config with the given window, [`MAX_IDS_DEFAULT`] and a new random [`IdScheme`].
    pub fn new(window: DedupWindow) -> IndexConfig {
        IndexConfig { window, max_ids: MAX_IDS_DEFAULT, ids: IdScheme::random() }
    }
}

/// What [`DedupIndex::reserve`] decided for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The record has no id: store it, never deduplicated.
    NoId,
    /// The id is not live: store the record. The id is now reserved by this reservation.
    New,
    /// The id is live, stored at this location (or written at this location by the same
    /// producer's still-open transaction): do not store the record; the produce succeeds.
    Duplicate(Location),
    /// An earlier record of the same batch has this id and is `New`: do not store this one.
    DuplicateInBatch {
        /// Index of that earlier record.
        first_index: usize,
    },
    /// The id is held by another write in flight, or by another producer's open transaction:
    /// the batch must fail with a retriable error (release the reservation).
    Pending,
}

/// Ids reserved by one batch write, between [`DedupIndex::reserve`] and [`DedupIndex::confirm`]
/// or [`DedupIndex::release`]. Dropping it without either leaves its ids pending forever.
#[derive(Debug)]
#[must_use = "a reservation must be confirmed or released, or its ids stay pending"]
pub struct Reservation {
    instance: u64,
    token: u64,
    partition: i32,
    transactional_producer_id: Option<i64>,
    decisions: Vec<Decision>,
    /// (record index, id) of every `New` record.
    new: Vec<(usize, Id)>,
}

impl Reservation {
    /// One decision per record, in batch order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// True if any record is `Pending`: the write must be refused with a retriable error and
    /// the reservation released.
    pub fn is_blocked(&self) -> bool {
        self.decisions.contains(&Decision::Pending)
    }

    /// The mask for [`crate::filter_batch`]: keep `New` and `NoId` records, drop duplicates.
    /// Panics if the reservation is blocked (such a write must not happen).
    pub fn keep_mask(&self) -> Vec<bool> {
        assert!(!self.is_blocked(), "a blocked reservation is released, not written");
        self.decisions.iter().map(|decision| matches!(decision, Decision::New | Decision::NoId)).collect()
    }

    /// Number of records to be dropped as duplicates.
    pub fn duplicate_count(&self) -> usize {
        self.decisions
            .iter()
            .filter(|decision| matches!(decision, Decision::Duplicate(_) | Decision::DuplicateInBatch { .. }))
            .count()
    }

    /// The partition this write goes to.
    pub fn partition(&self) -> i32 {
        self.partition
    }
}

/// What one [`DedupIndex::expire`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpireStats {
    /// Whole chunks freed because every id in them was dead.
    pub chunks_dropped: usize,
    /// Dead ids freed (in whole chunks or by compaction).
    pub entries_dropped: usize,
    /// Ids copied while compacting or merging chunks: the work done.
    pub entries_rewritten: usize,
    /// True if the budget stopped the call before all useful compaction was done.
    pub more_work: bool,
}

/// The per-topic index of live message ids (see the crate docs for semantics and layout).
///
/// Not synchronised: the partition writers of a topic share it behind one lock.
pub struct DedupIndex {
    pub(crate) config: IndexConfig,
    /// Sealed chunks, oldest first. Shared so a snapshot can write them without holding the index
    /// (see [`DedupIndex::snapshot_view`]); replacing one leaves the snapshot's copy intact.
    pub(crate) sealed: VecDeque<Arc<SealedChunk>>,
    pub(crate) active: ActiveChunk,
    /// A full active chunk waiting to be sealed without the lock ([`DedupIndex::next_seal_work`]),
    /// when seals are deferred ([`DedupIndex::defer_seals`]): probed after the active chunk, before
    /// the sealed ones, and written by snapshots like the active chunk.
    pub(crate) frozen: Option<Arc<ActiveChunk>>,
    /// Whether full active chunks wait in `frozen` for a seal without the lock.
    defer_seals: bool,
    /// A seal of `frozen` is out.
    pub(crate) sealing: bool,
    /// The inputs of the rewrite that is out ([`DedupIndex::next_rewrite_work`]); a spill leaves them.
    pub(crate) rewriting: Vec<Arc<SealedChunk>>,
    /// Ids reserved by writes in flight and written by open transactions (`crate::holds`).
    pending: Holds,
    /// Ids held by each open transaction, by (partition, producer id).
    transactions: HashMap<(i32, i64), Vec<Id>>,
    /// Shared with [`SealedView`]s (copied on write: it changes only when retention deletes segments).
    pub(crate) log_starts: Arc<LogStarts>,
    /// Next offset not yet reflected in the index, per partition.
    pub(crate) covered: BTreeMap<i32, i64>,
    pub(crate) instance: u64,
    next_token: u64,
    /// Smallest active chunk, as bucket bits: `CHUNK_BUCKET_BITS_MIN` except in tests, which
    /// use tiny chunks to exercise sealing, merging and compaction.
    pub(crate) chunk_bits_min: u32,
    /// Merges in RAM build chunks of up to 1/`merge_fraction` of the stored ids:
    /// [`RESIDENT_MERGE_FRACTION`] except in tests whose cases were built on merges at 1/8.
    pub(crate) merge_fraction: usize,
    /// Where sealed chunks go when the memory budget is exceeded; `None`: all stay in RAM.
    pub(crate) disk: Option<DiskStore>,
    /// Chosen at random when the index starts empty, kept in its snapshots and written into every
    /// chunk file it writes: a file of another index (a deleted topic's, say) under a name a
    /// snapshot refers to is refused at open instead of loaded (`crate::disk`).
    pub(crate) nonce: u64,
    /// One filter over the ids of every sealed chunk (`crate::topic_filter`).
    pub(crate) filter: FilterState,
}

/// A random u64 from the standard library's per-process random hash keys and the clock (no new
/// dependency; it needs to differ between indexes, not to resist an adversary).
pub(crate) fn random_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(clock.as_nanos());
    hasher.write_u64(NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// A batch timestamp in whole seconds, rounded up so an id lives at least the whole window.
pub(crate) fn time_s_of(timestamp_ms: i64) -> u32 {
    let seconds = timestamp_ms.max(0).saturating_add(999) / 1000;
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// Capacity of a new active chunk when `stored` ids are stored.
pub(crate) fn chunk_capacity(stored: usize, bits_min: u32) -> usize {
    capacity_of(chunk_bucket_bits(stored, bits_min))
}

fn chunk_bucket_bits(stored: usize, bits_min: u32) -> u32 {
    let want = (stored / CHUNK_FRACTION).max(1).saturating_mul(8) / 7;
    want.next_power_of_two().ilog2().clamp(bits_min, CHUNK_BUCKET_BITS_MAX.max(bits_min))
}

/// Ids a map of 2^`bits` buckets holds at hashbrown's fullest.
fn capacity_of(bits: u32) -> usize {
    (1usize << bits) * 7 / 8
}

/// [`chunk_capacity`], and under a memory `budget` no larger than a map of
/// 1/[`ACTIVE_BUDGET_FRACTION`] of it, unless `bits_min` allows no smaller.
pub(crate) fn chunk_capacity_within(stored: usize, bits_min: u32, budget: Option<usize>) -> usize {
    let unbounded = chunk_bucket_bits(stored, bits_min);
    let mut bits = unbounded;
    if let Some(budget) = budget {
        while bits > bits_min && ActiveChunk::map_bytes(capacity_of(bits)) > budget / ACTIVE_BUDGET_FRACTION {
            bits -= 1;
        }
    }
    assert!(bits_min <= bits && bits <= unbounded, "bits {bits} outside {bits_min}..={unbounded}");
    assert!(
        bits == bits_min
            || budget.is_none_or(|budget| ActiveChunk::map_bytes(capacity_of(bits)) <= budget / ACTIVE_BUDGET_FRACTION),
        "an active chunk above the smallest fits its share of the budget"
    );
    capacity_of(bits)
}

/// Largest chunk a merge builds: about 1/`fraction` of the stored ids ([`RESIDENT_MERGE_FRACTION`]
/// for `expire`'s merges in RAM, [`MERGE_FRACTION`] on disk), so the number of chunks a lookup
/// probes stays near `fraction` to twice it at any size (on disk, where merges join like sizes, up to
/// `2 * 8 + log2(stored)`: `crate::spill`), while the ids a dead-heavy chunk keeps alive (at most half
/// of it, see `expire`) stay a small share.
pub(crate) fn merge_target(stored: usize, bits_min: u32, fraction: usize) -> usize {
    assert!(fraction > 0, "a merge target is a fraction of the stored ids");
    (stored / fraction).max(chunk_capacity(stored, bits_min))
}

impl DedupIndex {
    /// An empty index.
    pub fn new(config: IndexConfig) -> DedupIndex {
        DedupIndex {
            config,
            sealed: VecDeque::new(),
            active: ActiveChunk::new(chunk_capacity(0, CHUNK_BUCKET_BITS_MIN)),
            frozen: None,
            defer_seals: false,
            sealing: false,
            rewriting: Vec::new(),
            pending: Holds::default(),
            transactions: HashMap::new(),
            log_starts: Arc::new(LogStarts::default()),
            covered: BTreeMap::new(),
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            next_token: 0,
            chunk_bits_min: CHUNK_BUCKET_BITS_MIN,
            merge_fraction: RESIDENT_MERGE_FRACTION,
            disk: None,
            nonce: random_nonce(),
            filter: FilterState::new(),
        }
    }

    /// The config in force.
    pub fn config(&self) -> IndexConfig {
        self.config
    }

    /// Changes the window (a topic config change). Applies to every stored id at once.
    pub fn set_window(&mut self, window: DedupWindow) {
        self.config.window = window;
    }

    /// Step 1 of a write, during the partition writer's round: decides each record of a batch
    /// for `partition` and reserves the `New` ids so no concurrent write can take them.
    ///
    /// `ids` come from [`crate::extract_ids`]. `transactional_producer_id` is the batch's
    /// producer id if the batch is transactional. `now_ms` is the broker clock, against which
    /// the window is measured. Fails, changing nothing, if the index is full
    /// ([`IndexConfig::max_ids`]), if it is over its memory budget and its last spill failed
    /// ([`DedupError::SpillFailed`]), or if a chunk on disk cannot be read or fails its checks.
    pub fn reserve(
        &mut self,
        partition: i32,
        ids: &[Option<Id>],
        transactional_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Reservation, DedupError> {
        self.reserve_checked(partition, ids, transactional_producer_id, now_ms, true, None)
    }

    /// [`DedupIndex::reserve`] given what a [`SealedView`] of this index found for the same `ids`
    /// at `now_ms` or earlier, looked up without the caller's lock: under it, only the active chunk,
    /// the frozen one, the sealed chunks that are not in the view (sealed, merged or moved to disk
    /// since) and the pending ids are probed. The decisions are those `reserve` would make now, at
    /// `now_ms`: liveness only decreases while the window stays the same (time and log starts move
    /// forward), so a copy the view missed is in no chunk of the view, and one it found is checked
    /// again at `now_ms` (if it died since, the id is looked up in full). A window changed since the
    /// view means a full lookup.
    ///
    /// Panics if `looked_up` is of another index, of another number of ids or a later time than
    /// `now_ms`; that it is of these very ids is the caller's to keep (a partition looks up a batch's
    /// ids as it is queued, or in its writer's round, and reserves them in that round).
    pub fn reserve_looked_up(
        &mut self,
        partition: i32,
        ids: &[Option<Id>],
        transactional_producer_id: Option<i64>,
        now_ms: i64,
        looked_up: LookedUp,
    ) -> Result<Reservation, DedupError> {
        assert_eq!(looked_up.instance, self.instance, "a lookup is used on the index it was looked up in");
        assert_eq!(looked_up.found.len(), ids.len(), "a lookup is used for the ids it looked up");
        assert!(looked_up.now_ms <= now_ms, "a lookup is used at the time it looked up or later");
        self.reserve_checked(partition, ids, transactional_producer_id, now_ms, true, Some(looked_up))
    }

    /// The sealed chunks as of now, to look a batch's ids up in without the caller's lock
    /// ([`SealedView::lookup_many`]), then [`DedupIndex::reserve_looked_up`] under it. Cheap: the
    /// chunks are shared, not copied.
    pub fn sealed_view(&self) -> SealedView {
        SealedView::new(
            self.instance,
            self.sealed.iter().cloned().collect(),
            self.topic_filter().cloned(),
            self.config.window,
            self.log_starts.clone(),
        )
    }

    /// [`DedupIndex::reserve`] for a record already stored, replayed at open: never refused for
    /// being over the memory budget after a failed spill ([`DedupError::SpillFailed`]). The record
    /// is in the log whatever the index says, so refusing its id would leave the index without it
    /// (and later store a duplicate); a replay goes over the budget instead, and the live path,
    /// which refuses new ids while a spill fails, brings the index back within it.
    pub fn reserve_replayed(
        &mut self,
        partition: i32,
        ids: &[Option<Id>],
        transactional_producer_id: Option<i64>,
        now_ms: i64,
    ) -> Result<Reservation, DedupError> {
        self.reserve_checked(partition, ids, transactional_producer_id, now_ms, false, None)
    }

    fn reserve_checked(
        &mut self,
        partition: i32,
        ids: &[Option<Id>],
        transactional_producer_id: Option<i64>,
        now_ms: i64,
        check_spilling: bool,
        looked_up: Option<LookedUp>,
    ) -> Result<Reservation, DedupError> {
        assert!(partition >= 0, "partition index {partition} is negative");
        let stored = (self.stored_ids() + self.pending.len()) as u64;
        let wanted = ids.iter().flatten().count() as u64;
        if stored.saturating_add(wanted) > self.config.max_ids {
            return Err(DedupError::IndexFull { stored, max: self.config.max_ids });
        }
        if check_spilling {
            self.check_spilling()?;
        }
        let live = self.lookup_many(ids, now_ms, looked_up)?;
        let token = self.next_token;
        self.next_token += 1;
        self.pending.open(token);
        let mut decisions = Vec::with_capacity(ids.len());
        let mut new = Vec::new();
        for (record_index, id) in ids.iter().enumerate() {
            let decision = match (id, live[record_index]) {
                (None, _) => Decision::NoId,
                (Some(id), Some(location)) => Self::decide_held(self.pending.get(id), token, transactional_producer_id)
                    .unwrap_or(Decision::Duplicate(location)),
                // Held now unless pending (one probe of the holds for both).
                (Some(id), None) => match self.pending.reserve_if_free(*id, token, record_index) {
                    None => {
                        new.push((record_index, *id));
                        Decision::New
                    }
                    hold => Self::decide_held(hold, token, transactional_producer_id).expect("a hold decides"),
                },
            };
            decisions.push(decision);
        }
        self.pending.count_reserved(token, new.len());
        Ok(Reservation { instance: self.instance, token, partition, transactional_producer_id, decisions, new })
    }

    /// Decides an id that is pending (`hold`) in a write under `token`: `None` if it is not pending
    /// (the id is then new or a duplicate of a live copy: `lookup_many` found where, before any of
    /// the batch's ids was reserved).
    fn decide_held(hold: Option<Hold>, token: u64, transactional_producer_id: Option<i64>) -> Option<Decision> {
        Some(match hold? {
            Hold::InFlight { token: holder, record_index } if holder == token => {
                Decision::DuplicateInBatch { first_index: record_index }
            }
            Hold::Transaction { producer_id, location, .. } if transactional_producer_id == Some(producer_id) => {
                Decision::Duplicate(location)
            }
            _ => Decision::Pending,
        })
    }

    /// [`DedupIndex::lookup`] of every id of a batch, through the topic filter and then chunk by
    /// chunk ([`probe_chunks`]). With `looked_up` (a [`SealedView`]'s answer, see [`DedupIndex::reserve_looked_up`]), the
    /// chunks of its view are not probed again.
    ///
    /// A chunk on disk is read only for the ids its filter (in RAM) may hold: one page each.
    fn lookup_many(
        &self,
        ids: &[Option<Id>],
        now_ms: i64,
        looked_up: Option<LookedUp>,
    ) -> Result<Vec<Option<Location>>, DedupError> {
        let window = self.config.window;
        // A window lengthened since the view can bring back ids the view found dead.
        let looked_up = looked_up.filter(|looked_up| looked_up.window == window);
        let live = |(location, time_s): (Location, u32)| {
            is_live(location, time_s, window, now_ms, &self.log_starts).then_some(location)
        };
        let frozen = self.frozen.as_deref();
        let mut found: Vec<Option<Location>> = ids
            .iter()
            .map(|id| {
                let id = id.as_ref()?;
                self.active.get(id).and_then(live).or_else(|| frozen.and_then(|frozen| frozen.get(id)).and_then(live))
            })
            .collect();
        let unseen = |chunk: &&Arc<SealedChunk>| looked_up.as_ref().is_none_or(|looked_up| !looked_up.has(chunk));
        let probed = probe_chunks(
            self.sealed.iter().rev().filter(unseen),
            self.topic_filter().map(|filter| &**filter),
            ids,
            &mut found,
            live,
            usize::MAX,
        )?;
        assert!(probed, "no bound on the ids looked for");
        let Some(looked_up) = looked_up else { return Ok(found) };
        for ((slot, id), copy) in found.iter_mut().zip(ids).zip(looked_up.found) {
            let (None, Some(id), Some(copy)) = (&slot, id, copy) else { continue };
            *slot = match live(copy) {
                Some(location) => Some(location),
                // Dead since the view (time passed, or a log start moved): another copy may still be live.
                None => self.lookup_many(&[Some(*id)], now_ms, None)?.pop().flatten(),
            };
        }
        Ok(found)
    }

    /// Where `id` is stored, if it is live at `now_ms` (committed and within window and
    /// retention). Ids held by open transactions or writes in flight are not live. Fails only if
    /// a chunk on disk cannot be read or a page of it does not match its checksum.
    pub fn lookup(&self, id: &Id, now_ms: i64) -> Result<Option<Location>, DedupError> {
        Ok(self.lookup_many(&[Some(*id)], now_ms, None)?.pop().flatten())
    }

    /// The hold on `id` (a write in flight's or an open transaction's), for tests.
    #[cfg(test)]
    pub(crate) fn hold(&self, id: &Id) -> Option<Hold> {
        self.pending.get(id)
    }

    /// [`DedupIndex::lookup`] in tests, where a read error is a failure.
    #[cfg(test)]
    pub(crate) fn lookup_ok(&self, id: &Id, now_ms: i64) -> Option<Location> {
        self.lookup(id, now_ms).expect("lookup")
    }

    /// Step 2 of a successful write, after the fsync that made the batch durable: the `New`
    /// ids become live (or, for a transactional batch, held by the transaction until
    /// [`DedupIndex::end_transaction`]).
    ///
    /// `offsets[i]` is the offset record `i` of the batch was stored at, for every record
    /// given to `reserve` (the log's base offset plus the record's offset delta, see
    /// [`crate::extract_record_ids`]). `timestamp_ms` is the batch's max timestamp, from which
    /// the window is measured. Advances the partition's covered offset past the largest offset.
    ///
    /// Panics if the reservation is blocked, belongs to another index, `offsets` has the wrong
    /// length, or a new id's offset lies below what the index already covers (confirms must come
    /// in log order).
    pub fn confirm(&mut self, reservation: Reservation, offsets: &[i64], timestamp_ms: i64) {
        self.check_mine(&reservation);
        assert!(!reservation.is_blocked(), "a blocked reservation is released, never confirmed");
        assert_eq!(offsets.len(), reservation.decisions.len(), "one offset per record given to reserve");
        let partition = reservation.partition;
        let covered = self.covered.get(&partition).copied().unwrap_or(0);
        let time_s = time_s_of(timestamp_ms);
        // The write's ids are no longer held by it (without a map operation per id: `crate::holds`).
        self.pending.close(reservation.token, reservation.new.len());
        let entries = reservation.new.iter().map(|(record_index, id)| {
            let offset = offsets[*record_index];
            assert!(
                offset >= covered,
                "offset {offset} of partition {partition} is below its covered offset {covered}"
            );
            Entry { id: *id, location: Location { partition, offset }, time_s }
        });
        match reservation.transactional_producer_id {
            Some(producer_id) => {
                for entry in entries {
                    let held = self.pending.hold_for_transaction(entry.id, producer_id, entry.location, time_s);
                    assert!(held, "an id reserved by a write is held by no one else when the write is confirmed");
                    self.transactions.entry((partition, producer_id)).or_default().push(entry.id);
                }
            }
            None => {
                let entries: Vec<Entry> = entries.collect();
                // Checked once for the whole write; one by one only when the active chunk fills up.
                if !self.active.insert_all(partition, &entries) {
                    entries.into_iter().for_each(|entry| self.insert_live(entry));
                }
            }
        }
        if let Some(last) = offsets.iter().max() {
            self.advance_covered(partition, last + 1);
        }
    }

    /// The write failed (or was refused): its `New` ids are free again.
    pub fn release(&mut self, reservation: Reservation) {
        self.check_mine(&reservation);
        for (record_index, id) in &reservation.new {
            let hold = self.pending.get(id);
            assert!(
                matches!(hold, Some(Hold::InFlight { token, record_index: index }) if token == reservation.token && index == *record_index),
                "a reserved id stays held by its reservation until confirmed or released"
            );
        }
        self.pending.close(reservation.token, reservation.new.len());
    }

    fn check_mine(&self, reservation: &Reservation) {
        assert_eq!(reservation.instance, self.instance, "a reservation is confirmed or released on its own index");
    }

    /// A transaction marker for `producer_id` was written to `partition`: on commit the ids the
    /// transaction wrote there become live, on abort they are freed (a retry may store them).
    /// Returns how many ids were resolved; 0 for a producer with no held ids (idempotent).
    pub fn end_transaction(&mut self, partition: i32, producer_id: i64, commit: bool) -> usize {
        let ids = self.transactions.remove(&(partition, producer_id)).unwrap_or_default();
        for id in &ids {
            match self.pending.end_transaction_hold(id) {
                Some((holder, location, time_s)) => {
                    assert_eq!(holder, producer_id, "a transaction's id is held by that transaction");
                    assert_eq!(location.partition, partition, "a transaction's id is held in its partition");
                    if commit {
                        self.insert_live(Entry { id: *id, location, time_s });
                    }
                }
                other => panic!("id {id:?} listed for transaction {producer_id} is held as {other:?}"),
            }
        }
        ids.len()
    }

    /// Stores a live id in the active chunk, sealing it first if it cannot take the id: at once, or,
    /// with [`DedupIndex::defer_seals`], by freezing it for a seal without the lock (a chunk still
    /// frozen from the last time is sealed here first, so at most one waits).
    fn insert_live(&mut self, entry: Entry) {
        if !self.active.can_take(&entry.id, entry.location) {
            self.replace_active();
        }
        self.active.insert(entry);
    }

    /// The active chunk is full (or cannot take an id's offset): a new one takes its place, and the
    /// full one is sealed, or frozen for a seal without the lock. Out of line: once per chunk.
    #[cold]
    #[inline(never)]
    fn replace_active(&mut self) {
        let capacity = chunk_capacity_within(self.stored_ids(), self.chunk_bits_min, self.memory_budget());
        // Allocated at once (no rehash while it fills) once the index holds that many ids, so
        // that a small topic's index stays small: the chunk then costs at most about 1.2 bytes per
        // stored id once the index holds many times its capacity (it holds about 1/32 of them).
        let next = match self.stored_ids() >= capacity {
            true => ActiveChunk::allocated(capacity),
            false => ActiveChunk::new(capacity),
        };
        let full = replace(&mut self.active, next);
        self.seal_frozen();
        match self.defer_seals {
            true => self.frozen = Some(Arc::new(full)),
            false => self.push_sealed(full.seal()),
        }
    }

    /// Seals the frozen chunk, if any, under the caller's lock (a seal of it that is out is then
    /// not installed): where no one else would (a replay at open).
    pub fn seal_frozen(&mut self) {
        let Some(frozen) = self.frozen.take() else { return };
        self.sealing = false;
        let sealed = match Arc::try_unwrap(frozen) {
            Ok(chunk) => chunk.seal(),
            Err(shared) => shared.seal_copy(),
        };
        self.push_sealed(sealed);
    }

    /// From now on a full active chunk is frozen and sealed by [`DedupIndex::next_seal_work`]
    /// without the caller's lock (the broker's writers), rather than sealed at once under it.
    pub fn defer_seals(&mut self) {
        self.defer_seals = true;
    }

    /// Retention moved `partition`'s log start offset: ids stored below it are dead at once
    /// (and freed by [`DedupIndex::expire`]). Never moves backwards.
    pub fn set_log_start_offset(&mut self, partition: i32, log_start_offset: i64) {
        let start = Arc::make_mut(&mut self.log_starts).entry(partition).or_insert(log_start_offset);
        *start = (*start).max(log_start_offset);
    }

    /// Records that the index reflects `partition`'s log below `next_offset` (for batches that
    /// did not go through `confirm`: control batches, batches of a topic without ids). Never
    /// moves backwards.
    pub fn advance_covered(&mut self, partition: i32, next_offset: i64) {
        let covered = self.covered.entry(partition).or_insert(next_offset);
        *covered = (*covered).max(next_offset);
    }

    /// The first offset of `partition` the index does not reflect: after [`DedupIndex::load`],
    /// replay the log from here.
    pub fn covered_offset(&self, partition: i32) -> Option<i64> {
        self.covered.get(&partition).copied()
    }

    /// Frees dead ids: whole chunks whose ids are all past the window or below log start
    /// (cheap, always done), then compacts chunks at least half dead and merges adjacent
    /// chunks that fit in one, oldest first, copying about `budget` ids at most (at least one
    /// such step per call, so a budget below a chunk's size still makes progress).
    pub fn expire(&mut self, now_ms: i64, budget: usize) -> ExpireStats {
        let mut stats = self.drop_dead_chunks(now_ms);
        let mut from = 0;
        while let Some(work) = self.next_rewrite_work(from, now_ms, budget, &mut stats) {
            let rewritten = self.finish_rewrite_work(work.run());
            assert!(rewritten.installed, "a rewrite run under the lock it was taken under is installed");
            stats.entries_dropped += rewritten.dropped;
            from = rewritten.next_from;
        }
        stats
    }

    /// The cheap part of [`DedupIndex::expire`]: drops the sealed chunks whose ids are all dead
    /// (no copying). The rewrites follow, one [`DedupIndex::next_rewrite_work`] at a time.
    pub fn drop_dead_chunks(&mut self, now_ms: i64) -> ExpireStats {
        let window = self.config.window;
        let mut stats = ExpireStats::default();
        let before = self.sealed.len();
        let starts = &self.log_starts;
        let rewriting = &self.rewriting;
        let mut retired = Vec::new();
        self.sealed.retain(|chunk| {
            // A rewrite's input stays until the rewrite is installed (which drops what is dead).
            let taken = rewriting.iter().any(|input| Arc::ptr_eq(input, chunk));
            let dead = !taken && (chunk.len() == 0 || chunk.is_fully_dead(window, now_ms, starts));
            if dead {
                stats.entries_dropped += chunk.len();
                retired.extend(chunk.files().into_iter().map(|file| (file.file_id, file.entries)));
            }
            !dead
        });
        stats.chunks_dropped = before - self.sealed.len();
        self.retire(retired);
        stats
    }

    /// The next rewrite of [`DedupIndex::expire`] at or after sealed chunk `from`, if one is useful
    /// and fits what is left of `budget` (`stats.entries_rewritten` counts what was spent; the
    /// first rewrite is always taken, so a budget below a chunk's size still makes progress): a
    /// compaction of a chunk at least half dead, or a merge of two neighbours that fit in one.
    /// The work copies the chunks without the caller's lock ([`RewriteWork::run`]); until
    /// [`DedupIndex::finish_rewrite_work`] its inputs stay in place (no spill takes them) and no
    /// other rewrite is handed out.
    pub fn next_rewrite_work(
        &mut self,
        from: usize,
        now_ms: i64,
        budget: usize,
        stats: &mut ExpireStats,
    ) -> Option<RewriteWork> {
        if !self.rewriting.is_empty() {
            return None;
        }
        let window = self.config.window;
        // With a memory budget, chunks merged in RAM stay well within it (about half of it at 32 bytes
        // per id): a bigger one would only be spilled, and merging is cheaper on disk, outside the lock.
        let resident_max = self.disk.as_ref().map_or(usize::MAX, |disk| disk.memory_bytes / 64);
        let target = merge_target(self.stored_ids(), self.chunk_bits_min, self.merge_fraction).min(resident_max);
        // Chunks on disk are compacted and merged by disk work (`crate::spill`), and so is a chunk
        // being spilled: rewriting it here would make the spill's swap find it gone.
        let in_ram = |chunk: &Arc<SealedChunk>| chunk.disk().is_none() && !self.in_disk_work(chunk);
        for index in from..self.sealed.len() {
            let chunk = &self.sealed[index];
            if !in_ram(chunk) {
                continue;
            }
            let dead = chunk.dead_estimate(window, now_ms, &self.log_starts);
            let next = self.sealed.get(index + 1).filter(|next| in_ram(next));
            // A chunk with a file waits to merge with a newer one until that one has a file too
            // (from the next snapshot: due after 100,000 changes, or 10 minutes): the merge then
            // takes both files over, where one now would leave its output to be written whole by
            // that snapshot.
            let merge =
                next.is_some_and(|next| chunk.len() + next.len() <= target && chunk.has_file() == next.has_file());
            let compact = dead > 0 && dead * 2 >= chunk.len();
            if !merge && !compact {
                continue;
            }
            let next = next.filter(|_| merge);
            let cost = chunk.len() + next.map_or(0, |next| next.len());
            if stats.entries_rewritten > 0 && stats.entries_rewritten + cost > budget {
                stats.more_work = true;
                return None;
            }
            stats.entries_rewritten += cost;
            let work = RewriteWork {
                instance: self.instance,
                older: Arc::clone(chunk),
                newer: next.cloned(),
                window,
                now_ms,
                log_starts: Arc::clone(&self.log_starts),
            };
            self.rewriting = std::iter::once(&work.older).chain(&work.newer).cloned().collect();
            return Some(work);
        }
        None
    }

    /// Installs a rewrite run without the lock, if its inputs are still where it found them and the
    /// window is the same (ids it dropped as dead are then still dead: log starts only move forward);
    /// otherwise drops it (the index changed meanwhile; a later rewrite starts again). A rewrite that
    /// kept every entry of inputs with files takes their files over
    /// (`SealedChunk::backing_from_inputs`); otherwise the inputs' files are retired. What is
    /// replaced is returned, to be freed after the lock.
    pub fn finish_rewrite_work(&mut self, done: RewriteDone) -> Rewritten {
        let mut rewritten = Rewritten { installed: false, dropped: 0, next_from: 0, freed: Vec::new() };
        if done.instance != self.instance {
            return rewritten;
        }
        // The inputs the work was handed out with (a compaction that fell back from a merge names
        // fewer).
        if self.rewriting.first().is_some_and(|held| Arc::ptr_eq(held, &done.older)) {
            self.rewriting.clear();
        }
        let inputs: Vec<&Arc<SealedChunk>> = std::iter::once(&done.older).chain(&done.newer).collect();
        let first = self.sealed.iter().position(|chunk| Arc::ptr_eq(chunk, &done.older));
        let in_place = first.is_some_and(|first| {
            inputs
                .iter()
                .enumerate()
                .all(|(step, input)| self.sealed.get(first + step).is_some_and(|chunk| Arc::ptr_eq(chunk, input)))
        });
        let (Some(first), true, true) = (first, in_place, done.window == self.config.window) else {
            return rewritten;
        };
        let consumed = first..first + inputs.len();
        // A rewrite's output takes over its inputs' files when they hold exactly its entries
        // (decided now, under the lock: a snapshot may have given an input its file while the rewrite
        // ran); otherwise the inputs' files are no longer theirs to keep, and the next snapshot
        // writes the output's own.
        let taken_over = done.rebuilt.as_ref().is_some_and(|rebuilt| {
            rebuilt
                .backing_from_inputs(&done.older, done.newer.as_deref())
                .is_some_and(|files| rebuilt.set_backing_files(files))
        });
        if !taken_over {
            let retired = self
                .sealed
                .range(consumed.clone())
                .flat_map(|chunk| chunk.files())
                .map(|file| (file.file_id, file.entries))
                .collect();
            self.retire(retired);
        }
        let kept = done.rebuilt.as_ref().map_or(0, SealedChunk::len);
        rewritten.dropped = done.total - kept;
        rewritten.freed = self.sealed.drain(consumed).collect();
        if let Some(chunk) = done.rebuilt {
            self.sealed.insert(first, Arc::new(chunk));
        }
        rewritten.installed = true;
        // A merged chunk may merge again with its new neighbour; a compacted one is done.
        rewritten.next_from = if done.newer.is_some() { first } else { first + 1 };
        rewritten
    }

    /// Gives up the rewrite that is out (it panicked): later rewrites are handed out again and
    /// spills may take its inputs.
    pub fn abandon_rewrite_work(&mut self) {
        self.rewriting.clear();
    }

    /// The frozen chunk's seal, to run without the caller's lock ([`SealWork::run`]), if one waits
    /// and none is out. Installed by [`DedupIndex::finish_seal_work`].
    pub fn next_seal_work(&mut self) -> Option<SealWork> {
        if self.sealing {
            return None;
        }
        let chunk = Arc::clone(self.frozen.as_ref()?);
        self.sealing = true;
        Some(SealWork { instance: self.instance, chunk })
    }

    /// Installs a seal run without the lock: the sealed chunk replaces the frozen one, if that is
    /// still the one sealed (a chunk filling meanwhile seals it under the lock; the seal is then
    /// dropped). Returns what is to be freed after the lock.
    pub fn finish_seal_work(&mut self, done: SealDone) -> Freed {
        let current = self.frozen.as_ref().is_some_and(|frozen| Arc::ptr_eq(frozen, &done.chunk));
        if done.instance != self.instance || !current {
            return Freed { _active: Some(done.chunk), _sealed: Some(done.sealed) };
        }
        let frozen = self.frozen.take();
        self.sealing = false;
        self.push_sealed(done.sealed);
        drop(done.chunk);
        Freed { _active: frozen, _sealed: None }
    }

    /// Ids in the frozen chunk.
    pub fn frozen_len(&self) -> usize {
        self.frozen.as_ref().map_or(0, |frozen| frozen.len())
    }

    /// An empty index whose chunks start tiny (tests only).
    #[cfg(test)]
    pub(crate) fn with_tiny_chunks(config: IndexConfig, bits_min: u32) -> DedupIndex {
        let mut index = DedupIndex::new(config);
        index.chunk_bits_min = bits_min;
        index.active = ActiveChunk::new(chunk_capacity(0, bits_min));
        // A topic filter sized for a few ids, so that rebuilds are due all the time.
        index.filter.capacity_min = 4;
        index
    }

    /// Ids stored: live, or dead and not yet freed by `expire`. Excludes pending ids.
    pub fn stored_ids(&self) -> usize {
        self.sealed.iter().map(|chunk| chunk.len()).sum::<usize>() + self.active.len() + self.frozen_len()
    }

    /// Ids reserved by writes in flight or held by open transactions.
    pub fn pending_ids(&self) -> usize {
        self.pending.len()
    }

    /// Sealed chunks (a lookup probes each, newest first, after the active chunk).
    pub fn sealed_chunks(&self) -> usize {
        self.sealed.len()
    }

    /// Heap bytes the index holds, computed from its allocations' capacities.
    pub fn approx_bytes(&self) -> usize {
        size_of::<DedupIndex>()
            + self.sealed.iter().map(|chunk| chunk.approx_bytes()).sum::<usize>()
            + self.active.approx_bytes()
            + self.frozen.as_ref().map_or(0, |frozen| frozen.approx_bytes())
            + self.pending.approx_bytes()
            + hash_map_bytes(self.transactions.capacity(), size_of::<((i32, i64), Vec<Id>)>())
            + self.transactions.values().map(|ids| ids.capacity() * size_of::<Id>()).sum::<usize>()
            + hash_map_bytes(self.log_starts.capacity(), size_of::<(i32, i64)>())
            + self.covered.len() * 2 * size_of::<(i32, i64)>()
            + self.filter.approx_bytes()
    }

    /// Ids held by open transactions, for a snapshot: (entry, producer id).
    pub(crate) fn transaction_holds(&self) -> Vec<(Entry, i64)> {
        let mut holds = Vec::new();
        for ((_, producer_id), ids) in &self.transactions {
            for id in ids {
                if let Some(Hold::Transaction { location, time_s, .. }) = self.pending.get(id) {
                    holds.push((Entry { id: *id, location, time_s }, *producer_id));
                }
            }
        }
        holds
    }

    /// Restores a hold of an open transaction (from a snapshot).
    pub(crate) fn restore_transaction_hold(&mut self, entry: Entry, producer_id: i64) -> bool {
        if !self.pending.hold_for_transaction(entry.id, producer_id, entry.location, entry.time_s) {
            return false;
        }
        self.transactions.entry((entry.location.partition, producer_id)).or_default().push(entry.id);
        true
    }
}

/// A rewrite of one resident chunk (only its live ids) or a merge of two neighbours (the live ids of
/// both), taken by [`DedupIndex::next_rewrite_work`] and run without the index's lock.
#[must_use = "a rewrite that is out keeps its inputs from spills until it is finished"]
pub struct RewriteWork {
    instance: u64,
    older: Arc<SealedChunk>,
    /// The next chunk, for a merge.
    newer: Option<Arc<SealedChunk>>,
    window: DedupWindow,
    now_ms: i64,
    log_starts: Arc<LogStarts>,
}

/// A rewrite that ran, for [`DedupIndex::finish_rewrite_work`].
pub struct RewriteDone {
    instance: u64,
    older: Arc<SealedChunk>,
    /// The merged neighbour (`None` for a compaction, or for a merge whose pair did not fit one
    /// chunk and compacted `older` only).
    newer: Option<Arc<SealedChunk>>,
    window: DedupWindow,
    /// Ids in the inputs.
    total: usize,
    /// The live ids (`None`: none were live).
    rebuilt: Option<SealedChunk>,
}

impl RewriteWork {
    /// Ids the rewrite copies (its cost).
    pub fn cost(&self) -> usize {
        self.older.len() + self.newer.as_ref().map_or(0, |newer| newer.len())
    }

    /// Copies the live ids of the inputs into one chunk. Reads nothing but the inputs (shared and
    /// immutable), so it runs without the index's lock.
    pub fn run(self) -> RewriteDone {
        let RewriteWork { instance, older, newer, window, now_ms, log_starts } = self;
        match rewrite_live(&older, newer.as_deref(), window, now_ms, &log_starts) {
            Ok((total, rebuilt)) => RewriteDone { instance, older, newer, window, total, rebuilt },
            // The pair cannot share a chunk: compact the older one only.
            Err(TooWide) => {
                let (total, rebuilt) = rewrite_live(&older, None, window, now_ms, &log_starts)
                    .expect("a chunk's own live entries fit in a chunk");
                RewriteDone { instance, older, newer: None, window, total, rebuilt }
            }
        }
    }
}

/// The live ids of `older` and of `newer` (its neighbour, or none) as one chunk, with the count of
/// ids in the inputs.
fn rewrite_live(
    older: &SealedChunk,
    newer: Option<&SealedChunk>,
    window: DedupWindow,
    now_ms: i64,
    starts: &LogStarts,
) -> Result<(usize, Option<SealedChunk>), TooWide> {
    let (newer, older) = match newer {
        Some(newer) => (newer, Some(older)),
        None => (older, None),
    };
    assert!(newer.disk().is_none() && older.is_none_or(|older| older.disk().is_none()), "rewrites are in RAM");
    let total = newer.len() + older.map_or(0, SealedChunk::len);
    Ok((total, SealedChunk::merge_resident(newer, older, window, now_ms, starts)?))
}

/// What [`DedupIndex::finish_rewrite_work`] did.
#[must_use = "the replaced chunks are to be dropped after the lock"]
pub struct Rewritten {
    /// Whether the rewrite replaced its inputs.
    pub installed: bool,
    /// Dead ids it freed.
    pub dropped: usize,
    /// Where the next rewrite may start (`from` of [`DedupIndex::next_rewrite_work`]).
    pub next_from: usize,
    freed: Vec<Arc<SealedChunk>>,
}

impl Rewritten {
    /// Frees the replaced chunks (after the index's lock: freeing hundreds of MB takes a while).
    pub fn free(self) {
        drop(self.freed);
    }
}

/// The seal of a frozen active chunk: its entries sorted into a sealed chunk without the index's lock.
#[must_use = "a seal that is out keeps others from being handed out until it is finished"]
pub struct SealWork {
    instance: u64,
    chunk: Arc<ActiveChunk>,
}

/// A seal that ran, for [`DedupIndex::finish_seal_work`].
pub struct SealDone {
    instance: u64,
    chunk: Arc<ActiveChunk>,
    sealed: SealedChunk,
}

impl SealWork {
    /// Sorts the frozen chunk's entries into a sealed chunk (reads the shared, frozen chunk only).
    pub fn run(self) -> SealDone {
        let sealed = self.chunk.seal_copy();
        SealDone { instance: self.instance, chunk: self.chunk, sealed }
    }
}

/// Memory an index let go of, to be freed after its lock ([`DedupIndex::finish_seal_work`]).
#[must_use = "dropped after the lock"]
pub struct Freed {
    _active: Option<Arc<ActiveChunk>>,
    _sealed: Option<SealedChunk>,
}
