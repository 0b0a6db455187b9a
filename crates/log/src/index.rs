//! Sparse per-segment indexes, kept in memory, persisted as checksummed files.
//!
//! Offset index: `(relative offset u32, file position u32)` of a batch start, one every
//! `index_interval_bytes`. Time index: `(max timestamp so far i64, relative offset u32)`, added
//! when a batch raises the segment's max timestamp, at most once per `index_interval_bytes`.
//! An entry `(T, r)` promises: every batch up to and including the one at `r` has max timestamp
//! `<= T`, so a timestamp search for `t > T` may start at `r`.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::batch::BatchHeader;
use crate::error::LogError;
use crate::meta::{self, INDEX_EXTENSION, TIME_INDEX_EXTENSION};

const OFFSET_INDEX_MAGIC: &[u8; 8] = b"ONCE-IDX";
const TIME_INDEX_MAGIC: &[u8; 8] = b"ONCE-TIX";
const INDEX_VERSION: u16 = 1;
/// magic(8) version(2) base_offset(8) segment_bytes(8) next_offset(8) max_timestamp(8)
/// max_timestamp_offset(8) entry_count(4)
const INDEX_HEADER_LEN: usize = 54;
const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;
/// Stands for "no timestamp yet" in the file.
const NO_TIMESTAMP: i64 = i64::MIN;

/// In-memory indexes and timestamp summary of one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// `(relative offset, position)` of batch starts, both strictly increasing.
    pub offset_entries: Vec<(u32, u32)>,
    /// `(running max timestamp, relative offset)`, both strictly increasing.
    pub time_entries: Vec<(i64, u32)>,
    /// Largest batch max timestamp in the segment and the last offset of that batch.
    pub max_timestamp: Option<(i64, u64)>,
    bytes_since_offset_entry: u64,
    bytes_since_time_entry: u64,
}

/// What an index file pair says about its segment, besides the entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LoadedIndex {
    pub index: SegmentIndex,
    pub next_offset: u64,
}

impl SegmentIndex {
    /// Records a batch appended (or found by recovery) at `position`.
    pub fn on_batch(&mut self, segment_base: u64, header: &BatchHeader, position: u64, interval: u32) {
        let relative = relative_offset(segment_base, header.base_offset);
        let position32 = u32::try_from(position);
        let position32 = position32.expect("segment positions fit u32: segment_bytes_max is capped");
        let length = header.total_len() as u64;
        if position > 0 && self.bytes_since_offset_entry >= u64::from(interval) {
            if let Some(&(last_relative, last_position)) = self.offset_entries.last() {
                assert!(last_relative < relative, "offset index entries increase");
                assert!(last_position < position32, "offset index positions increase");
            }
            self.offset_entries.push((relative, position32));
            self.bytes_since_offset_entry = 0;
        }
        self.bytes_since_offset_entry += length;
        let raises = self.max_timestamp.is_none_or(|(max, _)| header.max_timestamp > max);
        if raises {
            let last_offset = u64::try_from(header.last_offset()).unwrap_or(0);
            self.max_timestamp = Some((header.max_timestamp, last_offset));
            if self.time_entries.is_empty() || self.bytes_since_time_entry >= u64::from(interval) {
                self.time_entries.push((header.max_timestamp, relative));
                self.bytes_since_time_entry = 0;
            }
        }
        self.bytes_since_time_entry += length;
    }

    /// The indexed batch start at or before `relative`: `(relative offset, position)`.
    pub fn lookup(&self, relative: u32) -> (u32, u32) {
        let after = self.offset_entries.partition_point(|&(entry, _)| entry <= relative);
        if after == 0 {
            (0, 0)
        } else {
            self.offset_entries[after - 1]
        }
    }

    /// Relative offset of a batch from which a search for the first batch with max timestamp
    /// `>= timestamp` may start (0 = segment start).
    pub fn time_lookup(&self, timestamp: i64) -> u32 {
        let below = self.time_entries.partition_point(|&(entry, _)| entry < timestamp);
        if below == 0 {
            0
        } else {
            self.time_entries[below - 1].1
        }
    }
}

/// `offset - segment_base` as the u32 the index stores.
pub(crate) fn relative_offset(segment_base: u64, offset: i64) -> u32 {
    let offset = u64::try_from(offset);
    let offset = offset.expect("stored batch offsets are non-negative");
    assert!(offset >= segment_base, "a batch offset is not below its segment's base offset");
    let relative = u32::try_from(offset - segment_base);
    relative.expect("relative offsets fit u32: the log rolls before they overflow")
}

