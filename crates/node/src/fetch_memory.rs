//! Record bytes that Fetch responses hold between their read and their last byte written, across every
//! connection, and how much a new fetch may read. A connection holds at most about twice
//! `fetch_bytes_max` (its own bound, in the Kafka edge), but a thousand connections whose clients stopped
//! reading would still hold tens of GiB; so once the responses held reach the budget
//! (`queued_request_bytes_max`, the size of the requests' budget), new fetches read at most
//! what is left of it down to [`FETCH_MEMORY_FLOOR`] (and, as always, at least one whole batch): every
//! consumer keeps progressing, in smaller steps, and the memory stays near the budget plus two small
//! reads per connection (one being written, one waiting). Near, not within: the count is of record
//! bytes, and a pooled read buffer may be up to twice the bytes it holds. A read's reservation becomes
//! its response's count in one step ([`Held::keep`]), so no other read can take those bytes between
//! the read and the response's queueing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a fetch may read when the budget is spent: librdkafka's default `max.partition.fetch.bytes`.
pub const FETCH_MEMORY_FLOOR: usize = 1024 * 1024;

/// The record bytes held by Fetch responses not yet written, against a budget.
#[derive(Debug)]
pub struct FetchMemory {
    held: AtomicUsize,
    budget: usize,
}

impl FetchMemory {
    pub fn new(budget: usize) -> FetchMemory {
        assert!(budget > 0, "a fetch memory budget of 0 bytes");
        FetchMemory { held: AtomicUsize::new(0), budget }
    }

    /// What a read of at most `max_bytes` may take while `held` bytes are held: what is left of the
    /// budget, at least [`FETCH_MEMORY_FLOOR`], at most `max_bytes`.
    fn grant(&self, held: usize, max_bytes: usize) -> usize {
        max_bytes.min(self.budget.saturating_sub(held).max(FETCH_MEMORY_FLOOR))
    }

    /// Record bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// For a read of at most `max_bytes`: the bytes it may read now (`max_bytes`, or less while the
    /// budget is spent, down to [`FETCH_MEMORY_FLOOR`]), counted as held until the guard is dropped. Taken in one
    /// step, so reads starting together cannot each see the whole room left.
    pub fn reserve(self: &Arc<Self>, max_bytes: usize) -> (usize, Held) {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let granted = self.grant(held, max_bytes);
            match self.held.compare_exchange_weak(held, held + granted, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (granted, Held { memory: self.clone(), bytes: granted }),
                Err(now) => held = now,
            }
        }
    }

    /// Counts `bytes` as held until the returned guard is dropped (once the response is written or
    /// dropped unwritten).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Held { memory: self.clone(), bytes }
    }
}

/// Bytes counted in [`FetchMemory`] while it lives.
#[derive(Debug)]
pub struct Held {
    memory: Arc<FetchMemory>,
    bytes: usize,
}

impl Held {
    /// Holds `bytes` instead, in one step: a read's reservation becomes its response's record bytes
    /// (fewer, or one batch more: KIP-74) with no moment at which another read could take them.
    pub fn keep(mut self, bytes: usize) -> Held {
        if bytes >= self.bytes {
            self.memory.held.fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            let before = self.memory.held.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
            assert!(before >= self.bytes, "held {before} bytes, {} of them by this guard", self.bytes);
        }
        self.bytes = bytes;
        self
    }

