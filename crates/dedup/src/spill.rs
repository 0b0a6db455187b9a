//! Windows larger than RAM: sealed chunks move to files (`crate::disk`) when the index passes its
//! memory budget, oldest first, and chunks on disk are compacted and merged — all by [`DiskWork`],
//! whose I/O runs without the index (the caller's lock): [`DedupIndex::next_disk_work`] picks the
//! work under the lock (cheap), [`DiskWork::run`] writes, fsyncs and reads the new file back
//! without it, and [`DedupIndex::finish_disk_work`] swaps the new chunk in under the lock, if its
//! inputs are still there (otherwise the new file is deleted: nothing referred to it).
//!
//! A file a chunk no longer uses (dropped, compacted, merged) is *retired*, not deleted: the latest
//! snapshot may still refer to it. The snapshot that no longer does deletes it once it is durable;
//! at start, files the loaded snapshot does not refer to are deleted
//! ([`DedupIndex::remove_orphan_chunk_files`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chunk::{is_live, LogStarts, SealedChunk};
use crate::config::DedupWindow;
use crate::disk::{chunk_path, list_chunk_files, open_chunk, write_chunk};
use crate::error::DedupError;
use crate::index::{merge_target, DedupIndex, MERGE_FRACTION};

/// Largest chunk a merge on disk builds: bounds the I/O of one step (about 270 MB written, a few
/// seconds) while a lookup still probes few filters (about 120 chunks at the bound on ids).
pub const DISK_CHUNK_IDS_MAX: usize = 8 << 20;

/// Neighbours on disk merge only if the larger holds at most this many times the ids of the
/// smaller: chunks grow by merging with chunks of about their size, so each id is rewritten about
/// once per doubling of its chunk. (Merging whatever fits rewrote a large chunk for each small one
/// it took in: a chunk sealed under a small memory budget was rewritten dozens of times.)
const MERGE_SIZE_RATIO: usize = 2;

/// Chunks on disk past which any two neighbours that fit may merge, smallest first: twice the
/// chunks merges of like sizes settle at (about `MERGE_FRACTION` of the largest size, and one or
/// two of each size below it), and one per doubling of the stored ids.
pub(crate) fn disk_chunks_calm(stored: usize) -> usize {
    2 * MERGE_FRACTION + stored.max(1).ilog2() as usize
}

/// The directory of an index's chunk files, beside its snapshot file.
pub fn chunk_dir(snapshot_path: &Path) -> PathBuf {
    snapshot_path.with_file_name("dedup-chunks")
}

/// Where an index keeps chunks on disk, and its budget.
pub(crate) struct DiskStore {
    pub(crate) dir: PathBuf,
    /// Bytes of RAM ([`DedupIndex::approx_bytes`]) past which sealed chunks move to disk.
    pub(crate) memory_bytes: usize,
    pub(crate) next_file_id: u64,
    /// Files no chunk uses any more, with the ids each holds, deleted after the next snapshot (see
    /// the module docs).
    pub(crate) retired: Vec<(PathBuf, usize)>,
    /// A `DiskWork` is out: no other is handed out until it is finished.
    in_progress: bool,
    /// The inputs of the `DiskWork` that is out: merges and compactions in RAM (`expire`) leave
    /// them alone, so a spill is not discarded at its swap because its chunk was rewritten meanwhile.
    running_inputs: Vec<Arc<SealedChunk>>,
    /// The last spill failed with this error (cleared by the next one that works).
    spill_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A resident chunk written to disk (oldest first, while over the budget).
    Spill,
    /// A chunk on disk at least half dead, rewritten with its live ids.
    Compact,
    /// Two neighbouring chunks on disk merged (older, newer).
    Merge,
}

/// One step of disk upkeep, picked under the index's lock and run without it.
pub struct DiskWork {
    kind: Kind,
    dir: PathBuf,
    file_id: u64,
    /// The index's nonce, written into the file's trailer.
    nonce: u64,
    /// One chunk, or two neighbours (older, newer) for a merge.
    inputs: Vec<Arc<SealedChunk>>,
    window: DedupWindow,
    now_ms: i64,
    log_starts: LogStarts,
}

