//! A test hook that simulates power loss: everything written but not yet fsynced disappears.
//!
//! Enabled only when the process starts with `ONCE_TEST_POWER_LOSS_MANIFEST=PATH`. The log then
//! records, for every segment file, the length known durable: its length when the log was opened (what
//! survived the last crash), 0 when it was created, then the length each successful fdatasync made
//! durable. With `--unsafe-skip-fsync` nothing after the open counts as durable, as on a real disk.
//! [`trigger`] (the broker calls it on SIGUSR2) stops every later sync from being recorded or
//! acknowledged — the syncing thread parks until the process dies — writes the durable lengths to the
//! manifest, and kills the process with SIGKILL. [`apply`], run while the process is dead, truncates
//! each file to its durable length, which is what the disk would hold after the power came back:
//! appends are the only writes Once makes without an fsync before relying on them (index and
//! metadata files are written to a temporary file, fsynced and renamed; new segments are created and
//! their directory fsynced before use), so unsynced appended bytes are exactly what power loss takes.
//!
//! Manifest format: one line per file, `durable length<TAB>path`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The environment variable that enables the hook and names the manifest.
pub const MANIFEST_ENV: &str = "ONCE_TEST_POWER_LOSS_MANIFEST";

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
/// before anything it covers is acknowledged; once the power "went out" it never returns.
pub(crate) fn synced(files: &[(PathBuf, u64)]) {
    let Some(tracker) = tracker() else { return };
    let mut state = tracker.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if state.triggered {
        drop(state);
        park_forever();
    }
    for (path, length) in files {
        state.durable.insert(path.clone(), *length);
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

/// What [`apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub files: usize,
    pub bytes_lost: u64,
}

/// Truncates every file in the manifest to its durable length (files deleted since are skipped),
/// then removes the manifest. Run only while the process that wrote it is dead.
pub fn apply(manifest: &Path) -> std::io::Result<Applied> {
    let text = std::fs::read_to_string(manifest)?;
    let mut applied = Applied::default();
    for line in text.lines().filter(|line| !line.is_empty()) {
        let (length, path) = line.split_once('\t').ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad manifest line {line:?}"))
        })?;
        let length: u64 = length
            .parse()
            .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{line:?}: {error}")))?;
        let file = match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let current = file.metadata()?.len();
        if current > length {
            file.set_len(length)?;
            file.sync_all()?;
            applied.bytes_lost += current - length;
        }
        applied.files += 1;
    }
    std::fs::remove_file(manifest)?;
    Ok(applied)
}
