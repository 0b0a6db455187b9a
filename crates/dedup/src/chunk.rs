//! Where stored ids live: the mutable [`ActiveChunk`] (rows in a vector, found by a hash table of
//! their positions) and immutable
//! [`SealedChunk`]s (sorted columns behind a bucket directory and a Bloom filter), 26 bytes per id
//! plus about 1 byte of directory and 1.25 of filter.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::config::DedupWindow;
use crate::disk::DiskColumns;
use crate::error::DedupError;
use crate::id::{Id, IdHashBuilder};
use crate::id_rows::{Found, IdRows, Keyed};

/// Where a stored id's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Partition index within the topic.
    pub partition: i32,
    /// Offset of the record in that partition.
    pub offset: i64,
}

/// One stored id in full, as the active chunk and snapshots hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: Id,
    pub(crate) location: Location,
    /// Batch max timestamp rounded up to whole seconds (see the crate docs).
    pub(crate) time_s: u32,
}

/// Most distinct partitions one chunk may hold: entries name theirs by a 16-bit slot.
pub(crate) const CHUNK_PARTITIONS_MAX: usize = 1 << 16;
/// Widest range of offsets of one partition in one chunk: entries store a 32-bit delta.
pub(crate) const CHUNK_OFFSET_SPAN_MAX: i64 = u32::MAX as i64;
/// Average entries per directory bucket: the directory costs 4 bytes per bucket, so about one
/// byte per id, and a lookup scans about one cache line of ids.
const ENTRIES_PER_BUCKET: usize = 4;

/// Partition liveness inputs: log start offsets, by partition. Looked up for every entry a merge
/// rewrites and every copy a lookup finds, so not with SipHash (see [`IdHashBuilder`]).
pub(crate) type LogStarts = HashMap<i32, i64, IdHashBuilder>;

/// True if an id stored at `location`/`time_s` still deduplicates at `now_ms`.
pub(crate) fn is_live(location: Location, time_s: u32, window: DedupWindow, now_ms: i64, starts: &LogStarts) -> bool {
    window.covers(time_s, now_ms) && starts.get(&location.partition).is_none_or(|start| location.offset >= *start)
}

/// Entries that do not fit in one chunk (more partitions, or an offset span wider, than its columns
/// hold).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooWide;

/// The offsets of one partition within a chunk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PartitionSpan {
    pub(crate) partition: i32,
    /// Smallest offset; entries store `offset - base_offset`.
    pub(crate) base_offset: i64,
    pub(crate) max_offset: i64,
    pub(crate) count: u32,
}

/// The newest chunk, taking inserts. Bounded: it holds at most `capacity` ids, and only what a
/// sealed chunk can represent (see [`ActiveChunk::can_take`]).
///
/// The entries are rows of 32 bytes in the order they came, behind a table of their positions
/// ([`IdRows`]): a new id's insert probes a table of about 2.6 MB at 458,752 ids, which stays in
/// cache, where a map of whole entries (40-byte slots, 21.5 MB) took a cache miss per insert.
pub(crate) struct ActiveChunk {
    rows: IdRows<Row>,
    /// (min, max) offset per partition, to keep within `CHUNK_OFFSET_SPAN_MAX`.
    ranges: HashMap<i32, (i64, i64), IdHashBuilder>,
    capacity: usize,
}

/// One entry of an active chunk: an [`Entry`] without its padding.
#[derive(Clone, Copy)]
struct Row {
    id: Id,
    offset: i64,
    partition: i32,
    time_s: u32,
}

const _: () = assert!(size_of::<Row>() == 32, "an active chunk's row is 32 bytes");

impl Row {
    fn of(entry: Entry) -> Row {
        Row { id: entry.id, offset: entry.location.offset, partition: entry.location.partition, time_s: entry.time_s }
    }

    fn entry(&self) -> Entry {
        Entry {
            id: self.id,
            location: Location { partition: self.partition, offset: self.offset },
            time_s: self.time_s,
        }
    }
}

impl Keyed for Row {
    fn id(&self) -> &Id {
        &self.id
    }
}

impl ActiveChunk {
    pub(crate) fn new(capacity: usize) -> ActiveChunk {
        assert!(capacity > 0, "an active chunk must take at least one id");
        assert!(u32::try_from(capacity).is_ok(), "an active chunk's positions fit in 32 bits");
        ActiveChunk { rows: IdRows::default(), ranges: HashMap::with_hasher(IdHashBuilder), capacity }
    }

    /// [`ActiveChunk::new`] with its table and rows allocated for `capacity` ids at once: growing
    /// them rehashes every id at each doubling of the table (up to 2^19 buckets, milliseconds under
    /// the index's lock) and copies the rows.
    pub(crate) fn allocated(capacity: usize) -> ActiveChunk {
        ActiveChunk { rows: IdRows::with_capacity(capacity), ..ActiveChunk::new(capacity) }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn get(&self, id: &Id) -> Option<(Location, u32)> {
        let row = self.rows.get(id)?;
        Some((Location { partition: row.partition, offset: row.offset }, row.time_s))
    }

    /// True if inserting `id` at `location` keeps this chunk within what sealing can represent.
    pub(crate) fn can_take(&self, id: &Id, location: Location) -> bool {
        // Replacing a dead copy in place takes no room, but the new location must still fit.
        if self.rows.len() >= self.capacity && self.rows.position(id).is_none() {
            return false;
        }
        self.fits(location)
    }

    /// True if `location` keeps its partition's offsets within a sealed chunk's span, and the
    /// partitions within its table.
    fn fits(&self, location: Location) -> bool {
        self.fits_span(location.partition, location.offset, location.offset)
    }

    /// True if offsets `low..=high` of `partition` keep its offsets within a sealed chunk's span, and
    /// the partitions within its table.
    fn fits_span(&self, partition: i32, low: i64, high: i64) -> bool {
        match self.ranges.get(&partition) {
            None => self.ranges.len() < CHUNK_PARTITIONS_MAX && high.saturating_sub(low) <= CHUNK_OFFSET_SPAN_MAX,
            Some((min, max)) => (*max).max(high).saturating_sub((*min).min(low)) <= CHUNK_OFFSET_SPAN_MAX,
        }
    }

    fn widen_range(&mut self, partition: i32, low: i64, high: i64) {
        let range = self.ranges.entry(partition).or_insert((low, high));
        *range = (range.0.min(low), range.1.max(high));
    }

    /// Inserts (or replaces a dead copy of) an id. The caller checked `can_take`.
    pub(crate) fn insert(&mut self, entry: Entry) {
        assert!(self.fits(entry.location), "active chunk insert beyond what a chunk's offsets can hold");
        self.widen_range(entry.location.partition, entry.location.offset, entry.location.offset);
        if self.rows.len() >= self.capacity {
            // Full: only a replacement in place. (An insert-or-find would make room for one more
            // slot first: a full table, allocated for exactly `capacity`, would be rehashed whole.)
            let at = self.rows.position(&entry.id).expect("a full active chunk only replaces an id it holds");
            *self.rows.at_mut(at) = Row::of(entry);
            return;
        }
        self.place(entry);
    }

    /// Inserts (or replaces dead copies of) the ids of one write to `partition` if the chunk can take
    /// them all — room for each as a new id, and their offsets within the partition's span — checked
    /// once for all of them; false, changing nothing, if it cannot (the caller then inserts them one by
    /// one, sealing the chunk when it is full).
    pub(crate) fn insert_all(&mut self, partition: i32, entries: &[Entry]) -> bool {
        let Some(low) = entries.iter().map(|entry| entry.location.offset).min() else { return true };
        let high = entries.iter().map(|entry| entry.location.offset).max().expect("not empty");
        if self.rows.len() + entries.len() > self.capacity || !self.fits_span(partition, low, high) {
            return false;
        }
        self.widen_range(partition, low, high);
        for entry in entries {
            assert_eq!(entry.location.partition, partition, "the ids of one write to one partition");
            self.place(*entry);
        }
        assert!(self.rows.len() <= self.capacity, "an active chunk holds at most its capacity");
        true
    }

    /// Puts an entry in the table and rows: in place of the id's row if it has one, else a new row
    /// (the caller made sure there is room).
    fn place(&mut self, entry: Entry) {
        if let Found::Existing(row) = self.rows.find_or_push(Row::of(entry)) {
            *row = Row::of(entry);
        }
    }

    /// The entries, in the order they first came.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry> + Clone + '_ {
        self.rows.rows().iter().map(Row::entry)
    }