/// A [`DiskWork`] that ran: to be handed to [`DedupIndex::finish_disk_work`].
pub struct DiskDone {
    kind: Kind,
    inputs: Vec<Arc<SealedChunk>>,
    /// The new chunk (`None`: no input id was live).
    output: Result<Option<SealedChunk>, DedupError>,
}

impl DiskWork {
    /// Ids in each input, if this is a merge of chunks on disk (tests).
    #[cfg(test)]
    pub(crate) fn merge_input_ids(&self) -> Option<Vec<usize>> {
        (self.kind == Kind::Merge).then(|| self.inputs.iter().map(|input| input.len()).collect())
    }

    /// Writes the new chunk file (live ids of the inputs, merged), fsyncs it, and reads it back
    /// through the checks of a start. Ids dead now stay dead (time and log starts only move on),
    /// so deciding liveness without the lock is safe.
    pub fn run(self) -> DiskDone {
        let DiskWork { kind, dir, file_id, nonce, inputs, window, now_ms, log_starts } = self;
        let live = |entry: &crate::chunk::Entry| is_live(entry.location, entry.time_s, window, now_ms, &log_starts);
        let (newer, older) = match inputs.as_slice() {
            [one] => (one, None),
            [older, newer] => (newer, Some(older)),
            _ => unreachable!("disk work has one or two inputs"),
        };
        // A resident chunk whose entries a snapshot already wrote to a file is spilled by opening
        // that file (checked whole, as at a start) instead of writing another; if it fails its
        // checks, a new file is written from RAM as for any other chunk.
        if let (Kind::Spill, Some(backing)) = (kind, newer.file_id()) {
            assert!(newer.disk().is_none(), "a spill's input is resident");
            match open_chunk(&dir, backing, nonce) {
                Ok(chunk) if chunk.len() == newer.len() => return DiskDone { kind, inputs, output: Ok(Some(chunk)) },
                Ok(chunk) => tracing::warn!(
                    file = %crate::disk::chunk_path(&dir, backing).display(),
                    ids = chunk.len(),
                    expected = newer.len(),
                    "a resident dedup chunk's file holds other ids than the chunk; spilling to a new file"
                ),
                Err(error) => {
                    tracing::warn!(%error, "a resident dedup chunk's file cannot be used; spilling to a new file")
                }
            }
        }
        let older_entries = older.into_iter().flat_map(|older| older.entries());
        let written = write_chunk(&dir, file_id, nonce, SealedChunk::merged_live(newer.entries(), older_entries, live));
        let output = written.and_then(|count| {
            let path = crate::disk::chunk_path(&dir, file_id);
            if count == 0 {
                let _ = fs::remove_file(&path);
                return Ok(None);
            }
            let chunk = open_chunk(&dir, file_id, nonce);
            if chunk.is_err() {
                let _ = fs::remove_file(&path);
            }
            let chunk = chunk?;
            assert_eq!(chunk.len(), count, "a chunk file reads back with the entries written");
            Ok(Some(chunk))
        });
        DiskDone { kind, inputs, output }
    }
}

impl DedupIndex {
    /// Keeps sealed chunks beyond `memory_bytes` of RAM in files under `dir` (created if needed),
    /// oldest first. Call before the index stores ids, after [`DedupIndex::load`] (which sets `dir`
    /// to [`chunk_dir`] of the snapshot) and [`DedupIndex::remove_orphan_chunk_files`].
    pub fn use_disk(&mut self, dir: PathBuf, memory_bytes: usize) -> Result<(), DedupError> {
        fs::create_dir_all(&dir).map_err(|error| DedupError::io(format!("creating {}", dir.display()), error))?;
        match &mut self.disk {
            Some(disk) if disk.dir == dir => disk.memory_bytes = memory_bytes,
            _ => self.disk = Some(DiskStore::new(dir, memory_bytes, self.highest_file_id().map_or(0, |id| id + 1))),
        }
        Ok(())
    }

    fn highest_file_id(&self) -> Option<u64> {
        self.sealed.iter().flat_map(|chunk| chunk.files()).map(|file| file.file_id).max()
    }

