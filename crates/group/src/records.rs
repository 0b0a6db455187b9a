//! The records of the internal offsets log, in the layout of Kafka's `__consumer_offsets`.
//!
//! Key (version 1): `i16 version, string group, string topic, i32 partition`.
//! Value (version 3): `i16 version, i64 offset, i32 leader epoch, nullable string metadata,
//! i64 commit timestamp ms`. A null value is a tombstone: the offset was deleted or expired.
//!
//! Group metadata, key (version 2): `i16 version, string group`; value (version 3, Kafka's
//! `GroupMetadataValue` v3 without members): `i16 version, string protocol type, i32 generation,
//! nullable string protocol, nullable string leader, i64 current state timestamp ms, i32 member
//! count = 0`. Written when a group's protocol type changes, so that an emptied group keeps it
//! across a restart as Kafka's does; only the protocol type is read back. A null value (tombstone)
//! is written when a group that has such a record is dropped (emptied without offsets) or deleted.
//! Logs written before these records existed simply have none (the groups load without a protocol
//! type).
//! Strings are an `i16` length (-1 for null) and UTF-8 bytes. Records travel in uncompressed v2
//! record batches, so the log's CRC32C covers them.
//!
//! TxnOffsetCommit writes the same records in a transactional batch (attribute bit 4, the producer's
//! id and epoch, base sequence -1); the partition writes the transaction marker that ends it, a
//! control batch (attribute bit 5) of one record whose key is `i16 version = 0, i16 type` (0 abort,
//! 1 commit) and whose value is `i16 version, i32 coordinator epoch`. Replay reads all three kinds as
//! [`LogEntry`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use once_log::batch::{self, BatchEncoder, BatchHeader, CONTROL_TYPE_ABORT, CONTROL_TYPE_COMMIT};

use crate::error::GroupError;

const KEY_VERSION_OFFSET: i16 = 1;
const KEY_VERSION_GROUP: i16 = 2;
const VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// Which committed offset a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OffsetKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// One record of the offsets log: a commit, or a tombstone (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRecord {
    pub key: OffsetKey,
    pub value: Option<CommittedOffset>,
}

/// A group's metadata as stored: what a restart needs of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub group: String,
    /// `None`: a tombstone (null value), the group was dropped or deleted.
    pub protocol_type: Option<String>,
    pub generation_id: i32,
}

impl GroupRecord {
    /// The tombstone of a group being dropped or deleted.
    pub fn tombstone(group: &crate::group::Group) -> GroupRecord {
        GroupRecord { group: group.id.clone(), protocol_type: None, generation_id: group.generation_id }
    }
}

/// The producer a transactional batch is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionalProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// One entry of the offsets log as replay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A record of a non-transactional batch: applies at once.
    Offset(OffsetRecord),
    /// A record of a transactional batch: pending until its producer's next marker.
    Transactional { producer: TransactionalProducer, record: OffsetRecord },
    /// A transaction marker: commits (applies) or aborts (discards) the producer's pending records.
    Marker { producer: TransactionalProducer, commit: bool },
    /// A group's metadata (its protocol type).
    Group(GroupRecord),
}

fn put_string(out: &mut BytesMut, value: Option<&str>) {
    match value {
        Some(text) => {
            // Lengths are bounded by the request decoder (i16 strings) and by offset_metadata_bytes_max.
            out.put_i16(i16::try_from(text.len()).unwrap_or(i16::MAX));
            out.put_slice(&text.as_bytes()[..text.len().min(i16::MAX as usize)]);
        }
        None => out.put_i16(-1),
    }
}

fn get_string(input: &mut Bytes) -> Result<Option<String>, GroupError> {
    let corrupt = || GroupError::Storage("truncated string in the offsets log".into());
    if input.remaining() < 2 {
        return Err(corrupt());
    }
    let length = input.get_i16();
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if input.remaining() < length {
        return Err(corrupt());
    }
    let bytes = input.split_to(length);
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| GroupError::Storage("non-UTF-8 string in the offsets log".into()))
}

fn encode_key(key: &OffsetKey) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + key.group.len() + key.topic.len());
    out.put_i16(KEY_VERSION_OFFSET);
    put_string(&mut out, Some(&key.group));
    put_string(&mut out, Some(&key.topic));
    out.put_i32(key.partition);
    out.freeze()
}

fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut out = BytesMut::with_capacity(32);
    out.put_i16(VALUE_VERSION);
    out.put_i64(value.offset);
    out.put_i32(value.leader_epoch);
    put_string(&mut out, value.metadata.as_deref());
    out.put_i64(value.commit_timestamp_ms);
    out.freeze()
}

fn encode_group_key(group: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + group.len());
    out.put_i16(KEY_VERSION_GROUP);
    put_string(&mut out, Some(group));
    out.freeze()
}

fn encode_group_value(protocol_type: &str, record: &GroupRecord) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + protocol_type.len());
    out.put_i16(GROUP_VALUE_VERSION);
    put_string(&mut out, Some(protocol_type));
    out.put_i32(record.generation_id);
    put_string(&mut out, None); // protocol
    put_string(&mut out, None); // leader
    out.put_i64(-1); // current state timestamp
    out.put_i32(0); // members
    out.freeze()
}

/// What a key says a record is about.
enum Key {
    Offset(OffsetKey),
    Group(String),
    /// Another key version: not written by Once; skipped, as Once before group metadata records skips
    /// those (so an older Once still opens a log written by this one).
    Other,
}

fn decode_key(mut input: Bytes) -> Result<Key, GroupError> {
    if input.remaining() < 2 {
        return Err(GroupError::Storage("truncated key in the offsets log".into()));
    }
    match input.get_i16() {
        KEY_VERSION_OFFSET => {}
        KEY_VERSION_GROUP => return Ok(Key::Group(get_string(&mut input)?.unwrap_or_default())),
        _ => return Ok(Key::Other),
    }
    let group = get_string(&mut input)?.unwrap_or_default();
    let topic = get_string(&mut input)?.unwrap_or_default();
    if input.remaining() < 4 {
        return Err(GroupError::Storage("truncated key in the offsets log".into()));
    }
    Ok(Key::Offset(OffsetKey { group, topic, partition: input.get_i32() }))
}

/// A group metadata value: its protocol type and generation (the rest is not needed after a restart).
fn decode_group_value(group: String, mut input: Bytes) -> Result<GroupRecord, GroupError> {
    let corrupt = || GroupError::Storage("truncated group metadata in the offsets log".into());
    if input.remaining() < 2 || input.get_i16() != GROUP_VALUE_VERSION {
        return Err(corrupt());
    }
    let protocol_type = get_string(&mut input)?.unwrap_or_default();
    if input.remaining() < 4 {
        return Err(corrupt());
    }
    Ok(GroupRecord { group, protocol_type: Some(protocol_type), generation_id: input.get_i32() })
}

fn decode_value(mut input: Bytes) -> Result<CommittedOffset, GroupError> {
    let corrupt = || GroupError::Storage("truncated value in the offsets log".into());
    if input.remaining() < 14 || input.get_i16() != VALUE_VERSION {
        return Err(corrupt());
    }
    let offset = input.get_i64();
    let leader_epoch = input.get_i32();
    let metadata = get_string(&mut input)?;
    if input.remaining() < 8 {
        return Err(corrupt());
    }
    Ok(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms: input.get_i64() })
}

/// One uncompressed, non-transactional v2 batch holding `records` (base offset 0: the log assigns it),
/// ready for `Partition::append`.
pub fn encode_batch(records: &[OffsetRecord], timestamp_ms: i64) -> Result<Vec<u8>, GroupError> {
    encode(&offset_pairs(records), timestamp_ms, None)
}

/// One uncompressed, non-transactional v2 batch holding group metadata `records`.
pub fn encode_group_batch(records: &[GroupRecord], timestamp_ms: i64) -> Result<Vec<u8>, GroupError> {
    let pairs: Vec<(Bytes, Option<Bytes>)> = records
        .iter()
        .map(|record| {
            let value = record.protocol_type.as_deref().map(|protocol_type| encode_group_value(protocol_type, record));
            (encode_group_key(&record.group), value)
        })
        .collect();
    encode(&pairs, timestamp_ms, None)
}

fn offset_pairs(records: &[OffsetRecord]) -> Vec<(Bytes, Option<Bytes>)> {
    records.iter().map(|record| (encode_key(&record.key), record.value.as_ref().map(encode_value))).collect()
}

