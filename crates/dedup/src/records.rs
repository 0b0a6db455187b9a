//! Record-level reading of a Kafka v2 record batch: the ids of its records ([`extract_ids`]) and
//! the batch rebuilt with only some of its records ([`filter_batch`]).
//!
//! Records are parsed in place from the (decompressed) records section; nothing is re-encoded, so
//! a kept record leaves `filter_batch` byte for byte as it came in.

use std::borrow::Cow;

use once_log::{verify_crc, BatchHeader, BATCH_HEADER_LEN, MAGIC_V2};

use crate::codec;
use crate::config::DedupSource;
use crate::error::DedupError;
use crate::id::Id;

/// Largest records section, after decompression, that this crate will handle in one batch:
/// a bound against decompression bombs (a few KiB of zstd can claim gigabytes).
pub const RECORDS_BYTES_MAX: usize = 256 * 1024 * 1024;

/// Bytes before and including the batch length field, not counted by it.
const BATCH_LENGTH_OVERHEAD: usize = 12;
/// The CRC32C covers the batch from the attributes field (byte 21) to its end.
const CRC_START: usize = 21;
const CRC_FIELD: usize = 17;
const ATTRIBUTES_FIELD: usize = 21;
const RECORDS_COUNT_FIELD: usize = 57;
const COMPRESSION_MASK: i16 = 0x07;
/// Smallest possible record: length, attributes, timestamp delta, offset delta, key length,
/// value length, header count: one byte each.
const RECORD_LEN_MIN: usize = 7;

/// One record's id and where it sits in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordId {
    /// The record's offset delta: it is stored at the batch's base offset plus this.
    pub offset_delta: i32,
    /// Its id, or `None` if it has none (missing header, null key or value, source `none`,
    /// or a control record).
    pub id: Option<Id>,
}

/// A byte range in the records section.
type Span = (usize, usize);

/// One record, located in the records section.
#[derive(Clone, Debug)]
pub(crate) struct RecordSpan {
    /// The whole record, its length prefix included.
    pub(crate) bytes: Span,
    pub(crate) offset_delta: i32,
    pub(crate) key: Option<Span>,
    pub(crate) value: Option<Span>,
    /// The headers, from the first header's key length to the end of the record.
    pub(crate) headers: Span,
    pub(crate) header_count: usize,
}

/// A batch with its records section decompressed and its records located.
pub(crate) struct ParsedBatch<'a> {
    pub(crate) header: BatchHeader,
    pub(crate) records_section: Cow<'a, [u8]>,
    pub(crate) records: Vec<RecordSpan>,
}

/// The ids of a batch's records, one entry per record in batch order; `None` where a record has
/// no id. Such records are never deduplicated. Control batches (transaction markers) have no ids.
///
/// The batch must be exactly one v2 record batch, as a producer sent it: its CRC is checked.
pub fn extract_ids(batch: &[u8], source: &DedupSource) -> Result<Vec<Option<Id>>, DedupError> {
    Ok(extract_record_ids(batch, source)?.into_iter().map(|record| record.id).collect())
}

/// Like [`extract_ids`], with each record's offset delta (the writer needs it to tell
/// [`crate::DedupIndex::confirm`] each record's offset).
pub fn extract_record_ids(batch: &[u8], source: &DedupSource) -> Result<Vec<RecordId>, DedupError> {
    let parsed = parse_batch(batch)?;
    let section = parsed.records_section.as_ref();
    let control = parsed.header.is_control();
    parsed
        .records
        .iter()
        .map(|record| {
            let id_bytes = if control { None } else { id_bytes(section, record, source)? };
            Ok(RecordId { offset_delta: record.offset_delta, id: id_bytes.map(Id::of) })
        })
        .collect()
}

