//! Large buffers used again once every part of what was read into them is dropped: request frames (the
//! broker's connections) and fetch reads ([`crate::ReadPlan::execute_shared`]).
//!
//! Why: a buffer of hundreds of KiB or more, allocated new each time, is mostly pages the allocator had
//! just returned to the kernel (above 32 MiB glibc always maps and unmaps them), so every use faulted its
//! pages in and zeroed them again before the bytes were copied in: 12 % of the broker's samples with
//! librdkafka's 600 KB produce batches (`docs/benchmarks.md`, session 20), and about a third of its
//! samples while a catch-up consumer read with 50 MiB fetches (session 21). A buffer taken from a pool is
//! handed out as `Bytes` whose owner gives it back when the last slice (a decoded request's records,
//! a Fetch response's record set, …) is dropped.
//!
//! Bounds ([`PoolBounds`]): only buffers of `min` to `max` bytes use a pool, and it keeps at most `keep`
//! bytes of free buffers: a buffer given back to a full pool makes room by freeing the buffers given
//! back longest ago, so buffers of sizes no longer asked for do not hold the pool for good. A buffer
//! taken for `length` bytes is at most a quarter plus 64 KiB larger.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Which buffers a pool serves and how much it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBounds {
    /// Smaller buffers are allocated as before: the allocator serves them from memory it keeps.
    pub min: usize,
    /// Larger ones are allocated as before and freed after use, so one rare huge request or read does
    /// not hold its memory for good.
    pub max: usize,
    /// Free buffers kept at most, in bytes of capacity.
    pub keep: usize,
}

/// Capacities are rounded up to this, so uses of nearby sizes share buffers.
const CAPACITY_STEP: usize = 64 * 1024;

/// Free buffers of one kind, shared by every thread of the process.
pub struct BufferPool {
    bounds: PoolBounds,
    free: Mutex<Free>,
    /// Buffers [`BufferPool::take`] handed out: (new allocations, free buffers used again).
    taken: (AtomicU64, AtomicU64),
}

#[derive(Default)]
struct Free {
    /// In the order they were given back, oldest first.
    buffers: VecDeque<Vec<u8>>,
    /// Sum of the free buffers' capacities.
    bytes: usize,
}

impl BufferPool {
    /// An empty pool.
    pub fn new(bounds: PoolBounds) -> BufferPool {
        assert!(bounds.min > 0 && bounds.min <= bounds.max, "pooled sizes {bounds:?}");
        assert!(bounds.keep >= bounds.max, "a pool keeps at least one of its largest buffers");
        BufferPool { bounds, free: Mutex::default(), taken: (AtomicU64::new(0), AtomicU64::new(0)) }
    }

    /// Whether `length` bytes are read into a pooled buffer.
    pub fn pools(&self, length: usize) -> bool {
        (self.bounds.min..=self.bounds.max).contains(&length)
    }

    /// An empty buffer with room for `length` bytes: the smallest free one at most a quarter plus
    /// 64 KiB larger, or a new one.
    pub fn take(&self, length: usize) -> Vec<u8> {
        assert!(self.pools(length), "{length} bytes are not pooled");
        let fits = |capacity: usize| capacity >= length && capacity <= slack_max(length);
        let mut free = self.lock();
        let best = (free.buffers.iter().enumerate())
            .filter(|(_, buffer)| fits(buffer.capacity()))
            .min_by_key(|(_, buffer)| buffer.capacity())
            .map(|(index, _)| index);
        let mut buffer = match best {
            Some(index) => {
                let buffer = free.buffers.remove(index).expect("an index of a free buffer");
                free.bytes -= buffer.capacity();
                self.taken.1.fetch_add(1, Ordering::Relaxed);
                buffer
            }
            None => {
                self.taken.0.fetch_add(1, Ordering::Relaxed);
                Vec::with_capacity(rounded(length))
            }
        };
        drop(free);
        buffer.clear();
        assert!(buffer.capacity() >= length, "a taken buffer holds the bytes asked for");
        assert!(buffer.capacity() <= slack_max(length), "a taken buffer is not much larger than asked for");
        buffer
    }

    /// Buffers handed out so far: (newly allocated, used again).
    pub fn taken(&self) -> (u64, u64) {
        (self.taken.0.load(Ordering::Relaxed), self.taken.1.load(Ordering::Relaxed))
    }

    /// Keeps `buffer` for a later use, first freeing the buffers given back longest ago if the pool
    /// has no room for it; frees it if it is not of a pooled size.
    pub(crate) fn give_back(&self, buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if !self.pools(capacity) {
            return;
        }
        let mut evicted = Vec::new();
        let mut free = self.lock();
        while free.bytes + capacity > self.bounds.keep {
            let oldest = free.buffers.pop_front().expect("a pool over its bound holds buffers");
            free.bytes -= oldest.capacity();
            evicted.push(oldest);
        }
        free.bytes += capacity;
        free.buffers.push_back(buffer);
        assert!(free.bytes <= self.bounds.keep, "the pool keeps at most its bound");
        drop(free);
        // Freed after the lock.
        drop(evicted);
    }

