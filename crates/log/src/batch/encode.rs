//! Building v2 batches: [`BatchEncoder`] lays out the header, the records and the CRC32C; what it
//! builds is checked by the same validation the log applies on append (paired assertions: encode,
//! then validate what was encoded).

use super::records::{end_txn_key, end_txn_value};
use super::varint::{put_varint, put_varlong};
use super::{
    crc_of, BatchHeader, ValidBatch, ATTRIBUTE_CONTROL, ATTRIBUTE_TRANSACTIONAL, BATCH_HEADER_LEN,
    BATCH_LENGTH_OVERHEAD, CRC_FIELD, MAGIC_V2,
};

/// One record to encode.
#[derive(Clone, Copy, Debug, Default)]
pub struct NewRecord<'a> {
    /// Added to the batch's base offset; increasing within a batch.
    pub offset_delta: i32,
    /// Added to the batch's base timestamp; at least 0.
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// (key, value or null) pairs, in order.
    pub headers: &'a [(&'a [u8], Option<&'a [u8]>)],
}

/// Builds one uncompressed v2 batch, base offset 0 (the log assigns offsets on append).
///
/// Defaults are those of a plain producer: no producer id, epoch or sequence (-1), partition leader
/// epoch -1, attributes 0 (no compression, create time). The last offset delta is that of the last
/// record unless set (a compaction-shaped batch spans more offsets than it holds records).
#[derive(Clone, Debug)]
pub struct BatchEncoder {
    attributes: i16,
    partition_leader_epoch: i32,
    base_timestamp: i64,
    max_timestamp_delta: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    last_offset_delta: Option<i32>,
    records_count: i32,
    /// The batch so far: a placeholder header, then the records.
    bytes: Vec<u8>,
}

impl BatchEncoder {
    /// An empty batch whose first record is timestamped `base_timestamp`.
    pub fn new(base_timestamp: i64) -> BatchEncoder {
        let mut bytes = Vec::with_capacity(BATCH_HEADER_LEN + 64);
        bytes.resize(BATCH_HEADER_LEN, 0);
        BatchEncoder {
            attributes: 0,
            partition_leader_epoch: -1,
            base_timestamp,
            max_timestamp_delta: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            last_offset_delta: None,
            records_count: 0,
            bytes,
        }
    }

    /// Sets the producer fields (an idempotent or transactional producer).
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> BatchEncoder {
        (self.producer_id, self.producer_epoch, self.base_sequence) = (producer_id, producer_epoch, base_sequence);
        self
    }

    /// Sets the attributes field as a whole (compression bits must be 0: records are not compressed).
    pub fn attributes(mut self, attributes: i16) -> BatchEncoder {
        self.attributes = attributes;
        self
    }

    /// Sets attribute bit 4: the batch belongs to a transaction.
    pub fn transactional(mut self) -> BatchEncoder {
        self.attributes |= ATTRIBUTE_TRANSACTIONAL;
        self
    }

    /// Sets attribute bit 5: a control batch.
    pub fn control(mut self) -> BatchEncoder {
        self.attributes |= ATTRIBUTE_CONTROL;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> BatchEncoder {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Makes the batch span offset deltas `0..=delta` whatever records it holds.
    pub fn last_offset_delta(mut self, delta: i32) -> BatchEncoder {
        self.last_offset_delta = Some(delta);
        self
    }

    /// Appends one record.
    pub fn push(&mut self, record: &NewRecord<'_>) {
        assert!(record.timestamp_delta >= 0, "a record is not older than its batch's base timestamp");
        let mut body = Vec::with_capacity(16 + record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len));
        body.push(0); // record attributes: unused in v2
        put_varlong(&mut body, record.timestamp_delta);
        put_varint(&mut body, record.offset_delta);
        put_nullable(&mut body, record.key);
        put_nullable(&mut body, record.value);
        put_varint(&mut body, length_of(record.headers.len()));
        for (key, value) in record.headers {
            put_nullable(&mut body, Some(key));
            put_nullable(&mut body, *value);
        }
        put_varint(&mut self.bytes, length_of(body.len()));
        self.bytes.extend_from_slice(&body);
        self.records_count += 1;
        self.max_timestamp_delta = self.max_timestamp_delta.max(record.timestamp_delta);
    }

    /// Appends a record with the next offset delta and the base timestamp.
    pub fn push_key_value(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        let offset_delta = self.records_count;
        self.push(&NewRecord { offset_delta, key, value, ..NewRecord::default() });
    }

    /// The finished batch: header written, length and CRC32C computed, then checked as the log
    /// checks a batch on append.
    pub fn finish(self) -> ValidBatch {
        let (_, bytes) = self.finish_unchecked_then_check();
        ValidBatch::validate(bytes).expect("an encoded batch passes the log's validation")
    }

    /// Like [`BatchEncoder::finish`], for tests that build a batch the log must refuse (no records,
    /// a last offset delta below the records'): the bytes, checked only for their CRC.
    pub fn finish_bytes(self) -> Vec<u8> {
        self.finish_unchecked_then_check().1
    }

    /// The header and the bytes, the header checked against the bytes but nothing validated.
    fn finish_unchecked_then_check(self) -> (BatchHeader, Vec<u8>) {
        let mut bytes = self.bytes;
        let last_offset_delta = self.last_offset_delta.unwrap_or(self.records_count - 1);
        let header = BatchHeader {
            base_offset: 0,
            batch_length: length_of(bytes.len() - BATCH_LENGTH_OVERHEAD),
            partition_leader_epoch: self.partition_leader_epoch,
            magic: MAGIC_V2,
            crc: 0,
            attributes: self.attributes,
            last_offset_delta,
            base_timestamp: self.base_timestamp,
            max_timestamp: self.base_timestamp + self.max_timestamp_delta,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.records_count,
        };
        header.write(&mut bytes[..BATCH_HEADER_LEN]);
        let crc = crc_of(&bytes);
        bytes[CRC_FIELD..CRC_FIELD + 4].copy_from_slice(&crc.to_be_bytes());
        let header = BatchHeader { crc, ..header };
        assert_eq!(BatchHeader::parse(&bytes).ok(), Some(header), "the header reads back as written");
        assert_eq!(header.total_len(), bytes.len(), "the length field counts the bytes built");
        (header, bytes)
    }
}

/// The control batch of a transaction marker (Kafka's `EndTransactionMarker`): transactional and
/// control, one record keyed (version 0, type) with value (version 0, coordinator epoch), base
/// sequence -1.
pub fn end_txn_marker(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> ValidBatch {
    let mut encoder =
        BatchEncoder::new(timestamp_ms).transactional().control().producer(producer_id, producer_epoch, -1);
    encoder.push_key_value(Some(&end_txn_key(commit)), Some(&end_txn_value(coordinator_epoch)));
    encoder.finish()
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            put_varint(out, length_of(bytes.len()));
            out.extend_from_slice(bytes);
        }
        None => put_varint(out, -1),
    }
}

/// A length as the i32 the format stores. Batches are bounded far below 2 GiB by the request and
/// segment size limits, so a longer one is a bug.
fn length_of(length: usize) -> i32 {
    i32::try_from(length).expect("a record batch is shorter than 2 GiB")
}
