//! The read side: fetch by offset (KIP-74: at least one whole batch), ListOffsets by timestamp.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::buffer_pool::{BufferPool, PoolBounds};
use crate::error::LogError;
use crate::give_way::{give_way, COLD_PIECE_BYTES, GIVE_WAY_MAX};
use crate::log::Log;
use crate::segment::SegmentSnapshot;

/// Reads that the plan bounds at 4 MiB to 64 MiB (a catch-up consumer's fetches: 50 MiB is librdkafka's
/// `fetch.max.bytes`) go into buffers used again ([`ReadPlan::execute_shared`]); at most 64 MiB of free
/// ones are kept. Smaller reads are served well by the allocator; a buffer that size or more, allocated
/// anew, was faulted in and zeroed for every fetch.
const READ_POOL: PoolBounds = PoolBounds { min: 4 * 1024 * 1024, max: 64 * 1024 * 1024, keep: 64 * 1024 * 1024 };
static READS: LazyLock<Arc<BufferPool>> = LazyLock::new(|| Arc::new(BufferPool::new(READ_POOL)));

/// A read planned under the log's lock ([`Log::plan_read`]) and done without it
/// ([`ReadPlan::execute`]), so that a reader never holds the lock the writer appends under while it
/// waits for the disk. The plan holds the segments the read may touch as they were when it was made:
/// their bytes below the planned sizes never change, and their open files keep them readable if
/// retention deletes them meanwhile (the caller decides whether a read that retention overtook still
/// counts: the records are whole and valid, but below the new log start offset).
#[derive(Debug)]
pub struct ReadPlan {
    offset: u64,
    max_bytes: usize,
    upper_bound: u64,
    /// From the segment holding `offset`, as many as `max_bytes` can reach; empty when there is
    /// nothing to read (`offset` is the log end).
    segments: Vec<SegmentSnapshot>,
    /// The first segment's index entry at or before `offset`: where the search for its batch starts.
    hint: (u32, u32),
}

impl Log {
    /// Whole batches starting with the one containing `offset`, up to `max_bytes` in total but
    /// at least one batch if one exists below `upper_bound`; never a batch whose base offset is
    /// `>= upper_bound` (pass the high watermark or last stable offset). Bytes are returned as
    /// stored. `offset` outside `[log_start_offset, log_end_offset]` is `OffsetOutOfRange`.
    /// [`Log::plan_read`] and [`ReadPlan::execute`] in one call.
    pub fn read(&self, offset: u64, max_bytes: usize, upper_bound: u64) -> Result<Vec<u8>, LogError> {
        self.plan_read(offset, max_bytes, upper_bound)?.execute()
    }

    /// The first half of [`Log::read`], without file I/O: checks `offset` against the log's range and
    /// takes the segments the read may touch. Cheap: call it under the lock, then execute the plan
    /// after releasing it.
    pub fn plan_read(&self, offset: u64, max_bytes: usize, upper_bound: u64) -> Result<ReadPlan, LogError> {
        self.check_in_range(offset)?;
        let mut plan = ReadPlan { offset, max_bytes, upper_bound, segments: Vec::new(), hint: (0, 0) };
        if offset == self.log_end_offset() {
            return Ok(plan);
        }
        let first = self.segment_index_for(offset);
        plan.hint = self.segments[first].index_hint(offset);
        // The first segment may give as little as one batch; each later one is read whole before
        // the next is begun, so the read cannot get past the segments after the first once they hold
        // `max_bytes` between them.
        let mut after_first = 0u64;
        for segment in &self.segments[first..] {
            let planned_enough = !plan.segments.is_empty() && after_first >= max_bytes as u64;
            if planned_enough || segment.base_offset >= upper_bound {
                break;
            }
            if !plan.segments.is_empty() {
                after_first += segment.size;
            }
            plan.segments.push(segment.snapshot());
        }
        assert!(
            plan.segments.first().is_none_or(|segment| segment.base_offset <= offset && offset < segment.next_offset),
            "the plan starts with the segment holding the offset"
        );
        Ok(plan)
    }

