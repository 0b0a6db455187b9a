//! Unit tests of the batch format: varints at their edges, encode/decode round trips, control
//! batches, headers, CRC mismatches; and compatibility with `kafka-protocol`'s encoder and decoder,
//! which wrote the transaction log (and decoded the offsets log) before this module existed.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;

fn varint_bytes(value: i64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varlong(&mut out, value);
    out
}

#[test]
fn varints_are_zigzag() {
    let mut out = Vec::new();
    put_varint(&mut out, -1);
    put_varint(&mut out, 1);
    put_varint(&mut out, 64);
    assert_eq!(out, vec![0x01, 0x02, 0x80, 0x01]);
    assert_eq!((zigzag_encode(0), zigzag_encode(-1), zigzag_encode(1), zigzag_encode(-2)), (0, 1, 2, 3));
    assert_eq!(zigzag_encode(i64::MAX), u64::MAX - 1);
    assert_eq!(zigzag_encode(i64::MIN), u64::MAX);
}

#[test]
fn varint_edges_round_trip_at_their_lengths() {
    let edges32 = [0, 1, -1, 63, -64, 64, -65, 8191, -8192, 8192, i32::MAX, i32::MIN, i32::MAX - 1, i32::MIN + 1];
    for value in edges32 {
        let mut out = Vec::new();
        put_varint(&mut out, value);
        assert!(out.len() <= VARINT_BYTES_MAX, "{value} fits in a varint");
        assert_eq!(out, varint_bytes(i64::from(value)), "varint and varlong agree on {value}");
        let mut cursor = Cursor::new(&out);
        assert_eq!(cursor.varint(), Ok(value));
        assert_eq!(cursor.remaining(), 0, "{value} read to its end");
    }
    assert_eq!(varint_bytes(i64::from(i32::MIN)).len(), 5);
    assert_eq!(varint_bytes(i64::from(i32::MAX)).len(), 5);
    let edges64 = [0, -1, 1, i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1, i64::MAX, i64::MIN];
    for value in edges64 {
        let out = varint_bytes(value);
        assert!(out.len() <= VARLONG_BYTES_MAX, "{value} fits in a varlong");
        assert_eq!(Cursor::new(&out).varlong(), Ok(value));
        assert_eq!(zigzag_decode(zigzag_encode(value)), value);
    }
    assert_eq!(varint_bytes(i64::MIN).len(), 10);
    assert_eq!(varint_bytes(i64::MAX).len(), 10);
    // Past i32, a varint is refused rather than truncated; past 10 bytes, a varlong is.
    assert!(Cursor::new(&varint_bytes(i64::from(i32::MAX) + 1)).varint().is_err());
    assert!(Cursor::new(&varint_bytes(i64::from(i32::MIN) - 1)).varint().is_err());
    assert!(Cursor::new(&[0x80; 11]).varlong().is_err());
    assert!(Cursor::new(&[0x80, 0x80]).varint().is_err(), "a varint cut short is an error");
}

fn sample_batch() -> ValidBatch {
    let headers: [(&[u8], Option<&[u8]>); 2] = [(b"trace", Some(b"abc")), (b"empty", None)];
    let mut encoder = BatchEncoder::new(1_000).producer(7, 2, 40);
    encoder.push(&NewRecord {
        offset_delta: 0,
        timestamp_delta: 0,
        key: Some(b"k0"),
        value: Some(b"v0"),
        headers: &[],
    });
    encoder.push(&NewRecord { offset_delta: 1, timestamp_delta: 5, key: None, value: Some(b""), headers: &headers });
    encoder.push(&NewRecord { offset_delta: 2, timestamp_delta: 3, key: Some(b""), value: None, headers: &[] });
    encoder.finish()
}

