//! Snapshot files of a [`DedupIndex`]: the stored ids chunk by chunk, log start offsets and
//! covered offsets, so a restart replays only the log's tail.
//!
//! Ids held by open transactions are left out, and each partition's covered offset is moved back
//! to the first offset any of them holds there, so the replay writes the transaction's ids again
//! and then meets its marker in the same partition's log. Keeping the holds instead would be wrong
//! across partitions: a hold's marker may lie in a partition replayed *after* another partition
//! whose log stores the same id again once the transaction had aborted; that replay would find the
//! id still held. (The loader still reads holds, which older writers wrote.)
//!
//! Layout (all integers big endian):
//!
//! ```text
//! magic "ONCEDDUP" (8) | version u32 (= SNAPSHOT_VERSION) | index nonce u64
//! id hash u8          | 0 = BLAKE3 | 1 = SipHash-2-4, then its key (u64, u64)
//! covered count u32   | (partition i32, next offset i64) * count
//! log start count u32 | (partition i32, log start offset i64) * count
//! chunk count u32     | per chunk, oldest first (a resident chunk whose copy spans several files
//!                       is written as one chunk per file, oldest first):
//!                         kind u8 = 0 (in the snapshot): entry count u32 | entry * count
//!                         kind u8 = 1 (a chunk file):    file id u64 | entry count u32
//!                         kind u8 = 2 (a chunk file, loaded resident): file id u64 | entry count u32
//! hold count u32      | (entry, producer id i64) * count   (written as 0, see above)
//! crc32c u32 of every byte before it
//! entry = id [16] | partition i32 | offset i64 | time_s u32   (32 bytes)
//! ```
//!
//! The index nonce (version 3) is the one every chunk file of the index carries in its trailer
//! (`crate::disk`): a referred file with another nonce was written by another index and fails the
//! load. Version 2 had no nonce and referred to version 1 chunk files, which are not read: such a
//! snapshot means a rebuild (unless it refers to no file). Version 1 had no kind byte (every chunk
//! in the snapshot); it is still read. Both get a new nonce.
//!
//! The id hash (version 5) is the index's [`IdScheme`]: the loaded index hashes new ids with it, as
//! its stored ids were. Versions 1 to 4 had none: their indexes hashed with BLAKE3, and keep it.
//!
//! Chunks on disk are referred to, not copied: their files (`crate::disk`, in [`chunk_dir`] beside
//! the snapshot) were fsynced before the chunk entered the index, so before any view could refer
//! to them. Files the index retired before the view are deleted once the snapshot is durable.
//!
//! Resident sealed chunks are referred to as well (version 4, kind 2): the first snapshot that
//! meets one writes its entries to a chunk file of their own (fsynced before the snapshot that
//! refers to it is renamed in), and the index records the file as the chunk's *backing*
//! ([`DedupIndex::finish_snapshot`]); later snapshots refer to it. A merge in RAM of two chunks
//! that both have files, which kept every entry of both (none dead, no id in both), takes their
//! files over as its output's backing (up to 8 files), and a snapshot refers to each of them as a
//! kind-2 chunk, oldest first: the files hold exactly the merged chunk's entries, so a load that
//! builds a chunk of each answers as the merged chunk does. So a snapshot writes only what was
//! sealed since the last one (or rewritten by a compaction or a merge that could not take files
//! over), plus the active chunk, an id reaches a chunk file about once, and a restart loads the same
//! answers from files: a snapshot can be taken every ~100,000 changed ids at any index size, which
//! bounds the log tail a restart replays. A load reads a kind-2 file back into RAM with the checks
//! of a start, one chunk per file. Without a chunk directory (an index kept in RAM only) chunks are
//! written inline (kind 0).
//!
//! Written to `<path>.tmp`, fsynced, renamed over `<path>`, then the directory fsynced: a crash
//! leaves either the old snapshot or the new one, never a mix. Any mismatch on load (magic,
//! version, lengths, order, checksum, a referred chunk file missing or failing its checks) is an
//! error that means "rebuild from the log".

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chunk::{fits_in_chunk, spans_of, ActiveChunk, Entry, Location, SealedChunk};
use crate::disk::{open_chunk, read_chunk_resident};
use crate::error::DedupError;
use crate::id::{Id, IdScheme};
use crate::index::{DedupIndex, IndexConfig};
use crate::spill::{chunk_dir, DiskStore};

const MAGIC: &[u8; 8] = b"ONCEDDUP";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 5;
/// Id hash tags (version 5): [`IdScheme::Blake3`]...
const IDS_BLAKE3: u8 = 0;
/// ... and [`IdScheme::SipHash24`], followed by its key.
const IDS_SIPHASH24: u8 = 1;
const CHUNK_IN_SNAPSHOT: u8 = 0;
const CHUNK_FILE: u8 = 1;
const CHUNK_FILE_RESIDENT: u8 = 2;
const ENTRY_LEN: usize = 32;
const HOLD_LEN: usize = ENTRY_LEN + 8;
const OFFSET_PAIR_LEN: usize = 12;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Ids the snapshot holds: in it, or in the chunk files it refers to.
    pub entries: usize,
    /// Ids held by open transactions, left out (the covered offsets move back to them instead).
    pub transaction_holds: usize,
    /// File size in bytes (the snapshot file alone).
    pub bytes: u64,
    /// Chunk files written for resident chunks that had none (ids in them are counted in `entries`).
    pub files_written: usize,
    /// Ids written to those files.
    pub file_entries: usize,
}

/// How a snapshot writes one chunk: a reference to a chunk file (kind, file id), or `None` for its
/// entries inline.
type FileRef = Option<(u8, u64)>;