    /// Sorts the entries into a sealed chunk.
    pub(crate) fn seal(self) -> SealedChunk {
        self.seal_copy()
    }

    /// [`ActiveChunk::seal`] of a shared (frozen) chunk: the same chunk, from a copy of the entries.
    pub(crate) fn seal_copy(&self) -> SealedChunk {
        SealedChunk::from_unsorted(self.entries())
    }

    /// Heap bytes of the table and rows of a chunk allocated for `capacity` ids.
    pub(crate) fn map_bytes(capacity: usize) -> usize {
        IdRows::<Row>::bytes_for(capacity)
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        size_of::<ActiveChunk>()
            + self.rows.approx_bytes()
            + hash_map_bytes(self.ranges.capacity(), size_of::<(i32, (i64, i64))>())
    }
}

/// Heap bytes of a std (hashbrown) map with `capacity` usable slots: a power-of-two number of
/// buckets, kept at most 7/8 full, each with one control byte.
pub(crate) fn hash_map_bytes(capacity: usize, slot: usize) -> usize {
    let buckets = match capacity {
        0 => 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => (capacity * 8 / 7).next_power_of_two(),
    };
    buckets * (slot + 1)
}

/// An immutable chunk: ids sorted, in columns with a directory by the ids' top bits (resident) or
/// in a file read a page at a time (on disk, `crate::disk`); either way behind a Bloom filter and
/// with its time range and partition spans in RAM.
pub(crate) struct SealedChunk {
    columns: Columns,
    /// Answers most lookups of ids the chunk does not hold without reading the columns.
    filter: Filter,
    partitions: Box<[PartitionSpan]>,
    time_min_s: u32,
    time_max_s: u32,
    /// For a resident chunk: the chunk files holding a copy of its entries, oldest first, once a
    /// snapshot wrote one and the index recorded it (`DedupIndex::finish_snapshot`, under the index's
    /// lock), or once a merge took over its inputs' files (`DedupIndex::finish_rewrite_work`). Later
    /// snapshots refer to the files instead of writing the entries again, so a snapshot costs what
    /// changed since the last one, not every resident id, and an id is written to a chunk file about
    /// once, not again after each merge. The files hold exactly the chunk's entries, each in one of
    /// them: a start that loads each file as a chunk of its own answers every lookup as this chunk
    /// does, whatever the window or log starts are by then. Set once; a chunk on disk has none (its
    /// file is its columns).
    backing: OnceLock<Box<[ChunkFile]>>,
    /// Distinct for every chunk built in this process ([`SealedChunk::serial`]).
    serial: u64,
}

/// The next [`SealedChunk::serial`].
fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A chunk file holding a resident chunk's entries, or some of them (see `SealedChunk::backing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkFile {
    pub(crate) file_id: u64,
    /// Entries the file holds.
    pub(crate) entries: usize,
}

/// Most files one resident chunk's copy may span: a merge that would pass it leaves its output to
/// be written to one file by the next snapshot instead. A start loads each file as a chunk of its
/// own, so this bounds how many more chunks than before the snapshot a restart begins with (merges
/// join them again). With merges in RAM up to 1/16 of the stored ids and sealed chunks of 458,752
/// ids, outputs stay within it up to about 58 M resident ids in one topic (fewer where chunks were
/// sealed smaller: early ones, or ones cut short by a partition or offset span).
pub(crate) const BACKING_FILES_MAX: usize = 8;

enum Columns {
    Resident(Resident),
    Disk(DiskColumns),
}

/// Bits of the regions a seal first puts its entries in (see [`SealedChunk::from_unsorted`]): 256
/// write streams, whose current lines fit in the first-level cache; a full chunk's region is about
/// 1,800 rows (57 KB), which the second step sorts within the second-level cache.
const SEAL_REGION_BITS: u32 = 8;

/// One entry as a seal sorts it: placing it touches one cache line, not one per column.
#[derive(Clone, Copy, Default)]
struct SealRow {
    id: u128,
    delta: u32,
    time_s: u32,
    slot: u16,
}

/// The columns of a chunk held in RAM: 26 bytes per id plus about one of directory.
struct Resident {
    ids: Box<[u128]>,
    offset_deltas: Box<[u32]>,
    partition_slots: Box<[u16]>,
    times_s: Box<[u32]>,
    /// `directory[b]` is the first index whose id's top `directory_bits` bits are >= b.
    directory: Box<[u32]>,
    directory_bits: u32,
}

impl SealedChunk {
    /// Builds a chunk from entries with distinct ids, in any order. Panics if they break a
    /// chunk's bounds (callers check them first: see `ActiveChunk::can_take`, `fits_in_chunk`).
    #[cfg(test)]
    pub(crate) fn from_entries(entries: Vec<Entry>) -> SealedChunk {
        SealedChunk::from_unsorted(entries.iter().copied())
    }