#[test]
fn an_encoded_batch_reads_back() {
    let batch = sample_batch();
    let header = *batch.header();
    assert_eq!(header, BatchHeader::parse(&batch.to_vec()).expect("parses"));
    assert!(verify_crc(&batch.to_vec()));
    assert_eq!((header.records_count, header.last_offset_delta), (3, 2));
    assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (7, 2, 40));
    assert_eq!((header.base_timestamp, header.max_timestamp), (1_000, 1_005), "max timestamp of the records");
    assert_eq!((header.partition_leader_epoch, header.attributes), (-1, 0));
    let whole = batch.to_vec();
    let records = uncompressed_records(&header, &whole).expect("records");
    assert_eq!(records.len(), 3);
    assert_eq!((records[0].key, records[0].value, records[0].header_count()), (Some(&b"k0"[..]), Some(&b"v0"[..]), 0));
    assert_eq!((records[1].offset_delta, records[1].timestamp_delta), (1, 5));
    assert_eq!((records[1].key, records[1].value), (None, Some(&b""[..])));
    let headers: Vec<_> = records[1].headers().collect();
    assert_eq!(headers, vec![(&b"trace"[..], Some(&b"abc"[..])), (&b"empty"[..], None)]);
    assert_eq!((records[2].key, records[2].value), (Some(&b""[..]), None));
    let section_len: usize = records.iter().map(|record| record.bytes.len()).sum();
    assert_eq!(BATCH_HEADER_LEN + section_len, batch.len(), "records fill the batch");
}

#[test]
fn a_control_batch_is_a_transaction_marker() {
    for commit in [false, true] {
        let batch = end_txn_marker(77, 3, commit, 9, 1_234);
        let header = batch.header();
        assert!(header.is_control() && header.is_transactional());
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (77, 3, -1));
        assert_eq!((header.records_count, header.last_offset_delta, header.compression()), (1, 0, 0));
        assert_eq!(parse_control_record(&batch.to_vec()), Ok(ControlRecord::EndTxn { commit, coordinator_epoch: 9 }));
        let whole = batch.to_vec();
        let records = uncompressed_records(header, &whole).expect("one record");
        let key = records[0].key.expect("a control key");
        let control_type = if commit { CONTROL_TYPE_COMMIT } else { CONTROL_TYPE_ABORT };
        assert_eq!(control_key(key), Ok((CONTROL_RECORD_VERSION, control_type)));
    }
}

#[test]
fn crc_mismatches_are_detected() {
    let batch = sample_batch().into_bytes();
    for position in [CRC_START, CRC_FIELD, batch.len() - 1, BATCH_HEADER_LEN + 3] {
        let mut damaged = batch.clone();
        damaged[position] ^= 0x40;
        assert!(!verify_crc(&damaged), "a flip at {position} is caught");
        assert!(matches!(ValidBatch::validate(damaged.clone()), Err(LogError::CorruptBatch(_))));
        assert!(matches!(check_framing(&damaged), Err(LogError::CorruptBatch(_))));
    }
    // The fields outside the CRC (base offset, length, leader epoch, magic) are not covered by it.
    let mut restamped = ValidBatch::validate(batch).expect("valid");
    restamped.set_partition_leader_epoch(5);
    restamped.set_base_offset(1 << 40);
    assert_eq!(ValidBatch::validate(restamped.to_vec()).ok(), Some(restamped));
}

#[test]
fn malformed_records_are_errors_not_panics() {
    let batch = sample_batch();
    let section = batch.records_section();
    for cut in 0..section.len() {
        assert!(read_records(&section[..cut], 3).is_err(), "a section cut at {cut} is refused");
    }
    assert!(read_records(section, 2).is_err(), "bytes left after the counted records");
    assert!(read_records(section, 4).is_err(), "fewer records than counted");
    let marker = end_txn_marker(1, 0, true, 0, 0);
    for cut in 0..marker.len() {
        assert!(parse_control_record(&marker.to_vec()[..cut]).is_err(), "a marker cut at {cut} is refused");
    }
}

#[test]
fn a_header_only_batch_is_valid_and_a_batch_without_its_span_is_not() {
    let empty = BatchEncoder::new(5).producer(3, 0, 10).last_offset_delta(4).finish();
    assert_eq!((empty.header().records_count, empty.header().last_offset_delta), (0, 4));
    assert!(uncompressed_records(empty.header(), &empty.to_vec()).expect("no records").is_empty());
    let none = BatchEncoder::new(5).finish_bytes();
    assert!(matches!(ValidBatch::validate(none), Err(LogError::InvalidBatch(_))), "no records, no span");
}

