//! The transaction log: an internal partition under the data directory holding, per transactional
//! id, the latest [`TxnMetadata`] (later records win; a null value forgets the id). Written through the
//! partition writer, so a record is acknowledged only after the fdatasync that covers it, and replayed
//! at open.
//!
//! Key: `i16 version (0), string transactional id`. Value (version 0): `i64 producer id, i16 epoch,
//! i64 last producer id, i16 last epoch, i32 timeout ms, i8 state, i64 start ms, i64 last update ms,
//! i32 count + (string topic, i32 partition)…, i32 count + string group…`. Strings are an `i16`
//! length and UTF-8 bytes. Each append is one uncompressed v2 batch, so the log's CRC32C covers it.

use std::collections::HashMap;
use std::path::Path;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use once_log::batch::{self, BatchEncoder, BatchHeader};
use once_partition::{LogConfig, Partition, PartitionId};

use crate::error::TxnError;
use crate::state::{TxnMetadata, TxnState};

/// The internal topic's name, as Kafka calls it. Not in the topic registry.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
const REPLAY_READ_BYTES: usize = 1 << 20;

pub struct TxnStore {
    partition: std::sync::Arc<Partition>,
}

fn corrupt(what: &str) -> TxnError {
    TxnError::Storage(format!("corrupt transaction log record: {what}"))
}

fn put_string(out: &mut BytesMut, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(i16::MAX as usize)];
    out.put_i16(bytes.len() as i16);
    out.put_slice(bytes);
}

fn get_string(input: &mut Bytes) -> Result<String, TxnError> {
    if input.remaining() < 2 {
        return Err(corrupt("string length"));
    }
    let length = usize::try_from(input.get_i16()).map_err(|_| corrupt("negative string length"))?;
    if input.remaining() < length {
        return Err(corrupt("string"));
    }
    String::from_utf8(input.split_to(length).to_vec()).map_err(|_| corrupt("non-UTF-8 string"))
}

fn need(input: &Bytes, bytes: usize, what: &str) -> Result<(), TxnError> {
    if input.remaining() < bytes {
        return Err(corrupt(what));
    }
    Ok(())
}

pub(crate) fn encode_key(transactional_id: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + transactional_id.len());
    out.put_i16(KEY_VERSION);
    put_string(&mut out, transactional_id);
    out.freeze()
}

pub(crate) fn decode_key(mut key: Bytes) -> Result<String, TxnError> {
    need(&key, 2, "key version")?;
    let version = key.get_i16();
    if version != KEY_VERSION {
        return Err(corrupt(&format!("unknown key version {version}")));
    }
    get_string(&mut key)
}

pub(crate) fn encode_value(metadata: &TxnMetadata) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + metadata.partitions.len() * 24);
    out.put_i16(VALUE_VERSION);
    out.put_i64(metadata.producer_id);
    out.put_i16(metadata.producer_epoch);
    out.put_i64(metadata.last_producer_id);
    out.put_i16(metadata.last_producer_epoch);
    out.put_i32(metadata.timeout_ms);
    out.put_i8(metadata.state.code());
    out.put_i64(metadata.start_ms);
    out.put_i64(metadata.last_update_ms);
    out.put_i32(metadata.partitions.len() as i32);
    for (topic, partition) in &metadata.partitions {
        put_string(&mut out, topic);
        out.put_i32(*partition);
    }
    out.put_i32(metadata.groups.len() as i32);
    for group in &metadata.groups {
        put_string(&mut out, group);
    }
    out.freeze()
}

pub(crate) fn decode_value(mut value: Bytes) -> Result<TxnMetadata, TxnError> {
    need(&value, 2 + 8 + 2 + 8 + 2 + 4 + 1 + 8 + 8 + 4, "value header")?;
    let version = value.get_i16();
    if version != VALUE_VERSION {
        return Err(corrupt(&format!("unknown value version {version}")));
    }
    let producer_id = value.get_i64();
    let producer_epoch = value.get_i16();
    let last_producer_id = value.get_i64();
    let last_producer_epoch = value.get_i16();
    let timeout_ms = value.get_i32();
    let state = TxnState::from_code(value.get_i8()).ok_or_else(|| corrupt("unknown state"))?;
    let start_ms = value.get_i64();
    let last_update_ms = value.get_i64();
    let mut metadata = TxnMetadata {
        producer_id,
        producer_epoch,
        last_producer_id,
        last_producer_epoch,
        timeout_ms,
        state,
        partitions: Default::default(),
        groups: Default::default(),
        start_ms,
        last_update_ms,
    };
    let count = value.get_i32();
    for _ in 0..count.max(0) {
        let topic = get_string(&mut value)?;
        need(&value, 4, "partition")?;
        metadata.partitions.insert((topic, value.get_i32()));
    }
    need(&value, 4, "group count")?;
    let count = value.get_i32();
    for _ in 0..count.max(0) {
        metadata.groups.insert(get_string(&mut value)?);
    }
    Ok(metadata)
}

