//! Builders of valid v2 record batches for tests, here and in other crates.

use crate::batch::{BatchEncoder, NewRecord};

/// A structurally valid, uncompressed, non-idempotent v2 batch of `records` records, each with
/// a null key and a `payload_len`-byte value, all timestamped `timestamp_ms`. Base offset 0.
pub fn make_batch(records: u32, payload_len: usize, timestamp_ms: i64) -> Vec<u8> {
    make_batch_with(-1, -1, -1, 0, records, payload_len, timestamp_ms)
}

/// Like `make_batch` with the producer fields and attributes given (e.g. `0x10` for a
/// transactional batch). `records == 0` yields a batch the log rejects (for tests of that).
pub fn make_batch_with(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    records: u32,
    payload_len: usize,
    timestamp_ms: i64,
) -> Vec<u8> {
    let producer = (producer_id, producer_epoch, base_sequence, attributes);
    let records: Vec<TestRecord> = (0..records).map(|delta| payload_record(delta, payload_len)).collect();
    build(producer, &records, records.len() as i32 - 1, timestamp_ms)
}

/// A batch with one record per key, keyed `keys[i]` with the same bytes as value, and the producer
/// fields and attributes given (`make_batch_with`): for tests of deduplication by key or content.
pub fn make_keyed_batch(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    keys: &[&[u8]],
    timestamp_ms: i64,
) -> Vec<u8> {
    let producer = (producer_id, producer_epoch, base_sequence, attributes);
    let records: Vec<TestRecord> = keys
        .iter()
        .enumerate()
        .map(|(delta, key)| TestRecord { offset_delta: delta as u32, key: Some(key.to_vec()), value: key.to_vec() })
        .collect();
    build(producer, &records, records.len() as i32 - 1, timestamp_ms)
}

/// One record of a built batch.
struct TestRecord {
    offset_delta: u32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

/// A record with a null key and a `payload_len`-byte value derived from its offset delta.
fn payload_record(offset_delta: u32, payload_len: usize) -> TestRecord {
    let value = (0..payload_len).map(|index| (index as u32 + offset_delta) as u8).collect();
    TestRecord { offset_delta, key: None, value }
}

/// A compaction-shaped batch, as deduplication leaves one: it spans offset deltas
/// `0..=last_offset_delta` but holds only the records at `kept_offset_deltas` (increasing, each at
/// most `last_offset_delta`; empty for a header-only batch). Records as in `make_batch`.
pub fn make_compacted_batch(
    kept_offset_deltas: &[u32],
    last_offset_delta: u32,
    payload_len: usize,
    timestamp_ms: i64,
) -> Vec<u8> {
    assert!(kept_offset_deltas.windows(2).all(|pair| pair[0] < pair[1]), "offset deltas increase");
    assert!(kept_offset_deltas.iter().all(|delta| *delta <= last_offset_delta), "kept records lie in the span");
    let records: Vec<TestRecord> = kept_offset_deltas.iter().map(|delta| payload_record(*delta, payload_len)).collect();
    build((-1, -1, -1, 0), &records, last_offset_delta as i32, timestamp_ms)
}

/// A batch of `records` through [`BatchEncoder`]; producer is (id, epoch, base sequence,
/// attributes). Partition leader epoch 0. Not validated: tests build batches the log refuses too.
fn build(producer: (i64, i16, i32, i16), records: &[TestRecord], last_offset_delta: i32, timestamp_ms: i64) -> Vec<u8> {
    let (producer_id, producer_epoch, base_sequence, attributes) = producer;
    let mut encoder = BatchEncoder::new(timestamp_ms)
        .producer(producer_id, producer_epoch, base_sequence)
        .attributes(attributes)
        .partition_leader_epoch(0)
        .last_offset_delta(last_offset_delta);
    for record in records {
        let offset_delta = i32::try_from(record.offset_delta).expect("a test batch is small");
        encoder.push(&NewRecord {
            offset_delta,
            key: record.key.as_deref(),
            value: Some(&record.value),
            ..NewRecord::default()
        });
    }
    encoder.finish_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{verify_crc, BatchHeader, BATCH_HEADER_LEN};

    #[test]
    fn made_batch_parses_and_checks() {
        let batch = make_batch_with(7, 2, 40, 0x10, 3, 5, 1_000);
        let header = BatchHeader::parse(&batch).expect("parse");
        assert!(verify_crc(&batch));
        assert_eq!(header.total_len(), batch.len());
        assert_eq!(header.records_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.producer_id, 7);
        assert_eq!(header.producer_epoch, 2);
        assert_eq!(header.base_sequence, 40);
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(header.compression(), 0);
        assert_eq!(header.max_timestamp, 1_000);
        // Each record: length(1) attrs(1) ts(1) offset(1) key(1) value len(1) value(5) headers(1).
        assert_eq!(batch.len(), BATCH_HEADER_LEN + 3 * 12);
    }
}
