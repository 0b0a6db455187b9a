//! The HTTP edge's security (issue 18): `--http-listen https://HOST:PORT` with the broker's
//! certificate, Basic authentication with the SASL users, and the same ACLs as the Kafka edge,
//! through curl (a real HTTPS client verifying the test CA) and kcat (reading what was stored).
//!
//! - Correct credentials over https: the record is stored and a Kafka client reads it.
//! - A wrong password or an unknown user: 401 with the Basic challenge, after the failed-login
//!   delay, logged; nothing stored. A bearer token: 401 (not supported).
//! - A user without WRITE on the topic, and the anonymous caller: 403 naming WRITE; nothing stored.
//! - `/metrics` and the cluster need DESCRIBE on the cluster; the topic list shows only the topics
//!   the caller may describe; `/openapi.json` is open.
//! - Basic credentials over plain HTTP from this host (loopback) are accepted; a plaintext client
//!   on the https port fails cleanly.
//! - With authorization off: anonymous calls are served as before, credentials sent are checked;
//!   `https://` without a certificate stops the broker at start.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use once_acl::{AclBinding, Operation, PatternType, Permission, Principal, ResourceType, CLUSTER_NAME};
use support::security::{certificates, kcat};
use support::{free_port, once, BrokerProcess};

/// One HTTP answer: status, headers (lower-cased names), body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Asserts a problem document of `status` whose type ends with `kind`.
    fn assert_problem(&self, status: u16, kind: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{}{}", self.headers, self.body);
        assert!(self.headers.contains("content-type: application/problem+json"), "{}", self.headers);
        let json = self.json();
        assert_eq!(json["type"], format!("urn:once:problem:{kind}"), "{}", self.body);
        assert_eq!(json["status"], status, "{}", self.body);
        json
    }
}

/// curl against `base` (https with the test CA, or http).
struct Curl {
    base: String,
    ca: Option<PathBuf>,
}

impl Curl {
    fn run(&self, method: &str, path: &str, credentials: Option<&str>, headers: &[&str], body: Option<&str>) -> Output {
        let mut command = Command::new("curl");
        // cargo's LD_LIBRARY_PATH points at the build's librdkafka; curl wants the system's libraries.
        command.env_remove("LD_LIBRARY_PATH").args(["-sS", "-i", "--max-time", "30", "-X", method]);
        if let Some(ca) = &self.ca {
            command.arg("--cacert").arg(ca);
        }
        if let Some(credentials) = credentials {
            command.args(["-u", credentials]);
        }
        for header in headers {
            command.args(["-H", header]);
        }
        if let Some(body) = body {
            command.args(["-H", "content-type: application/json", "--data-binary", body]);
        }
        command.arg(format!("{}{path}", self.base)).output().expect("run curl")
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        credentials: Option<&str>,
        headers: &[&str],
        body: Option<&str>,
    ) -> Answer {
        let output = self.run(method, path, credentials, headers, body);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "curl {method} {path}: {text}{}", String::from_utf8_lossy(&output.stderr));
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
        Answer { status, headers: head.to_lowercase(), body: body.to_string() }
    }

    fn get(&self, path: &str, credentials: Option<&str>) -> Answer {
        self.call("GET", path, credentials, &[], None)
    }

    fn post(&self, path: &str, credentials: Option<&str>, body: &str) -> Answer {
        self.call("POST", path, credentials, &[], Some(body))
    }
}

fn allow(principal: &str, operation: Operation, resource_type: ResourceType, name: &str) -> AclBinding {
    AclBinding {
        resource_type,
        resource_name: name.to_string(),
        pattern_type: PatternType::Literal,
        principal: Principal::user(principal),
        host: "*".to_string(),
        operation,
        permission: Permission::Allow,
    }
}

/// Topics `payments` (keyed HTTP posts: dedup.source=header:id) and `other`, created by a broker
/// without authorization, then the ACLs written where the next broker reads them.
fn prepare(data_dir: &Path, acls: &[AclBinding]) {
    let mut setup = BrokerProcess::start_with(&[], Some(data_dir.to_path_buf()), None);
    once(&["topic", "create", "payments", "--bootstrap", &setup.bootstrap(), "--config", "dedup.source=header:id"]);
    once(&["topic", "create", "other", "--bootstrap", &setup.bootstrap()]);
    assert!(setup.terminate(), "the set-up broker stops cleanly");
    let file = serde_json::json!({"format": 1, "acls": acls});
    std::fs::write(data_dir.join("acls.json"), file.to_string()).expect("write acls.json");
}