fn encode_header(
    magic: &[u8; 8],
    base: u64,
    segment_bytes: u64,
    next_offset: u64,
    index: &SegmentIndex,
    count: usize,
) -> Vec<u8> {
    let (max_timestamp, max_offset) = index.max_timestamp.unwrap_or((NO_TIMESTAMP, 0));
    let mut bytes = Vec::with_capacity(INDEX_HEADER_LEN + count * TIME_ENTRY_LEN + 4);
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    bytes.extend_from_slice(&base.to_be_bytes());
    bytes.extend_from_slice(&segment_bytes.to_be_bytes());
    bytes.extend_from_slice(&next_offset.to_be_bytes());
    bytes.extend_from_slice(&max_timestamp.to_be_bytes());
    bytes.extend_from_slice(&max_offset.to_be_bytes());
    let count = u32::try_from(count).expect("index entry count fits u32");
    bytes.extend_from_slice(&count.to_be_bytes());
    bytes
}

/// Writes both index files of a segment (temp + fsync + rename; the caller fsyncs the directory).
pub(crate) fn persist(
    dir: &Path,
    base: u64,
    segment_bytes: u64,
    next_offset: u64,
    index: &SegmentIndex,
    skip_fsync: bool,
) -> Result<(), LogError> {
    let mut offsets =
        encode_header(OFFSET_INDEX_MAGIC, base, segment_bytes, next_offset, index, index.offset_entries.len());
    for &(relative, position) in &index.offset_entries {
        offsets.extend_from_slice(&relative.to_be_bytes());
        offsets.extend_from_slice(&position.to_be_bytes());
    }
    let crc = crc32c::crc32c(&offsets);
    offsets.extend_from_slice(&crc.to_be_bytes());
    let mut times = encode_header(TIME_INDEX_MAGIC, base, segment_bytes, next_offset, index, index.time_entries.len());
    for &(timestamp, relative) in &index.time_entries {
        times.extend_from_slice(&timestamp.to_be_bytes());
        times.extend_from_slice(&relative.to_be_bytes());
    }
    let crc = crc32c::crc32c(&times);
    times.extend_from_slice(&crc.to_be_bytes());
    meta::write_file_durably(dir, &format!("{base:020}.{INDEX_EXTENSION}"), &offsets, skip_fsync)?;
    meta::write_file_durably(dir, &format!("{base:020}.{TIME_INDEX_EXTENSION}"), &times, skip_fsync)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut array = [0u8; 8];
    array.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(array)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut array = [0u8; 4];
    array.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(array)
}

/// Header fields of one index file, after its checksum and length were verified.
struct FileSummary<'a> {
    next_offset: u64,
    max_timestamp: Option<(i64, u64)>,
    entries: &'a [u8],
}

/// Verifies magic, version, length, CRC, base offset and covered segment size.
fn check_file<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    entry_len: usize,
    base: u64,
    segment_bytes: u64,
) -> Result<FileSummary<'a>, String> {
    if bytes.len() < INDEX_HEADER_LEN + 4 {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let count = u32_at(bytes, 50) as usize;
    let expected_len = INDEX_HEADER_LEN + count.saturating_mul(entry_len) + 4;
    if bytes.len() != expected_len {
        return Err(format!("{} bytes but {count} entries need {expected_len}", bytes.len()));
    }
    let body = bytes.len() - 4;
    if crc32c::crc32c(&bytes[..body]) != u32_at(bytes, body) {
        return Err("CRC32C mismatch".to_string());
    }
    if &bytes[0..8] != magic || bytes[8..10] != INDEX_VERSION.to_be_bytes() {
        return Err("wrong magic or version".to_string());
    }
    if u64_at(bytes, 10) != base {
        return Err(format!("base offset {} is not {base}", u64_at(bytes, 10)));
    }
    if u64_at(bytes, 18) != segment_bytes {
        return Err(format!("stale: covers {} segment bytes, segment has {segment_bytes}", u64_at(bytes, 18)));
    }
    let max_timestamp = u64_at(bytes, 34) as i64;
    let max_timestamp = (max_timestamp != NO_TIMESTAMP).then(|| (max_timestamp, u64_at(bytes, 42)));
    Ok(FileSummary { next_offset: u64_at(bytes, 26), max_timestamp, entries: &bytes[INDEX_HEADER_LEN..body] })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(LogError::io(format!("read {}", path.display()), error)),
    }
}

