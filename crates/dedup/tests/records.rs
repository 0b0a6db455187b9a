//! `extract_ids` and `filter_batch` on real client batches, for every source mode and codec.

mod common;

use bytes::Bytes;
use common::{encode, fix_length_and_crc, raw_batch, Producer, TestRecord, CODECS, IDEMPOTENT};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use once_dedup::{filter_batch, DedupError, DedupSource, Id, IdScheme, RecordId};
use proptest::prelude::*;

/// The ids extracted with BLAKE3, which the expected ids below are computed with ([`Id::of`]): which
/// bytes each source reads is the same for every scheme (`a_keyed_scheme_hashes_the_same_bytes`).
fn extract_ids(batch: &[u8], source: &DedupSource) -> Result<Vec<Option<Id>>, DedupError> {
    once_dedup::extract_ids(batch, source, &IdScheme::Blake3)
}

fn extract_record_ids(batch: &[u8], source: &DedupSource) -> Result<Vec<RecordId>, DedupError> {
    once_dedup::extract_record_ids(batch, source, &IdScheme::Blake3)
}

#[test]
fn a_keyed_scheme_hashes_the_same_bytes() {
    let records = mixed_records();
    let batch = encode(&records, Compression::None, IDEMPOTENT);
    let keyed = IdScheme::SipHash24 { key: [3, 4] };
    let other_key = IdScheme::SipHash24 { key: [3, 5] };
    for source in sources() {
        let ids = once_dedup::extract_ids(&batch, &source, &keyed).expect("extract");
        let blake3 = extract_ids(&batch, &source).expect("extract");
        let under_other_key = once_dedup::extract_ids(&batch, &source, &other_key).expect("extract");
        for (index, record) in records.iter().enumerate() {
            let expected = expected_bytes(record, &source).map(|bytes| keyed.id_of(&bytes));
            assert_eq!(ids[index], expected, "source {source}, record {index}");
            assert_eq!(ids[index].is_some(), blake3[index].is_some(), "the same records have ids");
            if ids[index].is_some() {
                assert_ne!(ids[index], blake3[index], "a keyed id is not BLAKE3's");
                assert_ne!(ids[index], under_other_key[index], "nor another key's");
            }
        }
    }
}

fn sources() -> Vec<DedupSource> {
    vec![DedupSource::None, DedupSource::Key, DedupSource::Content, DedupSource::Header("msg-id".into())]
}

/// The bytes a record's id is the hash of, per the source, computed independently.
fn expected_bytes(record: &TestRecord, source: &DedupSource) -> Option<Vec<u8>> {
    match source {
        DedupSource::None => None,
        DedupSource::Key => record.key.clone(),
        DedupSource::Content => record.value.clone(),
        DedupSource::Header(name) => {
            record.headers.iter().rev().find(|(header, _)| header == name).and_then(|(_, value)| value.clone())
        }
    }
}

/// What `extract_ids` (with BLAKE3) must give for a record, computed independently.
fn expected_id(record: &TestRecord, source: &DedupSource) -> Option<Id> {
    expected_bytes(record, source).map(|bytes| Id::of(&bytes))
}

fn mixed_records() -> Vec<TestRecord> {
    vec![
        TestRecord::new(Some(b"k1"), Some(b"v1"), &[("msg-id", Some(b"a"))]),
        TestRecord::new(None, Some(b"v2"), &[]),
        TestRecord::new(Some(b"k3"), None, &[("msg-id", None)]),
        TestRecord::new(Some(b""), Some(b""), &[("other", Some(b"a")), ("msg-id", Some(b""))]),
        TestRecord::new(Some(b"k1"), Some(b"v1"), &[("trace", Some(b"t")), ("msg-id", Some(b"a"))]),
    ]
}

