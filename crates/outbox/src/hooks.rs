//! Test-only crash points. With the `test-hooks` feature, `ONCE_OUTBOX_ABORT_AFTER_ACKS=N` makes
//! the relay abort (no cleanup, as a SIGKILL would) right after the N-th batch's records are all
//! acknowledged and before its rows are retired: the next run must resend them, which makes a
//! resend certain in the tests. Without the feature the hook does nothing.

/// The variable naming the batch after whose acknowledgements the relay aborts.
pub const ABORT_AFTER_ACKS_ENV: &str = "ONCE_OUTBOX_ABORT_AFTER_ACKS";

/// Called after batch number `batch` (from 1) is acknowledged, before its rows are retired.
pub fn after_acks(batch: u64) {
    #[cfg(feature = "test-hooks")]
    if std::env::var(ABORT_AFTER_ACKS_ENV).ok().and_then(|value| value.parse::<u64>().ok()) == Some(batch) {
        eprintln!("once outbox: test hook: aborting after batch {batch}'s acknowledgements");
        std::process::abort();
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = batch;
}
