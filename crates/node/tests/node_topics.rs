//! Topics driven through the node without sockets: idempotent appends, topic configs, retention by
//! the node's upkeep and deduplicating topics, each across a reopen of the data directory — what
//! `crates/cli/tests/idempotence.rs`, `admin_and_retention.rs`, `alter_configs.rs` and `dedup.rs`
//! show through the binary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use once_log::testing::{make_batch_with, make_keyed_batch};
use once_log::{BatchHeader, LogError};
use once_node::topic_config::TopicConfig;
use once_node::{Node, NodeConfig, TopicError};
use once_partition::{OffsetAnswer, Partition, PartitionError};

fn config(dir: &Path) -> NodeConfig {
    NodeConfig { data_dir: dir.to_path_buf(), ..NodeConfig::default() }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

async fn reopen(node: Arc<Node>, dir: &Path) -> Arc<Node> {
    node.close().await;
    drop(node);
    Node::open(config(dir)).expect("reopen")
}

fn partition(node: &Node, topic: &str, index: i32) -> Arc<Partition> {
    node.topics.get(topic).and_then(|topic| topic.partition(index)).expect("the partition exists")
}

/// The batch headers of everything readable from `offset`.
fn headers(partition: &Partition, offset: u64) -> Vec<BatchHeader> {
    let records = partition.read(offset, 1 << 20).expect("read");
    let mut headers = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = BatchHeader::parse(&records[position..]).expect("whole batches");
        position += header.total_len();
        headers.push(header);
    }
    headers
}

/// The idempotent producer of `crates/cli/tests/idempotence.rs`, on the node's partition directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_get_the_original_offset_and_gaps_and_old_epochs_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    node.topics.create("pay", 1, BTreeMap::new()).await.expect("create");
    let producer_id = node.producer_ids.allocate().expect("a producer id");
    let batch = |epoch: i16, first_sequence: i32, records: u32| {
        make_batch_with(producer_id, epoch, first_sequence, 0, records, 8, now_ms())
    };
    let pay = partition(&node, "pay", 0);
    let first = pay.append(batch(0, 0, 3)).await.expect("first");
    assert_eq!((first.base_offset, first.duplicate), (0, false));
    assert_eq!(pay.append(batch(0, 3, 2)).await.expect("second").base_offset, 3);
    let retry = pay.append(batch(0, 0, 3)).await.expect("a retry is answered");
    assert_eq!((retry.base_offset, retry.last_offset, retry.duplicate), (0, 2, true), "with the original's offsets");
    assert_eq!(pay.high_watermark(), 5, "and nothing appended");

    drop(pay);
    let node = reopen(node, dir.path()).await;
    let pay = partition(&node, "pay", 0);
    let retry = pay.append(batch(0, 3, 2)).await.expect("a retry after the reopen");
    assert_eq!((retry.base_offset, retry.duplicate), (3, true), "the producer's state was recovered");
    assert_eq!(pay.append(batch(0, 5, 1)).await.expect("the producer continues").base_offset, 5);
    let gap = pay.append(batch(0, 9, 1)).await;
    assert!(
        matches!(gap, Err(PartitionError::OutOfOrderSequence { expected_first_sequence: 6 })),
        "a gap is refused, naming the sequence expected: {gap:?}"
    );
    assert_eq!(pay.append(batch(1, 0, 1)).await.expect("a bumped epoch starts over").base_offset, 6);
    let fenced = pay.append(batch(0, 6, 1)).await;
    assert!(
        matches!(fenced, Err(PartitionError::ProducerFenced { current_epoch: 1 })),
        "the old epoch is fenced: {fenced:?}"
    );
    assert_eq!(pay.high_watermark(), 7, "seven records, none twice");
    let stored: i32 = headers(&pay, 0).iter().map(|header| header.records_count).sum();
    assert_eq!(stored, 7);
    assert!(node.producer_ids.allocate().expect("another id") > producer_id, "ids are not reused after a reopen");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_config_changes_are_validated_and_persist_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    node.topics.create("edges", 1, overrides(&[("retention.ms", "1000")])).await.expect("create");
    node.topics.create("deduplicated", 1, overrides(&[("dedup.source", "key")])).await.expect("create dedup");
    let bad = node.topics.create("bad", 1, overrides(&[("segment.bytes", "100")])).await;
    assert!(matches!(bad, Err(TopicError::InvalidConfig(_))), "a segment below 1 KiB: {:?}", bad.err());
    assert!(node.topics.get("bad").is_none(), "a refused create leaves no topic");

    let set =
        |pairs: &'static [(&'static str, &'static str)]| move |_: &TopicConfig| Ok::<_, TopicError>(overrides(pairs));
    let checked = node.topics.update_config("edges", true, set(&[("retention.ms", "5000")])).await;
    assert!(checked.is_ok(), "validate_only accepts: {checked:?}");
    let value = |node: &Node, topic: &str, key: &str| node.topics.get(topic).expect("topic").config().value_of(key);
    assert_eq!(value(&node, "edges", "retention.ms"), Some(("1000".into(), true)), "and changes nothing");

    let changed = set(&[("retention.ms", "5000"), ("segment.bytes", "2048")]);
    node.topics.update_config("edges", false, changed).await.expect("alter");
    let turned_off = node.topics.update_config("deduplicated", false, set(&[("retention.ms", "5000")])).await;
    assert!(
        matches!(&turned_off, Err(TopicError::InvalidConfig(reason)) if reason.contains("dedup.source")),
        "replacing the overrides without dedup.source would change the source: {turned_off:?}"
    );
    let missing = node.topics.update_config("absent", false, set(&[])).await;
    assert!(matches!(missing, Err(TopicError::Unknown(_))), "{missing:?}");

    let node = reopen(node, dir.path()).await;
    assert_eq!(value(&node, "edges", "retention.ms"), Some(("5000".into(), true)), "the change was persisted");
    assert_eq!(value(&node, "edges", "segment.bytes"), Some(("2048".into(), true)));
    assert_eq!(value(&node, "edges", "retention.bytes"), Some(("-1".into(), false)), "the rest are defaults");
    assert_eq!(value(&node, "deduplicated", "dedup.source"), Some(("key".into(), true)), "the refusal kept it");
    assert_eq!(value(&node, "deduplicated", "retention.ms").map(|(_, set)| set), Some(false));
    node.close().await;
}

