//! Sealed chunks on disk: one checksummed file per chunk, read a page at a time behind the chunk's
//! Bloom filter and a sparse array of the pages' first ids (the *fences*), both kept in RAM.
//!
//! Layout (all integers big endian):
//!
//! ```text
//! page * page count     4096 bytes each: up to 127 entries | zero padding | crc32c u32 of
//!                       (file id u64 | page index u64 | the page's first 4092 bytes)
//! trailer               magic "ONCECHNK" | version u32 = 2 | file id u64 | index nonce u64 |
//!                       entry count u64 |
//!                       time_min_s u32 | time_max_s u32 | span count u32 |
//!                       (partition i32, base offset i64, max offset i64, count u32) * span count |
//!                       crc32c u32 of the trailer before it
//! footer                trailer length u32 | magic "ONCECHNK"
//! entry = id [16] | partition i32 | offset i64 | time_s u32   (32 bytes; ids strictly increasing)
//! ```
//!
//! A file is written whole (temporary name, fsync, rename, directory fsync) before anything refers
//! to it. A spilled chunk's file is then opened through [`open_chunk`], which reads every page,
//! checks every checksum, the order and the trailer's counts, and builds the filter and fences; a
//! resident chunk's backing file is checked for its name, index, trailer and length only
//! ([`check_written`]: its pages would be read from the page cache just written). Every start reads
//! and checks every file whole. A lookup that passes the filter reads the one page that
//! can hold the id (`pread`) and checks that page's checksum again, so a file damaged later gives
//! an error, never a wrong answer. A page's checksum is seeded with the file id and the page's
//! index, and a lookup checks that the page it read starts with the fence it expected, so a read
//! that returns another intact page (of this file or another) is an error too, not a miss.
//!
//! The *index nonce* is chosen when an index starts empty and written in its snapshot and in every
//! chunk file it writes: a file under a name the snapshot refers to but written by another index
//! (a deleted topic's late step, say) fails the check at open. Version 1 (no nonce, page checksums
//! not seeded) is not read: its snapshot means a rebuild from the log.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chunk::{Entry, Filter, Location, PartitionSpan, SealedChunk};
use crate::error::DedupError;
use crate::id::Id;

const MAGIC: &[u8; 8] = b"ONCECHNK";
const VERSION: u32 = 2;
/// Bytes of a page: one read from the disk per lookup that passes the filter.
pub(crate) const PAGE_LEN: usize = 4096;
const ENTRY_LEN: usize = 32;
/// Entries in a full page (the last 4 bytes of a page are its checksum).
pub(crate) const ENTRIES_PER_PAGE: usize = (PAGE_LEN - 4) / ENTRY_LEN;
const FOOTER_LEN: usize = 12;
const SPAN_LEN: usize = 24;
/// Bytes of the trailer's fixed fields before its spans.
const TRAILER_FIXED_LEN: usize = 48;
/// Largest trailer a reader accepts: the fixed fields and 2^20 partition spans.
const TRAILER_LEN_MAX: usize = TRAILER_FIXED_LEN + (1 << 20) * SPAN_LEN;

/// The file of a chunk, named by its file id.
pub(crate) fn chunk_path(dir: &Path, file_id: u64) -> PathBuf {
    dir.join(format!("chunk-{file_id:016x}.dedup"))
}

