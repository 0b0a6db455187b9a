//! Record-level reading of a Kafka v2 record batch: the ids of its records ([`extract_ids`]) and
//! the batch rebuilt with only some of its records ([`filter_batch`]).
//!
//! Records are parsed in place from the (decompressed) records section; nothing is re-encoded, so
//! a kept record leaves `filter_batch` byte for byte as it came in.

use std::borrow::Cow;

use once_log::batch::{
    self, Record, ATTRIBUTES_FIELD, ATTRIBUTE_COMPRESSION_MASK, BATCH_LENGTH_OVERHEAD, CRC_FIELD, RECORDS_COUNT_FIELD,
};
use once_log::{verify_crc, BatchHeader, ValidBatch, BATCH_HEADER_LEN};

use crate::codec;
use crate::config::DedupSource;
use crate::error::DedupError;
use crate::id::{Id, IdScheme};

/// Largest records section, after decompression, that this crate will handle in one batch:
/// a bound against decompression bombs (a few KiB of zstd can claim gigabytes).
pub const RECORDS_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One record's id and where it sits in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordId {
    /// The record's offset delta: it is stored at the batch's base offset plus this.
    pub offset_delta: i32,
    /// Its id, or `None` if it has none (missing header, null key or value, source `none`,
    /// or a control record).
    pub id: Option<Id>,
}

/// A batch with its records section decompressed. Its records are read from `records_section`
/// with `once_log::batch::read_records` (they borrow from it).
pub(crate) struct ParsedBatch<'a> {
    pub(crate) header: BatchHeader,
    pub(crate) records_section: Cow<'a, [u8]>,
}

impl ParsedBatch<'_> {
    /// The records, located and checked.
    pub(crate) fn records(&self) -> Result<Vec<Record<'_>>, DedupError> {
        let count = usize::try_from(self.header.records_count).map_err(|_| {
            DedupError::InvalidBatch(format!("records count {} is negative", self.header.records_count))
        })?;
        let records = batch::read_records(&self.records_section, count).map_err(|error| invalid(error.0))?;
        check_offset_deltas(&records, self.header.last_offset_delta)?;
        Ok(records)
    }
}

/// Each record's offset delta must lie within the batch's offsets (0 to its last offset delta) and
/// grow from record to record, as a client writes them and as compaction-shaped batches keep them:
/// the index confirms each id at base offset + delta, and an id placed outside the batch's offsets
/// would point at another batch's record (the writer asserts it never happens).
fn check_offset_deltas(records: &[Record<'_>], last_offset_delta: i32) -> Result<(), DedupError> {
    let mut previous: Option<i32> = None;
    for (index, record) in records.iter().enumerate() {
        let delta = record.offset_delta;
        if !(0..=last_offset_delta).contains(&delta) || previous.is_some_and(|previous| delta <= previous) {
            return Err(invalid(format!(
                "record {index} has offset delta {delta}: deltas must grow within 0..={last_offset_delta}"
            )));
        }
        previous = Some(delta);
    }
    Ok(())
}

/// The ids of a batch's records, one entry per record in batch order; `None` where a record has
/// no id. Such records are never deduplicated. Control batches (transaction markers) have no ids.
///
/// The batch must be exactly one v2 record batch, as a producer sent it: its CRC is checked. Ids
/// are hashed with `ids`, the scheme of the index they are for ([`crate::IndexConfig::ids`]).
pub fn extract_ids(batch: &[u8], source: &DedupSource, ids: &IdScheme) -> Result<Vec<Option<Id>>, DedupError> {
    Ok(extract_record_ids(batch, source, ids)?.into_iter().map(|record| record.id).collect())
}

/// Like [`extract_ids`], with each record's offset delta (the writer needs it to tell
/// [`crate::DedupIndex::confirm`] each record's offset).
pub fn extract_record_ids(batch: &[u8], source: &DedupSource, ids: &IdScheme) -> Result<Vec<RecordId>, DedupError> {
    record_ids(&parse_batch(batch)?, source, ids)
}

/// Like [`extract_record_ids`], for a batch the log's validation already accepted (the produce path):
/// its header is not parsed nor its CRC checked again.
pub fn extract_valid_record_ids(
    batch: &ValidBatch,
    source: &DedupSource,
    ids: &IdScheme,
) -> Result<Vec<RecordId>, DedupError> {
    record_ids(&parse_records(*batch.header(), batch.records_section())?, source, ids)
}

/// Visits a stored batch's records in order — decompressed once, its framing and CRC checked —
/// until `visit` returns false; nothing is collected, so a batch of millions of tiny records costs
/// no more than its records section. For readers that show records (the console's record browser).
pub fn visit_records(batch: &[u8], mut visit: impl FnMut(&BatchHeader, &Record<'_>) -> bool) -> Result<(), DedupError> {
    let parsed = parse_batch(batch)?;
    let count = usize::try_from(parsed.header.records_count)
        .map_err(|_| DedupError::InvalidBatch(format!("records count {} is negative", parsed.header.records_count)))?;
    let mut cursor = batch::Cursor::new(&parsed.records_section);
    for index in 0..count {
        let record =
            batch::read_record(&mut cursor).map_err(|error| invalid(format!("record {index}: {}", error.0)))?;
        if !visit(&parsed.header, &record) {
            return Ok(());
        }
    }
    if cursor.remaining() != 0 {
        return Err(invalid(format!("{} bytes follow the {count} records the header counts", cursor.remaining())));
    }
    Ok(())
}

fn record_ids(parsed: &ParsedBatch<'_>, source: &DedupSource, ids: &IdScheme) -> Result<Vec<RecordId>, DedupError> {
    let control = parsed.header.is_control();
    let records = parsed.records()?;
    Ok(records
        .iter()
        .map(|record| {
            let id_bytes = if control { None } else { id_bytes(record, source) };
            RecordId { offset_delta: record.offset_delta, id: id_bytes.map(|bytes| ids.id_of(bytes)) }
        })
        .collect())
}

/// The bytes a record's id is the hash of, per the source.
fn id_bytes<'a>(record: &Record<'a>, source: &DedupSource) -> Option<&'a [u8]> {
    match source {
        DedupSource::None => None,
        DedupSource::Key => record.key,
        DedupSource::Content => record.value,
        // Kafka's Headers.lastHeader: the last one wins.
        DedupSource::Header(name) => {
            record.headers().filter(|(key, _)| *key == name.as_bytes()).last().and_then(|(_, value)| value)
        }
    }
}