    /// [`SealedChunk::from_entries`] over an iterator it walks three times and copies nothing else
    /// from (a seal reads the active chunk's rows): a radix sort by the ids' top bits (ids are uniform
    /// hashes) in two steps whose writes stay in cache. The partitions' spans and the ids per region
    /// (of the top [`SEAL_REGION_BITS`] bits) are counted first; then each entry is put in its region
    /// of a buffer of rows, in the order the entries come (one write stream per region, its current
    /// line in cache); then region by region (tens of KB), the rows are put in their directory buckets in a
    /// scratch buffer, each bucket (about four ids) is sorted there, and the rows are appended to the
    /// columns. One step straight into the ids' final places took a cache miss per entry across the
    /// ~15 MB of rows of a full chunk.
    pub(crate) fn from_unsorted(entries: impl Iterator<Item = Entry> + Clone) -> SealedChunk {
        let partitions = spans_of(entries.clone());
        assert!(fits_in_chunk(&partitions), "a chunk holds at most 2^16 partitions, each spanning 2^32 offsets");
        let count: usize = partitions.iter().map(|span| span.count as usize).sum();
        assert!(u32::try_from(count).is_ok(), "a chunk holds fewer than 2^32 ids");
        let bits = directory_bits_for(count);
        let region_bits = bits.min(SEAL_REGION_BITS);
        let mut region_starts = vec![0usize; (1 << region_bits) + 1];
        entries.clone().for_each(|entry| region_starts[bucket_of(entry.id.to_u128(), region_bits) + 1] += 1);
        for region in 1..region_starts.len() {
            region_starts[region] += region_starts[region - 1];
        }
        let mut rows = vec![SealRow::default(); count];
        let mut next = region_starts.clone();
        for entry in entries {
            let id = entry.id.to_u128();
            let at = &mut next[bucket_of(id, region_bits)];
            let slot = partitions
                .binary_search_by_key(&entry.location.partition, |span| span.partition)
                .expect("every entry's partition has a span");
            let delta = entry.location.offset - partitions[slot].base_offset;
            assert!((0..=CHUNK_OFFSET_SPAN_MAX).contains(&delta), "an entry lies within its partition's span");
            rows[*at] = SealRow { id, delta: delta as u32, time_s: entry.time_s, slot: slot as u16 };
            *at += 1;
        }
        assert_eq!(next[..next.len() - 1], region_starts[1..], "the walks met the same entries");
        let mut ids = Vec::with_capacity(count);
        let mut offset_deltas = Vec::with_capacity(count);
        let mut partition_slots = Vec::with_capacity(count);
        let mut times_s = Vec::with_capacity(count);
        // Within a region, the directory buckets are those of the ids' next `bits - region_bits` bits.
        let inner_mask = (1usize << (bits - region_bits)) - 1;
        let mut bucket_starts = vec![0usize; inner_mask + 2];
        let mut bucket_next = vec![0usize; inner_mask + 2];
        let mut scratch: Vec<SealRow> = Vec::new();
        for region in region_starts.windows(2) {
            let region = &rows[region[0]..region[1]];
            bucket_starts.fill(0);
            region.iter().for_each(|row| bucket_starts[(bucket_of(row.id, bits) & inner_mask) + 1] += 1);
            for bucket in 1..bucket_starts.len() {
                bucket_starts[bucket] += bucket_starts[bucket - 1];
            }
            scratch.clear();
            scratch.resize(region.len(), SealRow::default());
            bucket_next.copy_from_slice(&bucket_starts);
            for row in region {
                let at = &mut bucket_next[bucket_of(row.id, bits) & inner_mask];
                scratch[*at] = *row;
                *at += 1;
            }
            assert_eq!(bucket_next[..bucket_next.len() - 1], bucket_starts[1..], "each row of the region placed once");
            for bucket in bucket_starts.windows(2) {
                scratch[bucket[0]..bucket[1]].sort_unstable_by_key(|row| row.id);
            }
            ids.extend(scratch.iter().map(|row| row.id));
            offset_deltas.extend(scratch.iter().map(|row| row.delta));
            partition_slots.extend(scratch.iter().map(|row| row.slot));
            times_s.extend(scratch.iter().map(|row| row.time_s));
        }
        drop(rows);
        assert_eq!(ids.len(), count, "every entry is in the columns");
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "a chunk holds its ids sorted, each once");
        SealedChunk::from_columns(ids, offset_deltas, partition_slots, times_s, partitions)
    }

    /// Builds a chunk from entries sorted by id, each id once, whose spans are `partitions`
    /// (from [`spans_of`] over the same entries). `count`, if known, sizes the columns exactly.
    pub(crate) fn from_sorted(
        entries: impl Iterator<Item = Entry>,
        partitions: Vec<PartitionSpan>,
        count: Option<usize>,
    ) -> SealedChunk {
        assert!(fits_in_chunk(&partitions), "a chunk holds at most 2^16 partitions, each spanning 2^32 offsets");
        let count = count.unwrap_or_else(|| partitions.iter().map(|span| span.count as usize).sum());
        assert!(u32::try_from(count).is_ok(), "a chunk holds fewer than 2^32 ids");
        let mut ids = Vec::with_capacity(count);
        let mut offset_deltas = Vec::with_capacity(count);
        let mut partition_slots = Vec::with_capacity(count);
        let mut times_s = Vec::with_capacity(count);
        for entry in entries {
            let id = entry.id.to_u128();
            assert!(ids.last().is_none_or(|previous| *previous < id), "a chunk holds its ids sorted, each once");
            let slot = partitions
                .binary_search_by_key(&entry.location.partition, |span| span.partition)
                .expect("every entry's partition has a span");
            let delta = entry.location.offset - partitions[slot].base_offset;
            assert!((0..=CHUNK_OFFSET_SPAN_MAX).contains(&delta), "an entry lies within its partition's span");
            ids.push(id);
            offset_deltas.push(delta as u32);
            partition_slots.push(slot as u16);
            times_s.push(entry.time_s);
        }
        assert_eq!(ids.len(), count, "the spans count every entry");
        SealedChunk::from_columns(ids, offset_deltas, partition_slots, times_s, partitions)
    }

    /// The live entries of resident chunks `newer` and `older` (if any) as one chunk, an id held by
    /// both taken from `newer`: the entries [`SealedChunk::merged_live`] streams, built from the
    /// columns directly (liveness by slot and time, no entry decoded, no partition hashed).
    /// `Ok(None)`: none is live; `Err(TooWide)`: they do not fit in one chunk (see
    /// [`fits_in_chunk`]). A merge's or compaction's output.
    pub(crate) fn merge_resident(
        newer: &SealedChunk,
        older: Option<&SealedChunk>,
        window: DedupWindow,
        now_ms: i64,
        starts: &LogStarts,
    ) -> Result<Option<SealedChunk>, TooWide> {
        // The output's partitions, by candidate slot: every input partition, sorted.
        let mut candidates: Vec<i32> = newer
            .partitions
            .iter()
            .chain(older.iter().flat_map(|older| older.partitions.iter()))
            .map(|span| span.partition)
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut newer = Side::of(newer, &candidates, window, now_ms, starts);
        let mut older = older.map(|older| Side::of(older, &candidates, window, now_ms, starts));
        let capacity = newer.ids.len() + older.as_ref().map_or(0, |older| older.ids.len());
        let mut ids: Vec<u128> = Vec::with_capacity(capacity);
        let mut offsets: Vec<i64> = Vec::with_capacity(capacity);
        let mut slots: Vec<u32> = Vec::with_capacity(capacity);
        let mut times_s: Vec<u32> = Vec::with_capacity(capacity);
        let mut spans: Vec<PartitionSpan> = candidates
            .iter()
            .map(|partition| PartitionSpan {
                partition: *partition,
                base_offset: i64::MAX,
                max_offset: i64::MIN,
                count: 0,
            })
            .collect();
        let mut push = |side: &Side, index: usize| {
            let (slot, offset) = side.slot_and_offset(index);
            let span = &mut spans[slot as usize];
            span.base_offset = span.base_offset.min(offset);
            span.max_offset = span.max_offset.max(offset);
            span.count += 1;
            ids.push(side.ids[index]);
            offsets.push(offset);
            slots.push(slot);
            times_s.push(side.times_s[index]);
        };
        // Each side's next live id, found again only after that side moved (an entry's liveness is
        // checked once, not at every step of the other side).
        let mut newer_id = newer.next_live();
        let mut older_id = older.as_mut().and_then(Side::next_live);
        loop {
            let from_older = match (newer_id, older_id) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(newer_id), Some(id)) => {
                    if id == newer_id {
                        // The newer copy wins: the older one is passed over.
                        let older = older.as_mut().expect("older has an entry");
                        older.take();
                        older_id = older.next_live();
                    }
                    id < newer_id
                }
            };
            if from_older {
                let side = older.as_mut().expect("older has an entry");
                let index = side.take();
                push(side, index);
                older_id = side.next_live();
            } else {
                let index = newer.take();
                push(&newer, index);
                newer_id = newer.next_live();
            }
        }
        if ids.is_empty() {
            return Ok(None);
        }
        // Partitions with no live entry are left out: slots renumbered.
        let mut renumbered = vec![u16::MAX; spans.len()];
        let mut kept = Vec::with_capacity(spans.len());
        for (candidate, span) in spans.iter().enumerate() {
            if span.count > 0 {
                if kept.len() == CHUNK_PARTITIONS_MAX {
                    return Err(TooWide);
                }
                renumbered[candidate] = kept.len() as u16;
                kept.push(*span);
            }
        }
        if !fits_in_chunk(&kept) {
            return Err(TooWide);
        }
        assert_eq!(
            kept.iter().map(|span| span.count as usize).sum::<usize>(),
            ids.len(),
            "the spans count every entry"
        );
        let partition_slots: Vec<u16> = slots.iter().map(|candidate| renumbered[*candidate as usize]).collect();
        drop(slots);
        let offset_deltas: Vec<u32> = offsets
            .iter()
            .zip(&partition_slots)
            .map(|(offset, slot)| {
                let delta = offset - kept[usize::from(*slot)].base_offset;
                assert!((0..=CHUNK_OFFSET_SPAN_MAX).contains(&delta), "an entry lies within its partition's span");
                delta as u32
            })
            .collect();
        drop(offsets);
        Ok(Some(SealedChunk::from_columns(ids, offset_deltas, partition_slots, times_s, kept)))
    }

    /// The chunk of these columns (equal lengths, ids sorted): its directory and filter built here.
    fn from_columns(
        ids: Vec<u128>,
        offset_deltas: Vec<u32>,
        partition_slots: Vec<u16>,
        times_s: Vec<u32>,
        partitions: Vec<PartitionSpan>,
    ) -> SealedChunk {
        assert!(
            offset_deltas.len() == ids.len() && partition_slots.len() == ids.len() && times_s.len() == ids.len(),
            "a chunk's columns are of one length"
        );
        let directory_bits = directory_bits_for(ids.len());
        let directory = build_directory(&ids, directory_bits);
        let mut filter = Filter::with_capacity(ids.len());
        ids.iter().for_each(|id| filter.insert(*id));
        SealedChunk {
            filter,
            time_min_s: times_s.iter().copied().min().unwrap_or(0),
            time_max_s: times_s.iter().copied().max().unwrap_or(0),
            columns: Columns::Resident(Resident {
                ids: ids.into_boxed_slice(),
                offset_deltas: offset_deltas.into_boxed_slice(),
                partition_slots: partition_slots.into_boxed_slice(),
                times_s: times_s.into_boxed_slice(),
                directory: directory.into_boxed_slice(),
                directory_bits,
            }),
            partitions: partitions.into_boxed_slice(),
            backing: OnceLock::new(),
            serial: next_serial(),
        }
    }

    /// A chunk whose entries are in a checked file (`crate::disk::open_chunk` builds it).
    pub(crate) fn on_disk(
        columns: DiskColumns,
        filter: Filter,
        partitions: Vec<PartitionSpan>,
        time_min_s: u32,
        time_max_s: u32,
    ) -> SealedChunk {
        SealedChunk {
            columns: Columns::Disk(columns),
            filter,
            partitions: partitions.into_boxed_slice(),
            time_min_s,
            time_max_s,
            backing: OnceLock::new(),
            serial: next_serial(),
        }
    }

    /// This chunk's number, given once in the process's life: what a [`crate::LookedUp`] tells the
    /// chunks it probed by, without keeping them alive.
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// The live entries of two id-ordered streams merged in id order, an id in both taken from
    /// `newer`: the input of a compaction or merge, streamed so no copy of the entries is made.
    pub(crate) fn merged_live<'a, E>(
        newer: impl Iterator<Item = Result<Entry, E>> + 'a,
        older: impl Iterator<Item = Result<Entry, E>> + 'a,
        live: impl Fn(&Entry) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = Result<Entry, E>> + 'a {
        let keep = move |entry: &Result<Entry, E>| entry.as_ref().map_or(true, live);
        let mut newer = newer.filter(keep).peekable();
        let mut older = older.filter(keep).peekable();
        std::iter::from_fn(move || match (newer.peek(), older.peek()) {
            (Some(Err(_)), _) => newer.next(),
            (_, Some(Err(_))) => older.next(),
            (Some(Ok(a)), Some(Ok(b))) if b.id < a.id => older.next(),
            (Some(Ok(a)), Some(Ok(b))) if b.id == a.id => {
                older.next();
                newer.next()
            }
            (Some(_), _) => newer.next(),
            (None, _) => older.next(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        match &self.columns {
            Columns::Resident(resident) => resident.ids.len(),
            Columns::Disk(disk) => disk.len(),
        }
    }

    /// The chunk's ids, if they are in RAM (sorted).
    pub(crate) fn resident_ids(&self) -> Option<&[u128]> {
        match &self.columns {
            Columns::Resident(resident) => Some(&resident.ids),
            Columns::Disk(_) => None,
        }
    }

    /// The chunk's file, if its entries are on disk.
    pub(crate) fn disk(&self) -> Option<&DiskColumns> {
        match &self.columns {
            Columns::Resident(_) => None,
            Columns::Disk(disk) => Some(disk),
        }
    }

    /// Records that chunk file `file_id` holds a copy of this resident chunk's entries, exactly
    /// (written and fsynced, its name, trailer and length checked: `crate::disk::check_written`).
    /// Returns false, changing nothing, if the chunk is on disk or already has files.
    pub(crate) fn set_backing(&self, file_id: u64) -> bool {
        self.set_backing_files(Box::new([ChunkFile { file_id, entries: self.len() }]))
    }

    /// Records that `files` (oldest first) together hold exactly this resident chunk's entries: a
    /// rewrite's output taking over its inputs' files (see [`SealedChunk::backing_from_inputs`]).
    /// Returns false, changing nothing, if the chunk is on disk or already has files.
    pub(crate) fn set_backing_files(&self, files: Box<[ChunkFile]>) -> bool {
        if self.disk().is_some() {
            return false;
        }
        assert!(!files.is_empty() && files.len() <= BACKING_FILES_MAX, "a chunk's copy spans 1 to 8 files");
        let entries: usize = files.iter().map(|file| file.entries).sum();
        assert_eq!(entries, self.len(), "a chunk's files hold its entries, each once");
        self.backing.set(files).is_ok()
    }

    /// The files a rewrite of resident `older` (merged with `newer`, its newer neighbour, if any) into
    /// `self` may take over as its backing: the inputs' files, oldest first, if every input has
    /// files, together they are few enough ([`BACKING_FILES_MAX`]), and the rewrite kept every entry
    /// of its inputs (none dead, no id in both): then the files hold exactly the output's entries (a
    /// merge's, or a compaction's that found nothing to drop, as when a pair too wide for one chunk
    /// falls back to compacting the older one). A rewrite that dropped any id leaves its output to
    /// the next snapshot, so that a start never brings back an id a rewrite dropped (a window widened
    /// since could make it live again).
    pub(crate) fn backing_from_inputs(
        &self,
        older: &SealedChunk,
        newer: Option<&SealedChunk>,
    ) -> Option<Box<[ChunkFile]>> {
        let inputs = std::iter::once(older).chain(newer);
        if self.disk().is_some() || inputs.clone().any(|input| input.disk().is_some()) {
            return None;
        }
        let mut files = Vec::new();
        for input in inputs.clone() {
            files.extend_from_slice(input.backing.get()?);
        }
        let entries: usize = files.iter().map(|file| file.entries).sum();
        assert_eq!(
            entries,
            inputs.map(SealedChunk::len).sum::<usize>(),
            "an input's files hold its entries, each once"
        );
        assert!(entries >= self.len(), "a rewrite's output holds no entry its inputs did not");
        (files.len() <= BACKING_FILES_MAX && entries == self.len()).then(|| files.into_boxed_slice())
    }

    /// Whether a chunk file holds this chunk's entries: its columns (on disk), or a backing.
    pub(crate) fn has_file(&self) -> bool {
        self.disk().is_some() || self.backing.get().is_some()
    }

    /// The chunk files that hold this chunk's entries: its columns' file for a chunk on disk, the
    /// copy a snapshot wrote or a merge took over for a resident one (if any), oldest first. A file
    /// a chunk has is retired when the chunk leaves the index (unless a merge takes it over), and
    /// kept at start while the loaded snapshot refers to it.
    pub(crate) fn files(&self) -> Vec<ChunkFile> {
        match &self.columns {
            Columns::Resident(_) => self.backing.get().map(|files| files.to_vec()).unwrap_or_default(),
            Columns::Disk(disk) => vec![ChunkFile { file_id: disk.file_id, entries: disk.len() }],
        }
    }

    /// The one chunk file holding exactly this chunk's entries, if there is one: its columns' file,
    /// or a resident chunk's one-file backing that holds nothing else (a spill can open it as the
    /// chunk's columns).
    pub(crate) fn file_id(&self) -> Option<u64> {
        match &self.columns {
            Columns::Resident(_) => match self.backing.get().map(|files| &files[..]) {
                Some([file]) if file.entries == self.len() => Some(file.file_id),
                _ => None,
            },
            Columns::Disk(disk) => Some(disk.file_id),
        }
    }

    /// The stored location and time of `id`, if this chunk holds it (live or not). Only a chunk
    /// on disk can fail (a read error or a page whose checksum does not match).
    pub(crate) fn get(&self, id: &Id) -> Result<Option<(Location, u32)>, DedupError> {
        let id = id.to_u128();
        if !self.filter.may_contain(id) {
            return Ok(None);
        }
        match &self.columns {
            Columns::Resident(resident) => Ok(resident.get(id).map(|index| self.entry_at(resident, index))),
            Columns::Disk(disk) => Ok(disk.get(id)?.map(|entry| (entry.location, entry.time_s))),
        }
    }

    fn entry_at(&self, resident: &Resident, index: usize) -> (Location, u32) {
        let span = &self.partitions[resident.partition_slots[index] as usize];
        let location =
            Location { partition: span.partition, offset: span.base_offset + i64::from(resident.offset_deltas[index]) };
        (location, resident.times_s[index])
    }

    /// Every entry, in id order (read from the file for a chunk on disk, a page at a time).
    pub(crate) fn entries(&self) -> Box<dyn Iterator<Item = Result<Entry, DedupError>> + '_> {
        match &self.columns {
            Columns::Resident(resident) => Box::new((0..resident.ids.len()).map(move |index| {
                let (location, time_s) = self.entry_at(resident, index);
                Ok(Entry { id: Id::from_u128(resident.ids[index]), location, time_s })
            })),
            Columns::Disk(disk) => Box::new(disk.entries()),
        }
    }

    #[cfg(test)]
    pub(crate) fn partitions(&self) -> &[PartitionSpan] {
        &self.partitions
    }

    /// True if no entry can be live: all older than the window, or all below log start.
    pub(crate) fn is_fully_dead(&self, window: DedupWindow, now_ms: i64, starts: &LogStarts) -> bool {
        !window.covers(self.time_max_s, now_ms) || self.partitions.iter().all(|span| span_dead(span, starts))
    }

    /// Estimated dead entries, from the metadata alone: whole partitions below their log
    /// start, plus, for a chunk straddling the window's edge, the share of its time range past
    /// the edge (ids become live in roughly time order, so this tracks the truth).
    pub(crate) fn dead_estimate(&self, window: DedupWindow, now_ms: i64, starts: &LogStarts) -> usize {
        if !window.covers(self.time_max_s, now_ms) {
            return self.len();
        }
        let below_start: u64 =
            self.partitions.iter().filter(|span| span_dead(span, starts)).map(|span| u64::from(span.count)).sum();
        let expired = match window {
            DedupWindow::Duration { window_ms } if !window.covers(self.time_min_s, now_ms) => {
                // Entries with time_s <= cutoff_s are past the window.
                let cutoff_s = (now_ms - window_ms).div_euclid(1000);
                let past = (cutoff_s - i64::from(self.time_min_s) + 1) as u64;
                let range = u64::from(self.time_max_s - self.time_min_s) + 1;
                (self.len() as u64 * past.min(range)).div_ceil(range)
            }
            _ => 0,
        };
        below_start.max(expired) as usize
    }

    /// Bytes of RAM the chunk holds: everything for a resident chunk; the filter, fences and spans
    /// (about 1.4 bytes per id) for a chunk on disk.
    pub(crate) fn approx_bytes(&self) -> usize {
        let columns = match &self.columns {
            Columns::Resident(resident) => {
                resident.ids.len() * (size_of::<u128>() + size_of::<u32>() + size_of::<u16>() + size_of::<u32>())
                    + resident.directory.len() * size_of::<u32>()
            }
            Columns::Disk(disk) => disk.fence_bytes() + disk.path.as_os_str().len(),
        };
        size_of::<SealedChunk>()
            + columns
            + self.filter.blocks.len() * size_of::<FilterBlock>()
            + self.partitions.len() * size_of::<PartitionSpan>()
    }
}

