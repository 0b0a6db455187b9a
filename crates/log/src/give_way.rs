//! Cold reads give way to fdatasyncs. A catch-up reader streaming a backlog from disk fills the
//! device's queue; a writer's fdatasync, which an acknowledgement waits for, then queues behind those
//! reads (the default I/O scheduler, mq-deadline, even serves reads first). So reads go in pieces of
//! [`COLD_PIECE_BYTES`] without the kernel's readahead (8 MiB on the development machine, up to 4 MiB
//! per request), and a piece whose last page the page cache does not hold
//! ([`crate::segment::SegmentSnapshot::page_cached_at`]) first waits while an fdatasync of this
//! process is in flight — at most [`GIVE_WAY_MAX`], so that a reader beside writers that sync back to
//! back still progresses. A sync then waits behind one piece at most, not behind megabytes of reads.
//!
//! Reads the page cache serves never wait: a consumer at the tail is not slowed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest a cold read piece waits for fdatasyncs in flight.
pub const GIVE_WAY_MAX: Duration = Duration::from_millis(5);

/// Bytes of one cold read piece: at 200 MB/s about 1.3 ms of the disk, the most a sync waits for a
/// read that was already under way when it started.
pub const COLD_PIECE_BYTES: usize = 256 * 1024;

/// fdatasyncs in progress in this process.
static SYNCS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Readers waiting in [`give_way`]; a sync that ends wakes them only if there are any.
static WAITERS: AtomicUsize = AtomicUsize::new(0);
static GATE: Mutex<()> = Mutex::new(());
static SYNCS_ENDED: Condvar = Condvar::new();

/// Runs an fdatasync, counted as in flight while it runs (and no longer, even if it panics).
pub(crate) fn syncing<T>(sync: impl FnOnce() -> T) -> T {
    SYNCS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight;
    sync()
}

/// Ends a sync's count when dropped.
struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = SYNCS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "a sync ends after it started");
        // A waiter counts itself before it looks at the syncs in flight (both SeqCst): either it sees
        // this sync ended, or this sees it waiting and wakes it under the gate's lock.
        if before == 1 && WAITERS.load(Ordering::SeqCst) > 0 {
            let _gate = GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            SYNCS_ENDED.notify_all();
        }
    }
}

/// Waits while an fdatasync is in flight, at most `max`. Returns how long it waited.
pub(crate) fn give_way(max: Duration) -> Duration {
    if SYNCS_IN_FLIGHT.load(Ordering::SeqCst) == 0 {
        return Duration::ZERO;
    }
    let started = Instant::now();
    WAITERS.fetch_add(1, Ordering::SeqCst);
    {
        let gate = GATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let waited = SYNCS_ENDED.wait_timeout_while(gate, max, |_| SYNCS_IN_FLIGHT.load(Ordering::SeqCst) > 0);
        drop(waited.unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
    WAITERS.fetch_sub(1, Ordering::SeqCst);
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_a_sync_in_flight_and_no_longer() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let syncer = std::thread::spawn(move || {
            syncing(|| {
                started_tx.send(()).expect("send");
                std::thread::sleep(Duration::from_millis(50));
            })
        });
        started_rx.recv().expect("the sync started");
        let waited = give_way(Duration::from_secs(5));
        syncer.join().expect("syncer");
        assert!(waited >= Duration::from_millis(20), "waited {waited:?} for a 50 ms sync");
        assert!(waited < Duration::from_secs(2), "woken when the sync ended, not at the bound: {waited:?}");
    }

    #[test]
    fn a_reader_waits_at_most_the_bound() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<()>();
        let syncer = std::thread::spawn(move || {
            syncing(|| {
                started_tx.send(()).expect("send");
                end_rx.recv().expect("told to end");
            })
        });
        started_rx.recv().expect("the sync started");
        let waited = give_way(Duration::from_millis(30));
        end_tx.send(()).expect("end the sync");
        syncer.join().expect("syncer");
        assert!(waited >= Duration::from_millis(30), "waited the bound: {waited:?}");
        assert!(waited < Duration::from_secs(2), "and not much longer: {waited:?}");
    }
}