#[test]
fn every_source_mode_reads_the_right_bytes() {
    let records = mixed_records();
    let batch = encode(&records, Compression::None, IDEMPOTENT);
    for source in sources() {
        let ids = extract_ids(&batch, &source).expect("extract");
        let expected: Vec<Option<Id>> = records.iter().map(|record| expected_id(record, &source)).collect();
        assert_eq!(ids, expected, "source {source}");
    }
    let by_key = extract_ids(&batch, &DedupSource::Key).expect("extract");
    assert_eq!(by_key[0], Some(Id::of(b"k1")));
    assert_eq!(by_key[1], None, "a null key has no id");
    assert_eq!(by_key[3], Some(Id::of(b"")), "an empty key is an id");
    assert_eq!(by_key[0], by_key[4]);
    let by_content = extract_ids(&batch, &DedupSource::Content).expect("extract");
    assert_eq!(by_content[2], None, "a tombstone has no id");
    let by_header = extract_ids(&batch, &DedupSource::Header("msg-id".into())).expect("extract");
    assert_eq!(by_header, vec![Some(Id::of(b"a")), None, None, Some(Id::of(b"")), Some(Id::of(b"a"))]);
    assert!(extract_ids(&batch, &DedupSource::None).expect("extract").iter().all(Option::is_none));
    assert!(extract_ids(&batch, &DedupSource::Header("absent".into())).expect("extract").iter().all(Option::is_none));
}

#[test]
fn repeated_headers_take_the_last_value() {
    let record = TestRecord::new(None, None, &[("id", Some(b"first")), ("x", None), ("id", Some(b"last"))]);
    let batch = raw_batch(&[record], 0);
    assert_eq!(extract_ids(&batch, &DedupSource::Header("id".into())).expect("extract"), vec![Some(Id::of(b"last"))]);
    let null_last = TestRecord::new(None, None, &[("id", Some(b"first")), ("id", None)]);
    let batch = raw_batch(&[null_last], 0);
    assert_eq!(extract_ids(&batch, &DedupSource::Header("id".into())).expect("extract"), vec![None]);
}

#[test]
fn control_batches_have_no_ids() {
    let record = TestRecord::new(Some(b"\x00\x00\x00\x01"), Some(b"marker"), &[]);
    let batch = raw_batch(&[record], 0x30);
    assert_eq!(extract_ids(&batch, &DedupSource::Key).expect("extract"), vec![None]);
}

#[test]
fn log_test_batches_parse() {
    let batch = once_log::testing::make_batch(4, 10, 1_000);
    let ids = extract_record_ids(&batch, &DedupSource::Content).expect("extract");
    assert_eq!(ids.iter().map(|record| record.offset_delta).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert!(ids.iter().all(|record| record.id.is_some()));
    assert_eq!(extract_ids(&batch, &DedupSource::Key).expect("extract"), vec![None; 4]);
}

fn many_records(count: usize) -> Vec<TestRecord> {
    (0..count)
        .map(|index| {
            let key = format!("key-{}", index % 17);
            let value = format!("value-{index}-{}", "x".repeat(index % 50));
            let header = format!("id-{}", index % 23);
            TestRecord::new(Some(key.as_bytes()), Some(value.as_bytes()), &[("msg-id", Some(header.as_bytes()))])
        })
        .collect()
}

#[test]
fn ids_are_read_from_compressed_batches_of_every_codec() {
    let records = many_records(300);
    for codec in CODECS {
        let batch = encode(&records, codec, IDEMPOTENT);
        assert_eq!(i16::from_be_bytes([batch[21], batch[22]]) & 7, codec as i16, "encoded with {codec:?}");
        for source in sources() {
            let ids = extract_ids(&batch, &source).expect("extract");
            let expected: Vec<Option<Id>> = records.iter().map(|record| expected_id(record, &source)).collect();
            assert_eq!(ids, expected, "{codec:?} {source}");
        }
    }
}

/// A decoded record's fields: offset, sequence, timestamp, key, value, headers.
type Decoded = (i64, i32, i64, Option<Bytes>, Option<Bytes>, Vec<(String, Option<Bytes>)>);

/// Decodes with kafka-protocol (which checks the CRC) and returns each record's fields.
fn decode(batch: &[u8]) -> Vec<Decoded> {
    let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(batch)).expect("kafka-protocol decodes it");
    set.records
        .into_iter()
        .map(|record| {
            let headers = record.headers.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
            (record.offset, record.sequence, record.timestamp, record.key, record.value, headers)
        })
        .collect()
}