/// A record as `kafka-protocol` encodes it, with the fields the transaction log used.
/// `validate_parsed` takes the caller's header only if it is the bytes' own (checked in release
/// builds too): a header of another batch is refused, not trusted.
#[test]
fn validate_parsed_refuses_a_header_that_is_not_the_bytes_own() {
    let batch = sample_batch();
    let mut other = *batch.header();
    other.producer_id += 1;
    let refused = ValidBatch::validate_parsed(other, batch.to_vec());
    assert!(matches!(refused, Err(LogError::CorruptBatch(_))), "another header: {refused:?}");
    let own = ValidBatch::validate_parsed(*batch.header(), batch.to_vec());
    assert!(own.is_ok(), "its own header: {own:?}");
}

fn kafka_record(offset: i64, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> KafkaRecord {
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Default::default(),
    }
}

fn kafka_encode(records: &[KafkaRecord]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, records, &options).expect("kafka-protocol encodes");
    out.to_vec()
}

/// The transaction log was written by `kafka-protocol`'s encoder: this module writes the same bytes
/// for the same records (one a batch, as the store appends them), so old and new logs are alike.
#[test]
fn the_encoder_writes_what_kafka_protocol_wrote() {
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);
    let cases: [KeyValue; 3] =
        [(Some(b"\x00\x00\x00\x03abc"), Some(b"metadata bytes")), (Some(b"\x00\x00\x00\x01x"), None), (None, None)];
    for (key, value) in cases {
        let old = kafka_encode(&[kafka_record(0, 1_700_000_000_000, key, value)]);
        let mut encoder = BatchEncoder::new(1_700_000_000_000);
        encoder.push_key_value(key, value);
        assert_eq!(encoder.finish().into_bytes(), old, "same bytes for key {key:?} value {value:?}");
    }
}

/// Batches of either encoder decode alike with either decoder (the offsets log was decoded by
/// `kafka-protocol`'s decoder; this module decodes what that decoder read).
#[test]
fn either_decoder_reads_either_encoder() {
    let mut transactional = kafka_record(0, 50, Some(b"key"), Some(b"value"));
    (transactional.transactional, transactional.producer_id, transactional.producer_epoch) = (true, 42, 3);
    let mut old = kafka_encode(&[transactional]);
    let ours = {
        let mut encoder = BatchEncoder::new(50).transactional().producer(42, 3, -1);
        encoder.push_key_value(Some(b"key"), Some(b"value"));
        encoder.finish().into_bytes()
    };
    assert_eq!(ours, old, "a transactional batch is byte for byte the same");
    old.extend_from_slice(&end_txn_marker(42, 3, true, 0, 51).to_vec());
    old.extend_from_slice(&sample_batch().to_vec());
    let mut input = Bytes::from(old.clone());
    let mut decoded_by_kafka = Vec::new();
    while !input.is_empty() {
        let set = RecordBatchDecoder::decode(&mut input).expect("kafka-protocol decodes");
        decoded_by_kafka.extend(set.records);
    }
    let mut decoded_by_us = Vec::new();
    let mut position = 0;
    while position < old.len() {
        let header =
            check_framing(&old[position..position + BatchHeader::parse(&old[position..]).unwrap().total_len()])
                .expect("framing");
        let batch = &old[position..position + header.total_len()];
        for record in uncompressed_records(&header, batch).expect("records") {
            decoded_by_us.push((header, record.offset_delta, record.timestamp_delta, record.key, record.value));
        }
        position += header.total_len();
    }
    assert_eq!(decoded_by_kafka.len(), decoded_by_us.len());
    for (theirs, (header, offset_delta, timestamp_delta, key, value)) in decoded_by_kafka.iter().zip(&decoded_by_us) {
        assert_eq!(theirs.offset, header.base_offset + i64::from(*offset_delta));
        assert_eq!(theirs.timestamp, header.base_timestamp + timestamp_delta);
        assert_eq!(theirs.key.as_deref(), *key);
        assert_eq!(theirs.value.as_deref(), *value);
        assert_eq!((theirs.transactional, theirs.control), (header.is_transactional(), header.is_control()));
        assert_eq!((theirs.producer_id, theirs.producer_epoch), (header.producer_id, header.producer_epoch));
    }
    let headers = &decoded_by_kafka[3].headers;
    assert_eq!(headers.len(), 2, "kafka-protocol reads this module's record headers");
}

type OwnedRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn owned_record() -> impl proptest::strategy::Strategy<Value = OwnedRecord> {
    use proptest::prelude::*;
    let bytes = || prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..40));
    // Header keys are strings to kafka-protocol (and a map, so repeated keys are not compared there).
    let header = ("[a-c]{0,3}".prop_map(String::into_bytes), bytes());
    (0..1_000_000i64, bytes(), bytes(), prop::collection::vec(header, 0..3))
}

proptest::proptest! {
    /// Any records encode to a valid batch that this module and `kafka-protocol` both read back as
    /// they were written.
    #[test]
    fn any_records_round_trip(records in proptest::collection::vec(owned_record(), 1..20), base in 0..i64::MAX / 2) {
        let mut encoder = BatchEncoder::new(base).producer(5, 1, 9);
        for (index, (timestamp_delta, key, value, headers)) in records.iter().enumerate() {
            let headers: Vec<(&[u8], Option<&[u8]>)> =
                headers.iter().map(|(key, value)| (key.as_slice(), value.as_deref())).collect();
            encoder.push(&NewRecord {
                offset_delta: index as i32,
                timestamp_delta: *timestamp_delta,
                key: key.as_deref(),
                value: value.as_deref(),
                headers: &headers,
            });
        }
        let batch = encoder.finish();
        let whole = batch.to_vec();
        let read = uncompressed_records(batch.header(), &whole).expect("reads back");
        proptest::prop_assert_eq!(read.len(), records.len());
        let max_delta = records.iter().map(|record| record.0).max().unwrap_or(0);
        proptest::prop_assert_eq!(batch.header().max_timestamp, base + max_delta);
        let mut input = Bytes::from(batch.to_vec());
        let theirs = RecordBatchDecoder::decode(&mut input).expect("kafka-protocol decodes").records;
        proptest::prop_assert_eq!(theirs.len(), records.len());
        for (index, ((timestamp_delta, key, value, headers), (ours, theirs))) in
            records.iter().zip(read.iter().zip(&theirs)).enumerate()
        {
            proptest::prop_assert_eq!(ours.offset_delta, index as i32);
            proptest::prop_assert_eq!(ours.timestamp_delta, *timestamp_delta);
            proptest::prop_assert_eq!(ours.key, key.as_deref());
            proptest::prop_assert_eq!(ours.value, value.as_deref());
            let read_headers: Vec<(&[u8], Option<&[u8]>)> = ours.headers().collect();
            let written: Vec<(&[u8], Option<&[u8]>)> =
                headers.iter().map(|(key, value)| (key.as_slice(), value.as_deref())).collect();
            proptest::prop_assert_eq!(read_headers, written);
            proptest::prop_assert_eq!(theirs.timestamp, base + timestamp_delta);
            proptest::prop_assert_eq!(theirs.key.as_deref(), key.as_deref());
            proptest::prop_assert_eq!(theirs.value.as_deref(), value.as_deref());
        }
    }
}

/// A validated batch shares the buffer it was given (the produce path's request frame) and rewrites
/// only its own copy of the header: the records section is the caller's bytes, the caller's header
/// bytes stay as sent, and `parts` / `to_vec` give the batch as it is to be written.
#[test]
fn a_validated_batch_shares_its_buffer_and_rewrites_only_its_header() {
    let sent = Bytes::from(sample_batch().to_vec());
    let mut batch = ValidBatch::validate(sent.clone()).expect("valid");
    assert_eq!(batch.records_section().as_ptr(), sent[BATCH_HEADER_LEN..].as_ptr(), "no copy of the records");
    batch.set_base_offset(77);
    batch.set_partition_leader_epoch(3);
    let written = batch.to_vec();
    assert_eq!(batch.clone().into_bytes(), written, "into_bytes is the batch as written");
    assert_eq!(written, batch.parts().concat(), "the parts are the batch in order");
    assert_eq!(written[BATCH_HEADER_LEN..], sent[BATCH_HEADER_LEN..], "records as sent");
    let reread = BatchHeader::parse(&written).expect("parses");
    assert_eq!((reread.base_offset, reread.partition_leader_epoch), (77, 3), "rewritten fields are written");
    assert_eq!(&reread, batch.header(), "the header and the bytes are in step");
    assert!(verify_crc(&written), "the rewritten fields are outside the CRC");
    assert_eq!(batch.crc(), reread.crc, "crc() is the CRC of the batch as written");
    assert_ne!(ValidBatch::validate(sent).expect("valid"), batch, "equality is over the bytes to be written");
}