/// What `payments` stores, read by kcat as the super user over SASL_SSL: `partition/offset value`.
fn stored(sasl_ssl: &str, ca: &str) -> Vec<String> {
    let settings = [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanisms=SCRAM-SHA-512".to_string(),
        "sasl.username=admin".to_string(),
        "sasl.password=admin-secret".to_string(),
        format!("ssl.ca.location={ca}"),
    ];
    let output = kcat(&["-C", "-b", sasl_ssl, "-t", "payments", "-e", "-q", "-f", "%p/%o %s\n"], &settings, None);
    assert!(output.status.success(), "kcat: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn https_basic_auth_and_acls_decide_what_http_callers_may_do() {
    let certs = tempfile::tempdir().expect("temp dir");
    certificates(certs.path());
    let path = |name: &str| certs.path().join(name).display().to_string();
    let data = tempfile::tempdir().expect("temp dir");
    let data_dir = data.path().join("data");
    prepare(
        &data_dir,
        &[
            allow("alice", Operation::Write, ResourceType::Topic, "payments"),
            allow("bob", Operation::Read, ResourceType::Topic, "payments"),
            allow("scraper", Operation::Describe, ResourceType::Cluster, CLUSTER_NAME),
        ],
    );
    let (plain, sasl_ssl, https, metrics) = (free_port(), free_port(), free_port(), free_port());
    let listeners = [format!("PLAINTEXT://127.0.0.1:{plain}"), format!("SASL_SSL://127.0.0.1:{sasl_ssl}")];
    let (https_listen, metrics_listen) = (format!("https://127.0.0.1:{https}"), format!("http://127.0.0.1:{metrics}"));
    let (cert, key, ca) = (path("broker.pem"), path("broker.key"), path("ca.pem"));
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    for listener in &listeners {
        args.extend(["--listener", listener]);
    }
    args.extend(["--http-listen", &https_listen, "--metrics-listen", &metrics_listen]);
    for user in ["admin:admin-secret", "alice:alice-secret", "bob:bob-secret", "scraper:scraper-secret"] {
        args.extend(["--scram-user", user]);
    }
    args.extend(["--authorization", "true", "--super-users", "User:admin"]);
    let broker = BrokerProcess::start_with_listeners_in(&args, plain, Some(data_dir));
    let sasl_at = format!("127.0.0.1:{sasl_ssl}");
    let http = Curl { base: format!("https://localhost:{https}"), ca: Some(PathBuf::from(&ca)) };
    support::wait_until("the HTTPS listener", Duration::from_secs(30), || {
        http.run("GET", "/openapi.json", None, &[], None).status.success()
    });
    let admin = Some("admin:admin-secret");
    let cluster_id = http.get("/v3/clusters", admin).json()["data"][0]["cluster_id"].as_str().expect("id").to_string();
    let records = format!("/v3/clusters/{cluster_id}/topics/payments/records");
    let charge = |amount: u32| format!(r#"{{"value": {{"type": "JSON", "data": {{"amount": {amount}}}}}}}"#);

    // alice, who may WRITE payments: stored, and a Kafka client reads it where the answer says.
    let stored_by_alice =
        http.call("POST", &records, Some("alice:alice-secret"), &["idempotency-key: c-1"], Some(&charge(10)));
    assert_eq!(stored_by_alice.status, 200, "{}", stored_by_alice.body);
    let placed = stored_by_alice.json();
    let at = format!("{}/{}", placed["partition_id"], placed["offset"]);
    assert_eq!(stored(&sasl_at, &ca), vec![format!("{at} {{\"amount\":10}}")], "alice's record, read by kcat");
    let replay = http.call("POST", &records, Some("alice:alice-secret"), &["idempotency-key: c-1"], Some(&charge(10)));
    assert_eq!((replay.status, replay.json()), (200, placed.clone()), "a retry is replayed as before");

    // A wrong password, an unknown user: 401 with the challenge, after the delay; logged; nothing stored.
    for credentials in ["alice:wrong", "mallory:alice-secret"] {
        let started = Instant::now();
        let refused = http.post(&records, Some(credentials), &charge(11));
        refused.assert_problem(401, "authentication-failed");
        assert!(refused.headers.contains("www-authenticate: basic realm=\"once\""), "{}", refused.headers);
        assert!(started.elapsed() >= Duration::from_millis(100), "a failed login waits 100 ms");
    }
    assert!(broker.log().contains("HTTP authentication failed"), "failed logins are logged");
    assert!(broker.log().contains("user=alice"), "with the user named: {}", broker.log());
    // Bearer tokens are not supported: 401, not anonymous.
    let bearer = http.call("POST", &records, None, &["authorization: Bearer abc.def.ghi"], Some(&charge(12)));
    bearer.assert_problem(401, "authentication-failed");

    // bob may READ payments but not WRITE it; the anonymous caller may do nothing: 403, nothing stored.
    let bob = http.post(&records, Some("bob:bob-secret"), &charge(13));
    let problem = bob.assert_problem(403, "topic-authorization-failed");
    assert_eq!(problem["title"], "Topic authorization failed");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("User:bob is not allowed WRITE"), "{problem}");
    let anonymous = http.post(&records, None, &charge(14));
    let problem = anonymous.assert_problem(403, "topic-authorization-failed");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("User:ANONYMOUS"), "{problem}");
    // A topic that does not exist is refused alike: no one learns which topics exist without rights.
    let nowhere = records.replace("/payments/", "/nowhere/");
    http.post(&nowhere, Some("bob:bob-secret"), &charge(15)).assert_problem(403, "topic-authorization-failed");
    assert_eq!(stored(&sasl_at, &ca).len(), 1, "only alice's record is stored");
    assert!(broker.log().contains("authorization denied"), "denials are logged by the node's authorizer");

    // Metrics and the cluster: DESCRIBE on the cluster.
    let problem = http.get("/metrics", None).assert_problem(403, "cluster-authorization-failed");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("DESCRIBE"), "{problem}");
    http.get("/metrics", Some("alice:alice-secret")).assert_problem(403, "cluster-authorization-failed");
    let scraped = http.get("/metrics", Some("scraper:scraper-secret"));
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    assert!(scraped.body.contains("# EOF"), "OpenMetrics text: {}", scraped.body);
    http.get("/v3/clusters", None).assert_problem(403, "cluster-authorization-failed");
    http.get(&format!("/v3/clusters/{cluster_id}"), Some("bob:bob-secret"))
        .assert_problem(403, "cluster-authorization-failed");
    assert_eq!(http.get(&format!("/v3/clusters/{cluster_id}"), Some("scraper:scraper-secret")).status, 200);
    // The topic list shows what the caller may describe (alice's WRITE implies DESCRIBE).
    let topics = |credentials| {
        let answer = http.get(&format!("/v3/clusters/{cluster_id}/topics"), credentials);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let names: Vec<String> = answer.json()["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|topic| topic["topic_name"].as_str().expect("name").to_string())
            .collect();
        names
    };
    assert_eq!(topics(Some("alice:alice-secret")), vec!["payments"]);
    assert_eq!(topics(None), Vec::<String>::new());
    let mut all = topics(admin);
    all.sort();
    assert_eq!(all, vec!["other", "payments"], "a super user sees every topic");
    // The API's description is open to all.
    assert_eq!(http.get("/openapi.json", None).status, 200);

    // Plain HTTP on loopback (--metrics-listen http://…): credentials from this host are accepted;
    // and they are checked there too.
    let local = Curl { base: format!("http://127.0.0.1:{metrics}"), ca: None };
    assert_eq!(local.get("/metrics", Some("scraper:scraper-secret")).status, 200);
    local.get("/metrics", None).assert_problem(403, "cluster-authorization-failed");
    local.get("/metrics", Some("scraper:wrong")).assert_problem(401, "authentication-failed");
    // A plaintext client on the https port fails cleanly; the listener goes on serving.
    let plaintext = Curl { base: format!("http://127.0.0.1:{https}"), ca: None };
    assert!(!plaintext.run("GET", "/openapi.json", None, &[], None).status.success(), "no HTTP answer");
    assert_eq!(http.get("/metrics", Some("scraper:scraper-secret")).status, 200, "still serving");
}