/// Counts bytes and accumulates their CRC32C on the way through.
struct Crc<T> {
    inner: T,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

fn put_entry(out: &mut Vec<u8>, entry: &Entry) {
    out.extend_from_slice(&entry.id.0);
    out.extend_from_slice(&entry.location.partition.to_be_bytes());
    out.extend_from_slice(&entry.location.offset.to_be_bytes());
    out.extend_from_slice(&entry.time_s.to_be_bytes());
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// A consistent view of an index for a snapshot: taken under the index's lock by
/// [`DedupIndex::snapshot_view`] (it shares the sealed chunks and copies only the active chunk and
/// the offsets), then written with [`SnapshotView::write`] without it, while writers go on.
pub struct SnapshotView {
    nonce: u64,
    /// The index's [`IdScheme`]: a load must hash new ids as the stored ones were.
    ids: IdScheme,
    covered: Vec<(i32, i64)>,
    log_starts: Vec<(i32, i64)>,
    sealed: Vec<Arc<SealedChunk>>,
    /// The frozen chunk (shared: it no longer changes), written inline between the sealed chunks and
    /// the active one.
    frozen: Option<Arc<ActiveChunk>>,
    active: Vec<Entry>,
    transaction_holds: usize,
    /// Chunk files the index no longer used when the view was taken: deleted after the write.
    retired: Vec<PathBuf>,
    /// Where chunk files go (`None`: the index has no chunk directory; every resident chunk is
    /// written inline).
    dir: Option<PathBuf>,
    /// Resident chunks without a file, each with the file id the write gives its new file (ids
    /// taken from the index's counter under its lock, so they never collide with a disk step's).
    to_file: Vec<(Arc<SealedChunk>, u64)>,
}

impl DedupIndex {
    /// Writes the confirmed state (stored ids, log start and covered offsets) to `path`
    /// atomically and durably: [`DedupIndex::snapshot_view`], [`SnapshotView::write`], then
    /// [`DedupIndex::forget_retired_files`].
    pub fn snapshot(&mut self, path: &Path) -> Result<SnapshotStats, DedupError> {
        let view = self.snapshot_view();
        match view.write(path) {
            Ok(stats) => {
                self.finish_snapshot(&view);
                Ok(stats)
            }
            Err(error) => {
                self.abandon_snapshot(&view);
                Err(error)
            }
        }
    }

    /// After a failed [`SnapshotView::write`], under the lock: the chunk files it wrote that are
    /// still there (it failed once the new snapshot, which refers to them, may have been in place)
    /// are retired — deleted by the next snapshot that is durable, as any file the latest snapshot
    /// may refer to. Their chunks get no backing: the next snapshot writes files of its own.
    pub fn abandon_snapshot(&mut self, view: &SnapshotView) {
        let Some(dir) = &view.dir else { return };
        let left: Vec<(u64, usize)> = view
            .to_file
            .iter()
            .filter(|(_, file_id)| crate::disk::chunk_path(dir, *file_id).exists())
            .map(|(chunk, file_id)| (*file_id, chunk.len()))
            .collect();
        self.retire(left);
    }

    /// After a successful [`SnapshotView::write`], under the same lock as the view was taken: forgets
    /// the retired files the write deleted, and records each chunk file it wrote as its chunk's
    /// backing. A chunk that left the index meanwhile (merged, dropped, spilled) gets none: its new
    /// file is retired instead, deleted by the next snapshot (the one just written refers to it).
    pub fn finish_snapshot(&mut self, view: &SnapshotView) {
        self.forget_retired_files(view.retired_files());
        let mut retired = Vec::new();
        for (chunk, file_id) in &view.to_file {
            let here = self.sealed.iter().any(|sealed| Arc::ptr_eq(sealed, chunk));
            if !(here && chunk.set_backing(*file_id)) {
                retired.push((*file_id, chunk.len()));
            }
        }
        self.retire(retired);
        assert!(
            view.to_file
                .iter()
                .all(|(chunk, _)| chunk.has_file() || !self.sealed.iter().any(|sealed| Arc::ptr_eq(sealed, chunk))),
            "every chunk a snapshot wrote a file for, still in the index, has a file"
        );
    }

    /// The state a snapshot writes, as of now. Cheap: the sealed chunks are shared, not copied; the
    /// active chunk (at most about 460,000 ids) is. Writes in flight are not included: their
    /// batches lie beyond the covered offsets, so replay brings them back. Neither are ids held by
    /// open transactions: each partition's covered offset is written as at most the first offset
    /// they hold there, so replay writes them again (see the module docs for why).
    pub fn snapshot_view(&mut self) -> SnapshotView {
        let holds = self.transaction_holds();
        let mut covered = self.covered.clone();
        for (entry, _) in &holds {
            let next = covered.entry(entry.location.partition).or_insert(entry.location.offset);
            *next = (*next).min(entry.location.offset);
        }
        let mut log_starts: Vec<(i32, i64)> =
            self.log_starts.iter().map(|(partition, start)| (*partition, *start)).collect();
        log_starts.sort_unstable();
        let dir = self.disk.as_ref().map(|disk| disk.dir.clone());
        let mut to_file = Vec::new();
        if let Some(disk) = &mut self.disk {
            for chunk in self.sealed.iter().filter(|chunk| !chunk.has_file() && chunk.len() > 0) {
                to_file.push((Arc::clone(chunk), disk.next_file_id));
                disk.next_file_id += 1;
            }
        }
        SnapshotView {
            dir,
            to_file,
            nonce: self.nonce,
            ids: self.config.ids,
            covered: covered.into_iter().collect(),
            log_starts,
            sealed: self.sealed.iter().cloned().collect(),
            frozen: self.frozen.clone(),
            active: self.active.entries().collect(),
            transaction_holds: holds.len(),
            retired: self.retired_files(),
        }
    }
}

/// A snapshot write that failed, and whether the new snapshot may already be in place.
struct Failed {
    error: DedupError,
    renamed: bool,
}

impl SnapshotView {
    /// Chunk files this view's write deletes once it is durable: after a successful write, pass
    /// this count to [`DedupIndex::forget_retired_files`].
    pub fn retired_files(&self) -> usize {
        self.retired.len()
    }

    /// Writes the view to `path` atomically and durably (temporary file, fsync, rename, directory
    /// fsync), then deletes the chunk files the index had retired before the view (the new snapshot
    /// does not refer to them; a failure to delete one only leaves an orphan, removed at start).
    ///
    /// On an error, pass the view to [`DedupIndex::abandon_snapshot`].
    pub fn write(&self, path: &Path) -> Result<SnapshotStats, DedupError> {
        let (files_written, file_entries) = self.write_chunk_files()?;
        match self.write_snapshot_file(path) {
            Ok(stats) => Ok(SnapshotStats { files_written, file_entries, ..stats }),
            Err(Failed { error, renamed: false }) => {
                // Nothing refers to the new files: remove them now (a start would remove them anyway).
                self.remove_chunk_files();
                Err(error)
            }
            // The new snapshot is in place and may be durable (its directory's fsync failed, or the
            // rename's outcome is unknown): its files stay, to be retired (`abandon_snapshot`).
            Err(Failed { error, renamed: true }) => Err(error),
        }
    }

    /// Writes, fsyncs and checks (`crate::disk::check_written`) a chunk file for every resident chunk
    /// the view found without one. On a failure, the files written so far are removed and the error
    /// returned.
    fn write_chunk_files(&self) -> Result<(usize, usize), DedupError> {
        let Some(dir) = &self.dir else { return Ok((0, 0)) };
        if !self.to_file.is_empty() && !dir.exists() {
            // An index loaded without `use_disk` (tests, tools): the directory is made durable
            // before any snapshot can refer to a file in it.
            fs::create_dir_all(dir).map_err(|error| DedupError::io(format!("creating {}", dir.display()), error))?;
            sync_parent(dir)?;
        }
        let mut entries = 0;
        for (chunk, file_id) in &self.to_file {
            let written = crate::disk::write_chunk(dir, *file_id, self.nonce, chunk.entries());
            // The file under its name is the one written, whole (the pages are checked at every start).
            let checked = written.and_then(|count| {
                assert_eq!(count, chunk.len(), "a chunk file holds every entry of its chunk");
                crate::disk::check_written(dir, *file_id, self.nonce, count)
            });
            if let Err(error) = checked {
                self.remove_chunk_files();
                return Err(error);
            }
            entries += chunk.len();
        }
        Ok((self.to_file.len(), entries))
    }

    fn remove_chunk_files(&self) {
        if let Some(dir) = &self.dir {
            for (_, file_id) in &self.to_file {
                let _ = fs::remove_file(crate::disk::chunk_path(dir, *file_id));
            }
        }
    }

    fn write_snapshot_file(&self, path: &Path) -> Result<SnapshotStats, Failed> {
        let before = |error| Failed { error, renamed: false };
        let temp = temp_path(path);
        let context = |what: &str| format!("{what} dedup snapshot {}", temp.display());
        // Readable by the broker's user only: it holds the index's id key (`IdScheme`). A temporary
        // file a crash left behind keeps its mode through `open`: it is set again.
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|file| file.set_permissions(fs::Permissions::from_mode(0o600)).map(|()| file))
            .map_err(|error| before(DedupError::io(context("creating"), error)))?;
        let mut out = Crc { inner: BufWriter::with_capacity(1 << 20, file), crc: 0, bytes: 0 };
        let stats = self.write_body(&mut out).map_err(|error| before(DedupError::io(context("writing"), error)))?;
        let crc = out.crc;
        let mut writer = out.inner;
        writer.write_all(&crc.to_be_bytes()).map_err(|error| before(DedupError::io(context("writing"), error)))?;
        let file =
            writer.into_inner().map_err(|error| before(DedupError::io(context("flushing"), error.into_error())))?;
        file.sync_all().map_err(|error| before(DedupError::io(context("fsyncing"), error)))?;
        drop(file);
        // From the rename on, the new snapshot may be the one a start finds.
        let after = |error| Failed { error, renamed: true };
        fs::rename(&temp, path).map_err(|error| {
            after(DedupError::io(format!("renaming {} to {}", temp.display(), path.display()), error))
        })?;
        sync_parent(path).map_err(after)?;
        for retired in &self.retired {
            let _ = fs::remove_file(retired);
        }
        Ok(SnapshotStats { bytes: out.bytes + 4, ..stats })
    }

    /// Everything before the checksum, streamed chunk by chunk (no copy of the index is made).
    fn write_body(&self, out: &mut impl Write) -> std::io::Result<SnapshotStats> {
        let mut stats = SnapshotStats {
            entries: 0,
            transaction_holds: self.transaction_holds,
            bytes: 0,
            files_written: 0,
            file_entries: 0,
        };
        let mut buffer = Vec::with_capacity(1 << 16);
        buffer.extend_from_slice(MAGIC);
        buffer.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        buffer.extend_from_slice(&self.nonce.to_be_bytes());
        match self.ids {
            IdScheme::Blake3 => buffer.push(IDS_BLAKE3),
            IdScheme::SipHash24 { key } => {
                buffer.push(IDS_SIPHASH24);
                buffer.extend_from_slice(&key[0].to_be_bytes());
                buffer.extend_from_slice(&key[1].to_be_bytes());
            }
        }
        for offsets in [&self.covered, &self.log_starts] {
            buffer.extend_from_slice(&(offsets.len() as u32).to_be_bytes());
            for (partition, offset) in offsets {
                buffer.extend_from_slice(&partition.to_be_bytes());
                buffer.extend_from_slice(&offset.to_be_bytes());
            }
        }
        // Sealed chunks oldest first, then the active chunk: load keeps the grouping by time. Each
        // sealed chunk's records are decided once, before the count that heads them: a reference to
        // its columns' file, to the file this write gave it, or to each of its backing files (a
        // resident chunk whose copy spans several files is written as one chunk per file, oldest
        // first: a load builds a chunk of each), or its entries inline.
        let mut sealed: Vec<(FileRef, usize, &Arc<SealedChunk>)> = Vec::with_capacity(self.sealed.len());
        for chunk in &self.sealed {
            let written_now = self.to_file.iter().find(|(new, _)| Arc::ptr_eq(new, chunk)).map(|(_, file_id)| *file_id);
            match (chunk.disk(), written_now) {
                (Some(disk), _) => sealed.push((Some((CHUNK_FILE, disk.file_id)), chunk.len(), chunk)),
                (None, Some(file_id)) => sealed.push((Some((CHUNK_FILE_RESIDENT, file_id)), chunk.len(), chunk)),
                (None, None) => {
                    let backing = chunk.files();
                    if backing.is_empty() {
                        sealed.push((None, chunk.len(), chunk));
                    }
                    let files =
                        backing.into_iter().map(|file| (Some((CHUNK_FILE_RESIDENT, file.file_id)), file.entries));
                    sealed.extend(files.map(|(file, len)| (file, len, chunk)));
                }
            }
        }
        let inline = 1 + usize::from(self.frozen.is_some());
        let chunk_records = sealed.len() + inline;
        buffer.extend_from_slice(&(chunk_records as u32).to_be_bytes());
        let mut records_written = 0;
        // A chunk with a file is referred to by its file id; any other is written entry by entry.
        let mut write_chunk =
            |file: FileRef, len: usize, entries: &mut dyn Iterator<Item = Entry>| -> std::io::Result<()> {
                stats.entries += len;
                records_written += 1;
                if let Some((kind, file_id)) = file {
                    buffer.push(kind);
                    buffer.extend_from_slice(&file_id.to_be_bytes());
                    buffer.extend_from_slice(&(len as u32).to_be_bytes());
                    return Ok(());
                }
                buffer.push(CHUNK_IN_SNAPSHOT);
                buffer.extend_from_slice(&(len as u32).to_be_bytes());
                for entry in entries {
                    put_entry(&mut buffer, &entry);
                    if buffer.len() >= 1 << 16 {
                        out.write_all(&buffer)?;
                        buffer.clear();
                    }
                }
                Ok(())
            };
        for (file, len, chunk) in sealed {
            let mut entries = chunk
                .entries()
                .take(if file.is_some() { 0 } else { len })
                .map(|entry| entry.expect("a resident chunk's entries are in memory"));
            write_chunk(file, len, &mut entries)?;
        }
        if let Some(frozen) = &self.frozen {
            write_chunk(None, frozen.len(), &mut frozen.entries())?;
        }
        write_chunk(None, self.active.len(), &mut self.active.iter().copied())?;
        assert_eq!(records_written, chunk_records, "the chunk count heads as many chunks as follow it");
        buffer.extend_from_slice(&0u32.to_be_bytes()); // no transaction holds
        out.write_all(&buffer)?;
        Ok(stats)
    }
}

impl DedupIndex {
    /// Reads a snapshot written by [`DedupIndex::snapshot`]. Any error means the file cannot be
    /// trusted: rebuild the index from the whole log instead ([`DedupError::means_rebuild`]). The
    /// loaded index's [`IndexConfig::ids`] is the snapshot's, whatever `config` says: the caller
    /// hashes ids with `index.config().ids` from then on.
    pub fn load(path: &Path, config: IndexConfig) -> Result<DedupIndex, DedupError> {
        let context = || format!("reading dedup snapshot {}", path.display());
        let file = File::open(path).map_err(|error| DedupError::io(context(), error))?;
        let file_len = file.metadata().map_err(|error| DedupError::io(context(), error))?.len();
        let mut input = Reader { inner: Crc { inner: BufReader::new(file), crc: 0, bytes: 0 }, file_len };
        let magic = input.bytes(MAGIC.len())?;
        if magic != MAGIC {
            return Err(corrupt("bad magic".to_string()));
        }
        let version = input.u32()?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(DedupError::SnapshotVersion { found: version, supported: SNAPSHOT_VERSION });
        }
        let dir = chunk_dir(path);
        let mut index = DedupIndex::new(config);
        // The chunks, oldest first: they join the index once all are read, so that the topic filter
        // is sized for their ids (a reference to a file of millions takes 13 bytes of the snapshot).
        // Chunk files are read once the snapshot itself has passed its checks, several at a time.
        let mut chunks: Vec<Loaded> = Vec::new();
        if version >= 3 {
            index.nonce = input.u64()?;
        }
        // Before version 5 every index hashed its ids with BLAKE3.
        index.config.ids = match version {
            ..=4 => IdScheme::Blake3,
            _ => match input.array::<1>()?[0] {
                IDS_BLAKE3 => IdScheme::Blake3,
                IDS_SIPHASH24 => IdScheme::SipHash24 { key: [input.u64()?, input.u64()?] },
                other => return Err(corrupt(format!("unknown id hash {other}"))),
            },
        };
        let mut next_file_id = 0;
        let mut referred = std::collections::HashSet::new();
        for (partition, offset) in input.offset_pairs()? {
            index.advance_covered(partition, offset);
        }
        for (partition, offset) in input.offset_pairs()? {
            index.set_log_start_offset(partition, offset);
        }
        let chunk_count = input.count(4)?;
        for _ in 0..chunk_count {
            let kind = if version == 1 { CHUNK_IN_SNAPSHOT } else { input.array::<1>()?[0] };
            if kind == CHUNK_FILE || (kind == CHUNK_FILE_RESIDENT && version >= 4) {
                let file_id = input.u64()?;
                let count = input.u32()? as usize;
                // Two chunks sharing a file: retiring one would delete the other's.
                if !referred.insert(file_id) {
                    return Err(corrupt(format!("chunk file {file_id} is referred to twice")));
                }
                next_file_id = next_file_id.max(file_id + 1);
                chunks.push(Loaded::File { resident: kind == CHUNK_FILE_RESIDENT, file_id, count });
                continue;
            }
            if kind != CHUNK_IN_SNAPSHOT {
                return Err(corrupt(format!("unknown chunk kind {kind}")));
            }
            let count = input.count(ENTRY_LEN)?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push(input.entry()?);
            }
            entries.sort_unstable_by_key(|entry| entry.id);
            if entries.windows(2).any(|pair| pair[0].id == pair[1].id) {
                return Err(corrupt("an id appears twice in one chunk".to_string()));
            }
            let spans = spans_of(entries.iter().copied());
            if !fits_in_chunk(&spans) {
                return Err(corrupt("a chunk exceeds the partition or offset span bounds".to_string()));
            }
            if !entries.is_empty() {
                let count = entries.len();
                chunks.push(Loaded::Inline(SealedChunk::from_sorted(entries.into_iter(), spans, Some(count))));
            }
        }
        let hold_count = input.count(HOLD_LEN)?;
        let mut holds = Vec::with_capacity(hold_count);
        for _ in 0..hold_count {
            holds.push((input.entry()?, input.i64()?));
        }
        let computed = input.inner.crc;
        let mut trailer = [0u8; 4];
        input.inner.inner.read_exact(&mut trailer).map_err(|_| corrupt("missing checksum".to_string()))?;
        if u32::from_be_bytes(trailer) != computed {
            return Err(corrupt("checksum mismatch".to_string()));
        }
        let mut extra = [0u8; 1];
        if input.inner.inner.read(&mut extra).map_err(|error| DedupError::io(context(), error))? != 0 {
            return Err(corrupt("bytes after the checksum".to_string()));
        }
        let chunks = read_chunk_files(&dir, index.nonce, chunks)?;
        // None if a chunk is on disk: it would drop the filter at once (its ids are not in RAM).
        if chunks.iter().all(|chunk| chunk.disk().is_none()) {
            index.filter.start_for_load(chunks.iter().map(SealedChunk::len).sum());
        }
        for chunk in chunks {
            index.push_sealed(chunk);
        }
        for (entry, producer_id) in holds {
            if !index.restore_transaction_hold(entry, producer_id) {
                return Err(corrupt("an id is held by two transactions".to_string()));
            }
        }
        index.disk = Some(DiskStore::new(dir, usize::MAX, next_file_id));
        Ok(index)
    }
}

