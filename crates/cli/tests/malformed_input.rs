//! Malformed input gets an error response or a closed connection: no crash, other clients unaffected,
//! nothing lost.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};
use kafka_protocol::protocol::Decodable;
use once_cli::admin::{metadata, AdminClient};
use support::{once, produce_lines, BrokerProcess};

fn connect(broker: &BrokerProcess) -> TcpStream {
    let stream = TcpStream::connect(broker.bootstrap()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// True when the broker closed the connection (EOF or reset) rather than answering.
fn closed_by_broker(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut framed = (body.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(body);
    framed
}

fn header(api_key: i16, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&api_key.to_be_bytes());
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&correlation_id.to_be_bytes());
    bytes.extend_from_slice(&4i16.to_be_bytes());
    bytes.extend_from_slice(b"test");
    bytes
}

#[test]
fn malformed_requests_do_not_hurt_the_broker() {
    let mut broker = BrokerProcess::start(&[]);
    let bootstrap = broker.bootstrap();
    once(&["topic", "create", "safe", "--partitions", "1", "--bootstrap", &bootstrap]);
    produce_lines(&broker, "safe", "one\ntwo\nthree\n");

    // A healthy client connected throughout.
    let mut healthy = AdminClient::connect(&bootstrap).expect("healthy client");

    // Random bytes, seeded so a failure replays.
    let mut state: u64 = 0x05ee_d0f0;
    for round in 0..50 {
        let mut stream = connect(&broker);
        let garbage: Vec<u8> = (0..(round * 37 % 500 + 1))
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect();
        let _ = stream.write_all(&garbage);
        drop(stream);
    }

    // A 2 GiB frame length: refused before anything is allocated.
    let mut stream = connect(&broker);
    stream.write_all(&0x7fff_ffffi32.to_be_bytes()).expect("write length");
    assert!(closed_by_broker(&mut stream), "2 GiB frame closes the connection");

    // A negative frame length.
    let mut stream = connect(&broker);
    stream.write_all(&(-5i32).to_be_bytes()).expect("write length");
    assert!(closed_by_broker(&mut stream), "negative frame length closes the connection");

    // An unknown API key: Kafka closes the connection.
    let mut stream = connect(&broker);
    stream.write_all(&frame(&header(12345, 0, 1))).expect("write");
    assert!(closed_by_broker(&mut stream), "unknown API key closes the connection");

    // A truncated Metadata request body (topic array announced, not sent).
    let mut body = header(ApiKey::Metadata as i16, 1, 2);
    body.extend_from_slice(&3i32.to_be_bytes());
    let mut stream = connect(&broker);
    stream.write_all(&frame(&body)).expect("write");
    assert!(closed_by_broker(&mut stream), "truncated body closes the connection");

    // An array count of 2^31-1 in a tiny frame must not make the broker allocate for it.
    let mut body = header(ApiKey::Metadata as i16, 0, 3);
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    body.extend_from_slice(&[0, 1, b'x']);
    let mut stream = connect(&broker);
    stream.write_all(&frame(&body)).expect("write");
    assert!(closed_by_broker(&mut stream), "impossible array count closes the connection");

    // A frame that announces more than it sends, then the client goes away.
    let mut stream = connect(&broker);
    stream.write_all(&100i32.to_be_bytes()).expect("write length");
    stream.write_all(&header(ApiKey::Metadata as i16, 1, 4)).expect("write part");
    drop(stream);

    // ApiVersions at an unknown version: a v0 answer with UNSUPPORTED_VERSION, and the connection stays open.
    let mut stream = connect(&broker);
    stream.write_all(&frame(&header(ApiKey::ApiVersions as i16, 99, 5))).expect("write");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("fallback response arrives");
    let mut response = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut response).expect("fallback body");
    let mut body = bytes::Bytes::from(response);
    let correlation_id = i32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
    assert_eq!(correlation_id, 5);
    bytes::Buf::advance(&mut body, 4);
    let fallback = ApiVersionsResponse::decode(&mut body, 0).expect("v0 response decodes");
    assert_eq!(fallback.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(fallback.api_keys.iter().any(|api| api.api_key == ApiKey::ApiVersions as i16 && api.max_version >= 3));
    let mut same_connection = AdminClient::from_stream(stream);
    let versions = same_connection
        .call(&ApiVersionsRequest::default(), 3)
        .expect("a supported ApiVersions on the same connection");
    assert_eq!(versions.error_code, 0);

    // The broker is alive, the healthy client still works, and the data is intact.
    assert!(broker.is_running(), "broker survived; log:\n{}", broker.log());
    let topics = metadata(&mut healthy, Some("safe")).expect("healthy client still served");
    assert_eq!(topics[0].1, 1);
    let _ = healthy.call(&MetadataRequest::default(), 1).expect("metadata");
    let output = once(&["consume", "safe", "--from-beginning", "--bootstrap", &bootstrap]);
    assert_eq!(output, "one\ntwo\nthree\n");
}

#[test]
fn connections_beyond_the_limit_are_closed_and_others_keep_working() {
    let broker = BrokerProcess::start(&["--connections-max", "2"]);
    // The harness's readiness probe held a slot for a moment; wait until two clients are served.
    let served = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let mut client = AdminClient::connect(&broker.bootstrap()).expect("connect");
            if client.call(&ApiVersionsRequest::default(), 3).is_ok() {
                return client;
            }
            assert!(std::time::Instant::now() < deadline, "a slot frees up once the probe has gone");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = served();
    let second = served();
    let mut third = connect(&broker);
    assert!(closed_by_broker(&mut third), "the third connection is closed at once");
    let _ = first.call(&ApiVersionsRequest::default(), 3).expect("first still served");
    drop(second);
    // The freed slot is usable again (the broker notices the close asynchronously).
    let _fourth = served();
}

#[test]
fn produce_v2_is_answered_with_unsupported_version_and_the_connection_stays_usable() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let broker = BrokerProcess::start(&[]);
    once(&["topic", "create", "legacy", "--partitions", "1", "--bootstrap", &broker.bootstrap()]);
    let request =
        ProduceRequest::default().with_transactional_id(None).with_acks(-1).with_timeout_ms(1000).with_topic_data(
            vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("legacy")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(vec![0u8; 70].into()))])],
        );
    let mut v3_body = bytes::BytesMut::new();
    request.encode(&mut v3_body, 3).expect("encode");
    let mut body = header(ApiKey::Produce as i16, 2, 11);
    body.extend_from_slice(&v3_body[2..]); // v2 = v3 without the transactional id
    let mut stream = connect(&broker);
    stream.write_all(&frame(&body)).expect("write");
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).expect("an answer, not a closed connection");
    let mut response = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut response).expect("body");
    assert_eq!(i32::from_be_bytes(response[..4].try_into().expect("4 bytes")), 11, "correlation id");
    // A v2 response is laid out like v3 (the codec itself starts at v3).
    let decoded = ProduceResponse::decode(&mut bytes::Bytes::from(response[4..].to_vec()), 3).expect("a v2 response");
    assert_eq!(decoded.responses[0].partition_responses[0].error_code, 35, "UNSUPPORTED_VERSION");
    let mut same_connection = AdminClient::from_stream(stream);
    assert_eq!(same_connection.call(&ApiVersionsRequest::default(), 3).expect("still usable").error_code, 0);
    let described = once(&["topic", "describe", "legacy", "--bootstrap", &broker.bootstrap()]);
    assert!(described.contains("high-watermark=0"), "nothing was written: {described}");
}

