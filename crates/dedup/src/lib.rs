//! Message-id deduplication for Once.
//!
//! A topic configured with `dedup.source` other than `none` gives each record an id; a record
//! whose id was already stored within `dedup.window.ms` is not stored again, and its produce
//! still succeeds (like SQS FIFO deduplication, but durable and exact). This crate is the
//! library the partition writer calls; it knows nothing of the network or the broker.
//!
//! # Layout
//!
//! - `config`: [`DedupSource`] (`none` | `key` | `content` | `header:NAME`) and
//!   [`DedupWindow`] (milliseconds, or `-1` for as long as retained), parsed from and displayed
//!   to the exact config strings.
//! - `id`: [`Id`], the 128-bit hash of the id bytes, by the index's [`IdScheme`] (keyed
//!   SipHash-2-4; BLAKE3 for indexes from before the key).
//! - `records`: [`extract_ids`] and [`filter_batch`] over Kafka v2 record batches.
//! - `codec`: gzip, snappy (xerial framing), LZ4 (frames), zstd, with a bound on output size.
//! - `chunk`: the storage of ids: one active chunk (rows and a hash table) and immutable sorted chunks, resident
//!   or on disk.
//! - `disk`: the checksummed file of a sealed chunk on disk: writing, checking, page reads.
//! - `spill`: the memory budget: [`DiskWork`] (spill, compaction, merge of chunk files), picked
//!   under the caller's lock, run without it; retired and orphan files.
//! - `index`: [`DedupIndex`]: reserve / confirm / release, transactions, expiry.
//! - `view`: [`SealedView`]: the sealed chunks as of one moment, to look a batch's ids up in
//!   without the caller's lock before [`DedupIndex::reserve_looked_up`] under it.
//! - `snapshot`: versioned, checksummed, atomically replaced snapshot files.
//! - `error`: [`DedupError`], the crate's one error enum.
//!
//! # The write protocol
//!
//! The writer of a partition handles a produced batch in four steps, so the index never
//! disagrees with the log:
//!
//! 1. `ids = extract_ids(batch, &source, &index.config().ids)` — one `Option<Id>` per record,
//!    hashed with the index's [`IdScheme`] (kept in its snapshots). A record with no id
//!    (missing header, null key, null value for `content`, source `none`, control batch) is
//!    never deduplicated.
//! 2. `reservation = index.reserve(partition, &ids, transactional_producer_id, now_ms)` (or, to
//!    probe the sealed chunks outside the caller's lock, `index.sealed_view()` under it,
//!    [`SealedView::lookup_many`] without it, then [`DedupIndex::reserve_looked_up`] under it) —
//!    one [`Decision`] per record: `NoId`, `New` (now reserved), `Duplicate(location)` (live
//!    elsewhere: drop it), `DuplicateInBatch` (an earlier `New` record of the same batch has
//!    it: drop it) or `Pending` (another write in flight, or another producer's open
//!    transaction, holds it). If [`Reservation::is_blocked`] (any `Pending`), release the
//!    reservation and answer with a retriable error: the client retries and then sees
//!    `Duplicate` (the holder committed) or `New` (it aborted or failed).
//! 3. `filtered = filter_batch(batch, &reservation.keep_mask())`, append it, fsync.
//! 4. After the fsync: `index.confirm(reservation, &offsets, batch_max_timestamp_ms)`. If the
//!    append or fsync failed: `index.release(reservation)`.
//!
//! Ids of a transactional batch stay pending after `confirm` until the marker:
//! `end_transaction(partition, producer_id, commit)`. Commit makes them live; abort frees
//! them, so a retry of an aborted transaction is not blocked. The same producer's open
//! transaction meeting its own id again gets `Duplicate` (both records share one fate). Markers
//! are per partition, so transaction holds are kept per (partition, producer id).
//!
//! # Exact semantics
//!
//! - An id is *live* when it is committed (confirmed, or its transaction committed), its
//!   record's offset is at or above its partition's log start offset, and, with a window, when
//!   `time_s * 1000 + window_ms > now_ms`, where `time_s` is the batch's max timestamp rounded
//!   **up** to whole seconds. So an id deduplicates for at least `window_ms` after its batch's
//!   timestamp and at most 999 ms longer.
//! - The window is measured from the batch's max timestamp (CreateTime as the producer set it,
//!   or LogAppendTime), not the broker's clock at append: it is in the log, so rebuilding the
//!   index from the log after a crash gives exactly the same state; and it is what Kafka's own
//!   time retention uses. The broker bounds producer clock skew (`message.timestamp.*.max.ms`).
//! - `now_ms` is the broker clock, passed in by the caller: the index reads no clock.
//! - Window `-1` keeps ids for as long as their records are retained:
//!   [`DedupIndex::set_log_start_offset`] kills every id below the new log start at once.
//! - Ids are per topic: an id stored in partition 3 deduplicates a record sent to partition 5.
//! - Expired ids are dead immediately on lookup; their memory is freed by
//!   [`DedupIndex::expire`], whose work per call is bounded.
//!
//! # Memory layout
//!
//! Stored ids are kept in *chunks*, in the order they became live:
//!
//! - The **active chunk**: its entries in a vector in the order they came (32-byte rows) and a
//!   hashbrown `HashTable` of their 4-byte positions keyed by id (a trivial hash, since ids are
//!   already uniform), so a new id's insert probes a table that stays in cache (2.6 MB at the
//!   largest) and appends its row. It holds at most about 1/32 of the stored ids (between
//!   57,344 and 458,752: 7/8 of a power of two, so its table is never more than one size too
//!   big) and, under a memory budget, no more than a table of an eighth of the budget takes
//!   (57,344 ids under 32 MiB), then is *sealed*: sorted into columns, about 60 ms at 458,752 ids (measured). By
//!   default inside the `confirm` that fills it; with [`DedupIndex::defer_seals`] (the broker)
//!   the full chunk is *frozen* there instead — read-only, probed right after the active chunk,
//!   written by snapshots like it — and sealed without the caller's lock
//!   ([`DedupIndex::next_seal_work`]). Its table and rows are allocated whole once the index holds as many
//!   ids as it takes (no rehash while it fills).
//! - **Sealed chunks**: immutable; the ids sorted, stored as columns — id `u128` (16 B), offset
//!   as a `u32` delta from the chunk's base offset for that partition (4 B), partition as a
//!   `u16` slot into the chunk's partition table (2 B), time in seconds `u32` (4 B): 26 bytes
//!   per id — plus a directory of the ids' top bits with one `u32` per 4 ids (≈1 B per id), so a
//!   lookup reads about two cache lines per chunk, and a blocked Bloom filter (10 bits, 1.25 B
//!   per id, six bits per id in one 64-byte block): a lookup of an id the chunk does not hold —
//!   every chunk, for a new id — reads that one cache line and stops there 99 times in 100.
//!   Each chunk knows its time range and, per partition, its offset range and count.
//!
//! A lookup probes the active chunk, the frozen one, then the sealed chunks newest first and
//! returns the first live match (a dead copy of an id may linger in an older chunk until freed). `expire` drops
//! whole chunks whose ids are all dead (from the metadata alone), compacts chunks estimated at
//! least half dead, and merges neighbours up to 1/16 of the stored ids, so a lookup probes
//! about 16 to 32 resident chunks beyond a million ids (most new ids only the topic filter).
//! Compaction and merging stream the sorted columns, making no copy of the entries; each rewrite
//! can run without the caller's lock
//! ([`DedupIndex::next_rewrite_work`], [`DedupIndex::finish_rewrite_work`]).
//!
//! Measured with `cargo run --release -p once-dedup --example dedup_bench` (2 cores; 8
//! partitions; batches of 100 ids, all new): at 10 M ids, 29.2 bytes per id by
//! [`DedupIndex::approx_bytes`] and 34.0 by the growth of the resident set (allocator slack);
//! at 1 M ids (`tests/memory.rs`), 28.5 and 30.3. Reserve + confirm about 1.0 M ids/s (0.5 M
//! before the filters), lookups about 1.1 M/s (hits) and 1.3–1.8 M/s (misses, hashing
//! included) at 10 M ids; snapshot 320 MB written in 0.4–0.8 s, loaded in 1.5–2 s. With
//! `-- 10000000 broker` it runs the broker's write path instead (a sealed view, `reserve_looked_up`,
//! `confirm`, seals, merges, filter rebuilds and snapshots, on one thread) and prints each step's
//! nanoseconds per id: 374–422 ns in all (docs/benchmarks.md, session 19).

