//! `once serve --http-listen`: the REST Proxy v3 produce with `Idempotency-Key` through a real HTTP
//! client. A retry gets the original answer (same partition and offset, `Idempotent-Replayed`);
//! the same key for another request is refused with 422; a key on a topic without
//! `dedup.source=header:…` with 400; bad input with problem documents. Many clients posting keyed
//! records with retries on any failure while the broker is killed with SIGKILL and restarted:
//! each key stored once, every answer for a key the same; the same through a fault proxy that
//! resets connections and drops responses after the broker acted, with concurrent requests for
//! one key answered 409 or with the one original.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{free_port, once, BrokerProcess};

struct Http {
    agent: ureq::Agent,
    base: String,
}

/// Every (partition, offset) each key was answered with.
type Answers = BTreeMap<usize, Vec<(i64, i64)>>;

/// One answer: status, JSON body, whether it was a replay.
type Answer = (u16, serde_json::Value, bool);

impl Http {
    fn new(port: u16) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Http { agent, base: format!("http://127.0.0.1:{port}") }
    }

    fn get(&self, path: &str) -> Result<(u16, String), ureq::Error> {
        let mut response = self.agent.get(&format!("{}{path}", self.base)).call()?;
        Ok((response.status().as_u16(), response.body_mut().read_to_string()?))
    }

    fn cluster_id(&self) -> String {
        let (status, body) = self.get("/v3/clusters").expect("GET /v3/clusters");
        assert_eq!(status, 200, "{body}");
        let clusters: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        clusters["data"][0]["cluster_id"].as_str().expect("cluster_id").to_string()
    }

    fn post(&self, path: &str, key: Option<&str>, body: &str) -> Result<Answer, ureq::Error> {
        let mut request = self.agent.post(&format!("{}{path}", self.base)).header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", &format!("\"{key}\""));
        }
        let mut response = request.send(body)?;
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").is_some_and(|value| value == "true");
        let problem = response.headers().get("content-type").is_some_and(|value| value == "application/problem+json");
        let text = response.body_mut().read_to_string()?;
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if status >= 400 {
            assert!(problem, "a {status} is a problem document: {text}");
            assert_eq!(json["status"], status, "{text}");
        }
        Ok((status, json, replayed))
    }
}

fn start(partitions: &str) -> (BrokerProcess, Http, String) {
    start_with("charges", partitions)
}

/// A broker with `--http-listen`, topic `topic` with `dedup.source=header:id`, and its records path.
fn start_with(topic: &str, partitions: &str) -> (BrokerProcess, Http, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::start(&["--http-listen", &listen]);
    let bootstrap = broker.bootstrap();
    once(&[
        "topic",
        "create",
        topic,
        "--partitions",
        partitions,
        "--bootstrap",
        &bootstrap,
        "--config",
        "dedup.source=header:id",
    ]);
    let http = Http::new(port);
    support::wait_until("the HTTP server", Duration::from_secs(30), || http.get("/v3/clusters").is_ok());
    let path = format!("/v3/clusters/{}/topics/{topic}/records", http.cluster_id());
    (broker, http, path)
}

fn charge(customer: &str, amount: u32) -> String {
    format!(
        r#"{{"key": {{"type": "STRING", "data": "{customer}"}}, "value": {{"type": "JSON", "data": {{"amount": {amount}}}}}}}"#
    )
}

/// The records `topic` stores (kcat reads them all): `partition/offset headers` per record.
fn stored_records(bootstrap: &str, topic: &str) -> Vec<String> {
    let output = std::process::Command::new("kcat")
        .args(["-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-f", "%p/%o %h\n"])
        .output()
        .expect("run kcat");
    assert!(output.status.success(), "kcat: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").lines().map(str::to_string).collect()
}

/// Where a 200 answer says the record is: (partition, offset).
fn placed(json: &serde_json::Value) -> (i64, i64) {
    (json["partition_id"].as_i64().expect("partition"), json["offset"].as_i64().expect("offset"))
}

/// Each stored record's `id` header and its `partition/offset`; panics if an id is stored twice.
fn stored_ids(bootstrap: &str, topic: &str) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for record in stored_records(bootstrap, topic) {
        let (at, headers) = record.split_once(' ').expect("partition/offset headers");
        let id = headers.split(',').find_map(|header| header.strip_prefix("id=")).expect("an id header");
        assert!(ids.insert(id.to_string(), at.to_string()).is_none(), "{id} stored twice");
    }
    ids
}