/// Produce v0 and v1 (advertised with v2 for librdkafka's sake, served by no broker since Kafka 4.0)
/// get UNSUPPORTED_VERSION for every partition in their own response layout, as Kafka 4.0 answers
/// them, and the connection goes on serving. The response is read by hand: the codec starts at v3.
#[test]
fn produce_v0_and_v1_are_answered_with_unsupported_version_and_the_connection_stays_usable() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let broker = BrokerProcess::start(&[]);
    once(&["topic", "create", "legacy", "--partitions", "2", "--bootstrap", &broker.bootstrap()]);
    let partition =
        |index: i32| PartitionProduceData::default().with_index(index).with_records(Some(vec![0u8; 40].into()));
    let request =
        ProduceRequest::default().with_transactional_id(None).with_acks(1).with_timeout_ms(1000).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("legacy")))
                .with_partition_data(vec![partition(0), partition(1)]),
        ]);
    let mut v3_body = bytes::BytesMut::new();
    request.encode(&mut v3_body, 3).expect("encode");
    for version in [0i16, 1] {
        let correlation_id = 20 + i32::from(version);
        let mut body = header(ApiKey::Produce as i16, version, correlation_id);
        body.extend_from_slice(&v3_body[2..]); // v0 and v1 requests = v3 without the transactional id
        let mut stream = connect(&broker);
        stream.write_all(&frame(&body)).expect("write");
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).expect("an answer, not a closed connection");
        let mut response = vec![0u8; i32::from_be_bytes(length) as usize];
        stream.read_exact(&mut response).expect("body");
        // correlation id; [topic name, [partition, error code, base offset]]; v1: throttle time.
        let mut expected = correlation_id.to_be_bytes().to_vec();
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&6i16.to_be_bytes());
        expected.extend_from_slice(b"legacy");
        expected.extend_from_slice(&2i32.to_be_bytes());
        for index in [0i32, 1] {
            expected.extend_from_slice(&index.to_be_bytes());
            expected.extend_from_slice(&35i16.to_be_bytes()); // UNSUPPORTED_VERSION
            expected.extend_from_slice(&(-1i64).to_be_bytes());
        }
        if version == 1 {
            expected.extend_from_slice(&0i32.to_be_bytes());
        }
        assert_eq!(response, expected, "the Produce v{version} response");
        let mut same_connection = AdminClient::from_stream(stream);
        assert_eq!(same_connection.call(&ApiVersionsRequest::default(), 3).expect("still usable").error_code, 0);
    }
    let described = once(&["topic", "describe", "legacy", "--bootstrap", &broker.bootstrap()]);
    assert!(!described.contains("high-watermark=1"), "nothing was written: {described}");
    assert!(described.contains("high-watermark=0"), "nothing was written: {described}");
}
