//! One segment: a `.log` file of batches back to back plus its in-memory indexes. Positional
//! reads and writes only (`FileExt`, `pwritev`), so readers never move a shared cursor.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::batch::{self, BatchHeader, BATCH_HEADER_LEN};
use crate::error::{IoContext, LogError};
use crate::index::{self, LoadedIndex, SegmentIndex};
use crate::meta::{self, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};

/// Recovery reads segments in chunks of this size (or one batch, if larger).
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// One segment file and what we know about its contents.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first batch; also the file name.
    pub base_offset: u64,
    /// Opened read + write; written only at `size` (a batch, then maybe zeros ahead of it). Shared
    /// with reads planned under the log's lock and executed outside it ([`SegmentSnapshot`]), which
    /// keep the file open while they read, even if retention deletes it meanwhile.
    pub file: Arc<File>,
    /// Bytes of whole, valid batches in the file.
    pub size: u64,
    /// The file's length, or more (after a failed write of zeros): at least `size`; the bytes past
    /// `size` are zeros this process wrote ahead of the appends (`LogConfig::zero_ahead_bytes`). Past a
    /// failed batch write they are unknown, but the log has latched and appends no more.
    pub file_len: u64,
    /// Writing zeros ahead failed once in this segment (a full disk): no more are tried.
    zeros_failed: bool,
    /// Offset after the last batch (== `base_offset` when empty).
    pub next_offset: u64,
    /// Sparse offset and time indexes.
    pub index: SegmentIndex,
    /// Wall clock of the first append (or first batch's max timestamp after reopen); drives
    /// roll-by-age.
    pub first_batch_time_ms: Option<i64>,
    /// Segment size the index files on disk describe, if they are current.
    pub persisted_size: Option<u64>,
}

/// What a validating scan of a segment file found.
pub(crate) struct ScanResult {
    pub index: SegmentIndex,
    /// Bytes of valid batches from the start of the file.
    pub valid_bytes: u64,
    pub next_offset: u64,
    pub first_max_timestamp: Option<i64>,
    /// Why the scan stopped before the end of the file, if it did.
    pub problem: Option<String>,
    /// Bytes at the start taken on a recovery checkpoint's word: headers walked, batches not checked.
    pub walked_bytes: u64,
    /// Bytes after the batches that are all zeros (written ahead of the appends, `Segment::append`):
    /// the end of the batches, not a problem; cut off by recovery.
    pub zeros_after: u64,
}

/// A recovery checkpoint of a segment: its first `position` bytes are whole batches, fsynced, ending
/// before `next_offset` (see `Log::recovery_checkpoint_due`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub base_offset: u64,
    pub position: u64,
    pub next_offset: u64,
}

/// Bytes read at a time by the walk over a checkpoint's batches (headers only): a page or two.
const WALK_WINDOW_BYTES: usize = 8 * 1024;

/// Opens an existing segment file read + write.
pub(crate) fn open_file(dir: &Path, base_offset: u64) -> Result<(File, u64), LogError> {
    let path = meta::segment_file(dir, base_offset, LOG_EXTENSION);
    let file =
        OpenOptions::new().read(true).write(true).open(&path).context(|| format!("open segment {}", path.display()))?;
    let length = file.metadata().context(|| format!("stat segment {}", path.display()))?.len();
    Ok((file, length))
}

impl Segment {
    /// Creates a new, empty segment file. The caller fsyncs the directory.
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment, LogError> {
        let path = meta::segment_file(dir, base_offset, LOG_EXTENSION);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .context(|| format!("create segment {}", path.display()))?;
        Ok(Segment::from_parts(
            base_offset,
            file,
            0,
            LoadedIndex { index: SegmentIndex::default(), next_offset: base_offset },
            None,
        ))
    }

    /// The segment file's path in `dir`.
    pub(crate) fn path(&self, dir: &Path) -> std::path::PathBuf {
        meta::segment_file(dir, self.base_offset, LOG_EXTENSION)
    }

    /// A segment whose index files were loaded and describe all `size` bytes, the file's length.
    pub fn from_parts(
        base_offset: u64,
        file: File,
        size: u64,
        loaded: LoadedIndex,
        first_batch_time_ms: Option<i64>,
    ) -> Segment {
        assert!(loaded.next_offset >= base_offset, "a segment does not end before it starts");
        Segment {
            base_offset,
            file: Arc::new(file),
            size,
            file_len: size,
            zeros_failed: false,
            next_offset: loaded.next_offset,
            index: loaded.index,
            first_batch_time_ms,
            persisted_size: None,
        }
    }

