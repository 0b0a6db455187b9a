//! A test hook that simulates power loss: everything written but not yet fsynced disappears.
//!
//! Compiled only with the `test-hooks` cargo feature (the test builds and the checker's broker
//! builds turn it on; a plain `cargo build --release` does not): without it [`enabled`] is `false`,
//! [`trigger`] and the log's calls that record durable lengths are empty, and none of the code
//! below is in the binary. With the feature, it is enabled only when the process starts with
//! `ONCE_TEST_POWER_LOSS_MANIFEST=PATH`. The log then
//! records, for every segment file, the length known durable: its length when the log was opened (what
//! survived the last crash), 0 when it was created, then the length each successful fdatasync made
//! durable. With `--unsafe-skip-fsync` nothing after the open counts as durable, as on a real disk.
//! [`trigger`] (the broker calls it on SIGUSR2) stops every later sync from being recorded or
//! acknowledged — the syncing thread parks until the process dies — writes the durable lengths to the
//! manifest, and kills the process with SIGKILL. The checker (`once check`, crates/check), while the
//! process is dead, throws away each file's bytes past its durable length (cut off, or zeros again),
//! which is what the disk would hold after the power came back:
//! appends (and the zeros written ahead of them, which are no data) are the only writes Once makes
//! without an fsync before relying on them (index and metadata files are written to a temporary file,
//! fsynced and renamed; new segments are created and their directory fsynced before use; segments are
//! cut past their batches and fsynced before anything relies on the cut), so unsynced appended bytes
//! are exactly what power loss takes.
//!
//! Manifest format (the interface with the checker): one line per file, `durable length<TAB>path`.

/// The environment variable that enables the hook and names the manifest.
pub const MANIFEST_ENV: &str = "ONCE_TEST_POWER_LOSS_MANIFEST";

/// Whether this build has the hook at all (the `test-hooks` feature).
pub const COMPILED: bool = cfg!(feature = "test-hooks");

#[cfg(feature = "test-hooks")]
pub use hook::{enabled, trigger};
#[cfg(feature = "test-hooks")]
pub(crate) use hook::{found, synced};

#[cfg(not(feature = "test-hooks"))]
pub use off::{enabled, trigger};
#[cfg(not(feature = "test-hooks"))]
pub(crate) use off::{found, synced};

/// Without the `test-hooks` feature: the hook's entry points, empty.
#[cfg(not(feature = "test-hooks"))]
mod off {
    use std::path::PathBuf;

    /// Always `false`: this build has no hook.
    #[inline(always)]
    pub fn enabled() -> bool {
        false
    }

    /// Does nothing: this build has no hook.
    #[inline(always)]
    pub fn trigger() {}

    #[inline(always)]
    pub(crate) fn synced(_files: &[(PathBuf, u64)]) {}

    #[inline(always)]
    pub(crate) fn found(_files: &[(PathBuf, u64)]) {}
}

#[cfg(feature = "test-hooks")]
mod hook {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};

    use super::MANIFEST_ENV;

    struct Tracker {
        manifest: PathBuf,
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        durable: BTreeMap<PathBuf, u64>,
        triggered: bool,
    }

    fn tracker() -> Option<&'static Tracker> {
        static TRACKER: OnceLock<Option<Tracker>> = OnceLock::new();
        TRACKER
            .get_or_init(|| {
                let manifest = std::env::var_os(MANIFEST_ENV).filter(|value| !value.is_empty())?;
                Some(Tracker { manifest: PathBuf::from(manifest), state: Mutex::default() })
            })
            .as_ref()
    }

    /// Whether the hook is on in this process.
    pub fn enabled() -> bool {
        tracker().is_some()
    }

    /// Records that `files` are durable up to their lengths. Called after a successful fdatasync and
    /// before anything it covers is acknowledged; once the power "went out" it never returns. A file's
    /// durable length only grows here: a sync planned before a roll may finish after the roll's own
    /// fdatasync recorded the longer length.
    pub(crate) fn synced(files: &[(PathBuf, u64)]) {
        record(files, |durable, length| *durable = (*durable).max(length));
    }

    /// Records `files` as durable up to exactly their lengths: what an open found, a segment created
    /// empty.
    pub(crate) fn found(files: &[(PathBuf, u64)]) {
        record(files, |durable, length| *durable = length);
    }

    fn record(files: &[(PathBuf, u64)], update: impl Fn(&mut u64, u64)) {
        let Some(tracker) = tracker() else { return };
        let mut state = tracker.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.triggered {
            drop(state);
            park_forever();
        }
        for (path, length) in files {
            update(state.durable.entry(path.clone()).or_insert(*length), *length);
        }
    }

    fn park_forever() -> ! {
        loop {
            std::thread::park();
        }
    }

    /// Simulates the power going out: freezes syncs, writes the manifest, SIGKILLs this process.
    /// Does nothing when the hook is off.
    pub fn trigger() {
        let Some(tracker) = tracker() else { return };
        let mut state = tracker.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.triggered = true;
        let mut text = String::new();
        for (path, length) in &state.durable {
            text.push_str(&format!("{length}\t{}\n", path.display()));
        }
        let written = std::fs::File::create(&tracker.manifest)
            .and_then(|mut file| file.write_all(text.as_bytes()).and_then(|()| file.sync_all()));
        if let Err(error) = written {
            eprintln!("power-loss hook: writing {}: {error}", tracker.manifest.display());
        }
        let _ = std::process::Command::new("kill").arg("-9").arg(std::process::id().to_string()).status();
        std::process::abort()
    }
}
