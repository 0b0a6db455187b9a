//! What the long-running database commands (`once sink`, `once outbox`) share as processes: logs on
//! stderr filtered by `ONCE_LOG`, and SIGTERM/SIGINT turned into a stop request that the command's
//! loop checks between batches.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

/// Logs to stderr at `ONCE_LOG` (default `info`), coloured only on a terminal; a line that cannot
/// be written is dropped, never a panic (crate::logging).
pub fn init_logging() -> anyhow::Result<()> {
    let filter = std::env::var("ONCE_LOG").unwrap_or_else(|_| "info".to_string());
    crate::logging::init(&filter).context("ONCE_LOG")
}

/// A flag SIGTERM and SIGINT set (instead of ending the process): finish the batch in hand, exit 0.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("listening for SIGTERM")?;
    }
    Ok(stop)
}
