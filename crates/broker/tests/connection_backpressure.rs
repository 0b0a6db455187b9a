//! A client that stops reading its socket, driven through whole `Connection`s over in-memory streams:
//! the broker stops reading its requests while a Fetch response waits to be written behind another
//! (they are not all read into memory first), serves the rest once the
//! client reads again, and gives the connection up — returning what its responses held — when the
//! client takes no response for the connection's idle time; meanwhile other consumers' fetches read
//! less while the responses held reach the broker's budget for them, and as much as before after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use once_broker::connection::Connection;
use once_log::testing::make_batch_with;
use once_node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{watch, Semaphore};

const TOPIC: &str = "backlog";
const FETCH_VERSION: i16 = 12;
/// Small enough for a few Fetch responses to fill it many times over.
const FETCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A node whose one partition holds about 12 MiB, more than one fetch returns; Fetch responses not yet
/// written may hold `fetch_memory` record bytes across connections before new fetches read less; a
/// connection is given up after `idle_max` without a request or a response byte taken.
async fn node_with_backlog(dir: &std::path::Path, fetch_memory: usize, idle_max: Duration) -> Arc<Node> {
    let config = NodeConfig {
        connections_max_idle_ms: idle_max.as_millis() as u64,
        data_dir: dir.to_path_buf(),
        fetch_bytes_max: FETCH_BYTES_MAX,
        request_bytes_max: 1 << 20,
        queued_request_bytes_max: fetch_memory,
        ..NodeConfig::default()
    };
    let node = Node::open(config).expect("open the node");
    let topic = node.topics.create(TOPIC, 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("partition 0");
    for _ in 0..12 {
        let batch = make_batch_with(-1, -1, -1, 0, 1000, 1024, 1_700_000_000_000);
        partition.append(batch).await.expect("append");
    }
    node
}

/// A size-prefixed Fetch v12 request for partition 0 from offset 0, up to `max_bytes`, answered at once.
fn fetch_frame(correlation_id: i32, max_bytes: i32) -> Vec<u8> {
    long_poll_frame(correlation_id, 0, max_bytes, 0, 0)
}

/// The same from `offset`, waiting up to `max_wait_ms` for `min_bytes`.
fn long_poll_frame(correlation_id: i32, offset: i64, max_bytes: i32, min_bytes: i32, max_wait_ms: i32) -> Vec<u8> {
    let partition =
        FetchPartition::default().with_partition(0).with_fetch_offset(offset).with_partition_max_bytes(max_bytes);
    let body = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![partition])]);
    let client_id = Some(StrBytes::from_static_str("backpressure-test"));
    once_wire::encode_request(&body, FETCH_VERSION, correlation_id, client_id).expect("encodes").to_vec()
}

/// Serves one connection over an in-memory stream whose buffer holds 64 KiB each way.
fn serve(node: &Arc<Node>) -> (DuplexStream, tokio::task::JoinHandle<()>, watch::Sender<bool>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let listener = once_node::listeners::resolve("127.0.0.1:9092", &[], &[]).expect("a listener").remove(0);
    let connection =
        Connection::new(node.clone(), Box::new(server), None, Arc::new(listener), Arc::new(Semaphore::new(256 << 20)));
    let (stop, stopping) = watch::channel(false);
    (client, tokio::spawn(connection.run(stopping)), stop)
}

/// Waits up to 3 s for the record bytes held by unwritten Fetch responses to settle; returns them.
async fn held_once_settled(node: &Node) -> usize {
    let mut held = node.fetch_memory.held();
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        held = node.fetch_memory.held();
    }
    held
}