fn stored(bootstrap: &str, topic: &str) -> usize {
    stored_records(bootstrap, topic).len()
}

#[test]
fn a_retry_gets_the_original_answer_and_a_reused_key_is_refused() {
    let (broker, http, path) = start("3");
    let first = http.post(&path, Some("charge-1"), &charge("alice", 50)).expect("first POST");
    assert_eq!((first.0, first.2), (200, false), "{}", first.1);
    assert_eq!(first.1["error_code"], 200);
    assert_eq!(first.1["topic_name"], "charges");
    assert_eq!(first.1["value"]["type"], "JSON");
    let retry = http.post(&path, Some("charge-1"), &charge("alice", 50)).expect("retry");
    assert_eq!((retry.0, retry.2), (200, true), "{}", retry.1);
    assert_eq!(retry.1, first.1, "the original answer: partition, offset, timestamp");
    // The same key for another request: 422, nothing stored.
    let other = http.post(&path, Some("charge-1"), &charge("alice", 51)).expect("reuse");
    assert_eq!(other.0, 422, "{}", other.1);
    assert_eq!(other.1["type"], "urn:once:problem:idempotency-key-reused");
    let elsewhere = http.post(&path, Some("charge-1"), &charge("bob", 50)).expect("reuse, another partition");
    assert_eq!(elsewhere.0, 422, "{}", elsewhere.1);
    assert_eq!(stored(&broker.bootstrap(), "charges"), 1, "one record for the key");

    // A key on a topic that does not store ids: 400 naming the config to set.
    once(&["topic", "create", "plain", "--bootstrap", &broker.bootstrap()]);
    let plain = path.replace("/charges/", "/plain/");
    let refused = http.post(&plain, Some("k"), &charge("alice", 1)).expect("POST to plain");
    assert_eq!(refused.0, 400);
    assert!(refused.1["detail"].as_str().unwrap_or_default().contains("dedup.source=header:"), "{}", refused.1);
    // Without a key, a plain topic stores every POST.
    assert_eq!(http.post(&plain, None, &charge("alice", 1)).expect("POST").0, 200);
    assert_eq!(http.post(&plain, None, &charge("alice", 1)).expect("POST").0, 200);
    assert_eq!(stored(&broker.bootstrap(), "plain"), 2);

    // A topic that requires a key refuses a POST without one.
    once(&[
        "topic",
        "create",
        "keyed",
        "--bootstrap",
        &broker.bootstrap(),
        "--config",
        "dedup.source=header:id",
        "--config",
        "http.idempotency.key.required=true",
    ]);
    let keyed = path.replace("/charges/", "/keyed/");
    let missing = http.post(&keyed, None, &charge("alice", 1)).expect("POST without a key");
    assert_eq!((missing.0, missing.1["type"].as_str()), (400, Some("urn:once:problem:idempotency-key-missing")));
    assert_eq!(http.post(&keyed, Some("k-1"), &charge("alice", 1)).expect("POST with a key").0, 200);

    // Bad input: problem documents, nothing stored.
    for (body, status) in [
        ("{not json", 400),
        (r#"{"value": {"type": "AVRO", "data": 1}}"#, 400),
        (r#"{"partition_id": 9, "value": {"data": 1}}"#, 404),
    ] {
        let answer = http.post(&path, Some(&format!("bad-{status}-{}", body.len())), body).expect("POST");
        assert_eq!(answer.0, status, "{body}: {}", answer.1);
    }
    let unknown = path.replace("/charges/", "/nowhere/");
    assert_eq!(http.post(&unknown, None, &charge("a", 1)).expect("POST").0, 404);
    let wrong_cluster = path.replace(&http.cluster_id(), "not-this-cluster");
    assert_eq!(http.post(&wrong_cluster, None, &charge("a", 1)).expect("POST").0, 404);
    let large = format!(r#"{{"value": {{"type": "STRING", "data": "{}"}}}}"#, "x".repeat(2 * 1024 * 1024));
    assert_eq!(http.post(&path, Some("large"), &large).expect("POST").0, 413, "above max.message.bytes");
    assert_eq!(stored(&broker.bootstrap(), "charges"), 1);

    // Discovery, metrics and the OpenAPI document.
    let (status, topics) = http.get(&format!("/v3/clusters/{}/topics", http.cluster_id())).expect("topics");
    assert_eq!(status, 200);
    assert!(topics.contains(r#""topic_name":"charges""#) && topics.contains(r#""partitions_count":3"#), "{topics}");
    let (status, metrics) = http.get("/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("once_dedup_duplicates_dropped_total{topic=\"charges\""), "{metrics}");
    let (status, openapi) = http.get("/openapi.json").expect("openapi");
    assert_eq!(status, 200);
    let openapi: serde_json::Value = serde_json::from_str(&openapi).expect("OpenAPI is JSON");
    assert!(openapi["paths"]["/v3/clusters/{cluster_id}/topics/{topic_name}/records"]["post"].is_object());
}

/// Keyed POSTs from several clients, each retried on any failure (connection refused or reset, a
/// 5xx, a 409) until answered, while the broker is killed with SIGKILL and restarted twice: every
/// key is stored once, and every answer for a key — first or replayed — names the same offset.
#[test]
fn keyed_posts_with_retries_through_broker_kills_store_each_key_once() {
    const KEYS: usize = 1200;
    const CLIENTS: usize = 8;
    let (mut broker, _http, path) = start("3");
    let port = _http.base.rsplit(':').next().expect("port").parse::<u16>().expect("port");
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (path, answers, failures) = (path.clone(), Arc::clone(&answers), Arc::clone(&failures));
            std::thread::spawn(move || {
                let http = Http::new(port);
                for key in (client..KEYS).step_by(CLIENTS) {
                    let body = charge(&format!("customer-{}", key % 17), key as u32);
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        assert!(attempts < 2000, "key {key} never answered");
                        match http.post(&path, Some(&format!("charge-{key}")), &body) {
                            Ok((200, json, _)) => {
                                let at = placed(&json);
                                answers.lock().expect("answers").entry(key).or_default().push(at);
                                // A client that lost the answer retries: ask again sometimes, as if it had.
                                if key % 5 != 0 {
                                    break;
                                }
                                if let Ok((200, json, true)) = http.post(&path, Some(&format!("charge-{key}")), &body) {
                                    let again = placed(&json);
                                    answers.lock().expect("answers").entry(key).or_default().push(again);
                                }
                                break;
                            }
                            Ok((status, json, _)) => {
                                assert!(matches!(status, 409 | 503), "key {key}: {status} {json}");
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            Err(_) => {
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for threshold in [300, 700] {
        support::wait_until("keys to be answered before a kill", Duration::from_secs(120), || {
            answers.lock().expect("answers").len() >= threshold
        });
        broker.kill9();
        std::thread::sleep(Duration::from_millis(300));
        broker.restart();
    }
    for client in clients {
        client.join().expect("client thread");
    }
    let answers = answers.lock().expect("answers");
    assert_eq!(answers.len(), KEYS, "every key answered");
    let failures = failures.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{failures} failed attempts retried");
    assert!(failures > 0, "the kills interrupted some requests (else this test tested no retry)");
    for (key, seen) in answers.iter() {
        assert!(seen.windows(2).all(|pair| pair[0] == pair[1]), "key {key}: answers disagree: {seen:?}");
        assert!(seen[0].1 >= 0, "key {key}: a real offset");
    }
    let distinct: std::collections::BTreeSet<(i64, i64)> = answers.values().map(|seen| seen[0]).collect();
    assert_eq!(distinct.len(), KEYS, "no two keys answered with one record");
    let ids = stored_ids(&broker.bootstrap(), "charges");
    assert_eq!(ids.len(), KEYS, "each key stored once");
    for (key, seen) in answers.iter() {
        let (partition, offset) = seen[0];
        assert_eq!(ids[&format!("charge-{key}")], format!("{partition}/{offset}"), "answered where it is stored");
    }
}

/// A byte-level TCP proxy in front of the HTTP listener with seeded faults: 5 % of connections reset
/// (RST) before anything is forwarded; 2 % of response chunks dropped and the client's connection
/// reset, after the broker acted (a lost answer).
/// Closes `stream` with an RST (SO_LINGER 0), as a connection reset by a middlebox. A clone of it
/// blocked reading (the proxy's other direction) is woken by the read shutdown and drops its copy,
/// and the last close sends the RST.
fn reset(stream: std::net::TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(std::net::Shutdown::Read);
    drop(stream);
}

struct FaultProxy {
    port: u16,
    resets: Arc<std::sync::atomic::AtomicUsize>,
    dropped: Arc<std::sync::atomic::AtomicUsize>,
}

fn fault_proxy(upstream: u16, seed: u64) -> FaultProxy {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    let port = listener.local_addr().expect("address").port();
    let (resets, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let state = Arc::new(AtomicU64::new(seed | 1));
    // xorshift: the faults are seeded, their timing is the threads'.
    let draw = move |state: &AtomicU64| {
        let mut x = state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.store(x, Ordering::Relaxed);
        x % 100
    };
    let (resets_seen, dropped_seen) = (Arc::clone(&resets), Arc::clone(&dropped));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            if draw(&state) < 5 {
                resets_seen.fetch_add(1, Ordering::Relaxed);
                reset(client);
                continue;
            }
            let Ok(broker) = TcpStream::connect(("127.0.0.1", upstream)) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            let chunk_state = Arc::clone(&state);
            let (mut client_in, mut broker_out) =
                (client.try_clone().expect("clone"), broker.try_clone().expect("clone"));
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut broker_out);
                let _ = broker_out.shutdown(Shutdown::Write);
            });
            let dropped_seen = Arc::clone(&dropped_seen);
            std::thread::spawn(move || {
                let (mut broker_in, mut client_out) = (broker, client);
                let mut buffer = [0u8; 16 * 1024];
                loop {
                    match broker_in.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(read) => {
                            if draw(&chunk_state) < 2 {
                                // The broker answered (so it acted); the client never hears it.
                                dropped_seen.fetch_add(1, Ordering::Relaxed);
                                let _ = broker_in.shutdown(Shutdown::Both);
                                reset(client_out);
                                return;
                            }
                            if client_out.write_all(&buffer[..read]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = client_out.shutdown(Shutdown::Both);
                let _ = broker_in.shutdown(Shutdown::Both);
            });
        }
    });
    FaultProxy { port, resets, dropped }
}

/// The issue's acceptance run: 10,000 keyed POSTs from 16 clients through the fault proxy, each
/// retried on any failure until answered 200, the broker killed with SIGKILL once midway; then
/// concurrent POSTs of one new key at a time until one is refused with 409 while another holds it.
#[test]
fn ten_thousand_keyed_posts_through_a_fault_proxy_and_a_kill_are_each_stored_once() {
    const KEYS: usize = 10_000;
    const CLIENTS: usize = 16;
    let (mut broker, http, path) = start("4");
    let upstream = http.base.rsplit(':').next().expect("port").parse::<u16>().expect("port");
    let proxy = fault_proxy(upstream, 0x5eed);
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (path, answers, port) = (path.clone(), Arc::clone(&answers), proxy.port);
            std::thread::spawn(move || {
                let http = Http::new(port);
                for key in (client..KEYS).step_by(CLIENTS) {
                    let body = charge(&format!("customer-{}", key % 101), key as u32);
                    for attempt in 0.. {
                        assert!(attempt < 5000, "key {key} never answered");
                        match http.post(&path, Some(&format!("c-{key}")), &body) {
                            Ok((200, json, _)) => {
                                let at = placed(&json);
                                answers.lock().expect("answers").entry(key).or_default().push(at);
                                break;
                            }
                            Ok((status, json, _)) => {
                                assert!(matches!(status, 409 | 503), "key {key}: {status} {json}");
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(10)),
                        }
                    }
                }
            })
        })
        .collect();
    support::wait_until("half the keys to be answered", Duration::from_secs(300), || {
        answers.lock().expect("answers").len() >= KEYS / 2
    });
    broker.kill9();
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
    for client in clients {
        client.join().expect("client thread");
    }
    let (resets, dropped) = (
        proxy.resets.load(std::sync::atomic::Ordering::Relaxed),
        proxy.dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!("proxy: {resets} connections reset, {dropped} responses dropped");
    assert!(resets > 0 && dropped > 0, "the proxy injected both faults");

    // Retries of answered keys through the proxy: the original answer, whatever the proxy does.
    let http = Http::new(proxy.port);
    for key in (0..KEYS).step_by(97) {
        let body = charge(&format!("customer-{}", key % 101), key as u32);
        let mut again = None;
        for _ in 0..200 {
            if let Ok((200, json, true)) = http.post(&path, Some(&format!("c-{key}")), &body) {
                again = Some(placed(&json));
                break;
            }
        }
        let again = again.unwrap_or_else(|| panic!("key {key}: no replayed answer in 200 tries"));
        answers.lock().expect("answers").entry(key).or_default().push(again);
    }
    let answers = answers.lock().expect("answers");
    assert_eq!(answers.len(), KEYS);
    for (key, seen) in answers.iter() {
        assert!(seen.windows(2).all(|pair| pair[0] == pair[1]), "key {key}: answers disagree: {seen:?}");
    }
    let ids = stored_ids(&broker.bootstrap(), "charges");
    assert_eq!(ids.len(), KEYS, "each key stored once");
    for (key, seen) in answers.iter() {
        assert_eq!(
            ids[&format!("c-{key}")],
            format!("{}/{}", seen[0].0, seen[0].1),
            "key {key}: answered where stored"
        );
    }

    // 409: the same new key from several clients at once (straight to the broker), until one is
    // refused while another holds it; every 200 among them names the one record.
    let direct = Arc::new(Http::new(upstream));
    let mut conflicts = 0;
    for round in 0..200 {
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (direct, barrier, path) = (Arc::clone(&direct), Arc::clone(&barrier), path.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    direct.post(&path, Some(&format!("race-{round}")), &charge("racer", round)).expect("POST")
                })
            })
            .collect();
        let results: Vec<Answer> = threads.into_iter().map(|thread| thread.join().expect("thread")).collect();
        let offsets: std::collections::BTreeSet<i64> = results
            .iter()
            .filter(|(status, _, _)| *status == 200)
            .map(|(_, json, _)| json["offset"].as_i64().expect("offset"))
            .collect();
        assert!(offsets.len() <= 1, "round {round}: one record per key: {results:?}");
        for (status, json, _) in &results {
            assert!(matches!(status, 200 | 409), "round {round}: {status} {json}");
            if *status == 409 {
                assert_eq!(json["type"], "urn:once:problem:idempotency-key-in-flight");
            }
        }
        conflicts += results.iter().filter(|(status, _, _)| *status == 409).count();
        if conflicts > 0 {
            break;
        }
    }
    assert!(conflicts > 0, "concurrent requests with one key: one is refused with 409 while another holds it");
}

/// The OpenAPI document drives a property-based test (schemathesis, installed by .ci/run): every
/// operation with generated valid and invalid input, including stateful sequences that reuse the
/// cluster id and topic names the API returns; no 5xx, and every response conforms to the document
/// (status code, content type, body schema).
#[test]
fn schemathesis_finds_no_server_error_and_no_nonconforming_response() {
    let (broker, http, _) = start("3");
    once(&["topic", "create", "plain", "--bootstrap", &broker.bootstrap()]);
    let output = std::process::Command::new("schemathesis")
        .args(["run", &format!("{}/openapi.json", http.base), "--url", &http.base])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance",
        ])
        .args(["--max-examples", "50", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis (installed by .ci/run: pip install schemathesis)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found problems:\n{text}\nbroker log:\n{}", broker.log());
    // "N generated, N passed": every generated case passed the checks.
    let counts = text.lines().find_map(|line| {
        let (generated, passed) = line.trim().split_once(" generated, ")?;
        Some((generated.parse::<u64>().ok()?, passed.strip_suffix(" passed")?.parse::<u64>().ok()?))
    });
    let (generated, passed) = counts.unwrap_or_else(|| panic!("no test-case counts in:\n{text}"));
    assert!(generated > 100 && passed == generated, "{text}");

    // The same run against a document that misstates the answer (offset a string) must fail: the
    // check can fail.
    let mut wrong: serde_json::Value =
        serde_json::from_str(&http.get("/openapi.json").expect("openapi").1).expect("JSON");
    wrong["components"]["schemas"]["ProduceResponse"]["properties"]["offset"] = serde_json::json!({"type": "string"});
    wrong["components"]["schemas"]["ClusterList"]["properties"]["kind"] = serde_json::json!({"enum": ["Wrong"]});
    let dir = tempfile::tempdir().expect("temp dir");
    let wrong_path = dir.path().join("wrong.json");
    std::fs::write(&wrong_path, wrong.to_string()).expect("write the wrong document");
    let output = std::process::Command::new("schemathesis")
        .arg("run")
        .arg(&wrong_path)
        .args(["--url", &http.base, "--checks", "response_schema_conformance", "--max-examples", "20", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "a misstated response schema is caught:\n{text}");
    assert!(text.contains("Stateful"), "the stateful phase ran:\n{text}");
}

/// Review of issue 16: retries after the topic gained partitions (the key now hashes elsewhere) are
/// still answered with their original, read from the partition it is in; a key that names a record
/// a Kafka producer wrote compressed is refused with 422, not a 503 forever; a keyed record with a
/// timestamp older than the dedup window is refused (its key would expire at once); a wrong method
/// is a problem document too.
#[test]
fn retries_after_partitions_are_added_compressed_originals_old_timestamps_and_methods() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    let (broker, http, path) = start_with("grows", "1");
    let bootstrap = broker.bootstrap();
    let body = r#"{"value": {"type": "STRING", "data": "charge"}}"#;
    let firsts: Vec<Answer> =
        (0..8).map(|key| http.post(&path, Some(&format!("k{key}")), body).expect("first POST")).collect();
    assert!(firsts.iter().all(|(status, json, _)| *status == 200 && json["partition_id"] == 0));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("metadata.recovery.strategy", "none")
        .create()
        .expect("admin client");
    let results = runtime
        .block_on(admin.create_partitions(&[NewPartitions::new("grows", 4)], &AdminOptions::new()))
        .expect("create partitions");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for (key, (_, first, _)) in firsts.iter().enumerate() {
        let retry = http.post(&path, Some(&format!("k{key}")), body).expect("retry");
        assert_eq!((retry.0, retry.2), (200, true), "k{key}: {}", retry.1);
        assert_eq!(&retry.1, first, "k{key}: the original answer, from the partition it is in");
    }
    assert_eq!(stored(&bootstrap, "grows"), 8, "nothing stored twice");

    // A record with id=kc1 written compressed by a Kafka producer: the key names a record that has
    // no fingerprint, so it cannot be this request's original: 422.
    let mut kcat = std::process::Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", "grows", "-p", "0", "-z", "gzip", "-H", "id=kc1"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat");
    std::io::Write::write_all(kcat.stdin.as_mut().expect("stdin"), b"from kafka\n").expect("write");
    drop(kcat.stdin.take());
    assert!(kcat.wait().expect("kcat").success());
    let reused = http.post(&path, Some("kc1"), r#"{"partition_id": 0, "value": {"data": 1}}"#).expect("POST");
    assert_eq!(reused.0, 422, "{}", reused.1);

    // A keyed record older than the window would expire at once: refused.
    once(&[
        "topic",
        "create",
        "windowed",
        "--bootstrap",
        &bootstrap,
        "--config",
        "dedup.source=header:id",
        "--config",
        "dedup.window.ms=60000",
    ]);
    let windowed = path.replace("/grows/", "/windowed/");
    let old = r#"{"value": {"data": 1}, "timestamp": "2020-01-01T00:00:00Z"}"#;
    let refused = http.post(&windowed, Some("old"), old).expect("POST");
    assert_eq!(refused.0, 400, "{}", refused.1);
    assert_eq!(http.post(&windowed, None, old).expect("POST without a key").0, 200, "without a key, any timestamp");
    let recent = r#"{"value": {"data": 1}, "timestamp": "2099-01-01T02:00:00+02:00"}"#;
    let accepted = http.post(&windowed, Some("recent"), recent).expect("POST");
    assert_eq!(accepted.0, 200, "{}", accepted.1);
    assert_eq!(accepted.1["timestamp"], "2099-01-01T00:00:00.000Z", "an offset is applied");

    // A wrong method: 405, a problem document.
    let mut response = http.agent.get(&format!("{}{path}", http.base)).call().expect("GET records");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let text = response.body_mut().read_to_string().expect("body");
    assert!(text.contains("method-not-allowed"), "{text}");
}