impl Resident {
    fn bucket(&self, id: u128) -> usize {
        bucket_of(id, self.directory_bits)
    }

    /// The index of `id` in the columns, if present.
    fn get(&self, id: u128) -> Option<usize> {
        let bucket = self.bucket(id);
        let start = self.directory[bucket] as usize;
        let end = self.directory[bucket + 1] as usize;
        // About four ids per bucket: a linear scan beats a binary search.
        let found = self.ids[start..end].iter().position(|candidate| *candidate == id)?;
        Some(start + found)
    }
}

/// Bits of a sealed chunk's filter per id: with six bits set per id inside one 512-bit block, 10
/// bits (1.25 bytes) answer about 99 lookups in 100 of ids the chunk does not hold.
const FILTER_BITS_PER_ID: usize = 10;
const FILTER_PROBES: u32 = 6;

/// One cache line of a filter.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct FilterBlock([u64; 8]);

/// A blocked Bloom filter over a sealed chunk's ids. A new id is looked up in every chunk and found
/// in none; the filter turns each such probe into one cache line read (the block), where the
/// directory and the bucket of ids would take two or three. Ids are uniform hashes, so the block
/// comes from their high 64 bits (ids inserted in order fill the blocks in order) and the six bit
/// positions from their low 64 bits.
pub(crate) struct Filter {
    blocks: Box<[FilterBlock]>,
}