    /// Appends one already validated batch with its base offset assigned, given as its pieces in
    /// order (`ValidBatch::parts`: the rewritten header, then the records section it shares with the
    /// request), written with one system call. On error the file may hold a partial batch past
    /// `size`; the caller latches.
    ///
    /// With `zero_ahead` > 0, a batch that ends where the file does is followed by zeros, up to the
    /// next multiple of a step past its end: `zero_ahead`, or less while the segment is smaller (its
    /// size rounded up to a power of two, at least a page), so a little-used partition keeps little
    /// disk in zeros; never past `limit`, the segment's size limit. The appends that follow overwrite
    /// those blocks, so their fdatasyncs flush data only, where an append that grows the file also
    /// journals its new size (and allocates blocks) at every fdatasync: 30–40 % of a small append's
    /// fdatasync on ext4 (docs/benchmarks.md, session 30). The zeros are a speed-up only: they need
    /// not be durable, recovery takes an all-zero tail for the end of the batches, and a failure to
    /// write them (a full disk) is logged, not an error: the appends then grow the file as before.
    pub fn append(
        &mut self,
        parts: [&[u8]; 2],
        header: &BatchHeader,
        now_ms: i64,
        interval: u32,
        zero_ahead: u64,
        limit: u64,
    ) -> Result<(), LogError> {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        assert_eq!(header.base_offset as u64, self.next_offset, "batches in a segment are contiguous");
        assert_eq!(header.total_len(), length, "header length matches the bytes written");
        assert!(self.file_len >= self.size, "the file holds every batch appended");
        write_all_at(&self.file, parts, self.size)
            .context(|| format!("write batch at offset {} to segment {}", self.next_offset, self.base_offset))?;
        let end = self.size + length as u64;
        self.file_len = self.file_len.max(end);
        if zero_ahead > 0 && end == self.file_len && end < limit && !self.zeros_failed {
            let step = zero_ahead.min(end.next_power_of_two().max(ZERO_STEP_MIN));
            self.write_zeros_ahead(end, ((end / step + 1) * step).min(limit));
        }
        self.index.on_batch(self.base_offset, header, self.size, interval);
        if self.size == 0 {
            self.first_batch_time_ms = Some(now_ms);
        }
        self.size = end;
        self.next_offset = header.last_offset() as u64 + 1;
        self.persisted_size = None;
        assert!(self.file_len >= self.size, "the zeros ahead start at or after the batches' end");
        Ok(())
    }

    /// Writes zeros from `end` (the file's end, after the last batch) to `to`. A failure leaves only
    /// zeros past `end`, if anything (all this writes), and is not the append's: it is logged, `to`
    /// kept as a bound on the file's length (a cut to the batches then still cuts whatever was
    /// written), and no more zeros are tried in this segment.
    fn write_zeros_ahead(&mut self, end: u64, to: u64) {
        assert!(end == self.file_len && end < to, "zeros go after the file's end");
        if let Err(error) = write_zeros_at(&self.file, end, to - end) {
            tracing::warn!(segment = self.base_offset, position = end, %error,
                "could not write zeros ahead of the appends; this segment grows with each append instead");
            self.zeros_failed = true;
        }
        self.file_len = to;
    }

    /// Cuts the zeros written ahead off the file (a roll, a clean close: a segment no longer appended
    /// to ends where its batches do). True if there were any; the caller fsyncs the file (the
    /// new length is then durable) before it counts on it, as the index files do.
    pub fn trim_zeros_ahead(&mut self) -> Result<bool, LogError> {
        if self.file_len == self.size {
            return Ok(false);
        }
        assert!(self.file_len > self.size, "zeros ahead lie past the batches");
        self.file.set_len(self.size).context(|| format!("cut the zeros ahead off segment {}", self.base_offset))?;
        self.file_len = self.size;
        Ok(true)
    }

    /// The segment as it is now, for a read outside the log's lock.
    pub(crate) fn snapshot(&self) -> SegmentSnapshot {
        SegmentSnapshot {
            base_offset: self.base_offset,
            file: Arc::clone(&self.file),
            size: self.size,
            next_offset: self.next_offset,
        }
    }