/// One uncompressed transactional v2 batch holding `records` for `producer`. Its base sequence is -1:
/// the partition checks no sequence for it (a TxnOffsetCommit carries none) but opens a transaction
/// for the producer, which its marker closes.
pub fn encode_transactional_batch(
    records: &[OffsetRecord],
    timestamp_ms: i64,
    producer: TransactionalProducer,
) -> Result<Vec<u8>, GroupError> {
    assert!(producer.producer_id >= 0, "a transactional batch has a producer id");
    encode(&offset_pairs(records), timestamp_ms, Some(producer))
}

/// A v2 batch of (key, value) records, through the one batch encoder.
fn encode(
    records: &[(Bytes, Option<Bytes>)],
    timestamp_ms: i64,
    producer: Option<TransactionalProducer>,
) -> Result<Vec<u8>, GroupError> {
    assert!(!records.is_empty(), "an offsets batch holds at least one record");
    i32::try_from(records.len()).map_err(|_| GroupError::Storage("too many records for one batch".into()))?;
    // No compression, create time, not control; transactional for a producer, base sequence -1 even
    // then (a TxnOffsetCommit carries none).
    let mut encoder = BatchEncoder::new(timestamp_ms);
    if let Some(producer) = producer {
        encoder = encoder.transactional().producer(producer.producer_id, producer.producer_epoch, -1);
    }
    for (key, value) in records {
        encoder.push_key_value(Some(key), value.as_deref());
    }
    Ok(encoder.finish().into_bytes())
}

/// Whether a marker's key says commit (`true`) or abort (`false`). Any other type fails the open: this
/// log holds no other control records, and a marker misread would commit or lose offsets.
fn decode_marker_key(key: &[u8]) -> Result<bool, GroupError> {
    let (version, control_type) = batch::control_key(key)
        .map_err(|_| GroupError::Storage("truncated transaction marker key in the offsets log".into()))?;
    if version < 0 {
        return Err(GroupError::Storage(format!("transaction marker key version {version} in the offsets log")));
    }
    match control_type {
        CONTROL_TYPE_ABORT => Ok(false),
        CONTROL_TYPE_COMMIT => Ok(true),
        other => Err(GroupError::Storage(format!("control record type {other} in the offsets log"))),
    }
}

/// Decodes whole batches read from the offsets log, handing each entry to `apply` as it is decoded
/// (replay holds one read's batches, never the whole log). Returns the offset after the last record.
pub fn decode_batches(bytes: Vec<u8>, apply: &mut dyn FnMut(LogEntry)) -> Result<Option<i64>, GroupError> {
    let storage = |error: &dyn std::fmt::Display| GroupError::Storage(format!("decoding the offsets log: {error}"));
    let mut next_offset = None;
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).map_err(|error| storage(&error))?;
        let end = position.checked_add(header.total_len()).filter(|end| *end <= bytes.len() && *end > position);
        let end = end.ok_or_else(|| storage(&format!("batch length {} runs past the read", header.batch_length)))?;
        let whole = &bytes[position..end];
        let header = batch::check_framing(whole).map_err(|error| storage(&error))?;
        let producer = TransactionalProducer { producer_id: header.producer_id, producer_epoch: header.producer_epoch };
        for record in batch::uncompressed_records(&header, whole).map_err(|error| storage(&error))? {
            next_offset = Some(header.base_offset + i64::from(record.offset_delta) + 1);
            let Some(key) = record.key else { continue };
            let value = record.value.map(Bytes::copy_from_slice);
            if header.is_control() {
                apply(LogEntry::Marker { producer, commit: decode_marker_key(key)? });
                continue;
            }
            apply_record(&header, producer, Bytes::copy_from_slice(key), value, apply)?;
        }
        position = end;
    }
    Ok(next_offset)
}

/// Decodes one data record of the offsets log and hands it to `apply`.
fn apply_record(
    header: &BatchHeader,
    producer: TransactionalProducer,
    key: Bytes,
    value: Option<Bytes>,
    apply: &mut dyn FnMut(LogEntry),
) -> Result<(), GroupError> {
    let key = match decode_key(key)? {
        Key::Offset(key) => key,
        Key::Other => return Ok(()),
        Key::Group(group) => {
            if header.is_transactional() {
                return Err(GroupError::Storage("group metadata in a transactional batch".into()));
            }
            let entry = match value {
                Some(value) => decode_group_value(group, value)?,
                None => GroupRecord { group, protocol_type: None, generation_id: -1 },
            };
            apply(LogEntry::Group(entry));
            return Ok(());
        }
    };
    let value = value.map(decode_value).transpose()?;
    let record_read = OffsetRecord { key, value };
    if header.is_transactional() {
        if producer.producer_id < 0 {
            return Err(GroupError::Storage("a transactional batch without a producer id".into()));
        }
        apply(LogEntry::Transactional { producer, record: record_read });
    } else {
        apply(LogEntry::Offset(record_read));
    }
    Ok(())
}

