//! File names, small checksummed metadata files written atomically (recovery point, log start
//! offset, clean-shutdown marker), and directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, LogError};

/// Offset up to which segments and their index files are known flushed.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Written by a clean close, removed at open: its presence means no recovery scan is needed.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// First offset still readable, when it is ahead of the first segment's base offset.
pub(crate) const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Where in the active segment an unclean open may start checking batches (see
/// [`crate::Log::recovery_checkpoint_due`]): segment base offset, byte position, next offset there.
pub(crate) const RECOVERY_CHECKPOINT_FILE: &str = "recovery-checkpoint";
/// Suffix of files being written; any left at open are debris of a crash.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) const LOG_EXTENSION: &str = "log";
pub(crate) const INDEX_EXTENSION: &str = "index";
pub(crate) const TIME_INDEX_EXTENSION: &str = "timeindex";

const META_MAGIC: &[u8; 8] = b"ONCEMETA";
const META_VERSION: u16 = 1;
/// magic(8) + version(2) + kind(1) + values(8 each) + crc32c(4)
const fn meta_len(values: usize) -> usize {
    15 + 8 * values
}

/// Which metadata file; stored inside it so a file under the wrong name is not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetaKind {
    RecoveryPoint = 1,
    CleanShutdown = 2,
    LogStartOffset = 3,
    RecoveryCheckpoint = 4,
}

impl MetaKind {
    fn file_name(self) -> &'static str {
        match self {
            MetaKind::RecoveryPoint => RECOVERY_POINT_FILE,
            MetaKind::CleanShutdown => CLEAN_SHUTDOWN_FILE,
            MetaKind::LogStartOffset => LOG_START_OFFSET_FILE,
            MetaKind::RecoveryCheckpoint => RECOVERY_CHECKPOINT_FILE,
        }
    }
}

/// `{base_offset:020}.{extension}` inside `dir`.
pub(crate) fn segment_file(dir: &Path, base_offset: u64, extension: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{extension}"))
}

/// Parses `{20 digits}.{extension}` into the base offset.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, extension) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, extension))
}

/// Makes renames, creations and deletions in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path, skip_fsync: bool) -> Result<(), LogError> {
    if skip_fsync {
        return Ok(());
    }
    File::open(dir).and_then(|handle| handle.sync_all()).context(|| format!("fsync directory {}", dir.display()))
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8], skip_fsync: bool) -> Result<(), LogError> {
    write_file_durably(dir, name, bytes, skip_fsync)?;
    fsync_dir(dir, skip_fsync)
}

/// Like `write_atomic` but leaves the directory fsync to the caller (batching several renames).
pub(crate) fn write_file_durably(dir: &Path, name: &str, bytes: &[u8], skip_fsync: bool) -> Result<(), LogError> {
    let final_path = dir.join(name);
    let temp_path = dir.join(format!("{name}{TEMP_SUFFIX}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp_path)
        .context(|| format!("create {}", temp_path.display()))?;
    file.write_all(bytes).context(|| format!("write {}", temp_path.display()))?;
    if !skip_fsync {
        file.sync_all().context(|| format!("fsync {}", temp_path.display()))?;
    }
    fs::rename(&temp_path, &final_path)
        .context(|| format!("rename {} to {}", temp_path.display(), final_path.display()))
}

/// Writes one metadata value atomically and durably.
pub(crate) fn write_meta(dir: &Path, kind: MetaKind, value: u64, skip_fsync: bool) -> Result<(), LogError> {
    write_meta_values(dir, kind, &[value], skip_fsync)
}

/// Writes a metadata file of several values atomically and durably.
pub(crate) fn write_meta_values(dir: &Path, kind: MetaKind, values: &[u64], skip_fsync: bool) -> Result<(), LogError> {
    let mut bytes = Vec::with_capacity(meta_len(values.len()));
    bytes.extend_from_slice(META_MAGIC);
    bytes.extend_from_slice(&META_VERSION.to_be_bytes());
    bytes.push(kind as u8);
    values.iter().for_each(|value| bytes.extend_from_slice(&value.to_be_bytes()));
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(bytes.len(), meta_len(values.len()), "metadata file has a fixed length");
    write_atomic(dir, kind.file_name(), &bytes, skip_fsync)
}

/// Reads one metadata value. `None` if the file is absent or not valid (logged).
pub(crate) fn read_meta(dir: &Path, kind: MetaKind) -> Result<Option<u64>, LogError> {
    Ok(read_meta_values::<1>(dir, kind)?.map(|[value]| value))
}

/// Reads a metadata file of `N` values. `None` if the file is absent or not valid (logged).
pub(crate) fn read_meta_values<const N: usize>(dir: &Path, kind: MetaKind) -> Result<Option<[u64; N]>, LogError> {
    let path = dir.join(kind.file_name());
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(LogError::io(format!("read {}", path.display()), error)),
    };
    let len = meta_len(N);
    let valid = bytes.len() == len
        && &bytes[0..8] == META_MAGIC
        && bytes[8..10] == META_VERSION.to_be_bytes()
        && bytes[10] == kind as u8
        && crc32c::crc32c(&bytes[..len - 4]).to_be_bytes() == bytes[len - 4..];
    if !valid {
        tracing::warn!(path = %path.display(), length = bytes.len(), "ignoring invalid metadata file");
        return Ok(None);
    }
    let mut values = [0u64; N];
    for (value, field) in values.iter_mut().zip(bytes[11..len - 4].chunks_exact(8)) {
        *value = u64::from_be_bytes(field.try_into().expect("8 bytes"));
    }
    Ok(Some(values))
}

/// Removes a metadata file if present (no directory fsync; the caller does it).
pub(crate) fn remove_meta(dir: &Path, kind: MetaKind) -> Result<bool, LogError> {
    remove_if_present(&dir.join(kind.file_name()))
}

/// Removes a file, treating "already gone" as success. Returns whether it existed.
pub(crate) fn remove_if_present(path: &Path) -> Result<bool, LogError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
        Err(error) => Err(LogError::io(format!("remove {}", path.display()), error)),
    }
}