/// The file id in a chunk file's name, if it is one.
pub(crate) fn file_id_of(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("chunk-")?.strip_suffix(".dedup")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// The RAM part of a chunk whose entries are on disk.
pub(crate) struct DiskColumns {
    file: File,
    pub(crate) path: PathBuf,
    pub(crate) file_id: u64,
    /// The first id of every page, so a lookup knows the one page that can hold an id.
    fences: Box<[u128]>,
    len: usize,
}

impl DiskColumns {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn fence_bytes(&self) -> usize {
        self.fences.len() * size_of::<u128>()
    }

    /// The entry of `id` if this chunk holds it: one page read, its checksum checked.
    pub(crate) fn get(&self, id: u128) -> Result<Option<Entry>, DedupError> {
        let page_index = match self.fences.partition_point(|first| *first <= id) {
            0 => return Ok(None),
            after => after - 1,
        };
        let page = self.read_page(page_index)?;
        if id_at(&page, 0) != self.fences[page_index] {
            // An intact page, but not the one asked for (a misdirected read): never a miss.
            return Err(corrupt(&self.path, format!("page {page_index} does not start with its fence")));
        }
        let entries = self.entries_in_page(page_index);
        let (mut low, mut high) = (0, entries);
        while low < high {
            let middle = (low + high) / 2;
            match id_at(&page, middle).cmp(&id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Ok(Some(entry_at(&page, middle))),
            }
        }
        Ok(None)
    }

    fn entries_in_page(&self, page_index: usize) -> usize {
        (self.len - page_index * ENTRIES_PER_PAGE).min(ENTRIES_PER_PAGE)
    }

    fn read_page(&self, page_index: usize) -> Result<[u8; PAGE_LEN], DedupError> {
        let mut page = [0u8; PAGE_LEN];
        let position = (page_index * PAGE_LEN) as u64;
        self.file
            .read_exact_at(&mut page, position)
            .map_err(|error| DedupError::io(format!("reading dedup chunk {}", self.path.display()), error))?;
        check_page(&page, self.file_id, page_index)
            .map_err(|reason| corrupt(&self.path, format!("page {page_index}: {reason}")))?;
        Ok(page)
    }

    /// Every entry, in id order (a compaction's or a merge's input), read [`ENTRIES_READ_PAGES`]
    /// pages at a time, every page of a read checked before any of its entries is given. Ends after
    /// the first error.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Result<Entry, DedupError>> + '_ {
        let pages = self.fences.len();
        let mut buffer = Vec::new();
        let mut loaded = 0..0;
        let (mut page_index, mut slot, mut failed) = (0, 0, false);
        std::iter::from_fn(move || loop {
            if failed || page_index >= pages {
                return None;
            }
            if slot == self.entries_in_page(page_index) {
                (page_index, slot) = (page_index + 1, 0);
                continue;
            }
            if !loaded.contains(&page_index) {
                let read = page_index..(page_index + ENTRIES_READ_PAGES).min(pages);
                if let Err(error) = self.read_pages(read.clone(), &mut buffer) {
                    failed = true;
                    return Some(Err(error));
                }
                loaded = read;
            }
            let start = (page_index - loaded.start) * PAGE_LEN;
            slot += 1;
            return Some(Ok(entry_at(&buffer[start..start + PAGE_LEN], slot - 1)));
        })
    }

    /// Pages `pages` into `buffer`, each checked.
    fn read_pages(&self, pages: std::ops::Range<usize>, buffer: &mut Vec<u8>) -> Result<(), DedupError> {
        buffer.resize(pages.len() * PAGE_LEN, 0);
        self.file
            .read_exact_at(buffer, (pages.start * PAGE_LEN) as u64)
            .map_err(|error| DedupError::io(format!("reading dedup chunk {}", self.path.display()), error))?;
        for (page_index, page) in pages.zip(buffer.chunks_exact(PAGE_LEN)) {
            let page: &[u8; PAGE_LEN] = page.try_into().expect("a whole page");
            check_page(page, self.file_id, page_index)
                .map_err(|reason| corrupt(&self.path, format!("page {page_index}: {reason}")))?;
        }
        Ok(())
    }
}

/// Pages [`DiskColumns::entries`] reads at a time (256 KiB).
const ENTRIES_READ_PAGES: usize = 64;

fn id_at(page: &[u8], slot: usize) -> u128 {
    let start = slot * ENTRY_LEN;
    u128::from_be_bytes(page[start..start + 16].try_into().expect("16 bytes"))
}

fn entry_at(page: &[u8], slot: usize) -> Entry {
    let bytes = &page[slot * ENTRY_LEN..(slot + 1) * ENTRY_LEN];
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    let partition = i32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let offset = i64::from_be_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let time_s = u32::from_be_bytes(bytes[28..32].try_into().expect("4 bytes"));
    Entry { id: Id(id), location: Location { partition, offset }, time_s }
}

/// A page's checksum, seeded with its file id and index: an intact page read from the wrong place
/// does not match.
fn page_crc(page: &[u8; PAGE_LEN], file_id: u64, page_index: usize) -> u32 {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&file_id.to_be_bytes());
    seed[8..].copy_from_slice(&(page_index as u64).to_be_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), &page[..PAGE_LEN - 4])
}