/// One v2 batch holding `transactional_id → metadata` (`None`: forget the id): one record, no
/// producer, partition leader epoch -1, as `kafka-protocol`'s encoder wrote it before `once_log::batch`
/// (the bytes are the same; see the test `transaction_logs_written_before_the_batch_module_load_unchanged`).
pub(crate) fn encode_batch(
    transactional_id: &str,
    metadata: Option<&TxnMetadata>,
    timestamp_ms: i64,
) -> Result<Vec<u8>, TxnError> {
    let mut encoder = BatchEncoder::new(timestamp_ms);
    let value = metadata.map(encode_value);
    encoder.push_key_value(Some(&encode_key(transactional_id)), value.as_deref());
    Ok(encoder.finish().into_bytes())
}

/// Replays whole batches read from the log into `entries`, moving `offset` past each record.
fn replay_batches(bytes: &[u8], offset: &mut u64, entries: &mut HashMap<String, TxnMetadata>) -> Result<(), TxnError> {
    let storage = |error: &dyn std::fmt::Display| TxnError::Storage(format!("decoding the transaction log: {error}"));
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..]).map_err(|error| storage(&error))?;
        let end = position.checked_add(header.total_len()).filter(|end| *end <= bytes.len() && *end > position);
        let end = end.ok_or_else(|| storage(&format!("batch length {} runs past the read", header.batch_length)))?;
        let whole = &bytes[position..end];
        let header = batch::check_framing(whole).map_err(|error| storage(&error))?;
        for record in batch::uncompressed_records(&header, whole).map_err(|error| storage(&error))? {
            let record_offset = header.base_offset + i64::from(record.offset_delta);
            assert!(record_offset as u64 >= *offset, "replay moves forward");
            *offset = record_offset as u64 + 1;
            let Some(key) = record.key else { continue };
            let transactional_id = decode_key(Bytes::copy_from_slice(key))?;
            match record.value {
                Some(value) => entries.insert(transactional_id, decode_value(Bytes::copy_from_slice(value))?),
                None => entries.remove(&transactional_id),
            };
        }
        position = end;
    }
    Ok(())
}

impl TxnStore {
    /// Opens (recovering) the log in `dir`, replays it and starts its writer. Returns the latest
    /// metadata of every transactional id. Needs a tokio runtime; blocking file reads.
    pub fn open(
        dir: &Path,
        unsafe_skip_fsync: bool,
        segment_bytes: u64,
    ) -> Result<(TxnStore, HashMap<String, TxnMetadata>), TxnError> {
        // Retention would delete live records; the log is bounded by checkpoints instead (every live
        // record appended again, then the segments below the first one deleted), so segments are small.
        let config = LogConfig {
            retention_ms: None,
            retention_bytes: None,
            segment_ms_max: None,
            segment_bytes_max: segment_bytes,
            unsafe_skip_fsync,
            ..LogConfig::default()
        };
        std::fs::create_dir_all(dir).map_err(|error| TxnError::Storage(format!("{}: {error}", dir.display())))?;
        let id = PartitionId { topic: TRANSACTION_TOPIC.to_string(), partition: 0 };
        let partition = Partition::open(id, dir, config)?;
        let mut entries = HashMap::new();
        let end = partition.high_watermark();
        let mut offset = partition.log_start_offset();
        while offset < end {
            let bytes = partition.read_below(offset, REPLAY_READ_BYTES, end)?;
            if bytes.is_empty() {
                break;
            }
            replay_batches(&bytes, &mut offset, &mut entries)?;
        }
        tracing::info!(transactional_ids = entries.len(), end_offset = end, "transaction log replayed");
        Ok((TxnStore { partition: std::sync::Arc::new(partition) }, entries))
    }

    /// Appends one record; resolves once it is durable.
    pub async fn write(
        &self,
        transactional_id: &str,
        metadata: Option<&TxnMetadata>,
        timestamp_ms: i64,
    ) -> Result<(), TxnError> {
        self.queue(transactional_id, metadata, timestamp_ms)?.await?;
        Ok(())
    }