    /// ListOffsets by timestamp: the first batch (at or after the log start offset) whose max
    /// timestamp is `>= timestamp_ms`, as `(its base offset, its max timestamp)`; the offset is
    /// raised to the log start offset if the batch straddles it. `None` if there is none.
    /// Batch granularity: records are not decoded. [`Log::plan_offset_for_timestamp`] and
    /// [`TimestampPlan::execute`] in one call.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>, LogError> {
        self.plan_offset_for_timestamp(timestamp_ms).execute()
    }

    /// The first half of [`Log::offset_for_timestamp`], from the in-memory indexes only (no file
    /// I/O): the segments whose largest timestamp reaches `timestamp_ms`, each with where its time
    /// index says to start looking. Call it under the lock and execute the plan after releasing it.
    pub fn plan_offset_for_timestamp(&self, timestamp_ms: i64) -> TimestampPlan {
        let start = self.log_start_offset;
        let mut candidates = Vec::new();
        for segment in self.segments.iter().filter(|segment| segment.next_offset > start) {
            let Some((segment_max, _)) = segment.index.max_timestamp else {
                continue;
            };
            if segment_max < timestamp_ms {
                continue;
            }
            let from = segment.base_offset + u64::from(segment.index.time_lookup(timestamp_ms));
            candidates.push(TimestampCandidate { hint: segment.index_hint(from), from, segment: segment.snapshot() });
        }
        TimestampPlan { start, timestamp_ms, candidates }
    }

    /// ListOffsets MAX_TIMESTAMP: the largest batch max timestamp in the log with the last offset
    /// of the first batch carrying it. `None` if the log holds no batch.
    pub fn max_timestamp(&self) -> Option<(u64, i64)> {
        let start = self.log_start_offset;
        let mut best: Option<(u64, i64)> = None;
        for segment in self.segments.iter().filter(|segment| segment.next_offset > start) {
            if let Some((timestamp, offset)) = segment.index.max_timestamp {
                if best.is_none_or(|(_, best_timestamp)| timestamp > best_timestamp) {
                    best = Some((offset.max(start), timestamp));
                }
            }
        }
        best
    }

    pub(crate) fn check_in_range(&self, offset: u64) -> Result<(), LogError> {
        if offset < self.log_start_offset || offset > self.log_end_offset() {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        Ok(())
    }

    /// Index of the segment whose range holds `offset` (the last with base offset `<= offset`).
    pub(crate) fn segment_index_for(&self, offset: u64) -> usize {
        let after = self.segments.partition_point(|segment| segment.base_offset <= offset);
        assert!(after > 0, "offset {offset} is not below the first segment");
        after - 1
    }
}

/// A ListOffsets-by-timestamp lookup planned under the log's lock ([`Log::plan_offset_for_timestamp`])
/// and done without it, like a [`ReadPlan`]: it reads only batch headers below the planned sizes.
#[derive(Debug)]
pub struct TimestampPlan {
    start: u64,
    timestamp_ms: i64,
    candidates: Vec<TimestampCandidate>,
}

#[derive(Debug)]
struct TimestampCandidate {
    segment: SegmentSnapshot,
    /// The offset the time index points at, and the offset index's entry at or before it.
    from: u64,
    hint: (u32, u32),
}

impl TimestampPlan {
    /// Walks the candidates' batch headers from their time-index entries: the first batch at or after
    /// the log start offset (as planned) whose max timestamp reaches the one asked for.
    pub fn execute(&self) -> Result<Option<(u64, i64)>, LogError> {
        for TimestampCandidate { segment, from, hint } in &self.candidates {
            let mut position = segment.position_of(*from, *hint)?;
            while position < segment.size {
                let header = segment.header_at(position)?;
                if header.last_offset() as u64 >= self.start && header.max_timestamp >= self.timestamp_ms {
                    return Ok(Some(((header.base_offset as u64).max(self.start), header.max_timestamp)));
                }
                position += header.total_len() as u64;
            }
        }
        Ok(None)
    }
}

impl ReadPlan {
    /// Reads the planned batches (see [`Log::read`] for which), from the files, without the log's
    /// lock: the rules and the result are those of a read made under the lock when the plan was.
    pub fn execute(&self) -> Result<Vec<u8>, LogError> {
        self.execute_into(|_| Vec::new())
    }

    /// [`ReadPlan::execute`], with a read that may return 4 MiB or more (as far as the plan can tell
    /// before reading: its budget, or what its segments hold from the offset on) made into a buffer
    /// that goes back to a pool once the last slice of the returned bytes is dropped (a Fetch
    /// response's record set, written to the socket from it). A read that fills less than half its
    /// buffer (cut short by the upper bound: a read_committed fetch at the last stable offset waits
    /// out its long poll holding what it read) is copied out and the buffer given back at once.
    pub fn execute_shared(&self) -> Result<Bytes, LogError> {
        let read = self.execute_into(|bytes_at_most| match READS.pools(bytes_at_most) {
            true => READS.take(bytes_at_most),
            false => Vec::new(),
        })?;
        if !READS.pools(read.capacity()) {
            return Ok(Bytes::from(read));
        }
        if read.len() < read.capacity() / 2 {
            let copied = Bytes::copy_from_slice(&read);
            READS.give_back(read);
            return Ok(copied);
        }
        Ok(READS.share(read))
    }

    /// Buffers the pool of large reads handed out so far: (newly allocated, used again).
    pub fn read_buffers_taken() -> (u64, u64) {
        READS.taken()
    }

