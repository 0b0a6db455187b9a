//! The checker's half of a simulated power loss: the manifest a broker's storage hook writes when it
//! "loses power", and applying it — cutting every file back to its durable length, which is what the
//! disk would hold after the power came back.
//!
//! The manifest is the interface with the broker (Once writes it from `once_log::power_loss`, and
//! only in a binary built with the `test-hooks` feature): one line per file, `durable length<TAB>path`.
//! The checker reads it only over this format, so it depends on no crate of the broker.

use std::path::Path;

/// The environment variable that asks the broker for the manifest (and names where to write it).
pub const MANIFEST_ENV: &str = "ONCE_TEST_POWER_LOSS_MANIFEST";

/// What [`apply`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub files: usize,
    /// Bytes cut off that were not zeros: the unsynced data thrown away. (A log writes zeros ahead of
    /// its appends, which are cut too but are not data; every record batch has bytes that are not
    /// zeros, so a batch cut shows here.)
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
        let file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        let current = file.metadata()?.len();
        if current > length {
            let mut cut = vec![0u8; usize::try_from(current - length).expect("a file's tail fits in memory")];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut cut, length)?;
            file.set_len(length)?;
            file.sync_all()?;
            applied.bytes_lost += cut.iter().filter(|byte| **byte != 0).count() as u64;
        }
        applied.files += 1;
    }
    std::fs::remove_file(manifest)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_cuts_files_to_their_durable_length_and_skips_deleted_ones() {
        let dir = std::env::temp_dir().join(format!("once-check-power-loss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (kept, cut, gone) = (dir.join("kept"), dir.join("cut"), dir.join("gone"));
        std::fs::write(&kept, b"12345").expect("write");
        std::fs::write(&cut, b"1234567\0\0\0").expect("write");
        let manifest = dir.join("manifest");
        let text = format!("5\t{}\n4\t{}\n7\t{}\n", kept.display(), cut.display(), gone.display());
        std::fs::write(&manifest, text).expect("write manifest");
        let applied = apply(&manifest).expect("apply");
        assert_eq!(applied, Applied { files: 2, bytes_lost: 3 }, "zeros cut are not data lost");
        assert_eq!(std::fs::read(&kept).expect("read"), b"12345");
        assert_eq!(std::fs::read(&cut).expect("read"), b"1234");
        assert!(!manifest.exists(), "the manifest is removed once applied");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_malformed_line_is_an_error() {
        let dir = std::env::temp_dir().join(format!("once-check-power-loss-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let manifest = dir.join("manifest");
        std::fs::write(&manifest, "no tab here\n").expect("write manifest");
        let error = apply(&manifest).expect_err("a line without a tab");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