    /// The bytes read into `buffer` (taken from this pool, or any buffer of a pooled size), as `Bytes`
    /// that give the buffer back when the last slice of them is dropped.
    pub fn share(self: &Arc<BufferPool>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buffer, pool: Arc::clone(self) })
    }

    /// Free buffers and their bytes of capacity (for tests).
    #[cfg(test)]
    fn free(&self) -> (usize, usize) {
        let free = self.lock();
        (free.buffers.len(), free.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        // A panic while holding the lock leaves at worst a miscounted total: the pool still works.
        self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn rounded(length: usize) -> usize {
    length.div_ceil(CAPACITY_STEP) * CAPACITY_STEP
}

/// The largest buffer `length` bytes are read into: a quarter plus 64 KiB more.
fn slack_max(length: usize) -> usize {
    length + length / 4 + CAPACITY_STEP
}

/// A pooled buffer's bytes, given back to its pool when dropped.
struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker's frame pool's bounds (`once_broker`), which these tests were written for.
    const POOLED_FRAME_MIN: usize = 64 * 1024;
    const POOLED_FRAME_MAX: usize = 8 * 1024 * 1024;
    const POOL_BYTES_MAX: usize = 64 * 1024 * 1024;

    fn frames() -> Arc<BufferPool> {
        Arc::new(BufferPool::new(PoolBounds { min: POOLED_FRAME_MIN, max: POOLED_FRAME_MAX, keep: POOL_BYTES_MAX }))
    }

    fn filled(pool: &Arc<BufferPool>, length: usize, byte: u8) -> Bytes {
        let mut buffer = pool.take(length);
        buffer.resize(length, byte);
        pool.share(buffer)
    }

    /// A buffer goes back to the pool only when the last slice of its frame is dropped, and the next
    /// frame of a like size is read into it, holding only its own bytes.
    #[test]
    fn a_frame_buffer_is_used_again_once_every_slice_is_dropped() {
        let pool = frames();
        let frame = filled(&pool, 100_000, 7);
        let slice = frame.slice(10..20);
        drop(frame);
        assert_eq!(pool.free(), (0, 0), "a slice still holds the frame");
        assert_eq!(&slice[..], &[7u8; 10][..]);
        let address = slice.as_ptr() as usize - 10;
        drop(slice);
        assert_eq!(pool.free(), (1, rounded(100_000)), "given back with the last slice");
        let again = filled(&pool, 90_000, 9);
        assert_eq!(again.as_ptr() as usize, address, "the next frame of a like size reuses the buffer");
        assert_eq!(again.len(), 90_000);
        assert!(again.iter().all(|byte| *byte == 9), "only the new frame's bytes are seen");
        assert_eq!(pool.free(), (0, 0));
    }

    /// A much smaller frame does not take a large buffer, and the pool frees what passes its bound
    /// or the pooled sizes.
    #[test]
    fn the_pool_keeps_buffers_within_its_bounds() {
        let pool = frames();
        drop(filled(&pool, 1_000_000, 1));
        let small = pool.take(POOLED_FRAME_MIN);
        assert_eq!(small.capacity(), POOLED_FRAME_MIN, "a new buffer, not the 1 MB one");
        assert_eq!(pool.free().0, 1, "the large buffer stays free");
        // Buffers past the pooled sizes are not kept.
        pool.give_back(Vec::with_capacity(POOLED_FRAME_MAX + CAPACITY_STEP));
        pool.give_back(Vec::with_capacity(1024));
        assert_eq!(pool.free().0, 1);
        // Fill the pool past its bound: it keeps at most the bound, the newest buffers.
        let count = POOL_BYTES_MAX / POOLED_FRAME_MAX + 1;
        let frames: Vec<Bytes> = (0..count).map(|_| filled(&pool, POOLED_FRAME_MAX, 0)).collect();
        drop(frames);
        let (buffers, bytes) = pool.free();
        assert!(bytes <= POOL_BYTES_MAX, "{bytes} bytes kept");
        assert_eq!((buffers, bytes), (8, POOL_BYTES_MAX), "the 1 MB buffer, given back first, made room");
        assert!(!pool.pools(POOLED_FRAME_MIN - 1) && !pool.pools(POOLED_FRAME_MAX + 1));
    }

    /// Of the free buffers that fit, the smallest is taken; and buffers of a size no longer asked for
    /// leave a full pool as others come back, so frames of the new size are pooled again.
    #[test]
    fn the_smallest_fitting_buffer_is_taken_and_stale_sizes_age_out() {
        let pool = frames();
        let (larger, smaller) = (filled(&pool, 300_000, 1), filled(&pool, 260_000, 2));
        let smaller_address = smaller.as_ptr() as usize;
        drop((larger, smaller));
        assert_eq!(pool.free().0, 2);
        let taken = pool.take(250_000);
        assert_eq!(taken.as_ptr() as usize, smaller_address, "the smaller of the two that fit");

        let pool = frames();
        let large: Vec<Bytes> = (0..8).map(|_| filled(&pool, POOLED_FRAME_MAX, 0)).collect();
        drop(large);
        assert_eq!(pool.free(), (8, POOL_BYTES_MAX), "full of 8 MiB buffers");
        // 600 KB frames fit none of them; each one given back frees the oldest 8 MiB buffer.
        let frame = filled(&pool, 600_000, 3);
        let address = frame.as_ptr() as usize;
        drop(frame);
        assert_eq!(pool.free(), (8, 7 * POOLED_FRAME_MAX + rounded(600_000)));
        let again = filled(&pool, 590_000, 4);
        assert_eq!(again.as_ptr() as usize, address, "the next one is pooled again");
    }
}