    /// Reads and sanity-checks the batch header at `position` (a batch start below `size`).
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        self.snapshot().header_at(position)
    }

    /// The indexed batch at or before `offset`, as (relative offset, position): where a search for
    /// `offset`'s batch starts.
    pub(crate) fn index_hint(&self, offset: u64) -> (u32, u32) {
        assert!(offset >= self.base_offset, "offset is in this segment (low)");
        assert!(offset < self.next_offset, "offset is in this segment (high)");
        let relative = u32::try_from(offset - self.base_offset).expect("relative offsets fit u32");
        self.index.lookup(relative)
    }

    /// Cuts the file to `length` bytes durably (recovery of a torn or corrupt tail).
    pub fn truncate_file(file: &File, base_offset: u64, length: u64) -> Result<(), LogError> {
        file.set_len(length)
            .and_then(|()| file.sync_all())
            .context(|| format!("truncate segment {base_offset} to {length} bytes"))
    }

    /// Writes the index files if they do not describe the current contents.
    pub fn persist_index(&mut self, dir: &Path, skip_fsync: bool) -> Result<bool, LogError> {
        if self.persisted_size == Some(self.size) {
            return Ok(false);
        }
        index::persist(dir, self.base_offset, self.size, self.next_offset, &self.index, skip_fsync)?;
        self.persisted_size = Some(self.size);
        Ok(true)
    }
}

/// A segment's bytes as they were at one moment under the log's lock: the first `size` bytes of the
/// file are whole batches up to `next_offset`, and stay as they are for as long as the file exists
/// (the log only appends past `size`; it cuts files only past their batches, or while recovering,
/// before anyone reads). So a snapshot may be read without the lock, while the writer appends behind
/// it, and its file handle keeps the bytes readable even if retention unlinks the file meanwhile.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSnapshot {
    pub base_offset: u64,
    pub file: Arc<File>,
    /// Bytes of whole batches when the snapshot was taken; nothing at or past it is read.
    pub size: u64,
    /// Offset after the last batch below `size`.
    pub next_offset: u64,
}

impl SegmentSnapshot {
    /// Whether the page holding `position` is in the page cache: a one-byte read that may not wait
    /// for the disk (`RWF_NOWAIT`, which starts no I/O). Only a "would block" answer means no; a file
    /// system that cannot tell (`EOPNOTSUPP`: tmpfs, some network and FUSE file systems) answers yes,
    /// so its reads never wait, as before cold reads gave way.
    pub fn page_cached_at(&self, position: u64) -> bool {
        assert!(position < self.size, "probes stay below the snapshot's size");
        let mut byte = [0u8; 1];
        let mut slices = [std::io::IoSliceMut::new(&mut byte)];
        let probe = rustix::io::preadv2(&*self.file, &mut slices, position, rustix::io::ReadWriteFlags::NOWAIT);
        !matches!(probe, Err(rustix::io::Errno::AGAIN))
    }

    /// Turns off the kernel's readahead for reads through this segment's file (a cold read paces
    /// its own pieces, `crate::give_way`). Advice only: a failure changes nothing but speed.
    pub fn advise_no_readahead(&self) {
        let _ = rustix::fs::fadvise(&*self.file, 0, None, rustix::fs::Advice::Random);
    }

    /// Reads exactly `buffer.len()` bytes at `position`, all below `size`.
    pub fn read_exact_at(&self, buffer: &mut [u8], position: u64) -> Result<(), LogError> {
        assert!(position + buffer.len() as u64 <= self.size, "reads stay below the snapshot's size");
        self.file
            .read_exact_at(buffer, position)
            .context(|| format!("read {} bytes at {position} of segment {}", buffer.len(), self.base_offset))
    }