#[test]
fn authorization_off_serves_as_before_and_checks_credentials_sent() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let broker = BrokerProcess::start(&["--http-listen", &listen, "--scram-user", "alice:alice-secret"]);
    once(&["topic", "create", "plain", "--bootstrap", &broker.bootstrap()]);
    let http = Curl { base: format!("http://{listen}"), ca: None };
    support::wait_until("the HTTP listener", Duration::from_secs(30), || {
        http.run("GET", "/openapi.json", None, &[], None).status.success()
    });
    let clusters = http.get("/v3/clusters", None);
    assert_eq!(clusters.status, 200, "anonymous, as before: {}", clusters.body);
    let cluster_id = clusters.json()["data"][0]["cluster_id"].as_str().expect("id").to_string();
    let records = format!("/v3/clusters/{cluster_id}/topics/plain/records");
    let body = r#"{"value": {"type": "STRING", "data": "x"}}"#;
    assert_eq!(http.post(&records, None, body).status, 200, "anonymous produce, as before");
    assert_eq!(http.get("/metrics", None).status, 200, "anonymous metrics, as before");
    assert_eq!(http.post(&records, Some("alice:alice-secret"), body).status, 200, "a user from this host");
    http.post(&records, Some("alice:wrong"), body).assert_problem(401, "authentication-failed");
    let count = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-C", "-b", &broker.bootstrap(), "-t", "plain", "-e", "-q"])
        .output()
        .expect("kcat");
    assert_eq!(String::from_utf8_lossy(&count.stdout).lines().count(), 2, "the refused POST stored nothing");

    // https:// without a certificate: the broker refuses to start, saying why.
    let data = tempfile::tempdir().expect("temp dir");
    let https = format!("https://127.0.0.1:{}", free_port());
    let output = Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_once"), "serve", "--http-listen", &https])
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .output()
        .expect("run once");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && text.contains("needs --tls-cert and --tls-key"), "{text}");
}