/// The bytes a record's id is the hash of, per the source.
fn id_bytes<'a>(section: &'a [u8], record: &RecordSpan, source: &DedupSource) -> Result<Option<&'a [u8]>, DedupError> {
    let slice = |span: Option<Span>| span.map(|(start, end)| &section[start..end]);
    Ok(match source {
        DedupSource::None => None,
        DedupSource::Key => slice(record.key),
        DedupSource::Content => slice(record.value),
        DedupSource::Header(name) => {
            let mut cursor = Cursor { data: &section[..record.headers.1], position: record.headers.0 };
            let mut found = None;
            for _ in 0..record.header_count {
                let key = cursor.bytes()?.ok_or_else(|| invalid("a header has a null key".into()))?;
                let value = cursor.bytes()?;
                if key == name.as_bytes() {
                    // Kafka's Headers.lastHeader: the last one wins.
                    found = Some(value);
                }
            }
            found.flatten()
        }
    })
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
    let parsed = parse_batch(batch)?;
    if keep.len() != parsed.records.len() {
        return Err(DedupError::KeepMaskLength { mask: keep.len(), records: parsed.records.len() });
    }
    if keep.iter().all(|kept| *kept) {
        return Ok(batch.to_vec());
    }
    let section = parsed.records_section.as_ref();
    let mut kept_records = Vec::with_capacity(section.len());
    let mut kept_count: i32 = 0;
    for (record, _) in parsed.records.iter().zip(keep).filter(|(_, kept)| **kept) {
        kept_records.extend_from_slice(&section[record.bytes.0..record.bytes.1]);
        kept_count += 1;
    }
    let mut attributes = parsed.header.attributes;
    if kept_count == 0 {
        attributes &= !COMPRESSION_MASK;
    }
    let body = codec::compress((attributes & COMPRESSION_MASK) as u8, &kept_records)?;
    let batch_length = i32::try_from(BATCH_HEADER_LEN - BATCH_LENGTH_OVERHEAD + body.len())
        .map_err(|_| invalid(format!("filtered batch of {} bytes is too long", body.len())))?;

    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    out[ATTRIBUTES_FIELD..ATTRIBUTES_FIELD + 2].copy_from_slice(&attributes.to_be_bytes());
    out[RECORDS_COUNT_FIELD..RECORDS_COUNT_FIELD + 4].copy_from_slice(&kept_count.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[CRC_FIELD..CRC_FIELD + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(out.len(), usize::try_from(batch_length).unwrap_or(0) + BATCH_LENGTH_OVERHEAD, "length field");
    assert!(verify_crc(&out), "a rebuilt batch carries its own checksum");
    Ok(out)
}

fn invalid(message: String) -> DedupError {
    DedupError::InvalidRecords(message)
}

/// Checks the header and CRC, decompresses the records section and locates every record.
pub(crate) fn parse_batch(batch: &[u8]) -> Result<ParsedBatch<'_>, DedupError> {
    let header = BatchHeader::parse(batch).map_err(|error| DedupError::InvalidBatch(error.to_string()))?;
    if header.magic != MAGIC_V2 {
        return Err(DedupError::InvalidBatch(format!("magic {} is not {MAGIC_V2}", header.magic)));
    }
    if header.batch_length < (BATCH_HEADER_LEN - BATCH_LENGTH_OVERHEAD) as i32 || header.total_len() != batch.len() {
        return Err(DedupError::InvalidBatch(format!(
            "batch length field {} does not match the {} bytes given",
            header.batch_length,
            batch.len()
        )));
    }
    if !verify_crc(batch) {
        return Err(DedupError::InvalidBatch("CRC32C mismatch".to_string()));
    }
    let records_count = usize::try_from(header.records_count)
        .map_err(|_| DedupError::InvalidBatch(format!("records count {} is negative", header.records_count)))?;
    let records_section = codec::decompress(header.compression(), &batch[BATCH_HEADER_LEN..], RECORDS_BYTES_MAX)?;
    if records_count > records_section.len() / RECORD_LEN_MIN {
        return Err(invalid(format!("{records_count} records cannot fit in {} bytes", records_section.len())));
    }
    let mut records = Vec::with_capacity(records_count);
    let mut cursor = Cursor { data: records_section.as_ref(), position: 0 };
    for index in 0..records_count {
        let record = parse_record(&mut cursor).map_err(|error| match error {
            DedupError::InvalidRecords(problem) => invalid(format!("record {index}: {problem}")),
            other => other,
        })?;
        records.push(record);
    }
    if cursor.position != records_section.len() {
        return Err(invalid(format!(
            "{} bytes follow the {records_count} records the header counts",
            records_section.len() - cursor.position
        )));
    }
    Ok(ParsedBatch { header, records_section, records })
}

/// Parses one record at the cursor (which it leaves after the record).
fn parse_record(cursor: &mut Cursor<'_>) -> Result<RecordSpan, DedupError> {
    let start = cursor.position;
    let length = usize::try_from(cursor.varint()?).map_err(|_| invalid("negative record length".into()))?;
    let end = cursor.position.checked_add(length).filter(|end| *end <= cursor.data.len());
    let end = end.ok_or_else(|| invalid(format!("record length {length} runs past the records")))?;
    let mut body = Cursor { data: &cursor.data[..end], position: cursor.position };
    body.take(1)?; // attributes: unused in v2 records
    body.varlong()?; // timestamp delta
    let offset_delta = body.varint()?;
    let key = body.span()?;
    let value = body.span()?;
    let header_count = usize::try_from(body.varint()?).map_err(|_| invalid("negative header count".into()))?;
    let headers_start = body.position;
    for _ in 0..header_count {
        body.span()?.ok_or_else(|| invalid("a header has a null key".into()))?;
        body.span()?;
    }
    if body.position != end {
        return Err(invalid(format!("{} bytes left over inside the record", end - body.position)));
    }
    cursor.position = end;
    Ok(RecordSpan { bytes: (start, end), offset_delta, key, value, headers: (headers_start, end), header_count })
}

/// Reads Kafka's zigzag varints and length-prefixed byte strings.
struct Cursor<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DedupError> {
        let end = self.position.checked_add(count).filter(|end| *end <= self.data.len());
        let end = end.ok_or_else(|| invalid(format!("{count} bytes needed at {}", self.position)))?;
        let bytes = &self.data[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    /// A zigzag varint of at most `max_bytes` bytes.
    fn zigzag(&mut self, max_bytes: u32) -> Result<i64, DedupError> {
        let mut value: u64 = 0;
        for index in 0..max_bytes {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(invalid(format!("varint longer than {max_bytes} bytes")))
    }

    fn varlong(&mut self) -> Result<i64, DedupError> {
        self.zigzag(10)
    }

    fn varint(&mut self) -> Result<i32, DedupError> {
        let value = self.zigzag(5)?;
        i32::try_from(value).map_err(|_| invalid(format!("varint {value} overflows 32 bits")))
    }

    /// A varint length then that many bytes; length -1 is null.
    fn span(&mut self) -> Result<Option<Span>, DedupError> {
        match self.varint()? {
            -1 => Ok(None),
            length @ 0.. => {
                let start = self.position;
                self.take(length as usize)?;
                Ok(Some((start, self.position)))
            }
            length => Err(invalid(format!("length {length} is below -1"))),
        }
    }

    fn bytes(&mut self) -> Result<Option<&'a [u8]>, DedupError> {
        Ok(self.span()?.map(|(start, end)| &self.data[start..end]))
    }
}
