//! The checker's half of a simulated power loss: the manifest a broker's storage hook writes when it
//! "loses power", and applying it — throwing away every file's bytes past its durable length, cut or
//! zeros again ([`Image`]), which is what the disk would hold after the power came back.
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
    /// Bytes thrown away that were not zeros: the unsynced data. (A log writes zeros ahead of its
    /// appends, which are past the durable length too but are not data; every record batch has bytes
    /// that are not zeros, so a batch thrown away shows here.)
    pub bytes_lost: u64,
}

/// What the disk holds of a file's unsynced tail after the power came back: the writes that grew the
/// file gone with its new length, or, where the length was durable already (zeros a log wrote ahead
/// of its appends, then synced), the blocks as they were before the writes: zeros. A broker must
/// recover from both, and ends its log at the same batch either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// Each file cut to its durable length.
    Cut,
    /// Each file's bytes past its durable length zeros again, its length kept.
    Zeroed,
}

/// Bytes read or zeroed at a time.
const WINDOW: usize = 1 << 20;

/// Throws away every file's bytes past its durable length in the manifest (files deleted since are
/// skipped) as `image` says, then removes the manifest. Run only while the process that wrote it is
/// dead.
pub fn apply(manifest: &Path, image: Image) -> std::io::Result<Applied> {
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
            applied.bytes_lost += throw_away(&file, length, current, image)?;
            file.sync_all()?;
        }
        applied.files += 1;
    }
    std::fs::remove_file(manifest)?;
    Ok(applied)
}

/// Throws away `from..to` of `file` as `image` says, a window at a time; returns how many of those
/// bytes were not zeros.
fn throw_away(file: &std::fs::File, from: u64, to: u64, image: Image) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut window = vec![0u8; WINDOW];
    let mut lost = 0;
    let mut at = from;
    while at < to {
        let length = usize::try_from(to - at).unwrap_or(usize::MAX).min(WINDOW);
        let bytes = &mut window[..length];
        file.read_exact_at(bytes, at)?;
        lost += bytes.iter().filter(|byte| **byte != 0).count() as u64;
        if image == Image::Zeroed {
            bytes.fill(0);
            file.write_all_at(bytes, at)?;
        }
        at += length as u64;
    }
    if image == Image::Cut {
        file.set_len(from)?;
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_cuts_files_to_their_durable_length_and_skips_deleted_ones() {
        let dir = std::env::temp_dir().join(format!("once-check-power-loss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (kept, cut, gone) = (dir.join("kept"), dir.join("cut"), dir.join("gone"));
        let manifest = dir.join("manifest");
        let text = format!("5\t{}\n4\t{}\n7\t{}\n", kept.display(), cut.display(), gone.display());
        // A tail longer than a window, with zeros (written ahead) among the unsynced bytes.
        let mut long: Vec<u8> = b"1234567\0\0\0".to_vec();
        long.extend((0..(WINDOW + 10)).map(|at| u8::from(at % 3 == 0)));
        let long_lost = long[4..].iter().filter(|byte| **byte != 0).count() as u64;
        for image in [Image::Cut, Image::Zeroed] {
            std::fs::write(&kept, b"12345").expect("write");
            std::fs::write(&cut, &long).expect("write");
            std::fs::write(&manifest, &text).expect("write manifest");
            let applied = apply(&manifest, image).expect("apply");
            assert_eq!(applied, Applied { files: 2, bytes_lost: long_lost }, "{image:?}: zeros are not data lost");
            assert_eq!(std::fs::read(&kept).expect("read"), b"12345");
            let left = std::fs::read(&cut).expect("read");
            match image {
                Image::Cut => assert_eq!(left, b"1234"),
                Image::Zeroed => {
                    assert_eq!(left.len(), long.len(), "the length kept");
                    assert!(left[..4] == *b"1234" && left[4..].iter().all(|byte| *byte == 0), "zeros past 4");
                }
            }
            assert!(!manifest.exists(), "the manifest is removed once applied");
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_malformed_line_is_an_error() {
        let dir = std::env::temp_dir().join(format!("once-check-power-loss-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let manifest = dir.join("manifest");
        std::fs::write(&manifest, "no tab here\n").expect("write manifest");
        let error = apply(&manifest, Image::Cut).expect_err("a line without a tab");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