/// Loads both index files of a segment if they are present, valid and describe exactly
/// `segment_bytes` bytes of it. `Ok(None)` means "rebuild by scanning" (reason logged).
pub(crate) fn load(dir: &Path, base: u64, segment_bytes: u64) -> Result<Option<LoadedIndex>, LogError> {
    let offset_path = meta::segment_file(dir, base, INDEX_EXTENSION);
    let time_path = meta::segment_file(dir, base, TIME_INDEX_EXTENSION);
    let (Some(offset_bytes), Some(time_bytes)) = (read_optional(&offset_path)?, read_optional(&time_path)?) else {
        tracing::debug!(base_offset = base, "index files missing");
        return Ok(None);
    };
    match decode(&offset_bytes, &time_bytes, base, segment_bytes) {
        Ok(loaded) => Ok(Some(loaded)),
        Err(reason) => {
            tracing::warn!(base_offset = base, %reason, "index files unusable; rebuilding from the segment");
            Ok(None)
        }
    }
}

fn decode(offset_bytes: &[u8], time_bytes: &[u8], base: u64, segment_bytes: u64) -> Result<LoadedIndex, String> {
    let offsets = check_file(offset_bytes, OFFSET_INDEX_MAGIC, OFFSET_ENTRY_LEN, base, segment_bytes)?;
    let times = check_file(time_bytes, TIME_INDEX_MAGIC, TIME_ENTRY_LEN, base, segment_bytes)?;
    if offsets.next_offset != times.next_offset || offsets.max_timestamp != times.max_timestamp {
        return Err("offset and time index disagree".to_string());
    }
    if offsets.next_offset < base || (segment_bytes == 0) != (offsets.next_offset == base) {
        return Err(format!("next offset {} inconsistent with base {base}", offsets.next_offset));
    }
    let mut index = SegmentIndex { max_timestamp: offsets.max_timestamp, ..SegmentIndex::default() };
    for entry in offsets.entries.chunks_exact(OFFSET_ENTRY_LEN) {
        let (relative, position) = (u32_at(entry, 0), u32_at(entry, 4));
        let increasing = index.offset_entries.last().is_none_or(|&(r, p)| r < relative && p < position);
        if !increasing || u64::from(position) >= segment_bytes || base + u64::from(relative) >= offsets.next_offset {
            return Err(format!("offset index entry ({relative}, {position}) out of order or range"));
        }
        index.offset_entries.push((relative, position));
    }
    for entry in times.entries.chunks_exact(TIME_ENTRY_LEN) {
        let (timestamp, relative) = (u64_at(entry, 0) as i64, u32_at(entry, 8));
        let increasing = index.time_entries.last().is_none_or(|&(t, r)| t < timestamp && r < relative);
        if !increasing || base + u64::from(relative) >= offsets.next_offset {
            return Err(format!("time index entry ({timestamp}, {relative}) out of order or range"));
        }
        index.time_entries.push((timestamp, relative));
    }
    Ok(LoadedIndex { index, next_offset: offsets.next_offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            offset_entries: vec![(3, 100), (9, 250)],
            time_entries: vec![(1_000, 0), (2_000, 9)],
            max_timestamp: Some((2_500, 12)),
            ..SegmentIndex::default()
        }
    }

    #[test]
    fn persist_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        persist(dir.path(), 40, 300, 53, &sample(), true).expect("persist");
        let loaded = load(dir.path(), 40, 300).expect("load").expect("valid");
        assert_eq!(loaded.next_offset, 53);
        assert_eq!(loaded.index.offset_entries, sample().offset_entries);
        assert_eq!(loaded.index.time_entries, sample().time_entries);
        assert_eq!(loaded.index.max_timestamp, Some((2_500, 12)));
    }

    #[test]
    fn stale_or_corrupt_index_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        persist(dir.path(), 40, 300, 53, &sample(), true).expect("persist");
        assert!(load(dir.path(), 40, 301).expect("load").is_none(), "segment grew: stale");
        let path = meta::segment_file(dir.path(), 40, INDEX_EXTENSION);
        let mut bytes = fs::read(&path).expect("read");
        for position in 0..bytes.len() {
            bytes[position] ^= 0x01;
            fs::write(&path, &bytes).expect("write");
            assert!(load(dir.path(), 40, 300).expect("load").is_none(), "flip at {position} detected");
            bytes[position] ^= 0x01;
        }
        fs::write(&path, &bytes).expect("write");
        assert!(load(dir.path(), 40, 300).expect("load").is_some());
    }

    #[test]
    fn lookups_pick_the_entry_at_or_before() {
        let index = sample();
        assert_eq!(index.lookup(0), (0, 0));
        assert_eq!(index.lookup(3), (3, 100));
        assert_eq!(index.lookup(8), (3, 100));
        assert_eq!(index.lookup(100), (9, 250));
        assert_eq!(index.time_lookup(500), 0);
        assert_eq!(index.time_lookup(1_000), 0);
        assert_eq!(index.time_lookup(1_001), 0);
        assert_eq!(index.time_lookup(2_001), 9);
    }
}
