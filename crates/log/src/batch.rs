//! The Kafka v2 record batch header: parsing, checksum, and the structural checks shared by the
//! append path and recovery (the same rules, so recovery accepts exactly what append accepted).

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

const ATTRIBUTE_COMPRESSION_MASK: i16 = 0x07;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;

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

/// True if the CRC32C (Castagnoli) of `batch[21..]` equals the CRC field. False for anything too
/// short to hold a header.
pub fn verify_crc(batch: &[u8]) -> bool {
    if batch.len() < BATCH_HEADER_LEN {
        return false;
    }
    let stored = u32::from_be_bytes(be_array(batch, 17));
    crc32c::crc32c(&batch[CRC_START..]) == stored
}

/// Validates one batch exactly as received for append: structure, exact length, checksum.
pub(crate) fn validate_for_append(batch: &[u8]) -> Result<BatchHeader, LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() != batch.len() {
        return Err(LogError::CorruptBatch(format!(
            "batch length field {} does not match the {} bytes received",
            header.batch_length,
            batch.len()
        )));
    }
    if let Some((corrupt, problem)) = header.structure_problem(batch.len()) {
        return Err(if corrupt { LogError::CorruptBatch(problem) } else { LogError::InvalidBatch(problem) });
    }
    if !verify_crc(batch) {
        return Err(LogError::CorruptBatch(format!(
            "CRC32C mismatch: header says {:#010x}, bytes give {:#010x}",
            header.crc,
            crc32c::crc32c(&batch[CRC_START..])
        )));
    }
    Ok(header)
}

/// Overwrites the base offset field (not covered by the CRC).
pub(crate) fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    assert!(batch.len() >= 8, "a validated batch holds a base offset field");
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}