/// A chunk of a snapshot being loaded: read from the snapshot itself, or a file it refers to, not
/// yet read.
enum Loaded {
    Inline(SealedChunk),
    File {
        /// Loaded into RAM (a resident chunk's copy), or opened on disk.
        resident: bool,
        file_id: u64,
        /// Ids the snapshot says the file holds.
        count: usize,
    },
}

/// The chunks of a snapshot in order, with the files read (and checked whole) by a few threads at
/// once: a load at 10 M resident ids reads about 13 files of 300 MB in all and rebuilds their
/// directories and filters, most of a restart's time. The first error in snapshot order is returned.
fn read_chunk_files(dir: &Path, nonce: u64, chunks: Vec<Loaded>) -> Result<Vec<SealedChunk>, DedupError> {
    let read = |loaded: &Loaded| -> Option<Result<SealedChunk, DedupError>> {
        let Loaded::File { resident, file_id, count } = *loaded else { return None };
        let chunk = match resident {
            true => read_chunk_resident(dir, file_id, nonce),
            false => open_chunk(dir, file_id, nonce),
        };
        Some(chunk.and_then(|chunk| match chunk.len() == count {
            true => Ok(chunk),
            false => Err(corrupt(format!("chunk file {file_id} holds {} ids, not {count}", chunk.len()))),
        }))
    };
    let files = chunks.iter().filter(|loaded| matches!(loaded, Loaded::File { .. })).count();
    let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get()).clamp(1, 4).min(files);
    let mut read_files: Vec<Option<Result<SealedChunk, DedupError>>> = Vec::new();
    read_files.resize_with(chunks.len(), || None);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(loaded) = chunks.get(at) else { break done };
                        if let Some(chunk) = read(loaded) {
                            done.push((at, chunk));
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().expect("a chunk file reader panicked")).collect::<Vec<_>>()
    });
    for (at, chunk) in done {
        read_files[at] = Some(chunk);
    }
    let mut sealed = Vec::with_capacity(chunks.len());
    for (loaded, file) in chunks.into_iter().zip(read_files) {
        match (loaded, file) {
            (Loaded::Inline(chunk), None) => sealed.push(chunk),
            (Loaded::File { .. }, Some(chunk)) => sealed.push(chunk?),
            _ => unreachable!("every file is read, and only files"),
        }
    }
    Ok(sealed)
}