impl Filter {
    /// An empty filter sized for `count` ids.
    pub(crate) fn with_capacity(count: usize) -> Filter {
        let blocks = (count * FILTER_BITS_PER_ID).div_ceil(512).max(1);
        Filter { blocks: vec![FilterBlock::default(); blocks].into_boxed_slice() }
    }

    pub(crate) fn insert(&mut self, id: u128) {
        let count = self.blocks.len();
        let block = &mut self.blocks[Filter::block_of(id, count)].0;
        for (word, mask) in Filter::bits_of(id) {
            block[word] |= mask;
        }
    }

    /// False only if `id` was not among the ids the filter was built from.
    fn may_contain(&self, id: u128) -> bool {
        let block = &self.blocks[Filter::block_of(id, self.blocks.len())].0;
        Filter::bits_of(id).all(|(word, mask)| block[word] & mask != 0)
    }

    /// The block of `id`: its high 64 bits scaled to the block count (no division). The high bits,
    /// so that ids inserted in id order (a seal, a merge, a load, a topic filter rebuild: a chunk's
    /// ids are sorted) sweep the blocks in order, one pass the prefetcher follows, instead of a
    /// cache miss per id.
    pub(crate) fn block_of(id: u128, blocks: usize) -> usize {
        ((u128::from((id >> 64) as u64) * blocks as u128) >> 64) as usize
    }

    /// The (word, mask) of each of the id's bits in its block: nine bits of position each, from the
    /// low 64 bits (independent of the block's: the id is a cryptographic hash).
    pub(crate) fn bits_of(id: u128) -> impl Iterator<Item = (usize, u64)> {
        let low = id as u64;
        (0..FILTER_PROBES).map(move |probe| {
            let bit = (low >> (9 * probe)) & 511;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }
}

/// One input of [`SealedChunk::merge_resident`]: its columns, the next entry to look at, and per
/// slot the output's candidate slot, the base offset and the smallest delta still live (log start).
struct Side<'a> {
    ids: &'a [u128],
    offset_deltas: &'a [u32],
    partition_slots: &'a [u16],
    times_s: &'a [u32],
    /// By input slot: (candidate slot, base offset, smallest live delta).
    slots: Vec<(u32, i64, i64)>,
    window: DedupWindow,
    now_ms: i64,
    at: usize,
}

impl<'a> Side<'a> {
    /// Panics if `chunk` is on disk (rewrites in RAM take resident chunks only).
    fn of(
        chunk: &'a SealedChunk,
        candidates: &[i32],
        window: DedupWindow,
        now_ms: i64,
        starts: &LogStarts,
    ) -> Side<'a> {
        let Columns::Resident(resident) = &chunk.columns else { panic!("a rewrite in RAM takes resident chunks") };
        let slots = chunk
            .partitions
            .iter()
            .map(|span| {
                let candidate =
                    candidates.binary_search(&span.partition).expect("every input partition is a candidate");
                // An entry is live past the log start: base + delta >= start.
                let live_from = starts.get(&span.partition).map_or(i64::MIN, |start| start - span.base_offset);
                (candidate as u32, span.base_offset, live_from)
            })
            .collect();
        Side {
            ids: &resident.ids,
            offset_deltas: &resident.offset_deltas,
            partition_slots: &resident.partition_slots,
            times_s: &resident.times_s,
            slots,
            window,
            now_ms,
            at: 0,
        }
    }