/// Reads one response frame: (correlation id, frame length).
async fn read_response(client: &mut DuplexStream) -> (i32, usize) {
    let length = client.read_u32().await.expect("a response's size") as usize;
    let mut body = vec![0u8; length];
    client.read_exact(&mut body).await.expect("the response whole");
    (i32::from_be_bytes(body[..4].try_into().expect("4 bytes")), length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_not_read_from_and_is_served_once_it_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_backlog(dir.path(), 512 << 20, Duration::from_secs(600)).await;
    let (mut client, connection, stop) = serve(&node);
    // Six fetches of up to 8 MiB each, sent at once; nothing is read back.
    let requests: Vec<u8> = (0..6).flat_map(|id| fetch_frame(id, FETCH_BYTES_MAX as i32)).collect();
    client.write_all(&requests).await.expect("the requests fit the stream's buffer");
    // One response is being written (stalled: the client does not read), the next is read and waits
    // for room; the other four are not read from the disk at all (six would hold about 43 MiB).
    let held = held_once_settled(&node).await;
    assert!(
        (FETCH_BYTES_MAX / 2..=2 * FETCH_BYTES_MAX).contains(&held),
        "{held} record bytes held while the client read nothing"
    );
    // The client reads again: every response arrives, in order, each with its records.
    for expected in 0..6 {
        let (correlation_id, length) = read_response(&mut client).await;
        assert_eq!(correlation_id, expected, "responses in the order of their requests");
        assert!(length > FETCH_BYTES_MAX / 2, "response {expected} carries records: {length} bytes");
    }
    assert_eq!(held_once_settled(&node).await, 0, "written responses hold nothing");
    stop.send(true).expect("stop");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), connection).await.expect("the connection ends").expect("task");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_no_response_for_the_idle_time_is_given_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_backlog(dir.path(), 512 << 20, Duration::from_secs(1)).await;
    let (mut client, connection, _stop) = serve(&node);
    // Three 3 MiB responses into a 64 KiB stream that the client never reads: the first one's write
    // stalls and the second waits for it, so the connection's reader is waiting for the writer, not
    // for a request, when the writer gives up.
    let requests: Vec<u8> = (0..3).flat_map(|id| fetch_frame(id, 3 << 20)).collect();
    client.write_all(&requests).await.expect("the requests");
    let started = Instant::now();
    // The client stays connected; the connection ends on its own once the write has stalled for
    // the idle time, not when the client goes.
    tokio::time::timeout(Duration::from_secs(20), connection)
        .await
        .expect("the stalled connection is given up")
        .expect("task");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the idle time: {:?}", started.elapsed());
    assert_eq!(node.fetch_memory.held(), 0, "what its responses held is given back");
    drop(client);
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_taking_a_long_response_is_not_idle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_backlog(dir.path(), 512 << 20, Duration::from_secs(2)).await;
    let (mut client, connection, stop) = serve(&node);
    // One 8 MiB response, taken 32 KiB at a time every 25 ms: about 6 s, three idle times, with no
    // request sent meanwhile.
    client.write_all(&fetch_frame(0, FETCH_BYTES_MAX as i32)).await.expect("the request");
    let started = Instant::now();
    let length = client.read_u32().await.expect("a response's size") as usize;
    let mut body = vec![0u8; length];
    for chunk in body.chunks_mut(32 * 1024) {
        client.read_exact(chunk).await.expect("the response, slowly");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started.elapsed() > Duration::from_secs(4), "taken over two idle times: {:?}", started.elapsed());
    assert_eq!(i32::from_be_bytes(body[..4].try_into().expect("4 bytes")), 0, "the first response");
    // The connection is still served: the idle time ran from the response's last byte, not the request.
    client.write_all(&fetch_frame(1, 1024)).await.expect("the next request");
    let (answered, _) =
        tokio::time::timeout(Duration::from_secs(10), read_response(&mut client)).await.expect("answered, not closed");
    assert_eq!(answered, 1, "the next response");
    // Idle from here on (nothing sent or taken): closed after the idle time, and not before.
    let answered_at = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), connection).await.expect("closed once idle").expect("task");
    assert!(answered_at.elapsed() >= Duration::from_millis(1900), "after the idle time: {:?}", answered_at.elapsed());
    assert_eq!(client.read_u8().await.ok(), None, "the client reads the end of the stream");
    drop((client, stop));
    node.close().await;
}