/// Polls the log start offset until it is above `above` and has not moved for a few upkeep rounds.
async fn settled_log_start(partition: &Partition, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let start = partition.log_start_offset();
        if start > above {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if partition.log_start_offset() == start {
                return start;
            }
        }
        assert!(Instant::now() < deadline, "retention never advanced the log start offset past {above}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The retention scenario of `crates/cli/tests/admin_and_retention.rs`, run by the node's upkeep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upkeep_deletes_segments_past_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(NodeConfig { retention_check_interval_ms: 50, ..config(dir.path()) }).expect("open");
    let configs = overrides(&[("segment.bytes", "1024"), ("retention.bytes", "2048")]);
    node.topics.create("short", 1, configs).await.expect("create");
    let short = partition(&node, "short", 0);
    for _ in 0..12 {
        short.append(make_batch_with(-1, -1, -1, 0, 5, 100, now_ms())).await.expect("append");
    }
    assert_eq!(short.high_watermark(), 60);

    let start = settled_log_start(&short, 0).await;
    assert!(short.size_bytes() <= 2048 + 1024, "what is left is about retention.bytes: {}", short.size_bytes());
    assert_eq!(short.high_watermark(), 60, "retention does not touch the end");
    let below = short.read(0, 1 << 20);
    assert!(
        matches!(below, Err(PartitionError::Log(LogError::OffsetOutOfRange { .. }))),
        "below the log start offset is out of range: {below:?}"
    );
    let kept = headers(&short, start);
    assert_eq!(kept.first().map(|header| header.base_offset), Some(start as i64), "read from the log start");
    let kept_records: i32 = kept.iter().map(|header| header.records_count).sum();
    assert_eq!(kept_records as u64, 60 - start, "everything from the log start offset is readable");

    // Time-based retention: everything but the active segment goes.
    let time = |_: &TopicConfig| Ok::<_, TopicError>(overrides(&[("segment.bytes", "1024"), ("retention.ms", "1")]));
    node.topics.update_config("short", false, time).await.expect("alter");
    let later = settled_log_start(&short, start).await;
    assert!(later > start && later <= 60, "time retention moved the start on: {start} -> {later}");
    drop(short);
    let node = reopen(node, dir.path()).await;
    assert_eq!(partition(&node, "short", 0).log_start_offset(), later, "the log start offset is durable");
    node.close().await;
}

/// A deduplicating topic (`dedup.source=key`): one index for every partition and producer, rebuilt
/// at a reopen, as `crates/cli/tests/dedup.rs` shows through producer processes and kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_topic_drops_an_id_seen_from_another_producer_and_after_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    node.topics.create("events", 2, overrides(&[("dedup.source", "key")])).await.expect("create");
    let (first, second) = (partition(&node, "events", 0), partition(&node, "events", 1));
    let producer_a = node.producer_ids.allocate().expect("id");
    let producer_b = node.producer_ids.allocate().expect("id");
    // Producer id -1: a plain producer, without epoch or sequence.
    let keyed = |producer_id: i64, first_sequence: i32, keys: &[&[u8]]| {
        let (epoch, first_sequence) = if producer_id < 0 { (-1, -1) } else { (0, first_sequence) };
        make_keyed_batch(producer_id, epoch, first_sequence, 0, keys, now_ms())
    };

    let stored = first.append(keyed(producer_a, 0, &[b"a", b"b"])).await.expect("A");
    assert_eq!((stored.duplicates_dropped, stored.answer), (0, OffsetAnswer::Stored));
    let mixed = first.append(keyed(producer_b, 0, &[b"b", b"c"])).await.expect("B");
    assert_eq!(mixed.duplicates_dropped, 1, "B's 'b' was stored by A");
    assert_eq!(mixed.answer_base_offset(), -2, "no base offset locates the batch's records");
    let elsewhere = second.append(keyed(producer_a, 0, &[b"a"])).await.expect("A on partition 1");
    assert_eq!(elsewhere.duplicates_dropped, 1, "the index spans the topic's partitions");
    let again = first.append(keyed(-1, 0, &[b"a", b"b"])).await.expect("a plain producer");
    assert_eq!(again.answer, OffsetAnswer::Originals { base_offset: 0 }, "every record a duplicate: the originals");
    assert_eq!(again.answer_base_offset(), 0);
    let kept: i32 = headers(&first, 0).iter().map(|header| header.records_count).sum();
    assert_eq!(kept, 3, "a, b and c once each");
    assert_eq!(first.duplicates_dropped(), 3, "b, then a and b again");

    drop((first, second));
    let node = reopen(node, dir.path()).await;
    let (first, second) = (partition(&node, "events", 0), partition(&node, "events", 1));
    let later = second.append(keyed(-1, 0, &[b"c", b"d"])).await.expect("after the reopen");
    assert_eq!(later.duplicates_dropped, 1, "'c' is still known after the reopen");
    let kept: i32 = [&first, &second].iter().flat_map(|p| headers(p, 0)).map(|header| header.records_count).sum();
    assert_eq!(kept, 4, "a, b, c and d once each across the topic");
    assert_eq!(
        node.topics.get("events").and_then(|topic| topic.dedup().map(|index| index.stats().stored_ids)),
        Some(4)
    );
    node.close().await;
}