/// Rebuilds `batch` with only the records whose `keep` entry is true, as Kafka's log compaction
/// does: each kept record keeps its bytes and so its original offset delta (the offsets of the
/// dropped ones become gaps); base offset, last offset delta, base sequence, producer id and
/// epoch, leader epoch, timestamps and attributes are unchanged; the records count and batch
/// length are updated, the records recompressed with the batch's own codec and the CRC32C
/// recomputed.
///
/// With no record kept the result is a header-only batch (records count 0), which Kafka keeps to
/// preserve the producer's sequence state. Like Kafka's `writeEmptyHeader`, its compression bits
/// are cleared: there is nothing to decompress. With every record kept the batch is returned
/// unchanged.
pub fn filter_batch(batch: &[u8], keep: &[bool]) -> Result<Vec<u8>, DedupError> {
    // `parse_batch` checked the framing: the batch holds at least its header.
    let parsed = parse_batch(batch)?;
    Ok(filter(&batch[..BATCH_HEADER_LEN], &parsed, keep)?.unwrap_or_else(|| batch.to_vec()))
}

/// Like [`filter_batch`], for a batch the log's validation already accepted; the result is one too
/// (validated again: the pair of the assertion that it carries its own checksum).
pub fn filter_valid_batch(batch: &ValidBatch, keep: &[bool]) -> Result<ValidBatch, DedupError> {
    let parsed = parse_records(*batch.header(), batch.records_section())?;
    let Some(filtered) = filter(batch.head(), &parsed, keep)? else { return Ok(batch.clone()) };
    ValidBatch::validate(filtered).map_err(|error| invalid(format!("the filtered batch is refused: {error}")))
}

/// The batch whose header is `head` rebuilt with the records `keep` names; `None` if it keeps
/// them all (the batch is then its own result).
fn filter(head: &[u8], parsed: &ParsedBatch<'_>, keep: &[bool]) -> Result<Option<Vec<u8>>, DedupError> {
    assert_eq!(head.len(), BATCH_HEADER_LEN, "a header is 61 bytes");
    let records = parsed.records()?;
    if keep.len() != records.len() {
        return Err(DedupError::KeepMaskLength { mask: keep.len(), records: records.len() });
    }
    if keep.iter().all(|kept| *kept) {
        return Ok(None);
    }
    let section = parsed.records_section.as_ref();
    let mut kept_records = Vec::with_capacity(section.len());
    let mut kept_count: i32 = 0;
    for (record, _) in records.iter().zip(keep).filter(|(_, kept)| **kept) {
        kept_records.extend_from_slice(record.bytes);
        kept_count += 1;
    }
    let mut attributes = parsed.header.attributes;
    if kept_count == 0 {
        attributes &= !ATTRIBUTE_COMPRESSION_MASK;
    }
    let body = codec::compress((attributes & ATTRIBUTE_COMPRESSION_MASK) as u8, &kept_records)?;
    let batch_length = i32::try_from(BATCH_HEADER_LEN - BATCH_LENGTH_OVERHEAD + body.len())
        .map_err(|_| invalid(format!("filtered batch of {} bytes is too long", body.len())))?;

    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(head);
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[ATTRIBUTES_FIELD..ATTRIBUTES_FIELD + 2].copy_from_slice(&attributes.to_be_bytes());
    out[RECORDS_COUNT_FIELD..RECORDS_COUNT_FIELD + 4].copy_from_slice(&kept_count.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = batch::crc_of(&out);
    out[CRC_FIELD..CRC_FIELD + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(out.len(), usize::try_from(batch_length).unwrap_or(0) + BATCH_LENGTH_OVERHEAD, "length field");
    assert!(verify_crc(&out), "a rebuilt batch carries its own checksum");
    Ok(Some(out))
}

fn invalid(message: String) -> DedupError {
    DedupError::InvalidRecords(message)
}

/// Checks the framing (header, magic, length, CRC) of a batch given as bytes, then decompresses it.
pub(crate) fn parse_batch(batch: &[u8]) -> Result<ParsedBatch<'_>, DedupError> {
    let header = batch::check_framing(batch).map_err(|error| DedupError::InvalidBatch(error.to_string()))?;
    debug_assert!(verify_crc(batch), "only a checked batch is read");
    parse_records(header, &batch[BATCH_HEADER_LEN..])
}

/// Decompresses the records section (what follows the header) of a batch whose framing was checked.
fn parse_records(header: BatchHeader, section: &[u8]) -> Result<ParsedBatch<'_>, DedupError> {
    let records_section = codec::decompress(header.compression(), section, RECORDS_BYTES_MAX)?;
    Ok(ParsedBatch { header, records_section })
}
