//! Test-only hooks, compiled in with the `test-hooks` feature (the release binary has none).
//!
//! `ONCE_SINK_TEST_STOP_IN_BATCH=N`: the process stops itself (SIGSTOP) inside the transaction of
//! its N-th batch — after the position row is locked (or, for the unfenced baseline, after its
//! effects ran) and before the commit. A test then moves the partitions elsewhere and resumes it
//! (SIGCONT): a zombie with a batch in hand, for certain rather than by the luck of a signal's
//! timing.

/// The variable that arms the hook.
pub const STOP_IN_BATCH_ENV: &str = "ONCE_SINK_TEST_STOP_IN_BATCH";

/// Whether this build has the hooks.
pub const COMPILED: bool = cfg!(feature = "test-hooks");

#[cfg(feature = "test-hooks")]
pub(crate) fn inside_transaction() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BATCHES: AtomicU64 = AtomicU64::new(0);
    let Some(stop_at) = std::env::var(STOP_IN_BATCH_ENV).ok().and_then(|text| text.parse::<u64>().ok()) else {
        return;
    };
    if BATCHES.fetch_add(1, Ordering::SeqCst) + 1 == stop_at {
        tracing::warn!(batch = stop_at, "test hook: stopping this process (SIGSTOP) inside the batch's transaction");
        let pid = std::process::id().to_string();
        if let Err(error) = std::process::Command::new("kill").args(["-STOP", &pid]).status() {
            tracing::warn!(%error, "test hook: kill -STOP");
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
pub(crate) fn inside_transaction() {}