/// Review of issue 14: a batch whose record claims an offset outside the batch (offset delta 5 in a
/// one-record batch, CRC correct) is refused with INVALID_RECORD's error on a dedup topic, and the
/// partition keeps taking writes and reopens (it used to panic the writer, then the replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_outside_its_batch_is_refused_on_a_dedup_topic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::open(config(dir.path())).expect("open");
    node.topics.create("events", 1, overrides(&[("dedup.source", "key")])).await.expect("create");
    let events = partition(&node, "events", 0);
    let mut forged = make_keyed_batch(-1, -1, -1, 0, &[b"order-1"], now_ms());
    // After the 61-byte header: record length (1 byte), attributes, timestamp delta, offset delta.
    assert_eq!(forged[64], 0, "the first record's offset delta");
    forged[64] = 10; // zigzag 5
    let crc = once_log::batch::crc_of(&forged);
    forged[17..21].copy_from_slice(&crc.to_be_bytes());
    let refused = events.append(forged).await;
    assert!(matches!(refused, Err(PartitionError::Log(LogError::InvalidBatch(_)))), "refused: {refused:?}");

    let stored = events.append(make_keyed_batch(-1, -1, -1, 0, &[b"order-1"], now_ms())).await.expect("stored");
    assert_eq!(stored.base_offset, 0, "nothing of the forged batch was stored");
    let node = reopen(node, dir.path()).await;
    assert_eq!(partition(&node, "events", 0).high_watermark(), 1, "the partition reopens with its record");
}