/// Deletes a snapshot file that cannot be trusted, durably (its directory is fsynced); a missing
/// file is no error. An index that starts empty calls it before writing any chunk file, so that the
/// old snapshot can never be loaded with files written after it under the names it refers to.
pub fn remove_snapshot(path: &Path) -> Result<(), DedupError> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(DedupError::io(format!("removing {}", path.display()), error)),
    }
}

fn corrupt(reason: String) -> DedupError {
    DedupError::SnapshotCorrupt(reason)
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
fn sync_parent(path: &Path) -> Result<(), DedupError> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    sync_dir(parent)
}

/// Fsyncs a directory, making a rename or a new file in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DedupError> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| DedupError::io(format!("fsyncing directory {}", dir.display()), error))
}

/// Reads snapshot fields, refusing counts the rest of the file cannot hold (so a corrupt count
/// never causes a huge allocation).
struct Reader {
    inner: Crc<BufReader<File>>,
    file_len: u64,
}

impl Reader {
    fn bytes(&mut self, count: usize) -> Result<Vec<u8>, DedupError> {
        let mut bytes = vec![0u8; count];
        self.inner.read_exact(&mut bytes).map_err(|_| corrupt(format!("cut short at byte {}", self.inner.bytes)))?;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DedupError> {
        let mut bytes = [0u8; N];
        self.inner.read_exact(&mut bytes).map_err(|_| corrupt(format!("cut short at byte {}", self.inner.bytes)))?;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, DedupError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DedupError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DedupError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DedupError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A u32 count of items of `item_len` bytes, checked against the bytes left in the file.
    fn count(&mut self, item_len: usize) -> Result<usize, DedupError> {
        let count = self.u32()? as usize;
        let left = self.file_len.saturating_sub(self.inner.bytes);
        if (count as u64).saturating_mul(item_len as u64) > left {
            return Err(corrupt(format!("{count} items of {item_len} bytes cannot fit in the {left} bytes left")));
        }
        Ok(count)
    }

    fn offset_pairs(&mut self) -> Result<Vec<(i32, i64)>, DedupError> {
        let count = self.count(OFFSET_PAIR_LEN)?;
        (0..count).map(|_| Ok((self.i32()?, self.i64()?))).collect()
    }

    fn entry(&mut self) -> Result<Entry, DedupError> {
        let id = Id(self.array()?);
        let partition = self.i32()?;
        let offset = self.i64()?;
        let time_s = self.u32()?;
        if partition < 0 || offset < 0 {
            return Err(corrupt(format!("negative partition {partition} or offset {offset}")));
        }
        Ok(Entry { id, location: Location { partition, offset }, time_s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DedupWindow;
    use crate::index::Decision;

    fn id(n: u32) -> Id {
        Id::of(&n.to_be_bytes())
    }

    /// An index with several sealed chunks, an active chunk, an open transaction, retention and
    /// covered offsets.
    fn populated() -> DedupIndex {
        let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 3);
        for number in 0..200u32 {
            let partition = (number % 3) as i32;
            let reservation = index.reserve(partition, &[Some(id(number))], None, 0).expect("reserve");
            index.confirm(reservation, &[i64::from(number)], i64::from(number) * 1_000);
        }
        let reservation = index.reserve(1, &[Some(id(500)), Some(id(501))], Some(77), 0).expect("reserve");
        index.confirm(reservation, &[300, 301], 5_000);
        index.set_log_start_offset(0, 30);
        index.advance_covered(2, 400);
        assert!(index.sealed_chunks() > 3, "several chunks");
        index
    }

    /// The committed ids of [`populated`] (not its open transaction's, which a snapshot leaves out).
    fn assert_same_ids(loaded: &DedupIndex, original: &DedupIndex) {
        for number in 0..200u32 {
            assert_eq!(loaded.lookup_ok(&id(number), 0), original.lookup_ok(&id(number), 0), "id {number}");
        }
        assert_eq!(loaded.stored_ids(), original.stored_ids());
    }

    fn assert_same(loaded: &DedupIndex, original: &DedupIndex) {
        // Loaded with its topic filter unless a chunk is on disk (the upkeep builds it then).
        let on_disk = loaded.sealed.iter().any(|chunk| chunk.disk().is_some());
        assert_eq!(loaded.topic_filter().is_some(), !on_disk, "a resident index is loaded with its filter");
        loaded.assert_filter_covers_sealed();
        for number in 0..600u32 {
            assert_eq!(loaded.lookup_ok(&id(number), 0), original.lookup_ok(&id(number), 0), "id {number}");
        }
        assert_eq!(loaded.stored_ids(), original.stored_ids());
        assert_eq!(loaded.pending_ids(), original.pending_ids());
        for partition in 0..4 {
            assert_eq!(loaded.covered_offset(partition), original.covered_offset(partition));
        }
        assert_eq!(loaded.log_starts, original.log_starts);
    }

    #[test]
    fn snapshot_round_trips() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        let mut original = populated();
        let stats = original.snapshot(&path).expect("snapshot");
        assert_eq!(stats.entries, 200);
        assert_eq!(stats.transaction_holds, 2);
        assert_eq!(stats.bytes, fs::metadata(&path).expect("metadata").len());
        assert!(!temp_path(&path).exists(), "the temporary file is renamed away");
        let mut loaded = DedupIndex::load(&path, original.config()).expect("load");
        for number in 0..200u32 {
            assert_eq!(loaded.lookup_ok(&id(number), 0), original.lookup_ok(&id(number), 0), "id {number}");
        }
        assert_eq!(loaded.stored_ids(), original.stored_ids());
        assert_eq!(loaded.pending_ids(), 0, "the open transaction's ids are left out");
        assert_eq!(loaded.covered_offset(0), original.covered_offset(0));
        assert_eq!(loaded.covered_offset(2), Some(400));
        assert_eq!(loaded.covered_offset(1), Some(300), "partition 1 replays from the transaction's first id");
        assert_eq!(loaded.log_starts, original.log_starts);
        // Replaying partition 1 from 300 holds the ids again: they block others until the marker.
        let replayed = loaded.reserve(1, &[Some(id(500)), Some(id(501))], Some(77), 0).expect("reserve");
        assert_eq!(replayed.decisions(), &[Decision::New, Decision::New]);
        loaded.confirm(replayed, &[300, 301], 5_000);
        assert_eq!(loaded.covered_offset(1), Some(302));
        assert_same(&loaded, &original);
        let other = loaded.reserve(0, &[Some(id(500))], None, 0).expect("reserve");
        assert_eq!(other.decisions(), &[Decision::Pending]);
        loaded.release(other);
        assert_eq!(loaded.end_transaction(1, 77, true), 2);
        assert_eq!(loaded.lookup_ok(&id(501), 0), Some(Location { partition: 1, offset: 301 }));
        // A second snapshot over the first replaces it.
        loaded.snapshot(&path).expect("snapshot again");
        let reloaded = DedupIndex::load(&path, loaded.config()).expect("reload");
        assert_same(&reloaded, &loaded);
    }

    #[test]
    fn a_view_is_written_as_it_was_taken_while_the_index_changes() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        let mut index = populated();
        let view = index.snapshot_view();
        let expected: Vec<_> = (0..600u32).map(|number| index.lookup_ok(&id(number), 0)).collect();
        let stored = index.stored_ids();
        // After the view: more ids, a retention pass and expiry that drops and rewrites chunks.
        for number in 1_000..1_100u32 {
            let reservation = index.reserve(2, &[Some(id(number))], None, 0).expect("reserve");
            index.confirm(reservation, &[i64::from(number)], 0);
        }
        index.set_log_start_offset(1, 150);
        index.expire(0, usize::MAX);
        let stats = view.write(&path).expect("write the view");
        assert_eq!(stats.entries, stored);
        let loaded = DedupIndex::load(&path, index.config()).expect("load");
        for number in 0..600u32 {
            assert_eq!(loaded.lookup_ok(&id(number), 0), expected[number as usize], "id {number}");
        }
        assert_eq!(loaded.lookup_ok(&id(1_050), 0), None, "what came after the view is not in it");
        assert_eq!(loaded.covered_offset(2), Some(400));
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_rejected() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        let mut index = DedupIndex::with_tiny_chunks(IndexConfig::new(DedupWindow::Retention), 2);
        for number in 0..6u32 {
            let reservation = index.reserve(0, &[Some(id(number))], Some(i64::from(number % 2)), 0).expect("reserve");
            index.confirm(reservation, &[i64::from(number)], 0);
        }
        index.end_transaction(0, 0, true);
        index.set_log_start_offset(0, 1);
        index.snapshot(&path).expect("snapshot");
        let good = fs::read(&path).expect("read");
        DedupIndex::load(&path, index.config()).expect("the intact file loads");
        let corrupt = directory.path().join("corrupt");
        for position in 0..good.len() {
            for flip in [0x01u8, 0x80] {
                let mut bytes = good.clone();
                bytes[position] ^= flip;
                fs::write(&corrupt, &bytes).expect("write");
                let error = DedupIndex::load(&corrupt, index.config()).err();
                let error = error.unwrap_or_else(|| panic!("flipping bit {flip:#x} of byte {position} went unnoticed"));
                assert!(error.means_rebuild(), "{error}");
            }
        }
        for length in 0..good.len() {
            fs::write(&corrupt, &good[..length]).expect("write");
            let error = DedupIndex::load(&corrupt, index.config()).err();
            assert!(error.is_some_and(|error| error.means_rebuild()), "a snapshot cut at {length} bytes is rejected");
        }
        let mut longer = good.clone();
        longer.push(0);
        fs::write(&corrupt, &longer).expect("write");
        assert!(DedupIndex::load(&corrupt, index.config()).is_err(), "trailing bytes are rejected");
    }

    #[test]
    fn another_version_is_rejected_as_such() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        let mut index = populated();
        index.snapshot(&path).expect("snapshot");
        set_version(&path, SNAPSHOT_VERSION + 1);
        let error = DedupIndex::load(&path, index.config()).err().expect("rejected");
        assert!(matches!(error, DedupError::SnapshotVersion { found, .. } if found == SNAPSHOT_VERSION + 1), "{error}");
        assert!(error.means_rebuild());
    }

    /// Rewrites the version field of the snapshot at `path` (and its checksum).
    fn set_version(path: &Path, version: u32) {
        let mut bytes = fs::read(path).expect("read");
        bytes[8..12].copy_from_slice(&version.to_be_bytes());
        write_with_checksum(path, bytes);
    }

    /// Writes snapshot `bytes` to `path` with their trailing checksum made right again.
    fn write_with_checksum(path: &Path, mut bytes: Vec<u8>) {
        let body_len = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&crc.to_be_bytes());
        fs::write(path, &bytes).expect("write");
    }