//! # Windows larger than RAM
//!
//! With [`DedupIndex::use_disk`], sealed chunks beyond a memory budget (bytes of
//! [`DedupIndex::approx_bytes`]) move to files, oldest first: one file per chunk, 4 KiB pages of
//! 32-byte entries, each page and the trailer checksummed (`disk`). What stays in RAM is the
//! chunk's filter, the first id of each page (the *fences*) and its time and partition ranges:
//! about 1.4 bytes per id. A lookup reads a chunk's file only when its filter passes, one page,
//! whose checksum it checks. The file I/O of moving, compacting and merging chunks runs outside
//! the caller's lock ([`DedupIndex::next_disk_work`], [`DiskWork::run`],
//! [`DedupIndex::finish_disk_work`]). Snapshots refer to chunk files rather than copying them
//! (a resident chunk's copy is written by the first snapshot that meets it, and a merge in RAM
//! takes its inputs' copies over); a file the index stops using is deleted after the next
//! snapshot, and files no snapshot refers to are deleted at start
//! ([`DedupIndex::remove_orphan_chunk_files`]).
//!
//! # Durability
//!
//! [`DedupIndex::snapshot`] (or [`DedupIndex::snapshot_view`], cheap under the caller's lock, then
//! [`SnapshotView::write`] without it) writes the committed ids and per partition the log start offset and
//! the *covered offset* (the first offset whose batch the index does not reflect; `confirm` and
//! [`DedupIndex::advance_covered`] move it). Ids held by open transactions are not written: the
//! covered offset of their partition is written as at most their first offset instead, so the
//! replay meets each transaction's ids and then its marker in one partition's log, whatever
//! order the partitions are replayed in. After a restart, [`DedupIndex::load`] the snapshot,
//! [`DedupIndex::set_log_start_offset`] of every partition from its log, then replay each
//! partition's log from [`DedupIndex::covered_offset`]: `extract_ids` (with the index's
//! [`IndexConfig::ids`]), `reserve`, `confirm` for
//! data batches (with the stored offsets and timestamps; a record the index decides is not `New`
//! needs no entry: another live copy of its id exists, or the record's copy is dead), and
//! `end_transaction` for markers. A corrupt or old-version snapshot is an error
//! ([`DedupError::means_rebuild`]): replay the whole retained log instead.
//!
//! # Example
//!
//! ```
//! use once_dedup::{extract_record_ids, filter_batch, DedupIndex, DedupSource, DedupWindow, IndexConfig};
//!
//! let mut index = DedupIndex::new(IndexConfig::new(DedupWindow::from_ms(60_000)?));
//! let source: DedupSource = "content".parse()?;
//! let batch = once_log::testing::make_batch(3, 8, 1_000); // 3 records, distinct values
//!
//! // Ids are hashed as the index says (a new index: keyed SipHash-2-4 under a random key).
//! let records = extract_record_ids(&batch, &source, &index.config().ids)?;
//! let ids: Vec<_> = records.iter().map(|record| record.id).collect();
//! let reservation = index.reserve(0, &ids, None, 1_000)?;
//! assert!(!reservation.is_blocked());
//! let filtered = filter_batch(&batch, &reservation.keep_mask())?;
//! assert_eq!(filtered, batch, "nothing to drop");
//! // ... the log appends `filtered` at base offset 100 and fsyncs ...
//! let offsets: Vec<i64> = records.iter().map(|record| 100 + i64::from(record.offset_delta)).collect();
//! index.confirm(reservation, &offsets, 1_000);
//!
//! // The same batch again (a retry after a lost ack, say): every record is a duplicate.
//! let again = index.reserve(0, &ids, None, 2_000)?;
//! assert_eq!(again.duplicate_count(), 3);
//! let empty = filter_batch(&batch, &again.keep_mask())?;
//! assert_eq!(empty.len(), 61, "a header-only batch keeps the producer's sequence range");
//! // ... the log appends `empty` at base offset 103 and fsyncs; the produce succeeds ...
//! let offsets: Vec<i64> = records.iter().map(|record| 103 + i64::from(record.offset_delta)).collect();
//! index.confirm(again, &offsets, 2_000);
//! assert_eq!(index.covered_offset(0), Some(106));
//! # Ok::<(), once_dedup::DedupError>(())
//! ```

