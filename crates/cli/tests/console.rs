//! The web console against a real `once serve` seeded by real clients: plain records with keys,
//! JSON values and headers on a deduplicating topic, a committed and an aborted transaction, a
//! consumer group with a member and a committed offset, and a transaction left open (hanging).
//! First its JSON endpoints are checked directly (shapes, both isolation levels, refusals), then
//! tests/browser/console.mjs drives Debian's Chromium through every page with Playwright, logs in
//! as the admin and aborts the hanging transaction through the confirmation dialog; afterwards the
//! transaction is settled and its producer fenced.
//!
//! Needs node, `npm ci` in tests/browser and /usr/bin/chromium (.ci/run installs them).
//! `ONCE_CONSOLE_SCREENSHOTS=DIR` keeps the browser's screenshots (docs/console/ holds them).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use support::txn::{send, transactional_producer, TxnProducer};
use support::{free_port, once, wait_until, BrokerProcess};

const ADMIN: (&str, &str) = ("admin", "console-secret");

struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn new(address: &str) -> Http {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Http { base: format!("http://{address}"), agent }
    }

    /// GET: (status, body as JSON, or the text as a JSON string).
    fn get(&self, path: &str, login: Option<(&str, &str)>) -> (u16, Value) {
        let mut request = self.agent.get(&format!("{}{path}", self.base));
        if let Some((user, password)) = login {
            request = request.header("Authorization", &basic(user, password));
        }
        let mut response = request.call().expect("GET");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    fn post_body(&self, path: &str, body: &str, login: Option<(&str, &str)>) -> (u16, Value) {
        let mut request = self.agent.post(&format!("{}{path}", self.base)).header("Content-Type", "application/json");
        if let Some((user, password)) = login {
            request = request.header("Authorization", &basic(user, password));
        }
        let mut response = request.send(body).expect("POST");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn post(&self, path: &str, content_type: &str, login: Option<(&str, &str)>) -> (u16, Value) {
        let mut request = self.agent.post(&format!("{}{path}", self.base)).header("Content-Type", content_type);
        if let Some((user, password)) = login {
            request = request.header("Authorization", &basic(user, password));
        }
        let mut response = request.send("{}").expect("POST");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Record `n` of the plain ones: key `customer-n`, a JSON value, an `id` header.
fn produce_payments(bootstrap: &str) {
    let producer: rdkafka::producer::BaseProducer =
        once_cli::clients::client_config(bootstrap).set("enable.idempotence", "true").create().expect("producer");
    for n in 0..5 {
        let key = format!("customer-{n}");
        let value = json!({"amount": 50, "n": n}).to_string();
        let id = format!("pay-{n}");
        let headers = OwnedHeaders::new().insert(Header { key: "id", value: Some(id.as_str()) });
        producer
            .send(BaseRecord::to("payments").partition(0).key(&key).payload(&value).headers(headers))
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("acknowledged");
}

const XSS_KEY: &str = "<img src=x onerror=\"window.__xss=1\">";

/// Records a page must show as text, whatever they hold: markup (0), 20,000 nested JSON arrays (1),
/// a value of 100,000 bytes, more than the 64 KiB the console sends of a field (2).
fn produce_hostile(bootstrap: &str) {
    let producer: rdkafka::producer::BaseProducer =
        once_cli::clients::client_config(bootstrap).create().expect("producer");
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let long = "x".repeat(100_000);
    let values = ["<script>window.__xss=1</script>", deep.as_str(), long.as_str()];
    for value in values {
        producer.send(BaseRecord::to("hostile").partition(0).key(XSS_KEY).payload(value)).expect("queued");
        producer.flush(Duration::from_secs(30)).expect("acknowledged");
    }
}

fn text_of(field: &Value) -> &str {
    field["text"].as_str().unwrap_or_else(|| panic!("a UTF-8 field: {field}"))
}

fn records(http: &Http, isolation: &str) -> Value {
    http.get_ok(&format!("/console/api/topics/payments/partitions/0/records?offset=0&isolation={isolation}"))
}

#[test]
fn console_pages_show_the_broker_and_abort_a_hanging_transaction_in_a_real_browser() {
    let address = format!("127.0.0.1:{}", free_port());
    let reports = tempfile::tempdir().expect("reports dir");
    std::fs::write(reports.path().join("run.html"), "<!doctype html><title>once check</title><h1>txn: valid</h1>")
        .expect("a report");
    let scram_user = format!("{}:{}", ADMIN.0, ADMIN.1);
    let reports_dir = reports.path().to_str().expect("utf-8 path");
    let broker = BrokerProcess::start(&[
        "--http-listen",
        &address,
        "--scram-user",
        &scram_user,
        "--console-reports",
        reports_dir,
    ]);
    let bootstrap = broker.bootstrap();
    once(&[
        "topic",
        "create",
        "payments",
        "--partitions",
        "1",
        "--config",
        "dedup.source=header:id",
        "--bootstrap",
        &bootstrap,
    ]);
    once(&["topic", "create", "console-traffic", "--partitions", "1", "--bootstrap", &bootstrap]);
    once(&["topic", "create", "hostile", "--partitions", "1", "--bootstrap", &bootstrap]);
    produce_hostile(&bootstrap);

    // Offsets 0–4 plain; 5–6 a committed transaction, 7 its marker; 8 an aborted one, 9 its marker;
    // 10 the open transaction's record.
    produce_payments(&bootstrap);
    let paid = transactional_producer(&bootstrap, "paid", 60_000);
    paid.begin_transaction().expect("begin");
    send(&paid, "payments", 0, "{\"amount\":10}");
    send(&paid, "payments", 0, "{\"amount\":11}");
    paid.commit_transaction(Duration::from_secs(30)).expect("commit");
    let refund = transactional_producer(&bootstrap, "refund", 60_000);
    refund.begin_transaction().expect("begin");
    send(&refund, "payments", 0, "{\"amount\":-50}");
    refund.flush(Duration::from_secs(30)).expect("stored");
    refund.abort_transaction(Duration::from_secs(30)).expect("abort");
    let stuck: TxnProducer = transactional_producer(&bootstrap, "stuck-payer", 600_000);
    stuck.begin_transaction().expect("begin");
    send(&stuck, "payments", 0, "{\"amount\":999}");
    stuck.flush(Duration::from_secs(30)).expect("stored");

    // A consumer group with a live member (assigned payments/0) that committed offset 3.
    let consumer: BaseConsumer = once_cli::clients::client_config(&bootstrap)
        .set("group.id", "billing")
        .set("enable.auto.commit", "false")
        .set("client.id", "billing-1")
        .create()
        .expect("consumer");
    consumer.subscribe(&["payments"]).expect("subscribe");
    wait_until("the member to be assigned", Duration::from_secs(30), || {
        let _ = consumer.poll(Duration::from_millis(100));
        consumer.assignment().map(|assigned| assigned.count() == 1).unwrap_or(false)
    });
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("payments", 0, Offset::Offset(3)).expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    let http = Http::new(&address);

    // The record browser, both isolation levels.
    let uncommitted = records(&http, "read_uncommitted");
    let listed = uncommitted["records"].as_array().expect("records");
    assert_eq!(listed.len(), 11, "{uncommitted}");
    assert_eq!(
        (uncommitted["high_watermark"].clone(), uncommitted["last_stable_offset"].clone()),
        (json!(11), json!(10))
    );
    assert_eq!(text_of(&listed[0]["key"]), "customer-0");
    assert_eq!(
        serde_json::from_str::<Value>(text_of(&listed[0]["value"])).expect("JSON"),
        json!({"amount": 50, "n": 0})
    );
    assert_eq!(listed[0]["headers"][0]["key"], "id");
    assert_eq!(text_of(&listed[0]["headers"][0]["value"]), "pay-0");
    assert_eq!((listed[0]["transactional"].clone(), listed[0]["sequence"].clone()), (json!(false), json!(0)));
    assert_eq!((listed[5]["transactional"].clone(), listed[5]["aborted"].clone()), (json!(true), json!(false)));
    assert_eq!(listed[7]["control"], "commit");
    assert_eq!(listed[8]["aborted"], true, "the refund was aborted: {}", listed[8]);
    assert_eq!(listed[9]["control"], "abort");
    assert_eq!((listed[10]["offset"].clone(), listed[10]["aborted"].clone()), (json!(10), json!(false)));
    assert_eq!(uncommitted["next_offset"], 11);
    let committed = records(&http, "read_committed");
    let offsets_shown: Vec<u64> = committed["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| record["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(
        offsets_shown,
        [0, 1, 2, 3, 4, 5, 6, 7, 9],
        "aborted record 8 left out, the open one past the LSO not read"
    );
    let paged = http.get_ok("/console/api/topics/payments/partitions/0/records?offset=2&limit=2");
    let paged_offsets: Vec<&Value> =
        paged["records"].as_array().expect("records").iter().map(|record| &record["offset"]).collect();
    assert_eq!((paged_offsets, paged["next_offset"].clone()), (vec![&json!(2), &json!(3)], json!(4)));
    let by_time = http.get_ok(&format!(
        "/console/api/topics/payments/partitions/0/records?timestamp={}",
        listed[5]["timestamp"].as_i64().expect("timestamp")
    ));
    assert_eq!(by_time["start_offset"], 5, "record 5 opens the committed transaction's batch: {by_time}");
    assert_eq!(http.get("/console/api/topics/payments/partitions/0/records?offset=99", None).0, 416);
    assert_eq!(http.get("/console/api/topics/payments/partitions/0/records?isolation=dirty", None).0, 400);
    assert_eq!(http.get("/console/api/topics/payments/partitions/0/records?limit=0", None).0, 400);
    assert_eq!(http.get("/console/api/topics/payments/partitions/3/records", None).0, 404);

    // Hostile records come back as data: markup as text, a long value cut at 64 KiB with its size.
    let hostile = http.get_ok("/console/api/topics/hostile/partitions/0/records");
    assert_eq!(text_of(&hostile["records"][0]["key"]), XSS_KEY);
    let cut = &hostile["records"][2]["value"];
    assert_eq!((cut["size"].clone(), cut["truncated"].clone()), (json!(100_000), json!(true)), "{cut}");
    assert_eq!(text_of(cut).len(), 64 * 1024);

    // Topics, groups, transactions.
    let topics = http.get_ok("/console/api/topics");
    let payments = topics["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|topic| topic["name"] == "payments")
        .expect("payments")
        .clone();
    assert_eq!(payments["dedup"]["source"], "header:id");
    assert_eq!(
        payments["dedup"]["ids"], 5,
        "five plain records with an id (the transactional ones have none): {payments}"
    );
    assert_eq!(payments["partitions"][0]["lso_lag"], 1);
    assert_eq!(payments["configs"]["dedup.source"], "header:id");
    assert_eq!(http.get_ok("/console/api/topics/payments")["name"], "payments");
    assert_eq!(http.get("/console/api/topics/nothing", None).0, 404);
    let groups = http.get_ok("/console/api/groups");
    let billing = &groups["groups"][0];
    assert_eq!((billing["group"].clone(), billing["state"].clone()), (json!("billing"), json!("Stable")), "{groups}");
    assert_eq!(billing["members"][0]["client_id"], "billing-1");
    assert_eq!(billing["members"][0]["assignment"], json!([{"topic": "payments", "partition": 0}]));
    assert_eq!(billing["offsets"][0]["committed_offset"], 3);
    assert_eq!(billing["offsets"][0]["lag"], 8, "high watermark 11 − 3");
    std::thread::sleep(Duration::from_millis(1_100));
    let transactions = http.get_ok("/console/api/transactions?hanging_after_ms=1000");
    let by_id = |id: &str| {
        transactions["transactions"]
            .as_array()
            .expect("list")
            .iter()
            .find(|txn| txn["transactional_id"] == id)
            .expect(id)
            .clone()
    };
    let hanging = by_id("stuck-payer");
    assert_eq!(
        (hanging["state"].clone(), hanging["open"].clone(), hanging["hanging"].clone()),
        (json!("Ongoing"), json!(true), json!(true))
    );
    assert_eq!(hanging["partitions"], json!([{"topic": "payments", "partition": 0}]));
    assert_eq!(hanging["can_abort"], false, "anonymous callers only look");
    assert_eq!(
        (by_id("paid")["state"].clone(), by_id("paid")["hanging"].clone()),
        (json!("CompleteCommit"), json!(false))
    );
    assert_eq!(by_id("refund")["state"], "CompleteAbort");
    let (status, as_admin) = http.get("/console/api/transactions?hanging_after_ms=1000", Some(ADMIN));
    assert_eq!(status, 200);
    let admin_view = as_admin["transactions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|txn| txn["transactional_id"] == "stuck-payer")
        .cloned();
    assert_eq!(admin_view.expect("listed")["can_abort"], true);
    let overview = http.get_ok("/console/api/overview?hanging_after_ms=1000");
    assert_eq!(
        (overview["transactions_open"].clone(), overview["transactions_hanging"].clone()),
        (json!(1), json!(1)),
        "{overview}"
    );
    assert_eq!(
        (overview["caller"].clone(), overview["can_abort"].clone(), overview["reports"].clone()),
        (json!("User:ANONYMOUS"), json!(false), json!(1))
    );
    assert_eq!(http.get("/console/api/overview", Some(ADMIN)).1["can_abort"], true);

    // Logging in, and what an abort refuses: no login, a form's content type, an unknown id.
    let (status, _) = http.get("/console/login", None);
    assert_eq!(status, 401, "the login path challenges an anonymous browser");
    assert_eq!(http.get("/console/login", Some(ADMIN)).1, json!({"caller": "User:admin"}));
    assert_eq!(http.get("/console/login", Some((ADMIN.0, "wrong"))).0, 401);
    let abort = "/console/api/transactions/stuck-payer/abort";
    assert_eq!(http.post(abort, "application/json", None).0, 401);
    assert_eq!(http.post(abort, "application/x-www-form-urlencoded", Some(ADMIN)).0, 415);
    assert_eq!(http.post("/console/api/transactions/nobody/abort", "application/json", Some(ADMIN)).0, 404);
    let (status, problem) = http.post_body(abort, r#"{"producer_id": 3, "producer_epoch": 7}"#, Some(ADMIN));
    assert_eq!((status, problem["type"].clone()), (409, json!("urn:once:problem:transaction-changed")), "{problem}");
    let (status, _) = http.post_body(abort, r#"{"producer_id": 3}"#, Some(ADMIN));
    assert_eq!(status, 400, "an id without its epoch");
    let again = http.get_ok("/console/api/transactions?hanging_after_ms=1000");
    let still = again["transactions"]
        .as_array()
        .expect("list")
        .iter()
        .find(|txn| txn["transactional_id"] == "stuck-payer")
        .cloned();
    assert_eq!(still.expect("listed")["open"], true, "nothing refused aborted it");

    // Reports: listed, served sandboxed; nothing outside the directory.
    let listed_reports = http.get_ok("/console/api/reports");
    assert_eq!(listed_reports["reports"][0]["name"], "run.html");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let report = agent.get(&format!("http://{address}/console/reports/run.html")).call().expect("report");
    assert_eq!(report.status().as_u16(), 200);
    let policy =
        report.headers().get("content-security-policy").and_then(|value| value.to_str().ok()).unwrap_or_default();
    assert!(policy.starts_with("sandbox"), "{policy}");
    let outside =
        reports.path().parent().expect("a parent").join(format!("once-console-secret-{}.html", std::process::id()));
    std::fs::write(&outside, "secret").expect("a file outside the reports directory");
    let escaped =
        format!("/console/reports/..%2F{}", outside.file_name().and_then(|name| name.to_str()).expect("name"));
    let (status, body) = http.get(&escaped, None);
    assert!(status == 404 && !body.to_string().contains("secret\""), "{status} {body}");
    std::os::unix::fs::symlink(&outside, reports.path().join("link.html")).expect("symlink");
    assert_eq!(http.get("/console/reports/link.html", None).0, 403, "a symbolic link is not followed");
    std::fs::remove_file(&outside).expect("remove");
    assert_eq!(
        http.get_ok("/console/api/reports")["reports"].as_array().map(Vec::len),
        Some(1),
        "the link is not listed"
    );
    assert_eq!(http.get("/console/reports/missing.html", None).0, 404);
    // Bound to loopback: a request naming another host (DNS rebinding) is refused.
    let rebound =
        agent.get(&format!("http://{address}/console/api/topics")).header("Host", "evil.example").call().expect("GET");
    assert_eq!(rebound.status().as_u16(), 421);
    let page = agent.get(&format!("http://{address}/")).call().expect("page");
    assert!(page.headers().get("content-security-policy").is_some());
    let rates = http.get_ok("/console/api/rates");
    assert!(rates["produced_records"].as_u64().expect("records") >= 8, "{rates}");
    assert!(rates["fsync"]["count"].as_u64().expect("fsyncs") > 0);

    // The browser: every page, then the admin aborts the hanging transaction.
    let expect = json!({
        "topic": "payments",
        "partition": 0,
        "first_key": "customer-0",
        "first_value_json": {"amount": 50, "n": 0},
        "open_record_offset": 10,
        "group": "billing",
        "group_lag": 8,
        "hanging_transaction": "stuck-payer",
        "hanging_after_ms": 1000,
        "admin": {"user": ADMIN.0, "password": ADMIN.1},
        "report": "run.html",
        "traffic_topic": "console-traffic",
        "markers": [{"offset": 7, "control": "commit"}, {"offset": 9, "control": "abort"}],
        "aborted_offsets": [8],
        "hostile": {
            "topic": "hostile",
            "partition": 0,
            "xss_offset": 0,
            "xss_key": XSS_KEY,
            "deep_json_offset": 1,
            "truncated_offset": 2,
            "truncated_size": 100_000,
        },
    });
    run_browser(&address, &expect);

    // Afterwards: the transaction is settled, nothing is held back, and its producer is fenced.
    wait_until("the abort's marker", Duration::from_secs(10), || {
        http.get_ok("/console/api/transactions")["transactions"]
            .as_array()
            .is_some_and(|list| list.iter().any(|txn| txn["transactional_id"] == "stuck-payer" && txn["open"] == false))
    });
    let after = records(&http, "read_committed");
    assert_eq!(after["last_stable_offset"], after["high_watermark"], "{after}");
    assert!(
        !after["records"].as_array().expect("records").iter().any(|record| record["offset"] == 10),
        "the aborted record is not read committed"
    );
    let fenced = stuck.commit_transaction(Duration::from_secs(10)).expect_err("the producer was fenced");
    let code = fenced.rdkafka_error_code();
    assert!(
        matches!(
            code,
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::Fenced)
        ),
        "fenced by the abort, not another failure: {fenced}"
    );
    drop(consumer);
}

/// Runs tests/browser/console.mjs against the broker; panics with its output unless every check
/// passed.
fn run_browser(address: &str, expect: &Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("tests/browser/console.mjs");
    let modules = root.join("tests/browser/node_modules/playwright-core");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        modules.is_dir() && Path::new(&chromium).exists(),
        "the browser test needs `npm ci` in tests/browser and Debian's chromium ({chromium}): .ci/run installs both"
    );
    let screenshots = std::env::var("ONCE_CONSOLE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("once-console-{}", std::process::id())));
    let output = Command::new("node")
        .arg(&script)
        .env("ONCE_CONSOLE_URL", format!("http://{address}"))
        .env("ONCE_CONSOLE_EXPECT", expect.to_string())
        .env("ONCE_CONSOLE_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (.ci/run installs nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the browser checks failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    eprintln!("{stdout}");
}

/// With `--authorization true`: every list shows only what the caller may describe, a path naming
/// something else is refused, records need READ, an abort needs a login and WRITE on the id, and
/// an anonymous browser refused the overview is asked to log in.
#[test]
fn with_authorization_the_console_shows_each_caller_only_what_it_may_see() {
    use once_acl::{AclBinding, Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME};
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().join("data");
    // Set-up without authorization: two topics with records and groups, an open transaction on each.
    let mut setup = BrokerProcess::start_with(&[], Some(data_dir.clone()), None);
    let bootstrap = setup.bootstrap();
    for topic in ["payments", "secret"] {
        once(&["topic", "create", topic, "--partitions", "1", "--bootstrap", &bootstrap]);
    }
    for (group, topic) in [("billing", "payments"), ("hidden", "secret")] {
        let consumer: BaseConsumer =
            once_cli::clients::client_config(&bootstrap).set("group.id", group).create().expect("consumer");
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(topic, 0, Offset::Offset(0)).expect("offset");
        consumer.commit(&offsets, CommitMode::Sync).expect("commit");
    }
    let mut left_open = Vec::new();
    for (id, topic) in [("pay-alice", "payments"), ("pay-secret", "secret")] {
        let producer = transactional_producer(&bootstrap, id, 600_000);
        producer.begin_transaction().expect("begin");
        send(&producer, topic, 0, "{\"amount\":1}");
        producer.flush(Duration::from_secs(30)).expect("stored");
        left_open.push(producer);
    }
    assert!(setup.terminate(), "the set-up broker stops cleanly");
    drop(left_open);
    let allow = |principal: &str, operation: Operation, resource_type: ResourceType, name: &str| AclBinding {
        resource_type,
        resource_name: name.to_string(),
        pattern_type: PatternType::Literal,
        principal: Principal::user(principal),
        host: "*".to_string(),
        operation,
        permission: Permission::Allow,
    };
    let acls = [
        allow("alice", Operation::Describe, ResourceType::Topic, "payments"),
        allow("alice", Operation::Read, ResourceType::Topic, "payments"),
        allow("alice", Operation::Describe, ResourceType::Group, "billing"),
        allow("alice", Operation::Describe, ResourceType::TransactionalId, "pay-alice"),
        allow("alice", Operation::Write, ResourceType::TransactionalId, "pay-alice"),
        allow("alice", Operation::Describe, ResourceType::TransactionalId, "pay-secret"),
        allow("bob", Operation::Describe, ResourceType::Cluster, CLUSTER_NAME),
    ];
    std::fs::write(data_dir.join("acls.json"), json!({"format": 1, "acls": acls}).to_string()).expect("acls.json");
    let address = format!("127.0.0.1:{}", free_port());
    let args = [
        "--http-listen",
        &address,
        "--authorization",
        "true",
        "--super-users",
        "User:admin",
        "--scram-user",
        "admin:admin-secret",
        "--scram-user",
        "alice:alice-secret",
        "--scram-user",
        "bob:bob-secret",
    ];
    let _broker = BrokerProcess::start_with(&args, Some(data_dir), None);
    let http = Http::new(&address);
    let (alice, bob, admin) =
        (Some(("alice", "alice-secret")), Some(("bob", "bob-secret")), Some(("admin", "admin-secret")));
    let names = |body: &Value, list: &str, field: &str| -> Vec<String> {
        body[list].as_array().expect(list).iter().map(|item| item[field].as_str().expect(field).to_string()).collect()
    };

    // Anonymous: asked to log in where refused; lists are empty.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let refused = agent.get(&format!("http://{address}/console/api/overview")).call().expect("GET");
    assert_eq!(refused.status().as_u16(), 401);
    assert!(refused.headers().get("www-authenticate").is_some(), "a browser is asked for a login");
    assert_eq!(names(&http.get_ok("/console/api/topics"), "topics", "name"), Vec::<String>::new());
    assert_eq!(http.get("/console/api/topics/payments/partitions/0/records", None).0, 401);

    // alice: her topic, group and transactional ids; nothing else, not even by name.
    let (_, topics) = http.get("/console/api/topics", alice);
    assert_eq!(names(&topics, "topics", "name"), ["payments"]);
    assert_eq!(topics["topics"][0]["configs"], Value::Null, "no DESCRIBE_CONFIGS");
    assert_eq!(http.get("/console/api/topics/secret", alice).0, 403);
    assert_eq!(
        http.get("/console/api/topics/nothing", alice).0,
        403,
        "without DESCRIBE on the cluster, no existence check"
    );
    assert_eq!(http.get("/console/api/topics/nothing", admin).0, 404);
    assert_eq!(http.get("/console/api/topics/payments/partitions/0/records", alice).0, 200);
    assert_eq!(http.get("/console/api/topics/secret/partitions/0/records", alice).0, 403);
    let (_, groups) = http.get("/console/api/groups", alice);
    assert_eq!(names(&groups, "groups", "group"), ["billing"]);
    let (_, transactions) = http.get("/console/api/transactions", alice);
    assert_eq!(names(&transactions, "transactions", "transactional_id"), ["pay-alice", "pay-secret"]);
    let listed = transactions["transactions"].as_array().expect("list");
    assert_eq!(listed[0]["partitions"], json!([{"topic": "payments", "partition": 0}]));
    assert_eq!(listed[1]["partitions"], json!([]), "the topic alice may not describe is left out");
    assert_eq!((listed[0]["can_abort"].clone(), listed[1]["can_abort"].clone()), (json!(true), json!(false)));
    assert_eq!(http.get("/console/api/overview", alice).0, 403, "alice may not describe the cluster");
    assert_eq!(http.get("/console/login", alice).1, json!({"caller": "User:alice"}));

    // bob may describe the cluster and nothing in it.
    let (status, overview) = http.get("/console/api/overview", bob);
    assert_eq!((status, overview["can_abort"].clone(), overview["topics"].clone()), (200, json!(false), json!(0)));
    assert_eq!(
        names(&http.get("/console/api/transactions", bob).1, "transactions", "transactional_id"),
        Vec::<String>::new()
    );

    // Aborts: not without WRITE on the id; alice's own, with what she saw.
    assert_eq!(http.post("/console/api/transactions/pay-secret/abort", "application/json", alice).0, 403);
    assert_eq!(http.post("/console/api/transactions/pay-alice/abort", "application/json", bob).0, 403);
    let seen = format!(
        r#"{{"producer_id": {}, "producer_epoch": {}}}"#,
        listed[0]["producer_id"], listed[0]["producer_epoch"]
    );
    let (status, aborted) = http.post_body("/console/api/transactions/pay-alice/abort", &seen, alice);
    assert_eq!(
        (status, aborted["aborted"].clone(), aborted["previous_state"].clone()),
        (200, json!(true), json!("Ongoing")),
        "{aborted}"
    );
    let (_, after) = http.get("/console/api/transactions", admin);
    let states: Vec<(String, bool)> = after["transactions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|txn| (txn["transactional_id"].as_str().expect("id").to_string(), txn["open"] == true))
        .collect();
    assert_eq!(states, [("pay-alice".to_string(), false), ("pay-secret".to_string(), true)], "only hers was aborted");
}