/// A marker control batch as the partition writes it (for tests that build a log without the
/// partition's writer): one record, key `version 0, type`, value `version 0, coordinator epoch`.
#[cfg(test)]
pub(crate) fn encode_marker_batch(producer: TransactionalProducer, commit: bool, timestamp_ms: i64) -> Vec<u8> {
    batch::end_txn_marker(producer.producer_id, producer.producer_epoch, commit, 0, timestamp_ms).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_through_a_batch() {
        let key = OffsetKey { group: "g".into(), topic: "t".into(), partition: 3 };
        let commit = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: Some("meta".into()),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let records = vec![
            OffsetRecord { key: key.clone(), value: Some(commit.clone()) },
            OffsetRecord { key: key.clone(), value: None },
            OffsetRecord {
                key: OffsetKey { partition: 4, ..key },
                value: Some(CommittedOffset { metadata: None, ..commit }),
            },
        ];
        let batch = encode_batch(&records, 5).expect("encodes");
        let mut decoded = Vec::new();
        let next_offset = decode_batches(batch, &mut |entry| decoded.push(entry)).expect("decodes");
        assert_eq!(decoded, records.into_iter().map(LogEntry::Offset).collect::<Vec<_>>());
        assert_eq!(next_offset, Some(3));
    }

    #[test]
    fn group_records_roundtrip_beside_offsets() {
        let group = GroupRecord { group: "g".into(), protocol_type: Some("consumer".into()), generation_id: 4 };
        let dropped = GroupRecord { group: "h".into(), protocol_type: None, generation_id: -1 };
        let mut bytes = encode_group_batch(&[group.clone(), dropped.clone()], 5).expect("encodes");
        let offset =
            OffsetRecord { key: OffsetKey { group: "g".into(), topic: "t".into(), partition: 0 }, value: None };
        bytes.extend(encode_batch(std::slice::from_ref(&offset), 6).expect("encodes"));
        let mut decoded = Vec::new();
        decode_batches(bytes, &mut |entry| decoded.push(entry)).expect("decodes");
        assert_eq!(decoded, vec![LogEntry::Group(group), LogEntry::Group(dropped), LogEntry::Offset(offset)]);
    }

    #[test]
    fn transactional_records_and_markers_are_told_apart() {
        let key = OffsetKey { group: "g".into(), topic: "t".into(), partition: 0 };
        let commit = CommittedOffset { offset: 7, leader_epoch: 2, metadata: None, commit_timestamp_ms: 9 };
        let record = OffsetRecord { key, value: Some(commit) };
        let producer = TransactionalProducer { producer_id: 42, producer_epoch: 3 };
        let batch = encode_transactional_batch(std::slice::from_ref(&record), 5, producer).expect("encodes");
        let header = once_log::BatchHeader::parse(&batch).expect("a valid header");
        assert!(header.is_transactional(), "the transactional attribute is set");
        assert!(!header.is_control(), "a data batch is not a control batch");
        assert_eq!(header.producer_id, 42);
        assert_eq!(header.producer_epoch, 3);
        assert_eq!(header.base_sequence, -1, "no sequence: the partition checks none");
        let mut bytes = batch;
        bytes.extend(encode_marker_batch(producer, true, 6));
        bytes.extend(encode_marker_batch(producer, false, 7));
        let mut decoded = Vec::new();
        decode_batches(bytes, &mut |entry| decoded.push(entry)).expect("decodes");
        assert_eq!(
            decoded,
            vec![
                LogEntry::Transactional { producer, record },
                LogEntry::Marker { producer, commit: true },
                LogEntry::Marker { producer, commit: false },
            ]
        );
    }

    #[test]
    fn unknown_control_records_are_refused() {
        let producer = TransactionalProducer { producer_id: 1, producer_epoch: 0 };
        let mut batch = encode_marker_batch(producer, true, 6);
        // The key's type is the last two bytes before the value's length varint; rewrite it and re-CRC.
        let position = batch.len() - 1 - 6 - 1 - 2;
        assert_eq!(&batch[position..position + 2], &CONTROL_TYPE_COMMIT.to_be_bytes(), "found the type");
        batch[position..position + 2].copy_from_slice(&5i16.to_be_bytes());
        let crc = batch::crc_of(&batch);
        batch[batch::CRC_FIELD..batch::CRC_FIELD + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(decode_batches(batch, &mut |_| ()).is_err(), "an unknown marker type fails the open");
    }

    #[test]
    fn corrupt_batches_are_refused() {
        let key = OffsetKey { group: "g".into(), topic: "t".into(), partition: 0 };
        let mut batch = encode_batch(&[OffsetRecord { key, value: None }], 5).expect("encodes");
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(decode_batches(batch, &mut |_| ()).is_err(), "the CRC catches a flipped byte");
    }

    /// Bytes the offsets log was written with before the batch format moved to `once_log::batch`
    /// (recorded from the previous encoder, which wrote every field by hand).
    const OLD_OFFSETS_BATCH: &str = "000000000000000000000073ffffffff02bf501d3200000000000100000000000000050000000000000005ffffffffffffffffffffffffffff000000025c00000018000100016700017400000003380003000000000000002affffffff00046d6574610000018bcfe568000024000002180001000167000174000000030100";
    const OLD_TRANSACTIONAL_BATCH: &str = "000000000000000000000060ffffffff02ffcdc67200100000000000000000000000060000000000000006000000000000002a0003ffffffff000000015c00000018000100016700017400000003380003000000000000002affffffff00046d6574610000018bcfe5680000";
    const OLD_GROUP_BATCH: &str = "000000000000000000000069ffffffff02d22f8ceb00000000000100000000000000070000000000000007ffffffffffffffffffffffffffff00000002560000000a00020001674000030008636f6e73756d657200000004ffffffffffffffffffffffff0000000000160000020a00020001680100";
    const OLD_MARKER_BATCH: &str = "000000000000000000000042ffffffff02b68ad9eb00300000000000000000000000080000000000000008000000000000002a0003ffffffff000000012000000008000000010c00000000000000";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex")).collect()
    }

    /// On-disk compatibility: the encoder writes the bytes the previous one wrote, and logs written by
    /// it decode to the same entries.
    #[test]
    fn offsets_logs_written_before_the_batch_module_load_unchanged() {
        let key = OffsetKey { group: "g".into(), topic: "t".into(), partition: 3 };
        let commit = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: Some("meta".into()),
            commit_timestamp_ms: 1_700_000_000_000,
        };
        let records = vec![OffsetRecord { key: key.clone(), value: Some(commit) }, OffsetRecord { key, value: None }];
        let producer = TransactionalProducer { producer_id: 42, producer_epoch: 3 };
        let group = GroupRecord { group: "g".into(), protocol_type: Some("consumer".into()), generation_id: 4 };
        let dropped = GroupRecord { group: "h".into(), protocol_type: None, generation_id: -1 };
        assert_eq!(encode_batch(&records, 5).expect("encodes"), unhex(OLD_OFFSETS_BATCH));
        let transactional = encode_transactional_batch(&records[..1], 6, producer).expect("encodes");
        assert_eq!(transactional, unhex(OLD_TRANSACTIONAL_BATCH));
        let groups = encode_group_batch(&[group.clone(), dropped], 7).expect("encodes");
        assert_eq!(groups, unhex(OLD_GROUP_BATCH));
        assert_eq!(encode_marker_batch(producer, true, 8), unhex(OLD_MARKER_BATCH));

        let old_log: Vec<u8> = [OLD_OFFSETS_BATCH, OLD_TRANSACTIONAL_BATCH, OLD_GROUP_BATCH, OLD_MARKER_BATCH]
            .iter()
            .flat_map(|text| unhex(text))
            .collect();
        let mut decoded = Vec::new();
        let next_offset = decode_batches(old_log, &mut |entry| decoded.push(entry)).expect("decodes");
        assert_eq!(next_offset, Some(1), "every batch of the fixture sits at base offset 0");
        let dropped = GroupRecord { group: "h".into(), protocol_type: None, generation_id: -1 };
        let expected = vec![
            LogEntry::Offset(records[0].clone()),
            LogEntry::Offset(records[1].clone()),
            LogEntry::Transactional { producer, record: records[0].clone() },
            LogEntry::Group(group),
            LogEntry::Group(dropped),
            LogEntry::Marker { producer, commit: true },
        ];
        assert_eq!(decoded, expected);
    }
}