    /// Deletes the files in the chunk directory that no chunk of this index uses (left by a crash
    /// before a snapshot referred to them, or retired by chunks a snapshot no longer had), and
    /// temporary files of interrupted writes. Call at open, before any disk work. Returns how many.
    pub fn remove_orphan_chunk_files(&self) -> Result<usize, DedupError> {
        let Some(disk) = &self.disk else { return Ok(0) };
        let used: std::collections::HashSet<u64> =
            self.sealed.iter().flat_map(|chunk| chunk.files()).map(|file| file.file_id).collect();
        let mut removed = 0;
        for (path, file_id) in list_chunk_files(&disk.dir)? {
            if file_id.is_none_or(|file_id| !used.contains(&file_id)) {
                fs::remove_file(&path)
                    .map_err(|error| DedupError::io(format!("removing {}", path.display()), error))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// True if the index holds more RAM than its budget and has a resident sealed chunk to move.
    pub fn over_memory_budget(&self) -> bool {
        self.disk.as_ref().is_some_and(|disk| self.approx_bytes() > disk.memory_bytes)
            && self.sealed.iter().any(|chunk| chunk.disk().is_none())
    }

    /// The memory budget, if chunks go to disk.
    pub fn memory_budget(&self) -> Option<usize> {
        self.disk.as_ref().map(|disk| disk.memory_bytes)
    }

    /// Sealed chunks whose entries are on disk.
    pub fn disk_chunks(&self) -> usize {
        self.sealed.iter().filter(|chunk| chunk.disk().is_some()).count()
    }

    /// Bytes of RAM the chunks on disk hold (filters, fences, ranges): about 1.4 per id.
    pub fn disk_chunk_bytes(&self) -> usize {
        self.sealed.iter().filter(|chunk| chunk.disk().is_some()).map(|chunk| chunk.approx_bytes()).sum()
    }

    /// Ids stored in chunks on disk.
    pub fn disk_ids(&self) -> usize {
        self.sealed.iter().filter(|chunk| chunk.disk().is_some()).map(|chunk| chunk.len()).sum()
    }

    /// The next step of disk upkeep, if any and none is out: a spill of the oldest resident chunk
    /// while over the budget, else a compaction of a chunk on disk at least half dead, else a merge
    /// of two neighbours on disk of about the same size (within [`MERGE_SIZE_RATIO`]) that fit in
    /// one (up to [`DISK_CHUNK_IDS_MAX`] ids), the pair with the fewest ids first. Give its
    /// [`DiskWork::run`] result to [`DedupIndex::finish_disk_work`].
    pub fn next_disk_work(&mut self, now_ms: i64) -> Option<DiskWork> {
        let window = self.config.window;
        let over = self.over_memory_budget();
        let disk = self.disk.as_ref().filter(|disk| !disk.in_progress)?;
        let target = merge_target(self.stored_ids(), self.chunk_bits_min, MERGE_FRACTION).min(DISK_CHUNK_IDS_MAX);
        let on_disk = |index: usize| self.sealed.get(index).is_some_and(|chunk| chunk.disk().is_some());
        let pick = if over {
            // Not a chunk a rewrite in RAM is copying (its swap would find it gone).
            let rewriting = |chunk: &Arc<SealedChunk>| self.rewriting.iter().any(|input| Arc::ptr_eq(input, chunk));
            let spillable = |chunk: &Arc<SealedChunk>| chunk.disk().is_none() && !rewriting(chunk);
            self.sealed.iter().position(spillable).map(|index| (Kind::Spill, index))
        } else {
            None
        };
        let pick = pick.or_else(|| {
            (0..self.sealed.len()).find_map(|index| {
                let chunk = &self.sealed[index];
                let dead = chunk.dead_estimate(window, now_ms, &self.log_starts);
                (on_disk(index) && dead > 0 && dead * 2 >= chunk.len()).then_some((Kind::Compact, index))
            })
        });
        // The smallest neighbours first (the oldest of equals): small chunks merge with each other
        // before a large one absorbs them, so each id is rewritten about once per doubling of its
        // chunk, not once per small chunk a large neighbour takes in.
        let pick = pick.or_else(|| {
            (0..self.sealed.len().saturating_sub(1))
                .filter(|&index| on_disk(index) && on_disk(index + 1))
                .map(|index| (self.sealed[index].len(), self.sealed[index + 1].len(), index))
                .filter(|&(older, newer, _)| {
                    older + newer <= target && older.min(newer) * MERGE_SIZE_RATIO >= older.max(newer)
                })
                .map(|(older, newer, index)| (older + newer, index))
                .min()
                .map(|(_, index)| (Kind::Merge, index))
        });
        // A chunk more than twice smaller than both its neighbours (a start seals the active chunk
        // as it is; compaction shrinks chunks) never merges by that rule: once there are more
        // chunks on disk than a lookup should probe, the smallest merges with its smaller
        // neighbour that fits.
        let pick = pick.or_else(|| {
            let chunks_on_disk = (0..self.sealed.len()).filter(|&index| on_disk(index)).count();
            if chunks_on_disk <= disk_chunks_calm(self.stored_ids()) {
                return None;
            }
            (0..self.sealed.len())
                .filter(|&index| on_disk(index))
                .flat_map(|index| {
                    let neighbours = [index.checked_sub(1), Some(index + 1)].into_iter().flatten();
                    neighbours.filter(|&other| on_disk(other)).map(move |other| (index, other))
                })
                .map(|(index, other)| (self.sealed[index].len(), self.sealed[other].len(), index.min(other)))
                .filter(|&(small, other, _)| small + other <= target)
                .min()
                .map(|(_, _, older)| (Kind::Merge, older))
        });
        let (kind, index) = pick?;
        let inputs = match kind {
            Kind::Merge => vec![self.sealed[index].clone(), self.sealed[index + 1].clone()],
            Kind::Spill | Kind::Compact => vec![self.sealed[index].clone()],
        };
        let work = DiskWork {
            kind,
            dir: disk.dir.clone(),
            file_id: disk.next_file_id,
            nonce: self.nonce,
            inputs,
            window,
            now_ms,
            log_starts: LogStarts::clone(&self.log_starts),
        };
        let disk = self.disk.as_mut().expect("checked above");
        disk.next_file_id += 1;
        disk.in_progress = true;
        disk.running_inputs = work.inputs.clone();
        Some(work)
    }

    /// Installs what a [`DiskWork`] built, in place of its inputs, if they are still in the index
    /// as they were (a concurrent `expire` may have dropped or rewritten them: then the new file is
    /// deleted). Returns whether the index changed; an error of the work is returned (and, for a
    /// spill, remembered: see [`DedupIndex::reserve`]).
    pub fn finish_disk_work(&mut self, done: DiskDone) -> Result<bool, DedupError> {
        let DiskDone { kind, inputs, output } = done;
        let disk = self.disk.as_mut().expect("disk work comes from an index that uses the disk");
        assert!(disk.in_progress, "disk work is finished once");
        disk.in_progress = false;
        disk.running_inputs.clear();
        let output = match output {
            Ok(output) => {
                if kind == Kind::Spill {
                    disk.spill_error = None;
                }
                output
            }
            Err(error) => {
                if kind == Kind::Spill {
                    disk.spill_error = Some(error.to_string());
                }
                return Err(error);
            }
        };
        let first = self.sealed.iter().position(|chunk| Arc::ptr_eq(chunk, &inputs[0]));
        let in_place = first.is_some_and(|first| {
            inputs
                .iter()
                .enumerate()
                .all(|(offset, input)| self.sealed.get(first + offset).is_some_and(|chunk| Arc::ptr_eq(chunk, input)))
        });
        // The output's file, unless it is an input's own (a spill that reused a snapshot's file):
        // that one is the input's to keep or retire.
        let output_file = output.as_ref().and_then(SealedChunk::disk).map(|disk| disk.file_id);
        let new_file = output_file
            .filter(|file_id| inputs.iter().flat_map(|input| input.files()).all(|file| file.file_id != *file_id));
        let (Some(first), true) = (first, in_place) else {
            if let Some(file_id) = new_file {
                let _ = fs::remove_file(chunk_path(&disk.dir, file_id));
            }
            return Ok(false);
        };
        let retired = inputs
            .iter()
            .flat_map(|input| input.files())
            .map(|file| (file.file_id, file.entries))
            .filter(|(file_id, _)| Some(*file_id) != output_file)
            .collect();
        for _ in 1..inputs.len() {
            self.sealed.remove(first + 1);
        }
        match output {
            Some(chunk) => self.sealed[first] = Arc::new(chunk),
            None => {
                self.sealed.remove(first);
            }
        }
        self.retire(retired);
        Ok(true)
    }

    /// Runs disk work in the caller's thread, holding the index: at open (nothing else runs) and in
    /// tests. At most `steps` steps; returns how many changed the index.
    pub fn disk_work_here(&mut self, now_ms: i64, steps: usize) -> Result<usize, DedupError> {
        let mut changed = 0;
        for _ in 0..steps {
            let Some(work) = self.next_disk_work(now_ms) else { break };
            changed += usize::from(self.finish_disk_work(work.run())?);
        }
        Ok(changed)
    }

    /// True if `chunk` is an input of the disk work that is out: `expire` does not rewrite it.
    pub(crate) fn in_disk_work(&self, chunk: &Arc<SealedChunk>) -> bool {
        self.disk.as_ref().is_some_and(|disk| disk.running_inputs.iter().any(|input| Arc::ptr_eq(input, chunk)))
    }

    /// Files retired and not yet deleted (they wait for a snapshot that no longer refers to them).
    pub fn retired_file_count(&self) -> usize {
        self.disk.as_ref().map_or(0, |disk| disk.retired.len())
    }

    /// Refuses new ids while the index is over its budget and its last spill failed, so a full
    /// disk means clear errors rather than unbounded memory.
    pub(crate) fn check_spilling(&self) -> Result<(), DedupError> {
        let Some(disk) = &self.disk else { return Ok(()) };
        let Some(reason) = &disk.spill_error else { return Ok(()) };
        if !self.over_memory_budget() {
            return Ok(());
        }
        Err(DedupError::SpillFailed {
            resident: self.approx_bytes(),
            budget: disk.memory_bytes,
            reason: reason.clone(),
        })
    }

    /// Files (by file id, with the ids each holds) of chunks the index dropped, deleted after the
    /// next snapshot.
    pub(crate) fn retire(&mut self, files: Vec<(u64, usize)>) {
        if files.is_empty() {
            return;
        }
        let disk = self.disk.as_mut().expect("a chunk with a file belongs to an index that uses the disk");
        let dir = &disk.dir;
        disk.retired.extend(files.into_iter().map(|(file_id, ids)| (chunk_path(dir, file_id), ids)));
    }

    /// Retired files, oldest first (a snapshot view copies them; see the module docs).
    pub(crate) fn retired_files(&self) -> Vec<PathBuf> {
        self.disk.as_ref().map(|disk| disk.retired.iter().map(|(path, _)| path.clone()).collect()).unwrap_or_default()
    }

    /// Ids stored without a chunk file: in the active chunk and in resident chunks no snapshot wrote
    /// a file for yet (what the next snapshot writes).
    pub fn ids_without_file(&self) -> usize {
        let unfiled: usize = self.sealed.iter().filter(|chunk| !chunk.has_file()).map(|chunk| chunk.len()).sum();
        unfiled + self.active.len() + self.frozen_len()
    }

    /// Ids the retired files hold (their bytes wait on disk for the next snapshot).
    pub fn retired_ids(&self) -> usize {
        self.disk.as_ref().map_or(0, |disk| disk.retired.iter().map(|(_, ids)| ids).sum())
    }

    /// The first `count` retired files were deleted after a snapshot that no longer refers to them.
    pub fn forget_retired_files(&mut self, count: usize) {
        if let Some(disk) = &mut self.disk {
            disk.retired.drain(..count.min(disk.retired.len()));
        }
    }
}

impl DiskStore {
    pub(crate) fn new(dir: PathBuf, memory_bytes: usize, next_file_id: u64) -> DiskStore {
        DiskStore {
            dir,
            memory_bytes,
            next_file_id,
            retired: Vec::new(),
            in_progress: false,
            running_inputs: Vec::new(),
            spill_error: None,
        }
    }
}