    /// The id of the next live entry (passing over dead ones), if any; [`Side::take`] takes it.
    fn next_live(&mut self) -> Option<u128> {
        while self.at < self.ids.len() {
            let slot = self.slots[usize::from(self.partition_slots[self.at])];
            if self.window.covers(self.times_s[self.at], self.now_ms)
                && i64::from(self.offset_deltas[self.at]) >= slot.2
            {
                return Some(self.ids[self.at]);
            }
            self.at += 1;
        }
        None
    }

    /// The index of the entry [`Side::next_live`] found, moving past it.
    fn take(&mut self) -> usize {
        assert!(self.at < self.ids.len(), "take follows a next_live that found an entry");
        self.at += 1;
        self.at - 1
    }

    /// The candidate slot and the whole offset of entry `index`.
    fn slot_and_offset(&self, index: usize) -> (u32, i64) {
        let (candidate, base, _) = self.slots[usize::from(self.partition_slots[index])];
        (candidate, base + i64::from(self.offset_deltas[index]))
    }
}

fn span_dead(span: &PartitionSpan, starts: &LogStarts) -> bool {
    starts.get(&span.partition).is_some_and(|start| span.max_offset < *start)
}

/// The partition spans of `entries`, sorted by partition.
pub(crate) fn spans_of(entries: impl IntoIterator<Item = Entry>) -> Vec<PartitionSpan> {
    let mut by_partition: HashMap<i32, PartitionSpan, IdHashBuilder> = HashMap::with_hasher(IdHashBuilder);
    for entry in entries {
        let Location { partition, offset } = entry.location;
        let span = by_partition.entry(partition).or_insert(PartitionSpan {
            partition,
            base_offset: offset,
            max_offset: offset,
            count: 0,
        });
        span.base_offset = span.base_offset.min(offset);
        span.max_offset = span.max_offset.max(offset);
        span.count += 1;
    }
    let mut spans: Vec<PartitionSpan> = by_partition.into_values().collect();
    spans.sort_unstable_by_key(|span| span.partition);
    spans
}

/// True if entries with these spans fit in one sealed chunk.
pub(crate) fn fits_in_chunk(spans: &[PartitionSpan]) -> bool {
    spans.len() <= CHUNK_PARTITIONS_MAX
        && spans.iter().all(|span| span.max_offset.saturating_sub(span.base_offset) <= CHUNK_OFFSET_SPAN_MAX)
}

/// Bits of the directory of a chunk of `count` ids (about [`ENTRIES_PER_BUCKET`] ids a bucket).
fn directory_bits_for(count: usize) -> u32 {
    (count / ENTRIES_PER_BUCKET).max(1).ilog2()
}

fn build_directory(ids: &[u128], bits: u32) -> Vec<u32> {
    let buckets = 1usize << bits;
    let mut directory = Vec::with_capacity(buckets + 1);
    let mut index = 0usize;
    for bucket in 0..buckets {
        while index < ids.len() && bucket_of(ids[index], bits) < bucket {
            index += 1;
        }
        directory.push(index as u32);
    }
    directory.push(ids.len() as u32);
    directory
}

