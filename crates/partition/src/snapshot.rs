//! Producer-state snapshots: the state of every producer as of one offset, so that a restart replays
//! only the log after it.
//!
//! One file per partition log directory, `producer-state.snapshot`, replaced atomically (temporary
//! file, fsync, rename, directory fsync). Layout, big endian:
//! `"ONCE-PST"` | version u16 = 3 | offset u64 | producers u32 | per producer: id i64, epoch i16,
//! coordinator epoch i32, open transaction's first offset i64 (-1: none), last append ms i64,
//! batches u8, per batch: first sequence i32, last sequence i32, base offset u64, last offset u64,
//! max timestamp i64, records dropped u8 (0 or 1) | aborted transactions u32 | per aborted
//! transaction: producer id i64, first offset u64, last offset u64 | CRC32C u32 of everything
//! before it.
//! A snapshot that is missing, corrupt, of another version (version 1 had no transactions, version
//! 2 no records-dropped flag), or beyond the recovered log end is ignored and the log is replayed
//! from its start instead: it is an optimisation, never the truth. A file there but not used is
//! also deleted durably ([`remove`]) before the partition takes a write, or a later start could
//! load it (one beyond the end, once the log grew past it again). One that cannot be read at all
//! (an I/O error) fails the open instead (`replay::rebuild`).

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::producer_state::{BatchMetadata, ProducerEntry, ProducerStates, BATCHES_CACHED};
use crate::txn::AbortedTxn;

const MAGIC: &[u8; 8] = b"ONCE-PST";
const VERSION: u16 = 3;
pub const FILE_NAME: &str = "producer-state.snapshot";
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 1;
const PRODUCER_BYTES: usize = 8 + 2 + 4 + 8 + 8 + 1;
const ABORTED_BYTES: usize = 8 + 8 + 8;

