//! The Kafka v2 record batch format, in one place: the header layout and [`BatchHeader`], the
//! checksum, the validation shared by the append path and recovery (the same rules, so recovery
//! accepts exactly what append accepted), [`ValidBatch`] (a batch that passed it, carried down the
//! produce path so no layer parses it again), varints, records and control records, and the encoder.
//!
//! Every crate that reads or writes batches (partition, dedup, group, txn) uses this module; none
//! keeps its own copy of an offset, a varint or a CRC rule. The byte layout is in
//! `docs/design/log-format.md`.
//!
//! # Layout
//!
//! - this file: header constants, [`BatchHeader`], [`verify_crc`], [`ValidBatch`], validation.
//! - `varint`: zigzag varints and varlongs.
//! - `records`: reading records in place ([`Record`], [`read_records`]), control records.
//! - `encode`: [`BatchEncoder`] and the transaction marker batch.

mod encode;
mod records;
#[cfg(test)]
mod tests;
mod varint;

pub use encode::{end_txn_marker, BatchEncoder, NewRecord};
pub use records::{
    control_key, end_txn_key, end_txn_value, parse_control_record, read_record, read_records, uncompressed_records,
    ControlRecord, Cursor, Record, RecordError, CONTROL_RECORD_VERSION, CONTROL_TYPE_ABORT, CONTROL_TYPE_COMMIT,
    RECORD_LEN_MIN,
};
pub use varint::{put_varint, put_varlong, zigzag_decode, zigzag_encode, VARINT_BYTES_MAX, VARLONG_BYTES_MAX};

use bytes::Bytes;

use crate::error::LogError;

/// Length of the fixed v2 batch header; records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before and including the batch length field, not counted by it.
pub const BATCH_LENGTH_OVERHEAD: usize = 12;
/// Smallest legal value of the batch length field: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_LEN - BATCH_LENGTH_OVERHEAD) as i32;
/// The only record batch format this log stores.
pub const MAGIC_V2: i8 = 2;
/// The checksum covers the batch from the attributes field to the end.
pub const CRC_START: usize = 21;
/// Where the CRC32C field is (4 bytes, big endian).
pub const CRC_FIELD: usize = 17;
/// Where the partition leader epoch field is (4 bytes; not covered by the CRC).
pub const PARTITION_LEADER_EPOCH_FIELD: usize = 12;
/// Where the attributes field is (2 bytes).
pub const ATTRIBUTES_FIELD: usize = 21;
/// Where the records count field is (4 bytes).
pub const RECORDS_COUNT_FIELD: usize = 57;

/// Attribute bits 0-2: the compression codec of the records section.
pub const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 4: the batch belongs to a transaction.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit 5: a control batch (transaction markers).
pub const ATTRIBUTE_CONTROL: i16 = 0x20;

/// The parsed fixed 61-byte header of a v2 record batch (all fields big endian on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (@0). Assigned by the log on append.
    pub base_offset: i64,
    /// Bytes after this field (@8).
    pub batch_length: i32,
    /// Leader epoch (@12). Not covered by the CRC.
    pub partition_leader_epoch: i32,
    /// Format version (@16), must be 2.
    pub magic: i8,
    /// CRC32C of bytes 21.. (@17).
    pub crc: u32,
    /// Compression, timestamp type, transactional, control bits (@21).
    pub attributes: i16,
    /// Offset of the last record relative to `base_offset` (@23).
    pub last_offset_delta: i32,
    /// Timestamp of the first record (@27).
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (@35).
    pub max_timestamp: i64,
    /// Idempotent producer id, -1 if none (@43).
    pub producer_id: i64,
    /// Producer epoch (@51).
    pub producer_epoch: i16,
    /// Sequence number of the first record (@53).
    pub base_sequence: i32,
    /// Number of records (@57).
    pub records_count: i32,
}

fn be_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut array = [0u8; N];
    array.copy_from_slice(&bytes[at..at + N]);
    array
}

