//! Batch builders for the integration tests: real client batches through kafka-protocol's
//! encoder (every codec), and a raw builder for what that encoder cannot express (repeated
//! header names).

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// Every codec Kafka defines.
pub const CODECS: [Compression; 5] =
    [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

/// The fields of a record a test cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl TestRecord {
    pub fn new(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> TestRecord {
        TestRecord {
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: headers.iter().map(|(name, value)| (name.to_string(), value.map(<[u8]>::to_vec))).collect(),
        }
    }
}

/// Producer fields of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Producer {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
}

pub const IDEMPOTENT: Producer =
    Producer { producer_id: 9_001, producer_epoch: 3, base_sequence: 40, transactional: false };

/// A v2 batch as a Kafka client would send it: offsets 0.., timestamps 1_000_000 + 7 * i.
pub fn encode(records: &[TestRecord], compression: Compression, producer: Producer) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, record)| Record {
            transactional: producer.transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 5,
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: producer.base_sequence + index as i32,
            timestamp: 1_000_000 + 7 * index as i64,
            key: record.key.clone().map(Bytes::from),
            value: record.value.clone().map(Bytes::from),
            headers: record
                .headers
                .iter()
                .map(|(name, value)| (StrBytes::from_string(name.clone()), value.clone().map(Bytes::from)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(&mut buffer, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode");
    buffer.to_vec()
}

/// An uncompressed batch with the records exactly as given (header names may repeat).
pub fn raw_batch(records: &[TestRecord], attributes: i16) -> Vec<u8> {
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // length, patched
    batch.extend_from_slice(&0i32.to_be_bytes());
    batch.push(2);
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, patched
    batch.extend_from_slice(&attributes.to_be_bytes());
    batch.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    batch.extend_from_slice(&1_000i64.to_be_bytes());
    batch.extend_from_slice(&1_000i64.to_be_bytes());
    batch.extend_from_slice(&(-1i64).to_be_bytes());
    batch.extend_from_slice(&(-1i16).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes());
    batch.extend_from_slice(&(records.len() as i32).to_be_bytes());
    for (delta, record) in records.iter().enumerate() {
        let mut body = vec![0u8];
        put_varint(&mut body, 0);
        put_varint(&mut body, delta as i64);
        put_bytes(&mut body, record.key.as_deref());
        put_bytes(&mut body, record.value.as_deref());
        put_varint(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_bytes(&mut body, Some(name.as_bytes()));
            put_bytes(&mut body, value.as_deref());
        }
        put_varint(&mut batch, body.len() as i64);
        batch.extend_from_slice(&body);
    }
    fix_length_and_crc(&mut batch);
    batch
}

/// Sets the length field and recomputes the CRC32C of a hand-made batch.
pub fn fix_length_and_crc(batch: &mut [u8]) {
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}