#![forbid(unsafe_code)]

mod chunk;
mod codec;
mod config;
mod disk;
mod error;
mod holds;
mod id;
mod id_rows;
mod index;
mod records;
mod snapshot;
mod spill;
mod topic_filter;
mod view;

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod spill_tests;

pub use crate::chunk::Location;
pub use crate::config::{DedupSource, DedupWindow, DEDUP_SOURCE_CONFIG, DEDUP_WINDOW_MS_CONFIG};
pub use crate::error::DedupError;
pub use crate::id::{Id, IdScheme};
pub use crate::index::{
    Decision, DedupIndex, ExpireStats, Freed, IndexConfig, Reservation, RewriteDone, RewriteWork, Rewritten, SealDone,
    SealWork, MAX_IDS_DEFAULT, MAX_IDS_ON_DISK_DEFAULT,
};
pub use crate::records::{
    extract_ids, extract_record_ids, extract_valid_record_ids, filter_batch, filter_valid_batch, visit_records,
    RecordId, RECORDS_BYTES_MAX,
};
pub use crate::snapshot::{remove_snapshot, SnapshotStats, SnapshotView, SNAPSHOT_VERSION};
pub use crate::spill::{chunk_dir, DiskDone, DiskWork, DISK_CHUNK_IDS_MAX};
pub use crate::topic_filter::{FilterDone, FilterWork};
pub use crate::view::{LookedUp, SealedView};