    /// Reads into the buffer `buffer_for` gives (empty), told the most bytes the read can return but
    /// for the one batch KIP-74 allows past the budget.
    fn execute_into(&self, buffer_for: impl FnOnce(usize) -> Vec<u8>) -> Result<Vec<u8>, LogError> {
        let Some(first) = self.segments.first() else {
            return Ok(Vec::new());
        };
        // Before the header reads that find the position: a miss there would start readahead.
        first.advise_no_readahead();
        let mut position = first.position_of(self.offset, self.hint)?;
        let in_segments =
            first.size.saturating_sub(position) + self.segments[1..].iter().map(|segment| segment.size).sum::<u64>();
        let mut out = buffer_for(self.max_bytes.min(usize::try_from(in_segments).unwrap_or(usize::MAX)));
        assert!(out.is_empty(), "a read starts with an empty buffer");
        for segment in &self.segments {
            if read_from_segment(segment, position, self.max_bytes, self.upper_bound, &mut out)? {
                break;
            }
            position = 0;
        }
        debug_assert!(out.len() <= self.max_bytes || self.holds_one_batch(&out), "over budget only for one batch");
        Ok(out)
    }

    /// Whether `out` is exactly one batch (what KIP-74 allows past the budget).
    fn holds_one_batch(&self, out: &[u8]) -> bool {
        BatchHeader::parse(out).is_ok_and(|header| header.total_len() == out.len())
    }
}

/// Appends to `out` the whole batches of `segment` from `position` that fit the rules. Returns
/// true if the read is complete (budget used or upper bound reached), false if it should go on
/// into the next segment.
fn read_from_segment(
    segment: &SegmentSnapshot,
    position: u64,
    max_bytes: usize,
    upper_bound: u64,
    out: &mut Vec<u8>,
) -> Result<bool, LogError> {
    if position >= segment.size {
        return Ok(false);
    }
    // Before the first read of the file here, or its miss would start megabytes of readahead.
    segment.advise_no_readahead();
    let first = segment.header_at(position)?;
    if first.base_offset as u64 >= upper_bound {
        return Ok(true);
    }
    let budget = max_bytes.saturating_sub(out.len());
    if !out.is_empty() && first.total_len() > budget {
        return Ok(true);
    }
    let available = usize::try_from(segment.size - position).unwrap_or(usize::MAX);
    let want = budget.max(first.total_len()).min(available);
    let old_len = out.len();
    if let Err(error) = read_pieces(segment, out, want, position) {
        out.truncate(old_len);
        return Err(error);
    }
    let walked = walk_batches(segment, position, &out[old_len..], first.base_offset, upper_bound);
    let (used, hit_upper_bound) = match walked {
        Ok(walked) => walked,
        Err(error) => {
            out.truncate(old_len);
            return Err(error);
        }
    };
    out.truncate(old_len + used);
    assert!(used >= first.total_len(), "the first batch is always whole in the chunk");
    Ok(hit_upper_bound || position + used as u64 != segment.size)
}

/// Appends `length` bytes of `segment` from `position` to `out`, in pieces: a piece whose last page is
/// not in the page cache first gives way to fdatasyncs in flight (the last, not the first: the batch
/// header read before the piece cached the first). The caller turned the kernel's readahead off
/// (`crate::give_way`).
fn read_pieces(segment: &SegmentSnapshot, out: &mut Vec<u8>, length: usize, position: u64) -> Result<(), LogError> {
    out.reserve_exact(length);
    let mut done = 0;
    while done < length {
        let piece = COLD_PIECE_BYTES.min(length - done);
        let at = position + done as u64;
        if !segment.page_cached_at(at + piece as u64 - 1) {
            give_way(GIVE_WAY_MAX);
        }
        segment.read_append_at(out, piece, at)?;
        done += piece;
    }
    Ok(())
}

/// Walks the batches in `chunk` (file bytes from `position`), checking each header against
/// the expected offsets. Returns the bytes of whole batches below `upper_bound`, and whether
/// the upper bound stopped the walk.
fn walk_batches(
    segment: &SegmentSnapshot,
    position: u64,
    chunk: &[u8],
    first_base: i64,
    upper_bound: u64,
) -> Result<(usize, bool), LogError> {
    let mut used = 0usize;
    let mut expected = first_base;
    while used + BATCH_HEADER_LEN <= chunk.len() {
        let header = BatchHeader::parse(&chunk[used..])?;
        let corrupt = |problem: String| {
            LogError::CorruptBatch(format!(
                "segment {} position {}: {problem}",
                segment.base_offset,
                position + used as u64
            ))
        };
        if header.base_offset != expected {
            return Err(corrupt(format!("base offset {} where {expected} was expected", header.base_offset)));
        }
        let in_file = usize::try_from(segment.size - position).unwrap_or(usize::MAX) - used;
        if let Some((_, problem)) = header.structure_problem(in_file) {
            return Err(corrupt(problem));
        }
        if header.base_offset as u64 >= upper_bound {
            return Ok((used, true));
        }
        let length = header.total_len();
        if used + length > chunk.len() {
            break;
        }
        debug_assert!(batch::verify_crc(&chunk[used..used + length]), "stored batches keep their CRC");
        used += length;
        expected = header.last_offset() + 1;
    }
    Ok((used, false))
}