    /// Reads exactly `length` bytes at `position` (all below `size`) onto the end of `out`, into its spare
    /// capacity: the bytes are not zeroed first, which a reused 50 MiB fetch buffer otherwise costs on
    /// every read (`docs/benchmarks.md`, session 23). On an error `out` is as it was. The crate's one
    /// `unsafe`: marking the bytes `pread` wrote as the vector's.
    #[allow(unsafe_code)]
    pub fn read_append_at(&self, out: &mut Vec<u8>, length: usize, position: u64) -> Result<(), LogError> {
        assert!(position + length as u64 <= self.size, "reads stay below the snapshot's size");
        let start = out.len();
        out.reserve(length);
        while out.len() < start + length {
            let done = out.len() - start;
            let spare = &mut out.spare_capacity_mut()[..length - done];
            let read = match rustix::io::pread(&*self.file, spare, position + done as u64) {
                Ok((read, _)) => read.len(),
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => {
                    out.truncate(start);
                    return Err(std::io::Error::from(errno))
                        .context(|| format!("read {length} bytes at {position} of segment {}", self.base_offset));
                }
            };
            if read == 0 {
                // As `read_exact_at` reports it: an I/O error (KAFKA_STORAGE_ERROR), not a corrupt batch.
                out.truncate(start);
                let what = format!("{done} of {length} bytes at {position} of segment {}", self.base_offset);
                let ended = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file ended");
                return Err(LogError::io(format!("read {what}"), ended));
            }
            assert!(read <= length - done, "pread fills at most the slice it was given");
            // SAFETY: `pread` initialized the first `read` bytes of the spare capacity, which
            // follow the vector's last element; `read` is within the capacity reserved above.
            unsafe { out.set_len(out.len() + read) };
        }
        assert_eq!(out.len(), start + length, "read exactly what was asked");
        Ok(())
    }

    /// Reads and sanity-checks the batch header at `position` (a batch start below `size`).
    pub fn header_at(&self, position: u64) -> Result<BatchHeader, LogError> {
        let mut bytes = [0u8; BATCH_HEADER_LEN];
        if position + BATCH_HEADER_LEN as u64 > self.size {
            return Err(self.corrupt(position, "header runs past the end of the segment"));
        }
        self.read_exact_at(&mut bytes, position)?;
        let header = BatchHeader::parse(&bytes)?;
        let available = usize::try_from(self.size - position).unwrap_or(usize::MAX);
        if let Some((_, problem)) = header.structure_problem(available) {
            return Err(self.corrupt(position, &problem));
        }
        if header.base_offset < self.base_offset as i64 || header.last_offset() >= self.next_offset as i64 {
            return Err(self.corrupt(position, "batch offsets outside the segment"));
        }
        Ok(header)
    }

    /// Position of the batch containing `offset` (`base_offset <= offset < next_offset`), searched
    /// forward from `hint`, the index entry ([`Segment::index_hint`]) at or before it.
    pub fn position_of(&self, offset: u64, hint: (u32, u32)) -> Result<u64, LogError> {
        assert!(offset >= self.base_offset, "offset is in this segment (low)");
        assert!(offset < self.next_offset, "offset is in this segment (high)");
        let (indexed_relative, indexed_position) = hint;
        assert!(self.base_offset + u64::from(indexed_relative) <= offset, "the hint is at or before the offset");
        let mut position = u64::from(indexed_position);
        let mut expected = self.base_offset + u64::from(indexed_relative);
        loop {
            let header = self.header_at(position)?;
            if header.base_offset as u64 != expected {
                return Err(self
                    .corrupt(position, &format!("base offset {} where {expected} was expected", header.base_offset)));
            }
            if header.last_offset() as u64 >= offset {
                return Ok(position);
            }
            position += header.total_len() as u64;
            expected = header.last_offset() as u64 + 1;
        }
    }

    pub(crate) fn corrupt(&self, position: u64, problem: &str) -> LogError {
        LogError::CorruptBatch(format!("segment {} position {position}: {problem}", self.base_offset))
    }
}

/// Removes a segment's files, `.log` first so a crash leaves at worst orphan index files, which
/// open removes. The caller fsyncs the directory.
pub(crate) fn remove_files(dir: &Path, base_offset: u64) -> Result<(), LogError> {
    meta::remove_if_present(&meta::segment_file(dir, base_offset, LOG_EXTENSION))?;
    meta::remove_if_present(&meta::segment_file(dir, base_offset, INDEX_EXTENSION))?;
    meta::remove_if_present(&meta::segment_file(dir, base_offset, TIME_INDEX_EXTENSION))?;
    Ok(())
}

/// A window of file bytes, refilled as the scan moves forward.
struct ScanBuffer<'a> {
    file: &'a File,
    file_len: u64,
    bytes: Vec<u8>,
    start: u64,
}

