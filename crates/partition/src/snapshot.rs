//! Producer-state snapshots: the state of every producer as of one offset, so that a restart replays
//! only the log after it.
//!
//! One file per partition log directory, `producer-state.snapshot`, replaced atomically (temporary
//! file, fsync, rename, directory fsync). Layout, big endian:
//! `"ONCE-PST"` | version u16 = 1 | offset u64 | producers u32 | per producer: id i64, epoch i16,
//! last append ms i64, batches u8, per batch: first sequence i32, last sequence i32, base offset u64,
//! last offset u64, max timestamp i64 | CRC32C u32 of everything before it.
//! A snapshot that is missing, corrupt, of another version, or beyond the recovered log end is
//! ignored and the log is replayed from its start instead: it is an optimisation, never the truth.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::Path;

use crate::producer_state::{BatchMetadata, ProducerEntry, ProducerStates, BATCHES_CACHED};

const MAGIC: &[u8; 8] = b"ONCE-PST";
const VERSION: u16 = 1;
pub const FILE_NAME: &str = "producer-state.snapshot";
const BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 8;

/// Encodes the state as of `offset`.
pub fn encode(states: &ProducerStates, offset: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + states.len() * (19 + BATCHES_CACHED * BATCH_BYTES));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
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

/// A cursor that fails instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// Decodes a snapshot: `(offset, states)`, or `None` if it is not a valid version-1 snapshot.
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
    let producers = u32::from_be_bytes(reader.take()?);
    let mut states = ProducerStates::default();
    for _ in 0..producers {
        let producer_id = i64::from_be_bytes(reader.take()?);
        let epoch = i16::from_be_bytes(reader.take()?);
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
            });
        }
        states.insert(producer_id, ProducerEntry { epoch, batches, last_append_ms });
    }
    reader.0.is_empty().then_some((offset, states))
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

/// Reads the snapshot of `dir`, if there is a valid one.
pub fn read(dir: &Path) -> Option<(u64, ProducerStates)> {
    let bytes = fs::read(dir.join(FILE_NAME)).ok()?;
    let decoded = decode(&bytes);
    if decoded.is_none() {
        tracing::warn!(dir = %dir.display(), "ignoring an invalid producer-state snapshot; replaying the log");
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut states = ProducerStates::default();
        for producer in 0..3 {
            for batch in 0..7u64 {
                let metadata = BatchMetadata {
                    first_sequence: batch as i32 * 2,
                    last_sequence: batch as i32 * 2 + 1,
                    base_offset: batch * 10,
                    last_offset: batch * 10 + 1,
                    max_timestamp: 5,
                };
                states.record(producer, 1, metadata, 99);
            }
        }
        let bytes = encode(&states, 4242);
        let (offset, decoded) = decode(&bytes).expect("valid snapshot decodes");
        assert_eq!(offset, 4242);
        for producer in 0..3 {
            assert_eq!(decoded.get(producer), states.get(producer), "producer {producer} survives");
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(decode(&flipped).is_none(), "a flipped byte at {position} is detected");
        }
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_none(), "a snapshot cut at {cut} is refused");
        }
    }
}