    /// The bytes it counts.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let before = self.memory.held.fetch_sub(self.bytes, Ordering::Relaxed);
        assert!(before >= self.bytes, "held {before} bytes, releasing {}", self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_shrink_to_the_floor_while_responses_are_held_and_grow_back() {
        let memory = Arc::new(FetchMemory::new(10 * FETCH_MEMORY_FLOOR));
        let all = |memory: &Arc<FetchMemory>| memory.reserve(usize::MAX).0;
        assert_eq!(all(&memory), 10 * FETCH_MEMORY_FLOOR, "all of it, at first");
        let first = memory.hold(4 * FETCH_MEMORY_FLOOR);
        assert_eq!(all(&memory), 6 * FETCH_MEMORY_FLOOR, "what is left");
        let second = memory.hold(7 * FETCH_MEMORY_FLOOR);
        assert_eq!(all(&memory), FETCH_MEMORY_FLOOR, "past the budget: the floor, not nothing");
        assert_eq!(memory.held(), 11 * FETCH_MEMORY_FLOOR, "the reservations above were given back");
        drop(first);
        drop(second);
        assert_eq!((memory.held(), all(&memory)), (0, 10 * FETCH_MEMORY_FLOOR), "all given back");
    }

    #[test]
    fn reads_reserve_what_is_left_and_the_floor_past_it() {
        let memory = Arc::new(FetchMemory::new(10 * FETCH_MEMORY_FLOOR));
        let (first, _first) = memory.reserve(6 * FETCH_MEMORY_FLOOR);
        assert_eq!(first, 6 * FETCH_MEMORY_FLOOR, "all it asks for, while there is room");
        let (second, _second) = memory.reserve(6 * FETCH_MEMORY_FLOOR);
        assert_eq!(second, 4 * FETCH_MEMORY_FLOOR, "what is left");
        let (third, third_held) = memory.reserve(6 * FETCH_MEMORY_FLOOR);
        assert_eq!(third, FETCH_MEMORY_FLOOR, "the floor once it is spent");
        let (small, _small) = memory.reserve(1000);
        assert_eq!(small, 1000, "never more than asked for");
        assert_eq!(memory.held(), 11 * FETCH_MEMORY_FLOOR + 1000);
        drop(third_held);
        assert_eq!(memory.held(), 10 * FETCH_MEMORY_FLOOR + 1000, "a guard gives back what it reserved");
    }

    #[test]
    fn a_reservation_kept_as_fewer_or_more_bytes_counts_those() {
        let memory = Arc::new(FetchMemory::new(10 * FETCH_MEMORY_FLOOR));
        let (granted, reserved) = memory.reserve(6 * FETCH_MEMORY_FLOOR);
        let other = memory.hold(FETCH_MEMORY_FLOOR);
        let kept = reserved.keep(2 * FETCH_MEMORY_FLOOR);
        assert_eq!(granted, 6 * FETCH_MEMORY_FLOOR);
        assert_eq!((kept.bytes(), memory.held()), (2 * FETCH_MEMORY_FLOOR, 3 * FETCH_MEMORY_FLOOR), "fewer");
        let kept = kept.keep(7 * FETCH_MEMORY_FLOOR);
        assert_eq!(memory.held(), 8 * FETCH_MEMORY_FLOOR, "more (a batch past the reservation)");
        drop(kept);
        assert_eq!(memory.held(), FETCH_MEMORY_FLOOR, "all it counted given back, the other guard's kept");
        drop(other);
        assert_eq!(memory.held(), 0);
    }

    #[test]
    fn concurrent_reservations_never_share_the_room() {
        let memory = Arc::new(FetchMemory::new(64 * FETCH_MEMORY_FLOOR));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let memory = memory.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .map(|_| {
                            let (granted, held) = memory.reserve(16 * FETCH_MEMORY_FLOOR);
                            // Past the budget only by the floor of each reservation in flight (8):
                            // reads that saw the same room would reach 8 × 16.
                            let now = memory.held();
                            assert!(now <= (64 + 8) * FETCH_MEMORY_FLOOR, "{now} bytes held at once");
                            std::thread::yield_now();
                            drop(held);
                            granted
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        let granted: usize = threads.into_iter().map(|thread| thread.join().expect("thread")).sum();
        assert!(granted > 0, "reservations were granted");
        assert_eq!(memory.held(), 0, "every reservation given back");
        let (all, _all) = memory.reserve(usize::MAX);
        assert_eq!(all, 64 * FETCH_MEMORY_FLOOR, "the whole budget once nothing is held");
    }
}