impl ScanBuffer<'_> {
    fn get(&mut self, position: u64, length: usize) -> Result<&[u8], LogError> {
        self.get_small(position, length, SCAN_CHUNK_BYTES)
    }

    /// `length` bytes at `position`, refilling the window with `window` bytes from there if needed.
    fn get_small(&mut self, position: u64, length: usize, window: usize) -> Result<&[u8], LogError> {
        let end = position + length as u64;
        assert!(end <= self.file_len, "scan reads stay inside the file");
        if position < self.start || end > self.start + self.bytes.len() as u64 {
            let remaining = usize::try_from(self.file_len - position).unwrap_or(usize::MAX);
            let want = length.max(window).min(remaining);
            self.bytes.resize(want, 0);
            self.file
                .read_exact_at(&mut self.bytes, position)
                .context(|| format!("read segment at {position} during recovery"))?;
            self.start = position;
        }
        let from = usize::try_from(position - self.start).expect("window offset fits usize");
        Ok(&self.bytes[from..from + length])
    }
}

/// Reads the segment from the start, validating every batch (header, length, magic, CRC32C,
/// contiguous offsets from `base_offset`) and rebuilding the indexes. Stops at the first
/// invalid or torn batch. I/O errors are returned, never mistaken for corruption.
///
/// With a `checkpoint` of this segment, the batches before its position were checked when they
/// were written and fsynced before it was: their headers are walked (for the indexes and the
/// offsets), their contents not read, and checking starts at the position. A walk that does not
/// end exactly at the checkpoint's position and offset (a checkpoint that does not describe this
/// file) is dropped, and the whole segment checked.
pub(crate) fn scan(
    file: &File,
    file_len: u64,
    base_offset: u64,
    interval: u32,
    checkpoint: Option<Checkpoint>,
) -> Result<ScanResult, LogError> {
    let empty = || ScanResult {
        index: SegmentIndex::default(),
        valid_bytes: 0,
        next_offset: base_offset,
        first_max_timestamp: None,
        problem: None,
        walked_bytes: 0,
        zeros_after: 0,
    };
    let mut result = empty();
    if let Some(checkpoint) = checkpoint {
        assert_eq!(checkpoint.base_offset, base_offset, "a checkpoint is applied to its own segment");
        match walk_to_checkpoint(file, file_len, interval, checkpoint, &mut result)? {
            Ok(()) => result.walked_bytes = result.valid_bytes,
            Err(problem) => {
                tracing::warn!(base_offset, position = checkpoint.position, %problem,
                    "recovery checkpoint does not match the segment; checking it all");
                result = empty();
            }
        }
    }
    let mut buffer = ScanBuffer { file, file_len, bytes: Vec::new(), start: 0 };
    while result.valid_bytes < file_len {
        let position = result.valid_bytes;
        let remaining = file_len - position;
        if remaining < BATCH_HEADER_LEN as u64 {
            result.problem = Some(format!("torn header: {remaining} trailing bytes"));
            break;
        }
        let header = BatchHeader::parse(buffer.get(position, BATCH_HEADER_LEN)?)?;
        if let Some(problem) = header_problem(&header, position, remaining, base_offset, result.next_offset) {
            result.problem = Some(problem);
            break;
        }
        if !batch::verify_crc(buffer.get(position, header.total_len())?) {
            result.problem = Some("CRC32C mismatch".to_string());
            break;
        }
        result.index.on_batch(base_offset, &header, position, interval);
        result.first_max_timestamp.get_or_insert(header.max_timestamp);
        result.valid_bytes += header.total_len() as u64;
        result.next_offset = header.last_offset() as u64 + 1;
    }
    if result.problem.is_some() && all_zeros(&mut buffer, result.valid_bytes)? {
        result.problem = None;
        result.zeros_after = file_len - result.valid_bytes;
    }
    assert!(result.problem.is_none() || result.zeros_after == 0, "a tail is either zeros or a problem");
    Ok(result)
}

/// Whether every byte of the file from `position` to its end is zero (read a window at a time, up
/// to the first byte that is not).
fn all_zeros(buffer: &mut ScanBuffer<'_>, position: u64) -> Result<bool, LogError> {
    let mut at = position;
    while at < buffer.file_len {
        let length = usize::try_from(buffer.file_len - at).unwrap_or(usize::MAX).min(SCAN_CHUNK_BYTES);
        if buffer.get(at, length)?.iter().any(|byte| *byte != 0) {
            return Ok(false);
        }
        at += length as u64;
    }
    Ok(true)
}

