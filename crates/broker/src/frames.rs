//! Buffers for large request frames, used again once every part of a frame is dropped.
//!
//! Why: a producer's request of hundreds of KiB was read into a new allocation each time, and the
//! allocator gave most of them pages it had just returned to the kernel, so every frame's pages were
//! faulted in and zeroed again before the socket's bytes were copied into them: 12 % of the broker's
//! samples with librdkafka's 600 KB batches of 1 KiB records (`docs/benchmarks.md`, session 20). A frame
//! read into a pooled buffer is handed out as `Bytes` whose owner gives the buffer back when the last
//! slice of the frame (the decoded request's records, topic names, …) is dropped.
//!
//! Bounds: only frames of [`POOLED_FRAME_MIN`] to [`POOLED_FRAME_MAX`] bytes use the pool, and it keeps
//! at most [`POOL_BYTES_MAX`] bytes of free buffers, beyond the request budget: a buffer given back to
//! a full pool makes room by freeing the buffers given back longest ago, so buffers of sizes no longer
//! asked for do not hold the pool for good. The budget counts a frame's length; the buffer it is read
//! into is at most a quarter plus 64 KiB larger.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Smaller frames are allocated as before: the allocator serves them from memory it keeps.
pub(crate) const POOLED_FRAME_MIN: usize = 64 * 1024;
/// Larger frames are allocated as before and freed after use, so one rare huge request does not hold
/// its memory for good.
pub(crate) const POOLED_FRAME_MAX: usize = 8 * 1024 * 1024;
/// Free buffers kept at most, in bytes of capacity.
pub(crate) const POOL_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Capacities are rounded up to this, so frames of nearby sizes share buffers.
const CAPACITY_STEP: usize = 64 * 1024;

/// Free frame buffers, shared by every connection of the process.
#[derive(Default)]
pub(crate) struct FramePool {
    free: Mutex<Free>,
}

#[derive(Default)]
struct Free {
    /// In the order they were given back, oldest first.
    buffers: VecDeque<Vec<u8>>,
    /// Sum of the free buffers' capacities.
    bytes: usize,
}

impl FramePool {
    /// Whether a frame of `length` bytes is read into a pooled buffer.
    pub(crate) fn pools(length: usize) -> bool {
        (POOLED_FRAME_MIN..=POOLED_FRAME_MAX).contains(&length)
    }

    /// An empty buffer with room for `length` bytes: the smallest free one at most a quarter plus
    /// 64 KiB larger, or a new one.
    pub(crate) fn take(&self, length: usize) -> Vec<u8> {
        assert!(FramePool::pools(length), "a frame of {length} bytes is not pooled");
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
                buffer
            }
            None => Vec::with_capacity(rounded(length)),
        };
        drop(free);
        buffer.clear();
        assert!(buffer.capacity() >= length, "a taken buffer holds the frame");
        assert!(buffer.capacity() <= slack_max(length), "a taken buffer is not much larger than the frame");
        buffer
    }

    /// Keeps `buffer` for a later frame, first freeing the buffers given back longest ago if the pool
    /// has no room for it; frees it if it is not of a pooled size.
    fn give_back(&self, buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if !FramePool::pools(capacity) {
            return;
        }
        let mut evicted = Vec::new();
        let mut free = self.lock();
        while free.bytes + capacity > POOL_BYTES_MAX {
            let oldest = free.buffers.pop_front().expect("a pool over its bound holds buffers");
            free.bytes -= oldest.capacity();
            evicted.push(oldest);
        }
        free.bytes += capacity;
        free.buffers.push_back(buffer);
        assert!(free.bytes <= POOL_BYTES_MAX, "the pool keeps at most its bound");
        drop(free);
        // Freed after the lock.
        drop(evicted);
    }

    /// The frame read into `buffer` (taken from this pool), as `Bytes` that give the buffer back when
    /// the last slice of them is dropped.
    pub(crate) fn frame(self: &Arc<FramePool>, buffer: Vec<u8>) -> Bytes {
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

/// The largest buffer a frame of `length` bytes is read into: a quarter plus 64 KiB more.
fn slack_max(length: usize) -> usize {
    length + length / 4 + CAPACITY_STEP
}

/// A frame's buffer, given back to its pool when dropped.
struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<FramePool>,
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

    fn filled(pool: &Arc<FramePool>, length: usize, byte: u8) -> Bytes {
        let mut buffer = pool.take(length);
        buffer.resize(length, byte);
        pool.frame(buffer)
    }

    /// A buffer goes back to the pool only when the last slice of its frame is dropped, and the next
    /// frame of a like size is read into it, holding only its own bytes.
    #[test]
    fn a_frame_buffer_is_used_again_once_every_slice_is_dropped() {
        let pool = Arc::new(FramePool::default());
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
        let pool = Arc::new(FramePool::default());
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
        assert!(!FramePool::pools(POOLED_FRAME_MIN - 1) && !FramePool::pools(POOLED_FRAME_MAX + 1));
    }

    /// Of the free buffers that fit, the smallest is taken; and buffers of a size no longer asked for
    /// leave a full pool as others come back, so frames of the new size are pooled again.
    #[test]
    fn the_smallest_fitting_buffer_is_taken_and_stale_sizes_age_out() {
        let pool = Arc::new(FramePool::default());
        let (larger, smaller) = (filled(&pool, 300_000, 1), filled(&pool, 260_000, 2));
        let smaller_address = smaller.as_ptr() as usize;
        drop((larger, smaller));
        assert_eq!(pool.free().0, 2);
        let taken = pool.take(250_000);
        assert_eq!(taken.as_ptr() as usize, smaller_address, "the smaller of the two that fit");

        let pool = Arc::new(FramePool::default());
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
