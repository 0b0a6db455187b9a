//! Which file system a log lives on, where that changes what the log writes.
//!
//! Zeros written ahead of the appends (`LogConfig::zero_ahead_bytes`) pay on file systems that
//! overwrite blocks in place (ext4, XFS): an append over zeros the file already has leaves no new
//! size or block allocation for its fdatasync to journal. On a copy-on-write file system (btrfs,
//! ZFS, bcachefs) every overwrite allocates new blocks and updates the trees above them anyway, so the
//! zeros are only bytes written twice; in memory (tmpfs, ramfs) an fdatasync writes nothing, so they
//! are only memory. On those the log writes none, whatever the configured step.

use std::path::Path;

/// The `statfs` magic numbers (`f_type`) of the file systems on which zeros ahead do not pay, and
/// their names (Linux's `include/uapi/linux/magic.h`; ZFS's and bcachefs's are their modules').
const NO_ZEROS_AHEAD: [(u32, &str); 5] = [
    (0x9123_683E, "btrfs"),
    (0x2FC1_2FC1, "ZFS"),
    (0xCA45_1A4E, "bcachefs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58F6, "ramfs"),
];

/// The name of the file system `dir` is on if zeros written ahead of the appends do not pay there
/// (module docs); `None` if they do, or if `statfs` fails (the log's own file operations then
/// report what is wrong).
pub fn zeros_ahead_unsuited(dir: &Path) -> Option<&'static str> {
    let stat = rustix::fs::statfs(dir).ok()?;
    // The magic numbers are 32-bit; `f_type` is a wider signed word on 64-bit targets.
    unsuited(stat.f_type as u32)
}

/// [`zeros_ahead_unsuited`] of a `statfs` magic number.
fn unsuited(f_type: u32) -> Option<&'static str> {
    NO_ZEROS_AHEAD.iter().find(|(magic, _)| *magic == f_type).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_on_write_and_memory_file_systems_take_no_zeros_ahead() {
        assert_eq!(unsuited(0x9123_683E), Some("btrfs"));
        assert_eq!(unsuited(0x2FC1_2FC1), Some("ZFS"));
        assert_eq!(unsuited(0xCA45_1A4E), Some("bcachefs"));
        assert_eq!(unsuited(0x0102_1994), Some("tmpfs"));
        assert_eq!(unsuited(0x8584_58F6), Some("ramfs"));
        // ext4 (and ext2/3), XFS, overlayfs (a container's root, over one of those): zeros pay.
        assert_eq!(unsuited(0xEF53), None);
        assert_eq!(unsuited(0x5846_5342), None);
        assert_eq!(unsuited(0x794C_7630), None);
    }

    #[test]
    fn a_directory_that_cannot_be_looked_at_is_not_called_unsuited() {
        assert_eq!(zeros_ahead_unsuited(Path::new("/nonexistent/once-log")), None);
    }
}