/// What is wrong with the batch header at `position` (with `remaining` bytes from there to the end of
/// what is read), if anything: its structure, its base offset (`next_offset` expected), or a segment
/// past the 32-bit position and relative offset range.
fn header_problem(
    header: &BatchHeader,
    position: u64,
    remaining: u64,
    base_offset: u64,
    next_offset: u64,
) -> Option<String> {
    let available = usize::try_from(remaining).unwrap_or(usize::MAX);
    if let Some((_, problem)) = header.structure_problem(available) {
        return Some(problem);
    }
    if header.base_offset != next_offset as i64 {
        return Some(format!("base offset {} where {} was expected", header.base_offset, next_offset));
    }
    if position > u64::from(u32::MAX) || header.last_offset() as u64 - base_offset > u64::from(u32::MAX) {
        return Some("segment exceeds the 32-bit position or relative offset range".to_string());
    }
    None
}

/// The header walk of [`scan`] up to a checkpoint: `Ok(Err(problem))` if the headers do not lead
/// exactly to the checkpoint's position and next offset.
fn walk_to_checkpoint(
    file: &File,
    file_len: u64,
    interval: u32,
    checkpoint: Checkpoint,
    result: &mut ScanResult,
) -> Result<Result<(), String>, LogError> {
    if checkpoint.position > file_len {
        return Ok(Err(format!("position beyond the file's {file_len} bytes")));
    }
    let mut window = ScanBuffer { file, file_len: checkpoint.position, bytes: Vec::new(), start: 0 };
    while result.valid_bytes < checkpoint.position {
        let position = result.valid_bytes;
        let remaining = checkpoint.position - position;
        if remaining < BATCH_HEADER_LEN as u64 {
            return Ok(Err(format!("{remaining} bytes before the position do not hold a batch header")));
        }
        let header = BatchHeader::parse(window.get_small(position, BATCH_HEADER_LEN, WALK_WINDOW_BYTES)?)?;
        if let Some(problem) = header_problem(&header, position, remaining, checkpoint.base_offset, result.next_offset)
        {
            return Ok(Err(problem));
        }
        result.index.on_batch(checkpoint.base_offset, &header, position, interval);
        result.first_max_timestamp.get_or_insert(header.max_timestamp);
        result.valid_bytes += header.total_len() as u64;
        result.next_offset = header.last_offset() as u64 + 1;
    }
    assert_eq!(result.valid_bytes, checkpoint.position, "whole batches up to the position");
    if result.next_offset != checkpoint.next_offset {
        return Ok(Err(format!(
            "next offset {} where the checkpoint has {}",
            result.next_offset, checkpoint.next_offset
        )));
    }
    Ok(Ok(()))
}

/// Writes `parts` one after the other at `position`, whole, with `pwritev`.
fn write_all_at<const N: usize>(file: &File, parts: [&[u8]; N], position: u64) -> std::io::Result<()> {
    write_all_with(parts, position, |slices, at| rustix::io::pwritev(file, slices, at).map_err(Into::into))
}

/// The smallest step of zeros written ahead (`Segment::append`): a page.
const ZERO_STEP_MIN: u64 = 4096;

/// Zeros, written ahead of a segment's end from here (`Segment::append`), 16 times per call at most.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes `length` zero bytes at `position`, up to 1 MiB per system call.
fn write_zeros_at(file: &File, position: u64, length: u64) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < length {
        let step = (length - done).min(16 * ZEROS.len() as u64) as usize;
        let mut parts = [&ZEROS[..0]; 16];
        for (at, part) in parts.iter_mut().enumerate() {
            let from = at * ZEROS.len();
            *part = &ZEROS[..step.saturating_sub(from).min(ZEROS.len())];
        }
        write_all_at(file, parts, position + done)?;
        done += step as u64;
    }
    Ok(())
}