/// Record bytes of the one Fetch response `client` gets for an 8 MiB fetch (its frame, less a little).
async fn fetched_bytes(client: &mut DuplexStream, correlation_id: i32) -> usize {
    client.write_all(&fetch_frame(correlation_id, FETCH_BYTES_MAX as i32)).await.expect("the request");
    let (answered, length) = read_response(client).await;
    assert_eq!(answered, correlation_id, "the response to this fetch");
    length
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_consumers_read_less_while_unwritten_responses_hold_the_budget() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The budget for unwritten responses is one fetch's worth.
    let node = node_with_backlog(dir.path(), FETCH_BYTES_MAX, Duration::from_secs(600)).await;
    let (mut reader, reading, _stop_reader) = serve(&node);
    assert!(fetched_bytes(&mut reader, 0).await > FETCH_BYTES_MAX / 2, "a full fetch while nothing is held");
    // A client that stops reading holds about two fetches' worth: one response being written, one
    // waiting for room.
    let (mut stuck, stuck_connection, stop_stuck) = serve(&node);
    let requests: Vec<u8> = (0..2).flat_map(|id| fetch_frame(id, FETCH_BYTES_MAX as i32)).collect();
    stuck.write_all(&requests).await.expect("the requests");
    let held = held_once_settled(&node).await;
    assert!(held > FETCH_BYTES_MAX, "the stuck client's responses hold {held} bytes");
    // The other consumer goes on, a batch at a time (1 MiB batches; the floor is 1 MiB).
    let shrunk = fetched_bytes(&mut reader, 1).await;
    assert!((1..=5 << 19).contains(&shrunk), "a fetch while the budget is spent: {shrunk} bytes");
    // A long poll for more than the budget lets it read is answered with what it could read, at once,
    // not at its max wait.
    let started = Instant::now();
    reader.write_all(&long_poll_frame(9, 0, FETCH_BYTES_MAX as i32, 4 << 20, 20_000)).await.expect("the request");
    let (answered, length) = read_response(&mut reader).await;
    assert_eq!(answered, 9, "the long poll's response");
    assert!((1..=5 << 19).contains(&length), "a batch at a time: {length} bytes");
    assert!(started.elapsed() < Duration::from_secs(10), "not held to its max wait: {:?}", started.elapsed());
    // The stuck client reads its responses: the budget is free again, and so are full fetches.
    for expected in 0..2 {
        assert_eq!(read_response(&mut stuck).await.0, expected, "the stuck client's responses, in order");
    }
    assert_eq!(held_once_settled(&node).await, 0, "written responses hold nothing");
    assert!(fetched_bytes(&mut reader, 2).await > FETCH_BYTES_MAX / 2, "a full fetch once the budget is free");
    stop_stuck.send(true).expect("stop");
    drop((stuck, reader));
    tokio::time::timeout(Duration::from_secs(10), stuck_connection).await.expect("ends").expect("task");
    tokio::time::timeout(Duration::from_secs(10), reading).await.expect("ends").expect("task");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_at_the_log_end_holds_none_of_the_budget_while_it_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_backlog(dir.path(), FETCH_BYTES_MAX, Duration::from_secs(600)).await;
    let (mut waiting, connection, stop) = serve(&node);
    // At the log end (12 batches of 1,000 records), waiting up to 3 s for one byte.
    let started = Instant::now();
    waiting.write_all(&long_poll_frame(1, 12_000, FETCH_BYTES_MAX as i32, 1, 3_000)).await.expect("the request");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(node.fetch_memory.held(), 0, "a waiting long poll reserves nothing");
    let (mut other, other_connection, stop_other) = serve(&node);
    assert!(fetched_bytes(&mut other, 2).await > FETCH_BYTES_MAX / 2, "so others fetch in full meanwhile");
    let (answered, _) = read_response(&mut waiting).await;
    assert_eq!(answered, 1, "the long poll's response");
    assert!(started.elapsed() >= Duration::from_millis(2_500), "it waited: {:?}", started.elapsed());
    for (stop, client, task) in [(stop, waiting, connection), (stop_other, other, other_connection)] {
        stop.send(true).expect("stop");
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("ends").expect("task");
    }
    node.close().await;
}