/// Encodes the state as of `offset`.
pub fn encode(states: &ProducerStates, offset: u64) -> Vec<u8> {
    let aborted = states.transactions().aborted();
    let mut out = Vec::with_capacity(
        64 + states.len() * (PRODUCER_BYTES + BATCHES_CACHED * BATCH_BYTES) + aborted.len() * ABORTED_BYTES,
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(states.len() as u32).to_be_bytes());
    for (producer_id, entry) in states.iter() {
        out.extend_from_slice(&producer_id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.extend_from_slice(&entry.coordinator_epoch.to_be_bytes());
        let first_offset = entry.current_txn_first_offset.map_or(-1, |offset| offset as i64);
        out.extend_from_slice(&first_offset.to_be_bytes());
        out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
        out.push(entry.batches.len() as u8);
        for batch in &entry.batches {
            out.extend_from_slice(&batch.first_sequence.to_be_bytes());
            out.extend_from_slice(&batch.last_sequence.to_be_bytes());
            out.extend_from_slice(&batch.base_offset.to_be_bytes());
            out.extend_from_slice(&batch.last_offset.to_be_bytes());
            out.extend_from_slice(&batch.max_timestamp.to_be_bytes());
            out.push(u8::from(batch.records_dropped));
        }
    }
    let aborted_count = u32::try_from(aborted.len()).expect("fewer than 2^32 aborted transactions");
    out.extend_from_slice(&aborted_count.to_be_bytes());
    for aborted in aborted {
        out.extend_from_slice(&aborted.producer_id.to_be_bytes());
        out.extend_from_slice(&aborted.first_offset.to_be_bytes());
        out.extend_from_slice(&aborted.last_offset.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A cursor that fails instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Decodes a snapshot: `(offset, states)`, or `None` if it is not a valid version-3 snapshot.
pub fn decode(bytes: &[u8]) -> Option<(u64, ProducerStates)> {
    let (body, crc) = bytes.split_last_chunk::<4>()?;
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return None;
    }
    let mut reader = Reader(body);
    if &reader.take::<8>()? != MAGIC || u16::from_be_bytes(reader.take()?) != VERSION {
        return None;
    }
    let offset = u64::from_be_bytes(reader.take()?);
    let producer_count = u32::from_be_bytes(reader.take()?);
    // Bounded by what the bytes can hold, so a bad count cannot make a huge allocation.
    let mut producers = Vec::with_capacity((producer_count as usize).min(reader.0.len() / PRODUCER_BYTES));
    for _ in 0..producer_count {
        let producer_id = i64::from_be_bytes(reader.take()?);
        let epoch = i16::from_be_bytes(reader.take()?);
        let coordinator_epoch = i32::from_be_bytes(reader.take()?);
        let current_txn_first_offset = match i64::from_be_bytes(reader.take()?) {
            -1 => None,
            offset => Some(u64::try_from(offset).ok()?),
        };
        let last_append_ms = i64::from_be_bytes(reader.take()?);
        let count = reader.take::<1>()?[0] as usize;
        if count > BATCHES_CACHED {
            return None;
        }
        let mut batches = VecDeque::with_capacity(count);
        for _ in 0..count {
            batches.push_back(BatchMetadata {
                first_sequence: i32::from_be_bytes(reader.take()?),
                last_sequence: i32::from_be_bytes(reader.take()?),
                base_offset: u64::from_be_bytes(reader.take()?),
                last_offset: u64::from_be_bytes(reader.take()?),
                max_timestamp: i64::from_be_bytes(reader.take()?),
                records_dropped: match reader.take::<1>()?[0] {
                    0 => false,
                    1 => true,
                    _ => return None,
                },
            });
        }
        producers.push((
            producer_id,
            ProducerEntry { epoch, batches, last_append_ms, current_txn_first_offset, coordinator_epoch },
        ));
    }
    let aborted_count = u32::from_be_bytes(reader.take()?);
    let mut aborted = Vec::with_capacity((aborted_count as usize).min(reader.0.len() / ABORTED_BYTES));
    for _ in 0..aborted_count {
        aborted.push(AbortedTxn {
            producer_id: i64::from_be_bytes(reader.take()?),
            first_offset: u64::from_be_bytes(reader.take()?),
            last_offset: u64::from_be_bytes(reader.take()?),
        });
    }
    if !reader.0.is_empty() {
        return None;
    }
    Some((offset, ProducerStates::restore(producers, aborted)?))
}

/// Writes the snapshot so that a crash leaves the old one or the new one, never a mix.
pub fn write(dir: &Path, states: &ProducerStates, offset: u64, skip_fsync: bool) -> std::io::Result<()> {
    let path = dir.join(FILE_NAME);
    let temp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = fs::File::create(&temp)?;
    file.write_all(&encode(states, offset))?;
    if !skip_fsync {
        file.sync_all()?;
    }
    fs::rename(&temp, &path)?;
    if !skip_fsync {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Deletes the snapshot of `dir` durably (the file, then a directory fsync), so no later start can
/// load it. A snapshot already gone is fine.
pub fn remove(dir: &Path, skip_fsync: bool) -> std::io::Result<()> {
    match fs::remove_file(dir.join(FILE_NAME)) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    if !skip_fsync {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What [`read`] found in a partition directory.
pub enum Stored {
    /// No snapshot file.
    Missing,
    /// A file that is not a valid version-3 snapshot: corrupt, torn, or of another version.
    Undecodable,
    /// A valid snapshot: producer state as of `offset`.
    Valid { offset: u64, states: ProducerStates },
}

/// Reads the snapshot of `dir`. An I/O error other than not-found is returned, not taken for a
/// missing file: the caller cannot know what the file says, so it can neither use it nor call it
/// stale (see `replay::rebuild`).
pub fn read(dir: &Path) -> std::io::Result<Stored> {
    let bytes = match fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::Missing),
        Err(error) => return Err(error),
    };
    Ok(match decode(&bytes) {
        Some((offset, states)) => Stored::Valid { offset, states },
        None => Stored::Undecodable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::{DataBatch, LoggedBatch, MarkerBatch};

    fn metadata(batch: u64) -> BatchMetadata {
        BatchMetadata {
            first_sequence: batch as i32 * 2,
            last_sequence: batch as i32 * 2 + 1,
            base_offset: batch * 10,
            last_offset: batch * 10 + 1,
            max_timestamp: 5,
            records_dropped: batch % 2 == 1,
        }
    }

    /// Three idempotent producers, one with an open transaction, one whose transaction was aborted.
    fn states() -> ProducerStates {
        let mut states = ProducerStates::default();
        for producer in 0..3 {
            for batch in 0..7u64 {
                states.record(producer, 1, metadata(batch), 99);
            }
        }
        for (producer_id, base_offset) in [(10, 100), (11, 102)] {
            let mut metadata = metadata(0);
            metadata.base_offset = base_offset;
            metadata.last_offset = base_offset + 1;
            states.apply(&LoggedBatch::Data(DataBatch { producer_id, epoch: 4, transactional: true, metadata }));
        }
        let marker = MarkerBatch {
            producer_id: 11,
            epoch: 4,
            coordinator_epoch: 6,
            commit: false,
            offset: 104,
            timestamp_ms: 7,
        };
        states.apply(&LoggedBatch::Marker(marker));
        states
    }

    #[test]
    fn round_trip_and_corruption() {
        let states = states();
        let bytes = encode(&states, 4242);
        let (offset, decoded) = decode(&bytes).expect("valid snapshot decodes");
        assert_eq!(offset, 4242);
        for producer in [0, 1, 2, 10, 11] {
            assert_eq!(decoded.get(producer), states.get(producer), "producer {producer} survives");
        }
        assert_eq!(decoded.get(10).and_then(|entry| entry.current_txn_first_offset), Some(100));
        assert_eq!(decoded.get(11).map(|entry| entry.coordinator_epoch), Some(6));
        assert_eq!(decoded.transactions(), states.transactions(), "open and aborted transactions survive");
        assert_eq!(decoded.transactions().earliest_open_offset(), Some(100));
        assert_eq!(
            decoded.transactions().aborted(),
            &[AbortedTxn { producer_id: 11, first_offset: 102, last_offset: 104 }]
        );
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(decode(&flipped).is_none(), "a flipped byte at {position} is detected");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "a snapshot cut at {cut} is refused");
        }
    }

    /// Version 1's layout (no transactions), as the previous release wrote it.
    fn encode_version_1(states: &ProducerStates, offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(states.len() as u32).to_be_bytes());
        for (producer_id, entry) in states.iter() {
            out.extend_from_slice(&producer_id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                out.extend_from_slice(&batch.first_sequence.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.to_be_bytes());
                out.extend_from_slice(&batch.last_offset.to_be_bytes());
                out.extend_from_slice(&batch.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn a_version_1_snapshot_is_ignored() {
        let bytes = encode_version_1(&states(), 10);
        assert!(decode(&bytes).is_none(), "version 1 cannot say which transactions are open");
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join(FILE_NAME), &bytes).expect("write");
        assert!(matches!(read(dir.path()), Ok(Stored::Undecodable)));
    }

    #[test]
    fn a_version_2_snapshot_is_ignored() {
        let mut bytes = encode(&states(), 10);
        bytes[8..10].copy_from_slice(&2u16.to_be_bytes());
        let body = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_be_bytes());
        assert!(decode(&bytes).is_none(), "version 2 cannot say which batches had records dropped");
    }

    #[test]
    fn the_records_dropped_flag_survives_and_only_0_or_1_is_read() {
        let states = states();
        let bytes = encode(&states, 10);
        let (_, decoded) = decode(&bytes).expect("decodes");
        let flags = |states: &ProducerStates| {
            states.get(0).map(|entry| entry.batches.iter().map(|batch| batch.records_dropped).collect::<Vec<_>>())
        };
        assert_eq!(flags(&decoded), flags(&states));
        assert!(flags(&states).is_some_and(|flags| flags.contains(&true) && flags.contains(&false)));
    }

    #[test]
    fn contradictory_transactions_are_refused() {
        let entry = |first_offset| ProducerEntry { current_txn_first_offset: first_offset, ..ProducerEntry::new(0, 0) };
        let aborted = |first_offset, last_offset| AbortedTxn { producer_id: 1, first_offset, last_offset };
        let two_at_one_offset = vec![(1, entry(Some(5))), (2, entry(Some(5)))];
        assert!(ProducerStates::restore(two_at_one_offset, vec![]).is_none(), "two transactions at one offset");
        let one_producer_twice = vec![(1, entry(Some(5))), (1, entry(Some(6)))];
        assert!(ProducerStates::restore(one_producer_twice, vec![]).is_none(), "one producer twice");
        let unordered = vec![aborted(1, 9), aborted(2, 8)];
        assert!(ProducerStates::restore(vec![], unordered).is_none(), "aborted out of marker order");
        let inverted = vec![aborted(9, 8)];
        assert!(ProducerStates::restore(vec![], inverted).is_none(), "aborted ends before it starts");
        let fine = ProducerStates::restore(vec![(1, entry(Some(5)))], vec![aborted(1, 3)]).expect("consistent");
        assert_eq!(fine.transactions().earliest_open_offset(), Some(5));
    }
}