    /// Queues one record now (records reach the log in call order) and returns the future of its
    /// offset once durable.
    pub fn queue(
        &self,
        transactional_id: &str,
        metadata: Option<&TxnMetadata>,
        timestamp_ms: i64,
    ) -> Result<impl std::future::Future<Output = Result<u64, TxnError>> + Send + 'static, TxnError> {
        let batch = encode_batch(transactional_id, metadata, timestamp_ms)?;
        let appended = self.partition.append(batch);
        Ok(async move { Ok(appended.await?.base_offset) })
    }

    /// Drops every segment wholly below `offset` (what a checkpoint starting there superseded).
    pub async fn drop_below(&self, offset: u64) -> Result<(), TxnError> {
        let partition = self.partition.clone();
        tokio::task::spawn_blocking(move || partition.advance_log_start_offset(offset))
            .await
            .map_err(|error| TxnError::Storage(error.to_string()))??;
        Ok(())
    }

    pub fn log_start_offset(&self) -> u64 {
        self.partition.log_start_offset()
    }

    pub fn log_end_offset(&self) -> u64 {
        self.partition.log_end_offset()
    }

    pub async fn close(&self) -> Result<(), TxnError> {
        Ok(self.partition.close().await?)
    }

    pub fn size_bytes(&self) -> u64 {
        self.partition.size_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TxnMetadata {
        let mut metadata = TxnMetadata::new(42, 60_000, 1_700_000_000_000);
        metadata.state = TxnState::PrepareCommit;
        metadata.producer_epoch = 3;
        metadata.partitions.insert(("payments".into(), 2));
        metadata.partitions.insert(("audit".into(), 0));
        metadata.groups.insert("billing".into());
        metadata.start_ms = 1_700_000_000_100;
        metadata
    }

    #[test]
    fn metadata_roundtrips() {
        let metadata = sample();
        assert_eq!(decode_value(encode_value(&metadata)).expect("decodes"), metadata);
        assert_eq!(decode_key(encode_key("copier-1")).expect("decodes"), "copier-1");
    }

    #[test]
    fn truncated_values_are_refused() {
        let bytes = encode_value(&sample());
        for cut in 0..bytes.len() {
            assert!(decode_value(bytes.slice(..cut)).is_err(), "a value cut at {cut} bytes is refused");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_latest_record_wins_across_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, entries) = TxnStore::open(dir.path(), false, 1 << 20).expect("opens");
        assert!(entries.is_empty());
        let mut metadata = sample();
        store.write("a", Some(&metadata), 1).await.expect("writes");
        store.write("b", Some(&metadata), 1).await.expect("writes");
        metadata.state = TxnState::CompleteCommit;
        store.write("a", Some(&metadata), 2).await.expect("writes");
        store.write("b", None, 3).await.expect("writes");
        store.close().await.expect("closes");
        let (_store, entries) = TxnStore::open(dir.path(), false, 1 << 20).expect("reopens");
        assert_eq!(entries.len(), 1, "b was forgotten");
        assert_eq!(entries["a"].state, TxnState::CompleteCommit);
    }

    /// Bytes the transaction log was written with before `once_log::batch` (recorded from the
    /// previous encoder, `kafka-protocol`'s `RecordBatchEncoder`).
    const OLD_RECORD_BATCH: &str = "000000000000000000000090ffffffff0244036abb0000000000000000018bcfe5687b0000018bcfe5687bffffffffffffffffffffffffffff00000001ba010000001800000008636f706965722d3194010000000000000000002a0000ffffffffffffffffffff0000ea6002ffffffffffffffff0000018bcfe568000000000100087061796d656e74730000000200000001000762696c6c696e6700";
    const OLD_FORGET_BATCH: &str = "000000000000000000000044ffffffff020e0961cd0000000000000000018bcfe5687c0000018bcfe5687cffffffffffffffffffffffffffff00000001240000001800000008636f706965722d310100";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex")).collect()
    }

    /// On-disk compatibility: the encoder writes the bytes the previous one wrote, and a log written
    /// by it replays to the same state.
    #[test]
    fn transaction_logs_written_before_the_batch_module_load_unchanged() {
        let mut metadata = TxnMetadata::new(42, 60_000, 1_700_000_000_000);
        metadata.state = TxnState::PrepareCommit;
        metadata.partitions.insert(("payments".into(), 2));
        metadata.groups.insert("billing".into());
        let written = encode_batch("copier-1", Some(&metadata), 1_700_000_000_123).expect("encodes");
        assert_eq!(written, unhex(OLD_RECORD_BATCH));
        assert_eq!(encode_batch("copier-1", None, 1_700_000_000_124).expect("encodes"), unhex(OLD_FORGET_BATCH));
        let (mut offset, mut entries) = (0, HashMap::new());
        replay_batches(&unhex(OLD_RECORD_BATCH), &mut offset, &mut entries).expect("replays");
        assert_eq!((offset, entries.get("copier-1")), (1, Some(&metadata)));
        let mut forget = unhex(OLD_FORGET_BATCH);
        forget[7] = 1; // the log stored it at offset 1
        replay_batches(&forget, &mut offset, &mut entries).expect("replays");
        assert_eq!((offset, entries.len()), (2, 0), "the null value forgot the id");
    }
}
