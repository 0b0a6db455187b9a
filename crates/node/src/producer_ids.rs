//! Producer ids unique across restarts: allocated from blocks reserved durably before use.
//!
//! `<data>/producer-ids` holds the first id not yet reserved. Taking a block writes the new bound
//! (atomically, fsynced) before any id of the block is handed out, so after a crash the next start
//! continues above every id ever given out; ids reserved but unused at the crash are skipped.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::topics::{write_atomically, TopicError};

/// Ids reserved per write of the bound.
const BLOCK_IDS: i64 = 1000;

pub struct ProducerIdAllocator {
    path: PathBuf,
    /// (next id to hand out, first id not reserved).
    range: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn open(data_dir: &Path) -> Result<ProducerIdAllocator, TopicError> {
        let path = data_dir.join("producer-ids");
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|error| TopicError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(TopicError::Io { path, source }),
        };
        Ok(ProducerIdAllocator { path, range: Mutex::new((reserved, reserved)) })
    }

    /// A producer id never handed out before, by this broker or any earlier run on the same data.
    pub fn allocate(&self) -> Result<i64, TopicError> {
        let mut range = self.range.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (next, reserved) = *range;
        if next == reserved {
            let bound = reserved
                .checked_add(BLOCK_IDS)
                .ok_or_else(|| TopicError::InvalidConfig("producer ids exhausted".into()))?;
            write_atomically(&self.path, bound.to_string().as_bytes())?;
            range.1 = bound;
        }
        range.0 = next + 1;
        assert!(range.0 <= range.1, "handed-out ids stay below the durable bound");
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = ProducerIdAllocator::open(dir.path()).expect("open");
        let a: Vec<i64> = (0..1500).map(|_| first.allocate().expect("allocate")).collect();
        assert!(a.windows(2).all(|pair| pair[1] == pair[0] + 1));
        drop(first);
        let second = ProducerIdAllocator::open(dir.path()).expect("reopen");
        let b = second.allocate().expect("allocate");
        assert!(b > *a.last().expect("ids"), "no id is reused after a restart");
    }
}
