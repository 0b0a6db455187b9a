//! The records of an uncompressed v2 batch (or of a records section a caller decompressed):
//! length-prefixed records of varint fields, read in place without copying, and the control records
//! of transaction markers.
//!
//! Record layout: `varint length, i8 attributes, varlong timestamp delta, varint offset delta,
//! varint key length (-1 null) + key, varint value length (-1 null) + value, varint header count,
//! (varint key length + key, varint value length (-1 null) + value)…`.

use super::varint::{read_zigzag, VARINT_BYTES_MAX, VARLONG_BYTES_MAX};
use super::{BatchHeader, BATCH_HEADER_LEN};

/// Smallest possible record: length, attributes, timestamp delta, offset delta, key length,
/// value length, header count, one byte each.
pub const RECORD_LEN_MIN: usize = 7;

/// Kafka's `ControlRecordType` of a transaction abort marker.
pub const CONTROL_TYPE_ABORT: i16 = 0;
/// Kafka's `ControlRecordType` of a transaction commit marker.
pub const CONTROL_TYPE_COMMIT: i16 = 1;
/// The only version of the control record key and of the marker value (`EndTransactionMarker`).
pub const CONTROL_RECORD_VERSION: i16 = 0;

/// What is wrong with a record or a records section.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

fn problem(message: String) -> RecordError {
    RecordError(message)
}

/// Reads big-endian integers, zigzag varints and length-prefixed byte strings, failing (never
/// panicking) on short or malformed input.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data, position: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.position
    }

    /// The next `count` bytes.
    pub fn take(&mut self, count: usize) -> Result<&'a [u8], RecordError> {
        let end = self.position.checked_add(count).filter(|end| *end <= self.data.len());
        let end = end.ok_or_else(|| problem(format!("{count} bytes needed at {}", self.position)))?;
        let bytes = &self.data[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    /// A big-endian i16.
    pub fn i16(&mut self) -> Result<i16, RecordError> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A big-endian i32.
    pub fn i32(&mut self) -> Result<i32, RecordError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// A zigzag varlong (at most 10 bytes).
    pub fn varlong(&mut self) -> Result<i64, RecordError> {
        let at = self.position;
        read_zigzag(self.data, &mut self.position, VARLONG_BYTES_MAX)
            .ok_or_else(|| problem(format!("no varlong of at most {VARLONG_BYTES_MAX} bytes at {at}")))
    }

    /// A zigzag varint (at most 5 bytes, within i32).
    pub fn varint(&mut self) -> Result<i32, RecordError> {
        let at = self.position;
        let value = read_zigzag(self.data, &mut self.position, VARINT_BYTES_MAX)
            .ok_or_else(|| problem(format!("no varint of at most {VARINT_BYTES_MAX} bytes at {at}")))?;
        i32::try_from(value).map_err(|_| problem(format!("varint {value} at {at} overflows 32 bits")))
    }

    /// A varint length then that many bytes; length -1 is null.
    pub fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            length @ 0.. => Ok(Some(self.take(length as usize)?)),
            length => Err(problem(format!("length {length} is below -1"))),
        }
    }
}

/// One record, borrowed from its records section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The whole record, its length prefix included (what compaction copies to keep it).
    pub bytes: &'a [u8],
    /// Record attributes (unused in v2, kept as found).
    pub attributes: i8,
    /// Added to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Added to the batch's base offset.
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The headers, checked when the record was read; iterate them with [`Record::headers`].
    headers: &'a [u8],
    header_count: usize,
}

impl<'a> Record<'a> {
    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.header_count
    }

    /// The headers in order: (key, value or null).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let mut cursor = Cursor::new(self.headers);
        (0..self.header_count).map(move |_| {
            // Every header was read once already, by `read_record`: these reads cannot fail.
            let key = cursor.nullable_bytes().ok().flatten().expect("a header key checked when read");
            let value = cursor.nullable_bytes().expect("a header value checked when read");
            (key, value)
        })
    }
}

/// Reads one record at the cursor, leaving it after the record. Checks everything the record's
/// lengths claim, its headers included, so that nothing is left to fail later.
pub fn read_record<'a>(cursor: &mut Cursor<'a>) -> Result<Record<'a>, RecordError> {
    let start = cursor.position;
    let length = cursor.varint()?;
    let length = usize::try_from(length).map_err(|_| problem(format!("negative record length {length}")))?;
    let body = cursor.take(length).map_err(|_| problem(format!("record length {length} runs past the records")))?;
    let bytes = &cursor.data[start..cursor.position];
    let mut body = Cursor::new(body);
    let attributes = body.take(1)?[0] as i8;
    let timestamp_delta = body.varlong()?;
    let offset_delta = body.varint()?;
    let key = body.nullable_bytes()?;
    let value = body.nullable_bytes()?;
    let header_count = body.varint()?;
    let header_count = usize::try_from(header_count).map_err(|_| problem("negative header count".into()))?;
    let headers_start = body.position;
    for _ in 0..header_count {
        body.nullable_bytes()?.ok_or_else(|| problem("a header has a null key".into()))?;
        body.nullable_bytes()?;
    }
    if body.remaining() != 0 {
        return Err(problem(format!("{} bytes left over inside the record", body.remaining())));
    }
    let headers = &body.data[headers_start..];
    Ok(Record { bytes, attributes, timestamp_delta, offset_delta, key, value, headers, header_count })
}

