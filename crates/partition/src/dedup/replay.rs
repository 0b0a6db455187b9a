//! Replaying the partitions' logs into the index at open ([`super::TopicDedup::rebuild`]): every
//! stored batch goes through `reserve` and the same effect as on the live path.

use once_dedup::{extract_record_ids, DedupError, DedupIndex, DedupSource};
use once_log::Log;

use super::{apply_effect, ids_and_deltas, merge_budget, Effect, RebuildStats, Reserved};
use crate::error::PartitionError;
use crate::producer_state::LoggedBatch;
use crate::replay;

/// Replays one partition's log from the index's covered offset. Returns the ids resolved, or the
/// index's error (other than a full index) that stopped the replay: then the index misses records.
pub(super) fn replay_partition(
    index: &mut DedupIndex,
    source: &DedupSource,
    partition: i32,
    log: &Log,
    now_ms: i64,
    stats: &mut RebuildStats,
) -> Result<Result<u64, DedupError>, PartitionError> {
    let start = log.log_start_offset();
    let from = index.covered_offset(partition).map_or(start, |covered| (covered.max(0) as u64).max(start));
    // `changes` counts the current batch's; they move to the totals before the next batch.
    let (mut changes, mut total, mut since_merge) = (0, 0, 0);
    let mut failed = None;
    let mut filter_failed = false;
    replay::for_each_stored_batch(log, from, log.log_end_offset(), |header, batch| {
        if failed.is_some() {
            return;
        }
        stats.batches += 1;
        total += changes;
        since_merge += changes;
        changes = 0;
        // Nothing else runs at open: seals and merges run under the lock.
        index.seal_frozen();
        // And the topic filter is built, and rebuilt when outgrown, in line (the upkeep starts only
        // once the topic serves): without it every replayed id probes every sealed chunk's filter.
        if !filter_failed {
            if let Err(error) = index.filter_work_here() {
                // Lookups use the outgrown filter or probe chunk by chunk: slower, not wrong. Not tried
                // again in this partition's replay.
                tracing::warn!(partition, %error, "building the dedup topic filter during replay failed");
                filter_failed = true;
            }
        }
        if let Some(budget) = merge_budget(&mut since_merge) {
            index.expire(now_ms, budget);
        }
        if index.over_memory_budget() {
            // Nothing else runs at open: spill under the lock, so a replay stays within the budget.
            // If spilling fails (a full disk), the replay goes on over the budget (`reserve_replayed`):
            // the records are stored whatever the index says. The live path then refuses new ids
            // until a spill works.
            if let Err(error) = index.disk_work_here(now_ms, 4) {
                tracing::error!(partition, %error, "moving dedup index chunks to disk failed during replay; going over the memory budget");
            }
        }
        let (base_offset, last_offset) = (header.base_offset as u64, header.last_offset() as u64);
        if header.is_control() {
            let end = match replay::classify(header, batch) {
                Some(LoggedBatch::Marker(marker)) => Some((marker.producer_id, marker.commit)),
                _ => None,
            };
            changes += apply_effect(index, partition, Effect::Control { end, offset: base_offset });
            return;
        }
        let records = match extract_record_ids(batch, source, &index.config().ids) {
            Ok(records) => records,
            Err(error) => {
                // Only a batch stored before its records could be read (it was checked on append).
                tracing::warn!(partition, offset = base_offset, %error, "stored batch unreadable; its ids are not indexed");
                index.advance_covered(partition, last_offset as i64 + 1);
                return;
            }
        };
        stats.ids += records.iter().filter(|record| record.id.is_some()).count() as u64;
        let transactional = header.is_transactional().then_some(header.producer_id);
        let stored =
            Stored { partition, transactional, now_ms, timestamp_ms: header.max_timestamp, base_offset, last_offset };
        let (ids, deltas) = ids_and_deltas(&records);
        let replayed = stored.replay(index, &ids, &deltas, &mut changes).and_then(|whole| {
            if !whole {
                // Some id is held by a transaction not yet ended in this replay: index the others one by one.
                for (id, delta) in ids.iter().zip(&deltas) {
                    stored.replay(index, &[*id], &[*delta], &mut changes)?;
                }
            }
            Ok(())
        });
        match replayed {
            // The covered offset moves past a batch only once it is reflected.
            Ok(()) => index.advance_covered(partition, last_offset as i64 + 1),
            Err(error) => failed = Some(error),
        }
    })?;
    Ok(match failed {
        Some(error) => Err(error),
        None => Ok(total + changes),
    })
}

/// A stored data batch being replayed.
struct Stored {
    partition: i32,
    transactional: Option<i64>,
    now_ms: i64,
    timestamp_ms: i64,
    base_offset: u64,
    last_offset: u64,
}

impl Stored {
    /// Reserves and confirms records of the batch, as the live path did after its sync. The log is
    /// the truth: each record whose id is decided `New` gets its entry; one decided otherwise needs
    /// none, since another live copy of the id exists or this copy is dead (stored after an earlier
    /// copy expired, or by a transaction that then aborted). Returns false, changing nothing, if an
    /// id is held by a transaction whose marker this replay has not reached.
    ///
    /// A full index skips the records (as the live path refuses them; logged): the bound is a
    /// promise the operator chose. Any other error — a chunk page unreadable or damaged — is
    /// returned: skipping it would leave stored records out of the index for good.
    fn replay(
        &self,
        index: &mut DedupIndex,
        ids: &[Option<once_dedup::Id>],
        deltas: &[i32],
        changes: &mut u64,
    ) -> Result<bool, DedupError> {
        match index.reserve_replayed(self.partition, ids, self.transactional, self.now_ms) {
            Ok(reservation) if reservation.is_blocked() => {
                index.release(reservation);
                Ok(false)
            }
            Ok(reservation) => {
                let reserved =
                    Reserved { reservation, offset_deltas: deltas.to_vec(), timestamp_ms: self.timestamp_ms };
                let effect = Effect::Write { reserved, base_offset: self.base_offset, last_offset: self.last_offset };
                *changes += apply_effect(index, self.partition, effect);
                Ok(true)
            }
            Err(error @ DedupError::IndexFull { .. }) => {
                tracing::warn!(partition = self.partition, offset = self.base_offset, %error, "stored records not indexed: the index is full");
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }
}