    /// Rewrites the snapshot at `path` as `version` (4 or older) would have it: without the id hash
    /// field (version 5) that follows the nonce.
    fn downgrade(path: &Path, version: u32) {
        assert!((3..=4).contains(&version), "versions with a nonce and before the id hash field");
        let mut bytes = fs::read(path).expect("read");
        let field = 20; // magic 8, version 4, nonce 8
        let field_len = match bytes[field] {
            IDS_BLAKE3 => 1,
            IDS_SIPHASH24 => 17,
            other => panic!("id hash tag {other}"),
        };
        bytes.drain(field..field + field_len);
        fs::write(path, &bytes).expect("write");
        set_version(path, version);
    }

    #[test]
    fn the_id_scheme_is_kept_and_older_snapshots_hashed_with_blake3() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        let mut index = populated();
        let scheme = index.config().ids;
        assert!(matches!(scheme, IdScheme::SipHash24 { .. }), "a new index hashes with a key");
        assert_ne!(IndexConfig::new(DedupWindow::Retention).ids, scheme, "a random key each");
        fs::write(temp_path(&path), b"left by a crash").expect("write");
        fs::set_permissions(temp_path(&path), fs::Permissions::from_mode(0o644)).expect("chmod");
        index.snapshot(&path).expect("snapshot");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the snapshot holds the key: readable by its owner only");
        let other = IndexConfig::new(DedupWindow::Retention);
        let loaded = DedupIndex::load(&path, other).expect("load");
        assert_eq!(loaded.config().ids, scheme, "the snapshot's key, not the config's");
        assert_same_ids(&loaded, &index);
        let mut blake3 = DedupIndex::load(&path, other).expect("load");
        blake3.config.ids = IdScheme::Blake3;
        blake3.snapshot(&path).expect("snapshot");
        assert_eq!(DedupIndex::load(&path, other).expect("load").config().ids, IdScheme::Blake3);
        for version in [4, 3] {
            index.snapshot(&path).expect("snapshot");
            downgrade(&path, version);
            let loaded = DedupIndex::load(&path, other).expect("an older snapshot loads");
            assert_eq!(loaded.config().ids, IdScheme::Blake3, "version {version}: its ids were BLAKE3's");
            assert_same_ids(&loaded, &index);
        }
        // An unknown hash is refused, so a rebuild hashes every id again.
        index.snapshot(&path).expect("snapshot");
        let mut bytes = fs::read(&path).expect("read");
        bytes[20] = 7;
        write_with_checksum(&path, bytes);
        let error = DedupIndex::load(&path, other).err().expect("refused");
        assert!(error.means_rebuild() && error.to_string().contains("unknown id hash 7"), "{error}");
    }

    /// A snapshot the build before the id key wrote (version 4; a topic of one partition that stored
    /// 20 records with header `msg-id` = `order-0` to `order-19` at offsets 0 to 19, then shut down):
    /// it loads as BLAKE3 and finds each of them.
    #[test]
    fn a_snapshot_of_the_build_before_loads_as_blake3() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        fs::write(&path, include_bytes!("../tests/fixtures/v4-blake3.snapshot")).expect("write");
        let loaded = DedupIndex::load(&path, IndexConfig::new(DedupWindow::Retention)).expect("it loads");
        assert_eq!(loaded.config().ids, IdScheme::Blake3);
        assert_eq!((loaded.stored_ids(), loaded.covered_offset(0)), (20, Some(20)));
        for offset in 0..20 {
            let id = loaded.config().ids.id_of(format!("order-{offset}").as_bytes());
            assert_eq!(loaded.lookup_ok(&id, 0), Some(Location { partition: 0, offset }), "order-{offset}");
            let keyed = IdScheme::SipHash24 { key: [1, 2] }.id_of(format!("order-{offset}").as_bytes());
            assert_eq!(loaded.lookup_ok(&keyed, 0), None, "hashed another way, the id is not found");
        }
    }

    #[test]
    fn scheme_debug_never_shows_the_key() {
        let shown = format!("{:?}", IdScheme::SipHash24 { key: [0x1234_5678_9abc_def0, 42] });
        assert!(!shown.contains("42") && !shown.to_lowercase().contains("9abc"), "{shown}");
    }

    /// Version 3 is version 4 without references to resident chunks' files: a v3 snapshot (written by
    /// the build before) loads; one carrying such a reference is refused (it cannot have been written).
    #[test]
    fn a_version_3_snapshot_loads_and_a_resident_file_reference_needs_version_4() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("dedup.snapshot");
        let mut inline = populated();
        inline.snapshot(&path).expect("snapshot");
        downgrade(&path, 3);
        let loaded = DedupIndex::load(&path, inline.config()).expect("a version 3 snapshot loads");
        for number in 0..600u32 {
            assert_eq!(loaded.lookup_ok(&id(number), 0), inline.lookup_ok(&id(number), 0), "id {number}");
        }
        // The loaded index has a chunk directory: its next snapshot refers to resident chunks' files.
        let mut with_files = loaded;
        let stats = with_files.snapshot(&path).expect("snapshot with files");
        assert!(stats.files_written > 0);
        downgrade(&path, 4);
        assert!(DedupIndex::load(&path, with_files.config()).is_ok(), "as version 4");
        with_files.snapshot(&path).expect("snapshot with files");
        downgrade(&path, 3);
        let error = DedupIndex::load(&path, with_files.config()).err().expect("refused as version 3");
        assert!(error.means_rebuild(), "{error}");
    }

    #[test]
    fn a_missing_snapshot_means_rebuild() {
        let directory = tempfile::tempdir().expect("tempdir");
        let error = DedupIndex::load(&directory.path().join("absent"), IndexConfig::new(DedupWindow::Retention))
            .err()
            .expect("no file");
        assert!(error.means_rebuild(), "{error}");
    }
}