/// Reads exactly `count` records filling `section` (a batch's records section, decompressed).
pub fn read_records(section: &[u8], count: usize) -> Result<Vec<Record<'_>>, RecordError> {
    if count > section.len() / RECORD_LEN_MIN {
        return Err(problem(format!("{count} records cannot fit in {} bytes", section.len())));
    }
    let mut records = Vec::with_capacity(count);
    let mut cursor = Cursor::new(section);
    for index in 0..count {
        let record = read_record(&mut cursor).map_err(|error| problem(format!("record {index}: {error}")))?;
        records.push(record);
    }
    if cursor.remaining() != 0 {
        return Err(problem(format!("{} bytes follow the {count} records the header counts", cursor.remaining())));
    }
    Ok(records)
}

/// The records of an uncompressed batch (`batch` is the whole batch, header first).
pub fn uncompressed_records<'a>(header: &BatchHeader, batch: &'a [u8]) -> Result<Vec<Record<'a>>, RecordError> {
    if header.compression() != 0 {
        return Err(problem(format!("compression codec {} where none is expected", header.compression())));
    }
    let count = usize::try_from(header.records_count)
        .map_err(|_| problem(format!("records count {} is negative", header.records_count)))?;
    let end = header.total_len().min(batch.len());
    let section = batch.get(BATCH_HEADER_LEN..end).ok_or_else(|| problem("batch shorter than its header".into()))?;
    read_records(section, count)
}

/// What the record of a control batch says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecord {
    /// A transaction marker (Kafka `EndTransactionMarker`).
    EndTxn { commit: bool, coordinator_epoch: i32 },
    /// Another control type (KRaft's leader change, snapshot header...).
    Other { control_type: i16 },
}

/// The key of a control record: (version, type).
pub fn control_key(key: &[u8]) -> Result<(i16, i16), RecordError> {
    let mut cursor = Cursor::new(key);
    let version = cursor.i16().map_err(|_| problem(format!("control record key of {} bytes", key.len())))?;
    let control_type = cursor.i16().map_err(|_| problem(format!("control record key of {} bytes", key.len())))?;
    Ok((version, control_type))
}

/// The key of a transaction marker's control record.
pub fn end_txn_key(commit: bool) -> [u8; 4] {
    let control_type = if commit { CONTROL_TYPE_COMMIT } else { CONTROL_TYPE_ABORT };
    let mut key = [0u8; 4];
    key[..2].copy_from_slice(&CONTROL_RECORD_VERSION.to_be_bytes());
    key[2..].copy_from_slice(&control_type.to_be_bytes());
    key
}

/// The value of a transaction marker's control record (`EndTransactionMarker` version 0).
pub fn end_txn_value(coordinator_epoch: i32) -> [u8; 6] {
    let mut value = [0u8; 6];
    value[..2].copy_from_slice(&CONTROL_RECORD_VERSION.to_be_bytes());
    value[2..].copy_from_slice(&coordinator_epoch.to_be_bytes());
    value
}

/// Reads the first record of an uncompressed control batch: its key (version 0, type) and, for a
/// transaction marker, its value (version, coordinator epoch). Never panics on malformed input.
pub fn parse_control_record(batch: &[u8]) -> Result<ControlRecord, RecordError> {
    let attributes = batch.get(21..23).ok_or_else(|| problem("batch shorter than its header".into()))?;
    if i16::from_be_bytes([attributes[0], attributes[1]]) & 0x07 != 0 {
        return Err(problem("compressed control batch".into()));
    }
    let section = batch.get(BATCH_HEADER_LEN..).ok_or_else(|| problem("batch shorter than its header".into()))?;
    let record = read_record(&mut Cursor::new(section))?;
    let key = record.key.ok_or_else(|| problem("control record with a null key".into()))?;
    let (key_version, control_type) = control_key(key)?;
    if key_version != CONTROL_RECORD_VERSION {
        return Err(problem(format!("control record key version {key_version}")));
    }
    let commit = match control_type {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        other => return Ok(ControlRecord::Other { control_type: other }),
    };
    let value = record.value.unwrap_or_default();
    let mut cursor = Cursor::new(value);
    let transaction_marker = || problem(format!("transaction marker value of {} bytes", value.len()));
    cursor.i16().map_err(|_| transaction_marker())?; // value version: later versions only append fields
    let coordinator_epoch = cursor.i32().map_err(|_| transaction_marker())?;
    Ok(ControlRecord::EndTxn { commit, coordinator_epoch })
}