fn check_page(page: &[u8; PAGE_LEN], file_id: u64, page_index: usize) -> Result<(), String> {
    let stored = u32::from_be_bytes(page[PAGE_LEN - 4..].try_into().expect("4 bytes"));
    match page_crc(page, file_id, page_index) == stored {
        true => Ok(()),
        false => Err("checksum mismatch".to_string()),
    }
}

fn corrupt(path: &Path, reason: String) -> DedupError {
    DedupError::ChunkCorrupt { path: path.to_path_buf(), reason }
}

fn temp_path(path: &Path) -> PathBuf {
    path.with_extension("dedup.tmp")
}

/// Writes entries sorted by id (each id once) as the chunk file `file_id` of the index `nonce` in
/// `dir`, durably: a temporary file, fsync, rename, directory fsync. Returns the entries written. A
/// full disk or any other failure removes the temporary file and is an error; nothing refers to the
/// file yet. The temporary file is created new: one that exists (another writer's) is an error,
/// never truncated (stale ones are removed at open, `DedupIndex::remove_orphan_chunk_files`).
pub(crate) fn write_chunk(
    dir: &Path,
    file_id: u64,
    nonce: u64,
    entries: impl Iterator<Item = Result<Entry, DedupError>>,
) -> Result<usize, DedupError> {
    let path = chunk_path(dir, file_id);
    let temp = temp_path(&path);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|error| DedupError::io(format!("creating dedup chunk {}", temp.display()), error))?;
    let written = write_file(file, &temp, file_id, nonce, entries).and_then(|count| {
        fs::rename(&temp, &path)
            .map_err(|error| DedupError::io(format!("renaming {} to {}", temp.display(), path.display()), error))?;
        crate::snapshot::sync_dir(dir)?;
        Ok(count)
    });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

fn write_file(
    file: File,
    temp: &Path,
    file_id: u64,
    nonce: u64,
    entries: impl Iterator<Item = Result<Entry, DedupError>>,
) -> Result<usize, DedupError> {
    let io = |what: &str| {
        let context = format!("{what} dedup chunk {}", temp.display());
        move |error| DedupError::io(context, error)
    };
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut page = [0u8; PAGE_LEN];
    let (mut in_page, mut count, mut page_index) = (0usize, 0usize, 0usize);
    let mut spans: Vec<PartitionSpan> = Vec::new();
    let (mut time_min_s, mut time_max_s) = (u32::MAX, 0u32);
    let mut previous: Option<Id> = None;
    for entry in entries {
        let entry = entry?;
        assert!(previous.is_none_or(|previous| previous < entry.id), "a chunk file holds ids sorted, each once");
        previous = Some(entry.id);
        put_entry(&mut page[in_page * ENTRY_LEN..(in_page + 1) * ENTRY_LEN], &entry);
        add_to_spans(&mut spans, entry.location);
        time_min_s = time_min_s.min(entry.time_s);
        time_max_s = time_max_s.max(entry.time_s);
        in_page += 1;
        count += 1;
        if in_page == ENTRIES_PER_PAGE {
            seal_page(&mut page, file_id, page_index);
            out.write_all(&page).map_err(io("writing"))?;
            page = [0u8; PAGE_LEN];
            in_page = 0;
            page_index += 1;
        }
    }
    if in_page > 0 {
        seal_page(&mut page, file_id, page_index);
        out.write_all(&page).map_err(io("writing"))?;
    }
    spans.sort_unstable_by_key(|span| span.partition);
    let trailer = trailer_bytes(file_id, nonce, count, time_min_s.min(time_max_s), time_max_s, &spans);
    out.write_all(&trailer).map_err(io("writing"))?;
    out.write_all(&(trailer.len() as u32).to_be_bytes()).map_err(io("writing"))?;
    out.write_all(MAGIC).map_err(io("writing"))?;
    let file = out.into_inner().map_err(|error| io("flushing")(error.into_error()))?;
    file.sync_all().map_err(io("fsyncing"))?;
    Ok(count)
}