/// Checks everything `filter_batch` promises about `filtered`, built from `batch` and `keep`.
fn check_filtered(batch: &[u8], filtered: &[u8], keep: &[bool], codec: Compression) {
    assert!(once_log::verify_crc(filtered), "CRC32C valid");
    let length = i32::from_be_bytes(filtered[8..12].try_into().expect("4 bytes"));
    assert_eq!(length as usize + 12, filtered.len(), "batch length field");
    let kept = keep.iter().filter(|kept| **kept).count();
    assert_eq!(i32::from_be_bytes(filtered[57..61].try_into().expect("4 bytes")), kept as i32, "records count");
    // Unchanged header fields: base offset, leader epoch, magic; last offset delta, timestamps,
    // producer id and epoch, base sequence.
    assert_eq!(filtered[..8], batch[..8], "base offset");
    assert_eq!(filtered[12..17], batch[12..17], "leader epoch and magic");
    assert_eq!(filtered[23..57], batch[23..57], "last offset delta, timestamps, producer, base sequence");
    let attributes = |bytes: &[u8]| i16::from_be_bytes([bytes[21], bytes[22]]);
    if kept == 0 {
        assert_eq!(filtered.len(), 61, "header only");
        assert_eq!(attributes(filtered), attributes(batch) & !7, "compression cleared, other bits kept");
    } else {
        assert_eq!(attributes(filtered), attributes(batch), "attributes");
        assert_eq!(attributes(filtered) & 7, codec as i16, "recompressed with the batch's own codec");
    }
    let original = decode(batch);
    let expected: Vec<_> =
        original.into_iter().zip(keep).filter(|(_, kept)| **kept).map(|(record, _)| record).collect();
    assert_eq!(decode(filtered), expected, "kept records identical: offset, sequence, timestamp, key, value, headers");
}

#[test]
fn filtering_round_trips_through_kafka_protocol_for_every_codec() {
    let records = many_records(200);
    let keep: Vec<bool> = (0..records.len()).map(|index| index % 3 != 1).collect();
    let transactional = Producer { transactional: true, ..IDEMPOTENT };
    for codec in CODECS {
        for producer in [IDEMPOTENT, transactional] {
            let batch = encode(&records, codec, producer);
            let filtered = filter_batch(&batch, &keep).expect("filter");
            check_filtered(&batch, &filtered, &keep, codec);
            // Ids survive: the filtered batch's ids are the kept records' ids.
            let source = DedupSource::Header("msg-id".into());
            let before = extract_record_ids(&batch, &source).expect("extract");
            let after = extract_record_ids(&filtered, &source).expect("extract");
            let kept: Vec<_> = before.into_iter().zip(&keep).filter(|(_, kept)| **kept).map(|(id, _)| id).collect();
            assert_eq!(after, kept, "{codec:?}: offset deltas and ids of the kept records");
        }
    }
}

#[test]
fn keeping_nothing_gives_a_header_only_batch() {
    for codec in CODECS {
        let batch = encode(&many_records(10), codec, IDEMPOTENT);
        let filtered = filter_batch(&batch, &[false; 10]).expect("filter");
        check_filtered(&batch, &filtered, &[false; 10], codec);
        assert!(decode(&filtered).is_empty());
        assert_eq!(extract_ids(&filtered, &DedupSource::Key).expect("extract"), vec![]);
        assert_eq!(i32::from_be_bytes(filtered[23..27].try_into().expect("4")), 9, "last offset delta kept");
    }
}

#[test]
fn keeping_everything_returns_the_batch_unchanged() {
    for codec in CODECS {
        let batch = encode(&many_records(10), codec, IDEMPOTENT);
        assert_eq!(filter_batch(&batch, &[true; 10]).expect("filter"), batch);
    }
}

#[test]
fn a_mask_of_the_wrong_length_is_an_error() {
    let batch = encode(&many_records(3), Compression::None, IDEMPOTENT);
    let error = filter_batch(&batch, &[true, false]).expect_err("wrong length");
    assert!(matches!(error, DedupError::KeepMaskLength { mask: 2, records: 3 }), "{error}");
}

#[test]
fn damaged_batches_are_errors() {
    let batch = encode(&many_records(5), Compression::Zstd, IDEMPOTENT);
    let mut flipped = batch.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(matches!(extract_ids(&flipped, &DedupSource::Key), Err(DedupError::InvalidBatch(_))), "CRC mismatch");
    assert!(extract_ids(&batch[..batch.len() - 1], &DedupSource::Key).is_err(), "truncated");
    assert!(extract_ids(&batch[..30], &DedupSource::Key).is_err(), "shorter than a header");
    let mut magic = batch.clone();
    magic[16] = 1;
    assert!(extract_ids(&magic, &DedupSource::Key).is_err(), "magic 1");
    // A count that disagrees with the records, with a valid CRC.
    let mut plain = encode(&many_records(5), Compression::None, IDEMPOTENT);
    plain[57..61].copy_from_slice(&6i32.to_be_bytes());
    fix_length_and_crc(&mut plain);
    let error = extract_ids(&plain, &DedupSource::Key).expect_err("count");
    assert!(matches!(error, DedupError::InvalidRecords(_)), "{error}");
    let mut codec = batch.clone();
    codec[22] = (codec[22] & !7) | 6;
    fix_length_and_crc(&mut codec);
    assert!(matches!(extract_ids(&codec, &DedupSource::Key), Err(DedupError::UnknownCompression(6))));
}

