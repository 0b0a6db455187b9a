//! A client that stops reading its socket, driven through a whole `Connection` over an in-memory
//! stream: the broker stops reading its requests once the Fetch responses waiting to be written hold
//! `fetch_bytes_max` record bytes (they are not all read into memory first), serves the rest once the
//! client reads again, and gives the connection up — returning what its responses held — when the
//! client takes no response for the connection's idle time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
use once_broker::connection::Connection;
use once_log::testing::make_batch_with;
use once_log::ReadPlan;
use once_node::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{watch, Semaphore};

const TOPIC: &str = "backlog";
const FETCH_VERSION: i16 = 12;
/// Small enough for a few Fetch responses to fill it many times over.
const FETCH_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A node whose one partition holds about 12 MiB, more than one fetch returns.
async fn node_with_backlog(dir: &std::path::Path) -> Arc<Node> {
    let config = NodeConfig { data_dir: dir.to_path_buf(), fetch_bytes_max: FETCH_BYTES_MAX, ..NodeConfig::default() };
    let node = Node::open(config).expect("open the node");
    let topic = node.topics.create(TOPIC, 1, BTreeMap::new()).await.expect("create");
    let partition = topic.partition(0).expect("partition 0");
    for _ in 0..12 {
        let batch = make_batch_with(-1, -1, -1, 0, 1000, 1024, 1_700_000_000_000);
        partition.append(batch).await.expect("append");
    }
    node
}

/// A size-prefixed Fetch v12 request for partition 0 from offset 0, up to `max_bytes`.
fn fetch_frame(correlation_id: i32, max_bytes: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Fetch as i16)
        .with_request_api_version(FETCH_VERSION)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("backpressure-test")));
    let partition =
        FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(max_bytes);
    let body =
        FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(max_bytes).with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![partition]),
        ]);
    let mut frame = BytesMut::new();
    encode_request_header_into_buffer(&mut frame, &header).expect("header encodes");
    body.encode(&mut frame, FETCH_VERSION).expect("body encodes");
    let mut sized = (frame.len() as u32).to_be_bytes().to_vec();
    sized.extend_from_slice(&frame);
    sized
}

/// Serves one connection over an in-memory stream whose buffer holds 64 KiB each way.
fn serve(node: &Arc<Node>, idle_max: Duration) -> (DuplexStream, tokio::task::JoinHandle<()>, watch::Sender<bool>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let listener = once_node::listeners::resolve("127.0.0.1:9092", &[], &[]).expect("a listener").remove(0);
    let connection =
        Connection::new(node.clone(), Box::new(server), None, Arc::new(listener), Arc::new(Semaphore::new(256 << 20)))
            .with_idle_max(idle_max);
    let (stop, stopping) = watch::channel(false);
    (client, tokio::spawn(connection.run(stopping)), stop)
}

/// Pooled read buffers taken so far in this process (fetches the plan bounds at 4–64 MiB take one).
/// The count is process-wide: only the first test here fetches that much, and each test file is a
/// binary of its own; a test added here with such fetches would have to run apart from it.
fn read_buffers_taken() -> u64 {
    let (new, reused) = ReadPlan::read_buffers_taken();
    new + reused
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
    let node = node_with_backlog(dir.path()).await;
    let (mut client, connection, stop) = serve(&node, Duration::from_secs(600));
    // Six fetches of 8 MiB each (read into the pooled buffers fetches of 4–64 MiB take), sent at
    // once; nothing is read back.
    let taken_before = read_buffers_taken();
    let requests: Vec<u8> = (0..6).flat_map(|id| fetch_frame(id, FETCH_BYTES_MAX as i32)).collect();
    client.write_all(&requests).await.expect("the requests fit the stream's buffer");
    // Until the count stops moving: each fetch served takes one read buffer.
    let mut served = read_buffers_taken() - taken_before;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        served = read_buffers_taken() - taken_before;
    }
    // One response is being written (stalled: the client does not read), the next is read and waits
    // for room; the other four are not read from the disk at all.
    assert!((1..=2).contains(&served), "{served} of 6 fetches served while the client read nothing");
    // The client reads again: every response arrives, in order, each with its records.
    for expected in 0..6 {
        let (correlation_id, length) = read_response(&mut client).await;
        assert_eq!(correlation_id, expected, "responses in the order of their requests");
        assert!(length > FETCH_BYTES_MAX / 2, "response {expected} carries records: {length} bytes");
    }
    assert_eq!(read_buffers_taken() - taken_before, 6, "every fetch served, once");
    stop.send(true).expect("stop");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), connection).await.expect("the connection ends").expect("task");
    node.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_no_response_for_the_idle_time_is_given_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_with_backlog(dir.path()).await;
    let (mut client, connection, _stop) = serve(&node, Duration::from_secs(1));
    // Three 3 MiB responses (below the pooled reads: this test leaves their count alone) into a
    // 64 KiB stream that the client never reads: the first one's write stalls, the second waits
    // queued, and the third waits for room (3 × 3 MiB > the 8 MiB bound), so the connection's reader
    // is waiting for the writer, not for a request, when the writer gives up.
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
    drop(client);
    node.close().await;
}