impl BatchHeader {
    /// Parses the first 61 bytes of `bytes`. Checks only that they are there.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, LogError> {
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(LogError::InvalidBatch(format!(
                "{} bytes is shorter than the {BATCH_HEADER_LEN}-byte v2 batch header",
                bytes.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(be_array(bytes, 0)),
            batch_length: i32::from_be_bytes(be_array(bytes, 8)),
            partition_leader_epoch: i32::from_be_bytes(be_array(bytes, 12)),
            magic: i8::from_be_bytes(be_array(bytes, 16)),
            crc: u32::from_be_bytes(be_array(bytes, 17)),
            attributes: i16::from_be_bytes(be_array(bytes, 21)),
            last_offset_delta: i32::from_be_bytes(be_array(bytes, 23)),
            base_timestamp: i64::from_be_bytes(be_array(bytes, 27)),
            max_timestamp: i64::from_be_bytes(be_array(bytes, 35)),
            producer_id: i64::from_be_bytes(be_array(bytes, 43)),
            producer_epoch: i16::from_be_bytes(be_array(bytes, 51)),
            base_sequence: i32::from_be_bytes(be_array(bytes, 53)),
            records_count: i32::from_be_bytes(be_array(bytes, 57)),
        })
    }

    /// Writes the header into the first 61 bytes of `out` (the inverse of [`BatchHeader::parse`]).
    pub fn write(&self, out: &mut [u8]) {
        assert!(out.len() >= BATCH_HEADER_LEN, "a header is written into at least {BATCH_HEADER_LEN} bytes");
        out[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.batch_length.to_be_bytes());
        out[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out[16..17].copy_from_slice(&self.magic.to_be_bytes());
        out[17..21].copy_from_slice(&self.crc.to_be_bytes());
        out[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        out[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        out[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        out[57..61].copy_from_slice(&self.records_count.to_be_bytes());
    }

    /// Attribute bit 4: part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }

    /// Attribute bit 5: a control batch (transaction commit/abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Attribute bits 0-2: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & ATTRIBUTE_COMPRESSION_MASK) as u8
    }

    /// Length of the whole batch in bytes, as its length field claims (0 if the field is
    /// negative; structural checks reject such a batch).
    pub fn total_len(&self) -> usize {
        usize::try_from(self.batch_length).map_or(0, |length| length + BATCH_LENGTH_OVERHEAD)
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// True if the batch holds one record for every offset it spans, as producers write batches;
    /// false for a compaction-shaped batch, from which records were dropped (deduplication keeps
    /// the kept records' offsets, so the dropped ones leave gaps).
    pub fn holds_every_offset(&self) -> bool {
        i64::from(self.records_count) == i64::from(self.last_offset_delta) + 1
    }

    /// The checks every stored batch must pass apart from its checksum and offsets, given how
    /// many bytes are available for it. Returns what is wrong, and whether it is corruption
    /// (length) rather than an invalid but intact batch.
    pub(crate) fn structure_problem(&self, available: usize) -> Option<(bool, String)> {
        if self.batch_length < BATCH_LENGTH_MIN {
            return Some((true, format!("batch length {} is below the minimum {BATCH_LENGTH_MIN}", self.batch_length)));
        }
        if self.total_len() > available {
            return Some((
                true,
                format!(
                    "batch length {} needs {} bytes but {available} are present",
                    self.batch_length,
                    self.total_len()
                ),
            ));
        }
        if self.magic != MAGIC_V2 {
            return Some((false, format!("magic {} is not {MAGIC_V2}", self.magic)));
        }
        // Kafka's compaction-shaped batches are valid: records may have been dropped from the
        // offsets a batch spans (down to none, a header-only batch that keeps a producer's
        // sequence range), so the count is at most the span, never more. Produce refuses such
        // batches from clients (the broker checks the exact shape there).
        if self.last_offset_delta < 0 {
            return Some((false, format!("last offset delta {} is negative", self.last_offset_delta)));
        }
        if self.records_count < 0 {
            return Some((false, format!("records count {} is negative", self.records_count)));
        }
        if i64::from(self.records_count) > i64::from(self.last_offset_delta) + 1 {
            return Some((
                false,
                format!(
                    "records count {} exceeds the {} offsets spanned by last offset delta {}",
                    self.records_count,
                    i64::from(self.last_offset_delta) + 1,
                    self.last_offset_delta
                ),
            ));
        }
        None
    }
}

/// The CRC32C (Castagnoli) of `batch[21..]`, what the CRC field must hold. `batch` holds at least
/// a header.
pub fn crc_of(batch: &[u8]) -> u32 {
    assert!(batch.len() >= BATCH_HEADER_LEN, "a checksummed batch holds a header");
    crc32c::crc32c(&batch[CRC_START..])
}

/// True if the CRC32C (Castagnoli) of `batch[21..]` equals the CRC field. False for anything too
/// short to hold a header.
pub fn verify_crc(batch: &[u8]) -> bool {
    if batch.len() < BATCH_HEADER_LEN {
        return false;
    }
    let stored = u32::from_be_bytes(be_array(batch, CRC_FIELD));
    crc_of(batch) == stored
}

/// Checks that `batch` is exactly one intact v2 batch: a header, magic 2, a length field that counts
/// the bytes given, a matching CRC32C. Fewer rules than [`ValidBatch::validate`] (no offset or count
/// rules): what a reader needs before it reads the records.
pub fn check_framing(batch: &[u8]) -> Result<BatchHeader, LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.magic != MAGIC_V2 {
        return Err(LogError::InvalidBatch(format!("magic {} is not {MAGIC_V2}", header.magic)));
    }
    if header.batch_length < BATCH_LENGTH_MIN || header.total_len() != batch.len() {
        return Err(LogError::CorruptBatch(format!(
            "batch length field {} does not match the {} bytes given",
            header.batch_length,
            batch.len()
        )));
    }
    check_crc(&header, batch)?;
    Ok(header)
}

fn check_crc(header: &BatchHeader, batch: &[u8]) -> Result<(), LogError> {
    let computed = crc_of(batch);
    if computed != header.crc {
        return Err(LogError::CorruptBatch(format!(
            "CRC32C mismatch: header says {:#010x}, bytes give {computed:#010x}",
            header.crc
        )));
    }
    Ok(())
}

/// One v2 batch that passed the log's append validation (structure, exact length, CRC32C), with its
/// parsed header. Only validation builds one, so a layer handed a `ValidBatch` neither parses nor
/// checks it again: the produce path parses a batch's header once, at the edge.
///
/// The batch's bytes are shared, not copied: on the produce path they are a slice of the request's
/// frame (a copy of each produced byte, into a freshly allocated buffer, was about a quarter of the
/// broker's CPU with large batches: the copy and the page faults of the new buffer). The fields a
/// broker rewrites outside the CRC (base offset, partition leader epoch) are rewritten in an owned
/// copy of the 61-byte header (`head`), kept in step with the parsed header; the batch as stored is
/// `head` followed by the records section ([`ValidBatch::parts`]), and the shared bytes' own first 61
/// bytes are never read again.
#[derive(Clone, Debug)]
pub struct ValidBatch {
    header: BatchHeader,
    /// The header's bytes as they are to be written: what `bytes` starts with, but for the fields
    /// rewritten since (base offset, partition leader epoch).
    head: [u8; BATCH_HEADER_LEN],
    /// The whole batch as validated; only its records section (after the header) is read.
    bytes: Bytes,
}

/// Two batches are equal when they would be written as the same bytes.
impl PartialEq for ValidBatch {
    fn eq(&self, other: &ValidBatch) -> bool {
        self.header == other.header && self.head == other.head && self.records_section() == other.records_section()
    }
}

impl Eq for ValidBatch {}

impl ValidBatch {
    /// Parses and validates `bytes` as one batch for append.
    /// A `Vec<u8>` or `Bytes` is taken over without a copy.
    pub fn validate(bytes: impl Into<Bytes>) -> Result<ValidBatch, LogError> {
        let bytes = bytes.into();
        let header = BatchHeader::parse(&bytes)?;
        ValidBatch::validate_own(header, bytes)
    }

    /// Validates `bytes` whose header the caller already parsed (and checked for its own rules), so
    /// the header is not parsed twice. `header` must be `BatchHeader::parse(&bytes)`.
    pub fn validate_parsed(header: BatchHeader, bytes: impl Into<Bytes>) -> Result<ValidBatch, LogError> {
        let bytes = bytes.into();
        // A 61-byte compare, kept in release builds: a header that is not the bytes' own would let
        // every layer below trust fields the bytes do not hold.
        if BatchHeader::parse(&bytes).ok() != Some(header) {
            return Err(LogError::CorruptBatch("the parsed header is not the batch's own".into()));
        }
        ValidBatch::validate_own(header, bytes)
    }

    /// The checks of a batch whose `header` was just parsed from `bytes` here (so not compared again).
    fn validate_own(header: BatchHeader, bytes: Bytes) -> Result<ValidBatch, LogError> {
        if header.total_len() != bytes.len() {
            return Err(LogError::CorruptBatch(format!(
                "batch length field {} does not match the {} bytes received",
                header.batch_length,
                bytes.len()
            )));
        }
        if let Some((corrupt, problem)) = header.structure_problem(bytes.len()) {
            return Err(if corrupt { LogError::CorruptBatch(problem) } else { LogError::InvalidBatch(problem) });
        }
        check_crc(&header, &bytes)?;
        let head = be_array(&bytes, 0);
        Ok(ValidBatch { header, head, bytes })
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The header's bytes as they are to be written (with the fields rewritten since validation).
    pub fn head(&self) -> &[u8; BATCH_HEADER_LEN] {
        &self.head
    }

    /// The records section: everything after the header, as validated (covered by the CRC).
    pub fn records_section(&self) -> &[u8] {
        &self.bytes[BATCH_HEADER_LEN..]
    }

    /// The batch as it is to be written, in two pieces: [`ValidBatch::head`], then
    /// [`ValidBatch::records_section`].
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, self.records_section()]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a batch holds at least its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The whole batch as one buffer (a copy): for readers of small batches (markers, tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut whole = Vec::with_capacity(self.len());
        whole.extend_from_slice(&self.head);
        whole.extend_from_slice(self.records_section());
        assert_eq!(whole.len(), self.len(), "a batch is its header and its records section");
        whole
    }

    /// The bytes, giving up the validation: without a copy when nothing else shares them (a batch
    /// built by [`BatchEncoder`]).
    pub fn into_bytes(self) -> Vec<u8> {
        let mut whole = Vec::from(self.bytes);
        whole[..BATCH_HEADER_LEN].copy_from_slice(&self.head);
        whole
    }

    /// The CRC32C of the batch as it is to be written (what its CRC field must hold).
    pub fn crc(&self) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&self.head[CRC_START..]), self.records_section())
    }

    /// Stamps the partition leader epoch (not covered by the CRC), as a leader does on append.
    pub fn set_partition_leader_epoch(&mut self, epoch: i32) {
        let field = PARTITION_LEADER_EPOCH_FIELD..PARTITION_LEADER_EPOCH_FIELD + 4;
        self.head[field].copy_from_slice(&epoch.to_be_bytes());
        self.header.partition_leader_epoch = epoch;
    }

    /// Assigns the base offset (not covered by the CRC), as the log does on append.
    pub(crate) fn set_base_offset(&mut self, base_offset: u64) {
        let signed = i64::try_from(base_offset).expect("offsets stay within Kafka's i64 range");
        self.head[0..8].copy_from_slice(&signed.to_be_bytes());
        self.header.base_offset = signed;
    }
}