fn test_record() -> impl Strategy<Value = TestRecord> {
    let bytes = || prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..40));
    let header = ("[a-c]{1,2}", bytes());
    (bytes(), bytes(), prop::collection::vec(header, 0..3)).prop_map(|(key, value, headers)| {
        let mut unique: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        for (name, value) in headers {
            if !unique.iter().any(|(existing, _)| *existing == name) {
                unique.push((name, value));
            }
        }
        TestRecord { key, value, headers: unique }
    })
}

/// Review of issue 14: a record placed outside its batch's offsets (offset delta 5 in a one-record
/// batch) or out of order is refused, not indexed at another batch's offset (which panicked the
/// writer, and the replay at every restart).
#[test]
fn offset_deltas_outside_the_batch_or_out_of_order_are_refused() {
    let record = TestRecord::new(Some(b"order-1"), Some(b"charge"), &[]);
    let mut batch = raw_batch(std::slice::from_ref(&record), 0);
    assert!(extract_record_ids(&batch, &DedupSource::Key).is_ok(), "the well-formed batch is read");
    // Record layout after the 61-byte header: length varint (1 byte here), attributes, timestamp
    // delta (0), offset delta (zigzag varint; 5 is 10).
    assert_eq!(batch[64], 0, "the offset delta byte");
    batch[64] = 10;
    fix_length_and_crc(&mut batch);
    let refused = extract_record_ids(&batch, &DedupSource::Key);
    assert!(matches!(refused, Err(DedupError::InvalidRecords(_))), "delta 5 in a one-record batch: {refused:?}");

    let two = [record.clone(), TestRecord::new(Some(b"order-2"), Some(b"charge"), &[])];
    let mut swapped = raw_batch(&two, 0);
    let second = 61 + 1 + usize::from(swapped[61]) / 2;
    assert_eq!((swapped[64], swapped[second + 3]), (0, 2), "deltas 0 and 1 (zigzag)");
    swapped[second + 3] = 0;
    fix_length_and_crc(&mut swapped);
    let refused = extract_record_ids(&swapped, &DedupSource::Key);
    assert!(matches!(refused, Err(DedupError::InvalidRecords(_))), "a repeated delta: {refused:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any records, codec and mask: the filtered batch decodes, carries the promised header,
    /// and its records are exactly the kept ones, byte for byte, at their original offsets.
    #[test]
    fn filter_batch_invariants(
        records in prop::collection::vec(test_record(), 1..40),
        mask_seed in any::<u64>(),
        codec_index in 0..5usize,
    ) {
        let codec = CODECS[codec_index];
        let keep: Vec<bool> = (0..records.len()).map(|index| (mask_seed >> (index % 64)) & 1 == 1).collect();
        let batch = encode(&records, codec, IDEMPOTENT);
        let filtered = filter_batch(&batch, &keep).expect("filter");
        check_filtered(&batch, &filtered, &keep, codec);
        for source in sources() {
            let ids = extract_ids(&batch, &source).expect("extract");
            let expected: Vec<Option<Id>> = records.iter().map(|record| expected_id(record, &source)).collect();
            prop_assert_eq!(ids, expected);
        }
    }

    /// Arbitrary bytes never panic the parser (with the CRC made valid so parsing goes deep).
    #[test]
    fn garbage_records_are_errors_not_panics(
        tail in prop::collection::vec(any::<u8>(), 0..200),
        count in -2..20i32,
        codec in 0..8i16,
    ) {
        let mut batch = raw_batch(&[], codec);
        batch.truncate(61);
        batch[57..61].copy_from_slice(&count.to_be_bytes());
        batch.extend_from_slice(&tail);
        fix_length_and_crc(&mut batch);
        let _ = extract_ids(&batch, &DedupSource::Header("a".into()));
        let _ = filter_batch(&batch, &vec![false; count.max(0) as usize]);
    }
}