fn put_entry(out: &mut [u8], entry: &Entry) {
    out[..16].copy_from_slice(&entry.id.0);
    out[16..20].copy_from_slice(&entry.location.partition.to_be_bytes());
    out[20..28].copy_from_slice(&entry.location.offset.to_be_bytes());
    out[28..32].copy_from_slice(&entry.time_s.to_be_bytes());
}

fn seal_page(page: &mut [u8; PAGE_LEN], file_id: u64, page_index: usize) {
    let crc = page_crc(page, file_id, page_index);
    page[PAGE_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
}

/// Spans kept sorted by partition as entries stream in (a chunk names few partitions).
fn add_to_spans(spans: &mut Vec<PartitionSpan>, location: Location) {
    let Location { partition, offset } = location;
    match spans.binary_search_by_key(&partition, |span| span.partition) {
        Ok(index) => {
            let span = &mut spans[index];
            span.base_offset = span.base_offset.min(offset);
            span.max_offset = span.max_offset.max(offset);
            span.count += 1;
        }
        Err(index) => {
            spans.insert(index, PartitionSpan { partition, base_offset: offset, max_offset: offset, count: 1 })
        }
    }
}

fn trailer_bytes(
    file_id: u64,
    nonce: u64,
    count: usize,
    time_min_s: u32,
    time_max_s: u32,
    spans: &[PartitionSpan],
) -> Vec<u8> {
    let mut trailer = Vec::with_capacity(TRAILER_FIXED_LEN + 4 + spans.len() * SPAN_LEN);
    trailer.extend_from_slice(MAGIC);
    trailer.extend_from_slice(&VERSION.to_be_bytes());
    trailer.extend_from_slice(&file_id.to_be_bytes());
    trailer.extend_from_slice(&nonce.to_be_bytes());
    trailer.extend_from_slice(&(count as u64).to_be_bytes());
    trailer.extend_from_slice(&time_min_s.to_be_bytes());
    trailer.extend_from_slice(&time_max_s.to_be_bytes());
    trailer.extend_from_slice(&(spans.len() as u32).to_be_bytes());
    for span in spans {
        trailer.extend_from_slice(&span.partition.to_be_bytes());
        trailer.extend_from_slice(&span.base_offset.to_be_bytes());
        trailer.extend_from_slice(&span.max_offset.to_be_bytes());
        trailer.extend_from_slice(&span.count.to_be_bytes());
    }
    let crc = crc32c::crc32c(&trailer);
    trailer.extend_from_slice(&crc.to_be_bytes());
    trailer
}

/// What a chunk file's trailer says.
struct Trailer {
    count: usize,
    time_min_s: u32,
    time_max_s: u32,
    spans: Vec<PartitionSpan>,
}

fn parse_trailer(bytes: &[u8], file_id: u64, nonce: u64) -> Result<Trailer, String> {
    if bytes.len() < TRAILER_FIXED_LEN + 4 {
        return Err("trailer too short".to_string());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Err("trailer checksum mismatch".to_string());
    }
    let u32_at = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    if &body[..8] != MAGIC || u32_at(8) != VERSION {
        return Err("bad magic or version".to_string());
    }
    if u64_at(12) != file_id {
        return Err(format!("file id {} in a file named {file_id}", u64_at(12)));
    }
    if u64_at(20) != nonce {
        return Err(format!("written by index {:016x}, not this index {nonce:016x}", u64_at(20)));
    }
    let count = usize::try_from(u64_at(28)).map_err(|_| "entry count too large".to_string())?;
    let span_count = u32_at(44) as usize;
    if body.len() != TRAILER_FIXED_LEN + span_count * SPAN_LEN {
        return Err("trailer length does not match its span count".to_string());
    }
    let spans = (0..span_count)
        .map(|index| {
            let at = TRAILER_FIXED_LEN + index * SPAN_LEN;
            PartitionSpan {
                partition: u32_at(at) as i32,
                base_offset: u64_at(at + 4) as i64,
                max_offset: u64_at(at + 12) as i64,
                count: u32_at(at + 20),
            }
        })
        .collect();
    Ok(Trailer { count, time_min_s: u32_at(36), time_max_s: u32_at(40), spans })
}

/// Opens chunk file `file_id` of the index `nonce` in `dir`: checks the whole file (every page's
/// checksum, the order of the ids, the trailer's checksum, nonce, counts, spans and time range) and
/// builds the chunk's filter and fences. Any mismatch is [`DedupError::ChunkCorrupt`]: the file
/// cannot be trusted.
pub(crate) fn open_chunk(dir: &Path, file_id: u64, nonce: u64) -> Result<SealedChunk, DedupError> {
    let (checked, filter) =
        read_checked(dir, file_id, nonce, Filter::with_capacity, |filter, entry| filter.insert(entry.id.to_u128()))?;
    let Checked { file, path, fences, spans, count, time_min_s, time_max_s } = checked;
    let columns = DiskColumns { file, path, file_id, fences: fences.into_boxed_slice(), len: count };
    Ok(SealedChunk::on_disk(columns, filter, spans, time_min_s, time_max_s))
}

/// Reads chunk file `file_id` of the index `nonce` in `dir` back into RAM, through the same checks
/// as [`open_chunk`]: a resident chunk whose backing is this file (a snapshot referred to it as a
/// resident chunk's copy).
pub(crate) fn read_chunk_resident(dir: &Path, file_id: u64, nonce: u64) -> Result<SealedChunk, DedupError> {
    let (checked, entries) =
        read_checked(dir, file_id, nonce, Vec::with_capacity, |entries: &mut Vec<Entry>, entry| entries.push(*entry))?;
    let count = entries.len();
    assert_eq!(count, checked.count, "a checked file yields the trailer's count of entries");
    if !crate::chunk::fits_in_chunk(&checked.spans) {
        return Err(corrupt(
            &checked.path,
            "the entries exceed a resident chunk's partition or offset bounds".to_string(),
        ));
    }
    let chunk = SealedChunk::from_sorted(entries.into_iter(), checked.spans, Some(count));
    assert!(chunk.set_backing(file_id), "a chunk read back is resident and new");
    Ok(chunk)
}

/// Checks chunk file `file_id` of the index `nonce` in `dir` as far as the filesystem, not the
/// encoder, can have made it differ from what [`write_chunk`] wrote: the file under the name is
/// this index's file of that id (footer, trailer checksum, nonce, file id) and as long as its
/// `count` entries need. Its pages are not read back: they would come from the page cache, holding
/// the bytes just written and checksummed, while the whole check of [`open_chunk`] runs at every
/// start, where a damaged disk shows (reading them back was about a third of the CPU a snapshot
/// spent on chunk files).
pub(crate) fn check_written(dir: &Path, file_id: u64, nonce: u64, count: usize) -> Result<(), DedupError> {
    let (_, path, trailer, _) = open_trailer(dir, file_id, nonce)?;
    match trailer.count == count {
        true => Ok(()),
        false => Err(corrupt(&path, format!("{} entries in the trailer, {count} written", trailer.count))),
    }
}

/// What [`read_checked`] found in a file whose every check passed.
struct Checked {
    file: File,
    path: PathBuf,
    fences: Vec<u128>,
    spans: Vec<PartitionSpan>,
    count: usize,
    time_min_s: u32,
    time_max_s: u32,
}

/// Opens chunk file `file_id` of the index `nonce` in `dir` and checks its footer and trailer (checksum,
/// file id, nonce) and that its pages are as long as the trailer's entry count needs: the file, its
/// path, the trailer and the number of pages.
fn open_trailer(dir: &Path, file_id: u64, nonce: u64) -> Result<(File, PathBuf, Trailer, usize), DedupError> {
    let path = chunk_path(dir, file_id);
    let io = |error| DedupError::io(format!("reading dedup chunk {}", path.display()), error);
    let file = File::open(&path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let bad = |reason: String| corrupt(&path, reason);
    if file_len < FOOTER_LEN as u64 {
        return Err(bad(format!("{file_len} bytes is shorter than a footer")));
    }
    let mut footer = [0u8; FOOTER_LEN];
    file.read_exact_at(&mut footer, file_len - FOOTER_LEN as u64).map_err(io)?;
    if &footer[4..] != MAGIC {
        return Err(bad("bad footer magic".to_string()));
    }
    let trailer_len = u32::from_be_bytes(footer[..4].try_into().expect("4 bytes")) as usize;
    if trailer_len > TRAILER_LEN_MAX || (trailer_len + FOOTER_LEN) as u64 > file_len {
        return Err(bad(format!("trailer length {trailer_len} does not fit the file")));
    }
    let pages_len = file_len - (trailer_len + FOOTER_LEN) as u64;
    let mut trailer = vec![0u8; trailer_len];
    file.read_exact_at(&mut trailer, pages_len).map_err(io)?;
    let trailer = parse_trailer(&trailer, file_id, nonce).map_err(bad)?;
    let pages = trailer.count.div_ceil(ENTRIES_PER_PAGE);
    // Checked: a forged count must not wrap around to the file's length (and then size the filter).
    let pages_bytes = pages.checked_mul(PAGE_LEN).and_then(|bytes| u64::try_from(bytes).ok());
    if pages_bytes != Some(pages_len) {
        return Err(bad(format!("{pages_len} bytes of pages for {} entries", trailer.count)));
    }
    Ok((file, path, trailer, pages))
}

/// Reads a whole chunk file, checking it (see [`open_chunk`]); `start` makes what is built from the
/// trailer's entry count, `each` adds every entry to it in id order (a file that then fails a check
/// returns the error and what was built is dropped).
fn read_checked<T>(
    dir: &Path,
    file_id: u64,
    nonce: u64,
    start: impl FnOnce(usize) -> T,
    mut each: impl FnMut(&mut T, &Entry),
) -> Result<(Checked, T), DedupError> {
    let (file, path, trailer, pages) = open_trailer(dir, file_id, nonce)?;
    let io = |error| DedupError::io(format!("reading dedup chunk {}", path.display()), error);
    let bad = |reason: String| corrupt(&path, reason);
    let mut built = start(trailer.count);
    let mut fences = Vec::with_capacity(pages);
    let mut spans: Vec<PartitionSpan> = Vec::new();
    let (mut time_min_s, mut time_max_s) = (u32::MAX, 0u32);
    let mut previous: Option<u128> = None;
    let mut reader = BufReader::with_capacity(1 << 20, &file);
    let mut page = [0u8; PAGE_LEN];
    for page_index in 0..pages {
        reader.read_exact(&mut page).map_err(io)?;
        check_page(&page, file_id, page_index).map_err(|reason| bad(format!("page {page_index}: {reason}")))?;
        let entries = (trailer.count - page_index * ENTRIES_PER_PAGE).min(ENTRIES_PER_PAGE);
        fences.push(id_at(&page, 0));
        for slot in 0..entries {
            let entry = entry_at(&page, slot);
            let id = entry.id.to_u128();
            if previous.is_some_and(|previous| previous >= id) {
                return Err(bad(format!("ids out of order in page {page_index}")));
            }
            if entry.location.partition < 0 || entry.location.offset < 0 {
                return Err(bad(format!("negative partition or offset in page {page_index}")));
            }
            previous = Some(id);
            each(&mut built, &entry);
            add_to_spans(&mut spans, entry.location);
            time_min_s = time_min_s.min(entry.time_s);
            time_max_s = time_max_s.max(entry.time_s);
        }
    }
    let same_spans = spans.len() == trailer.spans.len()
        && spans.iter().zip(&trailer.spans).all(|(a, b)| {
            (a.partition, a.base_offset, a.max_offset, a.count) == (b.partition, b.base_offset, b.max_offset, b.count)
        });
    let times = (time_min_s.min(time_max_s), time_max_s);
    if !same_spans || (trailer.count > 0 && times != (trailer.time_min_s, trailer.time_max_s)) {
        return Err(bad("the entries do not match the trailer's spans or time range".to_string()));
    }
    drop(reader);
    let checked = Checked {
        file,
        path: path.clone(),
        fences,
        spans,
        count: trailer.count,
        time_min_s: trailer.time_min_s,
        time_max_s: trailer.time_max_s,
    };
    Ok((checked, built))
}

/// The chunk files in `dir` by file id (temporary files of interrupted writes included as `None`).
pub(crate) fn list_chunk_files(dir: &Path) -> Result<Vec<(PathBuf, Option<u64>)>, DedupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(DedupError::io(format!("listing {}", dir.display()), error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| DedupError::io(format!("listing {}", dir.display()), error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("chunk-") {
            files.push((entry.path(), file_id_of(&name)));
        }
    }
    Ok(files)
}