fn bucket_of(id: u128, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (id >> (128 - bits)) as usize
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(index: u32) -> Id {
        Id::of(&index.to_be_bytes())
    }

    fn entry(index: u32, partition: i32, offset: i64) -> Entry {
        Entry { id: id(index), location: Location { partition, offset }, time_s: index }
    }

    /// Entries with distinct ids among `0..64` (so that two such sets share ids), on partitions 0-2.
    fn entries_strategy() -> impl Strategy<Value = Vec<Entry>> {
        proptest::collection::btree_map(0u32..64, (0i32..3, 0i64..100, 0u32..10), 1..40).prop_map(|by_id| {
            by_id
                .into_iter()
                .map(|(index, (partition, offset, time_s))| Entry {
                    id: id(index),
                    location: Location { partition, offset },
                    time_s,
                })
                .collect()
        })
    }

    fn entries_of(chunk: &SealedChunk) -> Vec<Entry> {
        chunk.entries().map(|entry| entry.expect("resident")).collect()
    }

    proptest! {
        /// The active chunk answers as a map of its entries would: each insert of an id it holds
        /// replaces that id's entry in place (a dead copy replaced), a new id appends one, `get` finds
        /// the last entry inserted for an id and nothing for others, `entries` lists each id once, and
        /// a full chunk still replaces in place. Allocated up front or grown, the same. Writes go in
        /// whole (`insert_all`) exactly when each id could go in as a new one and their offsets fit the
        /// span, else one by one as the index does.
        #[test]
        fn active_chunk_answers_as_a_map_of_its_entries(
            writes in proptest::collection::vec(
                (0i32..3, proptest::collection::vec((0u32..48, 0i64..100), 1..6), any::<bool>()),
                0..40,
            ),
            capacity in 1usize..40,
            allocated in any::<bool>(),
            far in any::<bool>(),
        ) {
            let mut chunk = match allocated {
                true => ActiveChunk::allocated(capacity),
                false => ActiveChunk::new(capacity),
            };
            let mut model: HashMap<Id, (Location, u32)> = HashMap::new();
            let mut spans: HashMap<i32, (i64, i64)> = HashMap::new();
            for (partition, ids, whole) in writes {
                // Some writes far beyond the span, so that `insert_all` is refused for it too.
                let offset_of = |offset: i64| if far && partition == 2 { offset * (CHUNK_OFFSET_SPAN_MAX / 50) } else { offset };
                let entries: Vec<Entry> = ids
                    .iter()
                    .map(|(number, offset)| Entry {
                        id: id(*number),
                        location: Location { partition, offset: offset_of(*offset) },
                        time_s: number + 7,
                    })
                    .collect();
                if whole {
                    let low = entries.iter().map(|entry| entry.location.offset).min().expect("not empty");
                    let high = entries.iter().map(|entry| entry.location.offset).max().expect("not empty");
                    let (min, max) = spans.get(&partition).copied().unwrap_or((low, high));
                    let fits = max.max(high) - min.min(low) <= CHUNK_OFFSET_SPAN_MAX;
                    let room = model.len() + entries.len() <= capacity;
                    let before: Vec<Entry> = chunk.entries().collect();
                    let taken = chunk.insert_all(partition, &entries);
                    prop_assert_eq!(taken, fits && room);
                    if taken {
                        for entry in &entries {
                            model.insert(entry.id, (entry.location, entry.time_s));
                        }
                        spans.insert(partition, (min.min(low), max.max(high)));
                    } else {
                        prop_assert_eq!(chunk.entries().collect::<Vec<_>>(), before, "a refused write changes nothing");
                    }
                    prop_assert_eq!(chunk.len(), model.len());
                    continue;
                }
                for entry in entries {
                    let (min, max) = spans.get(&partition).copied().unwrap_or((entry.location.offset, entry.location.offset));
                    let offset = entry.location.offset;
                    let span_fits = max.max(offset) - min.min(offset) <= CHUNK_OFFSET_SPAN_MAX;
                    let fits = (model.contains_key(&entry.id) || model.len() < capacity) && span_fits;
                    prop_assert_eq!(chunk.can_take(&entry.id, entry.location), fits);
                    if fits {
                        chunk.insert(entry);
                        model.insert(entry.id, (entry.location, entry.time_s));
                        spans.insert(partition, (min.min(offset), max.max(offset)));
                    }
                    prop_assert_eq!(chunk.len(), model.len());
                }
            }
            for number in 0u32..64 {
                prop_assert_eq!(chunk.get(&id(number)), model.get(&id(number)).copied());
            }
            let listed: HashMap<Id, (Location, u32)> =
                chunk.entries().map(|entry| (entry.id, (entry.location, entry.time_s))).collect();
            prop_assert_eq!(chunk.entries().count(), model.len(), "each id listed once");
            prop_assert_eq!(listed, model.clone());
            let sealed = chunk.seal();
            prop_assert_eq!(sealed.len(), model.len());
            for (id, found) in &model {
                prop_assert_eq!(sealed.get(id).expect("resident"), Some(*found));
            }
        }

        /// The column merge keeps exactly what the streamed merge (the spill's) keeps, the newer copy
        /// of an id in both, with exact partition spans; and it refuses exactly the merges whose live
        /// entries do not fit in one chunk. With `far`, partition 0's offsets in the newer chunk lie
        /// 2^32 beyond the older one's: the inputs together span more than a chunk may, so whether
        /// they fit depends on which entries are live (the older ones die below a log start).
        #[test]
        fn merge_resident_keeps_what_merged_live_keeps(
            newer in entries_strategy(),
            older in entries_strategy(),
            merge in any::<bool>(),
            far in any::<bool>(),
            window_ms in proptest::option::of(0i64..10_000),
            now_ms in 0i64..12_000,
            starts in proptest::collection::hash_map(0i32..3, 0i64..100, 0..3),
        ) {
            let window = window_ms.map_or(DedupWindow::Retention, |window_ms| DedupWindow::Duration { window_ms });
            let starts: LogStarts = starts.into_iter().collect();
            let newer: Vec<Entry> = newer
                .into_iter()
                .map(|mut entry| {
                    if far && entry.location.partition == 0 {
                        entry.location.offset += CHUNK_OFFSET_SPAN_MAX;
                    }
                    entry
                })
                .collect();
            let (newer, older) = (SealedChunk::from_entries(newer), SealedChunk::from_entries(older));
            let older = merge.then_some(&older);
            let live = |entry: &Entry| is_live(entry.location, entry.time_s, window, now_ms, &starts);
            let older_entries = older.into_iter().flat_map(|older| older.entries());
            let expected: Vec<Entry> = SealedChunk::merged_live(newer.entries(), older_entries, live)
                .map(|entry| entry.expect("resident"))
                .collect();
            let spans = spans_of(expected.iter().copied());
            let merged = SealedChunk::merge_resident(&newer, older, window, now_ms, &starts);
            match merged {
                Err(TooWide) => prop_assert!(!fits_in_chunk(&spans), "refused though its live entries fit"),
                Ok(None) => prop_assert!(expected.is_empty()),
                Ok(Some(merged)) => {
                    prop_assert!(fits_in_chunk(&spans));
                    prop_assert_eq!(entries_of(&merged), expected.clone());
                    let spans: Vec<_> = spans.iter().map(|span| (span.partition, span.base_offset, span.max_offset, span.count)).collect();
                    let got: Vec<_> = merged.partitions().iter().map(|span| (span.partition, span.base_offset, span.max_offset, span.count)).collect();
                    prop_assert_eq!(got, spans);
                    for index in 0..64 {
                        let found = merged.get(&id(index)).expect("resident");
                        let entry = expected.iter().find(|entry| entry.id == id(index));
                        prop_assert_eq!(found, entry.map(|entry| (entry.location, entry.time_s)), "id {}", index);
                    }
                }
            }
        }

        /// The bucketed seal builds the chunk that sorting the entries builds.
        #[test]
        fn from_unsorted_builds_what_a_sort_builds(entries in entries_strategy(), seed in any::<u64>()) {
            let mut shuffled = entries.clone();
            let mut state = seed | 1;
            for index in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(index, (state % (index as u64 + 1)) as usize);
            }
            let chunk = SealedChunk::from_unsorted(shuffled.iter().copied());
            let mut sorted = entries;
            sorted.sort_unstable_by_key(|entry| entry.id);
            let spans = spans_of(sorted.iter().copied());
            let reference = SealedChunk::from_sorted(sorted.clone().into_iter(), spans, None);
            prop_assert_eq!(entries_of(&chunk), sorted);
            for entry in entries_of(&reference) {
                prop_assert_eq!(chunk.get(&entry.id).expect("resident"), Some((entry.location, entry.time_s)));
            }
        }
    }

    #[test]
    fn a_merge_takes_over_its_inputs_files_only_if_both_have_few_enough_and_it_dropped_none() {
        let chunk =
            |range: std::ops::Range<u32>| SealedChunk::from_entries(range.map(|n| entry(n, 0, n.into())).collect());
        let files = |chunk: &SealedChunk| chunk.files().iter().map(|file| file.file_id).collect::<Vec<_>>();
        let merge = |older: &SealedChunk, newer: &SealedChunk, start: i64| {
            let starts: LogStarts = [(0, start)].into_iter().collect();
            SealedChunk::merge_resident(newer, Some(older), DedupWindow::Retention, 0, &starts)
                .expect("fits")
                .expect("some live")
        };
        let (older, newer) = (chunk(0..100), chunk(100..200));
        assert!(merge(&older, &newer, 0).backing_from_inputs(&older, Some(&newer)).is_none(), "neither has a file");
        let filed = chunk(100..200);
        assert!(filed.set_backing(5));
        let unfiled_older = merge(&older, &filed, 0).backing_from_inputs(&older, Some(&filed));
        assert!(unfiled_older.is_none(), "the older one has none");
        assert!(older.set_backing(7));
        let unfiled_newer = merge(&older, &newer, 0).backing_from_inputs(&older, Some(&newer));
        assert!(unfiled_newer.is_none(), "the newer one has none");
        assert!(newer.set_backing(9));
        let merged = merge(&older, &newer, 0);
        let taken = merged.backing_from_inputs(&older, Some(&newer)).expect("both have files");
        assert!(merged.set_backing_files(taken));
        assert_eq!(files(&merged), vec![7, 9], "the inputs' files, oldest first");
        assert_eq!(merged.file_id(), None, "two files are not one chunk file a spill could open");
        assert!(!merged.set_backing(11), "set once");
        // One id dropped as dead (below log start) is one too many; so is an id in both inputs.
        assert!(merge(&older, &newer, 1).backing_from_inputs(&older, Some(&newer)).is_none(), "an id dropped");
        let again = chunk(99..199);
        assert!(again.set_backing(10));
        assert!(merge(&older, &again, 0).backing_from_inputs(&older, Some(&again)).is_none(), "id 99 in both");
        // A compaction that dropped nothing (a pair too wide for one chunk falls back to one) keeps
        // its input's files; one that dropped an id does not.
        let compact = |start: i64| {
            let starts: LogStarts = [(0, start)].into_iter().collect();
            SealedChunk::merge_resident(&older, None, DedupWindow::Retention, 0, &starts).expect("fits").expect("live")
        };
        assert_eq!(
            compact(0).backing_from_inputs(&older, None).as_deref(),
            Some(&[ChunkFile { file_id: 7, entries: 100 }][..])
        );
        assert!(compact(1).backing_from_inputs(&older, None).is_none(), "an id dropped");
        // Eight files at most.
        let wide = chunk(200..298);
        let seven: Box<[ChunkFile]> = (20..27).map(|file_id| ChunkFile { file_id, entries: 14 }).collect();
        assert!(wide.set_backing_files(seven));
        let merged = merge(&older, &wide, 0);
        assert_eq!(merged.backing_from_inputs(&older, Some(&wide)).map(|files| files.len()), Some(8));
        let eight = chunk(300..404);
        assert!(eight.set_backing_files((30..38).map(|file_id| ChunkFile { file_id, entries: 13 }).collect()));
        assert!(merge(&older, &eight, 0).backing_from_inputs(&older, Some(&eight)).is_none(), "nine files");
    }

    #[test]
    fn sealed_chunk_finds_every_entry_and_nothing_else() {
        for count in [0u32, 1, 3, 4, 9, 1000, 40_000] {
            let entries: Vec<Entry> =
                (0..count).map(|index| entry(index, (index % 7) as i32, i64::from(index) * 3)).collect();
            let chunk = SealedChunk::from_entries(entries.clone());
            assert_eq!(chunk.len(), count as usize);
            for expected in &entries {
                assert_eq!(chunk.get(&expected.id).expect("resident"), Some((expected.location, expected.time_s)));
            }
            for absent in count..count + 100 {
                assert_eq!(chunk.get(&Id::of(&absent.to_be_bytes())).expect("resident"), None);
            }
            let mut back: Vec<Entry> = chunk.entries().collect::<Result<_, _>>().expect("resident");
            back.sort_unstable_by_key(|entry| entry.time_s);
            assert_eq!(back, entries);
        }
    }

    #[test]
    fn sealed_chunk_costs_about_28_bytes_per_id() {
        let chunk = SealedChunk::from_entries((0..100_000).map(|index| entry(index, 0, i64::from(index))).collect());
        let per_id = chunk.approx_bytes() as f64 / chunk.len() as f64;
        assert!(per_id <= 29.5, "{per_id} bytes per id");
        assert!(per_id >= 27.25, "{per_id} bytes per id: the columns and the filter alone take 27.25");
    }

    #[test]
    fn the_filter_never_misses_and_rarely_lies() {
        let chunk = SealedChunk::from_entries((0..100_000).map(|index| entry(index, 0, i64::from(index))).collect());
        for index in 0..100_000 {
            assert!(chunk.filter.may_contain(id(index).to_u128()), "a held id always passes the filter");
        }
        let false_positives = (100_000..300_000).filter(|index| chunk.filter.may_contain(id(*index).to_u128())).count();
        let rate = false_positives as f64 / 200_000.0;
        assert!(rate < 0.025, "false positive rate {rate}");
        assert!(
            (100_000..300_000).all(|index| chunk.get(&id(index)).expect("resident").is_none()),
            "and a false positive finds nothing"
        );
    }

    /// Chunks of many directory buckets (up to 2^14), from unsorted entries of several partitions,
    /// come out as a sort of their entries builds them.
    #[test]
    fn large_chunks_from_unsorted_entries_are_built_as_sorted_ones() {
        for count in [1_023u32, 1_024, 1_025, 2_047, 2_048, 4_100, 70_001] {
            let entries: Vec<Entry> =
                (0..count).map(|number| entry(number, (number % 5) as i32, i64::from(number) * 3)).collect();
            let chunk = SealedChunk::from_unsorted(entries.iter().copied());
            let mut sorted = entries.clone();
            sorted.sort_unstable_by_key(|entry| entry.id);
            assert_eq!(entries_of(&chunk), sorted, "{count} entries");
            let spans = spans_of(sorted.iter().copied());
            let reference = SealedChunk::from_sorted(sorted.iter().copied(), spans, None);
            assert_eq!(entries_of(&reference), sorted);
            assert_eq!(chunk.partitions().len(), reference.partitions().len());
            for entry in &sorted {
                assert_eq!(chunk.get(&entry.id).expect("resident"), Some((entry.location, entry.time_s)));
            }
            for absent in count..count + 2_000 {
                assert_eq!(chunk.get(&id(absent)).expect("resident"), None, "{count} entries: {absent} is not held");
            }
        }
    }

    /// A full chunk (allocated for its capacity, as the index allocates one once it holds that many
    /// ids) replaces a dead copy in place without growing its table: making room for one more slot
    /// would rehash every id of it.
    #[test]
    fn a_full_active_chunk_replaces_in_place_without_growing() {
        let capacity = 458_752;
        let mut chunk = ActiveChunk::allocated(capacity);
        chunk.insert(entry(0, 0, 0));
        let allocated = chunk.approx_bytes();
        for number in 1..capacity as u32 {
            chunk.insert(entry(number, 0, i64::from(number)));
        }
        assert_eq!(chunk.approx_bytes(), allocated, "filled without growing");
        assert!(chunk.can_take(&id(5), Location { partition: 0, offset: 9 }), "a full chunk replaces an id it holds");
        chunk.insert(entry(5, 0, 9));
        assert_eq!(chunk.get(&id(5)), Some((Location { partition: 0, offset: 9 }, 5)), "replaced");
        assert_eq!(chunk.approx_bytes(), allocated, "replaced without growing");
        assert_eq!(chunk.len(), capacity);
    }

    /// A seal at the size of a full chunk (16 bits of directory: 8 of regions, 8 within each), and of
    /// ids that crowd into one region or one bucket, builds what a sort builds.
    #[test]
    fn seals_of_full_and_of_crowded_chunks_are_built_as_sorted_ones() {
        let full: Vec<Entry> =
            (0..458_752u32).map(|number| entry(number, (number % 7) as i32, number.into())).collect();
        let crowded = |top: u128, shift: u32| -> Vec<Entry> {
            (0..20_000u128)
                .map(|number| Entry {
                    id: Id::from_u128(top | (number.wrapping_mul(0x9E37_79B9_7F4A_7C15) << shift >> shift)),
                    location: Location { partition: 1, offset: number as i64 },
                    time_s: number as u32,
                })
                .collect()
        };
        // All in region 0xab (top 8 bits equal); all in one directory bucket (top 64 bits equal);
        // small ids (top bits zero), given in descending order.
        let one_region = crowded(0xab << 120, 8);
        let one_bucket = crowded(u128::MAX << 64, 64);
        let small: Vec<Entry> = (0..20_000u128)
            .rev()
            .map(|number| Entry {
                id: Id::from_u128(number),
                location: Location { partition: 0, offset: 0 },
                time_s: 0,
            })
            .collect();
        for (name, entries) in
            [("full", full), ("one region", one_region), ("one bucket", one_bucket), ("small", small)]
        {
            let chunk = SealedChunk::from_unsorted(entries.iter().copied());
            let mut sorted = entries.clone();
            sorted.sort_unstable_by_key(|entry| entry.id);
            assert_eq!(entries_of(&chunk), sorted, "{name}");
            for entry in sorted.iter().step_by(97) {
                assert_eq!(chunk.get(&entry.id).expect("resident"), Some((entry.location, entry.time_s)), "{name}");
            }
        }
    }

    #[test]
    fn active_chunk_refuses_what_a_sealed_chunk_cannot_hold() {
        let mut active = ActiveChunk::new(2);
        let first = entry(1, 0, 0);
        active.insert(first);
        let too_far = Location { partition: 0, offset: CHUNK_OFFSET_SPAN_MAX + 1 };
        assert!(!active.can_take(&Id::of(b"x"), too_far));
        assert!(active.can_take(&Id::of(b"x"), Location { partition: 0, offset: CHUNK_OFFSET_SPAN_MAX }));
        active.insert(entry(2, 1, 5));
        assert!(!active.can_take(&Id::of(b"y"), Location { partition: 0, offset: 1 }), "full");
        assert!(active.can_take(&first.id, first.location), "a full chunk can still replace an id in place");
        assert!(!active.can_take(&first.id, too_far), "but not move it beyond the offset span");
        let sealed = active.seal();
        assert_eq!(sealed.len(), 2);
        assert_eq!(sealed.partitions().len(), 2);
    }

    #[test]
    fn dead_chunks_are_recognised_by_metadata() {
        let chunk = SealedChunk::from_entries(vec![entry(10, 0, 100), entry(20, 1, 200)]);
        let window = DedupWindow::Duration { window_ms: 1_000 };
        let mut starts = LogStarts::default();
        assert!(!chunk.is_fully_dead(window, 20_000, &starts));
        assert!(chunk.is_fully_dead(window, 21_000, &starts), "newest entry at second 20 is past a 1 s window");
        starts.insert(0, 101);
        assert!(!chunk.is_fully_dead(DedupWindow::Retention, 0, &starts));
        assert_eq!(chunk.dead_estimate(DedupWindow::Retention, 0, &starts), 1);
        assert_eq!(chunk.dead_estimate(window, 12_000, &LogStarts::default()), 1, "second 10 is past, 20 is not");
        starts.insert(1, 201);
        assert!(chunk.is_fully_dead(DedupWindow::Retention, 0, &starts));
    }
}