/// Writes `parts` whole through `write` (a positional vectored write: the slices left, and where they
/// go), again after a short write or an interrupted call, as `write_all_at` does for one buffer. A
/// call that takes no bytes is an error.
fn write_all_with<const N: usize>(
    parts: [&[u8]; N],
    position: u64,
    mut write: impl FnMut(&[std::io::IoSlice<'_>], u64) -> std::io::Result<usize>,
) -> std::io::Result<()> {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    let mut slices = parts.map(std::io::IoSlice::new);
    let mut remaining: &mut [std::io::IoSlice<'_>] = &mut slices;
    let mut written = 0usize;
    while written < total {
        match write(remaining, position + written as u64) {
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "the file took no more bytes")),
            Ok(count) => {
                assert!(count <= total - written, "a write takes at most what it is given");
                written += count;
                std::io::IoSlice::advance_slices(&mut remaining, count);
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    assert_eq!(written, total, "a write stops at the end of its parts");
    Ok(())
}

#[cfg(test)]
mod write_tests {
    use super::write_all_with;
    use std::io::{Error, ErrorKind, IoSlice};

    /// A file that takes at most `step` bytes per call, after one interrupted call and before one
    /// call that takes nothing (when `zero_at` is reached).
    fn short_writes(
        file: &mut Vec<u8>,
        step: usize,
        zero_at: Option<usize>,
    ) -> impl FnMut(&[IoSlice<'_>], u64) -> std::io::Result<usize> + '_ {
        let mut calls = 0;
        move |slices, at| {
            calls += 1;
            if calls == 2 {
                return Err(Error::from(ErrorKind::Interrupted));
            }
            assert_eq!(at as usize, file.len(), "each call writes where the last one stopped");
            if zero_at.is_some_and(|zero_at| file.len() >= zero_at) {
                return Ok(0);
            }
            let flat: Vec<u8> = slices.iter().flat_map(|slice| slice.iter().copied()).collect();
            let taken = flat.len().min(step);
            file.extend_from_slice(&flat[..taken]);
            Ok(taken)
        }
    }

    /// Short writes and interrupted calls still write every byte once, in order, at its position; a
    /// call that takes nothing is an error, not a loop.
    #[test]
    fn parts_are_written_whole_through_short_and_interrupted_writes() {
        let (head, body) = ((0u8..61).collect::<Vec<u8>>(), (100u8..200).collect::<Vec<u8>>());
        for step in [1, 7, 61, 62, 500] {
            let mut written = Vec::new();
            write_all_with([&head, &body], 0, short_writes(&mut written, step, None)).expect("written");
            assert_eq!(written, [head.clone(), body.clone()].concat(), "step {step}");
        }
        let mut written = Vec::new();
        let empty: &[u8] = &[];
        write_all_with([&head, empty], 0, short_writes(&mut written, 5, None)).expect("an empty records section");
        assert_eq!(written, head);
        let mut written = Vec::new();
        let stuck = write_all_with([&head, &body], 0, short_writes(&mut written, 10, Some(70)));
        assert_eq!(stuck.map_err(|error| error.kind()), Err(ErrorKind::WriteZero));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appended_reads_hold_exactly_the_file_bytes_and_leave_the_vector_as_it_was_on_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("segment");
        let bytes: Vec<u8> = (0..300_000u32).map(|at| (at % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write the file");
        let file = Arc::new(File::open(&path).expect("open"));
        let snapshot = SegmentSnapshot { base_offset: 0, file, size: bytes.len() as u64, next_offset: 1 };
        // A buffer that held other bytes before, as a reused one does: its spare capacity is stale.
        let mut out = vec![0xAA; 400_000];
        out.truncate(3);
        snapshot.read_append_at(&mut out, 200_000, 50_000).expect("read");
        assert_eq!(out.len(), 200_003, "the bytes asked for, after what the vector held");
        assert_eq!(&out[..3], &[0xAA; 3], "what it held stays");
        assert!(out[3..] == bytes[50_000..250_000], "the file's bytes, none of the stale ones");
        // The file ends before the bytes asked for (a snapshot larger than its file): an error, and
        // the vector is as it was.
        let past_the_end = SegmentSnapshot { size: bytes.len() as u64 + 10, ..snapshot.clone() };
        let before = out.clone();
        let error = past_the_end.read_append_at(&mut out, 20, bytes.len() as u64 - 10).expect_err("a short file");
        assert!(matches!(&error, LogError::Io { .. }), "an I/O error, as a short `read_exact_at` is: {error:?}");
        assert!(error.to_string().contains("10 of 20 bytes"), "{error}");
        assert!(out == before, "nothing appended on an error");
    }
}
